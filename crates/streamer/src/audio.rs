//! The audio source: a quiet sine tone encoded with libopus on its own small thread, paced by
//! real time. One encoder serves every peer, as the video encoder does.
//!
//! A UE app offers audio with its video (the game's sound mix); our stand-in sends a 440 Hz tone
//! at -30 dBFS (peak), 48 kHz mono, in 20 ms Opus packets, so a player can check that audio
//! arrives and decodes. Like the video thread, it sleeps while no peer is connected
//! ([`AudioCommand::Active`]). Packets carry the time they stand for on a 20 ms grid, so their
//! RTP timestamps advance by exactly 960 samples per packet however late the thread wakes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

/// Opus's RTP clock and our sample rate.
pub const SAMPLE_RATE: u32 = 48_000;
/// Samples per packet: 20 ms at 48 kHz.
pub const PACKET_SAMPLES: usize = 960;
pub const PACKET_DURATION: Duration = Duration::from_millis(20);
/// The tone.
pub const TONE_HZ: f64 = 440.0;
/// Peak level of the tone in dBFS: audible, quiet.
pub const TONE_DBFS: f64 = -30.0;
const BITRATE_BPS: i32 = 32_000;
/// The largest Opus packet we accept from the encoder (RFC 6716 allows 1275 bytes per frame).
const MAX_PACKET: usize = 1500;

/// One encoded 20 ms Opus packet, shared by every peer.
#[derive(Clone, Debug)]
pub struct EncodedAudio {
    pub data: Arc<[u8]>,
    /// The time the packet's first sample stands for (on the thread's 20 ms grid).
    pub capture: Instant,
    /// Samples (per channel) in the packet.
    pub samples: u32,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AudioCommand {
    /// Start (true) or stop (false) producing packets.
    Active(bool),
}

#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("opus: {0}")]
    Opus(#[from] opus::Error),
    #[error("cannot start the audio thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// Something that takes encoded packets; returns false when it has no room (the packet is
/// dropped: a 20 ms gap, which a receiver conceals).
pub trait AudioSink: Send + 'static {
    fn offer(&mut self, packet: EncodedAudio) -> bool;
}

impl AudioSink for tokio::sync::mpsc::Sender<EncodedAudio> {
    fn offer(&mut self, packet: EncodedAudio) -> bool {
        self.try_send(packet).is_ok()
    }
}

/// Counters of the audio thread.
#[derive(Default)]
pub struct AudioStats {
    packets: AtomicU64,
    bytes: AtomicU64,
    dropped: AtomicU64,
}

impl AudioStats {
    pub fn packets(&self) -> u64 {
        self.packets.load(Ordering::Relaxed)
    }
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The handle of the running audio thread; dropping it stops the thread.
pub struct AudioHandle {
    tx: Sender<AudioCommand>,
    pub stats: Arc<AudioStats>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AudioHandle {
    pub fn send(&self, cmd: AudioCommand) {
        // The thread only ends when this handle is dropped; then commands are moot.
        let _ = self.tx.send(cmd);
    }
}

impl Drop for AudioHandle {
    fn drop(&mut self) {
        let (tx, _) = std::sync::mpsc::channel();
        drop(std::mem::replace(&mut self.tx, tx));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A phase-continuous sine, 16-bit mono.
pub struct Tone {
    phase: f64,
    step: f64,
    amplitude: f64,
}

impl Tone {
    pub fn new(hz: f64, dbfs: f64) -> Tone {
        Tone {
            phase: 0.0,
            step: std::f64::consts::TAU * hz / f64::from(SAMPLE_RATE),
            amplitude: f64::from(i16::MAX) * 10f64.powf(dbfs / 20.0),
        }
    }

    /// Fills `out` with the next samples.
    pub fn fill(&mut self, out: &mut [i16]) {
        for s in out {
            *s = (self.amplitude * self.phase.sin()).round() as i16;
            self.phase = (self.phase + self.step) % std::f64::consts::TAU;
        }
    }
}

/// The tone's encoder: libopus, 48 kHz mono, 32 kbit/s, 20 ms frames.
pub struct ToneEncoder {
    tone: Tone,
    opus: opus::Encoder,
    pcm: Vec<i16>,
    buf: Vec<u8>,
}

impl ToneEncoder {
    pub fn new() -> Result<Self, AudioError> {
        let mut opus =
            opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Audio)?;
        opus.set_bitrate(opus::Bitrate::Bits(BITRATE_BPS))?;
        Ok(ToneEncoder {
            tone: Tone::new(TONE_HZ, TONE_DBFS),
            opus,
            pcm: vec![0; PACKET_SAMPLES],
            buf: vec![0; MAX_PACKET],
        })
    }

    /// The next 20 ms of the tone as one Opus packet.
    pub fn next_packet(&mut self) -> Result<Vec<u8>, AudioError> {
        self.tone.fill(&mut self.pcm);
        let n = self.opus.encode(&self.pcm, &mut self.buf)?;
        Ok(self.buf[..n].to_vec())
    }
}

/// Starts the audio thread. It is idle until it gets `Active(true)`.
pub fn spawn(sink: impl AudioSink) -> Result<AudioHandle, AudioError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let stats = Arc::new(AudioStats::default());
    let encoder = ToneEncoder::new()?;
    let thread_stats = stats.clone();
    let thread = std::thread::Builder::new()
        .name("pxs-audio".into())
        .spawn(move || run(encoder, rx, sink, &thread_stats))?;
    Ok(AudioHandle {
        tx,
        stats,
        thread: Some(thread),
    })
}

fn run(
    mut encoder: ToneEncoder,
    rx: Receiver<AudioCommand>,
    mut sink: impl AudioSink,
    stats: &AudioStats,
) {
    let mut active = false;
    let mut next = Instant::now();
    loop {
        let cmd = if active {
            rx.recv_timeout(next.saturating_duration_since(Instant::now()))
        } else {
            rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
        };
        match cmd {
            Ok(AudioCommand::Active(a)) => {
                if a && !active {
                    next = Instant::now();
                }
                active = a;
            }
            Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {
                let now = Instant::now();
                // Far behind (a suspended process): restart the grid rather than burst.
                if now > next + 5 * PACKET_DURATION {
                    next = now;
                }
                let capture = next;
                next += PACKET_DURATION;
                match encoder.next_packet() {
                    Ok(data) => {
                        stats.packets.fetch_add(1, Ordering::Relaxed);
                        stats.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                        let packet = EncodedAudio {
                            data: data.into(),
                            capture,
                            samples: PACKET_SAMPLES as u32,
                        };
                        if !sink.offer(packet) {
                            stats.dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) => tracing::error!("encoding audio failed: {e}"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Collect(std::sync::mpsc::SyncSender<EncodedAudio>);
    impl AudioSink for Collect {
        fn offer(&mut self, p: EncodedAudio) -> bool {
            self.0.try_send(p).is_ok()
        }
    }

    fn rms_dbfs(pcm: &[i16]) -> f64 {
        let sum: f64 = pcm.iter().map(|&s| f64::from(s).powi(2)).sum();
        let rms = (sum / pcm.len() as f64).sqrt();
        20.0 * (rms / f64::from(i16::MAX)).log10()
    }

    #[test]
    fn the_tone_is_440_hz_at_minus_30_dbfs_peak() {
        let mut tone = Tone::new(TONE_HZ, TONE_DBFS);
        let mut pcm = vec![0i16; SAMPLE_RATE as usize];
        tone.fill(&mut pcm);
        let peak = pcm.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
        assert!((1030..=1040).contains(&peak), "peak {peak}");
        // A sine's RMS is 3 dB under its peak.
        let rms = rms_dbfs(&pcm);
        assert!((-33.3..=-32.7).contains(&rms), "rms {rms} dBFS");
        // 440 upward zero crossings in one second.
        let ups = pcm.windows(2).filter(|w| w[0] < 0 && w[1] >= 0).count();
        assert!((439..=441).contains(&ups), "{ups} cycles");
    }

    #[test]
    fn packets_decode_back_to_the_tone_and_come_every_20_ms() {
        let (tx, rx) = std::sync::mpsc::sync_channel(64);
        let audio = spawn(Collect(tx)).expect("audio starts");
        audio.send(AudioCommand::Active(true));
        let wait = Duration::from_secs(10);
        let packets: Vec<EncodedAudio> = (0..50)
            .map(|_| rx.recv_timeout(wait).expect("a packet"))
            .collect();
        let mut decoder = opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono).expect("decoder");
        let mut pcm = Vec::new();
        for p in &packets {
            assert_eq!(p.samples, PACKET_SAMPLES as u32);
            let mut out = vec![0i16; PACKET_SAMPLES];
            let n = decoder
                .decode(&p.data, &mut out, false)
                .expect("valid Opus");
            assert_eq!(n, PACKET_SAMPLES);
            pcm.extend_from_slice(&out);
        }
        for w in packets.windows(2) {
            assert_eq!(w[1].capture - w[0].capture, PACKET_DURATION, "on the grid");
        }
        // Skip the codec's start-up; the rest is the tone at its level.
        let rms = rms_dbfs(&pcm[PACKET_SAMPLES * 5..]);
        assert!((-35.0..=-31.0).contains(&rms), "decoded rms {rms} dBFS");
        let span = packets[49].capture - packets[0].capture;
        assert_eq!(span, PACKET_DURATION * 49);
        audio.send(AudioCommand::Active(false));
        assert!(audio.stats.packets() >= 50);
    }
}
