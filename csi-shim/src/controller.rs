//! The CSI Controller service: volumes are fabriq-provisioner volumes, a node id is the
//! node's host NQN, and publishing a volume to a node puts that NQN on the volume's allow
//! list. Every RPC is idempotent because every provisioner call it makes is.
//!
//! Each RPC is a synchronous function of the [`Provisioner`] and the request ([`Logic`]),
//! run on tokio's blocking pool; requests are checked before anything is asked of the
//! provisioner, and every failure is one [`Error`], turned into the gRPC code the CSI
//! specification prescribes in one place (`impl From<Error> for Status`).
//!
//! - Names: a CSI name that is a valid provisioner name (1 to 63 of `A-Za-z0-9-_.`) is used
//!   as it is (`pvc-<uid>` from Kubernetes); any other becomes `csi-<UUIDv5 of the name>`, so
//!   a retried CreateVolume finds the same volume.
//! - Sizes: volumes are carved in whole extents of [`EXTENT_BYTES`] (a multiple of both
//!   block sizes); the size is the smallest such multiple within the capacity range.
//! - Topology: segment keys are `topology.fabriq.dev/<label>`, storage-node labels without
//!   the prefix. CreateVolume tries each preferred segment that is also requisite, then the
//!   requisite segments together, then (with no requisite) anywhere. A volume created under
//!   topology requirements is accessible from its node's labels of the keys that were asked
//!   for; one created without is accessible from everywhere (NVMe/TCP crosses the network).
//! - ListVolumes tokens are `after:<name>` (the provisioner lists in name order), so a
//!   volume deleted between pages does not upset the next one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tonic::{Code, Request, Response, Status};

use crate::caps::{self, Access, Capability, Refused};
use crate::csi::controller_server::Controller;
use crate::csi::controller_service_capability::{Rpc, rpc::Type as RpcType};
use crate::csi::*;
use crate::inflight::Inflight;
use crate::keys;
use crate::provisioner::{self, Provisioner, Requirements, Segment, VolumeSpec};

/// The nodes' allocation unit: volumes are whole multiples of it.
pub const EXTENT_BYTES: u64 = 1 << 20;
/// The size of a volume whose request names no capacity.
pub const DEFAULT_SIZE_BYTES: u64 = 1 << 30;
/// The largest volume the provisioner accepts (1 PiB).
pub const MAX_SIZE_BYTES: u64 = 1 << 50;
/// ListVolumes pages asked of the provisioner when the CO sets no `max_entries`.
const LIST_PAGE: usize = 1000;
/// The prefix of ListVolumes tokens.
const TOKEN_PREFIX: &str = "after:";
/// Namespace of the UUIDv5 that names volumes whose CSI name is not a provisioner name.
const NAME_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6d8f_a3c1_52b4_4e0f_9a7e_0c1d_2f3b_4a5c);

/// Why a controller RPC failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error("capacity_range: {0}")]
    Capacity(String),
    #[error("volume {name:?} exists with {why}")]
    NameTaken { name: String, why: String },
    #[error("volume {0} does not exist")]
    VolumeNotFound(String),
    #[error("node {0:?} does not exist: fabriq node ids are host NQNs (nqn.2014-08.org.nvmexpress:uuid:...)")]
    NodeNotFound(String),
    #[error("volume {volume} is published to {hosts:?}; a single-node access mode allows one node at a time")]
    PublishedElsewhere { volume: String, hosts: Vec<String> },
    #[error("volume {volume} is still published to {hosts:?}; unpublish it first")]
    InUse { volume: String, hosts: Vec<String> },
    #[error("volume {volume} is degraded ({why}): an operator must look at its storage node")]
    Degraded { volume: String, why: String },
    #[error("an operation on volume {0:?} is in progress; retry")]
    Busy(String),
    #[error("starting_token {0:?} was not made by this driver")]
    BadToken(String),
    #[error("no storage node can take the volume: {0}")]
    NoRoom(provisioner::Error),
    #[error(transparent)]
    Provisioner(#[from] provisioner::Error),
    #[error("{0} is not supported by {driver}", driver = crate::DRIVER_NAME)]
    Unimplemented(&'static str),
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        use provisioner::Error as P;
        let code = match &e {
            Error::Refused(_) => Code::InvalidArgument,
            Error::Capacity(_) => Code::OutOfRange,
            Error::NameTaken { .. } => Code::AlreadyExists,
            Error::VolumeNotFound(_) | Error::NodeNotFound(_) => Code::NotFound,
            Error::PublishedElsewhere { .. } | Error::InUse { .. } | Error::Degraded { .. } => Code::FailedPrecondition,
            Error::Busy(_) | Error::BadToken(_) => Code::Aborted,
            Error::NoRoom(_) => Code::ResourceExhausted,
            Error::Unimplemented(_) => Code::Unimplemented,
            Error::Provisioner(p) => match p {
                P::NotFound(_) => Code::NotFound,
                P::Conflict { code, .. } if code == "volume_busy" => Code::Aborted,
                P::Conflict { .. } => Code::FailedPrecondition,
                P::Exhausted { .. } | P::Unsatisfiable { .. } => Code::ResourceExhausted,
                P::Invalid { .. } => Code::InvalidArgument,
                // A refused token is fixed in the Secret: the CO's retries then succeed.
                P::Unavailable(_) | P::Unauthorized { .. } => Code::Unavailable,
                P::Failed { .. } => Code::Internal,
            },
        };
        Status::new(code, e.to_string())
    }
}

type Result<T> = std::result::Result<T, Error>;

/// The Controller service.
#[derive(Clone)]
pub struct ControllerService {
    logic: Arc<Logic>,
}

/// The RPCs as synchronous functions of the provisioner and the request.
pub struct Logic {
    provisioner: Arc<dyn Provisioner>,
    inflight: Inflight,
}

impl ControllerService {
    pub fn new(provisioner: Arc<dyn Provisioner>) -> ControllerService {
        ControllerService { logic: Arc::new(Logic { provisioner, inflight: Inflight::default() }) }
    }

    /// Runs `f` on the blocking pool (provisioner calls block).
    async fn run<T, F>(&self, f: F) -> std::result::Result<Response<T>, Status>
    where
        T: Send + 'static,
        F: FnOnce(&Logic) -> Result<T> + Send + 'static,
    {
        let logic = Arc::clone(&self.logic);
        let span = tracing::Span::current();
        match tokio::task::spawn_blocking(move || span.in_scope(|| f(&logic))).await {
            Ok(Ok(v)) => Ok(Response::new(v)),
            Ok(Err(e)) => {
                let status = Status::from(e);
                tracing::info!(code = ?status.code(), message = status.message(), "controller call failed");
                Err(status)
            }
            Err(join) => Err(Status::internal(format!("the controller call panicked: {join}"))),
        }
    }
}

/// The provisioner name for a CSI name (see the module documentation).
pub fn provisioner_name(csi_name: &str) -> String {
    let valid = (1..=63).contains(&csi_name.len())
        && csi_name.as_bytes()[0].is_ascii_alphanumeric()
        && csi_name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if valid {
        csi_name.to_owned()
    } else {
        format!("csi-{}", uuid::Uuid::new_v5(&NAME_NAMESPACE, csi_name.as_bytes()))
    }
}

/// The capacity range as (required, limit) bytes, 0 meaning "not set".
fn range(r: Option<&CapacityRange>) -> Result<(u64, u64)> {
    let Some(r) = r else { return Ok((0, 0)) };
    let non_negative = |v: i64, field: &str| {
        u64::try_from(v).map_err(|_| {
            Error::Refused(Refused::Unsupported {
                field: format!("capacity_range.{field}"),
                why: "must not be negative".into(),
            })
        })
    };
    let (required, limit) =
        (non_negative(r.required_bytes, "required_bytes")?, non_negative(r.limit_bytes, "limit_bytes")?);
    if limit > 0 && required > limit {
        return Err(Error::Refused(Refused::Unsupported {
            field: "capacity_range".into(),
            why: format!("required_bytes {required} is more than limit_bytes {limit}"),
        }));
    }
    Ok((required, limit))
}

/// The size to carve for (required, limit): the smallest whole number of extents of at least
/// `required` (the default size when no size is asked), within `limit`.
pub fn size_for(required: u64, limit: u64) -> Result<u64> {
    let size = if required > 0 {
        required.div_ceil(EXTENT_BYTES).saturating_mul(EXTENT_BYTES)
    } else if limit > 0 {
        DEFAULT_SIZE_BYTES.min(limit / EXTENT_BYTES * EXTENT_BYTES)
    } else {
        DEFAULT_SIZE_BYTES
    };
    if size == 0 || (limit > 0 && size > limit) {
        return Err(Error::Capacity(format!(
            "volumes are whole multiples of {EXTENT_BYTES} bytes, and none lies between required_bytes {required} and limit_bytes {limit}"
        )));
    }
    if size > MAX_SIZE_BYTES {
        return Err(Error::Capacity(format!("{size} bytes is more than the largest volume, {MAX_SIZE_BYTES} bytes")));
    }
    Ok(size)
}

/// A CSI topology as a provisioner segment; every key must carry the driver's prefix.
fn segment(t: &Topology, field: &str) -> Result<Segment> {
    let mut s = Segment::new();
    for (key, value) in &t.segments {
        let label =
            key.strip_prefix(keys::TOPOLOGY_PREFIX).filter(|l| !l.is_empty()).ok_or_else(|| Refused::Unsupported {
                field: field.to_owned(),
                why: format!(
                    "topology key {key:?} is not one of {}'s ({}<label>)",
                    crate::DRIVER_NAME,
                    keys::TOPOLOGY_PREFIX
                ),
            })?;
        s.insert(label.to_owned(), value.clone());
    }
    Ok(s)
}

/// The placements to try, in order (see the module documentation).
pub fn placements(req: Option<&TopologyRequirement>) -> Result<Vec<Vec<Segment>>> {
    let Some(req) = req else { return Ok(vec![Vec::new()]) };
    let requisite = req
        .requisite
        .iter()
        .enumerate()
        .map(|(i, t)| segment(t, &format!("accessibility_requirements.requisite[{i}]")))
        .collect::<Result<Vec<_>>>()?;
    let preferred = req
        .preferred
        .iter()
        .enumerate()
        .map(|(i, t)| segment(t, &format!("accessibility_requirements.preferred[{i}]")))
        .collect::<Result<Vec<_>>>()?;
    let mut out: Vec<Vec<Segment>> = Vec::new();
    for p in preferred {
        if (requisite.is_empty() || requisite.contains(&p))
            && !out.iter().any(|o| o.as_slice() == std::slice::from_ref(&p))
        {
            out.push(vec![p]);
        }
    }
    out.push(requisite);
    Ok(out)
}

/// A node id must be a host NQN (NVMe base specification 4.5: `nqn.`, at most 223 bytes).
fn check_node_id(node_id: &str) -> Result<()> {
    let ok = node_id.len() > 4
        && node_id.len() <= 223
        && node_id.starts_with("nqn.")
        && node_id.bytes().all(|b| b.is_ascii_graphic());
    if ok { Ok(()) } else { Err(Error::NodeNotFound(node_id.to_owned())) }
}

fn required(value: &str, field: &str) -> Result<()> {
    if value.is_empty() { Err(Refused::Missing(field.to_owned()).into()) } else { Ok(()) }
}

fn ready(v: &provisioner::Volume) -> Result<()> {
    match v.state.as_str() {
        "degraded" => Err(Error::Degraded {
            volume: v.id.clone(),
            why: v.degraded_reason.clone().unwrap_or_else(|| "missing on its node".into()),
        }),
        "creating" | "deleting" => Err(Error::Busy(v.id.clone())),
        _ => Ok(()),
    }
}

impl Logic {
    /// The volume with this id (a name is not an id), or `VolumeNotFound`.
    fn volume(&self, id: &str) -> Result<provisioner::Volume> {
        match self.provisioner.get_volume(id) {
            Ok(v) if v.id == id => Ok(v),
            Ok(_) | Err(provisioner::Error::NotFound(_)) => Err(Error::VolumeNotFound(id.to_owned())),
            Err(e) => Err(e.into()),
        }
    }

    fn busy(&self, key: &str) -> Result<crate::inflight::Guard> {
        self.inflight.try_take(key).ok_or_else(|| Error::Busy(key.to_owned()))
    }

    /// The CSI view of a provisioner volume.
    fn csi_volume(&self, v: &provisioner::Volume) -> Result<Volume> {
        let mut context = HashMap::new();
        context.insert(keys::BLOCK_SIZE.to_owned(), v.block_size.to_string());
        if let Some(fs) = v.labels.get(keys::FS_TYPE_LABEL) {
            context.insert(keys::FS_TYPE.to_owned(), fs.clone());
        }
        let asked: Vec<&String> = v.requirements.topology.iter().flat_map(|s| s.keys()).collect();
        let mut accessible_topology = Vec::new();
        if !asked.is_empty() {
            let labels = self.provisioner.node_labels(&v.node)?;
            let segments: HashMap<String, String> = labels
                .into_iter()
                .filter(|(k, _)| asked.contains(&k))
                .map(|(k, val)| (format!("{}{k}", keys::TOPOLOGY_PREFIX), val))
                .collect();
            if !segments.is_empty() {
                accessible_topology.push(Topology { segments });
            }
        }
        let capacity = if v.capacity_bytes > 0 { v.capacity_bytes } else { v.size_bytes };
        Ok(Volume {
            capacity_bytes: i64::try_from(capacity).unwrap_or(i64::MAX),
            volume_id: v.id.clone(),
            volume_context: context,
            content_source: None,
            accessible_topology,
        })
    }

    pub fn create_volume(&self, req: CreateVolumeRequest) -> Result<CreateVolumeResponse> {
        required(&req.name, "name")?;
        let caps = caps::check_all(&req.volume_capabilities, "volume_capabilities")?;
        let params = caps::params(&req.parameters)?;
        if req.volume_content_source.is_some() {
            return Err(Refused::Unsupported {
                field: "volume_content_source".into(),
                why: "fabriq has no snapshots or clones: a volume starts empty".into(),
            }
            .into());
        }
        for (i, c) in caps.iter().enumerate() {
            if let (Access::Mount { fs_type, .. }, Some(p)) = (&c.access, &params.fs_type)
                && !fs_type.is_empty()
                && fs_type != p
            {
                return Err(Refused::Unsupported {
                    field: format!("volume_capabilities[{i}].mount.fs_type"),
                    why: format!("{fs_type:?} contradicts the parameter {}={p:?}", caps::PARAM_FS_TYPE),
                }
                .into());
            }
        }
        let (req_bytes, limit_bytes) = range(req.capacity_range.as_ref())?;
        let size = size_for(req_bytes, limit_bytes)?;
        let tries = placements(req.accessibility_requirements.as_ref())?;
        let name = provisioner_name(&req.name);
        let _guard = self.busy(&name)?;

        let mut labels = BTreeMap::new();
        if let Some(fs) = &params.fs_type {
            labels.insert(keys::FS_TYPE_LABEL.to_owned(), fs.clone());
        }
        for (k, v) in &params.k8s {
            // Only what the provisioner takes as a label: keys of 1 to 63 of `a-z0-9-_./`,
            // values of at most 63 printable characters. The rest is informational only.
            let key_ok = k.len() <= 63
                && k.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_./".contains(&b));
            if key_ok && v.len() <= 63 && v.bytes().all(|b| b.is_ascii_graphic()) {
                labels.insert(k.clone(), v.clone());
            }
        }

        match self.provisioner.get_volume(&name) {
            Ok(v) if v.name == name => return self.existing(v, &params, req_bytes, limit_bytes),
            Ok(_) | Err(provisioner::Error::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let mut last = None;
        for topology in tries {
            let spec = VolumeSpec {
                name: name.clone(),
                size_bytes: size,
                block_size: params.block_size,
                requirements: Requirements { topology },
                labels: labels.clone(),
            };
            match self.provisioner.create_volume(&spec) {
                Ok(v) => {
                    tracing::info!(name = %req.name, id = %v.id, node = %v.node, size_bytes = v.capacity_bytes, "volume created");
                    return Ok(CreateVolumeResponse { volume: Some(self.csi_volume(&v)?) });
                }
                Err(e @ (provisioner::Error::Exhausted { .. } | provisioner::Error::Unsatisfiable { .. })) => {
                    last = Some(e);
                }
                Err(provisioner::Error::Conflict { code, message }) if code == "volume_conflict" => {
                    return Err(Error::NameTaken { name, why: message });
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::NoRoom(last.expect("placements() gives at least one try")))
    }

    /// CreateVolume of a name that exists: the same volume if it is what was asked for.
    fn existing(
        &self,
        v: provisioner::Volume,
        params: &caps::Params,
        req_bytes: u64,
        limit_bytes: u64,
    ) -> Result<CreateVolumeResponse> {
        let name = v.name.clone();
        let capacity = v.capacity_bytes.max(v.size_bytes);
        if v.block_size != params.block_size {
            return Err(Error::NameTaken {
                name,
                why: format!("{}-byte blocks, not {}", v.block_size, params.block_size),
            });
        }
        if v.labels.get(keys::FS_TYPE_LABEL) != params.fs_type.as_ref() {
            return Err(Error::NameTaken { name, why: "another file system parameter".into() });
        }
        if capacity < req_bytes || (limit_bytes > 0 && capacity > limit_bytes) {
            return Err(Error::NameTaken {
                name,
                why: format!("{capacity} bytes, outside the requested range {req_bytes}..={limit_bytes}"),
            });
        }
        let v = match v.state.as_str() {
            // An interrupted create: the same request again finishes it.
            "creating" => self.provisioner.create_volume(&VolumeSpec {
                name: v.name.clone(),
                size_bytes: v.size_bytes,
                block_size: v.block_size,
                requirements: v.requirements.clone(),
                labels: v.labels.clone(),
            })?,
            "deleting" => return Err(Error::Busy(v.name)),
            _ => v,
        };
        Ok(CreateVolumeResponse { volume: Some(self.csi_volume(&v)?) })
    }

    pub fn delete_volume(&self, req: DeleteVolumeRequest) -> Result<DeleteVolumeResponse> {
        required(&req.volume_id, "volume_id")?;
        let _guard = self.busy(&req.volume_id)?;
        let v = match self.volume(&req.volume_id) {
            Ok(v) => v,
            Err(Error::VolumeNotFound(_)) => return Ok(DeleteVolumeResponse {}),
            Err(e) => return Err(e),
        };
        if !v.hosts.is_empty() {
            return Err(Error::InUse { volume: v.id, hosts: v.hosts });
        }
        self.provisioner.delete_volume(&v.id)?;
        tracing::info!(id = %v.id, name = %v.name, "volume deleted");
        Ok(DeleteVolumeResponse {})
    }

    pub fn publish(&self, req: ControllerPublishVolumeRequest) -> Result<ControllerPublishVolumeResponse> {
        required(&req.volume_id, "volume_id")?;
        required(&req.node_id, "node_id")?;
        let cap = req.volume_capability.as_ref().ok_or_else(|| Refused::Missing("volume_capability".into()))?;
        let cap: Capability = caps::check(cap, "volume_capability")?;
        check_node_id(&req.node_id)?;
        let _guard = self.busy(&req.volume_id)?;
        let v = self.volume(&req.volume_id)?;
        ready(&v)?;
        let others: Vec<String> = v.hosts.iter().filter(|h| **h != req.node_id).cloned().collect();
        if cap.single_node() && !others.is_empty() {
            return Err(Error::PublishedElsewhere { volume: v.id, hosts: others });
        }
        let p = match self.provisioner.publish(&v.id, &req.node_id) {
            Err(provisioner::Error::Invalid { .. }) => return Err(Error::NodeNotFound(req.node_id)),
            other => other?,
        };
        tracing::info!(id = %v.id, node = %req.node_id, "volume published");
        let context = [
            (keys::TRANSPORT, p.transport),
            (keys::TRADDR, p.address),
            (keys::TRSVCID, p.port.to_string()),
            (keys::SUBNQN, p.nqn),
            (keys::NSID, "1".to_owned()),
        ];
        Ok(ControllerPublishVolumeResponse {
            publish_context: context.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        })
    }

    pub fn unpublish(&self, req: ControllerUnpublishVolumeRequest) -> Result<ControllerUnpublishVolumeResponse> {
        required(&req.volume_id, "volume_id")?;
        let _guard = self.busy(&req.volume_id)?;
        let v = match self.volume(&req.volume_id) {
            Ok(v) => v,
            // Nothing left to unpublish.
            Err(Error::VolumeNotFound(_)) => return Ok(ControllerUnpublishVolumeResponse {}),
            Err(e) => return Err(e),
        };
        // No node id: unpublish from every node.
        let hosts = if req.node_id.is_empty() { v.hosts.clone() } else { vec![req.node_id.clone()] };
        for host in hosts {
            if check_node_id(&host).is_err() {
                continue; // never published: not an NQN
            }
            self.provisioner.unpublish(&v.id, &host)?;
            tracing::info!(id = %v.id, node = %host, "volume unpublished");
        }
        Ok(ControllerUnpublishVolumeResponse {})
    }

    pub fn validate(&self, req: ValidateVolumeCapabilitiesRequest) -> Result<ValidateVolumeCapabilitiesResponse> {
        required(&req.volume_id, "volume_id")?;
        if req.volume_capabilities.is_empty() {
            return Err(Refused::Missing("volume_capabilities".into()).into());
        }
        for (i, c) in req.volume_capabilities.iter().enumerate() {
            if let Err(e @ Refused::Missing(_)) = caps::check(c, &format!("volume_capabilities[{i}]")) {
                return Err(e.into());
            }
        }
        self.volume(&req.volume_id)?;
        let verdict = caps::check_all(&req.volume_capabilities, "volume_capabilities")
            .and_then(|_| caps::params(&req.parameters).map(|_| ()));
        Ok(match verdict {
            Ok(()) => ValidateVolumeCapabilitiesResponse {
                confirmed: Some(validate_volume_capabilities_response::Confirmed {
                    volume_context: req.volume_context,
                    volume_capabilities: req.volume_capabilities,
                    parameters: req.parameters,
                    mutable_parameters: HashMap::new(),
                }),
                message: String::new(),
            },
            Err(e) => ValidateVolumeCapabilitiesResponse { confirmed: None, message: e.to_string() },
        })
    }

    pub fn list(&self, req: ListVolumesRequest) -> Result<ListVolumesResponse> {
        let max = usize::try_from(req.max_entries).map_err(|_| Refused::Unsupported {
            field: "max_entries".into(),
            why: format!("{} is negative", req.max_entries),
        })?;
        let mut after = if req.starting_token.is_empty() {
            None
        } else {
            let name = req.starting_token.strip_prefix(TOKEN_PREFIX).filter(|n| !n.is_empty());
            Some(name.ok_or_else(|| Error::BadToken(req.starting_token.clone()))?.to_owned())
        };
        let mut entries = Vec::new();
        loop {
            let want = if max == 0 { LIST_PAGE } else { (max - entries.len()).min(LIST_PAGE) };
            let page = self.provisioner.list_volumes(want, after.as_deref())?;
            let last_name = page.volumes.last().map(|v| v.name.clone());
            for v in page.volumes.iter().filter(|v| v.state != "deleting") {
                entries.push(list_volumes_response::Entry {
                    volume: Some(self.csi_volume(v)?),
                    status: Some(list_volumes_response::VolumeStatus {
                        published_node_ids: v.hosts.clone(),
                        volume_condition: Some(condition(v)),
                    }),
                });
            }
            after = last_name.or(after);
            match page.next_after {
                None => return Ok(ListVolumesResponse { entries, next_token: String::new() }),
                Some(_) if max > 0 && entries.len() >= max => {
                    let token = after.map(|a| format!("{TOKEN_PREFIX}{a}")).unwrap_or_default();
                    return Ok(ListVolumesResponse { entries, next_token: token });
                }
                Some(next) => after = Some(next),
            }
        }
    }

    pub fn capacity(&self, req: GetCapacityRequest) -> Result<GetCapacityResponse> {
        let caps_ok = req
            .volume_capabilities
            .iter()
            .enumerate()
            .all(|(i, c)| caps::check(c, &format!("volume_capabilities[{i}]")).is_ok());
        caps::params(&req.parameters)?;
        let wanted = match &req.accessible_topology {
            Some(t) => segment(t, "accessible_topology")?,
            None => Segment::new(),
        };
        if !caps_ok {
            // Capabilities the driver cannot give: no capacity for them.
            return Ok(GetCapacityResponse {
                available_capacity: 0,
                maximum_volume_size: Some(0),
                minimum_volume_size: None,
            });
        }
        let c = self.provisioner.capacity(&wanted)?;
        let extents = |b: u64| i64::try_from(b / EXTENT_BYTES * EXTENT_BYTES).unwrap_or(i64::MAX);
        Ok(GetCapacityResponse {
            available_capacity: extents(c.available_bytes),
            maximum_volume_size: Some(extents(c.largest_bytes)),
            minimum_volume_size: Some(EXTENT_BYTES as i64),
        })
    }

    pub fn expand(&self, req: ControllerExpandVolumeRequest) -> Result<ControllerExpandVolumeResponse> {
        required(&req.volume_id, "volume_id")?;
        let range_given = req.capacity_range.as_ref().ok_or_else(|| Refused::Missing("capacity_range".into()))?;
        let block = match &req.volume_capability {
            Some(c) => caps::check(c, "volume_capability")?.access == Access::Block,
            None => false,
        };
        let (req_bytes, limit_bytes) = range(Some(range_given))?;
        let size = size_for(req_bytes, limit_bytes)?;
        let _guard = self.busy(&req.volume_id)?;
        let v = self.volume(&req.volume_id)?;
        ready(&v)?;
        let current = v.capacity_bytes.max(v.size_bytes);
        let v = if current >= req_bytes.max(1) {
            if limit_bytes > 0 && current > limit_bytes {
                return Err(Error::Capacity(format!(
                    "the volume has {current} bytes already, more than limit_bytes {limit_bytes}; volumes do not shrink"
                )));
            }
            v
        } else {
            let grown = self.provisioner.grow_volume(&v.id, size).map_err(|e| match e {
                provisioner::Error::Exhausted { .. } => Error::NoRoom(e),
                e => Error::Provisioner(e),
            })?;
            tracing::info!(id = %grown.id, size_bytes = grown.capacity_bytes, "volume grown");
            grown
        };
        let capacity = v.capacity_bytes.max(v.size_bytes);
        Ok(ControllerExpandVolumeResponse {
            capacity_bytes: i64::try_from(capacity).unwrap_or(i64::MAX),
            node_expansion_required: !block,
        })
    }

    pub fn get_volume(&self, req: ControllerGetVolumeRequest) -> Result<ControllerGetVolumeResponse> {
        required(&req.volume_id, "volume_id")?;
        let v = self.volume(&req.volume_id)?;
        Ok(ControllerGetVolumeResponse {
            volume: Some(self.csi_volume(&v)?),
            status: Some(controller_get_volume_response::VolumeStatus {
                published_node_ids: v.hosts.clone(),
                volume_condition: Some(condition(&v)),
            }),
        })
    }
}

/// A degraded volume (missing or replaced on its node) is abnormal.
fn condition(v: &provisioner::Volume) -> VolumeCondition {
    match v.state.as_str() {
        "degraded" => VolumeCondition {
            abnormal: true,
            message: v.degraded_reason.clone().unwrap_or_else(|| "the volume is missing on its storage node".into()),
        },
        state => VolumeCondition { abnormal: false, message: format!("volume is {state} on node {}", v.node) },
    }
}

/// What ControllerGetCapabilities answers.
pub const CAPABILITIES: [RpcType; 9] = [
    RpcType::CreateDeleteVolume,
    RpcType::PublishUnpublishVolume,
    RpcType::ListVolumes,
    RpcType::GetCapacity,
    RpcType::ExpandVolume,
    RpcType::ListVolumesPublishedNodes,
    RpcType::VolumeCondition,
    RpcType::GetVolume,
    RpcType::SingleNodeMultiWriter,
];

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn create_volume(
        &self,
        request: Request<CreateVolumeRequest>,
    ) -> std::result::Result<Response<CreateVolumeResponse>, Status> {
        let req = request.into_inner();
        self.run(move |l| l.create_volume(req)).await
    }

    async fn delete_volume(
        &self,
        request: Request<DeleteVolumeRequest>,
    ) -> std::result::Result<Response<DeleteVolumeResponse>, Status> {
        let req = request.into_inner();
        self.run(move |l| l.delete_volume(req)).await
    }

    async fn controller_publish_volume(
        &self,
        request: Request<ControllerPublishVolumeRequest>,
    ) -> std::result::Result<Response<ControllerPublishVolumeResponse>, Status> {
        let req = request.into_inner();
        self.run(move |l| l.publish(req)).await
    }

    async fn controller_unpublish_volume(
        &self,
        request: Request<ControllerUnpublishVolumeRequest>,
    ) -> std::result::Result<Response<ControllerUnpublishVolumeResponse>, Status> {
        let req = request.into_inner();
        self.run(move |l| l.unpublish(req)).await
    }

    async fn validate_volume_capabilities(
        &self,
        request: Request<ValidateVolumeCapabilitiesRequest>,
    ) -> std::result::Result<Response<ValidateVolumeCapabilitiesResponse>, Status> {
        let req = request.into_inner();
        self.run(move |l| l.validate(req)).await
    }

    async fn list_volumes(
        &self,
        request: Request<ListVolumesRequest>,
    ) -> std::result::Result<Response<ListVolumesResponse>, Status> {
        let req = request.into_inner();
        self.run(move |l| l.list(req)).await
    }

    async fn get_capacity(
        &self,
        request: Request<GetCapacityRequest>,
    ) -> std::result::Result<Response<GetCapacityResponse>, Status> {
        let req = request.into_inner();
        self.run(move |l| l.capacity(req)).await
    }

    async fn controller_get_capabilities(
        &self,
        _request: Request<ControllerGetCapabilitiesRequest>,
    ) -> std::result::Result<Response<ControllerGetCapabilitiesResponse>, Status> {
        let capabilities = CAPABILITIES
            .iter()
            .map(|t| ControllerServiceCapability {
                r#type: Some(controller_service_capability::Type::Rpc(Rpc { r#type: *t as i32 })),
            })
            .collect();
        Ok(Response::new(ControllerGetCapabilitiesResponse { capabilities }))
    }

    async fn create_snapshot(
        &self,
        _request: Request<CreateSnapshotRequest>,
    ) -> std::result::Result<Response<CreateSnapshotResponse>, Status> {
        Err(Error::Unimplemented("CreateSnapshot").into())
    }

    async fn delete_snapshot(
        &self,
        _request: Request<DeleteSnapshotRequest>,
    ) -> std::result::Result<Response<DeleteSnapshotResponse>, Status> {
        Err(Error::Unimplemented("DeleteSnapshot").into())
    }

    async fn list_snapshots(
        &self,
        _request: Request<ListSnapshotsRequest>,
    ) -> std::result::Result<Response<ListSnapshotsResponse>, Status> {
        Err(Error::Unimplemented("ListSnapshots").into())
    }

    async fn controller_expand_volume(
        &self,
        request: Request<ControllerExpandVolumeRequest>,
    ) -> std::result::Result<Response<ControllerExpandVolumeResponse>, Status> {
        let req = request.into_inner();
        self.run(move |l| l.expand(req)).await
    }

    async fn controller_get_volume(
        &self,
        request: Request<ControllerGetVolumeRequest>,
    ) -> std::result::Result<Response<ControllerGetVolumeResponse>, Status> {
        let req = request.into_inner();
        self.run(move |l| l.get_volume(req)).await
    }

    async fn controller_modify_volume(
        &self,
        _request: Request<ControllerModifyVolumeRequest>,
    ) -> std::result::Result<Response<ControllerModifyVolumeResponse>, Status> {
        Err(Error::Unimplemented("ControllerModifyVolume").into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn sizes_are_whole_extents_within_the_range() {
        assert_eq!(size_for(0, 0).unwrap(), DEFAULT_SIZE_BYTES);
        assert_eq!(size_for(1, 0).unwrap(), MIB);
        assert_eq!(size_for(MIB, MIB).unwrap(), MIB);
        assert_eq!(size_for(MIB + 1, 0).unwrap(), 2 * MIB);
        assert_eq!(size_for(0, 10 * MIB + 5).unwrap(), 10 * MIB);
        assert_eq!(size_for(0, 1 << 40).unwrap(), DEFAULT_SIZE_BYTES);
        assert!(matches!(size_for(1000, 1000), Err(Error::Capacity(_))));
        assert!(matches!(size_for(0, 1000), Err(Error::Capacity(_))));
        assert!(matches!(size_for(MAX_SIZE_BYTES + 1, 0), Err(Error::Capacity(_))));
        let r = |req, lim| range(Some(&CapacityRange { required_bytes: req, limit_bytes: lim }));
        assert!(matches!(r(-1, 0), Err(Error::Refused(_))));
        assert!(matches!(r(2, 1), Err(Error::Refused(_))));
        assert_eq!(r(5, 0).unwrap(), (5, 0));
    }

    #[test]
    fn names_map_to_provisioner_names() {
        assert_eq!(
            provisioner_name("pvc-0b6e1c2d-0000-4000-8000-000000000001"),
            "pvc-0b6e1c2d-0000-4000-8000-000000000001"
        );
        let long = "x".repeat(128);
        let mapped = provisioner_name(&long);
        assert!(mapped.starts_with("csi-") && mapped.len() == 40, "{mapped}");
        assert_eq!(mapped, provisioner_name(&long), "the same name maps the same way");
        assert_ne!(provisioner_name("a b"), provisioner_name("a_b"));
    }

    #[test]
    fn topology_tries_preferred_then_requisite() {
        let t = |zone: &str| Topology {
            segments: [(format!("{}zone", keys::TOPOLOGY_PREFIX), zone.to_owned())].into_iter().collect(),
        };
        let s = |zone: &str| -> Segment { [("zone".to_owned(), zone.to_owned())].into_iter().collect() };
        assert_eq!(placements(None).unwrap(), vec![Vec::<Segment>::new()]);
        let req = TopologyRequirement { requisite: vec![t("a"), t("b")], preferred: vec![t("b"), t("c")] };
        assert_eq!(placements(Some(&req)).unwrap(), vec![vec![s("b")], vec![s("a"), s("b")]]);
        let req = TopologyRequirement { requisite: vec![], preferred: vec![t("c")] };
        assert_eq!(placements(Some(&req)).unwrap(), vec![vec![s("c")], vec![]]);
        let bad = Topology { segments: [("zone".to_owned(), "a".to_owned())].into_iter().collect() };
        let req = TopologyRequirement { requisite: vec![bad], preferred: vec![] };
        let e = placements(Some(&req)).unwrap_err();
        assert!(e.to_string().starts_with("accessibility_requirements.requisite[0]: topology key \"zone\""), "{e}");
    }

    #[test]
    fn node_ids_are_nqns() {
        assert!(check_node_id("nqn.2014-08.org.nvmexpress:uuid:5b0c8f1e-2a64-4c1d-9e3f-7d2a1b6c4e90").is_ok());
        for bad in ["some-fake-node-id", "nqn.", "nqn.a b", ""] {
            assert!(matches!(check_node_id(bad), Err(Error::NodeNotFound(_))), "{bad}");
        }
    }

    #[test]
    fn errors_become_the_codes_the_specification_prescribes() {
        use provisioner::Error as P;
        let code = |e: Error| Status::from(e).code();
        assert_eq!(code(Refused::Missing("name".into()).into()), Code::InvalidArgument);
        assert_eq!(code(Error::Capacity("x".into())), Code::OutOfRange);
        assert_eq!(code(Error::NameTaken { name: "n".into(), why: "w".into() }), Code::AlreadyExists);
        assert_eq!(code(Error::VolumeNotFound("v".into())), Code::NotFound);
        assert_eq!(code(Error::NodeNotFound("n".into())), Code::NotFound);
        assert_eq!(code(Error::PublishedElsewhere { volume: "v".into(), hosts: vec![] }), Code::FailedPrecondition);
        assert_eq!(code(Error::Busy("v".into())), Code::Aborted);
        assert_eq!(code(Error::BadToken("t".into())), Code::Aborted);
        assert_eq!(code(Error::NoRoom(P::Unavailable("x".into()))), Code::ResourceExhausted);
        assert_eq!(code(P::Unavailable("x".into()).into()), Code::Unavailable);
        assert_eq!(code(P::Conflict { code: "volume_busy".into(), message: "m".into() }.into()), Code::Aborted);
        assert_eq!(code(P::Failed { status: 500, code: "c".into(), message: "m".into() }.into()), Code::Internal);
        let s = Status::from(Error::Refused(Refused::Missing("volume_id".into())));
        assert_eq!(s.message(), "volume_id is required");
    }
}
