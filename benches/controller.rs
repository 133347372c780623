//! The controller at fleet scale (issue 16): `pullprobe controller` (the bench profile
//! build) against a real kube-apiserver with a simulated fleet of `BENCH_NODES` (5,000)
//! nodes (tests/harness/fleetsim.rs: one process, one watch, answering assignments through
//! the API server), 10 images on two registries, 4 fingerprints, `BENCH_STALE` (50) nodes
//! with a stale path. Measures, per pre-flight: time from create to Ready (Reconciling
//! False), API requests and writes by the controller and by the simulated agents (from the
//! API server's audit log, by user), assignments issued, and the controller's peak RSS and
//! CPU seconds (/proc). Prints a table; asserts nothing.
//! `cargo bench --bench controller` (no root needed).

#[path = "../tests/harness/mod.rs"]
mod harness;
#[path = "../tests/kube/mod.rs"]
mod kube;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::{FleetSim, SimPath};
use serde_json::{json, Value};

use crate::kube::KubeApiServer;

const NS: &str = "team";
const CONTROLLER: &str = "controller";
const FLEET: &str = "fleet";

fn env_usize(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

/// Requests and writes by a user in the audit log, leaving out the Lease (the leader's
/// renewal every 2 s is not the pre-flight's cost; it is counted apart).
#[derive(Clone, Copy, Default)]
struct Count {
    requests: usize,
    writes: usize,
}

fn counts(api: &KubeApiServer) -> BTreeMap<String, Count> {
    let mut out: BTreeMap<String, Count> = BTreeMap::new();
    for ev in api.audit_events() {
        if ev["objectRef"]["resource"] == "leases" {
            continue;
        }
        let user = ev["user"]["username"].as_str().unwrap_or("").to_string();
        let c = out.entry(user).or_default();
        c.requests += 1;
        if matches!(
            ev["verb"].as_str(),
            Some("create" | "update" | "patch" | "delete")
        ) {
            c.writes += 1;
        }
    }
    out
}

fn diff(after: &BTreeMap<String, Count>, before: &BTreeMap<String, Count>, user: &str) -> Count {
    let a = after.get(user).copied().unwrap_or_default();
    let b = before.get(user).copied().unwrap_or_default();
    Count {
        requests: a.requests - b.requests,
        writes: a.writes - b.writes,
    }
}

/// Peak RSS (KiB) and CPU seconds of a process.
fn proc_usage(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    (hwm, ticks / 100.0)
}

fn condition(v: &Value, t: &str) -> Value {
    v["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == t).cloned())
        .unwrap_or(Value::Null)
}

struct Run {
    name: &'static str,
    secs: f64,
    ready: String,
    summary: String,
    ctrl: Count,
    agents: Count,
    path_assignments: usize,
    image_assignments: usize,
}

fn preflight(api: &KubeApiServer, sim: &FleetSim, name: &'static str, images: &[String]) -> Run {
    let seen_before = sim.assignments().len();
    let before = counts(api);
    let body = json!({"apiVersion": "pullprobe.io/v1alpha1", "kind": "ImagePreflight",
        "metadata": {"name": name, "namespace": NS}, "spec": {"images": images}});
    let path = format!("/apis/pullprobe.io/v1alpha1/namespaces/{NS}/imagepreflights");
    let t0 = Instant::now();
    let r = api
        .request("POST", &path, api.admin_token(), Some(&body))
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    let v = loop {
        let v = api
            .request("GET", &format!("{path}/{name}"), api.admin_token(), None)
            .unwrap()
            .json();
        if condition(&v, "Reconciling")["status"] == "False" {
            break v;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "{name} did not finish"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let secs = t0.elapsed().as_secs_f64();
    let seen: Vec<_> = sim.assignments().into_iter().skip(seen_before).collect();
    // The status write is the pre-flight's last: an answered assignment costs no removal
    // write (it leaves with the next write to its node), and the audit log is written
    // before the API server answers (blocking mode), so this count is complete.
    let after = counts(api);
    Run {
        name,
        secs,
        ready: format!(
            "{} {}",
            condition(&v, "Ready")["status"].as_str().unwrap_or(""),
            condition(&v, "Ready")["reason"].as_str().unwrap_or("")
        ),
        summary: v["status"]["summary"]["line"]
            .as_str()
            .unwrap_or("")
            .chars()
            .take(90)
            .collect(),
        ctrl: diff(&after, &before, CONTROLLER),
        agents: diff(&after, &before, FLEET),
        path_assignments: seen
            .iter()
            .filter(|s| s.depth == pullprobe::api::AssignmentDepth::Path)
            .count(),
        image_assignments: seen
            .iter()
            .filter(|s| s.depth == pullprobe::api::AssignmentDepth::Image)
            .count(),
    }
}

fn start_controller(api: &KubeApiServer) -> Child {
    let kc = api.write_kubeconfig(api.user_token(CONTROLLER));
    let log = std::fs::File::create(api.dir().join("controller.log")).unwrap();
    Command::new(env!("CARGO_BIN_EXE_pullprobe"))
        .args(["controller", "--kubeconfig"])
        .arg(&kc)
        .args(["--webhook-listen", "127.0.0.1:0", "--answer-timeout", "30s"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn main() {
    let nodes = env_usize("BENCH_NODES", 5000);
    let stale = env_usize("BENCH_STALE", 50);
    let failing = env_usize("BENCH_FAILING", 100);
    let api = KubeApiServer::builder()
        .user(CONTROLLER, &["system:masters"])
        .user(FLEET, &["system:masters"])
        .arg("--max-requests-inflight=800")
        .arg("--max-mutating-requests-inflight=400")
        .start();
    api.apply_crds();
    api.create_namespace("pullprobe");
    api.create_namespace(NS);
    let t0 = Instant::now();
    let sim = FleetSim::builder(api.kube_config(api.user_token(FLEET)))
        .nodes(nodes)
        .registry("r1.example", move |i| {
            let fp = format!("fp1-{}", i % 4);
            if i < stale {
                SimPath::stale(&fp)
            } else {
                SimPath::ok(&fp)
            }
        })
        .registry("r2.example", move |i| {
            let fp = format!("fp2-{}", i % 4);
            if i >= nodes - failing {
                SimPath::failing(&fp, "ConnectRefused")
            } else {
                SimPath::ok(&fp)
            }
        })
        .start();
    let setup = t0.elapsed().as_secs_f64();
    let mut ctrl = start_controller(&api);
    let t1 = Instant::now();
    loop {
        let r = api
            .request(
                "GET",
                "/apis/coordination.k8s.io/v1/namespaces/pullprobe/leases/pullprobe-controller",
                api.admin_token(),
                None,
            )
            .unwrap();
        if r.status == 200 {
            break;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(120),
            "the controller did not lead"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let lead = t1.elapsed().as_secs_f64();
    let (rss_idle, cpu_idle) = proc_usage(ctrl.id());
    let r1: Vec<String> = (0..7).map(|i| format!("r1.example/app{i}:1")).collect();
    let mut ten = r1.clone();
    ten.extend((0..3).map(|i| format!("r2.example/app{i}:1")));
    let runs = [
        preflight(&api, &sim, "ten-images-r1-r2", &ten),
        preflight(&api, &sim, "again", &ten),
        preflight(&api, &sim, "seven-images-r1", &r1),
    ];
    let (rss, cpu) = proc_usage(ctrl.id());
    let _ = ctrl.kill();
    let _ = ctrl.wait();
    println!(
        "controller: {nodes} simulated nodes (created in {setup:.1} s), 10 images on 2 registries, 4 fingerprints each, {stale} nodes with a stale r1 path, {failing} failing r2"
    );
    println!(
        "synced and leading {lead:.2} s after start; idle peak RSS {:.1} MiB, {cpu_idle:.2} CPU s",
        rss_idle as f64 / 1024.0
    );
    println!();
    println!("| pre-flight | to finished | Ready | controller req / writes | agents req / writes | Path / Image assignments | summary |");
    println!("|---|---|---|---|---|---|---|");
    for r in &runs {
        println!(
            "| {} | {:.2} s | {} | {} / {} | {} / {} | {} / {} | {} |",
            r.name,
            r.secs,
            r.ready,
            r.ctrl.requests,
            r.ctrl.writes,
            r.agents.requests,
            r.agents.writes,
            r.path_assignments,
            r.image_assignments,
            r.summary
        );
    }
    println!();
    println!(
        "controller after the runs: peak RSS {:.1} MiB, {cpu:.2} CPU s in total",
        rss as f64 / 1024.0
    );
}
