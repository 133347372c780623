//! The kubelet's `CredentialProviderConfig` (YAML or JSON).
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pullprobe::credentials::provider::CredentialProviderConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    match CredentialProviderConfig::parse(Path::new("/etc/kubernetes/cp.yaml"), s) {
        Ok((cfg, problems)) => {
            for p in &problems {
                let _ = p.to_string();
            }
            for spec in &cfg.providers {
                assert!(!spec.name.is_empty() && !spec.name.contains('/'));
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
