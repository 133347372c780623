//! `WWW-Authenticate` header values of a 401 (one value per line).
#![no_main]
use libfuzzer_sys::fuzz_target;
use pullprobe::probe::auth::pick_challenge;
use pullprobe::probe::challenge::parse_challenges;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let values: Vec<&str> = s.split('\n').collect();
    if let Ok(cs) = parse_challenges(&values) {
        for c in &cs {
            assert!(!c.scheme.is_empty());
            assert_eq!(c.scheme, c.scheme.to_ascii_lowercase());
            let _ = (c.realm(), c.service(), c.scope(), c.error());
        }
        let _ = pick_challenge(&cs, true).map_err(|f| f.message);
        let _ = pick_challenge(&cs, false).map_err(|f| f.message);
    }
});
