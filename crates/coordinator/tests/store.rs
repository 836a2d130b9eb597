//! The store's aggregated placement reads (one JSON text per query instead of a row per node or
//! session) against what the full rows say, on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used)]

mod common;

use common::{backends, fresh_database};
use pxs_coordinator::model::{Desired, NodeRow, Observed, SessionRow, SessionSettings};
use pxs_coordinator::store::{self, PlacementNode, Store};
use pxs_protocol::api::{SessionState, TitleId};
use pxs_protocol::node::{ApplicationId, GpuInfo, NodeId, SessionId};

fn node(id: &str, apps: &[&str], gpus: u32, max: u32, per_gpu: u32) -> NodeRow {
    NodeRow {
        id: NodeId::parse(id).unwrap(),
        version: "test".into(),
        public_url: format!("ws://127.0.0.1:1/{id}"),
        max_sessions: max,
        max_sessions_per_gpu: per_gpu,
        applications: apps
            .iter()
            .map(|a| ApplicationId::parse(a).unwrap())
            .collect(),
        gpus: (0..gpus)
            .map(|index| GpuInfo {
                index,
                name: format!("GPU {index}"),
                memory_total_mb: Some(8192),
            })
            .collect(),
        online: true,
        admin_drain: false,
        node_drain: false,
        link_owner: None,
        link_since: None,
        last_seen: 1_000,
        offline_since: None,
        acked_seq: 0,
    }
}

fn session(
    n: u32,
    node: Option<&str>,
    state: SessionState,
    slot: (i64, Option<i64>),
) -> SessionRow {
    SessionRow {
        id: SessionId::parse(&format!("ses_{n:04}")).unwrap(),
        title_id: TitleId::parse("demo").unwrap(),
        application_id: ApplicationId::parse("demo").unwrap(),
        node_id: node.map(|n| NodeId::parse(n).unwrap()),
        state,
        desired: Desired::Run,
        observed: Observed::None,
        queue_seq: None,
        created_at: 1_000,
        start_at: None,
        duration: None,
        slot_start: node.map(|_| slot.0),
        slot_end: node.and(slot.1),
        dispatched_at: None,
        stop_sent_at: None,
        ready_at: None,
        ended_at: None,
        end_reason: None,
        stop_reason: None,
        exit_code: None,
        detail: None,
        player_url: None,
        player_key: "key".into(),
        owner: "tester".into(),
        settings: SessionSettings {
            max_players: 4,
            idle_timeout: 0,
            empty_timeout: 0,
        },
        updated_at: 1_000,
    }
}

#[tokio::test]
async fn placement_reads_agree_with_the_rows() {
    for backend in backends() {
        let url = fresh_database(&backend, "store-placement").await;
        let store = Store::connect(&url, std::time::Duration::from_secs(5))
            .await
            .unwrap();
        let mut c = store.pool().acquire().await.unwrap();

        // Nothing yet: both aggregates are empty (PostgreSQL's json_agg of no row is NULL).
        assert!(store::placement_nodes(&mut c).await.unwrap().is_empty());
        assert!(store::held_slots(&mut c).await.unwrap().is_empty());

        let mut offline = node("node-off", &["demo"], 0, 2, 0);
        offline.online = false;
        let mut drained = node("node-drain", &["demo", "other"], 1, 2, 1);
        drained.node_drain = true;
        let nodes = [
            node("node-a", &["demo"], 0, 3, 0),
            node("node-gpu", &["demo", "other"], 2, 10, 2), // 10 sessions, 2 GPUs × 2 → 4
            node("node-none", &[], 0, 1, 0),
            offline,
            drained,
        ];
        for n in &nodes {
            store::upsert_node_hello(&mut c, n).await.unwrap();
        }
        // A hello marks the node online; put back what the rows above say.
        for n in &nodes {
            sqlx::query("UPDATE nodes SET online = $1, node_drain = $2 WHERE id = $3")
                .bind(i64::from(n.online))
                .bind(i64::from(n.node_drain))
                .bind(n.id.as_str())
                .execute(&mut *c)
                .await
                .unwrap();
        }
        store::set_admin_drain(&mut c, &NodeId::parse("node-none").unwrap(), true)
            .await
            .unwrap();

        let mut got = store::placement_nodes(&mut c).await.unwrap();
        got.sort_by(|a, b| a.id.cmp(&b.id));
        let mut want: Vec<PlacementNode> = store::list_nodes(&mut c)
            .await
            .unwrap()
            .into_iter()
            .map(|n| PlacementNode {
                available: n.available(),
                capacity: n.capacity(),
                id: n.id,
                applications: n.applications,
            })
            .collect();
        want.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(got, want, "{backend:?}");
        let by_id = |id: &str| got.iter().find(|n| n.id.as_str() == id).unwrap().clone();
        assert_eq!(by_id("node-gpu").capacity, 4);
        assert!(by_id("node-a").available);
        assert!(!by_id("node-off").available);
        assert!(!by_id("node-drain").available);
        assert!(!by_id("node-none").available);

        let sessions = [
            session(1, Some("node-a"), SessionState::Ready, (10, None)),
            session(
                2,
                Some("node-a"),
                SessionState::Starting,
                (20, Some(9_000_000_000_000)),
            ),
            session(
                3,
                Some("node-gpu"),
                SessionState::Scheduled,
                (5_000, Some(6_000)),
            ),
            session(4, Some("node-gpu"), SessionState::Ended, (10, None)),
            session(5, None, SessionState::Queued, (0, None)),
            session(6, Some("node-a"), SessionState::Failed, (10, Some(20))),
        ];
        for s in &sessions {
            store::insert_session(&mut c, s).await.unwrap();
        }
        let mut held = store::held_slots(&mut c).await.unwrap();
        held.sort_by(|a, b| a.1.cmp(&b.1));
        let want: Vec<store::HeldSlot> = sessions
            .iter()
            .filter(|s| {
                matches!(
                    s.state,
                    SessionState::Scheduled | SessionState::Starting | SessionState::Ready
                )
            })
            .map(|s| {
                (
                    s.node_id.clone().unwrap(),
                    s.id.clone(),
                    s.state,
                    s.slot_start,
                    s.slot_end,
                )
            })
            .collect();
        assert_eq!(held, want, "{backend:?}");
        drop(c);
        store.close().await;
    }
}
