//! Image references, normalised exactly the way the kubelet and the CRI runtimes do.
//!
//! The rules are those of distribution/reference (`normalize.go` `ParseNormalizedNamed`,
//! `ParseDockerRef`; `regexp.go` for the grammar), which the kubelet, containerd and
//! CRI-O all use. The grammar is hand-written rather than taken from `oci-spec`, whose
//! `Reference` has no IPv6 hosts, no "uppercase first component is a domain" rule, and
//! keeps a tag alongside a digest when printing.
//!
//! ```text
//! reference        := name [ ":" tag ] [ "@" digest ]
//! name             := [domain '/'] path-component ['/' path-component]*
//! domain           := host [':' port-number]
//! host             := domain-name | '[' [a-fA-F0-9:]+ ']'
//! domain-name      := domain-component ['.' domain-component]*
//! domain-component := /([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])/
//! path-component   := /[a-z0-9]+/ [separator /[a-z0-9]+/]*
//! separator        := /[_.]|__|[-]+/
//! tag              := /[\w][\w.-]{0,127}/
//! digest           := algorithm ":" /[0-9a-fA-F]{32,}/   (then go-digest validation)
//! ```

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Docker Hub's canonical domain in references.
const DEFAULT_DOMAIN: &str = "docker.io";
/// Docker Hub's old domain, rewritten to [`DEFAULT_DOMAIN`] by `splitDockerDomain`.
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
/// Where containerd actually sends Docker Hub requests (core/remotes/docker/config/hosts.go).
const DOCKER_HUB_REGISTRY_HOST: &str = "registry-1.docker.io";
/// Prefix of Docker Hub's official images.
const OFFICIAL_REPO_PREFIX: &str = "library/";
/// `NameTotalLengthMax` in distribution/reference: limit on `domain/path`.
pub const NAME_TOTAL_LENGTH_MAX: usize = 255;
/// Longest tag: one leading character plus up to 127 more.
const TAG_MAX: usize = 128;

/// A normalised image reference.
///
/// Invariant after [`ImageRef::parse`]: `tag` is `Some` whenever `digest` is `None`
/// (`latest` is added, like `TagNameOnly`). A tag given alongside a digest is kept in
/// `tag` for display, but [`ImageRef::reference`] and [`ImageRef::normalized`] use the
/// digest, as `ParseDockerRef` does.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// Registry domain as written (after `index.docker.io` → `docker.io`), with port;
    /// IPv6 hosts keep their brackets: `[::1]:5000`.
    pub domain: String,
    /// Repository path below the domain, e.g. `library/nginx`.
    pub path: String,
    pub tag: Option<String>,
    /// `algorithm:hex`, e.g. `sha256:…`.
    pub digest: Option<String>,
}

/// Why a string is not a valid image reference. Each variant names the part at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("image reference is empty")]
    Empty,
    #[error(
        "invalid repository name {0:?}: a 64-character hexadecimal string is an image ID, not a name"
    )]
    HexIdentifier(String),
    #[error("invalid reference: repository name {repository:?} must be lowercase")]
    UppercaseRepository { repository: String },
    #[error("invalid reference: repository name is {len} characters long, the limit is {NAME_TOTAL_LENGTH_MAX}")]
    NameTooLong { len: usize },
    #[error("invalid reference: registry domain {domain:?} is not a valid host[:port]")]
    BadDomain { domain: String },
    #[error("invalid reference: port in registry domain {domain:?} is out of range")]
    PortOutOfRange { domain: String },
    #[error("invalid reference: repository path {path:?} is not valid (lowercase letters, digits and single separators . _ __ - only)")]
    BadPath { path: String },
    #[error("invalid reference: tag {tag:?} is not valid ([A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})")]
    BadTag { tag: String },
    #[error("invalid reference: digest {digest:?} is not valid: {why}")]
    BadDigest { digest: String, why: &'static str },
}

impl ImageRef {
    /// Parses and normalises `s` like `ParseNormalizedNamed`, then adds `latest` when
    /// there is neither a tag nor a digest (`TagNameOnly`).
    pub fn parse(s: &str) -> Result<ImageRef, ReferenceError> {
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        // anchoredIdentifierRegexp: `^[a-f0-9]{64}$`.
        if s.len() == 64 && s.bytes().all(|b| matches!(b, b'a'..=b'f' | b'0'..=b'9')) {
            return Err(ReferenceError::HexIdentifier(s.to_string()));
        }
        let (domain, remainder) = split_docker_domain(s);

        // ParseNormalizedNamed checks lowercase on everything before the first ':' of
        // the remainder (so `x@SHA256:…` fails here too, as upstream).
        let remote_name = remainder.split(':').next().unwrap_or_default();
        if remote_name.to_lowercase() != remote_name {
            return Err(ReferenceError::UppercaseRepository {
                repository: remote_name.to_string(),
            });
        }

        // Neither a path nor a tag may contain '@' or ':', and a digest has no '@', so
        // the split points are the first '@' and the first ':' before it.
        let (before_digest, digest) = match remainder.split_once('@') {
            Some((b, d)) => (b, Some(d)),
            None => (remainder.as_str(), None),
        };
        let (path, tag) = match before_digest.split_once(':') {
            Some((p, t)) => (p, Some(t)),
            None => (before_digest, None),
        };

        if !is_valid_path(path) {
            return Err(ReferenceError::BadPath {
                path: path.to_string(),
            });
        }
        if !is_valid_domain(&domain) {
            // The Go regexp makes the domain optional: a first component that is not a
            // valid domain but is a valid path component (`my_reg.local/x`) parses as a
            // domain-less name. The runtimes then take the text before the first '/' as
            // the host anyway (containerd `reference.Spec.Hostname`), so keep it there.
            if !is_valid_path(&domain) {
                return Err(ReferenceError::BadDomain { domain });
            }
        }
        if let Some(t) = tag {
            if !is_valid_tag(t) {
                return Err(ReferenceError::BadTag { tag: t.to_string() });
            }
        }
        if let Some(d) = digest {
            validate_digest(d)?;
        }
        let name_len = domain.len() + 1 + path.len();
        if name_len > NAME_TOTAL_LENGTH_MAX {
            return Err(ReferenceError::NameTooLong { len: name_len });
        }

        let out = ImageRef {
            path: path.to_string(),
            tag: match (tag, digest) {
                (Some(t), _) => Some(t.to_string()),
                (None, None) => Some("latest".to_string()),
                (None, Some(_)) => None,
            },
            digest: digest.map(str::to_string),
            domain,
        };
        // Not a distribution/reference rule: a port that cannot be dialled would only
        // fail later with a less helpful error.
        if out.port_str().is_some() && out.port().is_none() {
            return Err(ReferenceError::PortOutOfRange { domain: out.domain });
        }
        Ok(out)
    }

    /// `domain/path`, e.g. `docker.io/library/nginx` (the kubelet's `repoToPull`).
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// What goes in `/v2/<path>/manifests/<reference>`: the digest if present, else the tag.
    pub fn reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// The `ParseDockerRef` form sent to CRI: `repo:tag`, or `repo@digest` (the tag is
    /// dropped when a digest is present).
    pub fn normalized(&self) -> String {
        match &self.digest {
            Some(d) => format!("{}@{}", self.repository(), d),
            None => format!(
                "{}:{}",
                self.repository(),
                self.tag.as_deref().unwrap_or("latest")
            ),
        }
    }

    pub fn is_docker_hub(&self) -> bool {
        self.domain == DEFAULT_DOMAIN
    }

    /// The upstream host the runtime contacts: `registry-1.docker.io` for Docker Hub,
    /// else the domain with its port (containerd `config.ConfigureHosts` default).
    pub fn registry_host(&self) -> String {
        if self.is_docker_hub() {
            DOCKER_HUB_REGISTRY_HOST.to_string()
        } else {
            self.domain.clone()
        }
    }

    /// The host part of the domain, IPv6 without brackets: `[::1]:5000` → `::1`.
    pub fn host_without_port(&self) -> &str {
        let d = self.domain.as_str();
        if let Some(rest) = d.strip_prefix('[') {
            return rest.split(']').next().unwrap_or(rest);
        }
        d.split(':').next().unwrap_or(d)
    }

    /// The explicit port, if any (`None` also when it does not fit in a `u16`, which
    /// [`ImageRef::parse`] rejects).
    pub fn port(&self) -> Option<u16> {
        self.port_str().and_then(|p| p.parse().ok())
    }

    fn port_str(&self) -> Option<&str> {
        let d = self.domain.as_str();
        let after_host = match d.strip_prefix('[') {
            Some(rest) => rest.split_once(']').map(|(_, after)| after)?,
            None => d,
        };
        after_host.split_once(':').map(|(_, p)| p)
    }

    /// containerd's `docker.IsLocalhost` (core/remotes/docker/config/hosts.go): the
    /// domain minus its port (via `net.SplitHostPort`) is `localhost` or a loopback IP.
    /// Like upstream, a bracketed IPv6 domain *without* a port (`[::1]`) is not
    /// localhost, because `SplitHostPort` fails and `ParseIP("[::1]")` too.
    pub fn is_localhost(&self) -> bool {
        let host = if self.port_str().is_some() {
            self.host_without_port()
        } else {
            self.domain.as_str()
        };
        if host == "localhost" {
            return true;
        }
        match host.parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) => v4.is_loopback(),
            // Go's IsLoopback also treats IPv4-mapped 127.x addresses as loopback.
            Ok(IpAddr::V6(v6)) => {
                v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
            Err(_) => false,
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.normalized())
    }
}

impl FromStr for ImageRef {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageRef::parse(s)
    }
}

/// `splitDockerDomain` (normalize.go): the first component is a domain when it is
/// `localhost`, contains `.` or `:`, or has an uppercase letter; otherwise Docker Hub.
fn split_docker_domain(name: &str) -> (String, String) {
    let (mut domain, mut remainder) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.to_lowercase() != first =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
    };
    if domain == LEGACY_DEFAULT_DOMAIN {
        domain = DEFAULT_DOMAIN.to_string();
    }
    if domain == DEFAULT_DOMAIN && !remainder.contains('/') {
        remainder = format!("{OFFICIAL_REPO_PREFIX}{remainder}");
    }
    (domain, remainder)
}

/// `domainAndPort`: (domain-name | `[` ipv6 `]`) [`:` digits].
fn is_valid_domain(d: &str) -> bool {
    let (host_ok, rest) = if let Some(inner) = d.strip_prefix('[') {
        match inner.split_once(']') {
            Some((addr, rest)) => (
                !addr.is_empty() && addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':'),
                rest,
            ),
            None => return false,
        }
    } else {
        let (host, rest) = match d.find(':') {
            Some(i) => (&d[..i], &d[i..]),
            None => (d, ""),
        };
        (
            !host.is_empty() && host.split('.').all(is_domain_component),
            rest,
        )
    };
    if !host_ok {
        return false;
    }
    match rest.strip_prefix(':') {
        None => rest.is_empty(),
        Some(port) => !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()),
    }
}

/// `([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])`
fn is_domain_component(c: &str) -> bool {
    let b = c.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
        }
        _ => false,
    }
}

/// `path-component ['/' path-component]*`
fn is_valid_path(p: &str) -> bool {
    !p.is_empty() && p.split('/').all(is_path_component)
}

/// `[a-z0-9]+ (separator [a-z0-9]+)*` with separator `[_.]|__|[-]+`.
fn is_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let mut i = 0;
    loop {
        // One alphanumeric run.
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        // One separator.
        let sep_start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        match &c[sep_start..i] {
            "." | "_" | "__" => {}
            s if s.bytes().all(|x| x == b'-') => {}
            _ => return false,
        }
    }
}

/// `[\w][\w.-]{0,127}` with `\w` = `[A-Za-z0-9_]`.
fn is_valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    let word = |x: &u8| x.is_ascii_alphanumeric() || *x == b'_';
    match b.first() {
        Some(first) if word(first) => {
            b.len() <= TAG_MAX && b.iter().all(|x| word(x) || *x == b'.' || *x == b'-')
        }
        _ => false,
    }
}

/// The reference regexp's digest grammar, then go-digest's `Digest.Validate`: the
/// algorithm must be one go-digest registers and the hex lowercase of exact length.
fn validate_digest(d: &str) -> Result<(), ReferenceError> {
    let bad = |why| ReferenceError::BadDigest {
        digest: d.to_string(),
        why,
    };
    let (alg, hex) = d
        .split_once(':')
        .ok_or_else(|| bad("expected algorithm:hex"))?;
    if !is_digest_algorithm(alg) {
        return Err(bad("malformed algorithm"));
    }
    if hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad("expected at least 32 hexadecimal characters"));
    }
    let want = match alg {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err(bad("unsupported algorithm (sha256, sha384, sha512)")),
    };
    if hex.len() != want {
        return Err(bad("wrong length for the algorithm"));
    }
    if !hex.bytes().all(|b| matches!(b, b'a'..=b'f' | b'0'..=b'9')) {
        return Err(bad("hex must be lowercase"));
    }
    Ok(())
}

/// `[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*`
fn is_digest_algorithm(a: &str) -> bool {
    !a.is_empty()
        && a.split(['-', '_', '+', '.']).all(|part| {
            let mut bytes = part.bytes();
            bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
                && bytes.all(|b| b.is_ascii_alphanumeric())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// input, domain, path, tag, digest, normalized
    type Row = (
        String,
        &'static str,
        &'static str,
        Option<&'static str>,
        Option<&'static str>,
        String,
    );
    type ErrCheck = fn(&ReferenceError) -> bool;

    fn p(s: &str) -> ImageRef {
        match ImageRef::parse(s) {
            Ok(r) => r,
            Err(e) => panic!("{s:?} should parse: {e}"),
        }
    }

    #[test]
    fn normalisation_table() {
        // input, domain, path, tag, digest, normalized
        let dn = format!("docker.io/library/nginx@{D}");
        #[rustfmt::skip]
        let cases: Vec<Row> = vec![
            ("nginx".into(), "docker.io", "library/nginx", Some("latest"), None, "docker.io/library/nginx:latest".into()),
            ("library/nginx".into(), "docker.io", "library/nginx", Some("latest"), None, "docker.io/library/nginx:latest".into()),
            ("nginx:1.25".into(), "docker.io", "library/nginx", Some("1.25"), None, "docker.io/library/nginx:1.25".into()),
            ("index.docker.io/x".into(), "docker.io", "library/x", Some("latest"), None, "docker.io/library/x:latest".into()),
            ("index.docker.io/a/b".into(), "docker.io", "a/b", Some("latest"), None, "docker.io/a/b:latest".into()),
            ("docker.io/x".into(), "docker.io", "library/x", Some("latest"), None, "docker.io/library/x:latest".into()),
            ("user/repo".into(), "docker.io", "user/repo", Some("latest"), None, "docker.io/user/repo:latest".into()),
            ("localhost/x".into(), "localhost", "x", Some("latest"), None, "localhost/x:latest".into()),
            ("localhost".into(), "docker.io", "library/localhost", Some("latest"), None, "docker.io/library/localhost:latest".into()),
            ("localhost:5000".into(), "docker.io", "library/localhost", Some("5000"), None, "docker.io/library/localhost:5000".into()),
            ("localhost:5000/x:tag".into(), "localhost:5000", "x", Some("tag"), None, "localhost:5000/x:tag".into()),
            (format!("host:5000/a/b@{D}"), "host:5000", "a/b", None, Some(D), format!("host:5000/a/b@{D}")),
            (format!("nginx:1.25@{D}"), "docker.io", "library/nginx", Some("1.25"), Some(D), dn.clone()),
            (format!("nginx@{D}"), "docker.io", "library/nginx", None, Some(D), dn),
            ("[::1]:5000/x".into(), "[::1]:5000", "x", Some("latest"), None, "[::1]:5000/x:latest".into()),
            ("[fe80::1]/x/y:v1".into(), "[fe80::1]", "x/y", Some("v1"), None, "[fe80::1]/x/y:v1".into()),
            ("Uppercase.io/x".into(), "Uppercase.io", "x", Some("latest"), None, "Uppercase.io/x:latest".into()),
            ("Foo/x".into(), "Foo", "x", Some("latest"), None, "Foo/x:latest".into()),
            ("foo/x".into(), "docker.io", "foo/x", Some("latest"), None, "docker.io/foo/x:latest".into()),
            ("a.b-c.io:443/x__y/z--z".into(), "a.b-c.io:443", "x__y/z--z", Some("latest"), None, "a.b-c.io:443/x__y/z--z:latest".into()),
            ("x:Tag_1.-".into(), "docker.io", "library/x", Some("Tag_1.-"), None, "docker.io/library/x:Tag_1.-".into()),
            ("registry.k8s.io/pause:3.9".into(), "registry.k8s.io", "pause", Some("3.9"), None, "registry.k8s.io/pause:3.9".into()),
            // Underscore first component: not a domain to the regexp, but runtimes use it as host.
            ("my_reg.local/x".into(), "my_reg.local", "x", Some("latest"), None, "my_reg.local/x:latest".into()),
        ];
        for (input, domain, path, tag, digest, norm) in cases {
            let r = p(&input);
            assert_eq!(r.domain, domain, "{input}");
            assert_eq!(r.path, path, "{input}");
            assert_eq!(r.tag.as_deref(), tag, "{input}");
            assert_eq!(r.digest.as_deref(), digest, "{input}");
            assert_eq!(r.normalized(), norm, "{input}");
            assert_eq!(r.to_string(), norm, "{input}");
            // The normalised form is a fixed point.
            assert_eq!(p(&norm).normalized(), norm, "{input}");
        }
    }

    #[test]
    fn accessors() {
        let r = p("nginx");
        assert_eq!(r.repository(), "docker.io/library/nginx");
        assert_eq!(r.reference(), "latest");
        assert!(r.is_docker_hub());
        assert_eq!(r.registry_host(), "registry-1.docker.io");
        assert_eq!(r.host_without_port(), "docker.io");
        assert_eq!(r.port(), None);
        assert!(!r.is_localhost());

        let r = p(&format!("nginx:1@{D}"));
        assert_eq!(r.reference(), D);

        let r = p("[::1]:5000/x");
        assert_eq!(r.host_without_port(), "::1");
        assert_eq!(r.port(), Some(5000));
        assert_eq!(r.registry_host(), "[::1]:5000");
        assert!(r.is_localhost());
        assert!(!r.is_docker_hub());

        let r = p("reg.example:8443/a/b");
        assert_eq!(r.host_without_port(), "reg.example");
        assert_eq!(r.port(), Some(8443));
        assert_eq!(r.registry_host(), "reg.example:8443");
        assert_eq!(r.repository(), "reg.example:8443/a/b");
    }

    #[test]
    fn localhost_like_containerd() {
        for (s, want) in [
            ("localhost/x", true),
            ("localhost:5000/x", true),
            ("127.0.0.1/x", true),
            ("127.1.2.3:5000/x", true),
            ("[::1]:5000/x", true),
            ("[::ffff:7f00:1]:80/x", true),
            // SplitHostPort fails without a port, then ParseIP("[::1]") fails.
            ("[::1]/x", false),
            ("LOCALHOST/x", false),
            ("10.0.0.1/x", false),
            ("localhost.localdomain/x", false),
            ("nginx", false),
        ] {
            assert_eq!(p(s).is_localhost(), want, "{s}");
        }
    }

    #[test]
    fn hostile_input_is_rejected_with_the_right_reason() {
        use ReferenceError as E;
        let hex64 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let long = format!("a/{}", "b".repeat(300));
        #[rustfmt::skip]
        let cases: Vec<(String, ErrCheck)> = vec![
            ("".into(), |e| matches!(e, E::Empty)),
            (hex64.into(), |e| matches!(e, E::HexIdentifier(_))),
            (" nginx".into(), |e| matches!(e, E::BadPath { .. })),
            ("ng inx".into(), |e| matches!(e, E::BadPath { .. })),
            ("nginx ".into(), |e| matches!(e, E::BadPath { .. })),
            ("Nginx".into(), |e| matches!(e, E::UppercaseRepository { .. })),
            ("docker.io/Library/nginx".into(), |e| matches!(e, E::UppercaseRepository { .. })),
            ("reg.io/a/B:tag".into(), |e| matches!(e, E::UppercaseRepository { .. })),
            (long, |e| matches!(e, E::NameTooLong { len } if *len == 10 + 2 + 300)),
            (format!("nginx@sha256:{}", "g".repeat(64)), |e| matches!(e, E::BadDigest { .. })),
            (format!("nginx@sha256:{}", "A".repeat(64)), |e| matches!(e, E::BadDigest { .. })),
            (format!("nginx@sha256:{}", "a".repeat(63)), |e| matches!(e, E::BadDigest { .. })),
            (format!("nginx@md5:{}", "a".repeat(32)), |e| matches!(e, E::BadDigest { .. })),
            (format!("nginx@SHA256:{}", "a".repeat(64)), |e| matches!(e, E::UppercaseRepository { .. })),
            ("a@b".into(), |e| matches!(e, E::BadDigest { .. })),
            ("nginx@".into(), |e| matches!(e, E::BadDigest { .. })),
            (format!("nginx@{D}@{D}"), |e| matches!(e, E::BadDigest { .. })),
            ("ngïnx".into(), |e| matches!(e, E::BadPath { .. })),
            ("régistry.io/x".into(), |e| matches!(e, E::BadDomain { .. })),
            ("x:täg".into(), |e| matches!(e, E::BadTag { .. })),
            (":tag".into(), |e| matches!(e, E::BadPath { .. })),
            ("nginx:".into(), |e| matches!(e, E::BadTag { .. })),
            ("nginx:.x".into(), |e| matches!(e, E::BadTag { .. })),
            (format!("nginx:{}", "t".repeat(129)), |e| matches!(e, E::BadTag { .. })),
            ("nginx/".into(), |e| matches!(e, E::BadPath { .. })),
            ("reg.io/x/".into(), |e| matches!(e, E::BadPath { .. })),
            ("reg.io/".into(), |e| matches!(e, E::BadPath { .. })),
            ("reg.io//x".into(), |e| matches!(e, E::BadPath { .. })),
            ("/x".into(), |e| matches!(e, E::BadPath { .. })),
            ("a..b/x".into(), |e| matches!(e, E::BadDomain { .. })),
            ("-a.io/x".into(), |e| matches!(e, E::BadDomain { .. })),
            ("a.io:/x".into(), |e| matches!(e, E::BadDomain { .. })),
            ("a.io:port/x".into(), |e| matches!(e, E::BadDomain { .. })),
            ("[::1/x".into(), |e| matches!(e, E::BadDomain { .. })),
            ("[]:5000/x".into(), |e| matches!(e, E::BadDomain { .. })),
            ("[::g]/x".into(), |e| matches!(e, E::BadDomain { .. })),
            ("localhost:99999/x".into(), |e| matches!(e, E::PortOutOfRange { .. })),
            ("a.-b/x".into(), |e| matches!(e, E::BadDomain { .. })),
            ("x/a..b".into(), |e| matches!(e, E::BadPath { .. })),
            ("x/a___b".into(), |e| matches!(e, E::BadPath { .. })),
            ("x/a_".into(), |e| matches!(e, E::BadPath { .. })),
        ];
        for (input, check) in cases {
            match ImageRef::parse(&input) {
                Ok(r) => panic!("{input:?} parsed as {r:?}"),
                Err(e) => assert!(check(&e), "{input:?}: unexpected error {e:?}"),
            }
        }
    }

    #[test]
    fn name_length_counts_the_normalised_name() {
        // "docker.io/library/" is 18 characters: 237 more reach 255 exactly.
        assert!(ImageRef::parse(&"a".repeat(237)).is_ok());
        assert!(matches!(
            ImageRef::parse(&"a".repeat(238)),
            Err(ReferenceError::NameTooLong { len: 256 })
        ));
    }

    #[test]
    fn other_digest_algorithms() {
        assert!(ImageRef::parse(&format!("x@sha512:{}", "a".repeat(128))).is_ok());
        assert!(ImageRef::parse(&format!("x@sha384:{}", "a".repeat(96))).is_ok());
    }

    /// Random strings over an alphabet of the grammar's special characters: parsing
    /// never panics, and anything accepted round-trips through its normalised form.
    #[test]
    fn fuzz_never_panics_and_round_trips() {
        let alphabet: Vec<char> = "aZ09./:@_-[]x sha256:fé\u{0}/"
            .chars()
            .chain(['\u{ff}', 'İ', '\u{1F600}'])
            .collect();
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..50_000 {
            let len = (next() % 24) as usize;
            let s: String = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            if let Ok(r) = ImageRef::parse(&s) {
                let n = r.normalized();
                let again = ImageRef::parse(&n).unwrap_or_else(|e| panic!("{s:?} → {n:?}: {e}"));
                assert_eq!(again.normalized(), n, "{s:?}");
                let _ = (r.port(), r.host_without_port(), r.is_localhost());
            }
        }
        // Raw bytes, lossily decoded.
        for _ in 0..20_000 {
            let len = (next() % 40) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| (next() & 0xff) as u8).collect();
            let _ = ImageRef::parse(&String::from_utf8_lossy(&bytes));
        }
    }
}
