//! The node's system CA bundle, found the way Go's crypto/x509 finds it
//! (`root_linux.go` `certFiles`: the first file that can be read wins), but under the
//! host root, so probes trust what the runtime trusts and not what the agent image ships.

use std::path::{Path, PathBuf};

use crate::hostroot::HostRoot;

/// Go 1.2x `certFiles` order (crypto/x509/root_linux.go).
pub const CA_BUNDLE_CANDIDATES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt", // Debian/Ubuntu/Gentoo etc.
    "/etc/pki/tls/certs/ca-bundle.crt",   // Fedora/RHEL 6
    "/etc/ssl/ca-bundle.pem",             // OpenSUSE
    "/etc/pki/tls/cacert.pem",            // OpenELEC
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", // CentOS/RHEL 7
    "/etc/ssl/cert.pem",                  // Alpine Linux
];

/// The node's bundle: (node path, real path under the host root).
pub fn find_ca_bundle(hr: &HostRoot) -> Option<(PathBuf, PathBuf)> {
    CA_BUNDLE_CANDIDATES.iter().find_map(|c| {
        let node = Path::new(c);
        // Go reads the file; an unreadable or empty candidate is skipped.
        match hr.read(node) {
            Ok(b) if !b.is_empty() => hr.resolve(node).ok().map(|real| (node.to_path_buf(), real)),
            _ => None,
        }
    })
}

/// Whether `bytes` hold at least one PEM certificate (Go's `AppendCertsFromPEM` result).
pub fn has_pem_certificate(bytes: &[u8]) -> bool {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::pem_slice_iter(bytes).any(|c| c.is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_rhel_suse_order() {
        for (files, want) in [
            (
                vec![
                    "/etc/ssl/certs/ca-certificates.crt",
                    "/etc/ssl/ca-bundle.pem",
                ],
                "/etc/ssl/certs/ca-certificates.crt",
            ),
            (
                vec![
                    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
                    "/etc/pki/tls/certs/ca-bundle.crt",
                ],
                "/etc/pki/tls/certs/ca-bundle.crt",
            ),
            (vec!["/etc/ssl/ca-bundle.pem"], "/etc/ssl/ca-bundle.pem"),
        ] {
            let d = tempfile::tempdir().unwrap();
            for f in &files {
                let p = d.path().join(f.trim_start_matches('/'));
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(p, "pem").unwrap();
            }
            let hr = HostRoot::new(d.path()).unwrap();
            let (node, real) = find_ca_bundle(&hr).unwrap();
            assert_eq!(node, Path::new(want));
            assert_eq!(real, d.path().join(want.trim_start_matches('/')));
        }
        let d = tempfile::tempdir().unwrap();
        assert!(find_ca_bundle(&HostRoot::new(d.path()).unwrap()).is_none());
    }

    #[test]
    fn rhel_symlinked_bundle_resolves_inside_root() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc/pki/ca-trust/extracted/pem")).unwrap();
        std::fs::create_dir_all(d.path().join("etc/pki/tls/certs")).unwrap();
        std::fs::write(
            d.path()
                .join("etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem"),
            "pem",
        )
        .unwrap();
        std::os::unix::fs::symlink(
            "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
            d.path().join("etc/pki/tls/certs/ca-bundle.crt"),
        )
        .unwrap();
        let (node, real) = find_ca_bundle(&HostRoot::new(d.path()).unwrap()).unwrap();
        assert_eq!(node, Path::new("/etc/pki/tls/certs/ca-bundle.crt"));
        assert!(real.ends_with("etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem"));
    }
}
