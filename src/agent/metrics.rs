//! Prometheus metrics on `/metrics`: the Prometheus text format 0.0.4, or OpenMetrics text when
//! the scraper asks for it ([`negotiate`], as client_golang). Agent metrics are prefixed `pullprobe_`; the process
//! metrics (`process_*`) use the names of every Prometheus client library.
//!
//! # Budget
//! A node with `R` registry label values, `E` TLS endpoints and `P` phases seen serves at most
//! `29 + 13·P + R·(4 + O) + E + 2·L` series ([`series_bound`]), where `O` is the number of
//! distinct (kind, verdict, reason) outcomes a registry has had (2 in steady state: one per kind)
//! and `L` the registries that send rate-limit headers: at most 260 for 20 healthy TLS registries
//! (240 measured), 175 when all 20 fail at connect (155 measured). `docs/operate.md` explains
//! each term. Bounded by construction:
//! - `registry`: at most [`MAX_REGISTRIES`] values, then `registry="other"`; a registry that
//!   leaves the node's targets frees its value ([`Metrics::set_registry_paths`]).
//! - `endpoint` (TLS expiry only): at most [`MAX_ENDPOINTS`], then `"other"`.
//! - `phase`, `reason`, `verdict`, `kind`, `condition`, `result`: closed enums.
//! - Histograms have 10 buckets ([`histogram::BOUNDS_MS`]) and never a `registry` label: the
//!   phase histogram is by `phase` only; per-registry latency is the gauge
//!   `pullprobe_registry_probe_duration_seconds`.
//! - No image, repository, tag, pod or node name is ever a label.
//! - Values carry no float noise: timestamps and counts are integers, durations whole
//!   milliseconds divided once.

mod book;
pub mod histogram;
mod process;

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::probe::ProbeReport;

use super::conditions::ConditionKind;
pub use book::OTHER;
use book::{Book, LabelState};
pub use histogram::MsHistogram;

/// Registry label values before `other`.
pub const MAX_REGISTRIES: usize = 32;
/// TLS endpoint label values before `other`.
pub const MAX_ENDPOINTS: usize = 64;

/// Content type of the OpenMetrics exposition.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the Prometheus text format 0.0.4.
pub const PROMETHEUS_TEXT_CONTENT_TYPE: &str =
    prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegistryLabel {
    pub registry: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegistryReason {
    pub registry: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegistryEndpoint {
    pub registry: String,
    pub endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub registry: String,
    pub kind: String,
    pub verdict: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    pub phase: String,
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabel {
    pub version: String,
}

type FGauge = Gauge<f64, AtomicU64>;

/// What one check says, as labels: `kind` (`path` or `image`), the verdict (an image
/// check's verdict or a path check's state) and the reason (`None` when it passed).
#[derive(Clone, Copy, Debug)]
pub struct Said<'a> {
    pub kind: &'a str,
    pub verdict: &'a str,
    pub reason: Option<crate::probe::Reason>,
}

impl<'a> Said<'a> {
    /// An image check's labels: the report's own verdict and reason.
    pub fn image(report: &'a ProbeReport) -> Said<'a> {
        Said {
            kind: "image",
            verdict: report.verdict.as_str(),
            reason: report.reason,
        }
    }
}

/// All agent metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub registry_ready: Family<RegistryLabel, Gauge>,
    pub workload_registry_ready: Family<RegistryLabel, Gauge>,
    pub registry_reason: Family<RegistryReason, Gauge>,
    pub registry_probe_duration: Family<RegistryLabel, FGauge>,
    pub last_success: Family<RegistryLabel, Gauge>,
    pub tls_expiry: Family<RegistryEndpoint, Gauge>,
    pub ratelimit_remaining: Family<RegistryLabel, Gauge>,
    pub ratelimit_limit: Family<RegistryLabel, Gauge>,
    pub results: Family<ResultLabels, Counter>,
    pub phase_duration: Family<PhaseLabel, MsHistogram>,
    pub condition_status: Family<ConditionLabel, Gauge>,
    pub api_writes: Family<WriteLabels, Counter>,
    pub cycles: Counter,
    pub cycle_duration: MsHistogram,
    pub targets: Family<TargetKindLabel, Gauge>,
    pub config_reload_ok: Gauge,
    /// Tasks alive on the agent's tokio runtime, sampled at each scrape (a leak shows as
    /// growth: bench/soak.sh).
    pub runtime_tasks: Gauge,
    book: Mutex<Book>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(process::ProcessCollector::new()));
        let m = Metrics {
            registry: Registry::default(),
            registry_ready: Family::default(),
            workload_registry_ready: Family::default(),
            registry_reason: Family::default(),
            registry_probe_duration: Family::default(),
            last_success: Family::default(),
            tls_expiry: Family::default(),
            ratelimit_remaining: Family::default(),
            ratelimit_limit: Family::default(),
            results: Family::default(),
            phase_duration: Family::default(),
            condition_status: Family::default(),
            api_writes: Family::default(),
            cycles: Counter::default(),
            cycle_duration: MsHistogram::default(),
            targets: Family::default(),
            config_reload_ok: Gauge::default(),
            runtime_tasks: Gauge::default(),
            book: Mutex::new(Book::new(MAX_REGISTRIES, MAX_ENDPOINTS)),
        };
        m.register(registry.sub_registry_with_prefix("pullprobe"));
        for k in ConditionKind::ALL {
            m.set_condition(k, false);
        }
        m.config_reload_ok.set(1);
        Metrics { registry, ..m }
    }

    fn register(&self, r: &mut Registry) {
        r.register(
            "registry_ready",
            "1 if the node's pull path to the registry works (latest path checks), 0 if not",
            self.registry_ready.clone(),
        );
        r.register(
            "workload_registry_ready",
            "1 if the node's pull path to a registry only tenants' pods use works, 0 if not (no Node condition, no fleet alert: docs/threat-model.md)",
            self.workload_registry_ready.clone(),
        );
        r.register(
            "registry_reason",
            "1 for the reason a registry is not ready (absent while it is ready)",
            self.registry_reason.clone(),
        );
        r.register(
            "registry_probe_duration_seconds",
            "Duration of the latest path check of the registry",
            self.registry_probe_duration.clone(),
        );
        r.register(
            "last_success_timestamp_seconds",
            "Unix time of the last probe of the registry that would pull",
            self.last_success.clone(),
        );
        r.register(
            "tls_expiry_timestamp_seconds",
            "Unix time when the TLS leaf certificate of a registry endpoint expires",
            self.tls_expiry.clone(),
        );
        r.register(
            "ratelimit_remaining",
            "Pulls left in the registry's rate-limit window (ratelimit-remaining, Docker Hub)",
            self.ratelimit_remaining.clone(),
        );
        r.register(
            "ratelimit_limit",
            "Pulls allowed per rate-limit window (ratelimit-limit, Docker Hub)",
            self.ratelimit_limit.clone(),
        );
        r.register(
            "probe_results",
            "Probe results by registry, kind (path or image), verdict and reason (empty when it pulls)",
            self.results.clone(),
        );
        r.register(
            "phase_duration_seconds",
            "Duration of each pull-path phase, all registries together",
            self.phase_duration.clone(),
        );
        self.register_agent(r);
    }

    fn register_agent(&self, r: &mut Registry) {
        r.register(
            "condition_status",
            "Node condition status as this agent holds it (1 = True = problem)",
            self.condition_status.clone(),
        );
        r.register(
            "api_writes",
            "Writes to the Kubernetes API by kind and result",
            self.api_writes.clone(),
        );
        r.register("cycles", "Completed probe cycles", self.cycles.clone());
        r.register(
            "cycle_duration_seconds",
            "Duration of a whole probe cycle",
            self.cycle_duration.clone(),
        );
        r.register(
            "targets",
            "Current targets by kind (image, path, pod)",
            self.targets.clone(),
        );
        r.register(
            "config_last_reload_successful",
            "1 if the last config (re)load succeeded",
            self.config_reload_ok.clone(),
        );
        r.register(
            "runtime_tasks",
            "Tasks alive on the agent's async runtime (sampled when /metrics is read)",
            self.runtime_tasks.clone(),
        );
        let info = Family::<VersionLabel, Gauge>::default();
        info.get_or_create(&VersionLabel {
            version: env!("CARGO_PKG_VERSION").to_string(),
        })
        .set(1);
        r.register("build_info", "Always 1; the agent's version", info);
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        // A panic while holding the lock cannot leave the book inconsistent in a way that
        // matters for metrics: keep using it.
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The bounded `registry` label for a domain.
    pub fn registry_label(&self, registry: &str) -> String {
        self.book().registry_label(registry)
    }

    /// Record one check. `said` is what the check says (`CheckRecord::says`): an image
    /// check's verdict and reason, a path check's state and reason — the values `/status`,
    /// the log line and the conditions use, so the counter never contradicts them (a path
    /// check whose representative tag is missing is `reachable`, not `not_ready`).
    pub fn record_probe(
        &self,
        registry: &str,
        said: Said<'_>,
        report: &ProbeReport,
        now_unix: f64,
    ) {
        let label = self.registry_label(registry);
        let reg = RegistryLabel {
            registry: label.clone(),
        };
        for p in &report.phases {
            self.phase_duration
                .get_or_create(&PhaseLabel {
                    phase: p.name.as_str().to_string(),
                })
                .observe(p.duration_ms / 1000.0);
        }
        self.results
            .get_or_create(&ResultLabels {
                registry: label.clone(),
                kind: said.kind.to_string(),
                verdict: said.verdict.to_string(),
                reason: said
                    .reason
                    .map(|r| r.as_str())
                    .unwrap_or_default()
                    .to_string(),
            })
            .inc();
        if said.reason.is_none() {
            self.last_success
                .get_or_create(&reg)
                .set(unix_secs(now_unix));
        }
        if said.kind == "path" {
            self.registry_probe_duration
                .get_or_create(&reg)
                .set(whole_ms(report.duration_ms) / 1000.0);
        }
        self.record_tls(&label, report);
        if let Some(rl) = &report.ratelimit {
            if let Some(v) = rl.remaining {
                self.ratelimit_remaining.get_or_create(&reg).set(int(v));
            }
            if let Some(v) = rl.limit {
                self.ratelimit_limit.get_or_create(&reg).set(int(v));
            }
        }
    }

    /// `registry_ready` and the one `registry_reason` series of a label.
    fn show_state(&self, label: &str, state: &LabelState) {
        let reg = RegistryLabel {
            registry: label.to_string(),
        };
        let (show, hide) = if state.node {
            (&self.registry_ready, &self.workload_registry_ready)
        } else {
            (&self.workload_registry_ready, &self.registry_ready)
        };
        hide.remove(&reg);
        show.get_or_create(&reg).set(i64::from(state.ready));
        let keep = state.reason.as_ref().map(|r| RegistryReason {
            registry: label.to_string(),
            reason: r.clone(),
        });
        self.clear_reasons(label, keep.as_ref());
        if let Some(k) = keep {
            self.registry_reason.get_or_create(&k).set(1);
        }
    }

    /// Removes the `registry_reason` series of a label, except `keep`.
    fn clear_reasons(&self, label: &str, keep: Option<&RegistryReason>) {
        for r in crate::probe::Reason::ALL
            .iter()
            .map(|r| r.as_str())
            .chain([""])
        {
            let key = RegistryReason {
                registry: label.to_string(),
                reason: r.to_string(),
            };
            if keep != Some(&key) {
                self.registry_reason.remove(&key);
            }
        }
    }

    fn record_tls(&self, label: &str, report: &ProbeReport) {
        let Some(tls) = &report.tls else {
            return;
        };
        // host:port, so two registries on one address stay apart; the port comes from the
        // endpoint the report names when the TLS host is that endpoint's.
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
        let endpoint = self.book().endpoint_label(label, &host);
        self.tls_expiry
            .get_or_create(&RegistryEndpoint {
                registry: label.to_string(),
                endpoint,
            })
            .set(tls.not_after_unix);
    }

    /// The node's pull path to each registry as the cycle decided it: (registry, `None` when
    /// it works, else the reason). The complete set every cycle: registries not in it have left
    /// the node's targets, and their per-registry gauges leave the exposition (counters stay).
    pub fn set_registry_paths<'a>(
        &self,
        paths: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) {
        self.set_scoped_registry_paths(paths.into_iter().map(|(r, why)| (r, why, true)))
    }

    /// [`Metrics::set_registry_paths`] with each registry's scope (`true`: the node's own).
    /// The node's registries are `registry_ready`, tenants' `workload_registry_ready`, so the
    /// fleet alert on the first never fires for a tenant's typo.
    pub fn set_scoped_registry_paths<'a>(
        &self,
        paths: impl IntoIterator<Item = (&'a str, Option<&'a str>, bool)>,
    ) {
        let paths: Vec<(String, Option<String>, bool)> = paths
            .into_iter()
            .map(|(r, reason, node)| (r.to_string(), reason.map(str::to_string), node))
            .collect();
        let retained = self.book().set_scoped_paths(&paths);
        for label in &retained.gone {
            let reg = RegistryLabel {
                registry: label.clone(),
            };
            self.registry_ready.remove(&reg);
            self.workload_registry_ready.remove(&reg);
            self.registry_probe_duration.remove(&reg);
            self.last_success.remove(&reg);
            self.ratelimit_remaining.remove(&reg);
            self.ratelimit_limit.remove(&reg);
            self.clear_reasons(label, None);
        }
        for (registry, endpoint) in retained.gone_endpoints {
            self.tls_expiry
                .remove(&RegistryEndpoint { registry, endpoint });
        }
        for (label, state) in &retained.states {
            self.show_state(label, state);
        }
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

    /// Prometheus text format 0.0.4.
    pub fn encode_prometheus_text(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }

    /// Sample the runtime's live task count into `runtime_tasks` (no-op off the runtime).
    fn sample_runtime(&self) {
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            let n = h.metrics().num_alive_tasks();
            self.runtime_tasks.set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// (content type, body) for a scrape with this `Accept` header.
    pub fn encode_for(&self, accept: Option<&str>) -> (&'static str, String) {
        self.sample_runtime();
        match negotiate(accept) {
            Format::OpenMetrics => (OPENMETRICS_CONTENT_TYPE, self.encode()),
            Format::PrometheusText => (PROMETHEUS_TEXT_CONTENT_TYPE, self.encode_prometheus_text()),
        }
    }
}

/// Unix seconds as an integer gauge value.
fn unix_secs(now_unix: f64) -> i64 {
    if now_unix.is_finite() && now_unix > 0.0 {
        now_unix as i64
    } else {
        0
    }
}

/// Milliseconds rounded to whole ones (saturating `as`; NaN → 0).
fn whole_ms(ms: f64) -> f64 {
    if ms.is_finite() && ms > 0.0 {
        ms.round()
    } else {
        0.0
    }
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The upper bound on series from the budget formula (see the module docs and docs/operate.md).
/// `r` registry labels, `e` TLS endpoints, `p` phases seen, `o` probe outcomes per registry
/// (one per kind in steady state: 2), `l` registries sending rate-limit headers.
pub fn series_bound(r: usize, e: usize, p: usize, o: usize, l: usize) -> usize {
    FIXED_SERIES + histogram::SERIES_PER_HISTOGRAM * p + r * (4 + o) + e + 2 * l
}

/// Series that do not depend on registries: the cycle histogram (13), cycles, two conditions,
/// four API write outcomes, three target kinds, config reload, build info, runtime tasks, four
/// process metrics.
pub const FIXED_SERIES: usize = histogram::SERIES_PER_HISTOGRAM + 1 + 2 + 4 + 3 + 1 + 1 + 1 + 4;

/// Exposition formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    PrometheusText,
}

/// Accept headers longer than this are read up to here only.
const MAX_ACCEPT: usize = 4096;
/// Media ranges considered per Accept header.
const MAX_MEDIA_RANGES: usize = 32;

/// Chooses the format for an `Accept` header as client_golang does (prometheus/common
/// `expfmt.NegotiateIncludingOpenMetrics`): the media ranges by falling `q` (the first listed
/// among equals), and the first that is `text/plain` (version absent or `0.0.4`) or
/// `application/openmetrics-text` (version absent, `0.0.1` or `1.0.0`) wins; none of them,
/// the Prometheus text format 0.0.4. So no header, `*/*` or `text/plain` (curl, `promtool
/// check metrics`) get the text format, and Prometheus ≥ 2.5, which lists OpenMetrics first
/// (`application/openmetrics-text;version=1.0.0,…,text/plain;version=0.0.4;q=0.5`,
/// prometheus/prometheus scrape/scrape.go `scrapeAcceptHeader`), gets OpenMetrics.
pub fn negotiate(accept: Option<&str>) -> Format {
    let Some(accept) = accept else {
        return Format::PrometheusText;
    };
    let accept = match accept.char_indices().nth(MAX_ACCEPT) {
        Some((i, _)) => &accept[..i],
        None => accept,
    };
    let mut best: Option<(f64, Format)> = None;
    for range in accept.split(',').take(MAX_MEDIA_RANGES) {
        let Some((q, format)) = media_range(range) else {
            continue;
        };
        if q > 0.0 && best.is_none_or(|(b, _)| q > b) {
            best = Some((q, format));
        }
    }
    best.map_or(Format::PrometheusText, |(_, f)| f)
}

/// One media range of an `Accept` header: its `q` and the format it names, if any.
fn media_range(range: &str) -> Option<(f64, Format)> {
    let mut parts = range.split(';').map(str::trim);
    let media = parts.next().unwrap_or_default().to_ascii_lowercase();
    let (mut q, mut version) = (1.0f64, None);
    for p in parts {
        let Some((k, v)) = p.split_once('=') else {
            continue;
        };
        match k.trim().to_ascii_lowercase().as_str() {
            "q" => {
                q = v
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|q| (0.0..=1.0).contains(q))
                    .unwrap_or(0.0)
            }
            "version" => version = Some(v.trim().to_string()),
            _ => {}
        }
    }
    let version = version.as_deref();
    let format = match media.as_str() {
        "text/plain" if version.is_none_or(|v| v == "0.0.4") => Format::PrometheusText,
        "application/openmetrics-text" if version.is_none_or(|v| v == "0.0.1" || v == "1.0.0") => {
            Format::OpenMetrics
        }
        _ => return None,
    };
    Some((q, format))
}

#[cfg(test)]
pub(crate) mod tests;
