//! Docker `config.json` / `.dockercfg` (kubelet config.json, pull-secret payloads,
//! `--auth-file`), and the kubelet's keyring lookups on it.
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pullprobe::credentials::docker_config::DockerConfig;
use pullprobe::reference::ImageRef;

fuzz_target!(|data: &[u8]| {
    let cfg = match DockerConfig::parse(Path::new("/var/lib/kubelet/config.json"), data) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    for image in [
        "nginx",
        "r.example:5000/team/app",
        "a.b.c.example/x/y:1",
        "[::1]:5000/z",
    ] {
        let Ok(image) = ImageRef::parse(image) else {
            continue;
        };
        let _ = cfg.lookup_kubelet(&image);
        let _ = cfg.lookup_exact(&image);
    }
});
