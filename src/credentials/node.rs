//! The kubelet's own credential sources besides plugins: Pod pull secrets (given as
//! data) and the node's docker config, and the final kubelet order.
//!
//! Upstream: kubernetes pkg/credentialprovider/secrets/secrets.go (`MakeDockerKeyring`:
//! only `kubernetes.io/dockerconfigjson` / `kubernetes.io/dockercfg` count, all merged
//! into one keyring, bad JSON fails the pull), pkg/credentialprovider/config.go
//! (`DefaultDockerConfigJSONPaths`, `DefaultDockercfgPaths`, `ReadDockerConfigFile`:
//! config.json first, then .dockercfg, the first valid file wins), and
//! pkg/kubelet/kuberuntime/kuberuntime_image.go (secrets, then node config, then plugins).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::docker_config::DockerConfig;
use super::keyring::normalize_key;
use super::{CredentialSource, SourcedCredential};
use crate::hostroot::HostRoot;
use crate::problem::{ConfigProblem, ProblemKind};
use crate::reference::ImageRef;

pub const SECRET_TYPE_DOCKERCONFIGJSON: &str = "kubernetes.io/dockerconfigjson";
pub const SECRET_TYPE_DOCKERCFG: &str = "kubernetes.io/dockercfg";
/// `index.docker.io`, the key of the kubelet's Docker Hub fallback.
const HUB_FALLBACK_KEY: &str = "index.docker.io";

/// One `imagePullSecrets` entry as fetched from the API: type and data bytes.
#[derive(Clone, Default)]
pub struct PullSecretData {
    pub namespace: String,
    pub name: String,
    /// `type` of the Secret.
    pub secret_type: String,
    /// `data`, already base64-decoded.
    pub data: BTreeMap<String, Vec<u8>>,
}

impl std::fmt::Debug for PullSecretData {
    // Data holds credentials: print only the keys.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullSecretData")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("secret_type", &self.secret_type)
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A pull secret the kubelet would fail on (never includes data).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("pull secret {namespace}/{name}: {message}")]
pub struct PullSecretError {
    pub namespace: String,
    pub name: String,
    pub message: String,
}

/// Credentials from pull secrets for `image`, in the order of the merged keyring
/// (matching keys reverse-lexicographic across all secrets, secret order within a key;
/// the Docker Hub `index.docker.io` fallback only when no secret matched otherwise).
pub fn pull_secret_credentials(
    secrets: &[PullSecretData],
    image: &ImageRef,
) -> (Vec<SourcedCredential>, Vec<PullSecretError>) {
    let mut errors = Vec::new();
    let mut matched: Vec<(String, SourcedCredential)> = Vec::new();
    for s in secrets {
        let key = match s.secret_type.as_str() {
            SECRET_TYPE_DOCKERCONFIGJSON => ".dockerconfigjson",
            SECRET_TYPE_DOCKERCFG => ".dockercfg",
            _ => continue, // other types are not considered
        };
        let Some(bytes) = s.data.get(key) else {
            continue;
        };
        let pseudo = PathBuf::from(format!("secret:{}/{}#{key}", s.namespace, s.name));
        let cfg = match DockerConfig::parse(&pseudo, bytes) {
            Ok(c) => c,
            Err(e) => {
                errors.push(PullSecretError {
                    namespace: s.namespace.clone(),
                    name: s.name.clone(),
                    message: e.to_string(),
                });
                continue;
            }
        };
        for c in cfg.lookup_kubelet(image) {
            let auth_key = match &c.source {
                CredentialSource::AuthFile { key, .. } => key.clone(),
                other => other.to_string(),
            };
            matched.push((
                normalize_key(&auth_key).unwrap_or_else(|| auth_key.clone()),
                SourcedCredential {
                    source: CredentialSource::PullSecret {
                        namespace: s.namespace.clone(),
                        name: s.name.clone(),
                        key: auth_key,
                    },
                    credential: c.credential,
                },
            ));
        }
    }
    // A per-secret lookup falls back to index.docker.io on its own; in one merged
    // keyring that happens only when nothing else matched.
    if matched.iter().any(|(k, _)| k != HUB_FALLBACK_KEY) {
        matched.retain(|(k, _)| k != HUB_FALLBACK_KEY);
    }
    matched.sort_by(|a, b| b.0.cmp(&a.0)); // stable: secret order within one key
    (matched.into_iter().map(|(_, c)| c).collect(), errors)
}

/// Node paths the kubelet searches: config.json in root-dir, cwd (`/` for the
/// kubelet service), `$HOME/.docker` (`/root`), `/.docker`; then `.dockercfg` in
/// root-dir, cwd, `$HOME`, `/`.
pub fn node_config_search_paths(kubelet_root_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in [
        kubelet_root_dir,
        Path::new("/"),
        Path::new("/root/.docker"),
        Path::new("/.docker"),
    ] {
        let p = d.join("config.json");
        if !out.contains(&p) {
            out.push(p);
        }
    }
    for d in [
        kubelet_root_dir,
        Path::new("/"),
        Path::new("/root"),
        Path::new("/"),
    ] {
        let p = d.join(".dockercfg");
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// The first valid node docker config under the host root, and problems with the
/// invalid ones skipped on the way.
pub fn load_node_docker_config(
    hr: &HostRoot,
    kubelet_root_dir: &Path,
) -> (Option<DockerConfig>, Vec<ConfigProblem>) {
    let mut problems = Vec::new();
    for p in node_config_search_paths(kubelet_root_dir) {
        match hr.read(&p) {
            Ok(bytes) => match DockerConfig::parse(&p, &bytes) {
                Ok(c) => return (Some(c), problems),
                Err(e) => problems.push(ConfigProblem::new(
                    &p,
                    None,
                    ProblemKind::Invalid,
                    e.to_string(),
                )),
            },
            Err(e) if e.is_not_found() => {}
            Err(e) => problems.push(ConfigProblem::new(
                &p,
                None,
                ProblemKind::Unreadable,
                e.to_string(),
            )),
        }
    }
    (None, problems)
}

/// The kubelet's attempt order: pull secrets, then the node config, then plugins.
pub fn kubelet_order(
    secrets: Vec<SourcedCredential>,
    node: Vec<SourcedCredential>,
    plugins: Vec<SourcedCredential>,
) -> Vec<SourcedCredential> {
    let mut out = secrets;
    out.extend(node);
    out.extend(plugins);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn secret(name: &str, ty: &str, key: &str, json: String) -> PullSecretData {
        let mut data = BTreeMap::new();
        data.insert(key.to_string(), json.into_bytes());
        PullSecretData {
            namespace: "ns".into(),
            name: name.into(),
            secret_type: ty.into(),
            data,
        }
    }

    #[test]
    fn secrets_merge_in_keyring_order_and_bad_json_is_an_error() {
        let a = secret(
            "a",
            SECRET_TYPE_DOCKERCONFIGJSON,
            ".dockerconfigjson",
            format!(r#"{{"auths":{{"reg.io":{{"auth":"{}"}}}}}}"#, b64("a:1")),
        );
        let b = secret(
            "b",
            SECRET_TYPE_DOCKERCFG,
            ".dockercfg",
            format!(r#"{{"reg.io/team":{{"auth":"{}"}}}}"#, b64("b:2")),
        );
        let other = secret("c", "Opaque", ".dockerconfigjson", "{}".into());
        let bad = secret(
            "d",
            SECRET_TYPE_DOCKERCONFIGJSON,
            ".dockerconfigjson",
            "{not json".into(),
        );
        let img = ImageRef::parse("reg.io/team/app").unwrap();
        let (creds, errs) = pull_secret_credentials(&[a, b, other, bad], &img);
        let users: Vec<_> = creds
            .iter()
            .map(|c| c.credential.username().unwrap())
            .collect();
        assert_eq!(users, ["b", "a"]);
        assert_eq!(
            creds[0].source,
            CredentialSource::PullSecret {
                namespace: "ns".into(),
                name: "b".into(),
                key: "reg.io/team".into()
            }
        );
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].name, "d");
    }

    #[test]
    fn hub_fallback_only_when_nothing_else_matched() {
        let hub = secret(
            "hub",
            SECRET_TYPE_DOCKERCONFIGJSON,
            ".dockerconfigjson",
            format!(
                r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{}"}}}}}}"#,
                b64("h:1")
            ),
        );
        let exact = secret(
            "exact",
            SECRET_TYPE_DOCKERCONFIGJSON,
            ".dockerconfigjson",
            format!(r#"{{"auths":{{"docker.io":{{"auth":"{}"}}}}}}"#, b64("d:1")),
        );
        let img = ImageRef::parse("nginx").unwrap();
        let (c, _) = pull_secret_credentials(std::slice::from_ref(&hub), &img);
        assert_eq!(c[0].credential.username(), Some("h"));
        let (c, _) = pull_secret_credentials(&[hub, exact], &img);
        let users: Vec<_> = c.iter().map(|c| c.credential.username().unwrap()).collect();
        assert_eq!(users, ["d"]);
    }

    #[test]
    fn node_config_search_first_valid_wins() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("var/lib/kubelet")).unwrap();
        std::fs::write(d.path().join("var/lib/kubelet/config.json"), "{broken").unwrap();
        std::fs::write(
            d.path().join(".dockercfg"),
            format!(r#"{{"reg.io":{{"auth":"{}"}}}}"#, b64("u:p")),
        )
        .unwrap();
        let hr = HostRoot::new(d.path()).unwrap();
        let (cfg, problems) = load_node_docker_config(&hr, Path::new("/var/lib/kubelet"));
        assert_eq!(cfg.unwrap().path, Path::new("/.dockercfg"));
        assert_eq!(problems[0].file, Path::new("/var/lib/kubelet/config.json"));
        assert_eq!(
            node_config_search_paths(Path::new("/var/lib/kubelet"))[0],
            Path::new("/var/lib/kubelet/config.json")
        );
    }
}
