//! Epic's Pixel Streaming signalling protocol: one JSON object per WebSocket text frame, with a
//! mandatory string field `type`.
//!
//! Two enums, one per direction:
//! - [`ClientMessage`]: what a streamer, a player or an SFU sends to the signalling server;
//! - [`ServerMessage`]: what the signalling server sends to them.
//!
//! Field names are Epic's exactly (`playerId`, `newID`, `committedId`, `minBitrateBps`, ...).
//! Messages that the server relays from one peer to another (`offer`, `answer`, `iceCandidate`,
//! the SFU data-channel messages, `layerPreference`) keep unknown fields in `extra` so that they
//! reach the other side unchanged. Which role may send which message, and where it goes, is the
//! router's business, not this module's.
//!
//! Variants are never renamed or reused: add new ones.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Number, Value};
use std::fmt;

/// The signalling protocol version we implement, sent in `config.protocolVersion`.
pub const PROTOCOL_VERSION: &str = "1.3.0";

/// Unknown fields of a relayed message, kept so that they are forwarded unchanged.
pub type Extra = Map<String, Value>;

/// A player's id on the signalling server (`Player0`, `Player1`, ...).
///
/// Epic sends ids as strings; UE's deprecated `-PixelStreamingSendPlayerIdAsInteger` sends numbers,
/// which we accept and keep as their decimal text.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct PlayerId(pub String);

impl PlayerId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PlayerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for PlayerId {
    fn from(s: &str) -> Self {
        PlayerId(s.to_owned())
    }
}

impl<'de> Deserialize<'de> for PlayerId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = PlayerId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a player id (string or integer)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PlayerId, E> {
                Ok(PlayerId(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<PlayerId, E> {
                Ok(PlayerId(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<PlayerId, E> {
                Ok(PlayerId(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<PlayerId, E> {
                Ok(PlayerId(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// `offer`: an SDP offer. Streamer → player normally; SFU → player (with `sfu`,
/// `scalabilityMode`); player → streamer in browser-offer mode.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Offer {
    pub sdp: String,
    #[serde(rename = "playerId", default, skip_serializing_if = "Option::is_none")]
    pub player_id: Option<PlayerId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sfu: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiplex: Option<bool>,
    #[serde(
        rename = "scalabilityMode",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub scalability_mode: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `answer`: an SDP answer. Player → streamer normally; streamer → player in browser-offer mode;
/// SFU → streamer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub sdp: String,
    #[serde(rename = "playerId", default, skip_serializing_if = "Option::is_none")]
    pub player_id: Option<PlayerId>,
    #[serde(
        rename = "minBitrateBps",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub min_bitrate_bps: Option<i64>,
    #[serde(
        rename = "maxBitrateBps",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub max_bitrate_bps: Option<i64>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// The `candidate` object of an `iceCandidate` message (an `RTCIceCandidateInit`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub candidate: String,
    #[serde(rename = "sdpMid", default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    #[serde(
        rename = "sdpMLineIndex",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub sdp_m_line_index: Option<u32>,
    #[serde(
        rename = "usernameFragment",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub username_fragment: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `iceCandidate`: a trickled ICE candidate, either way.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IceCandidate {
    pub candidate: Candidate,
    #[serde(rename = "playerId", default, skip_serializing_if = "Option::is_none")]
    pub player_id: Option<PlayerId>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `layerPreference`: which simulcast/SVC layer a player wants from an SFU.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerPreference {
    #[serde(rename = "spatialLayer")]
    pub spatial_layer: i32,
    #[serde(rename = "temporalLayer")]
    pub temporal_layer: i32,
    #[serde(rename = "playerId", default, skip_serializing_if = "Option::is_none")]
    pub player_id: Option<PlayerId>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A relayed message with no payload of its own but the sender's id (`dataChannelRequest`,
/// `peerDataChannelsReady`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Relay {
    #[serde(rename = "playerId", default, skip_serializing_if = "Option::is_none")]
    pub player_id: Option<PlayerId>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `peerDataChannels`: SFU → player, the SCTP stream ids of the negotiated data channels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerDataChannels {
    #[serde(rename = "playerId")]
    pub player_id: PlayerId,
    #[serde(rename = "sendStreamId")]
    pub send_stream_id: u16,
    #[serde(rename = "recvStreamId")]
    pub recv_stream_id: u16,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `streamerDataChannels`: SFU → streamer, asking it to open negotiated channels for a player
/// reached through the SFU. The server fills `sfuId` with the SFU's own player id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StreamerDataChannels {
    #[serde(rename = "sfuId", default, skip_serializing_if = "Option::is_none")]
    pub sfu_id: Option<PlayerId>,
    #[serde(rename = "sendStreamId")]
    pub send_stream_id: u16,
    #[serde(rename = "recvStreamId")]
    pub recv_stream_id: u16,
    #[serde(rename = "playerId", default, skip_serializing_if = "Option::is_none")]
    pub player_id: Option<PlayerId>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// What a streamer, a player or an SFU sends to the signalling server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ClientMessage {
    /// Streamer or SFU: "my id is ...". Answered with `endpointIdConfirm`.
    #[serde(rename = "endpointId")]
    EndpointId {
        id: String,
        #[serde(
            rename = "protocolVersion",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        protocol_version: Option<String>,
    },
    /// Player or SFU: asks for `streamerList`.
    #[serde(rename = "listStreamers")]
    ListStreamers,
    /// Player or SFU: subscribe to a streamer.
    #[serde(rename = "subscribe")]
    Subscribe {
        #[serde(rename = "streamerId")]
        streamer_id: String,
    },
    /// Player or SFU: leave the current streamer.
    #[serde(rename = "unsubscribe")]
    Unsubscribe,
    #[serde(rename = "offer")]
    Offer(Offer),
    #[serde(rename = "answer")]
    Answer(Answer),
    #[serde(rename = "iceCandidate")]
    IceCandidate(IceCandidate),
    /// Streamer: close a player's connection (code 1011 with the reason).
    #[serde(rename = "disconnectPlayer")]
    DisconnectPlayer {
        #[serde(rename = "playerId")]
        player_id: PlayerId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Keepalive from any peer; answered with `pong` carrying the same `time`. Epic's frontend
    /// sends `Date.getTime()` (milliseconds, past 32 bits), so `time` is any JSON number.
    #[serde(rename = "ping")]
    Ping { time: Number },
    #[serde(rename = "layerPreference")]
    LayerPreference(LayerPreference),
    /// Player → SFU, after its answer when the offer came from an SFU.
    #[serde(rename = "dataChannelRequest")]
    DataChannelRequest(Relay),
    /// Player → SFU, when its receiving data channel opened.
    #[serde(rename = "peerDataChannelsReady")]
    PeerDataChannelsReady(Relay),
    /// SFU → player.
    #[serde(rename = "peerDataChannels")]
    PeerDataChannels(PeerDataChannels),
    /// SFU → streamer.
    #[serde(rename = "streamerDataChannels")]
    StreamerDataChannels(StreamerDataChannels),
    /// SFU: it now forwards media; it is listed to players.
    #[serde(rename = "startStreaming")]
    StartStreaming,
    /// SFU: it stopped forwarding; its players are disconnected.
    #[serde(rename = "stopStreaming")]
    StopStreaming,
    /// Player (a pxs addition that Epic's server ignores): the person at this player is active
    /// (input in the last moments). Sent by the player page every few seconds while there is
    /// input; the idle policy of a session counts it.
    #[serde(rename = "activity")]
    Activity,
    /// Player (pxs, shared sessions): a chat message to everyone in the session.
    #[serde(rename = "chat")]
    Chat { text: String },
    /// Player (pxs, shared sessions): about control of the application. `playerId` names the
    /// user to `give` it to.
    #[serde(rename = "control")]
    Control {
        action: ControlAction,
        #[serde(rename = "playerId", default, skip_serializing_if = "Option::is_none")]
        player_id: Option<PlayerId>,
    },
    /// Player (pxs, shared sessions; the owner only): remove a user from the session.
    #[serde(rename = "kick")]
    Kick {
        #[serde(rename = "playerId")]
        player_id: PlayerId,
    },
}

/// What a `control` message asks, in neko's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlAction {
    /// Ask for control (granted at once when nobody has it and the asker may control).
    Request,
    /// Hand control to `playerId` (the owner, or the user in control).
    Give,
    /// Take control (the owner).
    Take,
    /// Let control go, or withdraw a request.
    Release,
    /// Nobody has control and every request is dropped (the owner).
    Reset,
}

/// A user of a shared session, as `users` lists them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionUser {
    #[serde(rename = "playerId")]
    pub player_id: PlayerId,
    pub name: String,
    /// `owner`, `controller` or `viewer`.
    pub role: String,
    /// Has control: the only user whose input reaches the application.
    pub control: bool,
    /// Asked for control and waits.
    pub requested: bool,
}

/// A chat message, as everyone in the session sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatLine {
    /// Numbered from 1 in the session.
    pub id: u64,
    #[serde(rename = "playerId")]
    pub player_id: PlayerId,
    pub name: String,
    pub text: String,
    /// Milliseconds since the Unix epoch.
    pub at: u64,
}

/// What the signalling server sends to a streamer, a player or an SFU.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ServerMessage {
    /// Sent once on every connection: the options for `new RTCPeerConnection()`.
    #[serde(rename = "config")]
    Config {
        #[serde(rename = "peerConnectionOptions")]
        peer_connection_options: Value,
        #[serde(
            rename = "protocolVersion",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        protocol_version: Option<String>,
    },
    /// Sent to streamers and SFUs on connect: "send your `endpointId`".
    #[serde(rename = "identify")]
    Identify,
    #[serde(rename = "endpointIdConfirm")]
    EndpointIdConfirm {
        #[serde(rename = "committedId")]
        committed_id: String,
    },
    /// To a renamed streamer's subscribers (note the capital `ID` in the field name).
    #[serde(rename = "streamerIdChanged")]
    StreamerIdChanged {
        #[serde(rename = "newID")]
        new_id: String,
    },
    #[serde(rename = "streamerList")]
    StreamerList { ids: Vec<String> },
    #[serde(rename = "subscribeFailed")]
    SubscribeFailed { message: String },
    /// To a streamer (or SFU): a player subscribed; the streamer answers with an `offer`.
    #[serde(rename = "playerConnected")]
    PlayerConnected {
        #[serde(rename = "playerId")]
        player_id: PlayerId,
        #[serde(rename = "dataChannel")]
        data_channel: bool,
        sfu: bool,
    },
    #[serde(rename = "playerDisconnected")]
    PlayerDisconnected {
        #[serde(rename = "playerId")]
        player_id: PlayerId,
    },
    #[serde(rename = "offer")]
    Offer(Offer),
    #[serde(rename = "answer")]
    Answer(Answer),
    #[serde(rename = "iceCandidate")]
    IceCandidate(IceCandidate),
    #[serde(rename = "pong")]
    Pong { time: Number },
    /// To an SFU whose streamer went away.
    #[serde(rename = "streamerDisconnected")]
    StreamerDisconnected,
    #[serde(rename = "layerPreference")]
    LayerPreference(LayerPreference),
    #[serde(rename = "dataChannelRequest")]
    DataChannelRequest(Relay),
    #[serde(rename = "peerDataChannelsReady")]
    PeerDataChannelsReady(Relay),
    #[serde(rename = "peerDataChannels")]
    PeerDataChannels(PeerDataChannels),
    #[serde(rename = "streamerDataChannels")]
    StreamerDataChannels(StreamerDataChannels),
    /// To a player of a shared session, once when it joins: who it is there.
    #[serde(rename = "you")]
    You {
        #[serde(rename = "playerId")]
        player_id: PlayerId,
        name: String,
        role: String,
    },
    /// To every player of a shared session, after any change of its users, control or requests.
    #[serde(rename = "users")]
    Users { users: Vec<SessionUser> },
    /// To every player of a shared session: a new chat message.
    #[serde(rename = "chat")]
    Chat(ChatLine),
    /// To a player joining a shared session: the chat so far (the last messages).
    #[serde(rename = "chatHistory")]
    ChatHistory { messages: Vec<ChatLine> },
    /// To a player whose `chat`, `control` or `kick` was not done, and why (for the person).
    #[serde(rename = "refused")]
    Refused { command: String, message: String },
    /// To every player of a shared session: the session will end at `endsAt` (ms since the Unix
    /// epoch) for `reason` (`idle`: any user's input cancels it; `max_duration`: it does not).
    #[serde(rename = "warning")]
    Warning {
        reason: String,
        #[serde(rename = "endsAt")]
        ends_at: u64,
    },
    /// To every player of a shared session: the warning for `reason` is over (someone was
    /// active).
    #[serde(rename = "warningCleared")]
    WarningCleared { reason: String },
    /// To every player of a shared session, just before the session closes their sockets: why
    /// it ended (the coordinator's end reasons: `idle`, `max_duration`, `stopped`...).
    #[serde(rename = "ended")]
    Ended { reason: String },
}

/// Why a frame is not a [`ClientMessage`] we can act on. Each kind gets its own outcome at the
/// server (see the webrtc-session router), so the kinds are kept apart.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("not valid JSON: {0}")]
    InvalidJson(String),
    #[error("not a JSON object")]
    NotAnObject,
    #[error("no string field `type`")]
    MissingType,
    /// A well-formed message of a type we do not know. Epic's server logs and drops these.
    #[error("unknown message type `{0}`")]
    UnknownType(String),
    #[error("invalid `{kind}` message: {detail}")]
    InvalidFields { kind: String, detail: String },
}

/// Longest message type name we echo back in errors and logs.
const MAX_TYPE_ECHO: usize = 64;

impl ClientMessage {
    /// Parses one signalling frame. The fast path is a single pass; only a frame that fails it is
    /// examined again to say precisely what is wrong with it.
    pub fn from_json(text: &str) -> Result<Self, MessageError> {
        match serde_json::from_str::<ClientMessage>(text) {
            Ok(msg) => Ok(msg),
            Err(err) => Err(diagnose(text, err)),
        }
    }

    /// The wire name of this message's type.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientMessage::EndpointId { .. } => "endpointId",
            ClientMessage::ListStreamers => "listStreamers",
            ClientMessage::Subscribe { .. } => "subscribe",
            ClientMessage::Unsubscribe => "unsubscribe",
            ClientMessage::Offer(_) => "offer",
            ClientMessage::Answer(_) => "answer",
            ClientMessage::IceCandidate(_) => "iceCandidate",
            ClientMessage::DisconnectPlayer { .. } => "disconnectPlayer",
            ClientMessage::Ping { .. } => "ping",
            ClientMessage::LayerPreference(_) => "layerPreference",
            ClientMessage::DataChannelRequest(_) => "dataChannelRequest",
            ClientMessage::PeerDataChannelsReady(_) => "peerDataChannelsReady",
            ClientMessage::PeerDataChannels(_) => "peerDataChannels",
            ClientMessage::StreamerDataChannels(_) => "streamerDataChannels",
            ClientMessage::StartStreaming => "startStreaming",
            ClientMessage::StopStreaming => "stopStreaming",
            ClientMessage::Activity => "activity",
            ClientMessage::Chat { .. } => "chat",
            ClientMessage::Control { .. } => "control",
            ClientMessage::Kick { .. } => "kick",
        }
    }

    pub fn to_json(&self) -> String {
        // Serializing these types cannot fail: every map key is a string and no custom
        // Serialize impl returns an error.
        serde_json::to_string(self).expect("ClientMessage serializes")
    }
}

impl ServerMessage {
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    pub fn to_json(&self) -> String {
        // See ClientMessage::to_json.
        serde_json::to_string(self).expect("ServerMessage serializes")
    }
}

const CLIENT_TYPES: &[&str] = &[
    "endpointId",
    "listStreamers",
    "subscribe",
    "unsubscribe",
    "offer",
    "answer",
    "iceCandidate",
    "disconnectPlayer",
    "ping",
    "layerPreference",
    "dataChannelRequest",
    "peerDataChannelsReady",
    "peerDataChannels",
    "streamerDataChannels",
    "startStreaming",
    "stopStreaming",
    "activity",
    "chat",
    "control",
    "kick",
];

fn diagnose(text: &str, err: serde_json::Error) -> MessageError {
    #[derive(Deserialize)]
    struct Envelope<'a> {
        #[serde(rename = "type", borrow, default)]
        kind: Option<std::borrow::Cow<'a, str>>,
    }
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return MessageError::InvalidJson(e.to_string()),
    };
    if !value.is_object() {
        return MessageError::NotAnObject;
    }
    let kind = match serde_json::from_str::<Envelope>(text) {
        Ok(Envelope { kind: Some(kind) }) => kind,
        _ => return MessageError::MissingType,
    };
    if !CLIENT_TYPES.contains(&kind.as_ref()) {
        let mut name: String = kind.chars().take(MAX_TYPE_ECHO).collect();
        if name.len() < kind.len() {
            name.push('…');
        }
        return MessageError::UnknownType(name);
    }
    MessageError::InvalidFields {
        kind: kind.into_owned(),
        detail: err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::json;

    fn client_roundtrip(v: Value) -> ClientMessage {
        let text = v.to_string();
        let msg = ClientMessage::from_json(&text).expect("parses");
        let back: Value = serde_json::from_str(&msg.to_json()).expect("json");
        assert_eq!(back, v, "round trip of {text}");
        msg
    }

    fn server_roundtrip(msg: ServerMessage, expected: Value) {
        let text = msg.to_json();
        let value: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(value, expected);
        assert_eq!(ServerMessage::from_json(&text).expect("parses"), msg);
    }

    #[rstest]
    #[case(json!({"type":"endpointId","id":"DefaultStreamer","protocolVersion":"1.0.0"}))]
    #[case(json!({"type":"endpointId","id":"DefaultStreamer"}))]
    #[case(json!({"type":"listStreamers"}))]
    #[case(json!({"type":"subscribe","streamerId":"DefaultStreamer"}))]
    #[case(json!({"type":"unsubscribe"}))]
    #[case(json!({"type":"offer","sdp":"v=0\r\n","playerId":"Player0","sfu":true,"multiplex":false,"scalabilityMode":"L1T3"}))]
    #[case(json!({"type":"answer","sdp":"v=0\r\n","minBitrateBps":0,"maxBitrateBps":100000000}))]
    #[case(json!({"type":"iceCandidate","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"abcd"},"playerId":"Player3"}))]
    #[case(json!({"type":"disconnectPlayer","playerId":"Player1","reason":"kicked"}))]
    #[case(json!({"type":"ping","time":1764039000123_i64}))]
    #[case(json!({"type":"ping","time":12.5}))]
    #[case(json!({"type":"layerPreference","spatialLayer":1,"temporalLayer":2,"playerId":"Player0"}))]
    #[case(json!({"type":"dataChannelRequest"}))]
    #[case(json!({"type":"peerDataChannelsReady","playerId":"Player2"}))]
    #[case(json!({"type":"peerDataChannels","playerId":"Player2","sendStreamId":1,"recvStreamId":2}))]
    #[case(json!({"type":"streamerDataChannels","sfuId":"Player1","sendStreamId":3,"recvStreamId":4,"playerId":"Player2"}))]
    #[case(json!({"type":"startStreaming"}))]
    #[case(json!({"type":"stopStreaming"}))]
    #[case(json!({"type":"activity"}))]
    #[case(json!({"type":"chat","text":"hello"}))]
    #[case(json!({"type":"control","action":"request"}))]
    #[case(json!({"type":"control","action":"give","playerId":"Player2"}))]
    #[case(json!({"type":"control","action":"take"}))]
    #[case(json!({"type":"control","action":"release"}))]
    #[case(json!({"type":"control","action":"reset"}))]
    #[case(json!({"type":"kick","playerId":"Player2"}))]
    fn client_messages_round_trip_with_epic_field_names(#[case] v: Value) {
        client_roundtrip(v);
    }

    #[test]
    fn relayed_messages_keep_unknown_fields() {
        let msg = client_roundtrip(json!({
            "type": "offer", "sdp": "v=0", "playerId": "Player0",
            "customFlag": {"nested": [1, 2]}, "x-vendor": "abc"
        }));
        let ClientMessage::Offer(offer) = msg else {
            panic!("not an offer")
        };
        assert_eq!(offer.extra.len(), 2);
        client_roundtrip(json!({
            "type": "iceCandidate",
            "candidate": {"candidate": "c", "sdpMid": "0", "sdpMLineIndex": 0, "extraInner": true},
            "extraOuter": 7
        }));
        client_roundtrip(json!({"type":"answer","sdp":"s","note":"kept"}));
    }

    #[test]
    fn ping_time_is_a_64_bit_number() {
        let ms = 1_764_039_000_123_i64; // past i32::MAX: Date.getTime()
        let msg = ClientMessage::from_json(&format!(r#"{{"type":"ping","time":{ms}}}"#)).unwrap();
        let ClientMessage::Ping { time } = msg else {
            panic!("not a ping")
        };
        assert_eq!(time.as_i64(), Some(ms));
        let pong = ServerMessage::Pong { time }.to_json();
        assert_eq!(pong, format!(r#"{{"type":"pong","time":{ms}}}"#));
    }

    #[test]
    fn integer_player_ids_are_accepted_as_text() {
        let msg = ClientMessage::from_json(r#"{"type":"offer","sdp":"s","playerId":7}"#).unwrap();
        let ClientMessage::Offer(offer) = msg else {
            panic!("not an offer")
        };
        assert_eq!(offer.player_id, Some(PlayerId("7".into())));
    }

    #[test]
    fn shared_session_messages_have_their_documented_shape() {
        assert!(matches!(
            ClientMessage::from_json(r#"{"type":"control","action":"steal"}"#),
            Err(MessageError::InvalidFields { .. })
        ));
        assert!(matches!(
            ClientMessage::from_json(r#"{"type":"chat"}"#),
            Err(MessageError::InvalidFields { .. })
        ));
        let line = ChatLine {
            id: 3,
            player_id: "Player1".into(),
            name: "Alice".into(),
            text: "hi".into(),
            at: 1_800_000_000_000,
        };
        let line_json = json!({"id":3,"playerId":"Player1","name":"Alice","text":"hi","at":1_800_000_000_000_u64});
        server_roundtrip(
            ServerMessage::Chat(line.clone()),
            json!({"type":"chat","id":3,"playerId":"Player1","name":"Alice","text":"hi","at":1_800_000_000_000_u64}),
        );
        server_roundtrip(
            ServerMessage::ChatHistory {
                messages: vec![line],
            },
            json!({"type":"chatHistory","messages":[line_json]}),
        );
        server_roundtrip(
            ServerMessage::Users {
                users: vec![SessionUser {
                    player_id: "Player1".into(),
                    name: "Alice".into(),
                    role: "owner".into(),
                    control: true,
                    requested: false,
                }],
            },
            json!({"type":"users","users":[{"playerId":"Player1","name":"Alice","role":"owner","control":true,"requested":false}]}),
        );
        server_roundtrip(
            ServerMessage::You {
                player_id: "Player2".into(),
                name: "Guest 1".into(),
                role: "viewer".into(),
            },
            json!({"type":"you","playerId":"Player2","name":"Guest 1","role":"viewer"}),
        );
        server_roundtrip(
            ServerMessage::Warning {
                reason: "idle".into(),
                ends_at: 1_800_000_060_000,
            },
            json!({"type":"warning","reason":"idle","endsAt":1_800_000_060_000_u64}),
        );
        server_roundtrip(
            ServerMessage::WarningCleared {
                reason: "idle".into(),
            },
            json!({"type":"warningCleared","reason":"idle"}),
        );
        server_roundtrip(
            ServerMessage::Ended {
                reason: "idle".into(),
            },
            json!({"type":"ended","reason":"idle"}),
        );
        server_roundtrip(
            ServerMessage::Refused {
                command: "control".into(),
                message: "only the session's owner may do that".into(),
            },
            json!({"type":"refused","command":"control","message":"only the session's owner may do that"}),
        );
    }

    #[test]
    fn server_messages_use_epic_field_names() {
        server_roundtrip(
            ServerMessage::Config {
                peer_connection_options: json!({"iceServers":[]}),
                protocol_version: Some(PROTOCOL_VERSION.into()),
            },
            json!({"type":"config","peerConnectionOptions":{"iceServers":[]},"protocolVersion":"1.3.0"}),
        );
        server_roundtrip(ServerMessage::Identify, json!({"type":"identify"}));
        server_roundtrip(
            ServerMessage::EndpointIdConfirm {
                committed_id: "DefaultStreamer1".into(),
            },
            json!({"type":"endpointIdConfirm","committedId":"DefaultStreamer1"}),
        );
        server_roundtrip(
            ServerMessage::StreamerIdChanged {
                new_id: "Renamed".into(),
            },
            json!({"type":"streamerIdChanged","newID":"Renamed"}),
        );
        server_roundtrip(
            ServerMessage::StreamerList {
                ids: vec!["A".into(), "B".into()],
            },
            json!({"type":"streamerList","ids":["A","B"]}),
        );
        server_roundtrip(
            ServerMessage::SubscribeFailed {
                message: "Streamer X does not exist.".into(),
            },
            json!({"type":"subscribeFailed","message":"Streamer X does not exist."}),
        );
        server_roundtrip(
            ServerMessage::PlayerConnected {
                player_id: "Player0".into(),
                data_channel: true,
                sfu: false,
            },
            json!({"type":"playerConnected","playerId":"Player0","dataChannel":true,"sfu":false}),
        );
        server_roundtrip(
            ServerMessage::PlayerDisconnected {
                player_id: "Player0".into(),
            },
            json!({"type":"playerDisconnected","playerId":"Player0"}),
        );
        server_roundtrip(
            ServerMessage::StreamerDisconnected,
            json!({"type":"streamerDisconnected"}),
        );
    }

    #[rstest]
    #[case("{", "not valid JSON")]
    #[case("", "not valid JSON")]
    #[case("[1,2]", "not a JSON object")]
    #[case("\"offer\"", "not a JSON object")]
    #[case("{}", "no string field `type`")]
    #[case(r#"{"type":5}"#, "no string field `type`")]
    #[case(r#"{"type":"bogus"}"#, "unknown message type `bogus`")]
    #[case(r#"{"type":"subscribe"}"#, "invalid `subscribe` message")]
    #[case(
        r#"{"type":"subscribe","streamerId":5}"#,
        "invalid `subscribe` message"
    )]
    #[case(r#"{"type":"offer","sdp":["x"]}"#, "invalid `offer` message")]
    #[case(r#"{"type":"ping","time":"soon"}"#, "invalid `ping` message")]
    #[case(
        r#"{"type":"iceCandidate","candidate":"x"}"#,
        "invalid `iceCandidate` message"
    )]
    #[case(
        r#"{"type":"peerDataChannels","playerId":"P","sendStreamId":70000,"recvStreamId":1}"#,
        "invalid `peerDataChannels` message"
    )]
    fn bad_frames_get_a_precise_error(#[case] text: &str, #[case] expected: &str) {
        let err = ClientMessage::from_json(text).unwrap_err();
        assert!(
            err.to_string().starts_with(expected),
            "{text:?} gave {err}, wanted {expected}"
        );
    }

    #[test]
    fn unknown_type_names_are_truncated_in_errors() {
        let long = "x".repeat(10_000);
        let err = ClientMessage::from_json(&format!(r#"{{"type":"{long}"}}"#)).unwrap_err();
        assert!(err.to_string().len() < 200);
    }

    #[test]
    fn kind_matches_the_wire_name() {
        for (text, kind) in [
            (r#"{"type":"listStreamers"}"#, "listStreamers"),
            (r#"{"type":"startStreaming"}"#, "startStreaming"),
            (r#"{"type":"ping","time":1}"#, "ping"),
        ] {
            assert_eq!(ClientMessage::from_json(text).unwrap().kind(), kind);
        }
        for kind in CLIENT_TYPES {
            assert!(
                !matches!(
                    ClientMessage::from_json(&format!(r#"{{"type":"{kind}"}}"#)),
                    Err(MessageError::UnknownType(_))
                ),
                "{kind} must be known"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics_on_arbitrary_text(s in ".{0,200}") {
            let _ = ClientMessage::from_json(&s);
        }

        #[test]
        fn offers_round_trip(sdp in ".{0,100}", pid in "[A-Za-z0-9]{0,12}", sfu in proptest::option::of(proptest::bool::ANY)) {
            let mut v = json!({"type":"offer","sdp":sdp,"playerId":pid});
            if let Some(sfu) = sfu { v["sfu"] = json!(sfu); }
            client_roundtrip(v);
        }
    }
}
