//! One WebRTC peer connection to one player, on top of str0m (sans-IO).
//!
//! This is the only module that uses str0m, whose API changes often: everything else speaks
//! [`Peer`], [`PeerEvent`] and [`Transmit`]. A peer never reads the clock or touches a socket:
//! the caller passes `now`, feeds received datagrams in and sends [`Transmit`]s out.
//!
//! str0m requires that every mutation is followed by draining its output until it returns a
//! timeout; each mutating method here does that drain itself and queues what came out.

use crate::audio::EncodedAudio;
use crate::encoder::EncodedFrame;
use crate::flags::Codec as VideoCodec;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use str0m::bwe::Bitrate;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::{ChannelConfig, ChannelId, Reliability};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcError};

/// The label of the streamer-created data channel, as UE and Epic's frontend use it.
pub const DATA_CHANNEL_LABEL: &str = "datachannel";
/// Chromium's payload types for H.264 constrained baseline, packetization-mode 1
/// (profile-level-id 42e01f) and its RTX.
const H264_PT: u8 = 108;
const H264_RTX_PT: u8 = 109;
const H264_PROFILE_LEVEL_ID: u32 = 0x42e01f;

/// What a peer reports to the streamer.
#[derive(Clone, Debug, PartialEq)]
pub enum PeerEvent {
    /// ICE and DTLS are up: media can flow.
    Connected,
    /// ICE gave up, or the remote closed the connection.
    Disconnected,
    /// The player asked for a keyframe (PLI or FIR).
    KeyframeRequest,
    /// The input data channel opened.
    ChannelOpen,
    /// A binary (or text) message arrived on the data channel.
    ChannelData(Vec<u8>),
    ChannelClosed,
}

/// A datagram to send.
#[derive(Clone, Debug, PartialEq)]
pub struct Transmit {
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("webrtc: {0}")]
    Rtc(#[from] RtcError),
    #[error("bad SDP: {0}")]
    Sdp(String),
    #[error("bad ICE candidate: {0}")]
    Candidate(String),
    #[error("got an answer but no offer is pending")]
    NoPendingOffer,
    #[error("the offer has no video we can send")]
    NoVideo,
}

/// Tuning for new peers.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    /// The bandwidth estimate to start from; str0m paces at twice the estimate.
    pub initial_bitrate_bps: u64,
    /// The one video codec we offer and send.
    pub video_codec: VideoCodec,
    /// Offer (and send) Opus audio.
    pub audio: bool,
}

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig {
            initial_bitrate_bps: 4_000_000,
            video_codec: VideoCodec::H264,
            audio: true,
        }
    }
}

pub struct Peer {
    rtc: Rtc,
    video_codec: VideoCodec,
    video: Option<Mid>,
    pt: Option<Pt>,
    audio: Option<Mid>,
    audio_pt: Option<Pt>,
    /// Media time zero of the audio (the capture time of the first packet we wrote).
    audio_epoch: Option<Instant>,
    channel: Option<ChannelId>,
    pending: Option<SdpPendingOffer>,
    events: VecDeque<PeerEvent>,
    transmits: VecDeque<Transmit>,
    timeout: Instant,
    connected: bool,
    /// The player has been sent a keyframe since it connected: deltas may follow.
    has_keyframe: bool,
    /// Media time zero (the capture time of the first frame we wrote).
    media_epoch: Option<Instant>,
    dead: bool,
}

/// One video codec (the one the encoder makes) and, if enabled, Opus. The payload types are
/// Chromium's own (H.264 constrained baseline 108/109, VP8 96/97, Opus 111), so a browser's
/// answer keeps them.
fn build_rtc(cfg: &PeerConfig, now: Instant) -> Rtc {
    let mut b = Rtc::builder()
        .clear_codecs()
        .enable_bwe(Some(Bitrate::bps(cfg.initial_bitrate_bps)));
    match cfg.video_codec {
        VideoCodec::H264 => b.codec_config().add_h264(
            H264_PT.into(),
            Some(H264_RTX_PT.into()),
            true,
            H264_PROFILE_LEVEL_ID,
        ),
        VideoCodec::Vp8 => b.codec_config().enable_vp8(true),
    }
    if cfg.audio {
        // Without RED: Epic's frontend and UE negotiate plain Opus.
        b.codec_config().enable_opus(true, false);
    }
    b.build(now)
}

impl Peer {
    fn empty(rtc: Rtc, cfg: &PeerConfig, now: Instant) -> Peer {
        Peer {
            rtc,
            video_codec: cfg.video_codec,
            video: None,
            pt: None,
            audio: None,
            audio_pt: None,
            audio_epoch: None,
            channel: None,
            pending: None,
            events: VecDeque::new(),
            transmits: VecDeque::new(),
            timeout: now,
            connected: false,
            has_keyframe: false,
            media_epoch: None,
            dead: false,
        }
    }

    /// A new peer that offers, as UE does: sendonly video, sendonly Opus audio (unless disabled)
    /// and, when `data_channel` (the signalling server's `playerConnected{dataChannel}`), the
    /// in-band `datachannel` that carries the player's input; with `host` as its only ICE
    /// candidate. Returns the offer SDP.
    pub fn offer(
        host: SocketAddr,
        cfg: &PeerConfig,
        data_channel: bool,
        now: Instant,
    ) -> Result<(Peer, String), PeerError> {
        let mut peer = Peer::empty(build_rtc(cfg, now), cfg, now);
        let candidate =
            Candidate::host(host, "udp").map_err(|e| PeerError::Candidate(e.to_string()))?;
        peer.rtc.add_local_candidate(candidate);
        peer.drain(now)?;
        let mut api = peer.rtc.sdp_api();
        let mid = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        let audio = cfg
            .audio
            .then(|| api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None));
        if data_channel {
            api.add_channel_with_config(ChannelConfig {
                label: DATA_CHANNEL_LABEL.into(),
                ordered: true,
                reliability: Reliability::Reliable,
                ..Default::default()
            });
        }
        let Some((offer, pending)) = api.apply() else {
            // apply() returns None only when there are no changes; we just added video.
            return Err(PeerError::Sdp("no changes to offer".into()));
        };
        peer.video = Some(mid);
        peer.audio = audio;
        peer.pending = Some(pending);
        peer.drain(now)?;
        Ok((peer, offer.to_sdp_string()))
    }

    /// A new peer that answers a player's offer (Epic's browser-offer mode). The offer must ask
    /// to receive video; the player's data channel (`cirrus`) is used for input.
    pub fn answer(
        host: SocketAddr,
        offer_sdp: &str,
        cfg: &PeerConfig,
        now: Instant,
    ) -> Result<(Peer, String), PeerError> {
        let offer =
            SdpOffer::from_sdp_string(offer_sdp).map_err(|e| PeerError::Sdp(e.to_string()))?;
        let mut peer = Peer::empty(build_rtc(cfg, now), cfg, now);
        let candidate =
            Candidate::host(host, "udp").map_err(|e| PeerError::Candidate(e.to_string()))?;
        peer.rtc.add_local_candidate(candidate);
        peer.drain(now)?;
        let answer = peer.rtc.sdp_api().accept_offer(offer)?.to_sdp_string();
        peer.drain(now)?;
        // str0m may announce the remote's media later (MediaAdded); the answer says it now.
        if peer.video.is_none() {
            peer.video = first_mid(&answer, "video")
                .map(|m| Mid::from(m.as_str()))
                .filter(|m| peer.rtc.media(*m).is_some());
        }
        if peer.audio.is_none() && cfg.audio {
            peer.audio = first_mid(&answer, "audio")
                .map(|m| Mid::from(m.as_str()))
                .filter(|m| peer.rtc.media(*m).is_some());
        }
        if peer.video.is_none() {
            return Err(PeerError::NoVideo);
        }
        Ok((peer, answer))
    }

    pub fn accept_answer(&mut self, sdp: &str, now: Instant) -> Result<(), PeerError> {
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| PeerError::Sdp(e.to_string()))?;
        let pending = self.pending.take().ok_or(PeerError::NoPendingOffer)?;
        self.rtc.sdp_api().accept_answer(pending, answer)?;
        self.drain(now)
    }

    /// A trickled candidate (`candidate:...` text, with or without the `a=` prefix). An empty
    /// string (end of candidates) is ignored.
    pub fn add_remote_candidate(&mut self, text: &str, now: Instant) -> Result<(), PeerError> {
        let text = text.trim().trim_start_matches("a=");
        if text.is_empty() {
            return Ok(());
        }
        let c =
            Candidate::from_sdp_string(text).map_err(|e| PeerError::Candidate(e.to_string()))?;
        self.rtc.add_remote_candidate(c);
        self.drain(now)
    }

    /// Whether a datagram belongs to this peer (by ICE credentials or its remote address).
    pub fn accepts(
        &self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        contents: &[u8],
    ) -> bool {
        match receive(source, destination, contents) {
            Some(r) => self.rtc.accepts(&Input::Receive(now, r)),
            None => false,
        }
    }

    pub fn receive(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        contents: &[u8],
    ) -> Result<(), PeerError> {
        if let Some(r) = receive(source, destination, contents) {
            self.rtc.handle_input(Input::Receive(now, r))?;
        }
        self.drain(now)
    }

    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), PeerError> {
        if now >= self.timeout {
            self.rtc.handle_input(Input::Timeout(now))?;
            self.drain(now)?;
        }
        Ok(())
    }

    /// Sends one encoded frame. Until the player has had a keyframe, delta frames are skipped
    /// (they would not decode). Returns whether the frame was written.
    pub fn send_frame(&mut self, frame: &EncodedFrame, now: Instant) -> Result<bool, PeerError> {
        if !self.connected || self.dead {
            return Ok(false);
        }
        if !self.has_keyframe && !frame.keyframe {
            return Ok(false);
        }
        let (Some(mid), Some(pt)) = (self.video, self.pt) else {
            return Ok(false);
        };
        let epoch = *self.media_epoch.get_or_insert(frame.capture);
        let ticks = frame.capture.saturating_duration_since(epoch).as_micros() as u64 * 9 / 100;
        let Some(writer) = self.rtc.writer(mid) else {
            return Ok(false);
        };
        writer.write(
            pt,
            frame.capture,
            MediaTime::from_90khz(ticks),
            frame.data.clone(),
        )?;
        self.has_keyframe |= frame.keyframe;
        self.drain(now)?;
        Ok(true)
    }

    /// Sends one 20 ms Opus packet. Returns whether it was written (false before the connection
    /// is up, or when the player did not accept audio).
    pub fn send_audio(&mut self, packet: &EncodedAudio, now: Instant) -> Result<bool, PeerError> {
        if !self.connected || self.dead {
            return Ok(false);
        }
        let (Some(mid), Some(pt)) = (self.audio, self.audio_pt) else {
            return Ok(false);
        };
        let epoch = *self.audio_epoch.get_or_insert(packet.capture);
        let nanos = packet.capture.saturating_duration_since(epoch).as_nanos();
        // Samples since the epoch at 48 kHz; packets on a 20 ms grid give exact multiples of 960.
        let ticks = (nanos * u128::from(crate::audio::SAMPLE_RATE) / 1_000_000_000) as u64;
        let Some(writer) = self.rtc.writer(mid) else {
            return Ok(false);
        };
        writer.write(
            pt,
            packet.capture,
            MediaTime::new(ticks, Frequency::FORTY_EIGHT_KHZ),
            packet.data.clone(),
        )?;
        self.drain(now)?;
        Ok(true)
    }

    /// Whether the next frame should be a keyframe for this peer's sake.
    pub fn wants_keyframe(&self) -> bool {
        self.connected && !self.has_keyframe
    }

    /// Sends a binary message on the data channel. Returns false if it is not open.
    pub fn send_data(&mut self, bytes: &[u8], now: Instant) -> Result<bool, PeerError> {
        let Some(id) = self.channel else {
            return Ok(false);
        };
        let Some(mut ch) = self.rtc.channel(id) else {
            return Ok(false);
        };
        let written = ch.write(true, bytes)?;
        self.drain(now)?;
        Ok(written)
    }

    pub fn next_timeout(&self) -> Instant {
        self.timeout
    }

    pub fn poll_event(&mut self) -> Option<PeerEvent> {
        self.events.pop_front()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Whether the connection is over (closed or failed).
    pub fn is_dead(&self) -> bool {
        self.dead || !self.rtc.is_alive()
    }

    /// Closes the connection (DTLS close_notify and RTCP BYE are queued as transmits).
    pub fn close(&mut self, now: Instant) {
        self.rtc.disconnect();
        let _ = self.drain(now);
        self.dead = true;
    }

    /// Drains str0m's output until its next timeout: transmits and events are queued.
    fn drain(&mut self, now: Instant) -> Result<(), PeerError> {
        loop {
            if !self.rtc.is_alive() {
                self.timeout = now + Duration::from_secs(3600);
                return Ok(());
            }
            match self.rtc.poll_output()? {
                Output::Timeout(t) => {
                    self.timeout = t;
                    return Ok(());
                }
                Output::Transmit(t) => self.transmits.push_back(Transmit {
                    source: t.source,
                    destination: t.destination,
                    contents: t.contents.to_vec(),
                }),
                Output::Event(e) => self.on_event(e),
            }
        }
    }

    fn on_event(&mut self, e: Event) {
        match e {
            Event::Connected => {
                self.connected = true;
                self.has_keyframe = false;
                self.pick_payload_type();
                self.events.push_back(PeerEvent::Connected);
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected)
                if !self.dead => {
                    self.dead = true;
                    self.connected = false;
                    self.events.push_back(PeerEvent::Disconnected);
                }
            Event::Closed
                if !self.dead => {
                    self.dead = true;
                    self.connected = false;
                    self.events.push_back(PeerEvent::Disconnected);
                }
            Event::MediaAdded(m)
                // Browser-offer mode: the player's offer added the video we send.
                if m.kind == MediaKind::Video && self.video.is_none() => {
                    self.video = Some(m.mid);
                }
            Event::MediaAdded(m)
                if m.kind == MediaKind::Audio && self.audio.is_none() && m.direction.is_sending() => {
                    self.audio = Some(m.mid);
                }
            Event::KeyframeRequest(_) => self.events.push_back(PeerEvent::KeyframeRequest),
            Event::ChannelOpen(id, label) => {
                tracing::debug!(label, "data channel open");
                if self.channel.is_none() {
                    self.channel = Some(id);
                    self.events.push_back(PeerEvent::ChannelOpen);
                }
            }
            Event::ChannelData(d)
                if Some(d.id) == self.channel => {
                    self.events.push_back(PeerEvent::ChannelData(d.data));
                }
            Event::ChannelClose(id)
                if Some(id) == self.channel => {
                    self.channel = None;
                    self.events.push_back(PeerEvent::ChannelClosed);
                }
            _ => {}
        }
    }

    /// After negotiation: the payload types the player accepted for our video codec and Opus.
    fn pick_payload_type(&mut self) {
        if let Some(writer) = self.video.and_then(|mid| self.rtc.writer(mid)) {
            self.pt = match self.video_codec {
                VideoCodec::H264 => writer
                    .payload_params()
                    .find(|p| {
                        p.spec().codec == Codec::H264
                            && p.spec().format.packetization_mode == Some(1)
                    })
                    .or_else(|| {
                        writer
                            .payload_params()
                            .find(|p| p.spec().codec == Codec::H264)
                    })
                    .map(|p| p.pt()),
                VideoCodec::Vp8 => writer
                    .payload_params()
                    .find(|p| p.spec().codec == Codec::Vp8)
                    .map(|p| p.pt()),
            };
        }
        if self.pt.is_none() {
            tracing::warn!(codec = ?self.video_codec, "the player accepted no payload type for our video codec; no video will flow");
        }
        if let Some(writer) = self.audio.and_then(|mid| self.rtc.writer(mid)) {
            self.audio_pt = writer
                .payload_params()
                .find(|p| p.spec().codec == Codec::Opus)
                .map(|p| p.pt());
            if self.audio_pt.is_none() {
                tracing::debug!("the player accepted no Opus payload type; no audio will flow");
            }
        }
    }
}

/// The mid of the first m-line of `kind` ("video", "audio") of an SDP.
fn first_mid(sdp: &str, kind: &str) -> Option<String> {
    let prefix = format!("m={kind}");
    let mut inside = false;
    let mut mid = None;
    for line in sdp.lines() {
        if line.starts_with("m=") {
            if inside && mid.is_some() {
                break;
            }
            inside = line.starts_with(&prefix);
            mid = None;
        } else if let Some(m) = line.strip_prefix("a=mid:").filter(|_| inside) {
            mid = Some(m.trim().to_owned());
        }
    }
    mid.filter(|_| inside)
}

fn receive(source: SocketAddr, destination: SocketAddr, contents: &[u8]) -> Option<Receive<'_>> {
    Some(Receive {
        proto: Protocol::Udp,
        source,
        destination,
        contents: contents.try_into().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer_sdp(cfg: &PeerConfig) -> String {
        offer_sdp_with(cfg, true)
    }

    fn offer_sdp_with(cfg: &PeerConfig, data_channel: bool) -> String {
        let (_, sdp) = Peer::offer(
            "10.0.0.1:5000".parse().unwrap(),
            cfg,
            data_channel,
            Instant::now(),
        )
        .expect("an offer");
        sdp
    }

    fn m_lines(sdp: &str) -> Vec<String> {
        sdp.lines()
            .filter_map(|l| l.strip_prefix("m="))
            .map(|l| l.split(' ').next().unwrap_or("").to_owned())
            .collect()
    }

    #[test]
    fn the_offer_has_video_opus_audio_and_the_channel_as_ue_offers() {
        let sdp = offer_sdp(&PeerConfig::default());
        assert_eq!(m_lines(&sdp), ["video", "audio", "application"], "{sdp}");
        assert!(sdp.contains("a=rtpmap:108 H264/90000"), "{sdp}");
        assert!(sdp.contains("a=rtpmap:111 opus/48000/2"), "{sdp}");
        assert!(!sdp.contains("VP8"), "{sdp}");
        assert_eq!(sdp.matches("a=sendonly").count(), 2, "{sdp}");
    }

    #[test]
    fn without_the_data_channel_flag_the_offer_has_no_channel_for_input() {
        let sdp = offer_sdp_with(&PeerConfig::default(), false);
        assert_eq!(m_lines(&sdp), ["video", "audio"], "{sdp}");
        assert!(!sdp.contains("webrtc-datachannel"), "{sdp}");
    }

    #[test]
    fn audio_can_be_left_out_and_vp8_offered_instead_of_h264() {
        let sdp = offer_sdp(&PeerConfig {
            audio: false,
            video_codec: VideoCodec::Vp8,
            ..Default::default()
        });
        assert_eq!(m_lines(&sdp), ["video", "application"], "{sdp}");
        assert!(sdp.contains("a=rtpmap:96 VP8/90000"), "{sdp}");
        assert!(!sdp.contains("H264") && !sdp.contains("opus"), "{sdp}");
    }

    #[test]
    fn answers_a_recvonly_video_offer() {
        let now = Instant::now();
        let mut player = Rtc::new(now);
        let mut api = player.sdp_api();
        api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        api.add_channel("cirrus".into());
        let (offer, _) = api.apply().expect("offer");
        let cfg = PeerConfig {
            initial_bitrate_bps: 1_000_000,
            ..Default::default()
        };
        let r = Peer::answer(
            "10.0.0.1:5000".parse().unwrap(),
            &offer.to_sdp_string(),
            &cfg,
            now,
        );
        assert!(r.is_ok(), "{:?}", r.err());
    }
}
