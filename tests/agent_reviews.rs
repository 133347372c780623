//! Junk bearer tokens against the agent's main listener, with the REAL kube-apiserver v1.20.2
//! (tests/kube) answering the agent's TokenReviews and SubjectAccessReviews: the review budget
//! and the review cache are per caller (src/agent/serve/auth.rs), so a flood of junk tokens cannot
//! starve or evict a caller that was authorized before.
//!
//! Prometheus (a ServiceAccount token with the shipped `pullprobe-metrics-reader` role) scrapes
//! `/metrics` from 127.0.0.1 while junk tokens flood the agent from the same address and from
//! 127.0.0.2. The agent's cache is small (`auth.cache_entries: 64`) and short (`cache_ttl: 1s`),
//! so the junk tokens overflow it and every Prometheus scrape after a second needs
//! its review again. Every scrape must answer 200, the flood must have been throttled (429),
//! and a token never seen before, from a third address, still gets in during the flood.

mod agent_proc;
mod kube;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::agent_proc::{get_status_from, wait_for, write_file};
use crate::kube::KubeApiServer;

const NODE: &str = "node-reviews";
const PROMETHEUS: [u8; 4] = [127, 0, 0, 1];
const JUNK_FROM: [[u8; 4]; 2] = [[127, 0, 0, 1], [127, 0, 0, 2]];
const NEWCOMER: [u8; 4] = [127, 0, 0, 3];
/// The agent's review cache in this test.
const CACHE_ENTRIES: usize = 64;
/// Junk tokens the API server must have rejected before the flood ends: several times the
/// cache, so without protection Prometheus's answers would have been pushed out.
const JUNK_REJECTED: usize = 2 * CACHE_ENTRIES;
/// Junk clients per address (below the listener's per-address connection cap, 32, so the
/// flood is refused by the review budget, not at accept).
const JUNK_TASKS: usize = 8;

/// What the junk clients were answered.
#[derive(Default)]
struct Flood {
    sent: AtomicUsize,
    rejected: AtomicUsize,
    throttled: AtomicUsize,
    other: AtomicUsize,
}

impl Flood {
    fn tally(&self) -> String {
        format!(
            "{} junk requests answered: {} 401, {} 429, {} other",
            self.sent.load(Ordering::SeqCst),
            self.rejected.load(Ordering::SeqCst),
            self.throttled.load(Ordering::SeqCst),
            self.other.load(Ordering::SeqCst),
        )
    }
}

fn start_flood(
    rt: &tokio::runtime::Runtime,
    agent: SocketAddr,
    stop: Arc<AtomicBool>,
) -> Arc<Flood> {
    let flood = Arc::new(Flood::default());
    for from in JUNK_FROM {
        for task in 0..JUNK_TASKS {
            let (flood, stop) = (flood.clone(), stop.clone());
            rt.spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    // Printable, well-formed, never valid: each one costs a TokenReview
                    // unless the budget refuses it.
                    let junk = format!("junk.{}.{task}.{n}", from[3]);
                    let code = get_status_from(from, agent, "/metrics", Some(&junk)).await;
                    flood.sent.fetch_add(1, Ordering::SeqCst);
                    let kind = match code {
                        Some(401) => &flood.rejected,
                        Some(429) => &flood.throttled,
                        _ => &flood.other,
                    };
                    kind.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
        }
    }
    flood
}

fn agent_config(dir: &Path) -> std::path::PathBuf {
    write_file(
        dir,
        "pullprobe.yaml",
        &format!(
            "interval: 60s\nimages: []\nauth:\n  cache_ttl: 1s\n  cache_entries: {CACHE_ENTRIES}\n"
        ),
    )
}

#[test]
fn junk_tokens_neither_starve_nor_evict_an_authorized_scraper() {
    let api = KubeApiServer::start();
    let admin = api.admin_token().to_string();
    let token = api.apply_project_rbac();
    let kubeconfig = api.write_kubeconfig(&token);
    api.must(
        "POST",
        "/api/v1/nodes",
        &admin,
        Some(&json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}})),
    );
    // Prometheus's identity as shipped: may `get /metrics`, nothing else (the ClusterRole in
    // readers.yaml, the ServiceAccount and its binding in the prometheus component).
    let manifests = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests");
    api.apply_file(&manifests.join("readers.yaml"));
    api.apply_file(&manifests.join("components/prometheus/metrics-reader.yaml"));
    // Prometheus' token is a projected one for the agent's audience (the only one it takes).
    let aud = &["pullprobe"];
    let prometheus =
        api.service_account_token_for("pullprobe", "pullprobe-metrics-reader", 3600, aud);
    let newcomer =
        api.service_account_token_for("pullprobe", "pullprobe-metrics-reader", 3600, aud);
    assert_ne!(prometheus, newcomer);

    let root = agent_proc::host_root();
    let cfg = agent_config(root.path());
    let mut agent = agent_proc::spawn_for_node(
        &["--kubeconfig", kubeconfig.to_str().unwrap()],
        NODE,
        &cfg,
        root.path(),
    );
    agent.wait_ready(Duration::from_secs(30));
    let addr = SocketAddr::from(([127, 0, 0, 1], agent.port));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let scrape = |from: [u8; 4], token: &str| {
        rt.block_on(get_status_from(from, addr, "/metrics", Some(token)))
    };
    // Authorized once before the flood: from now on a known caller. (The API server's RBAC
    // authorizer sees the new binding when its informer does: wait for that.)
    wait_for(Duration::from_secs(30), "Prometheus's first scrape", || {
        (scrape(PROMETHEUS, &prometheus) == Some(200)).then_some(())
    });

    let stop = Arc::new(AtomicBool::new(false));
    let flood = start_flood(&rt, addr, stop.clone());
    let mut scrapes = 0;
    let mut newcomer_in = false;
    wait_for(
        Duration::from_secs(180),
        "the flood to overflow the review cache and hit the budget",
        || {
            let code = scrape(PROMETHEUS, &prometheus);
            assert_eq!(
                code,
                Some(200),
                "Prometheus's scrape #{scrapes} during the flood"
            );
            scrapes += 1;
            if scrapes % 50 == 0 {
                eprintln!("after {scrapes} scrapes: {}", flood.tally());
            }
            if !newcomer_in && flood.throttled.load(Ordering::SeqCst) > 0 {
                let code = scrape(NEWCOMER, &newcomer);
                assert_eq!(
                    code,
                    Some(200),
                    "a new token from another address during the flood"
                );
                newcomer_in = true;
            }
            (newcomer_in
                && flood.rejected.load(Ordering::SeqCst) >= JUNK_REJECTED
                && flood.throttled.load(Ordering::SeqCst) >= JUNK_REJECTED)
                .then_some(())
        },
    );
    stop.store(true, Ordering::SeqCst);
    eprintln!("{scrapes} scrapes, all 200, while {}", flood.tally());
    assert_eq!(
        flood.other.load(Ordering::SeqCst),
        0,
        "junk tokens are answered 401 or 429, nothing else"
    );
    assert!(agent.try_wait().is_none(), "the agent exited");
    rt.shutdown_background();
}
