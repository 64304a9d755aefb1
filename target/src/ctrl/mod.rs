//! The controller model, transport-neutral: what a command means and what it does, apart from
//! how its bytes travel (that is the transport's job, `tcp` today, RDMA later).
//!
//! A host association is a [`Controller`] (dynamic controller model: the target allocates the
//! controller ID at the admin queue's Connect) with an admin queue and I/O queues, each bound
//! to one transport connection ([`Binding`]). Every command goes through [`prepare`], which
//! only validates and says what the command will do ([`Prepared`]: data direction and length,
//! and an [`Exec`]); the transport then moves the data and runs it: Connect with [`connect`],
//! admin commands with [`Controller::admin`], I/O commands on the backend.
//!
//! Shared between reactors: a controller's admin queue and I/O queues may live on different
//! reactors. Its mutable state sits behind one mutex that only admin commands, Connect,
//! teardown and the control plane take; the I/O path reads two atomics at most (volatile write
//! cache, liveness).
//!
//! Asynchronous events: the control plane (on its own thread) records what changed in each
//! controller ([`Controller::namespace_changed`]: the Changed Namespace List, and a Namespace
//! Attribute Changed event if the host enabled it) and pokes the reactor of the admin queue,
//! which completes a held Asynchronous Event Request with [`Controller::take_event`]. Discovery
//! controllers compare the target's discovery generation counter with the one they last
//! reported instead.
//!
//! Invariants: at most one event of each kind waits for the host: a kind is masked from the
//! moment its event is queued until the host reads its log page without RAE (NVMe Base 2.0,
//! Asynchronous Event Request command); the Changed Namespace List holds at most 1024 NSIDs,
//! beyond which it says "more than 1024" (0xFFFFFFFF); a controller is made only for a host its
//! subsystem admits at that moment ([`Subsystem::register_controller`]), and a dead controller
//! never comes back: its queues close when their reactors look.

pub mod admin;
pub mod discovery;
pub mod exec;
pub mod io;
pub mod state;

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::nvme::{
    CntlId, Connect, ConnectData, FABRICS_OPCODE, FabricsType, Nqn, Sqe, Status, connect_invalid_param_dw0,
    fabrics_offsets,
};
use crate::subsys::{Limits, ListenerInfo, NsTable, RegisterError, Subsystem, SubsystemKind, Target};

/// Outstanding Asynchronous Event Requests a controller holds (AERL + 1).
pub const AER_LIMIT: usize = 4;
/// Error log entries a controller keeps (ELPE + 1).
pub const ERROR_LOG_ENTRIES: usize = 64;

/// Which way a command's data moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataDir {
    None,
    /// Host to controller (in-capsule data, or R2T and H2CData).
    H2c,
    /// Controller to host (C2HData).
    C2h,
}

/// What a queue is bound to after its Connect.
#[derive(Debug, Clone)]
pub enum Binding {
    Unbound,
    Admin(Arc<Controller>),
    Io(Arc<Controller>, u16),
}

impl Binding {
    pub fn ctrl(&self) -> Option<&Arc<Controller>> {
        match self {
            Binding::Unbound => None,
            Binding::Admin(c) | Binding::Io(c, _) => Some(c),
        }
    }

    pub fn subsystem(&self) -> Option<&Arc<Subsystem>> {
        self.ctrl().map(|c| &c.subsys)
    }

    pub fn qid(&self) -> u16 {
        match self {
            Binding::Io(_, qid) => *qid,
            _ => 0,
        }
    }
}

/// Admin and fabrics commands a controller executes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminOp {
    Identify,
    GetLogPage,
    GetFeatures,
    SetFeatures,
    KeepAlive,
    AsyncEventRequest,
    Abort,
    PropertyGet,
    PropertySet,
    Disconnect,
}

/// What a command will run once its data (if any) is in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exec {
    /// Nothing more: complete with success.
    None,
    Connect,
    Admin(AdminOp),
    Io(io::IoCmd),
}

/// The outcome of [`prepare`]: data direction, data length in bytes, and what to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prepared {
    pub dir: DataDir,
    pub len: u32,
    pub exec: Exec,
}

impl Prepared {
    fn none(exec: Exec) -> Prepared {
        Prepared { dir: DataDir::None, len: 0, exec }
    }
}

/// What an admin command asks of its transport after [`Controller::admin`].
#[derive(Debug)]
pub enum AdminOutcome {
    /// Complete now; `out_len` bytes of the data buffer go to the host.
    Done { status: Status, dw0: u32, dw1: u32, out_len: u32 },
    /// An Asynchronous Event Request: hold it until an event (see [`Controller::take_event`]).
    Park,
    /// Flush every namespace, then complete (shutdown notification); then call
    /// [`Controller::flush_finished`]. The transport flushes the namespaces of the table the
    /// command holds, so that none of them goes away while its flush is in flight.
    Flush,
    /// Complete with success, then close the connection.
    Disconnect,
}

impl AdminOutcome {
    pub fn status(status: Status) -> AdminOutcome {
        AdminOutcome::Done { status, dw0: 0, dw1: 0, out_len: 0 }
    }

    pub fn ok(dw0: u32) -> AdminOutcome {
        AdminOutcome::Done { status: Status::SUCCESS, dw0, dw1: 0, out_len: 0 }
    }

    pub fn data(out_len: u32) -> AdminOutcome {
        AdminOutcome::Done { status: Status::SUCCESS, dw0: 0, dw1: 0, out_len }
    }
}

/// Validates a command for a queue in the state `binding`: the `parse` step. Pure: no state
/// changes, so a transport may call it again (e.g. after waiting for a buffer).
pub fn prepare(sqe: &Sqe, binding: &Binding, table: &NsTable, limits: &Limits) -> Result<Prepared, Status> {
    if sqe.opcode == FABRICS_OPCODE {
        return prepare_fabrics(sqe, binding);
    }
    match binding {
        Binding::Unbound => Err(Status::COMMAND_SEQUENCE_ERROR.with_dnr()),
        Binding::Admin(ctrl) => admin::prepare(sqe, ctrl, limits),
        Binding::Io(..) => io::prepare(sqe, table, limits),
    }
}

fn prepare_fabrics(sqe: &Sqe, binding: &Binding) -> Result<Prepared, Status> {
    let fctype = FabricsType::try_from(sqe.fctype()).map_err(|_| Status::INVALID_OPCODE.with_dnr())?;
    match (fctype, binding) {
        (FabricsType::Connect, Binding::Unbound) => {
            Ok(Prepared { dir: DataDir::H2c, len: ConnectData::SIZE as u32, exec: Exec::Connect })
        }
        (FabricsType::Connect, _) => Err(Status::COMMAND_SEQUENCE_ERROR.with_dnr()),
        (_, Binding::Unbound) => Err(Status::COMMAND_SEQUENCE_ERROR.with_dnr()),
        (FabricsType::PropertyGet, Binding::Admin(_)) => Ok(Prepared::none(Exec::Admin(AdminOp::PropertyGet))),
        (FabricsType::PropertySet, Binding::Admin(_)) => Ok(Prepared::none(Exec::Admin(AdminOp::PropertySet))),
        (FabricsType::Disconnect, _) => Ok(Prepared::none(Exec::Admin(AdminOp::Disconnect))),
        // Property commands belong to the admin queue; authentication is not offered.
        _ => Err(Status::INVALID_OPCODE.with_dnr()),
    }
}

/// A successful Connect: how to bind the queue.
#[derive(Debug)]
pub struct Connected {
    pub binding: Binding,
    pub cntlid: u16,
    /// Queue entries (SQSIZE + 1): the command slots the queue allocates.
    pub sqsize: u16,
    pub sq_flow_disabled: bool,
    /// The controller's reset epoch the queue joined in (I/O queues).
    pub epoch: u32,
}

/// A refused Connect: the status, the completion's dword 0 (IATTR/IPO) and why, for the log.
#[derive(Debug)]
pub struct Refused {
    pub status: Status,
    pub dw0: u32,
    pub reason: String,
}

fn refuse(status: Status, in_data: bool, offset: u16, reason: String) -> Refused {
    Refused { status: status.with_dnr(), dw0: connect_invalid_param_dw0(in_data, offset), reason }
}

fn invalid_param(in_data: bool, offset: u16, reason: String) -> Refused {
    refuse(Status::CONNECT_INVALID_PARAMETERS, in_data, offset, reason)
}

/// Runs a Connect (NVMe over Fabrics: Connect command and response): admin queues create a
/// controller, I/O queues join one.
pub fn connect(
    target: &Target,
    listener: &ListenerInfo,
    sqe: &Sqe,
    data: &[u8],
    reactor: usize,
) -> Result<Connected, Refused> {
    let cmd = Connect::from_sqe(sqe);
    if cmd.recfmt != 0 {
        return Err(Refused {
            status: Status::CONNECT_INCOMPATIBLE_FORMAT.with_dnr(),
            dw0: 0,
            reason: format!("record format {}", cmd.recfmt),
        });
    }
    let data = ConnectData::decode(data).map_err(|e| {
        let offset = e.offset().unwrap_or(fabrics_offsets::DATA_SUBNQN);
        invalid_param(true, offset, format!("connect data: {e}"))
    })?;
    let subnqn = data.subnqn.as_str();
    let hostnqn = data.hostnqn.as_str();
    let Some(subsys) = target.subsystem(subnqn) else {
        return Err(invalid_param(true, fabrics_offsets::DATA_SUBNQN, format!("no subsystem {subnqn}")));
    };
    if listener.discovery_only && subsys.kind == SubsystemKind::Nvm {
        return Err(invalid_param(
            true,
            fabrics_offsets::DATA_SUBNQN,
            format!("{subnqn} is not served on this discovery-only port"),
        ));
    }
    if !subsys.allows(hostnqn) {
        return Err(refuse(
            Status::CONNECT_INVALID_HOST,
            true,
            fabrics_offsets::DATA_HOSTNQN,
            format!("host {hostnqn} is not allowed on {subnqn}"),
        ));
    }
    let entries = u32::from(cmd.sqsize) + 1;
    if cmd.sqsize == 0 || entries > u32::from(target.limits.max_queue_entries) {
        return Err(invalid_param(
            false,
            fabrics_offsets::CONNECT_SQSIZE,
            format!("queue size {entries} outside 2..={}", target.limits.max_queue_entries),
        ));
    }
    let sq_flow_disabled = cmd.sq_flow_control_disabled();
    if cmd.qid == 0 {
        if data.cntlid != CntlId::DYNAMIC {
            return Err(invalid_param(
                true,
                fabrics_offsets::DATA_CNTLID,
                format!("controller id {:#x} on an admin queue (dynamic model)", data.cntlid.get()),
            ));
        }
        let kato_ms = match (subsys.kind, cmd.kato_ms) {
            (SubsystemKind::Discovery, 0) => target.limits.discovery_kato_ms,
            (_, kato) => kato,
        };
        let made = subsys.register_controller(hostnqn, |cntlid| {
            Arc::new(Controller::new(
                cntlid,
                Arc::clone(&subsys),
                data.hostnqn.clone(),
                data.hostid,
                listener.port_id,
                kato_ms,
                reactor,
                target,
            ))
        });
        // Access is checked again at registration: it may have changed since the check above.
        let ctrl = match made {
            Ok(ctrl) => ctrl,
            Err(RegisterError::NotAllowed) => {
                return Err(refuse(
                    Status::CONNECT_INVALID_HOST,
                    true,
                    fabrics_offsets::DATA_HOSTNQN,
                    format!("host {hostnqn} is not allowed on {subnqn}"),
                ));
            }
            Err(RegisterError::Removed) => {
                return Err(invalid_param(true, fabrics_offsets::DATA_SUBNQN, format!("no subsystem {subnqn}")));
            }
            Err(RegisterError::NoId) => {
                return Err(Refused {
                    status: Status::CONNECT_CONTROLLER_BUSY,
                    dw0: 0,
                    reason: String::from("no controller id left"),
                });
            }
        };
        let cntlid = ctrl.cntlid;
        return Ok(Connected {
            binding: Binding::Admin(ctrl),
            cntlid,
            sqsize: entries as u16,
            sq_flow_disabled,
            epoch: 0,
        });
    }
    let Some(ctrl) = subsys.controller(data.cntlid.get()).filter(|c| !c.is_dead()) else {
        return Err(invalid_param(
            true,
            fabrics_offsets::DATA_CNTLID,
            format!("no controller {:#x} in {subnqn}", data.cntlid.get()),
        ));
    };
    if ctrl.hostnqn != data.hostnqn || ctrl.hostid != data.hostid {
        return Err(invalid_param(
            true,
            fabrics_offsets::DATA_HOSTNQN,
            format!("host {hostnqn} does not own controller {}", ctrl.cntlid),
        ));
    }
    let epoch = ctrl
        .add_io_queue(cmd.qid)
        .map_err(|r| Refused { reason: format!("I/O queue {}: {}", cmd.qid, r.reason), ..r })?;
    let cntlid = ctrl.cntlid;
    Ok(Connected { binding: Binding::Io(ctrl, cmd.qid), cntlid, sqsize: entries as u16, sq_flow_disabled, epoch })
}

/// A controller's mutable state, behind its mutex.
#[derive(Debug)]
struct State {
    cc: u32,
    life: state::State,
    /// I/O queues granted by Set Features (Number of Queues); the limit until then.
    io_queues: u16,
    /// Which I/O queue IDs are connected (index = QID - 1).
    io_qids: Vec<bool>,
    features: admin::FeatureValues,
    errors: VecDeque<admin::ErrorEntry>,
    error_count: u64,
    /// Asynchronous events due, as completion dwords 0 (at most one per kind: a kind is
    /// masked from the moment its event is queued until the host reads its log page).
    events: VecDeque<u32>,
    /// NSIDs changed since the host last read the Changed Namespace List log (log 04h).
    changed_nsids: BTreeSet<u32>,
    /// More than the log's 1024 entries changed: the log says 0xFFFFFFFF (rescan all).
    changed_overflow: bool,
    /// A Namespace Attribute Changed event was queued and log 04h not read since.
    ns_event_masked: bool,
    /// The discovery log generation last reported by an asynchronous event.
    reported_genctr: u64,
    /// An event of the discovery log kind was reported and its log page not read since.
    discovery_event_masked: bool,
}

/// One host association with a subsystem.
#[derive(Debug)]
pub struct Controller {
    pub cntlid: u16,
    pub subsys: Arc<Subsystem>,
    pub hostnqn: Nqn,
    pub hostid: [u8; 16],
    /// The listener (NVMe-oF port) the admin queue connected through.
    pub port_id: u16,
    /// The reactor holding the admin queue.
    pub admin_reactor: usize,
    pub created: Instant,
    dead: AtomicBool,
    /// Bumped by every controller reset (CC.EN 1 -> 0): I/O queues connected before it close.
    reset_epoch: AtomicU32,
    volatile_write_cache: AtomicBool,
    kato_ms: AtomicU32,
    state: Mutex<State>,
}

impl Controller {
    #[allow(clippy::too_many_arguments)]
    fn new(
        cntlid: u16,
        subsys: Arc<Subsystem>,
        hostnqn: Nqn,
        hostid: [u8; 16],
        port_id: u16,
        kato_ms: u32,
        reactor: usize,
        target: &Target,
    ) -> Controller {
        // A discovery controller supports no I/O queues (NVMe Base 2.0, Discovery controller).
        let io_queues = if subsys.kind == SubsystemKind::Discovery { 0 } else { target.limits.max_io_queues };
        Controller {
            cntlid,
            subsys,
            hostnqn,
            hostid,
            port_id,
            admin_reactor: reactor,
            created: Instant::now(),
            dead: AtomicBool::new(false),
            reset_epoch: AtomicU32::new(0),
            volatile_write_cache: AtomicBool::new(true),
            kato_ms: AtomicU32::new(kato_ms),
            state: Mutex::new(State {
                cc: 0,
                life: state::State::Disabled,
                io_queues,
                io_qids: vec![false; usize::from(io_queues)],
                features: admin::FeatureValues::default(),
                errors: VecDeque::with_capacity(ERROR_LOG_ENTRIES),
                error_count: 0,
                events: VecDeque::new(),
                changed_nsids: BTreeSet::new(),
                changed_overflow: false,
                ns_event_masked: false,
                reported_genctr: target.discovery_genctr(),
                discovery_event_masked: false,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("controller state lock")
    }

    pub fn is_discovery(&self) -> bool {
        self.subsys.kind == SubsystemKind::Discovery
    }

    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// Tears the controller down: its queues close when their reactors next look.
    pub fn kill(&self) {
        if !self.dead.swap(true, Ordering::AcqRel) {
            self.subsys.forget_controller(self.cntlid);
        }
    }

    /// The reset generation: an I/O queue keeps the one it connected in and closes when it moves.
    pub fn reset_epoch(&self) -> u32 {
        self.reset_epoch.load(Ordering::Acquire)
    }

    /// Whether CSTS.RDY is set: admin commands other than fabrics commands need it.
    pub fn is_ready(&self) -> bool {
        self.state().life.csts() & 1 != 0
    }

    pub fn kato_ms(&self) -> u32 {
        self.kato_ms.load(Ordering::Relaxed)
    }

    /// Whether writes may sit in a volatile cache (Volatile Write Cache feature, WCE).
    pub fn volatile_write_cache(&self) -> bool {
        self.volatile_write_cache.load(Ordering::Relaxed)
    }

    /// Registers I/O queue `qid`; returns the reset epoch it lives in.
    fn add_io_queue(&self, qid: u16) -> Result<u32, Refused> {
        let mut s = self.state();
        if !s.life.is_ready() {
            return Err(Refused {
                status: Status::COMMAND_SEQUENCE_ERROR.with_dnr(),
                dw0: 0,
                reason: String::from("controller not enabled"),
            });
        }
        if qid > s.io_queues {
            return Err(invalid_param(
                false,
                fabrics_offsets::CONNECT_QID,
                format!("beyond the {} I/O queues granted", s.io_queues),
            ));
        }
        let connected = &mut s.io_qids[usize::from(qid - 1)];
        if *connected {
            return Err(invalid_param(false, fabrics_offsets::CONNECT_QID, String::from("already connected")));
        }
        *connected = true;
        Ok(self.reset_epoch())
    }

    /// An I/O queue's connection closed.
    pub fn io_queue_gone(&self, qid: u16) {
        if let Some(connected) = self.state().io_qids.get_mut(usize::from(qid).wrapping_sub(1)) {
            *connected = false;
        }
    }

    /// How many I/O queues are connected.
    pub fn io_queue_count(&self) -> usize {
        self.state().io_qids.iter().filter(|&&q| q).count()
    }

    /// Namespace `nsid` was added, removed or changed: it joins the changed namespace list,
    /// and a Namespace Attribute Changed event is queued if the host enabled it (AEC bit 8)
    /// and no such event waits for the host to read log 04h. True when an event was queued:
    /// the admin queue's reactor must look.
    pub fn namespace_changed(&self, nsid: u32) -> bool {
        let mut s = self.state();
        if !s.changed_overflow {
            s.changed_nsids.insert(nsid);
            if s.changed_nsids.len() > crate::nvme::log::CHANGED_NS_LIST_MAX {
                s.changed_overflow = true;
                s.changed_nsids.clear();
            }
        }
        if s.features.async_event_config & admin::AEC_NAMESPACE_ATTRIBUTE == 0 || s.ns_event_masked {
            return false;
        }
        s.ns_event_masked = true;
        s.events.push_back(admin::namespace_attribute_changed_event());
        true
    }

    /// The Changed Namespace List log page (4 KiB). With `clear` (read without RAE) the list
    /// empties and the namespace attribute event is unmasked, atomically with the read so
    /// that no change is lost between the two; an event queued but not yet delivered is
    /// dropped (the host has just read what it would announce).
    pub fn take_changed_namespaces(&self, clear: bool) -> Vec<u8> {
        let mut s = self.state();
        let mut page = vec![0u8; crate::nvme::log::CHANGED_NS_LIST_SIZE];
        if s.changed_overflow {
            page[..4].copy_from_slice(&crate::nvme::log::CHANGED_NS_OVERFLOW.to_le_bytes());
        } else {
            let nsids: Vec<u32> = s.changed_nsids.iter().copied().collect();
            crate::nvme::log::encode_changed_ns_list(&nsids, &mut page);
        }
        if clear {
            s.changed_nsids.clear();
            s.changed_overflow = false;
            s.ns_event_masked = false;
            let event = admin::namespace_attribute_changed_event();
            s.events.retain(|&e| e != event);
        }
        page
    }

    /// The next asynchronous event to report, as a completion's dword 0.
    pub fn take_event(&self, target: &Target) -> Option<u32> {
        let mut s = self.state();
        if self.is_discovery()
            && s.features.async_event_config & admin::AEC_DISCOVERY_LOG_CHANGE != 0
            && !s.discovery_event_masked
        {
            let genctr = target.discovery_genctr();
            if genctr != s.reported_genctr {
                s.reported_genctr = genctr;
                s.discovery_event_masked = true;
                return Some(admin::discovery_log_change_event());
            }
        }
        s.events.pop_front()
    }

    /// Records a failed command in the error information log.
    pub fn record_error(&self, qid: u16, sqe: &Sqe, status: Status) {
        let mut s = self.state();
        s.error_count += 1;
        let entry = admin::ErrorEntry::new(s.error_count, qid, sqe, status);
        if s.errors.len() == ERROR_LOG_ENTRIES {
            s.errors.pop_back();
        }
        s.errors.push_front(entry);
    }

    /// The shutdown flush asked by [`AdminOutcome::Flush`] is done.
    pub fn flush_finished(&self) {
        let mut s = self.state();
        if let Some((next, _)) = s.life.on(state::Event::FlushDone) {
            s.life = next;
        }
    }

    /// Runs an admin or fabrics command. `data` is the command's data buffer: what the host
    /// sent, or zeroes to fill with what goes back.
    pub fn admin(&self, target: &Target, qid: u16, sqe: &Sqe, op: AdminOp, data: &mut [u8]) -> AdminOutcome {
        admin::execute(self, target, qid, sqe, op, data)
    }
}
