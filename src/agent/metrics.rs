//! Prometheus metrics (OpenMetrics text on `/metrics`), all prefixed `pullprobe_`.
//!
//! Label cardinality is bounded; no label holds an image name or tag:
//! - `registry`: registry domains in use, at most [`MAX_REGISTRIES`]; further ones are
//!   counted under `registry="other"`.
//! - `endpoint`: endpoint `host:port`s, at most [`MAX_ENDPOINTS`], then `"other"`.
//! - `phase`, `reason`, `verdict`, `kind`, `condition`, `result`: closed enums (the
//!   `Phase` and `Reason` lists, `path`/`image`, two conditions, `ok`/`error`).
//!
//! So the worst case is 64 registries × 8 phases histograms plus 64 × 4 verdicts ×
//! 48 reasons × 2 kinds counters (in practice a handful), whatever the number of images.

use std::collections::BTreeSet;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::probe::ProbeReport;

use super::conditions::ConditionKind;

pub const MAX_REGISTRIES: usize = 64;
pub const MAX_ENDPOINTS: usize = 128;
const OTHER: &str = "other";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegistryPhase {
    pub registry: String,
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegistryKind {
    pub registry: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub registry: String,
    pub kind: String,
    pub verdict: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegistryLabel {
    pub registry: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    pub endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConditionLabel {
    pub condition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// `node_status` or `event`.
    pub kind: String,
    /// `ok` or `error`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetKindLabel {
    pub kind: String,
}

type Hist = Family<RegistryPhase, Histogram, fn() -> Histogram>;
type HistKind = Family<RegistryKind, Histogram, fn() -> Histogram>;
type FGauge = Gauge<f64, AtomicU64>;

fn phase_histogram() -> Histogram {
    // 1 ms … ~33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Admits at most `max` distinct values, then maps the rest to `other`.
#[derive(Debug)]
struct Limiter {
    max: usize,
    seen: Mutex<BTreeSet<String>>,
}

impl Limiter {
    fn new(max: usize) -> Limiter {
        Limiter {
            max,
            seen: Mutex::new(BTreeSet::new()),
        }
    }
    fn label(&self, v: &str) -> String {
        let Ok(mut seen) = self.seen.lock() else {
            return OTHER.to_string();
        };
        if seen.contains(v) {
            return v.to_string();
        }
        if seen.len() < self.max {
            seen.insert(v.to_string());
            return v.to_string();
        }
        OTHER.to_string()
    }
}

/// All agent metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub phase_duration: Hist,
    pub probe_duration: HistKind,
    pub results: Family<ResultLabels, Counter>,
    pub last_success: Family<RegistryLabel, FGauge>,
    pub tls_expiry: Family<EndpointLabel, FGauge>,
    pub ratelimit_remaining: Family<RegistryLabel, FGauge>,
    pub condition_status: Family<ConditionLabel, Gauge>,
    pub api_writes: Family<WriteLabels, Counter>,
    pub cycles: Counter,
    pub cycle_duration: Histogram,
    pub targets: Family<TargetKindLabel, Gauge>,
    pub config_reload_ok: Gauge,
    /// 1 when the node's path to the registry works (pullprobe_registry_ready).
    pub registry_ready: Family<RegistryLabel, Gauge>,
    registries: Limiter,
    endpoints: Limiter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("pullprobe");
        let phase_duration: Hist = Family::new_with_constructor(phase_histogram);
        let probe_duration: HistKind = Family::new_with_constructor(phase_histogram);
        let results = Family::<ResultLabels, Counter>::default();
        let last_success = Family::<RegistryLabel, FGauge>::default();
        let tls_expiry = Family::<EndpointLabel, FGauge>::default();
        let ratelimit_remaining = Family::<RegistryLabel, FGauge>::default();
        let condition_status = Family::<ConditionLabel, Gauge>::default();
        let api_writes = Family::<WriteLabels, Counter>::default();
        let cycles = Counter::default();
        let cycle_duration = Histogram::new(exponential_buckets(0.01, 2.0, 14));
        let targets = Family::<TargetKindLabel, Gauge>::default();
        let config_reload_ok = Gauge::default();
        let registry_ready = Family::<RegistryLabel, Gauge>::default();
        registry.register(
            "registry_ready",
            "1 when the node's path to the registry works (an endpoint answered and accepted the node's credentials)",
            registry_ready.clone(),
        );
        registry.register(
            "phase_duration_seconds",
            "Duration of each pull-path phase, per registry domain",
            phase_duration.clone(),
        );
        registry.register(
            "probe_duration_seconds",
            "Duration of a whole probe, per registry domain and kind (path or image)",
            probe_duration.clone(),
        );
        registry.register(
            "probe_results",
            "Probe results by registry, kind, verdict and reason (empty reason = pulls)",
            results.clone(),
        );
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time of the last probe that would pull, per registry domain",
            last_success.clone(),
        );
        registry.register(
            "tls_expiry_timestamp_seconds",
            "Unix time when the TLS leaf certificate of an endpoint expires",
            tls_expiry.clone(),
        );
        registry.register(
            "dockerhub_ratelimit_remaining",
            "Docker Hub ratelimit-remaining as last seen",
            ratelimit_remaining.clone(),
        );
        registry.register(
            "condition_status",
            "Node condition status as this agent holds it (1 = True = problem)",
            condition_status.clone(),
        );
        registry.register(
            "api_writes",
            "Writes to the Kubernetes API by kind and result",
            api_writes.clone(),
        );
        registry.register("cycles", "Completed probe cycles", cycles.clone());
        registry.register(
            "cycle_duration_seconds",
            "Duration of a whole probe cycle",
            cycle_duration.clone(),
        );
        registry.register(
            "targets",
            "Current targets by kind (image, path, pod)",
            targets.clone(),
        );
        registry.register(
            "config_last_reload_successful",
            "1 if the last config (re)load succeeded",
            config_reload_ok.clone(),
        );
        for k in ConditionKind::ALL {
            condition_status
                .get_or_create(&ConditionLabel {
                    condition: k.as_str().to_string(),
                })
                .set(0);
        }
        config_reload_ok.set(1);
        Metrics {
            registry,
            phase_duration,
            probe_duration,
            results,
            last_success,
            tls_expiry,
            ratelimit_remaining,
            condition_status,
            api_writes,
            cycles,
            cycle_duration,
            targets,
            config_reload_ok,
            registry_ready,
            registries: Limiter::new(MAX_REGISTRIES),
            endpoints: Limiter::new(MAX_ENDPOINTS),
        }
    }

    /// The bounded `registry` label for a domain.
    pub fn registry_label(&self, registry: &str) -> String {
        self.registries.label(registry)
    }

    /// Record one probe. `kind` is `path` or `image`; `now_unix` is the current time.
    pub fn record_probe(&self, registry: &str, kind: &str, report: &ProbeReport, now_unix: f64) {
        let registry = self.registry_label(registry);
        for p in &report.phases {
            self.phase_duration
                .get_or_create(&RegistryPhase {
                    registry: registry.clone(),
                    phase: p.name.as_str().to_string(),
                })
                .observe(p.duration_ms / 1000.0);
        }
        self.probe_duration
            .get_or_create(&RegistryKind {
                registry: registry.clone(),
                kind: kind.to_string(),
            })
            .observe(report.duration_ms / 1000.0);
        self.results
            .get_or_create(&ResultLabels {
                registry: registry.clone(),
                kind: kind.to_string(),
                verdict: report.verdict.as_str().to_string(),
                reason: report
                    .reason
                    .map(|r| r.as_str().to_string())
                    .unwrap_or_default(),
            })
            .inc();
        if report.verdict.pulls() {
            self.last_success
                .get_or_create(&RegistryLabel {
                    registry: registry.clone(),
                })
                .set(now_unix);
        }
        if let Some(tls) = &report.tls {
            // host:port, so two registries on one address stay apart; the port comes from
            // the endpoint the report names when the TLS host is that endpoint's.
            let url = report
                .endpoint
                .as_deref()
                .and_then(|e| url::Url::parse(e).ok());
            let from_url = url.as_ref().and_then(|u| {
                let h = u.host_str()?.trim_start_matches('[').trim_end_matches(']');
                let p = u.port_or_known_default()?;
                (tls.host.is_empty() || h == tls.host).then(|| {
                    if h.contains(':') {
                        format!("[{h}]:{p}")
                    } else {
                        format!("{h}:{p}")
                    }
                })
            });
            let host = from_url.unwrap_or_else(|| tls.host.clone());
            let endpoint = self.endpoints.label(&host);
            self.tls_expiry
                .get_or_create(&EndpointLabel { endpoint })
                .set(tls.not_after_unix as f64);
        }
        if let Some(remaining) = report.ratelimit.as_ref().and_then(|r| r.remaining) {
            self.ratelimit_remaining
                .get_or_create(&RegistryLabel { registry })
                .set(remaining as f64);
        }
    }

    /// The node's path state for a registry (`reason` = why it does not work).
    pub fn set_registry_state(&self, registry: &str, ready: bool, _reason: Option<&str>) {
        let registry = self.registries.label(registry);
        self.registry_ready
            .get_or_create(&RegistryLabel { registry })
            .set(i64::from(ready));
    }

    pub fn set_condition(&self, kind: ConditionKind, status: bool) {
        self.condition_status
            .get_or_create(&ConditionLabel {
                condition: kind.as_str().to_string(),
            })
            .set(i64::from(status));
    }

    pub fn api_write(&self, kind: &str, ok: bool) {
        self.api_writes
            .get_or_create(&WriteLabels {
                kind: kind.to_string(),
                result: if ok { "ok" } else { "error" }.to_string(),
            })
            .inc();
    }

    pub fn set_targets(&self, kind: &str, n: usize) {
        self.targets
            .get_or_create(&TargetKindLabel {
                kind: kind.to_string(),
            })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
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
        }
    }

    #[test]
    fn registry_labels_are_bounded() {
        let m = Metrics::new();
        for i in 0..(MAX_REGISTRIES + 50) {
            m.record_probe(
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
            "64 registries plus `other`"
        );
        assert!(text.contains("registry=\"other\""));
    }

    #[test]
    fn encodes_openmetrics_with_results_and_conditions() {
        let m = Metrics::new();
        m.record_probe(
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
        assert!(text.contains("pullprobe_phase_duration_seconds_bucket{"));
        assert!(text.ends_with("# EOF\n"));
    }
}
