//! A REAL Prometheus (Debian's `prometheus` 2.42, `.ci/install-deps.sh`) on loopback for the tests:
//! its own config, rule files and empty TSDB in a temp dir, a free port on 127.0.0.1, killed and
//! reaped on Drop (its log printed if the test panicked). Plus a small client for its HTTP API,
//! `promtool`, and [`forward`], a blocking HTTP/1.0 forwarder for ScriptedServer handlers (a proxy
//! that rewrites a request header or adds response headers).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::harness::{free_port, Reply, Request};

pub struct Prometheus {
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
}

impl Prometheus {
    /// Starts Prometheus with `config` (YAML; `RULES` in it is replaced by the path of a file
    /// holding `rules`, when given) and waits until `/-/ready` answers.
    pub fn start(config: &str, rules: Option<&str>) -> Prometheus {
        let mut dir = tempfile::Builder::new()
            .prefix("prometheus-")
            .tempdir()
            .expect("tempdir");
        let rules_path = dir.path().join("rules.json");
        if let Some(r) = rules {
            std::fs::write(&rules_path, r).expect("write rules");
        }
        let cfg = config.replace("RULES", rules_path.to_str().expect("utf-8 path"));
        std::fs::write(dir.path().join("prometheus.yml"), cfg).expect("write config");
        for _ in 0..5 {
            let port = free_port();
            let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
            let child = Command::new("prometheus")
                .arg(format!(
                    "--config.file={}",
                    dir.path().join("prometheus.yml").display()
                ))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--log.level=warn")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup"))
                .stderr(log)
                .spawn()
                .expect("spawn prometheus (Debian package `prometheus`, .ci/install-deps.sh)");
            let mut p = Prometheus {
                child: Some(child),
                port,
                dir,
            };
            if p.wait_ready(Duration::from_secs(30)) {
                return p;
            }
            // The port was taken between free_port() and the bind: try another one.
            dir = p.take_dir();
        }
        panic!("prometheus did not start");
    }

    fn take_dir(&mut self) -> TempDir {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"))
    }

    fn wait_ready(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if matches!(
                http(self.port, "GET", "/-/ready", &[], None),
                Some((200, _, _))
            ) {
                return true;
            }
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/<path>?<params>`: the `data` of a successful answer.
    pub fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let q: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        let url = format!("/api/v1/{path}?{}", q.join("&"));
        let (st, _, body) = http(self.port, "GET", &url, &[], None)
            .unwrap_or_else(|| panic!("prometheus did not answer {url}"));
        let v: Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!("{url}: not JSON ({e}): {}", String::from_utf8_lossy(&body))
        });
        assert_eq!(st, 200, "{url}: {v}");
        assert_eq!(v["status"], "success", "{url}: {v}");
        v["data"].clone()
    }

    /// An instant query's result vector.
    pub fn query(&self, promql: &str) -> Vec<Value> {
        let d = self.api("query", &[("query", promql)]);
        d["result"].as_array().cloned().unwrap_or_default()
    }

    /// Series matching a selector (label sets, `__name__` included).
    pub fn series(&self, selector: &str) -> Vec<Value> {
        self.api("series", &[("match[]", selector)])
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Active alerts (pending and firing).
    pub fn alerts(&self) -> Vec<Value> {
        self.api("alerts", &[])["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Scrape targets (active).
    pub fn targets(&self) -> Vec<Value> {
        self.api("targets", &[])["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Polls until `f` returns Some (every 250 ms), or panics after `timeout` naming `what`.
    pub fn wait<T>(&self, timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f() {
                return v;
            }
            if Instant::now() > deadline {
                panic!("timed out after {timeout:?} waiting for {what}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "--- prometheus log (tail) ---\n{}",
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Percent-encodes a query parameter value.
pub fn encode(v: &str) -> String {
    percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// (status, headers, body).
pub type HttpAnswer = (u16, Vec<(String, String)>, Vec<u8>);

/// One HTTP/1.0 request to 127.0.0.1:port (so no chunked answers): (status, headers, body).
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: Option<&[u8]>,
) -> Option<HttpAnswer> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(15))).ok()?;
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n");
    for (k, v) in headers {
        let skip = ["host", "connection", "content-length"];
        if !skip.iter().any(|h| k.eq_ignore_ascii_case(h)) {
            req += &format!("{k}: {v}\r\n");
        }
    }
    if let Some(b) = body {
        req += &format!("Content-Length: {}\r\n", b.len());
    }
    req += "\r\n";
    s.write_all(req.as_bytes()).ok()?;
    if let Some(b) = body {
        s.write_all(b).ok()?;
    }
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let hdrs = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Some((status, hdrs, raw[split + 4..].to_vec()))
}

/// Forwards a request seen by a ScriptedServer to 127.0.0.1:`port` (blocking; the handler runs on
/// the server's own runtime), with `edit` applied to the request headers first. Hop-by-hop headers
/// are dropped; 502 when the upstream does not answer.
pub fn forward(
    req: &Request,
    port: u16,
    edit: impl Fn(&mut Vec<(String, String)>),
) -> (Reply, Vec<(String, String)>) {
    let mut headers = req.headers.clone();
    edit(&mut headers);
    let body = (!req.body.is_empty()).then_some(req.body.as_slice());
    let Some((status, hdrs, body)) = http(port, &req.method, &req.path, &headers, body) else {
        return (Reply::status(502), Vec::new());
    };
    let mut reply = Reply::status(status).body(body);
    for (k, v) in &hdrs {
        let hop = ["connection", "transfer-encoding", "keep-alive"];
        if !hop.iter().any(|h| k.eq_ignore_ascii_case(h)) {
            reply = reply.header(k, v);
        }
    }
    (reply, hdrs)
}

/// `promtool ARGS…` in `dir`: (success, stdout + stderr).
pub fn promtool(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool (Debian package `prometheus`)");
    if let Some(mut i) = child.stdin.take() {
        if let Some(data) = stdin {
            i.write_all(data).expect("promtool stdin");
        }
    }
    let out = child.wait_with_output().expect("promtool");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
