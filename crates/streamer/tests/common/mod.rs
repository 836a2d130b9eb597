//! Test harness: the real signalling server in-process, a real WebRTC player built on str0m,
//! the `pxs` binary for process-level tests, and test-support's `wait_until` and `holds_for`.
#![allow(dead_code)]

use futures_util::{SinkExt, StreamExt};
use openh264::decoder::Decoder;
use openh264::formats::YUVSource;
use pxs_protocol::datachannel::{
    self, Direction, FromStreamer, ProtocolMessage, ProtocolTable, Value,
};
use pxs_streamer::pattern::{StripReading, read_strip};
#[allow(unused_imports)] // each test binary uses its own subset
pub use pxs_test_support::{holds_for, pxs_bin, wait_until};
use pxs_webrtc_session::{Config, Options, Server};
use serde_json::{Value as Json, json};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use str0m::change::SdpOffer;
use str0m::channel::ChannelId;
use str0m::media::KeyframeRequestKind;
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::{TcpStream, UdpSocket};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The in-process signalling server on loopback, free ports.
pub async fn signalling_server() -> Server {
    let opts = Options {
        bind_address: Some([127, 0, 0, 1].into()),
        streamer_port: Some(0),
        player_port: Some(0),
        sfu_port: Some(0),
        ..Default::default()
    };
    Server::start(Config::from_options(opts).expect("valid config"))
        .await
        .expect("server starts")
}

/// A decoded video frame's facts.
#[derive(Clone, Debug)]
pub struct DecodedFrame {
    pub width: usize,
    pub height: usize,
    pub strip: Option<StripReading>,
    /// Wall-clock ms when we decoded it.
    pub decoded_at_ms: u64,
}

/// A player, as Epic's frontend behaves: subscribes over the player WebSocket, answers the
/// streamer's offer without offering candidates of its own (like Chromium on loopback, so the
/// streamer must learn it as peer-reflexive), receives the video and talks on `datachannel`.
pub struct Player {
    pub ws: Ws,
    pub rtc: Rtc,
    udp: UdpSocket,
    local: SocketAddr,
    pub player_id: Option<String>,
    pub channel: Option<ChannelId>,
    pub channel_label: Option<String>,
    /// Depacketized video frames received (str0m `MediaData` events on the video m-line).
    pub frames: u64,
    pub keyframes_seen: u64,
    /// The codec of the video received ("H264", "VP8").
    pub video_codec: Option<String>,
    /// Picture sizes read from VP8 keyframe headers.
    pub vp8_keyframe_sizes: Vec<(u16, u16)>,
    /// Opus packets received (MediaData on the audio m-line) and what decoding them gave.
    pub audio: AudioReceived,
    audio_decoder: opus::Decoder,
    pub decoded: Vec<DecodedFrame>,
    /// How many frames to decode with openh264 (decoding every frame would be slow in debug).
    pub decode_limit: usize,
    decoder: Decoder,
    /// Whether decoding waits for a keyframe: at the start, after frames went undecoded (past
    /// `decode_limit`: decoding a frame whose references were skipped fails, "reference lost")
    /// and after a decode error (a lost packet, on a loaded machine).
    needs_keyframe: bool,
    /// Decode errors so far; after each the player asks for a keyframe (PLI), as a browser does.
    pub decode_errors: u64,
    /// Messages from the streamer, decoded by our FromStreamer table.
    pub from_streamer: Vec<FromStreamer>,
    pub raw_from_streamer: Vec<Vec<u8>>,
    /// Our ToStreamer table, updated from the streamer's Protocol message as the frontend does.
    pub to_table: ProtocolTable,
    from_table: ProtocolTable,
    pub signalling: Vec<Json>,
}

impl Player {
    /// Connects to the player port and subscribes to `streamer_id` once it is listed.
    pub async fn subscribe(player_addr: SocketAddr, streamer_id: &str) -> Player {
        Self::subscribe_url(&format!("ws://{player_addr}/"), streamer_id).await
    }

    /// Connects to a player WebSocket URL (a session's `join_url`, say) and subscribes to
    /// `streamer_id` once it is listed.
    pub async fn subscribe_url(url: &str, streamer_id: &str) -> Player {
        let (mut ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("player connects");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            send_json(&mut ws, json!({"type": "listStreamers"})).await;
            let list = recv_type(&mut ws, "streamerList").await;
            let listed = list["ids"]
                .as_array()
                .is_some_and(|ids| ids.iter().any(|i| i == streamer_id));
            if listed {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "streamer {streamer_id} never listed: {list}"
            );
            // The interval between two polls of the list.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        send_json(
            &mut ws,
            json!({"type": "subscribe", "streamerId": streamer_id}),
        )
        .await;
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("udp");
        let local = udp.local_addr().expect("addr");
        let mut rtc = Rtc::builder().build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp").expect("candidate"));
        Player {
            ws,
            rtc,
            udp,
            local,
            player_id: None,
            channel: None,
            channel_label: None,
            frames: 0,
            keyframes_seen: 0,
            video_codec: None,
            vp8_keyframe_sizes: Vec::new(),
            audio: AudioReceived::default(),
            audio_decoder: opus::Decoder::new(48_000, opus::Channels::Mono).expect("opus decoder"),
            decoded: Vec::new(),
            decode_limit: 10,
            decoder: Decoder::new().expect("decoder"),
            needs_keyframe: true,
            decode_errors: 0,
            from_streamer: Vec::new(),
            raw_from_streamer: Vec::new(),
            to_table: ProtocolTable::default_to_streamer(),
            from_table: ProtocolTable::default_from_streamer(),
            signalling: Vec::new(),
        }
    }

    /// Drives the connection until `done` holds, or panics after `timeout` with `what`.
    pub async fn run_until(
        &mut self,
        timeout: Duration,
        what: &str,
        mut done: impl FnMut(&Player) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 2000];
        loop {
            self.drain();
            if done(self) {
                return;
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "timed out waiting for {what}: frames={} decoded={} decode errors={} channel={:?} messages={}",
                self.frames,
                self.decoded.len(),
                self.decode_errors,
                self.channel_label,
                self.from_streamer.len()
            );
            let wake = self.next_timeout().min(deadline).max(now);
            tokio::select! {
                msg = self.ws.next() => match msg {
                    Some(Ok(Message::Text(t))) => {
                        let v: Json = serde_json::from_str(t.as_str()).expect("JSON");
                        self.on_signal(v).await;
                    }
                    Some(Ok(_)) => {}
                    other => panic!("player signalling ended: {other:?}"),
                },
                r = self.udp.recv_from(&mut buf) => {
                    let (n, source) = r.expect("udp recv");
                    let input = Input::Receive(Instant::now(), Receive {
                        proto: Protocol::Udp,
                        source,
                        destination: self.local,
                        contents: (&buf[..n]).try_into().expect("datagram"),
                    });
                    self.rtc.handle_input(input).expect("handle input");
                }
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                    self.rtc.handle_input(Input::Timeout(Instant::now())).expect("timeout");
                }
            }
        }
    }

    fn next_timeout(&mut self) -> Instant {
        // drain() left the engine at its timeout; poll again is the cheap way to read it.
        match self.rtc.poll_output() {
            Ok(Output::Timeout(t)) => t,
            Ok(other) => {
                self.on_output(other);
                Instant::now()
            }
            Err(e) => panic!("rtc: {e}"),
        }
    }

    async fn on_signal(&mut self, v: Json) {
        self.signalling.push(v.clone());
        match v["type"].as_str() {
            Some("offer") => {
                self.player_id = v["playerId"].as_str().map(str::to_owned);
                let offer =
                    SdpOffer::from_sdp_string(v["sdp"].as_str().expect("sdp")).expect("offer");
                let answer = self
                    .rtc
                    .sdp_api()
                    .accept_offer(offer)
                    .expect("accept offer");
                self.drain();
                // Chromium on loopback offers no candidate of its own.
                let sdp: String = answer
                    .to_sdp_string()
                    .split("\r\n")
                    .filter(|l| !l.starts_with("a=candidate"))
                    .map(|l| format!("{l}\r\n"))
                    .collect::<String>()
                    .trim_end_matches("\r\n\r\n")
                    .to_owned();
                send_json(
                    &mut self.ws,
                    json!({"type": "answer", "sdp": sdp, "minBitrateBps": 0, "maxBitrateBps": 0}),
                )
                .await;
            }
            Some("iceCandidate") => {
                let c = v["candidate"]["candidate"].as_str().unwrap_or_default();
                if !c.is_empty() {
                    let c = Candidate::from_sdp_string(c).expect("candidate");
                    self.rtc.add_remote_candidate(c);
                    self.drain();
                }
            }
            _ => {}
        }
    }

    /// Drains the engine's output (transmits are sent synchronously on the UDP socket).
    fn drain(&mut self) {
        loop {
            match self.rtc.poll_output().expect("poll") {
                Output::Timeout(_) => return,
                other => self.on_output(other),
            }
        }
    }

    fn on_output(&mut self, o: Output) {
        match o {
            Output::Timeout(_) => {}
            Output::Transmit(t) => {
                let _ = self.udp.try_send_to(&t.contents, t.destination);
            }
            Output::Event(e) => self.on_event(e),
        }
    }

    fn on_event(&mut self, e: Event) {
        match e {
            Event::MediaData(m) if m.params.spec().codec.is_audio() => {
                self.audio.on_packet(
                    &mut self.audio_decoder,
                    &m.data,
                    format!("{}", m.params.spec().codec),
                    m.mid.to_string(),
                );
            }
            Event::MediaData(m) if m.params.spec().codec == str0m::format::Codec::Vp8 => {
                self.frames += 1;
                self.video_codec = Some("VP8".into());
                if let Some(size) = vp8_keyframe_size(&m.data) {
                    self.keyframes_seen += 1;
                    self.vp8_keyframe_sizes.push(size);
                }
            }
            Event::MediaData(m) => {
                self.frames += 1;
                self.video_codec = Some(format!("{}", m.params.spec().codec).to_uppercase());
                let key = is_h264_keyframe(&m.data);
                self.keyframes_seen += u64::from(key);
                if self.decoded.len() >= self.decode_limit {
                    self.needs_keyframe = true;
                } else if key || !self.needs_keyframe {
                    self.needs_keyframe = false;
                    match self.decoder.decode(&m.data) {
                        Ok(Some(yuv)) => {
                            let (w, h) = yuv.dimensions();
                            let (ys, _, _) = yuv.strides();
                            let strip = read_strip(yuv.y(), w, h, ys);
                            self.decoded.push(DecodedFrame {
                                width: w,
                                height: h,
                                strip,
                                decoded_at_ms: wall_ms(),
                            });
                        }
                        Ok(None) => {}
                        Err(e) => {
                            eprintln!("decode error: {e}; waiting for a keyframe");
                            self.decode_errors += 1;
                            self.needs_keyframe = true;
                            if let Some(mut w) = self.rtc.writer(m.mid) {
                                let _ = w.request_keyframe(None, KeyframeRequestKind::Pli);
                            }
                        }
                    }
                }
            }
            Event::ChannelOpen(id, label) => {
                self.channel = Some(id);
                self.channel_label = Some(label);
            }
            Event::ChannelData(d) => {
                self.raw_from_streamer.push(d.data.clone());
                match FromStreamer::decode(&self.from_table, &d.data, 1 << 20) {
                    Ok(msg) => {
                        if let FromStreamer::Protocol(json) = &msg {
                            let p = ProtocolMessage::from_json(json).expect("Protocol JSON");
                            match p.direction {
                                Direction::ToStreamer => {
                                    self.to_table.apply(&p).expect("apply ToStreamer");
                                }
                                Direction::FromStreamer => {
                                    self.from_table.apply(&p).expect("apply FromStreamer");
                                }
                            }
                        }
                        self.from_streamer.push(msg);
                    }
                    Err(e) => panic!("undecodable message from the streamer: {e}"),
                }
            }
            _ => {}
        }
    }

    /// Encodes a ToStreamer message by our (negotiated) table and sends it.
    pub fn send_input(&mut self, name: &str, values: &[Value]) {
        let bytes = datachannel::encode(&self.to_table, name, values).expect("encodes");
        self.send_raw(&bytes);
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        let id = self.channel.expect("data channel open");
        let mut ch = self.rtc.channel(id).expect("channel");
        ch.write(true, bytes).expect("write");
        self.drain();
    }

    pub fn count(&self, f: impl Fn(&FromStreamer) -> bool) -> usize {
        self.from_streamer.iter().filter(|m| f(m)).count()
    }

    /// Waits for the streamer's first `VideoEncoderAvgQP` and returns every one received.
    pub async fn avg_qps(&mut self, wait: Duration) -> Vec<u32> {
        self.run_until(wait, "VideoEncoderAvgQP", |p| {
            p.count(|m| matches!(m, FromStreamer::VideoEncoderAvgQp(_))) >= 1
        })
        .await;
        self.from_streamer
            .iter()
            .filter_map(|m| match m {
                FromStreamer::VideoEncoderAvgQp(t) => Some(t.parse().expect("a decimal QP")),
                _ => None,
            })
            .collect()
    }
}

pub async fn send_json(ws: &mut Ws, v: Json) {
    ws.send(Message::Text(v.to_string().into()))
        .await
        .expect("send");
}

pub async fn recv_type(ws: &mut Ws, kind: &str) -> Json {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message in time")
            .expect("open")
            .expect("no error");
        if let Message::Text(t) = m {
            let v: Json = serde_json::from_str(t.as_str()).expect("JSON");
            if v["type"] == kind {
                return v;
            }
        }
    }
}

/// What a player got on the audio m-line.
#[derive(Debug, Default)]
pub struct AudioReceived {
    pub packets: u64,
    /// The codec name str0m reports ("opus") and the mid of the audio m-line.
    pub codec: Option<String>,
    pub mid: Option<String>,
    /// Packets that libopus decoded, and the samples they gave (48 kHz mono).
    pub decoded: u64,
    pub samples: u64,
    pub errors: u64,
    /// Sum of squares and peak of the decoded samples after the first 5 packets (codec start-up).
    sum_sq: f64,
    measured: u64,
    pub peak: u16,
}

impl AudioReceived {
    fn on_packet(&mut self, decoder: &mut opus::Decoder, data: &[u8], codec: String, mid: String) {
        self.packets += 1;
        self.codec = Some(codec);
        self.mid = Some(mid);
        let mut pcm = [0i16; 5760];
        match decoder.decode(data, &mut pcm, false) {
            Ok(n) => {
                self.decoded += 1;
                self.samples += n as u64;
                if self.decoded > 5 {
                    for &s in &pcm[..n] {
                        self.sum_sq += f64::from(s).powi(2);
                        self.peak = self.peak.max(s.unsigned_abs());
                    }
                    self.measured += n as u64;
                }
            }
            Err(e) => {
                eprintln!("opus decode error: {e}");
                self.errors += 1;
            }
        }
    }

    /// RMS level of the decoded audio in dBFS (None before anything was measured).
    pub fn rms_dbfs(&self) -> Option<f64> {
        (self.measured > 0).then(|| {
            let rms = (self.sum_sq / self.measured as f64).sqrt();
            20.0 * (rms / f64::from(i16::MAX)).log10()
        })
    }
}

/// The picture size in a VP8 keyframe's header (RFC 6386 §9.1), or None for an interframe.
pub fn vp8_keyframe_size(frame: &[u8]) -> Option<(u16, u16)> {
    let is_key = frame.first()? & 1 == 0;
    if !is_key || frame.get(3..6)? != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u16::from_le_bytes([*frame.get(6)?, *frame.get(7)?]) & 0x3fff;
    let h = u16::from_le_bytes([*frame.get(8)?, *frame.get(9)?]) & 0x3fff;
    Some((w, h))
}

/// Whether an Annex B access unit contains an IDR slice.
pub fn is_h264_keyframe(data: &[u8]) -> bool {
    let mut i = 0;
    while i + 3 < data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            if data[i + 3] & 0x1f == 5 {
                return true;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    false
}

pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A temporary file path unique to this process and `name`.
pub fn temp_path(name: &str) -> PathBuf {
    pxs_test_support::scratch_dir(&format!("streamer-{name}")).join(name)
}
