//! The session server as a Windows service (`pxs session-server service install|uninstall|start|
//! stop`), through the `windows-service` crate. See docs/windows.md.
//!
//! `install` registers the running `pxs.exe` with its config file's absolute path: the service
//! runs `pxs.exe session-server --config <file> service run --name <name>`, starts with Windows,
//! as LocalSystem, and is restarted by the service manager 5 seconds after a failure (three
//! times a day at most). `run` is what the service manager starts; it is not for people.
//!
//! The service sees the config file only: no flags, no `PXS_*` variables of the shell that
//! installed it, and `C:\Windows\System32` as its working directory. So `install` refuses a
//! relative `node.data_dir`.

use anyhow::{Context, bail};
use std::ffi::OsString;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use windows_service::service::{
    ServiceAccess, ServiceAction, ServiceActionType, ServiceControl, ServiceControlAccept,
    ServiceErrorControl, ServiceExitCode, ServiceFailureActions, ServiceFailureResetPeriod,
    ServiceInfo, ServiceStartType, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};

/// The service's name when none is given.
pub const DEFAULT_NAME: &str = "pxs-session-server";

/// What the service runs: the session server, given a future that completes when the service
/// manager asks it to stop.
pub type Body =
    Box<dyn FnOnce(tokio::sync::oneshot::Receiver<()>) -> anyhow::Result<()> + Send + 'static>;

/// Handed from [`run`] to the service's main function, which the service manager calls on a
/// thread of its own with no way to pass anything else.
static PENDING: Mutex<Option<(String, Duration, Body)>> = Mutex::new(None);

/// Registers the service. `exe` is this pxs.exe and `config` the session server's config file
/// (made absolute here: services start in C:\Windows\System32).
pub fn install(name: &str, exe: &Path, config: &Path, stop_hint: Duration) -> anyhow::Result<()> {
    let config = std::path::absolute(config)
        .with_context(|| format!("cannot make {} absolute", config.display()))?;
    let manager = ServiceManager::local_computer(
        None::<&str>,
        ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE,
    )
    .context("cannot open the service manager (installing a service needs an administrator)")?;
    let info = ServiceInfo {
        name: name.into(),
        display_name: format!("pxs session server ({name})").into(),
        service_type: ServiceType::OWN_PROCESS,
        start_type: ServiceStartType::AutoStart,
        error_control: ServiceErrorControl::Normal,
        executable_path: exe.to_path_buf(),
        launch_arguments: vec![
            "session-server".into(),
            "--config".into(),
            config.clone().into_os_string(),
            "service".into(),
            "run".into(),
            "--name".into(),
            name.into(),
        ],
        dependencies: vec![],
        account_name: None, // LocalSystem
        account_password: None,
    };
    let service = manager
        .create_service(
            &info,
            ServiceAccess::CHANGE_CONFIG
                | ServiceAccess::START
                | ServiceAccess::QUERY_STATUS
                | ServiceAccess::DELETE,
        )
        .with_context(|| format!("cannot create the service {name}"))?;
    // Half a service is worse than none: a failure from here on removes it again.
    if let Err(e) = configure(&service, stop_hint) {
        if let Err(d) = service.delete() {
            eprintln!("warning: the service {name} is left half-installed: cannot delete it ({d})");
        }
        return Err(e);
    }
    println!(
        "installed the service {name}: {} session-server --config {} (starts with Windows; \
         `pxs session-server service start` starts it now)",
        exe.display(),
        config.display()
    );
    Ok(())
}

/// The description, the restart policy and the shutdown time of a new service.
fn configure(
    service: &windows_service::service::Service,
    stop_hint: Duration,
) -> anyhow::Result<()> {
    service
        .set_description(
            "pxs session server: runs the sessions of this machine's applications for the pxs coordinator",
        )
        .context("cannot set the service's description")?;
    let restart = ServiceAction {
        action_type: ServiceActionType::Restart,
        delay: Duration::from_secs(5),
    };
    service
        .update_failure_actions(ServiceFailureActions {
            reset_period: ServiceFailureResetPeriod::After(Duration::from_secs(24 * 3600)),
            reboot_msg: None,
            command: None,
            // The last action repeats for every later failure: after three restarts, none
            // until the count is reset (a day without failure).
            actions: Some(vec![
                restart.clone(),
                restart.clone(),
                restart,
                ServiceAction {
                    action_type: ServiceActionType::None,
                    delay: Duration::ZERO,
                },
            ]),
        })
        .context("cannot set the service's restart policy")?;
    // An exit with an error (not only a crash) counts as a failure, and is restarted. (Wine
    // lacks this setting; Windows has had it since Vista.)
    if let Err(e) = service.set_failure_actions_on_non_crash_failures(true) {
        eprintln!(
            "warning: only a crash of the service restarts it, not an exit with an error: \
             cannot set SERVICE_CONFIG_FAILURE_ACTIONS_FLAG ({e})"
        );
    }
    // At a shutdown of Windows, the sessions get their graceful stop: the service is told
    // before the shutdown proper (preshutdown), and Windows waits this long for it.
    if let Err(e) = service.set_preshutdown_timeout(stop_hint) {
        eprintln!(
            "warning: at a shutdown of Windows the sessions may be cut short: cannot set the \
             preshutdown timeout ({e})"
        );
    }
    Ok(())
}

/// Stops the service if it runs, then removes it.
pub fn uninstall(name: &str, timeout: Duration) -> anyhow::Result<()> {
    let service = open(
        name,
        ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE,
    )?;
    let status = service.query_status().context("cannot query the service")?;
    match status.current_state {
        ServiceState::Stopped => {}
        // On its way down already: wait for it.
        ServiceState::StopPending => wait_for(&service, ServiceState::Stopped, timeout)?,
        _ => {
            if status.current_state == ServiceState::StartPending {
                wait_for(&service, ServiceState::Running, timeout)?;
            }
            service.stop().context("cannot stop the service")?;
            wait_for(&service, ServiceState::Stopped, timeout)?;
        }
    }
    service.delete().context("cannot delete the service")?;
    println!("removed the service {name}");
    Ok(())
}

/// Starts the service and waits until it runs (or has stopped again: then says so).
pub fn start(name: &str, timeout: Duration) -> anyhow::Result<()> {
    let service = open(name, ServiceAccess::QUERY_STATUS | ServiceAccess::START)?;
    service
        .start(&[] as &[OsString])
        .with_context(|| format!("cannot start the service {name}"))?;
    wait_for(&service, ServiceState::Running, timeout)?;
    println!("the service {name} is running");
    Ok(())
}

/// Stops the service (its sessions end as on any shutdown) and waits until it has.
pub fn stop(name: &str, timeout: Duration) -> anyhow::Result<()> {
    let service = open(name, ServiceAccess::QUERY_STATUS | ServiceAccess::STOP)?;
    service
        .stop()
        .with_context(|| format!("cannot stop the service {name}"))?;
    wait_for(&service, ServiceState::Stopped, timeout)?;
    println!("the service {name} has stopped");
    Ok(())
}

/// The installed service `name`, with `access`.
fn open(name: &str, access: ServiceAccess) -> anyhow::Result<windows_service::service::Service> {
    ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
        .context("cannot open the service manager")?
        .open_service(name, access)
        .with_context(|| format!("no service {name}"))
}

fn wait_for(
    service: &windows_service::service::Service,
    want: ServiceState,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let status = service.query_status().context("cannot query the service")?;
        if status.current_state == want {
            return Ok(());
        }
        if want == ServiceState::Running && status.current_state == ServiceState::Stopped {
            bail!(
                "the service stopped during its start (exit code {:?}); see its log, \
                 <node.data_dir>\\logs\\session-server.log, or for a configuration it could \
                 not load, pxs-service-error.log beside pxs.exe",
                status.exit_code
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "the service is still {:?} after {timeout:?}",
                status.current_state
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `body` as the service `name` (what the service manager starts): blocks until the service
/// has stopped. `stop_hint` is how long a stop may take (the sessions' grace period and more).
pub fn run(name: &str, stop_hint: Duration, body: Body) -> anyhow::Result<()> {
    *PENDING.lock().unwrap_or_else(|e| e.into_inner()) = Some((name.to_owned(), stop_hint, body));
    crate::win32::dispatch_service(name).context(
        "cannot connect to the service manager: `service run` is started by Windows, not by hand \
         (run `pxs session-server` without `service run` in a console)",
    )
}

/// The service's main function (see [`crate::win32::dispatch_service`]).
pub(crate) fn service_main(_arguments: Vec<OsString>) {
    let Some((name, stop_hint, body)) = PENDING.lock().unwrap_or_else(|e| e.into_inner()).take()
    else {
        return;
    };
    if let Err(e) = serve(&name, stop_hint, body) {
        tracing::error!("the service failed: {e:#}");
    }
}

fn serve(name: &str, stop_hint: Duration, body: Body) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let stop_tx = Mutex::new(Some(stop_tx));
    let status_of = |state, accept, exit_code, wait_hint| ServiceStatus {
        service_type: ServiceType::OWN_PROCESS,
        current_state: state,
        controls_accepted: accept,
        exit_code,
        checkpoint: 0,
        wait_hint,
        process_id: None,
    };
    let handle_slot: std::sync::Arc<std::sync::OnceLock<_>> = Default::default();
    let slot = handle_slot.clone();
    let handler = move |control| match control {
        ServiceControl::Stop | ServiceControl::Shutdown | ServiceControl::Preshutdown => {
            tracing::info!(
                ?control,
                "the service manager asks the session server to stop"
            );
            if let Some(h) = slot.get() {
                let _ = windows_service::service_control_handler::ServiceStatusHandle::set_service_status(
                    h,
                    status_of(
                        ServiceState::StopPending,
                        ServiceControlAccept::empty(),
                        ServiceExitCode::NO_ERROR,
                        stop_hint,
                    ),
                );
            }
            if let Some(tx) = stop_tx.lock().unwrap_or_else(|e| e.into_inner()).take() {
                let _ = tx.send(());
            }
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    };
    let handle = service_control_handler::register(name, handler)
        .context("cannot register the service's control handler")?;
    let _ = handle_slot.set(handle);
    let result = match handle.set_service_status(status_of(
        ServiceState::Running,
        ServiceControlAccept::STOP | ServiceControlAccept::PRESHUTDOWN,
        ServiceExitCode::NO_ERROR,
        Duration::ZERO,
    )) {
        Ok(()) => body(stop_rx),
        Err(e) => Err(anyhow::Error::new(e).context("cannot report the service running")),
    };
    let exit_code = match &result {
        Ok(()) => ServiceExitCode::NO_ERROR,
        Err(e) => {
            tracing::error!("the session server stopped with an error: {e:#}");
            // Not NO_ERROR: the service manager's restart policy applies.
            ServiceExitCode::ServiceSpecific(1)
        }
    };
    handle.set_service_status(status_of(
        ServiceState::Stopped,
        ServiceControlAccept::empty(),
        exit_code,
        Duration::ZERO,
    ))?;
    result
}
