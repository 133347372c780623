//! Flag groups shared by `check`, `plan` (and the agent's node flags): each turns into
//! its part of the one pipeline's [`Spec`].

use std::path::PathBuf;

use clap::Args;

use crate::endpoint::ClientCert;
use crate::pipeline::{EndpointOverrides, NodeOverrides, Spec};
use crate::runtime::Runtime;

/// `--runtime`: a runtime, or `auto`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RuntimeArg {
    #[default]
    Auto,
    Containerd,
    Crio,
}

/// Where the node's own pull-path configuration is read from.
#[derive(Args, Debug, Clone, Default)]
pub struct NodeArgs {
    /// Read the node's runtime config (containerd `config.toml` + `hosts.toml`, or CRI-O
    /// `registries.conf`), CA bundle, resolver, proxy settings and kubelet credentials
    /// under this directory (`/` on a node, `/host` in the DaemonSet): the runtime's own
    /// endpoints and credentials, which `check` probes and `plan` only shows.
    #[arg(long, value_name = "DIR")]
    pub host_root: Option<PathBuf>,
    /// Whose config rules and request sequence to reproduce (`auto`: detected under
    /// --host-root from the kubelet's --container-runtime-endpoint, a runtime socket or
    /// config; else containerd).
    #[arg(long, value_enum, default_value = "auto")]
    pub runtime: RuntimeArg,
    /// containerd's config file (node path) [default: /etc/containerd/config.toml, or
    /// the k3s/rke2 one].
    #[arg(long, value_name = "PATH")]
    pub containerd_config: Option<PathBuf>,
    /// containerd's version (node `containerRuntimeVersion`), for version-specific
    /// behaviour [default: from the node's dpkg status, else assumed < 2.0].
    #[arg(long, value_name = "VERSION")]
    pub containerd_version: Option<String>,
    /// The kubelet's `--root-dir` (node path), where its `config.json` is searched
    /// [default: as the node's kubelet unit runs it, else /var/lib/kubelet].
    #[arg(long, value_name = "PATH")]
    pub kubelet_root_dir: Option<PathBuf>,
    /// The kubelet's `--image-credential-provider-config` (node path) [default: as the
    /// node's kubelet unit runs it].
    #[arg(long, value_name = "PATH")]
    pub image_credential_provider_config: Option<PathBuf>,
    /// The kubelet's `--image-credential-provider-bin-dir` (node path) [default: as the
    /// node's kubelet unit runs it].
    #[arg(long, value_name = "PATH")]
    pub image_credential_provider_bin_dir: Option<PathBuf>,
    /// containerd's hosts directory to try, like `ctr --hosts-dir` (a `certs.d` tree on
    /// this machine; no host root needed) [default: from the node's config.toml].
    #[arg(long, value_name = "DIR")]
    pub hosts_dir: Option<PathBuf>,
    /// The node's resolv.conf [default: the host root's etc/resolv.conf (symlinks
    /// resolved inside it), else /etc/resolv.conf].
    #[arg(long, value_name = "PATH")]
    pub resolv_conf: Option<PathBuf>,
    /// The node's hosts file [default: the host root's etc/hosts, else /etc/hosts].
    #[arg(long, value_name = "PATH")]
    pub hosts_file: Option<PathBuf>,
}

/// A flag that names something unusable: exit 2 before any probe.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    #[error("--{flag} {}: {why}", path.display())]
    File {
        flag: &'static str,
        path: PathBuf,
        why: &'static str,
    },
    #[error("--host-root {}: {why}", path.display())]
    HostRoot { path: PathBuf, why: &'static str },
}

/// The flag's file must exist and be a readable file.
fn readable_file(flag: &'static str, path: &std::path::Path) -> Result<(), ArgsError> {
    let err = |why| ArgsError::File {
        flag,
        path: path.to_path_buf(),
        why,
    };
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(err("no such file")),
        Err(_) => Err(err("cannot be read")),
        Ok(m) if m.is_dir() => Err(err("is a directory, not a file")),
        Ok(_) => std::fs::File::open(path)
            .map(|_| ())
            .map_err(|_| err("cannot be read")),
    }
}

impl NodeArgs {
    /// A host root that is missing, empty or has no `etc/` is a typo, not a node.
    pub fn validate(&self) -> Result<(), ArgsError> {
        let Some(root) = &self.host_root else {
            return Ok(());
        };
        let err = |why| ArgsError::HostRoot {
            path: root.clone(),
            why,
        };
        let mut entries =
            std::fs::read_dir(root).map_err(|_| err("is not a readable directory"))?;
        if entries.next().is_none() {
            return Err(err("is empty: pass the node's root filesystem (`/` on a node, `/host` in the DaemonSet)"));
        }
        if !root.join("etc").is_dir() {
            return Err(err(
                "has no etc/: it does not look like a node's root filesystem",
            ));
        }
        for (flag, p) in [
            ("resolv-conf", &self.resolv_conf),
            ("hosts-file", &self.hosts_file),
        ] {
            if let Some(p) = p {
                readable_file(flag, p)?;
            }
        }
        Ok(())
    }

    pub fn apply(&self, spec: &mut Spec) {
        spec.host_root = self.host_root.clone();
        spec.runtime = match self.runtime {
            RuntimeArg::Auto => None,
            RuntimeArg::Containerd => Some(Runtime::Containerd),
            RuntimeArg::Crio => Some(Runtime::Crio),
        };
        spec.node = NodeOverrides {
            containerd_config: self.containerd_config.clone(),
            containerd_version: self
                .containerd_version
                .as_deref()
                .map(crate::nodeconfig::GivenVersion::flag),
            kubelet_root_dir: self.kubelet_root_dir.clone(),
            credential_provider_config: self.image_credential_provider_config.clone(),
            credential_provider_bin_dir: self.image_credential_provider_bin_dir.clone(),
            hosts_dir: self.hosts_dir.clone(),
        };
        spec.resolv_conf = self.resolv_conf.clone();
        spec.hosts_file = self.hosts_file.clone();
    }
}

/// Endpoints and TLS given on the command line.
#[derive(Args, Debug, Clone, Default)]
pub struct EndpointArgs {
    /// A mirror API root tried before the node's own endpoints, e.g.
    /// `https://mirror:5000` (repeatable; in order).
    #[arg(long = "mirror", value_name = "URL")]
    pub mirrors: Vec<String>,
    /// Talk plain HTTP to the registry (workstation checks).
    #[arg(long, conflicts_with = "insecure_skip_verify")]
    pub plain_http: bool,
    /// The node's CA bundle [default: the host root's, from the usual Debian/RHEL/SUSE/
    /// Alpine locations].
    #[arg(long, value_name = "PATH")]
    pub ca_bundle: Option<PathBuf>,
    /// Extra CA file appended to every endpoint's pool (repeatable; like hosts.toml `ca`).
    #[arg(long = "ca-file", value_name = "PATH")]
    pub ca_files: Vec<PathBuf>,
    /// Client certificate (PEM) offered to every endpoint.
    #[arg(long, value_name = "PATH")]
    pub cert: Option<PathBuf>,
    /// Client key (PEM) [default: inside the --cert file].
    #[arg(long, value_name = "PATH", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Do not verify registry certificates (containerd `skip_verify`).
    #[arg(long)]
    pub insecure_skip_verify: bool,
}

impl EndpointArgs {
    /// Every file a flag names must be readable (a typo is exit 2, not a TLS verdict).
    pub fn validate(&self) -> Result<(), ArgsError> {
        for p in &self.ca_files {
            readable_file("ca-file", p)?;
        }
        if let Some(p) = &self.ca_bundle {
            readable_file("ca-bundle", p)?;
        }
        if let Some(p) = &self.cert {
            readable_file("cert", p)?;
        }
        if let Some(p) = &self.key {
            readable_file("key", p)?;
        }
        Ok(())
    }

    pub fn apply(&self, spec: &mut Spec) {
        spec.endpoints = EndpointOverrides {
            mirrors: self.mirrors.clone(),
            plain_http: self.plain_http,
            ca_bundle: self.ca_bundle.clone(),
            ca_files: self.ca_files.clone(),
            client_cert: self.cert.clone().map(|cert| ClientCert {
                cert,
                key: self.key.clone(),
            }),
            skip_verify: self.insecure_skip_verify,
        };
    }
}
