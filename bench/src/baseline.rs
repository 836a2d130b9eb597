//! The baseline: the least a WebSocket relay can do for the same client load, in this process,
//! on a tokio runtime of its own (two worker threads named `bench-fwd`, as many as the server
//! gets on this machine) so that its CPU time can be read apart from the clients'.
//!
//! It speaks just enough of the protocol for the benchmark's clients (`identify`, `config`,
//! `endpointIdConfirm`, `playerConnected`) and relays without parsing JSON: a streamer's frame
//! goes, unchanged, to the player whose id follows the first `"playerId":"`; a player's frame
//! goes to its streamer with `"playerId":"PlayerN",` spliced in after the opening brace. Like the
//! server: one task per connection, one write per frame, a bounded queue per connection.

use crate::server::Addrs;
use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Name prefix of the forwarder's threads.
pub const THREAD_NAME: &str = "bench-fwd";
const QUEUE: usize = 1024;
const CONFIG: &str = r#"{"type":"config","peerConnectionOptions":{},"protocolVersion":"1.3.0"}"#;

pub struct Forwarder {
    runtime: Option<tokio::runtime::Runtime>,
    addrs: Addrs,
}

#[derive(Default)]
struct Hub {
    streamers: RwLock<HashMap<String, mpsc::Sender<Message>>>,
    players: RwLock<HashMap<String, mpsc::Sender<Message>>>,
    next_player: AtomicU64,
}

impl Forwarder {
    /// Listens on two kernel-picked ports of 127.0.0.1. `nodelay`: disable Nagle's algorithm on
    /// accepted sockets.
    pub fn start(nodelay: bool) -> anyhow::Result<Forwarder> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(THREAD_NAME)
            .enable_all()
            .build()
            .context("cannot start the forwarder's runtime")?;
        let bind = || -> anyhow::Result<std::net::TcpListener> {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.set_nonblocking(true)?;
            Ok(l)
        };
        let (s, p) = (bind()?, bind()?);
        let addrs = Addrs {
            streamer: s.local_addr()?,
            player: p.local_addr()?,
        };
        let hub = Arc::new(Hub::default());
        for (listener, is_streamer) in [(s, true), (p, false)] {
            let hub = hub.clone();
            runtime.spawn(async move {
                let Ok(listener) = TcpListener::from_std(listener) else {
                    return;
                };
                while let Ok((tcp, _)) = listener.accept().await {
                    if nodelay {
                        let _ = tcp.set_nodelay(true);
                    }
                    tokio::spawn(connection(tcp, is_streamer, hub.clone()));
                }
            });
        }
        Ok(Forwarder {
            runtime: Some(runtime),
            addrs,
        })
    }

    pub fn addrs(&self) -> Addrs {
        self.addrs
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

/// The text between `"key":"` and the next `"`.
fn string_field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\":\"");
    let start = text.find(&pat)? + pat.len();
    let len = text[start..].find('"')?;
    Some(&text[start..start + len])
}

async fn connection(tcp: TcpStream, is_streamer: bool, hub: Arc<Hub>) {
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(64 * 1024))
        .max_frame_size(Some(64 * 1024));
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await else {
        return;
    };
    let (tx, mut rx) = mpsc::channel::<Message>(QUEUE);
    let me: String;
    if is_streamer {
        me = String::new();
        if ws
            .send(Message::text(r#"{"type":"identify"}"#))
            .await
            .is_err()
        {
            return;
        }
    } else {
        me = format!("Player{}", hub.next_player.fetch_add(1, Ordering::Relaxed));
        write_lock(&hub.players).insert(me.clone(), tx.clone());
    }
    let mut streamer_id = me.clone();
    let mut upstream: Option<mpsc::Sender<Message>> = None;
    if ws.send(Message::text(CONFIG)).await.is_ok() {
        loop {
            tokio::select! {
                out = rx.recv() => {
                    // `tx` is held here, so the queue never closes.
                    let Some(out) = out else { break };
                    if ws.send(out).await.is_err() {
                        break;
                    }
                }
                incoming = ws.next() => {
                    let text = match incoming {
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                        Some(Ok(_)) => continue,
                    };
                    let s = text.as_str();
                    if is_streamer {
                        if s.starts_with(r#"{"type":"endpointId""#) {
                            streamer_id = string_field(s, "id").unwrap_or("").to_owned();
                            write_lock(&hub.streamers).insert(streamer_id.clone(), tx.clone());
                            let confirm = format!(r#"{{"type":"endpointIdConfirm","committedId":"{streamer_id}"}}"#);
                            let _ = tx.try_send(Message::text(confirm));
                        } else if let Some(pid) = string_field(s, "playerId") {
                            let to = read_lock(&hub.players).get(pid).cloned();
                            if let Some(to) = to {
                                let _ = to.try_send(Message::Text(text));
                            }
                        }
                    } else if s.starts_with(r#"{"type":"subscribe""#) {
                        let wanted = string_field(s, "streamerId").unwrap_or("");
                        upstream = read_lock(&hub.streamers).get(wanted).cloned();
                        if let Some(up) = &upstream {
                            let note = format!(r#"{{"type":"playerConnected","playerId":"{me}","dataChannel":true,"sfu":false}}"#);
                            let _ = up.try_send(Message::text(note));
                        }
                    } else if let Some(up) = &upstream
                        && s.len() > 1
                    {
                        let stamped = format!(r#"{{"playerId":"{me}",{}"#, &s[1..]);
                        let _ = up.try_send(Message::text(stamped));
                    }
                }
            }
        }
    }
    if is_streamer {
        write_lock(&hub.streamers).remove(&streamer_id);
    } else {
        write_lock(&hub.players).remove(&me);
    }
}

fn read_lock<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // Poisoned only if a connection task panicked mid-insert; the map is still whole.
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write_lock<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_found_without_parsing() {
        let s = r#"{"type":"offer","playerId":"Player12","sdp":"v=0"}"#;
        assert_eq!(string_field(s, "playerId"), Some("Player12"));
        assert_eq!(string_field(s, "streamerId"), None);
    }
}
