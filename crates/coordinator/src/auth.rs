//! Who is calling: API tokens (roles `admin` and `user`), node tokens, anonymous users, and the
//! permission rules, in one place.
//!
//! Tokens are random (`pxs_adm_…`, `pxs_usr_…`, `pxs_node_…`, 32 random bytes), shown once,
//! and stored only as their SHA-256, so a copy of the database lets nobody in.

use pxs_protocol::api::{Role, Visibility};
use sha2::{Digest, Sha256};

/// Who may call a route (each route's is in `routes::ROUTES`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone; no token is read (health, metrics, pages, the node link, which checks its own).
    Public,
    /// Anyone; anonymous callers see less (public titles, their own sessions by id).
    Anyone,
    /// A user or admin token.
    User,
    Admin,
}

/// Why a caller is refused a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No token, or not a valid one (401).
    Unauthorized,
    /// A valid token without the role (403).
    Forbidden,
}

impl Access {
    /// Whether `caller` may call a route with this access.
    pub fn admits(self, caller: &Caller) -> Result<(), Refusal> {
        match self {
            Access::Public | Access::Anyone => Ok(()),
            Access::User if caller.is_signed_in() => Ok(()),
            Access::User => Err(Refusal::Unauthorized),
            Access::Admin if caller.is_admin() => Ok(()),
            Access::Admin if caller.is_signed_in() => Err(Refusal::Forbidden),
            Access::Admin => Err(Refusal::Unauthorized),
        }
    }
}

/// Whoever made a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// No token. `address_key` identifies the client address (hashed) for anonymous limits.
    Anonymous {
        address_key: String,
    },
    Token {
        id: String,
        role: Role,
    },
}

impl Caller {
    /// The coordinator itself reading with an admin's view (after an admin's write, for the
    /// admin event stream).
    pub fn internal_admin() -> Caller {
        Caller::Token {
            id: "internal".into(),
            role: Role::Admin,
        }
    }

    pub fn is_admin(&self) -> bool {
        matches!(
            self,
            Caller::Token {
                role: Role::Admin,
                ..
            }
        )
    }

    pub fn is_signed_in(&self) -> bool {
        matches!(self, Caller::Token { .. })
    }

    /// The owner recorded on the sessions this caller creates.
    pub fn owner(&self) -> Owner {
        match self {
            Caller::Anonymous { address_key } => Owner::Anonymous(address_key.clone()),
            Caller::Token { id, .. } => Owner::Token(id.clone()),
        }
    }

    /// May see (and start) a title of this visibility.
    pub fn may_use(&self, v: Visibility) -> bool {
        v == Visibility::Public || self.is_signed_in()
    }

    /// May see and end a session owned by `owner`. Sessions of anonymous users are reachable
    /// by whoever knows their id (128 random bits: the id is the capability); a signed-in user's
    /// only by that user and admins.
    pub fn may_access(&self, owner: &Owner) -> bool {
        match (self, owner) {
            _ if self.is_admin() => true,
            (_, Owner::Anonymous(_)) => true,
            (Caller::Token { id, .. }, Owner::Token(theirs)) => id == theirs,
            (Caller::Anonymous { .. }, Owner::Token(_)) => false,
        }
    }
}

/// Who created a session: a token (by its id) or an anonymous client (by its hashed address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    Token(String),
    Anonymous(String),
}

impl Owner {
    const TOKEN: &str = "tok:";
    const ANONYMOUS: &str = "anon:";

    /// The stored form, `tok:<token id>` or `anon:<address key>`.
    pub fn parse(s: &str) -> Option<Owner> {
        if let Some(id) = s.strip_prefix(Self::TOKEN) {
            Some(Owner::Token(id.to_owned()))
        } else {
            s.strip_prefix(Self::ANONYMOUS)
                .map(|k| Owner::Anonymous(k.to_owned()))
        }
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Owner::Token(id) => write!(f, "{}{id}", Self::TOKEN),
            Owner::Anonymous(key) => write!(f, "{}{key}", Self::ANONYMOUS),
        }
    }
}

/// The two kinds of token an admin lists and revokes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// A user's or an admin's, for the REST API.
    Api,
    /// A node's, for its link.
    Node,
}

/// The token of an `Authorization: Bearer <token>` value (the scheme is case-insensitive, as
/// HTTP says); `None` for another scheme or an empty token.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Random bytes from the OS.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // The OS random source failing is not something a server can go on without.
    getrandom::fill(&mut b).expect("the OS random number generator works");
    b
}

/// `prefix` and 32 random bytes as 52 base-32 characters.
pub fn new_token(prefix: &str) -> String {
    format!("{prefix}{}", base32(&random_bytes::<32>()))
}

/// A short random id (`prefix` + 16 characters).
pub fn new_id(prefix: &str) -> String {
    let b = random_bytes::<10>();
    format!("{prefix}{}", base32(&b))
}

pub(crate) fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// What is stored of a token.
pub fn hash_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The anonymous-limit key of a client address (hashed: addresses are not kept in clear).
pub fn address_key(ip: std::net::IpAddr) -> String {
    hash_token(&format!("addr:{ip}"))[..16].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_distinct_and_hashed() {
        let a = new_token("pxs_adm_");
        let b = new_token("pxs_adm_");
        assert_ne!(a, b);
        assert!(a.starts_with("pxs_adm_") && a.len() == 8 + 52);
        assert_eq!(hash_token(&a).len(), 64);
        assert_ne!(hash_token(&a), hash_token(&b));
    }

    #[test]
    fn bearer_schemes_are_case_insensitive() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearer"), None);
    }

    #[test]
    fn permissions() {
        let anon = Caller::Anonymous {
            address_key: "x".into(),
        };
        let user = Caller::Token {
            id: "u1".into(),
            role: Role::User,
        };
        let admin = Caller::Token {
            id: "a1".into(),
            role: Role::Admin,
        };
        assert!(anon.may_use(Visibility::Public) && !anon.may_use(Visibility::Private));
        assert!(user.may_use(Visibility::Private));
        let o = |s: &str| Owner::parse(s).unwrap();
        assert!(user.may_access(&o("tok:u1")) && !user.may_access(&o("tok:u2")));
        assert!(anon.may_access(&o("anon:y")) && !anon.may_access(&o("tok:u1")));
        assert!(admin.may_access(&o("tok:u2")));
        for s in ["tok:u1", "anon:y"] {
            assert_eq!(o(s).to_string(), s);
        }
        assert_eq!(Owner::parse("u1"), None);
    }
}
