//! CRI-O's registry configuration: containers-registries.conf(5) v2 (and the v1 tables),
//! `registries.conf.d/*.conf` drop-ins, longest-prefix matching, mirrors, and the
//! containers-certs.d(5) directories.
//!
//! Upstream: containers/image pkg/sysregistriesv2/system_registries_v2.go
//! (`postProcessRegistries`, `updateWithConfigurationFrom`, `refMatchingPrefix`,
//! `refMatchingSubdomainPrefix`, `findRegistryWithParsedConfig`,
//! `PullSourcesFromReference`, `rewriteReference`), pkg/shortnames, and
//! docker/docker_client.go (`dockerCertDir`, certs.d search order).
//!
//! And CRI-O's own `crio.conf` (+ `crio.conf.d`), for the two `[crio.image]` settings that
//! change a pull: `short_name_mode` and `pull_progress_timeout` (see [`CrioDaemon`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use toml::Value;

use super::{ConfigProblem, ProblemKind};
use crate::hostroot::HostRoot;
use crate::redact;

pub const REGISTRIES_CONF: &str = "/etc/containers/registries.conf";
pub const REGISTRIES_CONF_D: &str = "/etc/containers/registries.conf.d";
/// containers-certs.d(5) search order for a system service (no `$HOME` config dir).
pub const CERT_DIRS: &[&str] = &["/etc/containers/certs.d", "/etc/docker/certs.d"];

/// `pull-from-mirror`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PullFromMirror {
    #[default]
    All,
    DigestOnly,
    TagOnly,
}

/// A `location` with its `insecure` flag (the registry itself or a mirror).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CrioEndpoint {
    pub location: String,
    pub insecure: bool,
    pub pull_from_mirror: PullFromMirror,
}

/// One `[[registry]]` after validation.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CrioRegistry {
    pub prefix: String,
    pub endpoint: CrioEndpoint,
    pub blocked: bool,
    pub mirror_by_digest_only: bool,
    pub mirrors: Vec<CrioEndpoint>,
    /// Node path of the file that defined it.
    pub file: PathBuf,
}

/// The merged registries configuration.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CrioConfig {
    /// Unique per prefix, sorted by prefix (updateWithConfigurationFrom).
    pub registries: Vec<CrioRegistry>,
    pub unqualified_search_registries: Vec<String>,
    pub short_name_mode: Option<String>,
    pub aliases: BTreeMap<String, String>,
    pub files: Vec<PathBuf>,
    /// CRI-O's own settings (`crio.conf` and its drop-ins).
    pub daemon: CrioDaemon,
}

pub const CRIO_CONF: &str = "/etc/crio/crio.conf";
pub const CRIO_CONF_D: &str = "/etc/crio/crio.conf.d";
/// Most `crio.conf.d` files read, and how deep its tree is walked.
const MAX_CRIO_DROP_INS: usize = 64;
const MAX_CRIO_DROP_IN_DEPTH: usize = 4;

/// A CRI-O setting and the file that set it (`None`: CRI-O's default).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CrioSetting<T> {
    pub value: T,
    pub file: Option<PathBuf>,
}

/// `crio.conf` `[crio.image]` settings that change a pull (CRI-O 1.34+; cri-o
/// pkg/config/config.go `ImageConfig`, `SetSystemContext`, docs/crio.conf.5.md):
/// - `short_name_mode`: `enforcing` (default) or `disabled`. CRI-O puts it in the
///   containers/image SystemContext, where it overrides registries.conf's
///   `short-name-mode`; without a TTY, enforcing fails an ambiguous short name
///   (pkg/shortnames `Resolve`), disabled tries every candidate in order. Before 1.34
///   CRI-O always resolved in disabled mode (`CandidatesForPotentiallyShortImageName`).
/// - `pull_progress_timeout`: a pull is cancelled when its blob copy makes no progress for
///   this long; `0` = never. The timer starts at the first progress event of the copy
///   (server/image_pull.go `consumeImagePullProgress`: `timer.Stop() // don't start the timer
///   immediately`, then `Reset` per event), so it never bounds resolution, auth or the
///   manifest, and pullprobe, which reads no whole blob, cannot reach it: shown by `plan`,
///   no verdict depends on it.
///
/// Files: `crio.conf`, then every file under `crio.conf.d` in lexical walk order
/// (`UpdateFromPath`: `filepath.Walk`, any name), each setting what it names.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CrioDaemon {
    pub short_name_mode: CrioSetting<ShortNameMode>,
    pub pull_progress_timeout: CrioSetting<std::time::Duration>,
    pub files: Vec<PathBuf>,
}

impl Default for CrioDaemon {
    fn default() -> Self {
        CrioDaemon {
            short_name_mode: CrioSetting {
                value: ShortNameMode::Enforcing,
                file: None,
            },
            pull_progress_timeout: CrioSetting::default(),
            files: Vec::new(),
        }
    }
}

/// CRI-O's `short_name_mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShortNameMode {
    Enforcing,
    Disabled,
}

impl ShortNameMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ShortNameMode::Enforcing => "enforcing",
            ShortNameMode::Disabled => "disabled",
        }
    }
}

impl CrioDaemon {
    /// Reads `crio.conf` and `crio.conf.d` (a file that does not parse is reported and
    /// skipped; CRI-O itself would refuse to start).
    pub fn load(hr: &HostRoot, problems: &mut Vec<ConfigProblem>) -> CrioDaemon {
        let mut files = vec![PathBuf::from(CRIO_CONF)];
        walk_drop_ins(hr, Path::new(CRIO_CONF_D), 0, &mut files);
        let mut d = CrioDaemon::default();
        for f in files {
            let Some(text) = hr.read_or_report(&f, false, problems) else {
                continue;
            };
            match d.apply(&f, &text) {
                Ok(()) => d.files.push(f),
                Err((field, msg)) => problems.push(ConfigProblem::new(
                    &f,
                    Some(&field),
                    ProblemKind::Invalid,
                    msg,
                )),
            }
        }
        d
    }

    /// One file's `[crio.image]` settings over the ones before.
    fn apply(&mut self, file: &Path, text: &str) -> Result<(), FieldErr> {
        let doc: toml::Table = toml::from_str(text)
            .map_err(|e| fe("(syntax)", redact::ParseError::toml(&e, text).to_string()))?;
        let image = doc
            .get("crio")
            .and_then(|c| c.get("image"))
            .and_then(Value::as_table);
        let Some(image) = image else { return Ok(()) };
        if let Some(v) = image.get("short_name_mode") {
            let value = match v.as_str() {
                Some("enforcing") | Some("") => ShortNameMode::Enforcing,
                Some("disabled") => ShortNameMode::Disabled,
                Some(_) => {
                    return Err(fe(
                        "crio.image.short_name_mode",
                        "invalid short name mode: must be \"enforcing\" or \"disabled\"",
                    ))
                }
                None => return Err(fe("crio.image.short_name_mode", "must be a string")),
            };
            self.short_name_mode = CrioSetting {
                value,
                file: Some(file.to_path_buf()),
            };
        }
        if let Some(v) = image.get("pull_progress_timeout") {
            // BurntSushi/toml: a duration string, or an integer of nanoseconds.
            let value = match v {
                Value::String(s) => crate::goduration::parse(s).ok_or_else(|| {
                    fe(
                        "crio.image.pull_progress_timeout",
                        "not a duration such as \"30s\"",
                    )
                })?,
                Value::Integer(n) if *n >= 0 => std::time::Duration::from_nanos(n.unsigned_abs()),
                _ => {
                    return Err(fe(
                        "crio.image.pull_progress_timeout",
                        "must be a duration such as \"30s\"",
                    ))
                }
            };
            self.pull_progress_timeout = CrioSetting {
                value,
                file: Some(file.to_path_buf()),
            };
        }
        Ok(())
    }

    /// What `plan` says about these settings (a config-level finding).
    pub fn describe(&self) -> String {
        let from = |f: &Option<PathBuf>| match f {
            Some(f) => f.display().to_string(),
            None => "CRI-O default".into(),
        };
        let ppt = &self.pull_progress_timeout;
        let timeout = match ppt.value.is_zero() {
            true => "0 (no timeout)".to_string(),
            false => format!("{}", humantime::format_duration(ppt.value)),
        };
        format!(
            "CRI-O short_name_mode: {} ({}; CRI-O 1.34+, before 1.34 short names resolved as disabled); pull_progress_timeout: {timeout} ({}; cancels a blob copy that stalls that long, from its first progress: resolution, auth and manifest are not bounded by it)",
            self.short_name_mode.value.as_str(),
            from(&self.short_name_mode.file),
            from(&ppt.file)
        )
    }
}

/// Every file under `dir` in lexical walk order (bounded), as `filepath.Walk` visits them.
fn walk_drop_ins(hr: &HostRoot, dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    if depth > MAX_CRIO_DROP_IN_DEPTH {
        return;
    }
    let Ok(entries) = hr.read_dir(dir) else {
        return;
    };
    for e in entries {
        if out.len() > MAX_CRIO_DROP_INS {
            return;
        }
        let p = dir.join(&e.name);
        match e.is_dir {
            true => walk_drop_ins(hr, &p, depth + 1, out),
            false => out.push(p),
        }
    }
}

/// One place the runtime would pull from, with the rewritten reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullSource {
    pub endpoint: CrioEndpoint,
    /// The rewritten `host[:port]/path` (no tag or digest).
    pub repository: String,
    pub is_mirror: bool,
}

/// Loads registries.conf then every drop-in in name order. A file that fails to parse
/// or validate is reported and skipped; the others still apply.
pub fn load(hr: &HostRoot, problems: &mut Vec<ConfigProblem>) -> CrioConfig {
    let mut files = vec![PathBuf::from(REGISTRIES_CONF)];
    if let Ok(entries) = hr.read_dir(Path::new(REGISTRIES_CONF_D)) {
        for e in entries {
            if !e.is_dir && e.name.ends_with(".conf") {
                files.push(Path::new(REGISTRIES_CONF_D).join(e.name));
            }
        }
    }
    let mut texts = Vec::new();
    for f in files {
        if let Some(text) = hr.read_or_report(&f, false, problems) {
            texts.push((f, text));
        }
    }
    let mut cfg = from_texts(&texts, problems);
    cfg.daemon = CrioDaemon::load(hr, problems);
    cfg
}

/// registries.conf and its drop-ins, given as `(node path, text)` in the order they
/// apply: the same merge as [`load`] (what the fuzz target drives).
pub fn from_texts(files: &[(PathBuf, String)], problems: &mut Vec<ConfigProblem>) -> CrioConfig {
    let mut cfg = CrioConfig::default();
    let mut map: BTreeMap<String, CrioRegistry> = BTreeMap::new();
    for (f, text) in files {
        match parse_file(f, text) {
            Ok(p) => {
                cfg.files.push(f.clone());
                for r in p.registries {
                    map.insert(r.prefix.clone(), r);
                }
                if let Some(u) = p.unqualified {
                    cfg.unqualified_search_registries = u;
                }
                if p.short_name_mode.is_some() {
                    cfg.short_name_mode = p.short_name_mode;
                }
                cfg.aliases.extend(p.aliases);
            }
            Err((field, msg)) => problems.push(ConfigProblem::new(
                f,
                Some(&field),
                ProblemKind::Invalid,
                msg,
            )),
        }
    }
    cfg.registries = map.into_values().collect();
    cfg
}

struct ParsedFile {
    registries: Vec<CrioRegistry>,
    unqualified: Option<Vec<String>>,
    short_name_mode: Option<String>,
    aliases: BTreeMap<String, String>,
}

type FieldErr = (String, String);

fn fe(field: impl Into<String>, msg: impl Into<String>) -> FieldErr {
    (field.into(), msg.into())
}

fn parse_file(file: &Path, text: &str) -> Result<ParsedFile, FieldErr> {
    let doc: toml::Table = toml::from_str(text).map_err(|e| {
        fe(
            "(syntax)",
            crate::redact::ParseError::toml(&e, text).to_string(),
        )
    })?;
    let has_v1 = doc.get("registries").is_some();
    let has_v2 =
        doc.get("registry").is_some() || doc.get("unqualified-search-registries").is_some();
    if has_v1 && has_v2 {
        return Err(fe(
            "registries",
            "mixing sysregistry v1/v2 is not supported",
        ));
    }
    // The commented-header trap: `prefix`/`location` at top level are unknown keys to
    // the v2 decoder (ignored), not a registry.
    if let Some(Value::Table(v1)) = doc.get("registries") {
        return parse_v1(file, v1);
    }
    let unqualified = match doc.get("unqualified-search-registries") {
        None => None,
        Some(Value::Array(a)) => Some(strings(a, "unqualified-search-registries")?),
        Some(_) => {
            return Err(fe(
                "unqualified-search-registries",
                "must be an array of strings",
            ))
        }
    };
    let short_name_mode = parse_short_name_mode(doc.get("short-name-mode"))?;
    let aliases = parse_aliases(doc.get("aliases"))?;
    let registries = match doc.get("registry") {
        None => Vec::new(),
        Some(Value::Array(items)) => parse_registries(file, items)?,
        Some(_) => return Err(fe("registry", "must be an array of tables ([[registry]])")),
    };
    Ok(ParsedFile {
        registries,
        unqualified,
        short_name_mode,
        aliases,
    })
}

/// sysregistry v1: `[registries.search|insecure|block] registries = [...]`.
fn parse_v1(file: &Path, v1: &toml::Table) -> Result<ParsedFile, FieldErr> {
    let list = |k: &str| -> Result<Vec<String>, FieldErr> {
        match v1.get(k).and_then(|t| t.get("registries")) {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => strings(a, &format!("registries.{k}.registries")),
            Some(_) => Err(fe(
                format!("registries.{k}.registries"),
                "must be an array of strings",
            )),
        }
    };
    let search = list("search")?;
    let mut regs: BTreeMap<String, CrioRegistry> = BTreeMap::new();
    for (k, insecure, blocked) in [("insecure", true, false), ("block", false, true)] {
        for loc in list(k)? {
            let loc = parse_location(&loc).map_err(|m| fe(format!("registries.{k}"), m))?;
            let r = regs.entry(loc.clone()).or_insert_with(|| CrioRegistry {
                prefix: loc.clone(),
                endpoint: CrioEndpoint {
                    location: loc.clone(),
                    ..Default::default()
                },
                file: file.to_path_buf(),
                ..Default::default()
            });
            r.endpoint.insecure |= insecure;
            r.blocked |= blocked;
        }
    }
    Ok(ParsedFile {
        registries: regs.into_values().collect(),
        unqualified: Some(search),
        short_name_mode: None,
        aliases: BTreeMap::new(),
    })
}

/// `short-name-mode`: empty = unset.
fn parse_short_name_mode(v: Option<&Value>) -> Result<Option<String>, FieldErr> {
    match v {
        None => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if ["enforcing", "permissive", "disabled"].contains(&s.as_str()) => {
            Ok(Some(s.clone()))
        }
        Some(v) => Err(fe(
            "short-name-mode",
            match v {
                Value::String(s) => format!("invalid short-name mode {}", redact::keyword(s)),
                other => format!("invalid short-name mode of type {}", other.type_str()),
            },
        )),
    }
}

/// `[aliases]`: short name → fully qualified name.
fn parse_aliases(v: Option<&Value>) -> Result<BTreeMap<String, String>, FieldErr> {
    let mut aliases = BTreeMap::new();
    match v {
        None => {}
        Some(Value::Table(t)) => {
            for (k, v) in t {
                let Value::String(s) = v else {
                    return Err(fe(format!("aliases.\"{k}\""), "must be a string"));
                };
                aliases.insert(k.clone(), s.clone());
            }
        }
        Some(_) => return Err(fe("aliases", "must be a table")),
    }
    Ok(aliases)
}

/// `[[registry]]` tables, in file order.
fn parse_registries(file: &Path, items: &[Value]) -> Result<Vec<CrioRegistry>, FieldErr> {
    let mut registries = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let field = format!("registry[{i}]");
        let Value::Table(t) = item else {
            return Err(fe(field, "must be a table"));
        };
        registries.push(parse_registry(file, t, &field)?);
    }
    Ok(registries)
}

fn strings(a: &[Value], field: &str) -> Result<Vec<String>, FieldErr> {
    a.iter()
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| fe(field, "must be an array of strings"))
        })
        .collect()
}

fn get_str(t: &toml::Table, k: &str, field: &str) -> Result<String, FieldErr> {
    match t.get(k) {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(fe(format!("{field}.{k}"), "must be a string")),
    }
}

fn get_bool(t: &toml::Table, k: &str, field: &str) -> Result<bool, FieldErr> {
    match t.get(k) {
        None => Ok(false),
        Some(Value::Boolean(b)) => Ok(*b),
        Some(_) => Err(fe(format!("{field}.{k}"), "must be a boolean")),
    }
}

/// `parseLocation`: trailing `/` trimmed; URI schemes are not supported.
fn parse_location(s: &str) -> Result<String, String> {
    let l = s.trim_end_matches('/');
    if l.starts_with("http://") || l.starts_with("https://") {
        return Err(format!(
            "invalid location '{}': URI schemes are not supported",
            redact::url_text(s)
        ));
    }
    Ok(l.to_string())
}

fn parse_registry(file: &Path, t: &toml::Table, field: &str) -> Result<CrioRegistry, FieldErr> {
    let location = parse_location(&get_str(t, "location", field)?)
        .map_err(|m| fe(format!("{field}.location"), m))?;
    let prefix = registry_prefix(t, field, &location)?;
    let mirror_by_digest_only = get_bool(t, "mirror-by-digest-only", field)?;
    let mirrors = match t.get("mirror") {
        None => Vec::new(),
        Some(Value::Array(ms)) => {
            let mut mirrors = Vec::new();
            for (j, m) in ms.iter().enumerate() {
                let mf = format!("{field}.mirror[{j}]");
                let Value::Table(mt) = m else {
                    return Err(fe(mf, "must be a table"));
                };
                mirrors.push(parse_mirror(mt, &mf, mirror_by_digest_only)?);
            }
            mirrors
        }
        Some(_) => {
            return Err(fe(
                format!("{field}.mirror"),
                "must be an array of tables ([[registry.mirror]])",
            ))
        }
    };
    Ok(CrioRegistry {
        prefix,
        endpoint: CrioEndpoint {
            location,
            insecure: get_bool(t, "insecure", field)?,
            pull_from_mirror: PullFromMirror::All,
        },
        blocked: get_bool(t, "blocked", field)?,
        mirror_by_digest_only,
        mirrors,
        file: file.to_path_buf(),
    })
}

/// A `[[registry]]`'s `prefix`: the location when unset; a wildcard only as a leading
/// `*.` on a bare domain (which needs no location).
fn registry_prefix(t: &toml::Table, field: &str, location: &str) -> Result<String, FieldErr> {
    let prefix = get_str(t, "prefix", field)?;
    let wildcard = prefix.starts_with("*.");
    if prefix.is_empty() {
        if location.is_empty() {
            return Err(fe(
                field,
                "invalid condition: both location and prefix are unset",
            ));
        }
        return Ok(location.to_string());
    }
    let prefix = parse_location(&prefix).map_err(|m| fe(format!("{field}.prefix"), m))?;
    if wildcard && prefix.contains(['/', '@', ':']) {
        return Err(fe(
            format!("{field}.prefix"),
            format!(
                "invalid prefix '{}': wildcarded prefix should be in the format *.example.com",
                redact::text_max(&prefix, 100)
            ),
        ));
    }
    if prefix.contains('*') && !wildcard {
        return Err(fe(
            format!("{field}.prefix"),
            format!(
                "invalid prefix '{}': a wildcard is only allowed as a leading *.",
                redact::text_max(&prefix, 100)
            ),
        ));
    }
    if location.is_empty() && !wildcard {
        return Err(fe(
            format!("{field}.location"),
            "location must be set unless the prefix is a *.domain wildcard",
        ));
    }
    Ok(prefix)
}

/// One `[[registry.mirror]]` (`mf` is its field path).
fn parse_mirror(
    mt: &toml::Table,
    mf: &str,
    mirror_by_digest_only: bool,
) -> Result<CrioEndpoint, FieldErr> {
    let loc = parse_location(&get_str(mt, "location", mf)?)
        .map_err(|e| fe(format!("{mf}.location"), e))?;
    if loc.is_empty() {
        return Err(fe(
            format!("{mf}.location"),
            "invalid condition: mirror location is unset",
        ));
    }
    let pfm = get_str(mt, "pull-from-mirror", mf)?;
    let pull_from_mirror = match pfm.as_str() {
        "" | "all" => PullFromMirror::All,
        "digest-only" => PullFromMirror::DigestOnly,
        "tag-only" => PullFromMirror::TagOnly,
        other => {
            return Err(fe(
                format!("{mf}.pull-from-mirror"),
                format!(
                    "unsupported pull-from-mirror value {}",
                    redact::keyword(other)
                ),
            ))
        }
    };
    if mirror_by_digest_only && !pfm.is_empty() {
        return Err(fe(format!("{mf}.pull-from-mirror"), "cannot set mirror-by-digest-only for the registry and pull-from-mirror for a mirror at the same time"));
    }
    Ok(CrioEndpoint {
        location: loc,
        insecure: get_bool(mt, "insecure", mf)?,
        pull_from_mirror,
    })
}

/// `refMatchingPrefix`: length of the match of `prefix` in `reference`, if any.
pub fn ref_matching_prefix(reference: &str, prefix: &str) -> Option<usize> {
    if let Some(suffix) = prefix.strip_prefix('*') {
        // refMatchingSubdomainPrefix: ".example.com" must sit in the host part.
        let index = reference.find(suffix)?;
        if reference[..index].contains('/') {
            return None;
        }
        let end = index + suffix.len();
        return match reference.as_bytes().get(end) {
            None => Some(end),
            Some(b':') | Some(b'/') | Some(b'@') => Some(end),
            _ => None,
        };
    }
    if reference.len() < prefix.len() || !reference.starts_with(prefix) {
        return None;
    }
    match reference.as_bytes().get(prefix.len()) {
        None => Some(prefix.len()),
        Some(b':') | Some(b'/') | Some(b'@') => Some(prefix.len()),
        _ => None,
    }
}

impl CrioConfig {
    /// `findRegistryWithParsedConfig`: among matching entries, the one whose *prefix
    /// string* is longest (`len(r.Prefix)`, so `*.com` loses to `simple-prefix.com`
    /// even though both match the same characters); first in prefix order on a tie.
    pub fn find_registry(&self, repository: &str) -> Option<&CrioRegistry> {
        let mut best: Option<(&CrioRegistry, usize)> = None;
        for r in &self.registries {
            if ref_matching_prefix(repository, &r.prefix).is_some() {
                let len = r.prefix.len();
                if best.is_none_or(|(_, l)| len > l) {
                    best = Some((r, len));
                }
            }
        }
        best.map(|(r, _)| r)
    }
}

impl CrioRegistry {
    /// `PullSourcesFromReference`: mirrors (filtered by digest/tag rules) then the
    /// location, each with the reference rewritten (`rewriteReference`).
    /// `repository` is `domain/path`; `digested` whether the reference has a digest.
    pub fn pull_sources(&self, repository: &str, digested: bool) -> Vec<PullSource> {
        let mut eps: Vec<(CrioEndpoint, bool)> = Vec::new();
        if self.mirror_by_digest_only {
            if digested {
                eps.extend(self.mirrors.iter().cloned().map(|m| (m, true)));
            }
        } else {
            for m in &self.mirrors {
                match m.pull_from_mirror {
                    PullFromMirror::DigestOnly if !digested => continue,
                    PullFromMirror::TagOnly if digested => continue,
                    _ => eps.push((m.clone(), true)),
                }
            }
        }
        eps.push((self.endpoint.clone(), false));
        eps.into_iter()
            .filter_map(|(ep, is_mirror)| {
                let len = ref_matching_prefix(repository, &self.prefix)?;
                let repository = if ep.location.is_empty() {
                    repository.to_string()
                } else {
                    format!("{}{}", ep.location, &repository[len..])
                };
                Some(PullSource {
                    endpoint: ep,
                    repository,
                    is_mirror,
                })
            })
            .collect()
    }
}

/// The `host[:port]` part of a rewritten `host/path` (`reference.Domain`).
pub fn domain_of(repository: &str) -> &str {
    repository.split('/').next().unwrap_or(repository)
}

/// (directory used, CA files, client `(cert, key)` pairs), all node paths.
pub type CertDirFiles = (
    Option<PathBuf>,
    Vec<PathBuf>,
    Vec<(PathBuf, Option<PathBuf>)>,
);

/// containers-certs.d: the first existing `<dir>/<host:port>` (Docker Hub under
/// `docker.io`). Returns (CA files, client (cert, key) pairs) as node paths, or an
/// error naming the unpaired file (docker_client.go rejects `X.cert` without `X.key`).
pub fn cert_dir_files(hr: &HostRoot, host: &str) -> Result<CertDirFiles, (PathBuf, String)> {
    let name = if host == "registry-1.docker.io" {
        "docker.io"
    } else {
        host
    };
    for d in CERT_DIRS {
        let dir = Path::new(d).join(name);
        if !hr.is_dir(&dir) {
            continue;
        }
        let entries = hr
            .read_dir(&dir)
            .map_err(|e| (dir.clone(), e.to_string()))?;
        let names: Vec<String> = entries
            .iter()
            .filter(|e| !e.is_dir)
            .map(|e| e.name.clone())
            .collect();
        let mut cas = Vec::new();
        let mut pairs = Vec::new();
        for n in &names {
            if n.ends_with(".crt") {
                cas.push(dir.join(n));
            } else if let Some(base) = n.strip_suffix(".cert") {
                let key = format!("{base}.key");
                if !names.contains(&key) {
                    return Err((
                        dir.join(n),
                        format!("missing key {key} for client certificate {n}"),
                    ));
                }
                pairs.push((dir.join(n), Some(dir.join(key))));
            } else if let Some(base) = n.strip_suffix(".key") {
                let cert = format!("{base}.cert");
                if !names.contains(&cert) {
                    return Err((
                        dir.join(n),
                        format!("missing client certificate {cert} for key {n}"),
                    ));
                }
            }
        }
        return Ok((Some(dir), cas, pairs));
    }
    Ok((None, Vec::new(), Vec::new()))
}

/// Short-name handling for a name without a registry domain (pkg/shortnames with
/// CRI-O's `short_name_mode`, default `enforcing`, and no TTY).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShortName {
    /// The name already has a domain.
    Qualified,
    /// Resolved by `[aliases]`.
    Alias(String),
    /// Candidates `host/name` to try in order.
    Candidates(Vec<String>),
    /// The pull fails: why.
    Error(String),
}

impl std::fmt::Display for ShortName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShortName::Qualified => f.write_str("fully qualified"),
            ShortName::Alias(a) => write!(f, "the alias {a}"),
            ShortName::Candidates(c) => write!(f, "tried in order: {}", c.join(", ")),
            ShortName::Error(e) => write!(f, "fails: {e}"),
        }
    }
}

impl CrioConfig {
    /// `name` is the image name as given, without tag or digest. `mode` overrides the
    /// mode CRI-O 1.34+ puts in the SystemContext (`crio.conf` `short_name_mode`), which
    /// takes precedence over registries.conf's `short-name-mode`.
    pub fn resolve_short_name(&self, name: &str, mode: Option<&str>) -> ShortName {
        let first = name.split('/').next().unwrap_or(name);
        if name.contains('/') && (first.contains(['.', ':']) || first == "localhost") {
            return ShortName::Qualified;
        }
        if let Some(a) = self.aliases.get(name) {
            return ShortName::Alias(a.clone());
        }
        let regs = &self.unqualified_search_registries;
        if regs.is_empty() {
            return ShortName::Error(format!("short-name {name:?} did not resolve to an alias and no unqualified-search registries are defined"));
        }
        let mode = mode.unwrap_or(self.daemon.short_name_mode.value.as_str());
        if regs.len() > 1 && mode == "enforcing" {
            // CRI-O's wording of containers/image's "short-name resolution enforced but
            // cannot prompt without a TTY" (internal/storage/image.go).
            return ShortName::Error(format!(
                "short name mode is enforcing, but image name {name} returns ambiguous list ({})",
                regs.join(", ")
            ));
        }
        ShortName::Candidates(regs.iter().map(|r| format!("{r}/{name}")).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> CrioConfig {
        let p = parse_file(Path::new("/r.conf"), text).unwrap();
        let mut map = BTreeMap::new();
        for r in p.registries {
            map.insert(r.prefix.clone(), r);
        }
        CrioConfig {
            registries: map.into_values().collect(),
            unqualified_search_registries: p.unqualified.unwrap_or_default(),
            short_name_mode: p.short_name_mode,
            aliases: p.aliases,
            files: vec![],
            daemon: CrioDaemon::default(),
        }
    }

    #[test]
    fn longest_prefix_and_wildcards() {
        let c = cfg(r#"
[[registry]]
prefix = "example.com"
location = "a.example"
[[registry]]
prefix = "example.com/foo"
location = "b.example"
[[registry]]
prefix = "*.example.com"
location = "wild.example"
[[registry]]
prefix = "*.internal"
"#);
        for (repo, want) in [
            ("example.com/foo/bar", Some("example.com/foo")),
            ("example.com/foobar/x", Some("example.com")),
            ("example.com/x", Some("example.com")),
            ("a.b.example.com/x", Some("*.example.com")),
            ("example.community/x", None),
            ("reg.internal:5000/x", Some("*.internal")),
            ("docker.io/library/x", None),
        ] {
            assert_eq!(
                c.find_registry(repo).map(|r| r.prefix.as_str()),
                want,
                "{repo}"
            );
        }
        let r = c.find_registry("a.b.example.com/x/y").unwrap();
        assert_eq!(
            r.pull_sources("a.b.example.com/x/y", false)[0].repository,
            "wild.example/x/y"
        );
        let r = c.find_registry("reg.internal/x").unwrap();
        assert_eq!(
            r.pull_sources("reg.internal/x", false)[0].repository,
            "reg.internal/x"
        );
    }

    #[test]
    fn mirrors_digest_only_tag_only() {
        let c = cfg(r#"
[[registry]]
prefix = "r.com/foo"
location = "r.com/bar"
[[registry.mirror]]
location = "m1"
pull-from-mirror = "digest-only"
[[registry.mirror]]
location = "m2"
pull-from-mirror = "tag-only"
insecure = true
[[registry.mirror]]
location = "m3"
[[registry]]
prefix = "d.com"
mirror-by-digest-only = true
location = "d.com"
[[registry.mirror]]
location = "dm"
"#);
        let r = c.find_registry("r.com/foo/img").unwrap();
        let tags: Vec<_> = r
            .pull_sources("r.com/foo/img", false)
            .into_iter()
            .map(|s| s.repository)
            .collect();
        assert_eq!(tags, ["m2/img", "m3/img", "r.com/bar/img"]);
        let dig: Vec<_> = r
            .pull_sources("r.com/foo/img", true)
            .into_iter()
            .map(|s| s.repository)
            .collect();
        assert_eq!(dig, ["m1/img", "m3/img", "r.com/bar/img"]);
        let d = c.find_registry("d.com/x").unwrap();
        assert_eq!(d.pull_sources("d.com/x", false).len(), 1);
        assert_eq!(d.pull_sources("d.com/x", true).len(), 2);
    }

    #[test]
    fn invalid_files_name_fields() {
        for (text, field) in [
            ("[[registry]]\nprefix = \"a.com\"\nlocation = \"https://a.com\"", "registry[0].location"),
            ("[[registry]]\ninsecure = true", "registry[0]"),
            ("[[registry]]\nprefix = \"*.a.com/x\"", "registry[0].prefix"),
            ("[[registry]]\nlocation = \"a\"\nmirror-by-digest-only = true\n[[registry.mirror]]\nlocation = \"m\"\npull-from-mirror = \"all\"", "registry[0].mirror[0].pull-from-mirror"),
            ("[[registry]]\nlocation = \"a\"\n[[registry.mirror]]\nlocation = \"m\"\npull-from-mirror = \"sometimes\"", "registry[0].mirror[0].pull-from-mirror"),
            ("unqualified-search-registries = [\"a\"]\n[registries.search]\nregistries = []", "registries"),
            ("[[registry]]\nlocation = \"a\"\nblocked = \"yes\"", "registry[0].blocked"),
            ("x = = 1", "(syntax)"),
        ] {
            let e = parse_file(Path::new("/f"), text).err().unwrap();
            assert_eq!(e.0, field, "{text}: {}", e.1);
        }
    }

    #[test]
    fn v1_tables_convert() {
        let c = cfg("[registries.search]\nregistries = ['docker.io']\n[registries.insecure]\nregistries = ['ins:5000']\n[registries.block]\nregistries = ['bad.com']\n");
        assert_eq!(c.unqualified_search_registries, ["docker.io"]);
        assert!(c.find_registry("bad.com/x").unwrap().blocked);
        assert!(c.find_registry("ins:5000/x").unwrap().endpoint.insecure);
    }

    #[test]
    fn short_names() {
        let c = cfg("unqualified-search-registries = ['a.io', 'b.io']\n[aliases]\n\"fedora\" = \"registry.fedoraproject.org/fedora\"\n");
        assert_eq!(
            c.resolve_short_name("quay.io/x", None),
            ShortName::Qualified
        );
        assert_eq!(
            c.resolve_short_name("fedora", None),
            ShortName::Alias("registry.fedoraproject.org/fedora".into())
        );
        assert!(matches!(
            c.resolve_short_name("nginx", None),
            ShortName::Error(_)
        ));
        assert_eq!(
            c.resolve_short_name("nginx", Some("permissive")),
            ShortName::Candidates(vec!["a.io/nginx".into(), "b.io/nginx".into()])
        );
    }

    /// crio.conf, then crio.conf.d walked in lexical order (sub-directories too, any name),
    /// each setting what it names; Go durations or integer nanoseconds; bad values are
    /// problems naming file and field, and the earlier value stands.
    #[test]
    fn crio_daemon_settings_over_drop_ins() {
        let d = tempfile::tempdir().unwrap();
        let put = |p: &str, t: &str| {
            let f = d.path().join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, t).unwrap();
        };
        put(
            "etc/crio/crio.conf",
            "[crio.image]\nshort_name_mode = \"disabled\"\npull_progress_timeout = \"1m\"\n",
        );
        put(
            "etc/crio/crio.conf.d/01-a.conf",
            "[crio.image]\npull_progress_timeout = 5000000000\n",
        );
        put(
            "etc/crio/crio.conf.d/02/x",
            "[crio.image]\nshort_name_mode = \"enforcing\"\n",
        );
        put(
            "etc/crio/crio.conf.d/03-bad.conf",
            "[crio.image]\nshort_name_mode = 1\npull_progress_timeout = \"soon\"\n",
        );
        let hr = HostRoot::new(d.path()).unwrap();
        let mut problems = Vec::new();
        let c = CrioDaemon::load(&hr, &mut problems);
        assert_eq!(c.short_name_mode.value, ShortNameMode::Enforcing);
        assert_eq!(
            c.short_name_mode.file.as_deref(),
            Some(Path::new("/etc/crio/crio.conf.d/02/x"))
        );
        assert_eq!(
            c.pull_progress_timeout.value,
            std::time::Duration::from_secs(5)
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(
            problems[0].file,
            Path::new("/etc/crio/crio.conf.d/03-bad.conf")
        );
        assert_eq!(
            problems[0].field.as_deref(),
            Some("crio.image.short_name_mode")
        );
        let none = tempfile::tempdir().unwrap();
        let mut problems = Vec::new();
        let c = CrioDaemon::load(&HostRoot::new(none.path()).unwrap(), &mut problems);
        assert_eq!(c, CrioDaemon::default());
        assert!(
            problems.is_empty(),
            "a node without crio.conf: {problems:?}"
        );
    }

    #[test]
    fn certs_d_pairs() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("etc/containers/certs.d/reg:5000");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.crt"), "x").unwrap();
        std::fs::write(dir.join("client.cert"), "x").unwrap();
        std::fs::write(dir.join("client.key"), "x").unwrap();
        let hr = HostRoot::new(d.path()).unwrap();
        let (found, cas, pairs) = cert_dir_files(&hr, "reg:5000").unwrap();
        assert_eq!(
            found,
            Some(PathBuf::from("/etc/containers/certs.d/reg:5000"))
        );
        assert_eq!(cas.len(), 1);
        assert_eq!(pairs.len(), 1);
        std::fs::remove_file(dir.join("client.key")).unwrap();
        let e = cert_dir_files(&hr, "reg:5000").unwrap_err();
        assert!(e.1.contains("missing key"), "{e:?}");
    }
}
