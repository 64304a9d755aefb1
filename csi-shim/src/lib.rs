//! fabriq-csi: the Container Storage Interface driver of fabriq. A StatefulSet's PVCs become
//! provisioner volumes, and its pods get them through the Linux kernel's NVMe-oF initiator.
//!
//! - [`identity`], [`controller`], [`node`]: the three CSI services (gRPC, tonic);
//! - [`provisioner`]: what the controller needs from fabriq-provisioner, as a trait, and
//!   [`rest`]: that trait over the provisioner's REST API;
//! - [`caps`]: the capabilities and StorageClass parameters the driver accepts; [`keys`]:
//!   the context maps it hands itself through the CO;
//! - [`server`]: serving on a Unix socket, and the client used by `fabriq-csi client` and the
//!   tests.
#![forbid(unsafe_code)]

pub mod caps;
pub mod controller;
pub mod csi;
pub mod identity;
pub mod inflight;
pub mod keys;
pub mod node;
pub mod provisioner;
pub mod rest;
pub mod server;

/// The driver's name, as Kubernetes' CSIDriver object and StorageClasses name it.
pub const DRIVER_NAME: &str = "csi.fabriq.dev";
/// The driver's version (the crate's).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
