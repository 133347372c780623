//! What a probe is asked: the settings of a run (runtime, timeouts, platform, the
//! node's resolver files and proxy), its depth, and one image's inputs (endpoints in the
//! runtime's order, credentials in the kubelet's, a refusal). Below the engine and the
//! per-attempt flow, which both read it.

use std::path::PathBuf;
use std::time::Duration;

use super::outcome::Failure;
use crate::credentials::SourcedCredential;
use crate::endpoint::Endpoint;
use crate::runtime::{ContainerdVersion, Platform, Runtime, RuntimeRules};

/// Per-phase timeouts plus an overall deadline.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub dns: Duration,
    pub connect: Duration,
    pub tls: Duration,
    /// One HTTP request/response (headers and body).
    pub http: Duration,
    /// The whole probe of one image.
    pub overall: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            dns: Duration::from_secs(5),
            connect: Duration::from_secs(5),
            tls: Duration::from_secs(5),
            http: Duration::from_secs(10),
            overall: Duration::from_secs(30),
        }
    }
}

/// What a probe answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Depth {
    /// Would this image pull? The whole pull path, endpoints walked as the runtime walks
    /// them until one pulls.
    #[default]
    Image,
    /// Can the node reach this registry over its path? The manifest HEAD only, endpoints
    /// walked until one answers as a registry (see [`super::verdict::path_state`]).
    Path,
}

/// Settings shared by every probe of a run.
#[derive(Clone, Debug)]
pub struct ProbeOptions {
    pub runtime: Runtime,
    /// The node's containerd release, when known: some rules differ by release
    /// ([`ProbeOptions::rules`]).
    pub containerd_version: Option<ContainerdVersion>,
    pub timeouts: Timeouts,
    pub platform: Platform,
    /// Skip the blob phase.
    pub no_blob: bool,
    /// What the probe is for: an image's pull, or the node's path to its registry.
    pub depth: Depth,
    /// The node's resolv.conf.
    pub resolv_conf: PathBuf,
    /// The node's hosts file.
    pub hosts_file: PathBuf,
    /// The runtime service's proxy environment (`HTTP(S)_PROXY`, `NO_PROXY`), applied per
    /// request URL like Go's `http.ProxyFromEnvironment`; `None` = direct.
    pub proxy_env: Option<crate::nodeconfig::proxy::ProxyEnv>,
}

impl ProbeOptions {
    /// The runtime rules this probe reproduces.
    pub fn rules(&self) -> RuntimeRules {
        RuntimeRules {
            runtime: self.runtime,
            containerd: self.containerd_version,
        }
    }
}

/// One image and how the node would pull it.
#[derive(Clone, Debug)]
pub struct ProbeTarget {
    /// The image as given (before normalisation).
    pub image: String,
    /// Endpoints in the runtime's order (mirrors first, upstream last). Empty = derive the
    /// default upstream endpoint from the reference.
    pub endpoints: Vec<Endpoint>,
    /// Credentials in the kubelet's order; each is a separate full attempt. Empty = anonymous.
    pub credentials: Vec<SourcedCredential>,
    /// Set when the runtime would refuse before sending anything (a CRI-O blocked
    /// registry, an unusable hosts directory); reported as the verdict without probing.
    pub refusal: Option<Failure>,
}

impl ProbeTarget {
    /// A target probed over the default endpoint, anonymously.
    pub fn new(image: impl Into<String>) -> ProbeTarget {
        ProbeTarget {
            image: image.into(),
            endpoints: Vec::new(),
            credentials: Vec::new(),
            refusal: None,
        }
    }
}
