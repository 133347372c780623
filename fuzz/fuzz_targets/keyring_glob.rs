//! Pull-secret / config.json keys against image hosts: the kubelet's key normalisation and
//! `URLsMatch` (Go's filepath.Match per label). Input: key, newline, image.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pullprobe::credentials::glob::go_filepath_match;
use pullprobe::credentials::keyring::{normalize_key, url_matches_key};
use pullprobe::redact;
use pullprobe::reference::ImageRef;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let (key, target) = s.split_once('\n').unwrap_or((s, "a.example/x"));
    let _ = go_filepath_match(key, target);
    let _ = normalize_key(key);
    if let Ok(image) = ImageRef::parse(target) {
        let _ = url_matches_key(key, &image);
    }
    // The redaction helpers see the same kind of text (URLs from files and servers).
    let shown = redact::url_text(key);
    assert!(!shown.contains('?') && !shown.contains('#'), "{shown}");
    let t = redact::text(key);
    assert!(!t.chars().any(char::is_control));
});
