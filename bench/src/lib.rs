//! Load benchmarks for pxs. `pxs-bench signalling` measures the signalling server
//! (`pxs webrtc-session`) against an in-process baseline relay; see `docs/benchmarks.md`.

pub mod baseline;
pub mod clients;
pub mod procfs;
pub mod report;
pub mod schedule;
pub mod server;
pub mod signalling;
pub mod wire;
