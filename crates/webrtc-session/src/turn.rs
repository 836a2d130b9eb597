//! Time-limited TURN credentials, one pair per connection: the scheme of coturn's
//! `use-auth-secret` mode (the "TURN REST API" of draft-uberti-behave-turn-rest), which Epic's
//! signalling server issues with `--turn_secret`.
//!
//! The TURN server and the signalling server share a secret. For each connection the signalling
//! server writes, into every TURN entry of the ICE servers it sends in `config`:
//!
//! ```text
//!   username   = "<expiry, Unix seconds>:<id of this connection>"
//!   credential = base64(HMAC-SHA1(secret, username))
//! ```
//!
//! The TURN server recomputes the HMAC from the username it is given, and refuses it after the
//! expiry: no credential store, no call back to us. What a client holds is good for one
//! connection's id and until its expiry, never the secret.
//!
//! [`credential`] is the pure function; [`with_credentials`] puts a pair into peer connection
//! options; [`TurnConfig`] is what an embedder gives the [`router`](crate::router)
//! ([`RouterConfig::turn`](crate::router::RouterConfig::turn)), which does the rest per
//! connection.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use pxs_protocol::secret::Secret;
use serde_json::Value;
use sha1::Sha1;
use std::time::{Duration, Instant, SystemTime};

/// How long the credentials of a player last when nothing else is said: a day, Epic's
/// `--turn_ttl` default.
pub const DEFAULT_TTL: Duration = Duration::from_secs(86_400);

/// How long the credentials of a streamer or an SFU last: ten years, as in Epic's server. Such a
/// peer gets `config` once, when it connects, and keeps using its ICE servers for every player
/// that comes later (a relay is allocated per peer connection), so a shorter expiry would stop
/// relaying for new players of a streamer that has run that long.
pub const STREAMER_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// Per-connection TURN credentials for the router: set [`RouterConfig::turn`] to issue them.
///
/// [`RouterConfig::turn`]: crate::router::RouterConfig::turn
#[derive(Clone, Debug)]
pub struct TurnConfig {
    /// The secret shared with the TURN server (coturn's `static-auth-secret`). Never printed.
    pub secret: Secret,
    /// How long a player's credentials are valid from the time its `config` is sent.
    pub ttl: Duration,
    /// How long a streamer's or an SFU's credentials are valid ([`STREAMER_TTL`] by default).
    pub streamer_ttl: Duration,
    /// The wall clock (ms since the Unix epoch) at an instant: the router reads no clock, so it
    /// dates credentials from the `now` it is given, counted from here.
    pub epoch: (Instant, u64),
    /// Mixed into every connection's id so that ids differ between router instances (after a
    /// restart, on another machine behind the same TURN server). Not a secret.
    pub seed: u64,
}

impl TurnConfig {
    /// Credentials under `secret` valid for `ttl` (players; [`STREAMER_TTL`] for streamers and
    /// SFUs), dated from the system clock now, with a random seed.
    pub fn new(secret: Secret, ttl: Duration) -> TurnConfig {
        let wall_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        TurnConfig {
            secret,
            ttl,
            streamer_ttl: STREAMER_TTL,
            epoch: (Instant::now(), wall_ms),
            seed: random_seed(),
        }
    }

    /// Seconds since the Unix epoch at `now`.
    pub fn unix_seconds(&self, now: Instant) -> u64 {
        let (at, wall_ms) = self.epoch;
        let since = u64::try_from(now.saturating_duration_since(at).as_millis()).unwrap_or(0);
        wall_ms.saturating_add(since) / 1000
    }

    /// The id that connection number `conn` (labelled `label`, e.g. its player id) has in its
    /// usernames: the label and 16 hex digits unique to the connection in this router.
    pub fn connection_id(&self, label: &str, conn: u64) -> String {
        format!("{label}-{:016x}", mix(self.seed ^ conn))
    }
}

/// A username and credential for the TURN entries of one connection's ICE servers.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// `<expiry>:<id>`: what the TURN server logs and checks the expiry of.
    pub username: String,
    /// base64(HMAC-SHA1(secret, username)): the password. Not printed by `Debug`.
    pub credential: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("credential", &"<redacted>")
            .finish()
    }
}

/// The credential for `id`, valid until `expiry` (Unix seconds), under `secret`. `id` must not
/// contain `:` (coturn reads the expiry up to the first one); the router's ids never do.
pub fn credential(secret: &Secret, expiry: u64, id: &str) -> Credential {
    let username = format!("{expiry}:{id}");
    // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    let mut mac =
        Hmac::<Sha1>::new_from_slice(secret.0.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(username.as_bytes());
    let credential = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    Credential {
        username,
        credential,
    }
}

/// `options` (a WebRTC `RTCConfiguration`, as `peer_options`) with `cred` as the `username` and
/// `credential` of every ICE server entry that names a TURN server (a `turn:` or `turns:` URL in
/// `urls`, or in the older `url`; the scheme in any case). STUN entries, entries that are not
/// objects, and everything outside `iceServers` stay as they are. A username and credential
/// already there are replaced.
pub fn with_credentials(options: &Value, cred: &Credential) -> Value {
    let mut out = options.clone();
    if let Some(servers) = out.get_mut("iceServers").and_then(Value::as_array_mut) {
        for entry in servers.iter_mut().filter_map(Value::as_object_mut) {
            if names_turn(entry) {
                entry.insert("username".into(), Value::String(cred.username.clone()));
                entry.insert("credential".into(), Value::String(cred.credential.clone()));
            }
        }
    }
    out
}

/// Whether `options` name at least one TURN server (which [`with_credentials`] would fill).
pub fn has_turn_server(options: &Value) -> bool {
    turn_entries(options).next().is_some()
}

/// Whether `options` name a TURN server without a username or credential: unusable unless
/// credentials are issued, and the failure shows only much later, as ICE failing.
pub fn has_turn_server_without_credentials(options: &Value) -> bool {
    turn_entries(options).any(|e| {
        ["username", "credential"]
            .iter()
            .any(|k| e.get(*k).and_then(Value::as_str).is_none_or(str::is_empty))
    })
}

fn turn_entries(options: &Value) -> impl Iterator<Item = &serde_json::Map<String, Value>> {
    options
        .get("iceServers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .filter(|e| names_turn(e))
}

fn names_turn(entry: &serde_json::Map<String, Value>) -> bool {
    let is_turn = |url: &Value| {
        url.as_str().is_some_and(|u| {
            let u = u.trim_start().to_ascii_lowercase();
            u.starts_with("turn:") || u.starts_with("turns:")
        })
    };
    ["urls", "url"]
        .iter()
        .filter_map(|k| entry.get(*k))
        .any(|urls| match urls {
            Value::Array(list) => list.iter().any(is_turn),
            one => is_turn(one),
        })
}

/// A bijection on 64 bits that scatters its input (SplitMix64's finalizer): distinct
/// connections of one router get distinct ids, which look unrelated to each other.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    // Without the OS generator the ids are still unique per router; only their difference
    // between router instances rests on the seed.
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn secret(s: &str) -> Secret {
        Secret(s.into())
    }

    // The expected credentials were computed apart from this code, with OpenSSL:
    //   printf '%s' "$username" | openssl dgst -sha1 -hmac "$secret" -binary | base64
    #[test]
    fn a_fixed_secret_expiry_and_id_give_a_known_username_and_credential() {
        let c = credential(
            &secret("pxs-turn-secret"),
            1_800_086_400,
            "Player0-00000000000000a1",
        );
        assert_eq!(c.username, "1800086400:Player0-00000000000000a1");
        assert_eq!(c.credential, "UGiqXi/naJmZ43VNyfmaDcnutyY=");
        let c = credential(
            &secret("pxs-turn-secret"),
            1_800_086_400,
            "Player1-00000000000000a2",
        );
        assert_eq!(c.credential, "2c1APd2yfmp4IXQHKNwuvb1GQgs=");
        // The vector of Epic's own test of the scheme.
        let c = credential(&secret("north"), 1_700_003_600, "player-1");
        assert_eq!(
            (c.username.as_str(), c.credential.as_str()),
            ("1700003600:player-1", "8UZc+N37gQLT4mIkDM7RaDTM+c4=")
        );
    }

    #[test]
    fn the_expiry_is_the_wall_clock_at_now_plus_the_ttl() {
        let start = Instant::now();
        let t = TurnConfig {
            epoch: (start, 1_800_000_000_250),
            ..TurnConfig::new(secret("s"), Duration::from_secs(3600))
        };
        assert_eq!(t.unix_seconds(start), 1_800_000_000);
        assert_eq!(
            t.unix_seconds(start + Duration::from_millis(86_400_750)),
            1_800_086_401
        );
        // An instant before the epoch counts as the epoch.
        assert_eq!(
            t.unix_seconds(start.checked_sub(Duration::from_secs(5)).unwrap_or(start)),
            1_800_000_000
        );
    }

    #[test]
    fn connections_get_different_ids_and_different_seeds_different_ones_again() {
        let t = |seed| TurnConfig {
            seed,
            ..TurnConfig::new(secret("s"), DEFAULT_TTL)
        };
        let a = t(7);
        let ids: std::collections::HashSet<String> =
            (0..10_000).map(|c| a.connection_id("Player", c)).collect();
        assert_eq!(ids.len(), 10_000);
        assert_eq!(a.connection_id("Player3", 3), a.connection_id("Player3", 3));
        assert_ne!(
            a.connection_id("Player3", 3),
            t(8).connection_id("Player3", 3)
        );
        let id = a.connection_id("Player3", 3);
        assert!(
            id.starts_with("Player3-") && id.len() == "Player3-".len() + 16,
            "{id}"
        );
        assert!(!id.contains(':'));
    }

    #[test]
    fn turn_entries_get_the_credential_and_everything_else_stays() {
        let cred = credential(&secret("s"), 1, "x");
        let options = json!({
            "iceTransportPolicy": "all",
            "iceServers": [
                {"urls": ["stun:stun.example.org:19302"]},
                {"urls": ["turn:turn.example.org:3478?transport=udp", "turn:turn.example.org:443?transport=tcp"],
                 "username": "static-user", "credential": "static-password"},
                {"urls": "TURNS:turn.example.org:5349"},
                {"url": "turn:old.example.org"},
                {"urls": ["stun:a", "turn:b"]},
                "not an object"
            ]
        });
        let out = with_credentials(&options, &cred);
        let servers = out["iceServers"].as_array().unwrap();
        assert_eq!(servers[0], json!({"urls": ["stun:stun.example.org:19302"]}));
        for (i, entry) in servers.iter().enumerate().take(5).skip(1) {
            assert_eq!(entry["username"], "1:x", "entry {i}");
            assert_eq!(entry["credential"], cred.credential.as_str(), "entry {i}");
        }
        assert_eq!(servers[1]["urls"], options["iceServers"][1]["urls"]);
        assert_eq!(servers[5], "not an object");
        assert_eq!(out["iceTransportPolicy"], "all");
    }

    #[test]
    fn options_without_turn_servers_pass_unchanged() {
        let cred = credential(&secret("s"), 1, "x");
        for options in [
            json!({}),
            json!({"iceServers": []}),
            json!({"iceServers": [{"urls": ["stun:a:1"]}]}),
            json!({"iceServers": "nonsense"}),
            json!({"iceServers": [{"urls": 5}]}),
        ] {
            assert_eq!(with_credentials(&options, &cred), options);
            assert!(!has_turn_server(&options));
            assert!(!has_turn_server_without_credentials(&options));
        }
    }

    #[test]
    fn a_turn_server_without_credentials_is_spotted() {
        assert!(has_turn_server_without_credentials(
            &json!({"iceServers": [{"urls": ["turn:t:3478"]}]})
        ));
        assert!(has_turn_server_without_credentials(
            &json!({"iceServers": [{"urls": ["turn:t:3478"], "username": "u", "credential": ""}]})
        ));
        assert!(!has_turn_server_without_credentials(
            &json!({"iceServers": [{"urls": ["turn:t:3478"], "username": "u", "credential": "c"}]})
        ));
    }

    #[test]
    fn debug_output_hides_the_secret_and_the_credential() {
        let t = TurnConfig::new(secret("hunter2-secret"), DEFAULT_TTL);
        assert!(!format!("{t:?}").contains("hunter2"));
        let c = credential(&secret("hunter2-secret"), 1, "x");
        let shown = format!("{c:?}");
        assert!(
            shown.contains("1:x") && !shown.contains(&c.credential),
            "{shown}"
        );
    }
}
