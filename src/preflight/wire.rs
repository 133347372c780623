//! An agent's pre-flight reply, read defensively: it comes from another process on
//! another node (possibly another version), so it is size-capped before parsing, its
//! `apiVersion` checked, and every string shown to the user is cut to length and stripped
//! of control characters; reasons must look like reasons.

use serde::Deserialize;

use super::matrix::{AgentInfo, Cell, CellVerdict, UnknownReason};

/// The API version this CLI reads (major `v1`).
pub const API_VERSION: &str = crate::agent::ondemand::API_VERSION;
/// Largest reply read (100 images × a few KB each, with room).
pub const MAX_REPLY_BYTES: usize = 8 * 1024 * 1024;

/// The parts of a reply the CLI uses.
#[derive(Clone, Debug, Deserialize)]
pub struct Reply {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub node: String,
    #[serde(default)]
    pub agent_version: String,
    #[serde(default)]
    pub runtime: String,
    #[serde(default)]
    pub platform: String,
    #[serde(default)]
    pub pull_secrets: Option<SecretsNote>,
    pub results: Vec<ImageAnswer>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct SecretsNote {
    #[serde(default)]
    pub used: bool,
    #[serde(default)]
    pub note: String,
}

/// One image's answer.
#[derive(Clone, Debug, Deserialize)]
pub struct ImageAnswer {
    pub image: String,
    #[serde(default)]
    pub fingerprint: String,
    pub path_state: PathStateWire,
    #[serde(default)]
    pub source: String,
    pub report: serde_json::Value,
}

impl ImageAnswer {
    /// The cell of this answer, with where it came from.
    pub fn cell(&self) -> Cell {
        let mut c = cell_of(&self.report);
        c.source = reason(&self.source).map(|s| s.to_lowercase());
        c
    }
}

/// `{"state": "reachable"}` / `{"state": "unreachable", "reason": "…"}`.
#[derive(Clone, Debug, Deserialize)]
pub struct PathStateWire {
    pub state: String,
    #[serde(default)]
    pub reason: Option<String>,
}

impl PathStateWire {
    pub fn reachable(&self) -> bool {
        self.state == "reachable"
    }
}

impl Reply {
    pub fn agent(&self) -> AgentInfo {
        AgentInfo {
            version: clean(&self.agent_version, 64),
            runtime: clean(&self.runtime, 32),
            platform: clean(&self.platform, 64),
            pull_secrets: self
                .pull_secrets
                .as_ref()
                .map(|p| clean(&p.note, 512))
                .unwrap_or_default(),
        }
    }
}

/// Parse a 200 reply to a request for `images` from `node`.
pub fn parse(body: &[u8], node: &str, images: &[String]) -> Result<Reply, Box<Cell>> {
    let invalid = |why: &str| {
        Box::new(Cell::unknown(
            UnknownReason::AgentReplyInvalid,
            format!("the agent's reply {why}"),
        ))
    };
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|_| invalid("is not JSON"))?;
    let version = v.get("apiVersion").and_then(|a| a.as_str()).unwrap_or("");
    if version != API_VERSION {
        return Err(Box::new(Cell::unknown(
            UnknownReason::AgentTooOld,
            format!(
                "the agent answers API version {:?}, this CLI reads {API_VERSION}",
                clean(version, 40)
            ),
        )));
    }
    let reply: Reply =
        serde_json::from_value(v).map_err(|_| invalid("lacks fields of pre-flight v1"))?;
    if reply.node != node {
        return Err(invalid("is from another node"));
    }
    let answered: Vec<&str> = reply.results.iter().map(|r| r.image.as_str()).collect();
    if answered != images.iter().map(String::as_str).collect::<Vec<_>>() {
        return Err(invalid("does not answer the images asked"));
    }
    Ok(reply)
}

/// Printable, bounded text from an agent.
pub fn clean(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// A reason code as agents send them (CamelCase, short); anything else is not shown.
pub fn reason(s: &str) -> Option<String> {
    (!s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then(|| s.to_string())
}

/// The host of a failure: the failing phase's host, else the endpoint's.
fn failure_host(report: &serde_json::Value) -> Option<String> {
    let from_phase = report
        .get("phases")
        .and_then(|p| p.as_array())
        .and_then(|ps| {
            ps.iter()
                .rev()
                .find(|p| p.get("ok") == Some(&serde_json::Value::Bool(false)))
        })
        .and_then(|p| p.get("host"))
        .and_then(|h| h.as_str())
        .filter(|h| !h.is_empty())
        .map(String::from);
    from_phase
        .or_else(|| {
            let ep = report.get("endpoint")?.as_str()?;
            let u = url::Url::parse(ep).ok()?;
            let host = u.host_str()?.to_string();
            Some(match u.port() {
                Some(p) => format!("{host}:{p}"),
                None => host,
            })
        })
        .map(|h| clean(&h, 255))
}

/// The cell a `check --json` report makes.
pub fn cell_of(report: &serde_json::Value) -> Cell {
    let s = |k: &str| report.get(k).and_then(|v| v.as_str()).unwrap_or("");
    let verdict = CellVerdict::from_wire(s("verdict"));
    let failed = !matches!(verdict, CellVerdict::Ready);
    Cell {
        verdict,
        phase: reason(s("phase")).map(|p| p.to_lowercase()),
        reason: reason(s("reason")),
        host: if failed { failure_host(report) } else { None },
        message: clean(s("message"), 1024),
        checked_on: None,
        source: None,
        report: Some(report.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_checked_before_use() {
        let images = vec!["a".to_string()];
        let ok = serde_json::json!({"apiVersion": API_VERSION, "node": "n", "results": [
            {"image": "a", "fingerprint": "f", "path_state": {"state": "reachable"}, "report": {"verdict": "ready"}}]});
        assert!(parse(ok.to_string().as_bytes(), "n", &images).is_ok());
        let e = parse(b"<html>", "n", &images).unwrap_err();
        assert_eq!(e.reason.as_deref(), Some("AgentReplyInvalid"));
        let old = serde_json::json!({"apiVersion": "pullprobe.io/v0", "node": "n", "results": []});
        let e = parse(old.to_string().as_bytes(), "n", &images).unwrap_err();
        assert_eq!(e.reason.as_deref(), Some("AgentTooOld"));
        let other = ok.to_string().replace("\"node\":\"n\"", "\"node\":\"m\"");
        assert!(parse(other.as_bytes(), "n", &images).is_err());
        assert!(parse(ok.to_string().as_bytes(), "n", &["b".to_string()]).is_err());
    }

    #[test]
    fn cells_take_the_failing_host_and_drop_odd_text() {
        let r = serde_json::json!({"verdict": "not_ready", "phase": "tls", "reason": "TLSUnknownAuthority",
            "message": "bad\u{1b}[31m cert", "endpoint": "https://mirror.internal:5000/v2",
            "phases": [{"name": "dns", "host": "mirror.internal:5000", "ok": true}, {"name": "tls", "host": "mirror.internal:5000", "ok": false}]});
        let c = cell_of(&r);
        assert_eq!(c.verdict, CellVerdict::NotReady);
        assert_eq!(c.host.as_deref(), Some("mirror.internal:5000"));
        assert_eq!(c.message, "bad[31m cert");
        let weird = serde_json::json!({"verdict": "exploded", "reason": "<script>"});
        let c = cell_of(&weird);
        assert_eq!(c.verdict, CellVerdict::Unknown);
        assert_eq!(c.reason, None);
    }
}
