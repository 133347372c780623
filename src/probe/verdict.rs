//! Which failure the runtime reports when a pull walks several endpoints, when it stops
//! walking, and what the endpoints proved about the node's path to a registry.
//!
//! containerd 1.6.20 (`remotes/docker/resolver.go`, `Resolve`): every host with the
//! needed capabilities is tried in order; a 404 is skipped silently ("trying next host -
//! response was http.StatusNotFound"), any other failure is stored as `firstErr` only if
//! none is stored yet ("Set firstErr when encountering the first non-404 status code")
//! and the next host is tried; when every host fails the error is `firstErr`, or "not
//! found" if every host answered 404. After a host resolved the reference, the fetcher
//! (`remotes/docker/fetcher.go`, `Fetch`) again walks the hosts for each manifest and
//! blob, keeping the first error; selecting the platform from an index happens after the
//! fetch and does not try another host.
//!
//! CRI-O / containers/image (`docker/docker_image_src.go`, `newImageSource`): each pull
//! source (mirrors, then the primary) is tried until one loads the manifest; that source
//! then serves everything else. When all fail, the *last* attempt's error is the primary
//! one ("(Mirrors also failed: …): primary: err").

use super::outcome::{EndpointAttempt, Failure, Phase, Reason};
use crate::runtime::Runtime;

/// A failure at the resolve step (the manifest request by tag or digest and everything
/// before it: dns, connect, tls, auth): the runtime goes on to the next endpoint.
fn at_resolve(f: &Failure) -> bool {
    matches!(
        f.phase,
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

/// After an attempt failed with `f`, does the runtime try its next endpoint?
pub fn walks_on(runtime: Runtime, f: &Failure) -> bool {
    if at_resolve(f) {
        return true;
    }
    match runtime {
        // The fetcher tries the other hosts for a manifest or blob; a platform missing
        // from the resolved index is final.
        Runtime::Containerd => f.reason != Reason::PlatformMissing,
        // containers/image is committed to the source that loaded the manifest.
        Runtime::Crio => false,
    }
}

/// Index of the attempt whose failure the runtime reports, among the failed attempts of
/// one pull (one credential), in the order tried. `None` for an empty slice.
pub fn reported_failure(runtime: Runtime, attempts: &[&EndpointAttempt]) -> Option<usize> {
    if attempts.is_empty() {
        return None;
    }
    match runtime {
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
pub fn path_state(runtime: Runtime, attempts: &[EndpointAttempt]) -> PathState {
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
    let reason = reported_failure(runtime, &failed)
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
        assert_eq!(reported_failure(Runtime::Containerd, &refs), Some(1));
        assert_eq!(reported_failure(Runtime::Crio, &refs), Some(2));
        let all_404 = [
            att(Some(Reason::ManifestNotFound), false),
            att(Some(Reason::RepositoryNotFound), false),
        ];
        let refs: Vec<&EndpointAttempt> = all_404.iter().collect();
        assert_eq!(reported_failure(Runtime::Containerd, &refs), Some(0));
    }

    #[test]
    fn platform_missing_stops_containerd_but_blob_failures_walk_on() {
        let pm = Failure::new(Reason::PlatformMissing, "");
        let blob = Failure::new(Reason::BlobHostUnreachable, "");
        let tls = Failure::new(Reason::TLSUnknownAuthority, "");
        assert!(!walks_on(Runtime::Containerd, &pm));
        assert!(walks_on(Runtime::Containerd, &blob));
        assert!(walks_on(Runtime::Containerd, &tls));
        assert!(!walks_on(Runtime::Crio, &blob));
        assert!(walks_on(Runtime::Crio, &tls));
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
            path_state(Runtime::Containerd, &a),
            PathState::AuthFailing(Reason::AuthCredentialsRejected)
        );
        let b = [
            att(Some(Reason::ManifestNotFound), false),
            att(Some(Reason::TLSUnknownAuthority), false),
        ];
        assert_eq!(path_state(Runtime::Containerd, &b), PathState::Reachable);
        let c = [
            att(Some(Reason::ConnectRefused), false),
            att(Some(Reason::TLSUnknownAuthority), false),
        ];
        assert_eq!(
            path_state(Runtime::Containerd, &c),
            PathState::Unreachable(Reason::ConnectRefused)
        );
        assert_eq!(
            path_state(Runtime::Crio, &c),
            PathState::Unreachable(Reason::TLSUnknownAuthority)
        );
        let d = [att(Some(Reason::RateLimited), false)];
        assert_eq!(
            path_state(Runtime::Containerd, &d),
            PathState::Inconclusive(Reason::RateLimited)
        );
    }
}
