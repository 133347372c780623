//! A token endpoint's JSON reply.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pullprobe::probe::auth::{parse_token, MAX_TOKEN_LIFETIME};

fuzz_target!(|data: &[u8]| {
    match parse_token(data) {
        Ok((token, lifetime)) => {
            assert!(lifetime <= MAX_TOKEN_LIFETIME);
            assert!(!token.expose().is_empty());
            assert!(!token.expose().chars().any(|c| c.is_control() || c == ' '));
        }
        Err(f) => {
            // The body may be a token: the message never quotes it.
            if data.len() >= 16 {
                let body = String::from_utf8_lossy(data);
                assert!(!f.message.contains(body.as_ref()), "{}", f.message);
            }
        }
    }
});
