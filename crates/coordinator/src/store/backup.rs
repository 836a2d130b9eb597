//! `pxs coordinator backup`: a consistent copy of a SQLite database while the coordinator runs.
//! PostgreSQL has its own tools (`pg_dump`).

use super::{StoreError, redact_url};
use sqlx::Connection;
use std::path::Path;

/// Why a backup was not made.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0}: back up PostgreSQL with pg_dump (see docs/operations.md)")]
    Postgres(String),
    #[error("database_url {0}: not a SQLite or PostgreSQL URL")]
    BadUrl(String),
    #[error("{0} exists already: choose a new file (a backup never overwrites one)")]
    Exists(String),
    #[error("the backup file name is not UTF-8: {0}")]
    BadPath(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl From<sqlx::Error> for BackupError {
    fn from(e: sqlx::Error) -> Self {
        BackupError::Store(StoreError::from(e))
    }
}

/// Writes a consistent copy of the SQLite database at `database_url` to `out` (a new file),
/// while the coordinator may keep writing: SQLite's `VACUUM INTO` reads one snapshot. The
/// database is opened read-only and never migrated. The copy is on disk (synced) when this
/// returns; returns its size in bytes.
pub async fn backup_sqlite(database_url: &str, out: &Path) -> Result<u64, BackupError> {
    let path = if let Some(p) = database_url.strip_prefix("sqlite://") {
        p
    } else if let Some(p) = database_url.strip_prefix("sqlite:") {
        p
    } else if database_url.starts_with("postgres://") || database_url.starts_with("postgresql://") {
        return Err(BackupError::Postgres(redact_url(database_url)));
    } else {
        return Err(BackupError::BadUrl(redact_url(database_url)));
    };
    let path = path.split('?').next().unwrap_or(path);
    let out_str = out
        .to_str()
        .ok_or_else(|| BackupError::BadPath(out.display().to_string()))?;
    if out.exists() {
        return Err(BackupError::Exists(out_str.to_owned()));
    }
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&format!("sqlite://{path}?mode=ro")).await?;
    sqlx::query("VACUUM INTO $1")
        .bind(out_str)
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    let io = |source| BackupError::Io {
        path: out_str.to_owned(),
        source,
    };
    let file = std::fs::File::open(out).map_err(io)?;
    file.sync_all().map_err(io)?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        // The new directory entry too (best effort where directories cannot be opened).
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(file.metadata().map_err(io)?.len())
}
