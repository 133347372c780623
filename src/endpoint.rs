//! One place the runtime would send a pull: a registry API root with its own TLS
//! settings, headers, proxy and credential policy.
//!
//! The node pull-path module builds an ordered list of these for an image (mirrors
//! first, upstream last, as containerd's `hosts.toml` does); the CLI builds one from
//! flags. The probe engine walks them in order.
//!
//! What leaves the process (`plan --json`, reports, conditions) goes through
//! [`crate::redact`]: `Serialize` writes the API root and proxy without userinfo or query,
//! and header names with redacted values; [`Endpoint::display_url`] likewise.

use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use crate::credentials::SourcedCredential;
use crate::redact;

/// containerd's host capabilities (`capabilities = ["pull", "resolve"]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Capabilities {
    pub pull: bool,
    pub resolve: bool,
    pub push: bool,
    pub referrers: bool,
}

impl Capabilities {
    /// What containerd grants when `capabilities` is omitted: everything.
    pub const ALL: Capabilities = Capabilities {
        pull: true,
        resolve: true,
        push: true,
        referrers: true,
    };
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities::ALL
    }
}

/// A client certificate: a PEM cert file and its key (`None` = key inside the cert file).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ClientCert {
    pub cert: PathBuf,
    pub key: Option<PathBuf>,
}

/// TLS settings of one endpoint. CAs are *added* to the system pool, as containerd does.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TlsSettings {
    /// The node's system CA bundle; `None` = the built-in search of the usual locations.
    pub ca_bundle: Option<PathBuf>,
    /// The node has no system CA bundle at all: trust only `extra_ca_files` (never fall
    /// back to the bundle of the machine or container pullprobe runs in).
    pub no_system_pool: bool,
    /// Extra CA files appended to the pool (`hosts.toml` `ca`, `certs.d/*.crt`, `--ca-file`).
    pub extra_ca_files: Vec<PathBuf>,
    /// Client certificates; the first one is offered.
    pub client_certs: Vec<ClientCert>,
    /// `skip_verify` / `--insecure-skip-verify`.
    pub skip_verify: bool,
}

/// Where a TLS or plain-HTTP attempt starts, containerd style.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SchemePolicy {
    /// `https://` only.
    Https,
    /// `http://` only.
    Http,
    /// `http://` host with TLS settings on a port other than 80: containerd tries
    /// HTTPS first and falls back to plain HTTP on a TLS or connection error
    /// (`NewHTTPFallback` in core/remotes/docker/config/hosts.go).
    HttpsThenHttp,
}

/// One endpoint in the runtime's order.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Endpoint {
    /// API root including the `/v2` path (or the override path), e.g.
    /// `https://mirror.example:5000/v2` or `https://mirror/v2/upstream`. For
    /// [`SchemePolicy::HttpsThenHttp`] the scheme here is `https`. A hosts.toml host
    /// written `user:pass@host` keeps its userinfo here (never sent: containerd builds
    /// request URLs from `host` only) and loses it in every output.
    #[serde(serialize_with = "ser_url")]
    pub api_root: Url,
    pub scheme: SchemePolicy,
    pub capabilities: Capabilities,
    pub tls: TlsSettings,
    /// Extra request headers (`hosts.toml` `[header]`), sent on registry and token requests.
    /// Serialized as `[name, "<redacted>"]`: values are often credentials.
    #[serde(serialize_with = "ser_headers")]
    pub headers: Vec<(String, String)>,
    /// `?ns=<registry>` value added when this endpoint is a mirror of another registry.
    pub namespace: Option<String>,
    /// `dial_timeout` from hosts.toml.
    pub dial_timeout: Option<Duration>,
    /// HTTP(S) proxy the runtime would use for this endpoint (CONNECT tunnel). Its
    /// userinfo is the proxy credential: serialized without it.
    #[serde(serialize_with = "ser_opt_url")]
    pub proxy: Option<Url>,
    /// Whether the image's credentials (kubelet keyring) are sent here. containerd sends
    /// them to mirrors too; CRI-O does not send them to a mirror on another domain.
    pub send_credentials: bool,
    /// A credential bound to this host by the runtime's own config (containerd
    /// `registry.configs."<host>".auth`), used when the kubelet supplies none.
    #[serde(skip)]
    pub own_credential: Option<SourcedCredential>,
    /// True for the registry itself (the last entry), false for a mirror.
    pub is_upstream: bool,
    /// Repository path to request at this endpoint when the runtime rewrites it
    /// (CRI-O `prefix`/`location` remapping, e.g. `bar/img` for `foo/img`); `None` =
    /// the image's own path.
    pub repository: Option<String>,
    /// Human-readable provenance: which file/flag produced this endpoint.
    pub origin: String,
}

impl Endpoint {
    /// A plain endpoint at `https://host/v2` with all capabilities.
    pub fn upstream(host: &str, scheme: SchemePolicy) -> Result<Endpoint, url::ParseError> {
        let api_root = Url::parse(&format!("https://{host}/v2"))?;
        Ok(Endpoint {
            api_root,
            scheme,
            capabilities: Capabilities::ALL,
            tls: TlsSettings::default(),
            headers: Vec::new(),
            namespace: None,
            dial_timeout: None,
            proxy: None,
            send_credentials: true,
            own_credential: None,
            is_upstream: true,
            repository: None,
            origin: "default".to_string(),
        })
    }

    /// `host[:port]` of the API root, as printed in reports.
    pub fn host_port(&self) -> String {
        let host = self.api_root.host_str().unwrap_or("");
        match self.api_root.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        }
    }

    /// The URL shown to operators, as configured (`http://` for plain or fallback hosts),
    /// through [`redact::url`]: no userinfo, query or fragment.
    pub fn display_url(&self) -> String {
        let mut u = self.api_root.clone();
        // HttpsThenHttp endpoints are configured as http:// (containerd tries HTTPS first).
        if self.scheme != SchemePolicy::Https {
            let _ = u.set_scheme("http");
        }
        redact::url(&u)
    }
}

fn ser_url<S: serde::Serializer>(u: &Url, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact::url(u))
}

fn ser_opt_url<S: serde::Serializer>(u: &Option<Url>, s: S) -> Result<S::Ok, S::Error> {
    match u {
        Some(u) => s.serialize_some(&redact::url(u)),
        None => s.serialize_none(),
    }
}

fn ser_headers<S: serde::Serializer>(h: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(h.len()))?;
    for (name, _) in h {
        seq.serialize_element(&(name, redact::REDACTED))?;
    }
    seq.end()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `plan --json` serializes endpoints: header values and proxy / host userinfo used
    /// to come out verbatim.
    #[test]
    fn serialization_and_display_redact_secrets() {
        let mut ep = Endpoint::upstream("mirror.example:5000", SchemePolicy::Https).unwrap();
        ep.api_root = Url::parse("https://bob:canary-host-pw@mirror.example:5000/v2").unwrap();
        ep.headers = vec![
            ("Authorization".into(), "Bearer canary-header".into()),
            ("X-Tenant".into(), "canary-tenant".into()),
        ];
        ep.proxy = Some(Url::parse("http://alice:canary-proxy-pw@proxy.example:3128").unwrap());
        let json = serde_json::to_string(&ep).unwrap();
        assert!(!json.contains("canary"), "{json}");
        assert!(!json.contains("alice") && !json.contains("bob"), "{json}");
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["api_root"], "https://mirror.example:5000/v2");
        assert_eq!(v["proxy"], "http://proxy.example:3128/");
        assert_eq!(
            v["headers"],
            serde_json::json!([["Authorization", "<redacted>"], ["X-Tenant", "<redacted>"]])
        );
        assert_eq!(ep.display_url(), "https://mirror.example:5000/v2");
        ep.scheme = SchemePolicy::Http;
        assert_eq!(ep.display_url(), "http://mirror.example:5000/v2");
        ep.proxy = None;
        let v = serde_json::to_value(&ep).unwrap();
        assert!(v["proxy"].is_null());
    }
}
