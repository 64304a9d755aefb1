//! The Controller and Identity services of the `fabriq-csi` binary against a real
//! fabriq-provisioner and real fabriq-target storage nodes, through a real gRPC client on
//! the driver's Unix socket: the whole volume lifecycle and each gRPC code the CSI
//! specification prescribes for it.

mod common;

use std::collections::HashMap;

use common::*;
use fabriq_csi::csi::controller_client::ControllerClient;
use fabriq_csi::csi::identity_client::IdentityClient;
use fabriq_csi::csi::volume_capability::access_mode::Mode;
use fabriq_csi::csi::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
use fabriq_csi::csi::*;
use serde_json::json;
use tonic::Code;
use tonic::transport::Channel;

fn mount(fs: &str, mode: Mode) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume { fs_type: fs.into(), ..Default::default() })),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

fn block(mode: Mode) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Block(BlockVolume {})),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

fn range(required: u64, limit: u64) -> Option<CapacityRange> {
    Some(CapacityRange { required_bytes: required as i64, limit_bytes: limit as i64 })
}

fn zone(z: &str) -> Topology {
    Topology { segments: [("topology.fabriq.dev/zone".to_owned(), z.to_owned())].into_iter().collect() }
}

fn create(name: &str, bytes: u64) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.into(),
        capacity_range: range(bytes, 0),
        volume_capabilities: vec![mount("ext4", Mode::SingleNodeWriter)],
        ..Default::default()
    }
}

async fn clients(socket: &std::path::Path) -> (IdentityClient<Channel>, ControllerClient<Channel>) {
    let channel = fabriq_csi::server::connect(socket).await.unwrap();
    (IdentityClient::new(channel.clone()), ControllerClient::new(channel))
}

/// The code of a failed call, and that its message says `says`.
fn failed<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>, code: Code, says: &str) {
    let status = r.expect_err("the call must fail");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(status.message().contains(says), "{:?} does not say {says:?}", status.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volume_lifecycle_against_a_real_provisioner() {
    let (a, b) = (start_node(64), start_node(64));
    let p = Provisioner::start();
    p.register("a", &a, json!({"zone": "a"}));
    p.register("b", &b, json!({"zone": "b"}));
    let url = p.url();
    let driver = Driver::start(&["--mode", "controller", "--provisioner-url", &url], Some(TOKEN));
    let (mut id, mut ctl) = clients(&driver.socket).await;

    // Identity.
    let info = id.get_plugin_info(GetPluginInfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.name, "csi.fabriq.dev");
    assert!(!info.vendor_version.is_empty());
    assert_eq!(id.probe(ProbeRequest {}).await.unwrap().into_inner().ready, Some(true));
    let caps = id.get_plugin_capabilities(GetPluginCapabilitiesRequest {}).await.unwrap().into_inner();
    assert_eq!(caps.capabilities.len(), 3, "{caps:?}");
    let caps = ctl.controller_get_capabilities(ControllerGetCapabilitiesRequest {}).await.unwrap().into_inner();
    assert!(caps.capabilities.len() >= 5, "{caps:?}");

    // CreateVolume: rounded up to whole MiB, idempotent by name.
    let v1 = ctl.create_volume(create("pvc-one", 3 * MIB + 1)).await.unwrap().into_inner().volume.unwrap();
    assert_eq!(v1.capacity_bytes, 4 * MIB as i64);
    let again = ctl.create_volume(create("pvc-one", 3 * MIB + 1)).await.unwrap().into_inner().volume.unwrap();
    assert_eq!((again.volume_id.as_str(), again.capacity_bytes), (v1.volume_id.as_str(), v1.capacity_bytes));
    // A range the existing volume fits is the same request too.
    let mut within = create("pvc-one", 2 * MIB);
    within.capacity_range = range(2 * MIB, 8 * MIB);
    assert_eq!(ctl.create_volume(within).await.unwrap().into_inner().volume.unwrap().volume_id, v1.volume_id);
    failed(ctl.create_volume(create("pvc-one", 8 * MIB)).await, Code::AlreadyExists, "pvc-one");
    // Names that are not provisioner names are mapped, the same way every time.
    let long = "x".repeat(100);
    let l1 = ctl.create_volume(create(&long, MIB)).await.unwrap().into_inner().volume.unwrap();
    let l2 = ctl.create_volume(create(&long, MIB)).await.unwrap().into_inner().volume.unwrap();
    assert_eq!(l1.volume_id, l2.volume_id);

    // Bad requests: InvalidArgument naming the field; OutOfRange; ResourceExhausted.
    failed(ctl.create_volume(create("", MIB)).await, Code::InvalidArgument, "name is required");
    let mut r = create("pvc-bad", MIB);
    r.volume_capabilities.clear();
    failed(ctl.create_volume(r).await, Code::InvalidArgument, "volume_capabilities");
    let mut r = create("pvc-bad", MIB);
    r.volume_capabilities = vec![mount("btrfs", Mode::SingleNodeWriter)];
    failed(ctl.create_volume(r).await, Code::InvalidArgument, "volume_capabilities[0]");
    let mut r = create("pvc-bad", MIB);
    r.capacity_range = range(2 * MIB, MIB);
    failed(ctl.create_volume(r).await, Code::InvalidArgument, "capacity_range");
    let mut r = create("pvc-bad", MIB);
    r.capacity_range = range(1000, 1000);
    failed(ctl.create_volume(r).await, Code::OutOfRange, "capacity_range");
    let mut r = create("pvc-bad", MIB);
    r.parameters.insert("fstype".into(), "ext4".into());
    failed(ctl.create_volume(r).await, Code::InvalidArgument, "parameters[\"fstype\"]");
    failed(ctl.create_volume(create("pvc-huge", 1 << 30)).await, Code::ResourceExhausted, "no storage node");

    // Topology: requisite zone b lands on b and says so; a zone nobody has is exhausted.
    let mut r = create("pvc-zone-b", MIB);
    r.parameters.insert("fsType".into(), "xfs".into());
    // What csi-provisioner adds (--extra-create-metadata) is accepted.
    r.parameters.insert("csi.storage.k8s.io/pvc/name".into(), "data-web-0".into());
    r.parameters.insert("csi.storage.k8s.io/pvc/namespace".into(), "default".into());
    r.parameters.insert("csi.storage.k8s.io/pv/name".into(), "pvc-zone-b".into());
    r.volume_capabilities = vec![mount("", Mode::SingleNodeWriter)];
    r.accessibility_requirements = Some(TopologyRequirement { requisite: vec![zone("b")], preferred: vec![zone("b")] });
    let vb = ctl.create_volume(r).await.unwrap().into_inner().volume.unwrap();
    assert_eq!(vb.accessible_topology, vec![zone("b")]);
    assert_eq!(vb.volume_context.get("fsType").map(String::as_str), Some("xfs"));
    let (_, pv) = p.call("GET", &format!("/v1/volumes/{}", vb.volume_id), None);
    assert_eq!(pv["node"], "b", "{pv}");
    let mut r = create("pvc-zone-c", MIB);
    r.accessibility_requirements = Some(TopologyRequirement { requisite: vec![zone("c")], preferred: vec![] });
    failed(ctl.create_volume(r).await, Code::ResourceExhausted, "zone");

    // GetCapacity, overall and per zone.
    let all = ctl.get_capacity(GetCapacityRequest::default()).await.unwrap().into_inner();
    let in_a = ctl
        .get_capacity(GetCapacityRequest { accessible_topology: Some(zone("a")), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let in_c = ctl
        .get_capacity(GetCapacityRequest { accessible_topology: Some(zone("c")), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(all.available_capacity > in_a.available_capacity && in_a.available_capacity > 0, "{all:?} {in_a:?}");
    assert_eq!(in_c.available_capacity, 0);
    assert!(all.maximum_volume_size.unwrap() > 0);
    let bad = GetCapacityRequest {
        accessible_topology: Some(Topology { segments: [("zone".to_owned(), "a".to_owned())].into_iter().collect() }),
        ..Default::default()
    };
    failed(ctl.get_capacity(bad).await, Code::InvalidArgument, "accessible_topology");

    // ValidateVolumeCapabilities.
    let validate = |vid: &str, cap: VolumeCapability| ValidateVolumeCapabilitiesRequest {
        volume_id: vid.into(),
        volume_capabilities: vec![cap],
        ..Default::default()
    };
    let ok = ctl.validate_volume_capabilities(validate(&v1.volume_id, mount("ext4", Mode::SingleNodeWriter))).await;
    assert!(ok.unwrap().into_inner().confirmed.is_some());
    let no = ctl.validate_volume_capabilities(validate(&v1.volume_id, mount("ext4", Mode::MultiNodeMultiWriter))).await;
    let no = no.unwrap().into_inner();
    assert!(no.confirmed.is_none() && no.message.contains("MULTI_NODE_MULTI_WRITER"), "{no:?}");
    let ghost = "00000000-0000-4000-8000-000000000000";
    failed(
        ctl.validate_volume_capabilities(validate(ghost, block(Mode::SingleNodeWriter))).await,
        Code::NotFound,
        ghost,
    );
    failed(
        ctl.validate_volume_capabilities(validate("", block(Mode::SingleNodeWriter))).await,
        Code::InvalidArgument,
        "volume_id",
    );

    // ControllerPublishVolume: the connection in the publish context; idempotent.
    let publish = |vid: &str, node: &str, cap: VolumeCapability| ControllerPublishVolumeRequest {
        volume_id: vid.into(),
        node_id: node.into(),
        volume_capability: Some(cap),
        ..Default::default()
    };
    let ctx = ctl.controller_publish_volume(publish(&v1.volume_id, HOST1, mount("ext4", Mode::SingleNodeWriter))).await;
    let ctx = ctx.unwrap().into_inner().publish_context;
    let (_, pv1) = p.call("GET", &format!("/v1/volumes/{}", v1.volume_id), None);
    let node = if pv1["node"] == "a" { &a } else { &b };
    let want: HashMap<String, String> = [
        ("transport", "tcp".to_owned()),
        ("traddr", node.nvme.ip().to_string()),
        ("trsvcid", node.nvme.port().to_string()),
        ("subnqn", pv1["nqn"].as_str().unwrap().to_owned()),
        ("nsid", "1".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(ctx, want);
    assert!(want["subnqn"].starts_with("nqn.2026-11.dev.fabriq:vol:"));
    let again =
        ctl.controller_publish_volume(publish(&v1.volume_id, HOST1, mount("ext4", Mode::SingleNodeWriter))).await;
    assert_eq!(again.unwrap().into_inner().publish_context, want);
    let (_, hosts) = p.call("GET", &format!("/v1/volumes/{}/hosts", v1.volume_id), None);
    assert_eq!(hosts["hosts"], json!([HOST1]));
    let got = ctl
        .controller_get_volume(ControllerGetVolumeRequest { volume_id: v1.volume_id.clone() })
        .await
        .unwrap()
        .into_inner();
    let status = got.status.unwrap();
    assert_eq!(status.published_node_ids, vec![HOST1.to_owned()]);
    assert!(!status.volume_condition.unwrap().abnormal);
    assert_eq!(got.volume.unwrap().volume_id, v1.volume_id);
    failed(
        ctl.controller_get_volume(ControllerGetVolumeRequest { volume_id: ghost.into() }).await,
        Code::NotFound,
        ghost,
    );
    // A single-node volume published elsewhere; unknown volume; a node id that is no NQN.
    let other =
        ctl.controller_publish_volume(publish(&v1.volume_id, HOST2, mount("ext4", Mode::SingleNodeWriter))).await;
    failed(other, Code::FailedPrecondition, HOST1);
    failed(
        ctl.controller_publish_volume(publish(ghost, HOST1, block(Mode::SingleNodeWriter))).await,
        Code::NotFound,
        ghost,
    );
    failed(
        ctl.controller_publish_volume(publish(&v1.volume_id, "some-node", block(Mode::SingleNodeWriter))).await,
        Code::NotFound,
        "some-node",
    );
    let mut r = publish(&v1.volume_id, HOST1, block(Mode::SingleNodeWriter));
    r.volume_capability = None;
    failed(ctl.controller_publish_volume(r).await, Code::InvalidArgument, "volume_capability");
    // A block volume may be shared by several nodes.
    for host in [HOST1, HOST2] {
        ctl.controller_publish_volume(publish(&l1.volume_id, host, block(Mode::MultiNodeMultiWriter))).await.unwrap();
    }

    // ListVolumes, one entry a page, and the published nodes in each entry.
    let mut seen = Vec::new();
    let mut token = String::new();
    for _ in 0..10 {
        let page = ctl
            .list_volumes(ListVolumesRequest { max_entries: 1, starting_token: token.clone() })
            .await
            .unwrap()
            .into_inner();
        assert!(page.entries.len() <= 1);
        for e in &page.entries {
            let v = e.volume.as_ref().unwrap();
            seen.push(v.volume_id.clone());
            if v.volume_id == v1.volume_id {
                assert_eq!(e.status.as_ref().unwrap().published_node_ids, vec![HOST1.to_owned()]);
            }
        }
        token = page.next_token;
        if token.is_empty() {
            break;
        }
    }
    seen.sort();
    let mut want_ids = vec![v1.volume_id.clone(), l1.volume_id.clone(), vb.volume_id.clone()];
    want_ids.sort();
    assert_eq!(seen, want_ids);
    let all = ctl.list_volumes(ListVolumesRequest::default()).await.unwrap().into_inner();
    assert_eq!((all.entries.len(), all.next_token.as_str()), (3, ""));
    failed(
        ctl.list_volumes(ListVolumesRequest { max_entries: 0, starting_token: "garbage".into() }).await,
        Code::Aborted,
        "starting_token",
    );
    failed(
        ctl.list_volumes(ListVolumesRequest { max_entries: -1, ..Default::default() }).await,
        Code::InvalidArgument,
        "max_entries",
    );

    // ControllerExpandVolume: file systems need the node, raw block does not; idempotent.
    let expand = |vid: &str, bytes: u64, cap: VolumeCapability| ControllerExpandVolumeRequest {
        volume_id: vid.into(),
        capacity_range: range(bytes, 0),
        volume_capability: Some(cap),
        ..Default::default()
    };
    let e = ctl.controller_expand_volume(expand(&v1.volume_id, 6 * MIB, mount("ext4", Mode::SingleNodeWriter))).await;
    let e = e.unwrap().into_inner();
    assert_eq!((e.capacity_bytes, e.node_expansion_required), (6 * MIB as i64, true));
    let e = ctl.controller_expand_volume(expand(&v1.volume_id, 5 * MIB, mount("ext4", Mode::SingleNodeWriter))).await;
    assert_eq!(e.unwrap().into_inner().capacity_bytes, 6 * MIB as i64, "a smaller size is done already");
    let e = ctl.controller_expand_volume(expand(&l1.volume_id, 2 * MIB, block(Mode::MultiNodeMultiWriter))).await;
    let e = e.unwrap().into_inner();
    assert_eq!((e.capacity_bytes, e.node_expansion_required), (2 * MIB as i64, false));
    let (_, pv1) = p.call("GET", &format!("/v1/volumes/{}", v1.volume_id), None);
    assert_eq!(pv1["capacity_bytes"], 6 * MIB);
    failed(
        ctl.controller_expand_volume(expand(ghost, MIB, block(Mode::SingleNodeWriter))).await,
        Code::NotFound,
        ghost,
    );
    failed(
        ctl.controller_expand_volume(expand(&v1.volume_id, 1 << 30, mount("ext4", Mode::SingleNodeWriter))).await,
        Code::ResourceExhausted,
        "",
    );
    let mut r = expand(&v1.volume_id, MIB, block(Mode::SingleNodeWriter));
    r.capacity_range = None;
    failed(ctl.controller_expand_volume(r).await, Code::InvalidArgument, "capacity_range");

    // Delete while published: refused; unpublish (twice), then delete (twice).
    failed(
        ctl.delete_volume(DeleteVolumeRequest { volume_id: v1.volume_id.clone(), ..Default::default() }).await,
        Code::FailedPrecondition,
        "published",
    );
    let unpublish = |vid: &str, node: &str| ControllerUnpublishVolumeRequest {
        volume_id: vid.into(),
        node_id: node.into(),
        ..Default::default()
    };
    for _ in 0..2 {
        ctl.controller_unpublish_volume(unpublish(&v1.volume_id, HOST1)).await.unwrap();
    }
    let (_, hosts) = p.call("GET", &format!("/v1/volumes/{}/hosts", v1.volume_id), None);
    assert_eq!(hosts["hosts"], json!([]));
    // Unpublishing a volume that does not exist, or a node it never had, succeeds.
    ctl.controller_unpublish_volume(unpublish(ghost, HOST1)).await.unwrap();
    ctl.controller_unpublish_volume(unpublish(&vb.volume_id, HOST2)).await.unwrap();
    // No node id: from every node.
    ctl.controller_unpublish_volume(unpublish(&l1.volume_id, "")).await.unwrap();
    for vid in [&v1.volume_id, &l1.volume_id, &vb.volume_id] {
        for _ in 0..2 {
            ctl.delete_volume(DeleteVolumeRequest { volume_id: vid.clone(), ..Default::default() }).await.unwrap();
        }
    }
    ctl.delete_volume(DeleteVolumeRequest { volume_id: ghost.into(), ..Default::default() }).await.unwrap();
    failed(ctl.delete_volume(DeleteVolumeRequest::default()).await, Code::InvalidArgument, "volume_id");
    let all = ctl.list_volumes(ListVolumesRequest::default()).await.unwrap().into_inner();
    assert!(all.entries.is_empty(), "{all:?}");
    let (_, page) = p.call("GET", "/v1/volumes", None);
    assert_eq!(page["volumes"], json!([]));

    // Snapshots are not offered.
    failed(ctl.create_snapshot(CreateSnapshotRequest::default()).await, Code::Unimplemented, "CreateSnapshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_is_not_ready_when_the_provisioner_is_unreachable() {
    // A port nobody listens on.
    let url = format!("http://127.0.0.1:{}", free_port());
    let driver = Driver::start(
        &["--mode", "controller", "--provisioner-url", &url, "--provisioner-timeout-s", "5"],
        Some(TOKEN),
    );
    let (mut id, mut ctl) = clients(&driver.socket).await;
    assert_eq!(id.probe(ProbeRequest {}).await.unwrap().into_inner().ready, Some(false));
    failed(ctl.create_volume(create("pvc-x", MIB)).await, Code::Unavailable, "provisioner");
    // A provisioner that answers but refuses the token: not ready either.
    let p = Provisioner::start();
    let url = p.url();
    let driver = Driver::start(&["--mode", "controller", "--provisioner-url", &url], Some("wrong-token"));
    let (mut id, mut ctl) = clients(&driver.socket).await;
    failed(ctl.create_volume(create("pvc-x", MIB)).await, Code::Unavailable, "token");
    assert_eq!(id.probe(ProbeRequest {}).await.unwrap().into_inner().ready, Some(false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_of_one_name_make_one_volume_and_the_environment_configures() {
    let a = start_node(64);
    let p = Provisioner::start();
    p.register("a", &a, json!({}));
    // URL and token from the environment, as a Secret's keys would be handed to the container.
    let url = p.url();
    let driver = Driver::start_with_env(
        &["--mode", "controller"],
        None,
        &[("FABRIQ_PROVISIONER_URL", &url), ("FABRIQ_PROVISIONER_TOKEN", TOKEN)],
    );
    let (mut id, ctl) = clients(&driver.socket).await;
    assert_eq!(id.probe(ProbeRequest {}).await.unwrap().into_inner().ready, Some(true));
    // A CO that lost track retries at once: every answer is the one volume, or ABORTED
    // while another call for the name runs (the CO retries those).
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let mut ctl = ctl.clone();
            tokio::spawn(async move { ctl.create_volume(create("pvc-race", 2 * MIB)).await })
        })
        .collect();
    let mut ids = std::collections::BTreeSet::new();
    for c in calls {
        match c.await.unwrap() {
            Ok(r) => {
                ids.insert(r.into_inner().volume.unwrap().volume_id);
            }
            Err(s) => assert_eq!(s.code(), Code::Aborted, "{s:?}"),
        }
    }
    let mut ctl = ctl;
    let v = ctl.create_volume(create("pvc-race", 2 * MIB)).await.unwrap().into_inner().volume.unwrap();
    ids.insert(v.volume_id.clone());
    assert_eq!(ids.len(), 1, "{ids:?}");
    let (_, page) = p.call("GET", "/v1/volumes", None);
    assert_eq!(page["volumes"].as_array().unwrap().len(), 1, "{page}");
    // The same for deletes.
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let mut ctl = ctl.clone();
            let vid = v.volume_id.clone();
            tokio::spawn(async move {
                ctl.delete_volume(DeleteVolumeRequest { volume_id: vid, ..Default::default() }).await
            })
        })
        .collect();
    for c in calls {
        if let Err(s) = c.await.unwrap() {
            assert_eq!(s.code(), Code::Aborted, "{s:?}");
        }
    }
    ctl.delete_volume(DeleteVolumeRequest { volume_id: v.volume_id.clone(), ..Default::default() }).await.unwrap();
    let (_, page) = p.call("GET", "/v1/volumes", None);
    assert_eq!(page["volumes"], json!([]));
}
