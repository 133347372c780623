//! The proxy environment the runtime's systemd unit sets, and Go's proxy selection.
//!
//! containerd (`docker.DefaultHTTPTransport`) and containers/image both use Go's
//! `http.ProxyFromEnvironment`, i.e. golang.org/x/net/http/httpproxy: `HTTPS_PROXY`
//! for https URLs, `HTTP_PROXY` for http ones (upper case wins over lower case), and
//! `NO_PROXY` matching as implemented here (`config.init` / `useProxy`).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use url::Url;

use super::{ConfigProblem, ProblemKind};
use crate::hostroot::HostRoot;

/// The proxy settings of one runtime's service.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProxyEnv {
    pub http_proxy: Option<String>,
    pub https_proxy: Option<String>,
    pub no_proxy: Option<String>,
    /// Node paths of the unit files / drop-ins / environment files that were read.
    pub sources: Vec<PathBuf>,
}

impl ProxyEnv {
    /// From a flat environment (`getEnvAny`: upper case first).
    pub fn from_vars(vars: &[(String, String)]) -> ProxyEnv {
        let get = |names: [&str; 2]| {
            names.iter().find_map(|n| {
                vars.iter()
                    .rev()
                    .find(|(k, _)| k == n)
                    .map(|(_, v)| v.clone())
                    .filter(|v| !v.is_empty())
            })
        };
        ProxyEnv {
            http_proxy: get(["HTTP_PROXY", "http_proxy"]),
            https_proxy: get(["HTTPS_PROXY", "https_proxy"]),
            no_proxy: get(["NO_PROXY", "no_proxy"]),
            sources: Vec::new(),
        }
    }

    /// `ProxyFunc()(url)`: the proxy for a request to `scheme://host[:port]`, if any.
    pub fn proxy_for(&self, url: &Url) -> Option<Url> {
        let raw = match url.scheme() {
            "https" => self.https_proxy.as_deref()?,
            "http" => self.http_proxy.as_deref()?,
            _ => return None,
        };
        let host = url.host_str()?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = url.port_or_known_default()?;
        if !use_proxy(host, port, self.no_proxy.as_deref().unwrap_or("")) {
            return None;
        }
        parse_proxy(raw)
    }
}

/// httpproxy `parseProxy`: a value without scheme or host is read as `http://<value>`.
fn parse_proxy(raw: &str) -> Option<Url> {
    match Url::parse(raw) {
        Ok(u) if u.has_host() && !u.scheme().is_empty() => Some(u),
        _ => Url::parse(&format!("http://{raw}")).ok(),
    }
}

/// httpproxy `useProxy`: false for localhost, loopback IPs and `NO_PROXY` matches.
pub fn use_proxy(host: &str, port: u16, no_proxy: &str) -> bool {
    let host = host.trim().to_lowercase();
    if host == "localhost" {
        return false;
    }
    let ip: Option<IpAddr> = host.parse().ok();
    if ip.is_some_and(|ip| ip.is_loopback()) {
        return false;
    }
    let port = port.to_string();
    for entry in no_proxy.split(',') {
        let p = entry.trim().to_lowercase();
        if p.is_empty() {
            continue;
        }
        if p == "*" {
            return false;
        }
        if let Some((net, bits)) = parse_cidr(&p) {
            if ip.is_some_and(|ip| cidr_contains(net, bits, ip)) {
                return false;
            }
            continue;
        }
        let (phost, pport) = match split_host_port(&p) {
            Some((h, pp)) => {
                if h.is_empty() {
                    continue;
                }
                (
                    h.trim_start_matches('[').trim_end_matches(']').to_string(),
                    pp,
                )
            }
            None => (p.clone(), String::new()),
        };
        if let Ok(pip) = phost.parse::<IpAddr>() {
            if ip == Some(pip) && (pport.is_empty() || pport == port) {
                return false;
            }
            continue;
        }
        if phost.is_empty() {
            continue;
        }
        let mut phost = phost
            .strip_prefix('*')
            .filter(|s| s.starts_with('.'))
            .map(str::to_string)
            .unwrap_or(phost);
        let match_host = !phost.starts_with('.');
        if match_host {
            phost = format!(".{phost}");
        }
        if (host.ends_with(&phost) || (match_host && host == phost[1..]))
            && (pport.is_empty() || pport == port)
        {
            return false;
        }
    }
    true
}

/// Go's `net.SplitHostPort` for the forms NO_PROXY uses.
fn split_host_port(s: &str) -> Option<(String, String)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':')?;
        return Some((format!("[{h}]"), port.to_string()));
    }
    let (h, p) = s.rsplit_once(':')?;
    if h.contains(':') {
        return None; // bare IPv6 without brackets: "too many colons"
    }
    Some((h.to_string(), p.to_string()))
}

fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (a, b) = s.split_once('/')?;
    let ip: IpAddr = a.parse().ok()?;
    let bits: u8 = b.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (bits <= max).then_some((ip, bits))
}

fn cidr_contains(net: IpAddr, bits: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(bits))
            };
            (u32::from(n) & mask) == (u32::from(i) & mask)
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(bits))
            };
            (u128::from(n) & mask) == (u128::from(i) & mask)
        }
        _ => false,
    }
}

/// Reads `<unit>.service` and its `.service.d/*.conf` drop-ins under the host root and
/// returns the environment systemd would give the service (only `Environment=` and
/// `EnvironmentFile=`; file values override `Environment=`, as systemd documents).
pub fn load_unit_env(hr: &HostRoot, unit: &str, problems: &mut Vec<ConfigProblem>) -> ProxyEnv {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut env_files: Vec<(PathBuf, bool)> = Vec::new();
    let mut sources = Vec::new();
    for f in unit_files(hr, unit) {
        let Some(text) = hr.read_or_report(&f, true, problems) else {
            continue;
        };
        sources.push(f.clone());
        read_service_section(&text, &mut env, &mut env_files);
    }
    for (f, optional) in env_files {
        match hr.read_to_string(&f) {
            Ok(text) => {
                sources.push(f.clone());
                read_env_file(&text, &mut env);
            }
            Err(e) if optional && e.is_not_found() => {}
            Err(e) => problems.push(ConfigProblem::new(
                &f,
                Some("EnvironmentFile"),
                ProblemKind::Unreadable,
                e.to_string(),
            )),
        }
    }
    let mut p = ProxyEnv::from_vars(&env);
    p.sources = sources;
    p
}

/// The unit file (from the highest-priority directory that has it), then its drop-ins.
fn unit_files(hr: &HostRoot, unit: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = Vec::new();
    if let Some(f) = super::SYSTEMD_UNIT_DIRS
        .iter()
        .map(|d| Path::new(d).join(format!("{unit}.service")))
        .find(|p| hr.is_file(p))
    {
        files.push(f);
    }
    // Drop-ins: by file name across directories; a name in a higher-priority directory
    // masks the same name below; applied in name order.
    let mut dropins: std::collections::BTreeMap<String, PathBuf> = Default::default();
    for d in super::SYSTEMD_UNIT_DIRS.iter().rev() {
        let dir = Path::new(d).join(format!("{unit}.service.d"));
        if let Ok(entries) = hr.read_dir(&dir) {
            for e in entries {
                if !e.is_dir && e.name.ends_with(".conf") {
                    dropins.insert(e.name.clone(), dir.join(&e.name));
                }
            }
        }
    }
    files.extend(dropins.into_values());
    files
}

/// `Environment=` and `EnvironmentFile=` lines of a unit's `[Service]` section; an
/// empty assignment resets the list.
fn read_service_section(
    text: &str,
    env: &mut Vec<(String, String)>,
    env_files: &mut Vec<(PathBuf, bool)>,
) {
    let mut in_service = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_service = line == "[Service]";
            continue;
        }
        if !in_service || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match k.trim() {
            "Environment" => {
                let v = v.trim();
                if v.is_empty() {
                    env.clear(); // an empty assignment resets the list
                }
                for word in split_quoted(v) {
                    if let Some((a, b)) = word.split_once('=') {
                        env.push((a.to_string(), b.to_string()));
                    }
                }
            }
            "EnvironmentFile" => {
                let v = v.trim();
                if v.is_empty() {
                    env_files.clear();
                } else if let Some(opt) = v.strip_prefix('-') {
                    env_files.push((PathBuf::from(opt), true));
                } else {
                    env_files.push((PathBuf::from(v), false));
                }
            }
            _ => {}
        }
    }
}

/// `KEY=VALUE` lines of an `EnvironmentFile=`, one pair of outer quotes removed.
fn read_env_file(text: &str, env: &mut Vec<(String, String)>) {
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')))
                .unwrap_or(v);
            env.push((k.trim().to_string(), v.to_string()));
        }
    }
}

/// systemd's word splitting for `Environment=`: whitespace-separated, double or single
/// quotes group words (backslash escapes inside quotes).
fn split_quoted(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            (Some(_), c) => cur.push(c),
            (None, '"') | (None, '\'') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (None, c) => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_proxy_matching_like_go() {
        let np =
            "example.com, .sub.org, *.star.net, 10.0.0.0/8, 192.168.1.5, reg.local:5000, [::2]:443";
        for (host, port, want_proxy) in [
            ("example.com", 443, false),
            ("a.example.com", 443, false),
            ("notexample.com", 443, true),
            ("sub.org", 443, true),
            ("x.sub.org", 443, false),
            ("star.net", 443, true),
            ("a.star.net", 443, false),
            ("10.1.2.3", 443, false),
            ("11.1.2.3", 443, true),
            ("192.168.1.5", 5000, false),
            ("reg.local", 5000, false),
            ("reg.local", 443, true),
            ("::2", 443, false),
            ("::2", 80, true),
            ("localhost", 5000, false),
            ("127.0.0.1", 5000, false),
            ("::1", 443, false),
            ("registry-1.docker.io", 443, true),
        ] {
            assert_eq!(use_proxy(host, port, np), want_proxy, "{host}:{port}");
        }
        assert!(!use_proxy("anything", 443, " * "));
    }

    #[test]
    fn scheme_selects_variable_and_upper_case_wins() {
        let env = ProxyEnv::from_vars(&[
            ("https_proxy".into(), "http://lower:1".into()),
            ("HTTPS_PROXY".into(), "proxy.corp:3128".into()),
            ("NO_PROXY".into(), "internal".into()),
        ]);
        let p = env
            .proxy_for(&Url::parse("https://reg.example/v2").unwrap())
            .unwrap();
        assert_eq!(p.as_str(), "http://proxy.corp:3128/");
        assert!(env
            .proxy_for(&Url::parse("http://reg.example/v2").unwrap())
            .is_none());
        assert!(env
            .proxy_for(&Url::parse("https://internal/v2").unwrap())
            .is_none());
    }

    #[test]
    fn systemd_dropins_environment_lines() {
        let d = tempfile::tempdir().unwrap();
        let dd = d.path().join("etc/systemd/system/containerd.service.d");
        std::fs::create_dir_all(&dd).unwrap();
        std::fs::create_dir_all(d.path().join("lib/systemd/system")).unwrap();
        std::fs::create_dir_all(d.path().join("etc/default")).unwrap();
        std::fs::write(
            d.path().join("lib/systemd/system/containerd.service"),
            "[Unit]\nDescription=x\n[Service]\nEnvironment=HTTP_PROXY=http://old:1\n",
        )
        .unwrap();
        std::fs::write(
            dd.join("10-proxy.conf"),
            "[Service]\nEnvironment=\"HTTPS_PROXY=http://proxy:3128\" \"NO_PROXY=localhost,10.0.0.0/8,.svc\"\n# Environment=HTTPS_PROXY=http://commented\n",
        )
        .unwrap();
        std::fs::write(dd.join("20-file.conf"), "[Service]\nEnvironmentFile=-/etc/default/containerd\nEnvironmentFile=-/etc/default/missing\n").unwrap();
        std::fs::write(
            d.path().join("etc/default/containerd"),
            "HTTP_PROXY=\"http://fromfile:8080\"\n",
        )
        .unwrap();
        let hr = HostRoot::new(d.path()).unwrap();
        let mut probs = Vec::new();
        let env = load_unit_env(&hr, "containerd", &mut probs);
        assert!(probs.is_empty(), "{probs:?}");
        assert_eq!(env.https_proxy.as_deref(), Some("http://proxy:3128"));
        assert_eq!(env.http_proxy.as_deref(), Some("http://fromfile:8080"));
        assert_eq!(env.no_proxy.as_deref(), Some("localhost,10.0.0.0/8,.svc"));
        assert_eq!(env.sources.len(), 4);
    }

    #[test]
    fn quoted_words() {
        assert_eq!(
            split_quoted("A=1 \"B=2 3\" C='x'"),
            vec!["A=1", "B=2 3", "C=x"]
        );
    }
}
