//! k3s / rke2 `registries.yaml`, and the hosts.toml files k3s renders from it.
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pullprobe::nodeconfig::hosts_toml::{parse_hosts_file, HostsTomlQuirks};
use pullprobe::nodeconfig::k3s::{self, Distro};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let (reg, problems) = k3s::parse(Path::new("/etc/rancher/k3s/registries.yaml"), s);
    for p in &problems {
        let _ = p.to_string();
    }
    for a in reg.configs.values().filter_map(|c| c.auth.as_ref()) {
        let _ = k3s::credential(a);
    }
    let (files, _warnings) = k3s::render(Distro::K3s, &reg);
    for (dir, text) in &files {
        // What k3s writes, containerd must be able to read (or reject cleanly).
        let _ = parse_hosts_file(Path::new(dir), text, HostsTomlQuirks::default());
    }
});
