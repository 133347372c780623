//! The kubelet's credential matching: `BasicDockerKeyring` from kubernetes
//! pkg/credentialprovider/keyring.go (`Add`, `Lookup`, `URLsMatch`, `isDefaultRegistryMatch`).
//!
//! Keys are normalised when added (`https://` prepended when there is no scheme, a
//! `/v1/` or `/v2/` path prefix cut to `/`, key = host + path or just host). An image
//! (its repository, `docker.io/library/nginx`, no tag, as the kubelet's `repoToPull`)
//! matches a key when the ports are equal as strings, the hosts have the same number of
//! dot-labels, every label matches with Go's `filepath.Match`, and the key's path is a
//! plain string prefix of the image's path. Every matching key is used, most specific
//! (reverse-lexicographic) first; with no match, a Docker Hub image falls back to the
//! `index.docker.io` key.
//!
//! Go's `net/url` and `filepath.Match` ([`super::glob`], Go's own linear-time algorithm)
//! are reproduced closely enough that keys the Go code rejects (bad port, bad escape, bad
//! glob) never match here either.

use super::glob::go_filepath_match;
use super::SourcedCredential;
use crate::reference::ImageRef;

/// The key `https://index.docker.io/v1/` normalises to; the Docker Hub fallback.
const DEFAULT_REGISTRY_HOST: &str = "index.docker.io";

/// Credentials indexed by normalised registry key, looked up like the kubelet does.
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    /// (normalised key, credential), in insertion order.
    entries: Vec<(String, SourcedCredential)>,
}

impl Keyring {
    pub fn new() -> Self {
        Keyring::default()
    }

    /// Adds a credential under `key` as written in a docker config (`reg.io`,
    /// `https://reg.io/v1/`, `*.dkr.ecr.*.amazonaws.com`, `reg.io/team`). A key Go's
    /// `url.Parse` rejects is ignored, as the kubelet logs and skips it; use
    /// [`normalize_key`] first to report such keys.
    pub fn add(&mut self, key: &str, cred: SourcedCredential) {
        if let Some(k) = normalize_key(key) {
            self.entries.push((k, cred));
        }
    }

    /// All credentials for `image`, in the order the kubelet tries them: matching keys
    /// in reverse-lexicographic order (several credentials under one key keep insertion
    /// order; Go's map order is random there). Empty when nothing matches.
    pub fn lookup(&self, image: &ImageRef) -> Vec<SourcedCredential> {
        let mut keys: Vec<&str> = self.entries.iter().map(|(k, _)| k.as_str()).collect();
        keys.sort_unstable_by(|a, b| b.cmp(a));
        keys.dedup();

        let repo = image.repository();
        let creds_for = |key: &str| -> Vec<SourcedCredential> {
            self.entries
                .iter()
                .filter(|(k, _)| k == key)
                .map(|(_, c)| c.clone())
                .collect()
        };
        let mut out: Vec<SourcedCredential> = Vec::new();
        for key in keys {
            if urls_match_str(key, &repo) {
                out.extend(creds_for(key));
            }
        }
        if out.is_empty() && is_default_registry_match(&repo) {
            out.extend(creds_for(DEFAULT_REGISTRY_HOST));
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

/// `BasicDockerKeyring.Add`'s key normalisation; `None` when Go's `url.Parse` fails.
pub fn normalize_key(key: &str) -> Option<String> {
    let value = if key.starts_with("https://") || key.starts_with("http://") {
        key.to_string()
    } else {
        format!("https://{key}")
    };
    let parsed = GoUrl::parse(&value)?;
    // docker/registry ResolveAuthConfig treats /v1/ and /v2/ as the bare host.
    let path = if parsed.path.starts_with("/v2/") || parsed.path.starts_with("/v1/") {
        &parsed.path[3..]
    } else {
        parsed.path.as_str()
    };
    Some(if !path.is_empty() && path != "/" {
        format!("{}{}", parsed.host, path)
    } else {
        parsed.host
    })
}

/// Whether a normalised key (or a credential-provider `matchImages` entry) matches the
/// image's repository: `URLsMatchStr(key, repoToPull)`.
pub fn url_matches_key(key: &str, image: &ImageRef) -> bool {
    urls_match_str(key, &image.repository())
}

/// `URLsMatchStr`: both sides are schemeless URLs.
fn urls_match_str(glob: &str, target: &str) -> bool {
    let (Some(g), Some(t)) = (
        GoUrl::parse(&format!("https://{glob}")),
        GoUrl::parse(&format!("https://{target}")),
    ) else {
        return false;
    };
    let (g_labels, g_port) = split_url(&g.host);
    let (t_labels, t_port) = split_url(&t.host);
    g_port == t_port
        && g_labels.len() == t_labels.len()
        && t.path.starts_with(&g.path)
        && g_labels
            .iter()
            .zip(&t_labels)
            .all(|(p, n)| go_filepath_match(p, n) == Some(true))
}

/// `SplitURL`: `net.SplitHostPort`, falling back to the whole host and no port, then
/// the host split on `.`.
fn split_url(host: &str) -> (Vec<&str>, &str) {
    let (h, port) = go_split_host_port(host).unwrap_or((host, ""));
    (h.split('.').collect(), port)
}

/// Go's `net.SplitHostPort`.
fn go_split_host_port(hostport: &str) -> Option<(&str, &str)> {
    let i = hostport.rfind(':')?;
    let (host, j, k) = if hostport.starts_with('[') {
        let end = hostport.find(']')?;
        if end + 1 != i {
            return None;
        }
        (&hostport[1..end], 1, end + 1)
    } else {
        let host = &hostport[..i];
        if host.contains(':') {
            return None;
        }
        (host, 0, 0)
    };
    if hostport[j..].contains('[') || hostport[k..].contains(']') {
        return None;
    }
    Some((host, &hostport[i + 1..]))
}

/// `is_default_registry_match`: `isDefaultRegistryMatch` on the kubelet's image string.
fn is_default_registry_match(image: &str) -> bool {
    let mut parts = image.splitn(2, '/');
    let first = parts.next().unwrap_or_default();
    if first.is_empty() {
        return false;
    }
    if parts.next().is_none() {
        return true;
    }
    if first == "docker.io" || first == "index.docker.io" {
        return true;
    }
    !first.contains(['.', ':'])
}

/// The parts of Go's `url.Parse` result the keyring uses: `Host` and `Path`, both
/// percent-decoded. Returns `None` where Go returns an error.
struct GoUrl {
    host: String,
    path: String,
}

impl GoUrl {
    fn parse(raw: &str) -> Option<GoUrl> {
        // net/url rejects ASCII control characters anywhere.
        if raw.bytes().any(|b| b < 0x20 || b == 0x7f) {
            return None;
        }
        let raw = raw.split('#').next().unwrap_or_default();
        let raw = raw.split('?').next().unwrap_or_default();
        let rest = raw
            .strip_prefix("https://")
            .or_else(|| raw.strip_prefix("http://"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let host = match authority.rfind('@') {
            Some(i) => {
                let userinfo = &authority[..i];
                if !userinfo
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._:~!$&'()*+,;=%@".contains(&b))
                {
                    return None;
                }
                &authority[i + 1..]
            }
            None => authority,
        };
        Some(GoUrl {
            host: parse_host(host)?,
            path: percent_decode(path, false)?,
        })
    }
}

/// `net/url.parseHost`: port syntax check, then host-mode unescaping.
fn parse_host(host: &str) -> Option<String> {
    let valid_optional_port = |p: &str| {
        p.is_empty() || (p.starts_with(':') && p[1..].bytes().all(|b| b.is_ascii_digit()))
    };
    if host.starts_with('[') {
        let i = host.rfind(']')?;
        if !valid_optional_port(&host[i + 1..]) {
            return None;
        }
    } else if let Some(i) = host.rfind(':') {
        if !valid_optional_port(&host[i..]) {
            return None;
        }
    }
    percent_decode(host, true)
}

/// `net/url.unescape` in path mode (`host == false`) or host mode.
fn percent_decode(s: &str, host: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hi = (*b.get(i + 1)? as char).to_digit(16)?;
                let lo = (*b.get(i + 2)? as char).to_digit(16)?;
                // Host mode only allows escapes of non-ASCII bytes, and %25.
                if host && hi < 8 && &s[i..i + 3] != "%25" {
                    return None;
                }
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            c => {
                if host && c < 0x80 && !host_char_ok(c) {
                    return None;
                }
                out.push(c);
                i += 1;
            }
        }
    }
    // Go strings may hold any bytes; a non-UTF-8 key cannot come from a JSON file.
    String::from_utf8(out).ok()
}

/// Characters `shouldEscape(c, encodeHost)` lets through unescaped.
fn host_char_ok(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-_.~!$&'()*+,;=:[]<>\"".contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::{Credential, CredentialSource, Secret};

    fn cred(user: &str) -> SourcedCredential {
        SourcedCredential {
            source: CredentialSource::CommandLine,
            credential: Credential::Basic {
                username: user.to_string(),
                password: Secret::new("pw"),
            },
        }
    }

    fn users(v: &[SourcedCredential]) -> Vec<&str> {
        v.iter().filter_map(|c| c.credential.username()).collect()
    }

    fn img(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    /// keyring_test.go `TestURLsMatch`.
    #[test]
    fn upstream_urls_match() {
        for (glob, target, want) in [
            ("*.kubernetes.io", "prefix.kubernetes.io", true),
            ("prefix.*.io", "prefix.kubernetes.io", true),
            ("prefix.kubernetes.*", "prefix.kubernetes.io", true),
            ("*-good.kubernetes.io", "prefix-good.kubernetes.io", true),
            ("*.kubernetes.io/blah", "prefix.kubernetes.io/blah", true),
            ("prefix.*.io/foo", "prefix.kubernetes.io/foo/bar", true),
            (
                "*.kubernetes.io:1111/blah",
                "prefix.kubernetes.io:1111/blah",
                true,
            ),
            (
                "prefix.*.io:1111/foo",
                "prefix.kubernetes.io:1111/foo/bar",
                true,
            ),
            ("*.kubernetes.io", "kubernetes.io", false),
            ("*.*.kubernetes.io", "prefix.kubernetes.io", false),
            ("*.*.kubernetes.io", "kubernetes.io", false),
            ("kubernetes.io", "kubernetes.com", false),
            ("k*.io", "quay.io", false),
            (
                "*.kubernetes.io:1234/blah",
                "prefix.kubernetes.io:1111/blah",
                false,
            ),
            (
                "prefix.*.io/foo",
                "prefix.kubernetes.io:1111/foo/bar",
                false,
            ),
            // Beyond upstream's table: '?' and classes within a label, bad globs.
            ("reg?.io", "reg1.io", false), // '?' starts the URL query in url.Parse
            ("reg[0-9].io", "reg7.io", true),
            ("reg[^0-9].io", "reg7.io", false),
            ("reg[0-9.io", "reg7.io", false),
            ("reg\\", "reg", false),
            ("reg.io:", "reg.io", true), // SplitHostPort("reg.io:") → port ""
            ("reg.io:abc", "reg.io", false),
            ("reg.io/foo", "reg.io/foobar/x", true), // string prefix, not segments
            ("Reg.io", "reg.io", false),             // case-sensitive, like Go
            ("[::1]:5000", "[::1]:5000/x", true),
            ("[::1]", "[::1]/x", false), // "[::1]" is a glob class there
            ("a b.io", "a b.io", false), // url.Parse rejects the space
        ] {
            assert_eq!(urls_match_str(glob, target), want, "{glob} vs {target}");
        }
    }

    /// keyring_test.go `TestDockerKeyringForGlob` keys (normalised through `add`).
    #[test]
    fn upstream_keyring_for_glob_hits() {
        for (key, target) in [
            ("https://hello.kubernetes.io", "hello.kubernetes.io"),
            ("https://*.docker.io", "prefix.docker.io"),
            ("https://prefix.*.io", "prefix.docker.io"),
            ("https://prefix.docker.*", "prefix.docker.io"),
            ("https://*.docker.io/path", "prefix.docker.io/path"),
            ("https://prefix.*.io/path", "prefix.docker.io/path/subpath"),
            ("https://prefix.docker.*/path", "prefix.docker.io/path"),
            ("https://*.docker.io:8888", "prefix.docker.io:8888"),
            ("https://prefix.*.io:8888", "prefix.docker.io:8888"),
            ("https://prefix.docker.*:8888", "prefix.docker.io:8888"),
            ("https://*.docker.io/v1/", "prefix.docker.io/path"),
            ("https://*.docker.io/v2/", "prefix.docker.io/path"),
            ("prefix.docker.io:1111", "prefix.docker.io:1111/path"),
            ("*.docker.io:1111", "prefix.docker.io:1111/path"),
        ] {
            let mut k = Keyring::new();
            k.add(key, cred("foo"));
            let got = k.lookup(&img(&format!("{target}/foo/bar")));
            assert_eq!(users(&got), ["foo"], "{key} vs {target}");
        }
    }

    /// keyring_test.go `TestKeyringMiss` and `TestKeyringMissWithDockerHubCredentials`.
    #[test]
    fn upstream_keyring_misses() {
        for (key, target) in [
            ("https://hello.kubernetes.io", "world.mesos.org/foo/bar"),
            ("https://*.docker.com", "prefix.docker.io/x"),
            ("https://suffix.*.io", "prefix.docker.io/x"),
            ("https://prefix.docker.c*", "prefix.docker.io/x"),
            ("suffix.*.io", "prefix.docker.io/x"),
            ("https://index.docker.io/v1/", "world.mesos.org/foo/bar"),
        ] {
            let mut k = Keyring::new();
            k.add(key, cred("foo"));
            assert!(k.lookup(&img(target)).is_empty(), "{key} vs {target}");
        }
    }

    /// keyring_test.go `TestKeyringHitWith{Unqualified,UnqualifiedLibrary,Qualified}DockerHub`.
    #[test]
    fn docker_hub_fallback_to_index_key() {
        let mut k = Keyring::new();
        k.add("https://index.docker.io/v1/", cred("hub"));
        for image in [
            "google/docker-registry",
            "jenkins",
            "docker.io/library/nginx",
            "index.docker.io/google/docker-registry",
        ] {
            assert_eq!(users(&k.lookup(&img(image))), ["hub"], "{image}");
        }
        // isDefaultRegistryMatch quirk: a first component without '.' or ':' counts as
        // Docker Hub, so a localhost image also gets the Hub credential.
        assert_eq!(users(&k.lookup(&img("localhost/x"))), ["hub"]);
        assert!(k.lookup(&img("localhost:5000/x")).is_empty());
        assert!(k.lookup(&img("quay.io/x")).is_empty());
    }

    #[test]
    fn docker_hub_keys() {
        // "docker.io" matches docker.io images directly (2 labels each).
        let mut k = Keyring::new();
        k.add("docker.io", cred("d"));
        assert_eq!(users(&k.lookup(&img("nginx"))), ["d"]);
        // registry-1.docker.io never matches: 3 labels against "docker.io", and it is
        // not the fallback key.
        let mut k = Keyring::new();
        k.add("registry-1.docker.io", cred("r"));
        k.add("https://registry-1.docker.io/v2/", cred("r2"));
        assert!(k.lookup(&img("nginx")).is_empty());
        // A direct match suppresses the fallback.
        let mut k = Keyring::new();
        k.add("index.docker.io", cred("hub"));
        k.add("docker.io/library", cred("lib"));
        assert_eq!(users(&k.lookup(&img("nginx"))), ["lib"]);
        assert_eq!(users(&k.lookup(&img("someone/app"))), ["hub"]);
    }

    /// keyring_test.go `TestDockerKeyringLookup` and `TestIssue3797`.
    #[test]
    fn upstream_lookup_order() {
        let mut k = Keyring::new();
        k.add("bar.example.com/pong", cred("grace"));
        k.add("bar.example.com", cred("ada"));
        for (image, want) in [
            ("bar.example.com/x", vec!["ada"]),
            ("bar.example.com/pong", vec!["grace", "ada"]),
            ("bar.example.com/ping", vec!["ada"]),
            ("bar.example.com/pongz", vec!["grace", "ada"]),
            ("bar.example.com/pong/pang", vec!["grace", "ada"]),
            ("example.com/x", vec![]),
            ("foo.example.com/x", vec![]),
        ] {
            assert_eq!(users(&k.lookup(&img(image))), want, "{image}");
        }

        let mut k = Keyring::new();
        k.add("https://quay.io/v1/", cred("rex"));
        for image in ["quay.io/foo", "quay.io/foo/bar"] {
            assert_eq!(users(&k.lookup(&img(image))), ["rex"], "{image}");
        }
    }

    #[test]
    fn duplicate_keys_keep_insertion_order() {
        let mut k = Keyring::new();
        k.add("reg.io", cred("a"));
        k.add("https://reg.io/v2/", cred("b"));
        k.add("http://reg.io/", cred("c"));
        k.add("reg.io/team", cred("t"));
        assert_eq!(
            users(&k.lookup(&img("reg.io/team/app"))),
            ["t", "a", "b", "c"]
        );
    }

    #[test]
    fn key_normalisation() {
        for (key, want) in [
            ("reg.io", Some("reg.io")),
            ("https://reg.io", Some("reg.io")),
            ("http://reg.io/", Some("reg.io")),
            ("https://index.docker.io/v1/", Some("index.docker.io")),
            ("reg.io/v2/team", Some("reg.io/team")),
            ("reg.io/v1", Some("reg.io/v1")),
            ("reg.io:5000/a%2Fb", Some("reg.io:5000/a/b")),
            ("user:pw@reg.io", Some("reg.io")),
            ("reg.io?x=1", Some("reg.io")),
            ("reg.io:port", None),
            ("reg io", None),
            ("reg.io/%zz", None),
            ("[::1", None),
            // Go parses "https://ftp://reg.io" as host "ftp:" and path "//reg.io".
            ("ftp://reg.io", Some("ftp://reg.io")),
        ] {
            assert_eq!(normalize_key(key).as_deref(), want, "{key}");
        }
    }

    /// keyring_test.go `TestIsDefaultRegistryMatch`.
    #[test]
    fn upstream_is_default_registry_match() {
        for (image, want) in [
            ("foo/bar", true),
            ("docker.io/foo/bar", true),
            ("index.docker.io/foo/bar", true),
            ("foo", true),
            ("", false),
            ("registry.tld/foo/bar", false),
            ("registry:5000/foo/bar", false),
            ("myhostdocker.io/foo/bar", false),
        ] {
            assert_eq!(is_default_registry_match(image), want, "{image:?}");
        }
    }

    /// A tenant's pull-secret key with 50 `*` in a label against a long host label: Go's
    /// filepath.Match is linear per chunk; the old recursive matcher was exponential and
    /// stalled the agent. Bounded wait, not a timing assertion.
    #[test]
    fn hostile_glob_key_against_long_host_finishes() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let host = format!("{}.example.com", "a".repeat(60));
            let image = img(&format!("{host}/team/app"));
            let mut k = Keyring::new();
            k.add(&format!("{}b.example.com", "*a".repeat(50)), cred("evil"));
            k.add(&format!("{}.example.com", "a*".repeat(30)), cred("ok"));
            let _ = tx.send(
                users(&k.lookup(&image))
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>(),
            );
        });
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("keyring lookup did not finish");
        assert_eq!(got, ["ok"]);
    }

    #[test]
    fn split_host_port_like_go() {
        assert_eq!(go_split_host_port("a:1"), Some(("a", "1")));
        assert_eq!(go_split_host_port("a:"), Some(("a", "")));
        assert_eq!(go_split_host_port("[::1]:5"), Some(("::1", "5")));
        assert_eq!(go_split_host_port("[::1]"), None);
        assert_eq!(go_split_host_port("a"), None);
        assert_eq!(go_split_host_port("a:b:c"), None);
        assert_eq!(go_split_host_port("[a]b:1"), None);
    }

    #[test]
    fn hostile_keys_never_panic() {
        let alphabet: Vec<char> = "a.*?[]^-\\:/%2@é \u{0}#v1".chars().collect();
        let mut state: u64 = 0xDEAD_BEEF_CAFE_F00D;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let image = img("a.a/a");
        for _ in 0..30_000 {
            let len = (next() % 16) as usize;
            let s: String = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let mut k = Keyring::new();
            k.add(&s, cred("x"));
            let _ = k.lookup(&image);
            let _ = url_matches_key(&s, &image);
        }
    }
}
