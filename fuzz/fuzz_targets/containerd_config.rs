//! containerd `config.toml` (v1–v3), without following `imports`.
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pullprobe::nodeconfig::containerd;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let mut problems = Vec::new();
    let cfg = containerd::from_text(
        None,
        Path::new("/etc/containerd/config.toml"),
        s,
        &mut problems,
    );
    let _ = cfg.roots();
    for p in &problems {
        let _ = p.to_string();
    }
});
