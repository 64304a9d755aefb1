//! Setting queues up with the blocking host library, the way a Linux host
//! does: per controller an admin queue (Connect, enable, Identify Controller
//! and Namespace, Set Features Number of Queues), then one TCP connection per
//! I/O queue (ICReq, Connect), whose socket the engine then takes over. Also
//! the discovery log, for `--discover`.
//!
//! Nothing here relies on fabriq: only what the NVMe and NVMe/TCP
//! specifications promise, so the same code drives Linux nvmet or SPDK.
//!
//! Invariants: the admin connection stays open for the whole run (the main
//! thread sends Keep Alive at KATO/2 through [`Controller::keep_alive_if_due`])
//! and is shut down cleanly (CC.SHN) at the end; every wait is bounded by the
//! host library's time-out.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use fabriq_target::nvme::PropertySize;
use fabriq_target::nvme::discovery::{SUBTYPE_NVM, TRTYPE_TCP};
use fabriq_target::nvme::ids::DISCOVERY_NQN;
use fabriq_target::nvme::property::{self, Cap};

use crate::host::{Connection, HostError, HostOptions, QueueParts, icd_limit_from_ioccsz};

/// Why queues could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A `tcp://` address that does not parse or resolve.
    #[error("`{0}` is not tcp://HOST:PORT")]
    BadAddress(String),
    /// A step of the host library failed.
    #[error("{step}: {error}")]
    Host {
        /// What was being done.
        step: String,
        /// Why it failed.
        error: HostError,
    },
    /// The controller has no active namespace.
    #[error("the controller has no active namespace")]
    NoNamespace,
    /// The namespace's format is unusable.
    #[error("namespace {nsid} has an LBA format this tool does not handle (LBADS {lbads}, metadata {ms})")]
    BadFormat {
        /// The namespace.
        nsid: u32,
        /// Its LBA data size exponent.
        lbads: u8,
        /// Its metadata bytes.
        ms: u16,
    },
    /// Namespace of size 0 (inactive NSID).
    #[error("namespace {0} is not active on the controller")]
    InactiveNamespace(u32),
    /// Fewer I/O queues granted than asked for.
    #[error("asked for {asked} I/O queues, the controller grants {granted}")]
    Queues {
        /// Asked.
        asked: u32,
        /// Granted.
        granted: u32,
    },
    /// The discovery log names no subsystem that fits.
    #[error("the discovery log at {addr} has no NVMe/TCP subsystem {what}")]
    NotDiscovered {
        /// The discovery controller.
        addr: SocketAddr,
        /// What was looked for.
        what: String,
    },
}

fn step(step: impl Into<String>) -> impl FnOnce(HostError) -> SetupError {
    let step = step.into();
    move |error| SetupError::Host { step, error }
}

/// Parses `tcp://HOST:PORT` (or plain `HOST:PORT`) and resolves it.
pub fn parse_tcp_address(text: &str) -> Result<SocketAddr, SetupError> {
    let rest = text.strip_prefix("tcp://").unwrap_or(text);
    rest.to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| SetupError::BadAddress(text.to_string()))
}

/// Where the I/O goes.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The NVMe/TCP listener.
    pub addr: SocketAddr,
    /// The subsystem.
    pub nqn: String,
}

/// Reads the discovery log at `addr` and picks the NVMe/TCP subsystem named
/// `nqn`, or the only NVM subsystem when no name is given.
pub fn discover(addr: SocketAddr, nqn: Option<&str>, host: &HostOptions) -> Result<Endpoint, SetupError> {
    let mut admin =
        Connection::open(addr, host).map_err(step(format!("connecting to the discovery service at {addr}")))?;
    admin.connect_admin(DISCOVERY_NQN, 0, 31).map_err(step("discovery Connect"))?;
    admin.enable().map_err(step("enabling the discovery controller"))?;
    let log = admin.discovery_log().map_err(step("reading the discovery log"))?;
    let _ = admin.shutdown();
    let mut fits = log
        .entries
        .iter()
        .filter(|e| e.trtype == TRTYPE_TCP && e.subtype == SUBTYPE_NVM && nqn.is_none_or(|n| e.subnqn.as_str() == n));
    let not_found = |what: String| SetupError::NotDiscovered { addr, what };
    let entry = fits.next().ok_or_else(|| not_found(nqn.unwrap_or("at all").to_string()))?;
    if nqn.is_none() && fits.next().is_some() {
        return Err(not_found("unambiguous: several are listed, pick one with --nqn".into()));
    }
    let port: u16 = entry.trsvcid.trim().parse().map_err(|_| SetupError::BadAddress(entry.trsvcid.clone()))?;
    let ip = entry.traddr.trim();
    let addr = if ip.is_empty() || ip == "0.0.0.0" || ip == "::" {
        SocketAddr::new(addr.ip(), port)
    } else {
        parse_tcp_address(&format!("{ip}:{port}")).or_else(|_| parse_tcp_address(&format!("[{ip}]:{port}")))?
    };
    Ok(Endpoint { addr, nqn: entry.subnqn.as_str().to_string() })
}

/// What the engine needs to know about the namespace and controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct NamespaceInfo {
    /// The namespace.
    pub nsid: u32,
    /// Bytes per logical block.
    pub lba_size: u32,
    /// Namespace size in bytes.
    pub size_bytes: u64,
    /// Largest transfer of one command in bytes, if the controller limits it.
    pub mdts_bytes: Option<u64>,
    /// In-capsule data limit of I/O queues.
    pub icd_limit: u32,
    /// Entries per I/O queue the controller allows (CAP.MQES + 1).
    pub max_queue_entries: u32,
}

/// One controller: its admin queue and what it said about itself.
pub struct Controller {
    admin: Connection,
    endpoint: Endpoint,
    host: HostOptions,
    cntlid: u16,
    /// Namespace and limits.
    pub info: NamespaceInfo,
    kato: Duration,
    last_keep_alive: Instant,
}

impl Controller {
    /// Connects an admin queue and learns the namespace `nsid` (or the first
    /// active one), asking for `queues` I/O queues.
    pub fn connect(
        endpoint: &Endpoint,
        host: &HostOptions,
        nsid: Option<u32>,
        queues: u32,
        kato: Duration,
    ) -> Result<Controller, SetupError> {
        let addr = endpoint.addr;
        let mut admin = Connection::open(addr, host).map_err(step(format!("connecting to {addr}")))?;
        let kato_ms = u32::try_from(kato.as_millis()).unwrap_or(u32::MAX);
        let cntlid = admin
            .connect_admin(&endpoint.nqn, kato_ms, 31)
            .map_err(step(format!("admin Connect to {}", endpoint.nqn)))?;
        admin.enable().map_err(step("enabling the controller"))?;
        let cap = Cap::from_u64(admin.property_get(property::CAP, PropertySize::Eight).map_err(step("reading CAP"))?);
        let ctrl = admin.identify_controller().map_err(step("Identify Controller"))?;
        let nsid = match nsid {
            Some(nsid) => nsid,
            None => *admin
                .active_namespaces(0)
                .map_err(step("reading the active namespace list"))?
                .first()
                .ok_or(SetupError::NoNamespace)?,
        };
        let ns = admin.identify_namespace(nsid).map_err(step(format!("Identify Namespace {nsid}")))?;
        if ns.nsze == 0 {
            return Err(SetupError::InactiveNamespace(nsid));
        }
        let format = ns.lbaf[ns.lba_format_index().min(ns.lbaf.len() - 1)];
        let lba_size = match format.block_size() {
            Some(size) if format.ms == 0 && (512..=1 << 16).contains(&size) => size as u32,
            _ => return Err(SetupError::BadFormat { nsid, lbads: format.lbads, ms: format.ms }),
        };
        let granted = admin.set_number_of_queues(queues).map_err(step("Set Features Number of Queues"))?;
        if granted.sq_count < queues || granted.cq_count < queues {
            return Err(SetupError::Queues { asked: queues, granted: granted.sq_count.min(granted.cq_count) });
        }
        let page = 4096u64 << cap.mpsmin;
        let mdts_bytes = (ctrl.mdts != 0).then(|| page << ctrl.mdts);
        let info = NamespaceInfo {
            nsid,
            lba_size,
            size_bytes: ns.nsze.saturating_mul(u64::from(lba_size)),
            mdts_bytes,
            icd_limit: icd_limit_from_ioccsz(ctrl.ioccsz),
            max_queue_entries: u32::from(cap.mqes) + 1,
        };
        Ok(Controller {
            admin,
            endpoint: endpoint.clone(),
            host: host.clone(),
            cntlid,
            info,
            kato,
            last_keep_alive: Instant::now(),
        })
    }

    /// Opens I/O queue `qid` of `depth` entries and hands its socket over.
    pub fn open_io_queue(&self, qid: u16, depth: u32) -> Result<QueueParts, SetupError> {
        let addr = self.endpoint.addr;
        let mut io = Connection::open(addr, &self.host).map_err(step(format!("connecting I/O queue {qid}")))?;
        // SQSIZE is 0's based and at least 1 (NVMe-oF 1.1, Connect): a
        // depth of 1 still asks for two entries.
        let sqsize = u16::try_from(depth.max(2) - 1).unwrap_or(u16::MAX);
        io.connect_io(&self.endpoint.nqn, self.cntlid, qid, sqsize)
            .map_err(step(format!("Connect of I/O queue {qid}")))?;
        io.set_icd_limit(self.info.icd_limit);
        io.into_queue_parts().map_err(step(format!("taking over I/O queue {qid}")))
    }

    /// Sends Keep Alive if half the KATO has passed since the last one.
    pub fn keep_alive_if_due(&mut self, now: Instant) -> Result<(), SetupError> {
        if self.kato.is_zero() || now.saturating_duration_since(self.last_keep_alive) < self.kato / 2 {
            return Ok(());
        }
        self.last_keep_alive = now;
        self.admin.keep_alive().map_err(step("Keep Alive"))?.success().map_err(step("Keep Alive"))?;
        Ok(())
    }

    /// Normal shutdown of the controller (after its I/O queues closed).
    pub fn shutdown(mut self) {
        let _ = self.admin.shutdown();
    }
}
