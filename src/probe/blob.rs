//! blob phase: HEAD the config blob and follow redirects to wherever the registry sends
//! blob downloads (a CDN or object store on another host). A node that reaches the
//! registry but not that host cannot pull, so every new host's dns/connect/tls is
//! recorded, and `Authorization` is never forwarded to it. Presigned blob URLs
//! (`X-Amz-Signature`, `sig=`) are credentials: messages name the host only.

use http::{HeaderValue, Method};
use url::Url;

use super::http::{RedirectFailure, Request, Session, MAX_REDIRECTS};
use super::outcome::{Failure, Phase, Reason};

/// Blob HEAD responses carry no body worth reading.
const MAX_BLOB_BODY: usize = 64 * 1024;

/// Check that `url` (the registry's blob URL) is servable. Returns a detail string and
/// the host that finally answered.
pub async fn check(
    session: &mut Session<'_>,
    url: Url,
    authorization: Option<HeaderValue>,
) -> Result<(String, String), Failure> {
    let mut req = Request::new(Method::HEAD, url.clone());
    if let Some(a) = authorization {
        req.headers.insert(http::header::AUTHORIZATION, a);
    }
    let resp = session
        .send_following(&req, MAX_BLOB_BODY, Phase::Blob)
        .await
        .map_err(redirect_failure)?;
    let host = match (resp.url.host_str(), resp.url.port_or_known_default()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        _ => String::new(),
    };
    let via = if resp.url.host_str() != url.host_str() {
        format!(
            " via redirect to {}",
            resp.url.host_str().unwrap_or_default()
        )
    } else {
        String::new()
    };
    match resp.status.as_u16() {
        200..=299 => Ok((format!("{}{via}", resp.status), host)),
        404 => Err(Failure::new(
            Reason::BlobNotFound,
            format!("config blob not found at {host} (404){via}"),
        )),
        401 | 403 => Err(Failure::new(
            Reason::AuthDenied,
            format!("blob access denied at {host} ({}){via}", resp.status),
        )
        .in_phase(Phase::Blob)),
        _ => Err(Failure::new(
            Reason::BlobUnexpectedStatus,
            format!("blob request answered {} at {host}{via}", resp.status),
        )),
    }
}

/// A failed blob request as the blob phase reports it: the first hop's own failure,
/// or what went wrong on the way to the blob host.
fn redirect_failure(e: RedirectFailure) -> Failure {
    match e {
        RedirectFailure::Hop {
            hop: 0, failure, ..
        } => failure,
        // The redirect itself is unusable (an ftp:// or host-less Location, or a target
        // the node's requests may not go to): not a reachability problem of a blob host.
        RedirectFailure::Hop { failure, .. }
            if matches!(
                failure.reason,
                Reason::BlobUnexpectedStatus | Reason::ManifestMalformed | Reason::RedirectRefused
            ) =>
        {
            failure
        }
        RedirectFailure::Hop { hop, url, failure } => {
            let host = url.host_str().unwrap_or_default().to_string();
            Failure::new(
                Reason::BlobHostUnreachable,
                format!(
                    "blob host {host} (redirect hop {hop}) is unreachable: {} failed with {}: {}",
                    failure_phase(&failure),
                    failure.reason,
                    failure.message
                ),
            )
        }
        RedirectFailure::Loop { url } => Failure::new(
            Reason::BlobRedirectLoop,
            format!("blob redirects loop back to {url}"),
        ),
        RedirectFailure::TooMany { url, max } => Failure::new(
            Reason::BlobTooManyRedirects,
            format!("blob request redirected more than {max} times (last {url})"),
        ),
    }
}

/// The sub-phase a hop failed in, as a word for messages.
fn failure_phase(f: &Failure) -> &'static str {
    match f.reason.phase() {
        Phase::Dns => "dns",
        Phase::Connect => "connect",
        Phase::Tls => "tls",
        _ => "http",
    }
}

/// The redirect limit, re-exported for documentation.
pub const REDIRECT_LIMIT: usize = MAX_REDIRECTS;
