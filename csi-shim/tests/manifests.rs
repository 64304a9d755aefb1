//! The Kubernetes manifests in `deploy/` are well-formed YAML and carry what each kind
//! needs: every document has apiVersion, kind and metadata.name; workloads' selectors match
//! their templates, every container has a name and an image and mounts only volumes the pod
//! declares; the sidecars and the driver share one socket; bindings name roles and service
//! accounts that exist; StorageClasses name this driver; the node plugin is privileged with
//! host /dev, /sys and the kubelet directory mounted with bidirectional propagation. Also
//! the image build file and the kustomization's resources.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use yaml_rust2::{Yaml, YamlLoader};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// Every document of every `deploy/*.yaml`, with its file name.
fn documents() -> Vec<(String, Yaml)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 7, "deploy/ holds {files:?}");
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{name}: not YAML: {e}"));
        for d in docs.into_iter().filter(|d| !d.is_null()) {
            out.push((name.clone(), d));
        }
    }
    out
}

fn s<'a>(y: &'a Yaml, path: &[&str]) -> Option<&'a str> {
    at(y, path).as_str()
}

fn at<'a>(y: &'a Yaml, path: &[&str]) -> &'a Yaml {
    path.iter().fold(y, |y, k| &y[*k])
}

fn list<'a>(y: &'a Yaml, path: &[&str]) -> &'a [Yaml] {
    at(y, path).as_vec().map(Vec::as_slice).unwrap_or(&[])
}

fn kind(y: &Yaml) -> &str {
    s(y, &["kind"]).unwrap_or("")
}

fn name(y: &Yaml) -> &str {
    s(y, &["metadata", "name"]).unwrap_or("")
}

fn of_kind<'a>(docs: &'a [(String, Yaml)], k: &str) -> Vec<&'a Yaml> {
    docs.iter().filter(|(_, d)| kind(d) == k).map(|(_, d)| d).collect()
}

/// The pod template of a workload: labels match the selector, containers are complete and
/// mount only declared volumes. Returns the containers by name.
fn check_pod(what: &str, w: &Yaml) -> BTreeMap<String, Yaml> {
    let selector =
        at(w, &["spec", "selector", "matchLabels"]).as_hash().unwrap_or_else(|| panic!("{what}: no selector"));
    let labels = at(w, &["spec", "template", "metadata", "labels"]);
    for (k, v) in selector {
        assert_eq!(&labels[k.as_str().unwrap()], v, "{what}: the template's labels do not match the selector");
    }
    let pod = at(w, &["spec", "template", "spec"]);
    // Volumes of the pod, and of a StatefulSet's claim templates.
    let volumes: BTreeSet<&str> = list(pod, &["volumes"])
        .iter()
        .chain(list(w, &["spec", "volumeClaimTemplates"]))
        .map(|v| s(v, &["name"]).or_else(|| s(v, &["metadata", "name"])).unwrap())
        .collect();
    let mut containers = BTreeMap::new();
    assert!(!list(pod, &["containers"]).is_empty(), "{what}: no containers");
    for c in list(pod, &["containers"]) {
        let cname = s(c, &["name"]).unwrap_or_else(|| panic!("{what}: a container without a name"));
        assert!(s(c, &["image"]).is_some_and(|i| !i.is_empty()), "{what}/{cname}: no image");
        for m in list(c, &["volumeMounts"]).iter().chain(list(c, &["volumeDevices"])) {
            let v = s(m, &["name"]).unwrap();
            assert!(volumes.contains(v), "{what}/{cname} mounts {v}, which the pod does not declare");
            let path = s(m, &["mountPath"]).or_else(|| s(m, &["devicePath"]));
            assert!(path.is_some_and(|p| p.starts_with('/')), "{what}/{cname}: mount {v} has no path");
        }
        assert!(containers.insert(cname.to_owned(), c.clone()).is_none(), "{what}: two containers named {cname}");
    }
    containers
}

fn args(c: &Yaml) -> Vec<String> {
    list(c, &["args"]).iter().map(|a| a.as_str().unwrap().to_owned()).collect()
}

#[test]
fn every_document_is_complete() {
    let docs = documents();
    for (file, d) in &docs {
        assert!(s(d, &["apiVersion"]).is_some(), "{file}: a document without apiVersion");
        assert!(!kind(d).is_empty(), "{file}: a document without kind");
        // A kustomization is kustomize's file, not an API object: it has no name.
        assert!(kind(d) == "Kustomization" || !name(d).is_empty(), "{file}: a {} without metadata.name", kind(d));
    }
    let kinds: BTreeSet<&str> = docs.iter().map(|(_, d)| kind(d)).collect();
    for k in [
        "Namespace",
        "CSIDriver",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Secret",
        "Deployment",
        "DaemonSet",
        "StorageClass",
        "StatefulSet",
    ] {
        assert!(kinds.contains(k), "no {k} in deploy/");
    }
}

#[test]
fn csi_driver() {
    let docs = documents();
    let d = of_kind(&docs, "CSIDriver");
    assert_eq!(d.len(), 1);
    assert_eq!(name(d[0]), fabriq_csi::DRIVER_NAME);
    assert_eq!(at(d[0], &["spec", "attachRequired"]).as_bool(), Some(true), "ControllerPublishVolume needs attach");
    assert!(list(d[0], &["spec", "volumeLifecycleModes"]).iter().any(|m| m.as_str() == Some("Persistent")));
}

#[test]
fn rbac_bindings_name_what_exists() {
    let docs = documents();
    let accounts: BTreeSet<(&str, &str)> =
        of_kind(&docs, "ServiceAccount").iter().map(|a| (s(a, &["metadata", "namespace"]).unwrap(), name(a))).collect();
    for (binding, role_kind) in [("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")] {
        let roles: BTreeSet<&str> = of_kind(&docs, role_kind).iter().map(|r| name(r)).collect();
        for b in of_kind(&docs, binding) {
            assert_eq!(s(b, &["roleRef", "kind"]), Some(role_kind), "{}", name(b));
            let role = s(b, &["roleRef", "name"]).unwrap();
            assert!(roles.contains(role), "{binding} {} names the missing {role_kind} {role}", name(b));
            for subject in list(b, &["subjects"]) {
                let sa = (s(subject, &["namespace"]).unwrap(), s(subject, &["name"]).unwrap());
                assert!(accounts.contains(&sa), "{binding} {} names the missing service account {sa:?}", name(b));
            }
        }
    }
    for r in of_kind(&docs, "ClusterRole").into_iter().chain(of_kind(&docs, "Role")) {
        for rule in list(r, &["rules"]) {
            assert!(!list(rule, &["resources"]).is_empty() && !list(rule, &["verbs"]).is_empty(), "{}", name(r));
        }
    }
}

#[test]
fn controller_deployment_has_its_sidecars_on_one_socket() {
    let docs = documents();
    let d = of_kind(&docs, "Deployment");
    assert_eq!(d.len(), 1);
    let containers = check_pod("controller", d[0]);
    for c in ["fabriq-csi", "csi-provisioner", "csi-attacher", "csi-resizer", "liveness-probe"] {
        assert!(containers.contains_key(c), "the controller has no {c} container");
    }
    let driver = args(&containers["fabriq-csi"]);
    assert!(driver.contains(&"--mode=controller".to_owned()), "{driver:?}");
    assert!(driver.contains(&"--endpoint=unix:///csi/csi.sock".to_owned()), "{driver:?}");
    for (n, c) in &containers {
        if n != "fabriq-csi" {
            assert!(
                args(c).contains(&"--csi-address=/csi/csi.sock".to_owned()),
                "{n} does not use the driver's socket"
            );
        }
    }
    let sa = s(d[0], &["spec", "template", "spec", "serviceAccountName"]).unwrap();
    assert!(of_kind(&docs, "ServiceAccount").iter().any(|a| name(a) == sa));
    // The provisioner's URL and token come from the Secret.
    let secret = of_kind(&docs, "Secret");
    assert_eq!(secret.len(), 1);
    for key in ["url", "token"] {
        assert!(s(secret[0], &["stringData", key]).is_some(), "the Secret has no {key}");
    }
    let env = list(&containers["fabriq-csi"], &["env"]);
    assert!(env.iter().any(|e| s(e, &["name"]) == Some("FABRIQ_PROVISIONER_URL")
        && s(e, &["valueFrom", "secretKeyRef", "name"]) == Some(name(secret[0]))));
}

#[test]
fn node_daemonset_is_privileged_with_host_paths_and_bidirectional_kubelet_dir() {
    let docs = documents();
    let d = of_kind(&docs, "DaemonSet");
    assert_eq!(d.len(), 1);
    let containers = check_pod("node", d[0]);
    assert!(containers.contains_key("node-driver-registrar"));
    let driver = &containers["fabriq-csi"];
    assert_eq!(at(driver, &["securityContext", "privileged"]).as_bool(), Some(true));
    assert!(args(driver).contains(&"--mode=node".to_owned()));
    let pod = at(d[0], &["spec", "template", "spec"]);
    let host_path = |vol: &str| {
        list(pod, &["volumes"]).iter().find(|v| s(v, &["name"]) == Some(vol)).and_then(|v| s(v, &["hostPath", "path"]))
    };
    let mounts = list(driver, &["volumeMounts"]);
    let mount_of = |host: &str| {
        mounts
            .iter()
            .find(|m| host_path(s(m, &["name"]).unwrap()) == Some(host))
            .unwrap_or_else(|| panic!("no mount of host {host}"))
    };
    assert_eq!(s(mount_of("/dev"), &["mountPath"]), Some("/dev"));
    assert_eq!(s(mount_of("/sys"), &["mountPath"]), Some("/sys"));
    let kubelet = mount_of("/var/lib/kubelet");
    assert_eq!(s(kubelet, &["mountPath"]), Some("/var/lib/kubelet"));
    assert_eq!(s(kubelet, &["mountPropagation"]), Some("Bidirectional"));
    // The registrar tells kubelet where the socket is on the host.
    let reg = args(&containers["node-driver-registrar"]);
    let socket_dir = host_path("plugin-dir").unwrap();
    assert!(reg.contains(&format!("--kubelet-registration-path={socket_dir}/csi.sock")), "{reg:?}");
}

#[test]
fn storage_classes_name_the_driver_and_known_parameters() {
    let docs = documents();
    let classes = of_kind(&docs, "StorageClass");
    assert!(classes.len() >= 4);
    let mut modes = BTreeSet::new();
    for c in &classes {
        assert_eq!(s(c, &["provisioner"]), Some(fabriq_csi::DRIVER_NAME), "{}", name(c));
        let params: std::collections::HashMap<String, String> = at(c, &["parameters"])
            .as_hash()
            .map(|h| h.iter().map(|(k, v)| (k.as_str().unwrap().to_owned(), v.as_str().unwrap().to_owned())).collect())
            .unwrap_or_default();
        // The driver itself checks them: what it would refuse must not be in an example.
        fabriq_csi::caps::params(&params).unwrap_or_else(|e| panic!("StorageClass {}: {e}", name(c)));
        modes.insert(s(c, &["volumeBindingMode"]).unwrap_or("Immediate").to_owned());
        for term in list(c, &["allowedTopologies"]) {
            for e in list(term, &["matchLabelExpressions"]) {
                assert!(s(e, &["key"]).unwrap().starts_with(fabriq_csi::keys::TOPOLOGY_PREFIX), "{}", name(c));
            }
        }
    }
    assert!(modes.contains("WaitForFirstConsumer"), "no WaitForFirstConsumer example");
    assert!(classes.iter().any(|c| !list(c, &["allowedTopologies"]).is_empty()), "no allowedTopologies example");
}

#[test]
fn example_statefulset_claims_from_the_storage_classes() {
    let docs = documents();
    let classes: BTreeSet<&str> = of_kind(&docs, "StorageClass").iter().map(|c| name(c)).collect();
    let sets = of_kind(&docs, "StatefulSet");
    assert_eq!(sets.len(), 1);
    let containers = check_pod("statefulset", sets[0]);
    let claims = list(sets[0], &["spec", "volumeClaimTemplates"]);
    assert!(!claims.is_empty());
    let mut claim_names = BTreeSet::new();
    for c in claims {
        let class = s(c, &["spec", "storageClassName"]).unwrap();
        assert!(classes.contains(class), "claim {} uses the missing class {class}", name(c));
        assert!(s(c, &["spec", "resources", "requests", "storage"]).is_some());
        claim_names.insert(name(c).to_owned());
    }
    // Every claim is used by a container, as a mount or (volumeMode Block) as a device.
    let mut used = BTreeSet::new();
    for c in containers.values() {
        for m in list(c, &["volumeMounts"]).iter().chain(list(c, &["volumeDevices"])) {
            used.insert(s(m, &["name"]).unwrap().to_owned());
        }
    }
    assert_eq!(used, claim_names);
}

#[test]
fn kustomization_and_image_build_file() {
    let docs = documents();
    let k = docs.iter().find(|(_, d)| kind(d) == "Kustomization").expect("a kustomization");
    for r in list(&k.1, &["resources"]) {
        let f = r.as_str().unwrap();
        assert!(deploy_dir().join(f).exists(), "the kustomization names the missing {f}");
    }
    let dockerfile = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("-p fabriq-csi"), "the image does not build fabriq-csi");
    for tool in ["e2fsprogs", "xfsprogs"] {
        assert!(dockerfile.contains(tool), "the image lacks {tool}");
    }
    assert!(dockerfile.contains("ENTRYPOINT"));
}
