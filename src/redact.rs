//! Secret-safe text for every message, detail, error, log line, condition and event:
//! the one place that decides how a URL, a server-controlled string or a parse error
//! is shown.
//!
//! - [`url`] / [`SafeUrl`]: `scheme://host[:port]/path` only. Userinfo (`user:pass@`),
//!   the query (presigned `X-Amz-Signature`, `X-Amz-Security-Token`, GCS
//!   `X-Goog-Signature`, Azure SAS `sig=`, `?token=`) and the fragment never appear.
//! - [`text`]: a string a server or plugin chose (`errors[].code`, a status line, an
//!   echoed body): control characters dropped, length bounded.
//! - [`message`]: any message, phase detail or error built from such strings, bounded as
//!   a whole ([`MAX_MESSAGE_CHARS`]): `Failure::new` and every phase record go through it,
//!   so no registry answer can make a message, a `/status` entry or a log line long.
//! - [`list`]: a list a server chose (an index's platforms, a certificate's names, a
//!   name's addresses) as `N entries, first k: …`.
//! - [`ParseError`]: a syntax or type error of a TOML / YAML / JSON file as format, line,
//!   column and (when the parser names one) the field: never the text around it. The
//!   parsers' own `Display` quote the offending line (toml, serde-saphyr's snippet) or the
//!   offending value (serde's `invalid type: string "…"`), which is how a `config.toml`
//!   `auth`, a hosts.toml `Authorization` or a registries.yaml `password` reached logs.

use std::fmt;

use url::Url;

/// What stands in for a value that is never shown.
pub const REDACTED: &str = "<redacted>";

/// Longest path shown for a URL (a blob path is ~100 characters).
const MAX_URL_PATH_CHARS: usize = 256;

/// Longest server- or plugin-controlled string shown in a message.
pub const MAX_TEXT_CHARS: usize = 200;

/// Longest host name shown (DNS names are at most 253 characters).
const MAX_HOST_CHARS: usize = 256;

/// Longest message, phase detail or error, whatever went into it. Every part that came
/// from a server is bounded on its own first; this bounds their sum. A probe's log line
/// holds one message plus fixed fields, so it stays well under 8 KiB.
pub const MAX_MESSAGE_CHARS: usize = 1024;

/// How many entries of a server-chosen list a message shows.
pub const LIST_FIRST: usize = 8;

/// Longest entry of a list shown.
const MAX_LIST_ITEM_CHARS: usize = 128;

/// A whole message or detail: [`text_max`] at [`MAX_MESSAGE_CHARS`].
pub fn message(s: &str) -> String {
    text_max(s, MAX_MESSAGE_CHARS)
}

/// A list a server chose, for a message: the entries joined by `sep` when there are at
/// most `first`; otherwise `N entries, first k: …`. Each entry is sanitized and bounded.
pub fn list<I, T>(items: I, first: usize, sep: &str) -> String
where
    I: IntoIterator<Item = T>,
    T: AsRef<str>,
{
    let mut shown = Vec::new();
    let mut n: u64 = 0;
    for item in items {
        if shown.len() < first {
            shown.push(text_max(item.as_ref(), MAX_LIST_ITEM_CHARS));
        }
        n += 1;
    }
    let joined = shown.join(sep);
    if n as usize <= first {
        return joined;
    }
    format!(
        "{} entries, first {}: {joined}",
        crate::text::thousands(n),
        shown.len()
    )
}

/// The URL formatter for messages: `scheme://host[:port]/path`, without userinfo,
/// query or fragment, the path bounded.
pub fn url(u: &Url) -> String {
    let Some(host) = u.host_str() else {
        // `mailto:`, `data:` and other non-hierarchical URLs: the scheme says enough.
        return format!("{}:", u.scheme());
    };
    let host = bounded(host, MAX_HOST_CHARS);
    let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
    let path = bounded(u.path(), MAX_URL_PATH_CHARS);
    format!("{}://{host}{port}{path}", u.scheme())
}

/// A raw URL-ish string from a file or a server (a `Location` header, a token realm, a
/// k3s `endpoint`, a schemeless `user:pass@host:5000/path`) shown safely: formatted by
/// [`url`] when it parses as a URL with a host; otherwise cut by hand the same way —
/// everything up to the last `@` of the authority, and the query and fragment, dropped.
pub fn url_text(raw: &str) -> String {
    if let Ok(u) = Url::parse(raw) {
        if u.host_str().is_some() {
            return url(&u);
        }
    }
    let (scheme, rest) = match raw.split_once("://") {
        Some((s, r)) if is_scheme(s) => (Some(s), r),
        _ => (None, raw),
    };
    // Everything up to the last `@` goes, wherever it is: an unparseable string may hold
    // a password with `?`, `/` or `#` in it (fuzz finding, see fuzz/README.md).
    let rest = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let shown = match scheme {
        Some(s) => format!("{s}://{rest}"),
        None => rest.to_string(),
    };
    text_max(&shown, MAX_URL_PATH_CHARS)
}

/// A credential key as written in a docker `config.json`, a pull secret or a plugin's
/// answer (`reg.io`, `https://index.docker.io/v1/`, `*.dkr.ecr.*.amazonaws.com`), for a
/// credential source's name: a key with userinfo (`https://u:tok@reg.io`) loses everything
/// up to its last `@` (the kubelet's keyring ignores userinfo when matching, so nothing is
/// lost); any other key is shown as written, sanitized and bounded.
pub fn credential_key(key: &str) -> String {
    let shown = match key.rsplit_once('@') {
        None => key.to_string(),
        Some((before, host)) => match before.split_once("://") {
            Some((scheme, _)) if is_scheme(scheme) => format!("{scheme}://{host}"),
            _ => host.to_string(),
        },
    };
    text_max(&shown, MAX_URL_PATH_CHARS)
}

/// RFC 3986 `scheme`: a letter, then letters, digits, `+`, `-`, `.`.
fn is_scheme(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

/// A short keyword-like value from a file (a capability, a mode, a duration) for an
/// error message: quoted, sanitized, at most 32 characters. Only for fields that hold
/// no secrets by their nature; credentials, headers and URLs are never echoed.
pub fn keyword(s: &str) -> String {
    format!("\"{}\"", text_max(s, 32))
}

/// A [`Url`] whose `Display` and `Debug` are [`url`]: carried in error types so that
/// any `format!("{x}")` of it is safe. Dereferences to the URL for everything else.
#[derive(Clone, PartialEq, Eq)]
pub struct SafeUrl(pub Url);

impl fmt::Display for SafeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&url(&self.0))
    }
}

impl fmt::Debug for SafeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SafeUrl({})", url(&self.0))
    }
}

impl std::ops::Deref for SafeUrl {
    type Target = Url;
    fn deref(&self) -> &Url {
        &self.0
    }
}

impl From<Url> for SafeUrl {
    fn from(u: Url) -> Self {
        SafeUrl(u)
    }
}

/// A string a server or plugin controls, fit for a message: control characters (newlines,
/// escapes, NUL) and other format characters removed, whitespace runs collapsed, at most
/// [`MAX_TEXT_CHARS`] characters (then `…`).
pub fn text(s: &str) -> String {
    text_max(s, MAX_TEXT_CHARS)
}

/// [`text`] with an explicit bound in characters.
pub fn text_max(s: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max_chars.saturating_mul(4)));
    let mut n = 0usize;
    let mut pending_space = false;
    for c in s.chars() {
        if c.is_whitespace() || c.is_control() || is_format_char(c) {
            // Whitespace becomes one space; other control/format characters vanish.
            pending_space |= c.is_whitespace() || c == '\u{0}';
            continue;
        }
        if pending_space && n > 0 {
            if n >= max_chars {
                out.push('…');
                return out;
            }
            out.push(' ');
            n += 1;
        }
        pending_space = false;
        if n >= max_chars {
            out.push('…');
            return out;
        }
        out.push(c);
        n += 1;
    }
    out
}

/// Bidirectional overrides, zero-width and other invisible formatting characters that
/// could make a message read differently from what it says.
fn is_format_char(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

fn bounded(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// A name from input that may be shown: a plain identifier-like key (`interval`,
/// `skip_verify`, `auths`) of at most 64 characters. Anything else is not shown.
pub fn identifier(s: &str) -> Option<String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    ok.then(|| s.to_string())
}

/// Which syntax a file is in, for [`ParseError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum SyntaxFormat {
    Toml,
    Yaml,
    Json,
}

impl fmt::Display for SyntaxFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SyntaxFormat::Toml => "TOML",
            SyntaxFormat::Yaml => "YAML",
            SyntaxFormat::Json => "JSON",
        })
    }
}

/// What kind of parse error, as far as it can be told without quoting the input.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum ParseErrorKind {
    /// Not well-formed TOML / YAML / JSON.
    Syntax,
    /// A required field is absent (the name comes from the schema).
    MissingField(String),
    /// A key the schema does not know (shown only when it is a plain identifier).
    UnknownField(Option<String>),
    /// A value of the wrong type; `expected` is the schema's description.
    InvalidType { expected: Option<String> },
    /// A value of the right type that is not allowed.
    InvalidValue { expected: Option<String> },
    /// A key given twice.
    DuplicateKey,
    /// The document exceeds the parser's limits (nesting, aliases, size).
    Limit,
}

/// A parse error reduced to what can be shown: format, line, column and kind. Built by
/// [`ParseError::toml`], [`ParseError::yaml`] and [`ParseError::json`]; its `Display` is
/// the one safe message (`invalid TOML at line 3, column 7: syntax error`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, thiserror::Error)]
pub struct ParseError {
    pub format: SyntaxFormat,
    /// 1-based line, when the parser knows it.
    pub line: Option<u64>,
    /// 1-based column (characters), when the parser knows it.
    pub column: Option<u64>,
    /// The key on the offending line, for value errors, when it is a plain identifier.
    pub field: Option<String>,
    pub kind: ParseErrorKind,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}", self.format)?;
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, " at line {l}, column {c}")?,
            (Some(l), None) => write!(f, " at line {l}")?,
            _ => {}
        }
        f.write_str(": ")?;
        if let Some(field) = &self.field {
            write!(f, "field `{field}`: ")?;
        }
        match &self.kind {
            ParseErrorKind::Syntax => f.write_str("syntax error"),
            ParseErrorKind::MissingField(name) => write!(f, "missing field `{name}`"),
            ParseErrorKind::UnknownField(Some(name)) => write!(f, "unknown field `{name}`"),
            ParseErrorKind::UnknownField(None) => f.write_str("unknown field"),
            ParseErrorKind::InvalidType { expected } => {
                f.write_str("invalid type")?;
                expected_suffix(f, expected)
            }
            ParseErrorKind::InvalidValue { expected } => {
                f.write_str("invalid value")?;
                expected_suffix(f, expected)
            }
            ParseErrorKind::DuplicateKey => f.write_str("duplicate key"),
            ParseErrorKind::Limit => f.write_str("the document exceeds the parser's limits"),
        }
    }
}

fn expected_suffix(f: &mut fmt::Formatter<'_>, expected: &Option<String>) -> fmt::Result {
    match expected {
        Some(e) => write!(f, ", expected {e}"),
        None => Ok(()),
    }
}

impl ParseError {
    /// From a `toml` error on `text` (the span gives line and column).
    pub fn toml(e: &toml::de::Error, text: &str) -> ParseError {
        let (line, column) = match e.span() {
            Some(span) => line_column(text, span.start),
            None => (None, None),
        };
        ParseError {
            format: SyntaxFormat::Toml,
            line,
            column,
            field: None,
            kind: kind_from_serde_message(e.message()),
        }
        .with_key_from(text, '=')
    }

    /// From a `serde_saphyr` error on `text` (the error carries its own location).
    pub fn yaml(e: &serde_saphyr::Error, text: &str) -> ParseError {
        let (line, column) = match e.location() {
            Some(l) if l.line() > 0 => (Some(l.line()), Some(l.column()).filter(|c| *c > 0)),
            _ => (None, None),
        };
        ParseError {
            format: SyntaxFormat::Yaml,
            line,
            column,
            field: None,
            kind: yaml_kind(e),
        }
        .with_key_from(text, ':')
    }

    /// For a value error, the key written at the start of the offending line
    /// (`key = value` / `key: value`), when it is a plain identifier: the field the
    /// parser does not name itself. Never any text after the separator.
    fn with_key_from(mut self, text: &str, separator: char) -> ParseError {
        let value_error = matches!(
            self.kind,
            ParseErrorKind::InvalidType { .. }
                | ParseErrorKind::InvalidValue { .. }
                | ParseErrorKind::DuplicateKey
        );
        let line = self.line.and_then(|l| usize::try_from(l).ok());
        if let (true, Some(l)) = (value_error, line) {
            let key = text
                .lines()
                .nth(l.saturating_sub(1))
                .and_then(|line| line.split_once(separator))
                .map(|(k, _)| k.trim().trim_start_matches("- ").trim_matches(['"', '\'']));
            self.field = key.and_then(identifier);
        }
        self
    }

    /// From a `serde_json` error.
    pub fn json(e: &serde_json::Error) -> ParseError {
        let line = (e.line() > 0).then_some(e.line() as u64);
        let column = (e.column() > 0).then_some(e.column() as u64);
        let kind = match e.classify() {
            serde_json::error::Category::Data => {
                // serde_json appends " at line L column C" to the serde message.
                let msg = e.to_string();
                let msg = msg
                    .rsplit_once(" at line ")
                    .map_or(msg.as_str(), |(m, _)| m);
                kind_from_serde_message(msg)
            }
            _ => {
                if e.to_string().starts_with("recursion limit exceeded") {
                    ParseErrorKind::Limit
                } else {
                    ParseErrorKind::Syntax
                }
            }
        };
        ParseError {
            format: SyntaxFormat::Json,
            line,
            column,
            field: None,
            kind,
        }
    }
}

/// 1-based line and character column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (Option<u64>, Option<u64>) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.bytes().filter(|b| *b == b'\n').count() as u64 + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() as u64 + 1;
    (Some(line), Some(column))
}

/// Classify a serde / toml message by its fixed wording, keeping only schema-provided
/// text (`missing field`, the `expected …` description) and identifier-like keys.
/// serde's messages are `invalid type: <unexpected>, expected <exp>` where `<unexpected>`
/// quotes the input (`string "hunter2"`): only the part after the last `, expected ` is kept.
fn kind_from_serde_message(msg: &str) -> ParseErrorKind {
    let msg = msg.trim();
    let backticked = |rest: &str| -> Option<String> {
        let rest = rest.strip_prefix('`')?;
        let end = rest.find('`')?;
        Some(rest[..end].to_string())
    };
    let expected = || {
        msg.rsplit_once(", expected ")
            .map(|(_, e)| text_max(e, 120))
            .filter(|e| !e.is_empty())
    };
    if let Some(rest) = msg.strip_prefix("missing field ") {
        return match backticked(rest).and_then(|f| identifier(&f)) {
            Some(f) => ParseErrorKind::MissingField(f),
            None => ParseErrorKind::MissingField("?".to_string()),
        };
    }
    if let Some(rest) = msg.strip_prefix("unknown field ") {
        return ParseErrorKind::UnknownField(backticked(rest).and_then(|f| identifier(&f)));
    }
    if msg.starts_with("invalid type: ") {
        return ParseErrorKind::InvalidType {
            expected: expected(),
        };
    }
    if msg.starts_with("invalid value: ")
        || msg.starts_with("unknown variant ")
        || msg.starts_with("invalid length ")
    {
        return ParseErrorKind::InvalidValue {
            expected: expected(),
        };
    }
    if msg.starts_with("duplicate key") || msg.starts_with("duplicate field") {
        return ParseErrorKind::DuplicateKey;
    }
    if msg.contains("recursion limit") || msg.contains("nesting") {
        return ParseErrorKind::Limit;
    }
    ParseErrorKind::Syntax
}

/// serde-saphyr's typed errors, unwrapped from their snippet / alias wrappers.
fn yaml_kind(e: &serde_saphyr::Error) -> ParseErrorKind {
    use serde_saphyr::Error as E;
    let e = e.without_snippet();
    match e {
        E::AliasError { error, .. } => yaml_kind(error),
        E::SerdeMissingField { field, .. } => ParseErrorKind::MissingField(field.to_string()),
        E::SerdeUnknownField { field, .. } => ParseErrorKind::UnknownField(identifier(field)),
        E::SerdeInvalidType { expected, .. } => ParseErrorKind::InvalidType {
            expected: Some(text_max(expected, 120)),
        },
        E::SerdeInvalidValue { expected, .. } | E::SerdeInvalidLength { expected, .. } => {
            ParseErrorKind::InvalidValue {
                expected: Some(text_max(expected, 120)),
            }
        }
        E::SerdeUnknownVariant { expected, .. } => ParseErrorKind::InvalidValue {
            expected: Some(text_max(&expected.join(", "), 120)),
        },
        E::InvalidScalar { ty, .. } => ParseErrorKind::InvalidValue {
            expected: Some(text_max(ty, 120)),
        },
        E::DuplicateMappingKey { .. } => ParseErrorKind::DuplicateKey,
        E::Budget { .. } => ParseErrorKind::Limit,
        // `Message` is serde's `custom()`: it may quote the value, so only its fixed
        // wording is used.
        E::Message { msg, .. } => kind_from_serde_message(msg),
        _ => ParseErrorKind::Syntax,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CANARY: &str = "canary-7f3a9";

    #[test]
    fn url_drops_userinfo_query_and_fragment() {
        for (raw, want) in [
            (
                "https://user:canary-7f3a9@reg.example:5000/v2/",
                "https://reg.example:5000/v2/",
            ),
            (
                "https://bucket.s3.amazonaws.com/docker/blobs/data?X-Amz-Algorithm=AWS4&X-Amz-Security-Token=canary-7f3a9&X-Amz-Signature=canary-7f3a9",
                "https://bucket.s3.amazonaws.com/docker/blobs/data",
            ),
            (
                "https://storage.googleapis.com/b/o?X-Goog-Signature=canary-7f3a9",
                "https://storage.googleapis.com/b/o",
            ),
            (
                "https://acct.blob.core.windows.net/c/b?sv=2020&sig=canary-7f3a9#frag-canary-7f3a9",
                "https://acct.blob.core.windows.net/c/b",
            ),
            ("http://[::1]:8080/x", "http://[::1]:8080/x"),
            ("https://reg.example:443/v2", "https://reg.example/v2"),
            ("mailto:canary-7f3a9@x", "mailto:"),
        ] {
            let u = Url::parse(raw).unwrap();
            assert_eq!(url(&u), want, "{raw}");
            assert_eq!(SafeUrl(u.clone()).to_string(), want);
            assert!(!format!("{:?}", SafeUrl(u.clone())).contains(CANARY));
            if u.host_str().is_some() {
                assert_eq!(url_text(raw), want);
            }
        }
        for (raw, want) in [
            (
                "user:canary-7f3a9@mirror.example:5000/v2?t=canary-7f3a9",
                "mirror.example:5000/v2",
            ),
            ("https://a:canary-7f3a9@[::1", "https://[::1"),
            ("mirror.example#canary-7f3a9", "mirror.example"),
            ("user:canary-7f3a9@host", "host"),
            ("https://u:canary?7f3a9@host/x", "https://host/x"),
            ("u:can/ary#7f3a9@host", "host"),
            // fuzz/artifacts/keyring_glob/crash-a94552ff…: a query before a "://".
            ("h7.ho:5.\u{1}\0\0\0\0tt?shtt://44in", "h7.ho:5. tt"),
        ] {
            assert_eq!(url_text(raw), want, "{raw}");
        }
        assert_eq!(keyword("pul\nl"), "\"pul l\"");
        let long = format!("https://h/{}", "a".repeat(1000));
        assert!(url(&Url::parse(&long).unwrap()).chars().count() < 300);
    }

    #[test]
    fn text_strips_controls_and_bounds_length() {
        assert_eq!(text("MANIFEST_UNKNOWN"), "MANIFEST_UNKNOWN");
        assert_eq!(text("a\r\n\tb\u{1b}[31mc\u{0}d"), "a b[31mc d");
        assert_eq!(text("x\u{202e}y\u{200b}z"), "xyz");
        assert_eq!(text("  lead  and   trail  "), "lead and trail");
        let long = "é".repeat(1000);
        let t = text(&long);
        assert_eq!(t.chars().count(), MAX_TEXT_CHARS + 1);
        assert!(t.ends_with('…'));
        assert_eq!(text_max("abc def", 3), "abc…");
        assert_eq!(text_max("abcd", 3), "abc…");
        assert_eq!(text_max("abc", 3), "abc");
    }

    #[test]
    fn credential_keys_lose_userinfo_only() {
        for (key, want) in [
            (
                "https://u:canary-7f3a9@reg.io:5000/v1/",
                "https://reg.io:5000/v1/",
            ),
            ("u:canary-7f3a9@reg.io/team", "reg.io/team"),
            ("https://u:can/ary@7f3a9@reg.io", "https://reg.io"),
            ("reg.io", "reg.io"),
            ("https://index.docker.io/v1/", "https://index.docker.io/v1/"),
            ("*.dkr.ecr.*.amazonaws.com", "*.dkr.ecr.*.amazonaws.com"),
            ("REG.io:443", "REG.io:443"),
        ] {
            assert_eq!(credential_key(key), want, "{key}");
        }
    }

    #[test]
    fn lists_say_how_many_and_show_the_first() {
        assert_eq!(list(["a", "b"], 8, ", "), "a, b");
        assert_eq!(list(Vec::<String>::new(), 8, ", "), "");
        let many: Vec<String> = (0..10_000).map(|i| format!("linux/arch{i}")).collect();
        let l = list(&many, 3, ", ");
        assert_eq!(
            l,
            "10,000 entries, first 3: linux/arch0, linux/arch1, linux/arch2"
        );
        let long = list([format!("x\u{1b}{}", "y".repeat(5000))], 8, ", ");
        assert!(long.chars().count() <= MAX_LIST_ITEM_CHARS + 1 && !long.contains('\u{1b}'));
    }

    #[test]
    fn messages_are_bounded_as_a_whole_and_hosts_in_urls_too() {
        let m = message(&format!("digest {} end", "a".repeat(200_000)));
        assert_eq!(m.chars().count(), MAX_MESSAGE_CHARS + 1);
        let u = Url::parse(&format!("https://{}.example/x", "h".repeat(5000))).unwrap();
        assert!(url(&u).chars().count() < MAX_HOST_CHARS + 40, "{}", url(&u));
    }

    #[test]
    fn identifiers_only() {
        assert_eq!(identifier("skip_verify").as_deref(), Some("skip_verify"));
        assert_eq!(identifier("Bearer abc"), None);
        assert_eq!(identifier(&"a".repeat(65)), None);
        assert_eq!(identifier(""), None);
    }

    #[test]
    fn toml_errors_never_quote_the_line() {
        let text = format!("[header]\nAuthorization = \"Bearer {CANARY}\nx = 1\n");
        let e = toml::from_str::<toml::Table>(&text).unwrap_err();
        assert!(
            e.to_string().contains(CANARY),
            "toml's own Display quotes the line"
        );
        let p = ParseError::toml(&e, &text);
        let shown = p.to_string();
        assert!(!shown.contains(CANARY), "{shown}");
        assert_eq!(p.line, Some(2));
        assert!(
            shown.starts_with("invalid TOML at line 2, column "),
            "{shown}"
        );
    }

    #[test]
    fn toml_type_errors_keep_only_the_schema_side() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct S {
            port: u16,
            name: String,
        }
        let text = format!("port = \"{CANARY}\"\nname = \"x\"\n");
        let e = toml::from_str::<S>(&text).unwrap_err();
        let p = ParseError::toml(&e, &text);
        assert!(!p.to_string().contains(CANARY), "{p}");
        assert!(
            matches!(p.kind, ParseErrorKind::InvalidType { .. }),
            "{p:?}"
        );
        assert_eq!(p.line, Some(1));
        let e = toml::from_str::<S>("port = 1\nname = \"x\"\nnmae = 2\n").unwrap_err();
        let p = ParseError::toml(&e, "port = 1\nname = \"x\"\nnmae = 2\n");
        assert_eq!(p.kind, ParseErrorKind::UnknownField(Some("nmae".into())));
        assert_eq!(p.line, Some(3));
        let e = toml::from_str::<S>("port = 1\n").unwrap_err();
        assert_eq!(
            ParseError::toml(&e, "port = 1\n").kind,
            ParseErrorKind::MissingField("name".into())
        );
    }

    #[test]
    fn yaml_errors_never_show_the_snippet() {
        for text in [
            format!("password: \"{CANARY}\n  - [\n"),
            format!("a: b\npassword: {CANARY}\n  bad: indent\n"),
            format!("- {CANARY}\n: :\n"),
        ] {
            let e = serde_saphyr::from_str::<serde_json::Value>(&text).unwrap_err();
            let p = ParseError::yaml(&e, &text);
            assert!(!p.to_string().contains(CANARY), "{p}");
            assert!(p.line.is_some(), "{p:?}");
        }
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct S {
            port: u16,
        }
        let text = format!("port: {CANARY}\n");
        let e = serde_saphyr::from_str::<S>(&text).unwrap_err();
        let p = ParseError::yaml(&e, &text);
        assert_eq!(p.field.as_deref(), Some("port"));
        assert!(!p.to_string().contains(CANARY), "{p}");
        assert!(
            matches!(
                p.kind,
                ParseErrorKind::InvalidType { .. } | ParseErrorKind::InvalidValue { .. }
            ),
            "{p:?}"
        );
        let e = serde_saphyr::from_str::<S>("port: 1\nprot: 2\n").unwrap_err();
        let p = ParseError::yaml(&e, "port: 1\nprot: 2\n");
        assert_eq!(p.kind, ParseErrorKind::UnknownField(Some("prot".into())));
        assert_eq!(p.line, Some(2));
    }

    #[test]
    fn json_errors_never_show_values() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct S {
            port: u16,
        }
        let text = format!("{{\"port\": \"{CANARY}\"}}");
        let e = serde_json::from_str::<S>(&text).unwrap_err();
        assert!(
            e.to_string().contains(CANARY),
            "serde_json quotes the value"
        );
        let p = ParseError::json(&e);
        assert!(!p.to_string().contains(CANARY), "{p}");
        assert_eq!(p.line, Some(1));
        let e =
            serde_json::from_str::<serde_json::Value>(&format!("{{\"a\": {CANARY}}}")).unwrap_err();
        let p = ParseError::json(&e);
        assert_eq!(p.kind, ParseErrorKind::Syntax);
        assert!(!p.to_string().contains(CANARY));
        let deep = "[".repeat(1000);
        let e = serde_json::from_str::<serde_json::Value>(&deep).unwrap_err();
        assert_eq!(ParseError::json(&e).kind, ParseErrorKind::Limit);
    }

    #[test]
    fn line_column_counts_characters() {
        assert_eq!(line_column("ab\ncé\nx", 6), (Some(2), Some(3)));
        assert_eq!(line_column("", 10), (Some(1), Some(1)));
        assert_eq!(line_column("é", 1), (Some(1), Some(1)));
    }
}
