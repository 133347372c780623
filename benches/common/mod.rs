//! Shared helpers of the benchmarks: percentiles, `/usr/bin/time -v` parsing, env knobs.
#![allow(dead_code)]

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `name` from the environment, else `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// Nearest-rank percentile of an unsorted sample (`p` in 0..=100).
pub fn pct(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut v = samples.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * (v.len() as f64 - 1.0)).round() as usize;
    v[rank.min(v.len() - 1)]
}

pub fn median(samples: &[f64]) -> f64 {
    pct(samples, 50.0)
}

/// One timed run under `/usr/bin/time -v`: wall time measured here (spawn to exit), peak RSS
/// (KiB) from time's report.
pub struct Timed {
    pub wall: Duration,
    pub max_rss_kib: u64,
    pub output: Output,
}

/// Runs `program args…` under `/usr/bin/time -v`, writing `stdin` if given. time's report goes
/// to a file so the program's stderr stays its own.
pub fn run_timed(program: &str, args: &[&str], stdin: Option<&str>) -> Timed {
    use std::io::Write;
    let report = tempfile::NamedTempFile::new().expect("temp file");
    let mut cmd = Command::new("/usr/bin/time");
    cmd.arg("-v")
        .arg("-o")
        .arg(report.path())
        .arg(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .expect("spawn /usr/bin/time (apt-get install time)");
    if let Some(input) = stdin {
        if let Some(mut si) = child.stdin.take() {
            let _ = si.write_all(input.as_bytes());
        }
    }
    let output = child.wait_with_output().expect("wait");
    let wall = start.elapsed();
    let text = std::fs::read_to_string(report.path()).unwrap_or_default();
    let max_rss_kib = text
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes):")
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0);
    Timed {
        wall,
        max_rss_kib,
        output,
    }
}

/// `nproc`, CPU model and kernel, one line each.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!("machine: {cpus} CPUs, {cpu}, Linux {kernel}")
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
