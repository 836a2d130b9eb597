//! `pxs-bench`: load benchmarks for pxs, one subcommand per part.

use anyhow::Context;
use clap::{Parser, Subcommand};
use pxs_bench::coordinator::links::{self, LinksArgs};
use pxs_bench::coordinator::{self, CoordinatorArgs};
use pxs_bench::session_server::{self, SessionServerArgs};
use pxs_bench::signalling::{self, SignallingArgs};
use std::time::Duration;

#[derive(Parser)]
#[command(name = "pxs-bench", version, about = "Load benchmarks for pxs")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The signalling server (pxs webrtc-session) and an in-process baseline relay under the
    /// same load: memory per idle player, setup rate, relay rate, latency and CPU per message.
    Signalling(SignallingArgs),
    /// The session server (pxs session-server) with pxs streamer as its application: time from
    /// start_session to ready, memory idle and with many sessions.
    #[command(name = "session-server")]
    SessionServer(SessionServerArgs),
    /// The coordinator (in this process, SQLite or PostgreSQL) with simulated nodes: API latency
    /// under an open-loop mix, sessions created per second, idle node links, and POST → ready
    /// with simulated nodes and with `pxs up`.
    Coordinator(Box<CoordinatorArgs>),
    /// The idle node links of `coordinator`, run as its child process.
    #[command(name = "coordinator-links", hide = true)]
    CoordinatorLinks(LinksArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Thousands of sockets on each side; the server child inherits the raised limit.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => eprintln!("open-file limit: {n}"),
        Err(e) => eprintln!("cannot raise the open-file limit: {e}"),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async {
        match cli.command {
            // Dropping the run on a signal drops the server child, which kills it.
            Command::Signalling(args) => tokio::select! {
                r = signalling::run(args) => r,
                _ = interrupted() => Err(anyhow::anyhow!("interrupted")),
            },
            Command::SessionServer(args) => tokio::select! {
                r = session_server::run(args) => r,
                _ = interrupted() => Err(anyhow::anyhow!("interrupted")),
            },
            Command::Coordinator(args) => tokio::select! {
                r = coordinator::run(*args) => r,
                _ = interrupted() => Err(anyhow::anyhow!("interrupted")),
            },
            Command::CoordinatorLinks(args) => links::run_child(args).await,
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
    result
}

/// Ctrl-C or SIGTERM.
async fn interrupted() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
