//! Manifest and index bodies, and digest checks on them.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pullprobe::probe::manifest::{
    is_index, is_valid_digest, parse_body, sha256_digest, verify_digest,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = parse_body(data) {
        if let Some(c) = &m.config_digest {
            assert!(is_valid_digest(c), "{c}");
        }
        for e in &m.manifests {
            assert!(is_valid_digest(&e.digest), "{}", e.digest);
            let _ = verify_digest(data, &e.digest);
        }
        let _ = m.media_type.as_deref().map(is_index);
    }
    let d = sha256_digest(data);
    assert!(is_valid_digest(&d));
    assert!(verify_digest(data, &d).is_ok());
});
