//! The runtime's proxy settings (systemd drop-in `Environment=HTTPS_PROXY=…`) are
//! followed through a real HTTP proxy (tinyproxy): CONNECT tunnels, the proxy as its own
//! hop, NO_PROXY, and a proxy that is down or refuses.

mod harness;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use harness::*;
use serde_json::Value;

/// tinyproxy on 127.0.0.1:PORT. It resolves CONNECT targets itself, so it runs in a
/// private mount namespace whose /etc/hosts maps `registry.test` to loopback (the
/// machine's own /etc/hosts is untouched).
struct TinyProxy {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl TinyProxy {
    fn start() -> TinyProxy {
        Self::start_with("")
    }

    /// With extra tinyproxy.conf lines (e.g. `ConnectPort 443`).
    fn start_with(extra_conf: &str) -> TinyProxy {
        let dir = tempfile::tempdir().unwrap();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let hosts = dir.path().join("hosts");
        std::fs::write(&hosts, "127.0.0.1 localhost registry.test\n").unwrap();
        let conf = dir.path().join("tinyproxy.conf");
        let log = dir.path().join("tinyproxy.log");
        std::fs::write(
            &conf,
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 20\nAllow 127.0.0.1\n\
                 LogFile \"{}\"\nLogLevel Connect\n{extra_conf}",
                log.display()
            ),
        )
        .unwrap();
        let script = format!(
            "mount --bind {} /etc/hosts && exec tinyproxy -d -c {}",
            hosts.display(),
            conf.display()
        );
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tinyproxy (apt-get install tinyproxy)");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        TinyProxy { child, port, dir }
    }
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tinyproxy.log")).unwrap_or_default()
    }
}

impl Drop for TinyProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node host root: containerd with a hosts.toml trusting the test CA for
/// registry.test:PORT, and a containerd.service drop-in with the proxy environment.
fn host_root(reg_port: u16, ca: &Path, proxy_env: &str) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let certs = r.join(format!("etc/containerd/certs.d/registry.test:{reg_port}"));
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::write(
        r.join("etc/containerd/config.toml"),
        "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n",
    )
    .unwrap();
    std::fs::copy(ca, certs.join("ca.pem")).unwrap();
    std::fs::write(
        certs.join("hosts.toml"),
        format!("server = \"https://registry.test:{reg_port}\"\n[host.\"https://registry.test:{reg_port}\"]\n  ca = \"ca.pem\"\n"),
    )
    .unwrap();
    let dropin = r.join("etc/systemd/system/containerd.service.d");
    std::fs::create_dir_all(&dropin).unwrap();
    std::fs::write(
        dropin.join("http-proxy.conf"),
        format!("[Service]\n{proxy_env}\n"),
    )
    .unwrap();
    std::fs::write(r.join("etc/hosts"), "127.0.0.1 localhost registry.test\n").unwrap();
    // No nameserver is needed: every name is in the hosts file or goes through the proxy.
    std::fs::write(
        r.join("etc/resolv.conf"),
        "nameserver 127.0.53.254\noptions timeout:1 attempts:1\n",
    )
    .unwrap();
    root
}

fn check(root: &Path, image: &str) -> Value {
    let out = run_pullprobe(
        &[
            "check",
            "--json",
            "--host-root",
            root.to_str().unwrap(),
            "--runtime",
            "containerd",
            image,
        ],
        None,
    );
    json_lines(&out.stdout)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no output: {}", String::from_utf8_lossy(&out.stderr)))
}

/// `check` of the registry's image on a node whose containerd.service has `environment`.
fn check_with_unit_env(reg: &Registry, ca: &Path, environment: &str) -> Value {
    let root = host_root(reg.port(), ca, environment);
    let image = format!("registry.test:{}/demo/app:v1", reg.port());
    check(root.path(), &image)
}

fn setup() -> (Pki, Registry, PathBuf) {
    let pki = Pki::new();
    let reg = Registry::builder().tls(&pki.server).start();
    OciImage::single("v1").push(&reg, "demo/app", &PushOpts::tls(&pki));
    let ca = pki.ca_cert.clone();
    (pki, reg, ca)
}

#[test]
fn pulls_through_the_runtime_proxy_with_a_connect_tunnel() {
    let (_pki, reg, ca) = setup();
    let proxy = TinyProxy::start();
    let v = check_with_unit_env(
        &reg,
        &ca,
        &format!(
            "Environment=\"HTTPS_PROXY=http://127.0.0.1:{}\" \"NO_PROXY=.internal\"",
            proxy.port
        ),
    );
    assert_eq!(v["verdict"], "ready", "{v:#}");
    let phases = v["phases"].as_array().unwrap();
    // The proxy is its own hop, and the registry connection is a tunnel through it.
    assert!(phases.iter().any(|p| p["name"] == "connect"
        && p["host"] == format!("127.0.0.1:{}", proxy.port)
        && p["ok"] == true));
    assert!(phases.iter().any(|p| p["name"] == "connect"
        && p["detail"]
            .as_str()
            .unwrap_or("")
            .contains("tunnel via proxy")));
    let log = proxy.log();
    assert!(
        log.contains("registry.test"),
        "tinyproxy saw no CONNECT: {log}"
    );
}

#[test]
fn no_proxy_goes_direct() {
    let (_pki, reg, ca) = setup();
    let proxy = TinyProxy::start();
    let v = check_with_unit_env(
        &reg,
        &ca,
        &format!(
            "Environment=\"HTTPS_PROXY=http://127.0.0.1:{}\" \"NO_PROXY=registry.test\"",
            proxy.port
        ),
    );
    assert_eq!(v["verdict"], "ready", "{v:#}");
    // The proxy is up (it answers), yet the registry was reached directly.
    assert!(std::net::TcpStream::connect(("127.0.0.1", proxy.port)).is_ok());
    let phases = v["phases"].as_array().unwrap();
    assert!(phases
        .iter()
        .all(|p| p["host"] != format!("127.0.0.1:{}", proxy.port)));
    assert!(phases
        .iter()
        .any(|p| p["name"] == "dns" && p["host"] == format!("registry.test:{}", reg.port())));
    assert!(
        !proxy.log().contains("registry.test"),
        "NO_PROXY host went through the proxy"
    );
}

#[test]
fn proxy_down_or_refusing() {
    let (_pki, reg, ca) = setup();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let v = check_with_unit_env(
        &reg,
        &ca,
        &format!("Environment=\"HTTPS_PROXY=http://127.0.0.1:{dead_port}\""),
    );
    assert_eq!(v["verdict"], "not_ready");
    assert_eq!(v["phase"], "connect");
    assert_eq!(v["reason"], "ConnectRefused");
    assert!(v["message"].as_str().unwrap().contains("proxy"), "{v:#}");

    // A proxy that allows CONNECT to port 443 only refuses this registry's port.
    let strict = TinyProxy::start_with("ConnectPort 443\n");
    let v = check_with_unit_env(
        &reg,
        &ca,
        &format!(
            "Environment=\"HTTPS_PROXY=http://127.0.0.1:{}\"",
            strict.port
        ),
    );
    assert_eq!(v["verdict"], "not_ready", "{v:#}");
    assert_eq!(v["reason"], "ProxyConnectFailed", "{v:#}");
    assert_eq!(v["phase"], "connect");
}
