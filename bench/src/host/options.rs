//! What a host says about itself and asks for when it opens a connection.
//!
//! Invariants: the defaults are what the Linux host sends (no digests, HPDA 0,
//! MAXR2T 0, SQ flow control on) with a fresh random identity, so two
//! `HostOptions::default()` are two different hosts. The host NQN is a plain
//! string and is never validated here: tests need to send invalid ones.

use std::time::Duration;

use fabriq_target::nvme::ids::NQN_UUID_PREFIX;

/// Default time-out of every wait for the controller.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A host's identity and connection parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostOptions {
    /// Host NQN sent in the Connect data.
    pub hostnqn: String,
    /// Host Identifier sent in the Connect data.
    pub hostid: [u8; 16],
    /// Ask for header digests in the ICReq.
    pub header_digest: bool,
    /// Ask for data digests in the ICReq.
    pub data_digest: bool,
    /// HPDA sent in the ICReq: C2HData PDUs must start their data at a
    /// multiple of `(hpda + 1) * 4` bytes. 0 to 31.
    pub hpda: u8,
    /// MAXR2T sent in the ICReq, 0's based.
    pub maxr2t: u32,
    /// Bound of every wait for the controller (ICResp, completions).
    pub io_timeout: Duration,
    /// Set CATTR "disable SQ flow control" in Connect; only then may the
    /// controller complete reads with a C2HData SUCCESS flag.
    pub disable_sq_flow_control: bool,
}

impl Default for HostOptions {
    fn default() -> HostOptions {
        let (hostnqn, hostid) = generate_host_identity();
        HostOptions {
            hostnqn,
            hostid,
            header_digest: false,
            data_digest: false,
            hpda: 0,
            maxr2t: 0,
            io_timeout: DEFAULT_IO_TIMEOUT,
            disable_sq_flow_control: false,
        }
    }
}

/// A random UUID-form host NQN and the matching Host Identifier, as nvme-cli
/// generates when `/etc/nvme/hostnqn` is missing.
pub fn generate_host_identity() -> (String, [u8; 16]) {
    let uuid = uuid::Uuid::new_v4();
    (format!("{NQN_UUID_PREFIX}{uuid}"), *uuid.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_identity_is_fresh_and_consistent() {
        let a = HostOptions::default();
        let b = HostOptions::default();
        assert_ne!(a.hostnqn, b.hostnqn);
        let uuid = a.hostnqn.strip_prefix(NQN_UUID_PREFIX).unwrap();
        assert_eq!(uuid::Uuid::parse_str(uuid).unwrap().as_bytes(), &a.hostid);
        assert_eq!(a.hostnqn.len(), NQN_UUID_PREFIX.len() + 36);
    }
}
