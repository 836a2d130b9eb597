//! Who is calling: API tokens (roles `admin` and `user`), node tokens, anonymous users and the
//! session keys they may hold (a session's owner key, its share links), and the permission
//! rules, in one place.
//!
//! Tokens and keys are random (`pxs_adm_…`, `pxs_usr_…`, `pxs_node_…`, `pxs_key_…`, 32 random
//! bytes), shown once, and stored only as their SHA-256, so a copy of the database lets nobody
//! in.

use crate::placement::Millis;
use pxs_protocol::api::{Role, Visibility};
use pxs_protocol::node::SessionId;
use pxs_protocol::player_token;
use sha2::{Digest, Sha256};

/// The prefix of every session key (owner keys and share links): a bearer token with it names a
/// session key, never an API token.
pub const KEY_PREFIX: &str = "pxs_key_";
/// The id prefix of a share link.
pub const LINK_ID_PREFIX: &str = "lnk_";
/// The id prefix of an owner key.
pub const OWNER_KEY_ID_PREFIX: &str = "own_";

/// Who may call a route (each route's is in `routes::ROUTES`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone; no token is read (health, metrics, pages, the node link, which checks its own).
    Public,
    /// Anyone; anonymous callers see less (public titles, the sessions whose key they hold);
    /// the handler checks the rest (a session's owner, its share links).
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
    /// No API token. `address_key` identifies the client address (hashed) for anonymous limits;
    /// `key` is the session key it presented, if any (an owner key or a share link).
    Anonymous {
        address_key: String,
        key: Option<SessionKey>,
    },
    Token {
        id: String,
        role: Role,
    },
}

/// A valid session key, as the caller presenting it is known by: which session it opens and
/// with which role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionKey {
    /// `own_…` (the owner key) or `lnk_…` (a share link).
    pub id: String,
    pub session_id: SessionId,
    pub role: player_token::Role,
    /// After this it is refused (share links; an owner key does not expire).
    pub expires_at: Option<Millis>,
}

/// The stored name of a session role (`session_keys.role`, the `role` of a session view).
pub fn role_name(r: player_token::Role) -> &'static str {
    match r {
        player_token::Role::Owner => "owner",
        player_token::Role::Controller => "controller",
        player_token::Role::Viewer => "viewer",
    }
}

/// The role [`role_name`] names.
pub fn parse_role(s: &str) -> Option<player_token::Role> {
    match s {
        "owner" => Some(player_token::Role::Owner),
        "controller" => Some(player_token::Role::Controller),
        "viewer" => Some(player_token::Role::Viewer),
        _ => None,
    }
}

/// Why a presented session key opens nothing (401, with a message for the person who followed
/// the link).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRefusal {
    /// Unknown, or revoked by the session's owner.
    Withdrawn,
    /// Past its `expires_at`.
    Expired,
}

impl KeyRefusal {
    pub fn message(self) -> &'static str {
        match self {
            KeyRefusal::Withdrawn => "this invitation was withdrawn or does not exist",
            KeyRefusal::Expired => "this invitation has expired",
        }
    }
}

/// Whether a stored session key still opens its session at `now`: not revoked, not expired
/// (a key is expired from `expires_at` on, like a player token).
pub fn key_in_force(
    revoked_at: Option<Millis>,
    expires_at: Option<Millis>,
    now: Millis,
) -> Result<(), KeyRefusal> {
    if revoked_at.is_some() {
        return Err(KeyRefusal::Withdrawn);
    }
    if expires_at.is_some_and(|e| now >= e) {
        return Err(KeyRefusal::Expired);
    }
    Ok(())
}

/// Why a caller may not do something to a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionRefusal {
    /// The session is not the caller's to see: answered as if it did not exist (404), so
    /// nothing about it leaks.
    Hidden,
    /// The caller is in the session, but not its owner (403); the message says what to do.
    NotOwner(&'static str),
}

/// What a caller wants to do to a session it can see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionAction {
    /// Read it, follow its changes, join it (with the caller's role).
    See,
    /// End it for everyone.
    End,
    /// Make, list and revoke its share links.
    ManageLinks,
}

/// Who ended a session through the API (`sessions.ended_by`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndedBy {
    /// Its creator's token, or its owner key.
    Owner,
    /// An admin who did not create it.
    Admin,
}

impl EndedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            EndedBy::Owner => "owner",
            EndedBy::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<EndedBy> {
        match s {
            "owner" => Some(EndedBy::Owner),
            "admin" => Some(EndedBy::Admin),
            _ => None,
        }
    }
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

    /// Holds an API token (a session key is not one).
    pub fn is_signed_in(&self) -> bool {
        matches!(self, Caller::Token { .. })
    }

    /// The session key presented, if any.
    pub fn key(&self) -> Option<&SessionKey> {
        match self {
            Caller::Anonymous { key, .. } => key.as_ref(),
            Caller::Token { .. } => None,
        }
    }

    /// The owner recorded on the sessions this caller creates.
    pub fn owner(&self) -> Owner {
        match self {
            Caller::Anonymous { address_key, .. } => Owner::Anonymous(address_key.clone()),
            Caller::Token { id, .. } => Owner::Token(id.clone()),
        }
    }

    /// May see (and start) a title of this visibility, approved or waiting for an admin's
    /// approval (a title made from a node's application under `[titles] approve_new`: admins
    /// only).
    pub fn may_use(&self, v: Visibility, approved: bool) -> bool {
        (approved || self.is_admin()) && (v == Visibility::Public || self.is_signed_in())
    }

    /// The caller's role in session `id` created by `owner`, or `None` when the session is not
    /// the caller's to see. Admins and the token that created it are its owner; so is whoever
    /// holds its owner key; a share link's key gives the link's role. Nothing else opens a
    /// session: an anonymous session is not reachable by its id alone (its owner key is the
    /// capability), and a key opens its own session only.
    pub fn role_in(&self, id: &SessionId, owner: &Owner) -> Option<player_token::Role> {
        match (self, owner) {
            _ if self.is_admin() => Some(player_token::Role::Owner),
            (Caller::Token { id: mine, .. }, Owner::Token(theirs)) if mine == theirs => {
                Some(player_token::Role::Owner)
            }
            (Caller::Token { .. }, _) => None,
            (Caller::Anonymous { key, .. }, _) => {
                key.as_ref().filter(|k| &k.session_id == id).map(|k| k.role)
            }
        }
    }

    /// May see session `id` created by `owner` (see [`Caller::role_in`]).
    pub fn may_access(&self, id: &SessionId, owner: &Owner) -> bool {
        self.role_in(id, owner).is_some()
    }

    /// Whether the caller may do `action` to session `id` created by `owner`; its role there if
    /// so. Ending a session and managing its links are its owner's.
    pub fn check(
        &self,
        action: SessionAction,
        id: &SessionId,
        owner: &Owner,
    ) -> Result<player_token::Role, SessionRefusal> {
        let role = self.role_in(id, owner).ok_or(SessionRefusal::Hidden)?;
        match action {
            SessionAction::See => Ok(role),
            _ if role == player_token::Role::Owner => Ok(role),
            SessionAction::End => Err(SessionRefusal::NotOwner(
                "only the session's owner can end it for everyone; close the page to leave",
            )),
            SessionAction::ManageLinks => Err(SessionRefusal::NotOwner(
                "only the session's owner can do that",
            )),
        }
    }

    /// Who this caller is, as the one ending session `owner` created: its owner (the creating
    /// token, the owner key) or an admin who did not create it. Asked only of callers
    /// [`Caller::check`] allowed to end it.
    pub fn ended_by(&self, owner: &Owner) -> EndedBy {
        match (self, owner) {
            (Caller::Token { id, .. }, Owner::Token(theirs)) if id == theirs => EndedBy::Owner,
            (Caller::Token { .. }, _) if self.is_admin() => EndedBy::Admin,
            _ => EndedBy::Owner,
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

    fn anon(key: Option<SessionKey>) -> Caller {
        Caller::Anonymous {
            address_key: "x".into(),
            key,
        }
    }

    fn key(id: &str, session: &SessionId, role: player_token::Role) -> SessionKey {
        SessionKey {
            id: id.into(),
            session_id: session.clone(),
            role,
            expires_at: None,
        }
    }

    fn ses(s: &str) -> SessionId {
        SessionId::parse(s).unwrap()
    }

    #[test]
    fn permissions() {
        let anon = anon(None);
        let user = Caller::Token {
            id: "u1".into(),
            role: Role::User,
        };
        let admin = Caller::Token {
            id: "a1".into(),
            role: Role::Admin,
        };
        assert!(anon.may_use(Visibility::Public, true) && !anon.may_use(Visibility::Private, true));
        assert!(user.may_use(Visibility::Private, true));
        // A title waiting for approval: admins only.
        assert!(!anon.may_use(Visibility::Public, false));
        assert!(!user.may_use(Visibility::Public, false));
        assert!(
            admin.may_use(Visibility::Public, false) && admin.may_use(Visibility::Private, false)
        );
        let o = |s: &str| Owner::parse(s).unwrap();
        let a = ses("ses_a");
        assert!(user.may_access(&a, &o("tok:u1")) && !user.may_access(&a, &o("tok:u2")));
        assert!(admin.may_access(&a, &o("tok:u2")) && admin.may_access(&a, &o("anon:y")));
        for s in ["tok:u1", "anon:y"] {
            assert_eq!(o(s).to_string(), s);
        }
        assert_eq!(Owner::parse("u1"), None);
    }

    #[test]
    fn an_anonymous_session_is_not_reachable_by_its_id_alone() {
        let o = Owner::Anonymous("x".into());
        let a = ses("ses_a");
        // Not even from the address that created it, nor by a signed-in user.
        assert!(!anon(None).may_access(&a, &o));
        let user = Caller::Token {
            id: "u1".into(),
            role: Role::User,
        };
        assert!(!user.may_access(&a, &o));
        assert_eq!(
            anon(None).check(SessionAction::See, &a, &o),
            Err(SessionRefusal::Hidden)
        );
    }

    #[test]
    fn a_key_opens_its_own_session_only_with_its_role() {
        use player_token::Role as R;
        let o = Owner::Anonymous("x".into());
        let (a, b) = (ses("ses_a"), ses("ses_b"));
        for role in [R::Owner, R::Controller, R::Viewer] {
            let c = anon(Some(key("lnk_1", &a, role)));
            assert_eq!(c.role_in(&a, &o), Some(role));
            assert_eq!(c.role_in(&b, &o), None, "a key of A opens B");
            assert_eq!(
                c.check(SessionAction::End, &b, &o),
                Err(SessionRefusal::Hidden)
            );
            // A user's session too: the key opens what it was made for, whoever made it.
            let by_user = Owner::Token("u1".into());
            assert_eq!(c.role_in(&a, &by_user), Some(role));
            assert!(!c.is_signed_in());
        }
    }

    #[test]
    fn only_owners_end_sessions_and_manage_links() {
        use player_token::Role as R;
        let o = Owner::Anonymous("x".into());
        let a = ses("ses_a");
        for action in [SessionAction::End, SessionAction::ManageLinks] {
            assert_eq!(
                anon(Some(key("own_1", &a, R::Owner))).check(action, &a, &o),
                Ok(R::Owner)
            );
            for role in [R::Controller, R::Viewer] {
                let c = anon(Some(key("lnk_1", &a, role)));
                assert!(
                    matches!(c.check(action, &a, &o), Err(SessionRefusal::NotOwner(m)) if m.contains("only the session's owner")),
                    "{role:?} may {action:?}"
                );
                assert_eq!(c.check(SessionAction::See, &a, &o), Ok(role));
            }
        }
        let admin = Caller::Token {
            id: "a1".into(),
            role: Role::Admin,
        };
        assert_eq!(admin.check(SessionAction::End, &a, &o), Ok(R::Owner));
    }

    #[test]
    fn who_ended_it() {
        let admin = Caller::Token {
            id: "a1".into(),
            role: Role::Admin,
        };
        let user = Caller::Token {
            id: "u1".into(),
            role: Role::User,
        };
        assert_eq!(admin.ended_by(&Owner::Token("a1".into())), EndedBy::Owner);
        assert_eq!(admin.ended_by(&Owner::Token("u1".into())), EndedBy::Admin);
        assert_eq!(
            admin.ended_by(&Owner::Anonymous("x".into())),
            EndedBy::Admin
        );
        assert_eq!(user.ended_by(&Owner::Token("u1".into())), EndedBy::Owner);
        let owner_key = anon(Some(key("own_1", &ses("ses_a"), player_token::Role::Owner)));
        assert_eq!(
            owner_key.ended_by(&Owner::Anonymous("y".into())),
            EndedBy::Owner
        );
        for e in [EndedBy::Owner, EndedBy::Admin] {
            assert_eq!(EndedBy::parse(e.as_str()), Some(e));
        }
    }

    #[test]
    fn keys_give_no_signed_in_access() {
        let c = anon(Some(key("own_1", &ses("ses_a"), player_token::Role::Owner)));
        assert_eq!(Access::User.admits(&c), Err(Refusal::Unauthorized));
        assert_eq!(Access::Admin.admits(&c), Err(Refusal::Unauthorized));
        assert_eq!(Access::Anyone.admits(&c), Ok(()));
    }

    #[test]
    fn revoked_keys_are_withdrawn_and_old_ones_expired() {
        assert_eq!(key_in_force(None, None, 5), Ok(()));
        assert_eq!(key_in_force(None, Some(6), 5), Ok(()));
        assert_eq!(key_in_force(None, Some(5), 5), Err(KeyRefusal::Expired));
        assert_eq!(
            key_in_force(Some(1), Some(6), 5),
            Err(KeyRefusal::Withdrawn)
        );
        assert_eq!(
            key_in_force(Some(1), Some(2), 5),
            Err(KeyRefusal::Withdrawn)
        );
        assert!(KeyRefusal::Expired.message().contains("expired"));
    }

    #[test]
    fn roles_have_one_name_each() {
        use player_token::Role as R;
        for r in [R::Owner, R::Controller, R::Viewer] {
            assert_eq!(parse_role(role_name(r)), Some(r));
            // The same word as the player token's.
            assert_eq!(
                serde_json::to_value(r).unwrap(),
                serde_json::json!(role_name(r))
            );
        }
        assert_eq!(parse_role("admin"), None);
    }
}
