//! Asking the agents, in two rounds, through the API server's pod proxy.
//!
//! 1. **Path** (every node): "can you reach the registry of each image?" — an agent
//!    answers from its schedule's path check when it is younger than its interval, so a
//!    registry in use costs the registry nothing; a new one costs one path check per
//!    (node, registry plan). Each answer carries a fingerprint of what makes image facts
//!    equal between nodes (runtime, platform, endpoint list, credential sources).
//! 2. **Image** (one node per fingerprint): tag, platform and blob are checked once per
//!    (image, fingerprint) — by a node chosen by a stable hash, so different images
//!    spread over different nodes — and shared with every node of that fingerprint whose
//!    own path works. A fleet of identical nodes checks each image once, whatever its size.
//!
//! A node whose path fails keeps its own answer; a node without an agent or an answer is
//! `unknown`, never dropped.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::matrix::{AgentInfo, Cell, CellVerdict, UnknownReason};
use super::wire::{self, Reply};
use crate::agent::ondemand::{PreflightRequest, RequestDepth};
use crate::k8s::nodes::{proxy_post, AgentAddr, ProxyError};

/// The credentials context of a request: the pod's namespace, pull secrets, service account.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CredCtx {
    pub namespace: String,
    pub pull_secrets: Vec<String>,
    pub service_account: String,
}

/// What to ask one node.
#[derive(Clone, Debug)]
pub struct NodeAsk {
    pub node: String,
    /// Where its agent is, or why there is none to ask.
    pub agent: Result<AgentAddr, Box<Cell>>,
    pub work: Vec<(CredCtx, Vec<String>)>,
}

/// One node's answers: its agent, and a cell per (context, image).
#[derive(Clone, Debug, Default)]
pub struct NodeAnswers {
    pub agent: Option<AgentInfo>,
    pub cells: HashMap<(CredCtx, String), Cell>,
}

/// A reachable node's path answer, kept for round 2 (no report: see the checker's cell).
struct PathAnswer {
    fingerprint: String,
    cell: Cell,
}

/// How to ask. Holds the agent token: no `Debug`.
pub struct Asker {
    pub client: kube::Client,
    pub token: Option<String>,
    pub timeout: Duration,
    pub concurrency: usize,
}

/// One request's answer.
type Answer = Result<Reply, Box<Cell>>;

fn api_message(body: &[u8]) -> (bool, String) {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let from_api = v.get("kind").and_then(|k| k.as_str()) == Some("Status");
    let msg = v
        .get("message")
        .or_else(|| v.get("error"))
        .and_then(|m| m.as_str())
        .map(|m| wire::clean(m, 300))
        .unwrap_or_default();
    (from_api, msg)
}

/// The cell for a non-200 reply.
fn refusal(status: u16, body: &[u8]) -> Cell {
    let (from_api, msg) = api_message(body);
    let by = if from_api {
        "the API server"
    } else {
        "the agent"
    };
    let (reason, text) = match status {
        401 if !from_api => (UnknownReason::AgentUnauthorized, format!("the agent did not accept the token: {msg}")),
        401 => (UnknownReason::AgentUnauthorized, format!("the API server did not accept your credentials: {msg}")),
        403 => (UnknownReason::Forbidden, format!("forbidden by {by}: {msg}")),
        404 if from_api => (UnknownReason::AgentNotRunning, format!("the agent Pod is gone: {msg}")),
        404 => (
            UnknownReason::AgentTooOld,
            "the agent does not serve /preflight (a version before pre-flight, or preflight.enabled: false)".to_string(),
        ),
        429 => (UnknownReason::AgentBusy, format!("the agent is rate limiting pre-flight requests: {msg}")),
        500..=504 if from_api => (UnknownReason::AgentUnreachable, format!("the API server cannot reach the agent: {msg}")),
        _ => (UnknownReason::AgentError, format!("HTTP {status} from {by}: {msg}")),
    };
    Cell::unknown(reason, text)
}

impl Asker {
    async fn post(&self, node: &str, addr: &AgentAddr, req: &PreflightRequest) -> Answer {
        let body = serde_json::to_vec(req).unwrap_or_default();
        let reply = proxy_post(
            &self.client,
            addr,
            "preflight",
            body,
            self.token.as_deref(),
            self.timeout,
            wire::MAX_REPLY_BYTES,
        )
        .await;
        let unknown = |r, m: String| Err(Box::new(Cell::unknown(r, m)));
        match reply {
            Err(ProxyError::Timeout(t)) => unknown(
                UnknownReason::AgentTimeout,
                format!("no answer within {}", humantime::format_duration(t)),
            ),
            Err(ProxyError::TooLarge(n)) => unknown(
                UnknownReason::AgentReplyInvalid,
                format!("the agent's reply is larger than {n} bytes"),
            ),
            Err(ProxyError::Transport(e)) => {
                unknown(UnknownReason::AgentUnreachable, wire::clean(&e, 300))
            }
            Ok(r) if r.status == 200 => wire::parse(&r.body, node, &req.images),
            Ok(r) => Err(Box::new(refusal(r.status, &r.body))),
        }
    }

    /// Send `jobs` (node, address, request) with bounded concurrency; each answer is handed
    /// to `each` as it arrives and dropped, so memory follows the concurrency, not the fleet.
    async fn send_each(
        &self,
        jobs: Vec<(String, AgentAddr, CredCtx, PreflightRequest)>,
        mut each: impl FnMut(String, CredCtx, PreflightRequest, Answer),
    ) {
        let mut answers = futures::stream::iter(jobs)
            .map(|(node, addr, ctx, req)| async move {
                let a = self.post(&node, &addr, &req).await;
                (node, ctx, req, a)
            })
            .buffer_unordered(self.concurrency.max(1));
        while let Some((node, ctx, req, a)) = answers.next().await {
            each(node, ctx, req, a);
        }
    }

    /// Both rounds; every (node, context, image) asked gets a cell.
    pub async fn run(&self, asks: &[NodeAsk]) -> BTreeMap<String, NodeAnswers> {
        let mut out: BTreeMap<String, NodeAnswers> = BTreeMap::new();
        let mut jobs = Vec::new();
        for a in asks {
            let answers = out.entry(a.node.clone()).or_default();
            for (ctx, images) in &a.work {
                match &a.agent {
                    Err(cell) => {
                        for i in images {
                            answers
                                .cells
                                .insert((ctx.clone(), i.clone()), (**cell).clone());
                        }
                    }
                    Ok(addr) => jobs.push((
                        a.node.clone(),
                        addr.clone(),
                        ctx.clone(),
                        request(ctx, images, RequestDepth::Path),
                    )),
                }
            }
        }
        // Round 1: every node's path.
        let mut paths: HashMap<(String, CredCtx, String), PathAnswer> = HashMap::new();
        self.send_each(jobs, |node, ctx, req, answer| {
            let answers = out.entry(node.clone()).or_default();
            match answer {
                Err(cell) => {
                    for i in &req.images {
                        answers
                            .cells
                            .insert((ctx.clone(), i.clone()), (*cell).clone());
                    }
                }
                Ok(reply) => {
                    answers.agent = Some(reply.agent());
                    for r in reply.results {
                        if r.path_state.reachable() {
                            // Only what round 2 needs: a fleet's path reports would not fit.
                            let mut cell = r.cell();
                            cell.report = None;
                            let key = (node.clone(), ctx.clone(), r.image.clone());
                            paths.insert(
                                key,
                                PathAnswer {
                                    fingerprint: r.fingerprint,
                                    cell,
                                },
                            );
                        } else {
                            answers
                                .cells
                                .insert((ctx.clone(), r.image.clone()), r.cell());
                        }
                    }
                }
            }
        })
        .await;
        self.share_image_checks(asks, paths, &mut out).await;
        out
    }

    /// Round 2: one image check per (context, image, fingerprint), shared.
    async fn share_image_checks(
        &self,
        asks: &[NodeAsk],
        paths: HashMap<(String, CredCtx, String), PathAnswer>,
        out: &mut BTreeMap<String, NodeAnswers>,
    ) {
        let addrs: HashMap<&str, &AgentAddr> = asks
            .iter()
            .filter_map(|a| a.agent.as_ref().ok().map(|ad| (a.node.as_str(), ad)))
            .collect();
        // (ctx, image, fingerprint) → member nodes, in the order representatives are tried.
        let mut groups: BTreeMap<(CredCtx, String, String), Vec<String>> = BTreeMap::new();
        for ((node, ctx, image), a) in &paths {
            groups
                .entry((ctx.clone(), image.clone(), a.fingerprint.clone()))
                .or_default()
                .push(node.clone());
        }
        for ((_, image, _), members) in groups.iter_mut() {
            members.sort_by_key(|n| Sha256::digest(format!("{image}\0{n}").as_bytes()).to_vec());
        }
        let mut facts: HashMap<(CredCtx, String, String), (String, Cell)> = HashMap::new();
        for attempt in 0..3 {
            let mut by_node: BTreeMap<(String, CredCtx), Vec<String>> = BTreeMap::new();
            for (key, members) in &groups {
                if facts.contains_key(key) {
                    continue;
                }
                if let Some(rep) = members.get(attempt) {
                    by_node
                        .entry((rep.clone(), key.0.clone()))
                        .or_default()
                        .push(key.1.clone());
                }
            }
            if by_node.is_empty() {
                break;
            }
            let jobs = by_node
                .into_iter()
                .filter_map(|((node, ctx), images)| {
                    let addr = (*addrs.get(node.as_str())?).clone();
                    let req = request(&ctx, &images, RequestDepth::Image);
                    Some((node, addr, ctx, req))
                })
                .collect();
            self.send_each(jobs, |node, ctx, _, answer| {
                let Ok(reply) = answer else { return };
                for r in reply.results {
                    let Some(own) = paths.get(&(node.clone(), ctx.clone(), r.image.clone())) else {
                        continue;
                    };
                    if r.path_state.reachable() {
                        let key = (ctx.clone(), r.image.clone(), own.fingerprint.clone());
                        facts.insert(key, (node.clone(), r.cell()));
                    }
                }
            })
            .await;
        }
        for ((ctx, image, fp), members) in &groups {
            let fact = facts.get(&(ctx.clone(), image.clone(), fp.clone()));
            for node in members {
                let own = paths.get(&(node.clone(), ctx.clone(), image.clone()));
                let cell = match (fact, own) {
                    (Some((rep, f)), Some(own)) => combine(node, rep, f, &own.cell),
                    _ => Cell::unknown(
                        UnknownReason::ImageCheckFailed,
                        "the node's path works, but no node with the same fingerprint answered the image check",
                    ),
                };
                out.entry(node.clone())
                    .or_default()
                    .cells
                    .insert((ctx.clone(), image.clone()), cell);
            }
        }
    }
}

fn request(ctx: &CredCtx, images: &[String], depth: RequestDepth) -> PreflightRequest {
    // Round 1 names no pull secrets: path checks use the node's own credentials, and the
    // agent need not read any Secret for them.
    let with_secrets = depth == RequestDepth::Image && !ctx.pull_secrets.is_empty();
    PreflightRequest {
        images: images.to_vec(),
        depth,
        namespace: with_secrets.then(|| ctx.namespace.clone()),
        pull_secrets: if with_secrets {
            ctx.pull_secrets.clone()
        } else {
            Vec::new()
        },
        service_account: (!ctx.service_account.is_empty()).then(|| ctx.service_account.clone()),
    }
}

/// A member's cell from the shared image fact and its own path answer.
fn combine(node: &str, rep: &str, fact: &Cell, own_path: &Cell) -> Cell {
    if node == rep {
        return fact.clone();
    }
    let mut c = fact.clone();
    c.checked_on = Some(rep.to_string());
    // The report is in the checker's own cell; a copy per node would not fit a fleet.
    c.report = None;
    if fact.verdict.pulls(false) {
        // The image pulls; how this node gets there is its own path's (degraded when its
        // first endpoint failed).
        c.verdict = match own_path.verdict {
            CellVerdict::Degraded => CellVerdict::Degraded,
            _ => CellVerdict::Ready,
        };
        if c.verdict == CellVerdict::Degraded {
            c.host = own_path.host.clone();
            c.message = own_path.message.clone();
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(v: CellVerdict, reason: Option<&str>) -> Cell {
        Cell {
            verdict: v,
            phase: None,
            reason: reason.map(String::from),
            host: None,
            message: String::new(),
            checked_on: None,
            source: None,
            report: None,
        }
    }

    #[test]
    fn shared_facts_keep_the_members_own_path() {
        let ready = cell(CellVerdict::Ready, None);
        let missing = cell(CellVerdict::NotReady, Some("ManifestNotFound"));
        let degraded = cell(CellVerdict::Degraded, None);
        assert_eq!(combine("a", "a", &missing, &ready), missing);
        let c = combine("b", "a", &missing, &ready);
        assert_eq!(
            (c.verdict, c.checked_on.as_deref()),
            (CellVerdict::NotReady, Some("a"))
        );
        assert_eq!(
            combine("b", "a", &ready, &degraded).verdict,
            CellVerdict::Degraded
        );
        assert_eq!(
            combine("b", "a", &degraded, &ready).verdict,
            CellVerdict::Ready
        );
    }

    #[test]
    fn refusals_say_who_refused() {
        let api = br#"{"kind":"Status","message":"pods \"p\" is forbidden: User \"bob\" cannot create resource \"pods/proxy\""}"#;
        let c = refusal(403, api);
        assert_eq!(c.reason.as_deref(), Some("Forbidden"));
        assert!(
            c.message.contains("the API server") && c.message.contains("pods/proxy"),
            "{}",
            c.message
        );
        let agent = br#"{"error":"bob may not create nodes.pullprobe.io/preflight n1 (SubjectAccessReview)","status":403}"#;
        assert!(refusal(403, agent)
            .message
            .contains("forbidden by the agent"));
        assert_eq!(
            refusal(404, b"404 page not found").reason.as_deref(),
            Some("AgentTooOld")
        );
        assert_eq!(
            refusal(
                503,
                br#"{"kind":"Status","message":"error trying to reach service"}"#
            )
            .reason
            .as_deref(),
            Some("AgentUnreachable")
        );
    }
}
