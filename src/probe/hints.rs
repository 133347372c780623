//! What to do next, per reason: one hint that names the thing to fix where the runtime
//! reads it (containerd's `hosts.toml`, CRI-O's `registries.conf` and `certs.d`, the
//! kubelet's credentials), filled with the failing host, address, credential source and
//! resolver. The README's reason table shows the same hints with placeholders.

use super::outcome::Reason;
use crate::runtime::Runtime;

/// What a hint may name.
#[derive(Clone, Debug)]
pub struct HintContext {
    pub runtime: Runtime,
    /// The failing endpoint's `host[:port]`.
    pub host: String,
    /// The address the connect phase tried (`10.0.0.5:443`), when known.
    pub addr: Option<String>,
    /// The credential source sent (`auth-file:/var/lib/kubelet/config.json#reg`), if any.
    pub credential: Option<String>,
    /// The node's resolv.conf (as seen by the probe).
    pub resolv_conf: String,
    pub platform: String,
    pub repository: String,
    pub retry_after_s: Option<u64>,
}

impl HintContext {
    /// Placeholders, for the README's table.
    pub fn generic() -> HintContext {
        HintContext {
            runtime: Runtime::Containerd,
            host: "<host>".into(),
            addr: None,
            credential: None,
            resolv_conf: "resolv.conf".into(),
            platform: "the node's platform".into(),
            repository: "the repository".into(),
            retry_after_s: None,
        }
    }
}

/// The hint with placeholders (`<host>`), as the README's "fix" column shows it.
pub fn fix(reason: Reason) -> String {
    hint(reason, &HintContext::generic())
}

fn ca_hint(c: &HintContext) -> String {
    match c.runtime {
        Runtime::Containerd => format!(
            "add the registry's CA: `--ca-file`, or `ca = \"ca.crt\"` in /etc/containerd/certs.d/{h}/hosts.toml (or the node's CA bundle)",
            h = c.host
        ),
        Runtime::Crio => format!(
            "add the registry's CA: /etc/containers/certs.d/{}/ca.crt (or the node's CA bundle)",
            c.host
        ),
    }
}

fn credential_hint(c: &HintContext, what: &str) -> String {
    match &c.credential {
        Some(src) => format!("{what} {src}: fix or rotate it there"),
        None => format!("{what} no credential was sent: add an imagePullSecret, the kubelet's config.json, or a credential provider"),
    }
}

/// The hint for `reason` in context.
pub fn hint(reason: Reason, c: &HintContext) -> String {
    use Reason::*;
    let (h, rc) = (&c.host, &c.resolv_conf);
    let addr = c.addr.clone().unwrap_or_else(|| h.clone());
    match reason {
        ReferenceInvalid => "fix the image reference (name[:tag][@digest], lowercase repository)".into(),
        DNSNameNotFound => format!("the nameservers in {rc} say {h} does not exist: check the name, or the node's DNS and search domains"),
        DNSNoRecords => format!("{h} has no A/AAAA record: add one to its DNS zone"),
        DNSServerFailure => format!("the nameserver in {rc} could not resolve {h} (SERVFAIL): check its upstream servers"),
        DNSRefused => format!("the nameserver in {rc} refuses to resolve {h}: check its access rules"),
        DNSTimeout => format!("no nameserver in {rc} answered: check that they are reachable from the node"),
        DNSConfigInvalid => format!("fix the node's resolver file {rc}"),
        ConnectRefused => format!("nothing listens on {addr}: check the registry's port, or the endpoint's URL in the runtime's config"),
        ConnectTimeout => format!("{addr} does not answer: a firewall or egress rule drops the traffic, or the node needs the proxy"),
        ConnectUnreachable => format!("the node has no route to {addr}: check its routes or egress gateway"),
        ProxyConnectFailed => "the runtime's proxy (HTTPS_PROXY in its systemd unit) refused the tunnel: check NO_PROXY and the proxy's allow list".into(),
        TLSUnknownAuthority => ca_hint(c),
        TLSCertificateExpired => format!("renew the certificate of {h} (see tls.not_after)"),
        TLSCertificateNotYetValid => "check the node's clock and the certificate's start date".into(),
        TLSNameMismatch => format!("use a name the certificate is for (tls.sans), or reissue it with {h} in its SANs"),
        TLSHandshakeTimeout => format!("the TLS handshake with {h} stalls: a middlebox or proxy may hold the connection"),
        TLSPlainHTTP => match c.runtime {
            Runtime::Containerd => format!("{h} speaks plain HTTP: configure `server = \"http://{h}\"` (or [host.\"http://{h}\"]) in its hosts.toml"),
            Runtime::Crio => format!("{h} speaks plain HTTP: set `insecure = true` for it in registries.conf"),
        },
        TLSServerExpectsHTTPS => format!("{h} speaks TLS: configure it as https:// with its CA"),
        TLSClientCertRequired => match c.runtime {
            Runtime::Containerd => format!("{h} wants a client certificate: `client = [\"client.cert\", \"client.key\"]` in its hosts.toml"),
            Runtime::Crio => format!("{h} wants a client certificate: client.cert and client.key in /etc/containers/certs.d/{h}/"),
        },
        TLSConfigInvalid => "a CA, certificate or key file the config names cannot be loaded: fix the file the message names".into(),
        TLSHandshakeFailed => format!("TLS with {h} fails (versions, ciphers, or a reset during the handshake): check the server's TLS settings"),
        AuthNotRegistry => format!("{h} is not a registry API (a proxy login page or captive portal?): check the endpoint's URL"),
        AuthCredentialsRequired => credential_hint(c, "the registry needs credentials and"),
        AuthCredentialsRejected => credential_hint(c, "the registry rejected"),
        AuthDenied => credential_hint(c, &format!("no pull access to {} for", c.repository)),
        AuthTokenEndpointUnreachable => "the registry's token server (its realm) cannot be reached from the node: allow egress to it".into(),
        AuthTokenEndpointError => "the token server answered an error: check the credential and the token service".into(),
        AuthChallengeMalformed | AuthTokenMalformed | AuthUnsupportedScheme => format!("{h}'s auth answers are not what the runtime understands: check the registry or the proxy in front of it"),
        AuthTokenTooLarge => format!("{h}'s token server hands out tokens over 32 KiB, more than registries accept in a header: check the token service"),
        AuthRealmRefused => format!("{h} names a token realm on the node's loopback, link-local or own addresses: a registry's answer may not send the node there; fix the registry's auth settings"),
        RedirectRefused => format!("{h} redirects into the node's loopback, link-local or own addresses: a registry's answer may not send the node there; fix the registry's storage redirect settings"),
        ManifestNotFound => format!("the tag or digest is not in {}: push it, or fix the reference", c.repository),
        RepositoryNotFound => format!("{} does not exist on {h} (or is hidden without access): check the name", c.repository),
        RateLimited => match c.retry_after_s {
            Some(s) => format!("{h} rate-limits this node (retry after {s} s): use a mirror, or authenticate for a higher limit"),
            None => format!("{h} rate-limits this node: use a mirror, or authenticate for a higher limit"),
        },
        RegistryServerError => format!("{h} failed (5xx): check the registry"),
        ManifestMalformed => "the registry returned a broken manifest: push the image again".into(),
        ManifestTooLarge => "the manifest is over containerd's 4 MiB limit: rebuild with fewer layers or annotations".into(),
        ManifestUnexpectedStatus => format!("{h} answered a status the runtime treats as a failure: see the message"),
        ResponseTimeout => format!("{h} stopped answering mid-response: check its load, or a proxy's timeout"),
        ConnectionLost => "the connection broke mid-response: a proxy or load balancer may cut it".into(),
        PlatformMissing => format!("the image has no build for {}: push a multi-platform image, or keep the pod off this node", c.platform),
        BlobNotFound => "the image's config blob is missing on the registry: push the image again".into(),
        BlobHostUnreachable => "the blob host the registry redirects to (CDN, object store) cannot be reached from the node: allow egress to it".into(),
        BlobRedirectLoop | BlobTooManyRedirects | BlobUnexpectedStatus => "the registry's blob redirects are broken: check its storage redirect settings".into(),
        ProbeDeadlineExceeded => "the pull path is slower than the probe's deadline (--timeout): the phases show where the time went".into(),
        RegistryBlocked => "registries.conf blocks this registry: remove `blocked = true`, or use another registry".into(),
        NoUsableEndpoint => "no endpoint can serve this pull (capabilities, an unreadable host directory): run `pullprobe plan` for the details".into(),
        ShortNameUnresolved => "CRI-O cannot resolve this short name: use a fully qualified reference (registry/name), an [aliases] entry, or one unqualified-search registry (or short_name_mode = \"disabled\" in crio.conf)".into(),
        ServiceAccountTokenNotReproduced => "only a credential provider using the pod's service-account token serves this image: name a ServiceAccount for it in the agent config (node.credential_provider_service_accounts) to check it".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_a_hint_naming_where_to_fix_it() {
        for r in Reason::ALL {
            let f = fix(*r);
            assert!(f.len() > 20 && !f.contains("{"), "{r}: {f}");
        }
        let c = HintContext {
            host: "reg.example:5000".into(),
            credential: Some("auth-file:/var/lib/kubelet/config.json#reg.example:5000".into()),
            ..HintContext::generic()
        };
        assert!(hint(Reason::TLSUnknownAuthority, &c)
            .contains("/etc/containerd/certs.d/reg.example:5000/hosts.toml"));
        assert!(hint(Reason::AuthCredentialsRejected, &c)
            .contains("auth-file:/var/lib/kubelet/config.json#reg.example:5000"));
        let crio = HintContext {
            runtime: Runtime::Crio,
            ..c
        };
        assert!(hint(Reason::TLSUnknownAuthority, &crio).contains("/etc/containers/certs.d/"));
    }
}
