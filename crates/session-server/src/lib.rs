//! The pxs session server (`pxs session-server`): the agent on every GPU machine (a "node")
//! that launches, supervises and ends sessions, and hosts their signalling. See
//! `docs/session-server.md`.
//!
//! - [`supervisor`]: the sans-IO core; every decision about sessions lives there.
//! - [`server`]: the tokio shell that drives it ([`SessionServer`]).
//! - [`config`]: the one `Config` of the binary (TOML, environment, flags), validated at start.
//! - [`process`]: launching applications in their own process group (job object on Windows)
//!   and killing whole trees, also those left by a crashed run.
//! - [`http`]: the node's HTTP port (players, routed by session id) and the loopback streamer
//!   listeners.
//! - [`link`]: the node link's I/O (dial, backoff, frames).
//! - [`state`]: the data dir (state file written atomically, logs, pid file, lock).
//! - [`gpu`]: NVIDIA GPUs through NVML, loaded at run time.
//! - `win32` (Windows only): the graceful stop of a process tree (`CTRL_BREAK_EVENT`,
//!   `WM_CLOSE`) and a console for the service; the only module with `unsafe` code.

pub mod config;
pub mod gpu;
pub mod http;
pub mod link;
pub mod process;
pub mod server;
#[cfg(windows)]
pub mod service;
pub mod state;
pub mod supervisor;
#[cfg(windows)]
pub mod win32;

pub use config::{Config, Options};
pub use server::{Reloader, SessionServer};
pub use supervisor::Supervisor;
