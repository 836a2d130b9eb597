//! Configuration of the standalone signalling server, `pxs webrtc-session`.
//!
//! Option names and defaults are those of Epic's reference server (Wilbur), so that its command
//! lines and `config.json` files work unchanged. Sources, later ones winning: defaults, the config
//! file (`--config_file`, JSON as Wilbur's or TOML by extension), environment variables
//! (`PXS_WEBRTC_<OPTION>`, e.g. `PXS_WEBRTC_PLAYER_PORT`), command-line flags.

use crate::router::{RateLimit, RouterConfig};
use crate::turn::{self, TurnConfig};
use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::Value;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use pxs_protocol::secret::Secret;

/// Every option, each optional so that sources can be layered. The same names serve as flags
/// (`--streamer_port 8888`), config-file keys (`"streamer_port": 8888`) and, upper-cased with a
/// `PXS_WEBRTC_` prefix, environment variables.
#[derive(Clone, Debug, Default, Deserialize, clap::Args)]
#[command(rename_all = "snake_case")]
#[serde(default)]
pub struct Options {
    /// Config file: JSON (Epic's config.json) or TOML (by the .toml extension).
    #[arg(long, env = "PXS_WEBRTC_CONFIG_FILE")]
    #[serde(skip)]
    pub config_file: Option<PathBuf>,
    /// Ignore the config file.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip)]
    pub no_config: Option<bool>,

    /// Address every listener binds to [default: 0.0.0.0].
    #[arg(long, env = "PXS_WEBRTC_BIND_ADDRESS")]
    pub bind_address: Option<IpAddr>,
    /// Port for streamers (UE apps) [default: 8888]. 0 picks a free port.
    #[arg(long, env = "PXS_WEBRTC_STREAMER_PORT")]
    pub streamer_port: Option<u16>,
    /// Port for players: WebSocket on any path, plus the HTTP server [default: 80].
    #[arg(long, env = "PXS_WEBRTC_PLAYER_PORT")]
    pub player_port: Option<u16>,
    /// Port for SFUs [default: 8889].
    #[arg(long, env = "PXS_WEBRTC_SFU_PORT")]
    pub sfu_port: Option<u16>,
    /// Players per streamer, 0 = unlimited [default: 0].
    #[arg(long, env = "PXS_WEBRTC_MAX_PLAYERS")]
    pub max_players: Option<usize>,
    /// JSON passed to players and streamers as `config.peerConnectionOptions` [default: {}].
    #[arg(long, env = "PXS_WEBRTC_PEER_OPTIONS")]
    pub peer_options: Option<String>,
    /// A file holding the peer options JSON (preferred over --peer_options).
    #[arg(long, env = "PXS_WEBRTC_PEER_OPTIONS_FILE")]
    pub peer_options_file: Option<PathBuf>,
    /// Secret shared with the TURN server (coturn's static-auth-secret): every turn:/turns:
    /// entry of the peer options gets a time-limited username and credential per connection.
    #[arg(long, env = "PXS_WEBRTC_TURN_SECRET", hide_env_values = true)]
    pub turn_secret: Option<Secret>,
    /// A file holding the TURN secret (preferred: a command line is visible to other users).
    #[arg(long, env = "PXS_WEBRTC_TURN_SECRET_FILE")]
    pub turn_secret_file: Option<PathBuf>,
    /// Seconds a player's TURN credentials stay valid [default: 86400].
    #[arg(long, env = "PXS_WEBRTC_TURN_TTL")]
    pub turn_ttl: Option<u64>,

    /// Serve static files from --http_root on the player port.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", env = "PXS_WEBRTC_SERVE")]
    pub serve: Option<bool>,
    /// Directory of the static files [default: www].
    #[arg(long, env = "PXS_WEBRTC_HTTP_ROOT")]
    pub http_root: Option<PathBuf>,
    /// File served at `/` [default: player.html].
    #[arg(long, env = "PXS_WEBRTC_HOMEPAGE")]
    pub homepage: Option<String>,

    /// Also serve players over HTTPS on --https_port.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", env = "PXS_WEBRTC_HTTPS")]
    pub https: Option<bool>,
    /// HTTPS port; setting it implies --https [default: 443].
    #[arg(long, env = "PXS_WEBRTC_HTTPS_PORT")]
    pub https_port: Option<u16>,
    /// PEM private key [default: certificates/client-key.pem].
    #[arg(long, env = "PXS_WEBRTC_SSL_KEY_PATH")]
    pub ssl_key_path: Option<PathBuf>,
    /// PEM certificate chain [default: certificates/client-cert.pem].
    #[arg(long, env = "PXS_WEBRTC_SSL_CERT_PATH")]
    pub ssl_cert_path: Option<PathBuf>,

    /// Serve the read-only REST API under /api, and Prometheus metrics at /metrics, on the
    /// player port.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", env = "PXS_WEBRTC_REST_API")]
    pub rest_api: Option<bool>,
    /// Console log level: debug, info, warning, error [default: info].
    #[arg(long, env = "PXS_WEBRTC_LOG_LEVEL_CONSOLE")]
    pub log_level_console: Option<String>,

    /// Players must present this token (`?token=` or `Authorization: Bearer`); 401 otherwise.
    #[arg(long, env = "PXS_WEBRTC_PLAYER_TOKEN", hide_env_values = true)]
    pub player_token: Option<Secret>,
    /// A file holding the player token.
    #[arg(long, env = "PXS_WEBRTC_PLAYER_TOKEN_FILE")]
    pub player_token_file: Option<PathBuf>,
    /// Streamers and SFUs must present this token; 401 otherwise.
    #[arg(long, env = "PXS_WEBRTC_STREAMER_TOKEN", hide_env_values = true)]
    pub streamer_token: Option<Secret>,
    /// A file holding the streamer token.
    #[arg(long, env = "PXS_WEBRTC_STREAMER_TOKEN_FILE")]
    pub streamer_token_file: Option<PathBuf>,
    /// WebSocket connections per client IP address, 0 = unlimited [default: 0].
    #[arg(long, env = "PXS_WEBRTC_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,
    /// Largest accepted WebSocket message, in bytes [default: 65536]. A player's larger message
    /// closes it (1009); a streamer's is logged and dropped.
    #[arg(long, env = "PXS_WEBRTC_MAX_MESSAGE_SIZE")]
    pub max_message_size: Option<usize>,
    /// Largest WebSocket message a streamer or an SFU may send before it is closed (1009), in
    /// bytes [default: 1048576]; between max_message_size and this it is logged and dropped.
    #[arg(long, env = "PXS_WEBRTC_STREAMER_MAX_MESSAGE_SIZE")]
    pub streamer_max_message_size: Option<usize>,
    /// Messages a player may send per second on average, 0 = unlimited [default: 100].
    #[arg(long, env = "PXS_WEBRTC_PLAYER_MESSAGE_RATE")]
    pub player_message_rate: Option<f64>,
    /// Messages a player may send at once above the average rate [default: 400].
    #[arg(long, env = "PXS_WEBRTC_PLAYER_MESSAGE_BURST")]
    pub player_message_burst: Option<f64>,
    /// Messages queued to one connection before it counts as a slow reader and is closed
    /// [default: 1024].
    #[arg(long, env = "PXS_WEBRTC_SEND_QUEUE")]
    pub send_queue: Option<usize>,
    /// Seconds after which a streamer that never sent `endpointId` is registered under a legacy
    /// id, 0 = never [default: 5].
    #[arg(long, env = "PXS_WEBRTC_LEGACY_STREAMER_TIMEOUT")]
    pub legacy_streamer_timeout: Option<f64>,
    /// Seconds a connection has to send a complete request head (from opening, or from the
    /// first byte of a later request); slower ones are closed [default: 10].
    #[arg(long, env = "PXS_WEBRTC_HEADER_READ_TIMEOUT")]
    pub header_read_timeout: Option<f64>,
    /// Seconds a kept-alive HTTP connection may wait for its next request [default: 60].
    #[arg(long, env = "PXS_WEBRTC_IDLE_TIMEOUT")]
    pub idle_timeout: Option<f64>,
    /// Connections open at once per listener (streamer, player, SFU, HTTPS), WebSockets
    /// included; more are closed at once [default: 10000].
    #[arg(long, env = "PXS_WEBRTC_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Longest request target in bytes; longer is answered 414 [default: 8192].
    #[arg(long, env = "PXS_WEBRTC_MAX_URI_BYTES")]
    pub max_uri_bytes: Option<usize>,
    /// Largest request head in bytes; larger is answered 431 [default: 32768].
    #[arg(long, env = "PXS_WEBRTC_MAX_HEADER_BYTES")]
    pub max_header_bytes: Option<usize>,
    /// Seconds a WebSocket peer may stay silent (no message, no pong to the server's pings,
    /// sent every third of it) before it is closed with 1001 [default: 60].
    #[arg(long, env = "PXS_WEBRTC_WEBSOCKET_IDLE_TIMEOUT")]
    pub websocket_idle_timeout: Option<f64>,

    // Epic options accepted for drop-in compatibility and otherwise ignored (logs go to the
    // console; a reverse proxy in front of pxs is expected to do CORS and redirects).
    #[arg(long, hide = true)]
    pub log_folder: Option<String>,
    #[arg(long, hide = true)]
    pub log_level_file: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "basic")]
    pub console_messages: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true")]
    pub https_redirect: Option<bool>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true")]
    pub log_config: Option<bool>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true")]
    pub stdin: Option<bool>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true")]
    pub save: Option<bool>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true")]
    pub cors: Option<bool>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true", alias = "reverse-proxy")]
    pub reverse_proxy: Option<bool>,
    #[arg(long, hide = true)]
    pub reverse_proxy_num_proxies: Option<u32>,
    #[arg(long, hide = true)]
    pub public_ip: Option<String>,
}

/// Options whose values are never shown, not even in an error about them.
const SECRETS: &[&str] = &["player_token", "streamer_token", "turn_secret"];

/// Option names accepted in a config file and ignored with a notice.
const IGNORED: &[&str] = &[
    "log_folder",
    "log_level_file",
    "console_messages",
    "https_redirect",
    "log_config",
    "stdin",
    "save",
    "cors",
    "cors_allowed_origins",
    "cors_allowed_methods",
    "cors_allowed_headers",
    "cors_credentials",
    "reverse_proxy",
    "reverse_proxy_num_proxies",
    "public_ip",
];

const KNOWN: &[&str] = &[
    "bind_address",
    "streamer_port",
    "player_port",
    "sfu_port",
    "max_players",
    "peer_options",
    "peer_options_file",
    "turn_secret",
    "turn_secret_file",
    "turn_ttl",
    "serve",
    "http_root",
    "homepage",
    "https",
    "https_port",
    "ssl_key_path",
    "ssl_cert_path",
    "rest_api",
    "log_level_console",
    "player_token",
    "player_token_file",
    "streamer_token",
    "streamer_token_file",
    "max_connections_per_ip",
    "max_message_size",
    "streamer_max_message_size",
    "player_message_rate",
    "player_message_burst",
    "send_queue",
    "legacy_streamer_timeout",
    "header_read_timeout",
    "idle_timeout",
    "max_connections",
    "max_uri_bytes",
    "max_header_bytes",
    "websocket_idle_timeout",
];

impl Options {
    /// `self` with every option that `over` sets replaced by `over`'s.
    fn layered(self, over: Options) -> Options {
        macro_rules! pick {
            ($($f:ident),*) => { Options { $($f: over.$f.or(self.$f),)* } };
        }
        pick!(
            config_file,
            no_config,
            bind_address,
            streamer_port,
            player_port,
            sfu_port,
            max_players,
            peer_options,
            peer_options_file,
            turn_secret,
            turn_secret_file,
            turn_ttl,
            serve,
            http_root,
            homepage,
            https,
            https_port,
            ssl_key_path,
            ssl_cert_path,
            rest_api,
            log_level_console,
            player_token,
            player_token_file,
            streamer_token,
            streamer_token_file,
            max_connections_per_ip,
            max_message_size,
            streamer_max_message_size,
            player_message_rate,
            player_message_burst,
            send_queue,
            legacy_streamer_timeout,
            header_read_timeout,
            idle_timeout,
            max_connections,
            max_uri_bytes,
            max_header_bytes,
            websocket_idle_timeout,
            log_folder,
            log_level_file,
            console_messages,
            https_redirect,
            log_config,
            stdin,
            save,
            cors,
            reverse_proxy,
            reverse_proxy_num_proxies,
            public_ip
        )
    }
}

/// Reads a config file. Unknown keys are reported back (Epic's server ignores them too); a key
/// with a wrong type is an error that names it.
pub fn read_file(path: &Path) -> anyhow::Result<(Options, Vec<String>)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let value: Value = if path.extension().is_some_and(|e| e == "toml") {
        let t: toml::Value =
            toml::from_str(&text).with_context(|| format!("{}: invalid TOML", path.display()))?;
        serde_json::to_value(t)?
    } else {
        serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", path.display()))?
    };
    let Value::Object(map) = &value else {
        bail!(
            "{}: the config must be an object of options",
            path.display()
        );
    };
    let mut notes = Vec::new();
    for key in map.keys() {
        // Epic's config.json also spells options in PascalCase in older versions; we take only
        // the documented snake_case names.
        if IGNORED.contains(&key.as_str()) {
            notes.push(format!(
                "{}: option `{key}` is not supported by pxs and is ignored",
                path.display()
            ));
        } else if !KNOWN.contains(&key.as_str()) {
            notes.push(format!(
                "{}: unknown option `{key}` ignored",
                path.display()
            ));
        }
    }
    let opts: Options = serde_path_to_error::deserialize(value).map_err(|e| {
        let key = e.path().to_string();
        // serde's message quotes the value it could not take: not for a secret.
        if SECRETS.contains(&key.as_str()) {
            anyhow::anyhow!(
                "{}: option `{key}`: must be a string (the value is not shown)",
                path.display()
            )
        } else {
            anyhow::anyhow!("{}: option `{key}`: {}", path.display(), e.inner())
        }
    })?;
    Ok((opts, notes))
}

/// The validated configuration of a standalone signalling server.
#[derive(Clone, Debug)]
pub struct Config {
    pub bind_address: IpAddr,
    pub streamer_port: u16,
    pub player_port: u16,
    pub sfu_port: u16,
    /// `(port, certificate path, key path)` when HTTPS is on.
    pub https: Option<(u16, PathBuf, PathBuf)>,
    pub serve: Option<StaticFiles>,
    pub rest_api: bool,
    pub log_level: String,
    pub player_token: Option<Secret>,
    pub streamer_token: Option<Secret>,
    pub max_connections_per_ip: usize,
    pub limits: crate::session::Limits,
    /// Every listener's head and idle timeouts, connection cap and head sizes.
    pub http: pxs_net::Limits,
    pub router: RouterConfig,
    /// Things worth telling the operator at start (ignored options).
    pub notes: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct StaticFiles {
    pub root: PathBuf,
    pub homepage: String,
}

impl Config {
    /// Layers defaults, the config file named by `cli` (if any) and `cli` (flags and environment,
    /// already merged by clap), then validates.
    pub fn load(cli: Options) -> anyhow::Result<Config> {
        let mut notes = Vec::new();
        let file = match (&cli.config_file, cli.no_config) {
            (Some(path), None | Some(false)) => {
                let (opts, n) = read_file(path)?;
                notes = n;
                opts
            }
            _ => Options::default(),
        };
        let mut config = Config::from_options(file.layered(cli))?;
        notes.append(&mut config.notes);
        config.notes = notes;
        Ok(config)
    }

    pub fn from_options(o: Options) -> anyhow::Result<Config> {
        let mut notes = Vec::new();
        for (name, set) in [
            ("log_folder", o.log_folder.is_some()),
            ("log_level_file", o.log_level_file.is_some()),
            ("console_messages", o.console_messages.is_some()),
            ("https_redirect", o.https_redirect.is_some()),
            ("cors", o.cors.is_some()),
            ("reverse_proxy", o.reverse_proxy.is_some()),
        ] {
            if set {
                notes.push(format!(
                    "option `{name}` is not supported by pxs and is ignored"
                ));
            }
        }
        let peer_options = match (&o.peer_options_file, &o.peer_options) {
            (Some(path), _) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("peer_options_file: cannot read {}", path.display())
                })?;
                parse_peer_options(&text)
                    .with_context(|| format!("peer_options_file: {}", path.display()))?
            }
            (None, Some(text)) => parse_peer_options(text).context("peer_options")?,
            (None, None) => Value::Object(Default::default()),
        };
        let https_on = o.https.unwrap_or(false) || o.https_port.is_some();
        let https = https_on.then(|| {
            (
                o.https_port.unwrap_or(443),
                o.ssl_cert_path
                    .clone()
                    .unwrap_or_else(|| "certificates/client-cert.pem".into()),
                o.ssl_key_path
                    .clone()
                    .unwrap_or_else(|| "certificates/client-key.pem".into()),
            )
        });
        if let Some((_, cert, key)) = &https {
            for (name, path) in [("ssl_cert_path", cert), ("ssl_key_path", key)] {
                if !path.is_file() {
                    bail!("{name}: {} is not a readable file", path.display());
                }
            }
        }
        let serve = o.serve.unwrap_or(false).then(|| StaticFiles {
            root: o.http_root.clone().unwrap_or_else(|| "www".into()),
            homepage: o.homepage.clone().unwrap_or_else(|| "player.html".into()),
        });
        if let Some(s) = &serve
            && !s.root.is_dir()
        {
            bail!("http_root: {} is not a directory", s.root.display());
        }
        let log_level = match o.log_level_console.as_deref().unwrap_or("info") {
            l @ ("debug" | "info" | "error" | "trace") => l.to_owned(),
            "warning" | "warn" => "warn".to_owned(),
            other => {
                bail!("log_level_console: `{other}` is not one of debug, info, warning, error")
            }
        };
        let player_token = token(
            o.player_token,
            o.player_token_file.as_deref(),
            "player_token",
        )?;
        let streamer_token = token(
            o.streamer_token,
            o.streamer_token_file.as_deref(),
            "streamer_token",
        )?;
        let turn = turn_config(
            token(o.turn_secret, o.turn_secret_file.as_deref(), "turn_secret")?,
            o.turn_ttl,
            &peer_options,
            player_token.is_some(),
            &mut notes,
        )?;
        let max_message_size = o.max_message_size.unwrap_or(64 * 1024);
        if !(256..=16 * 1024 * 1024).contains(&max_message_size) {
            bail!("max_message_size: {max_message_size} is outside 256..=16777216 bytes");
        }
        let streamer_max_message_size = o
            .streamer_max_message_size
            .unwrap_or((1024 * 1024).max(max_message_size));
        if !(max_message_size..=64 * 1024 * 1024).contains(&streamer_max_message_size) {
            bail!(
                "streamer_max_message_size: {streamer_max_message_size} is outside \
                 max_message_size ({max_message_size})..=67108864 bytes"
            );
        }
        let send_queue = o.send_queue.unwrap_or(1024);
        if send_queue == 0 {
            bail!("send_queue: must be at least 1");
        }
        let rate = o.player_message_rate.unwrap_or(100.0);
        let burst = o.player_message_burst.unwrap_or(400.0);
        if !rate.is_finite() || rate < 0.0 {
            bail!("player_message_rate: must be a number >= 0");
        }
        if !burst.is_finite() || burst < 1.0 {
            bail!("player_message_burst: must be a number >= 1");
        }
        let legacy = o.legacy_streamer_timeout.unwrap_or(5.0);
        if !legacy.is_finite() || !(0.0..=86_400.0).contains(&legacy) {
            bail!("legacy_streamer_timeout: must be between 0 and 86400 seconds");
        }
        let d = pxs_net::Limits::default();
        let http = pxs_net::Limits {
            header_read_timeout: seconds(
                "header_read_timeout",
                o.header_read_timeout,
                d.header_read_timeout,
            )?,
            idle_timeout: seconds("idle_timeout", o.idle_timeout, d.idle_timeout)?,
            max_connections: o.max_connections.unwrap_or(d.max_connections),
            max_uri_bytes: o.max_uri_bytes.unwrap_or(d.max_uri_bytes),
            max_header_bytes: o.max_header_bytes.unwrap_or(d.max_header_bytes),
        };
        http.validate("").map_err(|e| anyhow::anyhow!(e))?;
        let websocket_idle_timeout = seconds(
            "websocket_idle_timeout",
            o.websocket_idle_timeout,
            crate::session::Limits::default().idle_timeout,
        )?;
        if websocket_idle_timeout < Duration::from_millis(30) {
            bail!("websocket_idle_timeout: at least 0.03 seconds");
        }
        Ok(Config {
            bind_address: o.bind_address.unwrap_or(IpAddr::from([0, 0, 0, 0])),
            streamer_port: o.streamer_port.unwrap_or(8888),
            player_port: o.player_port.unwrap_or(80),
            sfu_port: o.sfu_port.unwrap_or(8889),
            https,
            serve,
            rest_api: o.rest_api.unwrap_or(false),
            log_level,
            player_token,
            streamer_token,
            max_connections_per_ip: o.max_connections_per_ip.unwrap_or(0),
            limits: crate::session::Limits {
                max_message_size,
                streamer_max_message_size,
                send_queue,
                idle_timeout: websocket_idle_timeout,
                ..Default::default()
            },
            http,
            router: RouterConfig {
                peer_connection_options: peer_options,
                max_players: o.max_players.unwrap_or(0),
                legacy_timeout: (legacy > 0.0).then(|| Duration::from_secs_f64(legacy)),
                player_rate: (rate > 0.0).then_some(RateLimit {
                    per_second: rate,
                    burst,
                }),
                streamer_rate: None,
                expected_streamer_id: None,
                // The standalone server is Epic's: no shared-session users.
                users: None,
                turn,
            },
            notes,
        })
    }
}

/// A duration option given in seconds (Epic's style), more than zero and at most a day.
fn seconds(name: &str, value: Option<f64>, default: Duration) -> anyhow::Result<Duration> {
    match value {
        None => Ok(default),
        Some(v) if v.is_finite() && v > 0.0 && v <= 86_400.0 => Ok(Duration::from_secs_f64(v)),
        Some(_) => bail!("{name}: must be more than 0 and at most 86400 seconds"),
    }
}

fn parse_peer_options(text: &str) -> anyhow::Result<Value> {
    if text.trim().is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    let v: Value = serde_json::from_str(text).context("not valid JSON")?;
    if !v.is_object() {
        bail!("must be a JSON object such as {{\"iceServers\":[...]}}");
    }
    Ok(v)
}

/// A secret given as `<name>` or read from `<name>_file` (the value wins when both are set). The
/// file's surrounding whitespace (its trailing newline) is not part of it; empty is an error.
fn token(value: Option<Secret>, file: Option<&Path>, name: &str) -> anyhow::Result<Option<Secret>> {
    let t = match (value, file) {
        (Some(v), _) => v.0,
        (None, Some(path)) => {
            let t = std::fs::read_to_string(path)
                .with_context(|| format!("{name}_file: cannot read {}", path.display()))?
                .trim()
                .to_owned();
            if t.is_empty() {
                bail!("{name}_file: {} is empty", path.display());
            }
            t
        }
        (None, None) => return Ok(None),
    };
    if t.is_empty() {
        bail!("{name}: must not be empty");
    }
    Ok(Some(Secret(t)))
}

/// The TURN credentials to issue (`turn_secret`, `turn_ttl`), with what the operator should hear
/// about the peer options they go into. Never says the secret.
fn turn_config(
    secret: Option<Secret>,
    turn_ttl: Option<u64>,
    peer_options: &Value,
    player_token: bool,
    notes: &mut Vec<String>,
) -> anyhow::Result<Option<TurnConfig>> {
    let ttl = match turn_ttl {
        None => turn::DEFAULT_TTL,
        Some(s) if (1..=turn::STREAMER_TTL.as_secs()).contains(&s) => Duration::from_secs(s),
        Some(_) => bail!(
            "turn_ttl: must be between 1 and {} seconds (ten years)",
            turn::STREAMER_TTL.as_secs()
        ),
    };
    let Some(secret) = secret else {
        if turn_ttl.is_some() {
            notes
                .push("turn_ttl is set without turn_secret: no TURN credentials are issued".into());
        }
        if turn::has_turn_server_without_credentials(peer_options) {
            notes.push(
                "peer_options name a TURN server without a username or credential, and no \
                 turn_secret is set: clients cannot authenticate with it"
                    .into(),
            );
        }
        return Ok(None);
    };
    if !turn::has_turn_server(peer_options) {
        notes.push(
            "turn_secret is set but peer_options name no turn: or turns: server: no TURN \
             credentials are issued"
                .into(),
        );
    }
    if !player_token {
        notes.push(
            "TURN credentials are issued to anyone who can open a player WebSocket: set \
             player_token to choose who may"
                .into(),
        );
    }
    Ok(Some(TurnConfig::new(secret, ttl)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        opts: Options,
    }

    fn parse(args: &[&str]) -> Options {
        Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied()))
            .expect("parses")
            .opts
    }

    #[test]
    fn defaults_are_epics() {
        let c = Config::from_options(Options::default()).unwrap();
        assert_eq!(
            (c.streamer_port, c.player_port, c.sfu_port),
            (8888, 80, 8889)
        );
        assert_eq!(c.router.max_players, 0);
        assert_eq!(c.router.peer_connection_options, serde_json::json!({}));
        assert!(c.serve.is_none() && c.https.is_none() && !c.rest_api);
        assert_eq!(c.limits.max_message_size, 65536);
        assert_eq!(c.limits.streamer_max_message_size, 1024 * 1024);
        // A larger message limit raises the streamers' with it.
        let big = Config::from_options(Options {
            max_message_size: Some(2 * 1024 * 1024),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(big.limits.streamer_max_message_size, 2 * 1024 * 1024);
    }

    #[test]
    fn epic_flag_names_parse() {
        let o = parse(&[
            "--streamer_port",
            "1",
            "--player_port",
            "2",
            "--sfu_port",
            "3",
            "--max_players",
            "4",
            "--peer_options",
            r#"{"iceServers":[]}"#,
            "--rest_api",
            "--log_level_console",
            "warning",
            "--console_messages",
            "--https_redirect",
        ]);
        let c = Config::from_options(o).unwrap();
        assert_eq!((c.streamer_port, c.player_port, c.sfu_port), (1, 2, 3));
        assert_eq!(c.router.max_players, 4);
        assert!(c.rest_api);
        assert_eq!(c.log_level, "warn");
        assert_eq!(c.notes.len(), 2, "{:?}", c.notes);
    }

    #[test]
    fn flags_override_the_config_file() {
        let dir = pxs_test_support::scratch_dir("cfg");
        let path = dir.join("config.json");
        std::fs::write(
            &path,
            r#"{"streamer_port": 9000, "player_port": 9001, "UseMatchmaker": true, "log_folder": "logs"}"#,
        )
        .unwrap();
        let mut o = parse(&["--player_port", "9100"]);
        o.config_file = Some(path.clone());
        let c = Config::load(o).unwrap();
        assert_eq!((c.streamer_port, c.player_port), (9000, 9100));
        assert!(c.notes.iter().any(|n| n.contains("UseMatchmaker")));
        assert!(c.notes.iter().any(|n| n.contains("log_folder")));

        let toml = dir.join("config.toml");
        std::fs::write(&toml, "streamer_port = 7000\nmax_players = 2\n").unwrap();
        let c = Config::load(Options {
            config_file: Some(toml),
            ..Default::default()
        })
        .unwrap();
        assert_eq!((c.streamer_port, c.router.max_players), (7000, 2));
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let dir = pxs_test_support::scratch_dir("cfg-bad");
        let path = dir.join("config.json");
        std::fs::write(&path, r#"{"streamer_port": "eighty"}"#).unwrap();
        let err = Config::load(Options {
            config_file: Some(path),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("streamer_port"), "{err}");

        for (opts, key) in [
            (
                Options {
                    peer_options: Some("[1]".into()),
                    ..Default::default()
                },
                "peer_options",
            ),
            (
                Options {
                    peer_options: Some("{".into()),
                    ..Default::default()
                },
                "peer_options",
            ),
            (
                Options {
                    log_level_console: Some("loud".into()),
                    ..Default::default()
                },
                "log_level_console",
            ),
            (
                Options {
                    max_message_size: Some(1),
                    ..Default::default()
                },
                "max_message_size",
            ),
            (
                Options {
                    streamer_max_message_size: Some(1024),
                    ..Default::default()
                },
                "streamer_max_message_size",
            ),
            (
                Options {
                    https: Some(true),
                    ssl_cert_path: Some("/nonexistent".into()),
                    ..Default::default()
                },
                "ssl_cert_path",
            ),
            (
                Options {
                    serve: Some(true),
                    http_root: Some("/nonexistent".into()),
                    ..Default::default()
                },
                "http_root",
            ),
            (
                Options {
                    player_token: Some(Secret(String::new())),
                    ..Default::default()
                },
                "player_token",
            ),
            (
                Options {
                    legacy_streamer_timeout: Some(-1.0),
                    ..Default::default()
                },
                "legacy_streamer_timeout",
            ),
            (
                Options {
                    header_read_timeout: Some(0.0),
                    ..Default::default()
                },
                "header_read_timeout",
            ),
            (
                Options {
                    header_read_timeout: Some(30.0),
                    idle_timeout: Some(5.0),
                    ..Default::default()
                },
                "idle_timeout",
            ),
            (
                Options {
                    max_connections: Some(0),
                    ..Default::default()
                },
                "max_connections",
            ),
            (
                Options {
                    websocket_idle_timeout: Some(f64::NAN),
                    ..Default::default()
                },
                "websocket_idle_timeout",
            ),
        ] {
            let err = format!("{:#}", Config::from_options(opts).unwrap_err());
            assert!(err.contains(key), "{err} should name {key}");
        }
    }

    #[test]
    fn the_example_config_parses_with_every_key_known() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../webrtc-session.example.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        // Uncomment every `# key = value` line: each documented key must be a known option.
        let uncommented: String = text
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| {
                l.split_once(" = ")
                    .is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let value: toml::Value = toml::from_str(&uncommented).unwrap();
        let table = value.as_table().unwrap();
        for key in KNOWN {
            assert!(
                table.contains_key(*key),
                "webrtc-session.example.toml does not document `{key}`"
            );
        }
        for key in table.keys() {
            assert!(
                KNOWN.contains(&key.as_str()),
                "webrtc-session.example.toml documents unknown `{key}`"
            );
        }
        let (opts, notes) = read_file(&path).unwrap();
        assert!(notes.is_empty(), "{notes:?}");
        Config::from_options(opts).unwrap();
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let c = Config::from_options(Options {
            player_token: Some(Secret("hunter2".into())),
            turn_secret: Some(Secret("turn-hunter3".into())),
            ..Default::default()
        })
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("turn-hunter3"));
        assert!(c.router.turn.is_some());
    }

    const TURN_PEER_OPTIONS: &str = r#"{"iceServers":[{"urls":["turn:turn.example.org:3478"]}]}"#;

    #[test]
    fn turn_options_parse_as_epics_with_a_day_by_default() {
        let c = Config::from_options(parse(&[
            "--turn_secret",
            "s3cret",
            "--peer_options",
            TURN_PEER_OPTIONS,
        ]))
        .unwrap();
        let t = c.router.turn.as_ref().expect("credentials are issued");
        assert_eq!(t.secret, Secret("s3cret".into()));
        assert_eq!(t.ttl, Duration::from_secs(86_400));
        assert_eq!(t.streamer_ttl, turn::STREAMER_TTL);
        let c = Config::from_options(parse(&["--turn_secret", "s", "--turn_ttl", "600"])).unwrap();
        assert_eq!(c.router.turn.unwrap().ttl, Duration::from_secs(600));
        assert!(
            Config::from_options(Options::default())
                .unwrap()
                .router
                .turn
                .is_none(),
            "no secret, no credentials"
        );
    }

    #[test]
    fn a_secret_of_the_wrong_type_is_not_shown_in_the_error() {
        let dir = pxs_test_support::scratch_dir("cfg-secret-type");
        for key in SECRETS {
            let path = dir.join(format!("{key}.toml"));
            std::fs::write(&path, format!("{key} = 987654321\n")).unwrap();
            let err = format!("{:#}", read_file(&path).unwrap_err());
            assert!(err.contains(key) && !err.contains("987654321"), "{err}");
        }
    }

    #[test]
    fn the_turn_secret_file_is_read_at_start_without_its_trailing_newline() {
        let dir = pxs_test_support::scratch_dir("cfg-turn");
        let secret = dir.join("turn_secret");
        std::fs::write(&secret, "from-the-file\n").unwrap();
        let path = dir.join("config.toml");
        std::fs::write(
            &path,
            format!(
                "turn_secret_file = {:?}\nturn_ttl = 120\npeer_options = '{TURN_PEER_OPTIONS}'\n",
                secret.display().to_string()
            ),
        )
        .unwrap();
        let c = Config::load(Options {
            config_file: Some(path),
            ..Default::default()
        })
        .unwrap();
        let t = c.router.turn.unwrap();
        assert_eq!(t.secret, Secret("from-the-file".into()));
        assert_eq!(t.ttl, Duration::from_secs(120));
    }

    #[test]
    fn a_missing_or_empty_turn_secret_file_or_a_bad_ttl_stops_the_start() {
        let dir = pxs_test_support::scratch_dir("cfg-turn-bad");
        let empty = dir.join("empty");
        std::fs::write(&empty, "\n").unwrap();
        for (opts, says) in [
            (
                Options {
                    turn_secret_file: Some(dir.join("missing")),
                    ..Default::default()
                },
                "turn_secret_file: cannot read",
            ),
            (
                Options {
                    turn_secret_file: Some(empty),
                    ..Default::default()
                },
                "turn_secret_file",
            ),
            (
                Options {
                    turn_secret: Some(Secret(String::new())),
                    ..Default::default()
                },
                "turn_secret: must not be empty",
            ),
            (
                Options {
                    turn_secret: Some(Secret("s".into())),
                    turn_ttl: Some(0),
                    ..Default::default()
                },
                "turn_ttl",
            ),
        ] {
            let err = format!("{:#}", Config::from_options(opts).unwrap_err());
            assert!(err.contains(says), "{err} should say {says}");
        }
    }

    #[test]
    fn the_operator_hears_of_turn_settings_that_cannot_work_and_never_the_secret() {
        let notes = |args: &[&str]| Config::from_options(parse(args)).unwrap().notes;
        let n = notes(&["--turn_secret", "n0tsaid"]);
        assert!(
            n.iter().any(|n| n.contains("no turn: or turns: server")),
            "{n:?}"
        );
        assert!(n.iter().any(|n| n.contains("player_token")), "{n:?}");
        assert!(n.iter().all(|n| !n.contains("n0tsaid")));
        let n = notes(&["--peer_options", TURN_PEER_OPTIONS]);
        assert!(
            n.iter()
                .any(|n| n.contains("without a username or credential")),
            "{n:?}"
        );
        let n = notes(&["--turn_ttl", "60"]);
        assert!(n.iter().any(|n| n.contains("turn_ttl")), "{n:?}");
        let n = notes(&[
            "--turn_secret",
            "s",
            "--player_token",
            "p",
            "--peer_options",
            TURN_PEER_OPTIONS,
        ]);
        assert!(n.is_empty(), "{n:?}");
    }
}
