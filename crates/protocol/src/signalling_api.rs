//! The read-only REST API of a signalling server (`--rest_api`), in the JSON shapes of Epic's
//! reference server, so that tools and CI rigs written for it work unchanged.

use serde::{Deserialize, Serialize};

/// `GET /api/status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Milliseconds since the server started.
    pub uptime: u64,
    pub streamer_count: usize,
    pub player_count: usize,
    pub version: String,
}

/// Whether an endpoint is a plain streamer/player or an SFU (which is both).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndpointType {
    Streamer,
    Player,
    #[serde(rename = "SFU")]
    Sfu,
}

/// One entry of `GET /api/players`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlayerInfo {
    #[serde(rename = "playerId")]
    pub player_id: String,
    #[serde(rename = "type")]
    pub kind: EndpointType,
    #[serde(
        rename = "subscribedTo",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub subscribed_to: Option<String>,
    #[serde(
        rename = "remoteAddress",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub remote_address: Option<String>,
}

/// One entry of `GET /api/streamers`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StreamerInfo {
    #[serde(rename = "streamerId")]
    pub streamer_id: String,
    #[serde(rename = "type")]
    pub kind: EndpointType,
    pub streaming: bool,
    #[serde(
        rename = "remoteAddress",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub remote_address: Option<String>,
    pub subscribers: Vec<PlayerInfo>,
}

/// The body of a 404 (and of other errors) from this API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub message: String,
}
