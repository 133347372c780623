//! A credential-provider plugin's stdout (`CredentialProviderResponse`).
#![no_main]
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use pullprobe::credentials::provider::{parse_reply, ProviderSpec};
use pullprobe::reference::ImageRef;

fuzz_target!(|data: &[u8]| {
    let spec = ProviderSpec {
        name: "fuzz".into(),
        match_images: vec!["*.example.com".into()],
        default_cache_duration: Duration::from_secs(600),
        api_version: "credentialprovider.kubelet.k8s.io/v1".into(),
        args: Vec::new(),
        env: Vec::new(),
        token: None,
    };
    let Ok(image) = ImageRef::parse("reg.example.com/team/app:v1") else {
        return;
    };
    match parse_reply(&spec, &image.repository(), &image, data) {
        Ok(r) => {
            let _ = (r.cache_key, r.duration, r.auth.len());
        }
        Err(e) => {
            let m = e.to_string();
            assert!(!m.chars().any(char::is_control), "{m}");
        }
    }
});
