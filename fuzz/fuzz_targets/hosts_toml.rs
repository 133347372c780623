//! containerd `hosts.toml` (and the helpers its loader uses).
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pullprobe::nodeconfig::hosts_toml::{
    clean_path, parse_hosts_file, sorted_hosts, split_server, unknown_keys,
    HostsTomlQuirks,
};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    for quirks in [
        HostsTomlQuirks::default(),
        HostsTomlQuirks {
            reject_top_level_only: true,
            ignore_dial_timeout: true,
            referrers_capability: false,
        },
        HostsTomlQuirks {
            referrers_capability: true,
            ..HostsTomlQuirks::default()
        },
    ] {
        match parse_hosts_file(Path::new("/etc/containerd/certs.d/r.example"), s, quirks) {
            Ok(hosts) => {
                for h in hosts {
                    // Go's u.Host never carries userinfo.
                    assert!(!h.host.contains('@'), "{}", h.host);
                }
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
    let _ = sorted_hosts(s);
    let _ = unknown_keys(s);
    // The first line doubles as a `server` / duration / path string.
    let line = s.lines().next().unwrap_or_default();
    let _ = split_server(line);
    let _ = pullprobe::goduration::parse(line);
    let _ = clean_path(line);
});
