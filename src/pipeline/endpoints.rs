//! Endpoint overrides given on the command line: `--mirror` endpoints tried first, and
//! TLS flags applied to every endpoint of the plan (CAs are appended, as `hosts.toml`
//! `ca` is).

use std::path::PathBuf;

use url::Url;

use crate::endpoint::{ClientCert, Endpoint, SchemePolicy};
use crate::probe::engine::default_endpoint;
use crate::probe::Failure;
use crate::reference::ImageRef;

/// What the command line says about endpoints and their TLS.
#[derive(Clone, Debug, Default)]
pub struct EndpointOverrides {
    /// Mirror API roots tried before the node's own endpoints, in order (`--mirror`).
    pub mirrors: Vec<String>,
    /// The registry itself is `http://` (`--plain-http`; workstation only).
    pub plain_http: bool,
    /// The system CA bundle to use instead of the node's (`--ca-bundle`).
    pub ca_bundle: Option<PathBuf>,
    /// Extra CAs appended to every endpoint's pool (`--ca-file`).
    pub ca_files: Vec<PathBuf>,
    /// A client certificate offered to every endpoint (`--cert`, `--key`).
    pub client_cert: Option<ClientCert>,
    /// containerd `skip_verify` for every endpoint (`--insecure-skip-verify`).
    pub skip_verify: bool,
}

/// A `--mirror` value that is not an http(s) URL. Names the flag, quotes only the
/// scheme (a URL may carry userinfo).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MirrorError {
    #[error("--mirror number {index}: not a URL")]
    NotAUrl { index: usize },
    #[error("--mirror number {index}: scheme {scheme:?} is not http or https")]
    Scheme { index: usize, scheme: String },
}

/// Parse the `--mirror` flags into endpoints for `image` (`?ns=` names its registry).
pub fn mirror_endpoints(
    mirrors: &[String],
    image: &ImageRef,
) -> Result<Vec<Endpoint>, MirrorError> {
    let mut out = Vec::new();
    for (i, m) in mirrors.iter().enumerate() {
        let index = i + 1;
        let with_scheme = if m.contains("://") {
            m.clone()
        } else {
            format!("https://{m}")
        };
        let mut url = Url::parse(&with_scheme).map_err(|_| MirrorError::NotAUrl { index })?;
        let scheme = match url.scheme() {
            "https" => SchemePolicy::Https,
            "http" => SchemePolicy::Http,
            other => {
                return Err(MirrorError::Scheme {
                    index,
                    scheme: other.chars().take(16).collect(),
                })
            }
        };
        let _ = url.set_scheme("https");
        let path = url.path().trim_end_matches('/').to_string();
        if !path.ends_with("/v2") {
            url.set_path(&format!("{path}/v2"));
        }
        let host = url
            .host_str()
            .ok_or(MirrorError::NotAUrl { index })?
            .to_string();
        let mut ep =
            Endpoint::upstream(&host, scheme).map_err(|_| MirrorError::NotAUrl { index })?;
        ep.api_root = url;
        ep.is_upstream = false;
        ep.namespace = Some(image.domain.clone());
        ep.origin = format!("--mirror number {index}");
        out.push(ep);
    }
    Ok(out)
}

/// The workstation's endpoints: mirrors, then the registry (containerd's default host).
pub fn workstation_endpoints(
    mirrors: Vec<Endpoint>,
    image: &ImageRef,
    plain_http: bool,
) -> Result<Vec<Endpoint>, Failure> {
    let mut eps = mirrors;
    let mut upstream = default_endpoint(image)?;
    if plain_http {
        upstream.scheme = SchemePolicy::Http;
    }
    eps.push(upstream);
    Ok(eps)
}

impl EndpointOverrides {
    /// TLS flags apply to every endpoint (CAs are appended).
    pub fn apply_tls(&self, eps: &mut [Endpoint]) {
        for ep in eps.iter_mut() {
            if self.ca_bundle.is_some() {
                ep.tls.ca_bundle = self.ca_bundle.clone();
                ep.tls.no_system_pool = false;
            }
            ep.tls.extra_ca_files.extend(self.ca_files.iter().cloned());
            if let Some(c) = &self.client_cert {
                ep.tls.client_certs.push(c.clone());
            }
            if self.skip_verify {
                ep.tls.skip_verify = true;
            }
        }
    }
}
