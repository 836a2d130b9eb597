#![allow(clippy::unwrap_used)]
//! A streamer that stops reading while its players flood it (issue 15): it is kept, the players
//! who feed it are paused (TCP slows them down) and their excess ICE candidates dropped, and once
//! it reads again every offer and answer it was sent arrives, in order; the players were never
//! closed. The real server over real sockets; the streamer's socket has a small receive buffer so
//! that the server's queue fills quickly.

mod common;
use common::*;
use futures_util::SinkExt;
use pxs_webrtc_session::backpressure::BacklogLimits;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const ICE_PER_OFFER: usize = 10;

fn candidate(player: usize, n: usize) -> Value {
    // About 1 KiB each, as a candidate with a long foundation would not be, but the volume is the
    // point: the players together send ~2 MiB while the streamer reads nothing.
    json!({"type":"iceCandidate","candidate":{
        "candidate": format!("candidate:{player}-{n} 1 udp 2122260223 10.0.0.1 50000 typ host {}", "x".repeat(1000)),
        "sdpMid":"0","sdpMLineIndex":0}})
}

#[tokio::test]
async fn a_streamer_that_stops_reading_is_kept_and_gets_every_offer_and_answer_once_it_reads() {
    let mut config = Config::from_options(Options {
        send_queue: Some(8),
        rest_api: Some(true),
        ..options()
    })
    .unwrap();
    // Drop ICE candidates early so that this test sees it happen; keep every offer and answer.
    config.limits.backlog = BacklogLimits {
        ice: 64,
        max: 100_000,
        total: 200_000,
    };
    let server = Server::start(config).await.unwrap();
    let a = server.addrs();
    let mut s = tight_streamer(a.streamer, "S").await;

    // The players subscribe; from here on the streamer reads nothing.
    let mut players = Vec::new();
    for _ in 0..PLAYERS {
        let mut p = connect(a.player, "/").await;
        assert_eq!(p.recv().await["type"], "config");
        p.send(json!({"type":"subscribe","streamerId":"S"})).await;
        players.push(p);
    }
    // Each floods at once (within its rate limit: players keep theirs) from its own task, as a
    // paused player's sends block once its socket buffers are full. Once the stall is seen, each
    // sends an offer, a candidate and an answer more.
    let (stalled_tx, stalled_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for (k, mut p) in players.into_iter().enumerate() {
        let mut stalled = stalled_rx.clone();
        tasks.push(tokio::spawn(async move {
            let mut ice = 0;
            for i in 0..OFFERS {
                p.send(
                    json!({"type":"offer","sdp":format!("before-{k}-{i} {}", "v".repeat(60_000))}),
                )
                .await;
                for n in 0..ICE_PER_OFFER {
                    p.send(candidate(k, i * ICE_PER_OFFER + n)).await;
                    ice += 1;
                }
            }
            stalled.wait_for(|s| *s).await.unwrap();
            p.send(json!({"type":"offer","sdp":format!("during-{k}")}))
                .await;
            p.send(candidate(k, 999)).await;
            p.send(json!({"type":"answer","sdp":format!("answer-{k}")}))
                .await;
            (p, ice + 1)
        }));
    }
    // The streamer's queue fills: it is stalled, not dropped, and players are paused.
    let m = wait_until(WAIT, || async {
        let m = metrics(&server).await;
        if m["pxs_signalling_streamers_stalled"] == 1
            && m["pxs_signalling_players_paused_total"] > 0
        {
            Ok(m)
        } else {
            Err(format!("not stalled yet: {m:?}"))
        }
    })
    .await;
    assert_eq!(m["pxs_signalling_slow_players_closed_total"], 0);
    stalled_tx.send(true).unwrap();
    let sig = server.signalling().clone();
    assert!(
        sig.inspect(|r| r.streamer("S").is_some()).await.unwrap(),
        "the stalled streamer is still listed"
    );

    // The streamer reads again: everything it was sent arrives, each player's in order.
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    let mut ice_arrived = 0;
    let mut connected = 0;
    let done = |seen: &HashMap<String, Vec<String>>| {
        (0..PLAYERS).all(|k| {
            seen.get(&format!("Player{k}"))
                .is_some_and(|v| v.last().is_some_and(|l| l == &format!("answer-{k}")))
        })
    };
    while !done(&seen) {
        let v = s.recv().await;
        let pid = v["playerId"].as_str().unwrap_or_default().to_owned();
        match v["type"].as_str().unwrap() {
            "playerConnected" => connected += 1,
            "iceCandidate" => ice_arrived += 1,
            "offer" | "answer" => {
                let sdp = v["sdp"].as_str().unwrap();
                let tag = sdp.split(' ').next().unwrap().to_owned();
                seen.entry(pid).or_default().push(tag);
            }
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert_eq!(connected, PLAYERS);
    for k in 0..PLAYERS {
        let mut expected: Vec<String> = (0..OFFERS).map(|i| format!("before-{k}-{i}")).collect();
        expected.extend([format!("during-{k}"), format!("answer-{k}")]);
        assert_eq!(
            seen[&format!("Player{k}")],
            expected,
            "Player{k}'s offers and answer, in order"
        );
    }
    let mut players = Vec::new();
    let mut ice_sent = 0;
    for t in tasks {
        let (p, ice) = t.await.unwrap();
        players.push(p);
        ice_sent += ice;
    }
    // The held messages are all out and the players read again; no player was closed.
    let m = wait_until(WAIT, || async {
        let m = metrics(&server).await;
        if m["pxs_signalling_streamers_stalled"] == 0 {
            Ok(m)
        } else {
            Err(format!("still stalled: {m:?}"))
        }
    })
    .await;
    assert!(m["pxs_signalling_streamer_stalls_total"] >= 1, "{m:?}");
    assert_eq!(m["pxs_signalling_streamer_held_messages"], 0);
    assert!(m["pxs_signalling_streamer_held_messages_total"] > 0);
    // Every candidate either arrived or was counted as dropped.
    let dropped = m["pxs_signalling_streamer_ice_dropped_total"];
    assert!(dropped > 0, "the ICE limit was passed: {m:?}");
    assert_eq!(ice_arrived + dropped, ice_sent, "{m:?}");
    assert_eq!(m["pxs_signalling_slow_players_closed_total"], 0);
    assert_eq!(m["pxs_signalling_players_closed_streamer_busy_total"], 0);
    assert_eq!(sig.inspect(|r| r.player_count()).await.unwrap(), PLAYERS);

    // After it resumed: a new offer from each player arrives, and the answer path works both
    // ways (the streamer's answer reaches each player).
    for (k, p) in players.iter_mut().enumerate() {
        p.send(json!({"type":"offer","sdp":format!("after-{k}")}))
            .await;
    }
    let mut after = std::collections::BTreeSet::new();
    while after.len() < PLAYERS {
        let v = s.recv_type("offer").await;
        let pid = v["playerId"].as_str().unwrap().to_owned();
        assert_eq!(v["sdp"], format!("after-{}", &pid["Player".len()..]));
        after.insert(pid);
    }
    for k in 0..PLAYERS {
        s.send(json!({"type":"answer","sdp":format!("to-{k}"),"playerId":format!("Player{k}")}))
            .await;
    }
    for (k, p) in players.iter_mut().enumerate() {
        assert_eq!(p.recv_type("answer").await["sdp"], format!("to-{k}"));
    }
    server.shutdown().await.unwrap();
}

/// Pausing is real, and what the router itself tells a stalled streamer is never lost: a player
/// that unsubscribes while the streamer's backlog is past its hard limit is paused, not closed
/// (its `ping` is answered only once the streamer has taken everything), and the streamer is told
/// it left.
#[tokio::test]
async fn a_player_leaving_a_streamer_past_its_backlog_limit_is_paused_and_the_streamer_told() {
    let mut config = Config::from_options(Options {
        send_queue: Some(8),
        rest_api: Some(true),
        ..options()
    })
    .unwrap();
    config.limits.backlog = BacklogLimits {
        ice: 4,
        max: 8,
        total: 100_000,
    };
    let server = Server::start(config).await.unwrap();
    let a = server.addrs();
    let mut s = tight_streamer(a.streamer, "S").await;
    // P subscribes while the streamer still reads: P is not paused.
    let mut p = connect(a.player, "/").await;
    assert_eq!(p.recv().await["type"], "config");
    p.send(json!({"type":"subscribe","streamerId":"S"})).await;
    assert_eq!(s.recv().await["type"], "playerConnected");

    // From here on the streamer reads nothing while others flood it, until its backlog is past
    // the hard limit (the flooders are paused, then closed at it: that is theirs to bear).
    let mut flood = Vec::new();
    for k in 0..PLAYERS {
        let mut f = connect(a.player, "/").await;
        assert_eq!(f.recv().await["type"], "config");
        f.send(json!({"type":"subscribe","streamerId":"S"})).await;
        flood.push(tokio::spawn(async move {
            for i in 0..OFFERS {
                let sdp = format!("flood-{k}-{i} {}", "v".repeat(60_000));
                let offer = json!({"type":"offer","sdp":sdp}).to_string();
                if f.ws.send(Message::Text(offer.into())).await.is_err() {
                    return;
                }
            }
            // Kept open (and unread) until the test ends.
            std::future::pending::<()>().await;
        }));
    }
    wait_until(WAIT, || async {
        let m = metrics(&server).await;
        if m["pxs_signalling_streamer_held_messages"] >= 8 {
            Ok(())
        } else {
            Err(format!("backlog not past its limit yet: {m:?}"))
        }
    })
    .await;

    // P leaves: the router tells the streamer. P is paused for it, not closed.
    p.send(json!({"type":"unsubscribe"})).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    p.send(json!({"type":"ping","time":7})).await;
    // Paused: its ping is not even read while the streamer takes nothing.
    p.silent(Duration::from_secs(1)).await;

    // The streamer reads again: it hears P left.
    let told = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let v = s.recv().await;
            if v["type"] == "playerDisconnected" && v["playerId"] == "Player0" {
                return;
            }
        }
    })
    .await;
    assert!(told.is_ok(), "the streamer was never told Player0 left");
    // And P, read again, gets its answer.
    let v = p.recv().await;
    assert_eq!(
        (v["type"].as_str(), v["time"].as_i64()),
        (Some("pong"), Some(7)),
        "{v}"
    );
    for f in flood {
        f.abort();
    }
    server.shutdown().await.unwrap();
}

/// A streamer that takes no byte for the whole write timeout is closed, and that is not silent:
/// a counter for it, and one for the messages that were held for it.
#[tokio::test]
async fn a_streamer_closed_for_not_reading_is_counted() {
    let mut config = Config::from_options(Options {
        send_queue: Some(8),
        rest_api: Some(true),
        ..options()
    })
    .unwrap();
    // A streamer's writes may take the idle timeout: 3 s.
    config.limits.write_timeout = Duration::from_secs(1);
    config.limits.idle_timeout = Duration::from_secs(3);
    let server = Server::start(config).await.unwrap();
    let a = server.addrs();
    let _s = tight_streamer(a.streamer, "S").await;
    let flooders = flood(a.player, PLAYERS, OFFERS).await;
    let m = wait_until(Duration::from_secs(30), || async {
        let m = metrics(&server).await;
        if m.get("pxs_signalling_streamers_closed_write_timeout_total") == Some(&1) {
            Ok(m)
        } else {
            Err(format!("not closed (or not counted) yet: {m:?}"))
        }
    })
    .await;
    assert!(
        m["pxs_signalling_streamer_held_discarded_total"] > 0,
        "{m:?}"
    );
    assert_eq!(m["pxs_signalling_streamer_held_messages"], 0, "{m:?}");
    let sig = server.signalling().clone();
    assert!(sig.inspect(|r| r.streamer("S").is_none()).await.unwrap());
    for f in flooders {
        f.abort();
    }
    server.shutdown().await.unwrap();
}

/// A streamer that takes its backlog slowly, more slowly than our pings can come back through
/// it, is alive: it is not closed as silent ("no answer to pings") while it takes bytes.
#[tokio::test]
async fn a_streamer_draining_slowly_is_not_closed_as_silent() {
    let mut config = Config::from_options(Options {
        send_queue: Some(8),
        rest_api: Some(true),
        ..options()
    })
    .unwrap();
    // A write to it may wait up to 6 s, as may the answer to a ping.
    config.limits.write_timeout = Duration::from_secs(1);
    config.limits.idle_timeout = Duration::from_secs(6);
    let server = Server::start(config).await.unwrap();
    let a = server.addrs();
    let mut s = tight_streamer(a.streamer, "S").await;
    // About 10 MB for it, more than the socket buffers hold: its queue fills and messages are
    // held. It reads some 600 KB/s for 9 s: a write to it waits a few seconds for room, but each
    // ping waits behind the socket buffer's ~4 MB, longer than 6 s; then it reads the rest.
    let flooders = flood(a.player, PLAYERS, OFFERS).await;
    let mut got = 0;
    let slow = tokio::time::Instant::now() + Duration::from_secs(9);
    while got < PLAYERS * OFFERS {
        let v = s.recv().await;
        if v["type"] == "offer" {
            got += 1;
            if tokio::time::Instant::now() < slow {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let sig = server.signalling().clone();
    assert!(sig.inspect(|r| r.streamer("S").is_some()).await.unwrap());
    for f in flooders {
        f.abort();
    }
    server.shutdown().await.unwrap();
}

/// A paused player is not closed for what piled up while it was not read: a browser that sent
/// within its rate limit meanwhile (here 600 messages, past the burst of 400) is read at once
/// when its streamer has caught up.
#[tokio::test]
async fn a_paused_players_piled_up_messages_do_not_trip_its_rate_limit() {
    let mut config = Config::from_options(Options {
        send_queue: Some(8),
        rest_api: Some(true),
        ..options()
    })
    .unwrap();
    config.limits.backlog = BacklogLimits {
        ice: 64,
        max: 100_000,
        total: 200_000,
    };
    let server = Server::start(config).await.unwrap();
    let a = server.addrs();
    let mut s = tight_streamer(a.streamer, "S").await;
    let mut p = connect(a.player, "/").await;
    assert_eq!(p.recv().await["type"], "config");
    p.send(json!({"type":"subscribe","streamerId":"S"})).await;
    assert_eq!(s.recv().await["type"], "playerConnected");
    let flooders = flood(a.player, PLAYERS, OFFERS).await;
    wait_until(WAIT, || async {
        let m = metrics(&server).await;
        if m["pxs_signalling_streamers_stalled"] == 1
            && m["pxs_signalling_streamer_held_messages"] > 0
        {
            Ok(())
        } else {
            Err(format!("not stalled yet: {m:?}"))
        }
    })
    .await;
    // P's offer is held: P is paused. Then it sends 600 messages, one every 10 ms (its rate is
    // 100/s), and a ping: none is read while paused.
    p.send(json!({"type":"offer","sdp":"p"})).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..600 {
        p.send(json!({"type":"activity"})).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    p.send(json!({"type":"ping","time":600})).await;
    p.silent(Duration::from_millis(200)).await;
    // The streamer reads everything; P is read again, all 600 at once.
    let mut got = 0;
    while got < PLAYERS * OFFERS + 1 {
        if s.recv().await["type"] == "offer" {
            got += 1;
        }
    }
    // Its ping after them is answered: it was read through, not closed (1008) at the 401st.
    let v = p.recv().await;
    assert_eq!(
        (v["type"].as_str(), v["time"].as_i64()),
        (Some("pong"), Some(600)),
        "{v}"
    );
    for f in flooders {
        f.abort();
    }
    server.shutdown().await.unwrap();
}
