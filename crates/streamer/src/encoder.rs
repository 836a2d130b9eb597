//! The video source: renders the test pattern and encodes it with openh264 on its own thread,
//! paced to the frame rate. One encoder serves every peer.
//!
//! The thread sleeps while no peer is connected ([`EncoderCommand::Active`]), so an idle streamer
//! costs no CPU. Commands (keyframe, resize, frame rate, overlay) are applied before the next
//! frame. Frames go to the network side through a small bounded channel; when it is full the
//! frame is dropped and the next one is forced to be a keyframe, so no receiver ever decodes
//! across a hole.

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
    /// H.264 Annex B (start codes), one access unit.
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
    let mut h264 = H264::new(&settings)?;
    let thread_stats = stats.clone();
    let thread = std::thread::Builder::new()
        .name("pxs-encoder".into())
        .spawn(move || run(settings, &mut h264, rx, sink, &thread_stats))?;
    Ok(EncoderHandle {
        tx,
        stats,
        thread: Some(thread),
    })
}

fn run(
    mut settings: EncoderSettings,
    h264: &mut H264,
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
                    h264.set_fps(fps);
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
                    h264.force_keyframe();
                }
                let started = Instant::now();
                match h264.encode(&pic) {
                    Ok(Some((data, keyframe))) => {
                        let frame = EncodedFrame {
                            data: data.into(),
                            number,
                            keyframe,
                            capture: now,
                            wall_ms,
                            width: settings.width,
                            height: settings.height,
                            encode_time: started.elapsed(),
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

/// openh264 set up for WebRTC: constrained baseline, one slice per frame (packetization-mode 1
/// splits it), bitrate rate control, no frame skipping.
struct H264 {
    encoder: Encoder,
    config: EncoderConfig,
    buf: Vec<u8>,
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
    fn encode(&mut self, pic: &I420) -> Result<Option<(Vec<u8>, bool)>, EncoderError> {
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
        Ok(Some((self.buf.clone(), keyframe)))
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

    #[test]
    fn frames_decode_to_the_pattern_and_resize_forces_a_keyframe() {
        let (tx, rx) = std::sync::mpsc::sync_channel(64);
        let enc = spawn(
            EncoderSettings {
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

    #[test]
    fn an_unchanged_frame_rate_does_not_rebuild_the_encoder_or_force_a_keyframe() {
        // Epic's frontend sends {"WebRTC.Fps":30} and {"WebRTC.MaxFps":30} twice each when its
        // data channel opens; each used to rebuild the encoder, a keyframe for every viewer.
        let (tx, rx) = std::sync::mpsc::sync_channel(256);
        let enc = spawn(
            EncoderSettings {
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
