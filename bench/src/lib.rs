//! fabriq-bench: an NVMe/TCP initiator used by fabriq's tests, and the
//! `fabriq-bench` load generator built on it.
//!
//! - [`host`]: the blocking NVMe/TCP host library (connections, commands,
//!   misbehaviour on purpose for the target's error-path tests); the load
//!   generator uses it to set queues up.
//! - [`pattern`]: the verifiable data pattern written and checked by tests
//!   and by the load generator's verify mode.
//! - [`engine`]: the load generator's hot path (one io_uring per job thread,
//!   NVMe/TCP queues and local files) and the orchestration of a run.
//! - [`workload`], [`rng`], [`rate`]: what a run does and at what pace.
//! - [`stats`], [`cpu`], [`disk`]: what it measures.
//! - [`cli`], [`report`], [`plot`], [`compare`]: the command line, the
//!   summaries, SVG plots, and A/B comparisons and sweeps.

pub mod cli;
pub mod compare;
pub mod cpu;
pub mod disk;
pub mod engine;
pub mod host;
pub mod pattern;
pub mod plot;
pub mod rate;
pub mod report;
pub mod rng;
pub mod stats;
pub mod units;
pub mod workload;
