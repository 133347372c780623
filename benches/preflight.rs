//! Pre-flight of 10 images over N agents (N = 1, 10, 50), each agent a real `pullprobe
//! agent` in its own network namespace keeping its node's NodePullStatus on a real
//! kube-apiserver, the real `pullprobe controller`, one real registry: wall time of
//! `pullprobe preflight` (create the ImagePreflight, wait for it, print; cold: the images new
//! to every agent; warm: again within the agents' cache window) and the registry requests it
//! caused, from the registry's access log. Prints; asserts nothing.
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
use preflight_lab::{kubeconfig, node_root, register_with, write, Lab, NS};
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
    let manifests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests");
    api.apply_file(&manifests.join("crds/pullprobe.io.yaml"));
    api.create_namespace(NS);
    for f in [
        "serviceaccount.yaml",
        "rbac.yaml",
        "controller-rbac.yaml",
        "controller.yaml",
    ] {
        api.apply_file(&manifests.join(f));
    }
    let sa = api.service_account_token(NS, "pullprobe", 3600);
    let ctl_kc = api.write_kubeconfig(&api.service_account_token(NS, "pullprobe-controller", 3600));
    let mut controller = Command::new(env!("CARGO_BIN_EXE_pullprobe"))
        .args([
            "controller",
            "--kubeconfig",
            ctl_kc.to_str().unwrap(),
            "--namespace",
            NS,
        ])
        .args(["--webhook-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("controller.log")).unwrap())
        .spawn()
        .unwrap();
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
        // Every agent's NodePullStatus written (its first heartbeat).
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let v = api.must(
                "GET",
                "/apis/pullprobe.io/v1alpha1/nodepullstatuses",
                api.admin_token(),
                None,
            );
            let up = v["items"].as_array().map_or(0, |items| {
                items
                    .iter()
                    .filter(|o| {
                        o["metadata"]["name"]
                            .as_str()
                            .is_some_and(|s| s.starts_with(&format!("bench-{n}-")))
                    })
                    .filter(|o| o["status"]["heartbeatTime"].is_string())
                    .count()
            });
            if up == n {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{up} of {n} agents wrote their NodePullStatus"
            );
            std::thread::sleep(Duration::from_millis(200));
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
    let _ = controller.kill();
    let _ = controller.wait();
}
