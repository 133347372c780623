//! CRI-O / containers-image `registries.conf` and drop-ins (files separated by NUL), then
//! the lookups the plan makes with them.
#![no_main]
use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use pullprobe::nodeconfig::crio;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let files: Vec<(PathBuf, String)> = s
        .split('\0')
        .enumerate()
        .map(|(i, t)| {
            let p = if i == 0 {
                PathBuf::from(crio::REGISTRIES_CONF)
            } else {
                PathBuf::from(crio::REGISTRIES_CONF_D).join(format!("{i:03}.conf"))
            };
            (p, t.to_string())
        })
        .collect();
    let mut problems = Vec::new();
    let cfg = crio::from_texts(&files, &mut problems);
    for repo in [
        "docker.io/library/nginx",
        "quay.io/a/b",
        "r.example:5000/x",
        "localhost/y",
    ] {
        if let Some(r) = cfg.find_registry(repo) {
            let _ = r.pull_sources(repo, false);
            let _ = r.pull_sources(repo, true);
        }
    }
    for name in ["nginx", "a/b", "x"] {
        let _ = cfg.resolve_short_name(name, None);
        let _ = cfg.resolve_short_name(name, Some("enforcing"));
    }
});
