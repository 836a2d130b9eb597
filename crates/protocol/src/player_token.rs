//! Player tokens: signed, expiring permissions to join one session with a role.
//!
//! Each session has a **signing key**, known only to the coordinator and the node that hosts the
//! session (it travels on the node link as `StartOptions::player_token`). The key is the bytes of
//! that secret string ([`key_from_secret`]); it never reaches a browser. The coordinator gives
//! each user a token it signed with the key; the node checks it when the player's WebSocket is
//! upgraded. A leaked join URL stops working when its token expires.
//!
//! ```text
//! pt1.<payload>.<signature>
//!     payload   = base64url, no padding, of the JSON claims
//!                 {"session_id":"ses_…","role":"controller","exp":1764039000123,"name":"Ada"}
//!     signature = base64url, no padding, of HMAC-SHA256(key, "pt1." + payload)
//! ```
//!
//! `exp` is in milliseconds since the Unix epoch; a token is expired from `exp` on
//! (`now >= exp`). Tokens are short and made of URL-safe characters (`A-Z a-z 0-9 - _ .`), so
//! they go into `?token=` unescaped.

use crate::node::{SessionId, UnixMillis};
use crate::secret::Secret;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The version prefix of every token (with its separator).
pub const PREFIX: &str = "pt1.";

/// Longer tokens are refused as [`TokenError::Malformed`] before any decoding.
pub const MAX_TOKEN_LEN: usize = 4096;

/// What a player may do in a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Owns the session (its creator): has control first, hands it on, takes it back, removes
    /// users.
    Owner,
    /// May control: gets control by asking when nobody has it.
    Controller,
    /// Watches and chats; controls only when given control.
    Viewer,
}

/// What a token says, signed by the coordinator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The one session this token admits to.
    pub session_id: SessionId,
    pub role: Role,
    /// Expiry, in milliseconds since the Unix epoch: refused from this instant on.
    pub exp: UnixMillis,
    /// The user's display name, if the coordinator knows one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The share link this token was made for, if any: removing a user keeps its link out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

/// Why a token was refused. The kinds are safe to log; the token itself never is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a `pt1.` token: wrong shape, bad base64, bad JSON, or longer than [`MAX_TOKEN_LEN`].
    #[error("malformed player token")]
    Malformed,
    /// Well formed, but not signed with this session's key (or altered since).
    #[error("player token has a bad signature")]
    BadSignature,
    /// Signed correctly, but `now >= exp`.
    #[error("player token expired")]
    Expired,
    /// Signed correctly, but for another session.
    #[error("player token is for another session")]
    WrongSession,
}

impl TokenError {
    /// A short snake_case name for logs and metrics.
    pub fn kind(self) -> &'static str {
        match self {
            TokenError::Malformed => "malformed",
            TokenError::BadSignature => "bad_signature",
            TokenError::Expired => "expired",
            TokenError::WrongSession => "wrong_session",
        }
    }
}

/// The signing key of a session: the bytes of its player-token secret.
pub fn key_from_secret(s: &Secret) -> &[u8] {
    s.0.as_bytes()
}

/// Signs `claims` with `key`: `pt1.<payload>.<signature>`.
pub fn sign(key: &[u8], claims: &Claims) -> String {
    // Serializing Claims cannot fail: plain fields, string keys, no custom Serialize impl.
    let json = serde_json::to_vec(claims).expect("Claims serialize");
    let mut token = String::with_capacity(PREFIX.len() + json.len() * 4 / 3 + 48);
    token.push_str(PREFIX);
    URL_SAFE_NO_PAD.encode_string(json, &mut token);
    let tag = mac(key, token.as_bytes()).finalize().into_bytes();
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(tag, &mut token);
    token
}

/// Checks `token` against `key` for `session` at `now` and returns its claims.
///
/// The signature is checked (in constant time) before the payload is decoded, so nothing of an
/// unsigned payload is ever parsed. Never panics, whatever the input.
pub fn verify(
    key: &[u8],
    token: &str,
    session: &SessionId,
    now: UnixMillis,
) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let rest = token.strip_prefix(PREFIX).ok_or(TokenError::Malformed)?;
    let (payload, signature) = rest.split_once('.').ok_or(TokenError::Malformed)?;
    if payload.is_empty() {
        return Err(TokenError::Malformed);
    }
    // A signature containing another '.' fails to decode here.
    let tag = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| TokenError::Malformed)?;
    let signed = &token[..PREFIX.len() + payload.len()];
    mac(key, signed.as_bytes())
        .verify_slice(&tag)
        .map_err(|_| TokenError::BadSignature)?;
    let json = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| TokenError::Malformed)?;
    let claims: Claims = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
    if &claims.session_id != session {
        return Err(TokenError::WrongSession);
    }
    if now >= claims.exp {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

fn mac(key: &[u8], message: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts a key of any length (long keys are hashed, short ones padded): never Err.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(message);
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: &[u8] = b"session-signing-key";
    const NOW: UnixMillis = 1_764_039_000_000;

    fn sid(s: &str) -> SessionId {
        SessionId::parse(s).unwrap()
    }

    fn claims() -> Claims {
        Claims {
            session_id: sid("ses_abc"),
            role: Role::Controller,
            exp: NOW + 60_000,
            name: Some("Ada".into()),
            link: None,
        }
    }

    /// Replaces the character at `i` with another base64url character.
    fn flip(token: &str, i: usize) -> String {
        let mut b = token.as_bytes().to_vec();
        b[i] = if b[i] == b'A' { b'B' } else { b'A' };
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn a_signed_token_round_trips() {
        let t = sign(KEY, &claims());
        assert!(t.starts_with("pt1."));
        assert_eq!(t.split('.').count(), 3);
        assert!(
            t.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c)),
            "URL-safe: {t}"
        );
        assert_eq!(verify(KEY, &t, &sid("ses_abc"), NOW), Ok(claims()));
    }

    #[test]
    fn the_payload_is_the_documented_json() {
        let t = sign(KEY, &claims());
        let payload = t.split('.').nth(1).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"session_id":"ses_abc","role":"controller","exp":NOW + 60_000,"name":"Ada"})
        );
        let viewer = Claims {
            role: Role::Viewer,
            name: None,
            link: None,
            ..claims()
        };
        let t = sign(KEY, &viewer);
        let json: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(t.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"session_id":"ses_abc","role":"viewer","exp":NOW + 60_000}),
            "no name: no field"
        );
        assert_eq!(verify(KEY, &t, &sid("ses_abc"), NOW), Ok(viewer));
    }

    #[test]
    fn a_tampered_payload_is_a_bad_signature() {
        let t = sign(KEY, &claims());
        // Re-encode the payload with a later expiry but keep the signature.
        let (head, sig) = t.rsplit_once('.').unwrap();
        let forged = Claims {
            exp: u64::MAX,
            ..claims()
        };
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        let forged = format!("pt1.{payload}.{sig}");
        assert_ne!(head, format!("pt1.{payload}"));
        assert_eq!(
            verify(KEY, &forged, &sid("ses_abc"), NOW),
            Err(TokenError::BadSignature)
        );
        // Any single character of the payload changed.
        for i in PREFIX.len()..head.len() {
            assert_eq!(
                verify(KEY, &flip(&t, i), &sid("ses_abc"), NOW),
                Err(TokenError::BadSignature),
                "payload character {i}"
            );
        }
    }

    #[test]
    fn a_tampered_signature_is_refused() {
        let t = sign(KEY, &claims());
        let sig_start = t.rfind('.').unwrap() + 1;
        for i in sig_start..t.len() {
            let e = verify(KEY, &flip(&t, i), &sid("ses_abc"), NOW).unwrap_err();
            // The last character also carries unused bits: changing them is a non-canonical
            // encoding, refused as malformed.
            assert!(
                matches!(e, TokenError::BadSignature | TokenError::Malformed),
                "signature character {i}: {e:?}"
            );
        }
        assert_eq!(
            verify(KEY, &t[..t.len() - 1], &sid("ses_abc"), NOW).unwrap_err(),
            TokenError::Malformed,
            "truncated"
        );
        let (head, _) = t.rsplit_once('.').unwrap();
        assert_eq!(
            verify(KEY, &format!("{head}.AAAA"), &sid("ses_abc"), NOW),
            Err(TokenError::BadSignature),
            "a short signature"
        );
    }

    #[test]
    fn another_key_is_a_bad_signature() {
        let t = sign(b"another key", &claims());
        assert_eq!(
            verify(KEY, &t, &sid("ses_abc"), NOW),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify(b"", &t, &sid("ses_abc"), NOW),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn a_token_for_another_session_is_refused() {
        let t = sign(KEY, &claims());
        assert_eq!(
            verify(KEY, &t, &sid("ses_abd"), NOW),
            Err(TokenError::WrongSession)
        );
    }

    #[test]
    fn a_token_expires_at_exp() {
        let c = claims();
        let t = sign(KEY, &c);
        assert!(verify(KEY, &t, &c.session_id, c.exp - 1).is_ok());
        assert_eq!(
            verify(KEY, &t, &c.session_id, c.exp),
            Err(TokenError::Expired)
        );
        assert_eq!(
            verify(KEY, &t, &c.session_id, c.exp + 1),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn shapes_that_are_not_tokens_are_malformed() {
        let s = sid("ses_abc");
        let signed_garbage = |payload: &[u8]| {
            let p = URL_SAFE_NO_PAD.encode(payload);
            let head = format!("pt1.{p}");
            let tag = mac(KEY, head.as_bytes()).finalize().into_bytes();
            format!("{head}.{}", URL_SAFE_NO_PAD.encode(tag))
        };
        let too_long = format!("pt1.{}.AAAA", "A".repeat(MAX_TOKEN_LEN));
        for t in [
            "",
            "pt1.",
            "pt1..",
            "pt1.abc",
            "pt2.abc.def",
            "PT1.abc.def",
            "pt1.abc.de+f",
            "pt1.abc.def=",
            "pt1.abc.d.ef",
            "player-token-for-tests",
            too_long.as_str(),
            // Correctly signed but not claims: only a key holder can make these.
            signed_garbage(b"not json").as_str(),
            signed_garbage(br#"{"session_id":"nope","role":"viewer","exp":1}"#).as_str(),
            signed_garbage(br#"{"session_id":"ses_abc","role":"admin","exp":1}"#).as_str(),
        ] {
            assert_eq!(verify(KEY, t, &s, NOW), Err(TokenError::Malformed), "{t:?}");
        }
    }

    #[test]
    fn error_kinds_are_snake_case() {
        assert_eq!(TokenError::BadSignature.kind(), "bad_signature");
        assert_eq!(TokenError::WrongSession.kind(), "wrong_session");
    }

    proptest! {
        #[test]
        fn arbitrary_strings_never_verify(s in any::<String>()) {
            prop_assert!(verify(KEY, &s, &sid("ses_abc"), 0).is_err());
        }

        #[test]
        fn token_shaped_strings_never_verify(
            payload in "[A-Za-z0-9_-]{0,200}",
            sig in "[A-Za-z0-9_.=+/-]{0,60}",
        ) {
            let t = format!("pt1.{payload}.{sig}");
            prop_assert!(verify(KEY, &t, &sid("ses_abc"), 0).is_err());
        }

        #[test]
        fn any_claims_round_trip(
            exp in 1u64..,
            name in proptest::option::of(any::<String>()),
            role in proptest::sample::select(vec![Role::Owner, Role::Controller, Role::Viewer]),
            link in proptest::option::of("[a-z_0-9]{1,20}"),
            key in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let c = Claims {
                session_id: sid("ses_abc"),
                role,
                exp,
                name,
                link,
            };
            let t = sign(&key, &c);
            prop_assume!(t.len() <= MAX_TOKEN_LEN);
            prop_assert_eq!(verify(&key, &t, &c.session_id, exp - 1), Ok(c.clone()));
            prop_assert_eq!(verify(&key, &t, &c.session_id, exp), Err(TokenError::Expired));
        }
    }
}
