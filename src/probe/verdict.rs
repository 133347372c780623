//! Which failure the runtime reports when a pull walks several endpoints, when it stops
//! walking, and what the endpoints proved about the node's path to a registry. Every
//! caller (the probe's report, the agent's path states) asks here, with the runtime's
//! [`RuntimeRules`]: the rules differ by containerd release.
//!
//! containerd 1.6 and 1.7 (`remotes/docker/resolver.go`, `Resolve`, v1.6.20 and v1.7.24
//! alike): every host with the needed capabilities is tried in order; a 404 is skipped
//! silently ("trying next host - response was http.StatusNotFound"), any other failure is
//! stored as `firstErr` only if none is stored yet ("Set firstErr when encountering the
//! first non-404 status code") and the next host is tried; when every host fails the
//! error is `firstErr`, or "not found" if every host answered 404.
//!
//! containerd 2.x (`core/remotes/docker/resolver.go`, `Resolve`, v2.0.0 to v2.1.9; commit
//! b4814a29 "return most relevant error from docker resolution"): `firstErr` is "the most
//! relevant error encountered during resolution … the error created furthest through the
//! resolution process": a request error (dial, TLS, authorization: `doWithRetries` failed)
//! has priority 1, a 404 priority 2, any other status above 399 priority 3, a manifest
//! over `MaxManifestSize` priority 4; a later error replaces the stored one only with a
//! higher priority. So a mirror's 404 outranks the upstream's untrusted certificate, and
//! the pull fails with "not found". Proven against each real daemon in
//! tests/oracle_containerd.rs.
//!
//! After a host resolved the reference, the fetcher
//! (`remotes/docker/fetcher.go`, `Fetch`) again walks the hosts for each manifest and
//! blob, keeping the first error; selecting the platform from an index happens after the
//! fetch and does not try another host.
//!
//! CRI-O / containers/image (`docker/docker_image_src.go`, `newImageSource`): each pull
//! source (mirrors, then the primary) is tried until one loads the manifest; that source
//! then serves everything else. When all fail, the *last* attempt's error is the primary
//! one ("(Mirrors also failed: …): primary: err").

use super::outcome::{EndpointAttempt, Failure, Phase, Reason};
use crate::runtime::{Runtime, RuntimeRules};

/// A failure at the resolve step (the manifest request by tag or digest and everything
/// before it: dns, connect, tls, auth): the runtime goes on to the next endpoint.
fn at_resolve(f: &Failure) -> bool {
    phase_at_resolve(f.phase)
}

fn phase_at_resolve(p: Phase) -> bool {
    matches!(
        p,
        Phase::Dns | Phase::Connect | Phase::Tls | Phase::Auth | Phase::Manifest
    )
}

/// "Not found" at the resolve step: containerd skips it without remembering it.
fn resolve_not_found(phase: Option<Phase>, reason: Option<Reason>) -> bool {
    phase == Some(Phase::Manifest)
        && matches!(
            reason,
            Some(Reason::ManifestNotFound | Reason::RepositoryNotFound)
        )
}

/// containerd 2.x's priority of a failure at the resolve step (see the module doc):
/// higher wins, the first of equals stays.
fn resolve_priority(reason: Option<Reason>) -> u8 {
    use Reason::*;
    match reason {
        Some(ManifestNotFound | RepositoryNotFound) => 2,
        // A final status above 399 other than 404 (a 401 ends in an authorization error).
        Some(AuthDenied | RateLimited | RegistryServerError | ManifestUnexpectedStatus) => 3,
        Some(ManifestTooLarge) => 4,
        _ => 1,
    }
}

/// After an attempt failed with `f`, does the runtime try its next endpoint?
pub fn walks_on(rules: RuntimeRules, f: &Failure) -> bool {
    if at_resolve(f) {
        return true;
    }
    match rules.runtime {
        // The fetcher tries the other hosts for a manifest or blob; a platform missing
        // from the resolved index is final.
        Runtime::Containerd => f.reason != Reason::PlatformMissing,
        // containers/image is committed to the source that loaded the manifest.
        Runtime::Crio => false,
    }
}

/// Index of the attempt whose failure the runtime reports, among the failed attempts of
/// one pull (one credential), in the order tried. `None` for an empty slice.
pub fn reported_failure(rules: RuntimeRules, attempts: &[&EndpointAttempt]) -> Option<usize> {
    if attempts.is_empty() {
        return None;
    }
    let all_at_resolve = attempts
        .iter()
        .all(|a| a.phase.is_none_or(phase_at_resolve));
    match rules.runtime {
        // 2.x: when no host resolved, the most relevant resolve error.
        Runtime::Containerd if rules.containerd_at_least(2, 0) && all_at_resolve => attempts
            .iter()
            .enumerate()
            .max_by_key(|(i, a)| (resolve_priority(a.reason), std::cmp::Reverse(*i)))
            .map(|(i, _)| i),
        Runtime::Containerd => attempts
            .iter()
            .position(|a| !resolve_not_found(a.phase, a.reason))
            .or(Some(0)),
        Runtime::Crio => Some(attempts.len() - 1),
    }
}

/// What the attempts of a path check proved about the node's path to a registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", content = "reason", rename_all = "snake_case")]
pub enum PathState {
    /// An endpoint answered as a registry (any manifest answer, even 404, proves dns,
    /// connect, tls and the registry API; so do a missing platform or blob) and did not
    /// reject the node's credentials.
    Reachable,
    /// An endpoint answered but rejected the node's own credentials, and none accepted.
    AuthFailing(Reason),
    /// No endpoint answered as a registry: the reason the runtime would report.
    Unreachable(Reason),
    /// Only rate limiting was seen: proves nothing either way.
    Inconclusive(Reason),
}

impl PathState {
    /// `reachable`, `auth_failing`, `unreachable`, `inconclusive`.
    pub fn as_str(self) -> &'static str {
        match self {
            PathState::Reachable => "reachable",
            PathState::AuthFailing(_) => "auth_failing",
            PathState::Unreachable(_) => "unreachable",
            PathState::Inconclusive(_) => "inconclusive",
        }
    }

    /// The reason when the path does not work.
    pub fn reason(self) -> Option<Reason> {
        match self {
            PathState::Reachable => None,
            PathState::AuthFailing(r) | PathState::Unreachable(r) | PathState::Inconclusive(r) => {
                Some(r)
            }
        }
    }
}

/// How one attempt bears on the path question.
enum Proof {
    /// The registry answered; the credential (if any) was not rejected.
    Reached,
    CredentialRejected(Reason),
    RateLimited,
    Failed,
}

fn proof(a: &EndpointAttempt) -> Proof {
    let Some(reason) = a.reason.filter(|_| !a.ok) else {
        return Proof::Reached;
    };
    use Reason::*;
    match reason {
        ManifestNotFound
        | RepositoryNotFound
        | AuthCredentialsRequired
        | AuthDenied
        | ManifestTooLarge
        | AuthTokenTooLarge
        | AuthRealmRefused
        | RedirectRefused
        | ManifestMalformed => Proof::Reached,
        AuthCredentialsRejected | AuthTokenEndpointError | AuthTokenMalformed
            if a.credential_source.is_some() =>
        {
            Proof::CredentialRejected(reason)
        }
        RateLimited => Proof::RateLimited,
        _ => Proof::Failed,
    }
}

/// Does this attempt settle the path question, so a path check can stop walking?
pub fn proves_path(a: &EndpointAttempt) -> bool {
    matches!(proof(a), Proof::Reached)
}

/// The node-level answer from a path check's attempts (every credential and endpoint
/// tried, in order). Never decided by one image's tag: a 404 proves the path.
pub fn path_state(rules: RuntimeRules, attempts: &[EndpointAttempt]) -> PathState {
    let mut rejected = None;
    let mut limited = false;
    for a in attempts {
        match proof(a) {
            Proof::Reached => return PathState::Reachable,
            Proof::CredentialRejected(r) => {
                rejected.get_or_insert(r);
            }
            Proof::RateLimited => limited = true,
            Proof::Failed => {}
        }
    }
    if let Some(r) = rejected {
        return PathState::AuthFailing(r);
    }
    if limited {
        return PathState::Inconclusive(Reason::RateLimited);
    }
    let failed: Vec<&EndpointAttempt> = attempts.iter().collect();
    let reason = reported_failure(rules, &failed)
        .and_then(|i| failed[i].reason)
        .unwrap_or(Reason::NoUsableEndpoint);
    PathState::Unreachable(reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::CredentialSource;

    fn att(reason: Option<Reason>, cred: bool) -> EndpointAttempt {
        EndpointAttempt {
            endpoint: "https://r/v2".into(),
            role: "server".into(),
            origin: "test".into(),
            https_to_http: false,
            is_upstream: true,
            credential_source: cred.then(|| CredentialSource::AuthFile {
                path: "/var/lib/kubelet/config.json".into(),
                key: "r".into(),
            }),
            ok: reason.is_none(),
            phase: reason.map(|r| r.phase()),
            reason,
            message: String::new(),
            duration_ms: 0.0,
            phases: Vec::new(),
        }
    }

    #[test]
    fn containerd_reports_the_first_non_404_failure() {
        let a = [
            att(Some(Reason::ManifestNotFound), false),
            att(Some(Reason::TLSUnknownAuthority), false),
            att(Some(Reason::ConnectRefused), false),
        ];
        let refs: Vec<&EndpointAttempt> = a.iter().collect();
        for v in ["1.6.20", "1.7.24"] {
            assert_eq!(reported_failure(containerd(Some(v)), &refs), Some(1), "{v}");
        }
        assert_eq!(reported_failure(containerd(None), &refs), Some(1));
        assert_eq!(reported_failure(Runtime::Crio.into(), &refs), Some(2));
        let all_404 = [
            att(Some(Reason::ManifestNotFound), false),
            att(Some(Reason::RepositoryNotFound), false),
        ];
        let refs: Vec<&EndpointAttempt> = all_404.iter().collect();
        assert_eq!(reported_failure(Runtime::Containerd.into(), &refs), Some(0));
        assert_eq!(reported_failure(containerd(Some("2.1.9")), &refs), Some(0));
    }

    fn containerd(v: Option<&str>) -> RuntimeRules {
        RuntimeRules {
            runtime: Runtime::Containerd,
            containerd: v.and_then(crate::runtime::ContainerdVersion::parse),
        }
    }

    #[test]
    fn containerd_2_reports_the_most_relevant_resolve_failure() {
        let two = containerd(Some("2.1.9"));
        // A mirror's 404, then an untrusted upstream: "not found" (priority 2 over 1).
        let a = [
            att(Some(Reason::ManifestNotFound), false),
            att(Some(Reason::TLSUnknownAuthority), false),
        ];
        let refs: Vec<&EndpointAttempt> = a.iter().collect();
        assert_eq!(reported_failure(two, &refs), Some(0));
        assert_eq!(reported_failure(containerd(Some("1.7.24")), &refs), Some(1));
        // A status beats a 404 and a dial error; the first of equals stays.
        let b = [
            att(Some(Reason::ConnectRefused), false),
            att(Some(Reason::AuthDenied), false),
            att(Some(Reason::ManifestNotFound), false),
            att(Some(Reason::RegistryServerError), false),
        ];
        let refs: Vec<&EndpointAttempt> = b.iter().collect();
        assert_eq!(reported_failure(two, &refs), Some(1));
        let c = [
            att(Some(Reason::ConnectRefused), false),
            att(Some(Reason::TLSUnknownAuthority), false),
        ];
        let refs: Vec<&EndpointAttempt> = c.iter().collect();
        assert_eq!(reported_failure(two, &refs), Some(0));
        // Once a host resolved, the fetcher's first error stands (as in 1.x).
        let d = [
            att(Some(Reason::ManifestNotFound), false),
            att(Some(Reason::BlobHostUnreachable), false),
        ];
        let refs: Vec<&EndpointAttempt> = d.iter().collect();
        assert_eq!(reported_failure(two, &refs), Some(1));
        assert_eq!(
            path_state(two, &c),
            PathState::Unreachable(Reason::ConnectRefused)
        );
    }

    #[test]
    fn platform_missing_stops_containerd_but_blob_failures_walk_on() {
        let pm = Failure::new(Reason::PlatformMissing, "");
        let blob = Failure::new(Reason::BlobHostUnreachable, "");
        let tls = Failure::new(Reason::TLSUnknownAuthority, "");
        let (ctrd, crio) = (Runtime::Containerd.into(), Runtime::Crio.into());
        assert!(!walks_on(ctrd, &pm));
        assert!(walks_on(ctrd, &blob));
        assert!(walks_on(ctrd, &tls));
        assert!(!walks_on(crio, &blob));
        assert!(walks_on(crio, &tls));
    }

    #[test]
    fn a_404_proves_the_path_and_a_rejected_node_credential_is_auth() {
        // The CA-on-[host]-only layout: the mirror with the CA answers 401 to the node's
        // credential, the server without it fails TLS.
        let a = [
            att(Some(Reason::AuthCredentialsRejected), true),
            att(Some(Reason::TLSUnknownAuthority), true),
        ];
        assert_eq!(
            path_state(Runtime::Containerd.into(), &a),
            PathState::AuthFailing(Reason::AuthCredentialsRejected)
        );
        let b = [
            att(Some(Reason::ManifestNotFound), false),
            att(Some(Reason::TLSUnknownAuthority), false),
        ];
        assert_eq!(
            path_state(Runtime::Containerd.into(), &b),
            PathState::Reachable
        );
        let c = [
            att(Some(Reason::ConnectRefused), false),
            att(Some(Reason::TLSUnknownAuthority), false),
        ];
        assert_eq!(
            path_state(Runtime::Containerd.into(), &c),
            PathState::Unreachable(Reason::ConnectRefused)
        );
        assert_eq!(
            path_state(Runtime::Crio.into(), &c),
            PathState::Unreachable(Reason::TLSUnknownAuthority)
        );
        let d = [att(Some(Reason::RateLimited), false)];
        assert_eq!(
            path_state(Runtime::Containerd.into(), &d),
            PathState::Inconclusive(Reason::RateLimited)
        );
    }
}
