//! The real agent (`pullprobe agent --standalone`) against registries that answer hugely
//! (issue 14): a fresh `service=` and a huge token on every challenge, on many host names;
//! 10,000-entry indexes and a 200 KB `Docker-Content-Digest` header. The agent's own
//! accounting (`/status` → `node_config.caches`) stays within its bounds, its peak RSS
//! (`VmHWM`) under 40 MiB, `/status` under 256 KiB and every log line under 8 KiB.

mod agent_proc;
mod harness;
/// The release binary (`require_release_binary`), built as the one-node cluster builds it.
#[allow(dead_code)]
#[path = "node/images.rs"]
mod node_images;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::agent_proc::AgentProc;
use crate::agent_proc::{get_json, http_get, metric_sum, status_targets, wait_for, write_file};
use crate::harness::*;

/// The bound the issue sets for the agent under attack (the DaemonSet's limit is 64 Mi).
const MAX_RSS_KIB: u64 = 40 * 1024;

/// A node whose `/etc/hosts` maps every name to loopback and whose containerd talks plain
/// HTTP to each `name:port` (hosts.toml `server`), as a node with such registries would.
fn node(names: &[String], port: u16) -> tempfile::TempDir {
    let root = agent_proc::host_root();
    let r = root.path();
    std::fs::write(
        r.join("etc/hosts"),
        format!("127.0.0.1 localhost {}\n", names.join(" ")),
    )
    .unwrap();
    std::fs::create_dir_all(r.join("etc/containerd")).unwrap();
    write_file(
        &r.join("etc/containerd"),
        "config.toml",
        "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n",
    );
    for n in names {
        let dir = r.join(format!("etc/containerd/certs.d/{n}:{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        write_file(
            &dir,
            "hosts.toml",
            &format!("server = \"http://{n}:{port}\"\n"),
        );
    }
    root
}

fn agent(root: &Path, images: &[String]) -> AgentProc {
    let imgs: Vec<String> = images.iter().map(|i| format!("  - \"{i}\"")).collect();
    let cfg = write_file(
        root,
        "agent.yaml",
        &format!(
            "interval: 1s\njitter: 0\nheartbeat: 5s\nfleet:\n  node_count: 1\n  period: 2s\nbackoff:\n  initial: 1s\n  max: 1s\nimages:\n{}\n",
            imgs.join("\n")
        ),
    );
    // The release binary: its peak RSS is what the DaemonSet's limit sees.
    let bin = node_images::require_release_binary();
    let mut a = AgentProc::spawn_bin(
        &bin,
        &[
            "--standalone",
            "--node-name",
            "hostile-1",
            "--config",
            cfg.to_str().unwrap(),
            "--host-root",
            root.to_str().unwrap(),
        ],
    );
    a.wait_ready(Duration::from_secs(60));
    a
}

/// Peak resident set of `pid` in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status"))
}

fn cycles(port: u16) -> f64 {
    metric_sum(
        &http_get(port, "/metrics").unwrap_or_default().1,
        "pullprobe_cycles_total",
    )
}

/// `/status`'s cache accounting must hold the bounds it reports.
fn assert_within_bounds(caches: &Value) {
    for name in ["tokens", "challenges"] {
        let c = &caches[name];
        let (entries, bytes) = (c["entries"].as_u64().unwrap(), c["bytes"].as_u64().unwrap());
        assert!(
            entries <= c["max_entries"].as_u64().unwrap()
                && bytes <= c["max_bytes"].as_u64().unwrap(),
            "{name} over its bounds: {c}"
        );
    }
}

#[test]
fn fresh_services_and_huge_tokens_on_many_hosts_stay_bounded() {
    // 25 host names get 1 MB tokens (refused: AuthTokenTooLarge), 25 get 30 KiB tokens
    // with a fresh service on every challenge (cached, each one new: the cache fills).
    let reg = ScriptedServer::fresh_service_tokens(|host| {
        if host.starts_with("big") {
            1 << 20
        } else {
            30 * 1024
        }
    });
    let port = reg.port();
    let names: Vec<String> = (0..25)
        .flat_map(|i| [format!("big{i}.test"), format!("fresh{i}.test")])
        .collect();
    let root = node(&names, port);
    let images: Vec<String> = names
        .iter()
        .map(|n| format!("{n}:{port}/team/app:v1"))
        .collect();
    let agent = agent(root.path(), &images);
    let port_a = agent.port;
    // Enough cycles that the fresh hosts' tokens overflow the cache's 2 MiB several times.
    let c0 = cycles(port_a);
    let st = wait_for(
        Duration::from_secs(120),
        "evictions and 8 more cycles",
        || {
            let st = get_json(port_a, "/status");
            let evicted = st["node_config"]["caches"]["tokens"]["evicted"]
                .as_u64()
                .unwrap_or(0);
            (evicted > 0 && cycles(port_a) >= c0 + 8.0).then_some(st)
        },
    );
    let caches = &st["node_config"]["caches"];
    assert_within_bounds(caches);
    let tokens = &caches["tokens"];
    assert!(
        tokens["owners"].as_u64().unwrap() <= 25,
        "only the fresh hosts hold tokens: {tokens}"
    );
    assert!(
        caches["challenges"]["entries"].as_u64().unwrap() <= 50,
        "{caches}"
    );
    let targets = status_targets(&st);
    let big = targets
        .iter()
        .find(|(k, _)| k.starts_with("image big"))
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no big image target: {targets:?}"));
    assert_eq!(big["reason"], "AuthTokenTooLarge", "{big}");
    assert_eq!(big["phase"], "auth", "{big}");
    let fresh_ok = targets
        .iter()
        .filter(|(k, v)| k.starts_with("image fresh") && v["verdict"] == "ready")
        .count();
    assert!(fresh_ok > 0, "the fresh hosts' images pull: {targets:?}");
    let rss = peak_rss_kib(agent.pid());
    eprintln!(
        "token flood: peak RSS {rss} KiB; caches {caches}; {}",
        std::fs::read_to_string(format!("/proc/{}/status", agent.pid()))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("Rss") || l.starts_with("Vm"))
            .collect::<Vec<_>>()
            .join("; ")
    );
    assert!(
        rss < MAX_RSS_KIB,
        "peak RSS {rss} KiB under the token flood"
    );
}

#[test]
fn huge_indexes_and_a_huge_digest_header_stay_small_in_status_and_logs() {
    // A real registry holding 10 tags whose index has 10,000 entries, none for the node.
    let reg = Registry::plain();
    let base = OciImage::single("base");
    base.push(&reg, "team/app", &PushOpts::insecure());
    for i in 0..10 {
        let idx = huge_index(&base.manifests[0], 10_000, i);
        assert!(idx.len() > 1_500_000, "{} bytes", idx.len());
        let st = reg.put_manifest(
            "team/app",
            &format!("i{i}"),
            "application/vnd.oci.image.index.v1+json",
            &idx,
        );
        assert_eq!(st, 201, "PUT of the 10,000-entry index");
    }
    // One manifest whose Docker-Content-Digest header is 200 KB (a real registry cannot
    // send that: scripted).
    let huge_digest = format!("sha256:{}", "f".repeat(200_000));
    let (body, _, _) = small_manifest();
    let scripted = ScriptedServer::start(move |r| {
        if r.path.contains("/manifests/") {
            manifest_reply(&body, &huge_digest)
        } else {
            Reply::v2_ok()
        }
    });
    let mut images: Vec<String> = (0..10)
        .map(|i| format!("{}/team/app:i{i}", reg.host_port()))
        .collect();
    images.push(format!("{}/team/app:v1", scripted.host_port()));
    let root = agent_proc::host_root();
    let agent = agent(root.path(), &images);
    let port = agent.port;
    let (status_text, st) = wait_for(
        Duration::from_secs(120),
        "a verdict for every image",
        || {
            let (code, text) = http_get(port, "/status")?;
            let st: Value = serde_json::from_str(&text).ok()?;
            let done = status_targets(&st)
                .iter()
                .filter(|(k, v)| k.starts_with("image ") && v["reason"].is_string())
                .count();
            (code == 200 && done == images.len()).then_some((text, st))
        },
    );
    let targets = status_targets(&st);
    let platform: Vec<&Value> = targets
        .iter()
        .filter(|(k, _)| k.contains("/team/app:i"))
        .map(|(_, v)| v)
        .collect();
    assert_eq!(platform.len(), 10);
    for t in platform {
        assert_eq!(t["reason"], "PlatformMissing", "{t}");
        let m = t["message"].as_str().unwrap();
        assert!(
            m.contains("(it has: 10,000 entries, first 8: linux/hostile0, "),
            "{m}"
        );
        assert!(m.len() < 1100, "{} bytes: {m}", m.len());
    }
    let header = targets
        .iter()
        .find(|(k, _)| k.contains("/team/app:v1"))
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no target for the digest-header image: {targets:?}"));
    assert_eq!(header["reason"], "ManifestMalformed", "{header}");
    let m = header["message"].as_str().unwrap();
    assert!(
        m.contains("Docker-Content-Digest header is not a valid digest (200,007 bytes"),
        "{m}"
    );
    assert!(
        !status_text.contains("ffffffffffffffff"),
        "the header's text is never shown"
    );
    assert!(
        status_text.len() < 256 * 1024,
        "/status is {} bytes",
        status_text.len()
    );
    let log = agent.log_text();
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 8 * 1024, "a log line of {longest} bytes");
    assert!(
        !log.contains("ffffffffffffffff"),
        "the header's text is never logged"
    );
    let rss = peak_rss_kib(agent.pid());
    eprintln!(
        "huge index/header: /status {} bytes, longest log line {longest} bytes, peak RSS {rss} KiB",
        status_text.len()
    );
    assert!(rss < MAX_RSS_KIB, "peak RSS {rss} KiB");
}
