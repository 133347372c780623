//! Pre-flight of 10 images over N agents (N = 1, 10, 50), each agent a real `pullprobe
//! agent` in its own network namespace registered as its node's agent Pod on a real
//! kube-apiserver, against one real registry: wall time of `pullprobe preflight` (cold: the
//! images new to every agent; warm: again within the agents' cache window) and the registry
//! requests it caused, from the registry's access log. Prints; asserts nothing.
//! Run as root: `cargo bench --bench preflight` (bench/run.sh).

#[path = "../tests/harness/mod.rs"]
mod harness;
#[path = "../tests/kube/mod.rs"]
mod kube;
#[path = "../tests/preflight_lab/mod.rs"]
mod preflight_lab;

use std::process::Command;
use std::time::{Duration, Instant};

use harness::{OciImage, PushOpts, Registry};
use preflight_lab::{http, kubeconfig, node_root, register_with, write, Lab, NS};
use serde_json::{json, Value};

use crate::kube::KubeApiServer;

const IMAGES: usize = 10;

struct Counts {
    total: usize,
    manifest_get: usize,
    manifest_head: usize,
    blob: usize,
}

fn counts(log: &str) -> Counts {
    let req = |l: &&str| l.contains("\"GET /v2/") || l.contains("\"HEAD /v2/");
    let lines: Vec<&str> = log.lines().filter(req).collect();
    Counts {
        total: lines.len(),
        manifest_get: lines
            .iter()
            .filter(|l| l.contains("\"GET /v2/") && l.contains("/manifests/"))
            .count(),
        manifest_head: lines
            .iter()
            .filter(|l| l.contains("\"HEAD /v2/") && l.contains("/manifests/"))
            .count(),
        blob: lines.iter().filter(|l| l.contains("/blobs/")).count(),
    }
}

fn delta(after: &Counts, before: &Counts) -> Counts {
    Counts {
        total: after.total - before.total,
        manifest_get: after.manifest_get - before.manifest_get,
        manifest_head: after.manifest_head - before.manifest_head,
        blob: after.blob - before.blob,
    }
}

/// One pre-flight: wall time, the CLI's own CPU seconds and peak RSS (GNU time), the matrix.
fn run(kc: &std::path::Path, images: &[String], selector: &str) -> (Duration, f64, u64, Value) {
    let stats = tempfile::NamedTempFile::new().unwrap();
    let t = Instant::now();
    let out = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%U %S %M")
        .arg("-o")
        .arg(stats.path())
        .arg(env!("CARGO_BIN_EXE_pullprobe"))
        .arg("preflight")
        .arg("--kubeconfig")
        .arg(kc)
        .args(images)
        .args(["-l", selector, "-o", "json", "--timeout", "20s"])
        .output()
        .expect("run preflight under /usr/bin/time");
    let took = t.elapsed();
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let text = std::fs::read_to_string(stats.path()).unwrap_or_default();
    let f: Vec<f64> = text
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let cpu = f.first().copied().unwrap_or(0.0) + f.get(1).copied().unwrap_or(0.0);
    let rss_kib = f.get(2).copied().unwrap_or(0.0) as u64;
    (took, cpu, rss_kib, v)
}

fn main() {
    let api = KubeApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    api.create_namespace(NS);
    let sa = api.create_service_account(NS, "pullprobe");
    let rbac = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/rbac.yaml"))
        .unwrap();
    for d in serde_saphyr::from_multiple::<Value>(&rbac)
        .unwrap()
        .into_iter()
        .filter(|d| !d.is_null())
    {
        let coll = match d["kind"].as_str().unwrap() {
            "ClusterRole" => "/apis/rbac.authorization.k8s.io/v1/clusterroles",
            _ => "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        };
        api.create_if_missing(coll, &d, api.admin_token());
    }
    let reg = Registry::plain();
    for i in 0..IMAGES {
        OciImage::single("v1").push(&reg, &format!("bench/img{i}"), &PushOpts::insecure());
    }
    let admin_kc = kubeconfig(
        &api,
        &api.url(),
        api.admin_token(),
        dir.path(),
        "admin.kubeconfig",
    );
    println!("pre-flight of {IMAGES} images (plain-HTTP registry, containerd rules, agents in network namespaces)");
    println!("| agents | cold: time | cold: CLI CPU, peak RSS | cold: registry requests (manifest GET / HEAD / blob) | warm: time | warm: requests |");
    println!("|---|---|---|---|---|---|");
    for n in [1usize, 10, 50] {
        let mut lab = Lab::new(n);
        let api_fwd = lab.expose(api.addr());
        let reg_fwd = lab.expose(format!("127.0.0.1:{}", reg.port()).parse().unwrap());
        let reg_host = reg_fwd.to_string();
        let agent_kc = kubeconfig(
            &api,
            &format!("https://{api_fwd}"),
            &sa,
            dir.path(),
            &format!("agent-{n}.kubeconfig"),
        );
        let cfg = write(
            dir.path(),
            "agent.yaml",
            "interval: 60s\nfleet:\n  node_count: 1\n",
        );
        let mut roots = Vec::new();
        for i in 0..n {
            let node = format!("bench-{n}-{i}");
            let root = node_root(&reg_host, None, None);
            let ip = lab.slots[i].addr.to_string();
            register_with(
                &api,
                &node,
                Some(&ip),
                &format!("{reg_host}/bench/agent:v0"),
                &json!({"bench": n.to_string()}),
            );
            let args: Vec<String> = [
                "agent",
                "--kubeconfig",
                agent_kc.to_str().unwrap(),
                "--node-name",
                &node,
                "--config",
                cfg.to_str().unwrap(),
                "--host-root",
                root.path().to_str().unwrap(),
                "--listen",
                &format!("{ip}:9808"),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            lab.spawn_args(
                i,
                env!("CARGO_BIN_EXE_pullprobe"),
                &args,
                &[("RUST_LOG", "warn")],
                &dir.path().join(format!("{node}.log")),
            );
            roots.push(root);
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        for i in 0..n {
            let addr = format!("{}:9808", lab.slots[i].addr);
            while http(&addr, "GET", "/readyz", Some(api.admin_token())).map(|r| r.0) != Some(200) {
                assert!(Instant::now() < deadline, "agent {i} of {n} not ready");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        let images: Vec<String> = (0..IMAGES)
            .map(|i| format!("{reg_host}/bench/img{i}:v1"))
            .collect();
        let selector = format!("bench={n}");
        let before = counts(&reg.log());
        let (cold, cpu, rss, m) = run(&admin_kc, &images, &selector);
        let mid = counts(&reg.log());
        let (warm, _, _, _) = run(&admin_kc, &images, &selector);
        let after = counts(&reg.log());
        let (c, w) = (delta(&mid, &before), delta(&after, &mid));
        println!(
            "| {n} | {:.0} ms | {:.0} ms, {:.1} MiB | {} ({} / {} / {}) | {:.0} ms | {} |",
            cold.as_secs_f64() * 1000.0,
            cpu * 1000.0,
            rss as f64 / 1024.0,
            c.total,
            c.manifest_get,
            c.manifest_head,
            c.blob,
            warm.as_secs_f64() * 1000.0,
            w.total
        );
        eprintln!("  N={n}: {}", m["summary"]["line"]);
        drop(lab);
    }
}
