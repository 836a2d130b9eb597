//! The video source: renders the test pattern and encodes it on its own thread, paced to the
//! frame rate: H.264 with openh264, or VP8 with libvpx (`-PixelStreamingEncoderCodec=VP8`). One
//! encoder serves every peer.
//!
//! The thread sleeps while no peer is connected ([`EncoderCommand::Active`]), so an idle streamer
//! costs no CPU. Commands (keyframe, resize, frame rate, overlay) are applied before the next
//! frame. Frames go to the network side through a small bounded channel; when it is full the
//! frame is dropped and the next one is forced to be a keyframe, so no receiver ever decodes
//! across a hole.

use crate::flags::Codec;
use crate::pattern::{self, I420, Overlay, Stamp};
use openh264::OpenH264API;
use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, Profile,
    RateControlMode, UsageType,
};
use openh264::formats::YUVSource;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One encoded picture, shared by every peer.
#[derive(Clone, Debug)]
pub struct EncodedFrame {
    /// One picture: H.264 Annex B (start codes, one access unit) or one VP8 frame.
    pub data: Arc<[u8]>,
    /// The frame number drawn on the picture.
    pub number: u32,
    pub keyframe: bool,
    /// When the picture was drawn (its capture time).
    pub capture: Instant,
    /// The wall-clock time drawn on the picture, in milliseconds since the Unix epoch.
    pub wall_ms: u64,
    pub width: u32,
    pub height: u32,
    pub encode_time: Duration,
    /// The frame's quantizer as read back from its headers (see [`crate::qp`]): H.264 slice QP
    /// 0..=51, VP8 q index 0..=127.
    pub qp: Option<u8>,
}

/// What the rest of the streamer asks of the encoder thread.
#[derive(Clone, Debug, PartialEq)]
pub enum EncoderCommand {
    /// Start (true) or stop (false) producing frames.
    Active(bool),
    /// The next frame is an IDR.
    Keyframe,
    Resize(u32, u32),
    SetFps(u32),
    /// Redraw the last-input overlay.
    Overlay(Overlay),
}

#[derive(Clone, Debug)]
pub struct EncoderSettings {
    pub codec: Codec,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub bitrate_bps: u32,
    pub keyframe_interval: Option<u32>,
}

/// Counters since the last [`EncoderStats::take`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StatsWindow {
    pub frames: u64,
    pub keyframes: u64,
    pub bytes: u64,
    pub dropped: u64,
    pub encode_total: Duration,
    pub encode_max: Duration,
    pub width: u32,
    pub height: u32,
}

/// Encoder counters, shared with whoever prints them.
#[derive(Default)]
pub struct EncoderStats {
    window: Mutex<StatsWindow>,
    total_frames: std::sync::atomic::AtomicU64,
}

impl EncoderStats {
    /// The counters since the previous call, and a fresh window.
    pub fn take(&self) -> StatsWindow {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let out = w.clone();
        *w = StatsWindow {
            width: out.width,
            height: out.height,
            ..Default::default()
        };
        out
    }

    pub fn total_frames(&self) -> u64 {
        self.total_frames.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn record(&self, f: &EncodedFrame) {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        w.frames += 1;
        w.keyframes += u64::from(f.keyframe);
        w.bytes += f.data.len() as u64;
        w.encode_total += f.encode_time;
        w.encode_max = w.encode_max.max(f.encode_time);
        w.width = f.width;
        w.height = f.height;
        self.total_frames
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn dropped(&self) {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        w.dropped += 1;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    #[error("openh264: {0}")]
    OpenH264(String),
    #[error("libvpx: {0}")]
    Vpx(String),
    #[error("VP8 is not in this build (no libvpx)")]
    NoVp8,
    #[error("cannot start the encoder thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// The handle of the running encoder thread; dropping it stops the thread.
pub struct EncoderHandle {
    tx: Sender<EncoderCommand>,
    pub stats: Arc<EncoderStats>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EncoderHandle {
    pub fn send(&self, cmd: EncoderCommand) {
        // The thread only ends when this handle is dropped or it failed; then commands are moot.
        let _ = self.tx.send(cmd);
    }
}

impl Drop for EncoderHandle {
    fn drop(&mut self) {
        // Replacing the sender disconnects the channel, which ends the thread's loop.
        let (tx, _) = std::sync::mpsc::channel();
        drop(std::mem::replace(&mut self.tx, tx));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Something that takes encoded frames; returns false when it has no room (the frame is dropped).
pub trait FrameSink: Send + 'static {
    fn offer(&mut self, frame: EncodedFrame) -> bool;
}

impl FrameSink for tokio::sync::mpsc::Sender<EncodedFrame> {
    fn offer(&mut self, frame: EncodedFrame) -> bool {
        self.try_send(frame).is_ok()
    }
}

/// Starts the encoder thread. It is idle until it gets `Active(true)`.
pub fn spawn(
    settings: EncoderSettings,
    sink: impl FrameSink,
) -> Result<EncoderHandle, EncoderError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let stats = Arc::new(EncoderStats::default());
    let thread_stats = stats.clone();
    // libvpx's encoder cannot move between threads: it is made on the thread that uses it, which
    // reports whether that worked before `spawn` returns.
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    let thread = std::thread::Builder::new()
        .name("pxs-encoder".into())
        .spawn(move || match VideoEncoder::new(&settings) {
            Ok(mut video) => {
                let _ = ready_tx.send(Ok(()));
                run(settings, &mut video, rx, sink, &thread_stats);
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e));
            }
        })?;
    match ready_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let _ = thread.join();
            return Err(e);
        }
        Err(_) => {
            let _ = thread.join();
            return Err(EncoderError::Thread(std::io::Error::other(
                "the encoder thread ended before it started",
            )));
        }
    }
    Ok(EncoderHandle {
        tx,
        stats,
        thread: Some(thread),
    })
}

fn run(
    mut settings: EncoderSettings,
    video: &mut VideoEncoder,
    rx: Receiver<EncoderCommand>,
    mut sink: impl FrameSink,
    stats: &EncoderStats,
) {
    let mut active = false;
    let mut overlay = Overlay::default();
    let mut pic = I420::new(settings.width as usize, settings.height as usize);
    let mut number: u32 = 0;
    let mut next = Instant::now();
    let mut force_key = true;
    loop {
        let interval = Duration::from_secs_f64(1.0 / f64::from(settings.fps.max(1)));
        let cmd = if active {
            rx.recv_timeout(next.saturating_duration_since(Instant::now()))
        } else {
            rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
        };
        match cmd {
            Ok(EncoderCommand::Active(a)) => {
                if a && !active {
                    next = Instant::now();
                    force_key = true;
                }
                active = a;
            }
            Ok(EncoderCommand::Keyframe) => force_key = true,
            Ok(EncoderCommand::Resize(w, h)) => {
                if (w, h) != (settings.width, settings.height) {
                    settings.width = w;
                    settings.height = h;
                    pic = I420::new(w as usize, h as usize);
                    force_key = true;
                }
            }
            Ok(EncoderCommand::SetFps(fps)) => {
                // A new rate rebuilds the encoder (its first frame is a keyframe), so an
                // unchanged one, which Epic's frontend sends on every data-channel open, must
                // change nothing.
                let fps = fps.clamp(1, 240);
                if fps != settings.fps {
                    settings.fps = fps;
                    video.set_fps(fps);
                }
            }
            Ok(EncoderCommand::Overlay(o)) => overlay = o,
            Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {
                let now = Instant::now();
                // Fell behind by more than a frame (slow encode, suspended process): skip ahead
                // rather than burst.
                if now > next + interval {
                    next = now;
                }
                next += interval;
                let wall_ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                pattern::render(
                    &mut pic,
                    Stamp {
                        frame: number,
                        wall_ms,
                        fps: settings.fps,
                    },
                    &overlay,
                );
                if let Some(n) = settings.keyframe_interval
                    && n > 0
                    && number.is_multiple_of(n)
                {
                    force_key = true;
                }
                if force_key {
                    video.force_keyframe();
                }
                let started = Instant::now();
                match video.encode(&pic) {
                    Ok(Some((data, keyframe, qp))) => {
                        let frame = EncodedFrame {
                            data: data.into(),
                            number,
                            keyframe,
                            capture: now,
                            wall_ms,
                            width: settings.width,
                            height: settings.height,
                            encode_time: started.elapsed(),
                            qp,
                        };
                        stats.record(&frame);
                        if keyframe {
                            force_key = false;
                        }
                        if !sink.offer(frame) {
                            stats.dropped();
                            force_key = true;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::error!("encoding frame {number} failed: {e}");
                        force_key = true;
                    }
                }
                number = number.wrapping_add(1);
            }
        }
    }
}

/// An encoded picture, whether it is a keyframe, and its QP (read from its headers).
type Encoded = (Vec<u8>, bool, Option<u8>);

/// The encoder of the configured codec.
enum VideoEncoder {
    /// Boxed: openh264's configuration is some 7 kB, and the enum lives on the thread's stack.
    H264(Box<H264>),
    #[cfg(unix)]
    Vp8(Vp8),
}

impl VideoEncoder {
    fn new(s: &EncoderSettings) -> Result<Self, EncoderError> {
        match s.codec {
            Codec::H264 => Ok(VideoEncoder::H264(Box::new(H264::new(s)?))),
            #[cfg(unix)]
            Codec::Vp8 => Ok(VideoEncoder::Vp8(Vp8::new(s)?)),
            #[cfg(not(unix))]
            Codec::Vp8 => Err(EncoderError::NoVp8),
        }
    }

    fn set_fps(&mut self, fps: u32) {
        match self {
            VideoEncoder::H264(e) => e.set_fps(fps),
            #[cfg(unix)]
            VideoEncoder::Vp8(e) => e.set_fps(fps),
        }
    }

    fn force_keyframe(&mut self) {
        match self {
            VideoEncoder::H264(e) => e.force_keyframe(),
            #[cfg(unix)]
            VideoEncoder::Vp8(e) => e.force_keyframe(),
        }
    }

    /// One encoded picture, whether it is a keyframe and its QP, or None when the encoder
    /// produced nothing for this picture.
    fn encode(&mut self, pic: &I420) -> Result<Option<Encoded>, EncoderError> {
        match self {
            VideoEncoder::H264(e) => e.encode(pic),
            #[cfg(unix)]
            VideoEncoder::Vp8(e) => e.encode(pic),
        }
    }
}

/// libvpx's VP8 encoder (through `vpx-encode`), real-time deadline, bitrate rate control.
///
/// `vpx-encode` takes no per-frame flags, so a keyframe on demand is made by starting a new
/// encoder, whose first frame is always a keyframe; the same happens on a resize or a new frame
/// rate. libvpx's defaults also put a keyframe at least every 128 frames.
#[cfg(unix)]
struct Vp8 {
    encoder: vpx_encode::Encoder,
    width: u32,
    height: u32,
    fps: u32,
    bitrate_kbps: u32,
    /// Frames given to this encoder (its timestamps, in frame periods).
    pts: i64,
    rebuild: bool,
    /// The picture as one I420 buffer (Y, then U, then V), as libvpx reads it.
    buf: Vec<u8>,
}

#[cfg(unix)]
impl Vp8 {
    fn encoder(
        width: u32,
        height: u32,
        fps: u32,
        bitrate_kbps: u32,
    ) -> Result<vpx_encode::Encoder, EncoderError> {
        vpx_encode::Encoder::new(vpx_encode::Config {
            width,
            height,
            timebase: [1, fps.max(1) as i32],
            bitrate: bitrate_kbps,
            codec: vpx_encode::VideoCodecId::VP8,
        })
        .map_err(|e| EncoderError::Vpx(e.to_string()))
    }

    fn new(s: &EncoderSettings) -> Result<Self, EncoderError> {
        let bitrate_kbps = (s.bitrate_bps / 1000).max(1);
        Ok(Vp8 {
            encoder: Self::encoder(s.width, s.height, s.fps, bitrate_kbps)?,
            width: s.width,
            height: s.height,
            fps: s.fps,
            bitrate_kbps,
            pts: 0,
            rebuild: false,
            buf: Vec::new(),
        })
    }

    fn set_fps(&mut self, fps: u32) {
        self.fps = fps;
        self.rebuild = true;
    }

    fn force_keyframe(&mut self) {
        self.rebuild = true;
    }

    fn encode(&mut self, pic: &I420) -> Result<Option<Encoded>, EncoderError> {
        let (w, h) = (pic.width as u32, pic.height as u32);
        if self.rebuild || (w, h) != (self.width, self.height) {
            self.encoder = Self::encoder(w, h, self.fps, self.bitrate_kbps)?;
            (self.width, self.height) = (w, h);
            self.pts = 0;
            self.rebuild = false;
        }
        self.buf.clear();
        self.buf.extend_from_slice(&pic.y);
        self.buf.extend_from_slice(&pic.u);
        self.buf.extend_from_slice(&pic.v);
        let pts = self.pts;
        self.pts += 1;
        // With no lag (libvpx's real-time default) a picture gives at most one frame.
        let packets = self
            .encoder
            .encode(pts, &self.buf)
            .map_err(|e| EncoderError::Vpx(e.to_string()))?;
        let mut out: Option<(Vec<u8>, bool)> = None;
        let mut extra = false;
        for frame in packets {
            if out.is_some() {
                extra = true;
            } else {
                out = Some((frame.data.to_vec(), frame.key));
            }
        }
        if extra {
            // Not expected without lag; a skipped frame breaks the chain, so restart it.
            tracing::warn!("libvpx returned more than one frame for a picture; next is a keyframe");
            self.rebuild = true;
        }
        Ok(out.filter(|(data, _)| !data.is_empty()).map(|(data, key)| {
            let qp = crate::qp::vp8_qindex(&data);
            (data, key, qp)
        }))
    }
}

/// openh264 set up for WebRTC: constrained baseline, one slice per frame (packetization-mode 1
/// splits it), bitrate rate control, no frame skipping.
struct H264 {
    encoder: Encoder,
    config: EncoderConfig,
    buf: Vec<u8>,
    qp: crate::qp::H264Qp,
}

impl H264 {
    fn config(s: &EncoderSettings) -> EncoderConfig {
        EncoderConfig::new()
            .bitrate(BitRate::from_bps(s.bitrate_bps))
            .max_frame_rate(FrameRate::from_hz(s.fps as f32))
            .rate_control_mode(RateControlMode::Bitrate)
            .skip_frames(false)
            .usage_type(UsageType::ScreenContentRealTime)
            // Neither is supported for screen content; openh264 warns unless they are off.
            .adaptive_quantization(false)
            .background_detection(false)
            .profile(Profile::Baseline)
            .intra_frame_period(IntraFramePeriod::from_num_frames(0))
            .num_threads(1)
    }

    fn new(s: &EncoderSettings) -> Result<Self, EncoderError> {
        let config = Self::config(s);
        let encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| EncoderError::OpenH264(e.to_string()))?;
        Ok(H264 {
            encoder,
            config,
            buf: Vec::new(),
            qp: crate::qp::H264Qp::default(),
        })
    }

    fn set_fps(&mut self, fps: u32) {
        self.config = self.config.max_frame_rate(FrameRate::from_hz(fps as f32));
        match Encoder::with_api_config(OpenH264API::from_source(), self.config) {
            Ok(e) => self.encoder = e,
            Err(e) => tracing::warn!("cannot change the frame rate: {e}"),
        }
    }

    fn force_keyframe(&mut self) {
        self.encoder.force_intra_frame();
    }

    /// One access unit, or None when the encoder produced nothing for this picture.
    fn encode(&mut self, pic: &I420) -> Result<Option<Encoded>, EncoderError> {
        let bs = self
            .encoder
            .encode(&Source(pic))
            .map_err(|e| EncoderError::OpenH264(e.to_string()))?;
        let keyframe = matches!(bs.frame_type(), FrameType::IDR | FrameType::I);
        if matches!(bs.frame_type(), FrameType::Skip | FrameType::Invalid) {
            return Ok(None);
        }
        self.buf.clear();
        bs.write_vec(&mut self.buf);
        if self.buf.is_empty() {
            return Ok(None);
        }
        let qp = self.qp.frame_qp(&self.buf);
        Ok(Some((self.buf.clone(), keyframe, qp)))
    }
}

struct Source<'a>(&'a I420);

impl YUVSource for Source<'_> {
    fn dimensions(&self) -> (usize, usize) {
        (self.0.width, self.0.height)
    }
    fn strides(&self) -> (usize, usize, usize) {
        (self.0.width, self.0.width / 2, self.0.width / 2)
    }
    fn y(&self) -> &[u8] {
        &self.0.y
    }
    fn u(&self) -> &[u8] {
        &self.0.u
    }
    fn v(&self) -> &[u8] {
        &self.0.v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openh264::decoder::Decoder;

    struct Collect(std::sync::mpsc::SyncSender<EncodedFrame>);
    impl FrameSink for Collect {
        fn offer(&mut self, f: EncodedFrame) -> bool {
            self.0.try_send(f).is_ok()
        }
    }

    /// An active 320x180 encoder of `codec` at 120 fps whose frames arrive on the receiver.
    fn active_encoder(codec: Codec) -> (EncoderHandle, std::sync::mpsc::Receiver<EncodedFrame>) {
        let (tx, rx) = std::sync::mpsc::sync_channel(64);
        let enc = spawn(
            EncoderSettings {
                codec,
                width: 320,
                height: 180,
                fps: 120,
                bitrate_bps: 1_000_000,
                keyframe_interval: None,
            },
            Collect(tx),
        )
        .expect("encoder starts");
        enc.send(EncoderCommand::Active(true));
        (enc, rx)
    }

    #[test]
    fn frames_decode_to_the_pattern_and_resize_forces_a_keyframe() {
        let (enc, rx) = active_encoder(Codec::H264);
        let mut decoder = Decoder::new().expect("decoder");
        let wait = Duration::from_secs(10);
        let first = rx.recv_timeout(wait).expect("a frame");
        assert!(first.keyframe, "the first frame is a keyframe");
        let mut frames = vec![first];
        for _ in 0..4 {
            frames.push(rx.recv_timeout(wait).expect("a frame"));
        }
        for f in &frames {
            let yuv = decoder
                .decode(&f.data)
                .expect("valid H.264")
                .expect("a picture");
            assert_eq!(yuv.dimensions(), (320, 180));
            let (ys, _, _) = yuv.strides();
            let r = pattern::read_strip(yuv.y(), 320, 180, ys).expect("strip readable");
            assert_eq!((r.frame, r.wall_ms), (f.number, f.wall_ms));
        }
        assert!(
            frames[1..].iter().any(|f| !f.keyframe),
            "delta frames follow"
        );
        enc.send(EncoderCommand::Resize(640, 360));
        let resized = loop {
            let f = rx.recv_timeout(wait).expect("a frame");
            if f.width == 640 {
                break f;
            }
        };
        assert!(resized.keyframe);
        let yuv = decoder
            .decode(&resized.data)
            .expect("valid")
            .expect("picture");
        assert_eq!(yuv.dimensions(), (640, 360));
        enc.send(EncoderCommand::Keyframe);
        let key = (0..20)
            .map(|_| rx.recv_timeout(wait).expect("a frame"))
            .find(|f| f.keyframe);
        assert!(key.is_some(), "a requested keyframe arrives");
        let s = enc.stats.take();
        assert!(s.frames >= 7 && s.bytes > 0 && s.keyframes >= 2, "{s:?}");
    }

    /// The picture size in a VP8 keyframe's header (RFC 6386 §9.1); None for an interframe.
    #[cfg(unix)]
    fn vp8_keyframe_size(frame: &[u8]) -> Option<(u32, u32)> {
        if frame.first()? & 1 != 0 || frame.get(3..6)? != [0x9d, 0x01, 0x2a] {
            return None;
        }
        let w = u16::from_le_bytes([*frame.get(6)?, *frame.get(7)?]) & 0x3fff;
        let h = u16::from_le_bytes([*frame.get(8)?, *frame.get(9)?]) & 0x3fff;
        Some((w.into(), h.into()))
    }

    #[cfg(unix)]
    #[test]
    fn vp8_frames_have_keyframes_where_asked_and_at_the_new_size() {
        let (enc, rx) = active_encoder(Codec::Vp8);
        let wait = Duration::from_secs(10);
        let first = rx.recv_timeout(wait).expect("a frame");
        assert!(first.keyframe, "the first frame is a keyframe");
        assert_eq!(vp8_keyframe_size(&first.data), Some((320, 180)));
        let deltas: Vec<EncodedFrame> = (0..5)
            .map(|_| rx.recv_timeout(wait).expect("a frame"))
            .collect();
        for f in &deltas {
            assert!(!f.keyframe, "no keyframe without a reason");
            assert_eq!(f.data[0] & 1, 1, "the VP8 header says interframe");
        }
        enc.send(EncoderCommand::Keyframe);
        let key = (0..20)
            .map(|_| rx.recv_timeout(wait).expect("a frame"))
            .find(|f| f.keyframe)
            .expect("a requested keyframe arrives");
        assert_eq!(vp8_keyframe_size(&key.data), Some((320, 180)));
        enc.send(EncoderCommand::Resize(640, 360));
        let resized = loop {
            let f = rx.recv_timeout(wait).expect("a frame");
            if f.width == 640 {
                break f;
            }
        };
        assert!(resized.keyframe);
        assert_eq!(vp8_keyframe_size(&resized.data), Some((640, 360)));
    }

    #[test]
    fn an_unchanged_frame_rate_does_not_rebuild_the_encoder_or_force_a_keyframe() {
        // Epic's frontend sends {"WebRTC.Fps":30} and {"WebRTC.MaxFps":30} twice each when its
        // data channel opens; each used to rebuild the encoder, a keyframe for every viewer.
        let (tx, rx) = std::sync::mpsc::sync_channel(256);
        let enc = spawn(
            EncoderSettings {
                codec: Codec::H264,
                width: 320,
                height: 180,
                fps: 60,
                bitrate_bps: 1_000_000,
                keyframe_interval: None,
            },
            Collect(tx),
        )
        .expect("encoder starts");
        enc.send(EncoderCommand::Active(true));
        let wait = Duration::from_secs(10);
        assert!(rx.recv_timeout(wait).expect("a frame").keyframe);
        for _ in 0..4 {
            enc.send(EncoderCommand::SetFps(60));
        }
        let keyframes = (0..30)
            .map(|_| rx.recv_timeout(wait).expect("a frame"))
            .filter(|f| f.keyframe)
            .count();
        assert_eq!(keyframes, 0, "no keyframe without a reason");
    }
}
