//! k3s / rke2 nodes: `registries.yaml` and the containerd files k3s renders from it.
//!
//! k3s runs its own containerd with `--config /var/lib/rancher/<k3s|rke2>/agent/etc/containerd/config.toml`
//! and `config_path = …/agent/etc/containerd/certs.d`. At start it renders, from
//! `/etc/rancher/<k3s|rke2>/registries.yaml`:
//! - one `certs.d/<host>/hosts.toml` per registry (k3s `pkg/agent/containerd/config.go`
//!   `writeContainerdHosts` → `getHostConfigs`, template `templates.HostsTomlTemplate`);
//! - a `registry.configs."<host>".auth` stanza per `configs` entry with `auth` in
//!   config.toml (CRI registry auth; `warnMissingRegistryAuth`/`registryAuthPresent`
//!   in the same file check for exactly that stanza).
//!
//! On a running node the rendered files are the truth and are read as containerd's own
//! config. When only `registries.yaml` exists (k3s not started yet, or an image being
//! prepared), [`load`] reproduces the rendering in memory: the hosts.toml text k3s
//! would write is generated here and parsed by the ordinary hosts.toml reader, so the
//! plan goes through exactly the same code as a real `certs.d`.
//!
//! Not reproduced: the embedded registry mirror (spegel, `embedded-registry: true`),
//! which k3s injects as an extra first endpoint, and `--disable-default-registry-endpoint`
//! (both are k3s flags, not `registries.yaml`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::containerd::{self, ContainerdConfig, LegacyHostConfig};
use super::hosts_toml::{self, HostDirLoad, HostsTomlQuirks};
use super::plan::Plan;
use super::{ConfigProblem, Finding, FindingKind, ProblemKind};
use crate::credentials::{Credential, Secret};
use crate::hostroot::HostRoot;
use crate::redact;
use crate::reference::ImageRef;

/// Which Rancher distribution the node runs (both share the k3s agent code).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Distro {
    K3s,
    Rke2,
}

impl Distro {
    pub fn name(self) -> &'static str {
        match self {
            Distro::K3s => "k3s",
            Distro::Rke2 => "rke2",
        }
    }

    /// `/etc/rancher/<distro>/registries.yaml`.
    pub fn registries_yaml(self) -> PathBuf {
        PathBuf::from(format!("/etc/rancher/{}/registries.yaml", self.name()))
    }

    /// The containerd config k3s renders (`cfg.Containerd.Config`).
    pub fn containerd_config(self) -> PathBuf {
        PathBuf::from(format!(
            "/var/lib/rancher/{}/agent/etc/containerd/config.toml",
            self.name()
        ))
    }

    /// The `config_path` k3s renders into it (`cfg.Containerd.Registry`).
    pub fn certs_d(self) -> PathBuf {
        PathBuf::from(format!(
            "/var/lib/rancher/{}/agent/etc/containerd/certs.d",
            self.name()
        ))
    }
}

/// k3s's containerd socket (rke2 uses the same path).
pub const K3S_SOCKET: &str = "/run/k3s/containerd/containerd.sock";

/// What was found of k3s on the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct K3sNode {
    pub distro: Distro,
    /// `registries.yaml`, when present.
    pub registries: Option<PathBuf>,
    /// The rendered containerd config, when present (k3s has started at least once).
    pub rendered_config: Option<PathBuf>,
}

/// Looks for k3s, then rke2: a rendered containerd config or a `registries.yaml`.
pub fn detect(hr: &HostRoot) -> Option<K3sNode> {
    for distro in [Distro::K3s, Distro::Rke2] {
        let reg = distro.registries_yaml();
        let cfg = distro.containerd_config();
        let registries = hr.exists(&reg).then_some(reg);
        let rendered_config = hr.exists(&cfg).then_some(cfg);
        if registries.is_some() || rendered_config.is_some() {
            return Some(K3sNode {
                distro,
                registries,
                rendered_config,
            });
        }
    }
    None
}

/// `registries.Mirror` (rancher/wharfie pkg/registries): `endpoint` and `rewrite`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mirror {
    pub endpoints: Vec<String>,
    /// Regex pattern → replacement, applied to the repository at mirror endpoints.
    pub rewrites: BTreeMap<String, String>,
}

/// `registries.AuthConfig`. Secrets never leave as text (see [`Secret`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthConfig {
    pub username: String,
    pub password: Secret,
    /// base64 `user:password`.
    pub auth: Secret,
    pub identity_token: Secret,
}

/// `registries.TLSConfig`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsConfig {
    pub ca_file: String,
    pub cert_file: String,
    pub key_file: String,
    pub insecure_skip_verify: bool,
}

/// `registries.RegistryConfig`: both are pointers upstream; `Some` = the key was present
/// (even with only null fields), which matters to `endpointHasConfig`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistryConfig {
    pub auth: Option<AuthConfig>,
    pub tls: Option<TlsConfig>,
}

/// A parsed `registries.yaml`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Registries {
    pub mirrors: BTreeMap<String, Mirror>,
    pub configs: BTreeMap<String, RegistryConfig>,
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Go yaml.v2 decodes any scalar into a string field; null is the zero value.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::Null => Some(String::new()),
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Parses `registries.yaml` like `registries.GetPrivateRegistries` (yaml.v2, unknown
/// keys ignored). A syntax error is one problem and an empty result (k3s refuses to
/// start); a wrongly typed field is a problem naming it and only that entry is dropped.
pub fn parse(file: &Path, text: &str) -> (Registries, Vec<ConfigProblem>) {
    let mut out = Registries::default();
    let mut problems = Vec::new();
    let mut bad = |field: &str, msg: String| {
        problems.push(ConfigProblem::new(
            file,
            Some(field),
            ProblemKind::Invalid,
            msg,
        ));
    };
    let doc: Value = if text.trim().is_empty() {
        Value::Null
    } else {
        match serde_saphyr::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                bad(
                    "(syntax)",
                    crate::redact::ParseError::yaml(&e, text).to_string(),
                );
                return (out, problems);
            }
        }
    };
    let top = match &doc {
        Value::Null => return (out, problems),
        Value::Object(m) => m,
        v => {
            bad(
                "(document)",
                format!("must be a mapping, found {}", type_name(v)),
            );
            return (out, problems);
        }
    };
    parse_mirrors(top.get("mirrors"), &mut out.mirrors, &mut bad);
    parse_configs(top.get("configs"), &mut out.configs, &mut bad);
    (out, problems)
}

/// `mirrors`: a mirror with a wrongly typed field is reported and left out.
fn parse_mirrors(
    v: Option<&Value>,
    mirrors: &mut BTreeMap<String, Mirror>,
    bad: &mut impl FnMut(&str, String),
) {
    let m = match v {
        None | Some(Value::Null) => return,
        Some(Value::Object(m)) => m,
        Some(v) => {
            bad(
                "mirrors",
                format!("must be a mapping, found {}", type_name(v)),
            );
            return;
        }
    };
    for (host, mv) in m {
        let f = format!("mirrors.\"{host}\"");
        match mv {
            Value::Null => {
                mirrors.insert(host.clone(), Mirror::default());
            }
            Value::Object(t) => {
                if let Some(mirror) = parse_mirror(&f, t, bad) {
                    mirrors.insert(host.clone(), mirror);
                }
            }
            v => bad(&f, format!("must be a mapping, found {}", type_name(v))),
        }
    }
}

/// One `mirrors."<host>"` mapping (`f` is its field path): `endpoint` and `rewrite`.
/// `None` once any of its fields is wrongly typed (each bad one reported).
fn parse_mirror(
    f: &str,
    mt: &serde_json::Map<String, Value>,
    bad: &mut impl FnMut(&str, String),
) -> Option<Mirror> {
    let mut mirror = Mirror::default();
    let mut ok = true;
    match mt.get("endpoint") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            for (i, e) in a.iter().enumerate() {
                match scalar(e) {
                    Some(s) => mirror.endpoints.push(s),
                    None => {
                        bad(
                            &format!("{f}.endpoint[{i}]"),
                            format!("must be a string, found {}", type_name(e)),
                        );
                        ok = false;
                    }
                }
            }
        }
        Some(v) => {
            bad(
                &format!("{f}.endpoint"),
                format!("must be a list of strings, found {}", type_name(v)),
            );
            ok = false;
        }
    }
    match mt.get("rewrite") {
        None | Some(Value::Null) => {}
        Some(Value::Object(r)) => {
            for (pat, rep) in r {
                match scalar(rep) {
                    Some(s) => {
                        mirror.rewrites.insert(pat.clone(), s);
                    }
                    None => {
                        bad(
                            &format!("{f}.rewrite.\"{pat}\""),
                            format!("must be a string, found {}", type_name(rep)),
                        );
                        ok = false;
                    }
                }
            }
        }
        Some(v) => {
            bad(
                &format!("{f}.rewrite"),
                format!("must be a mapping, found {}", type_name(v)),
            );
            ok = false;
        }
    }
    ok.then_some(mirror)
}

/// `configs`: an entry with a wrongly typed field is reported and left out.
fn parse_configs(
    v: Option<&Value>,
    configs: &mut BTreeMap<String, RegistryConfig>,
    bad: &mut impl FnMut(&str, String),
) {
    match v {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (host, cv) in m {
                let f = format!("configs.\"{host}\"");
                match parse_registry_config(&f, cv) {
                    Ok(c) => {
                        configs.insert(host.clone(), c);
                    }
                    Err((field, msg)) => bad(&field, msg),
                }
            }
        }
        Some(v) => bad(
            "configs",
            format!("must be a mapping, found {}", type_name(v)),
        ),
    }
}

fn parse_registry_config(f: &str, v: &Value) -> Result<RegistryConfig, (String, String)> {
    let mut c = RegistryConfig::default();
    let t = match v {
        // `"docker.io":` with no body: a zero RegistryConfig (no auth, no TLS).
        Value::Null => return Ok(c),
        Value::Object(t) => t,
        v => {
            return Err((
                f.to_string(),
                format!("must be a mapping, found {}", type_name(v)),
            ))
        }
    };
    let get = |t: &serde_json::Map<String, Value>,
               sect: &str,
               k: &str|
     -> Result<String, (String, String)> {
        match t.get(k) {
            None => Ok(String::new()),
            Some(v) => scalar(v).ok_or_else(|| {
                (
                    format!("{f}.{sect}.{k}"),
                    format!("must be a string, found {}", type_name(v)),
                )
            }),
        }
    };
    match t.get("auth") {
        None | Some(Value::Null) => {}
        Some(Value::Object(a)) => {
            c.auth = Some(AuthConfig {
                username: get(a, "auth", "username")?,
                password: Secret::new(get(a, "auth", "password")?),
                auth: Secret::new(get(a, "auth", "auth")?),
                identity_token: Secret::new(get(a, "auth", "identity_token")?),
            });
        }
        Some(v) => {
            return Err((
                format!("{f}.auth"),
                format!("must be a mapping, found {}", type_name(v)),
            ))
        }
    }
    match t.get("tls") {
        None | Some(Value::Null) => {}
        Some(Value::Object(s)) => {
            let insecure = match s.get("insecure_skip_verify") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(v) => {
                    return Err((
                        format!("{f}.tls.insecure_skip_verify"),
                        format!("must be a boolean, found {}", type_name(v)),
                    ))
                }
            };
            c.tls = Some(TlsConfig {
                ca_file: get(s, "tls", "ca_file")?,
                cert_file: get(s, "tls", "cert_file")?,
                key_file: get(s, "tls", "key_file")?,
                insecure_skip_verify: insecure,
            });
        }
        Some(v) => {
            return Err((
                format!("{f}.tls"),
                format!("must be a mapping, found {}", type_name(v)),
            ))
        }
    }
    Ok(c)
}

/// The credential containerd derives from an auth stanza: `ParseAuth`
/// (internal/cri/server/images/image_pull.go) takes username/password, then the
/// identity token, then the base64 `auth`.
pub fn credential(a: &AuthConfig) -> Result<Option<Credential>, String> {
    crate::credentials::containerd_parse_auth(&a.username, &a.password, &a.identity_token, &a.auth)
}

// ---------------------------------------------------------------------------
// getHostConfigs (k3s pkg/agent/containerd/config.go)
// ---------------------------------------------------------------------------

/// `templates.RegistryEndpoint`. `url`: `None` = nil, `Some("")` = `&url.URL{}`.
#[derive(Clone, Debug, Default)]
struct RegistryEndpoint {
    url: Option<String>,
    config: RegistryConfig,
    rewrites: BTreeMap<String, String>,
    override_path: bool,
}

/// `templates.HostConfig`.
#[derive(Clone, Debug, Default)]
struct HostCfg {
    default: Option<RegistryEndpoint>,
    endpoints: Vec<RegistryEndpoint>,
}

/// Go `net.SplitHostPort`-ish port of a URL host (`url.URL.Port`).
fn url_port(host: &str) -> &str {
    let after = match host.rfind(']') {
        Some(i) => &host[i + 1..],
        None => host,
    };
    match after.rfind(':') {
        Some(i) => &after[i + 1..],
        None => "",
    }
}

/// containerd `docker.IsLocalhost`: `localhost` or a loopback IP, port ignored.
fn is_localhost(host: &str) -> bool {
    let bare = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else if host.matches(':').count() == 1 {
        host.split(':').next().unwrap_or(host)
    } else {
        host
    };
    bare == "localhost" || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// containerd `docker.DefaultHost`: docker.io is served by registry-1.docker.io.
fn default_host(host: &str) -> &str {
    if host == "docker.io" {
        "registry-1.docker.io"
    } else {
        host
    }
}

/// `normalizeEndpointAddress`: (registry name, URL string, override_path). The
/// embedded-registry address is not modelled (k3s passes it only with spegel on).
fn normalize_endpoint(endpoint: &str) -> Result<(String, String, bool), String> {
    let (scheme, rest) = match endpoint.split_once("://") {
        Some((s, r)) => (s.to_ascii_lowercase(), r),
        // `"//" + endpoint`: everything up to the first '/' is the host.
        None => (String::new(), endpoint),
    };
    if !scheme.is_empty()
        && !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return Err(format!("invalid scheme {}", redact::keyword(&scheme)));
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host = &rest[..end];
    let mut path = &rest[end..];
    if let Some(i) = path.find(['?', '#']) {
        path = &path[..i];
    }
    if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("invalid character in the host".to_string());
    }
    let port = url_port(host);
    if !port.is_empty() && !port.chars().all(|c| c.is_ascii_digit()) {
        return Err("invalid port after the host".to_string());
    }
    let scheme = if scheme.is_empty() {
        // localhost on odd ports defaults to http (matches containerd hosts.go).
        if is_localhost(host) && !port.is_empty() && port != "443" {
            "http".to_string()
        } else {
            "https".to_string()
        }
    } else {
        scheme
    };
    let mut registry = host.to_string();
    let url_host = default_host(host).to_string();
    // "the reverse of the DefaultHost normalization"
    if url_host == "registry-1.docker.io" {
        registry = "docker.io".to_string();
    }
    match path {
        "" | "/" | "/v2" => Ok((registry, format!("{scheme}://{url_host}/v2"), false)),
        p => Ok((registry, format!("{scheme}://{url_host}{p}"), true)),
    }
}

/// `configForHost`: the config under the DefaultHost name first, then the name itself.
fn config_for_host(configs: &BTreeMap<String, RegistryConfig>, host: &str) -> RegistryConfig {
    let h = default_host(host);
    if h != host {
        if let Some(c) = configs.get(h) {
            return c.clone();
        }
    }
    configs.get(host).cloned().unwrap_or_default()
}

/// `defaultHostConfig`: the default endpoint of `host` with its config (`url` nil for "*").
fn default_host_config(host: &str, config: RegistryConfig) -> Result<HostCfg, String> {
    let (_, url, _) = normalize_endpoint(host)
        .map_err(|e| format!("invalid endpoint URL {host} for {host}: {e}"))?;
    Ok(HostCfg {
        default: Some(RegistryEndpoint {
            url: (host != "*").then_some(url),
            config,
            ..Default::default()
        }),
        endpoints: Vec::new(),
    })
}

/// `endpointHasConfig`.
fn endpoint_has_config(ep: Option<&RegistryEndpoint>) -> bool {
    ep.is_some_and(|e| {
        e.override_path
            || e.config.auth.is_some()
            || e.config.tls.is_some()
            || !e.rewrites.is_empty()
    })
}

/// The `certs.d` directory name of a registry key: "*" is `_default`.
fn host_key(host: &str) -> String {
    if host == "*" {
        "_default".to_string()
    } else {
        host.to_string()
    }
}

/// `getHostConfigs` with the embedded registry off: host directory name → config,
/// plus warnings k3s logs (invalid or duplicate endpoints).
fn get_host_configs(
    reg: &Registries,
    no_default_endpoint: bool,
) -> (BTreeMap<String, HostCfg>, Vec<String>) {
    let mut warnings = Vec::new();
    let mut hosts: BTreeMap<String, HostCfg> = BTreeMap::new();
    // "create config for default endpoints"
    for (host, config) in &reg.configs {
        match default_host_config(host, config.clone()) {
            Ok(c) => {
                hosts.insert(host_key(host), c);
            }
            Err(e) => warnings.push(format!(
                "k3s fails to generate config for registry {host}: {e}"
            )),
        }
    }
    // "create endpoints for mirrors"
    for (host, mirror) in &reg.mirrors {
        let mut config = match mirror_host_config(&hosts, reg, host, no_default_endpoint) {
            Ok(c) => c,
            Err(e) => {
                warnings.push(format!(
                    "k3s fails to generate config for registry {host}: {e}"
                ));
                continue;
            }
        };
        add_mirror_endpoints(&mut config, reg, host, mirror, &mut warnings);
        hosts.insert(host_key(host), config);
    }
    // "Clean up hosts and default endpoints where resulting config leaves only defaults"
    hosts.retain(|_, c| !c.endpoints.is_empty() || endpoint_has_config(c.default.as_ref()));
    (hosts, warnings)
}

/// The config a mirror's endpoints are added to: the one made from `configs`, else a
/// fresh default one (none with `no_default_endpoint`; an empty URL for "*").
fn mirror_host_config(
    hosts: &BTreeMap<String, HostCfg>,
    reg: &Registries,
    host: &str,
    no_default_endpoint: bool,
) -> Result<HostCfg, String> {
    // Upstream looks up the raw key: for "*" the entry made from configs."*" is
    // stored as "_default", so it is never found and a fresh one replaces it.
    if let Some(c) = hosts.get(host) {
        return Ok(c.clone());
    }
    let mut c = default_host_config(host, config_for_host(&reg.configs, host))?;
    if no_default_endpoint {
        c.default = None;
    } else if host == "*" {
        c.default = Some(RegistryEndpoint {
            url: Some(String::new()),
            ..Default::default()
        });
    }
    Ok(c)
}

/// A mirror's endpoints in order, invalid and duplicate ones skipped with a warning;
/// a last endpoint equal to the default one replaces the default.
fn add_mirror_endpoints(
    config: &mut HostCfg,
    reg: &Registries,
    host: &str,
    mirror: &Mirror,
    warnings: &mut Vec<String>,
) {
    let mut seen = BTreeSet::new();
    let n = mirror.endpoints.len();
    for (i, endpoint) in mirror.endpoints.iter().enumerate() {
        let (registry, url, override_path) = match normalize_endpoint(endpoint) {
            Ok(x) => x,
            Err(e) => {
                warnings.push(format!(
                    "k3s ignores invalid endpoint URL {i}={} for {host}: {e}",
                    redact::url_text(endpoint)
                ));
                continue;
            }
        };
        if !seen.insert(url.clone()) {
            warnings.push(format!(
                "k3s skips duplicate endpoint URL {i}={} for {host}",
                redact::url_text(endpoint)
            ));
            continue;
        }
        let ep = RegistryEndpoint {
            url: Some(url.clone()),
            config: config_for_host(&reg.configs, &registry),
            rewrites: mirror.rewrites.clone(),
            override_path,
        };
        let default_url = config
            .default
            .as_ref()
            .and_then(|d| d.url.clone())
            .unwrap_or_default();
        if i + 1 == n && default_url == url {
            // "if the last endpoint is the default endpoint, move it there"
            config.default = Some(ep);
        } else {
            config.endpoints.push(ep);
        }
    }
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// TLS lines of `HostsTomlTemplate` (`ca`, `client`, `skip_verify`).
fn render_tls(out: &mut String, indent: &str, tls: Option<&TlsConfig>) {
    let Some(t) = tls else { return };
    if !t.ca_file.is_empty() {
        out.push_str(&format!("{indent}ca = [{}]\n", toml_str(&t.ca_file)));
    }
    if !t.cert_file.is_empty() || !t.key_file.is_empty() {
        out.push_str(&format!(
            "{indent}client = [[{}, {}]]\n",
            toml_str(&t.cert_file),
            toml_str(&t.key_file)
        ));
    }
    if t.insecure_skip_verify {
        out.push_str(&format!("{indent}skip_verify = true\n"));
    }
}

/// `HostsTomlTemplate`: the default endpoint as `server` with its TLS at top level,
/// then one `[host."<url>"]` per mirror endpoint with `capabilities = ["pull",
/// "resolve"]`, `override_path`, TLS and the k3s-only `rewrite` table.
fn render_hosts_toml(program: &str, c: &HostCfg) -> String {
    let mut s = format!("# File generated by {program}. DO NOT EDIT.\n");
    if let Some(d) = &c.default {
        if let Some(u) = &d.url {
            s.push_str(&format!("server = {}\n", toml_str(u)));
            s.push_str("capabilities = [\"pull\", \"resolve\", \"push\"]\n");
        }
        render_tls(&mut s, "", d.config.tls.as_ref());
    }
    for e in &c.endpoints {
        let url = e.url.clone().unwrap_or_default();
        s.push_str(&format!("\n[host.{}]\n", toml_str(&url)));
        s.push_str("  capabilities = [\"pull\", \"resolve\"]\n");
        if e.override_path {
            s.push_str("  override_path = true\n");
        }
        render_tls(&mut s, "  ", e.config.tls.as_ref());
        if !e.rewrites.is_empty() {
            s.push_str(&format!("  [host.{}.rewrite]\n", toml_str(&url)));
            for (p, r) in &e.rewrites {
                s.push_str(&format!("    {} = {}\n", toml_str(p), toml_str(r)));
            }
        }
    }
    s
}

/// The hosts.toml files k3s would write: directory name under `certs.d` → file text.
/// On Linux the directory is the registry name as written (k3s `hostDirectory` in
/// config_linux.go only converts `:port` on Windows); "*" becomes `_default`.
pub fn render(distro: Distro, reg: &Registries) -> (BTreeMap<String, String>, Vec<String>) {
    let (hosts, warnings) = get_host_configs(reg, false);
    let files = hosts
        .into_iter()
        .map(|(dir, c)| {
            let text = render_hosts_toml(distro.name(), &c);
            (dir, text)
        })
        .collect();
    (files, warnings)
}

/// k3s state kept for planning.
#[derive(Clone, Debug)]
pub struct K3sState {
    pub node: K3sNode,
    /// True when the plan comes from `registries.yaml` (nothing rendered yet).
    pub translated: bool,
    /// Rendered hosts.toml text per `certs.d` directory name (translation only).
    pub rendered: BTreeMap<String, String>,
}

/// Loads containerd's effective config on a k3s node: the rendered config when k3s
/// has run, else the translation of `registries.yaml`.
pub fn load(
    hr: &HostRoot,
    node: K3sNode,
    problems: &mut Vec<ConfigProblem>,
    findings: &mut Vec<Finding>,
) -> (ContainerdConfig, K3sState) {
    let name = node.distro.name();
    if let Some(cfg_path) = node.rendered_config.clone() {
        findings.push(Finding::new(
            FindingKind::Note,
            Some(&cfg_path),
            format!("{name} node: using the containerd config {name} rendered (from registries.yaml at its last start)"),
        ));
        let cfg = containerd::load(hr, &cfg_path, problems);
        return (
            cfg,
            K3sState {
                node,
                translated: false,
                rendered: BTreeMap::new(),
            },
        );
    }
    let reg_file = node
        .registries
        .clone()
        .unwrap_or_else(|| node.distro.registries_yaml());
    let text = hr
        .read_or_report(&reg_file, true, problems)
        .unwrap_or_default();
    let (reg, p) = parse(&reg_file, &text);
    let syntax_error = p.iter().any(|p| p.field.as_deref() == Some("(syntax)"));
    problems.extend(p);
    if syntax_error {
        findings.push(Finding::new(
            FindingKind::RuntimeWouldFail,
            Some(&reg_file),
            format!(
                "{name} cannot parse {} and does not start its agent",
                reg_file.display()
            ),
        ));
    }
    let (rendered, warnings) = render(node.distro, &reg);
    translation_findings(node.distro, &reg_file, &reg, warnings, findings);
    let cfg = ContainerdConfig {
        file: Some(reg_file.clone()),
        config_version: 3,
        config_path: Some(node.distro.certs_d().display().to_string()),
        registry_file: Some(reg_file.clone()),
        configs: runtime_auths(&reg, &reg_file, problems),
        ..Default::default()
    };
    (
        cfg,
        K3sState {
            node,
            translated: true,
            rendered,
        },
    )
}

/// What a plan from the translation of `registries.yaml` assumes, what k3s would log
/// while rendering, and a `configs."*"` that k3s drops.
fn translation_findings(
    distro: Distro,
    reg_file: &Path,
    reg: &Registries,
    warnings: Vec<String>,
    findings: &mut Vec<Finding>,
) {
    let name = distro.name();
    findings.push(Finding::new(
        FindingKind::Assumption,
        Some(reg_file),
        format!(
            "{name} has not rendered its containerd config yet ({} is missing): this plan is computed from {} with {name}'s translation; it applies once {name} starts",
            distro.containerd_config().display(),
            reg_file.display()
        ),
    ));
    for w in warnings {
        findings.push(Finding::new(FindingKind::Note, Some(reg_file), w));
    }
    // getHostConfigs looks up mirrors' hosts by raw key; configs."*" was stored as
    // "_default", so with mirrors."*" a fresh entry replaces it (TLS/auth lost).
    let wildcard_config_dropped = reg.mirrors.contains_key("*")
        && reg
            .configs
            .get("*")
            .is_some_and(|c| c.tls.is_some() || c.auth.is_some());
    if wildcard_config_dropped {
        findings.push(Finding::new(
            FindingKind::Note,
            Some(reg_file),
            format!("configs.\"*\" is dropped: with mirrors.\"*\" also set, {name} renders _default/hosts.toml from the mirror alone (getHostConfigs looks up \"*\" after storing it as \"_default\"), so its TLS settings apply nowhere"),
        ));
    }
}

/// CRI registry auth: the config template renders `registry.configs."<key>".auth`
/// for every configs entry with an auth block, keyed exactly as written.
fn runtime_auths(
    reg: &Registries,
    reg_file: &Path,
    problems: &mut Vec<ConfigProblem>,
) -> BTreeMap<String, LegacyHostConfig> {
    let mut configs = BTreeMap::new();
    for (host, c) in &reg.configs {
        let Some(a) = &c.auth else { continue };
        match credential(a) {
            Ok(auth) => {
                configs.insert(host.clone(), LegacyHostConfig { auth, tls: None });
            }
            Err(m) => problems.push(ConfigProblem::new(
                reg_file,
                Some(&format!("configs.\"{host}\".auth.auth")),
                ProblemKind::Invalid,
                m,
            )),
        }
    }
    configs
}

impl K3sState {
    /// `hostDirFromRoots` over the translated `certs.d` (in memory), with the load
    /// the hosts.toml reader makes of it. `None` when not translating or nothing matches.
    pub fn host_dir(
        &self,
        roots: &[PathBuf],
        host: &str,
        quirks: HostsTomlQuirks,
    ) -> Option<Option<(PathBuf, HostDirLoad)>> {
        if !self.translated {
            return None;
        }
        let certs_d = self.node.distro.certs_d();
        for root in roots {
            for p in hosts_toml::host_paths(root, host) {
                if root != &certs_d {
                    continue;
                }
                let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                let Some(text) = self.rendered.get(name) else {
                    continue;
                };
                let mut load = HostDirLoad::default();
                match hosts_toml::parse_hosts_file(&p, text, quirks) {
                    Ok(h) => load.hosts = h,
                    Err(e) => load.problems.push(ConfigProblem::new(
                        &p.join("hosts.toml"),
                        Some(&e.field),
                        ProblemKind::Invalid,
                        format!("rendered from registries.yaml: {}", e.message),
                    )),
                }
                return Some(Some((p, load)));
            }
        }
        Some(None)
    }

    /// The hosts.toml text of the plan's host directory: rendered in memory, or read
    /// from the node when it lies under k3s's `certs.d`.
    fn hosts_toml_text(&self, hr: &HostRoot, dir: &Path) -> Option<String> {
        if !dir.starts_with(self.node.distro.certs_d()) {
            return None;
        }
        if self.translated {
            let name = dir.file_name()?.to_str()?;
            return self.rendered.get(name).cloned();
        }
        hr.read_to_string(&dir.join("hosts.toml")).ok()
    }

    /// k3s's containerd applies `[host."<url>".rewrite]` (regex → replacement) to the
    /// repository at that mirror endpoint; the default endpoint is never rewritten
    /// (k3s docs, "Rewrites"). Sets [`crate::endpoint::Endpoint::repository`].
    pub fn apply_rewrites(&self, hr: &HostRoot, plan: &mut Plan, image: &ImageRef) {
        let Some(dir) = plan.host_dir.clone() else {
            return;
        };
        let Some(text) = self.hosts_toml_text(hr, &dir) else {
            return;
        };
        let Ok(doc) = toml::from_str::<toml::Table>(&text) else {
            return;
        };
        let Some(toml::Value::Table(hosts)) = doc.get("host") else {
            return;
        };
        let file = dir.join("hosts.toml");
        // The generic reader reports `rewrite` as ignored; k3s's containerd honours it.
        plan.findings.retain(|f| {
            !(f.kind == FindingKind::Note
                && f.file.as_deref() == Some(file.as_path())
                && f.message.starts_with("containerd ignores these keys")
                && f.message
                    .rsplit(": ")
                    .next()
                    .is_some_and(|keys| keys.split(", ").all(|k| k.ends_with(".rewrite"))))
        });
        let mut new_findings = Vec::new();
        for ep in plan.endpoints.iter_mut().filter(|e| !e.is_upstream) {
            let Some((_, rules)) = hosts.iter().find(|(k, _)| {
                hosts_toml::split_server(k).is_some_and(|(_, h, p)| {
                    let with_port = format!(
                        "{}:{}",
                        ep.api_root.host_str().unwrap_or(""),
                        ep.api_root.port_or_known_default().unwrap_or(0)
                    );
                    (h == ep.host_port() || h == with_port)
                        && hosts_toml::clean_path(&p) == ep.api_root.path()
                })
            }) else {
                continue;
            };
            let Some(toml::Value::Table(rw)) = rules.get("rewrite") else {
                continue;
            };
            // Go map order is random upstream; several matching patterns are ambiguous.
            // The first (sorted) pattern that changes the name wins here.
            for (pat, rep) in rw {
                let Some(rep) = rep.as_str() else { continue };
                let re = match regex::Regex::new(pat) {
                    Ok(r) => r,
                    Err(_) => {
                        new_findings.push(Finding::new(
                            FindingKind::Note,
                            Some(&file),
                            format!("rewrite pattern {} is not a valid regular expression and is ignored", redact::keyword(pat)),
                        ));
                        continue;
                    }
                };
                let cur = ep.repository.clone().unwrap_or_else(|| image.path.clone());
                let out = re.replace_all(&cur, rep).into_owned();
                if out != cur {
                    ep.repository = Some(out);
                    break;
                }
            }
        }
        plan.findings.extend(new_findings);
    }
}

#[cfg(test)]
mod tests;
