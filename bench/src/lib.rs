//! Load benchmarks for pxs. `pxs-bench signalling` measures the signalling server
//! (`pxs webrtc-session`) against an in-process baseline relay; see `docs/benchmarks.md`.
//! `pxs-bench session-server` measures `pxs session-server` (start → ready, memory per session).
//! `pxs-bench coordinator` measures the coordinator (API latency, sessions per second, idle node
//! links, POST → ready).

pub mod baseline;
pub mod clients;
pub mod coordinator;
pub mod procfs;
pub mod report;
pub mod schedule;
pub mod server;
pub mod session_server;
pub mod signalling;
pub mod wire;
