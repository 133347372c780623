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
//! ```ignore
//! let ctrd = Containerd::start();
//! ctrd.ctr_pull("127.0.0.1:5000/team/app:v1", Some(&certs_d), &["--user", "u:p"])?;
//! ctrd.ctr_fetch("127.0.0.1:5000/team/app:v1", Some(&certs_d), &[])?;
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
    /// Starts the daemon and waits (≤ 10 s) until `ctr version` works; panics otherwise.
    pub fn start() -> Containerd {
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
  "io.containerd.grpc.v1.cri",
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
        );
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
