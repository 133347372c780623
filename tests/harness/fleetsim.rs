//! A simulated fleet for the controller's tests and benchmark: one thread, one tokio
//! runtime, one kube client and ONE watch on all NodePullStatus objects, speaking the
//! agents' side of the protocol against a REAL kube-apiserver (the CRDs applied):
//!
//! - creates N Nodes (Ready; labels per node) and, for nodes with an agent, their
//!   NodePullStatus with a status (a patch of the status subresource, field manager
//!   `pullprobe-agent`): heartbeat, interval, one registry
//!   path per configured registry (fingerprint, ok/failing, fresh or stale `checkedAt`);
//! - watches every NodePullStatus and answers each new assignment in `spec.assignments`
//!   in that node's status (`answers`, newest last, at most 64), `Path` from the node's
//!   path states, `Image` from the configured verdict of each image (ready by default) —
//!   one status write per assignment, as an agent does;
//! - records every assignment it saw, so tests count them.
//!
//! ```ignore
//! let sim = FleetSim::builder(client_token_config)
//!     .nodes(40)
//!     .registry("r.example", |i| SimPath::ok(if i < 20 { "fpA" } else { "fpB" }))
//!     .image_verdict("r.example/app:2", SimCell::not_ready("ManifestUnknown"))
//!     .start();
//! sim.assignments();            // every assignment seen: (node, depth, images)
//! ```
//! The simulator never sleeps to wait for state; `start` returns once every object exists.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ::kube::api::{Api, Patch, PatchParams, PostParams};
use ::kube::runtime::{watcher, WatchStreamExt};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use pullprobe::api::{
    Answer, AssignmentDepth, Cell, ImageAnswer, NodePullStatus, NodePullStatusSpec,
    NodePullStatusStatus, RegistryPath,
};

/// How a node's agent behaves.
#[derive(Clone, Debug, PartialEq)]
pub enum SimAgent {
    /// Writes its status and answers assignments.
    Live,
    /// No NodePullStatus at all.
    None,
    /// Its heartbeat stopped an hour ago.
    Silent,
    /// Heartbeats but never answers an assignment.
    Mute,
}

/// One registry path on one node.
#[derive(Clone, Debug)]
pub struct SimPath {
    pub fingerprint: String,
    /// `None`: the path works; `Some(reason)`: failing with that reason.
    pub failing: Option<String>,
    /// `checkedAt` an hour ago (the controller must ask for a fresh answer).
    pub stale: bool,
}

impl SimPath {
    pub fn ok(fp: &str) -> SimPath {
        SimPath {
            fingerprint: fp.into(),
            failing: None,
            stale: false,
        }
    }
    pub fn failing(fp: &str, reason: &str) -> SimPath {
        SimPath {
            failing: Some(reason.into()),
            ..SimPath::ok(fp)
        }
    }
    pub fn stale(fp: &str) -> SimPath {
        SimPath {
            stale: true,
            ..SimPath::ok(fp)
        }
    }
}

/// The verdict an image check gives.
#[derive(Clone, Debug)]
pub struct SimCell(pub Cell);

impl SimCell {
    pub fn ready() -> SimCell {
        SimCell(Cell {
            verdict: "ready".into(),
            source: Some("probe".into()),
            ..Default::default()
        })
    }
    pub fn not_ready(reason: &str, host: &str) -> SimCell {
        SimCell(Cell {
            verdict: "not_ready".into(),
            phase: Some("manifest".into()),
            reason: Some(reason.into()),
            host: Some(host.into()),
            message: format!("{reason} (simulated)"),
            source: Some("probe".into()),
            ..Default::default()
        })
    }
}

type PathFn = Arc<dyn Fn(usize) -> SimPath + Send + Sync>;
type NodeFn<T> = Arc<dyn Fn(usize) -> T + Send + Sync>;

/// What the simulated fleet looks like.
pub struct FleetSimBuilder {
    config: ::kube::Config,
    nodes: usize,
    prefix: String,
    interval_seconds: u32,
    registries: Vec<(String, PathFn)>,
    verdicts: HashMap<String, SimCell>,
    agent: NodeFn<SimAgent>,
    labels: NodeFn<BTreeMap<String, String>>,
}

/// One assignment the fleet saw.
#[derive(Clone, Debug, PartialEq)]
pub struct Seen {
    pub node: String,
    pub id: String,
    pub depth: AssignmentDepth,
    pub images: Vec<String>,
    pub namespace: String,
    pub pull_secrets: Vec<String>,
}

/// A running simulated fleet (stopped on Drop).
pub struct FleetSim {
    seen: Arc<Mutex<Vec<Seen>>>,
    node_names: Vec<String>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FleetSim {
    /// A fleet whose client uses `config` (e.g. `KubeApiServer::kube_config(token)`).
    pub fn builder(config: ::kube::Config) -> FleetSimBuilder {
        FleetSimBuilder {
            config,
            nodes: 3,
            prefix: "sim".into(),
            interval_seconds: 300,
            registries: Vec::new(),
            verdicts: HashMap::new(),
            agent: Arc::new(|_| SimAgent::Live),
            labels: Arc::new(|_| BTreeMap::new()),
        }
    }

    /// Every assignment seen so far.
    pub fn assignments(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The node names, in index order (`sim-00000`, …).
    pub fn nodes(&self) -> &[String] {
        &self.node_names
    }
}

impl Drop for FleetSim {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl FleetSimBuilder {
    pub fn nodes(mut self, n: usize) -> Self {
        self.nodes = n;
        self
    }
    pub fn prefix(mut self, p: &str) -> Self {
        self.prefix = p.into();
        self
    }
    /// A registry every node's agent keeps a path state for.
    pub fn registry(
        mut self,
        name: &str,
        f: impl Fn(usize) -> SimPath + Send + Sync + 'static,
    ) -> Self {
        self.registries.push((name.into(), Arc::new(f)));
        self
    }
    /// What an `Image` check of `image` answers (default ready).
    pub fn image_verdict(mut self, image: &str, cell: SimCell) -> Self {
        self.verdicts.insert(image.into(), cell);
        self
    }
    pub fn agent(mut self, f: impl Fn(usize) -> SimAgent + Send + Sync + 'static) -> Self {
        self.agent = Arc::new(f);
        self
    }
    pub fn labels(
        mut self,
        f: impl Fn(usize) -> BTreeMap<String, String> + Send + Sync + 'static,
    ) -> Self {
        self.labels = Arc::new(f);
        self
    }

    /// Creates the objects and starts answering; returns once every object exists.
    pub fn start(self) -> FleetSim {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let names: Vec<String> = (0..self.nodes)
            .map(|i| format!("{}-{i:05}", self.prefix))
            .collect();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let sim = Arc::new(Sim {
            names: names.clone(),
            b: self,
            seen: seen.clone(),
            answered: Mutex::new(HashMap::new()),
        });
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let client = ::kube::Client::try_from(sim.b.config.clone()).unwrap();
                sim.create_all(&client).await;
                let _ = ready_tx.send(());
                tokio::select! {
                    () = sim.clone().answer_forever(client) => {}
                    _ = stop_rx => {}
                }
            });
        });
        ready_rx
            .recv_timeout(Duration::from_secs(600))
            .expect("the simulated fleet did not finish creating its objects");
        FleetSim {
            seen,
            node_names: names,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

struct Sim {
    names: Vec<String>,
    b: FleetSimBuilder,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Per node: the answers written so far (the agent's own copy: it is the only writer).
    answered: Mutex<HashMap<String, Vec<Answer>>>,
}

fn rfc3339(t: SystemTime) -> String {
    jiff::Timestamp::try_from(t)
        .unwrap()
        .round(jiff::Unit::Second)
        .unwrap()
        .to_string()
}

const CONCURRENCY: usize = 64;

impl Sim {
    fn index(&self, node: &str) -> Option<usize> {
        node.rsplit('-').next()?.parse().ok()
    }

    async fn create_all(&self, client: &::kube::Client) {
        let nodes: Api<Node> = Api::all(client.clone());
        let npss: Api<NodePullStatus> = Api::all(client.clone());
        futures::stream::iter(0..self.names.len())
            .map(|i| {
                let (nodes, npss) = (nodes.clone(), npss.clone());
                async move { self.create_one(&nodes, &npss, i).await }
            })
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<()>>()
            .await;
    }

    async fn create_one(&self, nodes: &Api<Node>, npss: &Api<NodePullStatus>, i: usize) {
        let name = &self.names[i];
        let now = rfc3339(SystemTime::now());
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": (self.b.labels)(i)},
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                "lastHeartbeatTime": now, "lastTransitionTime": now}]},
        }))
        .unwrap();
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(::kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("create node {name}: {e}"),
        }
        // The API server taints a new Node not-ready (TaintNodesByCondition); the node
        // lifecycle controller would lift it once the kubelet reports Ready.
        let untaint = serde_json::json!({"spec": {"taints": null}});
        nodes
            .patch(name, &PatchParams::default(), &Patch::Merge(&untaint))
            .await
            .unwrap_or_else(|e| panic!("untaint node {name}: {e}"));
        let agent = (self.b.agent)(i);
        if agent == SimAgent::None {
            return;
        }
        let nps = NodePullStatus::new(name, NodePullStatusSpec::default());
        match npss.create(&PostParams::default(), &nps).await {
            Ok(_) => {}
            Err(::kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("create nodepullstatus {name}: {e}"),
        }
        let st = self.status(i, &agent, Vec::new());
        self.write_status(npss, name, &st).await;
    }

    /// The node's status with `answers`.
    fn status(&self, i: usize, agent: &SimAgent, answers: Vec<Answer>) -> NodePullStatusStatus {
        let now = SystemTime::now();
        let hour_ago = now - Duration::from_secs(3600);
        let registries: Vec<RegistryPath> = self
            .b
            .registries
            .iter()
            .map(|(reg, f)| {
                let p = f(i);
                RegistryPath {
                    registry: reg.clone(),
                    fingerprint: p.fingerprint.clone(),
                    state: if p.failing.is_some() { "failing" } else { "ok" }.into(),
                    cell: path_cell(reg, &p),
                    checked_at: rfc3339(if p.stale { hour_ago } else { now }),
                }
            })
            .collect();
        NodePullStatusStatus {
            agent_version: "sim".into(),
            runtime: "containerd 1.7.24".into(),
            platform: "linux/amd64".into(),
            heartbeat_time: Some(rfc3339(if *agent == SimAgent::Silent {
                hour_ago
            } else {
                now
            })),
            interval_seconds: self.b.interval_seconds,
            registries_total: registries.len() as u32,
            registries_failing: registries.iter().filter(|r| r.state == "failing").count() as u32,
            registries,
            answers,
        }
    }

    async fn write_status(
        &self,
        npss: &Api<NodePullStatus>,
        name: &str,
        st: &NodePullStatusStatus,
    ) {
        // A merge patch of the status subresource, without empty strings (kube-apiserver
        // 1.20 refuses `""` in a custom resource's string field; absent reads as empty).
        let mut body = serde_json::json!({"status": st});
        pullprobe::api::drop_empty_strings(&mut body);
        let pp = PatchParams {
            field_manager: Some("pullprobe-agent".into()),
            ..Default::default()
        };
        for attempt in 0..5 {
            match npss.patch_status(name, &pp, &Patch::Merge(&body)).await {
                Ok(_) => return,
                Err(e) if attempt == 4 => panic!("write status {name}: {e}: {body}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100 << attempt)).await,
            }
        }
    }

    async fn answer_forever(self: Arc<Self>, client: ::kube::Client) {
        let npss: Api<NodePullStatus> = Api::all(client);
        let mut stream = watcher::watcher(npss.clone(), watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        let sem = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
        while let Some(Ok(obj)) = stream.next().await {
            let Some(name) = obj.metadata.name.clone() else {
                continue;
            };
            let Some(i) = self.index(&name) else { continue };
            let agent = (self.b.agent)(i);
            if agent != SimAgent::Live {
                continue;
            }
            let new: Vec<_> = {
                let answered = self.answered.lock().unwrap();
                let have: HashSet<&str> = answered
                    .get(&name)
                    .map(|a| a.iter().map(|a| a.id.as_str()).collect())
                    .unwrap_or_default();
                obj.spec
                    .assignments
                    .iter()
                    .filter(|a| !have.contains(a.id.as_str()))
                    .cloned()
                    .collect()
            };
            if new.is_empty() {
                continue;
            }
            let (this, npss, sem) = (self.clone(), npss.clone(), sem.clone());
            tokio::spawn(async move {
                let _permit = sem.acquire_owned().await;
                this.answer(&npss, &name, i, new).await;
            });
        }
    }

    async fn answer(
        &self,
        npss: &Api<NodePullStatus>,
        name: &str,
        i: usize,
        new: Vec<pullprobe::api::Assignment>,
    ) {
        let st = {
            let mut answered = self.answered.lock().unwrap();
            let list = answered.entry(name.to_string()).or_default();
            for a in &new {
                if list.iter().any(|x| x.id == a.id) {
                    continue;
                }
                self.seen.lock().unwrap().push(Seen {
                    node: name.to_string(),
                    id: a.id.clone(),
                    depth: a.depth,
                    images: a.images.clone(),
                    namespace: a.namespace.clone(),
                    pull_secrets: a.pull_secrets.clone(),
                });
                list.push(self.answer_one(i, a));
            }
            let extra = list.len().saturating_sub(64);
            list.drain(..extra);
            self.status(i, &SimAgent::Live, list.clone())
        };
        self.write_status(npss, name, &st).await;
    }

    fn answer_one(&self, i: usize, a: &pullprobe::api::Assignment) -> Answer {
        let results = a
            .images
            .iter()
            .map(|img| {
                let reg = pullprobe::reference::ImageRef::parse(img)
                    .map(|r| r.domain)
                    .unwrap_or_default();
                let path = self
                    .b
                    .registries
                    .iter()
                    .find(|(r, _)| *r == reg)
                    .map(|(_, f)| f(i))
                    .unwrap_or_else(|| SimPath::ok("fp-default"));
                let cell = match (&path.failing, a.depth) {
                    (Some(_), _) | (None, AssignmentDepth::Path) => path_cell(&reg, &path),
                    (None, AssignmentDepth::Image) => {
                        self.b
                            .verdicts
                            .get(img)
                            .cloned()
                            .unwrap_or_else(SimCell::ready)
                            .0
                    }
                };
                ImageAnswer {
                    image: img.clone(),
                    fingerprint: path.fingerprint.clone(),
                    path_state: if path.failing.is_some() {
                        "failing"
                    } else {
                        "ok"
                    }
                    .into(),
                    cell,
                }
            })
            .collect();
        Answer {
            id: a.id.clone(),
            depth: a.depth,
            answered_at: rfc3339(SystemTime::now()),
            results,
            ..Default::default()
        }
    }
}

fn path_cell(reg: &str, p: &SimPath) -> Cell {
    match &p.failing {
        None => Cell {
            verdict: "ready".into(),
            source: Some("schedule".into()),
            ..Default::default()
        },
        Some(reason) => Cell {
            verdict: "not_ready".into(),
            phase: Some("connect".into()),
            reason: Some(reason.clone()),
            host: Some(reg.into()),
            message: format!("{reason} at {reg} (simulated)"),
            source: Some("schedule".into()),
            ..Default::default()
        },
    }
}
