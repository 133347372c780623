//! dns phase: resolve a host with the node's resolver configuration (its resolv.conf
//! and hosts file), not the agent container's, and classify failures.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::Resolver;

use super::outcome::{Failure, Reason};

/// A resolver built from the node's files. Cheap to clone (shared inner state). A
/// resolver configuration that cannot be used is reported by the lookups that need it:
/// IP literals and hosts-file names resolve without one, as in Go.
#[derive(Clone)]
pub struct NodeResolver {
    resolver: Result<Arc<Resolver<TokioRuntimeProvider>>, Arc<ResolverConfigError>>,
    /// Static entries of the node's hosts file, by lowercased name, in file order.
    hosts: Arc<HashMap<String, Vec<IpAddr>>>,
    /// The node has no resolv.conf: Go's defaults (`127.0.0.1:53`, `[::1]:53`) are used.
    pub go_defaults: bool,
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
    /// Never fails: see the type's doc.
    pub fn from_files(resolv_conf: &Path, hosts_file: &Path, timeout: Duration) -> NodeResolver {
        let (resolver, go_defaults) = match build_resolver(resolv_conf, timeout) {
            Ok((r, d)) => (Ok(Arc::new(r)), d),
            Err(e) => (Err(Arc::new(e)), false),
        };
        let hosts = match read_hosts(hosts_file) {
            Ok(h) => h,
            Err(e) => {
                // An unreadable hosts file: Go skips it; so do we, and say so when DNS fails.
                tracing::warn!(error = %e, "cannot read the node's hosts file");
                HashMap::new()
            }
        };
        NodeResolver {
            resolver,
            hosts: Arc::new(hosts),
            go_defaults,
        }
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
        let resolver = match &self.resolver {
            Ok(r) => r,
            Err(e) => return Err(Failure::new(Reason::DNSConfigInvalid, e.to_string())),
        };
        let lookup = tokio::time::timeout(timeout, resolver.lookup_ip(bare)).await;
        match lookup {
            Err(_) => Err(Failure::new(
                Reason::DNSTimeout,
                format!(
                    "no DNS answer for {bare} within {}",
                    crate::text::human_duration(timeout)
                ),
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

/// The resolver for a resolv.conf; `true` when the file is missing and Go's defaults
/// apply (net/dnsconfig_unix.go `dnsReadConfig`: `conf.servers = defaultNS`, which is
/// `127.0.0.1:53` and `[::1]:53`; a missing file is not an error for Go's resolver).
fn build_resolver(
    resolv_conf: &Path,
    timeout: Duration,
) -> Result<(Resolver<TokioRuntimeProvider>, bool), ResolverConfigError> {
    let invalid = |message: String| ResolverConfigError::Invalid {
        path: resolv_conf.to_path_buf(),
        message,
    };
    let (config, mut opts, go_defaults) = match std::fs::read(resolv_conf) {
        Ok(bytes) => {
            let (c, o) = hickory_resolver::system_conf::parse_resolv_conf(&bytes)
                .map_err(|_| invalid("not a resolv.conf this resolver can use".into()))?;
            (c, o, false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let servers = [
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
            ]
            .into_iter()
            .map(NameServerConfig::udp_and_tcp)
            .collect();
            let mut o = ResolverOpts::default();
            o.attempts = 2;
            (ResolverConfig::from_name_servers(servers), o, true)
        }
        Err(source) => {
            return Err(ResolverConfigError::Read {
                path: resolv_conf.to_path_buf(),
                source,
            })
        }
    };
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
        .map_err(|_| invalid("the resolver cannot be built from it".into()))?;
    Ok((resolver, go_defaults))
}

/// The hosts file's entries; a missing file has none.
fn read_hosts(hosts_file: &Path) -> Result<HashMap<String, Vec<IpAddr>>, ResolverConfigError> {
    match std::fs::read_to_string(hosts_file) {
        Ok(text) => Ok(parse_hosts(&text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HashMap::new()),
        Err(source) => Err(ResolverConfigError::Read {
            path: hosts_file.to_path_buf(),
            source,
        }),
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
