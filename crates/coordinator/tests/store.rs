//! The store's aggregated placement reads (one JSON text per query instead of a row per node or
//! session) against what the full rows say, on SQLite and PostgreSQL; and the queries on live
//! sessions, which must not read the ended ones that pile up; and node events applied side by
//! side.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Backend, backends, fresh_database, postgres_only};
use pxs_coordinator::auth::Owner;
use pxs_coordinator::model::{Desired, NodeRow, Observed, SessionRow, SessionSettings};
use pxs_coordinator::store::{self, PlacementNode, Store};
use pxs_protocol::api::{SessionState, TitleId};
use pxs_protocol::node::{ApplicationId, GpuInfo, NodeId, SessionId};

fn node(id: &str, apps: &[&str], gpus: u32, max: u32, per_gpu: u32) -> NodeRow {
    NodeRow {
        id: NodeId::parse(id).unwrap(),
        version: "test".into(),
        public_url: format!("ws://127.0.0.1:1/{id}"),
        upstream_url: None,
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
        drain_deadline: None,
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
        owner: Owner::Token("tester".into()),
        ended_by: None,
        settings: SessionSettings {
            max_players: 4,
            idle_timeout: 0,
            empty_timeout: 0,
        },
        updated_at: 1_000,
    }
}

/// A store on a fresh database of `backend`.
async fn open_store(backend: &Backend, name: &str) -> Store {
    let url = fresh_database(backend, name).await;
    Store::connect(&url, std::time::Duration::from_secs(5))
        .await
        .unwrap()
}

#[tokio::test]
async fn placement_reads_agree_with_the_rows() {
    for backend in backends() {
        let store = open_store(&backend, "store-placement").await;
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
        store::set_admin_drain(&mut c, &NodeId::parse("node-none").unwrap(), Some(None))
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

/// Every statement on live sessions seeks by state (or through the index of queued sessions) on
/// SQLite, which has no statistics to choose by: ended sessions are never read. The plan is what
/// SQLite will run, so this is the property itself, not a proxy for a timing.
#[tokio::test]
async fn live_session_queries_seek_past_the_history() {
    let store = open_store(&Backend::Sqlite, "store-plans").await;
    let mut c = store.pool().acquire().await.unwrap();
    for (name, sql) in store::sql::LIVE_SESSION_QUERIES {
        let plan: Vec<String> =
            sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                .fetch_all(&mut *c)
                .await
                .unwrap()
                .iter()
                .map(|r| sqlx::Row::try_get::<String, _>(r, "detail").unwrap())
                .collect();
        let on_sessions: Vec<&String> = plan
            .iter()
            // `s` and `q` (the queue position's subquery) are sessions too.
            .filter(|l| {
                ["SCAN s", "SEARCH s", "SCAN q", "SEARCH q"]
                    .iter()
                    .any(|p| l.starts_with(p))
            })
            .collect();
        assert!(
            !on_sessions.is_empty(),
            "{name}: no step on sessions in {plan:?}"
        );
        for step in on_sessions {
            let seeks_by_state = step.starts_with("SEARCH") && step.contains("state=?");
            let queued_only = step.contains("INDEX sessions_queued ");
            assert!(
                seeks_by_state || queued_only,
                "{name} reads ended sessions too: {step} (plan {plan:?})"
            );
        }
    }
    drop(c);
    store.close().await;
}

/// The queue and the live counts are right with a history of ended sessions around them, on
/// both databases (the queue's index holds queued sessions only).
#[tokio::test]
async fn live_counts_ignore_the_history() {
    for backend in backends() {
        let store = open_store(&backend, "store-history").await;
        let mut c = store.pool().acquire().await.unwrap();
        let title = TitleId::parse("demo").unwrap();
        assert_eq!(store::next_queue_seq(&mut c).await.unwrap(), 1);
        for n in 0..200 {
            let mut s = session(n, Some("node-a"), SessionState::Ended, (10, Some(20)));
            // An ended session never keeps its place in a queue.
            s.queue_seq = None;
            store::insert_session(&mut c, &s).await.unwrap();
        }
        let mut ready = session(200, Some("node-a"), SessionState::Ready, (10, None));
        ready.owner = Owner::Token("other".into());
        store::insert_session(&mut c, &ready).await.unwrap();
        for (n, seq) in [(201, 7), (202, 9)] {
            let mut q = session(n, None, SessionState::Queued, (0, None));
            q.queue_seq = Some(seq);
            store::insert_session(&mut c, &q).await.unwrap();
        }
        assert_eq!(
            store::queue_length(&mut c, &title).await.unwrap(),
            2,
            "{backend:?}"
        );
        let second = SessionId::parse("ses_0202").unwrap();
        let (_, position) = store::get_session_with_position(&mut c, &second)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(position, Some(2), "{backend:?}");
        assert_eq!(store::next_queue_seq(&mut c).await.unwrap(), 10);
        let queue: Vec<String> = store::queue_of(&mut c, &title)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.id.as_str().to_owned())
            .collect();
        assert_eq!(queue, ["ses_0201", "ses_0202"]);
        assert_eq!(
            store::queued_titles(&mut c).await.unwrap(),
            std::slice::from_ref(&title)
        );
        assert_eq!(
            store::count_live_of_owner(&mut c, &Owner::Token("tester".into()))
                .await
                .unwrap(),
            2
        );
        assert_eq!(
            store::count_live_of_owner(&mut c, &Owner::Token("other".into()))
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            store::count_sessions_of_title(&mut c, &title)
                .await
                .unwrap(),
            3
        );
        drop(c);
        store.close().await;
    }
}

/// The events of many nodes at once, each node's batch sent twice at the same time (an old link
/// and its replacement): every event is applied exactly once and nothing waits for ever. On
/// PostgreSQL, events hold the placement lock shared and lock their node's row.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_events_side_by_side_are_each_applied_once() {
    use pxs_protocol::node::{EndReason, Ended, SequencedEvent, SessionEvent, SessionEventKind};
    const NODES: u32 = 6;
    const PER_NODE: u32 = 5;
    for backend in backends() {
        let db = fresh_database(&backend, "store-events").await;
        let mut coord = common::Coord::start(&db, "").await;
        let engine = coord.engine().clone();
        let mut batches = Vec::new();
        {
            let mut c = engine.store.pool().acquire().await.unwrap();
            for n in 0..NODES {
                let name = format!("node-{n}");
                store::upsert_node_hello(&mut c, &node(&name, &["demo"], 0, 10, 0))
                    .await
                    .unwrap();
                let mut evs = Vec::new();
                for k in 0..PER_NODE {
                    let s = session(n * 100 + k, Some(&name), SessionState::Starting, (10, None));
                    store::insert_session(&mut c, &s).await.unwrap();
                    let ev = |seq, kind| SequencedEvent {
                        seq,
                        event: SessionEvent {
                            session_id: s.id.clone(),
                            at: 1_000,
                            kind,
                        },
                    };
                    evs.push(ev(
                        u64::from(k) + 1,
                        SessionEventKind::Ready {
                            player_url: format!("ws://{name}/sessions/{}/ws", s.id),
                        },
                    ));
                    evs.push(ev(
                        u64::from(PER_NODE + k) + 1,
                        SessionEventKind::Ended(Ended {
                            reason: EndReason::Exited,
                            failed: false,
                            exit_code: Some(0),
                            signal: None,
                            detail: None,
                        }),
                    ));
                }
                evs.sort_by_key(|e| e.seq);
                batches.push((NodeId::parse(&name).unwrap(), evs));
            }
        }
        let mut tasks = Vec::new();
        for (node, evs) in &batches {
            for _ in 0..2 {
                let (engine, node, evs) = (engine.clone(), node.clone(), evs.clone());
                tasks.push(tokio::spawn(async move {
                    engine.node_events(&node, &evs).await
                }));
            }
        }
        for t in tasks {
            let acked = tokio::time::timeout(std::time::Duration::from_secs(20), t)
                .await
                .expect("no event batch waits for ever")
                .unwrap()
                .unwrap_or_else(|e| panic!("{backend:?}: {e:?}"));
            assert_eq!(acked.acked, u64::from(2 * PER_NODE), "{backend:?}");
            assert_eq!(acked.refused, None, "{backend:?}");
        }
        let mut c = engine.store.pool().acquire().await.unwrap();
        for (node, _) in &batches {
            assert_eq!(
                store::acked_seq(&mut c, node).await.unwrap(),
                i64::from(2 * PER_NODE)
            );
        }
        for n in 0..NODES {
            for k in 0..PER_NODE {
                let id = SessionId::parse(&format!("ses_{:04}", n * 100 + k)).unwrap();
                let s = store::get_session(&mut c, &id).await.unwrap().unwrap();
                assert_eq!(s.state, SessionState::Ended, "{backend:?} {id}");
                assert_eq!(s.end_reason.map(|r| r.as_str()), Some("exited"));
                assert!(s.ready_at.is_some(), "{backend:?} {id}: ready before ended");
            }
        }
        // Each session became ready once: twice would count twice.
        let mut text = String::new();
        engine.metrics.render_histograms(&mut text);
        let count = text
            .lines()
            .find_map(|l| l.strip_prefix("pxs_session_start_seconds_count "))
            .unwrap_or_else(|| panic!("no start count in {text}"));
        assert_eq!(count.trim(), (NODES * PER_NODE).to_string(), "{backend:?}");
        drop(c);
        coord.stop().await;
    }
}

/// PostgreSQL: a placement takes the lock of the first of its candidate nodes that no other
/// placement holds, and only that one (two placements that each held several would wait on
/// each other for nothing); with every candidate held, it waits for the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placement_locks_exactly_one_node() {
    let Some(pg) = postgres_only("SQLite has one writer") else {
        return;
    };
    let store = open_store(&pg, "node-locks").await;
    let ids: Vec<NodeId> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| NodeId::parse(n).unwrap())
        .collect();
    const HELD: &str = "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' \
        AND pid = pg_backend_pid() AND granted AND objsubid = 2";
    let mut a = store.begin_admission().await.unwrap();
    assert_eq!(
        store::lock_placement_node(&mut a, &ids).await.unwrap(),
        ids[0]
    );
    let held: i64 = sqlx::query_scalar(HELD).fetch_one(&mut *a).await.unwrap();
    assert_eq!(held, 1, "one node's lock, not every candidate's");
    // n1 is held: the next placement takes n2, and only n2.
    let mut b = store.begin_admission().await.unwrap();
    assert_eq!(
        store::lock_placement_node(&mut b, &ids).await.unwrap(),
        ids[1]
    );
    let held: i64 = sqlx::query_scalar(HELD).fetch_one(&mut *b).await.unwrap();
    assert_eq!(held, 1);
    // All three held: a placement waits for n1, and gets it once n1's holder ends.
    let mut c = store.begin_admission().await.unwrap();
    assert_eq!(
        store::lock_placement_node(&mut c, &ids[2..]).await.unwrap(),
        ids[2]
    );
    let waiter = {
        let store = store.clone();
        let ids = ids.clone();
        tokio::spawn(async move {
            let mut d = store.begin_admission().await.unwrap();
            store::lock_placement_node(&mut d, &ids).await.unwrap()
        })
    };
    // It waits: its lock request is in the lock table, not granted.
    let mut seen = false;
    for _ in 0..500 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
        )
        .fetch_one(store.pool())
        .await
        .unwrap();
        if waiting == 1 {
            seen = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(seen, "no placement waits for a node's lock");
    assert!(!waiter.is_finished(), "waits while every candidate is held");
    a.rollback().await;
    assert_eq!(waiter.await.unwrap(), ids[0]);
    b.rollback().await;
    c.rollback().await;
}
