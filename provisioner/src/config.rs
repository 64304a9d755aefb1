//! The provisioner's configuration: a TOML file (`systemd/provisioner.toml` is the
//! commented example), every field optional, unknown fields refused, every value checked
//! before the daemon starts (an error names the file, the line and the field).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub provisioner: ProvisionerSection,
    pub api: ApiSection,
    pub store: StoreSection,
}

/// `[provisioner]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProvisionerSection {
    /// Where the redb file and the generated token file live. Default `./fabriq-provisioner-data`.
    pub data_dir: PathBuf,
    /// Time between reconciler passes (each change also starts one). Default 5000; 100..=600000.
    pub reconcile_interval_ms: u64,
    /// Longest call to a node's API. Default 10000; 100..=120000.
    pub node_timeout_ms: u64,
}

impl Default for ProvisionerSection {
    fn default() -> Self {
        ProvisionerSection {
            data_dir: PathBuf::from("fabriq-provisioner-data"),
            reconcile_interval_ms: 5000,
            node_timeout_ms: 10_000,
        }
    }
}

/// `[api]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSection {
    /// Default `127.0.0.1:8080`.
    pub address: SocketAddr,
    /// How other provisioners and clients reach this one (what a follower's `421
    /// not_leader` names). Default: `http(s)://<address>`.
    pub advertise_url: Option<String>,
    /// Lines `admin <token>` or `read <token>` (`#` comments). Default
    /// `<data_dir>/api-tokens`, generated with one admin token at the first start.
    pub tokens_file: Option<PathBuf>,
    /// Both set: HTTPS (rustls) with this PEM certificate chain and private key.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// Largest request body. Default 64 KiB; 1 KiB..=16 MiB.
    #[serde(deserialize_with = "size")]
    pub body_limit_bytes: u64,
    /// A request not answered within this is answered `503 timeout`. Default 30000; 100..=600000.
    pub request_timeout_ms: u64,
}

impl Default for ApiSection {
    fn default() -> Self {
        ApiSection {
            address: SocketAddr::from(([127, 0, 0, 1], 8080)),
            advertise_url: None,
            tokens_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            body_limit_bytes: 64 << 10,
            request_timeout_ms: 30_000,
        }
    }
}

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// `redb` (default: one provisioner) or `etcd` (several, one of them leading).
    pub backend: Backend,
    /// The redb file. Default `<data_dir>/state.redb`.
    pub path: Option<PathBuf>,
    /// etcd client URLs. Default `["http://127.0.0.1:2379"]`.
    pub endpoints: Vec<String>,
    /// Where the keys live in etcd. Default `/fabriq/provisioner/`.
    pub prefix: String,
    /// The leader lease: a leader that stops renewing loses it after this. Default 10; 2..=300.
    pub lease_ttl_s: u64,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            backend: Backend::Redb,
            path: None,
            endpoints: vec![String::from("http://127.0.0.1:2379")],
            prefix: String::from("/fabriq/provisioner/"),
            lease_ttl_s: 10,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Redb,
    Etcd,
}

fn size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Number(n) => Ok(n),
        Raw::Text(t) => {
            fabriq_units::parse_size(&t).map_err(|e| serde::de::Error::custom(format!("invalid size {t:?}: {e}")))
        }
    }
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: field `{field}`: {why}")]
    Value { path: String, field: &'static str, why: String },
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Config::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, path: &str) -> Result<Config, ConfigError> {
        let config: Config =
            toml::from_str(text).map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.to_string() })?;
        config.check(path)?;
        Ok(config)
    }

    fn check(&self, path: &str) -> Result<(), ConfigError> {
        let bad = |field, why: String| Err(ConfigError::Value { path: path.to_owned(), field, why });
        let p = &self.provisioner;
        if !(100..=600_000).contains(&p.reconcile_interval_ms) {
            return bad("provisioner.reconcile_interval_ms", String::from("must be 100..=600000"));
        }
        if !(100..=120_000).contains(&p.node_timeout_ms) {
            return bad("provisioner.node_timeout_ms", String::from("must be 100..=120000"));
        }
        let a = &self.api;
        if !((1 << 10)..=(16 << 20)).contains(&a.body_limit_bytes) {
            return bad("api.body_limit_bytes", String::from("must be 1KiB..=16MiB"));
        }
        if !(100..=600_000).contains(&a.request_timeout_ms) {
            return bad("api.request_timeout_ms", String::from("must be 100..=600000"));
        }
        if a.tls_cert_file.is_some() != a.tls_key_file.is_some() {
            return bad("api.tls_cert_file", String::from("tls_cert_file and tls_key_file go together"));
        }
        if let Some(url) = &a.advertise_url
            && let Err(e) = crate::model::check_url(url)
        {
            return bad("api.advertise_url", e.to_string());
        }
        let s = &self.store;
        if s.backend == Backend::Etcd {
            if s.endpoints.is_empty() {
                return bad("store.endpoints", String::from("etcd needs at least one endpoint"));
            }
            if let Some(e) = s.endpoints.iter().find(|e| crate::model::check_url(e).is_err()) {
                return bad("store.endpoints", format!("{e:?} is not http://HOST:PORT"));
            }
            if !(2..=300).contains(&s.lease_ttl_s) {
                return bad("store.lease_ttl_s", String::from("must be 2..=300"));
            }
            if s.prefix.is_empty() || !s.prefix.ends_with('/') {
                return bad("store.prefix", String::from("must end with '/'"));
            }
        }
        Ok(())
    }

    pub fn tls(&self) -> bool {
        self.api.tls_cert_file.is_some()
    }

    /// What followers name as the leader's URL.
    pub fn advertise_url(&self, bound: SocketAddr) -> String {
        match &self.api.advertise_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("{}://{bound}", if self.tls() { "https" } else { "http" }),
        }
    }

    pub fn tokens_file(&self) -> PathBuf {
        self.api.tokens_file.clone().unwrap_or_else(|| self.provisioner.data_dir.join("api-tokens"))
    }

    pub fn redb_path(&self) -> PathBuf {
        self.store.path.clone().unwrap_or_else(|| self.provisioner.data_dir.join("state.redb"))
    }

    pub fn reconcile_interval(&self) -> Duration {
        Duration::from_millis(self.provisioner.reconcile_interval_ms)
    }

    pub fn node_timeout(&self) -> Duration {
        Duration::from_millis(self.provisioner.node_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let c = Config::parse("", "t.toml").unwrap();
        assert_eq!(c, Config::default());
        let c = Config::parse(
            "[api]\nbody_limit_bytes = \"4KiB\"\naddress = \"0.0.0.0:9090\"\n[store]\nbackend = \"etcd\"\nendpoints = [\"http://10.0.0.1:2379\"]\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.api.body_limit_bytes, 4096);
        assert_eq!(c.store.backend, Backend::Etcd);
        assert_eq!(c.advertise_url("0.0.0.0:9090".parse().unwrap()), "http://0.0.0.0:9090");
    }

    #[test]
    fn errors_name_the_field() {
        let e = Config::parse("[api]\ncolour = 1\n", "t.toml").unwrap_err().to_string();
        assert!(e.contains("t.toml") && e.contains("colour"), "{e}");
        let e = Config::parse("[api]\ntls_cert_file = \"c.pem\"\n", "t.toml").unwrap_err().to_string();
        assert!(e.contains("tls_key_file"), "{e}");
        let e = Config::parse("[api]\nbody_limit_bytes = \"1G\"\n", "t.toml").unwrap_err().to_string();
        assert!(e.contains("ambiguous"), "{e}");
        let e = Config::parse("[store]\nbackend = \"etcd\"\nlease_ttl_s = 1\n", "t.toml").unwrap_err().to_string();
        assert!(e.contains("lease_ttl_s"), "{e}");
    }
}
