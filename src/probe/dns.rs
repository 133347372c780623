//! dns phase: resolve a host with the node's resolver configuration (its resolv.conf
//! and hosts file), not the agent container's, and classify failures.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{LookupIpStrategy, ResolveHosts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::{Hosts, Resolver};

use super::outcome::{Failure, Reason};

/// A resolver built from the node's files. Cheap to clone (shared inner state).
#[derive(Clone)]
pub struct NodeResolver {
    resolver: Arc<Resolver<TokioRuntimeProvider>>,
}

/// Why the node's resolver configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ResolverConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl NodeResolver {
    /// Build from `resolv.conf` and `hosts` paths. The resolver's cache is disabled so
    /// every probe really asks the nameservers (we want what a *new* pull would see).
    pub fn from_files(
        resolv_conf: &Path,
        hosts_file: &Path,
        timeout: Duration,
    ) -> Result<NodeResolver, ResolverConfigError> {
        let bytes = std::fs::read(resolv_conf).map_err(|source| ResolverConfigError::Read {
            path: resolv_conf.to_path_buf(),
            source,
        })?;
        let (config, mut opts) =
            hickory_resolver::system_conf::parse_resolv_conf(&bytes).map_err(|e| {
                ResolverConfigError::Invalid {
                    path: resolv_conf.to_path_buf(),
                    message: e.to_string(),
                }
            })?;
        opts.cache_size = 0;
        // glibc and Go both return IPv4 first on typical nodes; hickory's default is IPv6 first.
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        // resolv.conf's own `timeout:` applies per attempt, but never beyond the phase timeout.
        opts.timeout = opts.timeout.min(timeout);
        opts.use_hosts_file = ResolveHosts::Always;
        let mut resolver = Resolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(opts)
            .build()
            .map_err(|e| ResolverConfigError::Invalid {
                path: resolv_conf.to_path_buf(),
                message: e.to_string(),
            })?;
        let mut hosts = Hosts::default();
        match std::fs::File::open(hosts_file) {
            Ok(f) => hosts
                .read_hosts_conf(f)
                .map_err(|e| ResolverConfigError::Invalid {
                    path: hosts_file.to_path_buf(),
                    message: e.to_string(),
                })?,
            // A node without a hosts file simply has no static entries.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ResolverConfigError::Read {
                    path: hosts_file.to_path_buf(),
                    source,
                })
            }
        }
        resolver.set_hosts(Arc::new(hosts));
        Ok(NodeResolver {
            resolver: Arc::new(resolver),
        })
    }

    /// Resolve `host` to addresses in the order a Go client would dial them. IP literals
    /// are returned as they are.
    pub async fn resolve(&self, host: &str, timeout: Duration) -> Result<Vec<IpAddr>, Failure> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let lookup = tokio::time::timeout(timeout, self.resolver.lookup_ip(bare)).await;
        match lookup {
            Err(_) => Err(Failure::new(
                Reason::DNSTimeout,
                format!("no DNS answer for {bare} within {timeout:?}"),
            )),
            Ok(Err(e)) => Err(classify(bare, &e)),
            Ok(Ok(ips)) => {
                let addrs: Vec<IpAddr> = ips.iter().collect();
                if addrs.is_empty() {
                    Err(Failure::new(
                        Reason::DNSNoRecords,
                        format!("{bare} exists but has no A/AAAA records"),
                    ))
                } else {
                    Ok(addrs)
                }
            }
        }
    }
}

/// Map hickory's error to a stable reason.
fn classify(host: &str, err: &NetError) -> Failure {
    match err {
        NetError::Dns(DnsError::NoRecordsFound(nr)) => {
            if nr.response_code == ResponseCode::NXDomain {
                Failure::new(
                    Reason::DNSNameNotFound,
                    format!("{host}: no such host (NXDOMAIN)"),
                )
            } else {
                Failure::new(
                    Reason::DNSNoRecords,
                    format!("{host} exists but has no A/AAAA records"),
                )
            }
        }
        NetError::Dns(DnsError::ResponseCode(code)) => response_code_failure(host, *code),
        NetError::Timeout => Failure::new(
            Reason::DNSTimeout,
            format!("no DNS answer for {host} (nameservers timed out)"),
        ),
        other => {
            let text = other.to_string();
            // The name-server pool folds per-server errors into a message; pick the code out.
            if text.contains("Refused") {
                response_code_failure(host, ResponseCode::Refused)
            } else if text.contains("ServFail") {
                response_code_failure(host, ResponseCode::ServFail)
            } else if text.contains("timed out") || text.contains("no connections") {
                Failure::new(
                    Reason::DNSTimeout,
                    format!("no DNS answer for {host}: {text}"),
                )
            } else {
                Failure::new(
                    Reason::DNSServerFailure,
                    format!("resolving {host} failed: {text}"),
                )
            }
        }
    }
}

fn response_code_failure(host: &str, code: ResponseCode) -> Failure {
    match code {
        ResponseCode::Refused => Failure::new(
            Reason::DNSRefused,
            format!("the nameserver refused to resolve {host} (REFUSED)"),
        ),
        ResponseCode::NXDomain => Failure::new(
            Reason::DNSNameNotFound,
            format!("{host}: no such host (NXDOMAIN)"),
        ),
        other => Failure::new(
            Reason::DNSServerFailure,
            format!("the nameserver failed to resolve {host} ({other})"),
        ),
    }
}
