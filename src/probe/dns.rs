//! dns phase: resolve a host with the node's resolver configuration (its resolv.conf
//! and hosts file), not the agent container's, and classify failures.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{LookupIpStrategy, ResolveHosts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::Resolver;

use super::outcome::{Failure, Reason};

/// A resolver built from the node's files. Cheap to clone (shared inner state).
#[derive(Clone)]
pub struct NodeResolver {
    resolver: Arc<Resolver<TokioRuntimeProvider>>,
    /// Static entries of the node's hosts file, by lowercased name, in file order.
    hosts: Arc<HashMap<String, Vec<IpAddr>>>,
}

/// Parse a hosts(5) file. Hand-written on purpose: hickory consults its hosts table per
/// record type and queries DNS for the family the file lacks, while Go's resolver and
/// glibc (`hosts: files dns`) return the file's addresses and send no query at all.
pub fn parse_hosts(text: &str) -> HashMap<String, Vec<IpAddr>> {
    let mut map: HashMap<String, Vec<IpAddr>> = HashMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut fields = line.split_whitespace();
        let Some(ip) = fields
            .next()
            .and_then(|f| f.split('%').next()?.parse::<IpAddr>().ok())
        else {
            continue;
        };
        for name in fields {
            let entry = map
                .entry(name.trim_end_matches('.').to_ascii_lowercase())
                .or_default();
            if !entry.contains(&ip) {
                entry.push(ip);
            }
        }
    }
    map
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
        // The hosts file is consulted first, by us (see `parse_hosts`).
        opts.use_hosts_file = ResolveHosts::Never;
        let resolver = Resolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(opts)
            .build()
            .map_err(|e| ResolverConfigError::Invalid {
                path: resolv_conf.to_path_buf(),
                message: e.to_string(),
            })?;
        let hosts = match std::fs::read_to_string(hosts_file) {
            Ok(text) => parse_hosts(&text),
            // A node without a hosts file simply has no static entries.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(source) => {
                return Err(ResolverConfigError::Read {
                    path: hosts_file.to_path_buf(),
                    source,
                })
            }
        };
        Ok(NodeResolver {
            resolver: Arc::new(resolver),
            hosts: Arc::new(hosts),
        })
    }

    /// Resolve `host` to addresses in the order a Go client would dial them. IP literals
    /// are returned as they are.
    pub async fn resolve(&self, host: &str, timeout: Duration) -> Result<Vec<IpAddr>, Failure> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        if let Some(ips) = self
            .hosts
            .get(&bare.trim_end_matches('.').to_ascii_lowercase())
        {
            return Ok(ips.clone());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_file_parsing() {
        let m = parse_hosts(
            "# c\n127.0.0.1 localhost Registry.Test\n::1 localhost ip6-localhost\n\
             127.0.0.2 registry.test # second\nbogus line\nfe80::1%eth0 link.test\n",
        );
        assert_eq!(
            m["registry.test"],
            vec![
                "127.0.0.1".parse::<IpAddr>().unwrap(),
                "127.0.0.2".parse().unwrap()
            ]
        );
        assert_eq!(m["localhost"].len(), 2);
        assert!(m.contains_key("link.test"));
        assert!(!m.contains_key("bogus"));
    }
}
