//! containerd's registry host directories: `certs.d/<host>/hosts.toml` and the Docker
//! certificate layout, reproduced from containerd `core/remotes/docker/config/hosts.go`
//! (`ConfigureHosts`, `HostDirFromRoot`, `hostDirectory`, `loadHostDir`,
//! `parseHostsFile`, `parseHostConfig`, `getSortedHosts`, `loadCertFiles`) and
//! `config_unix.go` (`hostPaths`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Value;

use super::{ConfigProblem, Finding, FindingKind, ProblemKind};
use crate::endpoint::Capabilities;
use crate::hostroot::{HostRoot, ReadError};
use crate::redact;

/// One `hostConfig`: a `[host."…"]` table, or the root (server) entry, which is last.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostConfig {
    /// `http` or `https`; empty until defaulted for the root entry.
    pub scheme: String,
    /// Go's `url.URL.Host`: `host[:port]` exactly as written (IPv6 in brackets).
    pub host: String,
    /// API root path, e.g. `/v2` or the `override_path` path.
    pub path: String,
    pub capabilities: Capabilities,
    /// CA files as node paths (relative ones already joined to the hosts.toml directory).
    pub ca: Option<Vec<PathBuf>>,
    /// Client pairs `(cert, key)`; `None` key = key inside the cert file.
    pub client: Option<Vec<(PathBuf, Option<PathBuf>)>>,
    pub skip_verify: Option<bool>,
    /// Headers in key order (Go's `http.Header` is a map; order is not significant).
    pub header: Option<Vec<(String, Vec<String>)>>,
    pub dial_timeout: Option<Duration>,
    pub override_path: bool,
}

impl HostConfig {
    /// `explicitTLSFromHost` in `ConfigureHosts`.
    pub fn explicit_tls(&self) -> bool {
        self.ca.is_some() || self.client.is_some() || self.skip_verify.is_some()
    }
}

/// containerd's default capabilities: `HostCapabilityPull | Resolve | Push` (hosts.go;
/// the `referrers` capability does not exist in the stored upstream versions).
pub const DEFAULT_CAPABILITIES: Capabilities = Capabilities {
    pull: true,
    resolve: true,
    push: true,
    referrers: false,
};

/// A hosts.toml that containerd would reject as a whole. `field` names the key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct HostsTomlError {
    pub field: String,
    pub message: String,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> HostsTomlError {
    HostsTomlError {
        field: field.into(),
        message: message.into(),
    }
}

/// `hostDirectory`: the last `:` becomes `_` and a `_` is appended (`host:5000` →
/// `host_5000_`). Only when the colon is not the first character (`idx > 0`).
pub fn host_directory(host: &str) -> String {
    match host.rfind(':') {
        Some(idx) if idx > 0 => format!("{}_{}_", &host[..idx], &host[idx + 1..]),
        _ => host.to_string(),
    }
}

/// `hostPaths` (config_unix.go): `host_port_` (when different), `host[:port]`,
/// `_default`. (A newer upstream adds a host-suffix candidate; not in any release we model.)
pub fn host_paths(root: &Path, host: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let ch = host_directory(host);
    if ch != host {
        out.push(root.join(ch));
    }
    out.push(root.join(host));
    out.push(root.join("_default"));
    out
}

/// `hostDirFromRoots` (internal/cri/server/images/image_pull.go) over
/// `HostDirFromRoot`: first existing candidate across roots in order; a stat error
/// other than not-found stops the search (upstream returns it and the pull fails).
pub fn host_dir_from_roots(
    hr: &HostRoot,
    roots: &[PathBuf],
    host: &str,
) -> Result<Option<PathBuf>, (PathBuf, ReadError)> {
    for root in roots {
        for p in host_paths(root, host) {
            match hr.resolve(&p) {
                Ok(real) => match std::fs::metadata(&real) {
                    Ok(_) => return Ok(Some(p)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err((p, ReadError::Io(e))),
                },
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err((p, e)),
            }
        }
    }
    Ok(None)
}

/// What a host directory yields.
#[derive(Clone, Debug, Default)]
pub struct HostDirLoad {
    /// `None` only when the directory holds nothing usable *and* upstream would return
    /// nil; `loadHostDir` always returns at least one entry, so this is `Some` in practice.
    pub hosts: Vec<HostConfig>,
    pub problems: Vec<ConfigProblem>,
    pub findings: Vec<Finding>,
}

/// Version facts that change how a hosts.toml is read. `Default` is what pullprobe
/// assumes for an unknown release.
#[derive(Clone, Copy, Debug, Default)]
pub struct HostsTomlQuirks {
    /// containerd 1.x (go-toml v1 code path: v1.6.20 and v1.7.24
    /// remotes/docker/config/hosts.go `getSortedHosts`) rejects a file without any
    /// `[host]` table ("invalid `host` tree"), seen with Debian's 1.6.20 and 1.7.24; it
    /// then behaves as if the file were absent (Docker layout only). 2.0 parses with
    /// `toml.Unmarshal` and reads such files.
    pub reject_top_level_only: bool,
    /// containerd < 2.1 has no `dial_timeout` key (`hostFileConfig.DialTimeout` first in
    /// v2.1.0): go-toml ignores it, whatever its value. From 2.1 a value that is not a Go
    /// duration is an error, and the whole file is ignored.
    pub ignore_dial_timeout: bool,
    /// containerd ≥ 2.2 knows the `referrers` capability (`parseHostConfig`, v2.2.0);
    /// before, it is an "unknown capability" and the whole file is ignored.
    pub referrers_capability: bool,
}

impl HostsTomlQuirks {
    /// The quirks of a containerd release (`None` = unknown: [`Default`]).
    pub fn for_version(v: Option<crate::runtime::ContainerdVersion>) -> HostsTomlQuirks {
        match v {
            None => HostsTomlQuirks::default(),
            Some(v) => HostsTomlQuirks {
                reject_top_level_only: !v.at_least(2, 0),
                ignore_dial_timeout: !v.at_least(2, 1),
                referrers_capability: v.at_least(2, 2),
            },
        }
    }
}

/// `loadHostDir`: hosts.toml if present and valid, else the Docker cert layout.
pub fn load_host_dir(hr: &HostRoot, dir: &Path, quirks: HostsTomlQuirks) -> HostDirLoad {
    let file = dir.join("hosts.toml");
    let mut out = HostDirLoad::default();
    let text = match hr.read(&file) {
        Ok(b) => b,
        Err(e) if e.is_not_found() => Vec::new(),
        Err(e) => {
            // Upstream returns the read error and the pull fails outright.
            out.problems.push(ConfigProblem::new(
                &file,
                None,
                ProblemKind::Unreadable,
                format!("hosts.toml {e}; containerd fails every pull of this registry"),
            ));
            out.findings.push(Finding::new(
                FindingKind::RuntimeWouldFail,
                Some(&file),
                format!(
                    "containerd cannot read {} and fails the pull",
                    file.display()
                ),
            ));
            out.hosts = load_cert_files(hr, dir, &mut out.problems);
            return out;
        }
    };
    if text.is_empty() {
        out.hosts = load_cert_files(hr, dir, &mut out.problems);
        return out;
    }
    let parsed = std::str::from_utf8(&text)
        .map_err(|_| err("(file)", "not valid UTF-8"))
        .and_then(|s| parse_hosts_file(dir, s, quirks));
    match parsed {
        Ok(h) => {
            out.hosts = h;
            if let Ok(text) = std::str::from_utf8(&text) {
                let unknown = unknown_keys_for(text, quirks);
                if !unknown.is_empty() {
                    out.findings.push(Finding::new(
                        FindingKind::Note,
                        Some(&file),
                        format!(
                            "containerd ignores these keys of {}: {}",
                            file.display(),
                            unknown.join(", ")
                        ),
                    ));
                }
            }
        }
        Err(e) => {
            out.problems.push(ConfigProblem::new(
                &file,
                Some(&e.field),
                ProblemKind::Invalid,
                e.message.clone(),
            ));
            out.findings.push(Finding::new(
                FindingKind::HostsTomlIgnored,
                Some(&file),
                format!(
                    "containerd ignores {} ({}: {}) and falls back to the certificate files of its directory",
                    file.display(),
                    e.field,
                    e.message
                ),
            ));
            out.hosts = load_cert_files(hr, dir, &mut out.problems);
        }
    }
    out
}

/// Keys go-toml silently ignores (containerd decodes without strict mode), e.g. a
/// `proxy` key or nydus' `auth_through`: worth telling, since the operator expects them
/// to do something.
pub fn unknown_keys(text: &str) -> Vec<String> {
    unknown_keys_for(text, HostsTomlQuirks::default())
}

/// [`unknown_keys`] for a release: `dial_timeout` is unknown before 2.1.
pub fn unknown_keys_for(text: &str, quirks: HostsTomlQuirks) -> Vec<String> {
    const ALL: &[&str] = &[
        "capabilities",
        "ca",
        "client",
        "skip_verify",
        "header",
        "override_path",
        "dial_timeout",
    ];
    let known: Vec<&str> = ALL
        .iter()
        .copied()
        .filter(|k| !(quirks.ignore_dial_timeout && *k == "dial_timeout"))
        .collect();
    let known = known.as_slice();
    let Ok(doc) = toml::from_str::<toml::Table>(text) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for k in doc.keys() {
        if k != "server" && k != "host" && !known.contains(&k.as_str()) {
            out.push(k.clone());
        }
    }
    if let Some(Value::Table(hosts)) = doc.get("host") {
        for (h, v) in hosts {
            if let Value::Table(t) = v {
                for k in t.keys() {
                    if !known.contains(&k.as_str()) {
                        out.push(format!("host.\"{h}\".{k}"));
                    }
                }
            }
        }
    }
    out
}

/// `loadCertFiles`: `*.crt` are CAs, `*.cert` client certs with an optional same-name
/// `*.key`; all apply to one (root) entry.
pub fn load_cert_files(
    hr: &HostRoot,
    dir: &Path,
    problems: &mut Vec<ConfigProblem>,
) -> Vec<HostConfig> {
    let mut h = HostConfig::default();
    let entries = match hr.read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.is_not_found() => Vec::new(),
        Err(e) => {
            problems.push(ConfigProblem::new(
                dir,
                None,
                ProblemKind::Unreadable,
                format!("certificate directory {e}"),
            ));
            Vec::new()
        }
    };
    for e in entries {
        if e.is_dir {
            continue;
        }
        if e.name.ends_with(".crt") {
            h.ca.get_or_insert_with(Vec::new).push(dir.join(&e.name));
        }
        if let Some(base) = e.name.strip_suffix(".cert") {
            let key = dir.join(format!("{base}.key"));
            let key = hr.exists(&key).then_some(key);
            h.client
                .get_or_insert_with(Vec::new)
                .push((dir.join(&e.name), key));
        }
    }
    vec![h]
}

/// `parseHostsFile`: `[host."…"]` entries in file order, then the root entry.
pub fn parse_hosts_file(
    base_dir: &Path,
    text: &str,
    quirks: HostsTomlQuirks,
) -> Result<Vec<HostConfig>, HostsTomlError> {
    let doc: toml::Table = toml::from_str(text).map_err(|e| {
        err(
            "(syntax)",
            crate::redact::ParseError::toml(&e, text).to_string(),
        )
    })?;
    let ordered = sorted_hosts(text);
    let host_table = match doc.get("host") {
        None => None,
        Some(Value::Table(t)) => Some(t),
        Some(_) => return Err(err("host", "must be a table of hosts")),
    };
    if quirks.reject_top_level_only && host_table.is_none_or(|t| t.is_empty()) {
        return Err(err(
            "host",
            "invalid host tree: containerd 1.x rejects a hosts.toml without [host.\"…\"] tables",
        ));
    }
    let mut hosts = Vec::new();
    if let Some(t) = host_table {
        for name in &ordered {
            let field = format!("host.\"{name}\"");
            let cfg = match t.get(name) {
                Some(Value::Table(c)) => c.clone(),
                Some(_) => return Err(err(field, "must be a table")),
                None => toml::Table::new(),
            };
            hosts.push(parse_host_config_for(name, base_dir, &cfg, &field, quirks)?);
        }
    }
    let server = match doc.get("server") {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => {
            return Err(err(
                "server",
                format!("must be a string, found {}", v.type_str()),
            ))
        }
    };
    hosts.push(parse_host_config_for(&server, base_dir, &doc, "", quirks)?);
    Ok(hosts)
}

/// `getSortedHosts`: the second part of every `[host.X…]` table header, in file order,
/// skipping a repeat of the previous one (sub-tables such as `[host.X.header]`).
/// Key positions come from the parser's spans, so comments and strings cannot fool it.
pub fn sorted_hosts(text: &str) -> Vec<String> {
    let Ok(doc) = toml::de::DeTable::parse(text) else {
        return Vec::new();
    };
    let Some(host) = doc.get_ref().get("host") else {
        return Vec::new();
    };
    let Some(t) = host.get_ref().as_table() else {
        return Vec::new();
    };
    let mut keys: Vec<(usize, String)> = t
        .keys()
        .map(|k| (k.span().start, k.get_ref().to_string()))
        .collect();
    keys.sort();
    keys.into_iter().map(|(_, k)| k).collect()
}

fn prefixed(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// `parseHostConfig`. `server` empty = root entry without `server` (defaulted later).
/// Keys are checked in containerd's order, so the first bad one is the one reported.
pub fn parse_host_config(
    server: &str,
    base_dir: &Path,
    cfg: &toml::Table,
    prefix: &str,
) -> Result<HostConfig, HostsTomlError> {
    parse_host_config_for(server, base_dir, cfg, prefix, HostsTomlQuirks::default())
}

/// [`parse_host_config`] as a given release reads it (`dial_timeout`, `referrers`).
fn parse_host_config_for(
    server: &str,
    base_dir: &Path,
    cfg: &toml::Table,
    prefix: &str,
    quirks: HostsTomlQuirks,
) -> Result<HostConfig, HostsTomlError> {
    let mut r = HostConfig::default();
    let override_path = match cfg.get("override_path") {
        None => false,
        Some(Value::Boolean(b)) => *b,
        Some(_) => return Err(err(prefixed(prefix, "override_path"), "must be a boolean")),
    };
    r.override_path = override_path;
    if !server.is_empty() {
        (r.scheme, r.host, r.path) = parse_server(server, prefix, override_path)?;
    }
    r.skip_verify = match cfg.get("skip_verify") {
        None => None,
        Some(Value::Boolean(b)) => Some(*b),
        Some(_) => return Err(err(prefixed(prefix, "skip_verify"), "must be a boolean")),
    };
    r.capabilities = parse_capabilities(cfg.get("capabilities"), prefix, quirks)?;
    if let Some(v) = cfg.get("ca") {
        r.ca = Some(parse_ca(v, base_dir, &prefixed(prefix, "ca"))?);
    }
    if let Some(v) = cfg.get("client") {
        r.client = Some(parse_client(v, base_dir, &prefixed(prefix, "client"))?);
    }
    if let Some(v) = cfg.get("header") {
        r.header = Some(parse_header(v, prefix)?);
    }
    if !quirks.ignore_dial_timeout {
        r.dial_timeout = parse_dial_timeout(cfg.get("dial_timeout"), prefix)?;
    }
    Ok(r)
}

/// `server` (or a `[host]` key) as scheme, host and API path: `/v2` is appended
/// unless the path already ends with it or `override_path` is set.
fn parse_server(
    server: &str,
    prefix: &str,
    override_path: bool,
) -> Result<(String, String, String), HostsTomlError> {
    let (scheme, host, path) = split_server(server).ok_or_else(|| {
        err(
            if prefix.is_empty() {
                "server".to_string()
            } else {
                prefix.to_string()
            },
            // The value may carry `user:pass@`: never quoted.
            "unable to parse server: not a host or URL",
        )
    })?;
    let path = if !path.is_empty() {
        let p = clean_path(&path);
        if !p.ends_with("/v2") && !override_path {
            format!("{p}/v2")
        } else {
            p
        }
    } else if !override_path {
        "/v2".to_string()
    } else {
        String::new()
    };
    Ok((scheme, host, path))
}

/// `capabilities`: absent or empty = the defaults; otherwise exactly the listed ones.
fn parse_capabilities(
    v: Option<&Value>,
    prefix: &str,
    quirks: HostsTomlQuirks,
) -> Result<Capabilities, HostsTomlError> {
    let a = match v {
        None => return Ok(DEFAULT_CAPABILITIES),
        Some(Value::Array(a)) if a.is_empty() => return Ok(DEFAULT_CAPABILITIES),
        Some(Value::Array(a)) => a,
        Some(_) => {
            return Err(err(
                prefixed(prefix, "capabilities"),
                "must be an array of strings",
            ))
        }
    };
    let mut c = Capabilities {
        pull: false,
        resolve: false,
        push: false,
        referrers: false,
    };
    for v in a {
        let Value::String(s) = v else {
            return Err(err(prefixed(prefix, "capabilities"), "must be strings"));
        };
        match s.to_lowercase().as_str() {
            "pull" => c.pull = true,
            "resolve" => c.resolve = true,
            "push" => c.push = true,
            "referrers" if quirks.referrers_capability => c.referrers = true,
            _ => {
                return Err(err(
                    prefixed(prefix, "capabilities"),
                    format!("unknown capability {}", redact::keyword(s)),
                ))
            }
        }
    }
    Ok(c)
}

/// `ca`: one path or a list of paths.
fn parse_ca(v: &Value, base_dir: &Path, field: &str) -> Result<Vec<PathBuf>, HostsTomlError> {
    match v {
        Value::String(s) => Ok(vec![abs(s, base_dir)]),
        Value::Array(a) => Ok(string_slice(a, field)?
            .iter()
            .map(|s| abs(s, base_dir))
            .collect()),
        other => Err(err(
            field,
            format!("invalid type {} for \"ca\"", other.type_str()),
        )),
    }
}

/// `client`: a cert path, or a list of cert paths and `[cert, key]` pairs.
fn parse_client(
    v: &Value,
    base_dir: &Path,
    field: &str,
) -> Result<Vec<(PathBuf, Option<PathBuf>)>, HostsTomlError> {
    let bad_type = |other: &Value| {
        err(
            field,
            format!("invalid type {} for \"client\"", other.type_str()),
        )
    };
    let items = match v {
        Value::String(s) => return Ok(vec![(abs(s, base_dir), None)]),
        Value::Array(a) => a,
        other => return Err(bad_type(other)),
    };
    let mut pairs = Vec::new();
    for item in items {
        match item {
            Value::String(s) => pairs.push((abs(s, base_dir), None)),
            Value::Array(p) => pairs.push(client_pair(p, base_dir, field)?),
            other => return Err(bad_type(other)),
        }
    }
    Ok(pairs)
}

/// One `[cert, key]` pair of `client`.
fn client_pair(
    p: &[Value],
    base_dir: &Path,
    field: &str,
) -> Result<(PathBuf, Option<PathBuf>), HostsTomlError> {
    let s = string_slice(p, field)?;
    if s.len() != 2 {
        return Err(err(
            field,
            format!(
                "invalid pair of {} paths for \"client\" (want cert and key)",
                s.len()
            ),
        ));
    }
    // An empty key means the key is in the cert file (hosts.go
    // reads `pair[1] != ""`), which makeAbsPath turns into the dir.
    let key = if s[1].is_empty() {
        None
    } else {
        Some(abs(&s[1], base_dir))
    };
    Ok((abs(&s[0], base_dir), key))
}

/// `header`: a table of names to a value or a list of values.
fn parse_header(v: &Value, prefix: &str) -> Result<Vec<(String, Vec<String>)>, HostsTomlError> {
    let Value::Table(t) = v else {
        return Err(err(prefixed(prefix, "header"), "must be a table"));
    };
    let mut hs = Vec::new();
    for (k, v) in t {
        let field = prefixed(prefix, &format!("header.{k}"));
        let vals = match v {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => string_slice(a, &field)?,
            other => {
                return Err(err(
                    field,
                    format!("invalid type {} for a header", other.type_str()),
                ))
            }
        };
        hs.push((k.clone(), vals));
    }
    Ok(hs)
}

/// `dial_timeout`: a Go duration; empty = unset.
fn parse_dial_timeout(v: Option<&Value>, prefix: &str) -> Result<Option<Duration>, HostsTomlError> {
    match v {
        None => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(crate::goduration::parse(s).ok_or_else(|| {
            err(
                prefixed(prefix, "dial_timeout"),
                format!("time: invalid duration {}", redact::keyword(s)),
            )
        })?)),
        Some(_) => Err(err(prefixed(prefix, "dial_timeout"), "must be a string")),
    }
}

fn string_slice(a: &[Value], field: &str) -> Result<Vec<String>, HostsTomlError> {
    a.iter()
        .map(|v| match v {
            Value::String(s) => Ok(s.clone()),
            other => Err(err(
                field,
                format!("unable to cast {} to string", other.type_str()),
            )),
        })
        .collect()
}

/// `makeAbsPath`: relative paths are joined to the hosts.toml directory.
fn abs(p: &str, base: &Path) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// `https://` is prepended unless the string starts with `http` (hosts.go); returns
/// Go's `(u.Scheme, u.Host, u.Path)`.
pub fn split_server(server: &str) -> Option<(String, String, String)> {
    let s = if server.starts_with("http") {
        server.to_string()
    } else {
        format!("https://{server}")
    };
    let (scheme, rest) = s.split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host = &rest[..end];
    let mut path = &rest[end..];
    if let Some(i) = path.find(['?', '#']) {
        path = &path[..i];
    }
    // Validate the authority the way a URL parser would.
    url::Url::parse(&format!("{scheme}://{host}/")).ok()?;
    // Go's `url.URL.Host` excludes the userinfo (`parseAuthority` splits at the last
    // `@`): containerd never sends a `user:pass@` from hosts.toml, and it must not reach
    // the endpoint, its provenance or any message here either.
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    Some((scheme.to_lowercase(), host.to_string(), path.to_string()))
}

/// Go's `path.Clean` for absolute URL paths.
pub fn clean_path(p: &str) -> String {
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|s| *s != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            s => out.push(s),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<HostConfig>, HostsTomlError> {
        parse_hosts_file(
            Path::new("/etc/containerd/certs.d/reg"),
            text,
            HostsTomlQuirks::default(),
        )
    }

    #[test]
    fn host_directory_rules() {
        for (host, want) in [
            ("reg:5000", vec!["reg_5000_", "reg:5000", "_default"]),
            ("reg", vec!["reg", "_default"]),
            ("[::1]:5000", vec!["[::1]_5000_", "[::1]:5000", "_default"]),
            ("docker.io", vec!["docker.io", "_default"]),
        ] {
            let got: Vec<String> = host_paths(Path::new("/r"), host)
                .into_iter()
                .map(|p| p.strip_prefix("/r").unwrap().display().to_string())
                .collect();
            assert_eq!(got, want, "{host}");
        }
    }

    #[test]
    fn host_order_is_file_order_and_root_last() {
        let hs = parse(
            r#"
server = "https://upstream.example"
[host."https://zeta.mirror"]
  capabilities = ["pull"]
[host."https://alpha.mirror"]
  capabilities = ["pull", "RESOLVE"]
[host."https://zeta.mirror".header]
  x = "1"
"#,
        )
        .unwrap();
        let names: Vec<_> = hs.iter().map(|h| h.host.as_str()).collect();
        assert_eq!(names, ["zeta.mirror", "alpha.mirror", "upstream.example"]);
        assert!(hs[0].capabilities.pull && !hs[0].capabilities.resolve);
        assert!(hs[1].capabilities.resolve);
        assert_eq!(hs[2].capabilities, DEFAULT_CAPABILITIES);
        assert_eq!(hs[0].header, Some(vec![("x".into(), vec!["1".into()])]));
    }

    #[test]
    fn paths_override_and_v2() {
        let cases = [
            ("https://m", false, "/v2"),
            // Go: path.Clean("/") is "/", then "/" + "/v2" (upstream really sends `//v2`).
            ("https://m/", false, "//v2"),
            ("https://m/us", false, "/us/v2"),
            ("https://m/us/v2/", false, "/us/v2"),
            ("https://m/v2/upstream", true, "/v2/upstream"),
            ("https://m", true, ""),
            ("m:5000/a/../b", false, "/b/v2"),
        ];
        for (server, ov, want) in cases {
            let mut t = toml::Table::new();
            t.insert("override_path".into(), Value::Boolean(ov));
            let h = parse_host_config(server, Path::new("/d"), &t, "").unwrap();
            assert_eq!(h.path, want, "{server}");
        }
        let h = parse_host_config("m:5000", Path::new("/d"), &toml::Table::new(), "").unwrap();
        assert_eq!((h.scheme.as_str(), h.host.as_str()), ("https", "m:5000"));
    }

    #[test]
    fn ca_and_client_forms() {
        let hs = parse(
            r#"
ca = "rel/ca.crt"
client = [["/abs/c.cert", ""], ["c2.cert", "c2.key"], "both.pem"]
[host."https://a"]
  ca = ["/x.pem", "y.pem"]
  client = "one.pem"
  skip_verify = true
"#,
        )
        .unwrap();
        let d = Path::new("/etc/containerd/certs.d/reg");
        assert_eq!(
            hs[0].ca,
            Some(vec![PathBuf::from("/x.pem"), d.join("y.pem")])
        );
        assert_eq!(hs[0].client, Some(vec![(d.join("one.pem"), None)]));
        assert_eq!(hs[0].skip_verify, Some(true));
        assert_eq!(hs[1].ca, Some(vec![d.join("rel/ca.crt")]));
        assert_eq!(
            hs[1].client,
            Some(vec![
                (PathBuf::from("/abs/c.cert"), None),
                (d.join("c2.cert"), Some(d.join("c2.key"))),
                (d.join("both.pem"), None)
            ])
        );
        assert!(hs[1].explicit_tls());
    }

    #[test]
    fn invalid_inputs_name_the_field() {
        for (text, field) in [
            ("capabilities = [\"fetch\"]", "capabilities"),
            (
                "[host.\"https://a\"]\ncapabilities = [\"pull\", \"teleport\"]",
                "host.\"https://a\".capabilities",
            ),
            ("server = [\"https://a\"]", "server"),
            ("skip_verify = \"yes\"", "skip_verify"),
            ("ca = 3", "ca"),
            ("client = [[\"a\"]]", "client"),
            ("dial_timeout = \"10 parsecs\"", "dial_timeout"),
            ("[header]\nx = 1", "header.x"),
            ("server = \"a\"\nserver = \"b\"", "(syntax)"),
            ("[host", "(syntax)"),
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!(e.field, field, "{text}: {e}");
        }
    }

    /// Go's `u.Host` has no userinfo: a `user:pass@` in a hosts.toml host never becomes
    /// part of the endpoint (it used to reach plan output and Node condition messages).
    #[test]
    fn userinfo_is_not_part_of_the_host() {
        assert_eq!(
            split_server("https://bob:canary-ui@mirror.example:5000/v2"),
            Some(("https".into(), "mirror.example:5000".into(), "/v2".into()))
        );
        assert_eq!(
            split_server("a@b:canary-ui@mirror.example"),
            Some(("https".into(), "mirror.example".into(), String::new()))
        );
        let hs = parse(
            "server = \"https://u:canary-ui@r.example\"\n[host.\"https://u:canary-ui@m.example:5000\"]\n",
        )
        .unwrap();
        assert!(hs.iter().all(|h| !h.host.contains("canary")), "{hs:?}");
        assert_eq!(hs[0].host, "m.example:5000");
    }

    #[test]
    fn top_level_only_rejected_by_quirk() {
        let q = HostsTomlQuirks {
            reject_top_level_only: true,
            ..Default::default()
        };
        assert!(parse_hosts_file(Path::new("/d"), "server = \"https://x\"", q).is_err());
        assert!(parse_hosts_file(Path::new("/d"), "[host.\"https://m\"]\n", q).is_ok());
        assert!(parse_hosts_file(
            Path::new("/d"),
            "server = \"https://x\"",
            HostsTomlQuirks::default()
        )
        .is_ok());
    }

    #[test]
    fn unknown_keys_are_listed() {
        let u = unknown_keys("server = \"x\"\nproxy = \"p\"\n[host.\"https://m\"]\nauth_through = true\nca = \"c\"\n");
        assert_eq!(
            u,
            vec![
                "proxy".to_string(),
                "host.\"https://m\".auth_through".to_string()
            ]
        );
    }

    #[test]
    fn clean_path_like_go() {
        assert_eq!(clean_path("/a//b/./c/.."), "/a/b");
        assert_eq!(clean_path("/"), "/");
        assert_eq!(clean_path("/../x"), "/x");
    }
}
