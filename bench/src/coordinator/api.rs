//! The benchmark's REST client: one reqwest client (HTTP/1.1, keep-alive, `TCP_NODELAY`) with a
//! bearer token, the calls the phases make, and a reader for a session's event stream (SSE).

use anyhow::{Context, bail};
use pxs_protocol::api;
use pxs_protocol::node::SessionId;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use std::time::{Duration, Instant};

#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    base: String,
    bearer: String,
}

/// What one request gave: its status and body.
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn json<T: serde::de::DeserializeOwned>(&self) -> anyhow::Result<T> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "unexpected body (status {}): {}",
                self.status,
                String::from_utf8_lossy(&self.body[..self.body.len().min(300)])
            )
        })
    }
}

impl Api {
    /// `base`: `http://127.0.0.1:port`. At most `connections` idle connections are kept.
    pub fn new(base: &str, token: &str, connections: usize) -> anyhow::Result<Api> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(connections)
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(30))
            .build()
            .context("cannot make the HTTP client")?;
        Ok(Api {
            client,
            base: base.trim_end_matches('/').to_owned(),
            bearer: format!("Bearer {token}"),
        })
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
    ) -> anyhow::Result<Reply> {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header(AUTHORIZATION, &self.bearer);
        if let Some(b) = body {
            req = req.header(CONTENT_TYPE, "application/json").body(b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await?.to_vec();
        Ok(Reply { status, body })
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Reply> {
        self.request(reqwest::Method::GET, path, None).await
    }

    pub async fn create_session(&self, title: &str) -> anyhow::Result<Reply> {
        let body = serde_json::json!({ "title_id": title }).to_string();
        self.request(reqwest::Method::POST, "/api/v1/sessions", Some(body))
            .await
    }

    pub async fn delete_session(&self, id: &SessionId) -> anyhow::Result<Reply> {
        self.request(
            reqwest::Method::DELETE,
            &format!("/api/v1/sessions/{id}"),
            None,
        )
        .await
    }

    pub async fn get_session(&self, id: &SessionId) -> anyhow::Result<Reply> {
        self.get(&format!("/api/v1/sessions/{id}")).await
    }

    /// `POST /api/v1/titles` (admin) with `application_id`; 409 (it exists) is fine.
    pub async fn ensure_title(&self, id: &str, application_id: &str) -> anyhow::Result<()> {
        let body = serde_json::json!({
            "id": id, "name": id, "application_id": application_id, "visibility": "private",
        })
        .to_string();
        let r = self
            .request(reqwest::Method::POST, "/api/v1/titles", Some(body))
            .await?;
        if !r.ok() && r.status != 409 {
            bail!(
                "cannot create title {id}: {} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            );
        }
        Ok(())
    }

    pub async fn title(&self, id: &str) -> anyhow::Result<api::Title> {
        let r = self.get(&format!("/api/v1/titles/{id}")).await?;
        if !r.ok() {
            bail!("GET /api/v1/titles/{id}: {}", r.status);
        }
        r.json()
    }

    /// Waits until title `id` counts `nodes` online nodes and at least one free slot.
    pub async fn wait_for_nodes(
        &self,
        id: &str,
        nodes: u32,
        timeout: Duration,
    ) -> anyhow::Result<api::Title> {
        let deadline = Instant::now() + timeout;
        loop {
            let t = self.title(id).await?;
            if t.availability.nodes >= nodes && t.availability.free_slots > 0 {
                return Ok(t);
            }
            if Instant::now() > deadline {
                bail!(
                    "title {id}: {} of {nodes} nodes online, {} free slots after {timeout:?}",
                    t.availability.nodes,
                    t.availability.free_slots
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Follows `GET /api/v1/sessions/{id}/events` until a session view satisfies `until`;
    /// returns it and when it arrived. Fails if the stream ends first (the session became final
    /// without satisfying `until`) or after `timeout`.
    pub async fn wait_session(
        &self,
        id: &SessionId,
        until: impl Fn(&api::Session) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<(api::Session, Instant)> {
        let follow = async {
            let mut resp = self
                .client
                .get(format!("{}/api/v1/sessions/{id}/events", self.base))
                .header(AUTHORIZATION, &self.bearer)
                .timeout(timeout)
                .send()
                .await?;
            if !resp.status().is_success() {
                bail!("event stream of {id}: {}", resp.status());
            }
            let mut buf = String::new();
            let mut last: Option<api::Session> = None;
            while let Some(chunk) = resp.chunk().await? {
                let at = Instant::now();
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find("\n\n") {
                    let block: String = buf.drain(..end + 2).collect();
                    for data in block.lines().filter_map(|l| l.strip_prefix("data:")) {
                        let s: api::Session = serde_json::from_str(data.trim())
                            .with_context(|| format!("event of {id}: {data}"))?;
                        if until(&s) {
                            return Ok((s, at));
                        }
                        last = Some(s);
                    }
                }
            }
            bail!(
                "the event stream of {id} ended in state {:?} ({:?})",
                last.as_ref().map(|s| s.state),
                last.as_ref().and_then(|s| s.end_reason)
            )
        };
        tokio::time::timeout(timeout, follow)
            .await
            .with_context(|| format!("session {id}: no matching event within {timeout:?}"))?
    }
}
