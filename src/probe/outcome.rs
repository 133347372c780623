//! What a probe produces: per-phase records, a stable reason code, and a verdict.
//! These are plain data (no Kubernetes types) so the CLI, logs, metrics and Node
//! conditions all read the same thing.

use serde::Serialize;

use crate::credentials::CredentialSource;

/// A credential source in JSON: its printable name (`pull-secret:ns/name#key`).
fn ser_source<S: serde::Serializer>(
    src: &Option<CredentialSource>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match src {
        Some(c) => s.collect_str(c),
        None => s.serialize_none(),
    }
}

/// The steps of a pull, in the order a runtime walks them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Reference,
    Dns,
    Connect,
    Tls,
    Auth,
    Manifest,
    Platform,
    Blob,
}

impl Phase {
    pub const ALL: [Phase; 8] = [
        Phase::Reference,
        Phase::Dns,
        Phase::Connect,
        Phase::Tls,
        Phase::Auth,
        Phase::Manifest,
        Phase::Platform,
        Phase::Blob,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Reference => "reference",
            Phase::Dns => "dns",
            Phase::Connect => "connect",
            Phase::Tls => "tls",
            Phase::Auth => "auth",
            Phase::Manifest => "manifest",
            Phase::Platform => "platform",
            Phase::Blob => "blob",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Stable, CamelCase failure reasons. These strings are an interface: they appear in
/// JSON output, metrics labels, Node condition reasons and the README. Add, never rename.
macro_rules! reasons {
    ($( $(#[$doc:meta])* $name:ident => $phase:ident ),* $(,)?) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        pub enum Reason {
            $( $(#[$doc])* $name, )*
        }
        impl Reason {
            pub const ALL: &'static [Reason] = &[ $( Reason::$name, )* ];
            pub fn as_str(self) -> &'static str {
                match self { $( Reason::$name => stringify!($name), )* }
            }
            /// The phase this reason belongs to.
            pub fn phase(self) -> Phase {
                match self { $( Reason::$name => Phase::$phase, )* }
            }
        }
    };
}

reasons! {
    /// The image reference does not parse.
    ReferenceInvalid => Reference,
    /// The registry name does not exist (NXDOMAIN).
    DNSNameNotFound => Dns,
    /// The name exists but has no A/AAAA records.
    DNSNoRecords => Dns,
    /// The resolver answered SERVFAIL.
    DNSServerFailure => Dns,
    /// The resolver answered REFUSED.
    DNSRefused => Dns,
    /// No answer from any nameserver in time.
    DNSTimeout => Dns,
    /// The node's resolv.conf / hosts file could not be used.
    DNSConfigInvalid => Dns,
    /// Every address answered with a TCP reset.
    ConnectRefused => Connect,
    /// No address accepted the connection in time (blackholed / filtered).
    ConnectTimeout => Connect,
    /// No route to any address (network or host unreachable).
    ConnectUnreachable => Connect,
    /// The HTTP proxy refused or failed the CONNECT tunnel.
    ProxyConnectFailed => Connect,
    /// The server certificate chains to no trusted CA.
    TLSUnknownAuthority => Tls,
    /// The server certificate has expired.
    TLSCertificateExpired => Tls,
    /// The server certificate is not valid yet.
    TLSCertificateNotYetValid => Tls,
    /// The server certificate does not name the host.
    TLSNameMismatch => Tls,
    /// The TLS handshake did not finish in time.
    TLSHandshakeTimeout => Tls,
    /// The server answered the TLS ClientHello in plain HTTP.
    TLSPlainHTTP => Tls,
    /// The endpoint is plain `http://` but the server speaks TLS (it answers 400 "Client
    /// sent an HTTP request to an HTTPS server").
    TLSServerExpectsHTTPS => Tls,
    /// The server demands a client certificate that was not offered or was rejected.
    TLSClientCertRequired => Tls,
    /// A CA, certificate or key file of the endpoint could not be loaded.
    TLSConfigInvalid => Tls,
    /// Any other handshake failure (protocol version, alerts, reset mid-handshake).
    TLSHandshakeFailed => Tls,
    /// `/v2/` is not a registry API (404, HTML, ...).
    AuthNotRegistry => Auth,
    /// The registry needs credentials and none were available.
    AuthCredentialsRequired => Auth,
    /// The credentials were rejected (401 with credentials).
    AuthCredentialsRejected => Auth,
    /// Authenticated, but access to the repository was denied (403 / insufficient scope).
    AuthDenied => Auth,
    /// The token endpoint (realm) could not be reached.
    AuthTokenEndpointUnreachable => Auth,
    /// The token endpoint answered with an unexpected status.
    AuthTokenEndpointError => Auth,
    /// `WWW-Authenticate` is missing or cannot be parsed.
    AuthChallengeMalformed => Auth,
    /// The token response is not the JSON the spec describes.
    AuthTokenMalformed => Auth,
    /// The registry asks for an auth scheme the runtime does not speak.
    AuthUnsupportedScheme => Auth,
    /// The token server's token (or its answer) is over pullprobe's 32 KiB limit: a
    /// registry's answer that is refused, not used and not cached.
    AuthTokenTooLarge => Auth,
    /// The token realm is on loopback, link-local or one of the node's own addresses and
    /// the registry is not: pullprobe does not send the node's requests there (the
    /// runtime would).
    AuthRealmRefused => Auth,
    /// The tag (or digest) does not exist in the repository.
    ManifestNotFound => Manifest,
    /// The repository does not exist, or is hidden without access (NAME_UNKNOWN).
    RepositoryNotFound => Manifest,
    /// The registry is rate limiting (429); see `retry_after_s`.
    RateLimited => Manifest,
    /// The registry answered 5xx.
    RegistryServerError => Manifest,
    /// The manifest response is malformed (bad JSON, bad digest, unknown media type).
    ManifestMalformed => Manifest,
    /// The manifest is larger than containerd accepts (`MaxManifestSize`, 4,393,984 bytes).
    ManifestTooLarge => Manifest,
    /// The registry answered with a status the runtime treats as a failure.
    ManifestUnexpectedStatus => Manifest,
    /// The server stopped answering mid-request.
    ResponseTimeout => Manifest,
    /// The connection broke mid-request.
    ConnectionLost => Manifest,
    /// The index has no manifest for the target platform.
    PlatformMissing => Platform,
    /// The blob (config) is missing on the registry.
    BlobNotFound => Blob,
    /// The blob host (often a CDN on another host) cannot be reached; see the hop's phases.
    BlobHostUnreachable => Blob,
    /// Blob redirects loop.
    BlobRedirectLoop => Blob,
    /// More than the allowed number of blob redirects.
    BlobTooManyRedirects => Blob,
    /// The blob request failed with an unexpected status.
    BlobUnexpectedStatus => Blob,
    /// A redirect (of a blob, or of the manifest: then in the `manifest` phase) points
    /// into loopback, link-local or the node's own addresses and the registry is not
    /// there: pullprobe does not follow it (the runtime would).
    RedirectRefused => Blob,
    /// The overall probe deadline passed.
    ProbeDeadlineExceeded => Manifest,
    /// The runtime's config blocks this registry (CRI-O `blocked = true`).
    RegistryBlocked => Reference,
    /// No endpoint has the capabilities the pull needs.
    NoUsableEndpoint => Reference,
    /// CRI-O cannot resolve a short name (no domain): ambiguous under `short_name_mode`
    /// enforcing (several unqualified-search registries), or no alias and no
    /// unqualified-search registries (containers/image pkg/shortnames `Resolve`).
    ShortNameUnresolved => Reference,
    /// Only a credential provider with `tokenAttributes` (KEP-4412) would give credentials
    /// for this image, with the pod's service-account token, which pullprobe does not mint
    /// for it: needs a service-account token, not reproduced. Never a node condition.
    ServiceAccountTokenNotReproduced => Auth,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The overall verdict for one image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The runtime would succeed through its first usable endpoint.
    Ready,
    /// The runtime would succeed, but only after earlier endpoints failed.
    Degraded,
    /// Every endpoint fails.
    NotReady,
    /// The runtime's config blocks the registry.
    Blocked,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ready => "ready",
            Verdict::Degraded => "degraded",
            Verdict::NotReady => "not_ready",
            Verdict::Blocked => "blocked",
        }
    }
    /// Would a pull succeed?
    pub fn pulls(self) -> bool {
        matches!(self, Verdict::Ready | Verdict::Degraded)
    }
}

/// One timed step.
#[derive(Clone, Debug, Serialize)]
pub struct PhaseRecord {
    pub name: Phase,
    /// The host this step talked to (`host:port`), or empty for `reference`/`platform`.
    pub host: String,
    pub ok: bool,
    pub duration_ms: f64,
    /// What was learnt (addresses, TLS version, status, digest...) or why it failed.
    pub detail: String,
}

/// A failure: where, why (stable code) and a sentence for humans.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Failure {
    pub phase: Phase,
    pub reason: Reason,
    pub message: String,
    /// Seconds from `Retry-After` on a 429.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
    /// The certificate the server presented, when a TLS failure saw one.
    #[serde(skip)]
    pub tls: Option<Box<TlsInfo>>,
}

impl Failure {
    /// `message` is bounded as a whole here ([`crate::redact::message`]): whatever
    /// server text went into it, no failure carries more than a kilobyte to a report.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Failure {
            phase: reason.phase(),
            reason,
            message: crate::redact::message(&message.into()),
            retry_after_s: None,
            tls: None,
        }
    }
    /// The same reason reported under another phase (a token host's DNS failure is an
    /// `auth` problem; a blob host's TLS failure is a `blob` problem).
    pub fn in_phase(mut self, phase: Phase) -> Self {
        self.phase = phase;
        self
    }
}

/// What the manifest phase learnt.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ManifestInfo {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    /// The digest of the platform-specific manifest chosen from an index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform_digest: Option<String>,
    /// The config blob that the blob phase checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_digest: Option<String>,
}

/// The server certificate as seen in the TLS phase.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct TlsInfo {
    pub host: String,
    pub version: String,
    pub cipher: String,
    pub subject: String,
    pub issuer: String,
    pub sans: Vec<String>,
    /// RFC 3339.
    pub not_after: String,
    /// Unix seconds of `not_after`, for metrics.
    pub not_after_unix: i64,
    pub days_to_expiry: i64,
}

/// Docker Hub's rate limit headers (`ratelimit-limit: 100;w=21600`).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct RateLimit {
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    pub window_s: Option<u64>,
    pub source: Option<String>,
}

/// One try of the pull through one endpoint with one credential.
#[derive(Clone, Debug, Serialize)]
pub struct EndpointAttempt {
    pub endpoint: String,
    /// Its place in the runtime's order: `mirror 1`, `mirror 2`, `server`, or `default`
    /// (no hosts configuration), so two attempts at one URL are told apart.
    pub role: String,
    /// Where the endpoint comes from (`/etc/containerd/certs.d/reg/hosts.toml [host."…"]`).
    pub origin: String,
    /// HTTPS failed and the runtime fell back to plain HTTP, as it does for this host.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub https_to_http: bool,
    pub is_upstream: bool,
    /// Where the credential came from (never its value); `None` = anonymous.
    #[serde(serialize_with = "ser_source")]
    pub credential_source: Option<CredentialSource>,
    pub ok: bool,
    pub phase: Option<Phase>,
    pub reason: Option<Reason>,
    pub message: String,
    pub duration_ms: f64,
    pub phases: Vec<PhaseRecord>,
}

/// The result for one image: the JSON line of `pullprobe check --json`.
#[derive(Clone, Debug, Serialize)]
pub struct ProbeReport {
    /// The image as given.
    pub image: String,
    /// The normalised reference (`docker.io/library/nginx:latest`); null if it does not parse.
    pub reference: Option<String>,
    /// The endpoint that decided the verdict (the one that worked, or the last one tried).
    pub endpoint: Option<String>,
    pub verdict: Verdict,
    /// The failing phase; null when the image pulls.
    pub phase: Option<Phase>,
    pub reason: Option<Reason>,
    pub message: String,
    /// What to do next (null when the image pulls).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    pub duration_ms: f64,
    /// Phases of the deciding attempt, in order.
    pub phases: Vec<PhaseRecord>,
    #[serde(serialize_with = "ser_source")]
    pub credential_source: Option<CredentialSource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest: Option<ManifestInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratelimit: Option<RateLimit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
    /// Every endpoint/credential tried, in the runtime's order.
    pub attempts: Vec<EndpointAttempt>,
    /// What the node's configuration does to this pull's path that the verdict alone does
    /// not show (a hosts.toml containerd ignores, a host skipped for its capabilities, a
    /// missing resolv.conf, containerd's localhost rule skipping certificate checks).
    pub warnings: Vec<String>,
}

/// What a row about another host shows in a pre-flight reply instead of its host.
const OTHER_HOST: &str = "(another host)";

impl ProbeReport {
    /// The report as a pre-flight reply carries it: nothing about hosts other than each
    /// attempt's registry endpoint. A pre-flight caller picks the images, so the registry
    /// picks the token realms and redirect targets the node then reaches; what the node
    /// found there (addresses, ports open or closed, certificates) is not handed back.
    /// Rows about another host keep phase, outcome and time; a failure there keeps its
    /// phase and reason, and its message says only that.
    pub fn confined_to_registries(mut self) -> ProbeReport {
        let mut decisive_elsewhere = false;
        let endpoint = self.endpoint.clone().unwrap_or_default();
        for a in &mut self.attempts {
            if confine_rows(&mut a.phases, &a.endpoint) && a.reason.is_some() {
                a.message = elsewhere_message(a.reason);
            }
        }
        if confine_rows(&mut self.phases, &endpoint) && self.reason.is_some() {
            decisive_elsewhere = true;
        }
        if decisive_elsewhere {
            self.message = elsewhere_message(self.reason);
            self.hint = self.reason.map(super::hints::fix);
        }
        let registry_host = url::Url::parse(&endpoint)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string));
        if self
            .tls
            .as_ref()
            .is_some_and(|t| Some(&t.host) != registry_host.as_ref())
        {
            self.tls = None;
        }
        self
    }
}

/// Blank the rows of `rows` about hosts other than `endpoint`'s; true when the last
/// failing row was about another host.
fn confine_rows(rows: &mut [PhaseRecord], endpoint: &str) -> bool {
    let registry = url::Url::parse(endpoint)
        .ok()
        .and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?)));
    let mut failed_elsewhere = false;
    for r in rows.iter_mut() {
        if r.host.is_empty() || Some(&r.host) == registry.as_ref() {
            if !r.ok {
                failed_elsewhere = false;
            }
            continue;
        }
        r.host = OTHER_HOST.to_string();
        r.detail = String::new();
        if !r.ok {
            failed_elsewhere = true;
        }
    }
    failed_elsewhere
}

fn elsewhere_message(reason: Option<Reason>) -> String {
    match reason {
        Some(r) => format!(
            "{r} on another host than the registry (its token realm or a redirect's target): pre-flight replies do not describe other hosts"
        ),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: Phase, host: &str, ok: bool, detail: &str) -> PhaseRecord {
        PhaseRecord {
            name,
            host: host.into(),
            ok,
            duration_ms: 1.0,
            detail: detail.into(),
        }
    }

    fn report(phases: Vec<PhaseRecord>, reason: Reason, tls_host: &str) -> ProbeReport {
        let attempt = EndpointAttempt {
            endpoint: "https://reg.example/v2/".into(),
            role: "default".into(),
            origin: String::new(),
            https_to_http: false,
            is_upstream: true,
            credential_source: None,
            ok: false,
            phase: Some(reason.phase()),
            reason: Some(reason),
            message: "realm 10.0.0.9:8080 refused the connection".into(),
            duration_ms: 3.0,
            phases: phases.clone(),
        };
        ProbeReport {
            image: "reg.example/team/app:v1".into(),
            reference: None,
            endpoint: Some("https://reg.example/v2/".into()),
            verdict: Verdict::NotReady,
            phase: Some(reason.phase()),
            reason: Some(reason),
            message: "realm 10.0.0.9:8080 refused the connection".into(),
            hint: None,
            duration_ms: 3.0,
            phases,
            credential_source: None,
            manifest: None,
            tls: Some(TlsInfo {
                host: tls_host.into(),
                ..TlsInfo::default()
            }),
            ratelimit: None,
            retry_after_s: None,
            attempts: vec![attempt],
            warnings: Vec::new(),
        }
    }

    /// A pre-flight caller picks the registry; the registry picks the realm. What the node
    /// found on the realm's host (its address, that a port is closed) is not handed back.
    #[test]
    fn a_preflight_reply_says_nothing_about_other_hosts() {
        let r = report(
            vec![
                row(Phase::Dns, "reg.example:443", true, "10.0.0.1"),
                row(Phase::Dns, "internal.corp:8080", true, "10.0.0.9"),
                row(
                    Phase::Connect,
                    "internal.corp:8080",
                    false,
                    "connection refused",
                ),
            ],
            Reason::AuthTokenEndpointUnreachable,
            "internal.corp",
        )
        .confined_to_registries();
        let text = serde_json::to_string(&r).unwrap();
        assert!(
            !text.contains("internal.corp") && !text.contains("10.0.0.9"),
            "{text}"
        );
        assert_eq!(
            r.phases[0].detail, "10.0.0.1",
            "the registry's own rows stay"
        );
        assert_eq!(r.phases[2].host, OTHER_HOST);
        assert!(!r.phases[2].ok, "outcome and phase stay");
        assert_eq!(r.reason, Some(Reason::AuthTokenEndpointUnreachable));
        assert!(r.message.contains("another host"), "{}", r.message);
        assert!(r.attempts[0].message.contains("another host"));
        assert!(r.tls.is_none(), "another host's certificate is not shown");
    }

    #[test]
    fn a_failure_on_the_registry_keeps_its_message() {
        let r = report(
            vec![
                row(Phase::Dns, "cdn.example:443", true, "10.0.0.9"),
                row(
                    Phase::Connect,
                    "reg.example:443",
                    false,
                    "connection refused",
                ),
            ],
            Reason::ConnectRefused,
            "reg.example",
        )
        .confined_to_registries();
        assert_eq!(r.message, "realm 10.0.0.9:8080 refused the connection");
        assert_eq!(r.phases[1].detail, "connection refused");
        assert_eq!(r.phases[0].host, OTHER_HOST);
        assert!(r.tls.is_some(), "the registry's certificate stays");
    }
}
