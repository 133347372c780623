use super::summary::registries_in;
use super::*;
use crate::agent::schedule::Jitter;
use crate::probe::Reason;
use std::time::{Duration, SystemTime};

const MIN: Duration = Duration::from_secs(60);

struct Sim {
    clock: FakeClock,
    m: ConditionManager,
    writes: Vec<Vec<ConditionRecord>>,
    api_up: bool,
    attempts: u32,
}

impl Sim {
    fn new(fail_after: u32, recover_after: u32) -> Sim {
        let clock = FakeClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let m = ConditionManager::new(
            fail_after,
            recover_after,
            5 * MIN,
            Jitter::new(1),
            clock.now(),
        );
        Sim {
            clock,
            m,
            writes: Vec::new(),
            api_up: true,
            attempts: 0,
        }
    }
    /// One cycle: observe, then sync once per second for a minute (the sync loop's tick).
    fn cycle(&mut self, unreachable: Option<&str>) -> Option<Change> {
        let now = self.clock.now();
        let c = self.m.observe(
            ConditionKind::RegistryUnreachable,
            unreachable.map(|r| Failing {
                reason: r.to_string(),
                message: format!("registry.example: {r} at https://registry.example/v2/"),
                registries: ["registry.example".to_string()].into(),
            }),
            now,
        );
        self.m
            .observe(ConditionKind::RegistryAuthFailing, None, now);
        for _ in 0..60 {
            let now = self.clock.now();
            if let Some(recs) = self.m.pending_write(now) {
                self.attempts += 1;
                if self.api_up {
                    self.writes.push(recs);
                    self.m.write_succeeded(now);
                } else {
                    self.m.write_failed(now, None);
                }
            }
            self.clock.advance(Duration::from_secs(1));
        }
        c
    }
    fn unreachable(&self) -> bool {
        self.m.status(ConditionKind::RegistryUnreachable)
    }
}

#[test]
fn first_sync_writes_once_then_nothing_until_heartbeat() {
    let mut s = Sim::new(2, 1);
    s.cycle(None);
    assert_eq!(s.writes.len(), 1, "initial write");
    // Three more healthy minutes: nothing changed, heartbeat not due (≥ 4.5 min).
    for _ in 0..3 {
        s.cycle(None);
    }
    assert_eq!(s.writes.len(), 1, "no write when nothing changed");
    // Over an hour of healthy cycles: one heartbeat per 4.5–5 minutes.
    for _ in 0..61 {
        s.cycle(None);
    }
    let n = s.writes.len();
    assert!((13..=15).contains(&n), "{n} writes in 65 minutes");
    // Heartbeats never late.
    for w in s.writes.windows(2) {
        let gap = w[1][0]
            .last_heartbeat
            .duration_since(w[0][0].last_heartbeat)
            .unwrap();
        assert!(gap <= 5 * MIN && gap >= Duration::from_secs(270), "{gap:?}");
    }
}

#[test]
fn hysteresis_one_write_per_transition() {
    let mut s = Sim::new(2, 1);
    s.cycle(None);
    let base = s.writes.len();
    // A blip: one failing cycle does not flip and does not write.
    assert_eq!(s.cycle(Some("ConnectTimeout")), None);
    assert!(!s.unreachable());
    s.cycle(None);
    assert_eq!(s.writes.len(), base);
    // Two consecutive failures flip it: exactly one write.
    assert_eq!(s.cycle(Some("ConnectTimeout")), None);
    let c = s.cycle(Some("ConnectTimeout")).expect("transition");
    assert!(c.transition && c.status);
    assert!(s.unreachable());
    assert_eq!(s.writes.len(), base + 1);
    let w = s.writes.last().unwrap();
    let rec = w
        .iter()
        .find(|r| r.kind == ConditionKind::RegistryUnreachable)
        .unwrap();
    assert!(rec.status);
    assert_eq!(rec.reason, "ConnectTimeout");
    let flipped_at = rec.last_transition;
    // Still failing, same reason: no write.
    s.cycle(Some("ConnectTimeout"));
    assert_eq!(s.writes.len(), base + 1);
    // Reason changes: one write, lastTransitionTime unchanged.
    let c = s.cycle(Some("TLSUnknownAuthority")).expect("reason change");
    assert!(!c.transition);
    assert_eq!(s.writes.len(), base + 2);
    let rec = s
        .writes
        .last()
        .unwrap()
        .iter()
        .find(|r| r.kind == ConditionKind::RegistryUnreachable)
        .unwrap()
        .clone();
    assert_eq!(rec.reason, "TLSUnknownAuthority");
    assert_eq!(rec.last_transition, flipped_at);
    // One pass recovers (recover_after = 1): one write.
    let c = s.cycle(None).expect("recovery");
    assert!(c.transition && !c.status);
    assert_eq!(s.writes.len(), base + 3);
    let rec = s
        .writes
        .last()
        .unwrap()
        .iter()
        .find(|r| r.kind == ConditionKind::RegistryUnreachable)
        .unwrap()
        .clone();
    assert!(!rec.status);
    assert_eq!(rec.reason, "RegistriesReachable");
    assert!(rec.last_transition > flipped_at);
    // The other condition never moved.
    let auth = s
        .writes
        .last()
        .unwrap()
        .iter()
        .find(|r| r.kind == ConditionKind::RegistryAuthFailing)
        .unwrap()
        .clone();
    assert!(!auth.status);
    assert_eq!(auth.last_transition, s.writes[0][0].last_transition);
}

#[test]
fn recover_after_needs_consecutive_passes() {
    let mut s = Sim::new(1, 3);
    s.cycle(Some("DNSFailure"));
    assert!(s.unreachable());
    s.cycle(None);
    s.cycle(None);
    s.cycle(Some("DNSFailure"));
    s.cycle(None);
    s.cycle(None);
    assert!(s.unreachable());
    s.cycle(None);
    assert!(!s.unreachable());
}

#[test]
fn failed_writes_retry_with_backoff_and_are_not_lost() {
    let mut s = Sim::new(1, 1);
    s.cycle(None);
    assert_eq!(s.writes.len(), 1);
    s.api_up = false;
    s.attempts = 0;
    s.cycle(Some("ConnectRefused"));
    s.cycle(Some("ConnectRefused"));
    // Backoff 1,2,4,8,16,32,60… (each wait ½–1× of that) over two minutes: a handful
    // of attempts, not 120.
    assert!(
        s.attempts >= 5 && s.attempts <= 10,
        "{} attempts",
        s.attempts
    );
    assert_eq!(s.writes.len(), 1);
    s.api_up = true;
    for _ in 0..2 {
        s.cycle(Some("ConnectRefused"));
    }
    assert_eq!(s.writes.len(), 2, "exactly one write once the API is back");
    assert!(s.writes[1]
        .iter()
        .any(|r| r.kind == ConditionKind::RegistryUnreachable && r.status));
}

#[test]
fn seeded_state_survives_restart_without_write() {
    let mut s = Sim::new(2, 1);
    let now = s.clock.now();
    let t0 = now - Duration::from_secs(3600);
    let existing = vec![
        ConditionRecord {
            kind: ConditionKind::RegistryUnreachable,
            status: true,
            reason: "DNSFailure".into(),
            message: "registry.example: DNSFailure at https://registry.example/v2/".into(),
            last_transition: t0,
            last_heartbeat: now - MIN,
        },
        ConditionRecord {
            kind: ConditionKind::RegistryAuthFailing,
            status: false,
            reason: "RegistryCredentialsAccepted".into(),
            message: "y".into(),
            last_transition: t0,
            last_heartbeat: now - MIN,
        },
    ];
    s.m.seed(&existing, now);
    assert!(s.unreachable());
    s.cycle(Some("DNSFailure"));
    s.cycle(Some("DNSFailure"));
    assert!(
        s.writes.is_empty(),
        "nothing changed: no write before the heartbeat"
    );
    s.cycle(Some("DNSFailure"));
    s.cycle(Some("DNSFailure"));
    s.cycle(Some("DNSFailure"));
    assert_eq!(s.writes.len(), 1, "heartbeat at seeded lastHeartbeat + 5m");
    let rec = &s.writes[0][0];
    assert_eq!(rec.last_transition, t0);
}

#[test]
fn message_is_bounded_on_char_boundary() {
    let long = "é".repeat(2000);
    let m = bound_message(&long);
    assert!(m.len() <= MESSAGE_MAX);
    assert!(m.ends_with("more bytes)"));
}

#[test]
fn summarize_is_stable_and_bounded() {
    let p = |r: &str, reason: &'static str| Problem {
        registry: r.into(),
        endpoint: format!("https://{r}/v2/"),
        reason,
        credential: None,
    };
    let f = summarize(vec![
        p("b.example", "ConnectTimeout"),
        p("a.example", "DNSFailure"),
        p("a.example", "DNSFailure"),
    ])
    .unwrap();
    assert_eq!(f.reason, "DNSFailure");
    assert_eq!(
        f.message,
        "a.example: DNSFailure at https://a.example/v2/; b.example: ConnectTimeout at https://b.example/v2/"
    );
    assert_eq!(f.registries.len(), 2);
    let many: Vec<Problem> = (0..500)
        .map(|i| p(&format!("r{i:03}.example"), "ConnectRefused"))
        .collect();
    let f = summarize(many).unwrap();
    assert!(f.message.len() <= MESSAGE_MAX);
    assert!(summarize(vec![]).is_none());
}

#[test]
fn a_second_failing_registry_is_written_at_once() {
    let mut s = Sim::new(1, 1);
    s.cycle(None);
    let failing = |regs: &[&str]| {
        summarize(
            regs.iter()
                .map(|r| Problem {
                    registry: r.to_string(),
                    endpoint: format!("https://{r}/v2"),
                    reason: "ConnectRefused",
                    credential: None,
                })
                .collect(),
        )
    };
    let now = s.clock.now();
    let c = s.m.observe(
        ConditionKind::RegistryUnreachable,
        failing(&["a.example"]),
        now,
    );
    assert!(c.is_some_and(|c| c.transition));
    assert!(s.m.pending_write(now).is_some());
    s.m.write_succeeded(now);
    // Same reason, same registry, new text: waits for the heartbeat.
    let mut again = failing(&["a.example"]).unwrap();
    again.message.push_str(" (2 ms later)");
    assert!(s
        .m
        .observe(ConditionKind::RegistryUnreachable, Some(again), now)
        .is_none());
    assert!(s.m.pending_write(now).is_none());
    // A second registry breaks with the same reason: one write now.
    let c = s.m.observe(
        ConditionKind::RegistryUnreachable,
        failing(&["a.example", "b.example"]),
        now,
    );
    assert!(c.is_some_and(|c| !c.transition && c.message.contains("b.example")));
    let recs = s.m.pending_write(now).expect("a write is due");
    assert!(recs
        .iter()
        .any(|r| r.message.contains("b.example: ConnectRefused")));
    assert_eq!(
        s.m.progress(ConditionKind::RegistryUnreachable).as_deref(),
        Some("passing 0/1 cycles")
    );
}

/// The waits of `n` consecutive failed writes of a manager seeded with `seed`.
fn retry_waits(seed: u64, n: usize, retry_after: Option<Duration>) -> Vec<Duration> {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut m = ConditionManager::new(1, 1, 5 * MIN, Jitter::new(seed), t);
    (0..n).map(|_| m.write_failed(t, retry_after)).collect()
}

#[test]
fn write_retries_are_jittered_within_half_to_full_backoff() {
    let steps = [1u64, 2, 4, 8, 16, 32, 60, 60];
    let a = retry_waits(1, steps.len(), None);
    let b = retry_waits(2, steps.len(), None);
    for (i, step) in steps.iter().enumerate() {
        let step = Duration::from_secs(*step);
        for w in [a[i], b[i]] {
            assert!(
                w >= step / 2 && w <= step,
                "wait {i}: {w:?} for a {step:?} step"
            );
        }
    }
    // Two nodes that failed together retry at different times.
    assert_ne!(a, b, "jitter must spread retries");
}

#[test]
fn retry_after_is_honoured_bounded_and_jittered() {
    // The server asks for 7 s: every wait is 7 s plus at most a quarter, until the
    // backoff itself grows past it.
    let w = retry_waits(3, 3, Some(Duration::from_secs(7)));
    for d in &w {
        assert!(
            *d >= Duration::from_secs(7) && d.as_secs_f64() <= 8.75,
            "{d:?}"
        );
    }
    // A shorter Retry-After than the backoff step does not shorten the backoff.
    let w = retry_waits(3, 8, Some(Duration::from_millis(10)));
    assert!(w[7] >= Duration::from_secs(30), "{w:?}");
    // A huge one is capped (and nothing overflows).
    let w = retry_waits(4, 2, Some(Duration::MAX));
    for d in &w {
        assert!(*d >= RETRY_AFTER_MAX && d.as_secs_f64() <= RETRY_AFTER_MAX.as_secs_f64() * 1.25);
    }
}

/// Issue 17: the condition names the node credential a registry rejected, as `/status`
/// does (its source, never its value).
#[test]
fn summarize_names_the_rejected_credential() {
    let f = summarize(vec![Problem {
        registry: "reg.example".into(),
        endpoint: "https://reg.example/v2".into(),
        reason: "AuthCredentialsRejected",
        credential: Some("auth-file:/var/lib/kubelet/config.json#reg.example".into()),
    }])
    .unwrap();
    assert_eq!(
        f.message,
        "reg.example: AuthCredentialsRejected at https://reg.example/v2 with auth-file:/var/lib/kubelet/config.json#reg.example"
    );
    assert_eq!(
        registries_in(&f.message),
        ["reg.example".to_string()].into()
    );
}

#[test]
fn condition_reason_collapses_dns() {
    assert_eq!(condition_reason(Reason::DNSTimeout), "DNSFailure");
    assert_eq!(condition_reason(Reason::DNSNameNotFound), "DNSFailure");
    assert_eq!(condition_reason(Reason::ConnectTimeout), "ConnectTimeout");
    assert_eq!(
        condition_reason(Reason::TLSUnknownAuthority),
        "TLSUnknownAuthority"
    );
}
