//! `pxs`: one binary, a subcommand per part of the platform. It only wires the crates together.

use anyhow::Context;
use clap::{Parser, Subcommand};
use pxs_webrtc_session::{Config as WebrtcConfig, Options as WebrtcOptions, Server};
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

mod nginx;
mod up;

#[derive(Parser)]
#[command(name = "pxs", version, about = "pxs: a pixel-streaming platform")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
// Parsed once at start; boxing the options would only complicate the derive.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// The signalling server alone: a drop-in for Epic's reference server (same options).
    #[command(name = "webrtc-session")]
    WebrtcSession(WebrtcOptions),
    /// A stand-in for an Unreal Engine app with Pixel Streaming: UE's launch flags
    /// (-PixelStreamingURL=..., -ResX=...), real H.264 video, the data-channel input protocol
    /// and fault flags. `pxs streamer --help` lists them.
    #[command(name = "streamer", disable_help_flag = true)]
    Streamer {
        /// UE flags (-Name=value) and our --options, parsed by the streamer itself.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<String>,
    },
    /// The session server: runs on every GPU machine, links to the coordinator, launches and
    /// supervises the sessions' applications and hosts their signalling.
    #[command(name = "session-server")]
    SessionServer(SessionServerArgs),
    /// The coordinator: titles, nodes and sessions behind the REST API and the web pages, the
    /// node hub, placement, the queue and scheduling (SQLite or PostgreSQL).
    Coordinator(CoordinatorArgs),
    /// Everything on one machine: a coordinator (SQLite in the data dir), a session server and
    /// the demo title (`pxs streamer`). Ctrl-C ends every session and process.
    Up(up::UpArgs),
    /// Writes the NGINX configuration of the fleet's front door: TLS, the coordinator at `/`,
    /// each node's players under `/node/<name>/` (from the coordinator's nodes and/or nodes'
    /// config files); with --watch, rewrites it and reloads NGINX when the nodes change.
    #[command(name = "nginx-config")]
    NginxConfig(nginx::NginxArgs),
}

#[derive(clap::Args)]
struct CoordinatorArgs {
    #[command(flatten)]
    opts: pxs_coordinator::Options,
    #[command(subcommand)]
    action: Option<CoordinatorAction>,
}

#[derive(Subcommand)]
enum CoordinatorAction {
    /// Copy the SQLite database (database_url) to a new file, consistently, while the
    /// coordinator runs. For PostgreSQL use pg_dump.
    Backup {
        /// The backup file to write; it must not exist.
        out: std::path::PathBuf,
    },
}

#[derive(clap::Args)]
struct SessionServerArgs {
    #[command(flatten)]
    opts: pxs_session_server::Options,
    #[command(subcommand)]
    action: Option<SessionServerAction>,
}

#[derive(Subcommand)]
enum SessionServerAction {
    /// Validate the configuration and print a summary, without starting.
    #[command(name = "check-config")]
    CheckConfig,
    /// Ask the running session server (found through node.data_dir) to reload its applications.
    Reload,
    /// Drain this node: it takes no new sessions; running ones go on until they end, or until
    /// the deadline. Recorded in node.data_dir (drain.json), so it outlives restarts; the
    /// running server reads it within node.heartbeat_interval. `resume` undoes it.
    Drain {
        /// Stop the sessions still running this long from now ("30m", "2h"; "0": at once).
        /// Without it they run until they end by themselves.
        #[arg(long)]
        deadline: Option<String>,
    },
    /// Undo `drain`: the node takes new sessions again (unless the coordinator drains it).
    Resume,
    /// Windows: run the session server as a Windows service (install, uninstall, start, stop).
    /// Give --config to `install`: the service runs with that file.
    #[command(subcommand)]
    Service(ServiceAction),
    /// Internal: a session's guard, started by the session server with a pipe on stdin. When the
    /// pipe closes (the session server died) it kills the session's processes.
    #[command(hide = true)]
    Guard {
        #[arg(long)]
        session: String,
        /// The session server's data dir, as its processes' marker.
        #[arg(long)]
        marker: String,
    },
}

#[derive(Subcommand)]
enum ServiceAction {
    /// Register the service (as LocalSystem, started with Windows, restarted after a failure)
    /// with this pxs.exe and the absolute path of --config. Needs an administrator.
    Install {
        #[arg(long, default_value = SERVICE_NAME)]
        name: String,
    },
    /// Stop the service if it runs, and remove it.
    Uninstall {
        #[arg(long, default_value = SERVICE_NAME)]
        name: String,
    },
    /// Start the service and wait until it runs.
    Start {
        #[arg(long, default_value = SERVICE_NAME)]
        name: String,
    },
    /// Stop the service (its sessions end as on any shutdown) and wait until it has.
    Stop {
        #[arg(long, default_value = SERVICE_NAME)]
        name: String,
    },
    /// Internal: what the service manager starts.
    #[command(hide = true)]
    Run {
        #[arg(long, default_value = SERVICE_NAME)]
        name: String,
    },
}

/// The Windows service's default name.
const SERVICE_NAME: &str = "pxs-session-server";

fn main() -> anyhow::Result<std::process::ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::WebrtcSession(opts) => {
            webrtc_session(opts)?;
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Streamer { args } => Ok(pxs_streamer::cli::main(args)),
        Command::SessionServer(args) => session_server(args),
        Command::Coordinator(opts) => coordinator(opts),
        Command::Up(args) => up::run(args),
        Command::NginxConfig(args) => nginx::run(args),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn coordinator(args: CoordinatorArgs) -> anyhow::Result<std::process::ExitCode> {
    let opts = args.opts;
    let config = match pxs_coordinator::Config::load(&opts) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(std::process::ExitCode::from(1));
        }
    };
    if let Some(CoordinatorAction::Backup { out }) = args.action {
        let url = config.database_url.0.clone();
        return runtime()?.block_on(async move {
            match pxs_coordinator::store::backup::backup_sqlite(&url, &out).await {
                Ok(bytes) => {
                    println!("backed up to {} ({bytes} bytes)", out.display());
                    Ok(std::process::ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("error: backup: {e}");
                    Ok(std::process::ExitCode::from(1))
                }
            }
        });
    }
    init_logging("info");
    raise_open_file_limit();
    runtime()?.block_on(async move {
        let c = pxs_coordinator::Coordinator::start(config).await?;
        let url = c
            .engine
            .config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", c.addr()));
        if let Some(token) = &c.new_admin_token {
            // Shown once: only its hash is stored.
            println!("first admin token (shown once, keep it): {token}");
        }
        println!(
            "{}",
            serde_json::json!({"event": "listening", "addr": c.addr().to_string(), "url": url})
        );
        shutdown_signal().await;
        c.shutdown().await
    })?;
    Ok(std::process::ExitCode::SUCCESS)
}

pub(crate) fn init_logging(default_level: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(log_filter(default_level))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// `PXS_LOG`, or `default_level` with the chatty HTTP and WebSocket crates at warn.
fn log_filter(default_level: &str) -> EnvFilter {
    EnvFilter::try_from_env("PXS_LOG").unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{default_level},hyper=warn,tower_http=warn,tungstenite=warn"
        ))
    })
}

/// Every connection is a file descriptor: a server started with a low soft limit (often 1024)
/// would fail to accept long before its listeners' `max_connections`. Raised once at start, to
/// the hard limit the operator allows.
pub(crate) fn raise_open_file_limit() {
    match pxs_net::raise_open_file_limit() {
        Ok(Some(limit)) => tracing::info!(
            open_files = limit,
            "open-file limit (soft, raised to the hard limit)"
        ),
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-file limit; the current one stays")
        }
    }
}

fn webrtc_session(opts: WebrtcOptions) -> anyhow::Result<()> {
    let config = WebrtcConfig::load(opts)?;
    init_logging(&config.log_level);
    raise_open_file_limit();
    for note in &config.notes {
        tracing::warn!("{note}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let server = Server::start(config).await?;
        let a = server.addrs();
        // One machine-readable line on stdout, for scripts and tests that start us on port 0.
        println!(
            "{}",
            serde_json::json!({
                "event": "listening",
                "streamer": a.streamer.to_string(),
                "player": a.player.to_string(),
                "sfu": a.sfu.to_string(),
                "https": a.https.map(|h| h.to_string()),
            })
        );
        server.run_until(shutdown_signal()).await
    })
}

fn session_server(args: SessionServerArgs) -> anyhow::Result<std::process::ExitCode> {
    use pxs_session_server::{Config, process, state};
    if let Some(SessionServerAction::Guard { session, marker }) = &args.action {
        // No config, no runtime, no logging set-up: it only waits on its stdin.
        process::run_guard(session, marker);
        return Ok(std::process::ExitCode::SUCCESS);
    }
    // Managing an installed service needs no configuration (the service has its own).
    #[cfg(windows)]
    if let Some(SessionServerAction::Service(
        a @ (ServiceAction::Start { .. }
        | ServiceAction::Stop { .. }
        | ServiceAction::Uninstall { .. }),
    )) = &args.action
    {
        manage_service(a)?;
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let config = match Config::load(&args.opts) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            // A service has nobody reading its stderr: the error goes beside pxs.exe too.
            #[cfg(windows)]
            if let Some(SessionServerAction::Service(ServiceAction::Run { name })) = &args.action {
                service_error_log(name, &format!("{e:#}"));
            }
            return Ok(std::process::ExitCode::from(1));
        }
    };
    match args.action {
        Some(SessionServerAction::CheckConfig) => {
            for note in &config.notes {
                println!("note: {note}");
            }
            print!("{}", config.summary());
            println!("configuration OK");
            return Ok(std::process::ExitCode::SUCCESS);
        }
        Some(SessionServerAction::Reload) => {
            let pid = state::signal_reload(&config.node.data_dir)?;
            println!("asked the session server (pid {pid}) to reload");
            return Ok(std::process::ExitCode::SUCCESS);
        }
        Some(SessionServerAction::Drain { deadline }) => {
            return operator_drain(&config, deadline.as_deref());
        }
        Some(SessionServerAction::Resume) => {
            let dir = &config.node.data_dir;
            if state::remove_drain(dir)? {
                println!(
                    "drain removed; {} takes new sessions within {:?}",
                    running_server(dir),
                    config.node.heartbeat_interval
                );
            } else {
                println!("the node was not drained by its operator: nothing to undo");
            }
            return Ok(std::process::ExitCode::SUCCESS);
        }
        Some(SessionServerAction::Service(action)) => {
            return service(action, config, args.opts.config.as_deref());
        }
        Some(SessionServerAction::Guard { .. }) | None => {}
    }
    init_logging("info");
    run_session_server(config, shutdown_signal())?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// Runs the session server until `shutdown` completes (then its sessions are stopped).
fn run_session_server(
    mut config: pxs_session_server::Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use pxs_session_server::SessionServer;
    config.guard_program = guard_program();
    raise_open_file_limit();
    for note in &config.notes {
        tracing::warn!("{note}");
    }
    // The console applications of the sessions share this process's console (a service has
    // none: it gets a hidden one), so that a graceful stop can reach them with CTRL_BREAK_EVENT.
    #[cfg(windows)]
    match pxs_session_server::win32::ensure_console() {
        Ok(true) => tracing::info!("no console: made one for the sessions' console applications"),
        Ok(false) => {}
        Err(e) => tracing::warn!(
            %e,
            "no console, and none could be made: sessions are stopped by WM_CLOSE only, then ended"
        ),
    }
    #[cfg(windows)]
    tracing::info!(
        "Windows: sessions run in job objects (a session server that dies takes its applications \
         with it); a stop sends CTRL_BREAK_EVENT and WM_CLOSE, then ends the job after \
         node.kill_grace; `pxs session-server reload` is not available (restart the session \
         server to load changed applications)"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let server = SessionServer::start(config).await?;
        println!(
            "{}",
            serde_json::json!({"event": "listening", "addr": server.addr().to_string()})
        );
        #[cfg(unix)]
        {
            let reloader = server.reloader();
            let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading the applications");
                    reloader.reload();
                }
            });
        }
        server.run_until(shutdown).await
    })
}

/// `pxs session-server service ...`: the Windows service.
#[cfg(windows)]
fn service(
    action: ServiceAction,
    config: pxs_session_server::Config,
    config_file: Option<&std::path::Path>,
) -> anyhow::Result<std::process::ExitCode> {
    use pxs_session_server::service;
    match action {
        ServiceAction::Install { name } => {
            let Some(file) = config_file else {
                anyhow::bail!("`service install` needs --config FILE: the service runs with it");
            };
            // The service runs in C:\Windows\System32: a relative data dir would land there,
            // and `drain` from a console would write elsewhere.
            if !config.node.data_dir.is_absolute() {
                anyhow::bail!(
                    "node.data_dir is {}: a service needs an absolute path (e.g. \
                     'C:\\ProgramData\\pxs\\session-server')",
                    config.node.data_dir.display()
                );
            }
            let exe = std::env::current_exe().context("cannot find pxs.exe's own path")?;
            service::install(&name, &exe, file, service_stop_time(&config))?;
        }
        a @ (ServiceAction::Uninstall { .. }
        | ServiceAction::Start { .. }
        | ServiceAction::Stop { .. }) => manage_service(&a)?,
        ServiceAction::Run { name } => {
            let stop_time = service_stop_time(&config);
            let log = config.node.data_dir.join("logs").join("session-server.log");
            if let Err(e) = init_logging_to_file(&log) {
                service_error_log(&name, &format!("{e:#}"));
                return Err(e);
            }
            tracing::info!(service = %name, "starting as a Windows service");
            service::run(
                &name,
                stop_time,
                Box::new(move |stop| {
                    run_session_server(config, async move {
                        let _ = stop.await;
                    })
                }),
            )?;
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// What Windows is told a stop of the service may take: the sessions' graceful stop, and some
/// more.
#[cfg(windows)]
fn service_stop_time(config: &pxs_session_server::Config) -> std::time::Duration {
    config.node.kill_grace + std::time::Duration::from_secs(30)
}

/// Appends an error of the service `name` that happened before it had a log file to
/// `pxs-service-error.log` beside pxs.exe.
#[cfg(windows)]
fn service_error_log(name: &str, error: &str) {
    use std::io::Write;
    let Some(path) = std::env::current_exe()
        .ok()
        .map(|exe| exe.with_file_name("pxs-service-error.log"))
    else {
        return;
    };
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(
            f,
            "{} service {name}: {error}",
            pxs_session_server::http::now_millis()
        );
    }
}

/// `service start|stop|uninstall`: they wait this long for the service to get there.
#[cfg(windows)]
const SERVICE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(300);

#[cfg(windows)]
fn manage_service(action: &ServiceAction) -> anyhow::Result<()> {
    use pxs_session_server::service;
    match action {
        ServiceAction::Uninstall { name } => service::uninstall(name, SERVICE_PATIENCE),
        ServiceAction::Start { name } => service::start(name, SERVICE_PATIENCE),
        ServiceAction::Stop { name } => service::stop(name, SERVICE_PATIENCE),
        ServiceAction::Install { .. } | ServiceAction::Run { .. } => {
            anyhow::bail!("install and run need the configuration")
        }
    }
}

#[cfg(not(windows))]
fn service(
    _action: ServiceAction,
    _config: pxs_session_server::Config,
    _config_file: Option<&std::path::Path>,
) -> anyhow::Result<std::process::ExitCode> {
    eprintln!(
        "error: `pxs session-server service` manages a Windows service; on Linux run the session \
         server under systemd (docs/session-server.md)"
    );
    Ok(std::process::ExitCode::from(2))
}

/// Logging for the Windows service, which has no console to write to: appended to `path`.
#[cfg(windows)]
fn init_logging_to_file(path: &std::path::Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open the log file {}", path.display()))?;
    tracing_subscriber::fmt()
        .with_env_filter(log_filter("info"))
        .with_writer(std::sync::Mutex::new(file))
        .with_ansi(false)
        .init();
    Ok(())
}

/// `pxs session-server drain`: writes the drain request into the data dir.
fn operator_drain(
    config: &pxs_session_server::Config,
    deadline: Option<&str>,
) -> anyhow::Result<std::process::ExitCode> {
    use pxs_session_server::state::{self, DrainRequest};
    let stop_in = match deadline {
        None => None,
        Some(text) => match pxs_protocol::duration::parse(text) {
            Ok(d) => Some(d.unwrap_or_default()),
            Err(e) => {
                eprintln!("error: --deadline: {e}");
                return Ok(std::process::ExitCode::from(2));
            }
        },
    };
    let deadline = stop_in.map(|d| {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        pxs_session_server::http::now_millis().saturating_add(ms)
    });
    let dir = &config.node.data_dir;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("node.data_dir: cannot create {}", dir.display()))?;
    state::write_drain(dir, &DrainRequest { deadline })?;
    let what = match stop_in {
        None => "running sessions go on until they end".to_owned(),
        Some(d) => format!("sessions still running in {d:?} are stopped"),
    };
    println!(
        "drain recorded in {}; {} takes no new sessions within {:?}, {what}. \
         `pxs session-server resume` undoes it.",
        dir.join(state::DRAIN_FILE).display(),
        running_server(dir),
        config.node.heartbeat_interval
    );
    Ok(std::process::ExitCode::SUCCESS)
}

/// Names the session server running on `data_dir` for a message, or says none runs.
fn running_server(data_dir: &std::path::Path) -> String {
    match pxs_session_server::state::read_pid(data_dir) {
        Ok(pid) => format!("the session server (pid {pid})"),
        Err(_) => "the session server (not running now: at its next start)".to_owned(),
    }
}

/// This binary, which runs the session server's guards (`pxs session-server guard`). Unix only:
/// on Windows each session's job object does the guard's work.
#[cfg(not(unix))]
fn guard_program() -> Option<std::path::PathBuf> {
    None
}

/// This binary, which runs the session server's guards (`pxs session-server guard`).
#[cfg(unix)]
fn guard_program() -> Option<std::path::PathBuf> {
    match std::env::current_exe() {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!(
                "warning: cannot find the pxs binary's own path ({e}): sessions run unguarded"
            );
            None
        }
    }
}

/// Ctrl-C, SIGTERM (Unix), Ctrl-Break or the console closed (Windows).
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
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
    #[cfg(windows)]
    {
        // Ctrl-C or Ctrl-Break typed into the console, or the console window closed.
        use tokio::signal::windows::{ctrl_break, ctrl_close};
        match (ctrl_break(), ctrl_close()) {
            (Ok(mut brk), Ok(mut close)) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = brk.recv() => {}
                    _ = close.recv() => {}
                }
            }
            _ => {
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
