//! The GitOps gates of examples/ without a cluster: the Argo CD health check run by a real Lua
//! interpreter (`lua5.4`; Argo CD's gopher-lua is Lua 5.1, and the script uses nothing newer)
//! on fixture objects, shaped as Argo CD calls it (`obj` global, returns `hs` with `status` and
//! `message`); the Argo Rollouts AnalysisTemplate and the Flux Kustomization parsed and checked
//! against the ImagePreflight they wait on. (The object itself and `kubectl wait` on it run on
//! the real kube-apiserver: tests/preflight_rbac.rs.)

use std::path::PathBuf;
use std::process::Command;

use serde_json::{json, Value};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn docs(rel: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(repo().join(rel)).unwrap();
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap()
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

/// A JSON value as a Lua constructor (strings in long brackets cannot be closed early by
/// fixture text: the level is chosen above any `]=*]` inside).
fn lua(v: &Value) -> String {
    match v {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let mut level = 0;
            while s.contains(&format!("]{}]", "=".repeat(level))) {
                level += 1;
            }
            let eq = "=".repeat(level);
            format!("[{eq}[{s}]{eq}]")
        }
        Value::Array(a) => format!("{{{}}}", a.iter().map(lua).collect::<Vec<_>>().join(", ")),
        Value::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .map(|(k, v)| format!("[ {} ] = {}", lua(&Value::String(k.clone())), lua(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Runs the health check on `obj` as Argo CD does: `obj` is a global, the chunk returns `hs`.
/// `None` when lua5.4 is not installed here (CI installs it: .ci/install-deps.sh).
fn health(obj: &Value) -> Option<(String, String)> {
    if Command::new("lua5.4").arg("-v").output().is_err() {
        eprintln!("SKIP: lua5.4 not installed (apt-get install lua5.4)");
        return None;
    }
    let script = repo().join("examples/argocd/imagepreflight-health.lua");
    let driver = format!(
        "obj = {}\nlocal hs = dofile({})\nassert(type(hs) == 'table', 'no hs table')\nio.write(hs.status, '\\n', hs.message or '')",
        lua(obj),
        lua(&Value::String(script.display().to_string()))
    );
    let out = Command::new("lua5.4")
        .arg("-e")
        .arg(&driver)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lua failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (status, message) = text.split_once('\n').unwrap();
    Some((status.to_string(), message.to_string()))
}

fn cond(t: &str, s: &str, message: &str) -> Value {
    json!({"type": t, "status": s, "reason": "R", "message": message,
           "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 2})
}

fn object(status: Option<Value>) -> Value {
    let mut o = docs("examples/imagepreflight.yaml")[0].clone();
    o["metadata"]["generation"] = json!(2);
    if let Some(s) = status {
        o["status"] = s;
    }
    o
}

#[test]
fn argocd_health_check_follows_the_kstatus_conditions() {
    let summary = json!({"nodes": 40, "ready": 28, "degraded": 0, "notReady": 12, "unknown": 0,
        "line": "28/40 nodes ready; 12 nodes: ManifestUnknown at registry.example.com"});
    let cases = [
        (
            "no status yet",
            object(None),
            "Progressing",
            "Waiting for the pullprobe controller",
        ),
        (
            "an older generation answered",
            object(Some(
                json!({"observedGeneration": 1, "conditions": [cond("Ready", "True", "ok")]}),
            )),
            "Progressing",
            "check generation 2",
        ),
        (
            "reconciling",
            object(Some(json!({"observedGeneration": 2, "conditions": [
                cond("Ready", "False", "checking"), cond("Reconciling", "True", "Waiting for 3 nodes")]}))),
            "Progressing",
            "Waiting for 3 nodes",
        ),
        (
            "some nodes cannot pull",
            object(Some(
                json!({"observedGeneration": 2, "summary": summary, "conditions": [
                cond("Ready", "False", "12 of 40 nodes cannot pull"), cond("Failed", "True", "12 of 40 nodes cannot pull"),
                cond("Reconciling", "False", "done")]}),
            )),
            "Degraded",
            "28/40 nodes ready; 12 nodes: ManifestUnknown at registry.example.com",
        ),
        (
            "not ready without Failed",
            object(Some(json!({"observedGeneration": 2, "conditions": [
                cond("Ready", "False", "2 nodes unknown"), cond("Reconciling", "False", "done")]}))),
            "Degraded",
            "2 nodes unknown",
        ),
        (
            "every node can pull",
            object(Some(json!({"observedGeneration": 2, "conditions": [
                cond("Ready", "True", "40/40 nodes can pull"), cond("Failed", "False", ""),
                cond("Reconciling", "False", "done")]}))),
            "Healthy",
            "40/40 nodes can pull",
        ),
        (
            "hostile text is only a message",
            object(Some(json!({"observedGeneration": 2, "conditions": [
                cond("Ready", "True", "]] os.exit(7) --[[ ]==] x")]}))),
            "Healthy",
            "]] os.exit(7) --[[ ]==] x",
        ),
    ];
    for (what, obj, status, message) in cases {
        let Some((got, msg)) = health(&obj) else {
            return;
        };
        assert_eq!(got, status, "{what}: {msg}");
        assert!(msg.contains(message), "{what}: {msg:?} lacks {message:?}");
    }
}

/// The argocd-cm snippet carries the script under the key Argo CD looks up for the kind
/// (`resource.customizations.health.<group>_<kind>`), byte for byte.
#[test]
fn argocd_cm_carries_the_script() {
    let cm = &docs("examples/argocd/argocd-cm.yaml")[0];
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["name"], "argocd-cm");
    let script =
        std::fs::read_to_string(repo().join("examples/argocd/imagepreflight-health.lua")).unwrap();
    assert_eq!(
        cm["data"]["resource.customizations.health.pullprobe.io_ImagePreflight"]
            .as_str()
            .unwrap(),
        script
    );
    assert!(script.contains("return hs") && script.contains("obj.status"));
}

/// The AnalysisTemplate's Job runs the pre-flight on the declared argument in its own
/// namespace, fails the analysis on any non-zero exit (Job provider), and its ServiceAccount
/// has only the ImagePreflight verbs the CLI uses.
#[test]
fn argo_rollouts_template_runs_the_preflight_with_only_its_rbac() {
    let all = docs("examples/argo-rollouts/analysistemplate.yaml");
    let t = all
        .iter()
        .find(|d| d["kind"] == "AnalysisTemplate")
        .unwrap();
    assert_eq!(t["apiVersion"], "argoproj.io/v1alpha1");
    let args: Vec<&str> = t["spec"]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    let job = &t["spec"]["metrics"][0]["provider"]["job"]["spec"];
    assert_eq!(
        job["backoffLimit"], 0,
        "one try: the exit code is the verdict"
    );
    let pod = &job["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    let c = &pod["containers"][0];
    let cargs: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(cargs[0], "preflight");
    for a in &cargs {
        if let Some(name) = a.strip_prefix("{{args.").and_then(|r| r.strip_suffix("}}")) {
            assert!(
                args.contains(&name),
                "{a} is not a declared argument: {args:?}"
            );
        }
    }
    assert!(cargs.contains(&"{{args.image}}"), "{cargs:?}");
    assert!(cargs.contains(&"--namespace=$(NAMESPACE)"));
    assert_eq!(
        c["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    // The CLI's own --timeout ends before the Job's deadline, so it reports which object.
    let timeout = cargs
        .iter()
        .find_map(|a| a.strip_prefix("--timeout="))
        .unwrap();
    let secs: u64 = timeout.trim_end_matches('s').parse().unwrap();
    assert!(secs < job["activeDeadlineSeconds"].as_u64().unwrap());
    let sa = pod["serviceAccountName"].as_str().unwrap();
    assert!(all
        .iter()
        .any(|d| d["kind"] == "ServiceAccount" && d["metadata"]["name"] == sa));
    let binding = all.iter().find(|d| d["kind"] == "RoleBinding").unwrap();
    assert_eq!(binding["subjects"][0]["name"], sa);
    let role = all
        .iter()
        .find(|d| d["kind"] == "Role" && d["metadata"]["name"] == binding["roleRef"]["name"])
        .unwrap();
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": ["pullprobe.io"], "resources": ["imagepreflights"],
                "verbs": ["create", "get", "list", "watch", "delete"]}])
    );
}

/// Flux waits on the ImagePreflight of examples/imagepreflight.yaml (kstatus health check),
/// and the app's Kustomization depends on that one.
#[test]
fn flux_health_check_names_the_imagepreflight() {
    let all = docs("examples/flux/kustomization.yaml");
    let obj = &docs("examples/imagepreflight.yaml")[0];
    let pre = all
        .iter()
        .find(|k| k["spec"]["healthChecks"].is_array())
        .unwrap();
    let hc = &pre["spec"]["healthChecks"][0];
    assert_eq!(hc["apiVersion"], obj["apiVersion"]);
    assert_eq!(hc["kind"], "ImagePreflight");
    assert_eq!(hc["name"], obj["metadata"]["name"]);
    assert_eq!(hc["namespace"], obj["metadata"]["namespace"]);
    assert!(pre["spec"]["timeout"].is_string());
    let app = all
        .iter()
        .find(|k| k["spec"]["dependsOn"].is_array())
        .unwrap();
    assert_eq!(app["spec"]["dependsOn"][0]["name"], pre["metadata"]["name"]);
    assert_eq!(
        obj["spec"]["ttlSecondsAfterFinished"], 0,
        "kept while Flux manages it"
    );
}
