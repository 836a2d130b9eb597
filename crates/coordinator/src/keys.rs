//! Session signing keys. Each session has a key that signs its players' tokens; the node that
//! runs the session gets it in `start_session` to check them. The key is derived from the
//! coordinator's session secret and the session id, and never stored: a copy of the database
//! lets nobody join a live session.
//!
//! The secret is `session_secret` in the config (or `PXS_COORDINATOR_SESSION_SECRET`); every
//! coordinator sharing a database must have the same one, so PostgreSQL requires it. With SQLite
//! and no setting, a random secret is made at the first start and kept in a file beside the
//! database (`<database>.session-secret`, readable by the owner only). Changing the secret makes
//! the join links of running sessions invalid: do it when none runs.

use crate::config::Config;
use anyhow::{Context, bail};
use hmac::{Hmac, Mac};
use pxs_protocol::node::SessionId;
use pxs_protocol::secret::Secret;
use sha2::Sha256;
use std::path::{Path, PathBuf};

/// Shortest secret accepted.
pub const MIN_SECRET_LEN: usize = 32;

#[derive(Clone, Debug)]
pub struct SessionKeys {
    secret: Secret,
}

impl SessionKeys {
    pub fn new(secret: Secret) -> SessionKeys {
        SessionKeys { secret }
    }

    /// The secret of `config`: its `session_secret`, or (SQLite) the one kept beside the
    /// database, made now if there is none yet.
    pub fn load(config: &Config) -> anyhow::Result<SessionKeys> {
        if let Some(s) = &config.session_secret {
            return Ok(SessionKeys::new(s.clone()));
        }
        let url = &config.database_url.0;
        if !url.starts_with("sqlite:") {
            bail!(
                "session_secret: required with PostgreSQL (every coordinator on the database must \
                 use the same one; at least {MIN_SECRET_LEN} characters, e.g. `openssl rand -hex 32`)"
            );
        }
        match sqlite_file(url) {
            None => Ok(SessionKeys::new(Secret(crate::auth::new_token("")))),
            Some(db) => {
                let path = secret_path(&db);
                Ok(SessionKeys::new(read_or_create(&path).with_context(
                    || format!("session_secret: cannot keep it in {}", path.display()),
                )?))
            }
        }
    }

    /// The signing key of session `id`.
    pub fn key(&self, id: &SessionId) -> String {
        // Invariant: HMAC takes a key of any length.
        #[allow(clippy::expect_used)]
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.secret.0.as_bytes())
            .expect("HMAC takes any key length");
        mac.update(b"pxs session key v1\0");
        mac.update(id.as_str().as_bytes());
        format!("psk_{}", crate::auth::base32(&mac.finalize().into_bytes()))
    }
}

/// The database file of a `sqlite:` URL; None for an in-memory database.
fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() || path == ":memory:" || query.split('&').any(|kv| kv == "mode=memory") {
        return None;
    }
    Some(PathBuf::from(path))
}

fn secret_path(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".session-secret");
    db.with_file_name(name)
}

fn read_or_create(path: &Path) -> anyhow::Result<Secret> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let s = text.trim();
            if s.len() < MIN_SECRET_LEN {
                bail!("it holds fewer than {MIN_SECRET_LEN} characters");
            }
            return Ok(Secret(s.to_owned()));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    let secret = crate::auth::new_token("");
    // A name of this attempt's own: two coordinators starting together never write one file.
    let tmp = path.with_extension(format!(
        "session-secret.{}.{}.tmp",
        std::process::id(),
        crate::auth::new_id("")
    ));
    {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(secret.as_bytes())?;
        f.sync_all()?;
    }
    // Another coordinator (or a second start) may have made one meanwhile: keep the first.
    match std::fs::hard_link(&tmp, path) {
        Ok(()) => {
            let _ = std::fs::remove_file(&tmp);
            tracing::info!(path = %path.display(), "made a new session secret");
            Ok(Secret(secret))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let _ = std::fs::remove_file(&tmp);
            read_or_create(path)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e.into())
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_by_session_and_by_secret_and_are_stable() {
        let a = SessionKeys::new(Secret("a".repeat(32)));
        let b = SessionKeys::new(Secret("b".repeat(32)));
        let s1 = SessionId::parse("ses_1").unwrap();
        let s2 = SessionId::parse("ses_2").unwrap();
        assert_eq!(a.key(&s1), a.key(&s1));
        assert_ne!(a.key(&s1), a.key(&s2));
        assert_ne!(a.key(&s1), b.key(&s1));
        assert!(a.key(&s1).len() > 40);
    }

    #[test]
    fn sqlite_urls_name_their_file() {
        assert_eq!(
            sqlite_file("sqlite:///var/lib/pxs/c.db?mode=rwc"),
            Some(PathBuf::from("/var/lib/pxs/c.db"))
        );
        assert_eq!(
            sqlite_file("sqlite://pxs.db"),
            Some(PathBuf::from("pxs.db"))
        );
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("sqlite://x.db?mode=memory"), None);
        assert_eq!(
            secret_path(Path::new("/d/c.db")),
            PathBuf::from("/d/c.db.session-secret")
        );
    }

    #[test]
    fn the_secret_file_is_made_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("pxs-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.db.session-secret");
        let _ = std::fs::remove_file(&path);
        let first = read_or_create(&path).unwrap();
        let again = read_or_create(&path).unwrap();
        assert_eq!(first, again);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "only the owner may read it");
        }
        std::fs::write(&path, "short").unwrap();
        assert!(read_or_create(&path).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
