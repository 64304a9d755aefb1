//! A client of one storage node's REST API (fabriq-target's node API, `openapi/target.json`):
//! the calls the provisioner makes, blocking, with bounded time-outs.
//!
//! Every failure is one of three kinds, because the callers act on the difference:
//! - [`CallError::Refused`]: the node answered 4xx or 507. Definite: nothing changed on the
//!   node (its API checks before it acts), so the caller may undo, or try elsewhere.
//! - [`CallError::Unreachable`] and [`CallError::Failed`] (5xx other than 507): the outcome is
//!   unknown (the node may have acted); the caller leaves its intent for a retry, never
//!   undoes on the strength of it.
//! - [`CallError::BadAnswer`]: the node answered something this client cannot read.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// A node's pool (the fields of `PoolInfoView` the provisioner uses).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Pool {
    pub name: String,
    pub capacity_bytes: u64,
    pub free_bytes: u64,
    pub extent_bytes: u64,
    pub volumes: usize,
    /// `online`, or `failed` (the node could not open it: its volumes are not served and
    /// every figure is 0). Nodes older than the field are online.
    #[serde(default = "online")]
    pub state: String,
    /// Why a failed pool could not be opened.
    #[serde(default)]
    pub error: Option<String>,
}

fn online() -> String {
    String::from("online")
}

/// A node's access list for a volume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Access {
    #[serde(default)]
    pub allow_any_host: bool,
    #[serde(default)]
    pub hosts: Vec<String>,
}

/// A node's volume (the fields of `VolumeInfo` the provisioner uses).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Volume {
    pub id: String,
    pub name: String,
    pub pool: String,
    pub size_bytes: u64,
    pub block_size: u32,
    /// `ready` or `deleting`.
    pub state: String,
    pub nqn: String,
    #[serde(default)]
    pub access: Access,
}

/// A node's listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Listener {
    pub transport: String,
    pub advertised: String,
    pub discovery_only: bool,
}

/// Everything the provisioner reads from a node in one look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub pools: Vec<Pool>,
    pub volumes: Vec<Volume>,
    pub listeners: Vec<Listener>,
}

/// Why a call failed (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("node {node} cannot be reached: {why}")]
    Unreachable { node: String, why: String },
    #[error("node {node} refused ({status} {code}): {message}")]
    Refused { node: String, status: u16, code: String, message: String },
    #[error("node {node} failed ({status} {code}): {message}")]
    Failed { node: String, status: u16, code: String, message: String },
    #[error("node {node} answered what the provisioner cannot read: {why}")]
    BadAnswer { node: String, why: String },
}

impl CallError {
    /// A definite refusal with this code.
    pub fn refused_with(&self, wanted: &str) -> bool {
        matches!(self, CallError::Refused { code, .. } if code == wanted)
    }

    pub fn is_refusal(&self) -> bool {
        matches!(self, CallError::Refused { .. })
    }
}

/// A client of one node.
#[derive(Clone)]
pub struct NodeClient {
    name: String,
    url: String,
    token: String,
    agent: ureq::Agent,
}

impl NodeClient {
    pub fn new(name: &str, url: &str, token: &str, timeout: Duration) -> NodeClient {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(2).min(timeout)))
            .timeout_global(Some(timeout))
            .build()
            .into();
        NodeClient { name: name.to_owned(), url: url.trim_end_matches('/').to_owned(), token: token.to_owned(), agent }
    }

    /// One request; `Ok((status, body))` for 2xx, the error kinds above otherwise.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value), CallError> {
        let url = format!("{}{path}", self.url);
        let auth = format!("Bearer {}", self.token);
        let response = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("Authorization", &auth).call(),
            ("DELETE", _) => self.agent.delete(&url).header("Authorization", &auth).call(),
            ("PUT", _) => self.agent.put(&url).header("Authorization", &auth).send_empty(),
            ("POST", Some(b)) => self.agent.post(&url).header("Authorization", &auth).send_json(b),
            ("PATCH", Some(b)) => self.agent.patch(&url).header("Authorization", &auth).send_json(b),
            other => unreachable!("no such call: {other:?}"),
        };
        let response = response
            .map_err(|e| CallError::Unreachable { node: self.name.clone(), why: format!("{method} {url}: {e}") })?;
        let status = response.status().as_u16();
        let text = response
            .into_body()
            .read_to_string()
            .map_err(|e| CallError::Unreachable { node: self.name.clone(), why: format!("{method} {url}: {e}") })?;
        let value =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        if (200..300).contains(&status) {
            return Ok((status, value));
        }
        let code = value["code"].as_str().unwrap_or("unknown").to_owned();
        let message = value["message"].as_str().map_or_else(|| value.to_string(), str::to_owned);
        let node = self.name.clone();
        if (400..500).contains(&status) || status == 507 {
            Err(CallError::Refused { node, status, code, message })
        } else {
            Err(CallError::Failed { node, status, code, message })
        }
    }

    fn parse<T: DeserializeOwned>(&self, value: Value) -> Result<T, CallError> {
        serde_json::from_value(value).map_err(|e| CallError::BadAnswer { node: self.name.clone(), why: e.to_string() })
    }

    pub fn pools(&self) -> Result<Vec<Pool>, CallError> {
        let (_, v) = self.call("GET", "/v1/pools", None)?;
        self.parse(v)
    }

    pub fn volumes(&self) -> Result<Vec<Volume>, CallError> {
        let (_, v) = self.call("GET", "/v1/volumes", None)?;
        self.parse(v)
    }

    pub fn listeners(&self) -> Result<Vec<Listener>, CallError> {
        let (_, v) = self.call("GET", "/v1/listeners", None)?;
        self.parse(v)
    }

    /// Pools, volumes and listeners.
    pub fn observe(&self) -> Result<Observation, CallError> {
        Ok(Observation { pools: self.pools()?, volumes: self.volumes()?, listeners: self.listeners()? })
    }

    /// Creates (or finds, the node being idempotent by name) a volume.
    pub fn create_volume(
        &self,
        name: &str,
        size_bytes: u64,
        block_size: u32,
        pool: &str,
        hosts: &[String],
    ) -> Result<Volume, CallError> {
        let body =
            json!({ "name": name, "size_bytes": size_bytes, "block_size": block_size, "pool": pool, "hosts": hosts });
        let (_, v) = self.call("POST", "/v1/volumes", Some(&body))?;
        self.parse(v)
    }

    /// Grows a volume to at least `size_bytes`.
    pub fn grow_volume(&self, id: &str, size_bytes: u64) -> Result<Volume, CallError> {
        let (_, v) = self.call("PATCH", &format!("/v1/volumes/{id}"), Some(&json!({ "size_bytes": size_bytes })))?;
        self.parse(v)
    }

    /// Closes a volume to hosts not on its list.
    pub fn close_to_any_host(&self, id: &str) -> Result<(), CallError> {
        self.call("PATCH", &format!("/v1/volumes/{id}"), Some(&json!({ "allow_any_host": false })))?;
        Ok(())
    }

    /// Deletes a volume (forced: hosts are disconnected). A volume already gone is done.
    pub fn delete_volume(&self, id: &str) -> Result<(), CallError> {
        match self.call("DELETE", &format!("/v1/volumes/{id}?force=true"), None) {
            Ok(_) => Ok(()),
            Err(e) if e.refused_with("volume_not_found") => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub fn allow_host(&self, id: &str, host: &str) -> Result<(), CallError> {
        self.call("PUT", &format!("/v1/volumes/{id}/hosts/{host}"), None)?;
        Ok(())
    }

    /// Revokes a host; a volume already gone has no hosts.
    pub fn revoke_host(&self, id: &str, host: &str) -> Result<(), CallError> {
        match self.call("DELETE", &format!("/v1/volumes/{id}/hosts/{host}"), None) {
            Ok(_) => Ok(()),
            Err(e) if e.refused_with("volume_not_found") => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Pools by name.
pub fn pools_by_name(pools: &[Pool]) -> BTreeMap<&str, &Pool> {
    pools.iter().map(|p| (p.name.as_str(), p)).collect()
}
