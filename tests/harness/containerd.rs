//! Debian's real containerd daemons as the oracle for pull-path tests: 1.6.20 (bookworm, the
//! machine's `/usr/bin/containerd`), 1.7.x (trixie) and 2.x (sid), the last two cached by
//! `.ci/cache-containerd.sh` under `$PULLPROBE_CACHE/containerd/{1.7,2}` (never installed).
//!
//! `Containerd::shared(series)` is ONE daemon per version for the whole test binary (started on
//! first use, with private `root`, `state`, socket and plugin dirs under /tmp, killed and its
//! directory removed when the test binary exits: the daemon runs under a small `sh` that waits
//! for the test process's end of a pipe to close). Each pull uses its own containerd namespace,
//! and the daemons run with `content_sharing_policy = "isolated"`, so scenarios running side by
//! side never see each other's content and every pull really fetches. `Containerd::start_cri`
//! starts a daemon of its own with the CRI plugin and the given registry tables (the kubelet's
//! path reads `config_path`, `mirrors`, … from the daemon's config, so they cannot be shared);
//! it is stopped on Drop.
//!
//! Each series gets a config of its era: `version = 2` for 1.x (CRI plugin
//! `io.containerd.grpc.v1.cri`), `version = 3` for 2.x (the images plugin
//! `io.containerd.cri.v1.images` holds the registry, `io.containerd.cri.v1.runtime` the CNI).
//!
//! `ctr images pull` / `ctr content fetch` on 1.x resolve and fetch *in the ctr process* (the
//! same `remotes/docker` + `config.ConfigureHosts` code the CRI plugin uses, `--hosts-dir` as the
//! single host-dir root); on 2.x `ctr images pull` goes through the daemon's transfer service, as
//! the CRI pull of 2.1 does by default. Name resolution is the machine's real resolver: keep
//! references hermetic (loopback IPs, `localhost`).
//!
//! The kubelet's own path is the CRI `ImageService/PullImage` (runtime.v1, which all three
//! serve; 2.x removed v1alpha2) with an `AuthConfig`: `cri_pull`.
//!
//! ```ignore
//! let ctrd = Containerd::shared(Series::V1_7);
//! ctrd.ctr_pull("127.0.0.1:5000/team/app:v1", Some(&certs_d), &["--user", "u:p"])?;
//! let cri = Containerd::start_cri(Series::V2, &format!("[{}]\n  config_path = \"/x\"\n", Series::V2.registry_table()));
//! let image_ref = cri.cri_pull("127.0.0.1:5000/team/app:v1", Some(("u", "p")))?;
//! ```

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Default timeout of one `ctr` pull/fetch.
pub const CTR_TIMEOUT: Duration = Duration::from_secs(30);

/// A containerd release series whose real binaries the tests run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Series {
    /// Debian bookworm's 1.6.20 (`/usr/bin`).
    V1_6,
    /// Debian trixie's 1.7.x (cached).
    V1_7,
    /// Debian sid's 2.x (cached).
    V2,
}

impl Series {
    pub const ALL: [Series; 3] = [Series::V1_6, Series::V1_7, Series::V2];

    /// Where this series' `containerd`, `ctr` and shims are.
    pub fn bin_dir(self) -> PathBuf {
        let cache = std::env::var_os("PULLPROBE_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/cache/pullprobe"));
        match self {
            Series::V1_6 => PathBuf::from("/usr/bin"),
            Series::V1_7 => cache.join("containerd/1.7/usr/bin"),
            Series::V2 => cache.join("containerd/2/usr/bin"),
        }
    }

    pub fn containerd(self) -> PathBuf {
        self.bin_dir().join("containerd")
    }

    pub fn ctr(self) -> PathBuf {
        self.bin_dir().join("ctr")
    }

    /// The version the binary reports (`containerd --version`), e.g. `1.7.24`: what a Node's
    /// `containerRuntimeVersion` would say, and what pullprobe is told.
    pub fn version(self) -> &'static str {
        static VERSIONS: OnceLock<Mutex<Vec<(Series, &'static str)>>> = OnceLock::new();
        let mut known = VERSIONS
            .get_or_init(|| Mutex::new(Vec::new()))
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some((_, v)) = known.iter().find(|(s, _)| *s == self) {
            return v;
        }
        let out = Command::new(self.containerd())
            .arg("--version")
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "run {} --version ({e}): bash .ci/cache-containerd.sh caches 1.7 and 2.x",
                    self.containerd().display()
                )
            });
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        // "containerd github.com/containerd/containerd/v2 2.1.9+unknown …", "… 1.7.24~ds1 …"
        let v = text
            .split_whitespace()
            .nth(2)
            .map(|w| {
                w.chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '.')
                    .collect::<String>()
            })
            .filter(|v| v.matches('.').count() == 2)
            .unwrap_or_else(|| panic!("unexpected `containerd --version`: {text}"));
        let v: &'static str = Box::leak(v.into_boxed_str());
        known.push((self, v));
        v
    }

    /// The `version` key of a config of this era.
    pub fn config_version(self) -> u32 {
        match self {
            Series::V1_6 | Series::V1_7 => 2,
            Series::V2 => 3,
        }
    }

    /// The plugin table holding the CRI image settings (`use_local_image_pull`, …).
    pub fn images_table(self) -> &'static str {
        match self {
            Series::V1_6 | Series::V1_7 => "plugins.\"io.containerd.grpc.v1.cri\"",
            Series::V2 => "plugins.\"io.containerd.cri.v1.images\"",
        }
    }

    /// The CRI registry table of this era's config.
    pub fn registry_table(self) -> String {
        format!("{}.registry", self.images_table())
    }
}

/// A running containerd daemon.
pub struct Containerd {
    series: Series,
    child: Mutex<Child>,
    /// The wrapper stops the daemon when this (its stdin) closes: on Drop, or when the test
    /// binary exits for a shared daemon.
    lifeline: Mutex<Option<ChildStdin>>,
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

/// A fresh containerd namespace name for one pull.
fn fresh_namespace() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "pp-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

impl Containerd {
    /// The test binary's one daemon of `series` (no CRI plugin), started on first use.
    pub fn shared(series: Series) -> &'static Containerd {
        static SHARED: [OnceLock<Containerd>; 3] =
            [OnceLock::new(), OnceLock::new(), OnceLock::new()];
        let i = Series::ALL.iter().position(|s| *s == series).unwrap_or(0);
        SHARED[i].get_or_init(|| Self::start_with(series, None))
    }

    /// A daemon of its own WITH the CRI plugin; `cri_tables` (TOML tables with their full
    /// names, real paths, e.g. `[plugins."io.containerd.cri.v1.images".registry]` and its
    /// sub-tables) are appended to this series' config. Stopped on Drop.
    pub fn start_cri(series: Series, cri_tables: &str) -> Containerd {
        Self::start_with(series, Some(cri_tables))
    }

    fn config(series: Series, d: &Path, socket: &Path, cri: Option<&str>) -> String {
        let cri_disabled = if cri.is_some() {
            ""
        } else {
            "\"io.containerd.grpc.v1.cri\","
        };
        let mut cfg = format!(
            r#"version = {version}
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
[plugins."io.containerd.metadata.v1.bolt"]
  content_sharing_policy = "isolated"
"#,
            version = series.config_version(),
            root = d.join("root").display().to_string(),
            state = d.join("state").display().to_string(),
            sock = socket.display().to_string(),
            ttrpc = d.join("c.sock.ttrpc").display().to_string(),
            opt = d.join("opt").display().to_string(),
        );
        if let Some(tables) = cri {
            let (cni_bin, cni_conf) = (
                d.join("cni-bin").display().to_string(),
                d.join("cni-conf").display().to_string(),
            );
            cfg += "[plugins.\"io.containerd.grpc.v1.cri\"]\n  stream_server_address = \"127.0.0.1\"\n  stream_server_port = \"0\"\n";
            cfg += &match series {
                Series::V1_6 | Series::V1_7 => format!(
                    "[plugins.\"io.containerd.grpc.v1.cri\".cni]\n  bin_dir = {cni_bin:?}\n  conf_dir = {cni_conf:?}\n"
                ),
                Series::V2 => format!(
                    "[plugins.\"io.containerd.cri.v1.runtime\".cni]\n  bin_dirs = [{cni_bin:?}]\n  conf_dir = {cni_conf:?}\n"
                ),
            };
            cfg += tables;
            cfg += "\n";
        }
        cfg
    }

    fn start_with(series: Series, cri: Option<&str>) -> Containerd {
        // Keep the path short: unix socket paths are limited to 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("ctrd-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let d = dir.path();
        let socket = d.join("c.sock");
        let cfg_path = d.join("config.toml");
        std::fs::write(&cfg_path, Self::config(series, d, &socket, cri))
            .expect("write containerd config");
        let log = std::fs::File::create(d.join("containerd.log")).expect("create log");
        // The daemon lives as long as the wrapper's stdin is open; then it is stopped and its
        // directory removed (a shared daemon's TempDir is never dropped).
        let path = format!(
            "{}:{}",
            series.bin_dir().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut child = Command::new("sh")
            .args([
                "-c",
                r#"exec 3<&0 0</dev/null; "$1" --config "$2" & c=$!; cat <&3 >/dev/null; kill "$c"; wait "$c"; rm -rf "$3""#,
                "ctrd",
            ])
            .arg(series.containerd())
            .arg(&cfg_path)
            .arg(d)
            .env("PATH", path)
            .stdin(Stdio::piped())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "spawn {} (needs root; bash .ci/cache-containerd.sh): {e}",
                    series.containerd().display()
                )
            });
        let lifeline = child.stdin.take();
        let c = Containerd {
            series,
            child: Mutex::new(child),
            lifeline: Mutex::new(lifeline),
            dir,
            socket,
            timeout: CTR_TIMEOUT,
        };
        c.wait_ready();
        c
    }

    /// Waits (≤ 20 s) until `ctr version` answers; panics with the log otherwise.
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(st)) = self.lock_child().try_wait() {
                panic!(
                    "containerd {} exited early ({st}):\n{}",
                    self.series.version(),
                    self.log()
                );
            }
            let out = self.ctr_in("default", &["version"], Duration::from_secs(5));
            if out.success {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "containerd {} did not answer `ctr version`:\n{}\n{}",
                    self.series.version(),
                    out.stderr,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn lock_child(&self) -> std::sync::MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn series(&self) -> Series {
        self.series
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

    /// Runs `ctr --address SOCK -n NAMESPACE ARGS…` (this series' ctr) with a timeout (the
    /// process is killed when it expires).
    pub fn ctr_in(&self, namespace: &str, args: &[&str], timeout: Duration) -> CtrOutput {
        let mut cmd = Command::new(self.series.ctr());
        cmd.arg("--address")
            .arg(&self.socket)
            .args(["--namespace", namespace])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        run_with_timeout(cmd, timeout)
    }

    /// `ctr images pull [--hosts-dir DIR] EXTRA… IMAGE` (fetch + unpack + image record), in a
    /// namespace of its own. `Err` carries ctr's stderr (or a timeout note).
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
        let ns = fresh_namespace();
        let hd = hosts_dir.map(|p| p.display().to_string());
        let mut args: Vec<&str> = sub.to_vec();
        if let Some(h) = &hd {
            args.extend(["--hosts-dir", h.as_str()]);
        }
        args.extend_from_slice(extra);
        args.push(image);
        let out = self.ctr_in(&ns, &args, self.timeout);
        // Forget the image and its content (a shared daemon lives on).
        self.clear(&ns);
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

    /// Removes every image and content blob of `namespace`.
    pub fn clear(&self, namespace: &str) {
        let t = Duration::from_secs(10);
        let imgs = self.ctr_in(namespace, &["images", "ls", "-q"], t);
        for i in imgs.stdout.lines().filter(|l| !l.trim().is_empty()) {
            let _ = self.ctr_in(namespace, &["images", "rm", "--sync", i.trim()], t);
        }
        let blobs = self.ctr_in(namespace, &["content", "ls", "-q"], t);
        for b in blobs.stdout.lines().filter(|l| !l.trim().is_empty()) {
            let _ = self.ctr_in(namespace, &["content", "rm", b.trim()], t);
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!(
                "---- containerd {} log tail ({}):\n{}",
                self.series.version(),
                self.log_path().display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        // Closing the lifeline makes the wrapper stop the daemon and remove its directory.
        drop(
            self.lifeline
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
        let _ = self.lock_child().wait();
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
