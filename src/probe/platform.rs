//! platform phase: choose the manifest for the node's platform from an index, with
//! containerd's variant rules (platforms.Only: arm64 implies v8; armv7 also runs v6 and
//! v5; amd64 vN also runs lower levels).

use super::manifest::IndexEntry;
use crate::runtime::{normalize_arch, Platform};

fn variant_level(arch: &str, v: Option<&str>) -> Option<u32> {
    let default = match arch {
        "arm64" => Some(8),
        "arm" => Some(7),
        "amd64" => Some(1),
        _ => None,
    };
    match v {
        None | Some("") => default,
        Some(v) => v.trim_start_matches('v').parse().ok(),
    }
}

/// Does a manifest built for `candidate` run on `target`?
pub fn matches(target: &Platform, os: &str, arch: &str, variant: Option<&str>) -> bool {
    if target.os != os || target.architecture != normalize_arch(arch) {
        return false;
    }
    let want = variant_level(&target.architecture, target.variant.as_deref());
    let have = variant_level(&target.architecture, variant);
    match (want, have) {
        (Some(w), Some(h)) => match target.architecture.as_str() {
            // Newer levels run older binaries.
            "arm" | "amd64" => h <= w,
            _ => h == w,
        },
        (None, None) => true,
        _ => target.variant.as_deref() == variant,
    }
}

/// The best entry for `target`: an exact variant match first, then a compatible one.
pub fn select<'a>(target: &Platform, entries: &'a [IndexEntry]) -> Option<&'a IndexEntry> {
    let compatible: Vec<&IndexEntry> = entries
        .iter()
        .filter(|e| {
            e.platform
                .as_ref()
                .is_some_and(|p| matches(target, &p.os, &p.architecture, p.variant.as_deref()))
        })
        .collect();
    let want = variant_level(&target.architecture, target.variant.as_deref());
    compatible
        .iter()
        .max_by_key(|e| {
            e.platform
                .as_ref()
                .and_then(|p| variant_level(&target.architecture, p.variant.as_deref()))
                .map(|h| if Some(h) == want { u32::MAX } else { h })
                .unwrap_or(0)
        })
        .copied()
}

/// Platforms an index offers, for the failure message: `N entries, first k: …` for a
/// long index ([`crate::redact::list`]).
pub fn list(entries: &[IndexEntry]) -> String {
    crate::redact::list(
        entries
            .iter()
            .filter_map(|e| e.platform.as_ref())
            .map(|p| match &p.variant {
                Some(v) => format!("{}/{}/{}", p.os, p.architecture, v),
                None => format!("{}/{}", p.os, p.architecture),
            }),
        crate::redact::LIST_FIRST,
        ", ",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        Platform::parse(s).unwrap()
    }

    #[test]
    fn variant_rules() {
        assert!(matches(&p("linux/arm64"), "linux", "arm64", Some("v8")));
        assert!(matches(&p("linux/arm64/v8"), "linux", "arm64", None));
        assert!(matches(&p("linux/arm/v7"), "linux", "arm", Some("v6")));
        assert!(!matches(&p("linux/arm/v6"), "linux", "arm", Some("v7")));
        assert!(matches(&p("linux/amd64"), "linux", "amd64", None));
        assert!(!matches(&p("linux/amd64"), "linux", "arm64", None));
        assert!(!matches(&p("linux/amd64"), "windows", "amd64", None));
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("Linux/AMD64").is_err());
        assert!(Platform::parse("a/b/c/d").is_err());
    }
}
