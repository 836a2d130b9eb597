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
            why = connection(&url, &token, keepalive, &events) => why,
            _ = stop.wait_for(|s| *s) => return,
        };
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

/// One connection, until it fails; returns why.
async fn connection(
    url: &str,
    token: &Secret,
    keepalive: Duration,
    events: &mpsc::UnboundedSender<LinkEvent>,
) -> String {
    let mut request = match url.into_client_request() {
        Ok(r) => r,
        Err(e) => return format!("bad coordinator URL: {e}"),
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
        Ok(Err(e)) => return format!("cannot connect: {e}"),
        Err(_) => return "connect timed out".into(),
    };
    info!("node link connected");
    let (tx, mut outgoing) = mpsc::unbounded_channel();
    if events.send(LinkEvent::Connected(tx)).is_err() {
        return "shutting down".into();
    }
    let mut last_heard = Instant::now();
    let mut tick = tokio::time::interval(keepalive);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = outgoing.recv() => {
                let Some(msg) = msg else { return "closed by the node".into() };
                let text = msg.to_json();
                if let Err(e) = ws.send(Message::text(text)).await {
                    return format!("write failed: {e}");
                }
            }
            incoming = ws.next() => {
                last_heard = Instant::now();
                match incoming {
                    Some(Ok(Message::Text(text))) => match CoordinatorToNode::from_json(&text) {
                        Ok(m) => {
                            if events.send(LinkEvent::Message(m)).is_err() {
                                return "shutting down".into();
                            }
                        }
                        Err(e) => warn!(%e, "unreadable message from the coordinator ignored"),
                    },
                    Some(Ok(Message::Close(frame))) => {
                        return format!("closed by the coordinator: {frame:?}");
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return format!("read failed: {e}"),
                    None => return "connection closed".into(),
                }
            }
            _ = tick.tick() => {
                if last_heard.elapsed() > keepalive * 3 {
                    return format!("nothing heard from the coordinator for {:?}", last_heard.elapsed());
                }
                if let Err(e) = ws.send(Message::Ping(Vec::new().into())).await {
                    return format!("write failed: {e}");
                }
                debug!("link keepalive");
            }
        }
    }
}
