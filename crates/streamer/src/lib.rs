//! `pxs streamer`: a stand-in for an Unreal Engine app with the Pixel Streaming plugin.
//!
//! It launches like UE (same flags), registers with a signalling server like UE, offers each
//! player a WebRTC connection like UE (H.264 constrained baseline, packetization-mode 1, or VP8;
//! Opus audio; and the in-band `datachannel`), and speaks UE's data-channel protocol. The picture is a test pattern
//! that shows the frame number, the wall-clock time of encoding (as digits and as a
//! machine-readable strip, see [`pattern`]) and the last input received. Fault flags make it
//! crash, exit, start late, never connect or hang on cue.
//!
//! Layout: [`flags`] parses the command line; [`core::StreamerCore`] makes every decision with
//! no I/O; [`rtc::Peer`] wraps str0m (the only module that touches it); [`session`] is the
//! data-channel protocol of one player; [`encoder`] renders and encodes video on its own thread,
//! [`audio`] encodes the tone on another;
//! [`run()`] is the async shell that owns the sockets; [`cli::main`] is the command.

pub mod audio;
pub mod cli;
pub mod core;
pub mod encoder;
pub mod flags;
pub mod font;
pub mod pattern;
pub mod qp;
pub mod rtc;
mod run;
pub mod session;

pub use flags::{Codec, Faults, Settings};
pub use run::{RunError, run};
