//! Debian's real containerd 1.6.20 daemon as the oracle for pull-path tests.
//!
//! `Containerd::start()` runs `containerd --config CFG` (as root) with private `root`, `state`,
//! socket and plugin dirs under a temp dir, the CRI plugin and unused snapshotters disabled (ctr
//! pulls need only the content store, the metadata store, a snapshotter and the images service),
//! waits until `ctr --address SOCK version` answers, and kills the daemon on Drop (its log is
//! printed to stderr if the test panics).
//!
//! Note: `ctr images pull` / `ctr content fetch` resolve and fetch *in the ctr process* (the same
//! `remotes/docker` + `config.ConfigureHosts` code the CRI plugin uses, with `--hosts-dir` as the
//! single host-dir root); the daemon only stores content. So name resolution is the machine's
//! real resolver: keep references hermetic (loopback IPs, `localhost`).
//!
//! The kubelet's own path is the CRI `ImageService/PullImage` with an `AuthConfig`:
//! `Containerd::start_cri(REGISTRY_TOML)` keeps the CRI plugin, configured with the given
//! `[plugins."io.containerd.grpc.v1.cri".registry]` section (real paths), and `cri_pull` calls it
//! over the daemon socket (gRPC on HTTP/2, with the two small CRI messages encoded here). There,
//! the *daemon* reads `config_path` / `mirrors` / `configs` from its config, as on a node.
//!
//! ```ignore
//! let ctrd = Containerd::start();
//! ctrd.ctr_pull("127.0.0.1:5000/team/app:v1", Some(&certs_d), &["--user", "u:p"])?;
//! ctrd.ctr_fetch("127.0.0.1:5000/team/app:v1", Some(&certs_d), &[])?;
//! let cri = Containerd::start_cri("config_path = \"/tmp/x/certs.d\"\n");
//! let image_ref = cri.cri_pull("127.0.0.1:5000/team/app:v1", Some(("u", "p")))?;
//! ```

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The namespace every ctr call of the harness uses.
pub const CTR_NAMESPACE: &str = "pullprobe-test";

/// Default timeout of one `ctr` pull/fetch.
pub const CTR_TIMEOUT: Duration = Duration::from_secs(30);

/// A running containerd daemon (killed on Drop).
pub struct Containerd {
    child: Child,
    dir: TempDir,
    socket: PathBuf,
    timeout: Duration,
}

/// Output of a finished (or timed-out) ctr command.
#[derive(Debug, Clone)]
pub struct CtrOutput {
    pub success: bool,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Containerd {
    /// Starts the daemon (no CRI plugin) and waits (≤ 10 s) until `ctr version` works; panics
    /// otherwise.
    pub fn start() -> Containerd {
        Self::start_with(None)
    }

    /// Starts the daemon WITH the CRI plugin; `registry_toml` is the body of its
    /// `[plugins."io.containerd.grpc.v1.cri".registry]` table (config version 2, real paths), and
    /// may add sub-tables (`[plugins."io.containerd.grpc.v1.cri".registry.mirrors."host"]`, …).
    pub fn start_cri(registry_toml: &str) -> Containerd {
        Self::start_with(Some(registry_toml))
    }

    fn start_with(cri_registry: Option<&str>) -> Containerd {
        // Keep the path short: unix socket paths are limited to 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("ctrd-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let d = dir.path();
        let socket = d.join("c.sock");
        let cfg = format!(
            r#"version = 2
root = {root:?}
state = {state:?}
disabled_plugins = [
  {cri_disabled}
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.internal.v1.tracing",
  "io.containerd.tracing.processor.v1.otlp",
]
[grpc]
  address = {sock:?}
[ttrpc]
  address = {ttrpc:?}
[debug]
  address = ""
  level = "debug"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = {opt:?}
"#,
            root = d.join("root").display().to_string(),
            state = d.join("state").display().to_string(),
            sock = socket.display().to_string(),
            ttrpc = d.join("c.sock.ttrpc").display().to_string(),
            opt = d.join("opt").display().to_string(),
            cri_disabled = if cri_registry.is_some() {
                ""
            } else {
                "\"io.containerd.grpc.v1.cri\","
            },
        );
        let cfg = match cri_registry {
            None => cfg,
            Some(reg) => format!(
                "{cfg}[plugins.\"io.containerd.grpc.v1.cri\"]\n  stream_server_address = \"127.0.0.1\"\n  \
                 stream_server_port = \"0\"\n[plugins.\"io.containerd.grpc.v1.cri\".cni]\n  \
                 bin_dir = {cni_bin:?}\n  conf_dir = {cni_conf:?}\n\
                 [plugins.\"io.containerd.grpc.v1.cri\".registry]\n{reg}\n",
                cni_bin = d.join("cni-bin").display().to_string(),
                cni_conf = d.join("cni-conf").display().to_string(),
            ),
        };
        let cfg_path = d.join("config.toml");
        std::fs::write(&cfg_path, cfg).expect("write containerd config");
        let log = std::fs::File::create(d.join("containerd.log")).expect("create log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn containerd (apt-get install containerd; needs root)");
        let mut c = Containerd {
            child,
            dir,
            socket,
            timeout: CTR_TIMEOUT,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(st)) = c.child.try_wait() {
                panic!("containerd exited early ({st}):\n{}", c.log());
            }
            let out = c.ctr(&["version"], Duration::from_secs(5));
            if out.success {
                break;
            }
            if Instant::now() > deadline {
                panic!(
                    "containerd did not answer `ctr version`:\n{}\n{}",
                    out.stderr,
                    c.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        c
    }

    /// Timeout for `ctr_pull` / `ctr_fetch` (default [`CTR_TIMEOUT`]).
    pub fn set_timeout(&mut self, t: Duration) {
        self.timeout = t;
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("containerd.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Runs `ctr --address SOCK -n pullprobe-test ARGS…` with a timeout (the process is killed
    /// when it expires).
    pub fn ctr(&self, args: &[&str], timeout: Duration) -> CtrOutput {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(&self.socket)
            .args(["--namespace", CTR_NAMESPACE])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        run_with_timeout(cmd, timeout)
    }

    /// `ctr images pull [--hosts-dir DIR] EXTRA… IMAGE` (fetch + unpack + image record).
    /// `Err` carries ctr's stderr (or a timeout note).
    pub fn ctr_pull(
        &self,
        image: &str,
        hosts_dir: Option<&Path>,
        extra: &[&str],
    ) -> Result<(), String> {
        self.pull_like(&["images", "pull"], image, hosts_dir, extra)
    }

    /// `ctr content fetch [--hosts-dir DIR] EXTRA… IMAGE` (fetch only, no unpack).
    pub fn ctr_fetch(
        &self,
        image: &str,
        hosts_dir: Option<&Path>,
        extra: &[&str],
    ) -> Result<(), String> {
        self.pull_like(&["content", "fetch"], image, hosts_dir, extra)
    }

    fn pull_like(
        &self,
        sub: &[&str],
        image: &str,
        hosts_dir: Option<&Path>,
        extra: &[&str],
    ) -> Result<(), String> {
        let hd = hosts_dir.map(|p| p.display().to_string());
        let mut args: Vec<&str> = sub.to_vec();
        if let Some(h) = &hd {
            args.extend(["--hosts-dir", h.as_str()]);
        }
        args.extend_from_slice(extra);
        args.push(image);
        let out = self.ctr(&args, self.timeout);
        // Forget the image and its content so the next pull really fetches everything.
        self.clear();
        if out.success {
            Ok(())
        } else if out.timed_out {
            Err(format!(
                "ctr {} timed out after {:?}: {}",
                sub.join(" "),
                self.timeout,
                out.stderr
            ))
        } else {
            Err(out.stderr.trim().to_string())
        }
    }

    /// Removes every image and content blob of the test namespace (so a later pull cannot be
    /// served from the local store).
    pub fn clear(&self) {
        let t = Duration::from_secs(10);
        let imgs = self.ctr(&["images", "ls", "-q"], t);
        for i in imgs.stdout.lines().filter(|l| !l.trim().is_empty()) {
            let _ = self.ctr(&["images", "rm", "--sync", i.trim()], t);
        }
        let blobs = self.ctr(&["content", "ls", "-q"], t);
        for b in blobs.stdout.lines().filter(|l| !l.trim().is_empty()) {
            let _ = self.ctr(&["content", "rm", b.trim()], t);
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!(
                "---- containerd log tail ({}):\n{}",
                self.log_path().display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        // Snapshots may have left mounts under root only for running containers; none run here,
        // so the TempDir removal just works.
    }
}

/// Spawns `cmd` (stdout/stderr piped), reads both, kills it after `timeout`.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> CtrOutput {
    let start = Instant::now();
    let mut child = cmd.spawn().expect("spawn command");
    let mut so = child.stdout.take().expect("stdout");
    let mut se = child.stderr.take().expect("stderr");
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) => {}
            Err(_) => break None,
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            timed_out = true;
            break child.wait().ok();
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = t_out.join().unwrap_or_default();
    let stderr = t_err.join().unwrap_or_default();
    CtrOutput {
        success: !timed_out && status.is_some_and(|s| s.success()),
        timed_out,
        stdout,
        stderr,
        elapsed: start.elapsed(),
    }
}

// ---------------------------------------------------------------------------------------------
// CRI ImageService client (runtime.v1), just PullImage.

/// Protobuf: a length-delimited field.
fn pb_bytes(out: &mut Vec<u8>, field: u32, data: &[u8]) {
    pb_varint(out, u64::from(field << 3 | 2));
    pb_varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

fn pb_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// First length-delimited field `field` of a protobuf message, as a string.
fn pb_string_field(msg: &[u8], field: u32) -> Option<String> {
    let mut i = 0;
    let varint = |i: &mut usize| -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *msg.get(*i)?;
            *i += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    };
    while i < msg.len() {
        let key = varint(&mut i)?;
        match key & 7 {
            0 => {
                varint(&mut i)?;
            }
            2 => {
                let len = varint(&mut i)? as usize;
                let data = msg.get(i..i + len)?;
                i += len;
                if key >> 3 == u64::from(field) {
                    return Some(String::from_utf8_lossy(data).into_owned());
                }
            }
            1 => i += 8,
            5 => i += 4,
            _ => return None,
        }
    }
    None
}

/// `PullImageRequest { image: ImageSpec { image }, auth: AuthConfig { username, password } }`.
fn pull_image_request(image: &str, auth: Option<(&str, &str)>) -> Vec<u8> {
    let mut spec = Vec::new();
    pb_bytes(&mut spec, 1, image.as_bytes());
    let mut req = Vec::new();
    pb_bytes(&mut req, 1, &spec);
    if let Some((u, p)) = auth {
        let mut a = Vec::new();
        pb_bytes(&mut a, 1, u.as_bytes());
        pb_bytes(&mut a, 2, p.as_bytes());
        pb_bytes(&mut req, 2, &a);
    }
    req
}

/// One unary gRPC call over the unix socket; `Ok(response message)` or `Err(grpc-message)`.
async fn grpc_unary(socket: &Path, method: &str, msg: Vec<u8>) -> Result<Vec<u8>, String> {
    let io = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| format!("connect {}: {e}", socket.display()))?;
    let (client, conn) = h2::client::handshake(io)
        .await
        .map_err(|e| format!("h2 handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut client = client.ready().await.map_err(|e| format!("h2: {e}"))?;
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("http://containerd{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .map_err(|e| e.to_string())?;
    let (resp, mut send) = client
        .send_request(req, false)
        .map_err(|e| format!("h2 send: {e}"))?;
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    framed.extend_from_slice(&msg);
    send.send_data(framed.into(), true)
        .map_err(|e| format!("h2 data: {e}"))?;
    let resp = resp.await.map_err(|e| format!("h2 response: {e}"))?;
    let (parts, mut body) = resp.into_parts();
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| format!("h2 body: {e}"))?;
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let trailers = body
        .trailers()
        .await
        .map_err(|e| format!("h2 trailers: {e}"))?;
    // A trailers-only error response carries the status in the headers.
    let status_src = trailers.as_ref().unwrap_or(&parts.headers);
    let status = status_src
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if status == "0" {
        Ok(data.get(5..).map(<[u8]>::to_vec).unwrap_or_default())
    } else {
        let message = status_src
            .get("grpc-message")
            .map(|v| {
                percent_encoding::percent_decode(v.as_bytes())
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .unwrap_or_default();
        Err(format!("grpc-status {status}: {message}"))
    }
}

impl Containerd {
    /// CRI `ImageService/PullImage` (runtime.v1) as the kubelet calls it, with an optional
    /// `AuthConfig{username, password}`. `Ok(image_ref)` or `Err(gRPC error message)`.
    pub fn cri_pull(&self, image: &str, auth: Option<(&str, &str)>) -> Result<String, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let msg = pull_image_request(image, auth);
        let r = rt.block_on(async {
            tokio::time::timeout(
                self.timeout,
                grpc_unary(&self.socket, "/runtime.v1.ImageService/PullImage", msg),
            )
            .await
        });
        match r {
            Ok(Ok(resp)) => Ok(pb_string_field(&resp, 1).unwrap_or_default()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("CRI PullImage timed out after {:?}", self.timeout)),
        }
    }
}
