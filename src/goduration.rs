//! Go's `time.ParseDuration`, as containerd (`hosts.toml` `dial_timeout`) and the kubelet
//! (a credential plugin's `cacheDuration`) read durations. Below every module that does.

use std::time::Duration;

/// Go's `time.ParseDuration` (units ns, us, µs, ms, s, m, h; fractions; sign), with
/// its range: a `time.Duration` is an int64 of nanoseconds, so anything above
/// ~292 years is an error there (`invalid duration`) and here (`None`). Callers still
/// cap what they add to an `Instant` (checked_add) — the range is not a sane lifetime.
pub fn parse(s: &str) -> Option<Duration> {
    /// `math.MaxInt64` nanoseconds, in seconds.
    const GO_MAX_DURATION_SECS: f64 = 9_223_372_036.854_775;
    let (neg, mut rest) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += num * mult;
    }
    if neg && total > 0.0 {
        return None; // a negative dial timeout is meaningless here
    }
    if !total.is_finite() || total > GO_MAX_DURATION_SECS {
        return None;
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_and_their_range() {
        assert_eq!(parse("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse("0"), Some(Duration::ZERO));
        assert_eq!(parse("10"), None);
        assert_eq!(parse(""), None);
        // Go's range: int64 nanoseconds (2562047h47m16.854775807s is the maximum).
        assert_eq!(
            parse("2562047h"),
            Some(Duration::from_secs(2_562_047 * 3600))
        );
        for over in [
            "2562048h",
            "5000000000000000h",
            "99999999999999999999999999999999999999h",
            "1e400s",
        ] {
            assert_eq!(parse(over), None, "{over}");
        }
    }
}
