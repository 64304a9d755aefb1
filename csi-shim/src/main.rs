//! `fabriq-csi`: the CSI driver's process. `--mode controller` runs beside the Kubernetes
//! sidecars (csi-provisioner, csi-attacher, csi-resizer) and talks to fabriq-provisioner;
//! `--mode node` runs on every node (DaemonSet) and attaches volumes with the kernel's
//! NVMe-oF initiator; `--mode all` does both (a single machine, tests). Every flag has an
//! environment variable, so a Secret can carry the provisioner's URL and token.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};

use fabriq_csi::controller::ControllerService;
use fabriq_csi::identity::{IdentityService, Probe};
use fabriq_csi::node::{self, NodeService, fabrics::Sysfs};
use fabriq_csi::provisioner::Provisioner;
use fabriq_csi::rest::Rest;
use fabriq_csi::server::{self, Services};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Controller,
    Node,
    All,
}

#[derive(Debug, Parser)]
#[command(name = "fabriq-csi", version, about = "fabriq's CSI driver (csi.fabriq.dev)")]
struct Args {
    /// The gRPC endpoint: unix:///csi/csi.sock, unix:/path or /path.
    #[arg(long, env = "CSI_ENDPOINT", default_value = "unix:///csi/csi.sock")]
    endpoint: String,
    /// Which services to serve.
    #[arg(long, env = "FABRIQ_CSI_MODE", value_enum, default_value = "all")]
    mode: Mode,
    /// fabriq-provisioner's base URL (controller).
    #[arg(long, env = "FABRIQ_PROVISIONER_URL")]
    provisioner_url: Option<String>,
    /// The provisioner's bearer token (prefer --token-file: the environment is visible to
    /// whoever can read the process's environment).
    #[arg(long, env = "FABRIQ_PROVISIONER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A file holding the provisioner's bearer token (a mounted Secret).
    #[arg(long, env = "FABRIQ_PROVISIONER_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Time-out of each provisioner call, in seconds.
    #[arg(long, env = "FABRIQ_PROVISIONER_TIMEOUT_S", default_value_t = 30)]
    provisioner_timeout_s: u64,
    /// The host NQN file (node id), created if missing.
    #[arg(long, env = "FABRIQ_CSI_HOSTNQN_FILE", default_value = "/etc/nvme/hostnqn")]
    hostnqn_file: PathBuf,
    /// The host id file, created if missing.
    #[arg(long, env = "FABRIQ_CSI_HOSTID_FILE", default_value = "/etc/nvme/hostid")]
    hostid_file: PathBuf,
    /// Where the node keeps a record of each staged volume.
    #[arg(long, env = "FABRIQ_CSI_STATE_DIR", default_value = "/var/lib/kubelet/plugins/csi.fabriq.dev/volumes")]
    state_dir: PathBuf,
    /// A topology label of this node, KEY=VALUE (repeat; comma-separated in the environment).
    /// Answered as topology.fabriq.dev/KEY; storage nodes carry the same labels.
    #[arg(long = "topology", env = "FABRIQ_CSI_TOPOLOGY", value_delimiter = ',')]
    topology: Vec<String>,
    /// The most volumes this node takes (0: no limit).
    #[arg(long, env = "FABRIQ_CSI_MAX_VOLUMES", default_value_t = 0)]
    max_volumes: i64,
    /// The connect's ctrl_loss_tmo in seconds (-1: reconnect forever).
    #[arg(long, env = "FABRIQ_CSI_CTRL_LOSS_TMO", default_value_t = -1, allow_negative_numbers = true)]
    ctrl_loss_tmo: i32,
    /// The connect's reconnect_delay in seconds.
    #[arg(long, env = "FABRIQ_CSI_RECONNECT_DELAY", default_value_t = 2)]
    reconnect_delay: u32,
    /// The connect's nr_io_queues (0: one per CPU).
    #[arg(long, env = "FABRIQ_CSI_NR_IO_QUEUES", default_value_t = 0)]
    nr_io_queues: u32,
    /// How long a stage waits for the block device, in seconds.
    #[arg(long, env = "FABRIQ_CSI_DEVICE_TIMEOUT_S", default_value_t = 60)]
    device_timeout_s: u64,
    /// The sysfs root (tests).
    #[arg(long, env = "FABRIQ_CSI_SYSFS", default_value = "/sys", hide = true)]
    sysfs: PathBuf,
    /// The device directory (tests).
    #[arg(long, env = "FABRIQ_CSI_DEV", default_value = "/dev", hide = true)]
    dev: PathBuf,
}

fn topology(labels: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for l in labels.iter().filter(|l| !l.trim().is_empty()) {
        let Some((k, v)) = l.split_once('=') else { bail!("--topology {l:?}: KEY=VALUE expected") };
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() || v.is_empty() || k.contains('/') {
            bail!("--topology {l:?}: KEY=VALUE with a key without '/' expected (the driver adds topology.fabriq.dev/)");
        }
        out.insert(k.to_owned(), v.to_owned());
    }
    Ok(out)
}

fn token(args: &Args) -> anyhow::Result<String> {
    match (&args.token_file, &args.token) {
        (Some(path), _) => Ok(std::fs::read_to_string(path)
            .with_context(|| format!("reading the token file {}", path.display()))?
            .trim()
            .to_owned()),
        (None, Some(t)) => Ok(t.trim().to_owned()),
        (None, None) => bail!("the controller needs the provisioner's token: --token-file or FABRIQ_PROVISIONER_TOKEN"),
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let socket = server::socket_path(&args.endpoint)?;
    let controller_on = args.mode != Mode::Node;
    let node_on = args.mode != Mode::Controller;

    let mut probes: Vec<Probe> = Vec::new();
    let controller = if controller_on {
        let url =
            args.provisioner_url.clone().context("the controller needs --provisioner-url (FABRIQ_PROVISIONER_URL)")?;
        let rest: Arc<dyn Provisioner> =
            Arc::new(Rest::new(&url, &token(&args)?, Duration::from_secs(args.provisioner_timeout_s)));
        let p = Arc::clone(&rest);
        probes.push(Arc::new(move || p.health().map_err(|e| e.to_string())));
        Some(ControllerService::new(rest))
    } else {
        None
    };
    let node = if node_on {
        let sysfs = Sysfs { fabrics: args.dev.join("nvme-fabrics"), root: args.sysfs.clone(), dev: args.dev.clone() };
        let fabrics = sysfs.fabrics.clone();
        probes.push(Arc::new(move || {
            if fabrics.exists() {
                Ok(())
            } else {
                Err(format!("{} is missing: load the nvme-fabrics and nvme-tcp modules", fabrics.display()))
            }
        }));
        let cfg = node::Config {
            sysfs,
            hostnqn_path: args.hostnqn_file.clone(),
            hostid_path: args.hostid_file.clone(),
            state_dir: args.state_dir.clone(),
            max_volumes: args.max_volumes,
            topology: topology(&args.topology)?,
            ctrl_loss_tmo_s: args.ctrl_loss_tmo,
            reconnect_delay_s: args.reconnect_delay,
            nr_io_queues: args.nr_io_queues,
            device_timeout: Duration::from_secs(args.device_timeout_s),
        };
        let n = NodeService::new(cfg).context("reading the host identity")?;
        tracing::info!(node_id = n.node_id(), "node service");
        Some(n)
    } else {
        None
    };
    let probe: Probe = Arc::new(move || probes.iter().try_for_each(|p| p()));
    let services = Services { identity: IdentityService::new(controller_on, probe), controller, node };

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("shutting down");
        };
        server::serve(&socket, services, shutdown).await
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topology_labels() {
        let t = topology(&["zone=a".into(), " rack = r1 ".into(), "".into()]).unwrap();
        assert_eq!(t.into_iter().collect::<Vec<_>>(), vec![("rack".into(), "r1".into()), ("zone".into(), "a".into())]);
        assert!(topology(&["zone".into()]).is_err());
        assert!(topology(&["topology.fabriq.dev/zone=a".into()]).is_err());
        Args::try_parse_from(["fabriq-csi", "--mode", "node", "--ctrl-loss-tmo", "-1"]).unwrap();
    }
}
