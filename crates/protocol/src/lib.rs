//! Wire types shared by every part of pxs.
//!
//! This crate depends on no other pxs crate; every other crate may depend on it.
//!
//! - [`signalling`]: Epic's Pixel Streaming signalling protocol (JSON over WebSocket), as spoken
//!   between streamers, players, SFUs and the signalling server.
//! - [`player_token`]: signed, expiring tokens with which players join a session (HMAC-SHA256
//!   with the session's key, made by the coordinator, checked by the node).
//! - [`secret`]: the redacting secret-string type used for every token.
//! - [`signalling_api`]: the read-only REST API of a signalling server, in Epic's JSON shapes.
//! - [`datachannel`]: Epic's data-channel protocol between browser and streamer (binary input,
//!   replies, the negotiated "Protocol" tables, SFU relay envelopes), as a sans-IO codec.
//! - [`node`]: the node link between a session server and the coordinator, and the typed ids
//!   it carries (`SessionId`, `NodeId`, `ApplicationId`).
//! - [`duration`]: durations as configs write them ("90s", "15m").
//! - [`api`]: the coordinator's REST API v1 bodies and `TitleId`.
//! - [`upstream`]: the checked URL where a reverse proxy reaches a server (`upstream_url`).
//! - [`ice`]: the STUN and TURN servers a session hands its peers, and their checks.

pub mod api;
pub mod datachannel;
pub mod duration;
pub mod ice;
pub mod node;
pub mod player_token;
pub mod secret;
pub mod signalling;
pub mod signalling_api;
pub mod upstream;
