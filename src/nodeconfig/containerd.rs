//! containerd's `config.toml`: the CRI registry section for config versions 1, 2 and 3,
//! `imports`, and the settings that decide between the CRI local pull and the transfer
//! service.
//!
//! Upstream: cmd/containerd/server/config/config.go (`LoadConfig`, `mergeConfig`:
//! imported files replace whole plugin sections), internal/cri/config/config.go
//! (`Registry`, `CheckLocalImagePullConfigs`), plugins/cri/images/plugin.go (2.2 default
//! `config_path`), internal/cri/server/images/image_pull.go (`registryHosts`,
//! `registryEndpoints`, `ParseAuth`).

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use toml::Value;

use super::{ConfigProblem, ProblemKind};
use crate::credentials::{Credential, Secret};
use crate::hostroot::HostRoot;

/// Where containerd's config lives on a node.
pub const DEFAULT_CONFIG: &str = "/etc/containerd/config.toml";
/// containerd ≥ 2.2 on Linux when neither `config_path` nor `mirrors` is set.
pub const DEFAULT_CONFIG_PATH_2_2: &str = "/etc/containerd/certs.d:/etc/docker/certs.d";
/// CRI plugin ID of containerd 1.x configs version 2 (and migrated by 2.x).
const CRI_V2: &str = "io.containerd.grpc.v1.cri";
/// CRI images plugin ID of config version 3 (containerd 2.x).
const IMAGES_V3: &str = "io.containerd.cri.v1.images";
/// Nested `imports` deeper than this are a loop.
const MAX_IMPORT_DEPTH: usize = 8;

pub use crate::runtime::ContainerdVersion as Version;

/// `registry.configs."<host>".tls` (deprecated, 1.x).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LegacyTls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub insecure_skip_verify: bool,
}

/// `registry.configs."<host>"` (deprecated).
#[derive(Clone, Debug, Default)]
pub struct LegacyHostConfig {
    pub auth: Option<Credential>,
    pub tls: Option<LegacyTls>,
}

/// The CRI registry section and pull-mode settings of an effective config.
#[derive(Clone, Debug, Default)]
pub struct ContainerdConfig {
    /// Node path of the main config file (`None` when there is none: defaults).
    pub file: Option<PathBuf>,
    /// `version` key (1 when absent).
    pub config_version: i64,
    /// `registry.config_path` as written (may hold several `:`-separated roots).
    pub config_path: Option<String>,
    /// Which file set `config_path`/`mirrors` (an import or the main file).
    pub registry_file: Option<PathBuf>,
    /// Deprecated `registry.mirrors."<host>".endpoint`.
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// Deprecated `registry.configs` (and `registry.auths` mapped into it).
    pub configs: BTreeMap<String, LegacyHostConfig>,
    /// Deprecated global `registry.headers`.
    pub headers: Vec<(String, Vec<String>)>,
    /// Why CRI would fall back to the local pull (`CheckLocalImagePullConfigs`).
    pub local_pull_reasons: Vec<String>,
    /// Non-fatal observations made while reading (the caller turns them into findings).
    pub notes: Vec<String>,
}

impl ContainerdConfig {
    /// `config_path` split like Go's `filepath.SplitList` (empty parts dropped by CRI
    /// only implicitly: `HostDirFromRoot("")` looks under the cwd; we keep them out).
    pub fn roots(&self) -> Vec<PathBuf> {
        self.config_path
            .as_deref()
            .map(|p| {
                p.split(':')
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Loads `file` (node path) and its imports. A missing file gives the defaults with
/// `file = None`; every other problem is pushed and loading goes on with what parsed.
pub fn load(hr: &HostRoot, file: &Path, problems: &mut Vec<ConfigProblem>) -> ContainerdConfig {
    let out = ContainerdConfig {
        config_version: 1,
        ..Default::default()
    };
    let Some(text) = hr.read_or_report(file, false, problems) else {
        return out;
    };
    from_text(Some(hr), file, &text, problems)
}

/// `text` as the content of `file`: the same pipeline as [`load`], with `imports` read
/// under `hr` when one is given and skipped otherwise (what the fuzz target drives).
pub fn from_text(
    hr: Option<&HostRoot>,
    file: &Path,
    text: &str,
    problems: &mut Vec<ConfigProblem>,
) -> ContainerdConfig {
    let mut out = ContainerdConfig {
        config_version: 1,
        ..Default::default()
    };
    out.file = Some(file.to_path_buf());
    let main = match parse_table(file, text, problems) {
        Some(t) => t,
        None => return out,
    };
    out.config_version = match main.get("version") {
        None => 1,
        Some(Value::Integer(v)) => *v,
        Some(_) => {
            problems.push(ConfigProblem::new(
                file,
                Some("version"),
                ProblemKind::Invalid,
                "must be an integer",
            ));
            1
        }
    };
    // plugin ID → (table, the file that provided it)
    let mut plugins: BTreeMap<String, (toml::Table, PathBuf)> = BTreeMap::new();
    collect_plugins(&main, file, &mut plugins, problems);
    if let Some(hr) = hr {
        let mut seen = vec![file.to_path_buf()];
        apply_imports(hr, &main, file, &mut plugins, problems, &mut seen, 0);
    }
    read_registry(&mut out, &plugins, problems);
    out
}

fn parse_table(file: &Path, text: &str, problems: &mut Vec<ConfigProblem>) -> Option<toml::Table> {
    match toml::from_str::<toml::Table>(text) {
        Ok(t) => Some(t),
        Err(e) => {
            problems.push(ConfigProblem::new(
                file,
                Some("(syntax)"),
                ProblemKind::Invalid,
                crate::redact::ParseError::toml(&e, text).to_string(),
            ));
            None
        }
    }
}

fn collect_plugins(
    t: &toml::Table,
    file: &Path,
    plugins: &mut BTreeMap<String, (toml::Table, PathBuf)>,
    problems: &mut Vec<ConfigProblem>,
) {
    match t.get("plugins") {
        None => {}
        Some(Value::Table(p)) => {
            for (k, v) in p {
                if let Value::Table(pt) = v {
                    // mergeConfig: "Replace entire sections instead of merging map's values."
                    plugins.insert(k.clone(), (pt.clone(), file.to_path_buf()));
                }
            }
        }
        Some(_) => problems.push(ConfigProblem::new(
            file,
            Some("plugins"),
            ProblemKind::Invalid,
            "must be a table",
        )),
    }
}

fn apply_imports(
    hr: &HostRoot,
    t: &toml::Table,
    file: &Path,
    plugins: &mut BTreeMap<String, (toml::Table, PathBuf)>,
    problems: &mut Vec<ConfigProblem>,
    seen: &mut Vec<PathBuf>,
    depth: usize,
) {
    let Some(v) = t.get("imports") else { return };
    let Value::Array(items) = v else {
        problems.push(ConfigProblem::new(
            file,
            Some("imports"),
            ProblemKind::Invalid,
            "must be an array of strings",
        ));
        return;
    };
    if depth >= MAX_IMPORT_DEPTH {
        problems.push(ConfigProblem::new(
            file,
            Some("imports"),
            ProblemKind::Invalid,
            "imports nested too deeply (loop?)",
        ));
        return;
    }
    let dir = file.parent().unwrap_or(Path::new("/"));
    for item in items {
        let Value::String(pattern) = item else {
            problems.push(ConfigProblem::new(
                file,
                Some("imports"),
                ProblemKind::Invalid,
                "must be an array of strings",
            ));
            continue;
        };
        // resolveImports: relative paths are relative to the importing file's dir; globs.
        let node_pattern = if Path::new(pattern).is_absolute() {
            PathBuf::from(pattern)
        } else {
            dir.join(pattern)
        };
        for imported in glob_under(hr, &node_pattern) {
            if seen.contains(&imported) {
                continue;
            }
            seen.push(imported.clone());
            let text = match hr.read_to_string(&imported) {
                Ok(t) => t,
                Err(e) => {
                    problems.push(ConfigProblem::new(
                        &imported,
                        None,
                        ProblemKind::Unreadable,
                        e.to_string(),
                    ));
                    continue;
                }
            };
            if let Some(it) = parse_table(&imported, &text, problems) {
                collect_plugins(&it, &imported, plugins, problems);
                apply_imports(hr, &it, &imported, plugins, problems, seen, depth + 1);
            }
        }
    }
}

/// Node paths matching a glob pattern (node path), sorted like Go's `filepath.Glob`.
fn glob_under(hr: &HostRoot, node_pattern: &Path) -> Vec<PathBuf> {
    let host_pattern = hr.host_path(node_pattern);
    let Some(pat) = host_pattern.to_str() else {
        return Vec::new();
    };
    let Ok(paths) = glob::glob(pat) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = paths
        .filter_map(Result::ok)
        .filter_map(|p| {
            p.strip_prefix(hr.root())
                .ok()
                .map(|r| Path::new("/").join(r))
        })
        .collect();
    out.sort();
    out
}

fn get_path<'a>(t: &'a toml::Table, keys: &[&str]) -> Option<&'a Value> {
    let (first, rest) = keys.split_first()?;
    let v = t.get(*first)?;
    if rest.is_empty() {
        return Some(v);
    }
    match v {
        Value::Table(inner) => get_path(inner, rest),
        _ => None,
    }
}

fn read_registry(
    out: &mut ContainerdConfig,
    plugins: &BTreeMap<String, (toml::Table, PathBuf)>,
    problems: &mut Vec<ConfigProblem>,
) {
    let Some((id, cri, file)) = registry_section(out, plugins) else {
        return;
    };
    local_pull_reasons(out, id, cri);
    let reg = match cri.get("registry") {
        None => return,
        Some(Value::Table(r)) => r,
        Some(_) => {
            problems.push(ConfigProblem::new(
                file,
                Some(&format!("plugins.\"{id}\".registry")),
                ProblemKind::Invalid,
                "must be a table",
            ));
            return;
        }
    };
    out.registry_file = Some(file.clone());
    let keys = RegistryKeys { id, file };
    // A `mirrors` or `configs` that is not a table ends the reading there.
    let _ = read_registry_keys(out, reg, &keys, problems);
}

/// The plugin section that holds the registry, with its ID and file (config.go
/// `Decode`: version 1 uses short plugin IDs, version 2 full URIs, version 3 the split
/// images plugin). Notes a section that the config's version ignores.
fn registry_section<'a>(
    out: &mut ContainerdConfig,
    plugins: &'a BTreeMap<String, (toml::Table, PathBuf)>,
) -> Option<(&'static str, &'a toml::Table, &'a PathBuf)> {
    let candidates: &[&'static str] = match out.config_version {
        3 => &[IMAGES_V3],
        2 => &[CRI_V2],
        _ => &["cri", CRI_V2],
    };
    if out.config_version == 3
        && plugins
            .get(CRI_V2)
            .is_some_and(|(t, _)| t.get("registry").is_some())
    {
        out.notes.push(format!(
            "a version 3 config ignores plugins.\"{CRI_V2}\".registry; only plugins.\"{IMAGES_V3}\".registry counts"
        ));
    }
    let section = candidates
        .iter()
        .find_map(|id| plugins.get(*id).map(|(t, f)| (*id, t, f)));
    if out.config_version <= 1 && section.is_some_and(|(id, _, _)| id == CRI_V2) {
        out.notes.push(format!(
            "a version 1 config names the CRI plugin \"{CRI_V2}\"; containerd 1.x reads that key only from a version 2 config or an import of one"
        ));
    }
    section
}

/// Where a registry key sits: the file and the `plugins."ID".registry` table.
struct RegistryKeys<'a> {
    id: &'a str,
    file: &'a Path,
}

impl RegistryKeys<'_> {
    /// `key` (below `registry`) is invalid.
    fn invalid(&self, key: &str, why: impl Into<String>) -> ConfigProblem {
        let field = format!("plugins.\"{}\".registry.{key}", self.id);
        ConfigProblem::new(self.file, Some(&field), ProblemKind::Invalid, why)
    }
}

/// The keys of the registry table, in order; breaks where a `mirrors` or `configs`
/// that is not a table stops the reading.
fn read_registry_keys(
    out: &mut ContainerdConfig,
    reg: &toml::Table,
    keys: &RegistryKeys<'_>,
    problems: &mut Vec<ConfigProblem>,
) -> ControlFlow<()> {
    match reg.get("config_path") {
        None => {}
        Some(Value::String(s)) if s.is_empty() => {}
        Some(Value::String(s)) => out.config_path = Some(s.clone()),
        Some(_) => problems.push(keys.invalid("config_path", "must be a string")),
    }
    read_mirrors(out, reg, keys, problems)?;
    read_configs(out, reg, keys, problems)?;
    read_auths(out, reg, keys, problems);
    read_headers(out, reg);
    if !out.mirrors.is_empty() || reg.get("auths").is_some() || reg.get("configs").is_some() {
        out.local_pull_reasons
            .push("deprecated registry mirrors/configs/auths are set".into());
    }
    if out.config_path.is_some() && !out.mirrors.is_empty() {
        problems.push(keys.invalid(
            "mirrors",
            "`mirrors` cannot be set when `config_path` is provided: containerd refuses to start the CRI plugin",
        ));
    }
    ControlFlow::Continue(())
}

/// `registry.<key>` as a table: `None` when absent; a break (reported) when it is not a
/// table, which ends the reading of the registry.
fn sub_table<'a>(
    reg: &'a toml::Table,
    key: &str,
    keys: &RegistryKeys<'_>,
    problems: &mut Vec<ConfigProblem>,
) -> ControlFlow<(), Option<&'a toml::Table>> {
    match reg.get(key) {
        None => ControlFlow::Continue(None),
        Some(Value::Table(t)) => ControlFlow::Continue(Some(t)),
        Some(_) => {
            problems.push(keys.invalid(key, "must be a table"));
            ControlFlow::Break(())
        }
    }
}

/// Deprecated `registry.mirrors."<host>".endpoint`.
fn read_mirrors(
    out: &mut ContainerdConfig,
    reg: &toml::Table,
    keys: &RegistryKeys<'_>,
    problems: &mut Vec<ConfigProblem>,
) -> ControlFlow<()> {
    let Some(m) = sub_table(reg, "mirrors", keys, problems)? else {
        return ControlFlow::Continue(());
    };
    for (host, mv) in m {
        let key = format!("mirrors.\"{host}\".endpoint");
        let eps = match get_path_val(mv, "endpoint") {
            None => Vec::new(),
            Some(Value::Array(a)) => {
                let mut eps = Vec::new();
                for e in a {
                    match e {
                        Value::String(s) => eps.push(s.clone()),
                        _ => problems.push(keys.invalid(&key, "must be an array of strings")),
                    }
                }
                eps
            }
            Some(_) => {
                problems.push(keys.invalid(&key, "must be an array of strings"));
                continue;
            }
        };
        out.mirrors.insert(host.clone(), eps);
    }
    ControlFlow::Continue(())
}

/// Deprecated `registry.configs."<host>"`: `auth` and `tls`.
fn read_configs(
    out: &mut ContainerdConfig,
    reg: &toml::Table,
    keys: &RegistryKeys<'_>,
    problems: &mut Vec<ConfigProblem>,
) -> ControlFlow<()> {
    let Some(cs) = sub_table(reg, "configs", keys, problems)? else {
        return ControlFlow::Continue(());
    };
    for (host, cv) in cs {
        let key = format!("configs.\"{host}\"");
        let Value::Table(ct) = cv else {
            problems.push(keys.invalid(&key, "must be a table"));
            continue;
        };
        let mut hc = LegacyHostConfig::default();
        if let Some(Value::Table(a)) = ct.get("auth") {
            match parse_auth(a) {
                Ok(c) => hc.auth = c,
                Err(m) => problems.push(keys.invalid(&format!("{key}.auth"), m)),
            }
        }
        if let Some(Value::Table(t)) = ct.get("tls") {
            hc.tls = Some(legacy_tls(t));
        }
        out.configs.insert(host.clone(), hc);
    }
    ControlFlow::Continue(())
}

/// `registry.configs."<host>".tls`; empty paths count as unset.
fn legacy_tls(t: &toml::Table) -> LegacyTls {
    let s = |k: &str| {
        t.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    };
    LegacyTls {
        ca_file: s("ca_file"),
        cert_file: s("cert_file"),
        key_file: s("key_file"),
        insecure_skip_verify: t
            .get("insecure_skip_verify")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    }
}

/// `auths` is keyed by URL; CRI maps it into `configs` by host (config.go
/// ValidatePluginConfig), where a `configs` auth wins.
fn read_auths(
    out: &mut ContainerdConfig,
    reg: &toml::Table,
    keys: &RegistryKeys<'_>,
    problems: &mut Vec<ConfigProblem>,
) {
    let Some(Value::Table(auths)) = reg.get("auths") else {
        return;
    };
    for (k, v) in auths {
        let Value::Table(a) = v else { continue };
        let host = url::Url::parse(k)
            .ok()
            .and_then(|u| {
                u.host_str().map(|h| match u.port() {
                    Some(p) => format!("{h}:{p}"),
                    None => h.to_string(),
                })
            })
            .unwrap_or_else(|| k.clone());
        match parse_auth(a) {
            Ok(c) => {
                let e = out.configs.entry(host).or_default();
                if e.auth.is_none() {
                    e.auth = c;
                }
            }
            Err(m) => problems.push(keys.invalid(&format!("auths.\"{k}\""), m)),
        }
    }
}

/// Deprecated global `registry.headers`: a string or an array of strings per name.
fn read_headers(out: &mut ContainerdConfig, reg: &toml::Table) {
    let Some(Value::Table(h)) = reg.get("headers") else {
        return;
    };
    for (k, v) in h {
        let vals = match v {
            Value::Array(a) => a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
            Value::String(s) => vec![s.clone()],
            _ => Vec::new(),
        };
        out.headers.push((k.clone(), vals));
    }
}

fn get_path_val<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match v {
        Value::Table(t) => t.get(key),
        _ => None,
    }
}

/// `CheckLocalImagePullConfigs` (internal/cri/config/config.go, v2.1.0 to v2.2.x): settings
/// the transfer service cannot honour make CRI use the local pull: `use_local_image_pull`
/// itself, `disable_snapshot_annotations = false` (the Linux default is true),
/// `discard_unpacked_layers`, any `registry.mirrors` / `configs` / `auths`,
/// `max_concurrent_downloads` other than 3, `image_pull_with_sync_fs`. Only containerd ≥
/// 2.1 reads them this way (plan.rs `containerd_pull_mode`).
fn local_pull_reasons(out: &mut ContainerdConfig, id: &str, cri: &toml::Table) {
    let (discard, snap_ann, max_dl, sync_fs, use_local) = if id == IMAGES_V3 {
        (
            get_path(cri, &["discard_unpacked_layers"]),
            get_path(cri, &["disable_snapshot_annotations"]),
            get_path(cri, &["max_concurrent_downloads"]),
            get_path(cri, &["image_pull_with_sync_fs"]),
            get_path(cri, &["use_local_image_pull"]),
        )
    } else {
        (
            get_path(cri, &["containerd", "discard_unpacked_layers"]),
            get_path(cri, &["containerd", "disable_snapshot_annotations"]),
            get_path(cri, &["max_concurrent_downloads"]),
            get_path(cri, &["image_pull_with_sync_fs"]),
            get_path(cri, &["use_local_image_pull"]),
        )
    };
    if use_local.and_then(Value::as_bool) == Some(true) {
        out.local_pull_reasons
            .push("use_local_image_pull = true".into());
    }
    if discard.and_then(Value::as_bool) == Some(true) {
        out.local_pull_reasons
            .push("discard_unpacked_layers = true".into());
    }
    if snap_ann.and_then(Value::as_bool) == Some(false) {
        out.local_pull_reasons
            .push("disable_snapshot_annotations = false".into());
    }
    if let Some(n) = max_dl.and_then(Value::as_integer) {
        if n != 3 {
            out.local_pull_reasons
                .push(format!("max_concurrent_downloads = {n} (not 3)"));
        }
    }
    if sync_fs.and_then(Value::as_bool) == Some(true) {
        out.local_pull_reasons
            .push("image_pull_with_sync_fs = true".into());
    }
}

/// `ParseAuth` precedence: username(/password), identity token, then `auth`
/// (base64 `user:pass`). `Ok(None)` = nothing set.
fn parse_auth(a: &toml::Table) -> Result<Option<Credential>, String> {
    let s = |k: &str| a.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    crate::credentials::containerd_parse_auth(
        &s("username"),
        &Secret::new(s("password")),
        &Secret::new(s("identitytoken")),
        &Secret::new(s("auth")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str) -> (ContainerdConfig, Vec<ConfigProblem>) {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc/containerd")).unwrap();
        std::fs::write(d.path().join("etc/containerd/config.toml"), text).unwrap();
        let hr = HostRoot::new(d.path()).unwrap();
        let mut p = Vec::new();
        let c = load(&hr, Path::new(DEFAULT_CONFIG), &mut p);
        (c, p)
    }

    #[test]
    fn v2_config_path_and_legacy_auth() {
        let (c, p) = load_str(
            r#"version = 2
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/a:/b"
[plugins."io.containerd.grpc.v1.cri".registry.configs."reg:5000".auth]
  auth = "dXNlcjpwYXNz"
"#,
        );
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(c.roots(), vec![PathBuf::from("/a"), PathBuf::from("/b")]);
        let cred = c.configs["reg:5000"].auth.clone().unwrap();
        assert_eq!(cred.username(), Some("user"));
        assert!(!c.local_pull_reasons.is_empty());
    }

    #[test]
    fn v3_uses_images_plugin_and_triggers() {
        let (c, _) = load_str(
            r#"version = 3
[plugins.'io.containerd.cri.v1.images']
  discard_unpacked_layers = true
[plugins.'io.containerd.cri.v1.images'.registry]
  config_path = '/etc/containerd/certs.d'
[plugins.'io.containerd.grpc.v1.cri'.registry]
  config_path = '/decoy'
"#,
        );
        assert_eq!(c.config_path.as_deref(), Some("/etc/containerd/certs.d"));
        assert_eq!(c.local_pull_reasons, vec!["discard_unpacked_layers = true"]);
        assert_eq!(c.notes.len(), 1);
    }

    #[test]
    fn v1_short_plugin_mirrors() {
        let (c, p) = load_str(
            r#"[plugins.cri.registry.mirrors."docker.io"]
endpoint = ["https://m1", "m2:5000",]
"#,
        );
        assert!(p.is_empty());
        assert_eq!(c.mirrors["docker.io"], vec!["https://m1", "m2:5000"]);
    }

    #[test]
    fn malformed_and_wrong_types_are_problems() {
        let (_, p) = load_str("version = 2\n[plugins\n");
        assert_eq!(p[0].field.as_deref(), Some("(syntax)"));
        let (_, p) = load_str(
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\nconfig_path = 5\n",
        );
        assert_eq!(
            p[0].field.as_deref(),
            Some("plugins.\"io.containerd.grpc.v1.cri\".registry.config_path")
        );
    }

    #[test]
    fn imports_replace_plugin_sections() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc/containerd/config.d")).unwrap();
        std::fs::write(
            d.path().join("etc/containerd/config.toml"),
            "version = 2\nimports = [\"config.d/*.toml\"]\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\nconfig_path = \"/main\"\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("etc/containerd/config.d/10-reg.toml"),
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\nconfig_path = \"/imported\"\n",
        )
        .unwrap();
        let hr = HostRoot::new(d.path()).unwrap();
        let mut p = Vec::new();
        let c = load(&hr, Path::new(DEFAULT_CONFIG), &mut p);
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(c.config_path.as_deref(), Some("/imported"));
        assert_eq!(
            c.registry_file.as_deref(),
            Some(Path::new("/etc/containerd/config.d/10-reg.toml"))
        );
    }
}
