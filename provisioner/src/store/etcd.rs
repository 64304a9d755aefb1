//! The etcd store, for several provisioners sharing one state: etcd v3's JSON gateway over
//! HTTP (`/v3/kv/range`, `/v3/kv/txn`, `/v3/lease/*`), so the build needs no protobuf
//! toolchain. Keys and values travel base64-encoded; 64-bit numbers as JSON strings.
//!
//! Every key lives under a prefix (default `/fabriq/provisioner/`), so one etcd can serve
//! other users. The leader key (`<prefix>leader`) is written only by [`crate::leader`]'s
//! election, through [`EtcdStore::campaign`], attached to a lease.
//!
//! Fencing: while this provisioner leads, [`EtcdStore::set_fence`] holds the exact value of
//! the leader key it wrote; every transaction then also compares that key's value, inside
//! etcd, with it. A provisioner whose lease expired (a pause, a partition) and whose key was
//! taken over cannot write any more: its transactions fail with [`StoreError::Fenced`]. With
//! no fence set, writes are refused outright (followers never write).
//!
//! Invariants: a request goes to the endpoints in order until one answers (a connection
//! failure moves on, an answer does not); reads are etcd's linearizable reads.

use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use super::{Change, Entry, Result, Store, StoreError, Txn};

/// Talks to etcd (see the module documentation).
pub struct EtcdStore {
    endpoints: Vec<String>,
    prefix: String,
    agent: ureq::Agent,
    fence: Mutex<Option<Vec<u8>>>,
}

fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

fn unb64(text: &Value) -> Result<Vec<u8>> {
    let text = text.as_str().unwrap_or("");
    B64.decode(text).map_err(|e| StoreError::Backend(format!("etcd sent bad base64: {e}")))
}

/// etcd's 64-bit numbers come as strings (and are omitted when zero).
fn num(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_u64().unwrap_or(0),
        _ => 0,
    }
}

/// The smallest key greater than every key starting with `prefix`.
fn range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl EtcdStore {
    /// `endpoints`: client URLs (`http://host:2379`); `prefix`: where the keys live.
    pub fn new(endpoints: Vec<String>, prefix: &str, request_timeout: Duration) -> EtcdStore {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(2)))
            .timeout_global(Some(request_timeout))
            .build()
            .into();
        let endpoints = endpoints.into_iter().map(|e| e.trim_end_matches('/').to_owned()).collect();
        EtcdStore { endpoints, prefix: prefix.to_owned(), agent, fence: Mutex::new(None) }
    }

    fn key(&self, key: &str) -> String {
        b64(format!("{}{key}", self.prefix).as_bytes())
    }

    /// The leader key's full name.
    fn leader_key(&self) -> String {
        self.key("leader")
    }

    /// Sets (or clears) the fence: the leader key's value every write must find.
    pub fn set_fence(&self, value: Option<Vec<u8>>) {
        *self.fence.lock().unwrap_or_else(|p| p.into_inner()) = value;
    }

    fn fence(&self) -> Option<Vec<u8>> {
        self.fence.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// POSTs `body` to `path` at the first endpoint that answers.
    fn call(&self, path: &str, body: &Value) -> Result<Value> {
        let mut last = String::from("no endpoints configured");
        for endpoint in &self.endpoints {
            let url = format!("{endpoint}{path}");
            match self.agent.post(&url).send_json(body) {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let text = response
                        .into_body()
                        .read_to_string()
                        .map_err(|e| StoreError::Unavailable(format!("{url}: {e}")))?;
                    let value: Value = serde_json::from_str(&text)
                        .map_err(|e| StoreError::Backend(format!("{url}: answer is not JSON ({e}): {text}")))?;
                    if status != 200 {
                        let message = value["message"].as_str().or(value["error"].as_str()).unwrap_or(&text);
                        return Err(StoreError::Backend(format!("{url}: HTTP {status}: {message}")));
                    }
                    return Ok(value);
                }
                Err(e) => last = format!("{url}: {e}"),
            }
        }
        Err(StoreError::Unavailable(last))
    }

    /// A new lease of `ttl_s` seconds; returns its id.
    pub fn grant_lease(&self, ttl_s: u64) -> Result<u64> {
        let answer = self.call("/v3/lease/grant", &json!({ "TTL": ttl_s.to_string() }))?;
        match num(&answer["ID"]) {
            0 => Err(StoreError::Backend(format!("etcd granted no lease: {answer}"))),
            id => Ok(id),
        }
    }

    /// Renews a lease: `Ok(true)` while it lives, `Ok(false)` once it has expired.
    pub fn keep_alive(&self, lease: u64) -> Result<bool> {
        let answer = self.call("/v3/lease/keepalive", &json!({ "ID": lease.to_string() }))?;
        Ok(num(&answer["result"]["TTL"]) > 0)
    }

    /// Ends a lease at once (its keys go with it).
    pub fn revoke_lease(&self, lease: u64) -> Result<()> {
        self.call("/v3/lease/revoke", &json!({ "ID": lease.to_string() }))?;
        Ok(())
    }

    /// Writes the leader key with `value`, attached to `lease`, if no one holds it. Returns
    /// the holder's value afterwards (ours when we won).
    pub fn campaign(&self, value: &[u8], lease: u64) -> Result<Vec<u8>> {
        let key = self.leader_key();
        let body = json!({
            "compare": [{ "key": key, "target": "CREATE", "result": "EQUAL", "create_revision": "0" }],
            "success": [{ "request_put": { "key": key, "value": b64(value), "lease": lease.to_string() } }],
            "failure": [{ "request_range": { "key": key } }],
        });
        let answer = self.call("/v3/kv/txn", &body)?;
        if answer["succeeded"].as_bool() == Some(true) {
            return Ok(value.to_vec());
        }
        let kvs = &answer["responses"][0]["response_range"]["kvs"];
        match kvs.get(0) {
            Some(kv) => unb64(&kv["value"]),
            None => Ok(Vec::new()),
        }
    }

    /// The leader key's value, if anyone holds it.
    pub fn leader(&self) -> Result<Option<Vec<u8>>> {
        let answer = self.call("/v3/kv/range", &json!({ "key": self.leader_key() }))?;
        answer["kvs"].get(0).map(|kv| unb64(&kv["value"])).transpose()
    }
}

impl Store for EtcdStore {
    fn get(&self, key: &str) -> Result<Option<Entry>> {
        let answer = self.call("/v3/kv/range", &json!({ "key": self.key(key) }))?;
        match answer["kvs"].get(0) {
            Some(kv) => Ok(Some(Entry { value: unb64(&kv["value"])?, revision: num(&kv["mod_revision"]) })),
            None => Ok(None),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, Entry)>> {
        let full = format!("{}{prefix}", self.prefix);
        let body = json!({ "key": b64(full.as_bytes()), "range_end": b64(&range_end(full.as_bytes())) });
        let answer = self.call("/v3/kv/range", &body)?;
        let mut out = Vec::new();
        for kv in answer["kvs"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            let key = String::from_utf8(unb64(&kv["key"])?)
                .map_err(|_| StoreError::Backend(String::from("etcd holds a key that is not UTF-8")))?;
            let Some(key) = key.strip_prefix(&self.prefix) else { continue };
            out.push((key.to_owned(), Entry { value: unb64(&kv["value"])?, revision: num(&kv["mod_revision"]) }));
        }
        Ok(out)
    }

    fn commit(&self, t: &Txn) -> Result<bool> {
        let Some(fence) = self.fence() else { return Err(StoreError::Fenced) };
        let leader_key = self.leader_key();
        let mut compare =
            vec![json!({ "key": leader_key, "target": "VALUE", "result": "EQUAL", "value": b64(&fence) })];
        for c in &t.compares {
            compare.push(json!({
                "key": self.key(&c.key), "target": "MOD", "result": "EQUAL", "mod_revision": c.revision.to_string(),
            }));
        }
        let success: Vec<Value> = t
            .changes
            .iter()
            .map(|change| match change {
                Change::Put { key, value } => json!({ "request_put": { "key": self.key(key), "value": b64(value) } }),
                Change::Delete { key } => json!({ "request_delete_range": { "key": self.key(key) } }),
            })
            .collect();
        let body = json!({
            "compare": compare,
            "success": success,
            "failure": [{ "request_range": { "key": leader_key } }],
        });
        let answer = self.call("/v3/kv/txn", &body)?;
        if answer["succeeded"].as_bool() == Some(true) {
            return Ok(true);
        }
        let holder =
            answer["responses"][0]["response_range"]["kvs"].get(0).map(|kv| unb64(&kv["value"])).transpose()?;
        if holder.as_deref() != Some(fence.as_slice()) {
            self.set_fence(None);
            return Err(StoreError::Fenced);
        }
        Ok(false)
    }

    fn kind(&self) -> &'static str {
        "etcd"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_ends_cover_the_prefix() {
        assert_eq!(range_end(b"a/"), b"a0");
        assert_eq!(range_end(b"a\xff"), b"b");
        assert_eq!(range_end(b"\xff\xff"), vec![0]);
    }

    #[test]
    fn numbers_come_as_strings_or_not_at_all() {
        assert_eq!(num(&json!("42")), 42);
        assert_eq!(num(&json!(7)), 7);
        assert_eq!(num(&Value::Null), 0);
    }
}
