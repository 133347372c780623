//! Soak (issue 9): `pullprobe agent` in cluster mode at a 1 s interval with 200 images over
//! 10 real registries (distribution 2.8, plain HTTP, one storage), against the REAL
//! kube-apiserver v1.20.2 of tests/kube behind the fault proxy of tests/api_proxy, while
//! faults toggle: registry hosts go down and come back (a condition transition each time,
//! so API writes), and the API server refuses writes with 503 for a while. Every
//! `SOAK_SAMPLE_S` it samples the agent's RSS and open fds (/proc), its live tokio tasks
//! (`pullprobe_runtime_tasks`), cycles, and the agent's API writes (the audit log), writes
//! them to a CSV, prints the curves, and computes a flat-or-not verdict from the slopes
//! (least squares over the run after a warm-up). Asserts nothing. See bench/README.md.
//!
//! Env: `SOAK_SECONDS` (600), `SOAK_SAMPLE_S` (5), `SOAK_TOGGLE_S` (20), `SOAK_OUT`
//! (target/soak): `samples.csv` and `verdict.txt` are written there.

#[path = "../tests/harness/mod.rs"]
mod harness;

#[path = "../tests/agent_proc/mod.rs"]
mod agent_proc;

#[path = "../tests/api_proxy/mod.rs"]
mod api_proxy;

#[path = "../tests/kube/mod.rs"]
mod kube;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use agent_proc::{http_get, metric_sum, write_file, AgentProc, Switch};
use api_proxy::{ApiProxy, Fault};
use harness::{OciImage, Pki, PushOpts, Registry, Storage};
use serde_json::json;

const HOSTS: usize = 10;
const PER_HOST: usize = 20;
const NODE: &str = "node-a";
const SA_USER: &str = "system:serviceaccount:pullprobe:pullprobe";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One sample of the agent.
#[derive(Clone, Copy, Debug)]
struct Sample {
    t: f64,
    rss_kib: f64,
    fds: f64,
    threads: f64,
    tasks: f64,
    cycles: f64,
    api_writes: f64,
}

const COLUMNS: &str = "t_s,rss_kib,fds,threads,tasks,cycles,api_writes";

impl Sample {
    fn csv(&self) -> String {
        format!(
            "{:.1},{},{},{},{},{},{}",
            self.t, self.rss_kib, self.fds, self.threads, self.tasks, self.cycles, self.api_writes
        )
    }
}

fn proc_status(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix(field)
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(0.0)
}

fn open_fds(pid: u32) -> f64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as f64)
        .unwrap_or(0.0)
}

/// Registries sharing one storage with `PER_HOST` repositories each, behind switches.
fn registries() -> (Vec<Registry>, Vec<Switch>, Vec<String>) {
    let storage = Storage::new();
    let first = Registry::builder()
        .storage(storage.clone())
        .log_level("error")
        .start();
    OciImage::single("v1").push(&first, "soak/base0", &PushOpts::insecure());
    OciImage::multi_platform("v1", &[("linux", "amd64"), ("linux", "arm64")]).push(
        &first,
        "soak/base1",
        &PushOpts::insecure(),
    );
    let repos = storage.path().join("docker/registry/v2/repositories/soak");
    for j in 0..HOSTS * PER_HOST {
        harness::copy_dir(
            &repos.join(format!("base{}", j % 2)),
            &repos.join(format!("app{j}")),
        )
        .expect("copy repository");
    }
    let mut regs = vec![first];
    while regs.len() < HOSTS {
        regs.push(
            Registry::builder()
                .storage(storage.clone())
                .log_level("error")
                .start(),
        );
    }
    let switches: Vec<Switch> = regs
        .iter()
        .map(|r| Switch::start(r.host_port().parse().expect("addr")))
        .collect();
    let mut images = Vec::new();
    for (h, s) in switches.iter().enumerate() {
        for j in 0..PER_HOST {
            images.push(format!("{}/soak/app{}:v1", s.host_port(), h * PER_HOST + j));
        }
    }
    (regs, switches, images)
}

/// The fault schedule, one step per `SOAK_TOGGLE_S`: an even step k takes registry host
/// k mod 3 down (3 of the 10 hosts take turns), an odd step brings every host back; every
/// fourth step the API server also refuses the agent's writes with 503 until the next.
fn toggle(step: u64, switches: &[Switch], proxy: &ApiProxy) {
    let down = (step % 3) as usize;
    for (i, s) in switches.iter().enumerate().take(3) {
        s.set_up(i != down || step % 2 == 1);
    }
    proxy.set_fault(if step % 4 == 3 {
        Fault::Status {
            codes: vec![503],
            retry_after: None,
        }
    } else {
        Fault::None
    });
}

/// One series of the samples.
type Series = fn(&Sample) -> f64;

/// Least-squares slope of `y` over `t` (units per second).
fn slope(t: &[f64], y: &[f64]) -> f64 {
    let n = t.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (mt, my) = (t.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let num: f64 = t.iter().zip(y).map(|(a, b)| (a - mt) * (b - my)).sum();
    let den: f64 = t.iter().map(|a| (a - mt) * (a - mt)).sum();
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

/// One line of text per metric: a sparkline of the samples.
fn sparkline(y: &[f64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let (lo, hi) = y
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(*v), h.max(*v)));
    let step = y.len().div_ceil(72).max(1);
    y.iter()
        .step_by(step)
        .map(|v| {
            let f = if hi > lo { (v - lo) / (hi - lo) } else { 0.0 };
            BARS[((f * 7.0).round() as usize).min(7)]
        })
        .collect()
}

/// The verdict: per series, the least-squares slope after warm-up times the measured span
/// (its growth over the run) against a tolerance; for API writes, the writes in the first
/// and second half of that span, which must match within 25 % plus Poisson noise (2σ).
fn verdict(samples: &[Sample]) -> String {
    let s = &samples[samples.len() / 5..];
    let t: Vec<f64> = s.iter().map(|x| x.t).collect();
    let span = t.last().copied().unwrap_or(0.0) - t.first().copied().unwrap_or(0.0);
    let mut out = String::new();
    let mut flat = true;
    // (name, values, allowed growth over the span (0 = 10 % of the mean), unit)
    let checks: [(&str, Series, f64, &str); 4] = [
        ("rss", |x| x.rss_kib / 1024.0, 0.0, "MiB"),
        ("fds", |x| x.fds, 3.0, "fds"),
        ("threads", |x| x.threads, 1.0, "threads"),
        ("tasks", |x| x.tasks, 5.0, "tasks"),
    ];
    for (name, f, tol, unit) in checks {
        let y: Vec<f64> = s.iter().map(f).collect();
        let mean = y.iter().sum::<f64>() / y.len().max(1) as f64;
        let growth = slope(&t, &y) * span;
        let allowed = if tol > 0.0 {
            tol
        } else {
            0.10 * mean.abs().max(1.0)
        };
        let ok = growth.abs() <= allowed;
        flat &= ok;
        let _ = writeln!(
            out,
            "{name:>10}: mean {mean:8.1} {unit:<8} growth over {span:.0}s {growth:+7.2} (allowed ±{allowed:.2}) {}",
            if ok { "flat" } else { "GROWING" }
        );
    }
    let mid = t.first().copied().unwrap_or(0.0) + span / 2.0;
    let at = |time: f64| {
        s.iter()
            .take_while(|x| x.t <= time)
            .last()
            .map_or(0.0, |x| x.api_writes)
    };
    let (first, second) = (
        at(mid) - s.first().map_or(0.0, |x| x.api_writes),
        at(f64::MAX) - at(mid),
    );
    let mean = (first + second) / 2.0;
    let allowed = 0.25 * mean + 2.0 * mean.sqrt();
    let ok = (second - first).abs() <= allowed;
    flat &= ok;
    let _ = writeln!(
        out,
        "api writes: {first:.0} in the first half, {second:.0} in the second (allowed ±{allowed:.1}) {}",
        if ok { "flat" } else { "CHANGING" }
    );
    let _ = writeln!(out, "verdict: {}", if flat { "FLAT" } else { "NOT FLAT" });
    out
}

/// Everything the soak runs: the API server and its fault proxy, the registries behind
/// their switches, and the agent (field order = drop order: the agent goes first).
struct World {
    agent: AgentProc,
    api: kube::KubeApiServer,
    proxy: ApiProxy,
    switches: Vec<Switch>,
    _regs: Vec<Registry>,
    _root: tempfile::TempDir,
    _pki: Pki,
}

fn start() -> World {
    let api = kube::KubeApiServer::start();
    let token = api.apply_project_rbac();
    api.must(
        "POST",
        "/api/v1/nodes",
        api.admin_token(),
        Some(&json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}})),
    );
    let pki = Pki::new();
    let proxy = ApiProxy::start(&pki.server, api.addr(), api.ca_pem());
    let (regs, switches, images) = registries();
    let root = agent_proc::host_root();
    let list: Vec<String> = images.iter().map(|i| format!("  - \"{i}\"")).collect();
    let cfg = write_file(
        root.path(),
        "pullprobe.yaml",
        &format!(
            "interval: 1s\njitter: 0\nheartbeat: 30s\nfail_after: 2\nrecover_after: 1\n\
             fleet:\n  node_count: 1\n  period: 10s\nbackoff:\n  initial: 1s\n  max: 4s\n\
             reload_interval: 5s\nimages:\n{}\n",
            list.join("\n")
        ),
    );
    let ca = std::fs::read_to_string(&pki.ca_cert).expect("ca");
    let kc = write_file(
        root.path(),
        "kubeconfig.yaml",
        &kube::kubeconfig_yaml_for(&proxy.url(), &ca, &token),
    );
    let mut agent = AgentProc::spawn(&[
        "--kubeconfig",
        kc.to_str().expect("path"),
        "--node-name",
        NODE,
        "--config",
        cfg.to_str().expect("path"),
        "--host-root",
        root.path().to_str().expect("path"),
    ]);
    agent.wait_ready(Duration::from_secs(60));
    println!(
        "agent pid {}: {} images on {HOSTS} registries; API via the fault proxy",
        agent.pid(),
        images.len()
    );
    World {
        agent,
        api,
        proxy,
        switches,
        _regs: regs,
        _root: root,
        _pki: pki,
    }
}

fn sample(w: &World, t: f64) -> Sample {
    let pid = w.agent.pid();
    let m = http_get(w.agent.port, "/metrics")
        .map(|r| r.1)
        .unwrap_or_default();
    let writes = w
        .api
        .audit_writes_by(SA_USER)
        .iter()
        .filter(|e| e["objectRef"]["resource"] == "nodes")
        .count();
    Sample {
        t,
        rss_kib: proc_status(pid, "VmRSS:"),
        fds: open_fds(pid),
        threads: proc_status(pid, "Threads:"),
        tasks: metric_sum(&m, "pullprobe_runtime_tasks"),
        cycles: metric_sum(&m, "pullprobe_cycles_total"),
        api_writes: writes as f64,
    }
}

/// Samples every `every` for `seconds`, toggling faults every `toggle_s`; returns the
/// samples and the number of fault steps.
fn run(w: &mut World, seconds: u64, every: u64, toggle_s: u64) -> (Vec<Sample>, u64) {
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut step = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        if started.elapsed().as_secs() / toggle_s >= step {
            toggle(step, &w.switches, &w.proxy);
            step += 1;
        }
        if let Some(st) = w.agent.try_wait() {
            let t = started.elapsed().as_secs_f64();
            println!("agent exited ({st}) after {t:.0}s");
            break;
        }
        samples.push(sample(w, started.elapsed().as_secs_f64()));
        std::thread::sleep(Duration::from_secs(every));
    }
    (samples, step)
}

fn main() {
    // `cargo bench` passes --bench; nothing else is read from the command line.
    let seconds = env_u64("SOAK_SECONDS", 600);
    let every = env_u64("SOAK_SAMPLE_S", 5).max(1);
    let toggle_s = env_u64("SOAK_TOGGLE_S", 20).max(1);
    let out_dir = PathBuf::from(std::env::var("SOAK_OUT").unwrap_or_else(|_| "target/soak".into()));
    std::fs::create_dir_all(&out_dir).expect("output dir");
    println!(
        "== pullprobe soak: {seconds}s, sample every {every}s, faults toggle every {toggle_s}s =="
    );
    let mut w = start();
    let (samples, step) = run(&mut w, seconds, every, toggle_s);
    let mut csv = format!("{COLUMNS}\n");
    for s in &samples {
        csv += &s.csv();
        csv.push('\n');
    }
    std::fs::write(out_dir.join("samples.csv"), &csv).expect("write csv");
    print_curves(&samples);
    let v = verdict(&samples);
    let last = samples.last().copied();
    let summary = format!(
        "{v}samples: {}, cycles: {}, API writes (node status): {}, fault steps: {step}, peak RSS {:.1} MiB (VmHWM)\n",
        samples.len(),
        last.map_or(0.0, |s| s.cycles),
        last.map_or(0.0, |s| s.api_writes),
        proc_status(w.agent.pid(), "VmHWM:") / 1024.0
    );
    std::fs::write(out_dir.join("verdict.txt"), &summary).expect("write verdict");
    println!("\n{summary}csv: {}", out_dir.join("samples.csv").display());
}

fn print_curves(samples: &[Sample]) {
    println!("\ncurves (min … max over the run):");
    let series: [(&str, Series); 6] = [
        ("rss MiB", |s| s.rss_kib / 1024.0),
        ("open fds", |s| s.fds),
        ("threads", |s| s.threads),
        ("tokio tasks", |s| s.tasks),
        ("cycles", |s| s.cycles),
        ("API writes", |s| s.api_writes),
    ];
    for (name, f) in series {
        let y: Vec<f64> = samples.iter().map(f).collect();
        let (lo, hi) = y
            .iter()
            .fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(*v), h.max(*v)));
        println!("{name:>12} {lo:>9.1} … {hi:<9.1} {}", sparkline(&y));
    }
}
