//! The loop with a table of pull-path answers (the real pipeline is tested against real
//! registries and containerd in tests/): what each answer does to conditions and Events.

use std::sync::Mutex;

use futures::future::BoxFuture;

use super::*;
use crate::agent::conditions::FakeClock;
use crate::credentials::CredentialSource;
use crate::pipeline::Checked;
use crate::probe::outcome::EndpointAttempt;
use crate::probe::{ProbeReport, Verdict};
use crate::runtime::Runtime;

/// One attempt: endpoint, failure reason (None = pulled), with the node's credential?
type Att = (&'static str, Option<Reason>, bool);

/// Answers by normalized image and depth; counts calls per depth.
#[derive(Default)]
struct Fake {
    answers: Mutex<HashMap<(String, Depth), Vec<Att>>>,
    calls: Mutex<Vec<(String, Depth)>>,
}

impl Fake {
    fn answer(&self, image: &str, depth: Depth, attempts: Vec<Att>) {
        let key = ImageRef::parse(image).unwrap().normalized();
        self.answers.lock().unwrap().insert((key, depth), attempts);
    }
    fn count(&self, depth: Depth) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.1 == depth)
            .count()
    }
}

fn attempt(a: &Att) -> EndpointAttempt {
    EndpointAttempt {
        endpoint: a.0.to_string(),
        role: "server".into(),
        origin: "test".into(),
        https_to_http: false,
        is_upstream: true,
        credential_source: a.2.then(|| CredentialSource::AuthFile {
            path: "/var/lib/kubelet/config.json".into(),
            key: "reg.example".into(),
        }),
        ok: a.1.is_none(),
        phase: a.1.map(|r| r.phase()),
        reason: a.1,
        message: String::new(),
        duration_ms: 1.0,
        phases: Vec::new(),
    }
}

fn report(image: &str, atts: &[Att]) -> ProbeReport {
    let attempts: Vec<EndpointAttempt> = atts.iter().map(attempt).collect();
    let refs: Vec<&EndpointAttempt> = attempts.iter().collect();
    let ok = attempts.iter().position(|a| a.ok);
    let decisive = ok
        .or_else(|| crate::probe::verdict::reported_failure(Runtime::Containerd, &refs))
        .unwrap_or(0);
    let d = &attempts[decisive];
    ProbeReport {
        image: image.to_string(),
        reference: Some(image.to_string()),
        endpoint: Some(d.endpoint.clone()),
        verdict: match ok {
            Some(0) => Verdict::Ready,
            Some(_) => Verdict::Degraded,
            None => Verdict::NotReady,
        },
        phase: d.phase,
        reason: d.reason,
        message: d.reason.map(|r| r.as_str().to_string()).unwrap_or_default(),
        hint: None,
        duration_ms: 1.0,
        phases: Vec::new(),
        credential_source: None,
        manifest: None,
        tls: None,
        ratelimit: None,
        retry_after_s: None,
        attempts,
    }
}

impl PullPath for Fake {
    fn runtime(&self) -> Runtime {
        Runtime::Containerd
    }
    fn plan_key(&self, image: &ImageRef) -> String {
        image.registry_host()
    }
    fn check<'a>(
        &'a self,
        image: &'a ImageRef,
        given: &'a str,
        _creds: Creds<'a>,
        depth: Depth,
    ) -> BoxFuture<'a, Checked> {
        Box::pin(async move {
            let key = (image.normalized(), depth);
            self.calls.lock().unwrap().push(key.clone());
            let atts = self
                .answers
                .lock()
                .unwrap()
                .get(&key)
                .cloned()
                .unwrap_or_else(|| vec![("https://reg.example/v2", None, false)]);
            Checked {
                report: report(given, &atts),
                problems: Vec::new(),
                depth,
            }
        })
    }
}

fn agent(images: &[&str], fake: Arc<Fake>) -> (Agent, FakeClock) {
    let cfg = AgentConfig {
        images: images.iter().map(|s| s.to_string()).collect(),
        fleet: crate::agent::config::FleetConfig {
            node_count: Some(5000),
            ..Default::default()
        },
        ..Default::default()
    };
    let state = Arc::new(AgentState::new("node-1".into(), cfg.interval));
    let clock = FakeClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let mut a = Agent::new(
        cfg,
        "node-1".into(),
        state.clone(),
        fake,
        Arc::new(clock.clone()),
    );
    a.exporters
        .push(Box::new(crate::agent::export::StatusExporter {
            state,
            book: Default::default(),
        }));
    (a, clock)
}

fn status(a: &Agent, k: ConditionKind) -> bool {
    a.manager.lock().unwrap().status(k)
}

fn message(a: &Agent, k: ConditionKind) -> String {
    let m = a.manager.lock().unwrap();
    m.records(SystemTime::UNIX_EPOCH)
        .into_iter()
        .find(|r| r.kind == k)
        .map(|r| r.message)
        .unwrap_or_default()
}

/// Two cycles a minute apart, path checks due each time (the default `fail_after` is 2).
async fn two_cycles(a: &mut Agent, clock: &FakeClock) {
    for _ in 0..2 {
        a.backoff.clear();
        a.cycle().await;
        clock.advance(Duration::from_secs(60));
    }
}

#[tokio::test]
async fn cycles_flip_conditions_with_hysteresis_and_share_image_checks() {
    let fake = Arc::new(Fake::default());
    let (mut a, clock) = agent(
        &["reg.example/a:1", "reg.example/b:1", "q.example/c:1"],
        fake.clone(),
    );
    a.cycle().await;
    // Two registries → two path checks; three new images → three image checks at once.
    assert_eq!(fake.count(Depth::Path), 2);
    assert_eq!(fake.count(Depth::Image), 3);
    assert!(a.state.ready());
    let down = vec![(
        "https://reg.example/v2",
        Some(Reason::ConnectTimeout),
        false,
    )];
    fake.answer("reg.example/a:1", Depth::Path, down);
    clock.advance(Duration::from_secs(60));
    fake.calls.lock().unwrap().clear();
    a.cycle().await;
    assert!(
        !status(&a, ConditionKind::RegistryUnreachable),
        "one failing cycle is a blip"
    );
    // The plan is now backed off: the next cycle does not probe it but keeps its failure.
    clock.advance(Duration::from_secs(60));
    a.cycle().await;
    assert!(status(&a, ConditionKind::RegistryUnreachable));
    assert_eq!(
        message(&a, ConditionKind::RegistryUnreachable),
        "reg.example: ConnectTimeout at https://reg.example/v2"
    );
    // At 5000 nodes, known images are rarely due on one node.
    assert!(
        fake.count(Depth::Image) <= 1,
        "{}",
        fake.count(Depth::Image)
    );
    let doc = a.state.status.lock().unwrap().clone();
    assert_eq!(doc.summary.len(), 2);
    assert!(doc.registries.iter().any(|r| r.registry == "reg.example"));
    assert!(doc.targets.iter().any(|t| t.key == "path reg.example"));
}

#[tokio::test]
async fn a_missing_representative_tag_is_no_node_alarm() {
    // The path check's image is a tag missing on the mirror (404 proves the path); the
    // fallback to the upstream fails TLS. The registry works: no node condition.
    let fake = Arc::new(Fake::default());
    let (mut a, clock) = agent(&["reg.example/missing:1"], fake.clone());
    let atts = vec![
        (
            "https://mirror.example/v2",
            Some(Reason::ManifestNotFound),
            false,
        ),
        (
            "https://reg.example/v2",
            Some(Reason::TLSUnknownAuthority),
            false,
        ),
    ];
    fake.answer("reg.example/missing:1", Depth::Path, atts.clone());
    fake.answer("reg.example/missing:1", Depth::Image, atts);
    two_cycles(&mut a, &clock).await;
    assert!(!status(&a, ConditionKind::RegistryUnreachable));
    assert!(!status(&a, ConditionKind::RegistryAuthFailing));
}

#[tokio::test]
async fn a_rejected_node_credential_on_the_first_endpoint_is_auth_not_tls() {
    // hosts.toml with the CA on [host."https://reg"] only: the host answers 401 to the
    // node's credential, `server` fails TLS. containerd reports the 401.
    let fake = Arc::new(Fake::default());
    let (mut a, clock) = agent(&["reg.example/app:1"], fake.clone());
    fake.answer(
        "reg.example/app:1",
        Depth::Path,
        vec![
            (
                "https://reg.example/v2",
                Some(Reason::AuthCredentialsRejected),
                true,
            ),
            (
                "https://reg.example/v2",
                Some(Reason::TLSUnknownAuthority),
                true,
            ),
        ],
    );
    two_cycles(&mut a, &clock).await;
    assert!(status(&a, ConditionKind::RegistryAuthFailing));
    assert!(!status(&a, ConditionKind::RegistryUnreachable));
    assert_eq!(
        message(&a, ConditionKind::RegistryAuthFailing),
        "reg.example: AuthCredentialsRejected at https://reg.example/v2"
    );
}

#[tokio::test]
async fn a_dead_mirror_before_an_untrusted_upstream_reports_the_mirror() {
    let fake = Arc::new(Fake::default());
    let (mut a, clock) = agent(&["reg.example/app:1"], fake.clone());
    fake.answer(
        "reg.example/app:1",
        Depth::Path,
        vec![
            (
                "https://mirror.example/v2",
                Some(Reason::ConnectRefused),
                false,
            ),
            (
                "https://reg.example/v2",
                Some(Reason::TLSUnknownAuthority),
                false,
            ),
        ],
    );
    two_cycles(&mut a, &clock).await;
    assert!(status(&a, ConditionKind::RegistryUnreachable));
    assert_eq!(
        message(&a, ConditionKind::RegistryUnreachable),
        "reg.example: ConnectRefused at https://mirror.example/v2"
    );
}

#[tokio::test]
async fn a_second_broken_registry_shows_in_the_condition_at_once() {
    let fake = Arc::new(Fake::default());
    let (mut a, clock) = agent(&["a.example/x:1", "b.example/y:1"], fake.clone());
    let down = |host: &'static str| vec![(host, Some(Reason::ConnectRefused), false)];
    fake.answer("a.example/x:1", Depth::Path, down("https://a.example/v2"));
    two_cycles(&mut a, &clock).await;
    assert!(status(&a, ConditionKind::RegistryUnreachable));
    a.manager.lock().unwrap().write_succeeded(clock.now());
    fake.answer("b.example/y:1", Depth::Path, down("https://b.example/v2"));
    a.backoff.clear();
    a.cycle().await;
    let m = a.manager.lock().unwrap();
    let due = m
        .pending_write(clock.now())
        .expect("a write is due for the second registry");
    let rec = due
        .iter()
        .find(|r| r.kind == ConditionKind::RegistryUnreachable)
        .unwrap();
    assert!(
        rec.message.contains("b.example: ConnectRefused"),
        "{}",
        rec.message
    );
}
