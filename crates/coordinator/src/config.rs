//! The coordinator's one `Config`: defaults, then the TOML file (`--config`), then environment
//! (`PXS_COORDINATOR_*`), then flags; validated at start with errors that name the key.
//! `coordinator.example.toml`'s `[coordinator]`-less top level documents every key (a test parses it).

use anyhow::{Context, anyhow, bail};
use pxs_protocol::duration;
use pxs_protocol::secret::Secret;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Flags and environment variables (clap merges them; flags win).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Options {
    /// The TOML file with the coordinator's settings.
    #[arg(long, env = "PXS_COORDINATOR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address of the HTTP API, the web pages and the node hub [default: 127.0.0.1:8080].
    #[arg(long, env = "PXS_COORDINATOR_LISTEN")]
    pub listen: Option<String>,
    /// `sqlite://<file>` (created on first start) or `postgres://user:password@host/db`
    /// [default: sqlite://pxs-coordinator.db].
    #[arg(long, env = "PXS_COORDINATOR_DATABASE_URL")]
    pub database_url: Option<Secret>,
    /// An admin API token accepted in addition to the stored ones.
    #[arg(long, env = "PXS_COORDINATOR_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<Secret>,
    /// A node token accepted in addition to the ones minted through the API.
    #[arg(long, env = "PXS_COORDINATOR_NODE_TOKEN", hide_env_values = true)]
    pub node_token: Option<Secret>,
    /// The secret that session signing keys are derived from (required with PostgreSQL; SQLite
    /// keeps a made one beside the database).
    #[arg(long, env = "PXS_COORDINATOR_SESSION_SECRET", hide_env_values = true)]
    pub session_secret: Option<Secret>,
    /// ice.urls: comma-separated STUN and TURN URLs every session's players and application get
    /// (e.g. stun:turn.example.org:3478,turn:turn.example.org:3478).
    #[arg(long, env = "PXS_COORDINATOR_ICE_URLS")]
    pub ice_urls: Option<String>,
    /// ice.turn_secret: the secret shared with the TURN server (coturn's static-auth-secret).
    #[arg(long, env = "PXS_COORDINATOR_ICE_TURN_SECRET", hide_env_values = true)]
    pub ice_turn_secret: Option<Secret>,
    /// ice.turn_secret_file: a file holding it.
    #[arg(long, env = "PXS_COORDINATOR_ICE_TURN_SECRET_FILE")]
    pub ice_turn_secret_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    database_url: Option<Secret>,
    public_url: Option<String>,
    trusted_proxies: Option<Vec<String>>,
    admin_token: Option<Secret>,
    node_token: Option<Secret>,
    session_secret: Option<Secret>,
    #[serde(default)]
    timing: FileTiming,
    #[serde(default)]
    anonymous: FileAnonymous,
    #[serde(default)]
    limits: FileLimits,
    #[serde(default)]
    titles: FileTitles,
    #[serde(default)]
    ice: pxs_protocol::ice::IceFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTitles {
    approve_new: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTiming {
    heartbeat_ttl: Option<String>,
    node_lost_grace: Option<String>,
    schedule_lead: Option<String>,
    join_token_ttl: Option<String>,
    tick: Option<String>,
    booking_empty_grace: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAnonymous {
    allow: Option<bool>,
    max_sessions_per_address: Option<u32>,
    max_waiting_per_address: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    max_body_bytes: Option<usize>,
    max_node_links: Option<usize>,
    database_wait: Option<String>,
    header_read_timeout: Option<String>,
    idle_timeout: Option<String>,
    max_connections: Option<usize>,
    max_uri_bytes: Option<usize>,
    max_header_bytes: Option<usize>,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: Secret,
    /// How users reach this coordinator (printed, and used in links); default from `listen`.
    pub public_url: Option<String>,
    /// Peers (reverse proxies) whose `X-Forwarded-For` and `X-Forwarded-Proto` are believed
    /// (`trusted_proxies`); empty: none.
    pub trusted_proxies: pxs_net::TrustedProxies,
    pub admin_token: Option<Secret>,
    pub node_token: Option<Secret>,
    /// Session signing keys are derived from it (`crate::keys`).
    pub session_secret: Option<Secret>,
    /// A node silent this long is offline.
    pub heartbeat_ttl: Duration,
    /// Sessions on a node offline this long end as `node_lost`.
    pub node_lost_grace: Duration,
    /// A scheduled session is started this long before its `start_at`.
    pub schedule_lead: Duration,
    /// How long a join URL's player token is valid.
    pub join_token_ttl: Duration,
    /// How often timers (heartbeat TTL, schedules, windows, queue) are checked.
    pub tick: Duration,
    /// A booking nobody joins ends `empty` this long after its `start_at` (its title's
    /// `empty_timeout` at the least) (`timing.booking_empty_grace`); `None`: never before the end
    /// of its window.
    pub booking_empty_grace: Option<Duration>,
    /// Anonymous users may start public titles.
    pub allow_anonymous: bool,
    /// Sessions an anonymous client address may run or have booked at once
    /// (`anonymous.max_sessions_per_address`); past it, a request for now waits in the queue.
    pub anonymous_sessions_per_address: u32,
    /// Requests an anonymous client address may have waiting in queues at once
    /// (`anonymous.max_waiting_per_address`); past it, 429.
    pub anonymous_waiting_per_address: u32,
    /// A title made from a node's application waits for an admin's approval before anyone
    /// but admins sees it (`titles.approve_new`).
    pub approve_new_titles: bool,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Node links held at once.
    pub max_node_links: usize,
    /// Longest a request waits for the database (a connection, or on PostgreSQL the placement
    /// lock) before it is answered 503: under overload, a quick "try again" rather than a
    /// queue that grows without bound.
    pub database_wait: Duration,
    /// The STUN and TURN servers of every session (`[ice]`), sent to the node with
    /// `start_session`. `None`: none (host candidates only, unless a node has its own).
    pub ice: Option<pxs_protocol::ice::IceSettings>,
    /// The HTTP listener's head and idle timeouts, connection cap and head sizes
    /// (`limits.header_read_timeout`, `limits.idle_timeout`, `limits.max_connections`,
    /// `limits.max_uri_bytes`, `limits.max_header_bytes`).
    pub http: pxs_net::Limits,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: Secret("sqlite://pxs-coordinator.db".into()),
            public_url: None,
            trusted_proxies: pxs_net::TrustedProxies::default(),
            admin_token: None,
            node_token: None,
            session_secret: None,
            heartbeat_ttl: Duration::from_secs(15),
            node_lost_grace: Duration::from_secs(60),
            schedule_lead: Duration::from_secs(30),
            join_token_ttl: Duration::from_secs(600),
            tick: Duration::from_millis(500),
            booking_empty_grace: None,
            allow_anonymous: true,
            anonymous_sessions_per_address: 2,
            anonymous_waiting_per_address: 4,
            approve_new_titles: false,
            max_body_bytes: 64 * 1024,
            max_node_links: 20_000,
            database_wait: Duration::from_secs(5),
            ice: None,
            http: pxs_net::Limits {
                // Above the node links' own cap, with room for users and operators.
                max_connections: 30_000,
                ..pxs_net::Limits::default()
            },
        }
    }
}

impl Config {
    /// Defaults, then the file named by `opts.config`, then `opts`.
    pub fn load(opts: &Options) -> anyhow::Result<Config> {
        let (text, origin) = match &opts.config {
            Some(path) => (
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?,
                path.display().to_string(),
            ),
            None => (String::new(), "config".to_owned()),
        };
        let base = opts
            .config
            .as_ref()
            .and_then(|p| p.parent())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        Config::from_toml_at(&text, opts, &base).map_err(|e| anyhow!("{origin}: {e:#}"))
    }

    /// Parses and validates TOML text, with `opts` on top; relative paths (the TURN secret
    /// file) are against the current directory.
    pub fn from_toml(text: &str, opts: &Options) -> anyhow::Result<Config> {
        Config::from_toml_at(text, opts, Path::new("."))
    }

    /// As [`Config::from_toml`], with relative paths against `base`.
    pub fn from_toml_at(text: &str, opts: &Options, base: &Path) -> anyhow::Result<Config> {
        let value: toml::Value = toml::from_str(text).map_err(|e| anyhow!("invalid TOML: {e}"))?;
        // The path names the key (`timing.tick`), which toml's own message does not always.
        let file: FileConfig = serde_path_to_error::deserialize(value)
            .map_err(|e| anyhow!("{}: {}", e.path(), e.inner()))?;
        validate(file, opts, base)
    }
}

/// The longest a timing setting may be: far beyond any sensible value, and far from the
/// overflow of the millisecond arithmetic it takes part in (`now + schedule_lead`).
const MAX_TIMING: Duration = Duration::from_secs(366 * 24 * 3600);

fn dur(key: &str, v: Option<&String>, default: Duration) -> anyhow::Result<Duration> {
    match v {
        None => Ok(default),
        Some(text) => match duration::parse(text).map_err(|e| anyhow!("{key}: {e}"))? {
            None => Err(anyhow!("{key}: must be more than zero")),
            Some(d) if d > MAX_TIMING => Err(anyhow!("{key}: at most 366 days")),
            Some(d) => Ok(d),
        },
    }
}

fn validate(f: FileConfig, opts: &Options, base: &Path) -> anyhow::Result<Config> {
    let d = Config::default();
    let listen_text = opts.listen.clone().or(f.listen);
    let listen = match listen_text {
        None => d.listen,
        Some(t) => t
            .parse()
            .map_err(|_| anyhow!("listen: `{t}` is not an address like 127.0.0.1:8080"))?,
    };
    let database_url = opts
        .database_url
        .clone()
        .or(f.database_url)
        .unwrap_or(d.database_url);
    let url = &database_url.0;
    if !(url.starts_with("sqlite:")
        || url.starts_with("postgres://")
        || url.starts_with("postgresql://"))
    {
        bail!(
            "database_url: use sqlite://<file> or postgres://user:password@host/database, not `{}`",
            crate::store::redact_url(url)
        );
    }
    for (key, token) in [
        (
            "admin_token",
            opts.admin_token.as_ref().or(f.admin_token.as_ref()),
        ),
        (
            "node_token",
            opts.node_token.as_ref().or(f.node_token.as_ref()),
        ),
    ] {
        if let Some(t) = token
            && t.0.len() < 16
        {
            bail!("{key}: must be at least 16 characters");
        }
    }
    let session_secret = opts.session_secret.clone().or(f.session_secret);
    if let Some(s) = &session_secret
        && s.0.trim().len() < crate::keys::MIN_SECRET_LEN
    {
        bail!(
            "session_secret: must be at least {} characters",
            crate::keys::MIN_SECRET_LEN
        );
    }
    if let Some(u) = &f.public_url
        && !(u.starts_with("http://") || u.starts_with("https://"))
    {
        bail!("public_url: must start with http:// or https://");
    }
    let trusted_proxies = pxs_net::TrustedProxies::parse(
        "trusted_proxies",
        f.trusted_proxies.as_deref().unwrap_or_default(),
    )
    .map_err(|e| anyhow!(e))?;
    let t = &f.timing;
    let limits = &f.limits;
    let max_body_bytes = limits.max_body_bytes.unwrap_or(d.max_body_bytes);
    if !(1024..=16 * 1024 * 1024).contains(&max_body_bytes) {
        bail!("limits.max_body_bytes: between 1024 and 16777216");
    }
    let http = pxs_net::Limits {
        header_read_timeout: dur(
            "limits.header_read_timeout",
            limits.header_read_timeout.as_ref(),
            d.http.header_read_timeout,
        )?,
        idle_timeout: dur(
            "limits.idle_timeout",
            limits.idle_timeout.as_ref(),
            d.http.idle_timeout,
        )?,
        max_connections: limits.max_connections.unwrap_or(d.http.max_connections),
        max_uri_bytes: limits.max_uri_bytes.unwrap_or(d.http.max_uri_bytes),
        max_header_bytes: limits.max_header_bytes.unwrap_or(d.http.max_header_bytes),
    };
    http.validate("limits.").map_err(|e| anyhow!(e))?;
    let max_node_links = limits.max_node_links.unwrap_or(d.max_node_links);
    if http.max_connections <= max_node_links {
        bail!(
            "limits.max_connections ({}) must be more than limits.max_node_links ({max_node_links}): \
             every node link holds a connection, and users need some too",
            http.max_connections
        );
    }
    Ok(Config {
        listen,
        database_url,
        public_url: f.public_url.map(|u| u.trim_end_matches('/').to_owned()),
        trusted_proxies,
        admin_token: opts.admin_token.clone().or(f.admin_token),
        node_token: opts.node_token.clone().or(f.node_token),
        session_secret,
        heartbeat_ttl: dur(
            "timing.heartbeat_ttl",
            t.heartbeat_ttl.as_ref(),
            d.heartbeat_ttl,
        )?,
        node_lost_grace: dur(
            "timing.node_lost_grace",
            t.node_lost_grace.as_ref(),
            d.node_lost_grace,
        )?,
        schedule_lead: dur(
            "timing.schedule_lead",
            t.schedule_lead.as_ref(),
            d.schedule_lead,
        )?,
        join_token_ttl: dur(
            "timing.join_token_ttl",
            t.join_token_ttl.as_ref(),
            d.join_token_ttl,
        )?,
        tick: dur("timing.tick", t.tick.as_ref(), d.tick)?,
        booking_empty_grace: match t.booking_empty_grace.as_ref() {
            None => None,
            Some(text) if text == "window" => None,
            Some(text) => Some(dur(
                "timing.booking_empty_grace",
                Some(text),
                Duration::ZERO,
            )?),
        },
        allow_anonymous: f.anonymous.allow.unwrap_or(d.allow_anonymous),
        anonymous_sessions_per_address: f
            .anonymous
            .max_sessions_per_address
            .unwrap_or(d.anonymous_sessions_per_address),
        anonymous_waiting_per_address: f
            .anonymous
            .max_waiting_per_address
            .unwrap_or(d.anonymous_waiting_per_address),
        approve_new_titles: f.titles.approve_new.unwrap_or(d.approve_new_titles),
        max_body_bytes,
        max_node_links,
        database_wait: dur(
            "limits.database_wait",
            limits.database_wait.as_ref(),
            d.database_wait,
        )?,
        ice: pxs_protocol::ice::resolve(
            f.ice,
            &pxs_protocol::ice::IceOverrides {
                urls: opts.ice_urls.clone(),
                turn_secret: opts.ice_turn_secret.clone(),
                turn_secret_file: opts.ice_turn_secret_file.clone(),
            },
            base,
            "ice.",
        )
        .map_err(|e| anyhow!(e))?,
        http,
    })
}

/// `sqlite://<dir>/<file>` for a data dir.
pub fn sqlite_url_in(dir: &Path, file: &str) -> Secret {
    Secret(format!("sqlite://{}", dir.join(file).display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_file() {
        let c = Config::from_toml("", &Options::default()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.database_url.0, "sqlite://pxs-coordinator.db");
        assert_eq!(c.heartbeat_ttl, Duration::from_secs(15));
    }

    #[test]
    fn ice_from_the_file_a_secret_file_beside_it_or_the_environment() {
        let dir = std::env::temp_dir().join(format!("pxs-coord-ice-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("turn.secret"), "coordinator-turn-secret-01\n").unwrap();
        let text =
            "[ice]\nurls = [\"turn:t.example.org:3478\"]\nturn_secret_file = \"turn.secret\"\n";
        let c = Config::from_toml_at(text, &Options::default(), &dir).unwrap();
        let ice = c.ice.clone().unwrap();
        assert_eq!(ice.turn_secret.unwrap().0, "coordinator-turn-secret-01");
        assert!(!format!("{c:?}").contains("coordinator-turn-secret"));
        let env = Options {
            ice_turn_secret: Some(Secret("environment-turn-secret-01".into())),
            ..Default::default()
        };
        let c = Config::from_toml_at(text, &env, &dir).unwrap();
        assert_eq!(
            c.ice.unwrap().turn_secret.unwrap().0,
            "environment-turn-secret-01"
        );
        assert!(
            Config::from_toml("", &Options::default())
                .unwrap()
                .ice
                .is_none()
        );
        let e = format!(
            "{:#}",
            Config::from_toml("[ice]\nurls = [\"http://x\"]", &Options::default()).unwrap_err()
        );
        assert!(e.starts_with("ice.urls:"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn flags_win_over_the_file() {
        let opts = Options {
            listen: Some("127.0.0.1:0".into()),
            ..Default::default()
        };
        let c =
            Config::from_toml("listen = \"0.0.0.0:9\"\n[timing]\ntick = \"50ms\"", &opts).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:0");
        assert_eq!(c.tick, Duration::from_millis(50));
    }

    #[test]
    fn errors_name_the_key() {
        let e = |t: &str| {
            format!(
                "{:#}",
                Config::from_toml(t, &Options::default()).unwrap_err()
            )
        };
        assert!(e("listen = \"nope\"").contains("listen"));
        assert!(e("database_url = \"mysql://x\"").contains("database_url"));
        assert!(e("[timing]\nheartbeat_ttl = \"5 days\"").contains("timing.heartbeat_ttl"));
        for key in ["schedule_lead", "join_token_ttl", "tick", "node_lost_grace"] {
            let err = e(&format!("[timing]\n{key} = \"18446744073709551615s\""));
            assert!(
                err.contains(&format!("timing.{key}: at most 366 days")),
                "{err}"
            );
        }
        assert!(e("surprise = 1").contains("surprise"));
        let links = e("[limits]\nmax_connections = 100\nmax_node_links = 100");
        assert!(
            links.contains("limits.max_connections") && links.contains("limits.max_node_links"),
            "{links}"
        );
        assert!(
            e("[limits]\nidle_timeout = \"1ms\"").contains("limits.idle_timeout: at least"),
            "the idle timeout is not shorter than the head timeout"
        );
        assert!(e("[limits]\nmax_connections = 0").contains("limits.max_connections"));
        assert!(e("[limits]\nheader_read_timeout = \"0s\"").contains("limits.header_read_timeout"));
        assert!(e("admin_token = \"short\"").contains("admin_token"));
        assert!(
            e("trusted_proxies = [\"127.0.0.1/32\", \"localhost\"]")
                .contains("trusted_proxies[1]: `localhost` is not an address")
        );
        assert!(e("trusted_proxies = \"127.0.0.1\"").contains("trusted_proxies"));
        assert!(e("[titles]\napprove_new = \"yes\"").contains("titles.approve_new"));
        assert!(e("[titles]\napprove = true").contains("unknown field `approve`"));
        assert!(
            e("[anonymous]\nmax_sessions_per_address = -1").contains("max_sessions_per_address")
        );
    }

    #[test]
    fn the_example_config_parses() {
        let text = include_str!("../../../coordinator.example.toml");
        let c = Config::from_toml(text, &Options::default()).unwrap();
        assert!(!c.approve_new_titles, "the example shows the default");
    }

    #[test]
    fn database_passwords_are_not_printed() {
        let e = Config::from_toml(
            "database_url = \"mysql://u:hunter2@h/db\"",
            &Options::default(),
        )
        .unwrap_err();
        assert!(!format!("{e:#}").contains("hunter2"));
        let c = Config::from_toml(
            "database_url = \"postgres://u:hunter2@h/db\"",
            &Options::default(),
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
