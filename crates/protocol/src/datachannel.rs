//! Epic's Pixel Streaming data-channel protocol (browser ⇄ streamer), as a sans-IO codec.
//!
//! Every data-channel message is binary: byte 0 is a message id, the rest is the payload, all
//! numbers little-endian. Which id means which message, and how its payload is laid out, is not
//! fixed: each side keeps a [`ProtocolTable`] per direction (name → `{id, structure}`), starts
//! from Epic's defaults and updates it from the streamer's "Protocol" messages (id 255), so ids
//! must always be resolved by name.
//!
//! - [`FieldType`], [`Value`]: the field vocabulary (`uint8`, `uint16`, `int16`, `float`,
//!   `double`, `string`) and decoded values.
//! - [`ProtocolTable`], [`MessageSpec`], [`Direction`]: the tables, with Epic's defaults
//!   ([`ProtocolTable::default_to_streamer`], [`ProtocolTable::default_from_streamer`]).
//! - [`ProtocolMessage`]: the JSON of a "Protocol" message, built from a table and applied to one.
//! - [`decode`] / [`encode`]: structure-driven codec for ToStreamer messages (browser → streamer),
//!   giving [`Decoded`] with Epic's field names; [`InputEvent`] is the typed view.
//! - [`FromStreamer`]: the typed messages a streamer sends to the browser, encoded and decoded
//!   by name through the FromStreamer table.
//! - [`Envelope`]: the SFU relay wrappers `Multiplexed` (199) and `ChannelRelayStatus` (198).
//! - [`coords`]: how Epic's frontend normalises and quantises pointer coordinates.
//!
//! Nothing here does I/O, reads a clock or panics on input: every malformed message is an
//! error value the caller can count and log.

pub mod coords;
mod envelope;
mod from_streamer;
mod input;
mod message;
mod table;
mod wire;

pub use envelope::{CHANNEL_RELAY_STATUS_ID, Envelope, MULTIPLEXED_ID};
pub use from_streamer::FromStreamer;
pub use input::{GamepadButton, InputEvent, Touch, XrButton, XrEyeViews};
pub use message::{Decoded, EncodeError, decode, encode, field_names};
pub use table::{
    ApplyOutcome, Direction, MessageSpec, ProtocolEntry, ProtocolError, ProtocolMessage,
    ProtocolTable, RejectedEntry, TableError,
};
pub use wire::{DecodeError, FieldType, UnknownFieldType, Value};

/// Epic's largest data-channel message: the frontend and UE cut `FileContents` into messages of
/// at most 16 KiB. A sensible cap for [`decode`]'s `max_len` when nothing else applies.
pub const EPIC_MAX_MESSAGE_LEN: usize = 16 * 1024;
