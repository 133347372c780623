//! A histogram of durations kept in whole milliseconds, with 10 fixed buckets.
//!
//! prometheus-client's `Histogram` sums `f64` seconds, so its `_sum` drifts into float noise
//! (`0.30000000000000004`). This one counts integer milliseconds and divides once when it is
//! encoded, so every value on `/metrics` is a short decimal (`1.234`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Upper bounds in milliseconds: 5 ms … 10 s, then `+Inf`. Loopback DNS answers in ~1 ms,
/// a cross-region TLS handshake in ~100 ms, a timed-out phase at the probe's 10 s deadline.
pub const BOUNDS_MS: [u64; 10] = [5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 10_000];

/// Series one histogram adds to the exposition: a `_bucket` per bound, `+Inf`, `_sum`, `_count`.
pub const SERIES_PER_HISTOGRAM: usize = BOUNDS_MS.len() + 3;

#[derive(Debug, Default)]
struct Inner {
    /// Non-cumulative counts; the last one is `+Inf`.
    buckets: [AtomicU64; BOUNDS_MS.len() + 1],
    sum_ms: AtomicU64,
    count: AtomicU64,
}

/// Cheap to clone (shared counts), as prometheus-client's metric types are.
#[derive(Clone, Debug, Default)]
pub struct MsHistogram(Arc<Inner>);

/// Seconds to whole milliseconds; negative, NaN and infinite inputs count as 0 and huge ones
/// saturate (`as` from f64 saturates, it never panics).
fn to_ms(seconds: f64) -> u64 {
    if seconds.is_finite() && seconds > 0.0 {
        (seconds * 1000.0).round() as u64
    } else {
        0
    }
}

fn saturating_add(a: &AtomicU64, v: u64) {
    // fetch_update with Some(..) never fails.
    let _ = a.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |x| {
        Some(x.saturating_add(v))
    });
}

impl MsHistogram {
    /// Records one duration given in seconds (rounded to the millisecond).
    pub fn observe(&self, seconds: f64) {
        self.observe_ms(to_ms(seconds));
    }

    pub fn observe_ms(&self, ms: u64) {
        let i = BOUNDS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(BOUNDS_MS.len());
        if let Some(b) = self.0.buckets.get(i) {
            saturating_add(b, 1);
        }
        saturating_add(&self.0.sum_ms, ms);
        saturating_add(&self.0.count, 1);
    }

    pub fn count(&self) -> u64 {
        self.0.count.load(Ordering::Relaxed)
    }

    /// Sum of the observations in milliseconds.
    pub fn sum_ms(&self) -> u64 {
        self.0.sum_ms.load(Ordering::Relaxed)
    }
}

impl TypedMetric for MsHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for MsHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut buckets = Vec::with_capacity(BOUNDS_MS.len() + 1);
        for (i, b) in self.0.buckets.iter().enumerate() {
            let le = BOUNDS_MS
                .get(i)
                .map(|ms| *ms as f64 / 1000.0)
                .unwrap_or(f64::INFINITY);
            buckets.push((le, b.load(Ordering::Relaxed)));
        }
        // One division of an integer: 1234 ms → 1.234, never 1.2340000000000002.
        let sum = self.sum_ms() as f64 / 1000.0;
        encoder.encode_histogram::<NoLabelSet>(sum, self.count(), &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_inclusive_upper_bounds_and_sum_is_exact() {
        let h = MsHistogram::default();
        for s in [0.005, 0.0051, 0.1, 0.2, 12.0, -1.0, f64::NAN] {
            h.observe(s);
        }
        assert_eq!(h.count(), 7);
        assert_eq!(h.sum_ms(), 5 + 5 + 100 + 200 + 12_000);
        let counts: Vec<u64> =
            h.0.buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect();
        // 0 ms (twice) and 5 ms in le=0.005; 100 in le=0.1; 200 in le=0.25; 12 s in +Inf.
        assert_eq!(counts, [4, 0, 0, 0, 1, 1, 0, 0, 0, 0, 1]);
    }
}
