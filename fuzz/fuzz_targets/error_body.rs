//! A failing registry response: status, `Retry-After`, rate-limit headers and the
//! distribution error body, classified into a failure message.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pullprobe::probe::http::Response;
use pullprobe::probe::manifest::{
    error_code, rate_limit, retry_after, status_failure, MAX_RETRY_AFTER_S,
};

fuzz_target!(|data: &[u8]| {
    // Layout: 2 bytes status, then header lines "name: value" up to a blank line, then the body.
    if data.len() < 2 {
        return;
    }
    let status = 100 + u16::from_be_bytes([data[0], data[1]]) % 500;
    let rest = &data[2..];
    let (head, body) = match rest.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&rest[..i], &rest[i + 2..]),
        None => (&rest[..0], rest),
    };
    let mut headers = http::HeaderMap::new();
    for line in head.split(|b| *b == b'\n') {
        let Some(i) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (Ok(k), Ok(v)) = (
            http::header::HeaderName::from_bytes(&line[..i]),
            http::HeaderValue::from_bytes(line[i + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(k, v);
    }
    let Ok(status) = http::StatusCode::from_u16(status) else {
        return;
    };
    let resp = Response {
        status,
        headers,
        body: bytes::Bytes::copy_from_slice(body),
        url: url::Url::parse("https://registry.example/v2/a/manifests/b").expect("url"),
    };
    let _ = error_code(body);
    let _ = rate_limit(&resp);
    if let Some(s) = retry_after(&resp) {
        assert!(s <= MAX_RETRY_AFTER_S);
    }
    let f = status_failure(&resp, "a:b");
    assert!(!f.message.chars().any(char::is_control), "{}", f.message);
});
