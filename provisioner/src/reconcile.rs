//! The reconciler: drives every node to the records, idempotently, so that a node that
//! restarted, lost a call or was down comes back into line by itself, and finishes the
//! intents a crash (or an unreachable node) left behind.
//!
//! Each pass (every `interval`, and at once after a kick) looks at every node in parallel
//! (pools, volumes, listeners: [`crate::status`]); every provisioner does that much, so
//! followers can answer reads. The leader then acts, volume by volume, on what [`plan`]
//! decides from the record and what the node has, skipping volumes an operation holds:
//!
//! | record | node volume | steps |
//! |---|---|---|
//! | `Creating` | any | finish the create (carve again: the node is idempotent by name) |
//! | `Deleting` | any | finish the delete |
//! | `Ready` | missing | mark degraded ("missing on node"): never recreated empty |
//! | `Ready` | another id, or `deleting` on the node | mark degraded |
//! | `Ready` | present | clear degraded; grow to the recorded size; allow missing hosts, revoke others, close `allow_any_host` |
//!
//! and for node volumes named `fabriq-<uuid>` that no record explains ([`orphans`]): delete
//! those a tombstone names (a carve that landed after its volume was deleted), report the
//! others (on the node's view, in `/metrics`, in the log), never delete them blindly.
//!
//! `plan` and `orphans` are pure: the tests drive them with every combination.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::model::{NodeRecord, Phase, VolumeRecord, volume_id_of};
use crate::nodeapi::Volume as NodeVolume;
use crate::service::Service;
use crate::store::{Txn, Versioned, encode, volume_key};

/// One thing to do for a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    FinishCreate,
    FinishDelete,
    /// Record changes: degraded (or not) and the node's capacity.
    Record {
        degraded: Option<String>,
        capacity_bytes: u64,
    },
    Grow(u64),
    Allow(String),
    Revoke(String),
    CloseAnyHost,
}

/// What to do for one volume, given what its node has (`None`: nothing of that name) and,
/// when the node reports the volume's pool failed, why.
pub fn plan(r: &VolumeRecord, nv: Option<&NodeVolume>, pool_failed: Option<&str>) -> Vec<Step> {
    match r.phase {
        Phase::Creating => return vec![Step::FinishCreate],
        Phase::Deleting => return vec![Step::FinishDelete],
        Phase::Ready => {}
    }
    let trouble = match nv {
        None => Some(match pool_failed {
            Some(why) => format!("pool {} on node {} failed: {why}", r.placement.pool, r.placement.node),
            None => format!("missing on node {}", r.placement.node),
        }),
        Some(nv) if nv.state != "ready" => Some(format!("node {} is deleting it", r.placement.node)),
        Some(nv) if r.node_volume_id.as_deref() != Some(nv.id.as_str()) => Some(format!(
            "node {} holds another volume of its name (id {}, expected {})",
            r.placement.node,
            nv.id,
            r.node_volume_id.as_deref().unwrap_or("none")
        )),
        Some(_) => None,
    };
    let mut steps = Vec::new();
    let capacity_bytes = match (&trouble, nv) {
        (None, Some(nv)) => nv.size_bytes,
        _ => r.capacity_bytes,
    };
    if trouble != r.degraded || capacity_bytes != r.capacity_bytes {
        steps.push(Step::Record { degraded: trouble.clone(), capacity_bytes });
    }
    let (None, Some(nv)) = (trouble, nv) else { return steps };
    if nv.size_bytes < r.size_bytes {
        steps.push(Step::Grow(r.size_bytes));
    }
    let on_node: BTreeSet<&String> = nv.access.hosts.iter().collect();
    steps.extend(r.hosts.iter().filter(|h| !on_node.contains(h)).map(|h| Step::Allow(h.clone())));
    steps.extend(nv.access.hosts.iter().filter(|h| !r.hosts.contains(*h)).map(|h| Step::Revoke(h.clone())));
    if nv.access.allow_any_host {
        steps.push(Step::CloseAnyHost);
    }
    steps
}

/// Node volumes named like the provisioner's with no record: (those a tombstone names, to
/// delete; the others, to report).
pub fn orphans<'a>(
    on_node: &'a [NodeVolume],
    record_ids: &BTreeSet<&str>,
    tombstones: &BTreeSet<&str>,
) -> (Vec<&'a NodeVolume>, Vec<&'a NodeVolume>) {
    let mut delete = Vec::new();
    let mut report = Vec::new();
    for nv in on_node {
        let Some(id) = volume_id_of(&nv.name) else { continue };
        if record_ids.contains(id) {
            continue;
        }
        if tombstones.contains(id) { delete.push(nv) } else { report.push(nv) }
    }
    (delete, report)
}

/// Runs passes until `stop` is set.
pub fn run(service: Arc<Service>, interval: Duration, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        pass(&service);
        service.kick.wait(interval);
    }
}

/// One pass over every node.
pub fn pass(service: &Service) {
    service.counters.passes.fetch_add(1, Ordering::Relaxed);
    let nodes = match service.records.nodes() {
        Ok(nodes) => nodes,
        Err(error) => {
            tracing::warn!(%error, "reconciler: cannot read the nodes");
            return;
        }
    };
    std::thread::scope(|scope| {
        for n in &nodes {
            scope.spawn(move || node_pass(service, &n.record));
        }
    });
    if service.leadership.is_leader()
        && let Err(error) = service.expire_tombstones()
    {
        tracing::warn!(%error, "reconciler: cannot expire tombstones");
    }
}

fn node_pass(service: &Service, node: &NodeRecord) {
    // The records are read before the node is looked at, and a volume whose record changed
    // since is left to the next pass: what the node shows is then never older than the record
    // it is compared with (a volume committed a moment ago is not "missing").
    let before = match service.records.volumes() {
        Ok(all) => all,
        Err(error) => {
            tracing::warn!(%error, "reconciler: cannot read the volumes");
            return;
        }
    };
    let Some(observation) = service.refresh(node) else { return };
    // Orphans are judged on records read after the look: every node volume the look saw was
    // recorded before it was carved, so only a volume that no record explains is reported.
    let (after, tombstones) = match (service.records.volumes(), service.records.tombstones()) {
        (Ok(a), Ok(t)) => (a, t),
        (Err(error), _) | (_, Err(error)) => {
            tracing::warn!(%error, "reconciler: cannot read the volumes");
            return;
        }
    };
    let ids: BTreeSet<&str> = after.iter().map(|v| v.record.id.as_str()).collect();
    let tomb_ids: BTreeSet<&str> =
        tombstones.iter().filter(|t| t.record.node == node.name).map(|t| t.record.id.as_str()).collect();
    let (to_delete, to_report) = orphans(&observation.volumes, &ids, &tomb_ids);
    let report: Vec<String> = to_report.iter().map(|v| v.name.clone()).collect();
    let known = service.status.get(&node.name).orphans;
    for name in report.iter().filter(|n| !known.contains(n)) {
        tracing::warn!(node = %node.name, node_volume = %name, "orphan: a node volume named like the provisioner's that no record explains (left alone)");
    }
    service.status.set_orphans(&node.name, report);
    if !service.leadership.is_leader() {
        return;
    }
    let client = service.client(node);
    for nv in to_delete {
        service.counters.actions.fetch_add(1, Ordering::Relaxed);
        match client.delete_volume(&nv.id) {
            Ok(()) => {
                tracing::info!(node = %node.name, node_volume = %nv.name, "deleted a volume carved after its record was deleted")
            }
            Err(error) => {
                service.counters.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(node = %node.name, node_volume = %nv.name, %error, "cannot delete a tombstoned volume");
            }
        }
    }
    let by_name: BTreeMap<&str, &NodeVolume> = observation.volumes.iter().map(|v| (v.name.as_str(), v)).collect();
    let failed: BTreeMap<&str, &str> = observation
        .pools
        .iter()
        .filter(|p| p.state == "failed")
        .map(|p| (p.name.as_str(), p.error.as_deref().unwrap_or("no reason given")))
        .collect();
    let mut changed = false;
    for v in before.iter().filter(|v| v.record.placement.node == node.name) {
        if !service.leadership.is_leader() {
            return;
        }
        changed |= volume_pass(service, node, v, &by_name, &failed);
    }
    if changed {
        service.refresh(node);
    }
}

/// Drives one volume; true when something was done on the node.
fn volume_pass(
    service: &Service,
    node: &NodeRecord,
    seen: &Versioned<VolumeRecord>,
    by_name: &BTreeMap<&str, &NodeVolume>,
    failed_pools: &BTreeMap<&str, &str>,
) -> bool {
    let name = seen.record.name.as_str();
    let Some(_g) = service.locks.try_lock(&format!("volume/{name}")) else { return false };
    // Read again under the lock; a record that changed since the look waits for the next pass.
    let current = match service.records.volume(name) {
        Ok(Some(v)) if v.revision == seen.revision => v,
        Ok(_) => return false,
        Err(error) => {
            tracing::warn!(volume = name, %error, "reconciler: cannot read the volume");
            return false;
        }
    };
    let r = &current.record;
    let steps = plan(
        r,
        by_name.get(r.node_volume_name().as_str()).copied(),
        failed_pools.get(r.placement.pool.as_str()).copied(),
    );
    let mut acted = false;
    for step in steps {
        service.counters.actions.fetch_add(1, Ordering::Relaxed);
        if let Err(error) = apply(service, node, &current, &step) {
            service.counters.failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(volume = name, node = %node.name, ?step, %error, "reconciler: step failed");
            return acted;
        }
        acted = true;
    }
    acted
}

fn apply(service: &Service, node: &NodeRecord, current: &Versioned<VolumeRecord>, step: &Step) -> Result<(), String> {
    let r = &current.record;
    let id = r.node_volume_id.as_deref().unwrap_or_default();
    let client = service.client(node);
    match step {
        Step::FinishCreate => {
            tracing::info!(volume = %r.name, "reconciler: finishing an interrupted create");
            service.finish_create(current.clone()).map(|_| ()).map_err(|e| e.to_string())
        }
        Step::FinishDelete => {
            tracing::info!(volume = %r.name, "reconciler: finishing an interrupted delete");
            service.finish_delete(current.clone()).map_err(|e| e.to_string())
        }
        Step::Record { degraded, capacity_bytes } => {
            // Re-read: an earlier step of this pass may have changed the record.
            let fresh = service.records.volume(&r.name).map_err(|e| e.to_string())?.ok_or("the record is gone")?;
            let mut next = fresh.record.clone();
            next.degraded = degraded.clone();
            next.capacity_bytes = *capacity_bytes;
            match degraded {
                Some(why) => tracing::error!(volume = %r.name, node = %node.name, why, "volume degraded"),
                None if fresh.record.degraded.is_some() => {
                    tracing::info!(volume = %r.name, "volume no longer degraded")
                }
                None => {}
            }
            let key = volume_key(&r.name);
            let committed = service
                .records
                .commit(&Txn::new().when(&key, fresh.revision).put(&key, encode(&next)))
                .map_err(|e| e.to_string())?;
            if committed { Ok(()) } else { Err(String::from("the record changed meanwhile")) }
        }
        Step::Grow(size_bytes) => {
            tracing::info!(volume = %r.name, size_bytes, "reconciler: growing to the recorded size");
            match client.grow_volume(id, *size_bytes) {
                Ok(_) => Ok(()),
                Err(e) if e.is_refusal() => {
                    // The grow was never acknowledged: the record goes back to the node's size.
                    let fresh =
                        service.records.volume(&r.name).map_err(|e| e.to_string())?.ok_or("the record is gone")?;
                    let mut next = fresh.record.clone();
                    next.size_bytes = next.capacity_bytes;
                    let key = volume_key(&r.name);
                    service
                        .records
                        .commit(&Txn::new().when(&key, fresh.revision).put(&key, encode(&next)))
                        .map_err(|e| e.to_string())?;
                    Err(format!("the node refused the grow, the recorded size is back to {}: {e}", next.size_bytes))
                }
                Err(e) => Err(e.to_string()),
            }
        }
        Step::Allow(host) => {
            tracing::info!(volume = %r.name, host, "reconciler: allowing a host the node lacks");
            client.allow_host(id, host).map_err(|e| e.to_string())
        }
        Step::Revoke(host) => {
            tracing::info!(volume = %r.name, host, "reconciler: revoking a host not in the record");
            client.revoke_host(id, host).map_err(|e| e.to_string())
        }
        Step::CloseAnyHost => {
            tracing::info!(volume = %r.name, "reconciler: closing a volume opened to any host");
            client.close_to_any_host(id).map_err(|e| e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Placement, Requirements};
    use crate::nodeapi::Access;

    const ID: &str = "67e55044-10b1-426f-9247-bb680e5fe0c8";
    const H1: &str = "nqn.2014-08.org.nvmexpress:uuid:1";
    const H2: &str = "nqn.2014-08.org.nvmexpress:uuid:2";

    fn record(phase: Phase, hosts: &[&str], degraded: Option<&str>) -> VolumeRecord {
        VolumeRecord {
            id: ID.into(),
            name: "v".into(),
            requested_bytes: 4 << 20,
            size_bytes: 4 << 20,
            block_size: 4096,
            labels: BTreeMap::new(),
            requirements: Requirements::default(),
            placement: Placement { node: "n1".into(), pool: "p1".into() },
            phase,
            node_volume_id: Some("node-id".into()),
            capacity_bytes: 4 << 20,
            nqn: Some("nqn.x".into()),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            degraded: degraded.map(str::to_owned),
            created_unix_s: 1,
        }
    }

    fn node_volume(size: u64, hosts: &[&str], any: bool) -> NodeVolume {
        NodeVolume {
            id: "node-id".into(),
            name: format!("fabriq-{ID}"),
            pool: "p1".into(),
            size_bytes: size,
            block_size: 4096,
            state: "ready".into(),
            nqn: "nqn.x".into(),
            access: Access { allow_any_host: any, hosts: hosts.iter().map(|h| h.to_string()).collect() },
        }
    }

    #[test]
    fn intents_are_finished_whatever_the_node_has() {
        for nv in [None, Some(node_volume(4 << 20, &[], false))] {
            assert_eq!(plan(&record(Phase::Creating, &[], None), nv.as_ref(), None), [Step::FinishCreate]);
            assert_eq!(plan(&record(Phase::Deleting, &[H1], None), nv.as_ref(), None), [Step::FinishDelete]);
        }
    }

    #[test]
    fn in_line_means_nothing_to_do() {
        let r = record(Phase::Ready, &[H1], None);
        assert_eq!(plan(&r, Some(&node_volume(4 << 20, &[H1], false)), None), []);
    }

    #[test]
    fn missing_or_replaced_volumes_are_degraded_never_recreated() {
        let r = record(Phase::Ready, &[H1], None);
        let steps = plan(&r, None, None);
        assert_eq!(
            steps,
            [Step::Record { degraded: Some("missing on node n1".into()), capacity_bytes: 4 << 20 }],
            "no create, no host change"
        );
        // A pool the node could not open: the reason says so; a volume found again is fine.
        let failed = plan(&r, None, Some("device gone"));
        assert!(
            matches!(&failed[..], [Step::Record { degraded: Some(why), .. }] if why == "pool p1 on node n1 failed: device gone"),
            "{failed:?}"
        );
        assert_eq!(plan(&r, Some(&node_volume(4 << 20, &[H1], false)), Some("device gone")), []);
        // Once recorded, nothing more.
        assert_eq!(plan(&record(Phase::Ready, &[H1], Some("missing on node n1")), None, None), []);
        let mut other = node_volume(4 << 20, &[], false);
        other.id = "other".into();
        assert!(
            matches!(&plan(&r, Some(&other), None)[..], [Step::Record { degraded: Some(why), .. }] if why.contains("another volume"))
        );
        let mut deleting = node_volume(4 << 20, &[H1], false);
        deleting.state = "deleting".into();
        assert!(matches!(&plan(&r, Some(&deleting), None)[..], [Step::Record { degraded: Some(_), .. }]));
    }

    #[test]
    fn back_in_line_clears_degraded() {
        let r = record(Phase::Ready, &[H1], Some("missing on node n1"));
        assert_eq!(
            plan(&r, Some(&node_volume(4 << 20, &[H1], false)), None),
            [Step::Record { degraded: None, capacity_bytes: 4 << 20 }]
        );
    }

    #[test]
    fn hosts_size_and_openness_are_driven_to_the_record() {
        let mut r = record(Phase::Ready, &[H1], None);
        r.size_bytes = 8 << 20;
        let steps = plan(&r, Some(&node_volume(4 << 20, &[H2], true)), None);
        assert_eq!(steps, [Step::Grow(8 << 20), Step::Allow(H1.into()), Step::Revoke(H2.into()), Step::CloseAnyHost]);
        // The node rounded up: its capacity is recorded.
        let r = record(Phase::Ready, &[], None);
        assert_eq!(
            plan(&r, Some(&node_volume(5 << 20, &[], false)), None),
            [Step::Record { degraded: None, capacity_bytes: 5 << 20 }]
        );
    }

    #[test]
    fn orphans_are_reported_unless_a_tombstone_explains_them() {
        let other = "0d3f0c52-6a1e-4c3e-9d55-2f9a7e0b1c44";
        let third = "1d3f0c52-6a1e-4c3e-9d55-2f9a7e0b1c44";
        let mut vols = vec![node_volume(1, &[], false), node_volume(1, &[], false), node_volume(1, &[], false)];
        vols[1].name = format!("fabriq-{other}");
        vols[2].name = format!("fabriq-{third}");
        let mut foreign = node_volume(1, &[], false);
        foreign.name = "pvc-by-hand".into();
        vols.push(foreign);
        let ids = [ID].into();
        let tombs = [other].into();
        let (delete, report) = orphans(&vols, &ids, &tombs);
        assert_eq!(delete.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(), [format!("fabriq-{other}")]);
        assert_eq!(report.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(), [format!("fabriq-{third}")]);
    }
}
