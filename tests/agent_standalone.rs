//! `pullprobe agent --standalone --config FILE` against a REAL registry (distribution 2.8 over
//! TLS): the HTTP endpoints, metrics output, `/status`, JSON log lines, config reload, SIGTERM.

mod agent_proc;
mod harness;

use std::time::Duration;

use serde_json::Value;

use crate::agent_proc::{
    get_json, http_get, http_get_full, metric_sum, status_condition, status_targets, wait_for,
    write_file,
};
use crate::harness::{OciImage, Pki, PushOpts, Registry};

fn config(images: &[&str], extra: &str) -> String {
    let imgs: Vec<String> = images.iter().map(|i| format!("  - \"{i}\"")).collect();
    format!(
        "interval: 1s\njitter: 0\nheartbeat: 5s\nfleet:\n  node_count: 1\n  period: 10s\n\
         backoff:\n  initial: 1s\n  max: 1s\n{extra}images:\n{}\n",
        imgs.join("\n")
    )
}

fn targets(port: u16) -> serde_json::Map<String, Value> {
    status_targets(&get_json(port, "/status"))
}

#[test]
fn standalone_agent_reports_over_http_metrics_and_logs() {
    let pki = Pki::new();
    let reg = Registry::builder().tls(&pki.server).start();
    OciImage::single("v1").push(&reg, "team/app", &PushOpts::tls(&pki));
    let good = format!("{}/team/app:v1", reg.host_port());
    let missing = format!("{}/team/app:missing", reg.host_port());

    // The node trusts the registry through containerd's hosts.toml (`ca`), as a real node would.
    let root = agent_proc::host_root();
    let hp = reg.host_port();
    agent_proc::trust_in_hosts_toml(root.path(), &hp, &pki.ca_cert);
    let cfg = write_file(root.path(), "agent.yaml", &config(&[&good, &missing], ""));
    let mut agent =
        agent_proc::spawn_for_node(&["--standalone"], "standalone-1", &cfg, root.path());
    agent.wait_ready(Duration::from_secs(20));
    let port = agent.port;
    assert_eq!(http_get(port, "/healthz").unwrap().0, 200);

    // /status: the latest result per target.
    let st = get_json(port, "/status");
    assert_eq!(st["node"], "standalone-1");
    assert_eq!(st["ready"], true);
    assert_eq!(
        status_condition(&st, "RegistryUnreachable")["status"],
        "False"
    );
    let t = targets(port);
    let find = |suffix: &str| {
        t.iter()
            .find(|(k, _)| k.starts_with("image ") && k.contains(suffix))
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no image target {suffix}: {t:?}"))
    };
    let ok = find("team/app:v1");
    assert_eq!(ok["verdict"], "ready", "{ok}");
    assert_eq!(ok["registry"], reg.host_port());
    assert_eq!(
        ok["endpoint"].as_str().unwrap(),
        format!("https://{hp}/v2"),
        "the endpoint from hosts.toml: {ok}"
    );
    let miss = find("team/app:missing");
    assert_eq!(miss["reason"], "ManifestNotFound", "{miss}");
    assert_eq!(miss["phase"], "manifest");
    assert!(t.keys().any(|k| k.starts_with("path ")), "{t:?}");

    // /metrics: without an Accept header the Prometheus text format 0.0.4 (as client_golang),
    // phase histograms, results by reason, TLS expiry, no image labels.
    let (code, head, m) = http_get_full(port, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(!m.contains("# EOF"), "not OpenMetrics");
    for phase in ["connect", "tls", "manifest", "blob"] {
        assert!(
            m.lines()
                .any(|l| l.starts_with("pullprobe_phase_duration_seconds_bucket")
                    && l.contains(&format!("phase=\"{phase}\""))),
            "no {phase} histogram:\n{m}"
        );
    }
    let ready = format!(
        "pullprobe_registry_ready{{registry=\"{}\"}}",
        reg.host_port()
    );
    assert_eq!(metric_sum(&m, &ready), 1.0, "{m}");
    let results = |reason: &str| {
        m.lines()
            .filter(|l| {
                l.starts_with("pullprobe_probe_results_total{")
                    && l.contains(&format!("reason=\"{reason}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    assert!(results("ManifestNotFound") >= 1.0, "{m}");
    assert!(results("") >= 1.0, "{m}");
    let expiry = m
        .lines()
        .find(|l| l.starts_with("pullprobe_tls_expiry_timestamp_seconds{"))
        .unwrap_or_else(|| panic!("no TLS expiry metric:\n{m}"));
    assert!(expiry.contains(&reg.host_port()), "{expiry}");
    let exp: f64 = expiry.rsplit(' ').next().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(exp > now, "leaf expiry {exp} is in the future");
    assert!(!m.contains("team/app"), "an image name in a label:\n{m}");
    assert_eq!(
        metric_sum(&m, "pullprobe_config_last_reload_successful"),
        1.0
    );

    // JSON logs: one line per probe with per-phase durations.
    let probes = agent.logs_of("pullprobe::probe");
    assert!(probes.len() >= 3, "{probes:?}");
    for p in &probes {
        for f in [
            "timestamp",
            "level",
            "node",
            "image",
            "registry",
            "endpoint",
            "verdict",
            "kind",
        ] {
            assert!(p.get(f).is_some(), "probe line without {f}: {p}");
        }
        assert_eq!(p["node"], "standalone-1");
        let phases = p["phase_ms"].as_str().unwrap();
        assert!(
            phases.contains("connect=") && phases.contains("manifest="),
            "{p}"
        );
    }
    let failed = probes
        .iter()
        .find(|p| p["reason"] == "ManifestNotFound")
        .expect("a failing probe line");
    assert_eq!(failed["level"], "WARN");
    assert!(
        failed["detail"].as_str().unwrap().contains("missing"),
        "{failed}"
    );

    // The cycle summary counts what fails: the missing tag, never the path check whose
    // representative image may be that tag (its 404 proves the path).
    let cycles_logged = agent.logs_of("pullprobe::cycle");
    assert!(!cycles_logged.is_empty(), "no cycle summary line");
    for c in &cycles_logged {
        assert!(c["failing"].as_u64().unwrap() <= 1, "{c}");
    }
    assert!(
        cycles_logged.iter().any(|c| c["failing"] == 1),
        "{cycles_logged:?}"
    );

    // A bad config on reload is logged and the old config stays in force.
    let cycles = |port| {
        metric_sum(
            &http_get(port, "/metrics").unwrap().1,
            "pullprobe_cycles_total",
        )
    };
    write_file(
        root.path(),
        "agent.yaml",
        &config(&[&good], "concurrency: 0\n"),
    );
    let rejected = wait_for(Duration::from_secs(10), "the reload to be rejected", || {
        agent
            .logs()
            .into_iter()
            .find(|l| l["message"] == "config rejected, keeping the previous one")
    });
    assert!(
        rejected["error"]
            .as_str()
            .unwrap()
            .contains("`concurrency`"),
        "{rejected}"
    );
    let c0 = cycles(port);
    wait_for(Duration::from_secs(10), "cycles to go on", || {
        (cycles(port) >= c0 + 2.0).then_some(())
    });
    let m = http_get(port, "/metrics").unwrap().1;
    assert_eq!(
        metric_sum(&m, "pullprobe_config_last_reload_successful"),
        0.0
    );
    assert_eq!(
        targets(port)
            .keys()
            .filter(|k| k.starts_with("image "))
            .count(),
        2,
        "old config (two images) still in force"
    );

    // A good one is applied: the dropped image leaves /status.
    write_file(root.path(), "agent.yaml", &config(&[&good], ""));
    wait_for(Duration::from_secs(10), "the new config to apply", || {
        let t = targets(port);
        (t.keys().filter(|k| k.starts_with("image ")).count() == 1).then_some(())
    });
    let m = http_get(port, "/metrics").unwrap().1;
    assert_eq!(
        metric_sum(&m, "pullprobe_config_last_reload_successful"),
        1.0
    );

    // SIGTERM: graceful stop, exit 0.
    agent.sigterm();
    let st = agent.wait_exit(Duration::from_secs(10));
    assert!(st.success(), "{st}");
}

/// `(registry, kind, verdict, reason)` of every `pullprobe_probe_results_total` series.
fn result_series(metrics: &str) -> std::collections::BTreeSet<[String; 4]> {
    let label = |l: &str, k: &str| {
        l.split(&format!("{k}=\""))
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_default()
            .to_string()
    };
    metrics
        .lines()
        .filter(|l| l.starts_with("pullprobe_probe_results_total{"))
        .map(|l| ["registry", "kind", "verdict", "reason"].map(|k| label(l, k)))
        .collect()
}

/// Issue 17 item 3: a registry that wants credentials the node does not have. The path check's
/// representative image gets a 401 without a credential (`AuthCredentialsRequired`), which
/// proves the path: `/status` says `reachable`, and the metrics must say the same, not
/// `not_ready`. Every series of `pullprobe_probe_results_total` is one `/status` says.
#[test]
fn metrics_count_what_status_says() {
    let pki = Pki::new();
    let reg = Registry::builder()
        .tls(&pki.server)
        .htpasswd(&[("alice", "alice-pw")])
        .start();
    OciImage::single("v1").push(
        &reg,
        "team/app",
        &PushOpts::tls(&pki).creds("alice", "alice-pw"),
    );
    let hp = reg.host_port();
    let root = agent_proc::host_root();
    agent_proc::trust_in_hosts_toml(root.path(), &hp, &pki.ca_cert);
    let image = format!("{hp}/team/app:v1");
    let cfg = write_file(root.path(), "agent.yaml", &config(&[&image], ""));
    let mut agent =
        agent_proc::spawn_for_node(&["--standalone"], "standalone-2", &cfg, root.path());
    agent.wait_ready(Duration::from_secs(20));
    let port = agent.port;
    // Two cycles in: both checks have run at least once, nothing changes after.
    let cycles = || {
        metric_sum(
            &http_get(port, "/metrics").unwrap().1,
            "pullprobe_cycles_total",
        )
    };
    wait_for(Duration::from_secs(20), "two cycles", || {
        (cycles() >= 2.0).then_some(())
    });
    let said: std::collections::BTreeSet<[String; 4]> = targets(port)
        .values()
        .map(|t| {
            let s = |k: &str| t[k].as_str().unwrap_or_default().to_string();
            [s("registry"), s("kind"), s("verdict"), s("reason")]
        })
        .collect();
    let path = said.iter().find(|s| s[1] == "path").cloned();
    assert_eq!(
        path,
        Some([hp.clone(), "path".into(), "reachable".into(), String::new()]),
        "{said:?}"
    );
    assert!(
        said.contains(&[
            hp.clone(),
            "image".into(),
            "not_ready".into(),
            "AuthCredentialsRequired".into()
        ]),
        "{said:?}"
    );
    let m = http_get(port, "/metrics").unwrap().1;
    assert_eq!(
        metric_sum(
            &m,
            &format!("pullprobe_registry_ready{{registry=\"{hp}\"}}")
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        result_series(&m),
        said,
        "metrics and /status disagree:\n{m}"
    );
    // Item 15: /status gives each failing check its fix, as `check` prints it.
    let t = targets(port);
    let of = |kind: &str| t.values().find(|v| v["kind"] == kind).cloned().unwrap();
    let hint = of("image")["hint"].as_str().unwrap_or_default().to_string();
    assert!(
        hint.starts_with(&format!(
            "{hp} needs credentials and none was sent: give the pod an imagePullSecret"
        )),
        "{hint}"
    );
    assert!(of("path")["hint"].is_null(), "{}", of("path"));
    agent.sigterm();
    agent.wait_exit(Duration::from_secs(10));
}

/// Issue 17 item 16: `log_format: text` written to a file or pipe has no ANSI colour codes
/// (a log collector stores them verbatim), and still says what each line is about.
#[test]
fn text_logs_to_a_pipe_have_no_colour() {
    let reg = harness::Registry::plain();
    OciImage::single("v1").push(&reg, "team/app", &harness::PushOpts::insecure());
    let root = agent_proc::host_root();
    let image = format!("{}/team/app:missing", reg.host_port());
    let cfg = write_file(
        root.path(),
        "agent.yaml",
        &config(&[&image], "log_format: text\n"),
    );
    let (st, log) = agent_proc::run_agent_to_exit(
        &[
            "--standalone",
            "--once",
            "--node-name",
            "standalone-3",
            "--config",
            cfg.to_str().unwrap(),
            "--host-root",
            root.path().to_str().unwrap(),
        ],
        Duration::from_secs(30),
    );
    assert!(st.success(), "{log}");
    assert!(log.contains("ManifestNotFound"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escapes in a piped text log:\n{log:?}"
    );
}
