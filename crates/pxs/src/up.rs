//! `pxs up`: the whole system on one machine. A coordinator with SQLite in the data dir, one
//! session server linked to it, and the demo title (`pxs streamer`, this very binary), all in
//! this process tree. A second start reuses the data dir (database, tokens, node state).
//!
//! One port carries everything a browser needs: the pages and the API, and the session
//! server's player endpoints under `/node/local/` (the session server's own port is internal,
//! on loopback). With `--listen 0.0.0.0:8080 --public-url http://<this machine>:8080` other
//! machines on the network can use it; the demo's video goes to the address of the public URL.

use anyhow::{Context, bail};
use pxs_coordinator::{Config as CoordinatorConfig, Coordinator, Options as CoordinatorOptions};
use pxs_protocol::api::{NewTitle, TitleId, Visibility};
use pxs_protocol::node::ApplicationId;
use pxs_protocol::secret::Secret;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// The path under which the embedded session server's player endpoints are served.
const NODE_PATH: &str = "/node/local";

#[derive(clap::Args)]
pub struct UpArgs {
    /// Where the web pages, the API and the players' connections are served: an address and a
    /// port (0: any free port). Default 127.0.0.1:8080 (this machine only).
    #[arg(long, env = "PXS_UP_LISTEN", conflicts_with = "port")]
    listen: Option<std::net::SocketAddr>,
    /// Shorthand for --listen 127.0.0.1:PORT.
    #[arg(long, env = "PXS_UP_PORT")]
    port: Option<u16>,
    /// The address browsers use to reach --listen, e.g. http://192.168.1.20:8080 or
    /// https://pxs.example.org behind a proxy. Default: http://<--listen>; needed when --listen
    /// is every address (0.0.0.0 or ::).
    #[arg(long, env = "PXS_UP_PUBLIC_URL")]
    public_url: Option<String>,
    /// Where the database, tokens, node state and logs are kept.
    #[arg(long, default_value = "pxs-data", env = "PXS_UP_DATA_DIR")]
    data_dir: PathBuf,
    /// Demo sessions that can run at once.
    #[arg(long, default_value_t = 2, env = "PXS_UP_SLOTS")]
    slots: u32,
    /// Resolution of the demo title.
    #[arg(long, default_value = "1280x720")]
    resolution: String,
    /// STUN and TURN servers for the sessions' players, comma-separated, e.g.
    /// turn:192.168.1.20:3478 (see docs/turn.md for a coturn to go with it).
    #[arg(long, env = "PXS_UP_ICE_URLS")]
    ice_urls: Option<String>,
    /// The file holding the secret shared with the TURN server (coturn's static-auth-secret):
    /// each player gets its own short-lived TURN credentials made from it.
    #[arg(long, env = "PXS_UP_TURN_SECRET_FILE", requires = "ice_urls")]
    turn_secret_file: Option<PathBuf>,
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

/// `/node/local/...` on the coordinator's port: the session server's player endpoints, once it
/// runs (503 until then).
fn embedded_node(app: Arc<OnceLock<axum::Router>>) -> axum::Router {
    let service = tower::service_fn(move |req: axum::extract::Request| {
        let app = app.get().cloned();
        async move {
            Ok::<_, std::convert::Infallible>(match app {
                Some(app) => match tower::ServiceExt::oneshot(app, req).await {
                    Ok(r) => r,
                    Err(e) => match e {},
                },
                None => axum::response::IntoResponse::into_response((
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "the session server is starting",
                )),
            })
        }
    });
    axum::Router::new().nest_service(NODE_PATH, service)
}

/// `--public-url`: an http(s) URL without query or fragment, kept without a trailing `/`.
struct PublicUrl {
    url: String,
    host: String,
    port: u16,
}

impl PublicUrl {
    fn parse(s: &str) -> anyhow::Result<PublicUrl> {
        let bad = |why: &str| anyhow::anyhow!("--public-url {s:?}: {why}");
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| bad("not a URL; like http://192.168.1.20:8080"))?;
        let default_port = match scheme {
            "http" => 80,
            "https" => 443,
            _ => return Err(bad("must start with http:// or https://")),
        };
        if rest.contains(['?', '#']) || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("no query, fragment or spaces"));
        }
        let authority = rest.split('/').next().unwrap_or("");
        if authority.is_empty() || authority.contains('@') {
            return Err(bad("needs a host (and no user name)"));
        }
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
                (h.to_owned(), after.strip_prefix(':'))
            }
            None => match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (authority.to_owned(), None),
            },
        };
        let port = match port {
            Some(p) => p.parse::<u16>().map_err(|_| bad("bad port"))?,
            None => default_port,
        };
        if host.is_empty() {
            return Err(bad("needs a host"));
        }
        Ok(PublicUrl {
            url: s.trim_end_matches('/').to_owned(),
            host,
            port,
        })
    }

    fn resolved(&self) -> Vec<std::net::IpAddr> {
        use std::net::ToSocketAddrs;
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map(|a| a.map(|a| a.ip()).collect())
            .unwrap_or_default()
    }

    fn is_loopback(&self) -> bool {
        let ips = self.resolved();
        !ips.is_empty() && ips.iter().all(|ip| ip.is_loopback())
    }

    /// The address of the URL's host if it is one of this machine's (a UDP socket can be bound
    /// to it): where the demo offers its video.
    fn local_ip(&self) -> Option<std::net::IpAddr> {
        self.resolved()
            .into_iter()
            .find(|ip| std::net::UdpSocket::bind((*ip, 0)).is_ok())
    }
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
    let listen = args
        .listen
        .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], args.port.unwrap_or(8080))));
    // Checked before anything is started; the URL of port 0 is only known once bound.
    let public = match &args.public_url {
        Some(u) => Some(PublicUrl::parse(u)?),
        None if listen.ip().is_unspecified() => bail!(
            "--public-url is needed with --listen {listen}: the address other machines reach this one at, e.g. http://192.168.1.20:{}",
            listen.port()
        ),
        None => None,
    };
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("--data-dir: cannot create {}", args.data_dir.display()))?;
    let data = std::fs::canonicalize(&args.data_dir)?;
    let admin_token = kept_token(&data, "admin-token")?;
    let node_token = kept_token(&data, "node-token")?;
    let exe = std::env::current_exe().context("cannot find the pxs binary")?;
    crate::init_logging("info");
    crate::raise_open_file_limit();

    crate::runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("--listen: cannot listen on {listen}"))?;
        let bound = listener.local_addr()?;
        let public = match public {
            Some(p) => p,
            None => PublicUrl::parse(&format!("http://{bound}"))?,
        };
        // The node links to the coordinator over loopback whatever --listen is.
        let internal = if bound.ip().is_unspecified() {
            let loopback: std::net::IpAddr = if bound.is_ipv4() {
                [127, 0, 0, 1].into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            };
            std::net::SocketAddr::new(loopback, bound.port())
        } else {
            bound
        };
        let opts = CoordinatorOptions {
            listen: Some(bound.to_string()),
            database_url: Some(pxs_coordinator::config::sqlite_url_in(
                &data,
                "coordinator.db",
            )),
            admin_token: Some(admin_token.clone()),
            node_token: Some(node_token.clone()),
            // SQLite: the coordinator keeps its session secret beside the database.
            session_secret: None,
            config: None,
            ice_urls: args.ice_urls.clone(),
            ice_turn_secret: None,
            ice_turn_secret_file: args.turn_secret_file.clone(),
        };
        let config = CoordinatorConfig::from_toml(
            &format!("public_url = {}\n", toml_str(&public.url)),
            &opts,
        )?;
        // The session server's player endpoints, on this same port, once it runs.
        let node_app = Arc::new(OnceLock::<axum::Router>::new());
        let coordinator = Coordinator::start_embedded(
            config,
            listener,
            Arc::new(pxs_coordinator::SystemClock),
            embedded_node(node_app.clone()),
        )
        .await?;
        let url = format!("http://{internal}");
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

        let mut demo_args = vec!["streamer".to_owned(), "-RenderOffScreen".to_owned()];
        // The demo offers its video at the public address (UE apps offer every interface).
        if let Some(ip) = public.local_ip() {
            demo_args.extend(["--ice-ip".to_owned(), ip.to_string()]);
        } else if !public.is_loopback() {
            tracing::warn!(
                public_url = %public.url,
                "the public URL's host is not an address of this machine: the demo offers its video at the signalling address; other machines may not receive it"
            );
        }
        let node_toml = format!(
            "[node]\nname = \"local\"\npublic_url = {public}\nlisten = \"127.0.0.1:0\"\n\
             data_dir = {dir}\nmax_sessions = {slots}\n\n\
             [coordinator]\nurl = {coord}\ntoken = {token}\n\n\
             [[applications]]\nid = \"demo\"\nname = \"pxs demo\"\nexecutable = {exe}\n\
             args = {demo_args}\nres_x = {res_x}\nres_y = {res_y}\n\
             start_timeout = \"30s\"\n",
            public = toml_str(&format!("{}{NODE_PATH}", public.url)),
            demo_args = toml::Value::Array(demo_args.into_iter().map(toml::Value::String).collect()),
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
        let _ = node_app.set(node.player_app());

        println!("pxs up: {}/", public.url);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_urls_are_checked() {
        let u = PublicUrl::parse("http://192.168.1.20:8080/").unwrap();
        assert_eq!(
            (u.url.as_str(), u.host.as_str(), u.port),
            ("http://192.168.1.20:8080", "192.168.1.20", 8080)
        );
        let u = PublicUrl::parse("https://pxs.example.org/base").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("pxs.example.org", 443));
        let u = PublicUrl::parse("http://[::1]:9000").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9000));
        for bad in [
            "192.168.1.20:8080",
            "ftp://x",
            "http://",
            "http://:80",
            "http://a:99999",
            "http://u@h",
            "http://h/?q",
            "http://h/#f",
            "http://h /",
        ] {
            assert!(PublicUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_loopback_url_offers_video_on_loopback() {
        let u = PublicUrl::parse("http://127.0.0.1:1").unwrap();
        assert!(u.is_loopback());
        assert_eq!(u.local_ip(), Some([127, 0, 0, 1].into()));
        // Not an address of this machine (TEST-NET-3): nothing to bind.
        assert_eq!(
            PublicUrl::parse("http://203.0.113.7").unwrap().local_ip(),
            None
        );
    }
}
