//! One AdmissionReview in, one out: which workloads the guard looks at, whether their images
//! changed, and what the fleet's cache says about them. Always `allowed: true` (with
//! warnings) unless the namespace is labelled `pullprobe.io/rollout-guard=enforce` and some
//! candidate node cannot pull an image.

use std::collections::BTreeSet;

use jiff::Timestamp;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::{DynamicObject, Status};

use super::assess::assess;
use super::view::FleetView;
use super::warn::{self, Subject};
use crate::preflight::manifests::{workload_of, Workload};

/// The namespace label that opts a namespace in (`warn` or `enforce`).
pub const GUARD_LABEL: &str = "pullprobe.io/rollout-guard";

/// What a namespace's label asks of the guard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// No label: the webhook says nothing.
    Off,
    /// Warnings only (the label's value is anything but `enforce`).
    Warn,
    /// Deny when the cache says some node cannot pull.
    Enforce,
}

impl Mode {
    /// The mode a label value asks for.
    pub fn of_label(value: Option<&str>) -> Mode {
        match value {
            None => Mode::Off,
            Some("enforce") => Mode::Enforce,
            Some(_) => Mode::Warn,
        }
    }
}

/// The labelled namespaces, from a cache.
pub trait Namespaces: Send + Sync {
    /// `None` until the cache holds a full list.
    fn mode(&self, namespace: &str) -> Option<Mode>;
}

/// The workload kinds the guard looks at: apps/v1 Deployment, StatefulSet, DaemonSet and
/// batch/v1 CronJob (batch/v1beta1 before Kubernetes 1.21 serves v1; same pod template).
fn guarded(group: &str, version: &str, kind: &str) -> bool {
    matches!(
        (group, version, kind),
        ("apps", "v1", "Deployment" | "StatefulSet" | "DaemonSet")
            | ("batch", "v1" | "v1beta1", "CronJob")
    )
}

/// Why a review could not be read (answered as an invalid request; failurePolicy Ignore
/// lets the write through).
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error(
        "the body is not an admission.k8s.io/v1 AdmissionReview (line {line}, column {column})"
    )]
    Syntax { line: usize, column: usize },
    #[error("the AdmissionReview has no request")]
    NoRequest,
}

/// The answer to `body` (an AdmissionReview), as JSON.
pub fn answer(body: &[u8], fleet: &dyn FleetView, namespaces: &dyn Namespaces) -> Vec<u8> {
    let review = match parse(body) {
        Ok(req) => respond(&req, fleet, namespaces, Timestamp::now()).into_review(),
        Err(e) => {
            let mut r = AdmissionResponse::invalid(e.to_string());
            // Never block a write over our own trouble.
            r.allowed = true;
            r.into_review()
        }
    };
    serde_json::to_vec(&review).unwrap_or_default()
}

fn parse(body: &[u8]) -> Result<AdmissionRequest<DynamicObject>, ReviewError> {
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_slice(body).map_err(|e| ReviewError::Syntax {
            line: e.line(),
            column: e.column(),
        })?;
    review.try_into().map_err(|_| ReviewError::NoRequest)
}

/// The response to one request, at `now`.
pub fn respond(
    req: &AdmissionRequest<DynamicObject>,
    fleet: &dyn FleetView,
    namespaces: &dyn Namespaces,
    now: Timestamp,
) -> AdmissionResponse {
    let resp = AdmissionResponse::from(req);
    let kind = &req.kind;
    if !guarded(&kind.group, &kind.version, &kind.kind)
        || !matches!(req.operation, Operation::Create | Operation::Update)
    {
        return resp;
    }
    let ns = req.namespace.as_deref().unwrap_or("default");
    let mode = namespaces.mode(ns).unwrap_or(Mode::Off);
    if mode == Mode::Off {
        return resp;
    }
    let Some(new) = req.object.as_ref().and_then(|o| workload(o, ns)) else {
        return resp;
    };
    let images = images_of(&new);
    if req.operation == Operation::Update {
        let old = req.old_object.as_ref().and_then(|o| workload(o, ns));
        if old.as_ref().map(images_of) == Some(images.clone()) {
            return resp;
        }
    }
    let name = req
        .object
        .as_ref()
        .and_then(|o| o.metadata.name.as_deref())
        .unwrap_or(req.name.as_str());
    let subject = Subject {
        namespace: ns,
        kind: &kind.kind,
        name,
    };
    judge(resp, &new, images, &subject, mode, fleet, now)
}

fn judge(
    mut resp: AdmissionResponse,
    w: &Workload,
    images: BTreeSet<String>,
    subject: &Subject,
    mode: Mode,
    fleet: &dyn FleetView,
    now: Timestamp,
) -> AdmissionResponse {
    if !fleet.synced() {
        resp.warnings = Some(vec![format!(
            "pullprobe: the rollout guard has not read the fleet's state yet; it checks the images now{}",
            subject.hint()
        )]);
        return resp;
    }
    let cands = fleet.candidates(&w.spec, w.is_daemonset());
    if cands.nodes.is_empty() {
        if cands.fleet > 0 {
            let why = cands.first_excluded.as_deref().unwrap_or("no node matches");
            resp.warnings = Some(vec![warn::bounded(format!(
                "pullprobe: none of the {} nodes can run these pods ({}){}",
                cands.fleet,
                warn::clean(why, 96),
                subject.hint()
            ))]);
        }
        return resp;
    }
    let images: Vec<String> = images.into_iter().collect();
    let findings = assess(&images, &cands.nodes, now);
    let warnings = warn::warnings(&findings, subject);
    if mode == Mode::Enforce {
        if let Some(msg) = warn::denial(&findings, subject) {
            resp = resp.deny(&msg);
            resp.result = Status::failure(&msg, "Forbidden").with_code(403);
        }
    }
    if !warnings.is_empty() {
        resp.warnings = Some(warnings);
    }
    resp
}

fn workload(o: &DynamicObject, ns: &str) -> Option<Workload> {
    let doc = serde_json::to_value(o).ok()?;
    let kind = o.types.as_ref().map(|t| t.kind.as_str()).unwrap_or("");
    workload_of(kind, doc, ns).ok().flatten()
}

/// The distinct images of a template (their order does not matter to the guard).
fn images_of(w: &Workload) -> BTreeSet<String> {
    w.images.iter().map(|c| c.image.clone()).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::api::NodePullStatus;
    use crate::controller::webhook::view::{Candidate, Candidates};
    use k8s_openapi::api::core::v1::PodSpec;
    use serde_json::json;

    const NOW: &str = "2026-12-07T12:00:00Z";

    struct Fleet(Vec<Candidate>);
    impl FleetView for Fleet {
        fn synced(&self) -> bool {
            true
        }
        fn candidates(&self, spec: &PodSpec, _daemonset: bool) -> Candidates {
            // Test rule: a nodeSelector `pool: P` keeps the nodes named `P-…`.
            let pool = spec
                .node_selector
                .as_ref()
                .and_then(|s| s.get("pool"))
                .cloned();
            let nodes: Vec<Candidate> = self
                .0
                .iter()
                .filter(|c| pool.as_ref().is_none_or(|p| c.node.starts_with(p.as_str())))
                .cloned()
                .collect();
            Candidates {
                first_excluded: (nodes.len() < self.0.len())
                    .then(|| "x: nodeSelector does not match".into()),
                nodes,
                fleet: self.0.len(),
            }
        }
    }

    struct Labels;
    impl Namespaces for Labels {
        fn mode(&self, ns: &str) -> Option<Mode> {
            Some(match ns {
                "warned" => Mode::Warn,
                "enforced" => Mode::Enforce,
                _ => Mode::Off,
            })
        }
    }

    /// A node whose agent wrote at `NOW`: path to registry.example ok (fingerprint `fp`) or
    /// failing, and image answers `(image, verdict, reason)`.
    fn node(name: &str, path_ok: bool, answers: &[(&str, &str, Option<&str>)]) -> Candidate {
        let cell = |v: &str, r: Option<&str>| json!({"verdict": v, "reason": r, "host": r.map(|_| "registry.example"), "message": ""});
        let path_cell = if path_ok {
            cell("ready", None)
        } else {
            cell("not_ready", Some("TLSUnknownAuthority"))
        };
        let status = json!({
            "heartbeatTime": NOW, "intervalSeconds": 60,
            "registries": [{"registry": "registry.example", "fingerprint": "fp", "state": if path_ok {"ok"} else {"failing"},
                            "cell": path_cell, "checkedAt": NOW}],
            "answers": [{"id": "a1", "depth": "Image", "answeredAt": NOW, "results": answers.iter().map(|(i, v, r)| json!({
                "image": i, "fingerprint": "fp", "pathState": "ok", "cell": cell(v, *r)})).collect::<Vec<_>>()}]
        });
        let obj: NodePullStatus = serde_json::from_value(json!({
            "apiVersion": "pullprobe.io/v1alpha1", "kind": "NodePullStatus",
            "metadata": {"name": name}, "spec": {}, "status": status}))
        .unwrap();
        Candidate {
            node: name.into(),
            status: Some(Arc::new(obj)),
        }
    }

    fn review(
        op: &str,
        ns: &str,
        images: &[&str],
        old: Option<&[&str]>,
        selector: Option<&str>,
    ) -> AdmissionRequest<DynamicObject> {
        let dep = |imgs: &[&str]| {
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "namespace": ns},
                "spec": {"template": {"spec": {
                    "nodeSelector": selector.map(|p| json!({"pool": p})),
                    "containers": imgs.iter().enumerate().map(|(i, im)| json!({"name": format!("c{i}"), "image": im})).collect::<Vec<_>>()}}}
            })
        };
        let r = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "u1", "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "name": "web", "namespace": ns, "operation": op, "userInfo": {"username": "u"},
            "object": dep(images), "oldObject": old.map(dep), "dryRun": false}});
        parse(r.to_string().as_bytes()).unwrap()
    }

    fn fleet() -> Fleet {
        let mut n = vec![];
        for i in 0..28 {
            n.push(node(
                &format!("a-{i}"),
                true,
                &[("registry.example/app:v1", "ready", None)],
            ));
        }
        for i in 0..12 {
            n.push(node(&format!("b-{i}"), false, &[]));
        }
        n.push(node(
            "c-0",
            true,
            &[(
                "registry.example/app:v2",
                "not_ready",
                Some("ManifestNotFound"),
            )],
        ));
        Fleet(n)
    }

    fn run(req: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
        respond(req, &fleet(), &Labels, NOW.parse().unwrap())
    }

    #[test]
    fn failing_nodes_are_counted_with_reason_and_the_preflight_to_read() {
        let r = run(&review(
            "CREATE",
            "warned",
            &["registry.example/app:v2"],
            None,
            None,
        ));
        assert!(r.allowed);
        assert_eq!(
            r.warnings.unwrap(),
            ["pullprobe: 41 of 41 nodes cannot pull registry.example/app:v2: ManifestNotFound at registry.example \
              (the tag or digest does not exist); kubectl get imagepreflight -n warned deployment-web"]
        );
        // A:v1 checked on fingerprint fp (shared with every node of it); 12 nodes' path fails.
        let r = run(&review(
            "CREATE",
            "warned",
            &["registry.example/app:v1"],
            None,
            None,
        ));
        assert_eq!(
            r.warnings.unwrap(),
            ["pullprobe: 12 of 41 nodes cannot pull registry.example/app:v1: TLSUnknownAuthority at registry.example \
              (TLS to it fails on the nodes); kubectl get imagepreflight -n warned deployment-web"]
        );
        let r = run(&review(
            "CREATE",
            "warned",
            &["registry.example/app:v1"],
            None,
            Some("a"),
        ));
        assert_eq!(r.warnings, None, "every candidate node pulls it");
    }

    #[test]
    fn unchecked_images_are_said_once_and_unlabelled_namespaces_hear_nothing() {
        let r = run(&review(
            "CREATE",
            "warned",
            &["registry.example/x:1", "registry.example/y:1"],
            None,
            Some("a"),
        ));
        assert_eq!(
            r.warnings.unwrap(),
            ["pullprobe: registry.example/x:1, registry.example/y:1 are not checked yet; the rollout guard checks them now; \
              kubectl get imagepreflight -n warned deployment-web"]
        );
        let r = run(&review(
            "CREATE",
            "plain",
            &["registry.example/app:v2"],
            None,
            None,
        ));
        assert!(r.allowed && r.warnings.is_none());
    }

    #[test]
    fn updates_warn_only_when_images_change_and_enforce_denies() {
        let same = run(&review(
            "UPDATE",
            "warned",
            &["registry.example/app:v2"],
            Some(&["registry.example/app:v2"]),
            None,
        ));
        assert!(same.allowed && same.warnings.is_none());
        let changed = run(&review(
            "UPDATE",
            "warned",
            &["registry.example/app:v2"],
            Some(&["registry.example/app:v1"]),
            None,
        ));
        assert_eq!(changed.warnings.map(|w| w.len()), Some(1));
        let denied = run(&review(
            "CREATE",
            "enforced",
            &["registry.example/app:v2"],
            None,
            None,
        ));
        assert!(!denied.allowed);
        assert_eq!(denied.result.code, 403);
        assert!(denied.result.message.starts_with("pullprobe: namespace enforced enforces the rollout guard: 41 of 41 nodes cannot pull"), "{}", denied.result.message);
        let fine = run(&review(
            "CREATE",
            "enforced",
            &["registry.example/app:v1"],
            None,
            Some("a"),
        ));
        assert!(fine.allowed);
        let none = run(&review(
            "CREATE",
            "warned",
            &["registry.example/app:v1"],
            None,
            Some("zz"),
        ));
        assert_eq!(none.warnings.unwrap(), ["pullprobe: none of the 41 nodes can run these pods (x: nodeSelector does not match); kubectl get imagepreflight -n warned deployment-web"]);
    }

    #[test]
    fn warnings_are_bounded_and_clean() {
        let hostile = format!("registry.example/{}\u{1b}[31m:v9", "a".repeat(400));
        let many: Vec<String> = (0..30)
            .map(|i| format!("registry.example/app{i}:v2"))
            .collect();
        let mut imgs: Vec<&str> = many.iter().map(String::as_str).collect();
        imgs.push(&hostile);
        imgs.push("Not A Reference");
        let r = run(&review("CREATE", "warned", &imgs, None, None));
        let w = r.warnings.unwrap();
        assert!(w.len() <= 10, "{w:?}");
        for l in &w {
            assert!(
                l.chars().count() <= 256 && !l.chars().any(char::is_control),
                "{l:?}"
            );
        }
        assert!(w.iter().any(|l| l.contains("more images")), "{w:?}");
    }

    #[test]
    fn garbage_is_allowed_with_a_reason() {
        let out: serde_json::Value =
            serde_json::from_slice(&answer(b"{not json", &fleet(), &Labels)).unwrap();
        assert_eq!(out["response"]["allowed"], true);
        assert!(!out.to_string().contains("not json"));
    }
}
