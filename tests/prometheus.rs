//! pullprobe under a REAL Prometheus (Debian 2.42): the shipped alert rules (promtool unit tests,
//! and the real rule engine evaluating them against a real agent while faults are injected and
//! cleared), the exposition (both formats scraped, `promtool check metrics`), the series and labels
//! docs/operate.md documents, and every query of dashboards/pullprobe.json.
//!
//! The end-to-end set-up: one `pullprobe agent --standalone` probing three real registries —
//! R1 over TLS with a certificate that expires in under 3 days, R2 over plain HTTP behind a
//! proxy that adds Docker Hub's rate-limit headers and behind a [`Switch`] (the "registry down"
//! fault), R3 with Basic auth and the node's credentials in the host root's kubelet config.json
//! (the "credentials rejected" fault). Prometheus scrapes the agent twice: directly as node
//! `node-a` (OpenMetrics) and through a proxy that asks for the Prometheus text format as node
//! `node-b` (stopping that proxy is the "agent down on some nodes" fault).

mod agent_proc;
mod harness;
mod prom;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::agent_proc::{http_get, metric_sum, write_file, AgentProc, Switch};
use crate::harness::{CertKey, OciImage, PushOpts, Registry, Reply, ScriptedServer};
use crate::prom::{forward, promtool, repo, Prometheus};

const FOR_IN_TESTS: &str = "3s";

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn shipped_rules() -> Value {
    yaml(&repo().join("manifests/components/prometheus/rules.yaml"))
}

/// Every alert rule of the shipped file.
fn alert_rules(rules: &Value) -> Vec<Value> {
    rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .filter(|r| r.get("alert").is_some())
        .collect()
}

/// GitHub's anchor for a Markdown heading.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The rules on their own

#[test]
fn rules_file_and_prometheus_rule_are_the_same_and_every_alert_has_a_runbook() {
    let rules = shipped_rules();
    let pr = yaml(&repo().join("manifests/components/prometheus/prometheusrule.yaml"));
    assert_eq!(pr["kind"], "PrometheusRule");
    assert_eq!(
        pr["spec"]["groups"], rules["groups"],
        "prometheusrule.yaml drifted from rules.yaml"
    );
    let (ok, out) = promtool(
        &repo(),
        &[
            "check",
            "rules",
            "manifests/components/prometheus/rules.yaml",
        ],
        None,
    );
    assert!(ok, "{out}");

    let runbooks =
        std::fs::read_to_string(repo().join("docs/runbooks.md")).expect("docs/runbooks.md");
    let anchors: BTreeSet<String> = runbooks
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(anchor)
        .collect();
    for r in alert_rules(&rules) {
        let name = r["alert"].as_str().unwrap();
        let sev = r["labels"]["severity"].as_str().unwrap_or_default();
        assert!(
            ["info", "warning", "critical"].contains(&sev),
            "{name}: severity {sev:?}"
        );
        let rb = r["annotations"]["runbook"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no runbook"));
        let a = rb
            .strip_prefix("docs/runbooks.md#")
            .unwrap_or_else(|| panic!("{name}: {rb}"));
        assert_eq!(a, name.to_lowercase(), "{name}: runbook anchor");
        assert!(
            anchors.contains(a),
            "{name}: no section `## {name}` in docs/runbooks.md"
        );
        let section = runbooks
            .split(&format!("## {name}\n"))
            .nth(1)
            .unwrap_or_default();
        let section = section.split("\n## ").next().unwrap_or_default();
        for must in ["pullprobe check --host-root /", "kubectl"] {
            assert!(
                section.contains(must),
                "runbook of {name} does not mention `{must}`"
            );
        }
        assert!(
            r["annotations"]["summary"].is_string(),
            "{name}: no summary"
        );
    }
}

#[test]
fn promtool_unit_tests_pass_and_cover_every_alert() {
    let dir = repo().join("tests/fixtures/prometheus");
    let (ok, out) = promtool(&dir, &["test", "rules", "rules.test.yaml"], None);
    assert!(ok && out.contains("SUCCESS"), "{out}");
    // Every alert has a case where it fires.
    let tests = yaml(&dir.join("rules.test.yaml"));
    let mut fired = BTreeSet::new();
    for t in tests["tests"].as_array().unwrap() {
        for a in t["alert_rule_test"].as_array().unwrap() {
            if a["exp_alerts"].as_array().is_some_and(|e| !e.is_empty()) {
                fired.insert(a["alertname"].as_str().unwrap().to_string());
            }
        }
    }
    let all: BTreeSet<String> = alert_rules(&shipped_rules())
        .iter()
        .map(|r| r["alert"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(fired, all, "alerts without a firing promtool case");
}

// ---------------------------------------------------------------------------------------------
// End to end

/// The shipped rules with every `for:` shortened; expressions untouched.
fn rules_for_tests() -> String {
    let mut rules = shipped_rules();
    for g in rules["groups"].as_array_mut().unwrap() {
        for r in g["rules"].as_array_mut().unwrap() {
            if r.get("for").is_some() {
                r["for"] = json!(FOR_IN_TESTS);
            }
        }
    }
    serde_json::to_string(&rules).unwrap()
}

/// A CA and a leaf for 127.0.0.1 that expires at midnight UTC two days from now (so in 24–48 h).
fn short_lived_cert(dir: &Path) -> (std::path::PathBuf, CertKey) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "pullprobe ops test CA");
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let in2d = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(48);
    let d = in2d.to_zoned(jiff::tz::TimeZone::UTC).date();
    leaf.not_after = rcgen::date_time_ymd(i32::from(d.year()), d.month() as u8, d.day() as u8);
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &ca).unwrap();
    let ca_path = write_file(dir, "short-ca.crt", &ca.pem());
    let ck = CertKey {
        cert: write_file(dir, "short.crt", &cert.pem()),
        key: write_file(dir, "short.key", &key.serialize_pem()),
    };
    (ca_path, ck)
}

/// `ratelimit-*` headers on manifest responses, as Docker Hub sends them.
fn ratelimit_proxy(upstream: u16, remaining: Arc<AtomicU64>) -> ScriptedServer {
    ScriptedServer::start(move |req| {
        let (mut reply, _) = forward(req, upstream, |_| {});
        if req.path.contains("/manifests/") {
            let left = remaining.load(Ordering::SeqCst);
            reply = reply
                .header("ratelimit-limit", "100;w=21600")
                .header("ratelimit-remaining", &format!("{left};w=21600"));
        }
        reply
    })
}

/// Asks the agent for the Prometheus text format, whatever the scraper sent; records the
/// content types the agent answered with. While `down` is set it answers 503 (a scrape failure:
/// the agent of that "node" is down).
fn text_format_proxy(
    agent: u16,
    seen: Arc<Mutex<BTreeSet<String>>>,
    down: Arc<AtomicBool>,
) -> ScriptedServer {
    ScriptedServer::start(move |req| {
        if down.load(Ordering::SeqCst) {
            return Reply::status(503);
        }
        let (reply, hdrs) = forward(req, agent, |h| {
            h.retain(|(k, _)| !k.eq_ignore_ascii_case("accept"));
            h.push(("Accept".into(), "text/plain;version=0.0.4".into()));
        });
        if let Some((_, ct)) = hdrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            seen.lock().unwrap().insert(ct.clone());
        }
        reply
    })
}

fn docker_config(host: &str, user: &str, pass: &str) -> String {
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    json!({"auths": {host: {"auth": auth}}}).to_string()
}

struct Rig {
    r1: Registry,
    r3: Registry,
    _r2: Registry,
    _rl: ScriptedServer,
    switch: Switch,
    remaining: Arc<AtomicU64>,
    root: tempfile::TempDir,
    agent: AgentProc,
}

impl Rig {
    fn start() -> Rig {
        let root = agent_proc::host_root();
        let (ca, leaf) = short_lived_cert(root.path());
        let r1 = Registry::builder().tls(&leaf).start();
        let r2 = Registry::plain();
        let r3 = Registry::builder().htpasswd(&[("puller", "right")]).start();
        OciImage::single("v1").push(&r1, "team/app", &PushOpts::insecure());
        OciImage::single("v1").push(&r2, "team/app", &PushOpts::insecure());
        OciImage::single("v1").push(
            &r3,
            "team/app",
            &PushOpts::insecure().creds("puller", "right"),
        );
        let remaining = Arc::new(AtomicU64::new(80));
        let rl = ratelimit_proxy(r2.port(), remaining.clone());
        let switch = Switch::start(rl.host_port().parse().unwrap());
        let certs = root.path().join("etc/containerd/certs.d");
        let host = |hp: &str, scheme: &str, ca: Option<&Path>| {
            let d = certs.join(hp);
            std::fs::create_dir_all(&d).unwrap();
            let mut t = format!("server = \"{scheme}://{hp}\"\n");
            if let Some(ca) = ca {
                std::fs::copy(ca, d.join("ca.crt")).unwrap();
                t += &format!("ca = \"/etc/containerd/certs.d/{hp}/ca.crt\"\n");
            }
            write_file(&d, "hosts.toml", &t);
        };
        host(&r1.host_port(), "https", Some(&ca));
        host(&switch.host_port(), "http", None);
        host(&r3.host_port(), "http", None);
        write_file(
            &root.path().join("etc/containerd"),
            "config.toml",
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n",
        );
        let kubelet = root.path().join("var/lib/kubelet");
        std::fs::create_dir_all(&kubelet).unwrap();
        write_file(
            &kubelet,
            "config.json",
            &docker_config(&r3.host_port(), "puller", "right"),
        );
        let images: Vec<String> = [r1.host_port(), switch.host_port(), r3.host_port()]
            .iter()
            .map(|hp| format!("  - \"{hp}/team/app:v1\""))
            .collect();
        let cfg = format!(
            "interval: 1s\njitter: 0\nheartbeat: 5s\nfail_after: 2\nrecover_after: 1\nreload_interval: 1s\n\
             fleet:\n  node_count: 1\n  period: 10s\nbackoff:\n  initial: 1s\n  max: 1s\nimages:\n{}\n",
            images.join("\n")
        );
        let cfg = write_file(root.path(), "agent.yaml", &cfg);
        let mut agent = AgentProc::spawn(&[
            "--standalone",
            "--node-name",
            "node-a",
            "--config",
            cfg.to_str().unwrap(),
            "--host-root",
            root.path().to_str().unwrap(),
        ]);
        agent.wait_ready(Duration::from_secs(30));
        Rig {
            r1,
            r3,
            _r2: r2,
            _rl: rl,
            switch,
            remaining,
            root,
            agent,
        }
    }

    fn set_node_password(&self, pass: &str) {
        let kubelet = self.root.path().join("var/lib/kubelet");
        write_file(
            &kubelet,
            "config.json",
            &docker_config(&self.r3.host_port(), "puller", pass),
        );
    }

    fn metrics(&self) -> String {
        http_get(self.agent.port, "/metrics")
            .map(|r| r.1)
            .unwrap_or_default()
    }
}

fn prometheus_config(agent: u16, text_proxy: u16) -> String {
    format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files: [\"RULES\"]\n\
         scrape_configs:\n\
         \x20 - job_name: pullprobe\n    static_configs:\n      - targets: [\"127.0.0.1:{agent}\"]\n        labels: {{node: node-a}}\n\
         \x20 - job_name: pullprobe-text-format\n    static_configs:\n      - targets: [\"127.0.0.1:{text_proxy}\"]\n        labels: {{node: node-b, job: pullprobe}}\n"
    )
}

/// Firing alerts as (alertname, the label that identifies it).
fn firing(p: &Prometheus) -> BTreeSet<(String, String)> {
    p.alerts()
        .iter()
        .filter(|a| a["state"] == "firing")
        .map(|a| {
            let l = &a["labels"];
            let who = ["node", "registry", "endpoint"]
                .iter()
                .filter_map(|k| l[*k].as_str().map(|v| format!("{k}={v}")))
                .collect::<Vec<_>>()
                .join(",");
            (l["alertname"].as_str().unwrap_or_default().to_string(), who)
        })
        .collect()
}

fn alert(name: &str, who: &str) -> (String, String) {
    (name.to_string(), who.to_string())
}

#[test]
fn real_prometheus_scrapes_the_agent_and_the_shipped_alerts_fire_then_resolve() {
    let rig = Rig::start();
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let node_b_down = Arc::new(AtomicBool::new(false));
    let text_proxy = text_format_proxy(rig.agent.port, seen.clone(), node_b_down.clone());
    let prom = Prometheus::start(
        &prometheus_config(rig.agent.port, text_proxy.port()),
        Some(&rules_for_tests()),
    );
    // Both scrapes succeed: OpenMetrics directly, the text format through the proxy.
    prom.wait(Duration::from_secs(30), "both targets up", || {
        let t = prom.targets();
        (t.len() == 2 && t.iter().all(|t| t["health"] == "up")).then_some(())
    });
    assert_eq!(
        *seen.lock().unwrap(),
        BTreeSet::from([pullprobe::agent::metrics::PROMETHEUS_TEXT_CONTENT_TYPE.to_string()])
    );
    for node in ["node-a", "node-b"] {
        let q = format!("pullprobe_cycles_total{{job=\"pullprobe\",node=\"{node}\"}}");
        prom.wait(Duration::from_secs(20), &q, || {
            (!prom.query(&q).is_empty()).then_some(())
        });
    }
    check_exposition_with_promtool(&rig);
    let healthy = wait_healthy(&prom, &rig);

    inject_faults(&prom, &rig, &node_b_down, &healthy);
    check_documented_series(&prom);
    check_dashboard_queries(&prom);

    // Cleared: everything but the certificate alerts resolves.
    rig.remaining.store(80, Ordering::SeqCst);
    rig.switch.set_up(true);
    rig.set_node_password("right");
    node_b_down.store(false, Ordering::SeqCst);
    prom.wait(
        Duration::from_secs(90),
        "the fault alerts to resolve",
        || (firing(&prom) == healthy).then_some(()),
    );
}

/// Healthy: only the certificate alerts fire (R1's leaf expires in under 3 days). Returns them.
fn wait_healthy(prom: &Prometheus, rig: &Rig) -> BTreeSet<(String, String)> {
    let r1 = rig.r1.host_port();
    let who = format!("registry={r1},endpoint={r1}");
    let healthy: BTreeSet<_> = [
        alert("PullprobeTLSCertificateExpiringSoon", &who),
        alert("PullprobeTLSCertificateExpiring", &who),
    ]
    .into();
    prom.wait(Duration::from_secs(30), "the certificate alerts", || {
        firing(prom).is_superset(&healthy).then_some(())
    });
    assert_eq!(
        firing(prom),
        healthy,
        "only the certificate alerts fire while healthy"
    );
    healthy
}

/// Faults: quota nearly used up, R2 down, R3 rejects the node's credentials, node-b's agent
/// unreachable; waits until exactly the expected alerts fire.
fn inject_faults(
    prom: &Prometheus,
    rig: &Rig,
    node_b_down: &AtomicBool,
    healthy: &BTreeSet<(String, String)>,
) {
    rig.remaining.store(5, Ordering::SeqCst);
    let (r2, r3) = (rig.switch.host_port(), rig.r3.host_port());
    let rl = format!("pullprobe_ratelimit_remaining{{registry=\"{r2}\"}}");
    agent_proc::wait_for(Duration::from_secs(20), "remaining 5 on /metrics", || {
        (metric_sum(&rig.metrics(), &rl) == 5.0).then_some(())
    });
    rig.switch.set_up(false);
    rig.set_node_password("wrong");
    node_b_down.store(true, Ordering::SeqCst);
    let mut faulty = healthy.clone();
    faulty.extend([
        alert("PullprobeRegistryUnreachable", "node=node-a"),
        alert("PullprobeNodeCredentialsFailing", "node=node-a"),
        alert(
            "PullprobeRegistryDownForManyNodes",
            &format!("registry={r2}"),
        ),
        alert(
            "PullprobeRegistryDownForManyNodes",
            &format!("registry={r3}"),
        ),
        alert(
            "PullprobeRateLimitHeadroomLow",
            &format!("node=node-a,registry={r2}"),
        ),
        alert("PullprobeAgentDown", "node=node-b"),
    ]);
    prom.wait(Duration::from_secs(90), "the fault alerts to fire", || {
        firing(prom).is_superset(&faulty).then_some(())
    });
    assert_eq!(firing(prom), faulty);
}

/// `curl …/metrics | promtool check metrics` passes: with no `Accept` header, curl's own
/// (`*/*`) and `text/plain`, the agent answers the Prometheus text format 0.0.4, as client_golang
/// does. OpenMetrics only when asked for; on it promtool only misses the HELP of `_total`
/// samples (OpenMetrics puts HELP on the family name), which is the format's rule, not a defect.
fn check_exposition_with_promtool(rig: &Rig) {
    let port = rig.agent.port;
    let curl = |args: &[&str]| -> (String, Vec<u8>) {
        let out = std::process::Command::new("curl")
            .args(["-s", "-i"])
            .args(args)
            .arg(format!("http://127.0.0.1:{port}/metrics"))
            .output()
            .expect("curl");
        let raw = out.stdout;
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("an HTTP answer");
        let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
        (head, raw[split + 4..].to_vec())
    };
    let text_type = pullprobe::agent::metrics::PROMETHEUS_TEXT_CONTENT_TYPE.to_ascii_lowercase();
    for args in [
        &["-H", "Accept:"][..],
        &[][..],
        &["-H", "Accept: text/plain"][..],
        &["-H", "Accept: text/plain;version=0.0.4"][..],
    ] {
        let (head, body) = curl(args);
        assert!(
            head.contains(&format!("content-type: {text_type}")),
            "curl {args:?}: {head}"
        );
        assert!(text_type.starts_with("text/plain; version=0.0.4"));
        let (ok, out) = promtool(&repo(), &["check", "metrics"], Some(&body));
        assert!(
            ok,
            "curl {args:?} | promtool check metrics:\n{out}\n{}",
            String::from_utf8_lossy(&body)
        );
    }
    let (head, om) = curl(&["-H", "Accept: application/openmetrics-text;version=1.0.0"]);
    assert!(
        head.contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    let (_, out) = promtool(&repo(), &["check", "metrics"], Some(&om));
    for l in out.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            l.ends_with("_total no help text"),
            "promtool on OpenMetrics: {l}"
        );
    }
}

/// The metrics table of docs/operate.md: (name, type, labels, cluster-only).
fn documented_metrics() -> Vec<(String, String, BTreeSet<String>, bool)> {
    let doc = std::fs::read_to_string(repo().join("docs/operate.md")).expect("docs/operate.md");
    let mut out = Vec::new();
    for l in doc
        .lines()
        .filter(|l| l.starts_with("| `pullprobe_") || l.starts_with("| `process_"))
    {
        let cols: Vec<&str> = l.split('|').map(str::trim).collect();
        let name = cols[1].trim_matches('`').to_string();
        let labels = cols[3]
            .split(',')
            .map(|s| s.trim().trim_matches('`').to_string())
            .filter(|s| !s.is_empty() && s != "—")
            .collect();
        out.push((
            name,
            cols[2].to_string(),
            labels,
            cols[4].contains("(cluster mode)"),
        ));
    }
    assert!(
        out.len() >= 15,
        "metrics table not found in docs/operate.md: {out:?}"
    );
    out
}

fn check_documented_series(prom: &Prometheus) {
    let mut missing = Vec::new();
    for (name, kind, labels, cluster_only) in documented_metrics() {
        if cluster_only {
            continue;
        }
        let series_name = if kind == "histogram" {
            format!("{name}_bucket")
        } else {
            name.clone()
        };
        let found = prom.series(&format!("{series_name}{{node=\"node-a\"}}"));
        if found.is_empty() {
            missing.push(name);
            continue;
        }
        let mut want: BTreeSet<String> = labels;
        want.extend(["__name__", "job", "instance", "node"].map(String::from));
        if kind == "histogram" {
            want.insert("le".into());
        }
        // Prometheus drops empty labels (`reason=""` of a probe that pulls): each series has a
        // subset of the documented labels, and together they have all of them.
        let mut union = BTreeSet::new();
        for s in &found {
            let got: BTreeSet<String> = s.as_object().unwrap().keys().cloned().collect();
            assert!(
                got.is_subset(&want),
                "labels of {name}: {s}, documented {want:?}"
            );
            union.extend(got);
        }
        assert_eq!(union, want, "labels of {name}");
    }
    assert!(
        missing.is_empty(),
        "documented but not scraped: {missing:?}"
    );
}

/// Every panel query of the dashboard, with the template variables at "All" and
/// `$__rate_interval` at 30s, returns at least one series from the agent.
fn check_dashboard_queries(prom: &Prometheus) {
    let d: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("dashboards/pullprobe.json")).unwrap(),
    )
    .unwrap();
    let mut empty = BTreeMap::new();
    let mut n = 0;
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap();
            let q = expr
                .replace("$__rate_interval", "30s")
                .replace("$__range", "5m")
                .replace("$node", ".*")
                .replace("$registry", ".*");
            n += 1;
            if prom.query(&q).is_empty() {
                empty.insert(format!("{} / {}", p["title"], t["refId"]), q);
            }
        }
    }
    assert!(n >= 12, "only {n} queries in the dashboard");
    assert!(empty.is_empty(), "panel queries without data: {empty:#?}");
    // Template variables: label_values(SELECTOR, LABEL) finds the label on the agent's series.
    for v in d["templating"]["list"].as_array().unwrap() {
        let Some(q) = v["query"].as_str().or(v["query"]["query"].as_str()) else {
            continue;
        };
        let Some(inner) = q
            .strip_prefix("label_values(")
            .and_then(|s| s.strip_suffix(')'))
        else {
            continue;
        };
        let (sel, label) = inner.rsplit_once(',').unwrap();
        let sel = sel.replace("$node", ".*");
        let values: BTreeSet<String> = prom
            .series(sel.trim())
            .iter()
            .filter_map(|s| s[label.trim()].as_str().map(String::from))
            .collect();
        assert!(
            !values.is_empty(),
            "variable {}: {q} has no values",
            v["name"]
        );
    }
}
