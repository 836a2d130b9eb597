//! `pxs up`: the whole system on one machine. A coordinator with SQLite in the data dir, one
//! session server linked to it, and the demo title (`pxs streamer`, this very binary), all in
//! this process tree. A second start reuses the data dir (database, tokens, node state).

use anyhow::{Context, bail};
use pxs_coordinator::{Config as CoordinatorConfig, Coordinator, Options as CoordinatorOptions};
use pxs_protocol::api::{NewTitle, TitleId, Visibility};
use pxs_protocol::node::ApplicationId;
use pxs_protocol::secret::Secret;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct UpArgs {
    /// Port of the web pages and the API (0: any free port).
    #[arg(long, default_value_t = 8080, env = "PXS_UP_PORT")]
    port: u16,
    /// Where the database, tokens, node state and logs are kept.
    #[arg(long, default_value = "pxs-data", env = "PXS_UP_DATA_DIR")]
    data_dir: PathBuf,
    /// Demo sessions that can run at once.
    #[arg(long, default_value_t = 2, env = "PXS_UP_SLOTS")]
    slots: u32,
    /// Resolution of the demo title.
    #[arg(long, default_value = "1280x720")]
    resolution: String,
}

/// Reads the token kept in `dir/name`, or makes one and keeps it (readable by the owner only).
fn kept_token(dir: &Path, name: &str) -> anyhow::Result<Secret> {
    let path = dir.join(name);
    if let Ok(t) = std::fs::read_to_string(&path) {
        let t = t.trim().to_owned();
        if t.len() >= 16 {
            return Ok(Secret(t));
        }
    }
    let token = pxs_coordinator::auth::new_token(if name.starts_with("admin") {
        "pxs_adm_"
    } else {
        "pxs_node_"
    });
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    use std::io::Write;
    options
        .open(&path)
        .and_then(|mut f| f.write_all(token.as_bytes()))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(Secret(token))
}

/// A free loopback port (for the node's player port, which must be known for its public URL).
fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("no free port")?;
    Ok(l.local_addr()?.port())
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

pub fn run(args: UpArgs) -> anyhow::Result<std::process::ExitCode> {
    let (res_x, res_y) = match args.resolution.split_once('x') {
        Some((x, y)) => match (x.parse::<u32>(), y.parse::<u32>()) {
            (Ok(x), Ok(y)) if (16..=7680).contains(&x) && (16..=4320).contains(&y) => (x, y),
            _ => bail!("--resolution: like 1280x720"),
        },
        None => bail!("--resolution: like 1280x720"),
    };
    if args.slots == 0 || args.slots > 64 {
        bail!("--slots: between 1 and 64");
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("--data-dir: cannot create {}", args.data_dir.display()))?;
    let data = std::fs::canonicalize(&args.data_dir)?;
    let admin_token = kept_token(&data, "admin-token")?;
    let node_token = kept_token(&data, "node-token")?;
    let exe = std::env::current_exe().context("cannot find the pxs binary")?;
    crate::init_logging("info");
    crate::raise_open_file_limit();

    crate::runtime()?.block_on(async move {
        let opts = CoordinatorOptions {
            listen: Some(format!("127.0.0.1:{}", args.port)),
            database_url: Some(pxs_coordinator::config::sqlite_url_in(
                &data,
                "coordinator.db",
            )),
            admin_token: Some(admin_token.clone()),
            node_token: Some(node_token.clone()),
            // SQLite: the coordinator keeps its session secret beside the database.
            session_secret: None,
            config: None,
        };
        let config = CoordinatorConfig::from_toml("", &opts)?;
        let coordinator = Coordinator::start(config).await?;
        let url = format!("http://{}", coordinator.addr());
        let demo = TitleId::parse("demo")?;
        let _ = coordinator
            .engine
            .create_title(NewTitle {
                id: Some(demo),
                name: "pxs demo".into(),
                description:
                    "A test pattern that shows your input: move the mouse, click and type.".into(),
                image_url: None,
                application_id: ApplicationId::parse("demo")?,
                visibility: Visibility::Public,
                max_players: 0,
                idle_timeout: Some(600),
                empty_timeout: Some(120),
                max_duration: 0,
            })
            .await; // exists after the first start

        let node_port = free_port()?;
        let node_toml = format!(
            "[node]\nname = \"local\"\npublic_url = {public}\nlisten = {listen}\n\
             data_dir = {dir}\nmax_sessions = {slots}\n\n\
             [coordinator]\nurl = {coord}\ntoken = {token}\n\n\
             [[applications]]\nid = \"demo\"\nname = \"pxs demo\"\nexecutable = {exe}\n\
             args = [\"streamer\", \"-RenderOffScreen\"]\nres_x = {res_x}\nres_y = {res_y}\n\
             start_timeout = \"30s\"\n",
            public = toml_str(&format!("http://127.0.0.1:{node_port}")),
            listen = toml_str(&format!("127.0.0.1:{node_port}")),
            dir = toml_str(&data.join("node").display().to_string()),
            slots = args.slots,
            coord = toml_str(&url),
            token = toml_str(&node_token.0),
            exe = toml_str(&exe.display().to_string()),
        );
        let mut node_config = pxs_session_server::Config::from_toml(
            &node_toml,
            &data,
            &pxs_session_server::Options::default(),
        )?;
        node_config.guard_program = Some(exe.clone());
        let node = pxs_session_server::SessionServer::start(node_config).await?;

        println!("pxs up: {url}/");
        println!("admin token: {}", admin_token.0);
        println!("data dir: {}  (Ctrl-C stops everything)", data.display());

        crate::shutdown_signal().await;
        // Sessions first (the node reports them ended while the coordinator still listens).
        node.shutdown().await?;
        coordinator.shutdown().await?;
        anyhow::Ok(())
    })?;
    Ok(std::process::ExitCode::SUCCESS)
}
