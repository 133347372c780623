//! A real CNCF distribution 2.8.2 registry: `docker-registry serve CONFIG.yml`, config generated per
//! instance, log in `<tempdir>/registry.log` (printed to stderr if the test panics), killed on Drop.
//!
//! Trap (distribution 2.8): a GET of an OCI manifest answers 404 unless `Accept` lists the OCI types.

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::pki::CertKey;
use super::token_issuer::TokenIssuer;

/// Filesystem storage root, shareable between registry instances (one push shows up everywhere).
#[derive(Clone)]
pub struct Storage(Arc<TempDir>);

impl Storage {
    pub fn new() -> Storage {
        Storage(Arc::new(
            tempfile::Builder::new()
                .prefix("regstore-")
                .tempdir()
                .expect("tempdir"),
        ))
    }
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Default for Storage {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Clone, Debug)]
pub enum RegistryAuth {
    None,
    /// bcrypt htpasswd file generated with `htpasswd -Bbn`.
    Htpasswd(Vec<(String, String)>),
    Token {
        realm: String,
        service: String,
        issuer: String,
        rootcertbundle: PathBuf,
    },
}

pub struct RegistryBuilder {
    tls: Option<CertKey>,
    client_cas: Vec<PathBuf>,
    auth: RegistryAuth,
    redirect_baseurl: Option<String>,
    storage: Option<Storage>,
    log_level: String,
    ipv6: bool,
    schema1: bool,
}

pub struct Registry {
    child: Child,
    port: u16,
    ipv6: bool,
    tls: bool,
    dir: TempDir,
    storage: Storage,
}

impl Registry {
    pub fn builder() -> RegistryBuilder {
        RegistryBuilder {
            tls: None,
            client_cas: Vec::new(),
            auth: RegistryAuth::None,
            redirect_baseurl: None,
            storage: None,
            log_level: "info".into(),
            ipv6: false,
            schema1: false,
        }
    }

    /// Plain HTTP, no auth.
    pub fn plain() -> Registry {
        Self::builder().start()
    }

    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!(
            "{}://127.0.0.1:{}",
            if self.tls { "https" } else { "http" },
            self.port
        )
    }
    /// `127.0.0.1:PORT` (the registry host part of an image reference).
    pub fn host_port(&self) -> String {
        if self.ipv6 {
            format!("[::1]:{}", self.port)
        } else {
            format!("127.0.0.1:{}", self.port)
        }
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn is_tls(&self) -> bool {
        self.tls
    }
    pub fn storage(&self) -> Storage {
        self.storage.clone()
    }
    pub fn storage_dir(&self) -> &Path {
        self.storage.path()
    }
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yml")
    }
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- registry {} log ({}):\n{}",
                self.port,
                self.log_path().display(),
                self.log()
            );
        }
    }
}

fn yaml_str(s: &str) -> String {
    // JSON strings are valid YAML double-quoted scalars.
    serde_json::to_string(s).expect("yaml string")
}

impl RegistryBuilder {
    pub fn tls(mut self, ck: &CertKey) -> Self {
        self.tls = Some(ck.clone());
        self
    }
    /// `http.tls.clientcas` (requires `tls`).
    pub fn client_ca(mut self, ca: &Path) -> Self {
        self.client_cas.push(ca.to_path_buf());
        self
    }
    pub fn auth(mut self, auth: RegistryAuth) -> Self {
        self.auth = auth;
        self
    }
    pub fn htpasswd(mut self, users: &[(&str, &str)]) -> Self {
        self.auth = RegistryAuth::Htpasswd(
            users
                .iter()
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .collect(),
        );
        self
    }
    /// Token auth trusting `issuer` (realm, service, issuer name, root cert bundle taken from it).
    pub fn token_auth(mut self, issuer: &TokenIssuer) -> Self {
        self.auth = RegistryAuth::Token {
            realm: issuer.realm_url(),
            service: issuer.service().to_string(),
            issuer: issuer.issuer_name().to_string(),
            rootcertbundle: issuer.root_cert_bundle().to_path_buf(),
        };
        self
    }
    /// Storage middleware `redirect`: blob GET/HEAD answer 307 to `<baseurl>docker/registry/v2/blobs/...`.
    pub fn redirect(mut self, baseurl: &str) -> Self {
        self.redirect_baseurl = Some(baseurl.to_string());
        self
    }
    /// Share a storage root with another instance (`other.storage()`).
    pub fn storage(mut self, storage: Storage) -> Self {
        self.storage = Some(storage);
        self
    }
    /// Listen on `[::1]` instead of 127.0.0.1.
    /// Accept Docker schema 1 manifests (`compatibility.schema1.enabled`; distribution 2.8
    /// refuses to store them otherwise).
    pub fn schema1(mut self) -> Self {
        self.schema1 = true;
        self
    }

    pub fn ipv6(mut self) -> Self {
        self.ipv6 = true;
        self
    }
    pub fn log_level(mut self, level: &str) -> Self {
        self.log_level = level.to_string();
        self
    }

    fn config(&self, dir: &Path, storage: &Path, port: u16) -> String {
        let mut y = String::new();
        y += "version: 0.1\n";
        y += &format!(
            "log:\n  level: {}\n  formatter: text\n  accesslog:\n    disabled: false\n",
            self.log_level
        );
        y += &format!(
            "storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n",
            yaml_str(&storage.display().to_string())
        );
        let host = if self.ipv6 { "\"[::1]" } else { "\"127.0.0.1" };
        y += &format!("http:\n  addr: {host}:{port}\"\n  secret: harness-secret\n");
        if let Some(tls) = &self.tls {
            y += &format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                yaml_str(&tls.cert.display().to_string()),
                yaml_str(&tls.key.display().to_string())
            );
            if !self.client_cas.is_empty() {
                y += "    clientcas:\n";
                for ca in &self.client_cas {
                    y += &format!("      - {}\n", yaml_str(&ca.display().to_string()));
                }
            }
        }
        y += "health:\n  storagedriver:\n    enabled: false\n";
        if self.schema1 {
            y += "compatibility:\n  schema1:\n    enabled: true\n";
        }
        if let Some(base) = &self.redirect_baseurl {
            y += &format!(
                "middleware:\n  storage:\n    - name: redirect\n      options:\n        baseurl: {}\n",
                yaml_str(base)
            );
        }
        match &self.auth {
            RegistryAuth::None => {}
            RegistryAuth::Htpasswd(users) => {
                let mut file = String::new();
                for (u, p) in users {
                    let out = Command::new("htpasswd")
                        .args(["-Bbn", u, p])
                        .output()
                        .expect("run htpasswd");
                    assert!(out.status.success(), "htpasswd failed");
                    file += String::from_utf8_lossy(&out.stdout).trim();
                    file += "\n";
                }
                let path = dir.join("htpasswd");
                std::fs::write(&path, file).expect("write htpasswd");
                y += &format!(
                    "auth:\n  htpasswd:\n    realm: harness-basic\n    path: {}\n",
                    yaml_str(&path.display().to_string())
                );
            }
            RegistryAuth::Token {
                realm,
                service,
                issuer,
                rootcertbundle,
            } => {
                y += &format!(
                    "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                    yaml_str(realm),
                    yaml_str(service),
                    yaml_str(issuer),
                    yaml_str(&rootcertbundle.display().to_string())
                );
            }
        }
        y
    }

    /// Starts the registry and waits until it accepts connections (and answers /v2/ on plain HTTP).
    pub fn start(self) -> Registry {
        let storage = self.storage.clone().unwrap_or_default();
        let mut last_log = String::new();
        // The port is picked by bind-then-release, so another process may grab it: retry.
        for _attempt in 0..5 {
            let dir = tempfile::Builder::new()
                .prefix("registry-")
                .tempdir()
                .expect("tempdir");
            let port = if self.ipv6 {
                std::net::TcpListener::bind("[::1]:0")
                    .and_then(|l| l.local_addr())
                    .expect("bind [::1]:0")
                    .port()
            } else {
                super::free_port()
            };
            let cfg = self.config(dir.path(), storage.path(), port);
            let cfg_path = dir.path().join("config.yml");
            std::fs::write(&cfg_path, &cfg).expect("write config");
            let log = std::fs::File::create(dir.path().join("registry.log")).expect("create log");
            let child = Command::new("docker-registry")
                .arg("serve")
                .arg(&cfg_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup log"))
                .stderr(log)
                .spawn()
                .expect("spawn docker-registry");
            let mut reg = Registry {
                child,
                port,
                ipv6: self.ipv6,
                tls: self.tls.is_some(),
                dir,
                storage: storage.clone(),
            };
            match reg.wait_ready(Duration::from_secs(10)) {
                Ok(()) => return reg,
                Err(e) => {
                    last_log = format!("{e}\n{}\nconfig:\n{cfg}", reg.log());
                    drop(reg);
                    if !last_log.contains("address already in use") {
                        break;
                    }
                }
            }
        }
        panic!("docker-registry did not start:\n{last_log}");
    }
}

impl Registry {
    /// `PUT /v2/REPO/manifests/TAG` of `body` (a manifest skopeo would not push as is, e.g.
    /// an index of 10,000 entries) on this plain-HTTP registry without auth; the status.
    pub fn put_manifest(&self, repo: &str, tag: &str, media_type: &str, body: &[u8]) -> u16 {
        assert!(!self.tls, "put_manifest speaks plain HTTP");
        let mut s = TcpStream::connect(self.host_port()).expect("connect to the registry");
        s.set_read_timeout(Some(Duration::from_secs(60)))
            .expect("read timeout");
        write!(
            s,
            "PUT /v2/{repo}/manifests/{tag} HTTP/1.1\r\nHost: {}\r\nContent-Type: {media_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.host_port(),
            body.len()
        )
        .expect("write the request head");
        s.write_all(body).expect("write the manifest");
        let mut resp = String::new();
        let _ = std::io::Read::read_to_string(&mut s, &mut resp);
        resp.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no status line: {resp}"))
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("docker-registry exited: {status}"));
            }
            // Until it logs "listening on", whatever answers on the port may be another server
            // that got the same free port (then this one exits "address already in use").
            let bound = self.log().contains("listening on");
            let addr: std::net::SocketAddr = self.host_port().parse().expect("addr");
            if let Some(mut s) = bound.then(|| TcpStream::connect(addr).ok()).flatten() {
                if self.tls {
                    return Ok(());
                }
                // Plain HTTP: check that /v2/ answers with an HTTP status line.
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = s.write_all(
                    b"GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                );
                let mut buf = [0u8; 12];
                if std::io::Read::read(&mut s, &mut buf).unwrap_or(0) >= 12
                    && buf.starts_with(b"HTTP/1.1 ")
                {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err("timeout waiting for docker-registry".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
