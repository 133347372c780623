//! A real recursive-resolver front (`unbound` 1.17, foreground, own config) on its own loopback
//! address `127.0.53.N:53` (resolv.conf has no port syntax), serving zone `test.`:
//!
//! | name               | answer                                                            |
//! |--------------------|-------------------------------------------------------------------|
//! | `registry.test`, `auth.test`, `blobs.test` | A 127.0.0.1 (defaults; `record()` adds/overrides) |
//! | `nxdomain.test`    | NXDOMAIN (`local-zone static`)                                    |
//! | `norecords.test`   | exists with only a TXT record → NOERROR, no A/AAAA                |
//! | `refused.test`     | REFUSED (`local-zone refuse`)                                     |
//! | `drop.test`        | no answer at all → client timeout (`local-zone deny`)             |
//! | `servfail.test`    | SERVFAIL (stub zone whose only server is unusable)                |
//! | anything outside `test.` | REFUSED (never recurses to the Internet)                    |
//!
//! Unbound sends nothing off the machine: `outgoing-interface` is its own loopback address, and the
//! stub zone's only address is 127.0.0.1, which unbound refuses to query (`do-not-query-localhost`
//! default yes), so it answers SERVFAIL at once.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub const QTYPE_A: u16 = 1;
pub const QTYPE_TXT: u16 = 16;
pub const QTYPE_AAAA: u16 = 28;

pub const RCODE_NOERROR: u8 = 0;
pub const RCODE_SERVFAIL: u8 = 2;
pub const RCODE_NXDOMAIN: u8 = 3;
pub const RCODE_REFUSED: u8 = 5;

pub struct DnsBuilder {
    records: Vec<(String, IpAddr)>,
    defaults: bool,
    local_data: Vec<String>,
}

pub struct Dns {
    child: Child,
    addr: Ipv4Addr,
    dir: TempDir,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A 127.0.53.N where nothing listens on :53 (UDP and TCP), spread by pid so concurrent test
/// binaries rarely collide (and the caller retries if unbound still cannot bind).
fn pick_addr() -> Ipv4Addr {
    let base = std::process::id();
    for _ in 0..254 {
        let n = (base.wrapping_add(NEXT.fetch_add(1, Ordering::SeqCst)) % 254 + 1) as u8;
        let ip = Ipv4Addr::new(127, 0, 53, n);
        let free =
            UdpSocket::bind((ip, 53)).is_ok() && std::net::TcpListener::bind((ip, 53)).is_ok();
        if free {
            return ip;
        }
    }
    panic!("no free 127.0.53.N:53");
}

impl Dns {
    pub fn builder() -> DnsBuilder {
        DnsBuilder {
            records: Vec::new(),
            defaults: true,
            local_data: Vec::new(),
        }
    }
    /// Default zone.
    pub fn start_default() -> Dns {
        Self::builder().start()
    }
    /// The server's address (port 53).
    pub fn ip(&self) -> Ipv4Addr {
        self.addr
    }
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.addr), 53)
    }
    /// `nameserver 127.0.53.N` + `options timeout:1 attempts:1`.
    pub fn resolv_conf(&self) -> PathBuf {
        self.dir.path().join("resolv.conf")
    }
    /// Writes another resolv.conf in the temp dir with extra lines (`search test`, `options ndots:2`…).
    pub fn resolv_conf_with(&self, file_name: &str, extra_lines: &[&str]) -> PathBuf {
        let mut s = format!("nameserver {}\noptions timeout:1 attempts:1\n", self.addr);
        for l in extra_lines {
            s += l;
            s += "\n";
        }
        let p = self.dir.path().join(file_name);
        std::fs::write(&p, s).expect("write resolv.conf");
        p
    }
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("unbound.log")).unwrap_or_default()
    }
    /// Raw query to this server.
    pub fn query(&self, name: &str, qtype: u16) -> std::io::Result<DnsReply> {
        dns_query(self.socket_addr(), name, qtype, Duration::from_secs(2))
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- unbound {} log:\n{}", self.addr, self.log());
        }
    }
}

impl DnsBuilder {
    /// Adds an A (IPv4) or AAAA (IPv6) record under `test.` (or any name inside the zone).
    pub fn record(mut self, name: &str, ip: &str) -> Self {
        self.records.push((
            name.trim_end_matches('.').to_string(),
            ip.parse().expect("ip"),
        ));
        self
    }
    /// Drop the default registry/auth/blobs records.
    pub fn no_defaults(mut self) -> Self {
        self.defaults = false;
        self
    }
    /// Raw unbound `local-data` RR text, e.g. `"x.test. 60 IN CNAME registry.test."`.
    pub fn local_data(mut self, rr: &str) -> Self {
        self.local_data.push(rr.to_string());
        self
    }

    fn config(&self, dir: &Path, ip: Ipv4Addr) -> String {
        let q = |s: &str| format!("\"{}\"", s.replace('"', "\\\""));
        let mut c = String::from("server:\n");
        for l in [
            format!("interface: {ip}"),
            "port: 53".into(),
            "do-ip4: yes".into(),
            "do-ip6: no".into(),
            "do-udp: yes".into(),
            "do-tcp: yes".into(),
            "do-daemonize: no".into(),
            "chroot: \"\"".into(),
            "username: \"\"".into(),
            format!("directory: {}", q(&dir.display().to_string())),
            format!(
                "pidfile: {}",
                q(&dir.join("unbound.pid").display().to_string())
            ),
            format!(
                "logfile: {}",
                q(&dir.join("unbound.log").display().to_string())
            ),
            "use-syslog: no".into(),
            "verbosity: 1".into(),
            "num-threads: 1".into(),
            "so-reuseport: no".into(),
            "access-control: 127.0.0.0/8 allow".into(),
            format!("outgoing-interface: {ip}"),
            "module-config: \"iterator\"".into(),
            "qname-minimisation: no".into(),
            "local-zone: \".\" refuse".into(),
            "local-zone: \"test.\" transparent".into(),
            "local-zone: \"nxdomain.test.\" static".into(),
            "local-zone: \"refused.test.\" refuse".into(),
            "local-zone: \"drop.test.\" deny".into(),
            "local-data: 'norecords.test. 60 IN TXT \"no address records\"'".into(),
        ] {
            c += "  ";
            c += &l;
            c += "\n";
        }
        let mut records = Vec::new();
        if self.defaults {
            for n in ["registry.test", "auth.test", "blobs.test"] {
                if !self.records.iter().any(|(r, _)| r == n) {
                    records.push((n.to_string(), IpAddr::V4(Ipv4Addr::LOCALHOST)));
                }
            }
        }
        records.extend(self.records.iter().cloned());
        for (name, ip) in &records {
            let t = if ip.is_ipv4() { "A" } else { "AAAA" };
            c += &format!("  local-data: \"{name}. 60 IN {t} {ip}\"\n");
        }
        for rr in &self.local_data {
            c += &format!("  local-data: {}\n", q(rr));
        }
        c += "stub-zone:\n  name: \"servfail.test.\"\n  stub-addr: 127.0.0.1@1\n";
        c += "remote-control:\n  control-enable: no\n";
        c
    }

    pub fn start(self) -> Dns {
        let mut last = String::new();
        for _ in 0..5 {
            let dir = tempfile::Builder::new()
                .prefix("unbound-")
                .tempdir()
                .expect("tempdir");
            let ip = pick_addr();
            let conf = dir.path().join("unbound.conf");
            std::fs::write(&conf, self.config(dir.path(), ip)).expect("write unbound.conf");
            std::fs::write(
                dir.path().join("resolv.conf"),
                format!("nameserver {ip}\noptions timeout:1 attempts:1\n"),
            )
            .expect("write resolv.conf");
            let child = Command::new("unbound")
                .arg("-d")
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(
                    std::fs::File::create(dir.path().join("unbound.stderr")).expect("stderr file"),
                )
                .spawn()
                .expect("spawn unbound");
            let mut dns = Dns {
                child,
                addr: ip,
                dir,
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(st)) = dns.child.try_wait() {
                    last = format!(
                        "unbound exited {st}: {}\n{}",
                        std::fs::read_to_string(dns.dir.path().join("unbound.stderr"))
                            .unwrap_or_default(),
                        dns.log()
                    );
                    break;
                }
                if let Ok(r) = dns_query(
                    dns.socket_addr(),
                    "registry.test",
                    QTYPE_A,
                    Duration::from_millis(200),
                ) {
                    if r.rcode == RCODE_NOERROR {
                        return dns;
                    }
                }
                if Instant::now() > deadline {
                    last = format!("unbound not ready:\n{}", dns.log());
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("unbound did not start: {last}");
    }
}

/// Parsed DNS answer.
#[derive(Clone, Debug)]
pub struct DnsReply {
    pub rcode: u8,
    /// A/AAAA addresses in the answer section.
    pub addrs: Vec<IpAddr>,
    pub answer_count: u16,
}

/// One UDP query (RD set). `Err(TimedOut/WouldBlock)` when no answer comes within `timeout`.
pub fn dns_query(
    server: SocketAddr,
    name: &str,
    qtype: u16,
    timeout: Duration,
) -> std::io::Result<DnsReply> {
    let sock = UdpSocket::bind((server.ip(), 0)).or_else(|_| UdpSocket::bind("127.0.0.1:0"))?;
    sock.set_read_timeout(Some(timeout))?;
    let id: u16 = (std::process::id() as u16) ^ (NEXT.fetch_add(1, Ordering::SeqCst) as u16);
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    sock.send_to(&q, server)?;
    let mut buf = [0u8; 4096];
    loop {
        let (n, _) = sock.recv_from(&mut buf)?;
        let r = &buf[..n];
        if n < 12 || r[0..2] != id.to_be_bytes() {
            continue;
        }
        return Ok(parse_reply(r));
    }
}

fn skip_name(r: &[u8], mut i: usize) -> usize {
    while i < r.len() {
        let l = r[i];
        if l & 0xC0 == 0xC0 {
            return i + 2;
        }
        if l == 0 {
            return i + 1;
        }
        i += 1 + l as usize;
    }
    i
}

fn parse_reply(r: &[u8]) -> DnsReply {
    let rcode = r[3] & 0x0F;
    let qd = u16::from_be_bytes([r[4], r[5]]);
    let an = u16::from_be_bytes([r[6], r[7]]);
    let mut i = 12;
    for _ in 0..qd {
        i = skip_name(r, i) + 4;
    }
    let mut addrs = Vec::new();
    for _ in 0..an {
        i = skip_name(r, i);
        if i + 10 > r.len() {
            break;
        }
        let typ = u16::from_be_bytes([r[i], r[i + 1]]);
        let len = u16::from_be_bytes([r[i + 8], r[i + 9]]) as usize;
        let data = &r[(i + 10).min(r.len())..(i + 10 + len).min(r.len())];
        if typ == QTYPE_A && data.len() == 4 {
            addrs.push(IpAddr::from([data[0], data[1], data[2], data[3]]));
        } else if typ == QTYPE_AAAA && data.len() == 16 {
            let mut b = [0u8; 16];
            b.copy_from_slice(data);
            addrs.push(IpAddr::from(b));
        }
        i += 10 + len;
    }
    DnsReply {
        rcode,
        addrs,
        answer_count: an,
    }
}

/// Writes an `/etc/hosts`-format file: one `IP NAME…` line per entry.
pub fn write_hosts_file(path: &Path, entries: &[(&str, &[&str])]) -> PathBuf {
    let mut s = String::from("# written by the pullprobe test harness\n");
    for (ip, names) in entries {
        s += &format!("{ip}\t{}\n", names.join(" "));
    }
    std::fs::write(path, s).expect("write hosts file");
    path.to_path_buf()
}
