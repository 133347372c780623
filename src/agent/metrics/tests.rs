use std::collections::BTreeSet;

use super::*;
use crate::probe::outcome::{RateLimit, TlsInfo};
use crate::probe::{Phase, PhaseRecord, Reason, Verdict};

pub(crate) fn report(verdict: Verdict, reason: Option<Reason>) -> ProbeReport {
    ProbeReport {
        image: "x".into(),
        reference: None,
        endpoint: Some("https://r.example/v2/".into()),
        verdict,
        phase: reason.map(|r| r.phase()),
        reason,
        message: String::new(),
        hint: None,
        duration_ms: 12.0,
        phases: vec![PhaseRecord {
            name: Phase::Dns,
            host: "r.example".into(),
            ok: true,
            duration_ms: 1.0,
            detail: String::new(),
        }],
        credential_source: None,
        manifest: None,
        tls: None,
        ratelimit: None,
        retry_after_s: None,
        attempts: vec![],
        warnings: Vec::new(),
    }
}

/// Record `r` with the labels of its own verdict and reason (what an image check says).
fn record(m: &Metrics, registry: &str, kind: &str, r: &ProbeReport, now_unix: f64) {
    let said = Said {
        kind,
        ..Said::image(r)
    };
    m.record_probe(registry, said, r, now_unix);
}

fn phase(name: Phase, ms: f64, ok: bool) -> PhaseRecord {
    PhaseRecord {
        name,
        host: "h".into(),
        ok,
        duration_ms: ms,
        detail: String::new(),
    }
}

/// A full pull over TLS: every network phase, a certificate, odd sub-millisecond durations.
fn healthy(host: &str) -> ProbeReport {
    let mut r = report(Verdict::Ready, None);
    r.image = format!("{host}/team/app:v1");
    r.endpoint = Some(format!("https://{host}/v2/"));
    r.duration_ms = 48.123_456;
    r.phases = [
        Phase::Dns,
        Phase::Connect,
        Phase::Tls,
        Phase::Auth,
        Phase::Manifest,
        Phase::Platform,
        Phase::Blob,
    ]
    .into_iter()
    .enumerate()
    .map(|(i, p)| phase(p, 0.1 + i as f64 * 7.3, true))
    .collect();
    r.tls = Some(TlsInfo {
        host: host.into(),
        not_after_unix: 1_900_000_000,
        ..Default::default()
    });
    r
}

fn failing_connect(host: &str) -> ProbeReport {
    let mut r = report(Verdict::NotReady, Some(Reason::ConnectRefused));
    r.image = format!("{host}/team/app:v1");
    r.endpoint = Some(format!("https://{host}/v2/"));
    r.phases = vec![
        phase(Phase::Dns, 0.4, true),
        phase(Phase::Connect, 0.2, false),
    ];
    r
}

/// Sample lines (not comments, not `# EOF`).
fn samples(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.starts_with('#')).collect()
}

/// One cycle as the agent runs it: a path check and three image checks per registry, API writes.
fn cycle(m: &Metrics, hosts: &[String], make: impl Fn(&str) -> ProbeReport) {
    let reason = make("x").reason.map(|r| r.as_str());
    m.set_registry_paths(hosts.iter().map(|h| (h.as_str(), reason)));
    for h in hosts {
        record(m, h, "path", &make(h), 1_700_000_000.5);
        for i in 0..3 {
            let mut r = make(h);
            r.image = format!("{h}/team/app-{i}:v1");
            record(m, h, "image", &r, 1_700_000_000.5);
        }
    }
    for kind in ["image", "path", "pod"] {
        m.set_targets(kind, hosts.len());
    }
    m.api_write("node_status", true);
    m.api_write("event", true);
    m.api_write("node_status", false);
    m.api_write("event", false);
    m.cycles.inc();
    m.cycle_duration.observe(0.8);
}

fn hosts(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("registry-{i}.example:443"))
        .collect()
}

#[test]
fn twenty_registries_stay_within_the_series_budget() {
    let hs = hosts(20);
    // All failing at connect (the case that served 1,642 series before).
    let m = Metrics::new();
    for _ in 0..3 {
        cycle(&m, &hs, failing_connect);
    }
    let failing = samples(&m.encode()).len();
    // Per registry: ready, reason, probe duration, path + image outcomes; no last_success, no TLS.
    assert_eq!(failing, FIXED_SERIES + 2 * 13 + 20 * 5, "{}", m.encode());
    assert!(failing <= series_bound(20, 0, 2, 2, 0));

    // All healthy over TLS.
    let m = Metrics::new();
    for _ in 0..3 {
        cycle(&m, &hs, healthy);
    }
    let text = m.encode();
    let ok = samples(&text).len();
    // Per registry: ready, probe duration, last success, TLS expiry, path + image outcomes.
    assert_eq!(ok, FIXED_SERIES + 7 * 13 + 20 * 6, "{text}");
    assert!(ok <= series_bound(20, 20, 7, 2, 0));
    assert!(ok <= 300 && failing <= 300, "budget: {ok} / {failing}");
    eprintln!(
        "20 registries: {ok} series ({} bytes) healthy, {failing} series failing at connect",
        text.len()
    );
    // The worst case the formula allows for 20 registries still fits: every phase, TLS, rate limits.
    assert!(series_bound(20, 20, 8, 2, 20) <= 300 + 40);
    assert!(series_bound(20, 20, 8, 2, 0) <= 300);
}

#[test]
fn a_thousand_images_over_fifty_hosts_keep_cardinality_bounded() {
    let m = Metrics::new();
    let hs = hosts(50);
    let reasons = [
        None,
        Some(Reason::ConnectTimeout),
        Some(Reason::ManifestNotFound),
        Some(Reason::TLSUnknownAuthority),
    ];
    for i in 0..1000 {
        let h = &hs[i % 50];
        let reason = reasons[i % reasons.len()];
        let mut r = if reason.is_none() {
            healthy(h)
        } else {
            let mut r = failing_connect(h);
            r.reason = reason;
            r
        };
        r.image = format!("{h}/team-{i}/app-{i}:v{i}");
        record(&m, h, "image", &r, 1_700_000_000.0);
        if i < 50 {
            record(&m, h, "path", &healthy(h), 1_700_000_000.0);
        }
    }
    m.set_registry_paths(hs.iter().map(|h| (h.as_str(), None)));
    let text = m.encode();
    assert!(!text.contains("team-"), "an image name in a label");
    let registries: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.split("registry=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(registries.len(), MAX_REGISTRIES + 1, "{registries:?}");
    assert!(registries.contains(OTHER));
    // 1000 images and 4 outcomes: still a per-registry bound, not a per-image one.
    let n = samples(&text).len();
    let bound = series_bound(MAX_REGISTRIES + 1, MAX_REGISTRIES + 1, 8, 2 + 4, 0);
    assert!(n <= bound, "{n} > {bound}");
    let results = samples(&text)
        .iter()
        .filter(|l| l.starts_with("pullprobe_probe_results_total{"))
        .count();
    assert!(results <= (MAX_REGISTRIES + 1) * 5, "{results}");
}

#[test]
fn registry_labels_are_bounded() {
    let m = Metrics::new();
    for i in 0..(MAX_REGISTRIES + 50) {
        record(
            &m,
            &format!("r{i}.example"),
            "image",
            &report(Verdict::Ready, None),
            1.0,
        );
    }
    let text = m.encode();
    let distinct: BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("pullprobe_last_success_timestamp_seconds{"))
        .collect();
    assert_eq!(
        distinct.len(),
        MAX_REGISTRIES + 1,
        "registries plus `other`"
    );
    assert!(text.contains("registry=\"other\""));
}

#[test]
fn registry_state_follows_the_cycles_paths_and_leaves_with_the_registry() {
    let m = Metrics::new();
    let sample = |text: &str, prefix: &str| -> Option<String> {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .map(|l| l.rsplit(' ').next().unwrap_or_default().to_string())
    };
    record(&m, "a.example", "path", &failing_connect("a.example"), 10.0);
    record(&m, "b.example", "path", &healthy("b.example"), 10.0);
    m.set_registry_paths([("a.example", Some("ConnectRefused")), ("b.example", None)]);
    let t = m.encode();
    let ready =
        |t: &str, r: &str| sample(t, &format!("pullprobe_registry_ready{{registry=\"{r}\"}}"));
    assert_eq!(ready(&t, "a.example").as_deref(), Some("0"));
    assert_eq!(ready(&t, "b.example").as_deref(), Some("1"));
    assert_eq!(
        sample(
            &t,
            "pullprobe_registry_reason{registry=\"a.example\",reason=\"ConnectRefused\"}"
        )
        .as_deref(),
        Some("1")
    );
    assert!(
        !t.contains("pullprobe_registry_reason{registry=\"b.example\""),
        "{t}"
    );
    // The reason changes: the old series goes, one series per failing registry.
    m.set_registry_paths([
        ("a.example", Some("TLSUnknownAuthority")),
        ("b.example", None),
    ]);
    let t = m.encode();
    assert!(
        !t.contains("pullprobe_registry_reason{registry=\"a.example\",reason=\"ConnectRefused\"}"),
        "{t}"
    );
    assert_eq!(t.matches("pullprobe_registry_reason{").count(), 1, "{t}");
    // Two paths behind one registry (a mirror and the upstream plan): one failing is enough.
    m.set_registry_paths([
        ("a.example", None),
        ("a.example", Some("ConnectTimeout")),
        ("b.example", None),
    ]);
    assert_eq!(ready(&m.encode(), "a.example").as_deref(), Some("0"));
    // Recovers: the reason series goes away.
    record(&m, "a.example", "path", &healthy("a.example"), 30.0);
    m.set_registry_paths([("a.example", None), ("b.example", None)]);
    let t = m.encode();
    assert!(!t.contains("pullprobe_registry_reason{"), "{t}");
    assert_eq!(
        sample(
            &t,
            "pullprobe_last_success_timestamp_seconds{registry=\"a.example\"}"
        )
        .as_deref(),
        Some("30")
    );
    // b leaves the node's targets: its gauges go, its counters stay.
    m.set_registry_paths([("a.example", None), ("b.example", Some("ConnectRefused"))]);
    m.set_registry_paths([("a.example", None)]);
    let t = m.encode();
    for gauge in [
        "pullprobe_registry_ready{registry=\"b.example\"}",
        "pullprobe_registry_reason{registry=\"b.example\"",
        "pullprobe_last_success_timestamp_seconds{registry=\"b.example\"}",
        "pullprobe_tls_expiry_timestamp_seconds{registry=\"b.example\"",
        "pullprobe_registry_probe_duration_seconds{registry=\"b.example\"}",
    ] {
        assert!(!t.contains(gauge), "{gauge} still there:\n{t}");
    }
    assert!(t.contains("pullprobe_probe_results_total{registry=\"b.example\""));
    assert!(t.contains("pullprobe_registry_ready{registry=\"a.example\"} 1"));
}

#[test]
fn values_carry_no_float_noise() {
    let m = Metrics::new();
    let mut r = healthy("r.example:443");
    r.ratelimit = Some(RateLimit {
        limit: Some(100),
        remaining: Some(7),
        window_s: Some(21600),
        source: None,
    });
    for _ in 0..50 {
        record(&m, "r.example:443", "path", &r, 1_700_000_000.25);
    }
    let text = m.encode();
    for l in samples(&text) {
        let v = l.rsplit(' ').next().unwrap_or_default();
        let decimals = v.split_once('.').map(|(_, d)| d.len()).unwrap_or(0);
        assert!(decimals <= 3, "float noise in {l}");
    }
    assert!(
        text.contains("pullprobe_ratelimit_remaining{registry=\"r.example:443\"} 7\n"),
        "{text}"
    );
    assert!(text.contains("pullprobe_ratelimit_limit{registry=\"r.example:443\"} 100\n"));
    assert!(text
        .contains("pullprobe_registry_probe_duration_seconds{registry=\"r.example:443\"} 0.048\n"));
    assert!(text.contains(
        "pullprobe_last_success_timestamp_seconds{registry=\"r.example:443\"} 1700000000\n"
    ));
    assert!(text.contains("pullprobe_tls_expiry_timestamp_seconds{registry=\"r.example:443\",endpoint=\"r.example:443\"} 1900000000\n"));
}

#[test]
fn encodes_openmetrics_and_prometheus_text() {
    let m = Metrics::new();
    record(
        &m,
        "r.example",
        "path",
        &report(Verdict::NotReady, Some(Reason::ConnectTimeout)),
        5.0,
    );
    m.set_condition(ConditionKind::RegistryUnreachable, true);
    m.api_write("node_status", true);
    let text = m.encode();
    assert!(text.contains("pullprobe_probe_results_total{registry=\"r.example\",kind=\"path\",verdict=\"not_ready\",reason=\"ConnectTimeout\"} 1"), "{text}");
    assert!(text.contains("pullprobe_condition_status{condition=\"RegistryUnreachable\"} 1"));
    assert!(text.contains("pullprobe_api_writes_total{kind=\"node_status\",result=\"ok\"} 1"));
    assert!(text.contains("pullprobe_phase_duration_seconds_bucket{le=\"0.005\",phase=\"dns\"} 1"));
    assert!(text.contains("pullprobe_build_info{version=\""));
    assert!(text.contains("\nprocess_resident_memory_bytes "), "{text}");
    assert!(text.ends_with("# EOF\n"));
    let (ct, plain) = m.encode_for(Some("text/plain;version=0.0.4"));
    assert_eq!(ct, PROMETHEUS_TEXT_CONTENT_TYPE);
    assert!(!plain.contains("# EOF"));
    assert!(
        plain.contains("# TYPE pullprobe_probe_results_total counter"),
        "{plain}"
    );
    assert!(
        plain.contains("pullprobe_phase_duration_seconds_bucket{phase=\"dns\",le=\"+Inf\"} 1"),
        "{plain}"
    );
    assert_eq!(
        samples(&plain).len(),
        samples(&text).len(),
        "same series in both"
    );
}

#[test]
fn negotiates_like_prometheus_and_expfmt() {
    use Format::*;
    let prom_2_42 = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    for (accept, want) in [
        // No preference (curl, promtool): the text format 0.0.4, as client_golang.
        (None, PrometheusText),
        (Some(""), PrometheusText),
        (Some("*/*"), PrometheusText),
        (Some(prom_2_42), OpenMetrics),
        (Some("text/plain;version=0.0.4"), PrometheusText),
        (Some("text/plain"), PrometheusText),
        (Some("application/openmetrics-text"), OpenMetrics),
        (
            Some("application/openmetrics-text; version=1.0.0"),
            OpenMetrics,
        ),
        (
            Some("application/openmetrics-text;version=0.0.1"),
            OpenMetrics,
        ),
        (
            Some("application/openmetrics-text;version=2.0.0"),
            PrometheusText,
        ),
        (
            Some("text/plain; version=0.0.4; q=0.9, application/openmetrics-text; q=0.5"),
            PrometheusText,
        ),
        (
            Some("text/plain;q=0.4, application/openmetrics-text;q=0.5"),
            OpenMetrics,
        ),
        (Some("text/plain;version=0.0.5"), PrometheusText),
        (Some("TEXT/PLAIN;Version=0.0.4"), PrometheusText),
        (Some("application/openmetrics-text;q=0"), PrometheusText),
        (
            Some("application/openmetrics-text;q=banana"),
            PrometheusText,
        ),
        // Equal q: the first listed.
        (
            Some("text/plain;q=0.5,application/openmetrics-text;q=0.5"),
            PrometheusText,
        ),
        (
            Some("application/openmetrics-text;q=0.5,text/plain;q=0.5"),
            OpenMetrics,
        ),
    ] {
        assert_eq!(negotiate(accept), want, "{accept:?}");
    }
    // Huge or hostile headers are cut, never a panic.
    let long = "a/b;q=1,".repeat(10_000) + "application/openmetrics-text";
    assert_eq!(negotiate(Some(&long)), PrometheusText);
    assert_eq!(negotiate(Some("é;;;==,,;q=é")), PrometheusText);
}

#[test]
fn tenants_registries_are_workload_gauges_never_the_fleet_alerts_series() {
    let sample = |text: &str, prefix: &str| -> Option<String> {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .map(|l| l.rsplit(' ').next().unwrap_or_default().to_string())
    };
    let m = Metrics::new();
    m.set_scoped_registry_paths([
        ("reg.node", None, true),
        ("nx.invalid", Some("DNSNameNotFound"), false),
    ]);
    let t = m.encode();
    assert_eq!(
        sample(&t, "pullprobe_registry_ready{registry=\"reg.node\"}").as_deref(),
        Some("1")
    );
    assert_eq!(
        sample(
            &t,
            "pullprobe_workload_registry_ready{registry=\"nx.invalid\"}"
        )
        .as_deref(),
        Some("0")
    );
    assert!(
        !t.contains("pullprobe_registry_ready{registry=\"nx.invalid\"}"),
        "{t}"
    );
    // The node comes to rely on it (drift, a trusted namespace): it moves to registry_ready.
    m.set_scoped_registry_paths([("nx.invalid", Some("DNSNameNotFound"), true)]);
    let t = m.encode();
    assert_eq!(
        sample(&t, "pullprobe_registry_ready{registry=\"nx.invalid\"}").as_deref(),
        Some("0")
    );
    assert!(!t.contains("pullprobe_workload_registry_ready{"), "{t}");
}
