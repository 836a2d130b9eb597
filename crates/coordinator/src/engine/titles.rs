//! Titles: create, change, delete.

use super::*;

impl Engine {
    pub async fn create_title(&self, new: api::NewTitle) -> Result<api::Title, ApiError> {
        let now = self.now();
        let t = TitleRow {
            id: match new.id {
                Some(id) => id,
                None => TitleId::parse(&auth::new_id("ttl_"))
                    .map_err(|e| ApiError::bad_request(e.to_string()))?,
            },
            name: new.name,
            description: new.description,
            image_url: new.image_url.filter(|u| !u.is_empty()),
            application_id: new.application_id,
            visibility: new.visibility,
            max_players: new.max_players,
            idle_timeout: new.idle_timeout.unwrap_or(600),
            empty_timeout: new.empty_timeout.unwrap_or(120),
            max_duration: new.max_duration,
            created_at: now,
            updated_at: now,
        };
        check_title(&t)?;
        let mut c = self.store.pool().acquire().await?;
        if !store::insert_title(&mut c, &t).await? {
            return Err(ApiError::conflict(format!("title `{}` exists", t.id)));
        }
        drop(c);
        self.promote_queue().await;
        self.title(&Caller::internal_admin(), &t.id).await
    }

    pub async fn update_title(
        &self,
        id: &TitleId,
        patch: api::TitlePatch,
    ) -> Result<api::Title, ApiError> {
        let mut c = self.store.pool().acquire().await?;
        let mut t = store::get_title(&mut c, id)
            .await?
            .ok_or_else(|| no_title(id))?;
        if let Some(v) = patch.name {
            t.name = v;
        }
        if let Some(v) = patch.description {
            t.description = v;
        }
        if let Some(v) = patch.image_url {
            t.image_url = Some(v).filter(|u| !u.is_empty());
        }
        if let Some(v) = patch.application_id {
            t.application_id = v;
        }
        if let Some(v) = patch.visibility {
            t.visibility = v;
        }
        if let Some(v) = patch.max_players {
            t.max_players = v;
        }
        if let Some(v) = patch.idle_timeout {
            t.idle_timeout = v;
        }
        if let Some(v) = patch.empty_timeout {
            t.empty_timeout = v;
        }
        if let Some(v) = patch.max_duration {
            t.max_duration = v;
        }
        t.updated_at = self.now();
        check_title(&t)?;
        store::update_title(&mut c, &t).await?;
        drop(c);
        self.promote_queue().await;
        self.title(&Caller::internal_admin(), id).await
    }

    pub async fn delete_title(&self, id: &TitleId) -> Result<(), ApiError> {
        let mut tx = self.store.begin_placement().await?;
        if store::get_title(&mut tx, id).await?.is_none() {
            return Err(no_title(id));
        }
        let live = store::count_sessions_of_title(&mut tx, id).await?;
        if live > 0 {
            return Err(ApiError::conflict(format!(
                "title `{id}` has {live} sessions that are not over; end them first"
            )));
        }
        store::delete_title(&mut tx, id).await?;
        tx.commit().await?;
        Ok(())
    }
}
