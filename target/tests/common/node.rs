//! A storage node for the node API tests: this crate's `fabriq-target` with pool `p1` and the
//! REST API on loopback (`fabriq_testkit::Node`: data kept across restarts, SIGTERM or
//! SIGKILL, and a blocking HTTP client that answers (status, JSON)).

pub use fabriq_testkit::Node;

/// A node with pool `p1`: a sparse file of `pool_mib` MiB; `api_extra` goes into `[api]`.
pub fn start(pool_mib: u64, api_extra: &str) -> Node {
    Node::start(env!("CARGO_BIN_EXE_fabriq-target"), &["p1"], pool_mib, api_extra)
}
