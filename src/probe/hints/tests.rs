use super::*;

fn sources() -> Vec<Option<CredentialSource>> {
    vec![
        None,
        Some(CredentialSource::CommandLine),
        Some(CredentialSource::AuthFile {
            path: "/var/lib/kubelet/config.json".into(),
            key: "reg.example:5000".into(),
        }),
        Some(CredentialSource::PullSecret {
            namespace: "team".into(),
            name: "regcred".into(),
            key: "reg.example:5000".into(),
        }),
        Some(CredentialSource::Plugin {
            name: "ecr-login".into(),
            key: "*.example".into(),
        }),
        Some(CredentialSource::RuntimeConfig {
            path: "/etc/containerd/config.toml".into(),
            host: "reg.example:5000".into(),
        }),
    ]
}

fn entries() -> Vec<Entry> {
    vec![
        Entry::default(),
        Entry {
            hosts_toml: Some("/etc/containerd/certs.d/reg.example:5000/hosts.toml".into()),
            exists: true,
            host_table: Some("[host.\"https://mirror.example:5000\"]".into()),
            ca_files: vec!["/etc/containerd/certs.d/reg.example:5000/ca.crt".into()],
            sibling_ca: None,
        },
        Entry {
            hosts_toml: Some("/etc/containerd/certs.d/reg.example:5000/hosts.toml".into()),
            exists: true,
            host_table: None,
            ca_files: Vec::new(),
            sibling_ca: Some("/etc/containerd/certs.d/reg.example:5000/mirror-ca.crt".into()),
        },
    ]
}

/// Every context a hint can be rendered in: site × runtime × credential source × resolver
/// present or missing × the endpoint's entry.
fn contexts() -> Vec<HintContext> {
    let mut out = Vec::new();
    for site in [Site::Workstation, Site::Node] {
        for runtime in [Runtime::Containerd, Runtime::Crio] {
            for credential in sources() {
                for missing in [false, true] {
                    for entry in entries() {
                        out.push(HintContext {
                            runtime,
                            site,
                            host: "reg.example:5000".into(),
                            addr: Some("10.0.0.5:5000".into()),
                            credential: credential.clone(),
                            resolver: ResolverFile {
                                path: "/etc/resolv.conf".into(),
                                missing,
                            },
                            entry,
                            platform: "linux/arm64".into(),
                            repository: "reg.example:5000/team/app".into(),
                            retry_after_s: Some(30),
                        });
                    }
                }
            }
        }
    }
    out
}

/// What makes a rendered hint a sentence: `cause: action`, both parts there, nothing left
/// unfilled or doubled, no clause glued into another (the README once read "the registry
/// rejected no credential was sent: …").
fn assert_sentence(reason: Reason, c: &HintContext, h: &str) {
    let ctx = format!(
        "{reason} {:?} {:?} {:?}: {h}",
        c.site, c.runtime, c.credential
    );
    let (cause, action) = h
        .split_once(": ")
        .unwrap_or_else(|| panic!("no `cause: action` in {ctx}"));
    assert!(cause.len() >= 10 && action.len() >= 10, "{ctx}");
    assert!(
        !h.contains('{') && !h.contains('}') && !h.contains('<'),
        "unfilled: {ctx}"
    );
    assert!(
        !h.contains("  ") && !h.ends_with(':') && h.trim() == h,
        "{ctx}"
    );
    assert!(!h.ends_with('.'), "no full stop, like the rest: {ctx}");
    let words: Vec<&str> = h.split_whitespace().collect();
    for w in words.windows(2) {
        assert!(w[0] != w[1], "doubled word {:?}: {ctx}", w[0]);
    }
    for glued in [
        "rejected no ",
        " for no ",
        "was sent was",
        "and no credential",
    ] {
        assert!(!h.contains(glued), "glued clauses ({glued:?}): {ctx}");
    }
}

/// A credential hint names what was sent, or says none was; never both.
fn assert_names_the_credential(reason: Reason, c: &HintContext, h: &str) {
    let ctx = format!("{reason} {:?} {:?}: {h}", c.site, c.credential);
    if !matches!(
        reason,
        Reason::AuthCredentialsRequired | Reason::AuthCredentialsRejected | Reason::AuthDenied
    ) {
        return;
    }
    match &c.credential {
        // A rejection always follows a credential; without its source the hint points
        // at the field that names it.
        None if reason == Reason::AuthCredentialsRejected => {
            assert!(h.contains("`credential_source`"), "{ctx}")
        }
        None => assert!(h.contains("none was sent"), "{ctx}"),
        Some(src) => {
            assert!(!h.contains("none was sent"), "{ctx}");
            let name = match src {
                CredentialSource::CommandLine => "--username".to_string(),
                CredentialSource::AuthFile { path, .. }
                | CredentialSource::RuntimeConfig { path, .. } => path.display().to_string(),
                CredentialSource::PullSecret {
                    namespace, name, ..
                } => format!("{namespace}/{name}"),
                CredentialSource::Plugin { name, .. } => name.clone(),
            };
            assert!(h.contains(&name), "does not name {name}: {ctx}");
        }
    }
}

/// Workstation fixes name this machine's flags and files; node fixes the node's (what
/// the credential source itself is called aside).
fn assert_fits_the_site(reason: Reason, c: &HintContext, h: &str) {
    let ctx = format!("{reason} {:?} {:?}: {h}", c.site, c.credential);
    let h = &match &c.credential {
        Some(src) => h.replace(&sent(src), "SOURCE"),
        None => h.to_string(),
    };
    let (wrong, place) = match c.site {
        Site::Workstation => (
            &[
                "imagePullSecret",
                "kubelet",
                "the node",
                "hosts.toml in",
                "certs.d/",
            ][..],
            "workstation",
        ),
        Site::Node => (
            &[
                "--username",
                "--ca-file",
                "--plain-http",
                "--cert",
                "~/.docker",
                "this machine",
            ][..],
            "node",
        ),
    };
    for w in wrong {
        assert!(!h.contains(w), "{w:?} on a {place}: {ctx}");
    }
}

#[test]
fn every_hint_is_a_sentence_for_every_reason_site_and_credential_source() {
    let mut n = 0;
    for c in contexts() {
        for r in Reason::ALL {
            let h = hint(*r, &c);
            assert_sentence(*r, &c, &h);
            assert_names_the_credential(*r, &c, &h);
            assert_fits_the_site(*r, &c, &h);
            n += 1;
        }
    }
    assert!(n > 5000, "{n} hints rendered");
    for r in Reason::ALL {
        let f = fix(*r);
        assert!(!f.contains('{'), "{r}: {f}");
        assert!(f.split_once(": ").is_some(), "{r}: {f}");
    }
}

#[test]
fn dns_hints_name_the_host_without_its_port_and_a_missing_resolv_conf() {
    let mut c = HintContext {
        host: "registry-1.docker.io:443".into(),
        ..HintContext::generic()
    };
    for r in Reason::ALL.iter().filter(|r| r.phase() == Phase::Dns) {
        let h = hint(*r, &c);
        assert!(!h.contains(":443"), "{r}: {h}");
        if *r != Reason::DNSConfigInvalid {
            assert!(h.contains("registry-1.docker.io"), "{r}: {h}");
        }
    }
    assert_eq!(dns_name("[::1]:53"), "::1");
    assert_eq!(dns_name("reg.example"), "reg.example");
    c.resolver = ResolverFile {
        path: "/etc/resolv.conf".into(),
        missing: true,
    };
    let h = hint(Reason::DNSTimeout, &c);
    assert!(
        h.starts_with("/etc/resolv.conf does not exist") && h.contains("127.0.0.1:53"),
        "{h}"
    );
}

#[test]
fn tls_fixes_name_the_file_and_entry_the_plan_used() {
    let file = "/srv/containerd/hosts/reg.example:5000/hosts.toml";
    let server = HintContext {
        host: "reg.example:5000".into(),
        entry: Entry {
            hosts_toml: Some(file.into()),
            exists: true,
            host_table: None,
            ca_files: Vec::new(),
            sibling_ca: Some("/srv/containerd/hosts/reg.example:5000/ca.crt".into()),
        },
        ..HintContext::generic()
    };
    let h = hint(Reason::TLSUnknownAuthority, &server);
    assert_eq!(
        h,
        "reg.example:5000 presents a certificate no CA of the node signs: add `ca = \"/srv/containerd/hosts/reg.example:5000/ca.crt\"` at the top level of /srv/containerd/hosts/reg.example:5000/hosts.toml (the `server` entry), or add the CA to the node's CA bundle"
    );
    assert!(!h.contains("/etc/containerd/certs.d"), "{h}");
    let mirror = HintContext {
        entry: Entry {
            host_table: Some("[host.\"https://m.example\"]".into()),
            ca_files: vec!["/srv/containerd/hosts/reg.example:5000/ca.crt".into()],
            ..server.entry.clone()
        },
        ..server.clone()
    };
    let h = hint(Reason::TLSUnknownAuthority, &mirror);
    assert!(
        h.starts_with("the CA /srv/containerd/hosts/reg.example:5000/ca.crt of this endpoint (under [host.\"https://m.example\"] in /srv/"),
        "{h}"
    );
    let ws = HintContext {
        site: Site::Workstation,
        ..server
    };
    assert!(hint(Reason::TLSUnknownAuthority, &ws).contains("--ca-file"));
}

#[test]
fn credential_fixes_follow_the_source_and_the_site() {
    let ws = HintContext {
        site: Site::Workstation,
        ..HintContext::generic()
    };
    let h = hint(Reason::AuthCredentialsRequired, &ws);
    assert!(
        h.contains("--username USER --password-stdin") && h.contains("--auth-file"),
        "{h}"
    );
    let cli = HintContext {
        credential: Some(CredentialSource::CommandLine),
        ..ws
    };
    assert_eq!(
        hint(Reason::AuthCredentialsRejected, &cli),
        "<host> rejected the user name and password given with --username/--password-stdin: check the user name and password"
    );
    let node = HintContext::generic();
    assert!(hint(Reason::AuthCredentialsRequired, &node).contains("imagePullSecret"));
}
