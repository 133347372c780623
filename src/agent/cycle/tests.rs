//! The loop with a table of pull-path answers (the real pipeline is tested against real
//! registries and containerd in tests/): what each answer does to conditions and Events.

use std::sync::Mutex;

use futures::future::BoxFuture;

use super::*;
use crate::agent::conditions::FakeClock;
use crate::agent::outcome::WorkloadKind;
use crate::credentials::CredentialSource;
use crate::pipeline::{Checked, Creds};
use crate::probe::outcome::EndpointAttempt;
use crate::probe::Depth;
use crate::probe::{ProbeReport, Verdict};
use crate::runtime::Runtime;

/// One attempt: endpoint, failure reason (None = pulled), with the node's credential?
type Att = (&'static str, Option<Reason>, bool);

/// Answers by normalized image and depth; counts calls per depth.
#[derive(Default)]
struct Fake {
    answers: Mutex<HashMap<(String, Depth), Vec<Att>>>,
    calls: Mutex<Vec<(String, Depth)>>,
    /// Normalized images whose checks never finish (a tarpit).
    hang: Mutex<HashSet<String>>,
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
        .or_else(|| crate::probe::verdict::reported_failure(Runtime::Containerd.into(), &refs))
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
        warnings: Vec::new(),
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
            if self.hang.lock().unwrap().contains(&key.0) {
                futures::future::pending::<()>().await;
            }
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
        "reg.example: AuthCredentialsRejected at https://reg.example/v2 with auth-file:/var/lib/kubelet/config.json#reg.example"
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

/// Keeps every cycle's outcome.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<CycleOutcome>>>);

impl Exporter for Recorder {
    fn export(&mut self, o: &CycleOutcome) {
        self.0.lock().unwrap().push(o.clone());
    }
}

impl Recorder {
    fn last(&self) -> CycleOutcome {
        self.0.lock().unwrap().last().cloned().unwrap()
    }
}

fn pod(ns: &str, name: &str, images: &[&str]) -> PodInfo {
    PodInfo {
        namespace: ns.into(),
        name: name.into(),
        uid: format!("uid-{ns}-{name}"),
        images: images.iter().map(|s| s.to_string()).collect(),
        pull_secrets: Vec::new(),
    }
}

/// An agent with `pods` on its node (as the pod watch would give them) and a recorder.
fn agent_with_pods(
    images: &[&str],
    pods: Vec<PodInfo>,
    fake: Arc<Fake>,
    tune: impl FnOnce(&mut AgentConfig),
) -> (Agent, FakeClock, Recorder) {
    let (mut a, clock) = agent(images, fake);
    tune(&mut a.cfg);
    a.inflight = InFlight::new(a.cfg.concurrency);
    let store: crate::k8s::pods::PodStore = Default::default();
    for p in pods {
        store.lock().unwrap().insert(p.uid.clone(), p);
    }
    a.pods = Some(store);
    a.store = a.cfg.state_dir.as_deref().map(Store::new);
    let rec = Recorder::default();
    a.exporters.push(Box::new(rec.clone()));
    (a, clock, rec)
}

fn nxdomain(host: &'static str) -> Vec<Att> {
    vec![(host, Some(Reason::DNSNameNotFound), false)]
}

#[tokio::test]
async fn a_tenants_typo_is_an_event_on_its_pod_never_a_node_condition() {
    let fake = Arc::new(Fake::default());
    let pods = vec![pod("team-a", "web", &["nx.invalid/team/app:v1"])];
    let (mut a, clock, rec) = agent_with_pods(&[], pods, fake.clone(), |_| {});
    fake.answer(
        "nx.invalid/team/app:v1",
        Depth::Path,
        nxdomain("https://nx.invalid/v2"),
    );
    fake.answer(
        "nx.invalid/team/app:v1",
        Depth::Image,
        nxdomain("https://nx.invalid/v2"),
    );
    for _ in 0..3 {
        two_cycles(&mut a, &clock).await;
    }
    assert!(!status(&a, ConditionKind::RegistryUnreachable));
    let o = rec.last();
    let p = o.paths.iter().find(|p| p.registry == "nx.invalid").unwrap();
    assert_eq!(p.scope, Scope::Workload);
    let w = o
        .workload
        .iter()
        .find(|w| w.kind == WorkloadKind::Path(Reason::DNSNameNotFound))
        .expect("an Event for the pod");
    assert_eq!(w.pod.name, "web");
    assert!(w.message.contains("nx.invalid"), "{}", w.message);
}

#[tokio::test]
async fn a_registry_of_a_trusted_namespace_or_the_config_moves_the_condition() {
    for (ns, images) in [
        ("kube-system", vec![]),
        ("team-a", vec!["nx.invalid/other:1"]),
    ] {
        let fake = Arc::new(Fake::default());
        let pods = vec![pod(ns, "p", &["nx.invalid/team/app:v1"])];
        let (mut a, clock, rec) = agent_with_pods(&images, pods, fake.clone(), |_| {});
        for img in ["nx.invalid/team/app:v1", "nx.invalid/other:1"] {
            fake.answer(img, Depth::Path, nxdomain("https://nx.invalid/v2"));
        }
        two_cycles(&mut a, &clock).await;
        assert!(status(&a, ConditionKind::RegistryUnreachable), "{ns}");
        assert!(rec.last().paths.iter().all(|p| p.scope.is_node()), "{ns}");
    }
}

#[tokio::test]
async fn the_agents_own_namespace_is_trusted() {
    let fake = Arc::new(Fake::default());
    let pods = vec![pod("pullprobe", "p", &["nx.invalid/team/app:v1"])];
    let (mut a, clock, _) = agent_with_pods(&[], pods, fake.clone(), |_| {});
    a.namespace = Some("pullprobe".into());
    fake.answer(
        "nx.invalid/team/app:v1",
        Depth::Path,
        nxdomain("https://nx.invalid/v2"),
    );
    two_cycles(&mut a, &clock).await;
    assert!(status(&a, ConditionKind::RegistryUnreachable));
}

#[tokio::test]
async fn a_tenant_registry_reached_before_drifts_into_a_node_condition() {
    let fake = Arc::new(Fake::default());
    let pods = vec![pod("team-a", "web", &["reg.tenant/app:v1"])];
    let (mut a, clock, rec) = agent_with_pods(&[], pods, fake.clone(), |c| {
        c.tenancy.drift_min_age = Duration::from_secs(3600);
    });
    a.cycle().await;
    assert!(
        rec.last().paths[0].scope == Scope::Workload,
        "reached, but not long ago"
    );
    clock.advance(Duration::from_secs(7200));
    let dns_gone = vec![(
        "https://reg.tenant/v2",
        Some(Reason::DNSServerFailure),
        false,
    )];
    fake.answer("reg.tenant/app:v1", Depth::Path, dns_gone);
    two_cycles(&mut a, &clock).await;
    assert!(status(&a, ConditionKind::RegistryUnreachable));
    assert_eq!(
        rec.last().paths[0].scope,
        Scope::Node(crate::agent::scope::NodeReason::ReachedBefore)
    );
}

#[tokio::test]
async fn a_tarpit_never_holds_back_the_other_registries() {
    let fake = Arc::new(Fake::default());
    let tarpits: Vec<String> = (0..50)
        .map(|i| format!("tarpit-{i}.tenant/app:v1"))
        .collect();
    let refs: Vec<&str> = tarpits.iter().map(String::as_str).collect();
    for t in &tarpits {
        fake.hang
            .lock()
            .unwrap()
            .insert(ImageRef::parse(t).unwrap().normalized());
    }
    let pods = vec![pod("team-a", "tarpit", &refs)];
    let (mut a, clock, rec) = agent_with_pods(&["reg.example/app:1"], pods, fake.clone(), |c| {
        c.cycle_budget = Some(Duration::from_secs(1));
        c.tenancy.max_images_per_pod = 64;
        c.tenancy.max_new_hosts_per_cycle = 64;
    });
    for round in 0..3 {
        fake.calls.lock().unwrap().clear();
        a.cycle().await;
        let real = fake
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.0.starts_with("reg.example/") && c.1 == Depth::Path)
            .count();
        assert_eq!(
            real, 1,
            "round {round}: the real registry is checked every cycle"
        );
        let o = rec.last();
        assert!(
            o.checks.iter().any(|c| c.target.registry == "reg.example"),
            "round {round}"
        );
        // Tarpit path checks stay in flight, never launched twice; their image checks wait
        // for an answer that never comes.
        assert_eq!(o.counts.in_flight, 50, "round {round}");
        clock.advance(Duration::from_secs(60));
    }
    // Then the real registry breaks: its condition turns True on time.
    fake.answer(
        "reg.example/app:1",
        Depth::Path,
        vec![(
            "https://reg.example/v2",
            Some(Reason::ConnectRefused),
            false,
        )],
    );
    two_cycles(&mut a, &clock).await;
    assert!(status(&a, ConditionKind::RegistryUnreachable));
}

#[tokio::test]
async fn caps_bound_what_one_namespace_can_make_the_agent_probe() {
    let fake = Arc::new(Fake::default());
    let many: Vec<String> = (0..10).map(|i| format!("h{i}.tenant/app:v1")).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let pods = vec![
        pod("team-a", "big", &refs),
        pod(
            "team-a",
            "second",
            &["h0.tenant/app:v1", "other.tenant/x:1"],
        ),
        pod("kube-system", "sys", &refs),
    ];
    let (mut a, _clock, rec) = agent_with_pods(&[], pods, fake.clone(), |c| {
        c.tenancy.max_images_per_pod = 4;
        c.tenancy.max_targets_per_namespace = 4;
        c.tenancy.max_new_hosts_per_cycle = 3;
    });
    a.cycle().await;
    let o = rec.last();
    // kube-system is not capped: its 10 images are targets. team-a's first 4 are among
    // them and fill its cap, so "second"'s other.tenant image is not a target.
    assert_eq!(o.counts.images, 10, "{:?}", o.counts);
    let limited: Vec<&str> = o
        .workload
        .iter()
        .filter(|w| w.kind == WorkloadKind::NotChecked)
        .map(|w| w.pod.name.as_str())
        .collect();
    assert_eq!(limited, vec!["big", "second"]);
    // New hosts per cycle: node-scope (kube-system's) first, the rest deferred.
    assert_eq!(fake.count(Depth::Path), 3);
    assert_eq!(o.counts.deferred, 10 - 3);
}

#[tokio::test]
async fn backoff_and_registries_reached_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(Fake::default());
    let tune = |c: &mut AgentConfig| c.state_dir = Some(dir.path().to_path_buf());
    let (mut a, _clock, _) = agent_with_pods(
        &["reg.example/app:1", "ok.example/x:1"],
        vec![],
        fake.clone(),
        tune,
    );
    for depth in [Depth::Path, Depth::Image] {
        let timeout = vec![(
            "https://reg.example/v2",
            Some(Reason::ConnectTimeout),
            false,
        )];
        fake.answer("reg.example/app:1", depth, timeout);
    }
    a.cycle().await;
    assert!(dir.path().join("state.json").exists());
    // A new agent on the same state: the failing registry stays backed off.
    let (mut b, _clock, _) = agent_with_pods(
        &["reg.example/app:1", "ok.example/x:1"],
        vec![],
        fake.clone(),
        tune,
    );
    b.restore();
    fake.calls.lock().unwrap().clear();
    b.cycle().await;
    let calls = fake.calls.lock().unwrap().clone();
    assert!(
        calls.iter().all(|c| !c.0.starts_with("reg.example/")),
        "{calls:?}"
    );
    assert!(calls.iter().any(|c| c.0.starts_with("ok.example/")));
    assert!(b.reached.qualifies(
        "ok.example",
        SystemTime::now() + Duration::from_secs(1),
        Duration::ZERO
    ));
}
