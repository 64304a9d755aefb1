//! The CSI Node service: runs on every Kubernetes node, attaches volumes with the kernel's
//! NVMe-oF initiator and hands them to pods.
//!
//! ```text
//!   (nothing) --NodeStage--> staged: connected; a file system mounted at the staging path
//!       ^                      |     (or, for raw block, the device found)
//!       |                      +--NodePublish--> published: a bind mount at each target path
//!       |                      <-NodeUnpublish--+   (the staging directory, or the device file)
//!       +----NodeUnstage-------+  unmount, then disconnect unless something else uses the
//!                                 subsystem
//! ```
//!
//! Every RPC looks first, then acts, then waits with a bound (Mayastor's habit): a repeated
//! call finds its work done and succeeds, an interrupted one finishes. What a stage did is
//! kept in a [`state::Store`] record, because Unstage and Expand get only a volume id and a
//! path. One RPC per volume at a time ([`Inflight`]); a second one gets `ABORTED`.
//!
//! Failures are one [`Error`], mapped to gRPC codes in one place.

pub mod fabrics;
pub mod fs;
pub mod host;
pub mod mount;
pub mod state;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::{Code, Request, Response, Status};

use crate::caps::{self, Access, Capability, Refused};
use crate::csi::node_server::Node;
use crate::csi::node_service_capability::{Rpc, rpc::Type as RpcType};
use crate::csi::*;
use crate::inflight::{Guard, Inflight};
use crate::keys;
use fabrics::{Connect, Sysfs};
use state::{Staged, Store};

/// How often waits look again.
const POLL: Duration = Duration::from_millis(100);
/// Unmounts tried at one path (stacked mounts of earlier, interrupted calls).
const MAX_UNMOUNTS: usize = 8;

/// What the node service is configured with.
#[derive(Debug, Clone)]
pub struct Config {
    pub sysfs: Sysfs,
    pub hostnqn_path: PathBuf,
    pub hostid_path: PathBuf,
    /// Where the records of staged volumes live.
    pub state_dir: PathBuf,
    /// NodeGetInfo's `max_volumes_per_node` (0: no limit).
    pub max_volumes: i64,
    /// The node's topology labels (`zone` -> `a`), answered with the driver's key prefix.
    pub topology: BTreeMap<String, String>,
    /// The connect's `ctrl_loss_tmo` (-1: reconnect forever).
    pub ctrl_loss_tmo_s: i32,
    pub reconnect_delay_s: u32,
    /// 0: one I/O queue per CPU (the kernel's default).
    pub nr_io_queues: u32,
    /// How long a stage waits for the block device, and an expand for the new size.
    pub device_timeout: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            sysfs: Sysfs::default(),
            hostnqn_path: "/etc/nvme/hostnqn".into(),
            hostid_path: "/etc/nvme/hostid".into(),
            state_dir: "/var/lib/kubelet/plugins/csi.fabriq.dev/volumes".into(),
            max_volumes: 0,
            topology: BTreeMap::new(),
            ctrl_loss_tmo_s: -1,
            reconnect_delay_s: 2,
            nr_io_queues: 0,
            device_timeout: Duration::from_secs(60),
        }
    }
}

/// Why a node RPC failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error("{0}")]
    NotFound(String),
    /// Published or staged already, in a way that contradicts the request.
    #[error("{0}")]
    Incompatible(String),
    #[error("{0}")]
    Precondition(String),
    #[error("an operation on volume {0:?} is in progress; retry")]
    Busy(String),
    #[error("connecting to {what}: {source}")]
    Connect { what: String, source: std::io::Error },
    #[error("{0}")]
    Timeout(String),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error(transparent)]
    Tool(#[from] fs::ToolError),
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        let code = match &e {
            Error::Refused(_) => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::Incompatible(_) => Code::AlreadyExists,
            Error::Precondition(_) => Code::FailedPrecondition,
            Error::Busy(_) => Code::Aborted,
            Error::Connect { .. } => Code::Unavailable,
            Error::Timeout(_) => Code::DeadlineExceeded,
            Error::Io { .. } | Error::Tool(_) => Code::Internal,
        };
        Status::new(code, e.to_string())
    }
}

type Result<T> = std::result::Result<T, Error>;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

fn required<'a>(value: &'a str, field: &str) -> Result<&'a str> {
    if value.is_empty() { Err(Refused::Missing(field.to_owned()).into()) } else { Ok(value) }
}

/// A path field: required and absolute.
fn path_field(value: &str, field: &str) -> Result<PathBuf> {
    let p = PathBuf::from(required(value, field)?);
    if !p.is_absolute() {
        return Err(
            Refused::Unsupported { field: field.into(), why: format!("{value:?} is not an absolute path") }.into()
        );
    }
    Ok(p)
}

fn capability(c: Option<&VolumeCapability>, field: &str) -> Result<Capability> {
    let c = c.ok_or_else(|| Refused::Missing(field.to_owned()))?;
    Ok(caps::check(c, field)?)
}

/// How to reach the volume, from ControllerPublishVolume's publish context.
fn target(ctx: &HashMap<String, String>) -> Result<(String, String, String, String, u32)> {
    let get = |k: &str| -> Result<String> {
        let v =
            ctx.get(k).filter(|v| !v.is_empty()).ok_or_else(|| Refused::Missing(format!("publish_context[{k:?}]")))?;
        if !fabrics::check_option(v) {
            return Err(Refused::Unsupported {
                field: format!("publish_context[{k:?}]"),
                why: format!("{v:?} is not a value the kernel's connect takes"),
            }
            .into());
        }
        Ok(v.clone())
    };
    let transport = get(keys::TRANSPORT)?;
    if transport != "tcp" && transport != "rdma" {
        return Err(Refused::Unsupported {
            field: format!("publish_context[{:?}]", keys::TRANSPORT),
            why: format!("transport {transport:?} is not tcp or rdma"),
        }
        .into());
    }
    let nsid = match ctx.get(keys::NSID).filter(|v| !v.is_empty()) {
        None => 1,
        Some(n) => n.parse().ok().filter(|n| *n > 0).ok_or_else(|| Refused::Unsupported {
            field: format!("publish_context[{:?}]", keys::NSID),
            why: format!("{n:?} is not a namespace id"),
        })?,
    };
    Ok((transport, get(keys::TRADDR)?, get(keys::TRSVCID)?, get(keys::SUBNQN)?, nsid))
}

/// The device number of a device file.
fn rdev(path: &Path) -> Option<(u32, u32)> {
    let st = rustix::fs::stat(path).ok()?;
    let is_block = rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::BlockDevice;
    is_block.then(|| (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev)))
}

/// The Node service.
#[derive(Clone)]
pub struct NodeService {
    inner: Arc<Inner>,
}

/// The RPCs as synchronous functions (they block on the kernel and on tools).
pub struct Inner {
    cfg: Config,
    identity: host::Identity,
    store: Store,
    inflight: Inflight,
}

impl NodeService {
    /// Reads (or creates) the host identity; fails when it cannot.
    pub fn new(cfg: Config) -> std::io::Result<NodeService> {
        let identity = host::load_or_create(&cfg.hostnqn_path, &cfg.hostid_path)?;
        let store = Store::new(&cfg.state_dir);
        Ok(NodeService { inner: Arc::new(Inner { cfg, identity, store, inflight: Inflight::default() }) })
    }

    /// The node id (host NQN).
    pub fn node_id(&self) -> &str {
        &self.inner.identity.hostnqn
    }

    async fn run<T, F>(&self, f: F) -> std::result::Result<Response<T>, Status>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        let span = tracing::Span::current();
        match tokio::task::spawn_blocking(move || span.in_scope(|| f(&inner))).await {
            Ok(Ok(v)) => Ok(Response::new(v)),
            Ok(Err(e)) => {
                let status = Status::from(e);
                tracing::info!(code = ?status.code(), message = status.message(), "node call failed");
                Err(status)
            }
            Err(join) => Err(Status::internal(format!("the node call panicked: {join}"))),
        }
    }
}

impl Inner {
    fn busy(&self, key: &str) -> Result<Guard> {
        self.inflight.try_take(key).ok_or_else(|| Error::Busy(key.to_owned()))
    }

    fn mounts(&self) -> Result<Vec<mount::Entry>> {
        mount::table().map_err(io("reading /proc/self/mountinfo"))
    }

    /// The namespace's block device name, waiting for it with the configured bound.
    fn wait_device(&self, nqn: &str, nsid: u32) -> Result<String> {
        let deadline = Instant::now() + self.cfg.device_timeout;
        loop {
            if let Some(name) = self.cfg.sysfs.namespace(nqn, nsid)
                && rdev(&self.cfg.sysfs.device(&name)).is_some()
            {
                return Ok(name);
            }
            if Instant::now() >= deadline {
                let states: Vec<String> =
                    self.cfg.sysfs.controllers(nqn).iter().map(|c| format!("{} {}", c.name, c.state)).collect();
                return Err(Error::Timeout(format!(
                    "namespace {nsid} of {nqn} did not appear as a block device within {:?} (controllers: {states:?})",
                    self.cfg.device_timeout
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Connects to the subsystem unless a controller to that address exists already.
    fn ensure_connected(&self, s: &Staged) -> Result<()> {
        let have = self.cfg.sysfs.controllers(&s.nqn);
        if have.iter().any(|c| c.reaches(&s.transport, &s.traddr, &s.trsvcid) && c.state != "deleting") {
            return Ok(());
        }
        let c = Connect {
            transport: s.transport.clone(),
            traddr: s.traddr.clone(),
            trsvcid: s.trsvcid.clone(),
            nqn: s.nqn.clone(),
            hostnqn: self.identity.hostnqn.clone(),
            hostid: self.identity.hostid.clone(),
            ctrl_loss_tmo_s: self.cfg.ctrl_loss_tmo_s,
            reconnect_delay_s: self.cfg.reconnect_delay_s,
            nr_io_queues: self.cfg.nr_io_queues,
        };
        match self.cfg.sysfs.connect(&c) {
            Ok(instance) => {
                tracing::info!(nqn = %s.nqn, traddr = %s.traddr, trsvcid = %s.trsvcid, ?instance, "connected");
                Ok(())
            }
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::ALREADY.raw_os_error()) => Ok(()),
            Err(source) => {
                Err(Error::Connect { what: format!("{} {}:{} {}", s.transport, s.traddr, s.trsvcid, s.nqn), source })
            }
        }
    }

    /// Whether anything but `except` (a mount point being torn down) uses the device `name`.
    fn device_in_use(&self, name: &str, table: &[mount::Entry]) -> bool {
        let dev = rdev(&self.cfg.sysfs.device(name));
        let mounted = table
            .iter()
            .any(|e| Some((e.major, e.minor)) == dev || (e.root == format!("/{name}") && e.fs_type == "devtmpfs"));
        mounted || self.cfg.sysfs.has_holders(name)
    }

    /// Disconnects the subsystem of `s` unless something else still uses it.
    fn disconnect_if_unused(&self, s: &Staged) -> Result<()> {
        let others = self.store.all().into_iter().any(|o| o.nqn == s.nqn && o.volume_id != s.volume_id);
        let table = self.mounts()?;
        if let Some(name) = self.cfg.sysfs.namespace(&s.nqn, s.nsid)
            && self.device_in_use(&name, &table)
        {
            tracing::info!(nqn = %s.nqn, device = %name, "still in use: the subsystem stays connected");
            return Ok(());
        }
        if others {
            tracing::info!(nqn = %s.nqn, "another staged volume uses the subsystem: it stays connected");
            return Ok(());
        }
        for c in self.cfg.sysfs.controllers(&s.nqn) {
            match self.cfg.sysfs.disconnect(&c.name) {
                Ok(()) => tracing::info!(nqn = %s.nqn, controller = %c.name, "disconnected"),
                // Gone between the look and the write: what was wanted.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(format!("disconnecting {}", c.name))(e)),
            }
        }
        Ok(())
    }

    /// Unmounts whatever is mounted at `path`, however many times it is.
    fn unmount_all(&self, path: &Path) -> Result<()> {
        for _ in 0..MAX_UNMOUNTS {
            if mount::at(&self.mounts()?, path).is_none() {
                return Ok(());
            }
            mount::unmount(path).map_err(io(format!("unmounting {}", path.display())))?;
        }
        Err(Error::Precondition(format!("{} is still mounted after {MAX_UNMOUNTS} unmounts", path.display())))
    }

    pub fn stage(&self, req: NodeStageVolumeRequest) -> Result<NodeStageVolumeResponse> {
        let volume_id = required(&req.volume_id, "volume_id")?.to_owned();
        let staging = path_field(&req.staging_target_path, "staging_target_path")?;
        let cap = capability(req.volume_capability.as_ref(), "volume_capability")?;
        let (transport, traddr, trsvcid, nqn, nsid) = target(&req.publish_context)?;
        let _guard = self.busy(&volume_id)?;
        let block = cap.access == Access::Block;
        let wanted_fs = match &cap.access {
            Access::Block => String::new(),
            Access::Mount { fs_type, .. } if !fs_type.is_empty() => fs_type.clone(),
            Access::Mount { .. } => req.volume_context.get(keys::FS_TYPE).cloned().unwrap_or_default(),
        };
        if let Some(old) = self.store.get(&volume_id).map_err(io("reading the volume's record"))? {
            if old.staging_path != staging {
                return Err(Error::Incompatible(format!(
                    "volume {volume_id} is staged at {} already",
                    old.staging_path.display()
                )));
            }
            if old.block != block {
                let was = if old.block { "raw block" } else { "a file system" };
                return Err(Error::Incompatible(format!("volume {volume_id} is staged as {was} already")));
            }
            if old.nqn != nqn {
                return Err(Error::Incompatible(format!("volume {volume_id} is staged from {} already", old.nqn)));
            }
        }
        let mut rec = Staged {
            volume_id: volume_id.clone(),
            nqn,
            nsid,
            transport,
            traddr,
            trsvcid,
            staging_path: staging.clone(),
            block,
            fs_type: String::new(),
        };
        // Written first: a stage interrupted from here on is cleaned by the unstage.
        self.store.put(&rec).map_err(io("writing the volume's record"))?;
        self.ensure_connected(&rec)?;
        let name = self.wait_device(&rec.nqn, rec.nsid)?;
        let device = self.cfg.sysfs.device(&name);
        if block {
            tracing::info!(volume = %volume_id, device = %device.display(), "staged (raw block)");
            return Ok(NodeStageVolumeResponse {});
        }
        std::fs::create_dir_all(&staging).map_err(io(format!("creating {}", staging.display())))?;
        let dev = rdev(&device);
        if let Some(m) = mount::at(&self.mounts()?, &staging) {
            if Some((m.major, m.minor)) == dev {
                rec.fs_type = m.fs_type.clone();
                self.store.put(&rec).map_err(io("writing the volume's record"))?;
                return Ok(NodeStageVolumeResponse {});
            }
            return Err(Error::Incompatible(format!(
                "{} has another file system mounted ({} {})",
                staging.display(),
                m.fs_type,
                m.source
            )));
        }
        let fs_type = match fs::probe(&device).map_err(io(format!("reading {}", device.display())))? {
            fs::Content::Empty => {
                let fs_type = if wanted_fs.is_empty() { caps::DEFAULT_FS_TYPE.to_owned() } else { wanted_fs };
                tracing::info!(volume = %volume_id, device = %device.display(), %fs_type, "formatting");
                fs::mkfs(&device, &fs_type)?;
                fs_type
            }
            fs::Content::Fs(found) if wanted_fs.is_empty() || wanted_fs == found => found.to_owned(),
            fs::Content::Fs(found) => {
                return Err(Error::Precondition(format!(
                    "volume {volume_id} carries {found}, not the {wanted_fs} asked for: the driver formats empty volumes only"
                )));
            }
            fs::Content::Other(what) => {
                return Err(Error::Precondition(format!(
                    "volume {volume_id} carries {what}, not a file system the driver mounts: it formats empty volumes only"
                )));
            }
        };
        let Access::Mount { flags, .. } = &cap.access else { unreachable!("block returned above") };
        let (mut mflags, data) = mount::split_options(flags);
        if cap.read_only() {
            mflags |= rustix::mount::MountFlags::RDONLY;
        }
        mount::mount_fs(&device, &staging, &fs_type, mflags, &data).map_err(io(format!(
            "mounting {} ({fs_type}) at {}",
            device.display(),
            staging.display()
        )))?;
        rec.fs_type = fs_type;
        self.store.put(&rec).map_err(io("writing the volume's record"))?;
        tracing::info!(volume = %volume_id, device = %device.display(), staging = %staging.display(), fs = %rec.fs_type, "staged");
        Ok(NodeStageVolumeResponse {})
    }

    pub fn unstage(&self, req: NodeUnstageVolumeRequest) -> Result<NodeUnstageVolumeResponse> {
        let volume_id = required(&req.volume_id, "volume_id")?.to_owned();
        let staging = path_field(&req.staging_target_path, "staging_target_path")?;
        let _guard = self.busy(&volume_id)?;
        self.unmount_all(&staging)?;
        if let Some(rec) = self.store.get(&volume_id).map_err(io("reading the volume's record"))? {
            self.disconnect_if_unused(&rec)?;
            self.store.remove(&volume_id).map_err(io("removing the volume's record"))?;
            tracing::info!(volume = %volume_id, nqn = %rec.nqn, "unstaged");
        }
        Ok(NodeUnstageVolumeResponse {})
    }

    pub fn publish(&self, req: NodePublishVolumeRequest) -> Result<NodePublishVolumeResponse> {
        let volume_id = required(&req.volume_id, "volume_id")?.to_owned();
        let staging = path_field(&req.staging_target_path, "staging_target_path")?;
        let target = path_field(&req.target_path, "target_path")?;
        let cap = capability(req.volume_capability.as_ref(), "volume_capability")?;
        let _guard = self.busy(&volume_id)?;
        let rec = self
            .store
            .get(&volume_id)
            .map_err(io("reading the volume's record"))?
            .filter(|r| r.staging_path == staging)
            .ok_or_else(|| {
                Error::Precondition(format!(
                    "volume {volume_id} is not staged at {}: NodeStageVolume first",
                    staging.display()
                ))
            })?;
        let block = cap.access == Access::Block;
        if rec.block != block {
            let was = if rec.block { "raw block" } else { "a file system" };
            return Err(Error::Precondition(format!("volume {volume_id} is staged as {was}")));
        }
        let read_only = req.readonly || cap.read_only();
        let (mut flags, _data) = match &cap.access {
            Access::Mount { flags, .. } => mount::split_options(flags),
            Access::Block => (rustix::mount::MountFlags::empty(), String::new()),
        };
        if read_only {
            flags |= rustix::mount::MountFlags::RDONLY;
        }
        let table = self.mounts()?;
        let (source, source_dev, device_name) = if block {
            let name = self.cfg.sysfs.namespace(&rec.nqn, rec.nsid).ok_or_else(|| {
                Error::Precondition(format!(
                    "the block device of volume {volume_id} is gone (is {} connected?)",
                    rec.nqn
                ))
            })?;
            let device = self.cfg.sysfs.device(&name);
            (device.clone(), rdev(&device), Some(name))
        } else {
            let m = mount::at(&table, &staging).ok_or_else(|| {
                Error::Precondition(format!("nothing is mounted at {}: NodeStageVolume again", staging.display()))
            })?;
            (staging.clone(), Some((m.major, m.minor)), None)
        };
        if let Some(m) = mount::at(&table, &target) {
            let same = match &device_name {
                Some(name) => m.root == format!("/{name}") || Some((m.major, m.minor)) == source_dev,
                None => Some((m.major, m.minor)) == source_dev,
            };
            if same && m.read_only() == read_only {
                return Ok(NodePublishVolumeResponse {});
            }
            return Err(Error::Incompatible(format!(
                "{} is published already {}",
                target.display(),
                if same { "with another read-only setting" } else { "from another volume" }
            )));
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
        }
        if block {
            if target.is_dir() {
                std::fs::remove_dir(&target).map_err(io(format!("{} is a directory", target.display())))?;
            }
            if !target.exists() {
                std::fs::File::create(&target).map_err(io(format!("creating {}", target.display())))?;
            }
        } else {
            std::fs::create_dir_all(&target).map_err(io(format!("creating {}", target.display())))?;
        }
        mount::bind(&source, &target, flags).map_err(io(format!(
            "bind-mounting {} at {}",
            source.display(),
            target.display()
        )))?;
        tracing::info!(volume = %volume_id, target = %target.display(), read_only, "published");
        Ok(NodePublishVolumeResponse {})
    }

    pub fn unpublish(&self, req: NodeUnpublishVolumeRequest) -> Result<NodeUnpublishVolumeResponse> {
        let volume_id = required(&req.volume_id, "volume_id")?.to_owned();
        let target = path_field(&req.target_path, "target_path")?;
        let _guard = self.busy(&volume_id)?;
        self.unmount_all(&target)?;
        match std::fs::symlink_metadata(&target) {
            Ok(m) if m.is_dir() => std::fs::remove_dir(&target),
            Ok(_) => std::fs::remove_file(&target),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
        .map_err(io(format!("removing {}", target.display())))?;
        tracing::info!(volume = %volume_id, target = %target.display(), "unpublished");
        Ok(NodeUnpublishVolumeResponse {})
    }

    pub fn stats(&self, req: NodeGetVolumeStatsRequest) -> Result<NodeGetVolumeStatsResponse> {
        let volume_id = required(&req.volume_id, "volume_id")?.to_owned();
        let path = path_field(&req.volume_path, "volume_path")?;
        if !path.exists() {
            return Err(Error::NotFound(format!(
                "volume {volume_id} is not at {}: the path does not exist",
                path.display()
            )));
        }
        let rec = self.store.get(&volume_id).map_err(io("reading the volume's record"))?;
        let abnormal = |message: String| NodeGetVolumeStatsResponse {
            usage: Vec::new(),
            volume_condition: Some(VolumeCondition { abnormal: true, message }),
        };
        if let Some(r) = &rec {
            let ctrls = self.cfg.sysfs.controllers(&r.nqn);
            if !ctrls.iter().any(|c| c.state == "live") {
                let states: Vec<String> = ctrls.iter().map(|c| format!("{} {}", c.name, c.state)).collect();
                return Ok(abnormal(format!("no live NVMe controller for {} (controllers: {states:?})", r.nqn)));
            }
        }
        let bytes = |total: u64, available: u64, used: u64, unit: volume_usage::Unit| VolumeUsage {
            total: i64::try_from(total).unwrap_or(i64::MAX),
            available: i64::try_from(available).unwrap_or(i64::MAX),
            used: i64::try_from(used).unwrap_or(i64::MAX),
            unit: unit as i32,
        };
        if let Some((major, minor)) = rdev(&path) {
            // A raw block volume: its size is all there is to say.
            let size = self.cfg.sysfs.block_name(major, minor).and_then(|n| self.cfg.sysfs.size_bytes(&n));
            return Ok(match size {
                Some(size) => NodeGetVolumeStatsResponse {
                    usage: vec![bytes(size, 0, 0, volume_usage::Unit::Bytes)],
                    volume_condition: Some(VolumeCondition { abnormal: false, message: "block device present".into() }),
                },
                None => abnormal(format!("the block device at {} is gone", path.display())),
            });
        }
        if mount::at(&self.mounts()?, &path).is_none() {
            return Ok(abnormal(format!("{} is not mounted", path.display())));
        }
        match fs::usage(&path) {
            Ok(u) => Ok(NodeGetVolumeStatsResponse {
                usage: vec![
                    bytes(u.bytes.0, u.bytes.1, u.bytes.2, volume_usage::Unit::Bytes),
                    bytes(u.inodes.0, u.inodes.1, u.inodes.2, volume_usage::Unit::Inodes),
                ],
                volume_condition: Some(VolumeCondition { abnormal: false, message: "mounted".into() }),
            }),
            Err(e) => Ok(abnormal(format!("statvfs {}: {e}", path.display()))),
        }
    }

    pub fn expand(&self, req: NodeExpandVolumeRequest) -> Result<NodeExpandVolumeResponse> {
        let volume_id = required(&req.volume_id, "volume_id")?.to_owned();
        let path = path_field(&req.volume_path, "volume_path")?;
        let required_bytes = match &req.capacity_range {
            Some(r) => u64::try_from(r.required_bytes).map_err(|_| Refused::Unsupported {
                field: "capacity_range.required_bytes".into(),
                why: "must not be negative".into(),
            })?,
            None => 0,
        };
        if let Some(c) = &req.volume_capability {
            caps::check(c, "volume_capability")?;
        }
        let _guard = self.busy(&volume_id)?;
        if !path.exists() {
            return Err(Error::NotFound(format!(
                "volume {volume_id} is not at {}: the path does not exist",
                path.display()
            )));
        }
        let rec = self
            .store
            .get(&volume_id)
            .map_err(io("reading the volume's record"))?
            .ok_or_else(|| Error::NotFound(format!("volume {volume_id} is not staged on this node")))?;
        let name = self
            .cfg
            .sysfs
            .namespace(&rec.nqn, rec.nsid)
            .ok_or_else(|| Error::Precondition(format!("the block device of volume {volume_id} is gone")))?;
        for c in self.cfg.sysfs.controllers(&rec.nqn) {
            if let Err(e) = self.cfg.sysfs.rescan(&c.name) {
                tracing::warn!(controller = %c.name, error = %e, "rescan failed");
            }
        }
        let deadline = Instant::now() + self.cfg.device_timeout;
        let size = loop {
            let size = self.cfg.sysfs.size_bytes(&name).unwrap_or(0);
            if size >= required_bytes {
                break size;
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout(format!(
                    "{name} has {size} bytes, not the {required_bytes} asked for, {:?} after a rescan",
                    self.cfg.device_timeout
                )));
            }
            std::thread::sleep(POLL);
        };
        if !rec.block {
            let device = self.cfg.sysfs.device(&name);
            fs::grow(&device, &path, &rec.fs_type)?;
            tracing::info!(volume = %volume_id, device = %device.display(), size_bytes = size, "file system grown");
        }
        Ok(NodeExpandVolumeResponse { capacity_bytes: i64::try_from(size).unwrap_or(i64::MAX) })
    }

    pub fn info(&self) -> NodeGetInfoResponse {
        let segments: HashMap<String, String> =
            self.cfg.topology.iter().map(|(k, v)| (format!("{}{k}", keys::TOPOLOGY_PREFIX), v.clone())).collect();
        NodeGetInfoResponse {
            node_id: self.identity.hostnqn.clone(),
            max_volumes_per_node: self.cfg.max_volumes,
            accessible_topology: (!segments.is_empty()).then_some(Topology { segments }),
        }
    }
}

/// What NodeGetCapabilities answers.
pub const CAPABILITIES: [RpcType; 5] = [
    RpcType::StageUnstageVolume,
    RpcType::GetVolumeStats,
    RpcType::ExpandVolume,
    RpcType::VolumeCondition,
    RpcType::SingleNodeMultiWriter,
];

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_stage_volume(
        &self,
        request: Request<NodeStageVolumeRequest>,
    ) -> std::result::Result<Response<NodeStageVolumeResponse>, Status> {
        let req = request.into_inner();
        self.run(move |n| n.stage(req)).await
    }

    async fn node_unstage_volume(
        &self,
        request: Request<NodeUnstageVolumeRequest>,
    ) -> std::result::Result<Response<NodeUnstageVolumeResponse>, Status> {
        let req = request.into_inner();
        self.run(move |n| n.unstage(req)).await
    }

    async fn node_publish_volume(
        &self,
        request: Request<NodePublishVolumeRequest>,
    ) -> std::result::Result<Response<NodePublishVolumeResponse>, Status> {
        let req = request.into_inner();
        self.run(move |n| n.publish(req)).await
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<NodeUnpublishVolumeRequest>,
    ) -> std::result::Result<Response<NodeUnpublishVolumeResponse>, Status> {
        let req = request.into_inner();
        self.run(move |n| n.unpublish(req)).await
    }

    async fn node_get_volume_stats(
        &self,
        request: Request<NodeGetVolumeStatsRequest>,
    ) -> std::result::Result<Response<NodeGetVolumeStatsResponse>, Status> {
        let req = request.into_inner();
        self.run(move |n| n.stats(req)).await
    }

    async fn node_expand_volume(
        &self,
        request: Request<NodeExpandVolumeRequest>,
    ) -> std::result::Result<Response<NodeExpandVolumeResponse>, Status> {
        let req = request.into_inner();
        self.run(move |n| n.expand(req)).await
    }

    async fn node_get_capabilities(
        &self,
        _request: Request<NodeGetCapabilitiesRequest>,
    ) -> std::result::Result<Response<NodeGetCapabilitiesResponse>, Status> {
        let capabilities = CAPABILITIES
            .iter()
            .map(|t| NodeServiceCapability {
                r#type: Some(node_service_capability::Type::Rpc(Rpc { r#type: *t as i32 })),
            })
            .collect();
        Ok(Response::new(NodeGetCapabilitiesResponse { capabilities }))
    }

    async fn node_get_info(
        &self,
        _request: Request<NodeGetInfoRequest>,
    ) -> std::result::Result<Response<NodeGetInfoResponse>, Status> {
        Ok(Response::new(self.inner.info()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn publish_context_is_checked_field_by_field() {
        let full = [("transport", "tcp"), ("traddr", "10.0.2.2"), ("trsvcid", "4420"), ("subnqn", "nqn.x:vol:1")];
        let (t, a, s, n, ns) = target(&ctx(&full)).unwrap();
        assert_eq!((t.as_str(), a.as_str(), s.as_str(), n.as_str(), ns), ("tcp", "10.0.2.2", "4420", "nqn.x:vol:1", 1));
        let e = target(&ctx(&full[1..])).unwrap_err();
        assert_eq!(e.to_string(), "publish_context[\"transport\"] is required");
        let mut bad = full.to_vec();
        bad[1] = ("traddr", "1.2.3.4,nqn=evil");
        assert!(target(&ctx(&bad)).unwrap_err().to_string().starts_with("publish_context[\"traddr\"]"));
        bad[1] = ("traddr", "10.0.2.2");
        bad[0] = ("transport", "fc");
        assert!(matches!(target(&ctx(&bad)), Err(Error::Refused(_))));
        let mut with_ns = full.to_vec();
        with_ns.push(("nsid", "0"));
        assert!(target(&ctx(&with_ns)).unwrap_err().to_string().contains("nsid"));
    }

    #[test]
    fn errors_become_the_codes_the_specification_prescribes() {
        let code = |e: Error| Status::from(e).code();
        assert_eq!(code(Refused::Missing("volume_id".into()).into()), Code::InvalidArgument);
        assert_eq!(code(Error::NotFound("x".into())), Code::NotFound);
        assert_eq!(code(Error::Incompatible("x".into())), Code::AlreadyExists);
        assert_eq!(code(Error::Precondition("x".into())), Code::FailedPrecondition);
        assert_eq!(code(Error::Busy("x".into())), Code::Aborted);
        assert_eq!(
            path_field("relative/path", "target_path").unwrap_err().to_string(),
            "target_path: \"relative/path\" is not an absolute path"
        );
        assert_eq!(path_field("", "target_path").unwrap_err().to_string(), "target_path is required");
    }

    fn service(dir: &Path) -> NodeService {
        let sysfs = fabrics::tests::fake(dir, "nqn.2026-11.dev.fabriq:vol:v1", true);
        let cfg = Config {
            sysfs,
            hostnqn_path: dir.join("etc/nvme/hostnqn"),
            hostid_path: dir.join("etc/nvme/hostid"),
            state_dir: dir.join("state"),
            max_volumes: 16,
            topology: [("zone".to_owned(), "a".to_owned())].into_iter().collect(),
            device_timeout: Duration::from_millis(200),
            ..Config::default()
        };
        NodeService::new(cfg).unwrap()
    }

    #[test]
    fn info_and_calls_without_work() {
        let dir = tempfile::tempdir().unwrap();
        let node = service(dir.path());
        let info = node.inner.info();
        assert!(info.node_id.starts_with(host::UUID_NQN_PREFIX));
        assert_eq!(info.max_volumes_per_node, 16);
        assert_eq!(info.accessible_topology.unwrap().segments["topology.fabriq.dev/zone"], "a");
        // Unstaging or unpublishing what was never staged or published succeeds.
        let stage = dir.path().join("staging/v9").to_string_lossy().into_owned();
        node.inner
            .unstage(NodeUnstageVolumeRequest { volume_id: "v9".into(), staging_target_path: stage.clone() })
            .unwrap();
        let target = dir.path().join("pods/p/mount").to_string_lossy().into_owned();
        node.inner
            .unpublish(NodeUnpublishVolumeRequest { volume_id: "v9".into(), target_path: target.clone() })
            .unwrap();
        // Publishing what is not staged is a failed precondition.
        let cap = VolumeCapability {
            access_type: Some(volume_capability::AccessType::Block(volume_capability::BlockVolume {})),
            access_mode: Some(volume_capability::AccessMode {
                mode: volume_capability::access_mode::Mode::SingleNodeWriter as i32,
            }),
        };
        let e = node
            .inner
            .publish(NodePublishVolumeRequest {
                volume_id: "v9".into(),
                staging_target_path: stage,
                target_path: target.clone(),
                volume_capability: Some(cap),
                ..Default::default()
            })
            .unwrap_err();
        assert_eq!(Status::from(e).code(), Code::FailedPrecondition);
        // Stats of a path that does not exist: not found; expand of an unstaged volume: the same.
        let e = node.inner.stats(NodeGetVolumeStatsRequest {
            volume_id: "v9".into(),
            volume_path: target.clone(),
            ..Default::default()
        });
        assert_eq!(Status::from(e.unwrap_err()).code(), Code::NotFound);
        let e = node.inner.expand(NodeExpandVolumeRequest {
            volume_id: "v9".into(),
            volume_path: dir.path().to_string_lossy().into_owned(),
            ..Default::default()
        });
        assert_eq!(Status::from(e.unwrap_err()).code(), Code::NotFound);
        // A directory that is not a mount point: abnormal.
        let plain = dir.path().join("plain");
        std::fs::create_dir_all(&plain).unwrap();
        let r = node
            .inner
            .stats(NodeGetVolumeStatsRequest {
                volume_id: "v9".into(),
                volume_path: plain.to_string_lossy().into_owned(),
                ..Default::default()
            })
            .unwrap();
        assert!(r.volume_condition.unwrap().abnormal);
    }

    #[test]
    fn stage_without_a_kernel_times_out_waiting_for_the_device() {
        let dir = tempfile::tempdir().unwrap();
        let node = service(dir.path());
        // The fake sysfs names the subsystem but /dev has no device file: the wait gives up.
        std::fs::create_dir_all(dir.path().join("dev")).unwrap();
        std::fs::write(dir.path().join("dev/nvme-fabrics"), "").unwrap();
        let cap = VolumeCapability {
            access_type: Some(volume_capability::AccessType::Block(volume_capability::BlockVolume {})),
            access_mode: Some(volume_capability::AccessMode {
                mode: volume_capability::access_mode::Mode::SingleNodeWriter as i32,
            }),
        };
        let req = NodeStageVolumeRequest {
            volume_id: "v1".into(),
            staging_target_path: dir.path().join("staging/v1").to_string_lossy().into_owned(),
            volume_capability: Some(cap),
            publish_context: ctx(&[
                ("transport", "tcp"),
                ("traddr", "10.0.2.3"),
                ("trsvcid", "4420"),
                ("subnqn", "nqn.2026-11.dev.fabriq:vol:v1"),
            ]),
            ..Default::default()
        };
        let e = node.inner.stage(req).unwrap_err();
        assert_eq!(Status::from(e).code(), Code::DeadlineExceeded);
        // The connect went to the kernel's file (no controller reached 10.0.2.3).
        let written = std::fs::read_to_string(dir.path().join("dev/nvme-fabrics")).unwrap();
        assert!(
            written.starts_with(
                "nqn=nqn.2026-11.dev.fabriq:vol:v1,transport=tcp,traddr=10.0.2.3,trsvcid=4420,hostnqn=nqn."
            ),
            "{written}"
        );
        assert!(written.contains(",ctrl_loss_tmo=-1,reconnect_delay=2"), "{written}");
        // The record stays, so the unstage the CO sends next cleans up.
        assert!(node.inner.store.get("v1").unwrap().is_some());
    }
}
