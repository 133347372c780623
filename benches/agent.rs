//! Benchmark (issue 4): steady-state `pullprobe agent --standalone` with 200 distinct images over
//! 20 registry hosts (real distribution registries, plain HTTP, one shared storage), then one
//! 1,000-image cycle. Prints peak RSS, CPU seconds per cycle, cycle duration, requests per
//! registry per node-hour (from the registries' access logs) and API writes per node-hour (from
//! the condition manager's write policy, simulated). Asserts nothing. See bench/README.md.
//!
//! Env: `BENCH_AGENT_CYCLES` (default 20) steady-state cycles measured, `BENCH_AGENT_BIG`
//! (default 1000) images in the big cycle.

#[path = "../tests/harness/mod.rs"]
mod harness;

mod common;

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::*;
use harness::*;

const HOSTS: usize = 20;
const BASES: usize = 5;
const REPOS: usize = 50;
/// Compressed schedule: cycles per fleet period as with the defaults (60 s / 10 min = 10).
const INTERVAL_S: u64 = 1;
const PERIOD_S: u64 = 10;
const DEFAULT_INTERVAL_S: u64 = 60;

/// GET `path` on the agent's HTTP port (plain HTTP/1.1, one request per connection).
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    })
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix(field)
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

/// utime + stime of `pid` in seconds.
fn cpu_seconds(pid: u32, ticks: f64) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (get(11) + get(12)) / ticks
}

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Requests in a registry's access log (`IP - - [date] "METHOD /path HTTP/1.1" …`).
fn request_count(reg: &Registry) -> usize {
    reg.log()
        .lines()
        .filter(|l| l.contains("] \"") && l.contains(" HTTP/1.1\" "))
        .count()
}

struct Agent {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Agent {
    fn start(images: &[String], interval_s: u64, period_s: u64, node_count: u64) -> Agent {
        let dir = tempfile::Builder::new()
            .prefix("agent-bench-")
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        // heartbeat must be >= interval (config validation); irrelevant in standalone.
        let hb = interval_s.max(300);
        let mut y = format!(
            "interval: {interval_s}s\njitter: 0\nheartbeat: {hb}s\nlisten: \"127.0.0.1:{port}\"\n\
             fleet:\n  period: {period_s}s\n  node_count: {node_count}\nlog_format: json\nreload_interval: 1h\nimages:\n"
        );
        for i in images {
            y += &format!("  - {i}\n");
        }
        let cfg = dir.path().join("agent.yaml");
        std::fs::write(&cfg, y).expect("write config");
        let log = std::fs::File::create(dir.path().join("agent.log")).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_pullprobe"))
            .args([
                "agent",
                "--standalone",
                "--node-name",
                "bench-node",
                "--config",
            ])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("spawn pullprobe agent");
        Agent {
            child,
            port,
            _dir: dir,
        }
    }
    fn metrics(&self) -> String {
        http_get(self.port, "/metrics").unwrap_or_default()
    }
    fn cycles(&self) -> f64 {
        metric(&self.metrics(), "pullprobe_cycles_total").unwrap_or(0.0)
    }
    /// Polls until `pullprobe_cycles_total >= n` (so a snapshot falls between two cycles).
    fn wait_cycles(&mut self, n: f64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                let log =
                    std::fs::read_to_string(self._dir.path().join("agent.log")).unwrap_or_default();
                println!(
                    "  ! agent exited ({st}): {}",
                    log.lines().last().unwrap_or("")
                );
                return false;
            }
            if self.cycles() >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
    fn pid(&self) -> u32 {
        self.child.id()
    }
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self._dir.path().join("agent.log")).unwrap_or_default();
        log.lines().rev().take(3).collect::<Vec<_>>().join("\n    ")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn images(regs: &[Registry], per_host: usize) -> Vec<String> {
    let mut v = Vec::new();
    for (h, r) in regs.iter().enumerate() {
        for j in 0..per_host {
            // Different repositories on every host, so each (host, repo) is a distinct image.
            v.push(format!(
                "{}/bench/app{}:v1",
                r.host_port(),
                (h * per_host + j) % REPOS.max(per_host)
            ));
        }
    }
    v
}

fn main() {
    let k = env_usize("BENCH_AGENT_CYCLES", 20) as f64;
    let big = env_usize("BENCH_AGENT_BIG", 1000);
    let ticks = clk_tck();
    println!("== pullprobe bench: agent --standalone ==");
    println!("{}", machine());

    // Five distinct images pushed with skopeo (three single-platform manifests, two OCI indexes),
    // then their repositories copied on disk to bench/app0..49 (same digests, distinct
    // repositories): a registry serves a copied repository exactly like a pushed one.
    let setup = Instant::now();
    let storage = Storage::new();
    let mut regs = vec![Registry::builder()
        .storage(storage.clone())
        .log_level("error")
        .start()];
    for i in 0..BASES {
        let img = if i < 3 {
            OciImage::build("v1", &[("linux", "amd64")], false, &format!("base{i}"), 0)
        } else {
            OciImage::build(
                "v1",
                &[("linux", "amd64"), ("linux", "arm64")],
                true,
                &format!("base{i}"),
                0,
            )
        };
        img.push(&regs[0], &format!("bench/base{i}"), &PushOpts::insecure());
    }
    let repos = storage.path().join("docker/registry/v2/repositories/bench");
    for j in 0..REPOS {
        harness::copy_dir(
            &repos.join(format!("base{}", j % BASES)),
            &repos.join(format!("app{j}")),
        )
        .expect("copy repository");
    }
    for _ in 1..HOSTS {
        regs.push(
            Registry::builder()
                .storage(storage.clone())
                .log_level("error")
                .start(),
        );
    }
    let probe_ref = format!("{}/bench/app{}:v1", regs[HOSTS - 1].host_port(), REPOS - 1);
    let out = run_pullprobe(&["check", &probe_ref], None);
    println!(
        "setup: {HOSTS} registries (plain HTTP, shared storage), {BASES} pushed images, {REPOS} repositories, {:.1} s; sanity check {probe_ref}: exit {:?}",
        setup.elapsed().as_secs_f64(),
        out.status.code()
    );

    // ---- steady state: 200 images over 20 hosts ----
    let imgs = images(&regs, 10);
    println!(
        "\ncase 1: steady state, {} distinct images over {HOSTS} hosts; interval {INTERVAL_S}s, fleet.period {PERIOD_S}s \
         (10 cycles/period, as 60s/10m), fleet.node_count 1, checks_per_period 3, concurrency 8, per host 2",
        imgs.len()
    );
    let Some(st) = steady(&regs, &imgs, 1, k, ticks) else {
        return;
    };
    let Steady {
        dc,
        elapsed,
        hwm,
        rss,
        cpu,
        cycle_ms,
        total_per_cycle,
        mn,
        mx,
    } = st;
    let per_hour_scale = 3600.0 / DEFAULT_INTERVAL_S as f64;

    println!("  measured {dc:.0} cycles in {elapsed:.1} s");
    println!("  {:<52} {:>12} {:>12}", "figure", "value", "goal");
    println!(
        "  {:<52} {:>12.1} {:>12}",
        "peak RSS (VmHWM), MiB",
        hwm as f64 / 1024.0,
        "<= 16"
    );
    println!(
        "  {:<52} {:>12.1} {:>12}",
        "RSS at end (VmRSS), MiB",
        rss as f64 / 1024.0,
        ""
    );
    println!(
        "  {:<52} {:>12.4} {:>12}",
        "CPU seconds per cycle (utime+stime)", cpu, ""
    );
    println!(
        "  {:<52} {:>12.1} {:>12}",
        "cycle duration, mean ms (pullprobe_cycle_duration)", cycle_ms, ""
    );
    println!(
        "  {:<52} {:>12.1} {:>12}",
        "requests per cycle, all registries", total_per_cycle, ""
    );
    println!(
        "  {:<52} {:>12.0} {:>12}",
        "requests per registry per node-hour (mean)",
        total_per_cycle / HOSTS as f64 * per_hour_scale,
        ""
    );
    println!(
        "  {:<52} {:>12} {:>12}",
        "  min / max over the 20 registries",
        format!("{:.0} / {:.0}", mn * per_hour_scale, mx * per_hour_scale),
        ""
    );
    println!(
        "  (per node-hour = per cycle x {per_hour_scale:.0}: the default interval {DEFAULT_INTERVAL_S}s and period 10m keep the same 10 cycles/period)"
    );
    let writes = simulated_writes_per_hour();
    println!(
        "  {:<52} {:>12} {:>12}",
        "API writes per node-hour (steady, simulated)",
        format!("{:.0}-{:.0} (mean {:.1})", writes.0, writes.1, writes.2),
        "<= 13"
    );
    println!(
        "  (standalone has no API: ConditionManager with defaults — heartbeat 5m minus up to 10% jitter, writes only on\n   change — driven for 2 h of healthy 60 s cycles over 50 seeds; writes counted in the 2nd hour; no Events at steady state)"
    );

    // ---- the same agent in a 5,000-node fleet: per-image checks shrink to its share ----
    let k5 = (k / 2.0).max(5.0);
    println!(
        "\ncase 1b: the same 200 images with fleet.node_count 5000 (each node takes its share of image checks), {k5:.0} cycles"
    );
    if let Some(st) = steady(&regs, &imgs, 5000, k5, ticks) {
        let per_node_hour = st.total_per_cycle / HOSTS as f64 * per_hour_scale;
        println!("  {:<52} {:>12} {:>12}", "figure", "value", "goal");
        println!(
            "  {:<52} {:>12.1} {:>12}",
            "requests per cycle, all registries", st.total_per_cycle, ""
        );
        println!(
            "  {:<52} {:>12.0} {:>12}",
            "requests per registry per node-hour (mean)", per_node_hour, ""
        );
        println!(
            "  {:<52} {:>12.0} {:>12}",
            "  x 5,000 nodes: requests per registry per second",
            per_node_hour * 5000.0 / 3600.0,
            ""
        );
        println!(
            "  {:<52} {:>12.4} {:>12}",
            "CPU seconds per cycle (utime+stime)", st.cpu, ""
        );
        println!(
            "  {:<52} {:>12.1} {:>12}",
            "peak RSS (VmHWM), MiB",
            st.hwm as f64 / 1024.0,
            "<= 16"
        );
    }

    // ---- one big cycle ----
    let per_host = big.div_ceil(HOSTS);
    let mut imgs = images(&regs, per_host.min(REPOS));
    if per_host > REPOS {
        // More than 50 per host: tags that do not exist still cost a full probe (manifest 404).
        for (h, r) in regs.iter().enumerate() {
            for j in REPOS..per_host {
                imgs.push(format!(
                    "{}/bench/app{}:t{j}",
                    r.host_port(),
                    (h + j) % REPOS
                ));
            }
        }
    }
    imgs.truncate(big);
    println!(
        "\ncase 2: one cycle of {} distinct images over {HOSTS} hosts (all new: every image checked), defaults (concurrency 8, per host 2)",
        imgs.len()
    );
    let start = Instant::now();
    let mut agent = Agent::start(&imgs, 600, 600, 1);
    if !agent.wait_cycles(1.0, Duration::from_secs(120)) {
        println!(
            "  ! first cycle did not complete:\n    {}",
            agent.log_tail()
        );
        return;
    }
    let wall = start.elapsed().as_secs_f64();
    let m = agent.metrics();
    let dur = metric(&m, "pullprobe_cycle_duration_seconds_sum").unwrap_or(f64::NAN);
    let ready = m
        .lines()
        .filter(|l| {
            l.starts_with("pullprobe_probe_results_total{") && l.contains("verdict=\"ready\"")
        })
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum::<f64>();
    let all = m
        .lines()
        .filter(|l| l.starts_with("pullprobe_probe_results_total{"))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum::<f64>();
    let cpu = cpu_seconds(agent.pid(), ticks);
    let hwm = proc_status_kib(agent.pid(), "VmHWM:");
    println!("  {:<52} {:>12} {:>12}", "figure", "value", "goal");
    println!(
        "  {:<52} {:>12.2} {:>12}",
        "cycle duration, s (pullprobe_cycle_duration_seconds)", dur, "< 10"
    );
    println!(
        "  {:<52} {:>12.2} {:>12}",
        "agent start to first cycle done, s", wall, ""
    );
    println!(
        "  {:<52} {:>12} {:>12}",
        "probes (ready / all)",
        format!("{ready:.0} / {all:.0}"),
        ""
    );
    println!(
        "  {:<52} {:>12.2} {:>12}",
        "CPU seconds (start + cycle)", cpu, ""
    );
    println!(
        "  {:<52} {:>12.1} {:>12}",
        "peak RSS (VmHWM), MiB",
        hwm as f64 / 1024.0,
        "<= 16"
    );
    drop(agent);
    drop(regs);
}

/// Steady-state figures over `k` cycles after the first two.
struct Steady {
    dc: f64,
    elapsed: f64,
    hwm: u64,
    rss: u64,
    /// CPU seconds per cycle.
    cpu: f64,
    cycle_ms: f64,
    total_per_cycle: f64,
    mn: f64,
    mx: f64,
}

fn steady(
    regs: &[Registry],
    imgs: &[String],
    node_count: u64,
    k: f64,
    ticks: f64,
) -> Option<Steady> {
    let mut agent = Agent::start(imgs, INTERVAL_S, PERIOD_S, node_count);
    // Cycle 1 checks every image (all new); measure from the end of cycle 2.
    if !agent.wait_cycles(2.0, Duration::from_secs(60)) {
        println!(
            "  ! agent did not complete 2 cycles:\n    {}",
            agent.log_tail()
        );
        return None;
    }
    let m0 = agent.metrics();
    let c0 = metric(&m0, "pullprobe_cycles_total").unwrap_or(0.0);
    let cpu0 = cpu_seconds(agent.pid(), ticks);
    let req0: Vec<usize> = regs.iter().map(request_count).collect();
    let sum0 = metric(&m0, "pullprobe_cycle_duration_seconds_sum").unwrap_or(0.0);
    let t0 = Instant::now();
    if !agent.wait_cycles(c0 + k, Duration::from_secs_f64(k * 5.0 + 30.0)) {
        println!("  ! agent stalled:\n    {}", agent.log_tail());
        return None;
    }
    let m1 = agent.metrics();
    let elapsed = t0.elapsed().as_secs_f64();
    let c1 = metric(&m1, "pullprobe_cycles_total").unwrap_or(0.0);
    let cpu1 = cpu_seconds(agent.pid(), ticks);
    let req1: Vec<usize> = regs.iter().map(request_count).collect();
    let sum1 = metric(&m1, "pullprobe_cycle_duration_seconds_sum").unwrap_or(0.0);
    let hwm = proc_status_kib(agent.pid(), "VmHWM:");
    let rss = proc_status_kib(agent.pid(), "VmRSS:");
    let dc = (c1 - c0).max(1.0);
    let per_cycle: Vec<f64> = req0
        .iter()
        .zip(&req1)
        .map(|(a, b)| (b - a) as f64 / dc)
        .collect();
    let total_per_cycle: f64 = per_cycle.iter().sum();
    let (mn, mx) = per_cycle
        .iter()
        .fold((f64::MAX, 0.0f64), |(a, b), &x| (a.min(x), b.max(x)));
    drop(agent);
    Some(Steady {
        dc,
        elapsed,
        hwm,
        rss,
        cpu: (cpu1 - cpu0) / dc,
        cycle_ms: (sum1 - sum0) / dc * 1000.0,
        total_per_cycle,
        mn,
        mx,
    })
}

/// Steady-state condition writes per hour: the real `ConditionManager` (defaults: fail_after 2,
/// recover_after 1, heartbeat 5 min) fed healthy cycles every 60 s with a sync tick every second,
/// as `run::sync_conditions` does. Returns (min, max, mean) over seeds, counted in hour 2.
fn simulated_writes_per_hour() -> (f64, f64, f64) {
    use pullprobe::agent::conditions::{ConditionKind, ConditionManager};
    use pullprobe::agent::schedule::Jitter;
    let mut counts = Vec::new();
    for seed in 1..=50u64 {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut m = ConditionManager::new(2, 1, Duration::from_secs(300), Jitter::new(seed), t0);
        let mut n = 0usize;
        for s in 0..2 * 3600u64 {
            let now = t0 + Duration::from_secs(s);
            if s % 60 == 0 {
                let _ = m.observe(ConditionKind::RegistryUnreachable, None, now);
                let _ = m.observe(ConditionKind::RegistryAuthFailing, None, now);
            }
            if m.pending_write(now).is_some() {
                m.write_succeeded(now);
                if s >= 3600 {
                    n += 1;
                }
            }
        }
        counts.push(n as f64);
    }
    let mn = counts.iter().cloned().fold(f64::MAX, f64::min);
    let mx = counts.iter().cloned().fold(0.0, f64::max);
    (mn, mx, counts.iter().sum::<f64>() / counts.len() as f64)
}
