//! A lab for pre-flight tests: network namespaces with private addresses (kube-apiserver
//! refuses to proxy to loopback), one per agent, each joined to this namespace by a veth
//! pair; an address on this namespace's `lo` is the lab's "services" address, where TCP forwarders
//! expose the loopback-only kube-apiserver and registries to the namespaces. Nothing is sent
//! anywhere but to these addresses. Everything is removed on Drop.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::kube::KubeApiServer;

/// The agents' namespace.
pub const NS: &str = "pullprobe";

static NEXT: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ip_quiet(args: &[&str]) {
    let _ = Command::new("ip").args(args).output();
}

/// One namespace: its name and its address (the agent's "pod IP").
#[derive(Clone, Debug)]
pub struct Slot {
    pub netns: String,
    pub addr: Ipv4Addr,
}

pub struct Lab {
    prefix: String,
    /// 10.213.N.0/24 is this lab's.
    net: u8,
    pub slots: Vec<Slot>,
    pub service_ip: Ipv4Addr,
    children: Vec<Child>,
    forwards: Vec<Forward>,
}

impl Lab {
    /// `n` namespaces (at most 60).
    pub fn new(n: usize) -> Lab {
        assert!(n <= 60, "a lab has at most 60 namespaces");
        let k = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let net = ((pid.wrapping_mul(7) + k * 13) % 200 + 20) as u8;
        let prefix = format!("pf{}{}", pid % 10000, k);
        let service_ip = Ipv4Addr::new(10, 213, net, 254);
        // On `lo` (this kernel has no dummy links): the namespaces reach it through their
        // veth, as any local address.
        ip_quiet(&["addr", "del", &format!("{service_ip}/32"), "dev", "lo"]);
        ip(&["addr", "add", &format!("{service_ip}/32"), "dev", "lo"]);
        let mut lab = Lab {
            prefix,
            net,
            slots: Vec::new(),
            service_ip,
            children: Vec::new(),
            forwards: Vec::new(),
        };
        for i in 0..n {
            lab.add_slot(i);
        }
        lab
    }

    fn add_slot(&mut self, i: usize) {
        let netns = format!("{}-{i}", self.prefix);
        let (h, c) = (
            format!("{}h{i}", self.prefix),
            format!("{}n{i}", self.prefix),
        );
        let base = (i * 4) as u8;
        let host_ip = Ipv4Addr::new(10, 213, self.net, base + 1);
        let addr = Ipv4Addr::new(10, 213, self.net, base + 2);
        ip_quiet(&["netns", "del", &netns]);
        ip(&["netns", "add", &netns]);
        ip(&["link", "add", &h, "type", "veth", "peer", "name", &c]);
        ip(&["link", "set", &c, "netns", &netns]);
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &h]);
        ip(&["link", "set", &h, "up"]);
        let x = |args: &[&str]| {
            let mut a = vec!["netns", "exec", netns.as_str(), "ip"];
            a.extend_from_slice(args);
            ip(&a);
        };
        x(&["addr", "add", &format!("{addr}/30"), "dev", &c]);
        x(&["link", "set", &c, "up"]);
        x(&["link", "set", "lo", "up"]);
        x(&["route", "add", "default", "via", &host_ip.to_string()]);
        self.slots.push(Slot { netns, addr });
    }

    /// `service_ip:port` forwarding to `target` (a loopback server), for the namespaces.
    pub fn expose(&mut self, target: SocketAddr) -> SocketAddr {
        let f = Forward::start(SocketAddr::from((self.service_ip, 0)), target);
        let a = f.addr;
        self.forwards.push(f);
        a
    }

    /// A port on the service address where nothing listens (connection refused).
    pub fn dead_port(&self) -> SocketAddr {
        let l = TcpListener::bind((self.service_ip, 0)).expect("bind service ip");
        l.local_addr().expect("addr")
    }

    /// Run `program args…` in slot `i`'s namespace with stdout/stderr to `log`; killed on Drop.
    pub fn spawn_args(
        &mut self,
        i: usize,
        program: &str,
        args: &[String],
        env: &[(&str, &str)],
        log: &std::path::Path,
    ) -> u32 {
        let f = std::fs::File::create(log).expect("log file");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.slots[i].netns, program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("dup"))
            .stderr(f);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn in netns");
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// A listener in slot `i` on `port` that accepts connections and never answers.
    pub fn silent_listener(&mut self, i: usize, port: u16, log: &std::path::Path) {
        let script = format!(
            "import socket,time\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
             s.bind(('{}',{port}))\ns.listen(64)\nheld=[]\nwhile True:\n    c,_=s.accept()\n    held.append(c)\n",
            self.slots[i].addr
        );
        self.spawn_args(i, "python3", &["-c".into(), script], &[], log);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for s in &self.slots {
            ip_quiet(&["netns", "del", &s.netns]);
        }
        for i in 0..self.slots.len() {
            ip_quiet(&["link", "del", &format!("{}h{i}", self.prefix)]);
        }
        ip_quiet(&[
            "addr",
            "del",
            &format!("{}/32", self.service_ip),
            "dev",
            "lo",
        ]);
    }
}

/// A TCP forwarder (threads), stopped on Drop.
pub struct Forward {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Forward {
    pub fn start(bind: SocketAddr, target: SocketAddr) -> Forward {
        let l = TcpListener::bind(bind).expect("bind forwarder");
        let addr = l.local_addr().expect("addr");
        l.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((c, _)) => {
                        let _ = c.set_nonblocking(false);
                        if let Ok(t) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) {
                            pipe(c, t);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Forward { addr, stop }
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn pipe(a: TcpStream, b: TcpStream) {
    let (a2, b2) = (a.try_clone().expect("clone"), b.try_clone().expect("clone"));
    std::thread::spawn(move || copy(a, b2));
    std::thread::spawn(move || copy(b, a2));
}

fn copy(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

pub fn write(dir: &Path, rel: &str, text: &str) -> PathBuf {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    p
}

/// A node root: resolver files (nothing is ever resolved: IP literals), containerd's
/// config with a certs.d, the registry's hosts.toml, optionally a mirror and credentials.
pub fn node_root(
    reg: &str,
    mirror: Option<&str>,
    creds: Option<(&str, &str)>,
) -> tempfile::TempDir {
    use base64::Engine;
    let d = tempfile::Builder::new()
        .prefix("pf-root-")
        .tempdir()
        .unwrap();
    let r = d.path();
    write(
        r,
        "etc/resolv.conf",
        "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
    );
    write(r, "etc/hosts", "127.0.0.1 localhost\n");
    write(
        r,
        "etc/containerd/config.toml",
        "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n",
    );
    let mut hosts = format!("server = \"http://{reg}\"\n");
    if let Some(m) = mirror {
        hosts.push_str(&format!(
            "\n[host.\"http://{m}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        ));
    }
    write(
        r,
        &format!("etc/containerd/certs.d/{reg}/hosts.toml"),
        &hosts,
    );
    if let Some((u, p)) = creds {
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        write(
            r,
            "var/lib/kubelet/config.json",
            &json!({"auths": {reg: {"auth": auth}}}).to_string(),
        );
    }
    d
}

pub fn kubeconfig(
    api: &KubeApiServer,
    server: &str,
    token: &str,
    dir: &Path,
    name: &str,
) -> PathBuf {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(api.ca_pem());
    write(
        dir,
        name,
        &format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\n    tls-server-name: localhost\n\
             users:\n- name: t\n  user:\n    token: {token}\ncontexts:\n- name: t\n  context: {{cluster: t, user: t}}\ncurrent-context: t\n"
        ),
    )
}

/// The Node, and an agent Pod on it at `ip` (status patched as the kubelet would).
pub fn register(api: &KubeApiServer, node: &str, ip: Option<&str>, image: &str) {
    register_with(api, node, ip, image, &json!({"pool": "apps"}));
}

/// [`register`] with the Node's labels.
pub fn register_with(
    api: &KubeApiServer,
    node: &str,
    ip: Option<&str>,
    image: &str,
    labels: &serde_json::Value,
) {
    register_port(api, node, ip, image, labels, "http-metrics");
}

/// [`register_with`] with the name of the agent's port (`https-metrics`: the agent speaks TLS).
pub fn register_port(
    api: &KubeApiServer,
    node: &str,
    ip: Option<&str>,
    image: &str,
    labels: &serde_json::Value,
    port_name: &str,
) {
    let admin = api.admin_token();
    api.create_if_missing(
        "/api/v1/nodes",
        &json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": node, "labels": labels}}),
        admin,
    );
    // The API server taints a new Node not-ready (TaintNodesByCondition); with no
    // node-lifecycle controller here to lift it, lift it as it would once the node is Ready.
    let r = api
        .request_with(
            "PATCH",
            &format!("/api/v1/nodes/{node}"),
            admin,
            "application/merge-patch+json",
            Some(r#"{"spec":{"taints":null}}"#),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let Some(ip) = ip else { return };
    let pod = format!("pullprobe-{node}");
    api.create_if_missing(
        &format!("/api/v1/namespaces/{NS}/pods"),
        &json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod, "namespace": NS, "labels": {"app.kubernetes.io/name": "pullprobe", "app.kubernetes.io/component": "agent"}},
            "spec": {"nodeName": node, "automountServiceAccountToken": false, "hostNetwork": true,
                "containers": [{"name": "agent", "image": image, "ports": [{"name": port_name, "containerPort": 9808}]}]}}),
        admin,
    );
    let st =
        json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}).to_string();
    let r = api
        .request_with(
            "PATCH",
            &format!("/api/v1/namespaces/{NS}/pods/{pod}/status"),
            admin,
            "application/merge-patch+json",
            Some(&st),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
}

pub fn http(addr: &str, method: &str, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s =
        std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_millis(500))
            .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    Some((
        head.split_whitespace().nth(1)?.parse().ok()?,
        body.to_string(),
    ))
}
