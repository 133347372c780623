//! The rollout guard's admission webhook with 5,000 nodes: Nodes and NodePullStatus objects
//! created directly in a real kube-apiserver (50 fingerprints of 100 nodes; one node per
//! fingerprint holds image checks of the workload's 10 images; 1 node in 10 fails the
//! registry's TLS), the webhook in-process as `pullprobe controller` starts it (its fleet
//! caches, ServiceAccount `pullprobe-controller` with the shipped RBAC), and a
//! ValidatingWebhookConfiguration reaching it by URL. Measures:
//! - latency of server-side dry-run creates of a 10-image Deployment through the API server
//!   in a labelled namespace (the API server calls the webhook) and in an unlabelled one (it
//!   does not: the configuration's namespaceSelector) — p50/p99 of each;
//! - the webhook's own time per review (`review::respond` on the same caches);
//! - the process's RSS before and after the fleet caches and the webhook started.
//!
//! Prints; asserts nothing. `cargo bench --bench webhook` (WEBHOOK_BENCH_NODES, default 5000;
//! WEBHOOK_BENCH_REVIEWS, default 200).

#[path = "../tests/kube/mod.rs"]
mod kube;
#[path = "../tests/webhook_lab/mod.rs"]
mod webhook_lab;

use std::time::{Duration, Instant};

use ::kube::api::{Api, PostParams};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Node;
use serde_json::{json, Value};

use crate::kube::KubeApiServer;
use pullprobe::api::NodePullStatus;
use pullprobe::controller::fleet::Fleet;
use pullprobe::controller::webhook;
use webhook_lab::{
    controller_token, create_guarded_namespaces, create_webhook_config, wait_for, Controller,
};

const FINGERPRINTS: usize = 50;
const IMAGES: usize = 10;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn images() -> Vec<String> {
    (0..IMAGES)
        .map(|i| format!("registry.example/team/app{i}:v2"))
        .collect()
}

fn cell(ok: bool, reason: &str) -> Value {
    if ok {
        json!({"verdict": "ready", "message": "ok"})
    } else {
        json!({"verdict": "not_ready", "reason": reason, "host": "registry.example", "message": "m"})
    }
}

/// Node `i`'s NodePullStatus status: three registries, image checks on the first node of
/// each fingerprint (image 0's tag missing).
fn status(i: usize, now: &str) -> Value {
    let fp = format!("fp-{}", i % FINGERPRINTS);
    let failing = i % 10 == 9;
    let registries: Vec<Value> = ["registry.example", "mirror.example", "docker.io"]
        .iter()
        .enumerate()
        .map(|(k, r)| {
            let ok = !(failing && k == 0);
            json!({"registry": r, "fingerprint": fp, "state": if ok {"ok"} else {"failing"},
                   "cell": cell(ok, "TLSUnknownAuthority"), "checkedAt": now})
        })
        .collect();
    let answers = if i < FINGERPRINTS {
        let results: Vec<Value> = images()
            .iter()
            .enumerate()
            .map(|(k, im)| json!({"image": im, "fingerprint": fp, "pathState": "ok", "cell": cell(k != 0, "ManifestNotFound")}))
            .collect();
        json!([{"id": format!("a{i}"), "depth": "Image", "answeredAt": now, "results": results}])
    } else {
        json!([])
    };
    json!({"agentVersion": "bench", "runtime": "containerd 1.7.24", "platform": "linux/amd64",
           "heartbeatTime": now, "intervalSeconds": 3600, "registriesTotal": 3,
           "registriesFailing": u32::from(failing), "registries": registries, "answers": answers})
}

async fn seed(client: ::kube::Client, nodes: usize) {
    let now = jiff::Timestamp::now().to_string();
    let node_api: Api<Node> = Api::all(client.clone());
    let nps_api: Api<NodePullStatus> = Api::all(client);
    futures::stream::iter(0..nodes)
        .map(|i| {
            let (node_api, nps_api, now) = (node_api.clone(), nps_api.clone(), now.clone());
            async move {
                let name = format!("node-{i:05}");
                let node: Node = serde_json::from_value(
                    json!({"metadata": {"name": name, "labels": {"pool": "general"}}}),
                )
                .unwrap();
                node_api
                    .create(&PostParams::default(), &node)
                    .await
                    .unwrap();
                let obj: NodePullStatus = serde_json::from_value(json!({
                    "apiVersion": "pullprobe.io/v1alpha1", "kind": "NodePullStatus",
                    "metadata": {"name": name}, "spec": {"assignments": []}}))
                .unwrap();
                let mut created = nps_api.create(&PostParams::default(), &obj).await.unwrap();
                created.status = Some(serde_json::from_value(status(i, &now)).unwrap());
                nps_api
                    .replace_status(&name, &PostParams::default(), &created)
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
}

fn deployment(ns: &str, name: &str) -> Deployment {
    let containers: Vec<Value> = images()
        .iter()
        .enumerate()
        .map(|(i, im)| json!({"name": format!("c{i}"), "image": im}))
        .collect();
    // The API server's TaintNodesByCondition taints these kubelet-less nodes not-ready.
    serde_json::from_value(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"tolerations": [{"operator": "Exists"}], "containers": containers}}}}))
    .unwrap()
}

/// Durations of `n` server-side dry-run creates in `ns` (Err: the API server refused).
async fn dry_runs(client: ::kube::Client, ns: &str, n: usize) -> (Vec<Duration>, usize) {
    let api: Api<Deployment> = Api::namespaced(client, ns);
    let pp = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let (mut times, mut refused) = (Vec::with_capacity(n), 0);
    for i in 0..n {
        let d = deployment(ns, &format!("web-{i}"));
        let t = Instant::now();
        if api.create(&pp, &d).await.is_err() {
            refused += 1;
        }
        times.push(t.elapsed());
    }
    (times, refused)
}

fn pct(times: &mut [Duration], p: f64) -> Duration {
    times.sort();
    let i = ((times.len() as f64 - 1.0) * p).round() as usize;
    times.get(i).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let nodes = env_or("WEBHOOK_BENCH_NODES", 5000);
    let reviews = env_or("WEBHOOK_BENCH_REVIEWS", 200);
    println!(
        "## webhook: {nodes} nodes, {reviews} AdmissionReviews of a {IMAGES}-image Deployment"
    );
    let api = KubeApiServer::start();
    api.apply_crds();
    let admin = api.admin_token().to_string();
    create_guarded_namespaces(&api);
    let token = controller_token(&api);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let admin_client = {
        let cfg = api.kube_config(&admin);
        rt.block_on(async move { ::kube::Client::try_from(cfg).unwrap() })
    };
    let t = Instant::now();
    rt.block_on(seed(admin_client.clone(), nodes));
    println!(
        "seeded {nodes} Nodes + {nodes} NodePullStatus (create + status) in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let (rss0, t) = (rss_kib("VmRSS:"), Instant::now());
    let ctl = Controller::start(&api, &token, webhook::CERT_LIFETIME);
    println!(
        "fleet caches synced and webhook listening in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    create_webhook_config(&api, ctl.port());
    // Called once the API server has the caBundle: in an `enforce` namespace it then denies
    // (image 0's tag is missing on every fingerprint).
    wait_for(
        "the API server to call the webhook",
        Duration::from_secs(60),
        || {
            let c = admin_client.clone();
            rt.block_on(async move {
                let api: Api<Deployment> = Api::namespaced(c, "strict");
                let pp = PostParams {
                    dry_run: true,
                    ..Default::default()
                };
                matches!(api.create(&pp, &deployment("strict", "probe")).await,
                     Err(::kube::Error::Api(s)) if s.message.contains("pullprobe"))
            })
        },
    );
    let (mut warned, refused_w) = rt.block_on(dry_runs(admin_client.clone(), "guarded", reviews));
    let (mut plain, refused_p) = rt.block_on(dry_runs(admin_client.clone(), "plain", reviews));
    let (rss1, hwm) = (rss_kib("VmRSS:"), rss_kib("VmHWM:"));

    // The webhook's own time per review, on caches of the same objects.
    let fleet = rt.block_on(Fleet::start(admin_client.clone())).unwrap();
    let review = serde_json::to_vec(
        &json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u", "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
        "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
        "name": "web", "namespace": "guarded", "operation": "CREATE", "userInfo": {"username": "u"},
        "object": serde_json::to_value(deployment("guarded", "web")).unwrap(), "dryRun": false}}),
    )
    .unwrap();
    struct Warned;
    impl webhook::Namespaces for Warned {
        fn mode(&self, _: &str) -> Option<webhook::Mode> {
            Some(webhook::Mode::Warn)
        }
    }
    let mut own = Vec::with_capacity(reviews);
    let mut answer = Vec::new();
    for _ in 0..reviews {
        let t = Instant::now();
        answer = webhook::review::answer(&review, &fleet, &Warned);
        own.push(t.elapsed());
    }
    let answer: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);

    println!("| through the API server (server-side dry run) | p50 | p99 | max | refused |");
    println!("|---|---|---|---|---|");
    for (what, times, refused) in [
        ("labelled namespace: webhook called", &mut warned, refused_w),
        ("unlabelled namespace: not called", &mut plain, refused_p),
    ] {
        let max = times.iter().max().copied().unwrap_or_default();
        println!(
            "| {what} | {} | {} | {} | {refused} |",
            ms(pct(times, 0.5)),
            ms(pct(times, 0.99)),
            ms(max)
        );
    }
    let max = own.iter().max().copied().unwrap_or_default();
    println!(
        "| the webhook's own judgement (review::answer, {nodes} candidates) | {} | {} | {} | - |",
        ms(pct(&mut own, 0.5)),
        ms(pct(&mut own, 0.99)),
        ms(max)
    );
    println!("warnings: {}", answer["response"]["warnings"]);
    println!(
        "RSS of the process: {:.1} MiB before the fleet caches and webhook, {:.1} MiB after {reviews}×2 reviews (+{:.1} MiB); peak {:.1} MiB",
        rss0 as f64 / 1024.0,
        rss1 as f64 / 1024.0,
        rss1.saturating_sub(rss0) as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    ctl.stop();
}
