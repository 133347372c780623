//! What a report says beyond the probe's verdict, from what only the pipeline knows — where
//! the check runs and the plan it walked: the fix ([`crate::probe::hints`], by site, file
//! and entry), the plan's findings that change the path (`warnings`), and the scheme the
//! deciding endpoint really used (an `http://` host that containerd tries over HTTPS first).

use super::Pipeline;
use crate::endpoint::Endpoint;
use crate::nodeconfig::{FindingKind, Plan};
use crate::probe::hints::{HintEnv, ResolverFile, Site};
use crate::probe::{Phase, ProbeReport, ProbeTarget};
use crate::reference::ImageRef;

/// Findings that change which endpoints a pull walks or how it reaches them; the rest
/// (deprecations) are `plan`'s alone.
fn changes_the_path(kind: FindingKind) -> bool {
    !matches!(kind, FindingKind::LegacyRegistryConfig)
}

impl Pipeline {
    /// Fill the report's hint and warnings, and the scheme its endpoint really used.
    pub(super) fn annotate(&self, image: &ImageRef, target: &ProbeTarget, r: &mut ProbeReport) {
        let plan = self.plan(image);
        let env = self.hint_env(image, plan.as_ref(), &target.endpoints);
        r.hint = env.for_report(r, &image.repository());
        if let Some(p) = &plan {
            r.warnings.extend(
                p.findings
                    .iter()
                    .filter(|f| changes_the_path(f.kind))
                    .map(|f| f.message.clone()),
            );
        }
        if let Some(w) = tls_unverified(image, &target.endpoints, r) {
            r.warnings.push(w);
        }
        if let Some(used) = scheme_used(r) {
            r.endpoint = Some(used);
        }
    }

    fn hint_env<'a>(
        &'a self,
        image: &ImageRef,
        plan: Option<&Plan>,
        endpoints: &'a [Endpoint],
    ) -> HintEnv<'a> {
        let options = self.options();
        let host_root = self.spec.host_root.as_deref();
        let resolver = ResolverFile {
            path: crate::hostroot::shown_on_node(host_root, &options.resolv_conf),
            missing: !options.resolv_conf.is_file(),
        };
        HintEnv {
            runtime: self.runtime,
            site: if host_root.is_some() {
                Site::Node
            } else {
                Site::Workstation
            },
            resolver,
            platform: self.platform.to_string(),
            endpoints,
            host_root,
            hosts_toml: self.hosts_toml(image, plan),
        }
    }

    /// containerd's hosts.toml for the image (node path) and whether it exists: the plan's,
    /// else where the first `config_path` root would hold it.
    fn hosts_toml(&self, image: &ImageRef, plan: Option<&Plan>) -> Option<(String, bool)> {
        if let Some(dir) = plan.and_then(|p| p.host_dir.as_ref()) {
            let f = dir.join("hosts.toml");
            let exists = self.node().is_some_and(|n| n.host_root.is_file(&f));
            return Some((f.display().to_string(), exists));
        }
        let cp = self.node()?.containerd.config.config_path.clone()?;
        let root = cp.split(':').find(|r| !r.is_empty())?.to_string();
        Some((
            format!(
                "{}/{}/hosts.toml",
                root.trim_end_matches('/'),
                image.registry_host()
            ),
            false,
        ))
    }
}

/// The deciding endpoint used TLS without checking the certificate: say so, and name
/// containerd's localhost rule when that is why (no hosts configuration for a loopback
/// registry: `https` first with `skip_verify`, then `http`; core/remotes/docker/config
/// `ConfigureHosts`).
fn tls_unverified(image: &ImageRef, endpoints: &[Endpoint], r: &ProbeReport) -> Option<String> {
    let url = r.endpoint.as_deref()?;
    let ep = endpoints
        .iter()
        .find(|e| e.display_url() == url)
        .or_else(|| {
            endpoints
                .iter()
                .find(|e| e.is_upstream && endpoints.len() == 1)
        })?;
    if !(ep.tls.skip_verify && tls_used(r, url)) {
        return None;
    }
    let host = ep.host_port();
    Some(
        if ep.origin.starts_with("default") && image.is_localhost() {
            format!("containerd's localhost rule: {host} has no hosts configuration, so containerd uses HTTPS without verifying the certificate (then plain HTTP); the certificate of {host} was not verified")
        } else {
            format!(
                "skip_verify is set for {host} ({}): its certificate was not verified",
                ep.origin
            )
        },
    )
}

/// The deciding endpoint with the scheme its requests used: `https://` when an `http://`
/// host answered over TLS (containerd tries HTTPS first), `http://` after a fallback.
fn scheme_used(r: &ProbeReport) -> Option<String> {
    let url = r.endpoint.as_deref()?;
    let rest = url.strip_prefix("http://")?;
    tls_used(r, url).then(|| format!("https://{rest}"))
}

/// The deciding attempt's requests to the endpoint `url` itself went over TLS (not only
/// those to a token realm or blob host), and did not fall back to plain HTTP.
fn tls_used(r: &ProbeReport, url: &str) -> bool {
    let Some(u) = url::Url::parse(url).ok() else {
        return false;
    };
    let (Some(host), Some(port)) = (u.host_str(), u.port_or_known_default()) else {
        return false;
    };
    let hp = format!("{host}:{port}");
    let fell_back = r
        .attempts
        .iter()
        .any(|a| a.https_to_http && a.endpoint == url);
    !fell_back
        && r.phases
            .iter()
            .any(|p| p.name == Phase::Tls && p.ok && p.host == hp)
}
