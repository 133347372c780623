//! When to probe what: cycle jitter, per-host backoff, and the fleet load budget.
//!
//! Fleet budget. A DaemonSet multiplies every request by the node count, so only what can
//! differ per node is checked on every node every cycle (the *path* to each registry
//! host: DNS, TCP, TLS, auth, one manifest HEAD). Per-image facts (tag, platform, blob)
//! are the same for every node with the same plan, so they are shared: for each image a
//! node computes `u = hash(image, node) ∈ [0,1)` and, with `share = k / N` (k = checks per
//! period wanted fleet-wide, N = node count), checks it `floor(share) + (u < frac(share))`
//! times per period. Summed over the fleet that is ≈ k checks of each image per period,
//! whatever N is; the hash is stable, so the same nodes keep the same images.

use std::time::Duration;

use sha2::{Digest, Sha256};

/// First backoff after a failure; kubelet's image pull backoff starts at 10 s too.
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(10);
/// Backoff ceiling (kubelet: 300 s).
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Longest `Retry-After` honoured: a registry asking for more is probed again after this.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(3600);

/// Per-host exponential backoff, 10 s doubling to 300 s, or the registry's `Retry-After`.
/// Times are seconds on any monotonic scale the caller picks (tests use plain numbers).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Backoff {
    failures: u32,
    until: Option<Duration>,
}

impl Backoff {
    /// May the host be probed at `now`?
    pub fn allows(&self, now: Duration) -> bool {
        self.until.is_none_or(|u| now >= u)
    }

    /// When the host may be probed again, if it is backed off.
    pub fn until(&self) -> Option<Duration> {
        self.until
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Record a failure at `now` with the default 10 s → 300 s schedule; returns the delay.
    pub fn on_failure(&mut self, now: Duration, retry_after: Option<Duration>) -> Duration {
        self.on_failure_with(now, retry_after, BACKOFF_INITIAL, BACKOFF_MAX)
    }

    /// Record a failure at `now`, doubling from `initial` up to `max`; returns the delay.
    pub fn on_failure_with(
        &mut self,
        now: Duration,
        retry_after: Option<Duration>,
        initial: Duration,
        max: Duration,
    ) -> Duration {
        let exp = initial
            .checked_mul(1u32 << self.failures.min(16))
            .unwrap_or(max)
            .min(max);
        self.failures = self.failures.saturating_add(1);
        // A 429's Retry-After is the registry telling us exactly when; honour it even
        // when it is shorter than our own schedule would be, but bound it.
        let delay = match retry_after {
            Some(ra) => ra.min(RETRY_AFTER_MAX),
            None => exp,
        };
        self.until = Some(now + delay);
        delay
    }

    pub fn on_success(&mut self) {
        *self = Backoff::default();
    }

    /// A backoff kept across a restart: `failures` so far, probed again at `until`.
    pub fn restored(failures: u32, until: Duration) -> Backoff {
        Backoff {
            failures,
            until: Some(until),
        }
    }
}

/// A stable 64-bit hash of `(image, node)`: SHA-256, so every version and platform of the
/// agent makes the same choice (std's `DefaultHasher` is not stable across releases).
pub fn stable_hash(image: &str, node: &str, salt: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update([0]);
    h.update(image.as_bytes());
    h.update([0]);
    h.update(node.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}

fn unit(h: u64) -> f64 {
    // 53 bits: exactly representable in an f64.
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// How many times per period this node checks `image`, for `k` fleet-wide checks per
/// period over `nodes` nodes.
pub fn image_checks_per_period(image: &str, node: &str, nodes: u64, k: u32) -> u32 {
    let share = f64::from(k) / nodes.max(1) as f64;
    let whole = share.floor();
    let u = unit(stable_hash(image, node, "share"));
    let extra = if u < share - whole { 1.0 } else { 0.0 };
    (whole + extra) as u32
}

/// Is `image` due on this node in cycle number `cycle` (cycles counted from the Unix
/// epoch in `interval` steps, so nodes agree on boundaries)? `m` checks per period are
/// spread evenly over the period's cycles, at an offset from a second hash so a fleet's
/// checks of one image do not land in the same minute.
pub fn image_due(image: &str, node: &str, m: u32, cycles_per_period: u64, cycle: u64) -> bool {
    if m == 0 {
        return false;
    }
    let c = cycles_per_period.max(1);
    let m = u64::from(m).min(c);
    let offset = stable_hash(image, node, "offset") % c;
    let pos = (cycle + offset) % c;
    // Due in the cycles where floor(pos * m / c) steps up: exactly m of every c cycles.
    pos == 0 || (pos * m) / c != ((pos - 1) * m) / c
}

/// Cycles in one fleet period (at least one).
pub fn cycles_per_period(period: Duration, interval: Duration) -> u64 {
    let i = interval.as_secs().max(1);
    (period.as_secs() / i).max(1)
}

/// A small deterministic PRNG (SplitMix64) for jitter: no extra dependency, and tests
/// can seed it.
#[derive(Clone, Debug)]
pub struct Jitter {
    state: u64,
}

impl Jitter {
    pub fn new(seed: u64) -> Jitter {
        Jitter { state: seed }
    }

    /// Seeded from the node name and the start time, so a fleet started together spreads out.
    pub fn from_node(node: &str) -> Jitter {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Jitter::new(stable_hash(node, "", "jitter") ^ t)
    }

    /// A number in [0, 1).
    pub fn next_unit(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        unit(z ^ (z >> 31))
    }

    /// `base` moved by up to ±`fraction` of itself.
    pub fn around(&mut self, base: Duration, fraction: f64) -> Duration {
        let f = fraction.clamp(0.0, 0.5);
        let factor = 1.0 + f * (2.0 * self.next_unit() - 1.0);
        base.mul_f64(factor.max(0.0))
    }

    /// `base` shortened by up to `fraction` of itself (heartbeats must never be late).
    pub fn below(&mut self, base: Duration, fraction: f64) -> Duration {
        let f = fraction.clamp(0.0, 0.5);
        base.mul_f64(1.0 - f * self.next_unit())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn backoff_doubles_from_10s_to_300s_and_resets() {
        let mut b = Backoff::default();
        let delays: Vec<u64> = (0..8).map(|_| b.on_failure(s(0), None).as_secs()).collect();
        assert_eq!(delays, vec![10, 20, 40, 80, 160, 300, 300, 300]);
        assert!(!b.allows(s(299)));
        assert!(b.allows(s(300)));
        b.on_success();
        assert!(b.allows(s(0)));
        assert_eq!(b.on_failure(s(1000), None), s(10));
        assert_eq!(b.until(), Some(s(1010)));
    }

    #[test]
    fn retry_after_is_honoured_and_bounded() {
        let mut b = Backoff::default();
        assert_eq!(b.on_failure(s(100), Some(s(42))), s(42));
        assert!(!b.allows(s(141)));
        assert!(b.allows(s(142)));
        assert_eq!(b.on_failure(s(0), Some(s(86400))), RETRY_AFTER_MAX);
    }

    /// Over many images, each is checked ≈k times per period by the whole fleet, for
    /// small and large fleets alike.
    #[test]
    fn fleet_share_covers_each_image_about_k_times() {
        for &(nodes, k) in &[
            (1u64, 3u32),
            (2, 3),
            (3, 3),
            (10, 3),
            (100, 3),
            (1000, 3),
            (5000, 2),
        ] {
            let node_names: Vec<String> = (0..nodes).map(|i| format!("node-{i}")).collect();
            let images = if nodes >= 1000 { 40 } else { 300 };
            let mut total = 0u64;
            let mut uncovered = 0;
            for i in 0..images {
                let image = format!("registry.example/team/app-{i}:v{}", i % 7);
                let c: u64 = node_names
                    .iter()
                    .map(|n| u64::from(image_checks_per_period(&image, n, nodes, k)))
                    .sum();
                if c == 0 {
                    uncovered += 1;
                }
                total += c;
            }
            let mean = total as f64 / images as f64;
            assert!(
                (mean - f64::from(k)).abs() < 0.5,
                "nodes={nodes} k={k}: mean {mean}"
            );
            // Binomial(N, k/N): P(0) ≈ e^-k; allow generous slack.
            let p0 = uncovered as f64 / images as f64;
            assert!(p0 < 0.15, "nodes={nodes}: {p0} of images uncovered");
        }
    }

    #[test]
    fn share_is_whole_when_nodes_fewer_than_k() {
        assert_eq!(image_checks_per_period("a:1", "n", 1, 3), 3);
        let two: u32 = ["n0", "n1"]
            .iter()
            .map(|n| image_checks_per_period("a:1", n, 2, 4))
            .sum();
        assert_eq!(two, 4);
    }

    #[test]
    fn image_due_exactly_m_times_per_period() {
        for m in 0..=12u32 {
            let c = 10u64;
            let due = (0..c)
                .filter(|&cy| image_due("img:1", "node-a", m, c, cy))
                .count();
            assert_eq!(due as u32, m.min(10), "m={m}");
            // The next period repeats the pattern.
            let due2 = (c..2 * c)
                .filter(|&cy| image_due("img:1", "node-a", m, c, cy))
                .count();
            assert_eq!(due, due2);
        }
    }

    #[test]
    fn stable_hash_is_stable() {
        // Pinned: a change here silently reshuffles every fleet's assignments.
        assert_eq!(
            stable_hash("img", "node", "share"),
            stable_hash("img", "node", "share")
        );
        assert_ne!(
            stable_hash("img", "node-a", "share"),
            stable_hash("img", "node-b", "share")
        );
    }

    #[test]
    fn jitter_stays_in_bounds() {
        let mut j = Jitter::new(7);
        for _ in 0..1000 {
            let d = j.around(s(60), 0.1);
            assert!(d >= s(54) && d <= s(66), "{d:?}");
            let h = j.below(s(300), 0.1);
            assert!(h >= s(270) && h <= s(300), "{h:?}");
        }
    }
}
