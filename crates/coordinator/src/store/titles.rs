//! Titles: the rows of the `titles` table, read and written, and the applications whose title
//! an admin deleted (`dismissed_applications`).

use super::{
    NO_BINDS, Result, clamp_i64, fetch_all, fetch_optional, flag, parse_col, u32_col, u64_col,
};
use crate::model::TitleRow;
use crate::placement::Millis;
use pxs_protocol::api::{TitleId, TitleSource, Visibility};
use pxs_protocol::node::ApplicationId;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

fn title_from_row(row: &AnyRow) -> Result<TitleRow> {
    Ok(TitleRow {
        id: parse_col(row, "id", |s| TitleId::parse(s).ok())?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        image_url: row.try_get("image_url")?,
        application_id: parse_col(row, "application_id", |s| ApplicationId::parse(s).ok())?,
        visibility: parse_col(row, "visibility", |s| match s {
            "public" => Some(Visibility::Public),
            "private" => Some(Visibility::Private),
            _ => None,
        })?,
        max_players: u32_col(row, "max_players")?,
        idle_timeout: u64_col(row, "idle_timeout")?,
        empty_timeout: u64_col(row, "empty_timeout")?,
        max_duration: u64_col(row, "max_duration")?,
        source: parse_col(row, "source", |s| match s {
            "admin" => Some(TitleSource::Admin),
            "node" => Some(TitleSource::Node),
            _ => None,
        })?,
        approved: row.try_get::<i64, _>("approved")? != 0,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub fn visibility_name(v: Visibility) -> &'static str {
    match v {
        Visibility::Public => "public",
        Visibility::Private => "private",
    }
}

pub fn source_name(s: TitleSource) -> &'static str {
    match s {
        TitleSource::Admin => "admin",
        TitleSource::Node => "node",
    }
}

pub async fn list_titles(c: &mut AnyConnection) -> Result<Vec<TitleRow>> {
    fetch_all(
        c,
        "SELECT * FROM titles ORDER BY name, id",
        NO_BINDS,
        title_from_row,
    )
    .await
}

pub async fn get_title(c: &mut AnyConnection, id: &TitleId) -> Result<Option<TitleRow>> {
    fetch_optional(
        c,
        "SELECT * FROM titles WHERE id = $1",
        [id.as_str()],
        title_from_row,
    )
    .await
}

/// The titles of application `app`, and the one whose id is `app` (whatever its application).
pub async fn titles_of_application(
    c: &mut AnyConnection,
    app: &ApplicationId,
) -> Result<Vec<TitleRow>> {
    fetch_all(
        c,
        "SELECT * FROM titles WHERE application_id = $1 OR id = $1 ORDER BY id",
        [app.as_str()],
        title_from_row,
    )
    .await
}

/// False if a title with that id exists.
pub async fn insert_title(c: &mut AnyConnection, t: &TitleRow) -> Result<bool> {
    let done = sqlx::query(
        "INSERT INTO titles (id, name, description, image_url, application_id, visibility, \
         max_players, idle_timeout, empty_timeout, max_duration, created_at, updated_at, \
         source, approved) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(t.id.as_str())
    .bind(&t.name)
    .bind(&t.description)
    .bind(t.image_url.as_deref())
    .bind(t.application_id.as_str())
    .bind(visibility_name(t.visibility))
    .bind(i64::from(t.max_players))
    .bind(clamp_i64(t.idle_timeout))
    .bind(clamp_i64(t.empty_timeout))
    .bind(clamp_i64(t.max_duration))
    .bind(t.created_at)
    .bind(t.updated_at)
    .bind(source_name(t.source))
    .bind(flag(t.approved))
    .execute(&mut *c)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Writes `t` as an admin changed it (its approval is not changed here: [`approve_title`]).
pub async fn update_title(c: &mut AnyConnection, t: &TitleRow) -> Result<()> {
    write_title(c, t, "").await.map(|_| ())
}

/// Writes `t`, made from a node's application, unless an admin took the title over meanwhile
/// (then false, and nothing changed).
pub async fn refresh_node_title(c: &mut AnyConnection, t: &TitleRow) -> Result<bool> {
    write_title(c, t, " AND source = 'node'").await
}

async fn write_title(c: &mut AnyConnection, t: &TitleRow, only: &'static str) -> Result<bool> {
    let sql = format!(
        "UPDATE titles SET name = $2, description = $3, image_url = $4, application_id = $5, \
         visibility = $6, max_players = $7, idle_timeout = $8, empty_timeout = $9, \
         max_duration = $10, updated_at = $11, source = $12 WHERE id = $1{only}"
    );
    let done = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(t.id.as_str())
        .bind(&t.name)
        .bind(&t.description)
        .bind(t.image_url.as_deref())
        .bind(t.application_id.as_str())
        .bind(visibility_name(t.visibility))
        .bind(i64::from(t.max_players))
        .bind(clamp_i64(t.idle_timeout))
        .bind(clamp_i64(t.empty_timeout))
        .bind(clamp_i64(t.max_duration))
        .bind(t.updated_at)
        .bind(source_name(t.source))
        .execute(&mut *c)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// An admin approves title `id` (at `now`, when it was not yet). False: there is no such title.
pub async fn approve_title(c: &mut AnyConnection, id: &TitleId, now: Millis) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE titles SET updated_at = CASE WHEN approved = 0 THEN $2 ELSE updated_at END, \
         approved = 1 WHERE id = $1",
    )
    .bind(id.as_str())
    .bind(now)
    .execute(&mut *c)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Remembers that an admin deleted the title of `app`: no title is made of it again.
pub async fn dismiss_application(
    c: &mut AnyConnection,
    app: &ApplicationId,
    now: Millis,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO dismissed_applications (application_id, dismissed_at) VALUES ($1, $2) \
         ON CONFLICT (application_id) DO NOTHING",
    )
    .bind(app.as_str())
    .bind(now)
    .execute(&mut *c)
    .await?;
    Ok(())
}

pub async fn is_dismissed(c: &mut AnyConnection, app: &ApplicationId) -> Result<bool> {
    Ok(
        sqlx::query("SELECT 1 FROM dismissed_applications WHERE application_id = $1")
            .bind(app.as_str())
            .fetch_optional(&mut *c)
            .await?
            .is_some(),
    )
}

pub async fn delete_title(c: &mut AnyConnection, id: &TitleId) -> Result<bool> {
    let done = sqlx::query("DELETE FROM titles WHERE id = $1")
        .bind(id.as_str())
        .execute(&mut *c)
        .await?;
    Ok(done.rows_affected() == 1)
}
