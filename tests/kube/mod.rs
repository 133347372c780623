//! A REAL Kubernetes control plane on loopback for integration tests: `etcd` (Debian `etcd-server`,
//! 3.4) and `kube-apiserver` v1.20.2 built by `.ci/build-kubernetes.sh` into a cache outside the
//! clone. Each [`KubeApiServer`] has its own empty etcd data dir, free ports on 127.0.0.1, its own
//! PKI and tokens; both processes are killed and reaped on Drop (logs printed if the test panicked).
//!
//! ```ignore
//! mod kube;                        // this module; the `kube` CRATE is then `::kube` in that file
//! use crate::kube::KubeApiServer;
//!
//! #[test]
//! fn example() {
//!     let api = KubeApiServer::start();              // ~5 s; panics with a clear message if not built
//!     let admin = api.admin_token();                 // group system:masters
//!     let node = api.node_token("node-a");           // system:node:node-a in system:nodes
//!     let r = api.request("POST", "/api/v1/nodes", admin, Some(&node_json)).unwrap();
//!     assert_eq!(r.status, 201, "{}", r.body);
//!     let sa = api.create_service_account("pullprobe", "pullprobe"); // ns + SA + TokenRequest (1 h)
//!     let kubeconfig = api.write_kubeconfig(&sa);   // for `pullprobe agent` (KUBECONFIG=…)
//!     // inside a tokio runtime: let client = api.client(&sa);  (kube::Client, ring TLS)
//!     let writes = api.audit_writes_by("system:serviceaccount:pullprobe:pullprobe"); // audit log
//!     let ev = api.wait_for_audit(Duration::from_secs(2), |ev| ev.len() >= 10);
//!     api.stop_apiserver();  /* … */  api.start_apiserver();   // same port, same etcd
//! }
//! ```
//!
//! Binary lookup: `$PULLPROBE_KUBE_APISERVER`, else `$PULLPROBE_CACHE/kubernetes/kube-apiserver`
//! (`PULLPROBE_CACHE` defaults to `/var/cache/pullprobe`).
//!
//! What a real 1.20 server without controller-manager or kubelet does NOT do (see
//! /work/shared/test-infra.md): no `default` ServiceAccount in new namespaces (use
//! [`KubeApiServer::create_namespace`], which creates it), pods need
//! `automountServiceAccountToken: false`, deletions need `gracePeriodSeconds: 0`, namespaces never
//! finish deleting, token authentication is cached ~10 s after a ServiceAccount is deleted.
#![allow(dead_code)]

use std::fmt;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use tempfile::TempDir;

/// Kubernetes version the harness expects (the Debian source package's).
pub const KUBE_VERSION: &str = "v1.20.2";

/// Node identities that get a static token by default (`system:node:<name>`, group `system:nodes`).
pub const DEFAULT_NODES: &[&str] = &["node-a", "node-b", "node-c"];

/// Path of the cached kube-apiserver binary (see module docs).
pub fn kube_apiserver_path() -> PathBuf {
    if let Some(p) = std::env::var_os("PULLPROBE_KUBE_APISERVER") {
        return PathBuf::from(p);
    }
    kube_binary_path("kube-apiserver")
}

/// `$PULLPROBE_CACHE/kubernetes/NAME` (default cache root `/var/cache/pullprobe`), where
/// `.ci/build-kubernetes.sh` installs kube-apiserver, kubelet, kube-controller-manager,
/// kube-scheduler and kubectl.
pub fn kube_binary_path(name: &str) -> PathBuf {
    let root = std::env::var_os("PULLPROBE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/pullprobe"));
    root.join("kubernetes").join(name)
}

/// Panics (fails the test) with instructions when the binary or etcd is missing.
fn require_binaries() -> PathBuf {
    let bin = kube_apiserver_path();
    if !bin.is_file() {
        panic!(
            "kube-apiserver {KUBE_VERSION} not found at {}.\n\
             Build it once (about 6 min on 2 cores, cached outside the clone):\n\
             \x20   .ci/build-kubernetes.sh\n\
             (set PULLPROBE_CACHE=DIR to use another cache root, or PULLPROBE_KUBE_APISERVER=PATH)",
            bin.display()
        );
    }
    if which("etcd").is_none() {
        panic!("etcd not found in PATH: run .ci/install-deps.sh (Debian package etcd-server)");
    }
    bin
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// A port that was free a moment ago (racy by nature: callers retry when the server fails to bind).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

fn random_token() -> String {
    let mut b = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("read /dev/urandom");
    hex::encode(b)
}

/// An HTTP response from [`KubeApiServer::request`].
#[derive(Clone)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

impl Response {
    /// Body parsed as JSON (`Value::Null` if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}: {}", self.status, self.body)
    }
}

/// Builder: extra node identities, extra static users.
pub struct KubeApiServerBuilder {
    nodes: Vec<String>,
    users: Vec<(String, Vec<String>)>,
    extra_args: Vec<String>,
}

impl KubeApiServerBuilder {
    /// Adds a node identity `system:node:<name>` (group `system:nodes`) with a static token.
    pub fn node(mut self, name: &str) -> Self {
        if !self.nodes.iter().any(|n| n == name) {
            self.nodes.push(name.to_string());
        }
        self
    }

    /// Adds a static-token user with the given groups (no RBAC bindings: bind them yourself).
    pub fn user(mut self, name: &str, groups: &[&str]) -> Self {
        self.users.push((
            name.to_string(),
            groups.iter().map(|g| g.to_string()).collect(),
        ));
        self
    }

    /// Extra kube-apiserver flag(s), e.g. `--v=4`.
    pub fn arg(mut self, a: &str) -> Self {
        self.extra_args.push(a.to_string());
        self
    }

    /// Starts etcd and kube-apiserver and waits until `/readyz` answers 200 (about 5 s).
    pub fn start(self) -> KubeApiServer {
        KubeApiServer::start_with(self)
    }
}

/// A running etcd + kube-apiserver pair. See the module docs.
pub struct KubeApiServer {
    dir: TempDir,
    bin: PathBuf,
    etcd: Option<Child>,
    apiserver: Option<Child>,
    etcd_url: String,
    port: u16,
    ca_pem: String,
    ca_path: PathBuf,
    admin_token: String,
    node_tokens: Vec<(String, String)>,
    user_tokens: Vec<(String, String)>,
    extra_args: Vec<String>,
    tls: Arc<rustls::ClientConfig>,
}

impl KubeApiServer {
    pub fn builder() -> KubeApiServerBuilder {
        KubeApiServerBuilder {
            nodes: DEFAULT_NODES.iter().map(|s| s.to_string()).collect(),
            users: Vec::new(),
            extra_args: Vec::new(),
        }
    }

    /// Starts with the default node identities ([`DEFAULT_NODES`]).
    pub fn start() -> KubeApiServer {
        Self::builder().start()
    }

    fn start_with(b: KubeApiServerBuilder) -> KubeApiServer {
        let bin = require_binaries();
        let dir = tempfile::Builder::new()
            .prefix("pullprobe-kube-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path();

        // PKI: a CA and a serving leaf (rustls rejects a CA used as the end entity).
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "pullprobe-test-kube-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("keygen"))
            .expect("self-sign CA");
        let mut leaf_params = CertificateParams::new(vec![
            "localhost".to_string(),
            "kubernetes".to_string(),
            "kubernetes.default.svc".to_string(),
        ])
        .expect("leaf params");
        leaf_params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().expect("ip")));
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        leaf_params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let leaf_key = KeyPair::generate().expect("keygen");
        let leaf = leaf_params.signed_by(&leaf_key, &ca).expect("sign leaf");
        let ca_pem = ca.pem();
        let ca_path = d.join("ca.crt");
        std::fs::write(&ca_path, &ca_pem).expect("write ca");
        std::fs::write(d.join("apiserver.crt"), leaf.pem()).expect("write leaf");
        std::fs::write(d.join("apiserver.key"), leaf_key.serialize_pem()).expect("write key");
        // ServiceAccount token signing key (ECDSA P-256, PKCS#8; 1.20 signs ES256 with it).
        let sa_key = KeyPair::generate().expect("keygen");
        std::fs::write(d.join("sa.key"), sa_key.serialize_pem()).expect("write sa key");
        // 1.20 reads only public keys (PKIX) or RSA/EC private keys from --service-account-key-file.
        std::fs::write(d.join("sa.pub"), sa_key.public_key_pem()).expect("write sa pub");

        // Static tokens: token,user,uid,"group1,group2".
        let admin_token = random_token();
        let mut csv = format!("{admin_token},admin,uid-admin,\"system:masters\"\n");
        let mut node_tokens = Vec::new();
        for n in &b.nodes {
            let t = random_token();
            csv.push_str(&format!(
                "{t},system:node:{n},uid-node-{n},\"system:nodes\"\n"
            ));
            node_tokens.push((n.clone(), t));
        }
        let mut user_tokens = Vec::new();
        for (u, groups) in &b.users {
            let t = random_token();
            csv.push_str(&format!("{t},{u},uid-user-{u},\"{}\"\n", groups.join(",")));
            user_tokens.push((u.clone(), t));
        }
        std::fs::write(d.join("tokens.csv"), csv).expect("write tokens");

        // Audit everything at Metadata level, once per request (ResponseComplete), so tests can
        // count API writes the way the issue asks ("from the apiserver audit log").
        std::fs::write(
            d.join("audit-policy.yaml"),
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\n\
             rules:\n- level: Metadata\n",
        )
        .expect("write audit policy");

        let tls = client_tls(&ca_pem);
        let mut server = KubeApiServer {
            dir,
            bin,
            etcd: None,
            apiserver: None,
            etcd_url: String::new(),
            port: 0,
            ca_pem,
            ca_path,
            admin_token,
            node_tokens,
            user_tokens,
            extra_args: b.extra_args,
            tls,
        };
        server.start_etcd();
        // The secure port is chosen once so that stop/start keeps the URL; retry on a bind race.
        let mut last_err = String::new();
        for _ in 0..3 {
            server.port = free_port();
            match server.try_start_apiserver() {
                Ok(()) => return server,
                Err(e) => last_err = e,
            }
        }
        panic!("kube-apiserver did not become ready: {last_err}");
    }

    fn start_etcd(&mut self) {
        let data = self.dir.path().join("etcd-data");
        let mut last = String::new();
        for _ in 0..3 {
            let _ = std::fs::remove_dir_all(&data);
            let (cport, pport) = (free_port(), free_port());
            let client = format!("http://127.0.0.1:{cport}");
            let peer = format!("http://127.0.0.1:{pport}");
            let log = std::fs::File::create(self.dir.path().join("etcd.log")).expect("etcd log");
            let mut child = Command::new("etcd")
                .arg("--name=pullprobe-test")
                .arg(format!("--data-dir={}", data.display()))
                .arg(format!("--listen-client-urls={client}"))
                .arg(format!("--advertise-client-urls={client}"))
                .arg(format!("--listen-peer-urls={peer}"))
                .arg(format!("--initial-advertise-peer-urls={peer}"))
                .arg(format!("--initial-cluster=pullprobe-test={peer}"))
                .arg("--initial-cluster-state=new")
                .arg("--listen-metrics-urls=")
                .env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup log"))
                .stderr(log)
                .spawn()
                .expect("spawn etcd");
            let deadline = Instant::now() + Duration::from_secs(20);
            let addr: SocketAddr = format!("127.0.0.1:{cport}").parse().expect("addr");
            loop {
                if let Ok(Some(st)) = child.try_wait() {
                    last = format!("etcd exited with {st}: {}", self.etcd_log_tail());
                    break;
                }
                if plain_http_get(addr, "/health")
                    .map(|b| b.contains("\"health\":\"true\""))
                    .unwrap_or(false)
                {
                    self.etcd = Some(child);
                    self.etcd_url = client;
                    return;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last = format!("etcd not healthy in 20 s: {}", self.etcd_log_tail());
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("could not start etcd: {last}");
    }

    fn try_start_apiserver(&mut self) -> Result<(), String> {
        let d = self.dir.path();
        let p = |f: &str| d.join(f).display().to_string();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("kube-apiserver.log"))
            .map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg(format!("--etcd-servers={}", self.etcd_url))
            .arg("--bind-address=127.0.0.1")
            .arg("--advertise-address=127.0.0.1")
            .arg(format!("--secure-port={}", self.port))
            .arg("--insecure-port=0")
            .arg(format!("--cert-dir={}", p("certs")))
            .arg(format!("--tls-cert-file={}", p("apiserver.crt")))
            .arg(format!("--tls-private-key-file={}", p("apiserver.key")))
            .arg(format!("--token-auth-file={}", p("tokens.csv")))
            .arg("--anonymous-auth=false")
            .arg("--authorization-mode=Node,RBAC")
            .arg("--enable-admission-plugins=NodeRestriction")
            .arg(format!("--service-account-key-file={}", p("sa.pub")))
            .arg(format!(
                "--service-account-signing-key-file={}",
                p("sa.key")
            ))
            .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
            .arg("--service-cluster-ip-range=10.96.0.0/24")
            .arg("--endpoint-reconciler-type=none")
            .arg("--enable-priority-and-fairness=false")
            .arg(format!("--audit-policy-file={}", p("audit-policy.yaml")))
            .arg(format!("--audit-log-path={}", p("audit.log")))
            .arg("--audit-log-mode=blocking")
            .arg("--audit-log-maxsize=0")
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("spawn kube-apiserver: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return Err(format!(
                    "kube-apiserver exited with {st}:\n{}",
                    self.apiserver_log_tail()
                ));
            }
            if let Ok(r) = self.request("GET", "/readyz", &self.admin_token, None) {
                if r.status == 200 {
                    self.apiserver = Some(child);
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "not ready within 60 s:\n{}",
                    self.apiserver_log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills kube-apiserver (etcd keeps running, so state survives): for "API server down" tests.
    pub fn stop_apiserver(&mut self) {
        if let Some(mut c) = self.apiserver.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts kube-apiserver again on the same port with the same etcd, tokens and keys.
    pub fn start_apiserver(&mut self) {
        if self.apiserver.is_some() {
            return;
        }
        // The old socket may linger briefly; retry on the same port.
        let mut last = String::new();
        for _ in 0..5 {
            match self.try_start_apiserver() {
                Ok(()) => return,
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!(
            "kube-apiserver did not restart on port {}: {last}",
            self.port
        );
    }

    /// `https://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// PEM of the CA that signed the serving certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn ca_path(&self) -> &Path {
        &self.ca_path
    }

    /// The ServiceAccount token signing key (PKCS#8 PEM), e.g. for kube-controller-manager's
    /// `--service-account-private-key-file` (its token controller signs with it).
    pub fn service_account_key_path(&self) -> PathBuf {
        self.dir.path().join("sa.key")
    }

    /// Token of `admin` in group `system:masters`.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// Token of `system:node:<name>` in `system:nodes`; the name must be in [`DEFAULT_NODES`] or
    /// added with [`KubeApiServerBuilder::node`] (the token file is read at start).
    pub fn node_token(&self, name: &str) -> &str {
        self.node_tokens
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.as_str())
            .unwrap_or_else(|| {
                panic!("no token for node {name:?}: add it with KubeApiServer::builder().node(..)")
            })
    }

    /// Token of a user added with [`KubeApiServerBuilder::user`].
    pub fn user_token(&self, name: &str) -> &str {
        self.user_tokens
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.as_str())
            .unwrap_or_else(|| {
                panic!("no user {name:?}: add it with KubeApiServer::builder().user(..)")
            })
    }

    /// Scratch directory of this instance (logs, keys, etcd data).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// One HTTPS request with a bearer token; `body` is sent as `application/json` (for patches
    /// and other content types use [`KubeApiServer::request_with`]). Err only for transport errors.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Response, String> {
        let body = body.map(|b| b.to_string());
        self.request_with(method, path, token, "application/json", body.as_deref())
    }

    /// One HTTPS request with an explicit content type (e.g.
    /// `application/strategic-merge-patch+json`, `application/merge-patch+json`,
    /// `application/json-patch+json`, `application/apply-patch+yaml`).
    pub fn request_with(
        &self,
        method: &str,
        path: &str,
        token: &str,
        content_type: &str,
        body: Option<&str>,
    ) -> Result<Response, String> {
        let req = RawRequest {
            addr: self.addr(),
            tls: self.tls.clone(),
            method: method.to_string(),
            path: path.to_string(),
            token: token.to_string(),
            content_type: content_type.to_string(),
            body: body.map(|b| b.as_bytes().to_vec()),
        };
        on_own_runtime(move || async move { https_request(req).await })
    }

    /// Like [`KubeApiServer::request`] but panics unless the status is 2xx; returns the JSON body.
    pub fn must(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&serde_json::Value>,
    ) -> serde_json::Value {
        let r = self
            .request(method, path, token, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert!(
            (200..300).contains(&r.status),
            "{method} {path}: HTTP {}: {}",
            r.status,
            r.body
        );
        r.json()
    }

    /// Creates a namespace (if missing) and its `default` ServiceAccount (no controller-manager
    /// runs to create it; the ServiceAccount admission plugin needs it for pods).
    /// The conditions on Node `node`, as the admin reads them.
    pub fn node_conditions(&self, node: &str) -> Vec<serde_json::Value> {
        let n = self.must(
            "GET",
            &format!("/api/v1/nodes/{node}"),
            self.admin_token(),
            None,
        );
        n["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The condition `kind` on Node `node`, if it is there.
    pub fn node_condition(&self, node: &str, kind: &str) -> Option<serde_json::Value> {
        self.node_conditions(node)
            .into_iter()
            .find(|c| c["type"] == kind)
    }

    pub fn create_namespace(&self, ns: &str) {
        let admin = self.admin_token.clone();
        self.create_if_missing(
            "/api/v1/namespaces",
            &serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            &admin,
        );
        self.create_if_missing(
            &format!("/api/v1/namespaces/{ns}/serviceaccounts"),
            &serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount",
                                "metadata": {"name": "default", "namespace": ns}}),
            &admin,
        );
    }

    /// Creates every object of the multi-document YAML file at `path` as admin (409 is fine).
    pub fn apply_file(&self, path: &Path) {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|e| panic!("parse {}: {e}", path.display()));
        for obj in docs.into_iter().filter(|d| d.is_object()) {
            self.create_if_missing(&collection_of(&obj), &obj, &self.admin_token);
        }
    }

    /// The project's CRDs (`manifests/crds/pullprobe.io.yaml`), waited for until each is
    /// `Established` (served).
    pub fn apply_crds(&self) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/crds");
        self.apply_file(&root.join("pullprobe.io.yaml"));
        for name in [
            "imagepreflights.pullprobe.io",
            "nodepullstatuses.pullprobe.io",
        ] {
            let path = format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            loop {
                let crd = self.must("GET", &path, &self.admin_token, None);
                let established = crd["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Established" && c["status"] == "True")
                });
                if established {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{name} never became Established"
                );
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }

    /// The project's own RBAC from `manifests/`, as shipped, and a token of its
    /// ServiceAccount. No controller-manager here: the namespace's `default` ServiceAccount
    /// is made by hand.
    pub fn apply_project_rbac(&self) -> String {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests");
        for f in ["namespace.yaml", "serviceaccount.yaml", "rbac.yaml"] {
            self.apply_file(&root.join(f));
        }
        self.create_namespace("pullprobe");
        self.service_account_token("pullprobe", "pullprobe", 3600)
    }

    /// POST `obj` to `collection` as `token`; 409 AlreadyExists is fine.
    pub fn create_if_missing(&self, collection: &str, obj: &serde_json::Value, token: &str) {
        let r = self
            .request("POST", collection, token, Some(obj))
            .unwrap_or_else(|e| panic!("POST {collection}: {e}"));
        assert!(
            r.status == 201 || r.status == 409,
            "POST {collection}: HTTP {}: {}",
            r.status,
            r.body
        );
    }

    /// Creates namespace `ns` (with its `default` SA) and ServiceAccount `name` if missing, and
    /// returns a token for it from the TokenRequest API, valid 1 hour.
    pub fn create_service_account(&self, ns: &str, name: &str) -> String {
        self.create_namespace(ns);
        self.create_if_missing(
            &format!("/api/v1/namespaces/{ns}/serviceaccounts"),
            &serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount",
                                "metadata": {"name": name, "namespace": ns}}),
            &self.admin_token,
        );
        self.service_account_token(ns, name, 3600)
    }

    /// A token for an existing ServiceAccount via TokenRequest (`expiration_seconds` ≥ 600, the
    /// API's minimum).
    pub fn service_account_token(&self, ns: &str, name: &str, expiration_seconds: u32) -> String {
        self.service_account_token_for(ns, name, expiration_seconds, &[])
    }

    /// [`Self::service_account_token`] bound to `audiences` (none: the API server's own).
    pub fn service_account_token_for(
        &self,
        ns: &str,
        name: &str,
        expiration_seconds: u32,
        audiences: &[&str],
    ) -> String {
        assert!(expiration_seconds >= 600, "TokenRequest minimum is 600 s");
        let mut spec = serde_json::json!({"expirationSeconds": expiration_seconds});
        if !audiences.is_empty() {
            spec["audiences"] = serde_json::json!(audiences);
        }
        let body = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": spec,
        });
        let v = self.must(
            "POST",
            &format!("/api/v1/namespaces/{ns}/serviceaccounts/{name}/token"),
            &self.admin_token,
            Some(&body),
        );
        v["status"]["token"]
            .as_str()
            .unwrap_or_else(|| panic!("TokenRequest answer has no status.token: {v}"))
            .to_string()
    }

    /// A token the agent's main listener accepts: audience `pullprobe` only (the agent
    /// refuses tokens the API server itself accepts), for ServiceAccount
    /// `pullprobe/agent-caller` bound to `cluster-admin`, so every SubjectAccessReview the
    /// agent asks about it is allowed.
    pub fn agent_caller_token(&self) -> String {
        let admin = self.admin_token.clone();
        self.create_service_account("pullprobe", "agent-caller");
        self.create_if_missing(
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            &serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": "pullprobe-test-agent-caller"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                "subjects": [{"kind": "ServiceAccount", "name": "agent-caller", "namespace": "pullprobe"}]}),
            &admin,
        );
        self.service_account_token_for("pullprobe", "agent-caller", 3600, &["pullprobe"])
    }

    /// kubeconfig YAML for this server with a bearer token (CA embedded).
    pub fn kubeconfig_yaml(&self, token: &str) -> String {
        kubeconfig_yaml_for(&self.url(), &self.ca_pem, token)
    }

    /// Writes [`KubeApiServer::kubeconfig_yaml`] to a new file in [`KubeApiServer::dir`] (mode
    /// 0600) and returns its path, e.g. for `KUBECONFIG=… pullprobe agent`.
    pub fn write_kubeconfig(&self, token: &str) -> PathBuf {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self
            .dir
            .path()
            .join(format!("kubeconfig-{}.yaml", &random_token()[..8]));
        let mut f = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&path)
            .expect("create kubeconfig");
        f.write_all(self.kubeconfig_yaml(token).as_bytes())
            .expect("write kubeconfig");
        path
    }

    /// A `kube::Config` for this server authenticating with `token` (read from a file, so no
    /// extra dependency is needed for the secret type).
    pub fn kube_config(&self, token: &str) -> ::kube::Config {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::CertificateDer;
        let token_file = self
            .dir
            .path()
            .join(format!("token-{}", &random_token()[..8]));
        std::fs::write(&token_file, token).expect("write token file");
        let mut cfg = ::kube::Config::new(self.url().parse().expect("url"));
        cfg.root_cert = Some(
            CertificateDer::pem_slice_iter(self.ca_pem.as_bytes())
                .map(|c| c.expect("ca pem").to_vec())
                .collect(),
        );
        cfg.auth_info.token_file = Some(token_file.display().to_string());
        cfg
    }

    /// A `kube::Client` (ring TLS). Must be called inside a tokio runtime.
    pub fn client(&self, token: &str) -> ::kube::Client {
        ::kube::Client::try_from(self.kube_config(token)).expect("kube client")
    }

    /// Audit log events so far (one JSON object per completed request: `verb`, `user.username`,
    /// `objectRef.{resource,subresource,name,namespace}`, `responseStatus.code`, …).
    pub fn audit_events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("audit.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Polls the audit log until `done(events)` holds or `timeout` passes; returns the events
    /// last read. The log backend writes an event when the request completes, which may be just
    /// after the client has its response, so read through this when counting exactly.
    pub fn wait_for_audit(
        &self,
        timeout: Duration,
        done: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let ev = self.audit_events();
            if done(&ev) || Instant::now() > deadline {
                return ev;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Audit events of writes (`create`, `update`, `patch`, `delete`) by `username`.
    pub fn audit_writes_by(&self, username: &str) -> Vec<serde_json::Value> {
        self.audit_events()
            .into_iter()
            .filter(|e| {
                e["user"]["username"] == username
                    && matches!(
                        e["verb"].as_str(),
                        Some("create" | "update" | "patch" | "delete")
                    )
            })
            .collect()
    }

    pub fn apiserver_log_tail(&self) -> String {
        tail(&self.dir.path().join("kube-apiserver.log"), 40)
    }

    pub fn etcd_log_tail(&self) -> String {
        tail(&self.dir.path().join("etcd.log"), 20)
    }
}

/// A real kube-controller-manager running only `controllers` (e.g.
/// `clusterrole-aggregation,garbagecollector`) against a [`KubeApiServer`] as admin;
/// killed on drop.
pub struct ControllerManager(Child);

impl ControllerManager {
    pub fn start(api: &KubeApiServer, controllers: &str) -> ControllerManager {
        let kc = api.write_kubeconfig(api.admin_token());
        let log = std::fs::File::create(api.dir().join("kube-controller-manager.log"))
            .expect("controller-manager log");
        let child = Command::new(kube_binary_path("kube-controller-manager"))
            .arg(format!("--kubeconfig={}", kc.display()))
            .arg(format!("--controllers={controllers}"))
            .args(["--leader-elect=false", "--port=0", "--secure-port=0"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn kube-controller-manager");
        ControllerManager(child)
    }
}

impl Drop for ControllerManager {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for KubeApiServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- kube-apiserver log (tail) ---\n{}",
                self.apiserver_log_tail()
            );
        }
        for c in [self.apiserver.take(), self.etcd.take()]
            .into_iter()
            .flatten()
        {
            let mut c = c;
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn tail(path: &Path, n: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Blocking GET over plain HTTP/1.0 (etcd health check).
fn plain_http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn client_tls(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("ca pem")).expect("add ca");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// Runs a future on a fresh current-thread runtime on its own OS thread, so the harness is usable
/// from sync tests and from inside `#[tokio::test]` alike.
fn on_own_runtime<F, Fut, T>(f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
    T: Send + 'static,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f())
    })
    .join()
    .expect("harness request thread panicked")
}

struct RawRequest {
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    method: String,
    path: String,
    token: String,
    content_type: String,
    body: Option<Vec<u8>>,
}

async fn https_request(r: RawRequest) -> Result<Response, String> {
    use http_body_util::{BodyExt, Full};
    let fut = async {
        let tcp = tokio::net::TcpStream::connect(r.addr)
            .await
            .map_err(|e| format!("connect {}: {e}", r.addr))?;
        let name =
            rustls_pki_types::ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(r.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        let mut b = http::Request::builder()
            .method(r.method.as_str())
            .uri(r.path.as_str())
            .header("host", r.addr.to_string())
            .header("authorization", format!("Bearer {}", r.token))
            .header("accept", "application/json");
        if r.body.is_some() {
            b = b.header("content-type", r.content_type.as_str());
        }
        let req = b
            .body(Full::new(bytes::Bytes::from(
                r.body.clone().unwrap_or_default(),
            )))
            .map_err(|e| e.to_string())?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok(Response {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    };
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .map_err(|_| "timed out after 30 s".to_string())?
}

/// The REST collection a manifest object is created in (the kinds `manifests/`, its components
/// and the tests' RBAC files hold; namespaced kinds default to `default`).
pub fn collection_of(obj: &serde_json::Value) -> String {
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or("default");
    let rbac = "/apis/rbac.authorization.k8s.io/v1";
    let monitoring = "/apis/monitoring.coreos.com/v1";
    match obj["kind"].as_str().unwrap_or("") {
        "Namespace" => "/api/v1/namespaces".into(),
        "ServiceAccount" => format!("/api/v1/namespaces/{ns}/serviceaccounts"),
        "ConfigMap" => format!("/api/v1/namespaces/{ns}/configmaps"),
        "Secret" => format!("/api/v1/namespaces/{ns}/secrets"),
        "Service" => format!("/api/v1/namespaces/{ns}/services"),
        "ClusterRole" => format!("{rbac}/clusterroles"),
        "ClusterRoleBinding" => format!("{rbac}/clusterrolebindings"),
        "Role" => format!("{rbac}/namespaces/{ns}/roles"),
        "RoleBinding" => format!("{rbac}/namespaces/{ns}/rolebindings"),
        "PriorityClass" => "/apis/scheduling.k8s.io/v1/priorityclasses".into(),
        "DaemonSet" => format!("/apis/apps/v1/namespaces/{ns}/daemonsets"),
        "PodMonitor" => format!("{monitoring}/namespaces/{ns}/podmonitors"),
        "ServiceMonitor" => format!("{monitoring}/namespaces/{ns}/servicemonitors"),
        "PrometheusRule" => format!("{monitoring}/namespaces/{ns}/prometheusrules"),
        "CustomResourceDefinition" => {
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions".into()
        }
        "Deployment" => format!("/apis/apps/v1/namespaces/{ns}/deployments"),
        "StatefulSet" => format!("/apis/apps/v1/namespaces/{ns}/statefulsets"),
        "CronJob" => format!("/apis/batch/v1beta1/namespaces/{ns}/cronjobs"),
        "Lease" => format!("/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"),
        "ValidatingWebhookConfiguration" => {
            "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations".into()
        }
        "ImagePreflight" => format!("/apis/pullprobe.io/v1alpha1/namespaces/{ns}/imagepreflights"),
        "NodePullStatus" => "/apis/pullprobe.io/v1alpha1/nodepullstatuses".into(),
        "NodeReadinessRule" => "/apis/readiness.node.x-k8s.io/v1alpha1/nodereadinessrules".into(),
        k => panic!("no collection known for kind {k}"),
    }
}

/// `kubectl ARGS…` (the cached v1.20.2) as `kubeconfig`, `stdin` as its input (`-f -`).
pub fn kubectl(kubeconfig: &Path, args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new(kube_binary_path("kubectl"))
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    child
        .stdin
        .take()
        .expect("kubectl stdin")
        .write_all(stdin.as_bytes())
        .expect("write kubectl stdin");
    child.wait_with_output().expect("wait for kubectl")
}

/// kubeconfig YAML for `server` (e.g. a fault proxy in front of the API server), trusting
/// `ca_pem` (embedded), with a bearer token.
pub fn kubeconfig_yaml_for(server: &str, ca_pem: &str, token: &str) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes());
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {server}\n    \
         certificate-authority-data: {ca}\nusers:\n- name: test\n  user:\n    token: {token}\n\
         contexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n    \
         namespace: default\ncurrent-context: test\n"
    )
}
