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
            // The body may be a token: the message is one of the fixed texts, with at most
            // a position and a size in it — never any of the body (a containment check
            // would flag a body that spells the message itself, as the fuzzer found).
            let m = f.message.as_str();
            let fixed = [
                "token response has neither `token` nor `access_token`",
                "token contains characters not allowed in an HTTP header",
            ];
            let position = m
                .strip_prefix("token response is not valid JSON (line ")
                .is_some_and(|rest| {
                    rest.chars()
                        .all(|c| c.is_ascii_digit() || " ,columnbytes)".contains(c))
                });
            assert!(fixed.contains(&m) || position, "{m}");
        }
    }
});
