//! Words for people: durations, counts and OS errors as an operator reads them (`5 s`,
//! `2,161`, `connection refused`), never Rust debug forms (`5s`, `(os error 111)`).
//! Below every module that writes a message.

use std::time::Duration;

/// `250 ms`, `5 s`, `1.5 s`, `2 min 30 s`.
pub fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms} ms");
    }
    let secs = d.as_secs();
    if secs < 60 {
        let tenths = (ms % 1000) / 100;
        return if tenths == 0 {
            format!("{secs} s")
        } else {
            format!("{secs}.{tenths} s")
        };
    }
    match secs % 60 {
        0 => format!("{} min", secs / 60),
        s => format!("{} min {s} s", secs / 60),
    }
}

/// `2161` → `2,161`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// An OS error in words: `connection refused`, `no route to host`, `timed out` — the
/// kind, without `(os error N)`.
pub fn io_words(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    let kind = match e.kind() {
        K::ConnectionRefused => "connection refused",
        K::ConnectionReset => "connection reset by the peer",
        K::ConnectionAborted => "connection aborted",
        K::TimedOut => "timed out",
        K::HostUnreachable => "no route to host",
        K::NetworkUnreachable => "network unreachable",
        K::AddrNotAvailable => "address not available",
        K::UnexpectedEof => "the connection closed early",
        K::BrokenPipe => "the connection broke",
        K::PermissionDenied => "permission denied",
        K::NotFound => "not found",
        _ => "",
    };
    if !kind.is_empty() {
        return kind.to_string();
    }
    match e.raw_os_error() {
        Some(113) => "no route to host".into(),
        Some(101) => "network unreachable".into(),
        Some(_) | None => {
            // Keep the text, drop a trailing "(os error N)".
            let t = e.to_string();
            match t.rfind(" (os error") {
                Some(i) => t[..i].to_lowercase(),
                None => t,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_not_internals() {
        assert_eq!(human_duration(Duration::from_millis(250)), "250 ms");
        assert_eq!(human_duration(Duration::from_secs(5)), "5 s");
        assert_eq!(human_duration(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(human_duration(Duration::from_secs(150)), "2 min 30 s");
        assert_eq!(thousands(2161), "2,161");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000_000), "1,000,000");
        let e = std::io::Error::from_raw_os_error(111);
        assert_eq!(io_words(&e), "connection refused");
        let e = std::io::Error::from_raw_os_error(113);
        assert_eq!(io_words(&e), "no route to host");
    }
}
