//! The streamer's core: every decision a UE app with Pixel Streaming makes, with no I/O.
//!
//! Inputs are signalling messages, received datagrams, encoded frames and timeouts, each with
//! `now`; outputs are signalling messages to send, datagrams to send, encoder commands, input-log
//! records and lifecycle notes. The shell (`run`) owns the sockets, the clock and the encoder
//! thread, and only carries things between them and this struct.
//!
//! A player's peer goes through:
//! ```text
//!  playerConnected ──▶ Offered ──answer──▶ Negotiated ──ICE+DTLS──▶ Connected ──▶ (dropped)
//!        (offer sent)        (candidates trickle in)      (frames flow)   playerDisconnected,
//!                                                                         ICE failure, or
//!                                                                         signalling lost
//! ```

use crate::audio::EncodedAudio;
use crate::encoder::{EncodedFrame, EncoderCommand};
use crate::pattern::Overlay;
use crate::rtc::{Peer, PeerConfig, PeerEvent, Transmit};
use crate::session::{self, Action, FrameTimings, InputRecord, InputSession, StreamerInfo};
use pxs_protocol::datachannel::FromStreamer;
use pxs_protocol::signalling::{
    Answer, ClientMessage, Offer, PROTOCOL_VERSION, PlayerId, ServerMessage,
};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Keyframe requests closer together than this are merged (a PLI storm after loss must not turn
/// every frame into an IDR).
const KEYFRAME_MIN_GAP: Duration = Duration::from_millis(300);
/// How often every player gets `VideoEncoderAvgQP`: the mean QP of the frames since the last one.
pub const AVG_QP_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct CoreConfig {
    pub streamer_id: String,
    pub peer: PeerConfig,
    pub info: StreamerInfo,
}

/// Something that happened, for the operator (printed as a JSON line on stdout by the shell).
#[derive(Clone, Debug, PartialEq)]
pub enum Note {
    Registered { committed_id: String },
    PlayerConnected(PlayerId),
    PeerConnected(PlayerId),
    PlayerDisconnected(PlayerId),
}

/// What the core asks the shell to do.
#[derive(Debug)]
pub enum CoreOutput {
    Signal(ClientMessage),
    Transmit(Transmit),
    Encoder(EncoderCommand),
    Input(InputRecord),
    Note(Note),
}

struct Slot {
    peer: Peer,
    input: InputSession,
    span: tracing::Span,
}

pub struct StreamerCore {
    cfg: CoreConfig,
    /// Our ICE host candidate; known once signalling is connected.
    host: Option<SocketAddr>,
    peers: BTreeMap<PlayerId, Slot>,
    out: VecDeque<CoreOutput>,
    overlay: Overlay,
    quality_owner: Option<PlayerId>,
    encoder_active: bool,
    last_keyframe_request: Option<Instant>,
    timings: FrameTimings,
    /// QPs of the frames since the last `VideoEncoderAvgQP` (sum, count) and when it was sent.
    qp_window: (u64, u64),
    qp_sent_at: Option<Instant>,
    fps: u32,
    /// A point where the monotonic and the wall clocks were read together (Unix ms).
    clock_ref: (Instant, u64),
}

impl StreamerCore {
    /// `clock_ref` pairs an `Instant` with the wall clock (ms since the Unix epoch) at that
    /// instant; wall times (latency test) are derived from it and `now`.
    pub fn new(cfg: CoreConfig, clock_ref: (Instant, u64)) -> Self {
        let fps = cfg.info.fps;
        StreamerCore {
            cfg,
            host: None,
            peers: BTreeMap::new(),
            out: VecDeque::new(),
            overlay: Overlay::default(),
            quality_owner: None,
            encoder_active: false,
            last_keyframe_request: None,
            timings: FrameTimings::default(),
            qp_window: (0, 0),
            qp_sent_at: None,
            fps,
            clock_ref,
        }
    }

    fn wall_ms(&self, now: Instant) -> u64 {
        let (at, ms) = self.clock_ref;
        if now >= at {
            ms + now.duration_since(at).as_millis() as u64
        } else {
            ms.saturating_sub(at.duration_since(now).as_millis() as u64)
        }
    }

    pub fn poll_output(&mut self) -> Option<CoreOutput> {
        self.out.pop_front()
    }

    /// The earliest time any peer needs [`StreamerCore::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.peers.values().map(|s| s.peer.next_timeout()).min()
    }

    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    pub fn connected_count(&self) -> usize {
        self.peers
            .values()
            .filter(|s| s.peer.is_connected())
            .count()
    }

    /// Signalling is up; `host` is the address of our UDP socket, offered as host candidate.
    pub fn signalling_up(&mut self, host: SocketAddr) {
        self.host = Some(host);
    }

    /// Signalling is gone: the server has closed our players, so every peer goes too (as UE).
    pub fn signalling_down(&mut self, now: Instant) {
        let ids: Vec<PlayerId> = self.peers.keys().cloned().collect();
        for id in ids {
            self.drop_peer(&id, now);
        }
    }

    pub fn handle_signal(&mut self, msg: ServerMessage, now: Instant) {
        match msg {
            ServerMessage::Identify => self.send(ClientMessage::EndpointId {
                id: self.cfg.streamer_id.clone(),
                protocol_version: Some(PROTOCOL_VERSION.into()),
            }),
            ServerMessage::Config { .. } => {
                // ICE servers (STUN/TURN) are not used: we offer one host candidate.
            }
            ServerMessage::EndpointIdConfirm { committed_id } => {
                tracing::info!(committed_id, "registered with the signalling server");
                self.note(Note::Registered { committed_id });
            }
            ServerMessage::PlayerConnected {
                player_id,
                sfu,
                data_channel,
            } => self.player_connected(player_id, sfu, data_channel, now),
            ServerMessage::PlayerDisconnected { player_id } => {
                if self.peers.contains_key(&player_id) {
                    self.drop_peer(&player_id, now);
                }
            }
            ServerMessage::Answer(a) => self.answer(a, now),
            ServerMessage::Offer(o) => self.browser_offer(o, now),
            ServerMessage::IceCandidate(c) => {
                let Some(id) = self.resolve(c.player_id) else {
                    tracing::debug!("ICE candidate for no known player");
                    return;
                };
                let Some(slot) = self.peers.get_mut(&id) else {
                    return;
                };
                let r = slot
                    .span
                    .in_scope(|| slot.peer.add_remote_candidate(&c.candidate.candidate, now));
                if let Err(e) = r {
                    slot.span
                        .in_scope(|| tracing::warn!("ignoring ICE candidate: {e}"));
                }
                self.pump(&id, now);
            }
            ServerMessage::Pong { .. } => {}
            other => tracing::debug!("ignoring signalling message {other:?}"),
        }
    }

    pub fn handle_datagram(
        &mut self,
        source: SocketAddr,
        destination: SocketAddr,
        contents: &[u8],
        now: Instant,
    ) {
        let Some(id) = self
            .peers
            .iter()
            .find(|(_, s)| s.peer.accepts(now, source, destination, contents))
            .map(|(id, _)| id.clone())
        else {
            tracing::trace!(%source, "datagram for no peer");
            return;
        };
        if let Some(slot) = self.peers.get_mut(&id)
            && let Err(e) = slot.peer.receive(now, source, destination, contents)
        {
            slot.span.in_scope(|| tracing::debug!("bad datagram: {e}"));
        }
        self.pump(&id, now);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<PlayerId> = self
            .peers
            .iter()
            .filter(|(_, s)| s.peer.next_timeout() <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            if let Some(slot) = self.peers.get_mut(&id)
                && let Err(e) = slot.peer.handle_timeout(now)
            {
                slot.span.in_scope(|| tracing::warn!("peer failed: {e}"));
                self.drop_peer(&id, now);
                continue;
            }
            self.pump(&id, now);
        }
    }

    /// One encoded frame, for every connected peer.
    pub fn handle_frame(&mut self, frame: &EncodedFrame, now: Instant) {
        self.timings = FrameTimings {
            encode_ms: frame.encode_time.as_secs_f64() * 1000.0,
            capture_to_send_ms: now.saturating_duration_since(frame.capture).as_secs_f64() * 1000.0,
        };
        let ids: Vec<PlayerId> = self.peers.keys().cloned().collect();
        let mut want_key = false;
        for id in ids {
            let Some(slot) = self.peers.get_mut(&id) else {
                continue;
            };
            want_key |= slot.peer.wants_keyframe() && !frame.keyframe;
            if let Err(e) = slot.peer.send_frame(frame, now) {
                slot.span
                    .in_scope(|| tracing::warn!("cannot send a frame: {e}"));
            }
            self.pump(&id, now);
        }
        if want_key {
            self.request_keyframe(now);
        }
        if let Some(qp) = frame.qp {
            self.qp_window.0 += u64::from(qp);
            self.qp_window.1 += 1;
        }
        let since = *self.qp_sent_at.get_or_insert(now);
        if now.saturating_duration_since(since) >= AVG_QP_INTERVAL {
            self.send_avg_qp(now);
        }
    }

    /// `VideoEncoderAvgQP` to every player whose channel is open, as UE sends it about once a
    /// second; nothing when no frame in the window had a readable QP.
    fn send_avg_qp(&mut self, now: Instant) {
        let (sum, n) = std::mem::take(&mut self.qp_window);
        self.qp_sent_at = Some(now);
        if n == 0 {
            return;
        }
        let avg = (sum + n / 2) / n;
        let ids: Vec<PlayerId> = self.peers.keys().cloned().collect();
        for id in ids {
            if let Some(slot) = self.peers.get_mut(&id) {
                let msg = slot
                    .input
                    .reply(&FromStreamer::VideoEncoderAvgQp(avg.to_string()));
                if let Err(e) = slot.peer.send_data(&msg, now) {
                    slot.span
                        .in_scope(|| tracing::debug!("cannot send VideoEncoderAvgQP: {e}"));
                }
            }
            self.pump(&id, now);
        }
    }

    /// One 20 ms audio packet, for every connected peer that accepted audio.
    pub fn handle_audio(&mut self, packet: &EncodedAudio, now: Instant) {
        let ids: Vec<PlayerId> = self.peers.keys().cloned().collect();
        for id in ids {
            let Some(slot) = self.peers.get_mut(&id) else {
                continue;
            };
            if let Err(e) = slot.peer.send_audio(packet, now) {
                slot.span
                    .in_scope(|| tracing::warn!("cannot send audio: {e}"));
            }
            self.pump(&id, now);
        }
    }

    fn send(&mut self, msg: ClientMessage) {
        self.out.push_back(CoreOutput::Signal(msg));
    }

    fn note(&mut self, n: Note) {
        self.out.push_back(CoreOutput::Note(n));
    }

    fn request_keyframe(&mut self, now: Instant) {
        if self
            .last_keyframe_request
            .is_some_and(|t| now.saturating_duration_since(t) < KEYFRAME_MIN_GAP)
        {
            return;
        }
        self.last_keyframe_request = Some(now);
        self.out
            .push_back(CoreOutput::Encoder(EncoderCommand::Keyframe));
    }

    fn update_encoder_activity(&mut self) {
        let active = !self.peers.is_empty();
        if active != self.encoder_active {
            self.encoder_active = active;
            self.out
                .push_back(CoreOutput::Encoder(EncoderCommand::Active(active)));
        }
    }

    /// A player id for a message: the one it names, or, for old servers that strip it, the only
    /// peer.
    fn resolve(&self, id: Option<PlayerId>) -> Option<PlayerId> {
        match id {
            Some(id) => Some(id),
            None if self.peers.len() == 1 => self.peers.keys().next().cloned(),
            None => None,
        }
    }

    fn span(id: &PlayerId) -> tracing::Span {
        tracing::info_span!("peer", player_id = %id)
    }

    /// A new peer for `id`, whichever side offered: keep it, send our half of the negotiation
    /// (`description`), and start it.
    fn install_peer(
        &mut self,
        id: PlayerId,
        peer: Peer,
        span: tracing::Span,
        description: ClientMessage,
        now: Instant,
    ) {
        self.peers.insert(
            id.clone(),
            Slot {
                peer,
                input: InputSession::new(id.clone()),
                span,
            },
        );
        self.send(description);
        self.note(Note::PlayerConnected(id.clone()));
        self.update_encoder_activity();
        self.pump(&id, now);
    }

    /// `data_channel`: whether this player may send input (UE opens the channel only then).
    fn player_connected(&mut self, id: PlayerId, sfu: bool, data_channel: bool, now: Instant) {
        if self.peers.contains_key(&id) {
            self.drop_peer(&id, now);
        }
        let Some(host) = self.host else {
            tracing::warn!(player_id = %id, "player connected before our socket exists");
            return;
        };
        let span = Self::span(&id);
        let r = span.in_scope(|| Peer::offer(host, &self.cfg.peer, data_channel, now));
        match r {
            Ok((peer, sdp)) => {
                span.in_scope(|| tracing::info!(sfu, data_channel, "player connected: offering"));
                let offer = ClientMessage::Offer(Offer {
                    sdp,
                    player_id: Some(id.clone()),
                    sfu: None,
                    multiplex: None,
                    scalability_mode: None,
                    extra: Default::default(),
                });
                self.install_peer(id, peer, span, offer, now);
            }
            Err(e) => span.in_scope(|| tracing::error!("cannot create an offer: {e}")),
        }
    }

    fn answer(&mut self, a: Answer, now: Instant) {
        let Some(id) = self.resolve(a.player_id) else {
            tracing::warn!("answer for no known player");
            return;
        };
        let Some(slot) = self.peers.get_mut(&id) else {
            tracing::warn!(player_id = %id, "answer from a player we did not offer to");
            return;
        };
        let r = slot.span.in_scope(|| slot.peer.accept_answer(&a.sdp, now));
        match r {
            Ok(()) => slot.span.in_scope(|| tracing::debug!("answer accepted")),
            Err(e) => {
                slot.span
                    .in_scope(|| tracing::warn!("bad answer, dropping the player: {e}"));
                self.drop_peer(&id, now);
                self.send(ClientMessage::DisconnectPlayer {
                    player_id: id,
                    reason: Some("bad answer".into()),
                });
                return;
            }
        }
        self.pump(&id, now);
    }

    /// Browser-offer mode (`?BrowserSendOffer=true`): the player offers, we answer.
    fn browser_offer(&mut self, o: Offer, now: Instant) {
        let Some(id) = o.player_id.clone() else {
            tracing::warn!("offer without playerId");
            return;
        };
        let Some(host) = self.host else { return };
        if self.peers.contains_key(&id) {
            self.drop_peer(&id, now);
        }
        let span = Self::span(&id);
        let r = span.in_scope(|| Peer::answer(host, &o.sdp, &self.cfg.peer, now));
        match r {
            Ok((peer, sdp)) => {
                let answer = ClientMessage::Answer(Answer {
                    sdp,
                    player_id: Some(id.clone()),
                    min_bitrate_bps: None,
                    max_bitrate_bps: None,
                    extra: Default::default(),
                });
                self.install_peer(id, peer, span, answer, now);
            }
            Err(e) => span.in_scope(|| tracing::warn!("cannot answer the player's offer: {e}")),
        }
    }

    fn drop_peer(&mut self, id: &PlayerId, now: Instant) {
        if let Some(mut slot) = self.peers.remove(id) {
            slot.peer.close(now);
            while let Some(t) = slot.peer.poll_transmit() {
                self.out.push_back(CoreOutput::Transmit(t));
            }
            slot.span.in_scope(|| tracing::info!("player gone"));
            self.note(Note::PlayerDisconnected(id.clone()));
        }
        if self.quality_owner.as_ref() == Some(id) {
            self.quality_owner = None;
        }
        self.update_encoder_activity();
    }

    /// Moves a peer's transmits out and acts on its events.
    fn pump(&mut self, id: &PlayerId, now: Instant) {
        loop {
            let Some(slot) = self.peers.get_mut(id) else {
                return;
            };
            let mut transmits = Vec::new();
            while let Some(t) = slot.peer.poll_transmit() {
                transmits.push(t);
            }
            let event = slot.peer.poll_event();
            let dead = slot.peer.is_dead();
            let span = slot.span.clone();
            self.out
                .extend(transmits.into_iter().map(CoreOutput::Transmit));
            let Some(event) = event else {
                if dead {
                    self.drop_peer(id, now);
                }
                return;
            };
            match event {
                PeerEvent::Connected => {
                    span.in_scope(|| tracing::info!("media connected"));
                    self.note(Note::PeerConnected(id.clone()));
                    // A joining player needs a keyframe now; bypass the merge window.
                    self.last_keyframe_request = None;
                    self.request_keyframe(now);
                }
                PeerEvent::Disconnected => {
                    span.in_scope(|| tracing::info!("media disconnected"));
                    self.drop_peer(id, now);
                    return;
                }
                PeerEvent::KeyframeRequest => self.request_keyframe(now),
                PeerEvent::ChannelOpen => {
                    if let Some(slot) = self.peers.get_mut(id) {
                        for m in slot.input.on_open() {
                            if let Err(e) = slot.peer.send_data(&m, now) {
                                span.in_scope(|| tracing::warn!("cannot send: {e}"));
                            }
                        }
                    }
                }
                PeerEvent::ChannelData(bytes) => self.on_data(id, &bytes, now),
                PeerEvent::ChannelClosed => {}
            }
        }
    }

    fn on_data(&mut self, id: &PlayerId, bytes: &[u8], now: Instant) {
        let wall_ms = self.wall_ms(now);
        let timings = self.timings;
        let info = StreamerInfo {
            fps: self.fps,
            ..self.cfg.info.clone()
        };
        let Some(slot) = self.peers.get_mut(id) else {
            return;
        };
        let handled = slot
            .span
            .in_scope(|| slot.input.on_message(bytes, wall_ms, &info, timings));
        for reply in &handled.replies {
            if let Err(e) = slot.peer.send_data(reply, now) {
                slot.span.in_scope(|| tracing::warn!("cannot reply: {e}"));
            }
        }
        let name = handled
            .record
            .as_ref()
            .map(|r| r.decoded.name.clone())
            .unwrap_or_default();
        if let Some(record) = handled.record {
            self.out.push_back(CoreOutput::Input(record));
        }
        for action in &handled.actions {
            match action {
                Action::Keyframe => {
                    self.last_keyframe_request = None;
                    self.request_keyframe(now);
                }
                Action::Resize(w, h) => {
                    tracing::info!(w, h, "resolution command");
                    self.out
                        .push_back(CoreOutput::Encoder(EncoderCommand::Resize(*w, *h)));
                }
                Action::SetFps(fps) => {
                    self.fps = *fps;
                    self.out
                        .push_back(CoreOutput::Encoder(EncoderCommand::SetFps(*fps)));
                }
                Action::QualityControl => self.give_quality_control(id, now),
                Action::Streaming(on) => tracing::debug!(on, "Start/StopStreaming ignored"),
                Action::Pointer(..) | Action::Key(_) | Action::Click => {}
            }
        }
        if session::apply_to_overlay(&mut self.overlay, &handled.actions, &name) {
            self.out
                .push_back(CoreOutput::Encoder(EncoderCommand::Overlay(
                    self.overlay.clone(),
                )));
        }
    }

    /// One player owns quality at a time (PS1 semantics): the last one to ask.
    fn give_quality_control(&mut self, owner: &PlayerId, now: Instant) {
        self.quality_owner = Some(owner.clone());
        let ids: Vec<PlayerId> = self.peers.keys().cloned().collect();
        for id in ids {
            if let Some(slot) = self.peers.get_mut(&id) {
                let msg = slot
                    .input
                    .reply(&FromStreamer::QualityControlOwnership(&id == owner));
                let _ = slot.peer.send_data(&msg, now);
            }
            self.pump(&id, now);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The core against a real str0m player over an in-memory network, with a fake clock:
    //! no sockets, no sleeps, faster than real time.

    use super::*;
    use pxs_protocol::datachannel::{self, ProtocolTable, Value};
    use std::sync::Arc;
    use str0m::change::SdpOffer;
    use str0m::net::{Protocol, Receive};
    use str0m::{Candidate, Event, Input, Output, Rtc};

    const STREAMER: &str = "10.0.0.1:5000";
    const PLAYER: &str = "10.0.0.2:6000";

    struct Net {
        core: StreamerCore,
        player: Rtc,
        now: Instant,
        signals: Vec<ClientMessage>,
        inputs: Vec<InputRecord>,
        encoder: Vec<EncoderCommand>,
        notes: Vec<Note>,
        player_events: Vec<Event>,
        channel: Option<str0m::channel::ChannelId>,
    }

    impl Net {
        fn new() -> Net {
            let now = Instant::now();
            let mut core = StreamerCore::new(
                CoreConfig {
                    streamer_id: "Test".into(),
                    peer: PeerConfig {
                        initial_bitrate_bps: 4_000_000,
                        ..Default::default()
                    },
                    info: StreamerInfo {
                        allow_commands: false,
                        disable_latency_tester: false,
                        fps: 30,
                        bitrate_bps: 2_000_000,
                    },
                },
                (now, 1_700_000_000_000),
            );
            core.signalling_up(STREAMER.parse().unwrap());
            let mut player = Rtc::new(now);
            player.add_local_candidate(Candidate::host(PLAYER.parse().unwrap(), "udp").unwrap());
            Net {
                core,
                player,
                now,
                signals: vec![],
                inputs: vec![],
                encoder: vec![],
                notes: vec![],
                player_events: vec![],
                channel: None,
            }
        }

        /// Moves everything that is ready across the "network"; returns whether anything moved.
        fn step(&mut self) -> bool {
            let mut moved = false;
            let mut to_player = Vec::new();
            while let Some(o) = self.core.poll_output() {
                moved = true;
                match o {
                    CoreOutput::Signal(m) => self.signals.push(m),
                    CoreOutput::Transmit(t) => to_player.push(t),
                    CoreOutput::Encoder(c) => self.encoder.push(c),
                    CoreOutput::Input(r) => self.inputs.push(r),
                    CoreOutput::Note(n) => self.notes.push(n),
                }
            }
            for t in to_player {
                let input = Input::Receive(
                    self.now,
                    Receive {
                        proto: Protocol::Udp,
                        source: t.source,
                        destination: t.destination,
                        contents: t.contents.as_slice().try_into().unwrap(),
                    },
                );
                self.player.handle_input(input).unwrap();
                self.drain_player();
            }
            moved | self.drain_player()
        }

        fn drain_player(&mut self) -> bool {
            let mut moved = false;
            loop {
                match self.player.poll_output().unwrap() {
                    Output::Timeout(_) => return moved,
                    Output::Transmit(t) => {
                        moved = true;
                        let bytes = t.contents.to_vec();
                        self.core
                            .handle_datagram(t.source, t.destination, &bytes, self.now);
                    }
                    Output::Event(e) => {
                        moved = true;
                        if let Event::ChannelOpen(id, _) = &e {
                            self.channel = Some(*id);
                        }
                        self.player_events.push(e);
                    }
                }
            }
        }

        /// Runs the fake clock forward until `done` or 10 simulated seconds.
        fn run_until(&mut self, mut done: impl FnMut(&Net) -> bool) {
            let end = self.now + Duration::from_secs(10);
            while !done(self) {
                assert!(self.now < end, "not reached in 10 simulated seconds");
                if self.step() {
                    continue;
                }
                let player_t = match self.player.poll_output().unwrap() {
                    Output::Timeout(t) => t,
                    _ => self.now,
                };
                let next = self
                    .core
                    .poll_timeout()
                    .unwrap_or(end)
                    .min(player_t)
                    .max(self.now + Duration::from_millis(1));
                self.now = next;
                self.core.handle_timeout(self.now);
                self.player.handle_input(Input::Timeout(self.now)).unwrap();
            }
        }

        fn received(&self) -> Vec<Vec<u8>> {
            self.player_events
                .iter()
                .filter_map(|e| match e {
                    Event::ChannelData(d) => Some(d.data.clone()),
                    _ => None,
                })
                .collect()
        }
    }

    #[test]
    fn a_player_connects_and_its_input_is_decoded_with_no_sockets() {
        let mut net = Net::new();
        net.core.handle_signal(ServerMessage::Identify, net.now);
        net.core.handle_signal(
            ServerMessage::PlayerConnected {
                player_id: "Player0".into(),
                data_channel: true,
                sfu: false,
            },
            net.now,
        );
        net.step();
        assert!(matches!(
            &net.signals[0],
            ClientMessage::EndpointId { id, .. } if id == "Test"
        ));
        let ClientMessage::Offer(offer) = &net.signals[1] else {
            panic!("expected an offer, got {:?}", net.signals)
        };
        assert_eq!(offer.player_id, Some("Player0".into()));
        assert!(net.encoder.contains(&EncoderCommand::Active(true)));

        let offer = SdpOffer::from_sdp_string(&offer.sdp).unwrap();
        let answer = net.player.sdp_api().accept_offer(offer).unwrap();
        net.drain_player();
        // No candidates in the answer: the streamer learns the player as peer-reflexive.
        let sdp: String = answer
            .to_sdp_string()
            .lines()
            .filter(|l| !l.starts_with("a=candidate"))
            .map(|l| format!("{l}\r\n"))
            .collect();
        net.core.handle_signal(
            ServerMessage::Answer(Answer {
                sdp,
                player_id: Some("Player0".into()),
                min_bitrate_bps: None,
                max_bitrate_bps: None,
                extra: Default::default(),
            }),
            net.now,
        );
        // Connected, then the channel opens and brings two Protocol messages and input control.
        net.run_until(|n| n.received().len() >= 3);
        assert!(net.notes.contains(&Note::PeerConnected("Player0".into())));
        assert!(net.encoder.contains(&EncoderCommand::Keyframe));
        let msgs = net.received();
        assert_eq!((msgs[0][0], msgs[1][0]), (255, 255));
        assert_eq!(msgs[2], vec![12, 1]);

        // A keyframe reaches the player; a delta before it would not have.
        let frame = |keyframe: bool, n: u32| EncodedFrame {
            data: Arc::from(vec![
                0,
                0,
                0,
                1,
                if keyframe { 0x65 } else { 0x41 },
                0x88,
                n as u8,
            ]),
            number: n,
            keyframe,
            capture: net.now,
            wall_ms: 0,
            width: 64,
            height: 64,
            encode_time: Duration::from_millis(1),
            qp: Some(20),
        };
        let (delta, key) = (frame(false, 1), frame(true, 2));
        let now = net.now;
        net.core.handle_frame(&delta, now);
        net.core.handle_frame(&key, now);
        net.run_until(|n| {
            n.player_events
                .iter()
                .any(|e| matches!(e, Event::MediaData(_)))
        });
        let media: Vec<_> = net
            .player_events
            .iter()
            .filter_map(|e| match e {
                Event::MediaData(m) => Some(m.data.to_vec()),
                _ => None,
            })
            .collect();
        assert_eq!(media, vec![key.data.to_vec()]);

        // About once a second, the mean QP of the frames since the last report.
        let t0 = net.now;
        let late = EncodedFrame {
            qp: Some(40),
            capture: t0,
            number: 3,
            ..key.clone()
        };
        net.now += AVG_QP_INTERVAL;
        let now = net.now;
        net.core.handle_frame(&late, now);
        let avg_qp = |n: &Net| {
            let table = ProtocolTable::default_from_streamer();
            n.received()
                .iter()
                .find_map(|m| match FromStreamer::decode(&table, m, 1 << 16) {
                    Ok(FromStreamer::VideoEncoderAvgQp(text)) => Some(text),
                    _ => None,
                })
        };
        net.run_until(|n| avg_qp(n).is_some());
        assert_eq!(avg_qp(&net).as_deref(), Some("27"), "(20 + 20 + 40) / 3");
        assert!(net.now >= t0 + AVG_QP_INTERVAL);

        // Audio goes out on its own m-line as Opus.
        let packet = crate::audio::EncodedAudio {
            data: Arc::from(vec![0xf8, 0xff, 0xfe]),
            capture: net.now,
            samples: 960,
        };
        let now = net.now;
        net.core.handle_audio(&packet, now);
        net.run_until(|n| {
            n.player_events.iter().any(|e| {
                matches!(e, Event::MediaData(m) if m.params.spec().codec == str0m::format::Codec::Opus)
            })
        });

        // Input, encoded by the default table the streamer announced.
        let table = ProtocolTable::default_to_streamer();
        let mouse = datachannel::encode(
            &table,
            "MouseDown",
            &[Value::U8(0), Value::U16(16384), Value::U16(49152)],
        )
        .unwrap();
        let id = net.channel.expect("channel open");
        net.player.channel(id).unwrap().write(true, &mouse).unwrap();
        net.run_until(|n| !n.inputs.is_empty());
        assert_eq!(
            net.inputs[0].to_json_line(),
            r#"{"player_id":"Player0","id":72,"name":"MouseDown","fields":{"button":0,"x":16384,"y":49152}}"#
        );
        assert!(net.encoder.iter().any(|c| matches!(
            c,
            EncoderCommand::Overlay(o) if o.pointer == Some((16384, 49152)) && o.clicks == 1
        )));

        // playerDisconnected drops the peer and idles the encoder.
        net.core.handle_signal(
            ServerMessage::PlayerDisconnected {
                player_id: "Player0".into(),
            },
            net.now,
        );
        net.step();
        assert_eq!(net.core.peer_count(), 0);
        assert_eq!(net.encoder.last(), Some(&EncoderCommand::Active(false)));
    }

    #[test]
    fn browser_offer_mode_is_answered_and_the_players_channel_is_used() {
        use str0m::change::SdpAnswer;
        use str0m::media::{Direction, MediaKind};
        let mut net = Net::new();
        let mut api = net.player.sdp_api();
        api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        api.add_channel("cirrus".into());
        let (offer, pending) = api.apply().unwrap();
        net.drain_player();
        net.core.handle_signal(
            ServerMessage::Offer(Offer {
                sdp: offer.to_sdp_string(),
                player_id: Some("Player1".into()),
                sfu: None,
                multiplex: None,
                scalability_mode: None,
                extra: Default::default(),
            }),
            net.now,
        );
        net.step();
        let Some(ClientMessage::Answer(answer)) = net.signals.first().cloned() else {
            panic!("expected an answer, got {:?}", net.signals)
        };
        assert_eq!(answer.player_id, Some("Player1".into()));
        let answer = SdpAnswer::from_sdp_string(&answer.sdp).unwrap();
        net.player.sdp_api().accept_answer(pending, answer).unwrap();
        net.drain_player();
        net.run_until(|n| n.received().len() >= 3);
        let key = EncodedFrame {
            data: Arc::from(vec![0, 0, 0, 1, 0x65, 0x88, 7]),
            number: 0,
            keyframe: true,
            capture: net.now,
            wall_ms: 0,
            width: 64,
            height: 64,
            encode_time: Duration::from_millis(1),
            qp: Some(20),
        };
        let now = net.now;
        net.core.handle_frame(&key, now);
        net.run_until(|n| {
            n.player_events
                .iter()
                .any(|e| matches!(e, Event::MediaData(_)))
        });
    }

    #[test]
    fn signals_for_unknown_players_are_ignored() {
        let mut net = Net::new();
        let now = net.now;
        net.core.handle_signal(
            ServerMessage::Answer(Answer {
                sdp: "v=0".into(),
                player_id: Some("Nobody".into()),
                min_bitrate_bps: None,
                max_bitrate_bps: None,
                extra: Default::default(),
            }),
            now,
        );
        net.core.handle_signal(
            ServerMessage::PlayerDisconnected {
                player_id: "Nobody".into(),
            },
            now,
        );
        net.step();
        assert!(net.signals.is_empty() && net.notes.is_empty());
    }
}
