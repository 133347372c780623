//! `WWW-Authenticate` challenges (RFC 7235 §4.1), as a registry sends them on a 401.
//!
//! Hand-written rather than the `http-auth` crate's parser, which is stricter than the
//! RFC (it rejects `Bearer  realm=…` with two spaces, and non-ASCII `obs-text`) and so
//! would report failures the runtime does not have. containerd's own parser
//! (core/remotes/docker/auth/parse.go `ParseAuthHeader`) is more lenient still: one
//! challenge per header value, and it stops quietly at the first syntax error. A
//! header rejected here is therefore a registry defect worth reporting, even when the
//! runtime happens to cope with it.
//!
//! ```text
//! WWW-Authenticate = 1#challenge
//! challenge        = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
//! auth-param       = token BWS "=" BWS ( token / quoted-string )
//! ```
//! A `token68` challenge (`Negotiate abc==`) is accepted with no parameters.

use std::collections::BTreeMap;

/// One challenge: `Bearer realm="…",service="…",scope="…"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// The auth scheme, lowercased (`bearer`, `basic`, …): schemes are case-insensitive.
    pub scheme: String,
    /// Parameters with lowercased keys and unescaped values. For a repeated key the
    /// last value wins, like containerd's map.
    pub params: BTreeMap<String, String>,
}

/// Why the `WWW-Authenticate` header values could not be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    /// The response carried no `WWW-Authenticate` header, or only blank ones.
    #[error("no WWW-Authenticate challenge in the response")]
    NoChallenge,
    /// A quoted parameter value runs to the end of the header.
    #[error("WWW-Authenticate header #{header_index} is malformed: quoted string opened at byte {position} is not terminated")]
    UnterminatedQuote {
        header_index: usize,
        position: usize,
    },
    /// Anything else that is not RFC 7235 `#challenge` syntax.
    #[error("WWW-Authenticate header #{header_index} is malformed: expected {expected} at byte {position}")]
    Syntax {
        /// 0-based index among the header values passed in.
        header_index: usize,
        /// Byte offset in that (whitespace-trimmed) value.
        position: usize,
        expected: &'static str,
    },
}

/// Parses every `WWW-Authenticate` value of one response, in order.
///
/// Blank values and empty list elements are skipped (RFC 7230 §7); if no challenge
/// remains, that is [`ChallengeError::NoChallenge`].
pub fn parse_challenges(header_values: &[&str]) -> Result<Vec<Challenge>, ChallengeError> {
    let mut out = Vec::new();
    for (header_index, value) in header_values.iter().enumerate() {
        // A field value excludes surrounding whitespace (RFC 7230 §3.2.4).
        let value = value.trim_matches([' ', '\t']);
        Parser {
            s: value.as_bytes(),
            i: 0,
            header_index,
        }
        .challenges(&mut out)?;
    }
    if out.is_empty() {
        return Err(ChallengeError::NoChallenge);
    }
    Ok(out)
}

/// `tchar` (RFC 7230 §3.2.6).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `token68` characters before the trailing `=` padding.
fn is_token68_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~+/".contains(&b)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    header_index: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn syntax(&self, expected: &'static str) -> ChallengeError {
        ChallengeError::Syntax {
            header_index: self.header_index,
            position: self.i,
            expected,
        }
    }

    /// Skips optional whitespace; returns how much.
    fn ows(&mut self) -> usize {
        let start = self.i;
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
        self.i - start
    }

    /// Skips whitespace and empty list elements.
    fn separators(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.i += 1;
        }
    }

    fn token(&mut self) -> &str {
        let start = self.i;
        while self.peek().is_some_and(is_tchar) {
            self.i += 1;
        }
        // tchar is ASCII, so this slice is valid UTF-8.
        std::str::from_utf8(&self.s[start..self.i]).unwrap_or_default()
    }

    /// True when the input at the cursor is `token BWS "=" BWS` followed by a value
    /// (token or quoted string): an auth-param, rather than the next challenge's scheme
    /// or a `token68` ending in `=` padding.
    fn at_auth_param(&self) -> bool {
        let mut j = self.i;
        while self.s.get(j).copied().is_some_and(is_tchar) {
            j += 1;
        }
        if j == self.i {
            return false;
        }
        while matches!(self.s.get(j), Some(b' ' | b'\t')) {
            j += 1;
        }
        if self.s.get(j) != Some(&b'=') {
            return false;
        }
        j += 1;
        while matches!(self.s.get(j), Some(b' ' | b'\t')) {
            j += 1;
        }
        self.s.get(j).is_some_and(|&b| b == b'"' || is_tchar(b))
    }

    /// A `token68` running to the end of the element (OWS then `,` or end).
    fn try_token68(&mut self) -> bool {
        let mut j = self.i;
        while self.s.get(j).copied().is_some_and(is_token68_char) {
            j += 1;
        }
        if j == self.i {
            return false;
        }
        while self.s.get(j) == Some(&b'=') {
            j += 1;
        }
        let mut k = j;
        while matches!(self.s.get(k), Some(b' ' | b'\t')) {
            k += 1;
        }
        if matches!(self.s.get(k), None | Some(b',')) {
            self.i = k;
            return true;
        }
        false
    }

    fn quoted_string(&mut self) -> Result<String, ChallengeError> {
        let open = self.i;
        self.i += 1;
        let mut buf = Vec::new();
        loop {
            match self.peek() {
                None => {
                    return Err(ChallengeError::UnterminatedQuote {
                        header_index: self.header_index,
                        position: open,
                    })
                }
                Some(b'"') => {
                    self.i += 1;
                    break;
                }
                Some(b'\\') => {
                    self.i += 1;
                    match self.peek() {
                        None => {
                            return Err(ChallengeError::UnterminatedQuote {
                                header_index: self.header_index,
                                position: open,
                            })
                        }
                        // quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
                        Some(b) if b == b'\t' || b >= 0x20 && b != 0x7f => buf.push(b),
                        Some(_) => return Err(self.syntax("an escapable character")),
                    }
                    self.i += 1;
                }
                // qdtext = HTAB / SP / VCHAR except '"' and '\\' / obs-text
                Some(b) if b == b'\t' || b >= 0x20 && b != 0x7f => {
                    buf.push(b);
                    self.i += 1;
                }
                Some(_) => return Err(self.syntax("a printable character in the quoted string")),
            }
        }
        // Escapes only drop ASCII backslashes, so the bytes stay valid UTF-8.
        String::from_utf8(buf).map_err(|_| self.syntax("UTF-8 in the quoted string"))
    }

    fn challenges(&mut self, out: &mut Vec<Challenge>) -> Result<(), ChallengeError> {
        self.separators();
        while self.i < self.s.len() {
            let scheme = self.token().to_ascii_lowercase();
            if scheme.is_empty() {
                return Err(self.syntax("an auth scheme"));
            }
            let mut challenge = Challenge {
                scheme,
                params: BTreeMap::new(),
            };
            let spaces = self.ows();
            match self.peek() {
                None | Some(b',') => {}
                Some(_) if spaces == 0 => return Err(self.syntax("a space after the auth scheme")),
                Some(_) if !self.at_auth_param() && self.try_token68() => {}
                Some(_) => self.params(&mut challenge)?,
            }
            out.push(challenge);
            self.separators();
        }
        Ok(())
    }

    /// `#auth-param`, stopping before the next challenge's scheme or at the end.
    fn params(&mut self, challenge: &mut Challenge) -> Result<(), ChallengeError> {
        loop {
            let key = self.token().to_ascii_lowercase();
            if key.is_empty() {
                return Err(self.syntax("a parameter name"));
            }
            self.ows();
            if self.peek() != Some(b'=') {
                return Err(self.syntax("'=' after the parameter name"));
            }
            self.i += 1;
            self.ows();
            let value = if self.peek() == Some(b'"') {
                self.quoted_string()?
            } else {
                let v = self.token().to_string();
                if v.is_empty() {
                    return Err(self.syntax("a token or quoted string value"));
                }
                v
            };
            challenge.params.insert(key, value);
            self.ows();
            match self.peek() {
                None => return Ok(()),
                Some(b',') => {
                    self.separators();
                    if !self.at_auth_param() {
                        return Ok(());
                    }
                }
                Some(_) => return Err(self.syntax("',' between parameters")),
            }
        }
    }
}

impl Challenge {
    /// A parameter by (lowercase) name.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// Token endpoint URL (Bearer) or protection space (Basic).
    pub fn realm(&self) -> Option<&str> {
        self.param("realm")
    }

    /// The token service name to send back as `service=`.
    pub fn service(&self) -> Option<&str> {
        self.param("service")
    }

    /// Space-separated scopes the registry asks for, e.g. `repository:a/b:pull`.
    pub fn scope(&self) -> Option<&str> {
        self.param("scope")
    }

    /// RFC 6750 error code, e.g. `insufficient_scope` or `invalid_token`.
    pub fn error(&self) -> Option<&str> {
        self.param("error")
    }

    pub fn is_bearer(&self) -> bool {
        self.scheme == "bearer"
    }

    pub fn is_basic(&self) -> bool {
        self.scheme == "basic"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(v: &str) -> Challenge {
        let mut cs = parse_challenges(&[v]).unwrap_or_else(|e| panic!("{v:?}: {e}"));
        assert_eq!(cs.len(), 1, "{v:?}: {cs:?}");
        cs.remove(0)
    }

    #[test]
    fn docker_hub_bearer() {
        let c = one(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#,
        );
        assert!(c.is_bearer());
        assert_eq!(c.realm(), Some("https://auth.docker.io/token"));
        assert_eq!(c.service(), Some("registry.docker.io"));
        assert_eq!(c.scope(), Some("repository:library/nginx:pull"));
        assert_eq!(c.error(), None);
    }

    #[test]
    fn scheme_and_keys_are_lowercased_values_kept() {
        let c = one(r#"BEARER Realm="https://Auth.Example/Token", SERVICE=Reg"#);
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.realm(), Some("https://Auth.Example/Token"));
        assert_eq!(c.service(), Some("Reg"));
    }

    #[test]
    fn quoted_commas_and_escapes() {
        let c = one(
            r#"Bearer realm="https://r/token",scope="repository:a:pull,push repository:b:pull",error="insufficient_scope",x="a\"b\\c""#,
        );
        assert_eq!(c.scope(), Some("repository:a:pull,push repository:b:pull"));
        assert_eq!(c.error(), Some("insufficient_scope"));
        assert_eq!(c.param("x"), Some(r#"a"b\c"#));
    }

    #[test]
    fn several_challenges_per_header_and_several_headers() {
        let cs = parse_challenges(&[
            r#"Basic realm="Registry Realm", Bearer realm="https://t/token",service="s",scope="repository:x:pull,push""#,
            "",
            r#"Negotiate, Basic realm="two""#,
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let schemes: Vec<&str> = cs.iter().map(|c| c.scheme.as_str()).collect();
        assert_eq!(schemes, ["basic", "bearer", "negotiate", "basic"]);
        assert_eq!(cs[0].realm(), Some("Registry Realm"));
        assert_eq!(cs[1].scope(), Some("repository:x:pull,push"));
        assert!(cs[2].params.is_empty());
        assert_eq!(cs[3].realm(), Some("two"));
    }

    #[test]
    fn bare_scheme_and_optional_whitespace() {
        let c = one("Basic");
        assert!(c.is_basic() && c.params.is_empty());
        let c = one(r#"  Bearer   realm = "x" ,  service=y  "#);
        assert_eq!(c.realm(), Some("x"));
        assert_eq!(c.service(), Some("y"));
    }

    #[test]
    fn token68_and_non_ascii_are_accepted() {
        let cs = parse_challenges(&[
            "Negotiate abc==, Basic realm=\"caf\u{e9}\"",
            "Bearer realm=",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cs.len(), 3);
        assert_eq!(cs[0].scheme, "negotiate");
        assert!(cs[0].params.is_empty());
        assert_eq!(cs[1].realm(), Some("caf\u{e9}"));
        // `realm=` with no value is a token68 by the grammar: no realm parameter.
        assert_eq!(cs[2].realm(), None);
    }

    #[test]
    fn empty_list_elements_are_skipped() {
        let cs = parse_challenges(&[", Basic realm=a,, ,Bearer realm=b,"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0].realm(), Some("a"));
        assert_eq!(cs[1].realm(), Some("b"));
    }

    #[test]
    fn duplicate_key_last_wins() {
        let c = one(r#"Bearer realm="a",realm="b""#);
        assert_eq!(c.realm(), Some("b"));
    }

    #[test]
    fn no_challenge() {
        assert_eq!(parse_challenges(&[]), Err(ChallengeError::NoChallenge));
        assert_eq!(
            parse_challenges(&["", "  "]),
            Err(ChallengeError::NoChallenge)
        );
    }

    #[test]
    fn hostile_input_is_a_syntax_error_naming_the_header() {
        for bad in [
            r#"Bearer realm="unterminated"#,
            r#"realm="no-scheme""#,
            r#"="x""#,
            "Bearer realm=\"x\",scope=",
            r#"Bearer realm="x" service="y""#,
            "Bearer \u{0}",
            "Bearer realm=\"a\u{1}b\"",
            r#"Bearer realm="x\"#,
            "@@@ ###",
            ",,,=",
            "Bearer realm=x;service=y",
            "Basic realm=x, abc==",
        ] {
            match parse_challenges(&["Basic", bad]) {
                Err(ChallengeError::Syntax {
                    header_index: 1, ..
                })
                | Err(ChallengeError::UnterminatedQuote {
                    header_index: 1, ..
                }) => {}
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn fuzz_never_panics() {
        let alphabet: Vec<char> = "Bearer realm=\"\\,, =x\t\u{0}é;".chars().collect();
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..30_000 {
            let len = (next() % 32) as usize;
            let s: String = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            if let Ok(cs) = parse_challenges(&[&s]) {
                assert!(cs.iter().all(|c| !c.scheme.is_empty()), "{s:?}");
            }
        }
    }
}
