//! Go's `path/filepath.Match` on Unix, ported line by line (go/src/path/filepath/match.go:
//! `Match`, `scanChunk`, `matchChunk`, `getEsc`, in the form Go ≥ 1.16 has: `matchChunk`
//! keeps validating the chunk after a mismatch, and `Match` checks the rest of the
//! pattern before answering false, so a malformed pattern is always `ErrBadPattern`).
//!
//! The kubelet matches every label of a pull-secret / config.json key with it
//! (pkg/credentialprovider/keyring.go `URLsMatch`). Keys come from tenants' Secrets, so
//! the algorithm matters: Go's never backtracks into an earlier star — each star-led chunk
//! is matched at the first position that works and the scan moves on — so a match costs
//! at most O(len(pattern) × len(name)). A recursive matcher that retries every split of
//! every star is exponential in the number of stars (a 50-star key against a long host
//! label stalled the agent's single-threaded runtime).
//!
//! Like Go, it works on bytes: literals compare byte by byte, `?` and classes decode one
//! UTF-8 rune (an invalid sequence decodes as U+FFFD, one byte), and a star may skip into
//! the middle of a multi-byte character.

/// `filepath.Separator` on Unix.
const SEPARATOR: u8 = b'/';

/// `utf8.RuneError`.
const RUNE_ERROR: u32 = 0xFFFD;

/// Go's `filepath.Match(pattern, name)`: `Some(matched)`, or `None` for
/// `ErrBadPattern` (the kubelet treats that as no match).
pub fn go_filepath_match(pattern: &str, name: &str) -> Option<bool> {
    let mut pattern = pattern.as_bytes();
    let mut name = name.as_bytes();
    'pattern: while !pattern.is_empty() {
        let (star, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        if star && chunk.is_empty() {
            // Trailing * matches rest of string unless it has a /.
            return Some(!name.contains(&SEPARATOR));
        }
        // Look for match at current position.
        let (t, ok) = match_chunk(chunk, name)?;
        // If we're the last chunk, make sure we've exhausted the name, otherwise we'd give
        // a false result even if we could still match using the star.
        if ok && (t.is_empty() || !pattern.is_empty()) {
            name = t;
            continue;
        }
        if star {
            // Look for match skipping i+1 bytes. Cannot skip /.
            let mut i = 0;
            while i < name.len() && name[i] != SEPARATOR {
                let (t, ok) = match_chunk(chunk, &name[i + 1..])?;
                if ok {
                    // If we're the last chunk, make sure we exhausted the name.
                    if pattern.is_empty() && !t.is_empty() {
                        i += 1;
                        continue;
                    }
                    name = t;
                    continue 'pattern;
                }
                i += 1;
            }
        }
        // Before returning false with no error, check that the remainder of the
        // pattern is syntactically valid.
        while !pattern.is_empty() {
            let (_, chunk, rest) = scan_chunk(pattern);
            pattern = rest;
            match_chunk(chunk, b"")?;
        }
        return Some(false);
    }
    Some(name.is_empty())
}

/// `scanChunk`: the next segment of pattern, a non-star string possibly preceded by a
/// star: `(star, chunk, rest)`.
fn scan_chunk(mut pattern: &[u8]) -> (bool, &[u8], &[u8]) {
    let mut star = false;
    while pattern.first() == Some(&b'*') {
        pattern = &pattern[1..];
        star = true;
    }
    let mut in_range = false;
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            // Error check handled in matchChunk: bad pattern.
            b'\\' if i + 1 < pattern.len() => i += 1,
            b'[' => in_range = true,
            b']' => in_range = false,
            b'*' if !in_range => break,
            _ => {}
        }
        i += 1;
    }
    (star, &pattern[..i], &pattern[i..])
}

/// `matchChunk`: whether `chunk` (literals, classes and `?` only) matches the beginning
/// of `s`: `Some((rest, true))`, `Some((_, false))`, or `None` for a bad pattern. After a
/// mismatch it keeps parsing the chunk (to report a bad pattern) without reading `s`.
fn match_chunk<'a>(mut chunk: &[u8], mut s: &'a [u8]) -> Option<(&'a [u8], bool)> {
    let mut failed = false;
    while let Some(&c) = chunk.first() {
        if !failed && s.is_empty() {
            failed = true;
        }
        match c {
            b'[' => {
                // Character class.
                let mut r = 0;
                if !failed {
                    let (rune, n) = decode_rune(s);
                    r = rune;
                    s = &s[n..];
                }
                chunk = &chunk[1..];
                // Possibly negated.
                let negated = chunk.first() == Some(&b'^');
                if negated {
                    chunk = &chunk[1..];
                }
                // Parse all ranges.
                let mut matched = false;
                let mut nrange = 0;
                loop {
                    if chunk.first() == Some(&b']') && nrange > 0 {
                        chunk = &chunk[1..];
                        break;
                    }
                    let (lo, rest) = get_esc(chunk)?;
                    chunk = rest;
                    let mut hi = lo;
                    if chunk.first() == Some(&b'-') {
                        let (h, rest) = get_esc(&chunk[1..])?;
                        hi = h;
                        chunk = rest;
                    }
                    if lo <= r && r <= hi {
                        matched = true;
                    }
                    nrange += 1;
                }
                if matched == negated {
                    failed = true;
                }
            }
            b'?' => {
                if !failed {
                    if s[0] == SEPARATOR {
                        failed = true;
                    }
                    let (_, n) = decode_rune(s);
                    s = &s[n..];
                }
                chunk = &chunk[1..];
            }
            _ => {
                if c == b'\\' {
                    chunk = &chunk[1..];
                    if chunk.is_empty() {
                        return None;
                    }
                }
                if !failed {
                    if chunk[0] != s[0] {
                        failed = true;
                    }
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
        }
    }
    if failed {
        Some((b"", false))
    } else {
        Some((s, true))
    }
}

/// `getEsc`: one possibly-escaped character of a class, and the rest of the chunk, which
/// must not be empty (the class still needs its `]`).
fn get_esc(chunk: &[u8]) -> Option<(u32, &[u8])> {
    let mut chunk = chunk;
    match chunk.first() {
        None | Some(b'-') | Some(b']') => return None,
        Some(b'\\') => {
            chunk = &chunk[1..];
            if chunk.is_empty() {
                return None;
            }
        }
        _ => {}
    }
    let (r, n) = decode_rune(chunk);
    if r == RUNE_ERROR && n == 1 {
        return None;
    }
    let rest = &chunk[n..];
    if rest.is_empty() {
        return None;
    }
    Some((r, rest))
}

/// `utf8.DecodeRune`: the first rune of `b` and its length; U+FFFD and 1 for an invalid
/// or truncated sequence (and for an empty slice, as Go: `RuneError, 0` — never asked for).
fn decode_rune(b: &[u8]) -> (u32, usize) {
    let Some(&first) = b.first() else {
        return (RUNE_ERROR, 0);
    };
    let len = match first {
        0x00..=0x7f => return (u32::from(first), 1),
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return (RUNE_ERROR, 1),
    };
    match b.get(..len).and_then(|s| std::str::from_utf8(s).ok()) {
        Some(s) => (s.chars().next().map_or(RUNE_ERROR, u32::from), len),
        None => (RUNE_ERROR, 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Go's own table (path/filepath/match_test.go `matchTests`), Unix rows; `None` is
    /// `ErrBadPattern`. Results are Go's, from its test file.
    #[test]
    fn go_match_tests() {
        for (p, n, want) in [
            ("abc", "abc", Some(true)),
            ("*", "abc", Some(true)),
            ("*c", "abc", Some(true)),
            ("a*", "a", Some(true)),
            ("a*", "abc", Some(true)),
            ("a*", "ab/c", Some(false)),
            ("a*/b", "abc/b", Some(true)),
            ("a*/b", "a/c/b", Some(false)),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", Some(true)),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", Some(true)),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", Some(false)),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", Some(false)),
            ("a*b?c*x", "abxbbxdbxebxczzx", Some(true)),
            ("a*b?c*x", "abxbbxdbxebxczzy", Some(false)),
            ("ab[c]", "abc", Some(true)),
            ("ab[b-d]", "abc", Some(true)),
            ("ab[e-g]", "abc", Some(false)),
            ("ab[^c]", "abc", Some(false)),
            ("ab[^b-d]", "abc", Some(false)),
            ("ab[^e-g]", "abc", Some(true)),
            ("a\\*b", "a*b", Some(true)),
            ("a\\*b", "ab", Some(false)),
            ("a?b", "a☺b", Some(true)),
            ("a[^a]b", "a☺b", Some(true)),
            ("a???b", "a☺b", Some(false)),
            ("a[^a][^a][^a]b", "a☺b", Some(false)),
            ("[a-ζ]*", "α", Some(true)),
            ("*[a-ζ]", "A", Some(false)),
            ("a?b", "a/b", Some(false)),
            ("a*b", "a/b", Some(false)),
            ("[\\]a]", "]", Some(true)),
            ("[\\-]", "-", Some(true)),
            ("[x\\-]", "x", Some(true)),
            ("[x\\-]", "-", Some(true)),
            ("[x\\-]", "z", Some(false)),
            ("[\\-x]", "x", Some(true)),
            ("[\\-x]", "-", Some(true)),
            ("[\\-x]", "a", Some(false)),
            ("[]a]", "]", None),
            ("[-]", "-", None),
            ("[x-]", "x", None),
            ("[x-]", "-", None),
            ("[x-]", "z", None),
            ("[-x]", "x", None),
            ("[-x]", "-", None),
            ("[-x]", "a", None),
            ("\\", "a", None),
            ("[a-b-c]", "a", None),
            ("[", "a", None),
            ("[^", "a", None),
            ("[^bc", "a", None),
            ("a[", "a", None),
            ("a[", "ab", None),
            ("a[", "x", None),
            ("a/b[", "x", None),
            ("*x", "xxx", Some(true)),
        ] {
            assert_eq!(go_filepath_match(p, n), want, "{p:?} vs {n:?}");
        }
    }

    /// Rows beyond Go's table that pin the Go ≥ 1.16 error behaviour and byte semantics.
    #[test]
    fn errors_and_bytes_like_go() {
        for (p, n, want) in [
            ("*x[", "x", None),
            ("a*[", "abc", None),
            ("x*", "x[", Some(true)),
            ("é?", "éa", Some(true)),
            ("*é", "aé", Some(true)),
            ("?", "é", Some(true)),
            ("[é-ë]", "ê", Some(true)),
            ("", "", Some(true)),
            ("", "a", Some(false)),
        ] {
            assert_eq!(go_filepath_match(p, n), want, "{p:?} vs {n:?}");
        }
    }

    /// A tenant's key with 50 stars against a long label: Go's algorithm is linear per
    /// chunk, so this finishes at once (the recursive matcher took minutes). The join in a
    /// bounded wait keeps a regression from hanging the suite.
    #[test]
    fn many_stars_against_a_long_label_finish() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let name = "a".repeat(250);
            let mut results = Vec::new();
            for pattern in [
                format!("{}b", "*a".repeat(50)),
                format!("{}b", "*".repeat(50)),
                format!("{}*", "a*".repeat(50)),
                format!("{}?b", "*?".repeat(50)),
            ] {
                results.push(go_filepath_match(&pattern, &name));
            }
            let _ = tx.send(results);
        });
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("glob match did not finish");
        assert_eq!(got, [Some(false), Some(false), Some(true), Some(false)]);
    }
}
