//! Session signing keys are not in the database (issue 9, case 8): a copy of the database file
//! must not let anyone mint a player token for a live session. The key the node gets is derived
//! from the coordinator's secret, join URLs are signed with it, and it is the same after a restart.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use pxs_protocol::api::SessionState;
use pxs_protocol::node::CoordinatorToNode;
use pxs_protocol::player_token;
use serde_json::json;
use std::time::Duration;

/// The key `start_session` carried for each session the fake node was told to start.
fn keys_sent(node: &FakeNode) -> Vec<(pxs_protocol::node::SessionId, String)> {
    node.commands
        .lock()
        .unwrap()
        .iter()
        .filter_map(|c| match c {
            CoordinatorToNode::StartSession {
                session_id,
                options,
                ..
            } => Some((session_id.clone(), options.player_token.clone().unwrap().0)),
            _ => None,
        })
        .collect()
}

fn join_token(url: &str) -> String {
    url.split("token=").nth(1).unwrap().to_owned()
}

async fn story(backend: Backend) {
    let db = fresh_database(&backend, "session-keys").await;
    let coord = Coord::start(&db, FAST_TIMING).await;
    coord.title("demo", "demo", json!({})).await;
    let (node, beat) = online_fake_node(&coord, "n1", "demo", 2).await;
    let a = coord.create(json!({"title_id": "demo"})).await;
    let b = coord.create(json!({"title_id": "demo"})).await;
    let a_ready = coord
        .wait_state(&a.id, SessionState::Ready, Duration::from_secs(10))
        .await;
    coord
        .wait_state(&b.id, SessionState::Ready, Duration::from_secs(10))
        .await;
    let sent = keys_sent(&node);
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_ne!(sent[0].1, sent[1].1, "each session has a key of its own");
    let key_of = |id| sent.iter().find(|(s, _)| s == id).unwrap().1.clone();
    let now = u64::try_from(pxs_coordinator::Clock::now_ms(
        &pxs_coordinator::SystemClock,
    ))
    .unwrap();
    // The join URL is signed with the key the node has.
    let token = join_token(a_ready.join_url.as_deref().unwrap());
    player_token::verify(key_of(&a.id).as_bytes(), &token, &a.id, now).unwrap();

    // No key in the database: not in the sessions' rows, nowhere in the file's bytes.
    {
        let mut c = coord.engine().store.pool().acquire().await.unwrap();
        let stored: Vec<String> = sqlx::query_scalar("SELECT player_key FROM sessions")
            .fetch_all(&mut *c)
            .await
            .unwrap();
        assert!(stored.iter().all(String::is_empty), "{stored:?}");
    }
    if let Backend::Sqlite = backend {
        let path = db.trim_start_matches("sqlite://");
        for file in [path.to_owned(), format!("{path}-wal")] {
            let bytes = std::fs::read(&file).unwrap_or_default();
            for (_, key) in &sent {
                assert!(
                    !bytes.windows(key.len()).any(|w| w == key.as_bytes()),
                    "a session key is in {file}"
                );
            }
        }
        let secret = format!("{path}.session-secret");
        assert!(std::fs::metadata(&secret).is_ok(), "{secret} kept");
    }

    // A restart derives the same keys: join URLs still match what the node holds.
    beat.abort();
    let coord = coord.restart().await;
    let b_again = coord.session(&b.id).await;
    let token = join_token(b_again.join_url.as_deref().unwrap());
    player_token::verify(key_of(&b.id).as_bytes(), &token, &b.id, now).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_keys_are_derived_never_stored() {
    for backend in backends() {
        story(backend).await;
    }
}

#[tokio::test]
async fn postgres_without_a_session_secret_is_refused_with_the_key_named() {
    let opts = pxs_coordinator::Options {
        database_url: Some(pxs_protocol::secret::Secret(
            "postgres://pxs@127.0.0.1:1/none".into(),
        )),
        ..Default::default()
    };
    let config = pxs_coordinator::Config::from_toml("", &opts).unwrap();
    let e = pxs_coordinator::keys::SessionKeys::load(&config).unwrap_err();
    assert!(format!("{e:#}").contains("session_secret"), "{e:#}");
    let short =
        pxs_coordinator::Config::from_toml("session_secret = \"short\"", &opts).unwrap_err();
    assert!(format!("{short:#}").contains("session_secret"), "{short:#}");
}
