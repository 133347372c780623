//! What the node's kubelet runs with, read the way systemd starts it: the settings that
//! decide its pull path — `--root-dir` (where `config.json` is searched),
//! `--image-credential-provider-config` / `--image-credential-provider-bin-dir` (which
//! plugins run), `--container-runtime-endpoint` (which runtime), `--config` and
//! `--config-dir` (the KubeletConfiguration and its drop-ins: `containerRuntimeEndpoint`,
//! and the cached-image settings of KEP-2535, see [`cached`]) and `--feature-gates` — each
//! with where it was found.
//!
//! systemd semantics followed (systemd.unit(5), systemd.exec(5), systemd.service(5)):
//! the unit is the first `kubelet.service` in `/etc/systemd/system`, `/run/systemd/system`,
//! `/usr/lib/systemd/system`, `/lib/systemd/system`; drop-ins `kubelet.service.d/*.conf`
//! from all of them, a name in an earlier directory masking the same name in a later one,
//! applied in file-name order after the unit; `Environment=` assignments (quoted or not),
//! then `EnvironmentFile=` files in order (a leading `-` = optional), which override
//! `Environment=`; an empty `ExecStart=` resets it; `$VAR` expands to several words,
//! `${VAR}` to one. Flags are Go pflag style (`--flag=value` or `--flag value`; the last
//! occurrence wins). Layouts this covers: kubeadm (`10-kubeadm.conf` +
//! `/var/lib/kubelet/kubeadm-flags.env` + `/etc/default/kubelet` or
//! `/etc/sysconfig/kubelet`), EKS (flags in the unit, AL2023's `/etc/eks/kubelet/environment`),
//! GKE (`/etc/default/kubelet` `KUBELET_OPTS`), AKS (`/etc/default/kubelet` `KUBELET_FLAGS`
//! + drop-ins). Without a unit, the usual environment files are read for kubelet flags.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{ConfigProblem, ProblemKind};
use crate::hostroot::HostRoot;

pub mod cached;
pub use cached::{CachedImage, CachedImagePolicy};

/// The kubelet's own default `--root-dir`.
pub const DEFAULT_ROOT_DIR: &str = "/var/lib/kubelet";
/// Environment files read for kubelet flags when no unit is found, with the variables
/// the common layouts keep flags in.
pub const FALLBACK_ENV_FILES: [&str; 4] = [
    "/var/lib/kubelet/kubeadm-flags.env",
    "/etc/default/kubelet",
    "/etc/sysconfig/kubelet",
    "/etc/eks/kubelet/environment",
];
const MAX_DROP_INS: usize = 64;
const MAX_WORDS: usize = 4096;

/// Where a setting was found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum SettingSource {
    /// Given to pullprobe (a flag or the agent config), overriding discovery.
    Given,
    /// A flag on the kubelet's command line in a systemd unit; `variable` names the
    /// environment variable it came through, `defined_in` the file that set it.
    Unit {
        unit: PathBuf,
        #[serde(skip_serializing_if = "Option::is_none")]
        variable: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        defined_in: Option<PathBuf>,
    },
    /// A flag in an environment file's variable (no systemd unit found).
    EnvFile { file: PathBuf, variable: String },
    /// A field of the KubeletConfiguration file.
    KubeletConfig { file: PathBuf, field: String },
    /// The kubelet's built-in default.
    Default,
}

impl std::fmt::Display for SettingSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SettingSource::Given => f.write_str("given to pullprobe"),
            SettingSource::Unit {
                unit,
                variable: Some(v),
                defined_in: Some(d),
            } => write!(f, "{} via ${v} set in {}", unit.display(), d.display()),
            SettingSource::Unit { unit, .. } => write!(f, "{}", unit.display()),
            SettingSource::EnvFile { file, variable } => {
                write!(f, "{} ({variable})", file.display())
            }
            SettingSource::KubeletConfig { file, field } => {
                write!(f, "{} ({field})", file.display())
            }
            SettingSource::Default => f.write_str("kubelet default"),
        }
    }
}

/// A value and where it was found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Setting<T> {
    pub value: T,
    pub source: SettingSource,
}

impl<T> Setting<T> {
    pub fn given(value: T) -> Setting<T> {
        Setting {
            value,
            source: SettingSource::Given,
        }
    }
}

/// The kubelet settings pullprobe needs, as found on the node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KubeletSettings {
    /// The systemd unit the kubelet runs from, when one was found.
    pub unit: Option<PathBuf>,
    pub root_dir: Setting<PathBuf>,
    pub credential_provider_config: Option<Setting<PathBuf>>,
    pub credential_provider_bin_dir: Option<Setting<PathBuf>>,
    pub container_runtime_endpoint: Option<Setting<String>>,
    pub config_file: Option<Setting<PathBuf>>,
    /// What the kubelet does with cached images for pods whose credentials it has not
    /// recorded (KEP-2535).
    pub cached_images: CachedImagePolicy,
}

/// One word of a command line and where it came from.
#[derive(Clone, Debug)]
struct Word {
    text: String,
    source: SettingSource,
}

/// A variable's value and the file that set it.
type Env = BTreeMap<String, (String, PathBuf)>;

/// Discover the kubelet's settings under the host root. Unreadable or malformed files
/// become problems naming the file; discovery goes on with the rest.
pub fn discover(hr: &HostRoot, problems: &mut Vec<ConfigProblem>) -> KubeletSettings {
    let (unit, words) = match find_unit(hr) {
        Some(unit) => {
            let words = unit_command_line(hr, &unit, problems);
            (Some(unit), words)
        }
        None => (None, env_file_words(hr, problems)),
    };
    let flags = parse_flags(&words);
    let flag_path = |name: &str| {
        flags.get(name).map(|w| Setting {
            value: PathBuf::from(&w.text),
            source: w.source.clone(),
        })
    };
    let config_file = flag_path("config");
    let config_dir = flag_path("config-dir");
    let cfg = read_config(hr, config_file.as_ref(), config_dir.as_ref(), problems);
    let container_runtime_endpoint = flags
        .get("container-runtime-endpoint")
        .map(|w| Setting {
            value: w.text.clone(),
            source: w.source.clone(),
        })
        .or(cfg.container_runtime_endpoint);
    let gate = gate_of(flags.get("feature-gates"), cfg.gate);
    let cached_images = CachedImagePolicy::from_config(gate, cfg.policy, cfg.allowlist, problems);
    KubeletSettings {
        unit,
        root_dir: flag_path("root-dir").unwrap_or(Setting {
            value: PathBuf::from(DEFAULT_ROOT_DIR),
            source: SettingSource::Default,
        }),
        credential_provider_config: flag_path("image-credential-provider-config"),
        credential_provider_bin_dir: flag_path("image-credential-provider-bin-dir"),
        container_runtime_endpoint,
        config_file,
        cached_images,
    }
}

fn find_unit(hr: &HostRoot) -> Option<PathBuf> {
    super::SYSTEMD_UNIT_DIRS
        .iter()
        .map(|d| Path::new(d).join("kubelet.service"))
        .find(|p| hr.is_file(p))
}

/// Drop-ins in application order: by file name, the first directory's copy of a name.
fn drop_ins(hr: &HostRoot) -> Vec<PathBuf> {
    let mut by_name: BTreeMap<String, PathBuf> = BTreeMap::new();
    for d in super::SYSTEMD_UNIT_DIRS {
        let dir = Path::new(d).join("kubelet.service.d");
        let Ok(entries) = hr.read_dir(&dir) else {
            continue;
        };
        for e in entries
            .into_iter()
            .filter(|e| !e.is_dir && e.name.ends_with(".conf"))
        {
            by_name
                .entry(e.name.clone())
                .or_insert_with(|| dir.join(&e.name));
        }
    }
    by_name.into_values().take(MAX_DROP_INS).collect()
}

/// The `[Service]` settings of one unit file that matter here.
#[derive(Default)]
struct ServiceSection {
    environment: Vec<(String, String)>,
    environment_files: Vec<(PathBuf, bool)>,
    /// `Some(empty)` = reset; the last non-empty one is the command line.
    exec_start: Vec<String>,
}

/// Join `\`-continued lines, drop comments, keep `key=value` lines of `[Service]`.
fn service_lines(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut section = String::new();
    let mut pending = String::new();
    for raw in text.lines() {
        let line = raw.trim_end();
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        let full = std::mem::take(&mut pending);
        let l = full.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        if l.starts_with('[') {
            section = l.to_string();
            continue;
        }
        if section == "[Service]" {
            if let Some((k, v)) = l.split_once('=') {
                out.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
    }
    out
}

fn parse_service(text: &str) -> ServiceSection {
    let mut s = ServiceSection::default();
    for (k, v) in service_lines(text) {
        match k.as_str() {
            "Environment" => {
                for word in split_words(&v) {
                    if let Some((name, value)) = word.split_once('=') {
                        s.environment.push((name.to_string(), value.to_string()));
                    }
                }
            }
            "EnvironmentFile" => {
                let (optional, path) = match v.strip_prefix('-') {
                    Some(p) => (true, p),
                    None => (false, v.as_str()),
                };
                s.environment_files
                    .push((PathBuf::from(path.trim()), optional));
            }
            "ExecStart" => s.exec_start.push(v),
            _ => {}
        }
    }
    s
}

/// The kubelet's command line from the unit and its drop-ins, words tagged with origin.
fn unit_command_line(hr: &HostRoot, unit: &Path, problems: &mut Vec<ConfigProblem>) -> Vec<Word> {
    let mut files = vec![unit.to_path_buf()];
    files.extend(drop_ins(hr));
    let mut env_assignments: Vec<(String, String, PathBuf)> = Vec::new();
    let mut env_files: Vec<(PathBuf, bool)> = Vec::new();
    let mut exec: Option<(String, PathBuf)> = None;
    for f in &files {
        let Some(text) = hr.read_or_report(f, true, problems) else {
            continue;
        };
        let s = parse_service(&text);
        for (k, v) in s.environment {
            env_assignments.push((k, v, f.clone()));
        }
        env_files.extend(s.environment_files);
        for e in s.exec_start {
            exec = if e.trim().is_empty() {
                None
            } else {
                Some((e, f.clone()))
            };
        }
    }
    let mut env: Env = BTreeMap::new();
    for (k, v, f) in env_assignments {
        env.insert(k, (v, f));
    }
    for (file, optional) in env_files {
        if let Some(text) = hr.read_or_report(&file, !optional, problems) {
            for (k, v) in parse_env_file(&text) {
                env.insert(k, (v, file.clone()));
            }
        }
    }
    let Some((line, defined)) = exec else {
        return Vec::new();
    };
    expand_exec(unit, &defined, &line, &env)
}

/// Expand `$VAR` (split into words) and `${VAR}` (one word) in an `ExecStart=` line.
fn expand_exec(unit: &Path, line_file: &Path, line: &str, env: &Env) -> Vec<Word> {
    let line = line.trim_start_matches(['-', '@', '+', '!', ':']);
    let literal = SettingSource::Unit {
        unit: unit.to_path_buf(),
        variable: None,
        defined_in: (line_file != unit).then(|| line_file.to_path_buf()),
    };
    let mut out = Vec::new();
    for raw in split_words(line).into_iter().skip(1) {
        if out.len() >= MAX_WORDS {
            break;
        }
        let var = raw
            .strip_prefix("${")
            .and_then(|r| r.strip_suffix('}'))
            .map(|v| (v, false))
            .or_else(|| raw.strip_prefix('$').map(|v| (v, true)));
        match var {
            Some((name, split)) => {
                let Some((value, file)) = env.get(name) else {
                    continue;
                };
                let source = SettingSource::Unit {
                    unit: unit.to_path_buf(),
                    variable: Some(name.to_string()),
                    defined_in: Some(file.clone()),
                };
                let words = if split {
                    split_words(value)
                } else {
                    vec![value.clone()]
                };
                out.extend(words.into_iter().map(|text| Word {
                    text,
                    source: source.clone(),
                }));
            }
            None => out.push(Word {
                text: substitute_braced(&raw, env),
                source: literal.clone(),
            }),
        }
    }
    out
}

/// `${VAR}` inside a word (e.g. `--node-labels=${LABELS}`).
fn substitute_braced(word: &str, env: &Env) -> String {
    let mut out = String::new();
    let mut rest = word;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        match rest[i + 2..].find('}') {
            Some(j) => {
                let name = &rest[i + 2..i + 2 + j];
                if let Some((v, _)) = env.get(name) {
                    out.push_str(v);
                }
                rest = &rest[i + 3 + j..];
            }
            None => {
                out.push_str(&rest[i..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Split on unquoted whitespace; `"…"` and `'…'` group (quotes removed), `\` escapes.
fn split_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (_, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                    in_word = true;
                }
            }
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
        if out.len() >= MAX_WORDS {
            break;
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

/// `KEY=VALUE` lines of an environment file (systemd.exec `EnvironmentFile=`), values
/// unquoted, `#`/`;` comments and `export ` prefixes ignored.
fn parse_env_file(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for raw in text.lines() {
        if let Some(head) = raw.trim_end().strip_suffix('\\') {
            pending.push_str(head);
            continue;
        }
        pending.push_str(raw);
        let line = std::mem::take(&mut pending);
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        let l = l.strip_prefix("export ").unwrap_or(l);
        if let Some((k, v)) = l.split_once('=') {
            let value = split_words(v.trim()).join(" ");
            out.push((k.trim().to_string(), value));
        }
    }
    out
}

/// No unit: every variable of the usual environment files, as kubelet flags.
fn env_file_words(hr: &HostRoot, problems: &mut Vec<ConfigProblem>) -> Vec<Word> {
    let mut out = Vec::new();
    for f in FALLBACK_ENV_FILES {
        let file = Path::new(f);
        let Some(text) = hr.read_or_report(file, false, problems) else {
            continue;
        };
        for (variable, value) in parse_env_file(&text) {
            let source = SettingSource::EnvFile {
                file: file.to_path_buf(),
                variable,
            };
            out.extend(split_words(&value).into_iter().map(|text| Word {
                text,
                source: source.clone(),
            }));
        }
    }
    out
}

/// The kubelet flags that matter here, pflag style; the last occurrence wins.
const VALUE_FLAGS: [&str; 7] = [
    "root-dir",
    "image-credential-provider-config",
    "image-credential-provider-bin-dir",
    "container-runtime-endpoint",
    "config",
    "config-dir",
    "feature-gates",
];

fn parse_flags(words: &[Word]) -> BTreeMap<&'static str, Word> {
    let mut out = BTreeMap::new();
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        i += 1;
        let Some(body) = w.text.strip_prefix("--") else {
            continue;
        };
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let Some(flag) = VALUE_FLAGS.iter().find(|f| **f == name) else {
            continue;
        };
        let value = match inline {
            Some(v) => v,
            None => match words.get(i) {
                Some(next) => {
                    i += 1;
                    next.text.clone()
                }
                None => continue,
            },
        };
        if !value.is_empty() {
            out.insert(
                *flag,
                Word {
                    text: value,
                    source: w.source.clone(),
                },
            );
        }
    }
    out
}

/// The KubeletConfiguration fields read here, merged over `--config` and its drop-ins.
#[derive(Default)]
struct ConfigFields {
    container_runtime_endpoint: Option<Setting<String>>,
    policy: Option<(String, SettingSource)>,
    /// `preloadedImagesVerificationAllowlist` and the file that set it.
    allowlist: Option<(Vec<String>, PathBuf)>,
    /// `featureGates.KubeletEnsureSecretPulledImages`.
    gate: Option<(bool, SettingSource)>,
}

/// One KubeletConfiguration document (YAML, or the JSON some layouts such as EKS use).
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Partial {
    container_runtime_endpoint: Option<String>,
    image_pull_credentials_verification_policy: Option<String>,
    preloaded_images_verification_allowlist: Option<Vec<String>>,
    #[serde(default)]
    feature_gates: BTreeMap<String, bool>,
}

/// Most `--config-dir` drop-ins read.
const MAX_CONFIG_DROP_INS: usize = 64;

/// `--config`, then every `*.conf` in `--config-dir` in name order, each overriding the
/// fields it sets (kubelet `--config-dir`, KEP-3983: "processed in alphanumeric order").
fn read_config(
    hr: &HostRoot,
    file: Option<&Setting<PathBuf>>,
    dir: Option<&Setting<PathBuf>>,
    problems: &mut Vec<ConfigProblem>,
) -> ConfigFields {
    let mut files: Vec<PathBuf> = file.map(|f| f.value.clone()).into_iter().collect();
    if let Some(d) = dir {
        if let Ok(entries) = hr.read_dir(&d.value) {
            files.extend(
                entries
                    .into_iter()
                    .filter(|e| !e.is_dir && e.name.ends_with(".conf"))
                    .take(MAX_CONFIG_DROP_INS)
                    .map(|e| d.value.join(e.name)),
            );
        }
    }
    let mut out = ConfigFields::default();
    for f in files {
        let Some(text) = hr.read_or_report(&f, false, problems) else {
            continue;
        };
        let Ok(p) = serde_saphyr::from_str::<Partial>(&text) else {
            problems.push(ConfigProblem::new(
                &f,
                None,
                ProblemKind::Invalid,
                "not a KubeletConfiguration this reader understands (YAML or JSON)",
            ));
            continue;
        };
        let source = |field: &str| SettingSource::KubeletConfig {
            file: f.clone(),
            field: field.into(),
        };
        if let Some(value) = p.container_runtime_endpoint {
            out.container_runtime_endpoint = Some(Setting {
                value,
                source: source("containerRuntimeEndpoint"),
            });
        }
        if let Some(v) = p.image_pull_credentials_verification_policy {
            out.policy = Some((v, source("imagePullCredentialsVerificationPolicy")));
        }
        if let Some(v) = p.preloaded_images_verification_allowlist {
            out.allowlist = Some((v, f.clone()));
        }
        if let Some(on) = p.feature_gates.get(cached::GATE) {
            out.gate = Some((*on, source(&format!("featureGates.{}", cached::GATE))));
        }
    }
    out
}

/// The gate from `--feature-gates` (`A=true,B=false`; Go `strconv.ParseBool` values),
/// which takes precedence over the config file's `featureGates`.
fn gate_of(flag: Option<&Word>, from_config: Option<(bool, SettingSource)>) -> cached::Gate {
    let from_flag = flag.and_then(|w| {
        w.text.split(',').rev().find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            if k.trim() != cached::GATE {
                return None;
            }
            let on = match v.trim() {
                "1" | "t" | "T" | "TRUE" | "true" | "True" => true,
                "0" | "f" | "F" | "FALSE" | "false" | "False" => false,
                _ => return None,
            };
            Some((on, w.source.clone()))
        })
    });
    match from_flag.or(from_config) {
        Some((true, source)) => cached::Gate::On { source },
        Some((false, source)) => cached::Gate::Off { source },
        None => cached::Gate::Default,
    }
}

#[cfg(test)]
mod tests;
