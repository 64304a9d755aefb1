//! [`Provisioner`] over fabriq-provisioner's REST API (`openapi/provisioner.json`): a
//! blocking ureq client with a bearer token and a time-out on every call. Each HTTP answer
//! is turned into the trait's [`Error`] in one place ([`classify`]), from the provisioner's
//! `{code, message}` body and status.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::provisioner::{Capacity, Error, Page, Provisioner, Publication, Segment, Volume, VolumeSpec};

/// The provisioner's REST API.
pub struct Rest {
    base: String,
    token: String,
    agent: ureq::Agent,
}

/// `GET /v1/volumes` answer.
#[derive(serde::Deserialize)]
struct VolumePage {
    volumes: Vec<Volume>,
    next_after: Option<String>,
}

/// `GET /v1/capacity` answer (the parts used here).
#[derive(serde::Deserialize)]
struct CapacityView {
    placeable_bytes: u64,
    largest_free_bytes: u64,
    #[serde(default)]
    segments: Vec<SegmentCapacity>,
}

#[derive(serde::Deserialize)]
struct SegmentCapacity {
    key: String,
    value: String,
    placeable_bytes: u64,
    largest_free_bytes: u64,
}

impl Rest {
    /// `base`: `http://HOST:PORT` (a trailing `/` is dropped); every call gives up after `timeout`.
    pub fn new(base: &str, token: &str, timeout: Duration) -> Rest {
        let agent =
            ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(timeout)).build().into();
        Rest { base: base.trim_end_matches('/').to_owned(), token: token.to_owned(), agent }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// One exchange: the status and the body as JSON (`Null` when empty).
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value), Error> {
        let url = self.url(path);
        let auth = format!("Bearer {}", self.token);
        let result = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("Authorization", &auth).call(),
            ("DELETE", _) => self.agent.delete(&url).header("Authorization", &auth).call(),
            ("PUT", None) => self.agent.put(&url).header("Authorization", &auth).send_empty(),
            ("POST", Some(b)) => self.agent.post(&url).header("Authorization", &auth).send_json(b),
            ("PATCH", Some(b)) => self.agent.patch(&url).header("Authorization", &auth).send_json(b),
            _ => unreachable!("no {method} with body {} in this client", body.is_some()),
        };
        let response = result.map_err(|e| Error::Unavailable(format!("{method} {url}: {e}")))?;
        let status = response.status().as_u16();
        let text = response
            .into_body()
            .read_to_string()
            .map_err(|e| Error::Unavailable(format!("{method} {url}: reading the answer: {e}")))?;
        let value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, value))
    }

    /// The call must succeed (2xx) and its body read as `T`.
    fn json<T: DeserializeOwned>(&self, method: &str, path: &str, body: Option<&Value>) -> Result<T, Error> {
        let (status, value) = self.call(method, path, body)?;
        if !(200..300).contains(&status) {
            return Err(classify(status, &value));
        }
        serde_json::from_value(value).map_err(|e| Error::Failed {
            status,
            code: "bad_answer".into(),
            message: format!("{method} {path}: the answer is not what fabriq-csi expects: {e}"),
        })
    }

    /// The call must succeed (2xx); its body is ignored.
    fn done(&self, method: &str, path: &str) -> Result<(), Error> {
        let (status, value) = self.call(method, path, None)?;
        if (200..300).contains(&status) { Ok(()) } else { Err(classify(status, &value)) }
    }
}

/// The provisioner's answer `status` with body `{code, message}` as an [`Error`].
pub fn classify(status: u16, body: &Value) -> Error {
    let code = body["code"].as_str().unwrap_or("").to_owned();
    let message = body["message"].as_str().map_or_else(|| body.to_string(), str::to_owned);
    match (status, code.as_str()) {
        (404, _) => Error::NotFound(message),
        (401 | 403, _) => Error::Unauthorized { status, message },
        (409, _) => Error::Conflict { code, message },
        (507, _) | (422, "too_many_hosts") => Error::Exhausted { code, message },
        (422, "unsatisfiable_topology" | "unknown_node") => Error::Unsatisfiable { code, message },
        (400 | 413 | 422, _) => Error::Invalid { code, message },
        (421 | 502 | 503 | 504, _) => Error::Unavailable(format!("{status} {code}: {message}")),
        _ => Error::Failed { status, code, message },
    }
}

/// `s` as one URL path segment: RFC 3986 unreserved characters and `:` `@` stay, the rest is
/// percent-encoded.
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Provisioner for Rest {
    fn health(&self) -> Result<(), Error> {
        let (status, value) = self.call("GET", "/v1/health", None)?;
        if status != 200 {
            return Err(classify(status, &value));
        }
        // The health check takes no token: one call that does, so a wrong token shows here.
        let (status, value) = self.call("GET", "/v1/volumes?limit=1", None)?;
        if status == 200 { Ok(()) } else { Err(classify(status, &value)) }
    }

    fn create_volume(&self, spec: &VolumeSpec) -> Result<Volume, Error> {
        let body = serde_json::to_value(spec).expect("a volume spec is JSON");
        self.json("POST", "/v1/volumes", Some(&body))
    }

    fn get_volume(&self, id_or_name: &str) -> Result<Volume, Error> {
        self.json("GET", &format!("/v1/volumes/{}", segment(id_or_name)), None)
    }

    fn list_volumes(&self, limit: usize, after: Option<&str>) -> Result<Page, Error> {
        let mut path = format!("/v1/volumes?limit={limit}");
        if let Some(after) = after {
            path.push_str(&format!("&after={}", segment(after)));
        }
        let page: VolumePage = self.json("GET", &path, None)?;
        Ok(Page { volumes: page.volumes, next_after: page.next_after })
    }

    fn delete_volume(&self, id: &str) -> Result<(), Error> {
        match self.done("DELETE", &format!("/v1/volumes/{}", segment(id))) {
            Err(Error::NotFound(_)) => Ok(()),
            other => other,
        }
    }

    fn grow_volume(&self, id: &str, size_bytes: u64) -> Result<Volume, Error> {
        let body = serde_json::json!({ "size_bytes": size_bytes });
        self.json("PATCH", &format!("/v1/volumes/{}", segment(id)), Some(&body))
    }

    fn publish(&self, id: &str, host_nqn: &str) -> Result<Publication, Error> {
        self.json("PUT", &format!("/v1/volumes/{}/hosts/{}", segment(id), segment(host_nqn)), None)
    }

    fn unpublish(&self, id: &str, host_nqn: &str) -> Result<(), Error> {
        match self.done("DELETE", &format!("/v1/volumes/{}/hosts/{}", segment(id), segment(host_nqn))) {
            Err(Error::NotFound(_)) => Ok(()),
            other => other,
        }
    }

    fn capacity(&self, wanted: &Segment) -> Result<Capacity, Error> {
        let view: CapacityView = self.json("GET", "/v1/capacity", None)?;
        Ok(capacity_within(&view, wanted))
    }

    fn node_labels(&self, node: &str) -> Result<Segment, Error> {
        #[derive(serde::Deserialize)]
        struct NodeView {
            #[serde(default)]
            labels: Segment,
        }
        let view: NodeView = self.json("GET", &format!("/v1/nodes/{}", segment(node)), None)?;
        Ok(view.labels)
    }
}

/// The capacity the provisioner reports per single label, narrowed to a segment of several:
/// the smallest over its labels (nodes carrying all of them are a subset of those carrying
/// each); a label no node carries gives zero.
fn capacity_within(view: &CapacityView, wanted: &Segment) -> Capacity {
    let mut cap = Capacity { available_bytes: view.placeable_bytes, largest_bytes: view.largest_free_bytes };
    for (key, value) in wanted {
        let s = view.segments.iter().find(|s| &s.key == key && &s.value == value);
        cap.available_bytes = cap.available_bytes.min(s.map_or(0, |s| s.placeable_bytes));
        cap.largest_bytes = cap.largest_bytes.min(s.map_or(0, |s| s.largest_free_bytes));
    }
    cap
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answers_become_errors_by_status_and_code() {
        let body = |code: &str| json!({"code": code, "message": "m"});
        assert!(matches!(classify(404, &body("volume_not_found")), Error::NotFound(_)));
        assert!(matches!(classify(409, &body("volume_conflict")), Error::Conflict { .. }));
        assert!(matches!(classify(507, &body("insufficient_capacity")), Error::Exhausted { .. }));
        assert!(matches!(classify(422, &body("too_many_hosts")), Error::Exhausted { .. }));
        assert!(matches!(classify(422, &body("unsatisfiable_topology")), Error::Unsatisfiable { .. }));
        assert!(matches!(classify(422, &body("shrink_refused")), Error::Invalid { .. }));
        assert!(matches!(classify(400, &body("invalid_argument")), Error::Invalid { .. }));
        assert!(matches!(classify(401, &body("unauthorized")), Error::Unauthorized { status: 401, .. }));
        assert!(matches!(classify(421, &body("not_leader")), Error::Unavailable(_)));
        assert!(matches!(classify(503, &body("node_unavailable")), Error::Unavailable(_)));
        assert!(matches!(classify(500, &Value::Null), Error::Failed { status: 500, .. }));
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(segment("nqn.2014-08.org.nvmexpress:uuid:5b0c"), "nqn.2014-08.org.nvmexpress:uuid:5b0c");
        assert_eq!(segment("a b/c?d"), "a%20b%2Fc%3Fd");
    }

    #[test]
    fn capacity_narrows_to_every_label_of_a_segment() {
        let view = CapacityView {
            placeable_bytes: 100,
            largest_free_bytes: 60,
            segments: vec![
                SegmentCapacity { key: "zone".into(), value: "a".into(), placeable_bytes: 70, largest_free_bytes: 50 },
                SegmentCapacity { key: "rack".into(), value: "r1".into(), placeable_bytes: 40, largest_free_bytes: 40 },
            ],
        };
        let seg = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(capacity_within(&view, &seg(&[])), Capacity { available_bytes: 100, largest_bytes: 60 });
        assert_eq!(capacity_within(&view, &seg(&[("zone", "a")])), Capacity { available_bytes: 70, largest_bytes: 50 });
        assert_eq!(
            capacity_within(&view, &seg(&[("zone", "a"), ("rack", "r1")])),
            Capacity { available_bytes: 40, largest_bytes: 40 }
        );
        assert_eq!(capacity_within(&view, &seg(&[("zone", "b")])), Capacity::default());
    }
}
