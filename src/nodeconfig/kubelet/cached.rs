//! Ensure secret pulled images (KEP-2535: alpha in 1.33, beta and on by default in 1.35):
//! whether the kubelet uses a cached image for a pod whose credentials it has not recorded,
//! or verifies them first — pulls again under `IfNotPresent`, fails with
//! `ErrImageNeverPull` under `Never`. That decides whether a registry outage fails such a
//! pod although the image is on the node.
//!
//! Reproduced from kubernetes pkg/kubelet/images:
//! - `image_manager.go` `EnsureImageExists`: with the image present and the gate
//!   `KubeletEnsureSecretPulledImages` on, `imagePullManager.MustAttemptImagePull`
//!   decides; a pull required under `Never` is `ErrImageNeverPull`.
//! - `pullmanager/image_pull_policies.go`: `NeverVerify` never; `NeverVerifyPreloadedImages`
//!   only images the kubelet pulled (`imagePulledByKubelet`: a pulled record or a pull
//!   intent exists); `NeverVerifyAllowlistedImages` every image not matching
//!   `preloadedImagesVerificationAllowlist` (names normalised, `ParseNormalizedNamed(…).Name()`;
//!   a pattern is a name or a `…/*` prefix, `getAllowlistImagePattern`); `AlwaysVerify` all.
//! - `pullmanager/image_pull_manager.go` `MustAttemptImagePull`: when verification is
//!   required, a record whose `credentialMapping[name]` is `nodePodsAccessible` (pulled
//!   anonymously or with node-wide credentials) lets every pod use it; otherwise only pods
//!   presenting a recorded secret (by hash or coordinates) or service account do.
//! - `pullmanager/fs_pullrecords.go`: records are `<root-dir>/image_manager/pulled/sha256-…`
//!   (`ImagePulledRecord`, keyed by the CRI's image ref, `credentialMapping` keyed by the
//!   normalised name without tag or digest, `parsers.ParseImageName`).
//!
//! pullprobe reads the records by image *name*: the kubelet keys them by the CRI's image
//! ref, which only the runtime knows, so tags of one name that were pulled differently
//! count as "some records": the answer is then the conservative one (re-verified).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::{Setting, SettingSource};
use crate::hostroot::HostRoot;
use crate::problem::{ConfigProblem, ProblemKind};
use crate::reference::ImageRef;

/// Where the kubelet keeps its pull records, relative to its `--root-dir`.
pub const PULL_RECORDS_DIR: &str = "image_manager/pulled";

/// The feature gate's name.
pub const GATE: &str = "KubeletEnsureSecretPulledImages";
/// Most pull records read (a node keeps one per image it pulled; image GC removes them).
pub const MAX_RECORDS: usize = 4096;
/// Largest pull record read (one holds a name's secrets and service accounts: KiBs).
pub const MAX_RECORD_BYTES: u64 = 256 * 1024;
/// Most record bytes read in all.
pub const MAX_RECORDS_TOTAL_BYTES: u64 = 32 * 1024 * 1024;

/// `imagePullCredentialsVerificationPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum VerificationPolicy {
    NeverVerify,
    NeverVerifyPreloadedImages,
    NeverVerifyAllowlistedImages,
    AlwaysVerify,
}

impl VerificationPolicy {
    pub fn parse(s: &str) -> Option<VerificationPolicy> {
        Some(match s {
            "NeverVerify" => VerificationPolicy::NeverVerify,
            "NeverVerifyPreloadedImages" => VerificationPolicy::NeverVerifyPreloadedImages,
            "NeverVerifyAllowlistedImages" => VerificationPolicy::NeverVerifyAllowlistedImages,
            "AlwaysVerify" => VerificationPolicy::AlwaysVerify,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            VerificationPolicy::NeverVerify => "NeverVerify",
            VerificationPolicy::NeverVerifyPreloadedImages => "NeverVerifyPreloadedImages",
            VerificationPolicy::NeverVerifyAllowlistedImages => "NeverVerifyAllowlistedImages",
            VerificationPolicy::AlwaysVerify => "AlwaysVerify",
        }
    }
}

/// The `KubeletEnsureSecretPulledImages` gate as configured (`--feature-gates` over the
/// KubeletConfiguration's `featureGates`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Gate {
    On {
        source: SettingSource,
    },
    Off {
        source: SettingSource,
    },
    /// Not set: on by default from kubelet 1.35 (beta), off in 1.33–1.34 (alpha).
    Default,
}

/// A valid `preloadedImagesVerificationAllowlist` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Pattern {
    /// A normalised image name (`docker.io/library/alpine`).
    Name(String),
    /// `registry.host/org/*` → `registry.host/org/`.
    Prefix(String),
}

/// `getAllowlistImagePattern`: no surrounding spaces, `*` only as a trailing `/*`, a name
/// without tag or digest, at least a host before `/*`.
fn parse_pattern(p: &str) -> Result<Pattern, &'static str> {
    if p != p.trim() {
        return Err("leading/trailing spaces are not allowed");
    }
    if let Some(prefix) = p.strip_suffix("/*") {
        if prefix.contains('*') {
            return Err("only a trailing full path segment wildcard '/*' is allowed");
        }
        if prefix.is_empty() {
            return Err("at least a registry hostname is required before '/*'");
        }
        return Ok(Pattern::Prefix(format!("{prefix}/")));
    }
    if p.contains('*') {
        return Err("only a trailing full path segment wildcard '/*' is allowed");
    }
    let name = ImageRef::parse(p).map_err(|_| "not an image name")?;
    if p.contains('@') || name.repository() != normalised_with_tag_stripped(p) {
        return Err("neither tag nor digest is accepted in an image name");
    }
    Ok(Pattern::Name(name.repository()))
}

/// The normalised name of `p` when it has no tag (`alpine` → `docker.io/library/alpine`),
/// else something that cannot equal a repository (so a tag is refused).
fn normalised_with_tag_stripped(p: &str) -> String {
    let last = p.rsplit('/').next().unwrap_or(p);
    if last.contains(':') {
        return String::new();
    }
    ImageRef::parse(p)
        .map(|r| r.repository())
        .unwrap_or_default()
}

/// What the kubelet's pull records say about one image name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Recorded {
    /// Every record: pulled anonymously or with node-wide credentials.
    NodeWide,
    /// Only pods presenting a recorded secret or service account may use it.
    PodCredentials,
    /// Records disagree (tags of the name pulled differently).
    Mixed,
}

/// The kubelet's pull records, by normalised image name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PullRecords {
    /// Node path of the records directory.
    pub dir: PathBuf,
    /// Records read.
    pub read: usize,
    /// Records that could not be used (unreadable, too large, not a record) or were over
    /// [`MAX_RECORDS`] / [`MAX_RECORDS_TOTAL_BYTES`]: images in them are treated as
    /// unknown, as the kubelet fails safe on a record it cannot decode.
    pub skipped: usize,
    #[serde(skip)]
    by_name: BTreeMap<String, Recorded>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RecordFile {
    kind: String,
    #[serde(default)]
    credential_mapping: BTreeMap<String, RecordCreds>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RecordCreds {
    #[serde(default)]
    node_pods_accessible: bool,
}

impl PullRecords {
    /// Read `<root_dir>/image_manager/pulled` (bounded; a missing directory is no records:
    /// the kubelet has not pulled with the feature on).
    pub fn load(hr: &HostRoot, root_dir: &Path) -> PullRecords {
        let dir = root_dir.join(PULL_RECORDS_DIR);
        let mut out = PullRecords {
            dir: dir.clone(),
            ..Default::default()
        };
        let Ok(entries) = hr.read_dir(&dir) else {
            return out;
        };
        let mut budget = MAX_RECORDS_TOTAL_BYTES;
        for e in entries
            .iter()
            .filter(|e| !e.is_dir && e.name.starts_with("sha256-") && !e.name.ends_with(".tmp"))
        {
            if out.read >= MAX_RECORDS {
                out.skipped += 1;
                continue;
            }
            match read_record(hr, &dir.join(&e.name), &mut budget) {
                Some(r) => {
                    out.read += 1;
                    out.add(r);
                }
                None => out.skipped += 1,
            }
        }
        out
    }

    fn add(&mut self, r: RecordFile) {
        for (name, creds) in r.credential_mapping {
            let this = if creds.node_pods_accessible {
                Recorded::NodeWide
            } else {
                Recorded::PodCredentials
            };
            self.by_name
                .entry(name)
                .and_modify(|e| {
                    if *e != this {
                        *e = Recorded::Mixed
                    }
                })
                .or_insert(this);
        }
    }

    fn of(&self, image: &ImageRef) -> Option<Recorded> {
        self.by_name.get(&image.repository()).copied()
    }
}

fn read_record(hr: &HostRoot, path: &Path, budget: &mut u64) -> Option<RecordFile> {
    let real = hr.resolve(path).ok()?;
    let len = std::fs::metadata(&real).ok()?.len();
    if len > MAX_RECORD_BYTES || len > *budget {
        return None;
    }
    let bytes = hr.read(path).ok()?;
    *budget = budget.saturating_sub(bytes.len() as u64);
    let r: RecordFile = serde_json::from_slice(&bytes).ok()?;
    (r.kind == "ImagePulledRecord").then_some(r)
}

/// The kubelet's settings for cached images, as found on the node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CachedImagePolicy {
    pub gate: Gate,
    pub policy: Setting<VerificationPolicy>,
    /// `preloadedImagesVerificationAllowlist` entries the kubelet accepts, as written.
    pub allowlist: Vec<String>,
    #[serde(skip)]
    patterns: Vec<Pattern>,
    /// Shared: the agent clones the settings into every cycle's outcome.
    #[serde(serialize_with = "ser_records")]
    pub records: Arc<PullRecords>,
}

fn ser_records<S: serde::Serializer>(r: &Arc<PullRecords>, s: S) -> Result<S::Ok, S::Error> {
    r.as_ref().serialize(s)
}

impl Default for CachedImagePolicy {
    fn default() -> Self {
        CachedImagePolicy {
            gate: Gate::Default,
            policy: Setting {
                value: VerificationPolicy::NeverVerifyPreloadedImages,
                source: SettingSource::Default,
            },
            allowlist: Vec::new(),
            patterns: Vec::new(),
            records: Arc::new(PullRecords::default()),
        }
    }
}

/// What the kubelet does with a cached copy of an image for a pod whose credentials it has
/// not recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CachedImage {
    /// `true`: such a pod pulls again (`IfNotPresent`) or fails with `ErrImageNeverPull`
    /// (`Never`), so a registry outage fails it although the image is on the node.
    pub reverified: bool,
    pub why: String,
    /// Set when the answer assumes the gate's default (the kubelet's version decides).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assumes: Option<String>,
}

impl std::fmt::Display for CachedImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = if self.reverified {
            "re-verified for a pod whose credentials were not recorded (it pulls again, or fails with ErrImageNeverPull under Never: a registry outage fails it)"
        } else {
            "used by any pod without asking the registry"
        };
        write!(f, "{what}: {}", self.why)?;
        if let Some(a) = &self.assumes {
            write!(f, " (assumes {a})")?;
        }
        Ok(())
    }
}

impl std::fmt::Display for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Gate::On { source } => write!(f, "on ({source})"),
            Gate::Off { source } => write!(f, "off ({source})"),
            Gate::Default => f.write_str("not set: on from kubelet 1.35, off in 1.33–1.34"),
        }
    }
}

/// `plan`'s lines for the node (indented two spaces, as the kubelet section).
impl std::fmt::Display for CachedImagePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "  cached images (KEP-2535):")?;
        writeln!(f, "    {GATE}: {}", self.gate)?;
        writeln!(
            f,
            "    imagePullCredentialsVerificationPolicy: {} ({})",
            self.policy.value.as_str(),
            self.policy.source
        )?;
        if !self.allowlist.is_empty() {
            writeln!(
                f,
                "    preloadedImagesVerificationAllowlist: {}",
                self.allowlist.join(", ")
            )?;
        }
        let r = &self.records;
        write!(
            f,
            "    pull records: {} read in {}",
            r.read,
            r.dir.display()
        )?;
        if r.skipped > 0 {
            write!(f, ", {} not usable (treated as unknown)", r.skipped)?;
        }
        writeln!(f)
    }
}

impl CachedImagePolicy {
    /// The settings read from the kubelet's config (each with the file that set it);
    /// invalid values become problems on that file and the kubelet's defaults stand in (a
    /// kubelet would refuse to start).
    pub fn from_config(
        gate: Gate,
        policy: Option<(String, SettingSource)>,
        allowlist: Option<(Vec<String>, PathBuf)>,
        problems: &mut Vec<ConfigProblem>,
    ) -> CachedImagePolicy {
        let mut out = CachedImagePolicy {
            gate,
            ..Default::default()
        };
        if let Some((p, source)) = policy {
            match VerificationPolicy::parse(&p) {
                Some(value) => out.policy = Setting { value, source },
                None => problems.push(ConfigProblem::new(
                    match &source {
                        SettingSource::KubeletConfig { file, .. } => file,
                        _ => Path::new(""),
                    },
                    Some("imagePullCredentialsVerificationPolicy"),
                    ProblemKind::Invalid,
                    "unknown policy: must be NeverVerify, NeverVerifyPreloadedImages, NeverVerifyAllowlistedImages or AlwaysVerify",
                )),
            }
        }
        let (allowlist, file) = allowlist.unwrap_or_default();
        for (i, a) in allowlist.into_iter().enumerate() {
            match parse_pattern(&a) {
                Ok(p) => {
                    out.patterns.push(p);
                    out.allowlist.push(a);
                }
                Err(why) => problems.push(ConfigProblem::new(
                    &file,
                    Some(&format!("preloadedImagesVerificationAllowlist[{i}]")),
                    ProblemKind::Invalid,
                    why,
                )),
            }
        }
        out
    }

    /// Read the kubelet's pull records under its `root_dir`.
    pub fn load_records(&mut self, hr: &HostRoot, root_dir: &Path) {
        self.records = Arc::new(PullRecords::load(hr, root_dir));
    }

    fn allowlisted(&self, image: &ImageRef) -> Option<&str> {
        let name = image.repository();
        self.patterns
            .iter()
            .zip(&self.allowlist)
            .find(|(p, _)| match p {
                Pattern::Name(n) => *n == name,
                Pattern::Prefix(pre) => name.starts_with(pre.as_str()),
            })
            .map(|(_, a)| a.as_str())
    }

    /// What the kubelet does with a cached copy of `image` for a pod whose credentials it
    /// has not recorded (`MustAttemptImagePull`).
    pub fn cached_image(&self, image: &ImageRef) -> CachedImage {
        let assumes = matches!(self.gate, Gate::Default)
            .then(|| format!("{GATE} at its default: on from kubelet 1.35, off in 1.33–1.34"));
        let done = |reverified: bool, why: String| CachedImage {
            reverified,
            why,
            assumes: assumes.clone(),
        };
        if let Gate::Off { source } = &self.gate {
            return CachedImage {
                reverified: false,
                why: format!("{GATE} is off ({source})"),
                assumes: None,
            };
        }
        let policy = self.policy.value;
        let recorded = self.records.of(image);
        let must_verify = match policy {
            VerificationPolicy::NeverVerify => false,
            VerificationPolicy::NeverVerifyPreloadedImages => recorded.is_some(),
            VerificationPolicy::NeverVerifyAllowlistedImages => {
                if let Some(a) = self.allowlisted(image) {
                    return done(
                        false,
                        format!(
                            "policy {} and it matches the allowlist entry {a:?}",
                            policy.as_str()
                        ),
                    );
                }
                true
            }
            VerificationPolicy::AlwaysVerify => true,
        };
        if !must_verify {
            let why = match policy {
                VerificationPolicy::NeverVerify => "policy NeverVerify".to_string(),
                _ => format!(
                    "policy {} and the kubelet has no pull record of it ({}): preloaded, or not on the node",
                    policy.as_str(),
                    self.records.dir.display()
                ),
            };
            return done(false, why);
        }
        let why = match recorded {
            Some(Recorded::NodeWide) => {
                return done(false, format!("policy {} and the kubelet pulled it anonymously or with node-wide credentials (its pull records in {})", policy.as_str(), self.records.dir.display()))
            }
            Some(Recorded::PodCredentials) => format!("policy {} and the kubelet pulled it with pull secrets or a service account only (its pull records in {})", policy.as_str(), self.records.dir.display()),
            Some(Recorded::Mixed) => format!("policy {} and only some of its pull records in {} are node-wide (tags pulled differently)", policy.as_str(), self.records.dir.display()),
            None => format!("policy {} verifies even an image the kubelet did not pull", policy.as_str()),
        };
        done(true, why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_patterns_as_the_kubelet_validates_them() {
        for (p, ok) in [
            ("registry.host/org/image-name", true),
            ("registry.host/public-org/*", true),
            ("registry.host/*", true),
            ("alpine", true),
            ("registry.host/org/image-name:tag", false),
            ("registry.host/org/image@sha256:0000000000000000000000000000000000000000000000000000000000000000", false),
            (" registry.host/x", false),
            ("registry.host/o*/x", false),
            ("registry.host/org*", false),
            ("/*", false),
        ] {
            assert_eq!(parse_pattern(p).is_ok(), ok, "{p}");
        }
        assert_eq!(
            parse_pattern("alpine").unwrap(),
            Pattern::Name("docker.io/library/alpine".into())
        );
    }
}
