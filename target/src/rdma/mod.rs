//! The NVMe/RDMA transport binding (NVMe over Fabrics RDMA Transport Specification 1.0).
//!
//! - [`wire`]: the RDMA CM private data, the SGL rules and work request ids, as plain data;
//! - [`queue`]: one queue pair as a sans-IO state machine (capsules in receive buffers,
//!   data by RDMA READ and WRITE against the host's keyed SGLs, responses by SEND);
//! - `verbs` and `engine` (cargo feature `rdma`, linking libibverbs and librdmacm): the FFI
//!   wrappers and the per-reactor engine that listens through the RDMA CM, registers the
//!   reactor's buffer pool, posts what queues ask for and polls completion queues when the
//!   reactor's io_uring says their channels are readable.
//!
//! Without the feature the sans-IO parts and their tests build and run everywhere.

pub mod queue;
pub mod wire;

#[cfg(feature = "rdma")]
pub mod engine;
#[cfg(feature = "rdma")]
pub(crate) mod verbs;
