//! Registry credentials and where they came from, the way the kubelet assembles them.
//!
//! The engine never needs to know *how* a credential was found, only what to send and
//! a printable name of its source (for reports; never the value).

pub mod docker_config;
pub mod glob;
pub mod keyring;
pub mod node;
pub mod provider;
pub mod satoken;
pub mod secret;

use std::fmt;
use std::path::PathBuf;

pub use secret::Secret;

/// What a runtime sends to a registry, in containerd's precedence order
/// (username/password, then identity token as an OAuth2 refresh token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    /// Username and password (or a `auth` field decoded from base64 `user:pass`).
    Basic { username: String, password: Secret },
    /// An identity token: containerd sends it as an OAuth2 `refresh_token` grant.
    IdentityToken(Secret),
    /// A bearer token sent as-is (Docker `registrytoken`).
    RegistryToken(Secret),
}

impl Credential {
    /// The user name, when there is one: safe to print.
    pub fn username(&self) -> Option<&str> {
        match self {
            Credential::Basic { username, .. } => Some(username),
            _ => None,
        }
    }

    /// 16 hex digits of a SHA-256 over the credential: tells credentials apart in memory
    /// (token-cache identities) where their sources' names may print alike. Never shown.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        match self {
            Credential::Basic { username, password } => {
                h.update(b"basic\0");
                h.update(username.as_bytes());
                h.update(b"\0");
                h.update(password.expose().as_bytes());
            }
            Credential::IdentityToken(t) => {
                h.update(b"identity\0");
                h.update(t.expose().as_bytes());
            }
            Credential::RegistryToken(t) => {
                h.update(b"registry\0");
                h.update(t.expose().as_bytes());
            }
        }
        hex::encode(&h.finalize()[..8])
    }
}

/// Where a credential came from. Printed in reports so operators know which source
/// the runtime would use; never includes the secret, nor a key's userinfo (the keys are
/// shown through [`crate::redact::credential_key`] when a source is made and again here).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CredentialSource {
    /// `--username` + `--password-stdin` on the command line.
    CommandLine,
    /// A Docker-style `config.json` (or `.dockercfg`) file, and the `auths` key that matched.
    AuthFile { path: PathBuf, key: String },
    /// A Pod's `imagePullSecrets` entry.
    PullSecret {
        namespace: String,
        name: String,
        key: String,
    },
    /// A kubelet credential-provider plugin.
    Plugin { name: String, key: String },
    /// containerd's deprecated `registry.configs."<host>".auth`.
    RuntimeConfig { path: PathBuf, host: String },
}

impl fmt::Display for CredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialSource::CommandLine => f.write_str("command-line"),
            CredentialSource::AuthFile { path, key } => {
                write!(f, "auth-file:{}#{}", path.display(), shown(key))
            }
            CredentialSource::PullSecret {
                namespace,
                name,
                key,
            } => write!(f, "pull-secret:{namespace}/{name}#{}", shown(key)),
            CredentialSource::Plugin { name, key } => write!(f, "plugin:{name}#{}", shown(key)),
            CredentialSource::RuntimeConfig { path, host } => {
                write!(f, "runtime-config:{}#{}", path.display(), shown(host))
            }
        }
    }
}

fn shown(key: &str) -> String {
    crate::redact::credential_key(key)
}

/// A credential together with its source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourcedCredential {
    pub source: CredentialSource,
    pub credential: Credential,
}

/// containerd's `ParseAuth` (internal/cri/server/images/image_pull.go): username and
/// password, then the identity token, then `auth` (base64 `user:pass`). `Ok(None)` =
/// nothing set. Errors name the field, never its value.
pub fn containerd_parse_auth(
    username: &str,
    password: &Secret,
    identity_token: &Secret,
    auth: &Secret,
) -> Result<Option<Credential>, String> {
    use base64::Engine as _;
    if !username.is_empty() {
        return Ok(Some(Credential::Basic {
            username: username.to_string(),
            password: password.clone(),
        }));
    }
    if !identity_token.is_empty() {
        return Ok(Some(Credential::IdentityToken(identity_token.clone())));
    }
    if auth.is_empty() {
        return Ok(None);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.expose().trim())
        .map_err(|_| "auth is not valid base64".to_string())?;
    let decoded = String::from_utf8(decoded).map_err(|_| "auth is not UTF-8".to_string())?;
    let (u, p) = decoded
        .split_once(':')
        .ok_or_else(|| "auth does not decode to user:password".to_string())?;
    Ok(Some(Credential::Basic {
        username: u.to_string(),
        password: Secret::new(p),
    }))
}
