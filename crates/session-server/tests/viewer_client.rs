#![allow(clippy::unwrap_used)]
//! A viewer of a shared session with a hand-written WebRTC client (str0m) cannot get input to
//! the application, with the real binaries (`pxs session-server` running `pxs streamer
//! --input-log`). The viewer's connection works (video arrives on loopback), and then it tries
//! every way a client has to send input: a data channel of its own, negotiated with an offer over
//! signalling; input bytes on any channel the application opened for it; a forged offer with an
//! `m=application` line. The server refuses both offers, no channel ever opens for the viewer,
//! and the application's input log holds the one input the owner sent and nothing from the viewer.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use pxs_protocol::datachannel::{InputEvent, ProtocolTable};
use pxs_protocol::node::{SessionId, UnixMillis};
use pxs_protocol::player_token::{Claims, Role, sign};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

/// How long a step may take on a loaded 2-core machine (a debug build encoding video for two).
const STEP: Duration = Duration::from_secs(20);

fn in_a_minute() -> UnixMillis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 60_000
}

fn token(session: &SessionId, role: Role, name: &str, link: Option<&str>) -> String {
    sign(
        PLAYER_TOKEN.as_bytes(),
        &Claims {
            session_id: session.clone(),
            role,
            exp: in_a_minute(),
            name: Some(name.into()),
            link: link.map(str::to_owned),
        },
    )
}

/// A left click at the middle of the picture, as Epic's frontend encodes it (id 72).
fn mouse_down() -> Vec<u8> {
    InputEvent::MouseDown {
        button: 0,
        x: 32768,
        y: 32768,
    }
    .encode(&ProtocolTable::default_to_streamer())
    .unwrap()
}

// ----- a scriptable WebRTC client -----

/// What a client has seen so far, published after every step of its task.
#[derive(Clone, Debug, Default)]
struct Seen {
    /// `you.playerId`.
    player_id: Option<String>,
    /// The SDP of every offer the application made to this client.
    offers: Vec<String>,
    /// Every `refused` from the server.
    refused: Vec<Value>,
    /// ICE and DTLS are up.
    connected: bool,
    /// Video frames received (str0m `MediaData` on a video m-line) and their bytes.
    video_frames: u64,
    video_bytes: u64,
    /// The label of every data channel that opened, whoever created it.
    channels: Vec<String>,
    /// Input messages written on an open channel (accepted by the SCTP stack).
    inputs_written: u32,
    /// After [`Cmd::OfferOwnChannel`]: whether negotiating the channel needed an offer (false:
    /// an association was already up, and the channel opens in band).
    own_offer_sent: Option<bool>,
    /// The SDP of that offer.
    own_offer: Option<String>,
    /// Answers the server relayed to this client's own offer.
    answers_to_own_offer: u32,
    /// Why the client's task stopped early.
    problem: Option<String>,
}

impl Seen {
    fn refused_offers(&self) -> usize {
        self.refused
            .iter()
            .filter(|r| r["command"] == "offer")
            .count()
    }
}

enum Cmd {
    /// Add a data channel of our own and, if that needs one, send the offer over signalling.
    OfferOwnChannel,
    /// Write these bytes on every open data channel.
    SendInput(Vec<u8>),
    /// Send this on the signalling socket as it is.
    Signal(Value),
}

/// A player of the session: a WebSocket for signalling and a str0m peer on a loopback UDP
/// socket, driven by its own task. It answers every offer of the application (with its host
/// candidate), and when `auto_input` is set it writes those bytes on every channel that opens.
struct Client {
    cmds: mpsc::UnboundedSender<Cmd>,
    seen: watch::Receiver<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl Client {
    async fn join(
        server: SocketAddr,
        id: &SessionId,
        token: &str,
        auto_input: Option<Vec<u8>>,
    ) -> Client {
        let mut ws = player(server, id, Some(token)).await.expect("joins");
        ws.send(Message::text(
            json!({"type":"subscribe","streamerId": id.as_str()}).to_string(),
        ))
        .await
        .unwrap();
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = udp.local_addr().unwrap();
        let mut rtc = Rtc::builder().build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
        let (cmds, cmd_rx) = mpsc::unbounded_channel();
        let (tx, seen) = watch::channel(Seen::default());
        let driver = Driver {
            ws,
            rtc,
            udp,
            local,
            auto_input,
            open: Vec::new(),
            pending: None,
            seen: Seen::default(),
            tx,
        };
        let task = tokio::spawn(driver.run(cmd_rx));
        Client { cmds, seen, task }
    }

    fn now(&self) -> Seen {
        self.seen.borrow().clone()
    }

    fn send(&self, cmd: Cmd) {
        assert!(self.cmds.send(cmd).is_ok(), "the client's task ended");
    }

    /// Waits until `ready` holds of what the client has seen; panics at once if its task failed.
    async fn wait<T>(&self, timeout: Duration, ready: impl Fn(&Seen) -> Result<T, String>) -> T {
        wait_until(timeout, || {
            let seen = self.now();
            if let Some(p) = &seen.problem {
                panic!("the client failed: {p}");
            }
            std::future::ready(ready(&seen))
        })
        .await
    }

    /// Closes the signalling socket and the peer; panics if the task did.
    async fn close(self) {
        drop(self.cmds);
        self.task.await.expect("the client's task");
    }
}

struct Driver {
    ws: Ws,
    rtc: Rtc,
    udp: UdpSocket,
    local: SocketAddr,
    auto_input: Option<Vec<u8>>,
    open: Vec<ChannelId>,
    pending: Option<SdpPendingOffer>,
    seen: Seen,
    tx: watch::Sender<Seen>,
}

impl Driver {
    async fn run(mut self, mut cmds: mpsc::UnboundedReceiver<Cmd>) {
        let mut buf = vec![0u8; 2000];
        loop {
            let r = match self.drain() {
                Err(e) => Err(e),
                Ok(wake) => {
                    self.tx.send_replace(self.seen.clone());
                    tokio::select! {
                        cmd = cmds.recv() => match cmd {
                            Some(cmd) => self.command(cmd).await,
                            None => break,
                        },
                        msg = self.ws.next() => match msg {
                            Some(Ok(Message::Text(t))) => self.signal(t.as_str()).await,
                            Some(Ok(_)) => Ok(()),
                            other => Err(format!("signalling ended: {other:?}")),
                        },
                        r = self.udp.recv_from(&mut buf) => match r {
                            Ok((n, source)) => self.datagram(source, &buf[..n]),
                            Err(e) => Err(format!("udp: {e}")),
                        },
                        _ = tokio::time::sleep_until(wake.into()) => self
                            .rtc
                            .handle_input(Input::Timeout(Instant::now()))
                            .map_err(|e| format!("timeout: {e}")),
                    }
                }
            };
            if let Err(e) = r {
                self.seen.problem = Some(e);
                self.tx.send_replace(self.seen.clone());
                return;
            }
        }
        self.rtc.disconnect();
        let _ = self.drain();
        let _ = self.ws.close(None).await;
    }

    fn datagram(&mut self, source: SocketAddr, contents: &[u8]) -> Result<(), String> {
        let receive = Receive {
            proto: Protocol::Udp,
            source,
            destination: self.local,
            contents: contents.try_into().map_err(|e| format!("datagram: {e}"))?,
        };
        self.rtc
            .handle_input(Input::Receive(Instant::now(), receive))
            .map_err(|e| format!("receive: {e}"))
    }

    async fn command(&mut self, cmd: Cmd) -> Result<(), String> {
        match cmd {
            Cmd::OfferOwnChannel => {
                let mut api = self.rtc.sdp_api();
                api.add_channel("cirrus".into());
                match api.apply() {
                    Some((offer, pending)) => {
                        self.pending = Some(pending);
                        self.seen.own_offer_sent = Some(true);
                        let sdp = offer.to_sdp_string();
                        self.seen.own_offer = Some(sdp.clone());
                        self.signal_out(json!({"type": "offer", "sdp": sdp})).await
                    }
                    None => {
                        self.seen.own_offer_sent = Some(false);
                        Ok(())
                    }
                }
            }
            Cmd::SendInput(bytes) => {
                self.write_input(&bytes);
                Ok(())
            }
            Cmd::Signal(v) => self.signal_out(v).await,
        }
    }

    fn write_input(&mut self, bytes: &[u8]) {
        for id in self.open.clone() {
            if let Some(mut ch) = self.rtc.channel(id)
                && ch.write(true, bytes).unwrap_or(false)
            {
                self.seen.inputs_written += 1;
            }
        }
    }

    async fn signal_out(&mut self, v: Value) -> Result<(), String> {
        self.ws
            .send(Message::text(v.to_string()))
            .await
            .map_err(|e| format!("send: {e}"))
    }

    async fn signal(&mut self, text: &str) -> Result<(), String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("{e}: {text}"))?;
        match v["type"].as_str() {
            Some("you") => self.seen.player_id = v["playerId"].as_str().map(str::to_owned),
            Some("refused") => self.seen.refused.push(v),
            Some("offer") => {
                let sdp = v["sdp"].as_str().unwrap_or_default().to_owned();
                self.seen.offers.push(sdp.clone());
                let offer = SdpOffer::from_sdp_string(&sdp).map_err(|e| format!("offer: {e}"))?;
                // The application's offer wins over one of ours still pending.
                self.pending = None;
                let answer = self
                    .rtc
                    .sdp_api()
                    .accept_offer(offer)
                    .map_err(|e| format!("accept offer: {e}"))?;
                let answer = json!({"type": "answer", "sdp": answer.to_sdp_string()});
                self.signal_out(answer).await?;
            }
            // Only ever the answer to an offer of ours, which the server must not relay.
            Some("answer") => {
                self.seen.answers_to_own_offer += 1;
                if let Some(pending) = self.pending.take() {
                    let answer = SdpAnswer::from_sdp_string(v["sdp"].as_str().unwrap_or(""))
                        .map_err(|e| format!("answer: {e}"))?;
                    self.rtc
                        .sdp_api()
                        .accept_answer(pending, answer)
                        .map_err(|e| {
                            format!("the server relayed an answer to our own offer: {e}")
                        })?;
                }
            }
            Some("iceCandidate") => {
                let c = v["candidate"]["candidate"].as_str().unwrap_or_default();
                let c = c.trim().trim_start_matches("a=");
                if !c.is_empty() {
                    let c = Candidate::from_sdp_string(c).map_err(|e| format!("{e}: {c}"))?;
                    self.rtc.add_remote_candidate(c);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Drains the engine until its next timeout: datagrams are sent, events recorded.
    fn drain(&mut self) -> Result<Instant, String> {
        loop {
            if !self.rtc.is_alive() {
                return Ok(Instant::now() + Duration::from_secs(3600));
            }
            match self.rtc.poll_output().map_err(|e| format!("poll: {e}"))? {
                Output::Timeout(t) => return Ok(t),
                Output::Transmit(t) => {
                    let _ = self.udp.try_send_to(&t.contents, t.destination);
                }
                Output::Event(e) => self.event(e),
            }
        }
    }

    fn event(&mut self, e: Event) {
        match e {
            Event::Connected => self.seen.connected = true,
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.seen.connected = false;
            }
            Event::MediaData(m) if m.params.spec().codec.is_video() => {
                self.seen.video_frames += 1;
                self.seen.video_bytes += m.data.len() as u64;
            }
            Event::ChannelOpen(id, label) => {
                self.seen.channels.push(label);
                self.open.push(id);
                if let Some(bytes) = self.auto_input.clone() {
                    self.write_input(&bytes);
                }
            }
            Event::ChannelClose(id) => self.open.retain(|c| *c != id),
            _ => {}
        }
    }
}

// ----- the application's input log -----

/// The `--input-log` lines so far, as (player id, message name).
fn input_log(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            (
                v["player_id"].as_str().unwrap_or_default().to_owned(),
                v["name"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_with_its_own_webrtc_client_gets_video_and_no_way_to_send_input() {
    init_logs();
    let coord = Coordinator::start().await;
    let dir = temp_dir("viewer-client");
    let log = temp_dir("viewer-client-app").join("input.jsonl");
    let app = streamer_app(
        "demo",
        &["-RenderOffScreen", "--input-log", log.to_str().unwrap()],
        "",
    );
    let server = start_server(&config_toml(&coord, &dir, "", &app)).await;
    coord.wait_linked(Duration::from_secs(10)).await;
    let id = sid("viewerclient");
    coord.start_session(&id, "demo");
    coord.wait_ready(&id, Duration::from_secs(60)).await;
    let addr = server.addr();

    // The owner joins first and keeps control: its connection has the input channel.
    let owner = Client::join(addr, &id, &token(&id, Role::Owner, "Alice", None), None).await;
    owner
        .wait(STEP, |s| {
            if s.connected && s.player_id.is_some() && s.channels == ["datachannel"] {
                Ok(())
            } else {
                Err(format!(
                    "the owner's connection or channel is not up: {s:?}"
                ))
            }
        })
        .await;

    // The viewer, from a share link, with a client that writes input on any channel that opens.
    let viewer_token = token(&id, Role::Viewer, "Mallory", Some("lnk_x"));
    let viewer = Client::join(addr, &id, &viewer_token, Some(mouse_down())).await;
    // Its connection works: ICE and DTLS on loopback, and video arrives.
    viewer
        .wait(STEP, |s| {
            if s.connected && s.video_frames >= 5 && s.video_bytes > 0 {
                Ok(())
            } else {
                Err(format!("the viewer has no video yet: {s:?}"))
            }
        })
        .await;
    let viewer_id = viewer.now().player_id.expect("the viewer was told its id");

    // (b) Input on whatever channel the application opened for the viewer (there is none).
    viewer.send(Cmd::SendInput(mouse_down()));

    // (a) A channel of its own: negotiating it takes an offer, which the server refuses.
    viewer.send(Cmd::OfferOwnChannel);
    let own_offer_sent = viewer
        .wait(STEP, |s| {
            s.own_offer_sent
                .ok_or_else(|| "the viewer has not added its channel".to_owned())
        })
        .await;
    if own_offer_sent {
        let sdp = viewer.now().own_offer.unwrap();
        assert!(sdp.contains("m=application"), "{sdp}");
        viewer
            .wait(STEP, |s| {
                assert_eq!(
                    s.answers_to_own_offer, 0,
                    "the viewer's own offer reached the application, which answered it"
                );
                if s.refused_offers() == 1 {
                    Ok(())
                } else {
                    Err(format!("the viewer's offer is not refused: {s:?}"))
                }
            })
            .await;
    }

    // (c) A forged offer with an m=application line: refused too.
    viewer.send(Cmd::Signal(json!({
        "type": "offer",
        "sdp": "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:0\r\n",
    })));
    viewer
        .wait(STEP, |s| {
            if s.refused_offers() == 1 + usize::from(own_offer_sent) {
                Ok(())
            } else {
                Err(format!("the forged offer is not refused: {s:?}"))
            }
        })
        .await;

    // The owner's input reaches the application: the log works, and shows whose input it is.
    let owner_id = owner.now().player_id.unwrap();
    owner.send(Cmd::SendInput(mouse_down()));
    let only_the_owners = vec![(owner_id.clone(), "MouseDown".to_owned())];
    wait_until(STEP, || {
        let lines = input_log(&log);
        std::future::ready(if lines.iter().any(|(p, _)| p == &owner_id) {
            Ok(())
        } else {
            Err(format!("the owner's input is not in the log: {lines:?}"))
        })
    })
    .await;

    // Nothing from the viewer, ever: no channel opens for it, no input is written or logged.
    let frames_before = viewer.now().video_frames;
    holds_for(
        Duration::from_secs(2),
        "the viewer to have no channel and the log only the owner's input",
        || {
            let (s, lines) = (viewer.now(), input_log(&log));
            std::future::ready(
                if s.channels.is_empty() && s.inputs_written == 0 && lines == only_the_owners {
                    Ok(())
                } else {
                    Err(format!(
                        "viewer {viewer_id}: channels {:?}, inputs written {}, answers to its \
                         offer {}; input log {lines:?}",
                        s.channels, s.inputs_written, s.answers_to_own_offer
                    ))
                },
            )
        },
    )
    .await;
    let s = viewer.now();
    assert!(
        own_offer_sent,
        "the viewer added a channel without an offer: an association was already up"
    );
    assert_eq!(s.offers.len(), 1, "one offer from the application");
    assert!(
        !s.offers[0].contains("m=application"),
        "the application offered the viewer a channel: {}",
        s.offers[0]
    );
    assert_eq!(s.refused_offers(), 2, "{:?}", s.refused);
    assert!(s.connected, "the viewer is still connected");
    assert!(
        s.video_frames > frames_before,
        "video kept coming: {} frames",
        s.video_frames
    );
    assert_ne!(viewer_id, owner_id);

    // Clean shutdown.
    viewer.close().await;
    owner.close().await;
    server.shutdown().await.expect("clean shutdown");
    coord.wait_ended(&id, Duration::from_secs(10)).await;
}
