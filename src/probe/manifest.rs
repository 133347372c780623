//! manifest phase helpers: the runtime's Accept list, status classification (with the
//! distribution error codes), digests, and what a manifest body says.

use sha2::{Digest as _, Sha256};

use super::http::Response;
use super::outcome::{Failure, RateLimit, Reason};
use super::Runtime;
use crate::redact;
use crate::runtime::RuntimeRules;

pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const MEDIA_DOCKER_SCHEMA1_SIGNED: &str =
    "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// containerd's `MaxManifestSize` (core/remotes/docker/resolver.go: `4 * 1048 * 1048`).
pub const MAX_MANIFEST_SIZE: usize = 4 * 1048 * 1048;

/// The Accept header each runtime sends when resolving a reference.
pub fn accept(runtime: Runtime) -> &'static str {
    match runtime {
        // containerd resolver.go, this exact order (1.7 and main).
        Runtime::Containerd => "application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, */*",
        // containers/image manifest.DefaultRequestedManifestMIMETypes.
        Runtime::Crio => "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.v1+prettyjws, application/vnd.docker.distribution.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.index.v1+json",
    }
}

/// A Docker schema 1 manifest (`…manifest.v1+prettyjws` / `…v1+json`).
pub fn is_schema1(media_type: &str) -> bool {
    media_type == MEDIA_DOCKER_SCHEMA1_SIGNED || media_type == MEDIA_DOCKER_SCHEMA1
}

/// Does the runtime refuse a schema 1 manifest? containerd 1.6 and 1.7 convert it
/// (`WithSchema1Conversion`, deprecated since 1.7); 2.0 disables that by default (the
/// transfer service's `Pull`, core/transfer/local/pull.go v2.0.0: "schema 1 image
/// manifests are no longer supported"; the CRI local pull only with
/// `CONTAINERD_ENABLE_DEPRECATED_PULL_SCHEMA_1_IMAGE=1`, pkg/deprecation), and 2.1 removed
/// it (commit d9c88956 "Remove the support for Schema 1 images"; v2.1.9
/// core/remotes/docker/resolver.go: "media type … is no longer supported since containerd
/// v2.0"). CRI-O (containers/image) still pulls it. Seen with 1.6.20, 1.7.24 and 2.1.9 in
/// tests/oracle_containerd.rs.
pub fn refuses_schema1(rules: RuntimeRules) -> bool {
    rules.containerd_at_least(2, 0)
}

pub fn is_index(media_type: &str) -> bool {
    media_type == MEDIA_OCI_INDEX || media_type == MEDIA_DOCKER_LIST
}

/// A distribution-spec error code from an error body (`{"errors":[{"code":...}]}`).
pub fn error_code(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Errs {
        errors: Vec<Err>,
    }
    #[derive(serde::Deserialize)]
    struct Err {
        code: String,
    }
    serde_json::from_slice::<Errs>(body)
        .ok()
        .and_then(|e| e.errors.into_iter().next())
        .map(|e| e.code)
}

/// Longest `Retry-After` taken from a registry (one day); a bigger value is capped.
pub const MAX_RETRY_AFTER_S: u64 = 24 * 3600;

/// `Retry-After` as seconds (delta-seconds form; HTTP dates are rare on registries),
/// capped at [`MAX_RETRY_AFTER_S`]. Digits beyond `u64` are not a number: `None`.
pub fn retry_after(resp: &Response) -> Option<u64> {
    let v: u64 = resp.header("retry-after")?.trim().parse().ok()?;
    Some(v.min(MAX_RETRY_AFTER_S))
}

/// Docker Hub's `ratelimit-limit: 100;w=21600` / `ratelimit-remaining: 76;w=21600`.
pub fn rate_limit(resp: &Response) -> Option<RateLimit> {
    let parse = |name: &str| -> (Option<u64>, Option<u64>) {
        let Some(v) = resp.header(name) else {
            return (None, None);
        };
        let mut parts = v.split(';');
        let n = parts.next().and_then(|p| p.trim().parse().ok());
        let w = parts
            .find_map(|p| p.trim().strip_prefix("w=").map(str::to_string))
            .and_then(|w| w.parse().ok());
        (n, w)
    };
    let (limit, w1) = parse("ratelimit-limit");
    let (remaining, w2) = parse("ratelimit-remaining");
    if limit.is_none() && remaining.is_none() {
        return None;
    }
    Some(RateLimit {
        limit,
        remaining,
        window_s: w1.or(w2),
        source: resp
            .header("docker-ratelimit-source")
            .map(|s| redact::text_max(s, 64)),
    })
}

/// Classify a failing manifest response (after auth has been handled).
pub fn status_failure(resp: &Response, what: &str) -> Failure {
    let code = error_code(&resp.body);
    let status = resp.status.as_u16();
    let mut f = match (status, code.as_deref()) {
        (404, Some("NAME_UNKNOWN")) => Failure::new(
            Reason::RepositoryNotFound,
            format!("repository not found: {what} (NAME_UNKNOWN)"),
        ),
        (404, _) => Failure::new(
            Reason::ManifestNotFound,
            format!("manifest not found: {what}{}", code_suffix(&code)),
        ),
        (403, _) | (_, Some("DENIED")) => Failure::new(
            Reason::AuthDenied,
            format!("access denied to {what} ({status}{})", code_suffix(&code)),
        ),
        (429, _) | (_, Some("TOOMANYREQUESTS")) => Failure::new(
            Reason::RateLimited,
            format!("rate limited by the registry ({status})"),
        ),
        (500..=599, _) => Failure::new(
            Reason::RegistryServerError,
            format!("registry server error {status} for {what}"),
        ),
        _ => Failure::new(
            Reason::ManifestUnexpectedStatus,
            format!(
                "unexpected status {status} for {what}{}",
                code_suffix(&code)
            ),
        ),
    };
    if f.reason == Reason::RateLimited {
        f.retry_after_s = retry_after(resp);
        if let Some(s) = f.retry_after_s {
            f.message.push_str(&format!("; retry after {s}s"));
        }
    }
    f
}

/// The registry's error code for a message: server-chosen, so sanitized and short.
fn code_suffix(code: &Option<String>) -> String {
    code.as_ref()
        .map(|c| format!(" ({})", redact::text_max(c, 64)))
        .unwrap_or_default()
}

pub fn sha256_digest(body: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(body)))
}

/// go-digest `Parse` + `Validate` for the algorithms it registers (containerd refuses
/// anything else): `sha256:` + 64, `sha384:` + 96, `sha512:` + 128 lowercase hex.
/// Digests from a server (index entries, config descriptors) go into request paths and
/// messages, so one that is not this shape is a malformed manifest.
pub fn is_valid_digest(d: &str) -> bool {
    let Some((alg, hexpart)) = d.split_once(':') else {
        return false;
    };
    let len = match alg {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return false,
    };
    hexpart.len() == len
        && hexpart
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Check a fetched body against the digest it was asked for / announced.
pub fn verify_digest(body: &[u8], expected: &str) -> Result<(), Failure> {
    if let Some(hexpart) = expected.strip_prefix("sha256:") {
        let got = hex::encode(Sha256::digest(body));
        if got != hexpart {
            return Err(Failure::new(
                Reason::ManifestMalformed,
                format!(
                    "manifest body does not match digest {} (got sha256:{got})",
                    redact::text_max(expected, 80)
                ),
            ));
        }
    }
    Ok(())
}

/// The fields of a manifest or index that the later phases need.
#[derive(Debug, Default)]
pub struct ManifestBody {
    pub media_type: Option<String>,
    pub config_digest: Option<String>,
    pub manifests: Vec<IndexEntry>,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct IndexEntry {
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    pub digest: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub platform: Option<IndexPlatform>,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct IndexPlatform {
    pub architecture: String,
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

/// Parse just what is needed, tolerantly (Docker lists and OCI indexes share a shape).
pub fn parse_body(body: &[u8]) -> Result<ManifestBody, Failure> {
    #[derive(serde::Deserialize)]
    struct Raw {
        #[serde(rename = "mediaType", default)]
        media_type: Option<String>,
        #[serde(default)]
        config: Option<Desc>,
        #[serde(default)]
        manifests: Option<Vec<IndexEntry>>,
        #[serde(rename = "schemaVersion", default)]
        schema_version: Option<u32>,
        /// Schema 1: the layers, newest first (`blobSum`).
        #[serde(rename = "fsLayers", default)]
        fs_layers: Option<Vec<FsLayer>>,
    }
    #[derive(serde::Deserialize)]
    struct Desc {
        digest: String,
    }
    #[derive(serde::Deserialize)]
    struct FsLayer {
        #[serde(rename = "blobSum")]
        blob_sum: String,
    }
    let raw: Raw = serde_json::from_slice(body).map_err(|e| {
        Failure::new(
            Reason::ManifestMalformed,
            format!(
                "manifest is not usable: {}",
                crate::redact::ParseError::json(&e)
            ),
        )
    })?;
    let malformed = |what: String| Failure::new(Reason::ManifestMalformed, what);
    if raw.schema_version == Some(1) {
        // No config blob: the blob phase checks the first layer instead.
        let first = raw
            .fs_layers
            .unwrap_or_default()
            .into_iter()
            .next()
            .map(|l| l.blob_sum)
            .filter(|d| is_valid_digest(d))
            .ok_or_else(|| malformed("the schema 1 manifest names no valid layer".into()))?;
        return Ok(ManifestBody {
            media_type: Some(MEDIA_DOCKER_SCHEMA1_SIGNED.to_string()),
            config_digest: Some(first),
            manifests: Vec::new(),
        });
    }
    if let Some(c) = &raw.config {
        if !is_valid_digest(&c.digest) {
            return Err(malformed(
                "the manifest's config descriptor has an invalid digest".into(),
            ));
        }
    }
    let mut manifests = raw.manifests.unwrap_or_default();
    for (i, m) in manifests.iter_mut().enumerate() {
        if !is_valid_digest(&m.digest) {
            return Err(malformed(format!("index entry {i} has an invalid digest")));
        }
        // Server-chosen strings that reach messages and headers: sanitized and short
        // (a real platform or media type is unchanged by this).
        m.media_type = m.media_type.as_deref().map(|s| redact::text_max(s, 128));
        if let Some(p) = &mut m.platform {
            p.os = redact::text_max(&p.os, 64);
            p.architecture = redact::text_max(&p.architecture, 64);
            p.variant = p.variant.as_deref().map(|v| redact::text_max(v, 64));
        }
    }
    Ok(ManifestBody {
        media_type: raw.media_type.map(|s| redact::text_max(&s, 128)),
        config_digest: raw.config.map(|c| c.digest),
        manifests,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_manifest_bodies_do_not_panic() {
        for body in [
            &b""[..],
            b"null",
            b"[]",
            b"{\"manifests\": 3}",
            b"{\"schemaVersion\":1}",
            b"\xff\xfe",
        ] {
            let _ = parse_body(body);
        }
        assert_eq!(
            parse_body(b"{\"schemaVersion\":1}").unwrap_err().reason,
            Reason::ManifestMalformed
        );
        let layer = format!("sha256:{}", "cd".repeat(32));
        let s1 = format!(r#"{{"schemaVersion":1,"fsLayers":[{{"blobSum":"{layer}"}}]}}"#);
        assert_eq!(
            parse_body(s1.as_bytes()).unwrap().config_digest.as_deref(),
            Some(layer.as_str())
        );
        let d = format!("sha256:{}", "ab".repeat(32));
        let m =
            parse_body(format!(r#"{{"schemaVersion":2,"config":{{"digest":"{d}"}}}}"#).as_bytes())
                .unwrap();
        assert_eq!(m.config_digest.as_deref(), Some(d.as_str()));
    }

    /// Digests from the server go into request paths (`manifests/<digest>`) and
    /// messages: only go-digest's valid forms pass.
    #[test]
    fn server_digests_and_strings_are_validated() {
        let hex = "0".repeat(64);
        for bad in [
            "sha256:ab",
            "sha256:../../../v2/_catalog",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "sha256",
            "",
        ] {
            let idx = format!(r#"{{"manifests":[{{"digest":"{bad}"}}]}}"#);
            let e = parse_body(idx.as_bytes()).unwrap_err();
            assert_eq!(e.reason, Reason::ManifestMalformed, "{bad}");
            assert!(bad.is_empty() || !e.message.contains(bad), "{}", e.message);
            let cfg = format!(r#"{{"config":{{"digest":"{bad}"}}}}"#);
            assert!(parse_body(cfg.as_bytes()).is_err(), "{bad}");
        }
        assert!(is_valid_digest(&format!("sha256:{hex}")));
        assert!(!is_valid_digest(&format!("sha256:{}", "A".repeat(64))));
        assert!(is_valid_digest(&format!("sha512:{}", "f".repeat(128))));
        let idx = format!(
            r#"{{"manifests":[{{"digest":"sha256:{hex}","platform":{{"os":"linux\u001b[2J{}","architecture":"amd64"}}}}]}}"#,
            "x".repeat(500)
        );
        let m = parse_body(idx.as_bytes()).unwrap();
        let os = &m.manifests[0].platform.as_ref().unwrap().os;
        assert!(!os.contains('\u{1b}') && os.chars().count() <= 65, "{os}");
    }

    #[test]
    fn error_codes() {
        assert_eq!(
            error_code(br#"{"errors":[{"code":"NAME_UNKNOWN","message":"x"}]}"#).as_deref(),
            Some("NAME_UNKNOWN")
        );
        assert_eq!(error_code(b"<html>"), None);
    }

    fn response(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Response {
        let mut h = http::HeaderMap::new();
        for (k, v) in headers {
            h.insert(
                http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        Response {
            status: http::StatusCode::from_u16(status).unwrap(),
            headers: h,
            body: bytes::Bytes::copy_from_slice(body),
            url: url::Url::parse("https://r.example/v2/a/manifests/b").unwrap(),
        }
    }

    #[test]
    fn retry_after_is_capped_and_error_codes_sanitized() {
        let r = response(429, &[("retry-after", "99999999999")], b"");
        assert_eq!(retry_after(&r), Some(MAX_RETRY_AFTER_S));
        let f = status_failure(&r, "a:b");
        assert_eq!(f.retry_after_s, Some(MAX_RETRY_AFTER_S));
        let r = response(429, &[("retry-after", "184467440737095516160")], b"");
        assert_eq!(retry_after(&r), None);
        let code = format!("X\\u001b[2J{}", "Y".repeat(5000));
        let body = format!(r#"{{"errors":[{{"code":"{code}"}}]}}"#);
        let f = status_failure(&response(418, &[], body.as_bytes()), "a:b");
        assert!(!f.message.contains('\u{1b}'), "{}", f.message);
        assert!(f.message.len() < 200, "{}", f.message);
    }

    #[test]
    fn digest_check() {
        let d = sha256_digest(b"abc");
        assert!(verify_digest(b"abc", &d).is_ok());
        assert!(verify_digest(b"abd", &d).is_err());
    }
}
