//! The node hub: `GET /api/v1/nodes/link`, the other end of every session server's node link
//! (`pxs_protocol::node`). One task reads a link in order (hello, then events and heartbeats)
//! and hands each message to the engine; one task writes what the engine sends.

use crate::engine::{Engine, LinkCloser};
use crate::error::{ApiError, Kind};
use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use futures_util::{FutureExt, SinkExt, StreamExt};
use pxs_protocol::node::{CoordinatorToNode, NodeId, NodeToCoordinator, SequencedEvent};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument, debug, info_span, warn};

/// Largest message a node may send (a hello listing many applications and sessions).
const MAX_MESSAGE: usize = 1024 * 1024;
/// A node must say hello this soon after connecting.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn link(
    State(engine): State<Arc<Engine>>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::bearer);
    let valid = match token {
        Some(t) => engine.node_token(t).await,
        None => Ok(None),
    };
    let token = match valid {
        Ok(Some(t)) => t,
        Ok(None) => {
            warn!("node link refused: missing or unknown node token");
            return ApiError::new(Kind::Unauthorized, "a valid node token is required")
                .into_response();
        }
        Err(e) => return e.into_response(),
    };
    let Ok(ws) = ws else {
        return ApiError::bad_request("the node link is a WebSocket: send an upgrade request")
            .into_response();
    };
    if engine.link_count() >= engine.config.max_node_links {
        return ApiError::new(
            Kind::Unavailable,
            "too many node links; try another coordinator",
        )
        .into_response();
    }
    // A node link carries small messages: a 4 KiB read buffer instead of the default 128 KiB
    // keeps 10,000 idle links at ~19 KiB each instead of ~142 KiB (pxs-bench coordinator).
    ws.read_buffer_size(4096)
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| run(engine, socket, token))
}

/// `token`: the id of the node token the link came in with, and the node it is bound to.
async fn run(engine: Arc<Engine>, socket: WebSocket, token: (String, Option<NodeId>)) {
    let (token_id, bound) = token;
    let (mut sink, mut stream) = socket.split();
    // The first message is the hello (control frames before it are fine).
    let deadline = tokio::time::Instant::now() + HELLO_TIMEOUT;
    let hello = loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => match NodeToCoordinator::from_json(&t) {
                Ok(NodeToCoordinator::Hello(h)) => break h,
                Ok(_) => return close(&mut sink, 1008, "hello first").await,
                Err(e) => {
                    warn!(error = %e, "node link: invalid hello");
                    return close(&mut sink, 1008, "invalid hello").await;
                }
            },
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => return,
            Ok(Some(Ok(Message::Binary(_)))) => {
                return close(&mut sink, 1008, "text frames only").await;
            }
            Err(_) => return close(&mut sink, 1008, "hello expected").await,
        }
    };
    let node = hello.node.clone();
    if let Some(bound) = bound
        && bound != node
    {
        warn!(node = %node, token = %token_id, bound = %bound,
              "node link refused: its token is bound to another node");
        return close(
            &mut sink,
            1008,
            "this node token is bound to another node name",
        )
        .await;
    }
    let span = info_span!("node_link", node = %node);
    async move {
        let (out_tx, mut out_rx) = mpsc::channel::<CoordinatorToNode>(1024);
        let closer = Arc::new(LinkCloser::default());
        let (link_id, since, acked) = match engine
            .node_hello(&hello, out_tx.clone(), closer.clone(), token_id)
            .await
        {
            Ok(v) => v,
            Err(e) => {
                warn!(error = ?e, "node link: hello not recorded");
                return close(&mut sink, 1011, "try again").await;
            }
        };
        if sink
            .send(Message::Text(
                CoordinatorToNode::Welcome { acked }.to_json().into(),
            ))
            .await
            .is_err()
        {
            engine.link_closed(&node, link_id, since).await;
            return;
        }
        // Anything the records say is still to send to this node (starts, stops) goes now.
        engine.kick();
        if let Err(e) = engine.tell_drain(&node, hello.draining).await {
            // Not fatal: the node keeps what it had; an admin's next drain or resume tells it.
            warn!(error = ?e, "node link: could not tell the node its drain");
        }
        if let Err(e) = engine.tell_revoked_links(&node).await {
            // The revocations stay stored: the node's next hello tells them.
            warn!(error = ?e, "node link: could not tell the node its revoked share links");
        }
        // Writes what the engine sends, then the close frame with the reason the link ended.
        let (stop_tx, mut stop_rx) = oneshot::channel::<(u16, &'static str)>();
        let writer = tokio::spawn(async move {
            loop {
                tokio::select! {
                    m = out_rx.recv() => match m {
                        Some(msg) => {
                            if sink.send(Message::Text(msg.to_json().into())).await.is_err() {
                                return;
                            }
                        }
                        None => break,
                    },
                    r = &mut stop_rx => {
                        let (code, reason) = r.unwrap_or((1000, "closing"));
                        return close(&mut sink, code, reason).await;
                    }
                }
            }
            let (code, reason) = stop_rx.await.unwrap_or((1000, "closing"));
            close(&mut sink, code, reason).await;
        });
        let silence = engine.config.heartbeat_ttl;
        let mut first_heartbeat = true;
        // What reading past a batch of events found, to act on before reading again.
        let mut pending: Option<After> = None;
        let end: (u16, &'static str) = loop {
            let parsed = match pending.take() {
                Some(After::End(why)) => break why,
                Some(After::Next(m)) => m,
                None => {
                    let msg = tokio::select! {
                        m = tokio::time::timeout(silence, stream.next()) => m,
                        why = closer.closed() => {
                            debug!(reason = why.1, "link closed by the coordinator");
                            break why;
                        }
                    };
                    let text = match msg {
                        Err(_) => {
                            warn!("node link silent for the heartbeat TTL; closing");
                            break (1008, "silent for longer than the heartbeat TTL");
                        }
                        Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => {
                            break (1000, "closed by the node");
                        }
                        Ok(Some(Ok(Message::Text(t)))) => t,
                        Ok(Some(Ok(_))) => continue, // pings are answered by the socket
                    };
                    match NodeToCoordinator::from_json(&text) {
                        Ok(m) => m,
                        Err(e) => {
                            warn!(error = %e, "node link: invalid message; closing");
                            break (1008, "invalid message");
                        }
                    }
                }
            };
            let res = match parsed {
                NodeToCoordinator::Hello(_) => {
                    warn!("node link: a second hello; closing");
                    break (1008, "a second hello");
                }
                NodeToCoordinator::Heartbeat(hb) => {
                    let r = engine
                        .node_heartbeat(&node, &hb, since, first_heartbeat)
                        .await;
                    first_heartbeat = false;
                    r
                }
                NodeToCoordinator::Event(ev) => {
                    let (batch, after) = gather_events(&mut stream, ev);
                    pending = after;
                    match engine.node_events(&node, &batch).await {
                        Ok(applied) => {
                            let _ = out_tx.try_send(CoordinatorToNode::Ack {
                                seq: applied.acked,
                            });
                            if applied.refused.is_some() {
                                break (
                                    1008,
                                    "event seq out of step; number events from the welcome's acked + 1",
                                );
                            }
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                }
                NodeToCoordinator::Applications { applications } => {
                    engine.node_applications(&node, &applications).await
                }
            };
            if let Err(e) = res {
                // Not acknowledged: the node resends after reconnecting.
                warn!(error = ?e, "node link: message not processed; closing the link");
                break (1011, "message not processed; reconnect and resend");
            }
        };
        drop(out_tx);
        let _ = stop_tx.send(end);
        engine.link_closed(&node, link_id, since).await;
        // The close frame goes out unless the node stopped reading; then the socket just drops.
        let abort = writer.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), writer)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    .instrument(span)
    .await;
}

/// Events applied in one transaction at most.
const MAX_EVENT_BATCH: usize = 64;

/// What [`gather_events`] read past the events: a message to handle next, or the link's end.
enum After {
    Next(NodeToCoordinator),
    End((u16, &'static str)),
}

/// `first` and the events that have already arrived behind it (a replay after a reconnect,
/// `starting` and `ready` sent together), up to [`MAX_EVENT_BATCH`]: applied in one
/// transaction, acknowledged once. Never waits for the socket.
fn gather_events(
    stream: &mut futures_util::stream::SplitStream<WebSocket>,
    first: SequencedEvent,
) -> (Vec<SequencedEvent>, Option<After>) {
    let mut batch = vec![first];
    while batch.len() < MAX_EVENT_BATCH {
        let Some(more) = stream.next().now_or_never() else {
            break; // nothing more has arrived
        };
        match more {
            Some(Ok(Message::Text(t))) => match NodeToCoordinator::from_json(&t) {
                Ok(NodeToCoordinator::Event(ev)) => batch.push(ev),
                Ok(other) => return (batch, Some(After::Next(other))),
                Err(e) => {
                    warn!(error = %e, "node link: invalid message; closing");
                    return (batch, Some(After::End((1008, "invalid message"))));
                }
            },
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                return (batch, Some(After::End((1000, "closed by the node"))));
            }
            Some(Ok(_)) => {} // pings are answered by the socket
        }
    }
    (batch, None)
}

async fn close(
    sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    code: u16,
    reason: &'static str,
) {
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        })))
        .await;
}
