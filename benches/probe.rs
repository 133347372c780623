//! Benchmark (issue 2): cold `pullprobe check` of one image against `skopeo inspect --raw` (and,
//! when a private containerd starts, `ctr content fetch`) on the real harness registry with TLS +
//! token auth; then the same behind a 25 ms-each-way delaying proxy (50 ms RTT) to count round
//! trips. Prints tables; asserts nothing about time. See bench/README.md.
//!
//! Env: `BENCH_N` (default 30) local runs per tool, `BENCH_N_DELAY` (default 8) delayed runs.

#[path = "../tests/harness/mod.rs"]
mod harness;

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use harness::*;

const USER: &str = "alice";
const PASS: &str = "alice-pw";
const ONE_WAY: Duration = Duration::from_millis(25);

/// A tool under test: how to run it against `image` (`HOST:PORT/REPO:TAG`).
#[derive(Clone, Copy, PartialEq)]
enum Tool {
    Pullprobe,
    Skopeo,
    Ctr,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Pullprobe => "pullprobe check",
            Tool::Skopeo => "skopeo inspect --raw",
            Tool::Ctr => "ctr content fetch",
        }
    }
}

struct Ctx {
    pki: Pki,
    ctr: Option<Containerd>,
}

fn run(ctx: &Ctx, tool: Tool, image: &str) -> Timed {
    match tool {
        Tool::Pullprobe => {
            let ca = ctx.pki.ca_cert.to_string_lossy().into_owned();
            run_timed(
                env!("CARGO_BIN_EXE_pullprobe"),
                &[
                    "check",
                    image,
                    "--ca-file",
                    &ca,
                    "--username",
                    USER,
                    "--password-stdin",
                    "--json",
                ],
                Some(&format!("{PASS}\n")),
            )
        }
        Tool::Skopeo => {
            let cert_dir = ctx.pki.skopeo_cert_dir(false);
            let cd = cert_dir.to_string_lossy().into_owned();
            let creds = format!("{USER}:{PASS}");
            let reference = format!("docker://{image}");
            run_timed(
                "skopeo",
                &[
                    "inspect",
                    "--raw",
                    "--cert-dir",
                    &cd,
                    "--creds",
                    &creds,
                    &reference,
                ],
                None,
            )
        }
        Tool::Ctr => {
            let c = ctx.ctr.as_ref().expect("ctr ctx");
            let hosts = c.hosts_dir(image, &ctx.pki.ca_cert);
            let h = hosts.to_string_lossy().into_owned();
            let sock = c.socket().to_string_lossy().into_owned();
            let creds = format!("{USER}:{PASS}");
            // A new namespace per run: no image record to reuse (blobs are tiny; the
            // resolve + auth + manifest requests are what is measured).
            let ns = format!("bench{}", c.next_ns());
            run_timed(
                "ctr",
                &[
                    "--address",
                    &sock,
                    "--namespace",
                    &ns,
                    "content",
                    "fetch",
                    "--hosts-dir",
                    &h,
                    "--user",
                    &creds,
                    "--platform",
                    "linux/amd64",
                    image,
                ],
                None,
            )
        }
    }
}

#[derive(Default)]
struct Samples {
    wall_ms: Vec<f64>,
    rss_kib: Vec<f64>,
    /// Connections the tool opened through the delay proxies, per run.
    conns: Vec<f64>,
    failures: usize,
    first_error: Option<String>,
}

/// pullprobe's own per-phase durations (`--json` `phases`), keyed `name host` in first-seen order.
#[derive(Default)]
struct Phases {
    order: Vec<String>,
    ms: BTreeMap<String, Vec<f64>>,
    total: Vec<f64>,
    /// The last run's phases, with their `detail` (what was sent), to show what was timed.
    last: Vec<String>,
}

impl Phases {
    fn add(&mut self, stdout: &[u8]) {
        let Some(line) = String::from_utf8_lossy(stdout)
            .lines()
            .find(|l| !l.trim().is_empty())
            .map(str::to_string)
        else {
            return;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            return;
        };
        if let Some(t) = v["duration_ms"].as_f64() {
            self.total.push(t);
        }
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        self.last.clear();
        for p in v["phases"].as_array().into_iter().flatten() {
            self.last.push(format!(
                "{} {} {:.1} ms: {}",
                p["name"].as_str().unwrap_or("?"),
                p["host"].as_str().unwrap_or(""),
                p["duration_ms"].as_f64().unwrap_or(f64::NAN),
                p["detail"].as_str().unwrap_or("")
            ));
            let base = format!(
                "{} {}",
                p["name"].as_str().unwrap_or("?"),
                p["host"].as_str().unwrap_or("")
            );
            // The same phase may repeat on one host (e.g. two requests): number repeats.
            let n = seen.entry(base.clone()).or_insert(0);
            *n += 1;
            let key = if *n > 1 { format!("{base} #{n}") } else { base };
            if !self.order.contains(&key) {
                self.order.push(key.clone());
            }
            self.ms
                .entry(key)
                .or_default()
                .push(p["duration_ms"].as_f64().unwrap_or(f64::NAN));
        }
    }
    fn print(&self, title: &str) {
        println!(
            "\npullprobe per-phase breakdown ({title}; median of its --json duration_ms, ms):"
        );
        println!(
            "  {:<34} {:>9} {:>9} {:>9}",
            "phase host", "median", "p10", "p90"
        );
        for k in &self.order {
            let v = &self.ms[k];
            println!(
                "  {:<34} {:>9.2} {:>9.2} {:>9.2}",
                k,
                median(v),
                pct(v, 10.0),
                pct(v, 90.0)
            );
        }
        println!(
            "  {:<34} {:>9.2} {:>9.2} {:>9.2}",
            "total (duration_ms)",
            median(&self.total),
            pct(&self.total, 10.0),
            pct(&self.total, 90.0)
        );
        println!("  last run, phase by phase (phases nest: a hop's dns/connect/tls are inside the phase that needed it):");
        for l in &self.last {
            println!("    {l}");
        }
    }
}

fn bench_case(
    ctx: &Ctx,
    tools: &[Tool],
    image: &str,
    n: usize,
    proxies: &[&DelayProxy],
) -> (Vec<Samples>, Phases) {
    let mut out: Vec<Samples> = tools.iter().map(|_| Samples::default()).collect();
    let mut phases = Phases::default();
    // Interleaved, so drift in machine load hits every tool alike.
    for _ in 0..n {
        for (i, &tool) in tools.iter().enumerate() {
            let before: usize = proxies.iter().map(|p| p.connection_count()).sum();
            let t = run(ctx, tool, image);
            let after: usize = proxies.iter().map(|p| p.connection_count()).sum();
            let s = &mut out[i];
            if !t.output.status.success() {
                s.failures += 1;
                if s.first_error.is_none() {
                    s.first_error = Some(format!(
                        "exit {:?}: {} {}",
                        t.output.status.code(),
                        String::from_utf8_lossy(&t.output.stderr).trim(),
                        String::from_utf8_lossy(&t.output.stdout).trim()
                    ));
                }
                continue;
            }
            s.wall_ms.push(ms(t.wall));
            s.rss_kib.push(t.max_rss_kib as f64);
            s.conns.push((after - before) as f64);
            if tool == Tool::Pullprobe {
                phases.add(&t.output.stdout);
            }
        }
    }
    (out, phases)
}

fn print_table(tools: &[Tool], s: &[Samples], rtt_ms: Option<f64>, base: Option<&[f64]>) {
    match rtt_ms {
        None => println!(
            "  {:<22} {:>5} {:>10} {:>9} {:>9} {:>14}",
            "tool", "runs", "median ms", "p10 ms", "p90 ms", "peak RSS MiB"
        ),
        Some(_) => println!(
            "  {:<22} {:>5} {:>10} {:>9} {:>9} {:>9} {:>14} {:>11}",
            "tool",
            "runs",
            "median ms",
            "p10 ms",
            "p90 ms",
            "total/RTT",
            "(total-local)/RTT",
            "new conns"
        ),
    }
    for (i, (tool, x)) in tools.iter().zip(s).enumerate() {
        let m = median(&x.wall_ms);
        match rtt_ms {
            None => println!(
                "  {:<22} {:>5} {:>10.1} {:>9.1} {:>9.1} {:>14.1}",
                tool.name(),
                x.wall_ms.len(),
                m,
                pct(&x.wall_ms, 10.0),
                pct(&x.wall_ms, 90.0),
                median(&x.rss_kib) / 1024.0
            ),
            Some(rtt) => {
                let local = base.map(|b| b[i]).unwrap_or(0.0);
                println!(
                    "  {:<22} {:>5} {:>10.1} {:>9.1} {:>9.1} {:>9.1} {:>17.1} {:>11.0}",
                    tool.name(),
                    x.wall_ms.len(),
                    m,
                    pct(&x.wall_ms, 10.0),
                    pct(&x.wall_ms, 90.0),
                    m / rtt,
                    (m - local) / rtt,
                    median(&x.conns)
                );
            }
        }
        if x.failures > 0 {
            println!(
                "    ! {} failed runs; first: {}",
                x.failures,
                x.first_error.as_deref().unwrap_or("")
            );
        }
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let n = env_usize("BENCH_N", 30);
    let n_delay = env_usize("BENCH_N_DELAY", 8);
    println!("== pullprobe bench: cold check vs skopeo (vs ctr) ==");
    println!("{}", machine());

    let pki = Pki::new();
    // The realm is HTTPS on its own port (like most public registries' auth hosts), so a cold
    // client pays a second TCP + TLS handshake for the token.
    let mut issuer = TokenIssuer::builder(&pki)
        .user(USER, PASS)
        .tls(&pki.server)
        .start();
    let reg = Registry::builder()
        .tls(&pki.server)
        .token_auth(&issuer)
        .log_level("error")
        .start();
    OciImage::single("v1").push(&reg, "bench/app", &PushOpts::tls(&pki).creds(USER, PASS));
    let image = format!("{}/bench/app:v1", reg.host_port());

    let ctr = match Containerd::start() {
        Ok(c) => Some(c),
        Err(e) => {
            println!("note: ctr skipped: {e}");
            None
        }
    };
    let mut ctx = Ctx { pki, ctr };
    let mut tools = vec![Tool::Pullprobe, Tool::Skopeo];
    if ctx.ctr.is_some() {
        // One probe run first: skip ctr if it cannot fetch here.
        let t = run(&ctx, Tool::Ctr, &image);
        if t.output.status.success() {
            tools.push(Tool::Ctr);
        } else {
            println!(
                "note: ctr skipped: fetch failed: {}",
                String::from_utf8_lossy(&t.output.stderr).trim()
            );
            ctx.ctr = None;
        }
    }

    println!(
        "\ncase 1: local registry (distribution 2.8, TLS 1.3) + token issuer (TLS, own port), {n} cold runs each, interleaved"
    );
    println!("  image {image}; wall time = process spawn to exit (includes process start-up)");
    let (local, phases) = bench_case(&ctx, &tools, &image, n, &[]);
    print_table(&tools, &local, None, None);
    let pp = median(&local[0].wall_ms);
    for (t, s) in tools.iter().zip(&local).skip(1) {
        println!(
            "  ratio {} / pullprobe (median): {:.2}x",
            t.name(),
            median(&s.wall_ms) / pp
        );
    }
    phases.print("case 1");

    // Case 2: the same storage behind a second registry whose challenge names the proxied realm.
    let issuer_proxy = DelayProxy::start(
        format!("127.0.0.1:{}", issuer.port())
            .parse()
            .expect("issuer addr"),
        ProxyMode::Delay(ONE_WAY),
    );
    issuer.set_realm_port(issuer_proxy.port());
    let reg2 = Registry::builder()
        .tls(&ctx.pki.server)
        .token_auth(&issuer)
        .storage(reg.storage())
        .log_level("error")
        .start();
    let reg_proxy = DelayProxy::start(
        reg2.host_port().parse().expect("registry addr"),
        ProxyMode::Delay(ONE_WAY),
    );
    let image2 = format!("{}/bench/app:v1", reg_proxy.host_port());
    let rtt = ms(ONE_WAY * 2);
    println!(
        "\ncase 2: registry and token issuer behind a delaying TCP proxy, {} ms each way (RTT {rtt:.0} ms), {n_delay} runs each",
        ONE_WAY.as_millis()
    );
    println!(
        "  total/RTT counts process start-up too; (total-local)/RTT subtracts case 1's median."
    );
    println!("  The proxy accepts locally, so TCP handshakes cost no RTT here: add 'new conns' for a real link.");
    let base: Vec<f64> = local.iter().map(|s| median(&s.wall_ms)).collect();
    let (delayed, phases2) =
        bench_case(&ctx, &tools, &image2, n_delay, &[&reg_proxy, &issuer_proxy]);
    print_table(&tools, &delayed, Some(rtt), Some(&base));
    phases2.print("case 2");
    println!(
        "\n  expected for pullprobe (containerd profile, realm on another host:port): TLS 1.3 (1) + HEAD 401 (1) +\n  realm TLS (1) + token POST (1) + HEAD (1) + GET manifest (1) + HEAD blob (1) = 7 RTT over 2 connections\n  (+2 TCP handshakes on a real link = 9)"
    );
    if let Some(c) = &ctx.ctr {
        println!(
            "\ncontainerd daemon peak RSS (VmHWM): {:.1} MiB",
            c.hwm_kib() as f64 / 1024.0
        );
    }
    drop(reg_proxy);
    drop(issuer_proxy);
    drop(reg2);
    drop(reg);
    drop(issuer);
}

/// A private containerd (own root, state, socket; CRI plugin disabled) for `ctr content fetch`.
struct Containerd {
    child: Child,
    dir: tempfile::TempDir,
    ns: std::cell::Cell<usize>,
}

impl Containerd {
    fn start() -> Result<Containerd, String> {
        if Command::new("containerd")
            .arg("--version")
            .output()
            .is_err()
        {
            return Err("containerd not installed".into());
        }
        let dir = tempfile::Builder::new()
            .prefix("ctrd-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let d = dir.path();
        let cfg = format!(
            "version = 2\nroot = \"{r}/root\"\nstate = \"{r}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{r}/c.sock\"\n[ttrpc]\n  address = \"{r}/c.sock.ttrpc\"\n",
            r = d.display()
        );
        std::fs::write(d.join("config.toml"), cfg).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(d.join("containerd.log")).map_err(|e| e.to_string())?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| e.to_string())?;
        let c = Containerd {
            child,
            dir,
            ns: std::cell::Cell::new(0),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ok = Command::new("ctr")
                .arg("--address")
                .arg(c.socket())
                .arg("version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return Ok(c);
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(c.dir.path().join("containerd.log"))
                    .unwrap_or_default();
                let tail: String = log.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
                return Err(format!("containerd did not answer in 10 s: {tail}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    fn socket(&self) -> PathBuf {
        self.dir.path().join("c.sock")
    }
    fn next_ns(&self) -> usize {
        let n = self.ns.get() + 1;
        self.ns.set(n);
        n
    }
    /// `hosts.toml` dir for the image's host, trusting `ca` (containerd 1.6 `--hosts-dir`).
    fn hosts_dir(&self, image: &str, ca: &Path) -> PathBuf {
        let host = image.split('/').next().unwrap_or(image);
        let root = self.dir.path().join("hosts");
        let d = root.join(host);
        if !d.exists() {
            let _ = std::fs::create_dir_all(&d);
            let _ = std::fs::write(
                d.join("hosts.toml"),
                format!(
                    "server = \"https://{host}\"\n\n[host.\"https://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = \"{}\"\n",
                    ca.display()
                ),
            );
        }
        root
    }
    fn hwm_kib(&self) -> u64 {
        vm_hwm_kib(self.child.id())
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmHWM:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
}
