//! The NVMe/TCP transport binding.

pub mod digest;
pub mod pdu;
pub mod queue;
