//! Docker `config.json` and legacy `.dockercfg` files: the node's kubelet config
//! (`/var/lib/kubelet/config.json`), pull-secret payloads, and `--auth-file`.
//!
//! Parsing follows kubernetes pkg/credentialprovider/config.go (`DockerConfigEntry`
//! `UnmarshalJSON`, `decodeDockerConfigFieldAuth`): `auth` is base64 `user:pass`, padded
//! or unpadded, and overrides `username`/`password`. JSON field names match
//! case-insensitively, as Go's `encoding/json` does. `credHelpers`/`credsStore` are not
//! run (the kubelet ignores them too); their presence is recorded so the CLI can warn.
//!
//! Errors name the file and the field (`auths."reg.io".auth: not base64`) and never a
//! value: syntax errors carry only serde_json's position message.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use super::keyring::Keyring;
use super::{Credential, CredentialSource, Secret, SourcedCredential};
use crate::hostroot::MAX_FILE_BYTES;
use crate::reference::ImageRef;

/// Top-level `config.json` keys that are settings, not registries: their presence
/// tells a `config.json` without `auths` from a legacy `.dockercfg`.
const CONFIG_JSON_KEYS: &[&str] = &[
    "auths",
    "credsstore",
    "credhelpers",
    "httpheaders",
    "psformat",
    "imagesformat",
    "detachkeys",
    "proxies",
    "experimental",
    "currentcontext",
    "plugins",
    "aliases",
    "features",
];

/// Why a docker config file could not be used. Never includes a secret value.
#[derive(Debug, thiserror::Error)]
pub enum DockerConfigError {
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not JSON: position and kind only (serde_json's own message may quote a value).
    #[error("{}: {error}", path.display())]
    Json {
        path: PathBuf,
        error: crate::redact::ParseError,
    },
    #[error("{}: is larger than {MAX_FILE_BYTES} bytes", path.display())]
    TooLarge { path: PathBuf },
    #[error("{}: {field}: expected {expected}", path.display())]
    WrongType {
        path: PathBuf,
        field: String,
        expected: &'static str,
    },
    #[error("{}: {field}: not base64", path.display())]
    AuthNotBase64 { path: PathBuf, field: String },
    #[error("{}: {field}: decoded value is not valid UTF-8", path.display())]
    AuthNotUtf8 { path: PathBuf, field: String },
    #[error("{}: {field}: decoded value has no ':' between user name and password", path.display())]
    AuthNoColon { path: PathBuf, field: String },
}

/// Which layout a file had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DockerConfigFormat {
    /// `{"auths": {...}, ...}`
    ConfigJson,
    /// Legacy `.dockercfg`: `{"<registry>": {...}, ...}`
    Dockercfg,
}

/// One parsed file.
#[derive(Clone, Debug)]
pub struct DockerConfig {
    pub path: PathBuf,
    /// Registry keys as written, in file order, each with the credential the docker
    /// CLI would use: `registrytoken`, else `identitytoken`, else `auth` or
    /// `username`/`password`. An entry with none of these is an empty
    /// [`Credential::Basic`], which runtimes treat as anonymous (containerd `ParseAuth`).
    pub entries: Vec<(String, Credential)>,
    /// `credHelpers` or `credsStore` is set: credentials may live in a helper that
    /// neither the kubelet nor pullprobe runs.
    pub has_cred_helpers: bool,
    pub format: DockerConfigFormat,
    /// The kubelet's view of each entry: tokens ignored, so only `auth` or
    /// `username`/`password` (possibly empty).
    kubelet_entries: Vec<(String, Credential)>,
}

impl DockerConfig {
    /// Parses `bytes` read from `path` (used only for messages and sources).
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<DockerConfig, DockerConfigError> {
        let top = parse_object(path, bytes)?;
        let is_config_json = top
            .0
            .iter()
            .any(|(k, _)| CONFIG_JSON_KEYS.contains(&k.to_ascii_lowercase().as_str()));
        let (format, auths, prefix, has_cred_helpers) = if is_config_json {
            let (auths, helpers) = config_json_auths(path, top)?;
            (DockerConfigFormat::ConfigJson, auths, "auths.", helpers)
        } else {
            (DockerConfigFormat::Dockercfg, top.0, "", false)
        };
        let mut entries = Vec::new();
        let mut kubelet_entries = Vec::new();
        for (key, value) in last_of_duplicates(auths) {
            let field = format!("{prefix}{}", Quoted(&key));
            let e = RawEntry::from_value(path, &field, value)?;
            let basic = Credential::Basic {
                username: e.username.clone(),
                password: Secret::new(e.password.clone()),
            };
            let docker = if !e.registry_token.is_empty() {
                Credential::RegistryToken(Secret::new(e.registry_token))
            } else if !e.identity_token.is_empty() {
                Credential::IdentityToken(Secret::new(e.identity_token))
            } else {
                basic.clone()
            };
            entries.push((key.clone(), docker));
            kubelet_entries.push((key, basic));
        }
        Ok(DockerConfig {
            path: path.to_path_buf(),
            entries,
            has_cred_helpers,
            format,
            kubelet_entries,
        })
    }

    /// Reads (at most [`MAX_FILE_BYTES`]) and parses `path`.
    pub fn load(path: &Path) -> Result<DockerConfig, DockerConfigError> {
        use std::io::Read as _;
        let io = |source| DockerConfigError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
            .map_err(io)?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(DockerConfigError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        DockerConfig::parse(path, &bytes)
    }

    /// docker CLI / containerd `ctr`-style lookup: one entry whose key's host (scheme
    /// and path stripped, docker `ConvertToHostname`) equals the image's domain. For
    /// Docker Hub the hosts `docker.io` and `index.docker.io` (so also
    /// `https://index.docker.io/v1/`) count. A key spelled exactly as the docker CLI
    /// writes it (`https://index.docker.io/v1/`, or the bare domain) wins; otherwise
    /// the first in file order.
    pub fn lookup_exact(&self, image: &ImageRef) -> Option<SourcedCredential> {
        let canonical = if image.is_docker_hub() {
            "https://index.docker.io/v1/".to_string()
        } else {
            image.domain.clone()
        };
        let host_matches = |key: &str| {
            let host = convert_to_hostname(key);
            if image.is_docker_hub() {
                host == "docker.io" || host == "index.docker.io"
            } else {
                host == image.domain
            }
        };
        self.entries
            .iter()
            .find(|(k, _)| *k == canonical)
            .or_else(|| self.entries.iter().find(|(k, _)| host_matches(k)))
            .map(|(k, c)| self.sourced(k, c))
    }

    /// kubelet lookup (`BasicDockerKeyring`, see [`super::keyring`]): every matching
    /// entry, most specific key first. Identity and registry tokens are ignored, as the
    /// kubelet's `DockerConfigEntry` has no such fields; an entry holding only a token
    /// therefore still matches, with an empty (anonymous) [`Credential::Basic`].
    pub fn lookup_kubelet(&self, image: &ImageRef) -> Vec<SourcedCredential> {
        let mut keyring = Keyring::new();
        for (k, c) in &self.kubelet_entries {
            keyring.add(k, self.sourced(k, c));
        }
        keyring.lookup(image)
    }

    fn sourced(&self, key: &str, credential: &Credential) -> SourcedCredential {
        SourcedCredential {
            source: CredentialSource::AuthFile {
                path: self.path.clone(),
                // Shown wherever the source is named: never the key's userinfo.
                key: crate::redact::credential_key(key),
            },
            credential: credential.clone(),
        }
    }
}

/// Where the docker CLI looks, in order; the first file that exists is used. The
/// caller puts `--auth-file` in front (it replaces this search). `env` reads an
/// environment variable (injected so tests need not touch the process environment).
///
/// docker/cli `config.Dir()`: `$DOCKER_CONFIG`, else `$HOME/.docker`; then the legacy
/// `$HOME/.dockercfg` that `config.Load` falls back to.
pub fn cli_search_paths(env: &dyn Fn(&str) -> Option<String>) -> Vec<PathBuf> {
    let non_empty = |name: &str| env(name).filter(|v| !v.is_empty());
    let home = non_empty("HOME");
    let mut out = Vec::new();
    match (non_empty("DOCKER_CONFIG"), &home) {
        (Some(dir), _) => out.push(PathBuf::from(dir).join("config.json")),
        (None, Some(h)) => out.push(PathBuf::from(h).join(".docker").join("config.json")),
        (None, None) => {}
    }
    if let Some(h) = home {
        out.push(PathBuf::from(h).join(".dockercfg"));
    }
    out
}

/// The file as a JSON object with its keys in file order.
fn parse_object(path: &Path, bytes: &[u8]) -> Result<OrderedObject, DockerConfigError> {
    let json = |e: serde_json::Error| DockerConfigError::Json {
        path: path.to_path_buf(),
        error: crate::redact::ParseError::json(&e),
    };
    match serde_json::from_slice::<Value>(bytes) {
        Err(e) => Err(json(e)),
        // Parse again keeping key order; cannot fail after the first parse.
        Ok(Value::Object(_)) => serde_json::from_slice(bytes).map_err(json),
        Ok(_) => Err(DockerConfigError::WrongType {
            path: path.to_path_buf(),
            field: "(top level)".into(),
            expected: "a JSON object",
        }),
    }
}

/// A `config.json`'s `auths` entries (keys matched case-insensitively, the last
/// `auths` wins) and whether `credsStore` or `credHelpers` is set.
fn config_json_auths(
    path: &Path,
    top: OrderedObject,
) -> Result<(Vec<(String, Value)>, bool), DockerConfigError> {
    let mut auths = Vec::new();
    let mut has_cred_helpers = false;
    for (k, v) in top.0 {
        match k.to_ascii_lowercase().as_str() {
            "auths" => match v {
                Value::Null => {}
                Value::Object(_) => {
                    auths = serde_json::from_value::<OrderedObject>(v)
                        .map(|o| o.0)
                        .unwrap_or_default();
                }
                _ => {
                    return Err(DockerConfigError::WrongType {
                        path: path.to_path_buf(),
                        field: "auths".into(),
                        expected: "an object",
                    })
                }
            },
            "credsstore" => {
                has_cred_helpers |= v.as_str().is_some_and(|s| !s.is_empty());
            }
            "credhelpers" => {
                has_cred_helpers |= v.as_object().is_some_and(|o| !o.is_empty());
            }
            _ => {}
        }
    }
    Ok((auths, has_cred_helpers))
}

/// Go's map keeps the last of duplicate keys (at the place of the first).
fn last_of_duplicates(auths: Vec<(String, Value)>) -> Vec<(String, Value)> {
    let mut deduped: Vec<(String, Value)> = Vec::new();
    for (k, v) in auths {
        match deduped.iter_mut().find(|(dk, _)| *dk == k) {
            Some(slot) => slot.1 = v,
            None => deduped.push((k, v)),
        }
    }
    deduped
}

/// docker/cli `credentials.ConvertToHostname`: strip `http(s)://`, keep up to the
/// first `/`.
fn convert_to_hostname(key: &str) -> &str {
    let s = key
        .strip_prefix("http://")
        .or_else(|| key.strip_prefix("https://"))
        .unwrap_or(key);
    s.split('/').next().unwrap_or(s)
}

/// The fields of one `auths` entry, after `auth` decoding.
struct RawEntry {
    username: String,
    password: String,
    identity_token: String,
    registry_token: String,
}

impl RawEntry {
    fn from_value(path: &Path, field: &str, value: Value) -> Result<RawEntry, DockerConfigError> {
        let obj = match value {
            Value::Object(o) => o,
            // Go unmarshals null into the zero entry.
            Value::Null => serde_json::Map::new(),
            _ => {
                return Err(DockerConfigError::WrongType {
                    path: path.to_path_buf(),
                    field: field.to_string(),
                    expected: "an object",
                })
            }
        };
        let mut e = RawEntry {
            username: String::new(),
            password: String::new(),
            identity_token: String::new(),
            registry_token: String::new(),
        };
        let mut auth = String::new();
        for (k, v) in obj {
            let lower = k.to_ascii_lowercase();
            let slot = match lower.as_str() {
                "username" => &mut e.username,
                "password" => &mut e.password,
                "auth" => &mut auth,
                "identitytoken" => &mut e.identity_token,
                "registrytoken" => &mut e.registry_token,
                _ => continue,
            };
            match v {
                Value::String(s) => *slot = s,
                Value::Null => {}
                _ => {
                    return Err(DockerConfigError::WrongType {
                        path: path.to_path_buf(),
                        field: format!("{field}.{lower}"),
                        expected: "a string",
                    })
                }
            }
        }
        if !auth.is_empty() {
            let f = || format!("{field}.auth");
            let (u, p) = decode_auth(&auth).map_err(|kind| match kind {
                AuthDecode::NotBase64 => DockerConfigError::AuthNotBase64 {
                    path: path.to_path_buf(),
                    field: f(),
                },
                AuthDecode::NotUtf8 => DockerConfigError::AuthNotUtf8 {
                    path: path.to_path_buf(),
                    field: f(),
                },
                AuthDecode::NoColon => DockerConfigError::AuthNoColon {
                    path: path.to_path_buf(),
                    field: f(),
                },
            })?;
            e.username = u;
            e.password = p;
        }
        Ok(e)
    }
}

enum AuthDecode {
    NotBase64,
    NotUtf8,
    NoColon,
}

/// `decodeDockerConfigFieldAuth`: padded when the trimmed value ends in `=`, else
/// unpadded; Go's decoder skips `\r`/`\n` and tolerates non-zero trailing bits.
fn decode_auth(field: &str) -> Result<(String, String), AuthDecode> {
    let cleaned: String = field.chars().filter(|c| *c != '\r' && *c != '\n').collect();
    let padding = if field.trim().ends_with('=') {
        DecodePaddingMode::RequireCanonical
    } else {
        DecodePaddingMode::RequireNone
    };
    let engine = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(padding)
            .with_decode_allow_trailing_bits(true),
    );
    let bytes = engine
        .decode(cleaned.as_bytes())
        .map_err(|_| AuthDecode::NotBase64)?;
    let s = String::from_utf8(bytes).map_err(|_| AuthDecode::NotUtf8)?;
    let (u, p) = s.split_once(':').ok_or(AuthDecode::NoColon)?;
    Ok((u.to_string(), p.to_string()))
}

/// A key shown the way the error path spells it: `"reg.io"` with JSON-style escapes.
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// A JSON object with its keys in file order (serde_json's `Map` sorts them).
struct OrderedObject(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for OrderedObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<OrderedObject, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, Value>()? {
                    out.push((k, v));
                }
                Ok(OrderedObject(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const CANARY: &str = "canary-s3cr3t";

    fn p() -> PathBuf {
        PathBuf::from("/etc/test/config.json")
    }

    fn parse(json: &str) -> Result<DockerConfig, DockerConfigError> {
        DockerConfig::parse(&p(), json.as_bytes())
    }

    fn ok(json: &str) -> DockerConfig {
        parse(json).unwrap_or_else(|e| panic!("{e}"))
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn basic(c: &Credential) -> (&str, &str) {
        match c {
            Credential::Basic { username, password } => (username, password.expose()),
            other => panic!("expected basic, got {other:?}"),
        }
    }

    fn img(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn corpus_plain_auths() {
        // /work/shared/corpus/docker-config-json/kind-docs-plain-auths-config.json
        let c = ok(r#"{
  "auths": {
    "myregistry.example.com": {
      "auth": "dXNlcjpwYXNzd29yZA=="
    }
  }
}"#);
        assert_eq!(c.format, DockerConfigFormat::ConfigJson);
        assert!(!c.has_cred_helpers);
        assert_eq!(c.entries.len(), 1);
        assert_eq!(c.entries[0].0, "myregistry.example.com");
        assert_eq!(basic(&c.entries[0].1), ("user", "password"));
    }

    #[test]
    fn corpus_creds_store() {
        // /work/shared/corpus/docker-config-json/kind-docs-credsStore-config.json
        let c = ok(r#"{
  "auths": {},
  "credsStore": "desktop"
}"#);
        assert!(c.has_cred_helpers);
        assert!(c.entries.is_empty());
        let c = ok(r#"{"credHelpers": {"gcr.io": "gcloud"}}"#);
        assert!(c.has_cred_helpers);
        assert_eq!(c.format, DockerConfigFormat::ConfigJson);
        assert!(!ok(r#"{"credsStore": ""}"#).has_cred_helpers);
    }

    #[test]
    fn auth_padded_unpadded_and_precedence() {
        let padded = b64("u1:p:w"); // password keeps later colons
        let unpadded = b64("u2:pw").trim_end_matches('=').to_string();
        assert_ne!(unpadded, b64("u2:pw"));
        let c = ok(&format!(
            r#"{{"auths": {{
                "a.io": {{"auth": "{padded}"}},
                "b.io": {{"auth": "{unpadded}", "username": "ignored", "password": "ignored"}},
                "c.io": {{"Username": "u3", "Password": "p3", "email": "x@y"}},
                "d.io": {{}},
                "e.io": null
            }}}}"#
        ));
        let got: Vec<(&str, (&str, &str))> = c
            .entries
            .iter()
            .map(|(k, c)| (k.as_str(), basic(c)))
            .collect();
        assert_eq!(
            got,
            [
                ("a.io", ("u1", "p:w")),
                ("b.io", ("u2", "pw")),
                ("c.io", ("u3", "p3")),
                ("d.io", ("", "")),
                ("e.io", ("", "")),
            ]
        );
    }

    #[test]
    fn tokens_docker_view_and_kubelet_view() {
        let c = ok(&format!(
            r#"{{"auths": {{
                "id.io": {{"auth": "{}", "identitytoken": "{CANARY}"}},
                "rt.io": {{"registrytoken": "{CANARY}", "identitytoken": "other"}}
            }}}}"#,
            b64("<token>:")
        ));
        assert!(matches!(&c.entries[0].1, Credential::IdentityToken(s) if s.expose() == CANARY));
        assert!(matches!(&c.entries[1].1, Credential::RegistryToken(s) if s.expose() == CANARY));

        let exact = c.lookup_exact(&img("id.io/x")).map(|s| s.credential);
        assert!(matches!(exact, Some(Credential::IdentityToken(_))));

        // The kubelet sees only auth/username/password.
        let k = c.lookup_kubelet(&img("id.io/x"));
        assert_eq!(k.len(), 1);
        assert_eq!(basic(&k[0].credential), ("<token>", ""));
        let k = c.lookup_kubelet(&img("rt.io/x"));
        assert_eq!(k.len(), 1);
        assert_eq!(basic(&k[0].credential), ("", ""));
        assert_eq!(
            k[0].source,
            CredentialSource::AuthFile {
                path: p(),
                key: "rt.io".into()
            }
        );
    }

    #[test]
    fn legacy_dockercfg() {
        let c = ok(&format!(
            r#"{{"https://index.docker.io/v1/": {{"auth": "{}", "email": "a@b"}}}}"#,
            b64("hub:pw")
        ));
        assert_eq!(c.format, DockerConfigFormat::Dockercfg);
        assert_eq!(c.entries[0].0, "https://index.docker.io/v1/");
        let k = c.lookup_kubelet(&img("nginx"));
        assert_eq!(basic(&k[0].credential), ("hub", "pw"));
        let e = c.lookup_exact(&img("docker.io/library/nginx"));
        assert_eq!(
            e.map(|s| basic(&s.credential).0.to_string()),
            Some("hub".into())
        );
    }

    #[test]
    fn lookup_exact_semantics() {
        let c = ok(&format!(
            r#"{{"auths": {{
                "https://reg.io/v2/": {{"auth": "{}"}},
                "reg.io": {{"auth": "{}"}},
                "reg.io:5000": {{"auth": "{}"}},
                "index.docker.io": {{"auth": "{}"}},
                "*.glob.io": {{"auth": "{}"}}
            }}}}"#,
            b64("path:x"),
            b64("bare:x"),
            b64("port:x"),
            b64("hub:x"),
            b64("glob:x"),
        ));
        let user = |s: &str| {
            c.lookup_exact(&img(s))
                .map(|sc| basic(&sc.credential).0.to_string())
        };
        assert_eq!(user("reg.io/a/b").as_deref(), Some("bare"));
        assert_eq!(user("reg.io:5000/a").as_deref(), Some("port"));
        assert_eq!(user("nginx").as_deref(), Some("hub"));
        assert_eq!(user("a.glob.io/x"), None); // no globs for the docker CLI
        assert_eq!(user("other.io/x"), None);

        // Without the bare key, the first key whose host matches.
        let c2 = ok(&format!(
            r#"{{"auths": {{"https://reg.io/v2/": {{"auth": "{}"}}}}}}"#,
            b64("path:x")
        ));
        let got = c2.lookup_exact(&img("reg.io/x")).map(|s| s.source);
        assert_eq!(
            got,
            Some(CredentialSource::AuthFile {
                path: p(),
                key: "https://reg.io/v2/".into()
            })
        );
    }

    #[test]
    fn lookup_kubelet_order_and_globs() {
        let c = ok(&format!(
            r#"{{"auths": {{
                "reg.io": {{"auth": "{}"}},
                "reg.io/team": {{"auth": "{}"}},
                "*.reg.io": {{"auth": "{}"}},
                "registry-1.docker.io": {{"auth": "{}"}}
            }}}}"#,
            b64("host:x"),
            b64("team:x"),
            b64("glob:x"),
            b64("r1:x"),
        ));
        let users = |s: &str| -> Vec<String> {
            c.lookup_kubelet(&img(s))
                .iter()
                .map(|sc| basic(&sc.credential).0.to_string())
                .collect()
        };
        assert_eq!(users("reg.io/team/app"), ["team", "host"]);
        assert_eq!(users("a.reg.io/x"), ["glob"]);
        assert!(users("nginx").is_empty());
    }

    #[test]
    fn duplicate_keys_last_wins() {
        let c = ok(&format!(
            r#"{{"auths": {{"r.io": {{"auth": "{}"}}, "r.io": {{"auth": "{}"}}}}}}"#,
            b64("first:x"),
            b64("second:x")
        ));
        assert_eq!(c.entries.len(), 1);
        assert_eq!(basic(&c.entries[0].1).0, "second");
    }

    #[test]
    fn errors_name_file_and_field_never_the_secret() {
        let not_b64 = format!("!{CANARY}!");
        let no_colon = b64(CANARY);
        let not_utf8 = base64::engine::general_purpose::STANDARD.encode([0xff, 0xfe, b':']);
        let cases: Vec<(String, &str)> = vec![
            (
                format!(r#"{{"auths": {{"reg.io": {{"auth": "{not_b64}"}}}}}}"#),
                r#"/etc/test/config.json: auths."reg.io".auth: not base64"#,
            ),
            (
                format!(r#"{{"auths": {{"reg.io": {{"auth": "{no_colon}"}}}}}}"#),
                r#"/etc/test/config.json: auths."reg.io".auth: decoded value has no ':' between user name and password"#,
            ),
            (
                format!(r#"{{"auths": {{"reg.io": {{"auth": "{not_utf8}"}}}}}}"#),
                r#"/etc/test/config.json: auths."reg.io".auth: decoded value is not valid UTF-8"#,
            ),
            (
                r#"{"auths": {"reg.io": {"password": 12345}}}"#.to_string(),
                r#"/etc/test/config.json: auths."reg.io".password: expected a string"#,
            ),
            (
                r#"{"auths": {"reg.io": "x"}}"#.to_string(),
                r#"/etc/test/config.json: auths."reg.io": expected an object"#,
            ),
            (
                r#"{"auths": []}"#.to_string(),
                "/etc/test/config.json: auths: expected an object",
            ),
            (
                r#"["a"]"#.to_string(),
                "/etc/test/config.json: (top level): expected a JSON object",
            ),
            (
                format!(r#"{{"r.io": {{"password": "{CANARY}"}}, "x": 1}}"#),
                r#"/etc/test/config.json: "x": expected an object"#,
            ),
        ];
        for (json, want) in cases {
            let e = parse(&json).err().map(|e| e.to_string());
            assert_eq!(e.as_deref(), Some(want), "{json}");
        }
        // Syntax errors: position only, even when the secret is right there.
        let e = parse(&format!(r#"{{"auths": {{"r": {{"password": "{CANARY}" }}"#))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.starts_with("/etc/test/config.json: invalid JSON at line 1, column "),
            "{e}"
        );
        assert!(!e.contains(CANARY), "{e}");
        for bad in [
            "",
            "{",
            "nul",
            "\u{feff}{}",
            "{\"auths\": {\"a\": {\"auth\": \"x\"}}",
        ] {
            assert!(
                matches!(parse(bad), Err(DockerConfigError::Json { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn debug_never_shows_secrets() {
        let c = ok(&format!(
            r#"{{"auths": {{"a.io": {{"auth": "{}"}}, "b.io": {{"identitytoken": "{CANARY}"}}}}}}"#,
            b64(&format!("user:{CANARY}"))
        ));
        let dbg = format!("{c:?}");
        assert!(!dbg.contains(CANARY), "{dbg}");
    }

    #[test]
    fn load_reads_file_and_reports_missing() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let f = dir.path().join("config.json");
        std::fs::write(
            &f,
            format!(r#"{{"auths": {{"a.io": {{"auth": "{}"}}}}}}"#, b64("u:p")),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let c = DockerConfig::load(&f).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.path, f);
        let missing = dir.path().join("nope.json");
        let e = DockerConfig::load(&missing)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.starts_with(&format!("{}: cannot read", missing.display())),
            "{e}"
        );
    }

    #[test]
    fn search_paths_from_injected_env() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            let m: HashMap<&str, &str> = pairs.iter().copied().collect();
            move |k: &str| m.get(k).map(|v| v.to_string())
        };
        assert_eq!(
            cli_search_paths(&env(&[("HOME", "/root")])),
            [
                PathBuf::from("/root/.docker/config.json"),
                PathBuf::from("/root/.dockercfg")
            ]
        );
        assert_eq!(
            cli_search_paths(&env(&[("HOME", "/root"), ("DOCKER_CONFIG", "/cfg")])),
            [
                PathBuf::from("/cfg/config.json"),
                PathBuf::from("/root/.dockercfg")
            ]
        );
        assert_eq!(
            cli_search_paths(&env(&[("DOCKER_CONFIG", "/cfg"), ("HOME", "")])),
            [PathBuf::from("/cfg/config.json")]
        );
        assert!(cli_search_paths(&env(&[])).is_empty());
    }

    #[test]
    fn hostile_bytes_never_panic() {
        let mut state: u64 = 0x1234_5678_9ABC_DEF0;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let pieces = [
            "{",
            "}",
            "\"auths\"",
            ":",
            ",",
            "\"a.io\"",
            "{\"auth\":",
            "\"dTpw\"",
            "null",
            "[",
            "]",
            "\"x\"",
            "1",
            "\"credsStore\"",
        ];
        for _ in 0..20_000 {
            let n = (next() % 12) as usize;
            let s: String = (0..n)
                .map(|_| pieces[(next() % pieces.len() as u64) as usize])
                .collect();
            if let Ok(c) = parse(&s) {
                let _ = c.lookup_kubelet(&img("a.io/x"));
                let _ = c.lookup_exact(&img("a.io/x"));
            }
        }
    }
}
