//! Registry credentials and where they came from, the way the kubelet assembles them.
//!
//! The engine never needs to know *how* a credential was found, only what to send and
//! a printable name of its source (for reports; never the value).

pub mod docker_config;
pub mod keyring;
pub mod node;
pub mod provider;
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
}

/// Where a credential came from. Printed in reports so operators know which source
/// the runtime would use; never includes the secret.
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
                write!(f, "auth-file:{}#{}", path.display(), key)
            }
            CredentialSource::PullSecret {
                namespace,
                name,
                key,
            } => write!(f, "pull-secret:{namespace}/{name}#{key}"),
            CredentialSource::Plugin { name, key } => write!(f, "plugin:{name}#{key}"),
            CredentialSource::RuntimeConfig { path, host } => {
                write!(f, "runtime-config:{}#{}", path.display(), host)
            }
        }
    }
}

/// A credential together with its source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourcedCredential {
    pub source: CredentialSource,
    pub credential: Credential,
}
