//! A blocking NVMe/TCP host (initiator) over `std::net::TcpStream`, for
//! fabriq's integration tests and as the protocol core of the load generator.
//!
//! Layers, from the socket up:
//! - [`wire`]: PDU framing over any `Read + Write` (digests, padding, the
//!   size-table check of what arrives, one-shot tampering of what leaves);
//! - [`command`]: commands as SQE plus data, and their CapsuleCmd encoding;
//! - [`connection`]: ICReq/ICResp, Connect, pipelined submit/wait with R2T
//!   and C2HData handling, and raw send/receive for misbehaving on purpose;
//! - [`admin`] and [`io`]: one-call helpers on a connected queue.
//!
//! ```no_run
//! use fabriq_bench::host::{Connection, HostOptions, icd_limit_from_ioccsz};
//! # fn main() -> Result<(), fabriq_bench::host::HostError> {
//! let addr = "127.0.0.1:4420".parse().unwrap();
//! let subnqn = "nqn.2026-11.dev.fabriq:vol:0b6c1d6e-5f4b-4e59-9a43-2f06d1b0c9a1";
//! let opts = HostOptions::default();
//! let mut admin = Connection::open(addr, &opts)?;
//! let cntlid = admin.connect_admin(subnqn, 0, 31)?;
//! admin.enable()?;
//! let ctrl = admin.identify_controller()?;
//! let mut io = Connection::open(addr, &opts)?;
//! io.connect_io(subnqn, cntlid, 1, 127)?;
//! io.set_icd_limit(icd_limit_from_ioccsz(ctrl.ioccsz));
//! let data = vec![0xA5; 4096];
//! assert!(io.write(1, 0, 8, &data, false)?.is_success());
//! let mut back = vec![0; 4096];
//! assert!(io.read(1, 0, 8, &mut back)?.is_success());
//! assert_eq!(back, data);
//! # Ok(())
//! # }
//! ```
//!
//! Invariants: an NVMe error status is a [`Completion`], never an error;
//! every wait is bounded by [`HostOptions::io_timeout`]; the library never
//! sends anything malformed unless a test asks for it ([`Connection::send_raw`],
//! [`Connection::tamper_next`], [`Placement`], [`Command::keep_dptr`]).

pub mod admin;
pub mod command;
pub mod connection;
pub mod error;
pub mod io;
pub mod options;
pub mod wire;

pub use admin::DiscoveryLogPage;
pub use command::{Capsule, Command, Data, Placement, connect_data};
pub use connection::{Completion, Connection, QueueParts, icd_limit_from_ioccsz};
pub use error::{DigestKind, HostError, Violation};
pub use options::{HostOptions, generate_host_identity};
pub use wire::{Framing, ReceivedPdu, refresh_header_digest};
