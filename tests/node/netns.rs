//! The node's network namespace: `ip netns add`, `lo` up, and a veth pair with private /30
//! addresses (host side `.1`, node side `.2`, named `eth0` inside), without any default route, so
//! nothing sent inside can leave the machine.
//!
//! [`ThreadNetns`] moves the calling thread (and every thread and process it creates afterwards)
//! into the namespace with `setns(2)`, and moves it back on Drop.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};

/// Prefix of every namespace this harness creates: `ppnode-<pid>-<k>`.
pub const NETNS_PREFIX: &str = "ppnode-";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Runs a command, panicking with its stderr when it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ip(args: &[&str]) -> String {
    run(Command::new("ip").args(args))
}

/// A network namespace with a veth pair to the host; deleted on Drop.
pub struct Netns {
    name: String,
    host_if: String,
    host_ip: Ipv4Addr,
    node_ip: Ipv4Addr,
}

impl Netns {
    /// Creates `ppnode-<pid>-<k>` with `lo` up and `eth0` = `10.213.X.Y+2/30` (peer on the host
    /// side: `+1`). The /30 is chosen so that no interface of the host already uses it.
    pub fn create() -> Netns {
        let used = ip(&["-4", "-o", "addr", "show"]);
        let pid = std::process::id();
        for _ in 0..64 {
            let k = (pid
                .wrapping_mul(7)
                .wrapping_add(NEXT.fetch_add(1, Ordering::SeqCst)))
                % 16_000
                + 1;
            let base = Ipv4Addr::new(10, 213, (k / 64) as u8, ((k % 64) * 4) as u8);
            let [a, b, c, d] = base.octets();
            let host_ip = Ipv4Addr::new(a, b, c, d + 1);
            let node_ip = Ipv4Addr::new(a, b, c, d + 2);
            let host_if = format!("ppn{k}h");
            if used.contains(&format!("inet {host_ip}/"))
                || used.contains(&format!("inet {node_ip}/"))
                || std::path::Path::new("/sys/class/net")
                    .join(&host_if)
                    .exists()
            {
                continue;
            }
            let ns = Netns {
                name: format!("{NETNS_PREFIX}{pid}-{k}"),
                host_if,
                host_ip,
                node_ip,
            };
            ns.setup();
            return ns;
        }
        panic!("no free 10.213.x.y/30 for the node's veth pair");
    }

    fn setup(&self) {
        let (n, h) = (self.name.as_str(), self.host_if.as_str());
        // `ppn<k>h` on the host, `ppn<k>n` until it is renamed `eth0` inside.
        let peer = format!("{}n", h.trim_end_matches('h'));
        ip(&["netns", "add", n]);
        ip(&["-n", n, "link", "set", "lo", "up"]);
        ip(&["link", "add", h, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", &peer, "netns", n]);
        ip(&["-n", n, "link", "set", &peer, "name", "eth0"]);
        ip(&["addr", "add", &format!("{}/30", self.host_ip), "dev", h]);
        ip(&["link", "set", h, "up"]);
        ip(&[
            "-n",
            n,
            "addr",
            "add",
            &format!("{}/30", self.node_ip),
            "dev",
            "eth0",
        ]);
        ip(&["-n", n, "link", "set", "eth0", "up"]);
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/NAME`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// The node's own address (`eth0` inside the namespace; the kubelet's `--node-ip`).
    pub fn node_ip(&self) -> Ipv4Addr {
        self.node_ip
    }

    /// The host side of the veth pair (reachable from inside the namespace).
    pub fn host_ip(&self) -> Ipv4Addr {
        self.host_ip
    }

    /// Moves the calling thread into this namespace until the guard is dropped.
    pub fn enter(&self) -> ThreadNetns {
        ThreadNetns::enter(&self.path())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the host side destroys the pair at once; the namespace itself goes away when
        // the last process or socket in it is gone.
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// The calling thread's network namespace switched to another one; switched back on Drop.
pub struct ThreadNetns {
    original: File,
}

impl ThreadNetns {
    /// `setns(2)` of the calling thread into the namespace file `ns` (e.g. `/run/netns/NAME`,
    /// `/proc/PID/ns/net`).
    pub fn enter(ns: &std::path::Path) -> ThreadNetns {
        let original = File::open("/proc/thread-self/ns/net").expect("open own netns");
        let target = File::open(ns).unwrap_or_else(|e| panic!("open {}: {e}", ns.display()));
        move_into_link_name_space(target.as_fd(), Some(LinkNameSpaceType::Network))
            .unwrap_or_else(|e| panic!("setns {}: {e}", ns.display()));
        ThreadNetns { original }
    }
}

impl Drop for ThreadNetns {
    fn drop(&mut self) {
        let _ = move_into_link_name_space(self.original.as_fd(), Some(LinkNameSpaceType::Network));
    }
}

/// Removes namespaces `ppnode-<pid>-*` left by a harness process that no longer runs (a test
/// killed before its Drop ran): kills the processes still inside (they were started by that
/// harness) and deletes the namespace. Call with the cluster lock held.
pub fn remove_stale() {
    let Ok(list) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&list.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(rest) = name.strip_prefix(NETNS_PREFIX) else {
            continue;
        };
        let owner = rest.split('-').next().unwrap_or_default();
        if owner.is_empty() || std::path::Path::new("/proc").join(owner).exists() {
            continue;
        }
        eprintln!("node harness: removing stale network namespace {name} (owner {owner} gone)");
        kill_netns_processes(name);
        let _ = Command::new("ip").args(["netns", "del", name]).output();
    }
}

fn kill_netns_processes(name: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() else {
        return;
    };
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if pid.chars().all(|c| c.is_ascii_digit()) {
            let _ = Command::new("kill").args(["-KILL", pid]).output();
        }
    }
}
