//! The pxs signalling server (`webrtc-session`): where a streamer (a UE app with Pixel Streaming)
//! and the browsers (players) meet. It speaks Epic's Pixel Streaming signalling protocol, so
//! unmodified UE apps and Epic's frontend library work with it.
//!
//! - [`router`]: the sans-IO routing core; all protocol decisions live there.
//! - [`backpressure`]: the sans-IO core that holds messages for a streamer that is not reading
//!   and says which players to pause, instead of dropping the streamer.
//! - [`metrics`]: the session's counters (Prometheus text) and rate-limited log lines.
//! - [`turn`]: time-limited TURN credentials per connection (coturn's `use-auth-secret`).
//! - [`users`]: the sans-IO core of a shared session's users: roles, control, kicks and chat.
//! - `queue`: a connection's send queue (small when idle; a close is never lost to a full one).
//! - [`session`]: the tokio shell that drives one router and its WebSocket connections; embeddable
//!   (the session server runs one per session).
//! - [`server`]: the standalone server with Epic's three listeners, static files and REST API.
//! - [`config`]: the standalone server's options, with Epic's names and defaults.

pub mod backpressure;
pub mod config;
pub mod metrics;
mod queue;
pub mod router;
pub mod server;
pub mod session;
pub mod turn;
pub mod users;

pub use config::{Config, Options};
pub use server::Server;
pub use session::Signalling;
