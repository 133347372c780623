//! Running `pullprobe agent` as a child process in tests, plus what those tests need around it:
//! an HTTP GET for its endpoints, its JSON log lines, a node host-root fixture, and [`Switch`], a
//! TCP forwarder that can be taken down (connection refused) and brought back on the same port.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Polls `f` every 100 ms until it returns `Some`, or panics after `timeout` naming `what`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A node root filesystem for `--host-root`: `etc/resolv.conf` and `etc/hosts` (images in the
/// tests use IP literals, so the resolver is never asked).
pub fn host_root() -> TempDir {
    let d = tempfile::Builder::new()
        .prefix("pullprobe-hostroot-")
        .tempdir()
        .expect("tempdir");
    std::fs::create_dir_all(d.path().join("etc")).expect("mkdir etc");
    std::fs::write(
        d.path().join("etc/resolv.conf"),
        "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
    )
    .expect("resolv.conf");
    std::fs::write(d.path().join("etc/hosts"), "127.0.0.1 localhost\n").expect("hosts");
    d
}

/// `GET path` on 127.0.0.1:port: (status, body), or None when nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http_get_full(port, path).map(|(st, _, body)| (st, body))
}

/// Bearer tokens by agent port: in a cluster the agent's main listener reviews every caller
/// (TokenReview + SubjectAccessReview), so the helpers below send the token registered here.
static BEARERS: Mutex<Vec<(u16, String)>> = Mutex::new(Vec::new());

/// Send `token` on every request to the agent on `port`.
pub fn authorize(port: u16, token: &str) {
    if let Ok(mut b) = BEARERS.lock() {
        b.retain(|(p, _)| *p != port);
        b.push((port, token.to_string()));
    }
}

fn bearer_header(port: u16) -> String {
    BEARERS
        .lock()
        .ok()
        .and_then(|b| b.iter().find(|(p, _)| *p == port).map(|(_, t)| t.clone()))
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default()
}

/// `GET path` on 127.0.0.1:port: (status, response head, body).
pub fn http_get_full(port: u16, path: &str) -> Option<(u16, String, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let auth = bearer_header(port);
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, head.to_string(), body.to_string()))
}

/// A TCP connection to `to` from the local address `from`: on Linux every 127.x.y.z is this
/// host's, so a test can call the agent as several clients (the agent caps and budgets per
/// client address).
pub async fn connect_from(from: [u8; 4], to: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let s = tokio::net::TcpSocket::new_v4()?;
    s.bind(SocketAddr::from((from, 0)))?;
    s.connect(to).await
}

/// `GET path` on `to` from the local address `from`, with a bearer token if given: the status
/// (None when the agent does not answer within 20 s, so a hung agent fails a test, never hangs it).
pub async fn get_status_from(
    from: [u8; 4],
    to: SocketAddr,
    path: &str,
    bearer: Option<&str>,
) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut s = connect_from(from, to).await.ok()?;
        let auth = bearer
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let req = format!("GET {path} HTTP/1.1\r\nHost: agent\r\n{auth}Connection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        String::from_utf8_lossy(&out)
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .ok()
        .flatten()
}

/// `GET path` as JSON (panics if the agent does not answer 200 with JSON).
pub fn get_json(port: u16, path: &str) -> serde_json::Value {
    let (st, body) = http_get(port, path).unwrap_or_else(|| panic!("GET {path}: no answer"));
    assert_eq!(st, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"))
}

/// Sum of the samples of an OpenMetrics text whose line starts with `prefix` (a metric name,
/// optionally with the start of its labels, e.g. `pullprobe_api_writes_total{kind="node_status"`).
pub fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A running `pullprobe agent`; killed on Drop (its log printed if the test panicked).
pub struct AgentProc {
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
    started: Instant,
}

impl AgentProc {
    /// Spawns `pullprobe agent ARGS… --listen 127.0.0.1:PORT` with stdout/stderr to a file. In
    /// a cluster (no `--standalone`) without `--health-listen`, the health listener goes to a
    /// free loopback port instead of its default `0.0.0.0:9809`, so tests running at once do
    /// not fight over that port.
    pub fn spawn(args: &[&str]) -> AgentProc {
        Self::spawn_bin(Path::new(env!("CARGO_BIN_EXE_pullprobe")), args)
    }

    /// [`AgentProc::spawn`] with another build of the binary (the release one, whose memory
    /// is what a node sees: the debug binary's own pages add some 30 MiB to its RSS).
    pub fn spawn_bin(bin: &Path, args: &[&str]) -> AgentProc {
        let dir = tempfile::Builder::new()
            .prefix("pullprobe-agent-")
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("agent.log")).expect("agent log");
        let mut cmd = Command::new(bin);
        cmd.arg("agent").args(args);
        if !args.contains(&"--standalone") && !args.contains(&"--health-listen") {
            cmd.args(["--health-listen", "127.0.0.1:0"]);
        }
        let child = cmd
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "info")
            .env_remove("NODE_NAME")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("spawn pullprobe agent");
        AgentProc {
            child: Some(child),
            port,
            dir,
            started: Instant::now(),
        }
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("agent.log")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The JSON log lines so far (other lines skipped).
    pub fn logs(&self) -> Vec<serde_json::Value> {
        self.log_text()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Log lines with `"message": msg`.
    pub fn logs_with(&self, msg: &str) -> Vec<serde_json::Value> {
        self.logs()
            .into_iter()
            .filter(|l| l["message"] == msg)
            .collect()
    }

    /// Log lines of one target (`pullprobe::probe`: one per check).
    pub fn logs_of(&self, target: &str) -> Vec<serde_json::Value> {
        self.logs()
            .into_iter()
            .filter(|l| l["target"] == target)
            .collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Exit status if it exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits for the exit (panics after `timeout`).
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        wait_for(timeout, "the agent to exit", || self.try_wait())
    }

    /// Sends SIGTERM (as the kubelet does when stopping the pod).
    pub fn sigterm(&self) {
        let st = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -TERM failed");
    }

    /// Waits until `/readyz` answers 200 (the first cycle finished).
    pub fn wait_ready(&mut self, timeout: Duration) {
        let port = self.port;
        let deadline = Instant::now() + timeout;
        loop {
            if matches!(http_get(port, "/readyz"), Some((200, _))) {
                return;
            }
            if let Some(st) = self.try_wait() {
                panic!("agent exited early ({st}):\n{}", self.log_text());
            }
            if Instant::now() > deadline {
                panic!("agent not ready in {timeout:?}:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = self.log_text();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "--- pullprobe agent log (tail) ---\n{}",
                lines[lines.len().saturating_sub(60)..].join("\n")
            );
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `pullprobe agent ARGS…` to completion (for start-up failures).
pub fn run_agent_to_exit(args: &[&str], timeout: Duration) -> (ExitStatus, String) {
    let mut p = AgentProc::spawn(args);
    let st = p.wait_exit(timeout);
    let log = p.log_text();
    (st, log)
}

/// A TCP forwarder on a fixed 127.0.0.1 port in front of `target` that can be taken down —
/// the listener closed and open connections cut, so new connections are refused — and
/// brought back on the same port: a registry host going away and coming back.
pub struct Switch {
    port: u16,
    up: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Switch {
    pub fn start(target: SocketAddr) -> Switch {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind switch");
        let port = listener.local_addr().expect("addr").port();
        let up = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (u, s, a) = (up.clone(), stop.clone(), accepted.clone());
        let thread = std::thread::spawn(move || switch_loop(listener, port, target, u, s, a));
        Switch {
            port,
            up,
            stop,
            accepted,
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Take the host down (refuse connections) or bring it back; returns once in effect.
    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        wait_for(Duration::from_secs(5), "the switch to change state", || {
            let connects = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok();
            (connects == up).then_some(())
        });
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn switch_loop(
    first: TcpListener,
    port: u16,
    target: SocketAddr,
    up: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
) {
    let mut listener = Some(first);
    let open: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
    while !stop.load(Ordering::SeqCst) {
        let want_up = up.load(Ordering::SeqCst);
        match (&listener, want_up) {
            (Some(_), false) => {
                listener = None;
                for s in open.lock().expect("lock").drain(..) {
                    let _ = s.shutdown(Shutdown::Both);
                }
            }
            (None, true) => {
                // std sets SO_REUSEADDR on Unix listeners, so the port can be bound again.
                if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
                    listener = Some(l);
                }
            }
            _ => {}
        }
        let Some(l) = &listener else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        l.set_nonblocking(true).expect("nonblocking");
        match l.accept() {
            Ok((client, _)) => {
                accepted.fetch_add(1, Ordering::SeqCst);
                let _ = client.set_nonblocking(false);
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                if let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) {
                    open.lock().expect("lock").extend([c2, s2]);
                }
                pipe(&client, &server);
                pipe(&server, &client);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn pipe(from: &TcpStream, to: &TcpStream) {
    let (Ok(mut r), Ok(mut w)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut r, &mut w);
        let _ = w.shutdown(Shutdown::Write);
    });
}

/// Writes `text` to `dir/name` (atomically: a reader never sees half a file) and returns
/// the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).expect("write file");
    std::fs::rename(&tmp, &p).expect("rename file");
    p
}

/// The agent for node `node` with its config file and host root; `how` is how it reaches
/// the cluster (`["--standalone"]`, `["--kubeconfig", FILE]`).
pub fn spawn_for_node(how: &[&str], node: &str, cfg: &Path, root: &Path) -> AgentProc {
    let mut args = how.to_vec();
    args.extend([
        "--node-name",
        node,
        "--config",
        cfg.to_str().expect("utf-8 path"),
        "--host-root",
        root.to_str().expect("utf-8 path"),
    ]);
    AgentProc::spawn(&args)
}

/// The node trusts the registry `hp` through containerd's hosts.toml (`ca`), as a real node
/// would: `config_path` in config.toml, the CA beside the hosts.toml naming it.
pub fn trust_in_hosts_toml(root: &Path, hp: &str, ca: &Path) {
    let certs = root.join("etc/containerd/certs.d").join(hp);
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(ca, certs.join("ca.crt")).unwrap();
    write_file(
        &root.join("etc/containerd"),
        "config.toml",
        "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n",
    );
    write_file(
        &certs,
        "hosts.toml",
        &format!("server = \"https://{hp}\"\nca = \"/etc/containerd/certs.d/{hp}/ca.crt\"\n"),
    );
}

/// `/status` targets keyed by their `key` (the document lists them).
pub fn status_targets(st: &serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    st["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| Some((t["key"].as_str()?.to_string(), t.clone())))
        .collect()
}

/// One condition of `/status`'s summary (`Null` when absent).
pub fn status_condition(st: &serde_json::Value, kind: &str) -> serde_json::Value {
    st["summary"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == kind)
        .cloned()
        .unwrap_or_default()
}

/// GET `path` on the agent on `port` with `token` as bearer: the status code (0 when no
/// answer parses).
pub fn status_as(port: u16, path: &str, token: &str) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A docker config.json (the kubelet's node credentials) with `user:pass` for `host`.
pub fn docker_config_json(host: &str, user: &str, pass: &str) -> String {
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    serde_json::json!({"auths": {host: {"auth": auth}}}).to_string()
}
