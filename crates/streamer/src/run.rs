//! The shell: sockets, clock, encoder threads and output files around [`StreamerCore`].
//!
//! One task owns everything: the signalling WebSocket, one UDP socket shared by all peers
//! (datagrams are routed to the peer whose ICE session accepts them), the channels of encoded
//! video frames and audio packets, and the core. It reconnects to signalling with backoff when the socket drops, as UE
//! does. `--hang-after` freezes this task while every socket stays open.

use crate::audio::{self, AudioCommand, AudioHandle, EncodedAudio};
use crate::core::{CoreConfig, CoreOutput, Note, StreamerCore};
use crate::encoder::{self, EncodedFrame, EncoderCommand, EncoderHandle, EncoderSettings};
use crate::flags::Settings;
use crate::rtc::PeerConfig;
use crate::session::StreamerInfo;
use futures_util::{SinkExt, StreamExt};
use pxs_protocol::signalling::{ClientMessage, ServerMessage};
use serde_json::json;
use std::future::Future;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::time::{Instant as TokioInstant, sleep_until};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Socket buffers: a 1080p keyframe is ~100 packets; the default 200 kB drops bursts.
const UDP_BUFFER: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Encoder(#[from] encoder::EncoderError),
    #[error(transparent)]
    Audio(#[from] audio::AudioError),
    #[error("cannot open the input log {path}: {source}")]
    InputLog {
        path: String,
        source: std::io::Error,
    },
    #[error("UDP socket: {0}")]
    Udp(std::io::Error),
}

/// Runs the streamer until `shutdown` completes.
pub async fn run(settings: Settings, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let mut shutdown = pin!(shutdown);
    let started = TokioInstant::now();
    let mut out = Outputs::new(&settings)?;
    let (frames_tx, mut frames_rx) = mpsc::channel::<EncodedFrame>(4);
    let video = encoder::spawn(
        EncoderSettings {
            codec: settings.codec,
            width: settings.width,
            height: settings.height,
            fps: settings.max_fps,
            bitrate_bps: settings.bitrate_bps,
            keyframe_interval: settings.keyframe_interval,
        },
        frames_tx,
    )?;
    // The sender is kept even without audio, so that the receiver never reports a closed channel.
    let (audio_tx, mut audio_rx) = mpsc::channel::<EncodedAudio>(8);
    let audio = if settings.audio {
        Some(audio::spawn(audio_tx.clone())?)
    } else {
        None
    };
    let _audio_tx = audio_tx;
    let media = Sources { video, audio };
    let mut core = StreamerCore::new(
        CoreConfig {
            streamer_id: settings.streamer_id.clone(),
            peer: PeerConfig {
                initial_bitrate_bps: u64::from(settings.bitrate_bps).max(2_000_000) * 2,
                video_codec: settings.codec,
                audio: settings.audio,
            },
            info: StreamerInfo {
                allow_commands: settings.allow_commands,
                disable_latency_tester: settings.disable_latency_tester,
                fps: settings.max_fps,
                bitrate_bps: settings.bitrate_bps,
            },
        },
        (Instant::now(), wall_ms()),
    );
    if !settings.ignored.is_empty() {
        tracing::info!("ignored arguments: {}", settings.ignored.join(" "));
    }
    out.event(json!({
        "event": "started",
        "streamer_id": settings.streamer_id,
        "signalling_url": pxs_protocol::secret::redact_query(&settings.signalling_url),
        "width": settings.width,
        "height": settings.height,
        "fps": settings.max_fps,
        "pid": std::process::id(),
        // The UE flags and words it ignored, exactly as received: tests check that arguments
        // with spaces and quotes reach the application unchanged.
        "ignored": settings.ignored,
    }));

    let hang_at = settings.faults.hang_after.map(|d| started + d);
    let mut stats = Stats::new(settings.stats_interval, started);

    if let Some(delay) = settings.faults.start_delay {
        tracing::info!("start delay: {delay:?}");
        let until = started + delay;
        loop {
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = sleep_until(until) => break,
                _ = maybe_sleep_until(hang_at) => return hang(shutdown, &media, &mut out).await,
                _ = stats.tick() => stats.print(&media, &core, &mut out),
            }
        }
    }
    if settings.faults.no_signalling {
        tracing::info!("--no-signalling: running without connecting");
        loop {
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = maybe_sleep_until(hang_at) => return hang(shutdown, &media, &mut out).await,
                _ = stats.tick() => stats.print(&media, &core, &mut out),
            }
        }
    }

    let mut backoff = BACKOFF_MIN;
    let mut udp: Option<UdpSocket> = None;
    loop {
        tracing::info!(url = %pxs_protocol::secret::redact_query(&settings.signalling_url), "connecting to signalling");
        let connect = tokio_tungstenite::connect_async(settings.signalling_url.as_str());
        let result = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = maybe_sleep_until(hang_at) => return hang(shutdown, &media, &mut out).await,
            r = connect => r,
        };
        match result {
            Ok((mut ws, _)) => {
                let local_ip = local_ip(&ws);
                let ip = settings
                    .ice_ip
                    .or(local_ip)
                    .unwrap_or([127, 0, 0, 1].into());
                let sock = match udp.take() {
                    Some(s) if s.local_addr().map(|a| a.ip()).ok() == Some(ip) => s,
                    _ => bind_udp(ip).map_err(RunError::Udp)?,
                };
                let host = sock.local_addr().map_err(RunError::Udp)?;
                tracing::info!(%host, "signalling connected; ICE host candidate");
                out.event(json!({"event": "signalling_connected", "udp": host.to_string()}));
                core.signalling_up(host);
                let ended = connection(
                    &mut ws,
                    &sock,
                    &mut core,
                    &mut frames_rx,
                    &mut audio_rx,
                    &media,
                    &mut out,
                    &mut stats,
                    &settings,
                    hang_at,
                    &mut shutdown,
                    &mut backoff,
                )
                .await;
                match ended {
                    Ended::Shutdown => {
                        let _ = ws.close(None).await;
                        return Ok(());
                    }
                    Ended::Hang => {
                        // Keep the WebSocket and the UDP socket open, answer nothing.
                        let _keep = (ws, sock);
                        return hang(shutdown, &media, &mut out).await;
                    }
                    Ended::Lost => {
                        core.signalling_down(Instant::now());
                        flush(&mut core, None, Some(&sock), &media, &mut out).await;
                        out.event(json!({"event": "signalling_lost"}));
                        udp = Some(sock);
                    }
                }
            }
            Err(e) => tracing::warn!("cannot connect to signalling: {e}"),
        }
        tracing::info!("reconnecting in {backoff:?}");
        let until = TokioInstant::now() + backoff;
        backoff = (backoff * 2).min(BACKOFF_MAX);
        loop {
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = sleep_until(until) => break,
                _ = maybe_sleep_until(hang_at) => return hang(shutdown, &media, &mut out).await,
                _ = stats.tick() => stats.print(&media, &core, &mut out),
                // Frames may still come while the encoder learns it is idle.
                f = frames_rx.recv() => { let _ = f; }
                a = audio_rx.recv() => { let _ = a; }
            }
        }
    }
}

enum Ended {
    Shutdown,
    Hang,
    Lost,
}

#[allow(clippy::too_many_arguments)]
async fn connection(
    ws: &mut Ws,
    udp: &UdpSocket,
    core: &mut StreamerCore,
    frames_rx: &mut mpsc::Receiver<EncodedFrame>,
    audio_rx: &mut mpsc::Receiver<EncodedAudio>,
    media: &Sources,
    out: &mut Outputs,
    stats: &mut Stats,
    settings: &Settings,
    hang_at: Option<TokioInstant>,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    backoff: &mut Duration,
) -> Ended {
    let mut buf = vec![0u8; 2000];
    let local = udp.local_addr().ok();
    let mut keepalive = settings.keepalive.map(|d| {
        let mut i = tokio::time::interval_at(TokioInstant::now() + d, d);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    loop {
        let timeout = core.poll_timeout().map(TokioInstant::from_std);
        tokio::select! {
            _ = &mut *shutdown => return Ended::Shutdown,
            _ = maybe_sleep_until(hang_at) => return Ended::Hang,
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => match ServerMessage::from_json(text.as_str()) {
                    Ok(m) => {
                        if matches!(m, ServerMessage::EndpointIdConfirm { .. }) {
                            *backoff = BACKOFF_MIN;
                        }
                        core.handle_signal(m, Instant::now());
                    }
                    Err(e) => tracing::warn!("unreadable signalling message: {e}"),
                },
                Some(Ok(Message::Binary(b))) => match std::str::from_utf8(&b).ok().map(ServerMessage::from_json) {
                    Some(Ok(m)) => core.handle_signal(m, Instant::now()),
                    _ => tracing::warn!("unreadable binary signalling message"),
                },
                Some(Ok(Message::Close(frame))) => {
                    tracing::warn!("signalling closed: {frame:?}");
                    return Ended::Lost;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::warn!("signalling error: {e}");
                    return Ended::Lost;
                }
                None => {
                    tracing::warn!("signalling connection ended");
                    return Ended::Lost;
                }
            },
            r = udp.recv_from(&mut buf) => match r {
                Ok((n, source)) => {
                    if let Some(local) = local {
                        core.handle_datagram(source, local, &buf[..n], Instant::now());
                    }
                }
                Err(e) => tracing::debug!("udp receive: {e}"),
            },
            f = frames_rx.recv() => {
                if let Some(f) = f {
                    core.handle_frame(&f, Instant::now());
                }
            }
            a = audio_rx.recv() => {
                if let Some(a) = a {
                    core.handle_audio(&a, Instant::now());
                }
            }
            _ = maybe_sleep_until(timeout) => core.handle_timeout(Instant::now()),
            _ = async { match keepalive.as_mut() { Some(k) => { k.tick().await; } None => std::future::pending().await } } => {
                let time = serde_json::Number::from(wall_ms());
                let _ = ws.send(Message::Text(ClientMessage::Ping { time }.to_json().into())).await;
            }
            _ = stats.tick() => stats.print(media, core, out),
        }
        if !flush(core, Some(ws), Some(udp), media, out).await {
            return Ended::Lost;
        }
    }
}

/// Carries the core's outputs out. Returns false if the WebSocket failed.
async fn flush(
    core: &mut StreamerCore,
    mut ws: Option<&mut Ws>,
    udp: Option<&UdpSocket>,
    media: &Sources,
    out: &mut Outputs,
) -> bool {
    let mut ok = true;
    while let Some(o) = core.poll_output() {
        match o {
            CoreOutput::Signal(msg) => {
                if let Some(ws) = ws.as_deref_mut()
                    && let Err(e) = ws.send(Message::Text(msg.to_json().into())).await
                {
                    tracing::warn!("cannot send to signalling: {e}");
                    ok = false;
                }
            }
            CoreOutput::Transmit(t) => {
                if let Some(udp) = udp
                    && let Err(e) = udp.send_to(&t.contents, t.destination).await
                {
                    tracing::debug!(destination = %t.destination, "udp send: {e}");
                }
            }
            CoreOutput::Encoder(cmd) => media.send(cmd),
            CoreOutput::Input(record) => out.input(&record.to_json_line()),
            CoreOutput::Note(n) => out.event(match n {
                Note::Registered { committed_id } => {
                    json!({"event": "registered", "streamer_id": committed_id})
                }
                Note::PlayerConnected(p) => json!({"event": "player_connected", "player_id": p}),
                Note::PeerConnected(p) => json!({"event": "peer_connected", "player_id": p}),
                Note::PlayerDisconnected(p) => {
                    json!({"event": "player_disconnected", "player_id": p})
                }
            }),
        }
    }
    ok
}

/// The media sources: the video encoder thread and, unless disabled, the audio thread. Both run
/// while any peer exists (`EncoderCommand::Active`).
struct Sources {
    video: EncoderHandle,
    audio: Option<AudioHandle>,
}

impl Sources {
    fn send(&self, cmd: EncoderCommand) {
        if let (EncoderCommand::Active(on), Some(audio)) = (&cmd, &self.audio) {
            audio.send(AudioCommand::Active(*on));
        }
        self.video.send(cmd);
    }
}

/// Freezes: the encoders stop, nothing is read or answered; only shutdown ends it.
async fn hang(
    shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
    media: &Sources,
    out: &mut Outputs,
) -> Result<(), RunError> {
    tracing::warn!("--hang-after: hanging now (sockets stay open, nothing is answered)");
    out.event(json!({"event": "hang"}));
    media.send(EncoderCommand::Active(false));
    shutdown.await;
    Ok(())
}

async fn maybe_sleep_until(t: Option<TokioInstant>) {
    match t {
        Some(t) => sleep_until(t).await,
        None => std::future::pending().await,
    }
}

fn local_ip(ws: &Ws) -> Option<IpAddr> {
    match ws.get_ref() {
        MaybeTlsStream::Plain(s) => s.local_addr().ok().map(|a| a.ip()),
        MaybeTlsStream::Rustls(s) => s.get_ref().0.local_addr().ok().map(|a| a.ip()),
        _ => None,
    }
}

fn bind_udp(ip: IpAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let addr = SocketAddr::new(ip, 0);
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = sock.set_recv_buffer_size(UDP_BUFFER);
    let _ = sock.set_send_buffer_size(UDP_BUFFER);
    sock.bind(&addr.into())?;
    sock.set_nonblocking(true)?;
    UdpSocket::from_std(sock.into())
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Stdout JSON lines and the input log.
struct Outputs {
    input_log: Option<std::io::BufWriter<std::fs::File>>,
}

impl Outputs {
    fn new(settings: &Settings) -> Result<Self, RunError> {
        let input_log = match &settings.input_log {
            Some(path) => Some(std::io::BufWriter::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| RunError::InputLog {
                        path: path.display().to_string(),
                        source,
                    })?,
            )),
            None => None,
        };
        Ok(Outputs { input_log })
    }

    fn input(&mut self, line: &str) {
        if let Some(f) = self.input_log.as_mut() {
            // Flushed per line: tests tail this file.
            let r = writeln!(f, "{line}").and_then(|()| f.flush());
            if let Err(e) = r {
                tracing::warn!("cannot write the input log: {e}");
            }
        }
    }

    fn event(&mut self, v: serde_json::Value) {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{v}");
        let _ = stdout.flush();
    }
}

struct Stats {
    interval: Option<tokio::time::Interval>,
    last: TokioInstant,
}

impl Stats {
    fn new(every: Option<Duration>, start: TokioInstant) -> Self {
        Stats {
            interval: every.filter(|d| !d.is_zero()).map(|d| {
                let mut i = tokio::time::interval_at(start + d, d);
                i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                i
            }),
            last: start,
        }
    }

    async fn tick(&mut self) {
        match self.interval.as_mut() {
            Some(i) => {
                i.tick().await;
            }
            None => std::future::pending().await,
        }
    }

    fn print(&mut self, media: &Sources, core: &StreamerCore, out: &mut Outputs) {
        let now = TokioInstant::now();
        let secs = now.duration_since(self.last).as_secs_f64().max(1e-3);
        self.last = now;
        let w = media.video.stats.take();
        let avg_ms = if w.frames > 0 {
            w.encode_total.as_secs_f64() * 1000.0 / w.frames as f64
        } else {
            0.0
        };
        out.event(json!({
            "event": "stats",
            "frames": w.frames,
            "frames_total": media.video.stats.total_frames(),
            "keyframes": w.keyframes,
            "dropped": w.dropped,
            "fps": round2(w.frames as f64 / secs),
            "bitrate_kbps": round2(w.bytes as f64 * 8.0 / secs / 1000.0),
            "encode_ms_avg": round2(avg_ms),
            "encode_ms_max": round2(w.encode_max.as_secs_f64() * 1000.0),
            "width": w.width,
            "height": w.height,
            "audio_packets_total": media.audio.as_ref().map_or(0, |a| a.stats.packets()),
            "players": core.peer_count(),
            "connected": core.connected_count(),
        }));
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}
