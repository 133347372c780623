//! The agent's own resource use, read from `/proc/self` at scrape time, under the names every
//! Prometheus client library uses (client_golang's process collector): `process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_open_fds`, `process_start_time_seconds`.
//! Where `/proc` cannot be read (not Linux, a restricted sandbox) the series are left out.

use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

/// Linux reports CPU time in USER_HZ ticks, fixed at 100 by the kernel ABI on every
/// architecture it supports (`sysconf(_SC_CLK_TCK)`), whatever CONFIG_HZ is.
const USER_HZ: u64 = 100;
/// `/proc/self/stat` and `/proc/self/status` are a few hundred bytes; read no more than this.
const MAX_PROC_FILE: usize = 16 * 1024;
/// Stop counting file descriptors here (the agent holds a few dozen).
const MAX_FDS_COUNTED: usize = 65_536;

#[derive(Debug)]
pub struct ProcessCollector {
    start_unix: i64,
}

impl ProcessCollector {
    pub fn new() -> ProcessCollector {
        let start_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        ProcessCollector { start_unix }
    }
}

fn read_small(path: &str) -> Option<String> {
    use std::io::Read;
    let f = std::fs::File::open(path).ok()?;
    let mut s = String::new();
    f.take(MAX_PROC_FILE as u64).read_to_string(&mut s).ok()?;
    Some(s)
}

/// utime + stime (fields 14 and 15 of /proc/self/stat; the command name in field 2 may
/// contain spaces, so count from its closing parenthesis).
pub fn cpu_seconds() -> Option<f64> {
    let stat = read_small("/proc/self/stat")?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime.checked_add(stime)? as f64 / USER_HZ as f64)
}

/// VmRSS from /proc/self/status (kB).
pub fn resident_bytes() -> Option<u64> {
    let status = read_small("/proc/self/status")?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

pub fn open_fds() -> Option<u64> {
    let n = std::fs::read_dir("/proc/self/fd")
        .ok()?
        .take(MAX_FDS_COUNTED)
        .count();
    u64::try_from(n).ok()
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(cpu) = cpu_seconds() {
            let help = "Total user and system CPU time spent in seconds";
            let mut m = encoder.encode_descriptor(
                "process_cpu_seconds",
                help,
                None,
                MetricType::Counter,
            )?;
            m.encode_counter::<NoLabelSet, _, u64>(&cpu, None)?;
        }
        if let Some(rss) = resident_bytes() {
            let help = "Resident memory size in bytes";
            let name = "process_resident_memory_bytes";
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            m.encode_gauge(&rss)?;
        }
        if let Some(fds) = open_fds() {
            let help = "Number of open file descriptors";
            let mut m =
                encoder.encode_descriptor("process_open_fds", help, None, MetricType::Gauge)?;
            m.encode_gauge(&fds)?;
        }
        let help = "Start time of the process since unix epoch in seconds";
        let name = "process_start_time_seconds";
        let mut m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        m.encode_gauge(&self.start_unix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        assert!(cpu_seconds().is_some_and(|c| c >= 0.0));
        assert!(resident_bytes().is_some_and(|b| b > 1024 * 1024));
        assert!(open_fds().is_some_and(|n| n >= 3));
    }
}
