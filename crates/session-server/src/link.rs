//! The node link's I/O: dial the coordinator, keep the connection up with backoff, move frames.
//! What to send and what a message means is decided elsewhere (the server loop and the
//! supervisor); this task only reports `Connected` (with a sender for this connection),
//! each parsed message, and `Disconnected`.

use crate::config::Secret;
use futures_util::{SinkExt, StreamExt};
use pxs_protocol::node::{CoordinatorToNode, NodeToCoordinator};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tracing::{debug, info, warn};

#[derive(Debug)]
pub enum LinkEvent {
    /// A new connection: messages for it go to this sender (dropped with the connection).
    Connected(mpsc::UnboundedSender<NodeToCoordinator>),
    Message(CoordinatorToNode),
    Disconnected(String),
}

const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A connection that lasted this long resets the backoff.
const STABLE: Duration = Duration::from_secs(10);

/// Runs until `stop` turns true.
pub async fn run(
    url: String,
    token: Secret,
    keepalive: Duration,
    events: mpsc::UnboundedSender<LinkEvent>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = MIN_BACKOFF;
    let mut attempt: u32 = 0;
    loop {
        if *stop.borrow() {
            return;
        }
        let started = Instant::now();
        let why = tokio::select! {
            down = connection(&url, &token, keepalive, &events) => match down {
                Down::Failed(why) => why,
                // The server let go of the link: it is shutting down, nothing to reconnect for.
                Down::NodeDone => return,
            },
            _ = stop.wait_for(|s| *s) => return,
        };
        if *stop.borrow() {
            return;
        }
        if events.send(LinkEvent::Disconnected(why.clone())).is_err() {
            return;
        }
        if started.elapsed() >= STABLE {
            backoff = MIN_BACKOFF;
        }
        attempt = attempt.wrapping_add(1);
        // Spread reconnecting nodes apart: up to a quarter of the backoff, varied per attempt.
        let jitter =
            backoff.mul_f64(f64::from((attempt.wrapping_mul(2_654_435_761)) % 1000) / 4000.0);
        let wait = backoff + jitter;
        warn!(%why, ?wait, "node link down; reconnecting");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// How a connection ended.
enum Down {
    /// It failed, for this reason; the link reconnects.
    Failed(String),
    /// The server dropped its end (its sender or its event receiver): it is going away.
    NodeDone,
}

impl From<String> for Down {
    fn from(why: String) -> Down {
        Down::Failed(why)
    }
}

impl From<&str> for Down {
    fn from(why: &str) -> Down {
        Down::Failed(why.to_owned())
    }
}

/// One connection, until it fails or the server lets go of it.
async fn connection(
    url: &str,
    token: &Secret,
    keepalive: Duration,
    events: &mpsc::UnboundedSender<LinkEvent>,
) -> Down {
    let mut request = match url.into_client_request() {
        Ok(r) => r,
        Err(e) => return format!("bad coordinator URL: {e}").into(),
    };
    match format!("Bearer {}", token.0).parse() {
        Ok(v) => {
            request.headers_mut().insert("authorization", v);
        }
        Err(_) => return "the node token is not a valid header value".into(),
    }
    // Small frames, each worth sending at once: no Nagle delay.
    let connect = tokio_tungstenite::connect_async_with_config(request, None, true);
    let mut ws = match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => return format!("cannot connect: {e}").into(),
        Err(_) => return "connect timed out".into(),
    };
    info!("node link connected");
    let (tx, mut outgoing) = mpsc::unbounded_channel();
    if events.send(LinkEvent::Connected(tx)).is_err() {
        return Down::NodeDone;
    }
    let mut last_heard = Instant::now();
    let mut tick = tokio::time::interval(keepalive);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = outgoing.recv() => {
                let Some(msg) = msg else { return Down::NodeDone };
                let text = msg.to_json();
                if let Err(e) = ws.send(Message::text(text)).await {
                    return format!("write failed: {e}").into();
                }
            }
            incoming = ws.next() => {
                last_heard = Instant::now();
                match incoming {
                    Some(Ok(Message::Text(text))) => match CoordinatorToNode::from_json(&text) {
                        Ok(m) => {
                            if events.send(LinkEvent::Message(m)).is_err() {
                                return Down::NodeDone;
                            }
                        }
                        Err(e) => warn!(%e, "unreadable message from the coordinator ignored"),
                    },
                    Some(Ok(Message::Close(frame))) => {
                        return format!("closed by the coordinator: {frame:?}").into();
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return format!("read failed: {e}").into(),
                    None => return "connection closed".into(),
                }
            }
            _ = tick.tick() => {
                if last_heard.elapsed() > keepalive * 3 {
                    return format!("nothing heard from the coordinator for {:?}", last_heard.elapsed()).into();
                }
                if let Err(e) = ws.send(Message::Ping(Vec::new().into())).await {
                    return format!("write failed: {e}").into();
                }
                debug!("link keepalive");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A coordinator stand-in that accepts links and holds each open, silently.
    async fn silent_coordinator() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await {
                        while let Some(Ok(_)) = ws.next().await {}
                    }
                });
            }
        });
        format!("ws://{addr}/api/v1/nodes/link")
    }

    /// The link task dialling `url`: its task, what it reports, and its stop switch.
    fn start_link(
        url: String,
    ) -> (
        tokio::task::JoinHandle<()>,
        mpsc::UnboundedReceiver<LinkEvent>,
        watch::Sender<bool>,
    ) {
        let (events, events_rx) = mpsc::unbounded_channel();
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(run(
            url,
            Secret("t".into()),
            Duration::from_secs(5),
            events,
            stop,
        ));
        (task, events_rx, stop_tx)
    }

    #[tokio::test]
    async fn the_link_ends_without_reconnecting_when_the_server_lets_go_of_it() {
        let (task, mut events_rx, _stop_tx) = start_link(silent_coordinator().await);
        let Some(LinkEvent::Connected(tx)) = events_rx.recv().await else {
            panic!("expected a connection");
        };
        // What the server does as it shuts down: its sender goes with it.
        drop(tx);
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("the link task ends")
            .unwrap();
        // No "link down" for a link that the node itself let go of.
        assert!(events_rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_dropped_connection_is_reported_and_redialled() {
        // A coordinator that closes every link at once.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/api/v1/nodes/link", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                if let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await {
                    let _ = ws.close(None).await;
                }
            }
        });
        let (task, mut events_rx, stop_tx) = start_link(url);
        let mut connected = 0;
        let mut down = 0;
        while connected < 2 {
            match tokio::time::timeout(Duration::from_secs(5), events_rx.recv()).await {
                Ok(Some(LinkEvent::Connected(_))) => connected += 1,
                Ok(Some(LinkEvent::Disconnected(_))) => down += 1,
                other => panic!("unexpected: {other:?}"),
            }
        }
        assert!(down >= 1, "the first connection's end was reported");
        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("stop ends the link task")
            .unwrap();
    }
}
