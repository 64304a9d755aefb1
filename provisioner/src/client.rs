//! A blocking client of the provisioner's API, for `fabriqctl` and scripts: a bearer token,
//! HTTPS with the system's roots or a given CA file, and `421 not_leader` followed once to
//! the leader the answer names.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the provisioner at {url}: {why}")]
    Connect { url: String, why: String },
    #[error("{message} ({status} {code})")]
    Api { status: u16, code: String, message: String },
    #[error("{path}: {why}")]
    CaFile { path: String, why: String },
}

/// A client of one provisioner (or of its leader, after a redirect).
pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    /// `url`: `http(s)://host:port`; `ca_file`: PEM certificates to trust instead of the
    /// system's (a provisioner with a certificate of its own CA).
    pub fn new(
        url: &str,
        token: Option<String>,
        ca_file: Option<&Path>,
        timeout: Duration,
    ) -> Result<Client, ClientError> {
        let mut config = ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(timeout));
        if let Some(path) = ca_file {
            let ca_err = |why: String| ClientError::CaFile { path: path.display().to_string(), why };
            let pem = std::fs::read(path).map_err(|e| ca_err(e.to_string()))?;
            let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<Result<_, _>>()
                .map_err(|e| ca_err(e.to_string()))?;
            if certs.is_empty() {
                return Err(ca_err(String::from("no certificate in the file")));
            }
            let tls =
                ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::Specific(Arc::new(certs))).build();
            config = config.tls_config(tls);
        }
        Ok(Client { base: url.trim_end_matches('/').to_owned(), token, agent: config.build().into() })
    }

    /// One call; `Ok(body)` for 2xx (`Null` when empty), the API's error otherwise.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, ClientError> {
        match self.call_at(&self.base, method, path, body)? {
            Answer::Done(value) => Ok(value),
            Answer::Leader(url) => match self.call_at(&url, method, path, body)? {
                Answer::Done(value) => Ok(value),
                Answer::Leader(again) => Err(ClientError::Api {
                    status: 421,
                    code: String::from("not_leader"),
                    message: format!("{url} is not the leader either (it names {again}); retry in a moment"),
                }),
            },
        }
    }

    fn call_at(&self, base: &str, method: &str, path: &str, body: Option<&Value>) -> Result<Answer, ClientError> {
        let url = format!("{base}{path}");
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let response = match method {
            "GET" | "DELETE" => {
                let mut req = if method == "GET" { self.agent.get(&url) } else { self.agent.delete(&url) };
                if let Some(auth) = &auth {
                    req = req.header("Authorization", auth);
                }
                req.call()
            }
            _ => {
                let mut req = match method {
                    "POST" => self.agent.post(&url),
                    "PUT" => self.agent.put(&url),
                    _ => self.agent.patch(&url),
                };
                if let Some(auth) = &auth {
                    req = req.header("Authorization", auth);
                }
                match body {
                    Some(b) => req.send_json(b),
                    None => req.send_empty(),
                }
            }
        };
        let response = response.map_err(|e| ClientError::Connect { url: url.clone(), why: e.to_string() })?;
        let status = response.status().as_u16();
        let text = response
            .into_body()
            .read_to_string()
            .map_err(|e| ClientError::Connect { url: url.clone(), why: e.to_string() })?;
        let value =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        if (200..300).contains(&status) {
            return Ok(Answer::Done(value));
        }
        if status == 421
            && let Some(leader) = value["leader_url"].as_str()
            && leader.trim_end_matches('/') != base
        {
            return Ok(Answer::Leader(leader.trim_end_matches('/').to_owned()));
        }
        Err(ClientError::Api {
            status,
            code: value["code"].as_str().unwrap_or("unknown").to_owned(),
            message: value["message"].as_str().map_or_else(|| value.to_string(), str::to_owned),
        })
    }
}

enum Answer {
    Done(Value),
    Leader(String),
}
