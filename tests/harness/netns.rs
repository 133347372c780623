//! A network namespace of the tests' own, joined to this one by a veth pair: a check run
//! inside it (`ip netns exec`) reaches listeners on this side through the namespace's own
//! routes and packet filter, and nothing it does touches the rest of the machine.

use std::net::{Ipv4Addr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// A network namespace joined to this one by a veth pair (10.O.N.1 here, .2 inside), so a
/// check run inside it reaches listeners on 10.O.N.1 through the namespace's own packet
/// filter: rules there touch nothing else on the machine. Deleted on Drop (with the pair).
pub struct NetNs {
    pub name: String,
    /// This side of the pair (`10.O.N.1`): listeners here are reached from inside.
    pub host_ip: Ipv4Addr,
    /// The namespace's own address (`10.O.N.2`).
    pub ns_ip: Ipv4Addr,
}

pub fn sh(cmd: &[&str]) -> bool {
    Command::new(cmd[0])
        .args(&cmd[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

impl NetNs {
    /// `ppfm-PID` on 10.253.N.0/30 (the fault matrix's).
    pub fn create() -> NetNs {
        Self::create_in("ppfm", 253)
    }

    /// A namespace named `TAG-PID-K` on `10.OCTET.N.0/30` (N from the pid and a counter, so
    /// the namespaces of one process never share a subnet; each test binary keeps to its
    /// own `octet`).
    pub fn create_in(tag: &str, octet: u8) -> NetNs {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let k = NEXT.fetch_add(1, Ordering::SeqCst);
        let id = (std::process::id() + k * 41) % 250;
        let name = match k {
            0 => format!("{tag}-{}", std::process::id()),
            _ => format!("{tag}-{}-{k}", std::process::id()),
        };
        let (host_if, ns_if) = (format!("{tag}{id}h"), format!("{tag}{id}n"));
        let host_ip = Ipv4Addr::new(10, octet, id as u8, 1);
        let ns_ip = Ipv4Addr::new(10, octet, id as u8, 2);
        let _ = sh(&["ip", "netns", "del", &name]);
        let _ = sh(&["ip", "link", "del", &host_if]);
        assert!(
            sh(&["ip", "netns", "add", &name]),
            "ip netns add (the matrix needs root)"
        );
        let ns = NetNs {
            name,
            host_ip,
            ns_ip,
        };
        let steps: Vec<Vec<String>> = vec![
            vec![
                "ip", "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
            ],
            vec!["ip", "link", "set", &ns_if, "netns", &ns.name],
            vec![
                "ip",
                "addr",
                "add",
                &format!("{host_ip}/30"),
                "dev",
                &host_if,
            ],
            vec!["ip", "link", "set", &host_if, "up"],
        ]
        .into_iter()
        .map(|v| v.into_iter().map(str::to_string).collect())
        .collect();
        for s in &steps {
            let s: Vec<&str> = s.iter().map(String::as_str).collect();
            assert!(sh(&s), "netns setup step failed: {s:?}");
        }
        for s in [
            vec!["ip", "addr", "add", &format!("{ns_ip}/30"), "dev", &ns_if],
            vec!["ip", "link", "set", &ns_if, "up"],
            vec!["ip", "link", "set", "lo", "up"],
        ] {
            assert!(ns.exec(&s), "netns setup step failed: {s:?}");
        }
        ns
    }
    pub fn exec(&self, cmd: &[&str]) -> bool {
        let mut all = vec!["ip", "netns", "exec", &self.name];
        all.extend_from_slice(cmd);
        sh(&all)
    }
    /// A listener on the host side (the kernel completes handshakes; nobody accepts).
    pub fn listener(&self) -> TcpListener {
        TcpListener::bind((self.host_ip, 0)).expect("bind on the veth address")
    }
    /// A port on the host side where nothing listens.
    pub fn free_port(&self) -> u16 {
        self.listener().local_addr().expect("addr").port()
    }
    pub fn image(&self, port: u16) -> String {
        format!("{}:{port}/demo/app:v1", self.host_ip)
    }
    /// `iptables -A OUTPUT RULE…` inside the namespace (removed with the namespace).
    pub fn iptables_output(&self, rule: &[&str]) {
        let mut cmd = vec!["iptables", "-A", "OUTPUT"];
        cmd.extend_from_slice(rule);
        assert!(self.exec(&cmd), "iptables in the namespace: {rule:?}");
    }
    /// An nftables output rule inside the namespace.
    pub fn nft_output(&self, rule: &str) {
        let _ = self.exec(&["nft", "add", "table", "inet", "fm"]);
        let _ = self.exec(&[
            "nft",
            "add chain inet fm out { type filter hook output priority 0 ; }",
        ]);
        let r = format!("add rule inet fm out {rule}");
        assert!(self.exec(&["nft", &r]), "nft in the namespace: {rule}");
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = sh(&["ip", "netns", "del", &self.name]);
    }
}
