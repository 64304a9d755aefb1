//! fabriq-bench: an NVMe/TCP initiator used by fabriq's tests, growing into its load generator.
//!
//! - [`host`]: the NVMe/TCP host library (connections, commands, misbehaviour
//!   on purpose for the target's error-path tests).
//! - [`pattern`]: the verifiable data pattern written and checked by tests
//!   and by the load generator's verify mode.

pub mod host;
pub mod pattern;
