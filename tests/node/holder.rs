//! The node's filesystem view: one long-lived "holder" process (`sleep infinity`) in the node's
//! network namespace and in a private mount namespace of its own, where
//!
//! | node path        | what is mounted there                                              |
//! |------------------|--------------------------------------------------------------------|
//! | `/etc`           | overlayfs: the machine's `/etc` below, a test-owned upper dir      |
//! | `/var`           | overlayfs likewise (kubelet logs in `/var/log/pods`, CNI cache, …)  |
//! | `/usr/libexec`   | overlayfs likewise (the credential-provider bin dir lives below)    |
//! | `/run`           | bind of an empty test-owned dir (containerd state, sockets, …)     |
//! | the kubelet's root dir (`/var/lib/kubelet` unless the test sets another), `/var/lib/containerd` | binds of test-owned dirs (real ext4: the overlayfs snapshotter cannot stack on an overlay) |
//! | `/proc/sys/{vm,kernel}/…` | the six sysctls kubelet 1.20 "fixes" (`setupKernelTunables` in `pkg/kubelet/cm/container_manager_linux.go`: overcommit_memory, panic_on_oom, panic, panic_on_oops, keys.root_maxkeys, keys.root_maxbytes), bound to files that already hold its values, so it never writes the machine's real ones |
//!
//! Every node process (containerd, kubelet, …) is started with `nsenter --mount=/proc/H/ns/mnt
//! --net=/proc/H/ns/net`, so it and everything it starts (shims, runc, pods and their hostPath
//! mounts) see exactly these files; nothing the node writes reaches the machine's own `/etc`,
//! `/var`, `/run` or sysctls. The mount namespace dies with its last process.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// Overlay mounts: node path → name of its upper/work dirs under the holder's root.
const OVERLAYS: &[(&str, &str)] = &[
    ("/etc", "etc"),
    ("/var", "var"),
    ("/usr/libexec", "libexec"),
];

/// Sysctls the kubelet sets at start, with the values it wants (`utilsysctl` constants of 1.20).
const KUBELET_SYSCTLS: &[(&str, &str)] = &[
    ("vm/overcommit_memory", "1"),
    ("vm/panic_on_oom", "0"),
    ("kernel/panic", "10"),
    ("kernel/panic_on_oops", "1"),
    ("kernel/keys/root_maxkeys", "1000000"),
    ("kernel/keys/root_maxbytes", "25000000"),
];

/// The holder process; killed on Drop (the caller first stops everything else in its namespace).
pub struct Holder {
    child: Child,
    pid: u32,
    root: PathBuf,
    /// Searched first for the programs run inside the node: the node's containerd release
    /// (`containerd`, `ctr` and its shims) when it is not the machine's.
    bin_dir: Option<PathBuf>,
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

impl Holder {
    /// Starts the holder in the network namespace `netns` (a `/run/netns/NAME` path), with its
    /// backing dirs under `root`, and waits until its mounts are in place.
    /// The holder of a node whose kubelet runs with `--root-dir` `kubelet_root`.
    pub fn start(netns: &Path, root: &Path, kubelet_root: &str) -> Holder {
        let script = Self::script(root, kubelet_root);
        let script_path = root.join("holder.sh");
        std::fs::write(&script_path, script).expect("write holder.sh");
        let mut child = Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .args(["unshare", "--mount", "--propagation", "private", "sh"])
            .arg(&script_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the holder (nsenter/unshare from util-linux)");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("holder stdout");
        let _ = BufReader::new(stdout).read_line(&mut line);
        if line.trim() != "ready" {
            let _ = child.kill();
            let out = child.wait_with_output().expect("holder output");
            panic!(
                "the node's holder did not set up its mounts: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let pid = child.id();
        Holder {
            child,
            pid,
            root: root.to_path_buf(),
            bin_dir: None,
        }
    }

    fn script(root: &Path, kubelet_root: &str) -> String {
        let r = |p: &str| sh_quote(&root.join(p).display().to_string());
        let mut s = String::from("set -eu\n");
        for (node_path, name) in OVERLAYS {
            let (up, work) = (r(&format!("up/{name}")), r(&format!("work/{name}")));
            s += &format!(
                "mkdir -p {up} {work}\nmount -t overlay overlay -o lowerdir={node_path},upperdir={up},workdir={work} {node_path}\n"
            );
        }
        s += &format!("mkdir -p {run}\nmount --bind {run} /run\n", run = r("run"));
        for (node_path, name) in [
            (kubelet_root, "kubelet"),
            ("/var/lib/containerd", "containerd"),
        ] {
            s += &format!(
                "mkdir -p {d} {node_path}\nmount --bind {d} {node_path}\n",
                d = r(name)
            );
        }
        s += &format!("mkdir -p {}\n", r("sysctl"));
        for (name, value) in KUBELET_SYSCTLS {
            let file = r(&format!("sysctl/{}", name.replace('/', ".")));
            s += &format!("echo {value} > {file}\nmount --bind {file} /proc/sys/{name}\n");
        }
        s += "echo ready\nexec sleep infinity\n";
        s
    }

    /// Programs in `dir` win over the machine's (see the field).
    pub fn set_bin_dir(&mut self, dir: &Path) {
        self.bin_dir = Some(dir.to_path_buf());
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The dir holding the node's backing dirs (`run/`, `kubelet/`, `containerd/`, `up/…`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `nsenter --mount=… --net=… -- PROGRAM`: a command that runs inside the node.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        if let Some(d) = &self.bin_dir {
            let path = std::env::var("PATH").unwrap_or_default();
            c.env("PATH", format!("{}:{path}", d.display()));
        }
        c.arg(format!("--mount=/proc/{}/ns/mnt", self.pid))
            .arg(format!("--net=/proc/{}/ns/net", self.pid))
            .arg("--")
            .arg(program);
        c
    }

    /// The holder's network namespace file (for [`super::netns::ThreadNetns::enter`]).
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.pid))
    }

    /// Runs `sh -c SCRIPT sh ARGS…` inside the node, feeding `stdin`.
    pub fn sh(&self, script: &str, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = self
            .command("/bin/sh")
            .args(["-c", script, "sh"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nsenter sh");
        if let Some(mut i) = child.stdin.take() {
            let _ = i.write_all(stdin);
        }
        child.wait_with_output().expect("wait nsenter sh")
    }

    fn sh_ok(&self, what: &str, script: &str, args: &[&str], stdin: &[u8]) -> Vec<u8> {
        let out = self.sh(script, args, stdin);
        assert!(
            out.status.success(),
            "node: {what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Writes (creates or replaces) `path` as the node sees it, creating parent dirs; symlinks
    /// on the way are followed inside the node, as the runtime would follow them.
    pub fn write_file(&self, path: &str, data: &[u8], mode: u32) {
        assert!(path.starts_with('/'), "node paths are absolute: {path}");
        let mode = format!("{mode:o}");
        self.sh_ok(
            &format!("write {path}"),
            r#"mkdir -p -- "$(dirname -- "$1")" && cat > "$1" && chmod "$2" "$1""#,
            &[path, &mode],
            data,
        );
    }

    /// `ln -s TARGET LINK` inside the node, replacing whatever `LINK` was.
    pub fn symlink(&self, target: &str, link: &str) {
        self.sh_ok(
            &format!("symlink {link}"),
            r#"mkdir -p -- "$(dirname -- "$2")" && rm -rf -- "$2" && ln -s -- "$1" "$2""#,
            &[target, link],
            b"",
        );
    }

    /// `rm -rf PATH` inside the node.
    pub fn remove(&self, path: &str) {
        self.sh_ok(&format!("remove {path}"), r#"rm -rf -- "$1""#, &[path], b"");
    }

    /// `mkdir -p PATH` inside the node.
    pub fn mkdir(&self, path: &str) {
        self.sh_ok(
            &format!("mkdir {path}"),
            r#"mkdir -p -- "$1""#,
            &[path],
            b"",
        );
    }

    /// The file's content as the node sees it, or `None` if it cannot be read.
    pub fn read_file(&self, path: &str) -> Option<Vec<u8>> {
        let out = self.sh(r#"cat -- "$1""#, &[path], b"");
        out.status.success().then_some(out.stdout)
    }

    /// Every process in the node's mount namespace except the holder itself (pods, shims,
    /// runc, node daemons): all were started, directly or not, by this harness.
    pub fn processes(&self) -> Vec<u32> {
        Self::processes_of(self.pid)
    }

    /// [`Holder::processes`] for the holder with PID `holder_pid`.
    pub fn processes_of(holder_pid: u32) -> Vec<u32> {
        let Ok(ns) = std::fs::read_link(format!("/proc/{holder_pid}/ns/mnt")) else {
            return Vec::new();
        };
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&p| p != holder_pid)
            .filter(|p| {
                std::fs::read_link(format!("/proc/{p}/ns/mnt"))
                    .ok()
                    .as_ref()
                    == Some(&ns)
            })
            .collect()
    }

    /// SIGKILLs every process in the node's mount namespace but the holder, and waits (bounded)
    /// until they are gone. Returns how many were still there.
    pub fn kill_all_processes(&self) -> usize {
        let found = self.processes();
        for p in &found {
            let _ = Command::new("kill")
                .args(["-KILL", &p.to_string()])
                .output();
        }
        super::proc::poll(Duration::from_secs(10), || self.processes().is_empty());
        found.len()
    }

    /// Unmounts what the kubelet mounted under its root dir `kubelet_root` (secret / token tmpfs
    /// volumes), deepest first.
    pub fn unmount_kubelet_volumes(&self, kubelet_root: &str) {
        let _ = self.sh(
            r#"awk -v root="$1/" 'index($5, root) == 1 && length($5) > length(root) {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m" || true; done"#,
            &[kubelet_root],
            b"",
        );
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
