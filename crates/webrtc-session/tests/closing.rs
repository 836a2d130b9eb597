#![allow(clippy::unwrap_used)]
//! A close the server decides reaches the peer, or is reported: a streamer closed as gone while
//! its socket is full (its backlog reached the total limit) gets the close frame with its code
//! and reason as soon as it takes bytes again, within the write timeout; one that takes nothing
//! is dropped at the write timeout (not its longer idle timeout), with a counter. The real server
//! over real sockets; the streamer's socket has a small receive buffer (see `tight_streamer`).

mod common;
use common::*;
use futures_util::StreamExt;
use pxs_webrtc_session::backpressure::BacklogLimits;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// A server whose stalled streamer is closed once 20 messages are held for it, with the given
/// write timeout and a long idle timeout (a streamer's writes may otherwise take that long).
async fn server(write_timeout: Duration) -> Server {
    let mut config = Config::from_options(Options {
        send_queue: Some(8),
        rest_api: Some(true),
        ..options()
    })
    .unwrap();
    config.limits.backlog = BacklogLimits {
        ice: 64,
        max: 100_000,
        total: 20,
    };
    config.limits.write_timeout = write_timeout;
    config.limits.idle_timeout = Duration::from_secs(60);
    Server::start(config).await.unwrap()
}

/// Waits until the stalled streamer has been closed as gone.
async fn closed_as_gone(server: &Server) {
    wait_until(Duration::from_secs(30), || async {
        let m = metrics(server).await;
        if m["pxs_signalling_streamers_closed_backlog_full_total"] == 1 {
            Ok(())
        } else {
            Err(format!("not closed as gone yet: {m:?}"))
        }
    })
    .await;
}

#[tokio::test]
async fn a_stalled_streamer_closed_as_gone_gets_the_close_frame_once_it_reads() {
    let server = server(Duration::from_secs(5)).await;
    let a = server.addrs();
    let mut s = tight_streamer(a.streamer, "S").await;
    let flooders = flood(a.player, PLAYERS, OFFERS).await;
    closed_as_gone(&server).await;
    // It reads again, at once: what was already on its way, then the close with its reason (not
    // the messages that were still queued for it: they were discarded).
    let mut offers = 0;
    let frame = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match s.ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(Message::Text(_))) => offers += 1,
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("an error instead of the close frame: {e}"),
                None => panic!("the stream ended without a close frame"),
            }
        }
    })
    .await
    .expect("the close frame within the write timeout");
    let frame = frame.expect("a close frame with a status");
    assert_eq!(u16::from(frame.code), 1001);
    assert_eq!(frame.reason, "not reading: too many messages held for it");
    assert!(
        offers < PLAYERS * OFFERS,
        "{offers} offers before the close"
    );
    let m = metrics(&server).await;
    assert_eq!(m["pxs_signalling_closes_undelivered_total"], 0, "{m:?}");
    assert!(
        m["pxs_signalling_streamer_held_discarded_total"] >= 20,
        "{m:?}"
    );
    for f in flooders {
        f.abort();
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_stalled_streamer_that_takes_nothing_is_dropped_at_the_write_timeout_and_counted() {
    let server = server(Duration::from_secs(1)).await;
    let a = server.addrs();
    let mut s = tight_streamer(a.streamer, "S").await;
    let flooders = flood(a.player, PLAYERS, OFFERS).await;
    closed_as_gone(&server).await;
    let decided = Instant::now();
    // Its close cannot be written: after the write timeout (1 s), not its idle timeout (60 s),
    // the connection is dropped, and that is counted.
    let m = wait_until(Duration::from_secs(10), || async {
        let m = metrics(&server).await;
        if m.get("pxs_signalling_closes_undelivered_total") == Some(&1) {
            Ok(m)
        } else {
            Err(format!("the undelivered close not counted yet: {m:?}"))
        }
    })
    .await;
    assert!(decided.elapsed() < Duration::from_secs(10), "{m:?}");
    assert_eq!(
        m["pxs_signalling_streamers_closed_write_timeout_total"], 0,
        "{m:?}"
    );
    // The socket is gone: reading what was on its way ends without a close frame.
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match s.ws.next().await {
                Some(Ok(Message::Close(frame))) => return Some(frame),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await
    .expect("the connection ends");
    assert_eq!(end, None, "a close frame arrived after all");
    for f in flooders {
        f.abort();
    }
    server.shutdown().await.unwrap();
}
