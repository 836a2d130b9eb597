//! Shared test harness: the real server on 127.0.0.1:0 and real WebSocket clients.
#![allow(dead_code)]

use futures_util::{SinkExt, StreamExt};
#[allow(unused_imports)] // each test binary uses its own subset
pub use pxs_test_support::wait_until;
pub use pxs_webrtc_session::{Config, Options, Server};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const WAIT: Duration = Duration::from_secs(10);

/// Options for a test server: loopback, free ports.
pub fn options() -> Options {
    Options {
        bind_address: Some([127, 0, 0, 1].into()),
        streamer_port: Some(0),
        player_port: Some(0),
        sfu_port: Some(0),
        ..Default::default()
    }
}

pub async fn start(opts: Options) -> Server {
    Server::start(Config::from_options(opts).expect("valid config"))
        .await
        .expect("server starts")
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub response_protocol: Option<String>,
}

pub async fn connect(addr: SocketAddr, path: &str) -> Client {
    connect_with(addr, path, &[]).await.expect("connects")
}

pub async fn connect_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Client, WsError> {
    let mut req = format!("ws://{addr}{path}")
        .into_client_request()
        .expect("request");
    for (k, v) in headers {
        req.headers_mut()
            .insert(http_name(k), v.parse().expect("header value"));
    }
    let (ws, resp) = tokio_tungstenite::connect_async(req).await?;
    let response_protocol = resp
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap_or_default().to_owned());
    Ok(Client {
        ws,
        response_protocol,
    })
}

fn http_name(k: &str) -> tokio_tungstenite::tungstenite::http::HeaderName {
    k.parse().expect("header name")
}

impl Client {
    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .expect("send");
    }

    pub async fn send_raw(&mut self, m: Message) {
        self.ws.send(m).await.expect("send");
    }

    /// The next JSON message; panics on close or timeout.
    pub async fn recv(&mut self) -> Value {
        loop {
            let m = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a message within the wait")
                .expect("stream open")
                .expect("no error");
            match m {
                Message::Text(t) => return serde_json::from_str(t.as_str()).expect("JSON"),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    }

    /// The next message of type `kind`, skipping others.
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        loop {
            let v = self.recv().await;
            if v["type"] == kind {
                return v;
            }
        }
    }

    /// Reads until the server closes; returns the close frame (None: no status code).
    pub async fn closed(&mut self) -> Option<CloseFrame> {
        loop {
            let m = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("closed within the wait");
            match m {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("error instead of a close frame: {e}"),
                None => panic!("stream ended without a close frame"),
            }
        }
    }

    /// Asserts that nothing arrives for a short while.
    pub async fn silent(&mut self, d: Duration) {
        if let Ok(m) = tokio::time::timeout(d, self.ws.next()).await {
            panic!("expected silence, got {m:?}");
        }
    }
}

/// A streamer that connected and identified as `id`.
pub async fn streamer(addr: SocketAddr, id: &str) -> Client {
    let mut s = connect(addr, "/").await;
    assert_eq!(s.recv().await["type"], "config");
    assert_eq!(s.recv().await["type"], "identify");
    s.send(serde_json::json!({"type":"endpointId","id":id}))
        .await;
    assert_eq!(s.recv().await["committedId"], id);
    s
}

/// Players each flood `S` with this many offers of 60 KB: 40 x 4 x 60 KB is about 10 MB, more
/// than the server's socket buffer towards a [`tight_streamer`] can grow to (4 MiB), so its send
/// queue fills and stays full while it does not read.
pub const PLAYERS: usize = 40;
pub const OFFERS: usize = 4;

/// A streamer whose socket takes little: its kernel receive buffer is 4 KiB.
pub async fn tight_streamer(addr: SocketAddr, id: &str) -> Client {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("buffer size");
    let stream = socket.connect(addr).await.expect("connects");
    let (ws, _) =
        tokio_tungstenite::client_async(format!("ws://{addr}/"), MaybeTlsStream::Plain(stream))
            .await
            .expect("WebSocket handshake");
    let mut s = Client {
        ws,
        response_protocol: None,
    };
    assert_eq!(s.recv().await["type"], "config");
    assert_eq!(s.recv().await["type"], "identify");
    s.send(serde_json::json!({"type":"endpointId","id":id}))
        .await;
    assert_eq!(s.recv().await["committedId"], id);
    s
}

/// The server's counters, from `/metrics` (the REST API must be on).
pub async fn metrics(server: &Server) -> std::collections::HashMap<String, u64> {
    let text = reqwest::get(format!("http://{}/metrics", server.addrs().player))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(name, v)| (name.to_owned(), v.parse().expect("a number")))
        .collect()
}

/// `players` players subscribe to `S` and each sends `offers` offers of 60 KB, from their own tasks
/// (a paused player's sends block); abort the tasks to close them.
pub async fn flood(
    addr: SocketAddr,
    players: usize,
    offers: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for k in 0..players {
        let mut f = connect(addr, "/").await;
        assert_eq!(f.recv().await["type"], "config");
        f.send(serde_json::json!({"type":"subscribe","streamerId":"S"}))
            .await;
        tasks.push(tokio::spawn(async move {
            for i in 0..offers {
                let sdp = format!("flood-{k}-{i} {}", "v".repeat(60_000));
                let offer = serde_json::json!({"type":"offer","sdp":sdp}).to_string();
                if f.ws.send(Message::Text(offer.into())).await.is_err() {
                    return;
                }
            }
            std::future::pending::<()>().await;
        }));
    }
    tasks
}
