//! The host's resolver files. containerd and CRI-O run in the host's network namespace
//! and use its `/etc/resolv.conf` and `/etc/hosts` (Go's resolver reads exactly these);
//! on systemd-resolved nodes `/etc/resolv.conf` is a symlink, resolved inside the root.

use std::path::{Path, PathBuf};

use super::{Finding, FindingKind};
use crate::hostroot::HostRoot;

pub const RESOLV_CONF: &str = "/etc/resolv.conf";
pub const HOSTS: &str = "/etc/hosts";

/// Real path of the node's resolv.conf (the lexical path if it cannot be resolved, so
/// the DNS phase reports the missing file itself).
pub fn resolv_conf(hr: &HostRoot) -> PathBuf {
    hr.real_path(Path::new(RESOLV_CONF))
}

pub fn hosts_file(hr: &HostRoot) -> PathBuf {
    hr.real_path(Path::new(HOSTS))
}

/// One finding per resolver file the node lacks. Without resolv.conf the runtimes' Go
/// resolver asks 127.0.0.1:53 and [::1]:53 (net/dnsconfig_unix.go `defaultNS`), so a node
/// without a local DNS server resolves nothing; without a hosts file no name is answered
/// from one.
pub fn missing_files(hr: &HostRoot) -> Vec<Finding> {
    let mut out = Vec::new();
    if !hr.is_file(Path::new(RESOLV_CONF)) {
        out.push(Finding::new(
            FindingKind::ResolverFileMissing,
            Some(Path::new(RESOLV_CONF)),
            format!("{RESOLV_CONF} does not exist: the runtime's resolver asks 127.0.0.1:53 and [::1]:53 instead"),
        ));
    }
    if !hr.is_file(Path::new(HOSTS)) {
        out.push(Finding::new(
            FindingKind::ResolverFileMissing,
            Some(Path::new(HOSTS)),
            format!("{HOSTS} does not exist: no name is answered from a hosts file"),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_resolved_stub_symlink() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::create_dir_all(d.path().join("run/systemd/resolve")).unwrap();
        std::fs::write(
            d.path().join("run/systemd/resolve/stub-resolv.conf"),
            "nameserver 127.0.0.53\n",
        )
        .unwrap();
        std::os::unix::fs::symlink(
            "../run/systemd/resolve/stub-resolv.conf",
            d.path().join("etc/resolv.conf"),
        )
        .unwrap();
        let hr = HostRoot::new(d.path()).unwrap();
        assert_eq!(
            resolv_conf(&hr),
            d.path().join("run/systemd/resolve/stub-resolv.conf")
        );
        assert_eq!(hosts_file(&hr), d.path().join("etc/hosts"));
    }
}
