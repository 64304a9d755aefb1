//! `fabriq-csi-call`: one CSI call to a driver's Unix socket, from a shell. What an operator
//! uses to poke a node plugin by hand, and what the end-to-end guest tests drive the driver
//! with (tests/e2e/guest/tests.sh).
//!
//! ```text
//! fabriq-csi-call [--expect CODE] SOCKET RPC [KEY=VALUE ...]
//!   RPC: probe info caps node-caps stage unstage publish unpublish stats expand
//!   KEYS: id staging target fs block=1 ro=1 mode=(single-writer|multi-writer|reader)
//!         ctx.NAME=VALUE (publish context) vctx.NAME=VALUE (volume context) required=BYTES
//!         flag=MOUNT-FLAG (repeat)
//! ```
//!
//! Prints the answer as `key=value` lines; exit 0 on success. With `--expect CODE` (a gRPC
//! code name: NotFound, InvalidArgument, ...) the call must fail with that code instead;
//! the message is printed. Any other outcome exits 1 and says why on stderr.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use fabriq_csi::csi::identity_client::IdentityClient;
use fabriq_csi::csi::node_client::NodeClient;
use fabriq_csi::csi::volume_capability::access_mode::Mode;
use fabriq_csi::csi::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
use fabriq_csi::csi::*;

/// The request's `KEY=VALUE` words.
#[derive(Default)]
struct Words {
    single: HashMap<String, String>,
    ctx: HashMap<String, String>,
    vctx: HashMap<String, String>,
    flags: Vec<String>,
}

impl Words {
    fn parse(words: &[String]) -> Result<Words, String> {
        let mut w = Words::default();
        for word in words {
            let (k, v) = word.split_once('=').ok_or_else(|| format!("{word:?} is not KEY=VALUE"))?;
            if let Some(name) = k.strip_prefix("ctx.") {
                w.ctx.insert(name.to_owned(), v.to_owned());
            } else if let Some(name) = k.strip_prefix("vctx.") {
                w.vctx.insert(name.to_owned(), v.to_owned());
            } else if k == "flag" {
                w.flags.push(v.to_owned());
            } else {
                w.single.insert(k.to_owned(), v.to_owned());
            }
        }
        Ok(w)
    }

    fn get(&self, key: &str) -> String {
        self.single.get(key).cloned().unwrap_or_default()
    }

    fn yes(&self, key: &str) -> bool {
        matches!(self.get(key).as_str(), "1" | "true" | "yes")
    }

    fn capability(&self) -> Result<VolumeCapability, String> {
        let mode = match self.get("mode").as_str() {
            "" | "single-writer" => Mode::SingleNodeWriter,
            "multi-writer" => Mode::MultiNodeMultiWriter,
            "reader" => Mode::MultiNodeReaderOnly,
            other => return Err(format!("mode {other:?}: single-writer, multi-writer or reader")),
        };
        let access = if self.yes("block") {
            AccessType::Block(BlockVolume {})
        } else {
            AccessType::Mount(MountVolume {
                fs_type: self.get("fs"),
                mount_flags: self.flags.clone(),
                ..Default::default()
            })
        };
        Ok(VolumeCapability { access_type: Some(access), access_mode: Some(AccessMode { mode: mode as i32 }) })
    }
}

async fn call(socket: PathBuf, rpc: &str, w: Words) -> Result<Vec<String>, String> {
    let channel =
        fabriq_csi::server::connect(&socket).await.map_err(|e| format!("connecting to {}: {e}", socket.display()))?;
    let mut id = IdentityClient::new(channel.clone());
    let mut node = NodeClient::new(channel);
    let status = |s: tonic::Status| format!("{:?}: {}", s.code(), s.message());
    let out = match rpc {
        "probe" => {
            let r = id.probe(ProbeRequest {}).await.map_err(status)?.into_inner();
            vec![format!("ready={}", r.ready.unwrap_or(false))]
        }
        "info" => {
            let r = node.node_get_info(NodeGetInfoRequest {}).await.map_err(status)?.into_inner();
            let mut out =
                vec![format!("node_id={}", r.node_id), format!("max_volumes_per_node={}", r.max_volumes_per_node)];
            for (k, v) in r.accessible_topology.map(|t| t.segments).unwrap_or_default() {
                out.push(format!("topology.{k}={v}"));
            }
            out
        }
        "caps" => {
            let r = id.get_plugin_capabilities(GetPluginCapabilitiesRequest {}).await.map_err(status)?.into_inner();
            r.capabilities.iter().map(|c| format!("{:?}", c.r#type)).collect()
        }
        "node-caps" => {
            let r = node.node_get_capabilities(NodeGetCapabilitiesRequest {}).await.map_err(status)?.into_inner();
            r.capabilities.iter().map(|c| format!("{:?}", c.r#type)).collect()
        }
        "stage" => {
            let req = NodeStageVolumeRequest {
                volume_id: w.get("id"),
                publish_context: w.ctx.clone(),
                staging_target_path: w.get("staging"),
                volume_capability: Some(w.capability()?),
                secrets: HashMap::new(),
                volume_context: w.vctx.clone(),
            };
            node.node_stage_volume(req).await.map_err(status)?;
            vec!["staged".into()]
        }
        "unstage" => {
            let req = NodeUnstageVolumeRequest { volume_id: w.get("id"), staging_target_path: w.get("staging") };
            node.node_unstage_volume(req).await.map_err(status)?;
            vec!["unstaged".into()]
        }
        "publish" => {
            let req = NodePublishVolumeRequest {
                volume_id: w.get("id"),
                publish_context: w.ctx.clone(),
                staging_target_path: w.get("staging"),
                target_path: w.get("target"),
                volume_capability: Some(w.capability()?),
                readonly: w.yes("ro"),
                secrets: HashMap::new(),
                volume_context: w.vctx.clone(),
            };
            node.node_publish_volume(req).await.map_err(status)?;
            vec!["published".into()]
        }
        "unpublish" => {
            let req = NodeUnpublishVolumeRequest { volume_id: w.get("id"), target_path: w.get("target") };
            node.node_unpublish_volume(req).await.map_err(status)?;
            vec!["unpublished".into()]
        }
        "stats" => {
            let req = NodeGetVolumeStatsRequest {
                volume_id: w.get("id"),
                volume_path: w.get("path"),
                staging_target_path: w.get("staging"),
            };
            let r = node.node_get_volume_stats(req).await.map_err(status)?.into_inner();
            let mut out: Vec<String> = r
                .usage
                .iter()
                .map(|u| {
                    let unit = if u.unit == volume_usage::Unit::Inodes as i32 { "inodes" } else { "bytes" };
                    format!("{unit}.total={}\n{unit}.available={}\n{unit}.used={}", u.total, u.available, u.used)
                })
                .collect();
            if let Some(c) = r.volume_condition {
                out.push(format!("abnormal={}\nmessage={}", c.abnormal, c.message));
            }
            out
        }
        "expand" => {
            let required: i64 = w.get("required").parse().unwrap_or(0);
            let req = NodeExpandVolumeRequest {
                volume_id: w.get("id"),
                volume_path: w.get("path"),
                capacity_range: Some(CapacityRange { required_bytes: required, limit_bytes: 0 }),
                staging_target_path: w.get("staging"),
                volume_capability: Some(w.capability()?),
                secrets: HashMap::new(),
            };
            let r = node.node_expand_volume(req).await.map_err(status)?.into_inner();
            vec![format!("capacity_bytes={}", r.capacity_bytes)]
        }
        other => {
            return Err(format!(
                "no RPC {other:?} (probe info caps node-caps stage unstage publish unpublish stats expand)"
            ));
        }
    };
    Ok(out)
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut expect = None;
    if args.first().map(String::as_str) == Some("--expect") && args.len() > 1 {
        expect = Some(args[1].clone());
        args.drain(..2);
    }
    if args.len() < 2 {
        eprintln!("usage: fabriq-csi-call [--expect CODE] SOCKET RPC [KEY=VALUE ...]");
        return ExitCode::from(2);
    }
    let socket = fabriq_csi::server::socket_path(&args[0]).unwrap_or_else(|_| PathBuf::from(&args[0]));
    let words = match Words::parse(&args[2..]) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("fabriq-csi-call: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
    let result = rt.block_on(call(socket, &args[1], words));
    match (result, expect) {
        (Ok(lines), None) => {
            for l in lines {
                println!("{l}");
            }
            ExitCode::SUCCESS
        }
        (Ok(_), Some(code)) => {
            eprintln!("fabriq-csi-call: {} succeeded, expected {code}", args[1]);
            ExitCode::FAILURE
        }
        (Err(e), Some(code)) if e.starts_with(&format!("{code}: ")) => {
            println!("{e}");
            ExitCode::SUCCESS
        }
        (Err(e), _) => {
            eprintln!("fabriq-csi-call: {} failed: {e}", args[1]);
            ExitCode::FAILURE
        }
    }
}
