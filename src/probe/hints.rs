//! What to do next, per reason: one sentence, `cause: action`, that names the thing to fix
//! where it is read. Where the check runs decides the vocabulary ([`Site`]): on a
//! workstation the command's own flags and Docker config, on a node (and in the agent) the
//! runtime's file and entry the plan actually used (containerd's `hosts.toml`, CRI-O's
//! `registries.conf` and `certs.d`), the kubelet's credential that was sent (by its source:
//! a pod's pull secret, the kubelet's `config.json`, a credential provider, the runtime's
//! config), and the node's resolver files. The README's reason table shows the node hints
//! with placeholders ([`fix`]).

use std::path::Path;

use super::outcome::{EndpointAttempt, Phase, ProbeReport, Reason};
use crate::credentials::CredentialSource;
use crate::endpoint::Endpoint;
use crate::runtime::Runtime;

/// Where a check runs, which decides what a fix can tell the operator to change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Site {
    /// `check` without `--host-root`: this machine, its flags and its Docker config.
    Workstation,
    /// A node's own files: `check --host-root`, `plan`, the agent.
    Node,
}

/// The node's resolver file as a fix names it.
#[derive(Clone, Debug)]
pub struct ResolverFile {
    /// Node path (`/etc/resolv.conf`), or the path given on the command line.
    pub path: String,
    /// The file does not exist: the runtime (Go) asks 127.0.0.1:53 and [::1]:53.
    pub missing: bool,
}

/// The entry of the runtime's configuration a failing endpoint came from.
#[derive(Clone, Debug, Default)]
pub struct Entry {
    /// containerd: the `hosts.toml` the plan read for the host (node path), or where it
    /// would be (`exists` false).
    pub hosts_toml: Option<String>,
    pub exists: bool,
    /// `[host."https://mirror:5000"]` for a mirror; `None` = the top level (`server`).
    pub host_table: Option<String>,
    /// CA files this entry already names (node paths).
    pub ca_files: Vec<String>,
    /// A CA file another entry of the same file names.
    pub sibling_ca: Option<String>,
}

/// What a hint may name.
#[derive(Clone, Debug)]
pub struct HintContext {
    pub runtime: Runtime,
    pub site: Site,
    /// The failing host's `host[:port]`.
    pub host: String,
    /// The address the connect phase tried (`10.0.0.5:443`), when known.
    pub addr: Option<String>,
    /// The credential sent (its source, never its value); `None` = none was sent.
    pub credential: Option<CredentialSource>,
    pub resolver: ResolverFile,
    pub entry: Entry,
    pub platform: String,
    pub repository: String,
    pub retry_after_s: Option<u64>,
}

impl HintContext {
    /// Placeholders, for the README's table (a node, containerd).
    pub fn generic() -> HintContext {
        HintContext {
            runtime: Runtime::Containerd,
            site: Site::Node,
            host: "<host>".into(),
            addr: None,
            credential: None,
            resolver: ResolverFile {
                path: "/etc/resolv.conf".into(),
                missing: false,
            },
            entry: Entry::default(),
            platform: "the node's platform".into(),
            repository: "the repository".into(),
            retry_after_s: None,
        }
    }
}

/// What the one pipeline knows about where a check runs, for hints of its attempts.
#[derive(Clone, Debug)]
pub struct HintEnv<'a> {
    pub runtime: Runtime,
    pub site: Site,
    pub resolver: ResolverFile,
    pub platform: String,
    /// The endpoints the pull walked (their TLS files and entries).
    pub endpoints: &'a [Endpoint],
    /// The host root the endpoints' file paths are under; `None` = `/`.
    pub host_root: Option<&'a Path>,
    /// containerd: the image's `hosts.toml` (node path) and whether it exists.
    pub hosts_toml: Option<(String, bool)>,
}

impl HintEnv<'_> {
    /// A path on this machine as the node sees it (without the host root).
    fn node_path(&self, p: &Path) -> String {
        crate::hostroot::shown_on_node(self.host_root, p)
    }

    fn entry_of(&self, ep: Option<&Endpoint>) -> Entry {
        let Some(ep) = ep else {
            return Entry {
                hosts_toml: self.hosts_toml.as_ref().map(|(f, _)| f.clone()),
                exists: self.hosts_toml.as_ref().is_some_and(|(_, e)| *e),
                ..Entry::default()
            };
        };
        let from_cli = ep.origin.starts_with("--mirror");
        let ca_files: Vec<String> = ep
            .tls
            .extra_ca_files
            .iter()
            .map(|p| self.node_path(p))
            .collect();
        let sibling_ca = self
            .endpoints
            .iter()
            .filter(|e| !std::ptr::eq(*e, ep))
            .flat_map(|e| e.tls.extra_ca_files.iter())
            .map(|p| self.node_path(p))
            .find(|p| !ca_files.contains(p));
        let table = |ep: &Endpoint| {
            let url = ep.display_url();
            let url = url.strip_suffix("/v2").unwrap_or(&url).to_string();
            format!("[host.\"{url}\"]")
        };
        Entry {
            hosts_toml: self
                .hosts_toml
                .as_ref()
                .filter(|_| !from_cli)
                .map(|(f, _)| f.clone()),
            exists: self.hosts_toml.as_ref().is_some_and(|(_, e)| *e),
            host_table: (!ep.is_upstream).then(|| table(ep)),
            ca_files,
            sibling_ca,
        }
    }

    /// The hint for a failed attempt (`None` when it worked).
    pub fn for_attempt(
        &self,
        a: &EndpointAttempt,
        repository: &str,
        retry_after_s: Option<u64>,
    ) -> Option<String> {
        let reason = a.reason.filter(|_| !a.ok)?;
        let ep = self
            .endpoints
            .iter()
            .find(|e| e.display_url() == a.endpoint && e.is_upstream == a.is_upstream);
        let failing = a.phases.iter().rev().find(|p| !p.ok);
        let host = failing
            .map(|p| p.host.clone())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| url_host(&a.endpoint));
        let c = HintContext {
            runtime: self.runtime,
            site: self.site,
            addr: failing
                .filter(|p| p.name == Phase::Connect)
                .map(|p| p.host.clone()),
            host,
            credential: a.credential_source.clone(),
            resolver: self.resolver.clone(),
            entry: self.entry_of(ep),
            platform: self.platform.clone(),
            repository: repository.to_string(),
            retry_after_s,
        };
        Some(hint(reason, &c))
    }

    /// The hint of a report: its deciding attempt's, else (a refusal, a reference that does
    /// not parse) one for its reason alone.
    pub fn for_report(&self, r: &ProbeReport, repository: &str) -> Option<String> {
        let reason = r.reason?;
        let decisive = r.attempts.iter().find(|a| {
            !a.ok
                && a.reason == Some(reason)
                && Some(&a.endpoint) == r.endpoint.as_ref()
                && a.credential_source == r.credential_source
        });
        if let Some(h) = decisive.and_then(|a| self.for_attempt(a, repository, r.retry_after_s)) {
            return Some(h);
        }
        let c = HintContext {
            runtime: self.runtime,
            site: self.site,
            host: r.endpoint.as_deref().map(url_host).unwrap_or_default(),
            addr: None,
            credential: r.credential_source.clone(),
            resolver: self.resolver.clone(),
            entry: self.entry_of(None),
            platform: self.platform.clone(),
            repository: repository.to_string(),
            retry_after_s: r.retry_after_s,
        };
        Some(hint(reason, &c))
    }
}

/// `host[:port]` of a URL (empty when it does not parse).
fn url_host(u: &str) -> String {
    url::Url::parse(u)
        .ok()
        .and_then(|u| {
            u.host_str().map(|h| match u.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_string(),
            })
        })
        .unwrap_or_default()
}

/// The name a resolver is asked about: the host without its port (`registry-1.docker.io`,
/// never `registry-1.docker.io:443`).
fn dns_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    }
}

/// The hint with placeholders (`<host>`), as the README's "fix" column shows it.
pub fn fix(reason: Reason) -> String {
    hint(reason, &HintContext::generic())
}

/// containerd's hosts.toml for the failing host: the one the plan read, or where to create it.
fn hosts_toml(c: &HintContext) -> String {
    match &c.entry.hosts_toml {
        Some(f) if c.entry.exists => f.clone(),
        Some(f) => format!("{f} (create it)"),
        None => format!("/etc/containerd/certs.d/{}/hosts.toml", c.host),
    }
}

/// Where in hosts.toml a setting of the failing endpoint goes.
fn entry_place(c: &HintContext) -> String {
    match &c.entry.host_table {
        Some(t) => format!("under {t} in {}", hosts_toml(c)),
        None => format!("at the top level of {} (the `server` entry)", hosts_toml(c)),
    }
}

fn ca_hint(c: &HintContext) -> String {
    let h = &c.host;
    match (c.site, c.runtime) {
        (Site::Workstation, _) => format!(
            "{h} presents a certificate no trusted CA signed: pass its CA with `--ca-file CA.crt` (or `--hosts-dir` with a hosts.toml naming it), or add it to this machine's CA bundle"
        ),
        (Site::Node, Runtime::Crio) => format!(
            "{h} presents a certificate no CA of the node signs: put its CA in /etc/containers/certs.d/{h}/ca.crt, or in the node's CA bundle"
        ),
        (Site::Node, Runtime::Containerd) if !c.entry.ca_files.is_empty() => format!(
            "the CA {} of this endpoint ({}) does not sign the certificate of {h}: put the CA that issued it there",
            c.entry.ca_files.join(", "),
            entry_place(c)
        ),
        (Site::Node, Runtime::Containerd) => {
            let ca = c
                .entry
                .sibling_ca
                .clone()
                .unwrap_or_else(|| format!("/etc/containerd/certs.d/{h}/ca.crt"));
            format!(
                "{h} presents a certificate no CA of the node signs: add `ca = \"{ca}\"` {}, or add the CA to the node's CA bundle",
                entry_place(c)
            )
        }
    }
}

/// Where a credential for the failing host can be given, by site.
fn add_credential(c: &HintContext) -> String {
    match c.site {
        Site::Workstation => format!(
            "pass `--username USER --password-stdin` or `--auth-file FILE`, or log in so that ~/.docker/config.json (or $DOCKER_CONFIG/config.json) has an entry for {}",
            c.host
        ),
        Site::Node => format!(
            "give the pod an imagePullSecret for {h}, or add {h} to the kubelet's config.json or to a credential provider's matchImages",
            h = c.host
        ),
    }
}

/// The credential that was sent, as an operator finds it.
fn sent(src: &CredentialSource) -> String {
    match src {
        CredentialSource::CommandLine => {
            "the user name and password given with --username/--password-stdin".into()
        }
        CredentialSource::AuthFile { path, key } => {
            format!("the entry {key:?} of {}", path.display())
        }
        CredentialSource::PullSecret {
            namespace,
            name,
            key,
        } => format!("pull secret {namespace}/{name} (its entry {key:?})"),
        CredentialSource::Plugin { name, key } => {
            format!("the credential provider {name}'s answer for {key:?}")
        }
        CredentialSource::RuntimeConfig { path, host } => {
            format!("registry.configs.\"{host}\".auth in {}", path.display())
        }
    }
}

/// Where the sent credential is fixed.
fn fix_sent(src: &CredentialSource) -> &'static str {
    match src {
        CredentialSource::CommandLine => "check the user name and password",
        CredentialSource::AuthFile { .. } => "fix or rotate the credential in that file",
        CredentialSource::PullSecret { .. } => "fix or rotate the secret",
        CredentialSource::Plugin { .. } => {
            "check the plugin's configuration and the identity it uses"
        }
        CredentialSource::RuntimeConfig { .. } => "fix or rotate it in that file",
    }
}

fn credentials_required(c: &HintContext) -> String {
    match &c.credential {
        None => format!(
            "{} needs credentials and none was sent: {}",
            c.host,
            add_credential(c)
        ),
        Some(src) => format!(
            "{} asks for credentials again after {} was sent: {}",
            c.host,
            sent(src),
            fix_sent(src)
        ),
    }
}

fn credentials_rejected(c: &HintContext) -> String {
    match &c.credential {
        Some(src) => format!("{} rejected {}: {}", c.host, sent(src), fix_sent(src)),
        // A 401 after a credential was sent, where the context does not say which (the
        // README's table): point at the report's field that does.
        None => format!(
            "{} rejected the credential that was sent: fix or rotate it at the source `credential_source` names",
            c.host
        ),
    }
}

fn denied(c: &HintContext) -> String {
    match &c.credential {
        Some(src) => format!(
            "{} gives {} no pull access to {}: grant it access, or use a credential that has it",
            c.host,
            sent(src),
            c.repository
        ),
        None => format!(
            "{} needs a credential with pull access to {} and none was sent: {}",
            c.host,
            c.repository,
            add_credential(c)
        ),
    }
}

/// "the node" or "this machine".
fn machine(c: &HintContext) -> &'static str {
    match c.site {
        Site::Workstation => "this machine",
        Site::Node => "the node",
    }
}

fn dns_hint(reason: Reason, c: &HintContext) -> String {
    let (n, rc, m) = (dns_name(&c.host), &c.resolver.path, machine(c));
    if c.resolver.missing {
        return format!(
            "{rc} does not exist, so the runtime asks 127.0.0.1:53 and [::1]:53 for {n} (Go's fallback): restore {rc} with {m}'s nameservers"
        );
    }
    match reason {
        Reason::DNSNameNotFound => format!(
            "the nameservers in {rc} say {n} does not exist: check the name, or {m}'s DNS and search domains"
        ),
        Reason::DNSNoRecords => format!("{n} has no A/AAAA record: add one to its DNS zone"),
        Reason::DNSServerFailure => format!(
            "the nameservers in {rc} could not resolve {n} (SERVFAIL): check their upstream servers"
        ),
        Reason::DNSRefused => {
            format!("the nameservers in {rc} refuse to resolve {n}: check their access rules")
        }
        Reason::DNSTimeout => format!(
            "no nameserver in {rc} answered for {n}: check that they are reachable from {m}"
        ),
        _ => format!("{rc} or the hosts file cannot be used: fix the file the message names"),
    }
}

fn tls_hint(reason: Reason, c: &HintContext) -> String {
    let h = &c.host;
    let (ws, crio) = (c.site == Site::Workstation, c.runtime == Runtime::Crio);
    match reason {
        Reason::TLSUnknownAuthority => ca_hint(c),
        Reason::TLSCertificateExpired => {
            format!("the certificate of {h} has expired: renew it (see tls.not_after)")
        }
        Reason::TLSCertificateNotYetValid => format!(
            "the certificate of {h} is not valid yet: check {}'s clock and the certificate's start date",
            machine(c)
        ),
        Reason::TLSNameMismatch => format!(
            "the certificate of {h} does not name it: use a name it is for (tls.sans), or reissue it with {h} in its SANs"
        ),
        Reason::TLSHandshakeTimeout => format!(
            "the TLS handshake with {h} stalls: a middlebox or proxy may hold the connection"
        ),
        Reason::TLSPlainHTTP if ws => format!("{h} speaks plain HTTP: pass `--plain-http`"),
        Reason::TLSPlainHTTP if crio => format!(
            "{h} speaks plain HTTP: set `insecure = true` for it in registries.conf"
        ),
        Reason::TLSPlainHTTP => match &c.entry.host_table {
            Some(_) => format!(
                "{h} speaks plain HTTP: write its entry as [host.\"http://{h}\"] in {}",
                hosts_toml(c)
            ),
            None => format!(
                "{h} speaks plain HTTP: set `server = \"http://{h}\"` in {}",
                hosts_toml(c)
            ),
        },
        Reason::TLSServerExpectsHTTPS if ws => {
            format!("{h} speaks TLS: leave out `--plain-http`, and pass its CA with `--ca-file`")
        }
        Reason::TLSServerExpectsHTTPS => {
            format!("{h} speaks TLS: configure it as https:// with its CA")
        }
        Reason::TLSClientCertRequired if ws => {
            format!("{h} wants a client certificate: pass `--cert` and `--key`")
        }
        Reason::TLSClientCertRequired if crio => format!(
            "{h} wants a client certificate: put client.cert and client.key in /etc/containers/certs.d/{h}/"
        ),
        Reason::TLSClientCertRequired => format!(
            "{h} wants a client certificate: add `client = [[\"client.cert\", \"client.key\"]]` {}",
            entry_place(c)
        ),
        Reason::TLSConfigInvalid => "a CA, certificate or key file the configuration names cannot be loaded: fix the file the message names".into(),
        _ => format!(
            "TLS with {h} fails (versions, ciphers, or a reset during the handshake): check the server's TLS settings"
        ),
    }
}

fn connect_hint(reason: Reason, c: &HintContext) -> String {
    let addr = c.addr.as_deref().unwrap_or(&c.host);
    let m = machine(c);
    match reason {
        Reason::ConnectRefused => format!(
            "nothing listens on {addr}: check the registry's port, or the endpoint's URL"
        ),
        Reason::ConnectTimeout => format!(
            "{addr} does not answer: a firewall or egress rule drops the traffic, or {m} needs a proxy"
        ),
        Reason::ConnectUnreachable => {
            format!("{m} has no route to {addr}: check its routes or egress gateway")
        }
        _ => "the runtime's proxy (HTTPS_PROXY in its systemd unit) refused the tunnel: check NO_PROXY and the proxy's allow list".into(),
    }
}

/// The hint for `reason` in context.
pub fn hint(reason: Reason, c: &HintContext) -> String {
    use Reason::*;
    let h = &c.host;
    match reason.phase() {
        Phase::Dns => return dns_hint(reason, c),
        Phase::Connect => return connect_hint(reason, c),
        Phase::Tls => return tls_hint(reason, c),
        _ => {}
    }
    match reason {
        ReferenceInvalid => "the image reference does not parse: write it as name[:tag][@digest], with a lowercase repository".into(),
        AuthNotRegistry => format!("{h} is not a registry API (a proxy login page or captive portal?): check the endpoint's URL"),
        AuthCredentialsRequired => credentials_required(c),
        AuthCredentialsRejected => credentials_rejected(c),
        AuthDenied => denied(c),
        AuthTokenEndpointUnreachable => format!("the registry's token server (realm) at {h} cannot be reached from {}: allow egress to it", machine(c)),
        AuthTokenEndpointError => format!("the token server at {h} answered an error: check the credential and the token service"),
        AuthChallengeMalformed | AuthTokenMalformed | AuthUnsupportedScheme => format!("the auth answers of {h} are not what the runtime understands: check the registry or the proxy in front of it"),
        AuthTokenTooLarge => format!("the token server of {h} hands out tokens over 32 KiB, more than registries accept in a header: check the token service"),
        AuthRealmRefused => format!("{h} names a token realm on {m}'s loopback, link-local or own addresses, where a registry's answer may not send {m}: fix the registry's auth settings", m = machine(c)),
        RedirectRefused => format!("{h} redirects into {m}'s loopback, link-local or own addresses, where a registry's answer may not send {m}: fix the registry's storage redirect settings", m = machine(c)),
        ManifestNotFound => format!("the tag or digest is not in {}: push it, or fix the reference", c.repository),
        RepositoryNotFound => format!("{} does not exist on {h} (or is hidden without access): check the name", c.repository),
        RateLimited => match c.retry_after_s {
            Some(s) => format!("{h} rate-limits {} (retry after {s} s): use a mirror, or authenticate for a higher limit", machine(c)),
            None => format!("{h} rate-limits {}: use a mirror, or authenticate for a higher limit", machine(c)),
        },
        RegistryServerError => format!("{h} failed (5xx): check the registry"),
        ManifestMalformed => format!("{h} returned a broken manifest: push the image again"),
        ManifestTooLarge => "the manifest is over containerd's 4 MiB limit: rebuild the image with fewer layers or annotations".into(),
        ManifestUnexpectedStatus => format!("{h} answered a status the runtime treats as a failure: see the message"),
        ResponseTimeout => format!("{h} stopped answering mid-response: check its load, or a proxy's timeout"),
        ConnectionLost => format!("the connection to {h} broke mid-response: a proxy or load balancer may cut it"),
        PlatformMissing => match c.site {
            Site::Workstation => format!("the image has no build for {}: push a multi-platform image, or check another `--platform`", c.platform),
            Site::Node => format!("the image has no build for {}: push a multi-platform image, or keep the pod off this node", c.platform),
        },
        BlobNotFound => format!("the image's config blob is missing on {h}: push the image again"),
        BlobHostUnreachable => format!("the blob host {h} the registry redirects to (CDN, object store) cannot be reached from {}: allow egress to it", machine(c)),
        BlobRedirectLoop | BlobTooManyRedirects | BlobUnexpectedStatus => format!("the blob redirects of {h} are broken: check its storage redirect settings"),
        ProbeDeadlineExceeded => match c.site {
            Site::Workstation => "the pull path is slower than the probe's deadline: the phases show where the time went, `--timeout` gives it longer".into(),
            Site::Node => "the pull path is slower than the probe's deadline: the phases show where the time went".into(),
        },
        RegistryBlocked => "registries.conf blocks this registry: remove `blocked = true`, or use another registry".into(),
        ShortNameUnresolved => "CRI-O cannot resolve this short name: use a fully qualified reference (registry/name), an [aliases] entry, or one unqualified-search registry (or short_name_mode = \"disabled\" in crio.conf)".into(),
        ServiceAccountTokenNotReproduced => "only a credential provider using the pod's service-account token serves this image: name a ServiceAccount for it in the agent config (node.credential_provider_service_accounts) to check it".into(),
        _ => "no endpoint can serve this pull (capabilities, an unreadable host directory): run `pullprobe plan` for the details".into(),
    }
}

#[cfg(test)]
mod tests;
