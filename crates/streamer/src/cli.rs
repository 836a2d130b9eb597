//! The `pxs streamer` command: parse flags, set up logging and the fault timers, run.

use crate::flags::{self, Parsed, Settings};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;
use tracing_subscriber::EnvFilter;

/// Entry point of `pxs streamer <args>`; `args` are the words after `streamer`.
pub fn main(args: Vec<String>) -> ExitCode {
    let settings = match flags::parse(args) {
        Ok(Parsed::Run(s)) => *s,
        Ok(Parsed::Help) => {
            print!("{}", flags::HELP);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("pxs streamer: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging();
    start_fault_timers(&settings);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pxs streamer: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(crate::run(settings, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("pxs streamer: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = EnvFilter::try_from_env("PXS_LOG").unwrap_or_else(|_| {
        EnvFilter::new("info,str0m=warn,tungstenite=warn,tokio_tungstenite=warn")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// `--crash-after` and `--exit-after` run on plain threads, so they fire even if the async side
/// is hung (`--hang-after`) or busy.
fn start_fault_timers(s: &Settings) {
    if let Some(after) = s.faults.crash_after {
        spawn_timer("pxs-crash-after", after, || {
            eprintln!("pxs streamer: --crash-after: aborting");
            std::process::abort();
        });
    }
    if let Some(after) = s.faults.exit_after {
        let code = s.faults.exit_code;
        spawn_timer("pxs-exit-after", after, move || {
            eprintln!("pxs streamer: --exit-after: exiting with code {code}");
            std::process::exit(code);
        });
    }
}

fn spawn_timer(name: &str, after: Duration, f: impl FnOnce() + Send + 'static) {
    let r = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            std::thread::sleep(after);
            f();
        });
    if let Err(e) = r {
        // Without the thread the fault would silently not happen: fail loudly instead.
        eprintln!("pxs streamer: cannot start the {name} timer: {e}");
        std::process::exit(70);
    }
}

/// Ctrl-C, SIGTERM (Unix) or CTRL_BREAK_EVENT (Windows).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(windows)]
    {
        // A session server stops its sessions with CTRL_BREAK_EVENT (there is no SIGTERM).
        use tokio::signal::windows::ctrl_break;
        match ctrl_break() {
            Ok(mut brk) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = brk.recv() => tracing::info!("CTRL_BREAK_EVENT received"),
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutting down");
}
