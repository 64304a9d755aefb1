//! `fabriqctl`: the operator's command-line client of the provisioner's API. Tables for
//! people; `--json` prints the API's answers as they are, for scripts. Exit status 0 on
//! success, 1 when the provisioner refused or could not be reached (the message says why),
//! 2 on a usage error.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use fabriq_provisioner::client::{Client, ClientError};
use fabriq_units::human_size;
use serde_json::{Value, json};

#[derive(Parser)]
#[command(version, about = "Manage fabriq volumes and storage nodes through the provisioner")]
struct Cli {
    /// The provisioner's URL.
    #[arg(long, env = "FABRIQ_URL", default_value = "http://127.0.0.1:8080", global = true)]
    url: String,
    /// An API token (admin for changes, read for looking).
    #[arg(long, env = "FABRIQ_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// A file holding the token: a bare token, or the provisioner's tokens file (its first
    /// admin token is used).
    #[arg(long, env = "FABRIQ_TOKEN_FILE", global = true)]
    token_file: Option<PathBuf>,
    /// PEM certificates to trust for an HTTPS provisioner (instead of the system's roots).
    #[arg(long, env = "FABRIQ_CA_FILE", global = true)]
    ca_file: Option<PathBuf>,
    /// Print the API's JSON answers instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Give up on a call after this many seconds.
    #[arg(long, default_value_t = 60, global = true)]
    timeout_s: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The provisioner's health and who leads.
    Status,
    /// Total, free and placeable capacity, overall and per label value.
    Capacity,
    /// Storage nodes.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Volumes and the hosts they are published to.
    #[command(subcommand)]
    Volume(VolumeCommand),
}

#[derive(Subcommand)]
enum NodeCommand {
    /// Every node, its health and capacity.
    List,
    /// One node in detail.
    Get { name: String },
    /// Registers a node (its API is called with the token first).
    Register {
        name: String,
        /// The node API's URL, e.g. http://192.0.2.10:8800.
        #[arg(long)]
        node_url: String,
        /// The node API's token.
        #[arg(long, conflicts_with = "node_token_file")]
        node_token: Option<String>,
        /// A file holding the node API's token (the node's api-token).
        #[arg(long)]
        node_token_file: Option<PathBuf>,
        /// A label, KEY=VALUE (repeat): region, zone, rack, ...
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
    },
    /// Sets (KEY=VALUE) and removes (KEY-) labels.
    Label { name: String, changes: Vec<String> },
    /// No new volumes on the node (its volumes stay).
    Drain { name: String },
    /// New volumes may go to the node again.
    Undrain { name: String },
    /// Forgets a node (refused while volumes are on it, unless --force).
    Remove {
        name: String,
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum VolumeCommand {
    /// Volumes, filtered.
    List {
        #[arg(long)]
        node: Option<String>,
        #[arg(long)]
        pool: Option<String>,
        /// creating, ready, degraded or deleting.
        #[arg(long)]
        state: Option<String>,
        #[arg(long, value_name = "KEY=VALUE")]
        label: Option<String>,
    },
    /// One volume in detail (by name or id).
    Get { name: String },
    /// Creates a volume (the same command again changes nothing).
    Create {
        name: String,
        /// 10GiB, 500GB, or bytes.
        #[arg(long)]
        size: String,
        #[arg(long, default_value_t = 4096)]
        block_size: u32,
        /// Only this node.
        #[arg(long)]
        node: Option<String>,
        /// Only a pool of this name.
        #[arg(long)]
        pool: Option<String>,
        /// A topology segment the node must match, KEY=VALUE[,KEY=VALUE] (repeat: any of them).
        #[arg(long = "topology", value_name = "KEY=VALUE,...")]
        topology: Vec<String>,
        /// A label, KEY=VALUE (repeat).
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
    },
    /// Grows a volume.
    Grow {
        name: String,
        #[arg(long)]
        size: String,
    },
    /// Deletes a volume and its data (refused while published, unless --force).
    Delete {
        name: String,
        #[arg(long)]
        force: bool,
    },
    /// Allows a host (its NQN) on a volume and prints how it connects.
    Publish { name: String, host: String },
    /// Takes a host off a volume (its connections are cut).
    Unpublish { name: String, host: String },
    /// The hosts a volume is published to.
    Hosts { name: String },
}

/// A usage error found after parsing.
#[derive(Debug)]
struct Usage(String);

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(Usage(why))) => {
            eprintln!("fabriqctl: {why}");
            ExitCode::from(2)
        }
        Err(Failure::Client(e)) => {
            eprintln!("fabriqctl: {e}");
            ExitCode::FAILURE
        }
    }
}

enum Failure {
    Usage(Usage),
    Client(ClientError),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        Failure::Client(e)
    }
}

impl From<Usage> for Failure {
    fn from(e: Usage) -> Failure {
        Failure::Usage(e)
    }
}

fn read_token_file(path: &PathBuf) -> Result<String, Usage> {
    let text = std::fs::read_to_string(path).map_err(|e| Usage(format!("{}: {e}", path.display())))?;
    if let Ok(tokens) = fabriq_provisioner::api::parse_tokens(&text)
        && let Some((_, t)) =
            tokens.iter().find(|(s, _)| *s == fabriq_provisioner::api::Scope::Admin).or(tokens.first())
    {
        return Ok(t.clone());
    }
    let token = text.trim();
    if token.is_empty() {
        return Err(Usage(format!("{}: no token in the file", path.display())));
    }
    Ok(token.to_owned())
}

fn pairs(items: &[String], what: &str) -> Result<BTreeMap<String, String>, Usage> {
    items
        .iter()
        .flat_map(|i| i.split(','))
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => Err(Usage(format!("{what} {p:?}: expected KEY=VALUE"))),
        })
        .collect()
}

fn parse_size(text: &str) -> Result<u64, Usage> {
    fabriq_units::parse_size(text).map_err(|e| Usage(format!("size {text:?}: {e}")))
}

fn run(cli: &Cli) -> Result<(), Failure> {
    let token = match (&cli.token, &cli.token_file) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(path)) => Some(read_token_file(path)?),
        (None, None) => None,
    };
    let client = Client::new(&cli.url, token, cli.ca_file.as_deref(), Duration::from_secs(cli.timeout_s))?;
    let out = Out { json: cli.json };
    match &cli.command {
        Command::Status => {
            let v = client.call("GET", "/v1/health", None)?;
            out.show(&v, || {
                let leader = v["leader_url"].as_str().unwrap_or("unknown");
                let role = if v["leader"] == true { "leader" } else { "follower" };
                println!(
                    "status   {}\nversion  {}\nstore    {}\nrole     {role}\nleader   {leader}",
                    s(&v["status"]),
                    s(&v["version"]),
                    s(&v["store"])
                );
            });
        }
        Command::Capacity => {
            let v = client.call("GET", "/v1/capacity", None)?;
            out.show(&v, || {
                println!(
                    "nodes {} ({} reachable)\ntotal {}  free {}  placeable {}  largest volume now {}",
                    v["nodes"],
                    v["reachable_nodes"],
                    bytes(&v["total_bytes"]),
                    bytes(&v["free_bytes"]),
                    bytes(&v["placeable_bytes"]),
                    bytes(&v["largest_free_bytes"])
                );
                let rows: Vec<Vec<String>> = arr(&v["segments"])
                    .iter()
                    .map(|g| {
                        vec![
                            format!("{}={}", s(&g["key"]), s(&g["value"])),
                            g["nodes"].to_string(),
                            bytes(&g["total_bytes"]),
                            bytes(&g["free_bytes"]),
                            bytes(&g["placeable_bytes"]),
                            bytes(&g["largest_free_bytes"]),
                        ]
                    })
                    .collect();
                if !rows.is_empty() {
                    println!();
                    table(&["SEGMENT", "NODES", "TOTAL", "FREE", "PLACEABLE", "LARGEST"], rows);
                }
            });
        }
        Command::Node(cmd) => node(&client, &out, cmd)?,
        Command::Volume(cmd) => volume(&client, &out, cmd)?,
    }
    Ok(())
}

fn node(client: &Client, out: &Out, cmd: &NodeCommand) -> Result<(), Failure> {
    match cmd {
        NodeCommand::List => {
            let v = client.call("GET", "/v1/nodes", None)?;
            out.show(&v, || node_table(arr(&v)));
        }
        NodeCommand::Get { name } => {
            let v = client.call("GET", &format!("/v1/nodes/{name}"), None)?;
            out.show(&v, || node_detail(&v));
        }
        NodeCommand::Register { name, node_url, node_token, node_token_file, labels } => {
            let token = match (node_token, node_token_file) {
                (Some(t), _) => t.clone(),
                (None, Some(path)) => read_token_file(path)?,
                (None, None) => return Err(Usage(String::from("give --node-token or --node-token-file")).into()),
            };
            let body = json!({ "name": name, "url": node_url, "token": token, "labels": pairs(labels, "label")? });
            let v = client.call("POST", "/v1/nodes", Some(&body))?;
            out.show(&v, || node_detail(&v));
        }
        NodeCommand::Label { name, changes } => {
            let current = client.call("GET", &format!("/v1/nodes/{name}"), None)?;
            let mut labels: BTreeMap<String, String> =
                serde_json::from_value(current["labels"].clone()).unwrap_or_default();
            for c in changes {
                match (c.strip_suffix('-'), c.split_once('=')) {
                    (_, Some((k, v))) if !k.is_empty() => {
                        labels.insert(k.to_owned(), v.to_owned());
                    }
                    (Some(k), None) if !k.is_empty() => {
                        labels.remove(k);
                    }
                    _ => return Err(Usage(format!("label change {c:?}: expected KEY=VALUE or KEY-")).into()),
                }
            }
            let v = client.call("PATCH", &format!("/v1/nodes/{name}"), Some(&json!({ "labels": labels })))?;
            out.show(&v, || node_detail(&v));
        }
        NodeCommand::Drain { name } | NodeCommand::Undrain { name } => {
            let draining = matches!(cmd, NodeCommand::Drain { .. });
            let v = client.call("PATCH", &format!("/v1/nodes/{name}"), Some(&json!({ "draining": draining })))?;
            out.show(&v, || println!("node {name}: {}", s(&v["state"])));
        }
        NodeCommand::Remove { name, force } => {
            client.call("DELETE", &format!("/v1/nodes/{name}?force={force}"), None)?;
            out.show(&Value::Null, || println!("node {name} removed"));
        }
    }
    Ok(())
}

fn volume(client: &Client, out: &Out, cmd: &VolumeCommand) -> Result<(), Failure> {
    match cmd {
        VolumeCommand::List { node, pool, state, label } => {
            let mut query = Vec::new();
            for (k, v) in [("node", node), ("pool", pool), ("state", state), ("label", label)] {
                if let Some(v) = v {
                    query.push(format!("{k}={}", encode(v)));
                }
            }
            let mut all = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let mut q = query.clone();
                q.push(String::from("limit=1000"));
                if let Some(a) = &after {
                    q.push(format!("after={}", encode(a)));
                }
                let page = client.call("GET", &format!("/v1/volumes?{}", q.join("&")), None)?;
                all.extend(arr(&page["volumes"]).iter().cloned());
                match page["next_after"].as_str() {
                    Some(next) => after = Some(next.to_owned()),
                    None => break,
                }
            }
            let v = Value::Array(all);
            out.show(&v, || {
                let rows = arr(&v)
                    .iter()
                    .map(|x| {
                        vec![
                            s(&x["name"]),
                            s(&x["state"]),
                            bytes(&x["size_bytes"]),
                            s(&x["node"]),
                            s(&x["pool"]),
                            arr(&x["hosts"]).len().to_string(),
                            s(&x["id"]),
                        ]
                    })
                    .collect();
                table(&["NAME", "STATE", "SIZE", "NODE", "POOL", "HOSTS", "ID"], rows);
            });
        }
        VolumeCommand::Get { name } => {
            let v = client.call("GET", &format!("/v1/volumes/{name}"), None)?;
            out.show(&v, || volume_detail(&v));
        }
        VolumeCommand::Create { name, size, block_size, node, pool, topology, labels } => {
            let topology: Vec<BTreeMap<String, String>> =
                topology.iter().map(|t| pairs(std::slice::from_ref(t), "topology")).collect::<Result<_, _>>()?;
            let mut requirements = json!({ "topology": topology });
            if let Some(n) = node {
                requirements["node"] = json!(n);
            }
            if let Some(p) = pool {
                requirements["pool"] = json!(p);
            }
            let body = json!({
                "name": name,
                "size_bytes": parse_size(size)?,
                "block_size": block_size,
                "requirements": requirements,
                "labels": pairs(labels, "label")?,
            });
            let v = client.call("POST", "/v1/volumes", Some(&body))?;
            out.show(&v, || volume_detail(&v));
        }
        VolumeCommand::Grow { name, size } => {
            let body = json!({ "size_bytes": parse_size(size)? });
            let v = client.call("PATCH", &format!("/v1/volumes/{name}"), Some(&body))?;
            out.show(&v, || volume_detail(&v));
        }
        VolumeCommand::Delete { name, force } => {
            client.call("DELETE", &format!("/v1/volumes/{name}?force={force}"), None)?;
            out.show(&Value::Null, || println!("volume {name} deleted"));
        }
        VolumeCommand::Publish { name, host } => {
            let v = client.call("PUT", &format!("/v1/volumes/{name}/hosts/{host}"), None)?;
            out.show(&v, || {
                println!("volume {name} published to {host}");
                for p in arr(&v["paths"]) {
                    println!(
                        "  nvme connect -t {} -a {} -s {} -n {}",
                        s(&p["transport"]),
                        s(&p["address"]),
                        p["port"],
                        s(&v["nqn"])
                    );
                }
            });
        }
        VolumeCommand::Unpublish { name, host } => {
            client.call("DELETE", &format!("/v1/volumes/{name}/hosts/{host}"), None)?;
            out.show(&Value::Null, || println!("volume {name} unpublished from {host}"));
        }
        VolumeCommand::Hosts { name } => {
            let v = client.call("GET", &format!("/v1/volumes/{name}/hosts"), None)?;
            out.show(&v, || {
                for h in arr(&v["hosts"]) {
                    println!("{}", s(h));
                }
            });
        }
    }
    Ok(())
}

/// Percent-encodes a query value (names, states and labels are ASCII; `=` and `&` are not
/// left bare).
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }
        })
        .collect()
}

struct Out {
    json: bool,
}

impl Out {
    /// `--json`: the answer as it is; otherwise what `people` prints.
    fn show(&self, value: &Value, people: impl FnOnce()) {
        if self.json {
            if !value.is_null() {
                println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
            }
        } else {
            people();
        }
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::from("-"),
        other => other.to_string(),
    }
}

fn arr(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn bytes(v: &Value) -> String {
    v.as_u64().map_or_else(|| String::from("-"), human_size)
}

fn labels(v: &Value) -> String {
    let text: Vec<String> =
        v.as_object().map(|m| m.iter().map(|(k, v)| format!("{k}={}", s(v))).collect()).unwrap_or_default();
    if text.is_empty() { String::from("-") } else { text.join(",") }
}

fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row);
    }
}

fn node_table(nodes: &[Value]) {
    let rows = nodes
        .iter()
        .map(|n| {
            vec![
                s(&n["name"]),
                s(&n["state"]),
                s(&n["health"]),
                bytes(&n["capacity_bytes"]),
                bytes(&n["free_bytes"]),
                n["volumes"].to_string(),
                labels(&n["labels"]),
                s(&n["url"]),
            ]
        })
        .collect();
    table(&["NAME", "STATE", "HEALTH", "CAPACITY", "FREE", "VOLUMES", "LABELS", "URL"], rows);
}

fn node_detail(n: &Value) {
    println!("name      {}", s(&n["name"]));
    println!("url       {}", s(&n["url"]));
    println!("state     {}", s(&n["state"]));
    println!(
        "health    {}{}",
        s(&n["health"]),
        n["last_error"].as_str().map(|e| format!(" ({e})")).unwrap_or_default()
    );
    println!("labels    {}", labels(&n["labels"]));
    println!("capacity  {}  free {}", bytes(&n["capacity_bytes"]), bytes(&n["free_bytes"]));
    println!("volumes   {}", n["volumes"]);
    for p in arr(&n["pools"]) {
        println!(
            "pool      {}  capacity {}  free {}",
            s(&p["name"]),
            bytes(&p["capacity_bytes"]),
            bytes(&p["free_bytes"])
        );
    }
    for o in arr(&n["orphans"]) {
        println!("orphan    {}", s(o));
    }
}

fn volume_detail(v: &Value) {
    println!("name      {}", s(&v["name"]));
    println!("id        {}", s(&v["id"]));
    println!(
        "state     {}{}",
        s(&v["state"]),
        v["degraded_reason"].as_str().map(|e| format!(" ({e})")).unwrap_or_default()
    );
    println!("size      {}  (capacity {})", bytes(&v["size_bytes"]), bytes(&v["capacity_bytes"]));
    println!("block     {}", v["block_size"]);
    println!("node      {}  pool {}", s(&v["node"]), s(&v["pool"]));
    println!("nqn       {}", s(&v["nqn"]));
    println!("labels    {}", labels(&v["labels"]));
    let hosts: Vec<String> = arr(&v["hosts"]).iter().map(s).collect();
    println!("hosts     {}", if hosts.is_empty() { String::from("-") } else { hosts.join(", ") });
}
