//! The session server's configuration: defaults, then the TOML file (`--config`), then the
//! environment (`PXS_NODE_<KEY>`, `PXS_COORDINATOR_<KEY>`), then flags (`--node-<key>`,
//! `--coordinator-<key>`). Applications are declared in the file only (`[[applications]]`).
//!
//! Everything is validated at start; an error names the file and the key
//! (`session-server.toml: applications[1].executable: ...`) and the server does not start.

use anyhow::{Context, anyhow, bail};
use pxs_net::TrustedProxies;
use pxs_protocol::api::{MAX_IMAGE_URL, MAX_TITLE_DESCRIPTION, MAX_TITLE_NAME, Visibility};
use pxs_protocol::ice::IceSettings;
use pxs_protocol::node::{ApplicationId, ApplicationInfo, NodeId};
use pxs_protocol::upstream::{self, UpstreamUrl};
use serde::Deserialize;
use std::collections::BTreeMap;

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Tokens are the signalling server's secret type: never printed by `Debug`.
pub use pxs_webrtc_session::config::Secret;

/// The options that flags and the environment can set (the file can set them too, under
/// `[node]` and `[coordinator]`). Kept as text here: validation parses them, so that an error
/// names the key.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Options {
    /// The TOML config file.
    #[arg(long, global = true, env = "PXS_SESSION_SERVER_CONFIG")]
    pub config: Option<PathBuf>,
    /// node.name: this node's name, as the coordinator lists it [default: the host name].
    #[arg(long, global = true, env = "PXS_NODE_NAME")]
    pub node_name: Option<String>,
    /// node.public_url: where browsers reach this node, e.g. https://gpu1.example.org.
    #[arg(long, global = true, env = "PXS_NODE_PUBLIC_URL")]
    pub node_public_url: Option<String>,
    /// node.listen: the HTTP address players connect to [default: 0.0.0.0:8090].
    #[arg(long, global = true, env = "PXS_NODE_LISTEN")]
    pub node_listen: Option<String>,
    /// node.upstream_url: where a reverse proxy (NGINX) reaches this node's HTTP port, e.g.
    /// http://10.0.0.11:8090 [default: http://<node.listen> unless it is 0.0.0.0 or ::].
    #[arg(long, global = true, env = "PXS_NODE_UPSTREAM_URL")]
    pub node_upstream_url: Option<String>,
    /// node.trusted_proxies: comma-separated addresses or blocks (127.0.0.1/32,10.0.0.0/8)
    /// whose X-Forwarded-For is believed [default: none].
    #[arg(long, global = true, env = "PXS_NODE_TRUSTED_PROXIES")]
    pub node_trusted_proxies: Option<String>,
    /// node.data_dir: running sessions (for crash recovery) and per-session logs [default: data].
    #[arg(long, global = true, env = "PXS_NODE_DATA_DIR")]
    pub node_data_dir: Option<PathBuf>,
    /// node.max_sessions [default: 4].
    #[arg(long, global = true, env = "PXS_NODE_MAX_SESSIONS")]
    pub node_max_sessions: Option<String>,
    /// node.streamer_ports: loopback ports for the sessions' streamers [default: 20000-20999].
    #[arg(long, global = true, env = "PXS_NODE_STREAMER_PORTS")]
    pub node_streamer_ports: Option<String>,
    /// node.kill_grace: from the graceful stop to killing the process tree [default: 10s].
    #[arg(long, global = true, env = "PXS_NODE_KILL_GRACE")]
    pub node_kill_grace: Option<String>,
    /// node.max_sessions_per_gpu: 0 = no limit [default: 0].
    #[arg(long, global = true, env = "PXS_NODE_MAX_SESSIONS_PER_GPU")]
    pub node_max_sessions_per_gpu: Option<String>,
    /// node.heartbeat_interval [default: 5s].
    #[arg(long, global = true, env = "PXS_NODE_HEARTBEAT_INTERVAL")]
    pub node_heartbeat_interval: Option<String>,
    /// node.gpus: "auto" (NVIDIA, through NVML) or "none" [default: auto].
    #[arg(long, global = true, env = "PXS_NODE_GPUS")]
    pub node_gpus: Option<String>,
    /// coordinator.url: the coordinator, e.g. https://pxs.example.org.
    #[arg(long, global = true, env = "PXS_COORDINATOR_URL")]
    pub coordinator_url: Option<String>,
    /// coordinator.token: this node's token.
    #[arg(
        long,
        global = true,
        env = "PXS_COORDINATOR_TOKEN",
        hide_env_values = true
    )]
    pub coordinator_token: Option<Secret>,
    /// coordinator.token_file: a file holding the node token.
    #[arg(long, global = true, env = "PXS_COORDINATOR_TOKEN_FILE")]
    pub coordinator_token_file: Option<PathBuf>,
    /// ice.urls: comma-separated STUN and TURN URLs for this node's sessions, instead of the
    /// coordinator's (e.g. stun:turn.example.org:3478,turn:turn.example.org:3478).
    #[arg(long, global = true, env = "PXS_ICE_URLS")]
    pub ice_urls: Option<String>,
    /// ice.turn_secret: the secret shared with the TURN server (coturn's static-auth-secret).
    #[arg(
        long,
        global = true,
        env = "PXS_ICE_TURN_SECRET",
        hide_env_values = true
    )]
    pub ice_turn_secret: Option<Secret>,
    /// ice.turn_secret_file: a file holding it.
    #[arg(long, global = true, env = "PXS_ICE_TURN_SECRET_FILE")]
    pub ice_turn_secret_file: Option<PathBuf>,
}

// ----- the file, as written -----

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    node: FileNode,
    #[serde(default)]
    coordinator: FileCoordinator,
    #[serde(default)]
    applications: Vec<FileApplication>,
    #[serde(default)]
    limits: FileLimits,
    #[serde(default)]
    ice: pxs_protocol::ice::IceFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    header_read_timeout: Option<String>,
    idle_timeout: Option<String>,
    max_connections: Option<usize>,
    max_uri_bytes: Option<usize>,
    max_header_bytes: Option<usize>,
    websocket_idle_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileNode {
    name: Option<String>,
    public_url: Option<String>,
    listen: Option<String>,
    upstream_url: Option<String>,
    trusted_proxies: Option<Vec<String>>,
    data_dir: Option<PathBuf>,
    max_sessions: Option<u32>,
    streamer_ports: Option<String>,
    kill_grace: Option<String>,
    max_sessions_per_gpu: Option<u32>,
    heartbeat_interval: Option<String>,
    gpus: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCoordinator {
    url: Option<String>,
    token: Option<Secret>,
    token_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileApplication {
    id: String,
    name: Option<String>,
    description: Option<String>,
    image_url: Option<String>,
    visibility: Option<String>,
    executable: PathBuf,
    #[serde(default)]
    args: Vec<String>,
    working_dir: Option<PathBuf>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    res_x: Option<u32>,
    res_y: Option<u32>,
    max_players: Option<u32>,
    idle_timeout: Option<String>,
    empty_timeout: Option<String>,
    max_duration: Option<String>,
    start_timeout: Option<String>,
}

// ----- validated -----

/// An application this node can run.
#[derive(Clone, Debug, PartialEq)]
pub struct Application {
    pub id: ApplicationId,
    pub name: String,
    /// For the catalog: what it is (the description of the title the coordinator makes of it).
    pub description: String,
    /// For the catalog: a picture of it (http(s) URL).
    pub image_url: Option<String>,
    /// For the catalog: who may see the title the coordinator makes of it.
    pub visibility: Visibility,
    /// Resolved: absolute, or as found on `PATH`.
    pub executable: PathBuf,
    pub args: Vec<String>,
    pub working_dir: Option<PathBuf>,
    pub env: BTreeMap<String, String>,
    pub res_x: u32,
    pub res_y: u32,
    /// Players per session; 0 = unlimited.
    pub max_players: u32,
    /// `None`: never.
    pub idle_timeout: Option<Duration>,
    pub empty_timeout: Option<Duration>,
    pub max_duration: Option<Duration>,
    pub start_timeout: Duration,
}

impl Application {
    pub fn info(&self) -> ApplicationInfo {
        ApplicationInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            res_x: self.res_x,
            res_y: self.res_y,
            max_players: self.max_players,
            description: self.description.clone(),
            image_url: self.image_url.clone(),
            visibility: Some(self.visibility),
            idle_timeout: Some(whole_seconds(self.idle_timeout)),
            empty_timeout: Some(whole_seconds(self.empty_timeout)),
        }
    }
}

/// A timeout as the node link writes it: whole seconds, rounded up (so 500ms is not 0, which
/// means never), 0 for never.
fn whole_seconds(d: Option<Duration>) -> u64 {
    d.map_or(0, |d| {
        d.as_millis().div_ceil(1000).try_into().unwrap_or(u64::MAX)
    })
}

/// `applications[i].name`, `.description`: at most `max` characters, no control characters
/// (newlines and tabs in a description); a name is not blank.
fn catalog_text(key: &str, value: &str, max: usize, multiline: bool) -> anyhow::Result<()> {
    let n = value.chars().count();
    if n > max {
        bail!("{key}: {n} characters; at most {max}");
    }
    if !multiline && value.trim().is_empty() {
        bail!("{key}: must not be blank");
    }
    if value
        .chars()
        .any(|c| c.is_control() && !(multiline && matches!(c, '\n' | '\t' | '\r')))
    {
        bail!("{key}: control characters are not allowed");
    }
    Ok(())
}

/// `applications[i].image_url`: an http:// or https:// URL with a host, at most
/// [`MAX_IMAGE_URL`] characters, no spaces or control characters.
fn image_url(key: &str, url: &str) -> anyhow::Result<String> {
    let host = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    if host.is_none_or(|h| h.is_empty() || h.starts_with('/')) {
        bail!(
            "{key}: `{}` is not an http:// or https:// URL",
            shorten(url)
        );
    }
    if url.chars().count() > MAX_IMAGE_URL {
        bail!("{key}: at most {MAX_IMAGE_URL} characters");
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!("{key}: spaces and control characters are not allowed (percent-encode them)");
    }
    Ok(url.to_owned())
}

/// At most 60 characters of `s` for an error message.
fn shorten(s: &str) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(60).collect();
    if s.chars().count() > 60 {
        out.push('…');
    }
    out
}

/// Whether to look for GPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuDetection {
    Auto,
    None,
}

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub name: NodeId,
    pub public_url: String,
    pub listen: SocketAddr,
    /// `node.upstream_url` as set; [`NodeConfig::upstream_for`] adds the default.
    pub upstream_url: Option<UpstreamUrl>,
    /// Peers whose `X-Forwarded-For` names the player (`node.trusted_proxies`).
    pub trusted_proxies: TrustedProxies,
    pub data_dir: PathBuf,
    pub max_sessions: u32,
    pub streamer_ports: RangeInclusive<u16>,
    pub kill_grace: Duration,
    pub max_sessions_per_gpu: u32,
    pub heartbeat_interval: Duration,
    pub gpus: GpuDetection,
}

impl NodeConfig {
    /// Where a reverse proxy reaches this node, listening on `addr` (`node.listen`, or the
    /// address it was bound to when its port was 0): `node.upstream_url` if set, else
    /// `http://<addr>` when `addr` is a specific address; `None` for every address (0.0.0.0,
    /// ::), which names none a proxy could use.
    pub fn upstream_for(&self, addr: SocketAddr) -> Option<UpstreamUrl> {
        upstream_for(self.upstream_url.as_ref(), addr)
    }
}

fn upstream_for(set: Option<&UpstreamUrl>, addr: SocketAddr) -> Option<UpstreamUrl> {
    if set.is_some() {
        return set.cloned();
    }
    if addr.ip().is_unspecified() || addr.port() == 0 {
        return None;
    }
    upstream::parse(&format!("http://{addr}")).ok()
}

#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    /// The node link's WebSocket URL (`ws[s]://host/api/v1/nodes/link`).
    pub link_url: String,
    pub token: Secret,
}

/// The validated configuration of a session server.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it came from, for reloads.
    pub file: Option<PathBuf>,
    pub node: NodeConfig,
    pub coordinator: CoordinatorConfig,
    /// The node port's (and each session's streamer listener's) head and idle timeouts,
    /// connection cap and head sizes (`[limits]`).
    pub http: pxs_net::Limits,
    /// A player or streamer WebSocket silent this long is closed (`limits.websocket_idle_timeout`).
    pub websocket_idle_timeout: Duration,
    pub applications: Vec<Application>,
    /// This node's own STUN and TURN servers (`[ice]`): its sessions use them instead of the
    /// coordinator's. `None`: the coordinator's, if it sends any.
    pub ice: Option<IceSettings>,
    /// Things worth telling the operator at start.
    pub notes: Vec<String>,
    /// What it was loaded from (flags and environment), for reloads.
    pub options: Options,
    /// The `pxs` binary, which runs each session's guard (`pxs session-server guard`, Unix): the
    /// guard kills the session's processes when the session server dies. Not a config key: the
    /// `pxs` binary sets its own path here. `None`: applications are not guarded (a warning at
    /// start) and only the next start's sweep of the data dir kills what a crash left.
    pub guard_program: Option<PathBuf>,
}

impl Config {
    /// Layers defaults, the file named by `opts.config` and `opts` (flags and environment, merged
    /// by clap), then validates.
    pub fn load(opts: &Options) -> anyhow::Result<Config> {
        let (file, base) = match &opts.config {
            Some(path) => (read_file(path)?, path.parent().map(Path::to_path_buf)),
            None => (FileConfig::default(), None),
        };
        let origin = opts
            .config
            .as_ref()
            .map_or_else(|| "config".to_owned(), |p| p.display().to_string());
        validate(file, opts, base.as_deref().unwrap_or(Path::new(".")))
            .map(|mut c| {
                c.file = opts.config.clone();
                c.options = opts.clone();
                c
            })
            .map_err(|e| anyhow!("{origin}: {e:#}"))
    }

    /// Parses and validates TOML text (relative paths against `base`), with `opts` on top.
    pub fn from_toml(text: &str, base: &Path, opts: &Options) -> anyhow::Result<Config> {
        let mut c = validate(parse_toml(text)?, opts, base)?;
        c.options = opts.clone();
        Ok(c)
    }

    /// A summary for `check-config`, with secrets left out.
    pub fn summary(&self) -> String {
        let n = &self.node;
        let mut s = format!(
            "node {} at {} (listening on {}, upstream {}), data dir {}\n\
             max_sessions {}, streamer ports {}-{}, kill_grace {:?}, max_sessions_per_gpu {}, gpus {:?}\n\
             coordinator {} (token set)\n{} application(s):\n",
            n.name,
            n.public_url,
            n.listen,
            n.upstream_for(n.listen)
                .map_or_else(|| "not set".to_owned(), |u| u.to_string()),
            n.data_dir.display(),
            n.max_sessions,
            n.streamer_ports.start(),
            n.streamer_ports.end(),
            n.kill_grace,
            n.max_sessions_per_gpu,
            n.gpus,
            self.coordinator.link_url,
            self.applications.len()
        );
        for a in &self.applications {
            s.push_str(&format!(
                "  {} ({}): {} {}x{}\n",
                a.id,
                a.name,
                a.executable.display(),
                a.res_x,
                a.res_y
            ));
        }
        s.push_str(&ice_summary(self.ice.as_ref()));
        s
    }
}

/// One line on STUN and TURN for `check-config`: the URLs and how clients authenticate, never
/// the secret or a credential.
fn ice_summary(ice: Option<&IceSettings>) -> String {
    let Some(ice) = ice else {
        return "ice: the coordinator's STUN and TURN servers (none on this node)\n".into();
    };
    let auth = if ice.turn_secret.is_some() {
        format!(
            "credentials made per connection from turn_secret, valid {}s",
            ice.turn_ttl
                .unwrap_or(pxs_webrtc_session::turn::DEFAULT_TTL.as_secs())
        )
    } else if ice.username.is_some() {
        "a fixed username and credential".into()
    } else {
        "no TURN".into()
    };
    format!("ice: {} ({auth})\n", ice.urls.join(", "))
}

/// What a reverse proxy needs of a node, from its config file alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeIdentity {
    pub name: NodeId,
    /// `node.public_url` as written (`None`: not set).
    pub public_url: Option<String>,
    /// [`NodeConfig::upstream_for`] its `node.listen`.
    pub upstream_url: Option<UpstreamUrl>,
    /// `node.listen` (or its default), for messages.
    pub listen: SocketAddr,
}

/// The `[node]` name, public URL and upstream of the config file at `path`, for
/// `pxs nginx-config --node-config`: the file must parse (unknown keys are errors), but the rest
/// of it is not checked (its applications need not exist on the machine that reads it), and no
/// environment variable or flag applies. A missing `node.name` is this machine's host name, as
/// for the session server itself.
pub fn node_identity(path: &Path) -> anyhow::Result<NodeIdentity> {
    let n = read_file(path)?.node;
    let origin = path.display();
    let name_text = n.name.unwrap_or_else(default_name);
    let name = NodeId::parse(&name_text)
        .map_err(|e| anyhow!("{origin}: node.name: `{name_text}`: {e}"))?;
    let listen_text = n.listen.unwrap_or_else(|| "0.0.0.0:8090".into());
    let listen: SocketAddr = listen_text.parse().map_err(|_| {
        anyhow!("{origin}: node.listen: `{listen_text}` is not an address like 0.0.0.0:8090")
    })?;
    let upstream_url = match n.upstream_url {
        Some(u) => Some(
            upstream::parse(u.trim())
                .map_err(|e| anyhow!("{origin}: node.upstream_url: `{}`: {e}", u.escape_debug()))?,
        ),
        None => None,
    };
    Ok(NodeIdentity {
        upstream_url: upstream_for(upstream_url.as_ref(), listen),
        name,
        public_url: n
            .public_url
            .map(|u| u.trim().trim_end_matches('/').to_owned()),
        listen,
    })
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    parse_toml(&text).map_err(|e| anyhow!("{}: {e:#}", path.display()))
}

fn parse_toml(text: &str) -> anyhow::Result<FileConfig> {
    let value: toml::Value = toml::from_str(text).map_err(|e| anyhow!("invalid TOML: {e}"))?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            anyhow!("{}", e.inner())
        } else {
            anyhow!("{path}: {}", e.inner())
        }
    })
}

/// Parses "90s", "15m", "2h", "500ms", "1h30m"; "0", "off" and "none" are `None`.
pub use pxs_protocol::duration::parse as parse_duration;

/// "20000-20999" (or a single port).
pub fn parse_port_range(text: &str) -> Result<RangeInclusive<u16>, String> {
    let (a, b) = match text.split_once('-') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (text.trim(), text.trim()),
    };
    let parse = |s: &str| {
        s.parse::<u16>()
            .map_err(|_| format!("`{text}` is not a port range like \"20000-20999\""))
    };
    let (a, b) = (parse(a)?, parse(b)?);
    if a == 0 {
        return Err(format!("`{text}`: port 0 is not a port"));
    }
    if a > b {
        return Err(format!("`{text}`: the range is empty (start above end)"));
    }
    Ok(a..=b)
}

/// The longest duration a setting may have: far beyond any sensible timeout, and far from the
/// overflow of the clock arithmetic it takes part in (`started + start_timeout`).
const MAX_SETTING: Duration = Duration::from_secs(366 * 24 * 3600);

fn duration_key(key: &str, text: Option<&str>, default: &str) -> anyhow::Result<Option<Duration>> {
    match parse_duration(text.unwrap_or(default)).map_err(|e| anyhow!("{key}: {e}"))? {
        Some(d) if d > MAX_SETTING => Err(anyhow!("{key}: at most 366 days")),
        d => Ok(d),
    }
}

fn required_duration(key: &str, text: Option<&str>, default: &str) -> anyhow::Result<Duration> {
    duration_key(key, text, default)?.ok_or_else(|| anyhow!("{key}: must be more than 0"))
}

fn number<T: std::str::FromStr>(
    key: &str,
    flag: Option<&String>,
    file: Option<T>,
    default: T,
) -> anyhow::Result<T> {
    match flag {
        Some(text) => text
            .trim()
            .parse()
            .map_err(|_| anyhow!("{key}: `{text}` is not a whole number")),
        None => Ok(file.unwrap_or(default)),
    }
}

fn default_name() -> String {
    let raw = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .unwrap_or_default();
    let cleaned: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if cleaned.is_empty() {
        "node".into()
    } else {
        cleaned
    }
}

/// Where a program named by the config is: a bare name is looked up on `PATH`; a relative path
/// is taken from `base` (the config file's directory).
fn resolve_executable(exe: &Path, base: &Path) -> Result<PathBuf, String> {
    let is_bare = exe.components().count() == 1 && !exe.is_absolute();
    let candidates: Vec<PathBuf> = if is_bare {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).map(|d| d.join(exe)).collect())
            .unwrap_or_default()
    } else if exe.is_absolute() {
        vec![exe.to_path_buf()]
    } else {
        vec![base.join(exe)]
    };
    let mut with_ext = Vec::new();
    for c in candidates {
        if cfg!(windows) && c.extension().is_none() {
            with_ext.push(c.with_extension("exe"));
        }
        with_ext.push(c);
    }
    for c in &with_ext {
        if is_executable(c) {
            return Ok(c.clone());
        }
    }
    if is_bare {
        Err(format!("`{}` is not found on PATH", exe.display()))
    } else {
        let shown = with_ext.last().map_or(exe.to_path_buf(), Clone::clone);
        if shown.exists() {
            Err(format!("{} is not an executable file", shown.display()))
        } else {
            Err(format!("{} does not exist", shown.display()))
        }
    }
}

fn is_executable(p: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(p) else {
        return false;
    };
    if !meta.is_file() {
        return false;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        true
    }
}

/// The node link URL from what the operator wrote: `http(s)://` becomes `ws(s)://`, and a URL
/// without a path gets `/api/v1/nodes/link`.
fn link_url(text: &str) -> Result<String, String> {
    let t = text.trim().trim_end_matches('/');
    let (scheme, rest) = t
        .split_once("://")
        .ok_or_else(|| format!("`{text}` is not a URL like https://coordinator.example.org"))?;
    let ws = match scheme {
        "http" | "ws" => "ws",
        "https" | "wss" => "wss",
        other => {
            return Err(format!(
                "`{text}`: scheme `{other}` is not http, https, ws or wss"
            ));
        }
    };
    if rest.is_empty() {
        return Err(format!("`{text}` has no host"));
    }
    if rest.contains('/') {
        Ok(format!("{ws}://{rest}"))
    } else {
        Ok(format!("{ws}://{rest}/api/v1/nodes/link"))
    }
}

fn validate(file: FileConfig, o: &Options, base: &Path) -> anyhow::Result<Config> {
    let mut notes = Vec::new();
    let n = file.node;
    let name_text = o.node_name.clone().or(n.name).unwrap_or_else(default_name);
    let name = NodeId::parse(&name_text).map_err(|e| anyhow!("node.name: `{name_text}`: {e}"))?;

    let listen_text = o
        .node_listen
        .clone()
        .or(n.listen)
        .unwrap_or_else(|| "0.0.0.0:8090".into());
    let listen: SocketAddr = listen_text
        .parse()
        .map_err(|_| anyhow!("node.listen: `{listen_text}` is not an address like 0.0.0.0:8090"))?;

    let public_url = match o.node_public_url.clone().or(n.public_url) {
        Some(u) => {
            let u = u.trim().trim_end_matches('/').to_owned();
            if !(u.starts_with("http://") || u.starts_with("https://"))
                || u.split_once("://").is_some_and(|(_, h)| h.is_empty())
            {
                bail!("node.public_url: `{u}` is not an http:// or https:// URL");
            }
            u
        }
        None => {
            let u = format!("http://127.0.0.1:{}", listen.port());
            notes.push(format!(
                "node.public_url is not set: players are told {u}, which only works on this machine"
            ));
            u
        }
    };

    let upstream_url = match o.node_upstream_url.clone().or(n.upstream_url) {
        Some(u) => Some(
            upstream::parse(u.trim())
                .map_err(|e| anyhow!("node.upstream_url: `{}`: {e}", u.escape_debug()))?,
        ),
        None => None,
    };
    let trusted_proxies = match (&o.node_trusted_proxies, n.trusted_proxies) {
        (Some(text), _) => TrustedProxies::parse_list("node.trusted_proxies", text),
        (None, Some(list)) => TrustedProxies::parse("node.trusted_proxies", &list),
        (None, None) => Ok(TrustedProxies::default()),
    }
    .map_err(|e| anyhow!(e))?;

    let data_dir = o
        .node_data_dir
        .clone()
        .or(n.data_dir)
        .unwrap_or_else(|| "data".into());
    if data_dir.exists() && !data_dir.is_dir() {
        bail!("node.data_dir: {} is not a directory", data_dir.display());
    }

    let max_sessions = number(
        "node.max_sessions",
        o.node_max_sessions.as_ref(),
        n.max_sessions,
        4,
    )?;
    if max_sessions == 0 {
        bail!("node.max_sessions: must be at least 1");
    }
    let ports_text = o
        .node_streamer_ports
        .clone()
        .or(n.streamer_ports)
        .unwrap_or_else(|| "20000-20999".into());
    let streamer_ports =
        parse_port_range(&ports_text).map_err(|e| anyhow!("node.streamer_ports: {e}"))?;
    let count = u32::from(*streamer_ports.end()) - u32::from(*streamer_ports.start()) + 1;
    if count < max_sessions {
        bail!(
            "node.streamer_ports: {count} port(s) in `{ports_text}` for node.max_sessions = {max_sessions}"
        );
    }
    if streamer_ports.contains(&listen.port()) {
        bail!(
            "node.streamer_ports: `{ports_text}` contains node.listen's port {}",
            listen.port()
        );
    }
    let kill_grace = required_duration(
        "node.kill_grace",
        o.node_kill_grace.as_deref().or(n.kill_grace.as_deref()),
        "10s",
    )?;
    let max_sessions_per_gpu = number(
        "node.max_sessions_per_gpu",
        o.node_max_sessions_per_gpu.as_ref(),
        n.max_sessions_per_gpu,
        0,
    )?;
    let heartbeat_interval = required_duration(
        "node.heartbeat_interval",
        o.node_heartbeat_interval
            .as_deref()
            .or(n.heartbeat_interval.as_deref()),
        "5s",
    )?;
    let gpus = match o
        .node_gpus
        .as_deref()
        .or(n.gpus.as_deref())
        .unwrap_or("auto")
    {
        "auto" => GpuDetection::Auto,
        "none" => GpuDetection::None,
        other => bail!("node.gpus: `{other}` is not \"auto\" or \"none\""),
    };

    let c = file.coordinator;
    let url_text =
        o.coordinator_url.clone().or(c.url).ok_or_else(|| {
            anyhow!("coordinator.url: not set (the coordinator this node links to)")
        })?;
    let link_url = link_url(&url_text).map_err(|e| anyhow!("coordinator.url: {e}"))?;
    let token = match (
        o.coordinator_token.clone().or(c.token),
        o.coordinator_token_file.clone().or(c.token_file),
    ) {
        (Some(t), _) => t,
        (None, Some(path)) => Secret(
            std::fs::read_to_string(&path)
                .map_err(|e| {
                    anyhow!(
                        "coordinator.token_file: cannot read {}: {e}",
                        path.display()
                    )
                })?
                .trim()
                .to_owned(),
        ),
        (None, None) => bail!("coordinator.token: not set (this node's token)"),
    };
    if token.0.trim().is_empty() {
        bail!("coordinator.token: must not be empty");
    }

    let mut applications: Vec<Application> = Vec::new();
    for (i, a) in file.applications.into_iter().enumerate() {
        let key = |k: &str| format!("applications[{i}].{k}");
        let id =
            ApplicationId::parse(&a.id).map_err(|e| anyhow!("{}: `{}`: {e}", key("id"), a.id))?;
        if let Some(j) = applications.iter().position(|b| b.id == id) {
            bail!(
                "{}: duplicate application id `{id}` (also applications[{j}].id)",
                key("id")
            );
        }
        let working_dir = match a.working_dir {
            Some(d) => {
                let d = if d.is_absolute() { d } else { base.join(d) };
                if !d.is_dir() {
                    bail!("{}: {} is not a directory", key("working_dir"), d.display());
                }
                Some(d)
            }
            None => None,
        };
        let executable = resolve_executable(&a.executable, base)
            .map_err(|e| anyhow!("{}: {e}", key("executable")))?;
        let res_x = a.res_x.unwrap_or(1920);
        let res_y = a.res_y.unwrap_or(1080);
        for (k, v) in [("res_x", res_x), ("res_y", res_y)] {
            if !(64..=8192).contains(&v) {
                bail!("{}: {v} is outside 64..=8192", key(k));
            }
        }
        for k in a.env.keys() {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                bail!("{}: `{k}` is not an environment variable name", key("env"));
            }
        }
        for arg in &a.args {
            if arg.contains('\0') {
                bail!("{}: an argument contains a NUL byte", key("args"));
            }
        }
        let name = a.name.unwrap_or_else(|| id.to_string());
        catalog_text(&key("name"), &name, MAX_TITLE_NAME, false)?;
        let description = a.description.unwrap_or_default();
        catalog_text(
            &key("description"),
            &description,
            MAX_TITLE_DESCRIPTION,
            true,
        )?;
        let image_url = match a.image_url.as_deref() {
            None | Some("") => None,
            Some(u) => Some(image_url(&key("image_url"), u)?),
        };
        let visibility = match a.visibility.as_deref() {
            None | Some("public") => Visibility::Public,
            Some("private") => Visibility::Private,
            Some(other) => bail!(
                "{}: `{}` is not \"public\" or \"private\"",
                key("visibility"),
                shorten(other)
            ),
        };
        applications.push(Application {
            name,
            description,
            image_url,
            visibility,
            id,
            executable,
            args: a.args,
            working_dir,
            env: a.env,
            res_x,
            res_y,
            max_players: a.max_players.unwrap_or(0),
            idle_timeout: duration_key(&key("idle_timeout"), a.idle_timeout.as_deref(), "15m")?,
            empty_timeout: duration_key(&key("empty_timeout"), a.empty_timeout.as_deref(), "5m")?,
            max_duration: duration_key(&key("max_duration"), a.max_duration.as_deref(), "off")?,
            start_timeout: required_duration(
                &key("start_timeout"),
                a.start_timeout.as_deref(),
                "120s",
            )?,
        });
    }
    if applications.is_empty() {
        notes.push("no [[applications]]: this node cannot start sessions".into());
    }
    let l = &file.limits;
    let d = pxs_net::Limits::default();
    let http = pxs_net::Limits {
        header_read_timeout: required_duration(
            "limits.header_read_timeout",
            l.header_read_timeout.as_deref(),
            "10s",
        )?,
        idle_timeout: required_duration("limits.idle_timeout", l.idle_timeout.as_deref(), "60s")?,
        max_connections: l.max_connections.unwrap_or(d.max_connections),
        max_uri_bytes: l.max_uri_bytes.unwrap_or(d.max_uri_bytes),
        max_header_bytes: l.max_header_bytes.unwrap_or(d.max_header_bytes),
    };
    http.validate("limits.").map_err(|e| anyhow!(e))?;
    let websocket_idle_timeout = required_duration(
        "limits.websocket_idle_timeout",
        l.websocket_idle_timeout.as_deref(),
        "60s",
    )?;
    if websocket_idle_timeout < Duration::from_millis(30) {
        bail!("limits.websocket_idle_timeout: at least 30ms");
    }
    let ice = pxs_protocol::ice::resolve(
        file.ice,
        &pxs_protocol::ice::IceOverrides {
            urls: o.ice_urls.clone(),
            turn_secret: o.ice_turn_secret.clone(),
            turn_secret_file: o.ice_turn_secret_file.clone(),
        },
        base,
        "ice.",
    )
    .map_err(|e| anyhow!(e))?;
    Ok(Config {
        file: None,
        node: NodeConfig {
            name,
            public_url,
            listen,
            upstream_url,
            trusted_proxies,
            data_dir,
            max_sessions,
            streamer_ports,
            kill_grace,
            max_sessions_per_gpu,
            heartbeat_interval,
            gpus,
        },
        coordinator: CoordinatorConfig { link_url, token },
        http,
        websocket_idle_timeout,
        applications,
        ice,
        notes,
        options: Options::default(),
        guard_program: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exe() -> String {
        // Any executable file will do: the test binary itself.
        std::env::current_exe().unwrap().display().to_string()
    }

    fn base_toml(apps: &str) -> String {
        format!(
            "[node]\nname = \"n1\"\npublic_url = \"https://n1.example.org\"\nstreamer_ports = \"30000-30009\"\n\
             [coordinator]\nurl = \"https://c.example.org\"\ntoken = \"s3cret\"\n{apps}"
        )
    }

    fn app(id: &str) -> String {
        format!(
            "[[applications]]\nid = \"{id}\"\nexecutable = '{}'\n",
            exe()
        )
    }

    fn err(text: &str) -> String {
        format!(
            "{:#}",
            Config::from_toml(text, Path::new("."), &Options::default()).unwrap_err()
        )
    }

    #[test]
    fn ice_comes_from_the_file_or_the_environment_and_the_summary_keeps_the_secret() {
        let toml = format!(
            "{}[ice]\nurls = [\"stun:t.example.org:3478\", \"turn:t.example.org:3478?transport=udp\"]\n\
             turn_secret = \"node-turn-secret-0123456789\"\nturn_ttl = \"2h\"\n",
            base_toml(&app("a"))
        );
        let c = Config::from_toml(&toml, Path::new("."), &Options::default()).unwrap();
        let ice = c.ice.as_ref().unwrap();
        assert_eq!(ice.turn_ttl, Some(7200));
        assert_eq!(
            ice.turn_secret.as_ref().unwrap().0,
            "node-turn-secret-0123456789"
        );
        let summary = c.summary();
        assert!(
            summary.contains("ice: stun:t.example.org:3478, turn:t.example.org:3478?transport=udp (credentials made per connection from turn_secret, valid 7200s)"),
            "{summary}"
        );
        assert!(
            !summary.contains("node-turn-secret") && !format!("{c:?}").contains("node-turn-secret")
        );
        // Flags and the environment (PXS_ICE_*) win over the file.
        let flags = Options {
            ice_urls: Some("turn:other.example.org:3478".into()),
            ice_turn_secret: Some(Secret("flag-turn-secret-0123456789".into())),
            ..Default::default()
        };
        let c = Config::from_toml(&toml, Path::new("."), &flags).unwrap();
        let ice = c.ice.unwrap();
        assert_eq!(ice.urls, ["turn:other.example.org:3478"]);
        assert_eq!(ice.turn_secret.unwrap().0, "flag-turn-secret-0123456789");
        // None: the coordinator's.
        let c =
            Config::from_toml(&base_toml(&app("a")), Path::new("."), &Options::default()).unwrap();
        assert!(c.ice.is_none());
        assert!(c.summary().contains("ice: the coordinator's"));
        // Bad [ice] is refused with the key named, and the secret is not in the error.
        let e = err(&format!(
            "{}[ice]\nurls = [\"turn:x\"]\nturn_secret = \"short\"\n",
            base_toml(&app("a"))
        ));
        assert!(e.contains("ice.turn_secret: must be at least 16"), "{e}");
        let e = err(&format!(
            "{}[ice]\nurl = [\"turn:x\"]\n",
            base_toml(&app("a"))
        ));
        assert!(e.contains("ice") && e.contains("url"), "{e}");
    }

    #[test]
    fn a_minimal_config_gets_the_defaults() {
        let c = Config::from_toml(
            &base_toml(&app("demo")),
            Path::new("."),
            &Options::default(),
        )
        .unwrap();
        assert_eq!(c.node.name.as_str(), "n1");
        assert_eq!(c.node.listen, "0.0.0.0:8090".parse().unwrap());
        assert_eq!(c.node.streamer_ports, 30000..=30009);
        assert_eq!(
            c.coordinator.link_url,
            "wss://c.example.org/api/v1/nodes/link"
        );
        let a = &c.applications[0];
        assert_eq!((a.res_x, a.res_y, a.max_players), (1920, 1080, 0));
        assert_eq!(a.start_timeout, Duration::from_secs(120));
        assert_eq!(a.idle_timeout, Some(Duration::from_secs(900)));
        assert_eq!(a.max_duration, None);
        assert!(
            !format!("{c:?}").contains("s3cret"),
            "the token is redacted"
        );
    }

    #[test]
    fn flags_and_environment_override_the_file() {
        let o = Options {
            node_listen: Some("127.0.0.1:9999".into()),
            node_max_sessions: Some("2".into()),
            coordinator_token: Some(Secret("other".into())),
            ..Default::default()
        };
        let c = Config::from_toml(&base_toml(""), Path::new("."), &o).unwrap();
        assert_eq!(c.node.listen.port(), 9999);
        assert_eq!(c.node.max_sessions, 2);
        assert_eq!(c.coordinator.token.0, "other");
    }

    #[test]
    fn the_upstream_url_is_set_or_made_from_a_specific_listen_address() {
        let upstream = |extra: &str, o: &Options| {
            let n = Config::from_toml(
                &base_toml("").replace("[node]\n", &format!("[node]\n{extra}")),
                Path::new("."),
                o,
            )
            .unwrap()
            .node;
            n.upstream_for(n.listen).map(|u| u.to_string())
        };
        let none = Options::default();
        assert_eq!(upstream("", &none), None, "0.0.0.0 names no address");
        assert_eq!(upstream("listen = \"[::]:8090\"\n", &none), None);
        assert_eq!(
            upstream("listen = \"127.0.0.1:0\"\n", &none),
            None,
            "not bound yet"
        );
        assert_eq!(
            upstream("listen = \"10.0.0.11:8081\"\n", &none).as_deref(),
            Some("http://10.0.0.11:8081")
        );
        assert_eq!(
            upstream("listen = \"[fd00::11]:8081\"\n", &none).as_deref(),
            Some("http://[fd00::11]:8081")
        );
        assert_eq!(
            upstream("upstream_url = \"http://gpu-1.internal:8090/\"\n", &none).as_deref(),
            Some("http://gpu-1.internal:8090")
        );
        let flag = Options {
            node_upstream_url: Some("http://10.9.9.9:1".into()),
            ..Default::default()
        };
        assert_eq!(
            upstream("upstream_url = \"http://x:2\"\n", &flag).as_deref(),
            Some("http://10.9.9.9:1")
        );
        for (value, want) in [
            (
                "http://h/sessions",
                "node.upstream_url: `http://h/sessions`: only a scheme",
            ),
            (
                "http://h;}",
                "node.upstream_url: `http://h;}`: `;` is not allowed",
            ),
            ("10.0.0.1:80", "node.upstream_url: `10.0.0.1:80`: not a URL"),
        ] {
            let e = err(&base_toml("").replace(
                "[node]\n",
                &format!("[node]\nupstream_url = {}\n", toml::Value::from(value)),
            ));
            assert!(e.contains(want), "{e}\n  should contain: {want}");
        }
    }

    #[test]
    fn a_reverse_proxy_reads_the_nodes_name_and_upstream_from_its_file() {
        let dir = pxs_test_support::scratch_dir("ss-cfg-identity");
        let path = dir.join("node.toml");
        // The applications need not exist where the file is read.
        let text = base_toml("[[applications]]\nid = \"a\"\nexecutable = \"/nonexistent/app\"\n")
            .replace("[node]\n", "[node]\nlisten = \"10.0.0.11:8081\"\n");
        std::fs::write(&path, &text).unwrap();
        let id = node_identity(&path).unwrap();
        assert_eq!(id.name.as_str(), "n1");
        assert_eq!(id.public_url.as_deref(), Some("https://n1.example.org"));
        assert_eq!(
            id.upstream_url.map(|u| u.to_string()).as_deref(),
            Some("http://10.0.0.11:8081")
        );
        std::fs::write(&path, base_toml("")).unwrap();
        assert_eq!(node_identity(&path).unwrap().upstream_url, None, "0.0.0.0");
        std::fs::write(
            &path,
            base_toml("").replace("[node]\n", "[node]\nupstream_url = \"http://h/x\"\n"),
        )
        .unwrap();
        let e = format!("{:#}", node_identity(&path).unwrap_err());
        assert!(
            e.contains("node.toml: node.upstream_url: `http://h/x`"),
            "{e}"
        );
        std::fs::write(
            &path,
            base_toml("").replace("name = \"n1\"", "name = \"a b\""),
        )
        .unwrap();
        let e = format!("{:#}", node_identity(&path).unwrap_err());
        assert!(e.contains("node.name: `a b`"), "{e}");
    }

    #[test]
    fn trusted_proxies_come_from_the_file_or_a_flag() {
        let c = Config::from_toml(
            &base_toml("").replace(
                "[node]\n",
                "[node]\ntrusted_proxies = [\"127.0.0.1/32\", \"10.0.0.0/8\"]\n",
            ),
            Path::new("."),
            &Options::default(),
        )
        .unwrap();
        assert!(c.node.trusted_proxies.trusts("10.1.2.3".parse().unwrap()));
        assert!(!c.node.trusted_proxies.trusts("192.0.2.1".parse().unwrap()));
        let flag = Options {
            node_trusted_proxies: Some("192.0.2.0/24".into()),
            ..Default::default()
        };
        let c = Config::from_toml(&base_toml(""), Path::new("."), &flag).unwrap();
        assert!(c.node.trusted_proxies.trusts("192.0.2.1".parse().unwrap()));
        let c = Config::from_toml(&base_toml(""), Path::new("."), &Options::default()).unwrap();
        assert!(
            c.node.trusted_proxies.is_empty(),
            "nothing is trusted by default"
        );
        let e =
            err(&base_toml("").replace("[node]\n", "[node]\ntrusted_proxies = [\"10.0.0.1/8\"]\n"));
        assert!(
            e.contains("node.trusted_proxies[0]: `10.0.0.1/8` has bits set after its prefix"),
            "{e}"
        );
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90s"), Ok(Some(Duration::from_secs(90))));
        assert_eq!(parse_duration("15m"), Ok(Some(Duration::from_secs(900))));
        assert_eq!(parse_duration("1h30m"), Ok(Some(Duration::from_secs(5400))));
        assert_eq!(
            parse_duration("250ms"),
            Ok(Some(Duration::from_millis(250)))
        );
        assert_eq!(parse_duration("off"), Ok(None));
        assert_eq!(parse_duration("0s"), Ok(None));
        assert!(parse_duration("90").is_err());
        assert!(parse_duration("5 days").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("m").is_err());
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                base_toml("[[applications]]\nid = \"a\"\nexecutable = \"/nonexistent/app\"\n"),
                "applications[0].executable: /nonexistent/app does not exist",
            ),
            (
                base_toml(
                    "[[applications]]\nid = \"a\"\nexecutable = \"pxs-surely-not-on-path\"\n",
                ),
                "applications[0].executable: `pxs-surely-not-on-path` is not found on PATH",
            ),
            (
                base_toml(&format!("{}{}{}", app("a"), app("b"), app("a"))),
                "applications[2].id: duplicate application id `a` (also applications[0].id)",
            ),
            (
                base_toml(&app("no/slash")),
                "applications[0].id: `no/slash`",
            ),
            (
                base_toml(&format!("{}idle_timeout = \"soon\"\n", app("a"))),
                "applications[0].idle_timeout",
            ),
            (
                base_toml(&format!("{}start_timeout = \"0s\"\n", app("a"))),
                "applications[0].start_timeout: must be more than 0",
            ),
            (
                base_toml(&format!(
                    "{}start_timeout = \"18446744073709551615s\"\n",
                    app("a")
                )),
                "applications[0].start_timeout: at most 366 days",
            ),
            (
                base_toml(&format!("{}idle_timeout = \"9000000h\"\n", app("a"))),
                "applications[0].idle_timeout: at most 366 days",
            ),
            (
                base_toml(&format!("{}color = \"red\"\n", app("a"))),
                "applications[0].color: unknown field `color`",
            ),
            (
                base_toml("").replace("30000-30009", "30009-30000"),
                "node.streamer_ports: `30009-30000`: the range is empty",
            ),
            (
                base_toml("").replace("30000-30009", "lots"),
                "node.streamer_ports: `lots` is not a port range",
            ),
            (
                base_toml("").replace("30000-30009", "30000-30001"),
                "node.streamer_ports: 2 port(s) in `30000-30001` for node.max_sessions = 4",
            ),
            (base_toml("").replace("https://n1", "n1"), "node.public_url"),
            (
                base_toml("").replace("token = \"s3cret\"", ""),
                "coordinator.token: not set",
            ),
            (
                base_toml("").replace("url = \"https://c.example.org\"", ""),
                "coordinator.url: not set",
            ),
            (
                base_toml(&format!("{}name = \"{}\"\n", app("a"), "n".repeat(201))),
                "applications[0].name: 201 characters; at most 200",
            ),
            (
                base_toml(&format!("{}name = \"  \"\n", app("a"))),
                "applications[0].name: must not be blank",
            ),
            (
                base_toml(&format!("{}name = \"a\\u0007b\"\n", app("a"))),
                "applications[0].name: control characters are not allowed",
            ),
            (
                base_toml(&format!(
                    "{}description = \"{}\"\n",
                    app("a"),
                    "d".repeat(4001)
                )),
                "applications[0].description: 4001 characters; at most 4000",
            ),
            (
                base_toml(&format!(
                    "{}image_url = \"javascript:alert(1)\"\n",
                    app("a")
                )),
                "applications[0].image_url: `javascript:alert(1)` is not an http:// or https:// URL",
            ),
            (
                base_toml(&format!("{}image_url = \"https://\"\n", app("a"))),
                "applications[0].image_url: `https://` is not an http:// or https:// URL",
            ),
            (
                base_toml(&format!(
                    "{}image_url = \"https://x.example/a b.png\"\n",
                    app("a")
                )),
                "applications[0].image_url: spaces and control characters are not allowed",
            ),
            (
                base_toml(&format!(
                    "{}image_url = \"https://x.example/{}\"\n",
                    app("a"),
                    "i".repeat(2000)
                )),
                "applications[0].image_url: at most 2000 characters",
            ),
            (
                base_toml(&format!("{}visibility = \"secret\"\n", app("a"))),
                "applications[0].visibility: `secret` is not \"public\" or \"private\"",
            ),
            (
                base_toml("").replace("[node]", "[nodes]"),
                "unknown field `nodes`",
            ),
            (
                "[node]\nmax_sessions = \"many\"\n".into(),
                "node.max_sessions",
            ),
        ];
        for (text, expected) in cases {
            let e = err(&text);
            assert!(e.contains(expected), "{e}\n  should contain: {expected}");
        }
    }

    #[test]
    fn catalog_data_is_advertised_with_the_application() {
        let c = Config::from_toml(
            &base_toml(&format!(
                "{}name = \"Other\"\ndescription = \"Line one.\\nLine two.\"\n\
                 image_url = \"https://img.example.org/other.png\"\nvisibility = \"private\"\n\
                 idle_timeout = \"500ms\"\nempty_timeout = \"off\"\n{}",
                app("other"),
                app("plain")
            )),
            Path::new("."),
            &Options::default(),
        )
        .unwrap();
        let info = c.applications[0].info();
        assert_eq!(info.name, "Other");
        assert_eq!(info.description, "Line one.\nLine two.");
        assert_eq!(
            info.image_url.as_deref(),
            Some("https://img.example.org/other.png")
        );
        assert_eq!(info.visibility, Some(Visibility::Private));
        // 500ms is rounded up to a second (0 would mean never); off is 0.
        assert_eq!((info.idle_timeout, info.empty_timeout), (Some(1), Some(0)));
        // Left out: the id as the name, no description or picture, public, the defaults.
        let plain = c.applications[1].info();
        assert_eq!(
            (
                plain.name.as_str(),
                plain.description.as_str(),
                plain.image_url
            ),
            ("plain", "", None)
        );
        assert_eq!(plain.visibility, Some(Visibility::Public));
        assert_eq!(
            (plain.idle_timeout, plain.empty_timeout),
            (Some(900), Some(300))
        );
    }

    #[test]
    fn the_file_name_is_in_the_error() {
        let dir = pxs_test_support::scratch_dir("ss-cfg");
        let path = dir.join("bad.toml");
        std::fs::write(&path, base_toml("").replace("30000-30009", "x")).unwrap();
        let e = format!(
            "{:#}",
            Config::load(&Options {
                config: Some(path.clone()),
                ..Default::default()
            })
            .unwrap_err()
        );
        assert!(
            e.contains("bad.toml") && e.contains("node.streamer_ports"),
            "{e}"
        );
        std::fs::write(&path, "[node\n").unwrap();
        let e = format!(
            "{:#}",
            Config::load(&Options {
                config: Some(path),
                ..Default::default()
            })
            .unwrap_err()
        );
        assert!(e.contains("bad.toml") && e.contains("invalid TOML"), "{e}");
    }

    #[test]
    fn the_example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../session-server.example.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        // The example names `pxs` as its application; any executable stands in for it here.
        let text = text.replace("executable = \"pxs\"", &format!("executable = '{}'", exe()));
        let c = Config::from_toml(&text, path.parent().unwrap(), &Options::default()).unwrap();
        assert!(!c.applications.is_empty());
        // Every commented-out key is a real key: uncommented, the file still parses.
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if rest.split_once(" = ").is_some_and(|(k, _)| {
                        k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    }) =>
                {
                    format!("{rest}\n")
                }
                _ => format!("{l}\n"),
            })
            .collect();
        let uncommented = uncommented.replace("token_file = ", "# token_file = ");
        Config::from_toml(&uncommented, path.parent().unwrap(), &Options::default()).unwrap();
    }
}
