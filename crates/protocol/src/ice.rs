//! How a session's peers find a path to each other: the STUN and TURN servers a session's
//! signalling hands every player and the application in `config.peerConnectionOptions`.
//!
//! Operators write them once, in the coordinator's `[ice]` (sent with every `start_session`)
//! or a session server's `[ice]` (which wins on that node). TURN servers in coturn's
//! `use-auth-secret` mode share a secret with pxs: the signalling mints a short-lived
//! username and credential for each connection from it, so no client ever holds the secret
//! or a credential that outlives its connection's expiry.

use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The most URLs one `[ice]` may name.
pub const MAX_URLS: usize = 16;
/// The longest URL.
pub const MAX_URL: usize = 512;
/// The shortest TURN secret accepted: a guessable secret lets anyone relay through the server.
pub const MIN_SECRET: usize = 16;
/// The longest a player's TURN credential may last, in seconds: ten years (what streamers get).
pub const MAX_TTL: u64 = 10 * 365 * 24 * 60 * 60;

/// STUN and TURN servers, and how clients authenticate to the TURN ones.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IceSettings {
    /// `stun:`, `stuns:`, `turn:` and `turns:` URLs (RFC 7064, RFC 7065), e.g.
    /// `turn:turn.example.org:3478?transport=udp`.
    pub urls: Vec<String>,
    /// The secret shared with the TURN servers (coturn's `static-auth-secret`): each connection
    /// gets its own username and credential made from it, valid for `turn_ttl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_secret: Option<Secret>,
    /// How long a player's credentials last, in seconds (absent: a day).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_ttl: Option<u64>,
    /// A fixed TURN username and credential (coturn's long-term `user=`), for TURN servers
    /// without a shared secret. Every client gets the same pair, for as long as it is valid:
    /// prefer `turn_secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<Secret>,
}

/// Whether `url` names a TURN server (`turn:` or `turns:`), the scheme in any case.
pub fn is_turn(url: &str) -> bool {
    let lower = url.get(..6).unwrap_or(url).to_ascii_lowercase();
    lower.starts_with("turn:") || lower.starts_with("turns:")
}

/// Checks one URL: a STUN or TURN scheme, a host, no spaces or control characters.
pub fn check_url(url: &str) -> Result<(), String> {
    if url.len() > MAX_URL {
        return Err(format!("a URL is longer than {MAX_URL} bytes"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "`{}` has spaces or control characters",
            url.escape_debug()
        ));
    }
    let Some((scheme, rest)) = url.split_once(':') else {
        return Err(format!(
            "`{url}` is not a STUN or TURN URL like stun:host:3478 or turn:host:3478?transport=udp"
        ));
    };
    if !["stun", "stuns", "turn", "turns"].contains(&scheme.to_ascii_lowercase().as_str()) {
        return Err(format!(
            "`{url}`: the scheme must be stun:, stuns:, turn: or turns:"
        ));
    }
    let host = rest.split(['?', '/']).next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') || rest.starts_with("//") {
        return Err(format!(
            "`{url}` names no host (write stun:host:port, without //)"
        ));
    }
    if let Some(query) = rest.split_once('?').map(|(_, q)| q) {
        let ok = query.split('&').all(|p| {
            matches!(
                p.to_ascii_lowercase().as_str(),
                "transport=udp" | "transport=tcp"
            )
        });
        if !ok || !is_turn(url) {
            return Err(format!(
                "`{url}`: the only query a URL may carry is ?transport=udp or ?transport=tcp, on a TURN URL"
            ));
        }
    }
    Ok(())
}

impl IceSettings {
    /// Checks every field; the error names the key under `prefix` (e.g. `ice.`).
    pub fn validate(&self, prefix: &str) -> Result<(), String> {
        if self.urls.len() > MAX_URLS {
            return Err(format!("{prefix}urls: at most {MAX_URLS}"));
        }
        for u in &self.urls {
            check_url(u).map_err(|e| format!("{prefix}urls: {e}"))?;
        }
        let has_turn = self.urls.iter().any(|u| is_turn(u));
        if let Some(s) = &self.turn_secret {
            if s.0.trim().len() < MIN_SECRET {
                return Err(format!(
                    "{prefix}turn_secret: must be at least {MIN_SECRET} characters"
                ));
            }
            if !has_turn {
                return Err(format!(
                    "{prefix}turn_secret: set, but {prefix}urls names no turn: or turns: server"
                ));
            }
            if self.username.is_some() || self.credential.is_some() {
                return Err(format!(
                    "{prefix}username and {prefix}credential: not with turn_secret, which makes a \
                     username and credential for each connection"
                ));
            }
        }
        if let Some(t) = self.turn_ttl {
            if self.turn_secret.is_none() {
                return Err(format!("{prefix}turn_ttl: only with turn_secret"));
            }
            if !(1..=MAX_TTL).contains(&t) {
                return Err(format!("{prefix}turn_ttl: between 1 second and ten years"));
            }
        }
        if self.username.is_some() != self.credential.is_some() {
            return Err(format!(
                "{prefix}username and {prefix}credential: set both or neither"
            ));
        }
        if has_turn && self.turn_secret.is_none() && self.username.is_none() {
            return Err(format!(
                "{prefix}urls names a TURN server, but neither {prefix}turn_secret nor \
                 {prefix}username and {prefix}credential are set: clients could not authenticate"
            ));
        }
        if let Some(u) = &self.username
            && (u.is_empty() || u.len() > 256 || u.chars().any(char::is_control))
        {
            return Err(format!("{prefix}username: 1 to 256 printable characters"));
        }
        Ok(())
    }

    /// Whether there is nothing to hand out.
    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }

    /// The WebRTC configuration (`RTCConfiguration`) the signalling sends in `config`: one
    /// `iceServers` entry for the STUN URLs and one for the TURN URLs, which carries the fixed
    /// username and credential if there are (per-connection ones are added by the signalling
    /// when `turn_secret` is set). The secret is not in it.
    pub fn peer_connection_options(&self) -> Value {
        let (turn, stun): (Vec<&String>, Vec<&String>) = self.urls.iter().partition(|u| is_turn(u));
        let mut servers = Vec::new();
        if !stun.is_empty() {
            servers.push(json!({ "urls": stun }));
        }
        if !turn.is_empty() {
            let mut entry = json!({ "urls": turn });
            if let (Some(u), Some(c)) = (&self.username, &self.credential) {
                entry["username"] = json!(u);
                entry["credential"] = json!(c.0);
            }
            servers.push(entry);
        }
        json!({ "iceServers": servers })
    }
}

/// `[ice]` as a config file writes it: like [`IceSettings`], with `turn_ttl` as a duration
/// ("12h") and the secret possibly in a file of its own.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IceFile {
    pub urls: Option<Vec<String>>,
    pub turn_secret: Option<Secret>,
    /// A file holding the secret (its first line); relative to the config file.
    pub turn_secret_file: Option<std::path::PathBuf>,
    pub turn_ttl: Option<String>,
    pub username: Option<String>,
    pub credential: Option<Secret>,
}

/// What flags and the environment may say over `[ice]`.
#[derive(Clone, Debug, Default)]
pub struct IceOverrides {
    /// Comma-separated URLs; replace `urls`.
    pub urls: Option<String>,
    pub turn_secret: Option<Secret>,
    pub turn_secret_file: Option<std::path::PathBuf>,
}

/// `[ice]` with flags and the environment on top, checked: `None` when no URL is set (and
/// nothing else is: a secret without URLs is an error). Errors name the key under `prefix`
/// and never hold the secret.
pub fn resolve(
    file: IceFile,
    over: &IceOverrides,
    base: &std::path::Path,
    prefix: &str,
) -> Result<Option<IceSettings>, String> {
    let urls: Vec<String> = match &over.urls {
        Some(text) => text
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect(),
        None => file.urls.unwrap_or_default(),
    };
    let secret_from_file = |path: &std::path::Path| -> Result<Secret, String> {
        let path = base.join(path);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "{prefix}turn_secret_file: cannot read {}: {e}",
                path.display()
            )
        })?;
        Ok(Secret(
            text.lines().next().unwrap_or_default().trim().to_owned(),
        ))
    };
    let turn_secret = match (&over.turn_secret, &over.turn_secret_file) {
        (Some(_), Some(_)) => {
            return Err(format!(
                "{prefix}turn_secret and {prefix}turn_secret_file: set one, not both"
            ));
        }
        (Some(s), None) => Some(s.clone()),
        (None, Some(p)) => Some(secret_from_file(p)?),
        (None, None) => match (file.turn_secret, &file.turn_secret_file) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "{prefix}turn_secret and {prefix}turn_secret_file: set one, not both"
                ));
            }
            (Some(s), None) => Some(s),
            (None, Some(p)) => Some(secret_from_file(p)?),
            (None, None) => None,
        },
    };
    let turn_ttl = match &file.turn_ttl {
        None => None,
        Some(text) => {
            match crate::duration::parse(text).map_err(|e| format!("{prefix}turn_ttl: {e}"))? {
                Some(d) if d.as_secs() >= 1 => Some(d.as_secs()),
                _ => return Err(format!("{prefix}turn_ttl: at least one second")),
            }
        }
    };
    let s = IceSettings {
        urls,
        turn_secret,
        turn_ttl,
        username: file.username,
        credential: file.credential,
    };
    let nothing_else = s.turn_secret.is_none()
        && s.turn_ttl.is_none()
        && s.username.is_none()
        && s.credential.is_none();
    if s.urls.is_empty() && nothing_else {
        return Ok(None);
    }
    if s.urls.is_empty() {
        return Err(format!(
            "{prefix}urls: TURN settings are given but no STUN or TURN URL"
        ));
    }
    s.validate(prefix)?;
    Ok(Some(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(urls: &[&str]) -> IceSettings {
        IceSettings {
            urls: urls.iter().map(|u| (*u).to_owned()).collect(),
            turn_secret: Some(Secret("a-secret-of-twenty-chars".into())),
            ..Default::default()
        }
    }

    #[test]
    fn stun_and_turn_urls_go_out_as_two_entries_without_the_secret() {
        let s = settings(&[
            "stun:turn.example.org:3478",
            "turn:turn.example.org:3478?transport=udp",
            "TURNS:turn.example.org:5349?transport=tcp",
        ]);
        s.validate("ice.").unwrap();
        let v = s.peer_connection_options();
        assert_eq!(
            v,
            json!({"iceServers":[
                {"urls":["stun:turn.example.org:3478"]},
                {"urls":["turn:turn.example.org:3478?transport=udp","TURNS:turn.example.org:5349?transport=tcp"]}
            ]})
        );
        assert!(!v.to_string().contains("a-secret"));
    }

    #[test]
    fn fixed_credentials_go_on_the_turn_entry_only() {
        let s = IceSettings {
            urls: vec!["stun:h".into(), "turn:h".into()],
            username: Some("pxs".into()),
            credential: Some(Secret("pw".into())),
            ..Default::default()
        };
        s.validate("ice.").unwrap();
        assert_eq!(
            s.peer_connection_options(),
            json!({"iceServers":[{"urls":["stun:h"]},{"urls":["turn:h"],"username":"pxs","credential":"pw"}]})
        );
    }

    #[test]
    fn bad_settings_are_refused_with_the_key() {
        let cases: &[(IceSettings, &str)] = &[
            (settings(&["http://x"]), "ice.urls: `http://x`: the scheme"),
            (settings(&["turn://x:3478"]), "without //"),
            (settings(&["turn:"]), "names no host"),
            (settings(&["turn:x y"]), "spaces"),
            (settings(&["turn:x?transport=sctp"]), "transport=udp"),
            (settings(&["stun:x?transport=udp"]), "on a TURN URL"),
            (settings(&["stun:x"]), "names no turn: or turns: server"),
            (
                IceSettings {
                    turn_secret: Some(Secret("short".into())),
                    ..settings(&["turn:x"])
                },
                "at least 16",
            ),
            (
                IceSettings {
                    turn_ttl: Some(0),
                    ..settings(&["turn:x"])
                },
                "turn_ttl",
            ),
            (
                IceSettings {
                    turn_secret: None,
                    ..settings(&["turn:x"])
                },
                "could not authenticate",
            ),
            (
                IceSettings {
                    turn_secret: None,
                    turn_ttl: Some(60),
                    ..settings(&["stun:x"])
                },
                "only with turn_secret",
            ),
            (
                IceSettings {
                    username: Some("u".into()),
                    ..settings(&["turn:x"])
                },
                "not with turn_secret",
            ),
            (
                IceSettings {
                    turn_secret: None,
                    username: Some("u".into()),
                    ..settings(&["turn:x"])
                },
                "set both or neither",
            ),
            (settings(&[&"turn:x".repeat(100)]), "longer than"),
        ];
        for (s, want) in cases {
            let e = s.validate("ice.").unwrap_err();
            assert!(e.contains(want), "{s:?}: {e} (wanted {want})");
            assert!(!e.contains("a-secret"), "{e}");
        }
        let many = IceSettings {
            urls: vec!["stun:x".into(); MAX_URLS + 1],
            ..Default::default()
        };
        assert!(many.validate("").unwrap_err().contains("at most 16"));
    }

    #[test]
    fn the_secret_is_never_printed() {
        let s = settings(&["turn:x"]);
        assert!(!format!("{s:?}").contains("a-secret"));
    }

    #[test]
    fn the_file_flags_and_secret_file_layer_and_check() {
        let dir = std::env::temp_dir().join(format!("pxs-ice-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("secret"), "from-the-file-0123456789\nignored\n").unwrap();
        let file = || IceFile {
            urls: Some(vec!["turn:a:3478".into()]),
            turn_secret_file: Some("secret".into()),
            turn_ttl: Some("2h".into()),
            ..Default::default()
        };
        let s = resolve(file(), &IceOverrides::default(), &dir, "ice.")
            .unwrap()
            .unwrap();
        assert_eq!(s.turn_secret.unwrap().0, "from-the-file-0123456789");
        assert_eq!(s.turn_ttl, Some(7200));
        // Flags and the environment win, URLs and secret alike.
        let over = IceOverrides {
            urls: Some("stun:b, turn:b?transport=tcp".into()),
            turn_secret: Some(Secret("from-the-environment-0".into())),
            turn_secret_file: None,
        };
        let s = resolve(file(), &over, &dir, "ice.").unwrap().unwrap();
        assert_eq!(s.urls, ["stun:b", "turn:b?transport=tcp"]);
        assert_eq!(s.turn_secret.unwrap().0, "from-the-environment-0");
        // Nothing set: no ICE servers at all.
        assert_eq!(
            resolve(IceFile::default(), &IceOverrides::default(), &dir, "ice.").unwrap(),
            None
        );
        // A secret without URLs, a missing file, both forms: errors that name the key.
        let e = resolve(
            IceFile {
                turn_secret: Some(Secret("a-secret-of-twenty-chars".into())),
                ..Default::default()
            },
            &IceOverrides::default(),
            &dir,
            "ice.",
        )
        .unwrap_err();
        assert!(e.starts_with("ice.urls:") && !e.contains("a-secret"), "{e}");
        let e = resolve(
            IceFile {
                turn_secret_file: Some("missing".into()),
                ..file()
            },
            &IceOverrides::default(),
            &dir,
            "ice.",
        )
        .unwrap_err();
        assert!(e.starts_with("ice.turn_secret_file: cannot read"), "{e}");
        let e = resolve(
            IceFile {
                turn_secret: Some(Secret("a-secret-of-twenty-chars".into())),
                ..file()
            },
            &IceOverrides::default(),
            &dir,
            "ice.",
        )
        .unwrap_err();
        assert!(e.contains("not both") && !e.contains("a-secret"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
