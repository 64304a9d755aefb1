//! Admin and fabrics commands of a controller (NVMe Base 2.0 section 5, NVMe over Fabrics
//! section 6): Identify, Get Log Page, Get/Set Features, Keep Alive, Asynchronous Event
//! Request, Abort, Property Get/Set, Disconnect.
//!
//! `prepare` says what a command moves; `execute` runs it against the controller's state and
//! writes what goes back into the command's (zeroed) data buffer. An I/O controller and a
//! discovery controller share this code; the discovery controller accepts fewer commands.
//!
//! Log pages that report changes clear them when read without RAE (Retain Asynchronous
//! Event), atomically with the read: the Changed Namespace List (04h) and, for discovery
//! controllers, the discovery log's event mask.
//!
//! Invariants: nothing here blocks or does I/O; every reply fits the buffer `prepare` sized.

use std::sync::atomic::Ordering;

use crate::nvme::features::{self as feat, AsyncEvent, NumberOfQueues, Sel, fid};
use crate::nvme::identify::controller as idc;
use crate::nvme::identify::namespace as idn;
use crate::nvme::identify::{
    self, IdentifyController, IdentifyNamespace, LbaFormat, NamespaceId, NvmIdentifyController, cns, csi,
};
use crate::nvme::log::{self, CommandsEffectsLog, ErrorInformationEntry, FirmwareSlotLog, SmartLog, lid};
use crate::nvme::property::{self, Cap, Cc, PropertySize, ShutdownNotification, Vs};
use crate::nvme::{
    AdminOpcode, Features, GetLogPage, Identify, IoOpcode, NSID_BROADCAST, PropertyGet, PropertySet, Sqe, Status,
};
use crate::subsys::{Limits, NsTotals, Target};

use super::state::{Action, Event};
use super::{AER_LIMIT, AdminOp, AdminOutcome, Controller, DataDir, ERROR_LOG_ENTRIES, Exec, Prepared, discovery};

/// Asynchronous Event Configuration: namespace attribute notices.
pub const AEC_NAMESPACE_ATTRIBUTE: u32 = 1 << 8;
/// Asynchronous Event Configuration: discovery log page change notices.
pub const AEC_DISCOVERY_LOG_CHANGE: u32 = 1 << 31;
/// Default over-temperature threshold (Kelvin) reported by the Temperature Threshold feature.
const DEFAULT_TEMPERATURE_THRESHOLD_K: u32 = 0x0157;
/// Identify data is one 4 KiB page.
const IDENTIFY_BYTES: u32 = 4096;
/// Host Identifier feature data: the 128-bit host ID.
const HOST_ID_BYTES: u32 = 16;
/// VWC bits 2:1 = 11b: Flush accepts the broadcast NSID.
const VWC_FLUSH_BROADCAST_SUPPORTED: u8 = 0b110;
/// Namespaces a controller reports (NN): the largest NSID a namespace may have.
const MAX_NAMESPACES: u32 = 1024;

/// Feature values a host may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureValues {
    pub arbitration: u32,
    pub power_state: u32,
    pub temperature_threshold: u32,
    pub error_recovery: u32,
    pub write_atomicity: u32,
    pub async_event_config: u32,
}

impl Default for FeatureValues {
    fn default() -> FeatureValues {
        FeatureValues {
            arbitration: 0,
            power_state: 0,
            temperature_threshold: DEFAULT_TEMPERATURE_THRESHOLD_K,
            error_recovery: 0,
            write_atomicity: 0,
            async_event_config: 0,
        }
    }
}

/// One error information log entry as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorEntry {
    pub error_count: u64,
    pub sqid: u16,
    pub cid: u16,
    pub status: Status,
    pub nsid: u32,
    pub lba: u64,
}

impl ErrorEntry {
    pub fn new(error_count: u64, sqid: u16, sqe: &Sqe, status: Status) -> ErrorEntry {
        let io = sqid != 0
            && matches!(
                IoOpcode::try_from(sqe.opcode),
                Ok(IoOpcode::Read | IoOpcode::Write | IoOpcode::Compare | IoOpcode::WriteZeroes)
            );
        let lba = if io { u64::from(sqe.cdw10) | u64::from(sqe.cdw11) << 32 } else { 0 };
        ErrorEntry { error_count, sqid, cid: sqe.cid, status, nsid: sqe.nsid, lba }
    }
}

/// The completion dword 0 of a "discovery log page changed" event.
pub fn discovery_log_change_event() -> u32 {
    AsyncEvent::DISCOVERY_LOG_CHANGED.to_dw0()
}

/// The completion dword 0 of a "namespace attribute changed" event.
pub fn namespace_attribute_changed_event() -> u32 {
    AsyncEvent::NAMESPACE_ATTRIBUTE_CHANGED.to_dw0()
}

/// What an admin command on `ctrl`'s admin queue moves.
pub fn prepare(sqe: &Sqe, ctrl: &Controller, limits: &Limits) -> Result<Prepared, Status> {
    let opcode = AdminOpcode::try_from(sqe.opcode).map_err(|_| Status::INVALID_OPCODE.with_dnr())?;
    // Until CC.EN = 1 and CSTS.RDY = 1 only fabrics commands (Property Get/Set) make sense.
    if !ctrl.is_ready() {
        return Err(Status::COMMAND_SEQUENCE_ERROR.with_dnr());
    }
    let c2h = |len: u32, op| Ok(Prepared { dir: DataDir::C2h, len, exec: Exec::Admin(op) });
    let none = |op| Ok(Prepared { dir: DataDir::None, len: 0, exec: Exec::Admin(op) });
    match opcode {
        AdminOpcode::Identify => c2h(IDENTIFY_BYTES, AdminOp::Identify),
        AdminOpcode::GetLogPage => {
            let len = GetLogPage::from_sqe(sqe).len_bytes();
            if len > u64::from(limits.mdts_bytes) {
                return Err(Status::INVALID_FIELD.with_dnr());
            }
            c2h(len as u32, AdminOp::GetLogPage)
        }
        AdminOpcode::GetFeatures if Features::from_sqe(sqe).fid == fid::HOST_IDENTIFIER => {
            c2h(HOST_ID_BYTES, AdminOp::GetFeatures)
        }
        AdminOpcode::GetFeatures => none(AdminOp::GetFeatures),
        AdminOpcode::SetFeatures => none(AdminOp::SetFeatures),
        AdminOpcode::KeepAlive => none(AdminOp::KeepAlive),
        AdminOpcode::AsyncEventRequest => none(AdminOp::AsyncEventRequest),
        AdminOpcode::Abort if !ctrl.is_discovery() => none(AdminOp::Abort),
        _ => Err(Status::INVALID_OPCODE.with_dnr()),
    }
}

/// Runs an admin or fabrics command.
pub fn execute(ctrl: &Controller, target: &Target, qid: u16, sqe: &Sqe, op: AdminOp, data: &mut [u8]) -> AdminOutcome {
    match op {
        AdminOp::Identify => identify(ctrl, target, sqe, data),
        AdminOp::GetLogPage => get_log_page(ctrl, target, sqe, data),
        AdminOp::GetFeatures => get_features(ctrl, sqe, data),
        AdminOp::SetFeatures => set_features(ctrl, target, sqe),
        AdminOp::KeepAlive => AdminOutcome::ok(0),
        AdminOp::AsyncEventRequest => AdminOutcome::Park,
        // Commands are never aborted: dword 0 bit 0 set means "not aborted" (Abort command).
        AdminOp::Abort => AdminOutcome::ok(1),
        AdminOp::PropertyGet => property_get(ctrl, target, sqe),
        AdminOp::PropertySet => property_set(ctrl, sqe),
        AdminOp::Disconnect if qid == 0 => AdminOutcome::Disconnect,
        AdminOp::Disconnect => AdminOutcome::Disconnect,
    }
}

// ----- Identify -----

fn identify(ctrl: &Controller, target: &Target, sqe: &Sqe, out: &mut [u8]) -> AdminOutcome {
    let id = Identify::from_sqe(sqe);
    let discovery = ctrl.is_discovery();
    match id.cns {
        cns::CONTROLLER => {
            identify_controller(ctrl, target).encode(out);
            AdminOutcome::data(IDENTIFY_BYTES)
        }
        _ if discovery => AdminOutcome::status(Status::INVALID_FIELD.with_dnr()),
        cns::NAMESPACE => identify_namespace(ctrl, id.nsid, out),
        cns::ACTIVE_NAMESPACE_LIST => active_namespaces(ctrl, id.nsid, out),
        cns::CSI_ACTIVE_NAMESPACE_LIST if id.csi == csi::NVM => active_namespaces(ctrl, id.nsid, out),
        cns::NAMESPACE_ID_DESCRIPTORS => namespace_descriptors(ctrl, id.nsid, out),
        cns::CSI_CONTROLLER if id.csi == csi::NVM => {
            // No limits beyond MDTS on Write Zeroes, Write Uncorrectable or DSM.
            NvmIdentifyController::default().encode(out);
            AdminOutcome::data(IDENTIFY_BYTES)
        }
        cns::CSI_NAMESPACE if id.csi == csi::NVM => match ctrl.subsys.namespaces().find(id.nsid) {
            Some(_) => AdminOutcome::data(IDENTIFY_BYTES),
            None => AdminOutcome::status(Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr()),
        },
        _ => AdminOutcome::status(Status::INVALID_FIELD.with_dnr()),
    }
}

fn capability(target: &Target) -> Cap {
    Cap {
        mqes: target.limits.max_queue_entries - 1,
        cqr: true,
        // CSTS.RDY changes at once; 7.5 s is a conservative bound for hosts to wait.
        to_500ms: 15,
        css: property::CAP_CSS_NVM,
        mpsmin: 0,
        mpsmax: 0,
        ..Cap::default()
    }
}

/// NVMe/RDMA moves data against keyed SGL data blocks, which its hosts require the
/// controller to support; the bit is set for controllers whose admin queue came over RDMA.
fn keyed_sgls(ctrl: &Controller, target: &Target) -> u32 {
    let rdma =
        target.listeners().iter().any(|l| l.port_id == ctrl.port_id && l.transport == crate::config::Transport::Rdma);
    if rdma { idc::SGLS_KEYED } else { 0 }
}

fn identify_controller(ctrl: &Controller, target: &Target) -> IdentifyController {
    let limits = &target.limits;
    let mut id = IdentifyController {
        sn: ascii(&ctrl.subsys.serial),
        mn: ascii(&ctrl.subsys.model),
        fr: ascii(env!("CARGO_PKG_VERSION")),
        mdts: limits.mdts_field(),
        cntlid: ctrl.cntlid,
        ver: Vs::FABRIQ.to_u32(),
        lpa: idc::LPA_EXTENDED_DATA,
        elpe: (ERROR_LOG_ENTRIES - 1) as u8,
        aerl: (AER_LIMIT - 1) as u8,
        kas: 10,
        maxcmd: limits.max_queue_entries,
        sgls: idc::SGLS_BYTE_ALIGNED | idc::SGLS_OFFSET | keyed_sgls(ctrl, target),
        subnqn: Some(ctrl.subsys.nqn.clone()),
        ioccsz: (64 + limits.in_capsule_data_bytes) / 16,
        iorcsz: 1,
        msdbd: 1,
        ..IdentifyController::default()
    };
    if ctrl.is_discovery() {
        id.cntrltype = idc::CNTRLTYPE_DISCOVERY;
        id.oaes = idc::OAES_DISCOVERY_LOG_CHANGE;
        return id;
    }
    id.cntrltype = idc::CNTRLTYPE_IO;
    id.rab = 6;
    id.cmic = idc::CMIC_MULTI_CONTROLLER;
    id.oaes = idc::OAES_NAMESPACE_ATTRIBUTE;
    id.ctratt = idc::CTRATT_HOST_ID_128;
    id.acl = 3;
    // One firmware slot, read-only, active.
    id.frmw = 0b0000_0011;
    id.lpa |= idc::LPA_SMART_PER_NAMESPACE | idc::LPA_COMMANDS_EFFECTS;
    id.sqes = 0x66;
    id.cqes = 0x44;
    id.nn = max_nsid(ctrl);
    id.oncs = idc::ONCS_COMPARE | idc::ONCS_DATASET_MANAGEMENT | idc::ONCS_WRITE_ZEROES;
    // A volatile write cache is present, and Flush accepts the broadcast NSID.
    id.vwc = idc::VWC_PRESENT | VWC_FLUSH_BROADCAST_SUPPORTED;
    id
}

/// NN: the largest valid NSID, at least [`MAX_NAMESPACES`] and at least the largest one in use.
fn max_nsid(ctrl: &Controller) -> u32 {
    ctrl.subsys.namespaces().namespaces.last().map_or(0, |ns| ns.nsid.get()).max(MAX_NAMESPACES)
}

/// An Identify string field: printable ASCII (spaces included), padded with spaces.
fn ascii<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [b' '; N];
    for (o, c) in out.iter_mut().zip(s.bytes().filter(|c| c.is_ascii_graphic() || *c == b' ')) {
        *o = c;
    }
    out
}

fn identify_namespace(ctrl: &Controller, nsid: u32, out: &mut [u8]) -> AdminOutcome {
    let table = ctrl.subsys.namespaces();
    let Some((_, ns)) = table.find(nsid) else {
        // An inactive but valid NSID reads as zeroes; anything else is invalid.
        return if (1..=max_nsid(ctrl)).contains(&nsid) {
            AdminOutcome::data(IDENTIFY_BYTES)
        } else {
            AdminOutcome::status(Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr())
        };
    };
    let blocks = ns.blocks();
    let mut lbaf = [LbaFormat::default(); idn::LBAF_SLOTS];
    lbaf[0] = LbaFormat::with_block_size(ns.block_size);
    let id = IdentifyNamespace {
        nsze: blocks,
        ncap: blocks,
        nuse: blocks,
        nlbaf: 0,
        flbas: 0,
        nmic: idn::NMIC_SHARED,
        // Deallocated blocks read back as zeroes, and Write Zeroes may deallocate.
        dlfeat: idn::DLFEAT_READS_ZEROES | idn::DLFEAT_WRITE_ZEROES_DEALLOCATES,
        nguid: ns.nguid,
        lbaf,
        ..IdentifyNamespace::default()
    };
    id.encode(out);
    AdminOutcome::data(IDENTIFY_BYTES)
}

fn active_namespaces(ctrl: &Controller, after: u32, out: &mut [u8]) -> AdminOutcome {
    if after >= 0xFFFF_FFFE {
        return AdminOutcome::status(Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr());
    }
    let nsids: Vec<_> = ctrl.subsys.namespaces().namespaces.iter().map(|ns| ns.nsid).collect();
    identify::encode_ns_list(&nsids, after, out);
    AdminOutcome::data(IDENTIFY_BYTES)
}

fn namespace_descriptors(ctrl: &Controller, nsid: u32, out: &mut [u8]) -> AdminOutcome {
    let table = ctrl.subsys.namespaces();
    let Some((_, ns)) = table.find(nsid) else {
        return AdminOutcome::status(Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr());
    };
    let ids = [NamespaceId::Nguid(ns.nguid), NamespaceId::Uuid(*ns.uuid.as_bytes()), NamespaceId::Csi(csi::NVM)];
    identify::encode_ns_id_descriptors(&ids, out);
    AdminOutcome::data(IDENTIFY_BYTES)
}

// ----- Get Log Page -----

fn get_log_page(ctrl: &Controller, target: &Target, sqe: &Sqe, out: &mut [u8]) -> AdminOutcome {
    let g = GetLogPage::from_sqe(sqe);
    if !g.offset.is_multiple_of(4) || g.offset_is_index {
        return AdminOutcome::status(Status::INVALID_FIELD.with_dnr());
    }
    let page = match (ctrl.is_discovery(), g.lid) {
        (true, lid::DISCOVERY) => {
            let page = discovery::log_page(target, ctrl);
            if !g.rae {
                ctrl.state().discovery_event_masked = false;
            }
            page
        }
        (false, lid::ERROR_INFORMATION) => error_log(ctrl),
        (false, lid::SMART_HEALTH) => match smart_log(ctrl, target, g.nsid) {
            Ok(page) => page,
            Err(status) => return AdminOutcome::status(status),
        },
        (false, lid::FIRMWARE_SLOT) => firmware_log(),
        // Read and (without RAE) cleared at once; a bad offset fails before anything is cleared.
        (false, lid::CHANGED_NAMESPACE_LIST) if g.offset >= log::CHANGED_NS_LIST_SIZE as u64 => {
            return AdminOutcome::status(Status::INVALID_FIELD.with_dnr());
        }
        (false, lid::CHANGED_NAMESPACE_LIST) => ctrl.take_changed_namespaces(!g.rae),
        (false, lid::COMMANDS_SUPPORTED_AND_EFFECTS) => effects_log(),
        _ => return AdminOutcome::status(Status::INVALID_LOG_PAGE.with_dnr()),
    };
    let Ok(offset) = usize::try_from(g.offset) else {
        return AdminOutcome::status(Status::INVALID_FIELD.with_dnr());
    };
    if offset >= page.len() {
        return AdminOutcome::status(Status::INVALID_FIELD.with_dnr());
    }
    let n = out.len().min(page.len() - offset);
    out[..n].copy_from_slice(&page[offset..offset + n]);
    AdminOutcome::data(out.len() as u32)
}

fn error_log(ctrl: &Controller) -> Vec<u8> {
    let s = ctrl.state();
    let mut page = vec![0u8; ERROR_LOG_ENTRIES * ErrorInformationEntry::SIZE];
    for (e, chunk) in s.errors.iter().zip(page.chunks_exact_mut(ErrorInformationEntry::SIZE)) {
        let entry = ErrorInformationEntry {
            error_count: e.error_count,
            sqid: e.sqid,
            cid: e.cid,
            status: e.status,
            parameter_error_location: log::PARAMETER_ERROR_LOCATION_NONE,
            lba: e.lba,
            nsid: e.nsid,
            ..ErrorInformationEntry::default()
        };
        entry.encode(chunk);
    }
    page
}

/// Data units are thousands of 512-byte units, rounded up (SMART / Health Information log).
fn data_units(bytes: u64) -> u128 {
    log::data_units(u128::from(bytes))
}

fn smart_log(ctrl: &Controller, target: &Target, nsid: u32) -> Result<Vec<u8>, Status> {
    let table = ctrl.subsys.namespaces();
    let mut totals = NsTotals::default();
    let mut add = |t: NsTotals| totals.merge(&t);
    if nsid == 0 || nsid == NSID_BROADCAST {
        table.namespaces.iter().for_each(|ns| add(ns.stats.totals()));
    } else {
        let (_, ns) = table.find(nsid).ok_or(Status::INVALID_NAMESPACE_OR_FORMAT.with_dnr())?;
        add(ns.stats.totals());
    }
    let smart = SmartLog {
        available_spare_pct: 100,
        available_spare_threshold_pct: 10,
        data_units_read: data_units(totals.read_bytes),
        data_units_written: data_units(totals.write_bytes),
        host_read_commands: u128::from(totals.read_cmds),
        host_write_commands: u128::from(totals.write_cmds),
        power_cycles: 1,
        power_on_hours: u128::from(target.started.elapsed().as_secs() / 3600),
        media_errors: u128::from(totals.media_errors),
        error_log_entries: u128::from(ctrl.state().error_count),
        ..SmartLog::default()
    };
    let mut page = vec![0u8; SmartLog::SIZE];
    smart.encode(&mut page);
    Ok(page)
}

fn firmware_log() -> Vec<u8> {
    // Slots 2 to 7 are unsupported (FRMW reports one slot): all zeroes, as the log requires.
    let mut frs = [[0u8; 8]; 7];
    frs[0] = ascii(env!("CARGO_PKG_VERSION"));
    let mut page = vec![0u8; FirmwareSlotLog::SIZE];
    FirmwareSlotLog { afi: 1, frs }.encode(&mut page);
    page
}

fn effects_log() -> Vec<u8> {
    let mut effects = CommandsEffectsLog::default();
    for op in [
        AdminOpcode::GetLogPage,
        AdminOpcode::Identify,
        AdminOpcode::Abort,
        AdminOpcode::SetFeatures,
        AdminOpcode::GetFeatures,
        AdminOpcode::AsyncEventRequest,
        AdminOpcode::KeepAlive,
    ] {
        effects.admin[usize::from(u8::from(op))] = log::EFFECTS_CSUPP;
    }
    for op in [IoOpcode::Flush, IoOpcode::Read, IoOpcode::Compare] {
        effects.io[usize::from(u8::from(op))] = log::EFFECTS_CSUPP;
    }
    for op in [IoOpcode::Write, IoOpcode::WriteZeroes, IoOpcode::DatasetManagement] {
        effects.io[usize::from(u8::from(op))] = log::EFFECTS_CSUPP | log::EFFECTS_LBCC;
    }
    let mut page = vec![0u8; CommandsEffectsLog::SIZE];
    effects.encode(&mut page);
    page
}

// ----- Features -----

fn get_features(ctrl: &Controller, sqe: &Sqe, out: &mut [u8]) -> AdminOutcome {
    let f = Features::from_sqe(sqe);
    let discovery = ctrl.is_discovery();
    if f.sel == Sel::SupportedCapabilities as u8 {
        return match supported(f.fid, discovery) {
            true => AdminOutcome::ok(feat::CAP_CHANGEABLE),
            false => AdminOutcome::status(Status::INVALID_FIELD.with_dnr()),
        };
    }
    // Nothing is saveable, so the saved value is the default one.
    let default = f.sel == Sel::Default as u8 || f.sel == Sel::Saved as u8;
    let s = ctrl.state();
    let v = if default { FeatureValues::default() } else { s.features };
    let dw0 = match f.fid {
        fid::KEEP_ALIVE_TIMER => ctrl.kato_ms(),
        fid::ASYNC_EVENT_CONFIGURATION => v.async_event_config,
        _ if discovery => return AdminOutcome::status(Status::INVALID_FIELD.with_dnr()),
        fid::ARBITRATION => v.arbitration,
        fid::POWER_MANAGEMENT => v.power_state,
        fid::TEMPERATURE_THRESHOLD => v.temperature_threshold,
        fid::ERROR_RECOVERY => v.error_recovery,
        fid::WRITE_ATOMICITY => v.write_atomicity,
        fid::VOLATILE_WRITE_CACHE => u32::from(default || ctrl.volatile_write_cache()),
        fid::NUMBER_OF_QUEUES => queues_dw0(s.io_queues),
        fid::HOST_IDENTIFIER => {
            // Fabrics controllers use the 128-bit host identifier from Connect.
            if f.cdw11 & 1 == 0 {
                return AdminOutcome::status(Status::INVALID_FIELD.with_dnr());
            }
            out[..16].copy_from_slice(&ctrl.hostid);
            return AdminOutcome::Done { status: Status::SUCCESS, dw0: 1, dw1: 0, out_len: HOST_ID_BYTES };
        }
        _ => return AdminOutcome::status(Status::INVALID_FIELD.with_dnr()),
    };
    AdminOutcome::ok(dw0)
}

/// Number of Queues dword 0: granted submission and completion queues, 0's based.
fn queues_dw0(granted: u16) -> u32 {
    let n = u32::from(granted);
    NumberOfQueues { sq_count: n, cq_count: n }.to_dword()
}

fn supported(feature: u8, discovery: bool) -> bool {
    let common = [fid::KEEP_ALIVE_TIMER, fid::ASYNC_EVENT_CONFIGURATION];
    let io = [
        fid::ARBITRATION,
        fid::POWER_MANAGEMENT,
        fid::TEMPERATURE_THRESHOLD,
        fid::ERROR_RECOVERY,
        fid::WRITE_ATOMICITY,
        fid::VOLATILE_WRITE_CACHE,
        fid::NUMBER_OF_QUEUES,
    ];
    common.contains(&feature) || (!discovery && io.contains(&feature))
}

fn set_features(ctrl: &Controller, target: &Target, sqe: &Sqe) -> AdminOutcome {
    let f = Features::from_sqe(sqe);
    if f.save {
        return AdminOutcome::status(Status::FEATURE_IDENTIFIER_NOT_SAVEABLE.with_dnr());
    }
    let discovery = ctrl.is_discovery();
    let mut s = ctrl.state();
    match f.fid {
        fid::KEEP_ALIVE_TIMER => ctrl.kato_ms.store(f.cdw11, Ordering::Relaxed),
        fid::ASYNC_EVENT_CONFIGURATION => {
            let supported = if discovery { AEC_DISCOVERY_LOG_CHANGE } else { AEC_NAMESPACE_ATTRIBUTE };
            s.features.async_event_config = f.cdw11 & supported;
        }
        _ if discovery => return AdminOutcome::status(Status::INVALID_FIELD.with_dnr()),
        fid::ARBITRATION => s.features.arbitration = f.cdw11,
        // One power state (NPSS = 0).
        fid::POWER_MANAGEMENT if f.cdw11 & 0x1F != 0 => return AdminOutcome::status(Status::INVALID_FIELD.with_dnr()),
        fid::POWER_MANAGEMENT => s.features.power_state = f.cdw11,
        fid::TEMPERATURE_THRESHOLD => s.features.temperature_threshold = f.cdw11,
        fid::ERROR_RECOVERY => s.features.error_recovery = f.cdw11,
        fid::WRITE_ATOMICITY => s.features.write_atomicity = f.cdw11,
        fid::VOLATILE_WRITE_CACHE => ctrl.volatile_write_cache.store(f.cdw11 & 1 != 0, Ordering::Relaxed),
        fid::NUMBER_OF_QUEUES => {
            let (nsqr, ncqr) = (f.cdw11 & 0xFFFF, f.cdw11 >> 16);
            if nsqr == 0xFFFF || ncqr == 0xFFFF {
                return AdminOutcome::status(Status::INVALID_FIELD.with_dnr());
            }
            if s.io_qids.iter().any(|&q| q) {
                return AdminOutcome::status(Status::COMMAND_SEQUENCE_ERROR.with_dnr());
            }
            let granted = (nsqr.max(ncqr) + 1).min(u32::from(target.limits.max_io_queues)) as u16;
            s.io_queues = granted;
            s.io_qids = vec![false; usize::from(granted)];
            return AdminOutcome::ok(queues_dw0(granted));
        }
        // The host identifier comes with Connect and cannot change (NVMe over Fabrics).
        fid::HOST_IDENTIFIER => return AdminOutcome::status(Status::COMMAND_SEQUENCE_ERROR.with_dnr()),
        _ => return AdminOutcome::status(Status::INVALID_FIELD.with_dnr()),
    }
    AdminOutcome::ok(0)
}

// ----- Properties -----

fn property_get(ctrl: &Controller, target: &Target, sqe: &Sqe) -> AdminOutcome {
    let Ok(get) = PropertyGet::from_sqe(sqe) else {
        return AdminOutcome::status(Status::INVALID_FIELD.with_dnr());
    };
    let s = ctrl.state();
    let value: u64 = match (get.offset, get.size) {
        (property::CAP, PropertySize::Eight) => capability(target).to_u64(),
        (property::VS, PropertySize::Four) => u64::from(Vs::FABRIQ.to_u32()),
        (property::CC, PropertySize::Four) => u64::from(s.cc),
        (property::CSTS, PropertySize::Four) => u64::from(s.life.csts()),
        _ => return AdminOutcome::status(Status::INVALID_FIELD.with_dnr()),
    };
    AdminOutcome::Done { status: Status::SUCCESS, dw0: value as u32, dw1: (value >> 32) as u32, out_len: 0 }
}

fn property_set(ctrl: &Controller, sqe: &Sqe) -> AdminOutcome {
    let Ok(set) = PropertySet::from_sqe(sqe) else {
        return AdminOutcome::status(Status::INVALID_FIELD.with_dnr());
    };
    if set.offset != property::CC || set.size != PropertySize::Four {
        return AdminOutcome::status(Status::INVALID_FIELD.with_dnr());
    }
    let Ok(new) = Cc::from_u32(set.value as u32) else {
        return AdminOutcome::status(Status::INVALID_FIELD.with_dnr());
    };
    let mut s = ctrl.state();
    let old = Cc::from_u32(s.cc).unwrap_or_default();
    s.cc = set.value as u32;
    let mut events = Vec::with_capacity(2);
    if new.en != old.en {
        let entry_sizes_ok = ctrl.is_discovery() || (new.iosqes == 6 && new.iocqes == 4);
        let valid = new.css == property::CC_CSS_NVM && new.mps == 0 && entry_sizes_ok;
        if new.en && !valid {
            tracing::warn!(
                cntlid = ctrl.cntlid,
                cc = set.value,
                "enable with unsupported CC values; controller fatal status"
            );
        }
        events.push(if new.en { Event::Enable { valid } } else { Event::Disable });
        if !new.en {
            // A controller reset deletes the I/O queues: theirs close when their reactors look.
            ctrl.reset_epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
    }
    if new.shn != ShutdownNotification::None && old.shn == ShutdownNotification::None {
        events.push(Event::Shutdown);
    }
    let mut flush = false;
    for event in events {
        if let Some((next, action)) = s.life.on(event) {
            s.life = next;
            flush |= action == Action::Flush;
        }
    }
    if flush {
        drop(s);
        return AdminOutcome::Flush;
    }
    AdminOutcome::ok(0)
}
