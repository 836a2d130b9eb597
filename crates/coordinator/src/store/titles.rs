//! Titles: the rows of the `titles` table, read and written.

use super::{NO_BINDS, Result, clamp_i64, fetch_all, fetch_optional, parse_col, u32_col, u64_col};
use crate::model::TitleRow;
use pxs_protocol::api::{TitleId, Visibility};
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

/// False if a title with that id exists.
pub async fn insert_title(c: &mut AnyConnection, t: &TitleRow) -> Result<bool> {
    let done = sqlx::query(
        "INSERT INTO titles (id, name, description, image_url, application_id, visibility, \
         max_players, idle_timeout, empty_timeout, max_duration, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (id) DO NOTHING",
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
    .execute(&mut *c)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn update_title(c: &mut AnyConnection, t: &TitleRow) -> Result<()> {
    sqlx::query(
        "UPDATE titles SET name = $2, description = $3, image_url = $4, application_id = $5, \
         visibility = $6, max_players = $7, idle_timeout = $8, empty_timeout = $9, \
         max_duration = $10, updated_at = $11 WHERE id = $1",
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
    .bind(t.updated_at)
    .execute(&mut *c)
    .await?;
    Ok(())
}

pub async fn delete_title(c: &mut AnyConnection, id: &TitleId) -> Result<bool> {
    let done = sqlx::query("DELETE FROM titles WHERE id = $1")
        .bind(id.as_str())
        .execute(&mut *c)
        .await?;
    Ok(done.rows_affected() == 1)
}
