//! The pipeline: for each credential (kubelet order) and each endpoint (runtime order),
//! walk dns → connect → tls → auth → manifest → platform → blob, and decide a verdict.

use std::path::PathBuf;
use std::time::Duration;

use crate::credentials::SourcedCredential;
use crate::endpoint::Endpoint;

use super::outcome::ProbeReport;

/// Which runtime's request sequence to reproduce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeProfile {
    /// HEAD the manifest first and react to the 401; OAuth2 POST for tokens with credentials.
    #[default]
    Containerd,
    /// containers/image: `GET /v2/` ping first, GET manifests.
    Crio,
}

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

/// `os/arch[/variant]`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

/// Settings shared by every probe of a run.
#[derive(Clone, Debug)]
pub struct ProbeOptions {
    pub runtime: RuntimeProfile,
    pub timeouts: Timeouts,
    pub platform: Platform,
    /// Skip the blob phase.
    pub no_blob: bool,
    /// Skip the platform phase and stop after the manifest HEAD (agent's cheap check).
    pub head_only: bool,
    /// The node's resolv.conf.
    pub resolv_conf: PathBuf,
    /// The node's hosts file.
    pub hosts_file: PathBuf,
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
}

/// Runs probes. Holds the token cache, so one `Prober` should live for a whole run
/// (or the agent's lifetime).
pub struct Prober {
    pub(crate) options: ProbeOptions,
}

impl Prober {
    pub fn new(options: ProbeOptions) -> Prober {
        Prober { options }
    }

    pub fn options(&self) -> &ProbeOptions {
        &self.options
    }

    /// Probe one image. Never fails: every problem becomes a verdict with a reason.
    pub async fn probe(&self, target: &ProbeTarget) -> ProbeReport {
        let _ = target;
        unimplemented!("engine under construction")
    }
}
