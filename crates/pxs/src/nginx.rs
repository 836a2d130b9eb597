//! `pxs nginx-config`: the front door of a fleet. Writes an NGINX configuration (an http-level
//! snippet, for `conf.d/`) that terminates TLS and sends the coordinator's paths to the
//! coordinator and each node's player endpoints, under `/node/<name>/`, to that node's HTTP port
//! (its upstream URL). The nodes come from the coordinator (`GET /api/v1/nodes`, their
//! `upstream_url`) and/or from nodes' own config files. With `--watch` it keeps following the
//! coordinator: when the nodes or their upstreams change it rewrites the file and runs the reload
//! command (an argument vector, never a shell). See `docs/nginx.md`.
//!
//! Everything written into the file is checked first: node names (a safe charset, else the
//! node is refused with an error), upstream URLs (`pxs_protocol::upstream`), server names and
//! certificate paths. Nothing a node or a coordinator sends is ever written unchecked.

use anyhow::{Context, anyhow, bail};
use pxs_protocol::secret::Secret;
use pxs_protocol::upstream::{self, UpstreamUrl};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tracing::{error, info, warn};

#[derive(clap::Args, Debug)]
pub struct NginxArgs {
    /// The coordinator to read the nodes from (GET /api/v1/nodes), e.g. https://pxs.example.org
    /// or http://127.0.0.1:8080.
    #[arg(long)]
    coordinator: Option<String>,
    /// A token of the coordinator that may list nodes (a user's or an admin's). Prefer the
    /// environment variable or --token-file: it is never printed.
    #[arg(long, env = "PXS_NGINX_TOKEN", hide_env_values = true)]
    token: Option<Secret>,
    /// A file holding the token.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// A node's own session-server config: its node.name and where NGINX reaches it
    /// (node.upstream_url, else node.listen when that is a specific address). Repeatable.
    #[arg(long = "node-config", value_name = "FILE")]
    node_configs: Vec<PathBuf>,
    /// Where NGINX reaches the coordinator's HTTP port.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    coordinator_upstream: String,
    /// The host name(s) users type (NGINX's server_name). Repeatable.
    #[arg(long = "server-name", required = true, value_name = "HOST")]
    server_names: Vec<String>,
    /// The TLS certificate (chain) file, PEM. With --key: TLS on --https-port and a redirect
    /// from --http-port; without them NGINX serves plain HTTP on --http-port.
    #[arg(long, value_name = "PATH")]
    cert: Option<PathBuf>,
    /// The TLS certificate's private key file, PEM.
    #[arg(long, value_name = "PATH")]
    key: Option<PathBuf>,
    /// The port of TLS (with --cert and --key).
    #[arg(long, default_value_t = 443)]
    https_port: u16,
    /// The port of plain HTTP: a redirect to HTTPS with --cert and --key, else the site itself.
    #[arg(long, default_value_t = 80)]
    http_port: u16,
    /// An address NGINX listens on (repeatable) [default: every IPv4 and IPv6 address].
    #[arg(long = "listen-address", value_name = "IP")]
    listen_addresses: Vec<IpAddr>,
    /// The file to write (atomically: a temporary file renamed over it); `-`: stdout.
    #[arg(long, default_value = "-", value_name = "FILE")]
    out: String,
    /// Keep following the coordinator; rewrite the file and run --reload-cmd when the nodes or
    /// their upstreams change. Needs --coordinator and --out FILE.
    #[arg(long)]
    watch: bool,
    /// How often --watch asks the coordinator.
    #[arg(long, default_value = "10s")]
    interval: String,
    /// The command that makes NGINX read the file again, one argument per flag and no shell:
    /// --reload-cmd nginx --reload-cmd -s --reload-cmd reload. Run after each write.
    #[arg(long = "reload-cmd", value_name = "ARG", allow_hyphen_values = true)]
    reload_cmd: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// What goes into the file: checked values only.

/// A node as NGINX sees it: a name fit for a location and the URL of its HTTP port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct NodeRoute {
    name: String,
    upstream: UpstreamUrl,
}

/// The longest node name NGINX is given (the node link's own limit).
const MAX_NAME: usize = 64;

impl NodeRoute {
    /// Checks `name` (letters, digits, `_`, `.`, `-`, starting with a letter or digit, at most
    /// 64 characters) and `upstream` (`pxs_protocol::upstream`). The error says why, without
    /// repeating unsafe text unescaped.
    pub fn new(name: &str, upstream: &str) -> Result<NodeRoute, String> {
        check_node_name(name)?;
        let upstream =
            upstream::parse(upstream).map_err(|e| format!("node `{name}`: upstream_url: {e}"))?;
        Ok(NodeRoute {
            name: name.to_owned(),
            upstream,
        })
    }
}

fn check_node_name(name: &str) -> Result<(), String> {
    let shown: String = name
        .chars()
        .take(80)
        .collect::<String>()
        .escape_debug()
        .to_string();
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    let ok_start = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric());
    if name.is_empty() || name.len() > MAX_NAME || !ok_chars || !ok_start {
        return Err(format!(
            "node `{shown}`: refused: a node name NGINX routes must be 1 to {MAX_NAME} letters, \
             digits, `_`, `.` or `-`, starting with a letter or digit (rename the node: \
             node.name)"
        ));
    }
    Ok(())
}

/// How NGINX faces users.
#[derive(Clone, Debug)]
pub struct Site {
    server_names: Vec<String>,
    tls: Option<Tls>,
    http_port: u16,
    https_port: u16,
    listen: Vec<IpAddr>,
    coordinator: UpstreamUrl,
}

#[derive(Clone, Debug)]
struct Tls {
    cert: String,
    key: String,
}

/// `server_name` values: host names (`*.` allowed in front), IPv4 addresses, or `_`.
fn check_server_name(name: &str) -> Result<(), String> {
    let body = name.strip_prefix("*.").unwrap_or(name);
    let ok = name == "_"
        || (!body.is_empty()
            && name.len() <= 253
            && body.split('.').all(|l| {
                !l.is_empty()
                    && !l.starts_with('-')
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "--server-name: `{}` is not a host name (letters, digits, `-` and `.`; `*.` in front \
             for a wildcard; `_` for any)",
            name.escape_debug()
        ))
    }
}

/// A file NGINX is to read: made absolute, and refused when it holds a character NGINX's
/// configuration syntax gives a meaning to (`;`, `{`, `}`, quotes, `$`, `#`, whitespace...).
fn nginx_path(flag: &str, path: &Path) -> anyhow::Result<String> {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .context("cannot read the working directory")?
            .join(path)
    };
    let text = abs
        .to_str()
        .ok_or_else(|| anyhow!("{flag}: {} is not UTF-8", abs.display()))?;
    if let Some(c) = text.chars().find(|c| {
        !(c.is_ascii_alphanumeric()
            || matches!(
                c,
                '/' | '.' | '_' | '-' | '+' | '@' | ',' | '=' | '~' | ':' | '%'
            ))
    }) {
        bail!(
            "{flag}: `{}` contains `{}`, which NGINX's configuration would not read as part of \
             a path: use a path of letters, digits and / . _ - + @ , = ~ : %",
            text.escape_debug(),
            c.escape_debug()
        );
    }
    if !abs.is_file() {
        bail!("{flag}: {text} is not a file");
    }
    Ok(text.to_owned())
}

impl Site {
    fn from_args(a: &NginxArgs) -> anyhow::Result<Site> {
        for n in &a.server_names {
            check_server_name(n).map_err(|e| anyhow!(e))?;
        }
        let tls = match (&a.cert, &a.key) {
            (Some(cert), Some(key)) => Some(Tls {
                cert: nginx_path("--cert", cert)?,
                key: nginx_path("--key", key)?,
            }),
            (None, None) => None,
            _ => bail!("--cert and --key go together (or neither, for plain HTTP)"),
        };
        if tls.is_some() && a.http_port == a.https_port {
            bail!("--http-port and --https-port are both {}", a.http_port);
        }
        if a.http_port == 0 || a.https_port == 0 {
            bail!("--http-port and --https-port: 1 to 65535");
        }
        let coordinator = upstream::parse(a.coordinator_upstream.trim()).map_err(|e| {
            anyhow!(
                "--coordinator-upstream: `{}`: {e}",
                a.coordinator_upstream.escape_debug()
            )
        })?;
        Ok(Site {
            server_names: a.server_names.clone(),
            tls,
            http_port: a.http_port,
            https_port: a.https_port,
            listen: a.listen_addresses.clone(),
            coordinator,
        })
    }

    /// What a node behind this NGINX should advertise as its `node.public_url`.
    fn public_url_of(&self, node: &str) -> String {
        let (scheme, port, default) = match self.tls {
            Some(_) => ("https", self.https_port, 443),
            None => ("http", self.http_port, 80),
        };
        let host = self
            .server_names
            .iter()
            .find(|n| *n != "_" && !n.starts_with("*."))
            .map_or("<host>", String::as_str);
        if port == default {
            format!("{scheme}://{host}/node/{node}")
        } else {
            format!("{scheme}://{host}:{port}/node/{node}")
        }
    }

    fn listen_lines(&self, out: &mut String, port: u16, ssl: bool) {
        let ssl = if ssl { " ssl" } else { "" };
        if self.listen.is_empty() {
            out.push_str(&format!(
                "    listen {port}{ssl};\n    listen [::]:{port}{ssl};\n"
            ));
        }
        for ip in &self.listen {
            match ip {
                IpAddr::V4(v4) => out.push_str(&format!("    listen {v4}:{port}{ssl};\n")),
                IpAddr::V6(v6) => out.push_str(&format!("    listen [{v6}]:{port}{ssl};\n")),
            }
        }
    }
}

/// The proxy headers of every location: the client's address and scheme for the servers'
/// `trusted_proxies`, the Host the client asked for, and WebSocket upgrades.
const PROXY_HEADERS: &str = concat!(
    "        proxy_http_version 1.1;\n",
    "        proxy_set_header Host $http_host;\n",
    "        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n",
    "        proxy_set_header X-Forwarded-Proto $scheme;\n",
    "        proxy_set_header Upgrade $http_upgrade;\n",
    "        proxy_set_header Connection $pxs_connection_upgrade;\n",
    "        proxy_buffering off;\n",
);

/// The NGINX configuration for `site` and `nodes` (sorted by name, each once).
pub fn render(site: &Site, nodes: &[NodeRoute]) -> String {
    let mut o = String::new();
    o.push_str(&format!(
        "# Written by `pxs nginx-config` (pxs {}): the front door of a pxs fleet. It is rewritten\n\
         # when the nodes change (--watch): change the flags, not this file. An http-level snippet:\n\
         # include it inside NGINX's `http {{ }}` (Debian: /etc/nginx/conf.d/pxs.conf).\n#\n",
        env!("CARGO_PKG_VERSION")
    ));
    o.push_str(&format!(
        "# /            -> the coordinator at {}\n",
        site.coordinator
    ));
    for n in nodes {
        o.push_str(&format!(
            "# /node/{}/ -> node {} at {} (its node.public_url: {})\n",
            n.name,
            n.name,
            n.upstream,
            site.public_url_of(&n.name)
        ));
    }
    if nodes.is_empty() {
        o.push_str("# (no node yet)\n");
    }
    o.push_str(
        "\n# A WebSocket upgrade passes through; other requests close the upstream connection.\n\
         map $http_upgrade $pxs_connection_upgrade {\n    default upgrade;\n    ''      close;\n}\n\n",
    );
    let names = site.server_names.join(" ");
    if site.tls.is_some() {
        o.push_str("# Plain HTTP only sends browsers to HTTPS.\nserver {\n");
        site.listen_lines(&mut o, site.http_port, false);
        let port = if site.https_port == 443 {
            String::new()
        } else {
            format!(":{}", site.https_port)
        };
        o.push_str(&format!(
            "    server_name {names};\n    return 301 https://$host{port}$request_uri;\n}}\n\n"
        ));
    }
    o.push_str("server {\n");
    match &site.tls {
        Some(tls) => {
            site.listen_lines(&mut o, site.https_port, true);
            o.push_str(&format!(
                "    server_name {names};\n\n    ssl_certificate {};\n    ssl_certificate_key {};\n    \
                 ssl_protocols TLSv1.2 TLSv1.3;\n    ssl_session_timeout 1d;\n",
                tls.cert, tls.key
            ));
        }
        None => {
            site.listen_lines(&mut o, site.http_port, false);
            o.push_str(&format!(
                "    server_name {names};\n    # No --cert and --key: plain HTTP (TLS ends before NGINX, or nowhere).\n"
            ));
        }
    }
    o.push_str(&format!(
        "\n    # The coordinator: pages, REST API, event streams (server-sent events, kept open and\n    \
         # never buffered) and the nodes' links (WebSockets).\n    location / {{\n        proxy_pass {};\n{PROXY_HEADERS}        \
         proxy_read_timeout 1h;\n        proxy_send_timeout 1h;\n    }}\n",
        site.coordinator
    ));
    for n in nodes {
        o.push_str(&format!(
            "\n    # Node {name}: its players' WebSockets (/node/{name}/sessions/<id>/ws) and /healthz;\n    \
             # the prefix is taken off (proxy_pass ends in /). A stream lasts hours.\n    \
             location /node/{name}/ {{\n        proxy_pass {upstream}/;\n{PROXY_HEADERS}        \
             proxy_read_timeout 12h;\n        proxy_send_timeout 12h;\n    }}\n",
            name = n.name,
            upstream = n.upstream
        ));
    }
    o.push_str("}\n");
    o
}

// ---------------------------------------------------------------------------------------------
// Where the nodes come from

/// The part of `GET /api/v1/nodes` this needs (older or newer coordinators may have more).
#[derive(Deserialize)]
struct NodeList {
    items: Vec<ListedNode>,
}

#[derive(Deserialize)]
struct ListedNode {
    id: String,
    #[serde(default)]
    public_url: Option<String>,
    #[serde(default)]
    upstream_url: Option<String>,
}

/// A node as a source told it, before it is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Candidate {
    name: String,
    public_url: Option<String>,
    upstream: Option<String>,
    /// Where it was told, for messages: "the coordinator", or a file's path.
    source: String,
}

/// What the sources give: the routes, what was left out and why (errors: refused nodes; notes:
/// nodes without an upstream, or whose public_url does not point here).
#[derive(Debug, Default, PartialEq, Eq)]
struct Fleet {
    routes: Vec<NodeRoute>,
    refused: Vec<String>,
    notes: Vec<String>,
}

/// Checks every candidate; a name given by two sources is taken from the last (node config
/// files come after the coordinator).
fn fleet(site: &Site, candidates: Vec<Candidate>) -> Fleet {
    let mut by_name: BTreeMap<String, Candidate> = BTreeMap::new();
    let mut f = Fleet::default();
    for c in candidates {
        if let Some(old) = by_name.get(&c.name)
            && old.upstream != c.upstream
        {
            f.notes.push(format!(
                "node `{}`: {} replaces what {} says of its upstream",
                c.name.escape_debug(),
                c.source,
                old.source
            ));
        }
        by_name.insert(c.name.clone(), c);
    }
    for c in by_name.into_values() {
        let Some(up) = &c.upstream else {
            if let Err(e) = check_node_name(&c.name) {
                f.refused.push(e);
                continue;
            }
            f.notes.push(format!(
                "node `{}` ({}): no upstream URL (it listens on every address and node.upstream_url \
                 is not set): left out; set node.upstream_url to where NGINX reaches it",
                c.name, c.source
            ));
            continue;
        };
        match NodeRoute::new(&c.name, up) {
            Ok(r) => {
                let want = site.public_url_of(&r.name);
                if let Some(p) = &c.public_url
                    && p.trim_end_matches('/') != want
                {
                    let shown: String = p.chars().take(200).collect();
                    f.notes.push(format!(
                        "node `{}`: its public_url is `{}`; behind this NGINX it should be {want}",
                        r.name,
                        shown.escape_debug()
                    ));
                }
                f.routes.push(r);
            }
            Err(e) => f.refused.push(format!("{e} (from {})", c.source)),
        }
    }
    f
}

/// The nodes of the coordinator at `base` (`GET <base>/api/v1/nodes` with `token`).
async fn coordinator_nodes(
    http: &reqwest::Client,
    base: &str,
    token: &Secret,
) -> anyhow::Result<Vec<Candidate>> {
    let url = format!("{}/api/v1/nodes", base.trim_end_matches('/'));
    let r = http
        .get(&url)
        .bearer_auth(&token.0)
        .send()
        .await
        .map_err(|e| anyhow!("cannot reach {url}: {}", error_chain(&e)))?;
    let status = r.status();
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        bail!(
            "{url}: {status}: the coordinator refused the token (give one that may list nodes: \
             --token, PXS_NGINX_TOKEN or --token-file)"
        );
    }
    if !status.is_success() {
        bail!("{url}: {status}");
    }
    let body = r
        .bytes()
        .await
        .map_err(|e| anyhow!("{url}: reading the answer: {}", error_chain(&e)))?;
    let list: NodeList =
        serde_json::from_slice(&body).map_err(|e| anyhow!("{url}: not a list of nodes: {e}"))?;
    Ok(list
        .items
        .into_iter()
        .map(|n| Candidate {
            name: n.id,
            public_url: n.public_url,
            upstream: n.upstream_url,
            source: "the coordinator".into(),
        })
        .collect())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

fn file_nodes(paths: &[PathBuf]) -> anyhow::Result<Vec<Candidate>> {
    paths
        .iter()
        .map(|p| {
            let id = pxs_session_server::config::node_identity(p)?;
            if id.upstream_url.is_none() {
                bail!(
                    "{}: node.upstream_url is not set and node.listen is {} (every address): set \
                     node.upstream_url to where NGINX reaches this node (http://127.0.0.1:{} when \
                     NGINX runs on the same machine)",
                    p.display(),
                    id.listen,
                    id.listen.port()
                );
            }
            Ok(Candidate {
                name: id.name.to_string(),
                public_url: id.public_url,
                upstream: id.upstream_url.map(|u| u.to_string()),
                source: p.display().to_string(),
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Writing and reloading

/// Writes `text` to `path` atomically: a temporary file beside it, flushed, renamed over it.
fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("--out: {} is not a file name", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(anyhow!("--out: cannot write {}: {e}", path.display()));
    }
    Ok(())
}

/// Runs the reload command (no shell), within a minute; an error says how it failed, with the
/// end of its output.
async fn reload(cmd: &[String]) -> anyhow::Result<()> {
    let Some((program, args)) = cmd.split_first() else {
        return Ok(());
    };
    let run = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .map_err(|_| anyhow!("the reload command `{}` ran over a minute", cmd.join(" ")))?
        .map_err(|e| anyhow!("cannot run the reload command `{}`: {e}", cmd.join(" ")))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stderr = stderr.trim();
        let tail: String = stderr
            .chars()
            .skip(stderr.chars().count().saturating_sub(600))
            .collect();
        bail!(
            "the reload command `{}` failed ({}): {tail}",
            cmd.join(" "),
            out.status
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The command

pub fn run(args: NginxArgs) -> anyhow::Result<std::process::ExitCode> {
    crate::init_logging("info");
    match prepare(&args) {
        Ok(p) => crate::runtime()?.block_on(async move {
            if args.watch {
                watch(&args, p).await
            } else {
                once(&args, p).await
            }
        }),
        Err(e) => {
            error!("{e:#}");
            Ok(std::process::ExitCode::from(2))
        }
    }
}

struct Prepared {
    site: Site,
    token: Option<Secret>,
    http: reqwest::Client,
    interval: Duration,
}

fn prepare(a: &NginxArgs) -> anyhow::Result<Prepared> {
    let site = Site::from_args(a)?;
    if a.coordinator.is_none() && a.node_configs.is_empty() {
        bail!("give --coordinator URL (with a token), --node-config FILE, or both");
    }
    if a.watch && a.coordinator.is_none() {
        bail!("--watch follows a coordinator: give --coordinator");
    }
    if a.watch && a.out == "-" {
        bail!("--watch rewrites a file: give --out FILE");
    }
    if let Some(c) = &a.coordinator
        && !(c.starts_with("http://") || c.starts_with("https://"))
    {
        bail!(
            "--coordinator: `{}` is not an http:// or https:// URL",
            c.escape_debug()
        );
    }
    let token = match (&a.token, &a.token_file) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(path)) => Some(Secret(
            std::fs::read_to_string(path)
                .with_context(|| format!("--token-file: cannot read {}", path.display()))?
                .trim()
                .to_owned(),
        )),
        (None, None) => None,
    };
    if a.coordinator.is_some() && token.as_ref().is_none_or(|t| t.0.is_empty()) {
        bail!(
            "--coordinator needs a token that may list nodes: --token, PXS_NGINX_TOKEN or --token-file"
        );
    }
    if a.reload_cmd.first().is_some_and(String::is_empty) {
        bail!("--reload-cmd: the program is empty");
    }
    let interval = match pxs_protocol::duration::parse(&a.interval) {
        Ok(Some(d)) if d >= Duration::from_millis(100) => d,
        Ok(_) => bail!("--interval: at least 100ms"),
        Err(e) => bail!("--interval: {e}"),
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .context("cannot make an HTTP client")?;
    Ok(Prepared {
        site,
        token,
        http,
        interval,
    })
}

/// Reads every source once.
async fn gather(a: &NginxArgs, p: &Prepared) -> anyhow::Result<Fleet> {
    let mut candidates = Vec::new();
    if let (Some(url), Some(token)) = (&a.coordinator, &p.token) {
        candidates.extend(coordinator_nodes(&p.http, url, token).await?);
    }
    candidates.extend(file_nodes(&a.node_configs)?);
    Ok(fleet(&p.site, candidates))
}

async fn once(a: &NginxArgs, p: Prepared) -> anyhow::Result<std::process::ExitCode> {
    let f = match gather(a, &p).await {
        Ok(f) => f,
        Err(e) => {
            error!("{e:#}");
            return Ok(std::process::ExitCode::from(1));
        }
    };
    for n in &f.notes {
        warn!("{n}");
    }
    if !f.refused.is_empty() {
        for r in &f.refused {
            error!("{r}");
        }
        error!("nothing written: fix or remove the refused node(s) first");
        return Ok(std::process::ExitCode::from(1));
    }
    let text = render(&p.site, &f.routes);
    if a.out == "-" {
        print!("{text}");
    } else {
        write_atomically(Path::new(&a.out), &text)?;
        info!(file = %a.out, nodes = f.routes.len(), "NGINX configuration written");
    }
    if let Err(e) = reload(&a.reload_cmd).await {
        error!("{e:#}");
        return Ok(std::process::ExitCode::from(1));
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// What changed between two sets of routes, for the log.
fn changes(old: &[NodeRoute], new: &[NodeRoute]) -> Vec<String> {
    let mut out = Vec::new();
    for n in new {
        match old.iter().find(|o| o.name == n.name) {
            None => out.push(format!("node {} added at {}", n.name, n.upstream)),
            Some(o) if o.upstream != n.upstream => out.push(format!(
                "node {} moved from {} to {}",
                n.name, o.upstream, n.upstream
            )),
            Some(_) => {}
        }
    }
    for o in old {
        if !new.iter().any(|n| n.name == o.name) {
            out.push(format!("node {} removed", o.name));
        }
    }
    out
}

async fn watch(a: &NginxArgs, p: Prepared) -> anyhow::Result<std::process::ExitCode> {
    let out = PathBuf::from(&a.out);
    // The file as it is: an unchanged fleet after a restart writes and reloads nothing.
    let mut written: Option<String> = std::fs::read_to_string(&out).ok();
    let mut routes: Option<Vec<NodeRoute>> = None;
    let mut reload_pending = false;
    let mut last_problems: Vec<String> = Vec::new();
    let mut failing = false;
    info!(
        coordinator = a.coordinator.as_deref().unwrap_or_default(),
        file = %out.display(),
        interval = ?p.interval,
        "following the coordinator's nodes"
    );
    let shutdown = crate::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        match gather(a, &p).await {
            Err(e) => {
                error!("{e:#}; trying again in {:?}", p.interval);
                failing = true;
            }
            Ok(f) => {
                if failing {
                    info!("the coordinator answers again");
                    failing = false;
                }
                // Refused and left-out nodes are told when they change, not every poll.
                let problems: Vec<String> = f.refused.iter().chain(&f.notes).cloned().collect();
                if problems != last_problems {
                    for r in &f.refused {
                        error!("{r}; left out of the configuration");
                    }
                    for n in &f.notes {
                        warn!("{n}");
                    }
                    last_problems = problems;
                }
                let text = render(&p.site, &f.routes);
                if written.as_deref() != Some(text.as_str()) {
                    let what = match &routes {
                        Some(old) => changes(old, &f.routes),
                        None => f
                            .routes
                            .iter()
                            .map(|n| format!("node {} at {}", n.name, n.upstream))
                            .collect(),
                    };
                    match write_atomically(&out, &text) {
                        Ok(()) => {
                            info!(
                                file = %out.display(),
                                nodes = f.routes.len(),
                                changes = %if what.is_empty() { "the site's settings".to_owned() } else { what.join("; ") },
                                "NGINX configuration written"
                            );
                            written = Some(text);
                            reload_pending = !a.reload_cmd.is_empty();
                        }
                        Err(e) => error!("{e:#}; trying again in {:?}", p.interval),
                    }
                }
                routes = Some(f.routes);
            }
        }
        if reload_pending {
            match reload(&a.reload_cmd).await {
                Ok(()) => {
                    info!(command = %a.reload_cmd.join(" "), "NGINX reloaded");
                    reload_pending = false;
                }
                Err(e) => error!("{e:#}; trying again in {:?}", p.interval),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(p.interval) => {}
            _ = &mut shutdown => return Ok(std::process::ExitCode::SUCCESS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(tls: bool) -> Site {
        Site {
            server_names: vec!["pxs.example.org".into()],
            tls: tls.then(|| Tls {
                cert: "/etc/ssl/pxs/fullchain.pem".into(),
                key: "/etc/ssl/pxs/privkey.pem".into(),
            }),
            http_port: 80,
            https_port: 443,
            listen: vec![],
            coordinator: upstream::parse("http://127.0.0.1:8080").unwrap(),
        }
    }

    fn node(name: &str, up: &str) -> NodeRoute {
        NodeRoute::new(name, up).unwrap()
    }

    /// The block of `location <path> {` in `text`.
    fn location<'a>(text: &'a str, path: &str) -> &'a str {
        let start = text
            .find(&format!("location {path} {{"))
            .unwrap_or_else(|| panic!("no location {path} in\n{text}"));
        let end = text[start..].find("\n    }").unwrap() + start;
        &text[start..end]
    }

    #[test]
    fn the_coordinator_is_at_the_root_with_its_streams_unbuffered() {
        let text = render(&site(true), &[]);
        let root = location(&text, "/");
        for d in [
            "proxy_pass http://127.0.0.1:8080;",
            "proxy_buffering off;",
            "proxy_read_timeout 1h;",
            "proxy_http_version 1.1;",
            "proxy_set_header Upgrade $http_upgrade;",
            "proxy_set_header Connection $pxs_connection_upgrade;",
            "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
            "proxy_set_header X-Forwarded-Proto $scheme;",
            "proxy_set_header Host $http_host;",
        ] {
            assert!(root.contains(d), "{d} missing in\n{root}");
        }
        assert!(text.contains("map $http_upgrade $pxs_connection_upgrade {"));
        assert!(
            text.lines()
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .all(|l| l.starts_with("    ") || l.ends_with('{') || l == "}"),
            "every directive is inside its block, indented:\n{text}"
        );
        assert!(text.contains("# (no node yet)"));
    }

    #[test]
    fn tls_on_the_https_port_and_a_redirect_from_http() {
        let text = render(&site(true), &[]);
        assert!(text.contains("    listen 443 ssl;\n    listen [::]:443 ssl;\n"));
        assert!(text.contains("    listen 80;\n    listen [::]:80;\n"));
        assert!(text.contains("ssl_certificate /etc/ssl/pxs/fullchain.pem;"));
        assert!(text.contains("ssl_certificate_key /etc/ssl/pxs/privkey.pem;"));
        assert!(text.contains("return 301 https://$host$request_uri;"));
        assert_eq!(text.matches("server_name pxs.example.org;").count(), 2);

        let mut s = site(true);
        s.https_port = 8443;
        s.http_port = 8080;
        s.listen = vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
        let text = render(&s, &[]);
        assert!(text.contains("    listen 127.0.0.1:8443 ssl;\n    listen [::1]:8443 ssl;\n"));
        assert!(text.contains("    listen 127.0.0.1:8080;\n"));
        assert!(text.contains("return 301 https://$host:8443$request_uri;"));
        assert!(!text.contains("listen 8443"), "only the addresses given");

        let plain = render(&site(false), &[]);
        assert!(!plain.contains("ssl"), "{plain}");
        assert!(!plain.contains("return 301"));
        assert!(plain.contains("    listen 80;\n"));
    }

    #[test]
    fn each_node_is_under_its_name_with_websockets_and_long_reads() {
        let nodes = [
            node("gpu-1", "http://10.0.0.11:8081"),
            node("gpu_2.rack7", "https://[fd00::12]:9000"),
        ];
        let text = render(&site(true), &nodes);
        let one = location(&text, "/node/gpu-1/");
        for d in [
            "proxy_pass http://10.0.0.11:8081/;",
            "proxy_set_header Upgrade $http_upgrade;",
            "proxy_set_header Connection $pxs_connection_upgrade;",
            "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
            "proxy_set_header X-Forwarded-Proto $scheme;",
            "proxy_read_timeout 12h;",
            "proxy_buffering off;",
        ] {
            assert!(one.contains(d), "{d} missing in\n{one}");
        }
        assert!(
            location(&text, "/node/gpu_2.rack7/").contains("proxy_pass https://[fd00::12]:9000/;")
        );
        assert!(text.contains("(its node.public_url: https://pxs.example.org/node/gpu-1)"));
        // Braces balance: every block is closed.
        assert_eq!(text.matches('{').count(), text.matches('}').count());
    }

    #[test]
    fn hostile_node_names_are_refused_and_never_written() {
        for name in [
            "",
            ".",
            "..",
            "-x",
            "_x",
            ".hidden",
            "a b",
            "a;b",
            "a}b",
            "a{",
            "a/b",
            "a\nb",
            "a$host",
            "a\"b",
            "a#b",
            "ä",
            &"x".repeat(65),
        ] {
            let e = NodeRoute::new(name, "http://10.0.0.1:1").expect_err(name);
            assert!(e.contains("refused"), "{name:?}: {e}");
            assert!(!e.contains('\n'), "the error is one line: {e:?}");
        }
        for up in [
            "http://h;}",
            "http://h/x",
            "http://h:80 ;",
            "gopher://h",
            "http://$x",
        ] {
            let e = NodeRoute::new("ok", up).expect_err(up);
            assert!(e.contains("node `ok`: upstream_url"), "{up}: {e}");
        }
    }

    #[test]
    fn the_fleet_keeps_good_nodes_and_says_why_others_are_left_out() {
        let c = |name: &str, up: Option<&str>, public: Option<&str>| Candidate {
            name: name.into(),
            public_url: public.map(Into::into),
            upstream: up.map(Into::into),
            source: "the coordinator".into(),
        };
        let f = fleet(
            &site(true),
            vec![
                c(
                    "b",
                    Some("http://10.0.0.2:8090"),
                    Some("https://pxs.example.org/node/b/"),
                ),
                c(
                    "a",
                    Some("http://10.0.0.1:8090"),
                    Some("http://10.0.0.1:8090"),
                ),
                c("lan", None, None),
                c("evil;}", Some("http://10.0.0.3:1"), None),
                c("bad-up", Some("http://h/x"), None),
            ],
        );
        let names: Vec<&str> = f.routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a", "b"], "sorted, good ones only");
        assert_eq!(f.refused.len(), 2, "{:?}", f.refused);
        assert!(
            f.refused
                .iter()
                .any(|r| r.contains("node `evil;}`: refused"))
        );
        assert!(
            f.refused
                .iter()
                .any(|r| r.contains("node `bad-up`: upstream_url"))
        );
        assert!(
            f.notes
                .iter()
                .any(|n| n.contains("node `lan`") && n.contains("no upstream"))
        );
        assert!(
            f.notes
                .iter()
                .any(|n| n.contains("node `a`: its public_url is `http://10.0.0.1:8090`; behind this NGINX it should be https://pxs.example.org/node/a")),
            "{:?}",
            f.notes
        );
        assert!(
            !f.notes.iter().any(|n| n.contains("node `b`")),
            "b's public_url is right"
        );
        let text = render(&site(true), &f.routes);
        assert!(!text.contains("evil") && !text.contains("bad-up") && !text.contains("lan"));
    }

    #[test]
    fn a_node_config_file_overrides_the_coordinator() {
        let f = fleet(
            &site(true),
            vec![
                Candidate {
                    name: "a".into(),
                    public_url: None,
                    upstream: Some("http://10.0.0.1:1".into()),
                    source: "the coordinator".into(),
                },
                Candidate {
                    name: "a".into(),
                    public_url: None,
                    upstream: Some("http://10.0.0.9:2".into()),
                    source: "a.toml".into(),
                },
            ],
        );
        assert_eq!(f.routes, vec![node("a", "http://10.0.0.9:2")]);
        assert!(f.notes[0].contains("a.toml replaces what the coordinator says"));
    }

    #[test]
    fn site_flags_that_would_break_the_syntax_are_refused() {
        for n in [
            "pxs.example.org",
            "*.example.org",
            "_",
            "127.0.0.1",
            "localhost",
        ] {
            check_server_name(n).unwrap();
        }
        for n in [
            "", "a b", "a;", "a}", "$host", "-a.org", "a..org", "*.", "a/b",
        ] {
            assert!(check_server_name(n).is_err(), "{n:?}");
        }
        let dir = std::env::temp_dir().join(format!("pxs-nginx-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("cert.pem");
        std::fs::write(&good, "x").unwrap();
        assert_eq!(
            nginx_path("--cert", &good).unwrap(),
            good.display().to_string()
        );
        for bad in [
            "c;rt.pem", "c rt.pem", "c}.pem", "c$x.pem", "c\"x.pem", "c#x.pem",
        ] {
            let p = dir.join(bad);
            std::fs::write(&p, "x").unwrap();
            let e = nginx_path("--cert", &p).unwrap_err().to_string();
            assert!(
                e.starts_with("--cert: ") && e.contains("would not read"),
                "{bad}: {e}"
            );
        }
        let e = nginx_path("--key", &dir.join("missing.pem"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not a file"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn changes_are_told_node_by_node() {
        let old = [
            node("a", "http://10.0.0.1:1"),
            node("b", "http://10.0.0.2:1"),
        ];
        let new = [
            node("a", "http://10.0.0.1:2"),
            node("c", "http://10.0.0.3:1"),
        ];
        assert_eq!(
            changes(&old, &new),
            [
                "node a moved from http://10.0.0.1:1 to http://10.0.0.1:2",
                "node c added at http://10.0.0.3:1",
                "node b removed"
            ]
        );
    }

    #[test]
    fn the_file_is_replaced_whole() {
        let dir = std::env::temp_dir().join(format!("pxs-nginx-write-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pxs.conf");
        write_atomically(&path, "one\n").unwrap();
        write_atomically(&path, "two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\n");
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
        assert_eq!(left.len(), 1, "no temporary file left");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
