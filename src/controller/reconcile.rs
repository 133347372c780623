//! One `ImagePreflight` from spec to status:
//!
//! ```text
//! resolve (images, template, pull secrets; workloadRef read in the object's namespace)
//!   → status Reconciling → candidates (fleet) → round 1 (caches; Path assignments for stale
//!   nodes) → round 2 (one Image assignment per fingerprint) → status Ready/Failed
//!   → assignments removed → rollout guard's Event → TTL
//! ```
//!
//! Runs under kube-runtime's `Controller` on the leader only: one run per object at a time,
//! a generation change runs again, a finished object is requeued for its TTL.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;

use super::assign::{Assigner, FIELD_MANAGER};
use super::fleet::{self, Fleet};
use super::rounds::{self, NodeWork};
use super::{guard, resolve, ttl};
use crate::api::{
    condition, Answer, Assignment, AssignmentDepth, Condition, ConditionStatus, ImagePreflight,
    ImagePreflightStatus,
};
use crate::k8s::K8sError;
use crate::preflight::matrix::{Matrix, Unplaced};
use crate::preflight::object::{self, clean};

/// How many assignment patches are in flight at once.
const WRITE_CONCURRENCY: usize = 32;

/// What every reconcile shares.
pub struct Ctx {
    pub client: kube::Client,
    pub fleet: Fleet,
    pub assigner: Assigner,
    pub answer_timeout: Duration,
    /// uid → the generation this leader finished last: the Controller's cache may still
    /// hold the object from before the final status write, which must not run again.
    pub done: std::sync::Mutex<std::collections::HashMap<String, i64>>,
}

impl Ctx {
    fn done_with(&self, p: &ImagePreflight) -> bool {
        let (Some(uid), Some(gen)) = (p.metadata.uid.as_ref(), p.metadata.generation) else {
            return false;
        };
        let done = match self.done.lock() {
            Ok(d) => d,
            Err(e) => e.into_inner(),
        };
        done.get(uid) == Some(&gen)
    }

    fn mark_done(&self, p: &ImagePreflight) {
        let (Some(uid), Some(gen)) = (p.metadata.uid.clone(), p.metadata.generation) else {
            return;
        };
        let mut done = match self.done.lock() {
            Ok(d) => d,
            Err(e) => e.into_inner(),
        };
        done.insert(uid, gen);
    }
}

/// Why a reconcile failed (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Kube(#[from] K8sError),
}

/// Whether the object's current generation has a finished answer.
pub fn finished(p: &ImagePreflight) -> bool {
    let Some(st) = p.status.as_ref() else {
        return false;
    };
    st.observed_generation.is_some()
        && st.observed_generation == p.metadata.generation
        && st.finished_at.is_some()
        && !condition::is_true(&st.conditions, "Reconciling")
}

/// kube-runtime's reconcile function.
pub async fn reconcile(p: Arc<ImagePreflight>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    if p.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    if finished(&p) {
        return Ok(ttl::expire(&ctx.client, &p, SystemTime::now()).await?);
    }
    if ctx.done_with(&p) {
        // Finished moments ago; the cache has not seen the final status yet.
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    run(&p, &ctx).await?;
    ctx.mark_done(&p);
    Ok(Action::await_change())
}

/// kube-runtime's error policy: try again in 5 s.
pub fn error_policy(p: Arc<ImagePreflight>, e: &ReconcileError, _: Arc<Ctx>) -> Action {
    tracing::warn!(preflight = %fleet::key(&p), error = %e, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

fn cond(
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: &str,
    gen: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.into(),
        status,
        reason: reason.into(),
        message: clean(message, crate::api::MAX_MESSAGE_LEN),
        last_transition_time: fleet::format_time(SystemTime::now()),
        observed_generation: gen,
    }
}

fn api(ctx: &Ctx, p: &ImagePreflight) -> Api<ImagePreflight> {
    Api::namespaced(
        ctx.client.clone(),
        p.metadata.namespace.as_deref().unwrap_or("default"),
    )
}

/// One merge patch of the status subresource.
async fn write_status(
    ctx: &Ctx,
    p: &ImagePreflight,
    mut status: serde_json::Value,
) -> Result<(), K8sError> {
    crate::api::drop_empty_strings(&mut status);
    let name = p.metadata.name.as_deref().unwrap_or("");
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..Default::default()
    };
    api(ctx, p)
        .patch_status(
            name,
            &pp,
            &Patch::Merge(serde_json::json!({ "status": status })),
        )
        .await
        .map(|_| ())
        .map_err(K8sError::api("patch imagepreflight status"))
}

/// The conditions on top of the object's current ones.
fn conditions(p: &ImagePreflight, new: [Condition; 3]) -> Vec<Condition> {
    let mut list = p
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    for c in new {
        condition::set(&mut list, c);
    }
    list
}

/// A full status (every field present, so a merge patch replaces the previous run's).
fn full(st: &ImagePreflightStatus) -> serde_json::Value {
    let mut v = serde_json::to_value(st).unwrap_or_default();
    if let Some(m) = v.as_object_mut() {
        for k in ["summary", "excluded", "unplaced", "warnings", "finishedAt"] {
            m.entry(k).or_insert(serde_json::Value::Null);
        }
    }
    v
}

/// Ends the run without checking anything (the spec cannot be used).
async fn invalid(ctx: &Ctx, p: &ImagePreflight, reason: &str, why: &str) -> Result<(), K8sError> {
    let gen = p.metadata.generation;
    let st = ImagePreflightStatus {
        observed_generation: gen,
        conditions: conditions(
            p,
            [
                cond("Reconciling", ConditionStatus::False, reason, why, gen),
                cond("Ready", ConditionStatus::False, reason, why, gen),
                cond("Failed", ConditionStatus::True, reason, why, gen),
            ],
        ),
        finished_at: Some(fleet::format_time(SystemTime::now())),
        ..Default::default()
    };
    tracing::info!(preflight = %fleet::key(p), reason, "pre-flight cannot run");
    write_status(ctx, p, full(&st)).await
}

/// The whole pre-flight of the object's current generation.
async fn run(p: &ImagePreflight, ctx: &Ctx) -> Result<(), K8sError> {
    let target = match resolve::target(&ctx.client, p).await? {
        Ok(t) => t,
        Err(e) => return invalid(ctx, p, e.reason(), &e.to_string()).await,
    };
    let cands = match ctx
        .fleet
        .candidates(&target.spec, target.daemonset, &p.spec.nodes)
    {
        Ok(c) => c,
        Err(e) => return invalid(ctx, p, "InvalidSpec", &e.to_string()).await,
    };
    let gen = p.metadata.generation;
    let msg = format!(
        "checking {} images on {} nodes",
        target.images.len(),
        cands.nodes.len()
    );
    let start = serde_json::json!({
        "observedGeneration": gen,
        "finishedAt": null,
        "conditions": conditions(p, [
            cond("Reconciling", ConditionStatus::True, "Checking", &msg, gen),
            cond("Ready", ConditionStatus::Unknown, "Checking", &msg, gen),
            cond("Failed", ConditionStatus::False, "Checking", &msg, gen),
        ]),
    });
    write_status(ctx, p, start).await?;
    let nonce = nonce();
    let uid = p
        .metadata
        .uid
        .as_deref()
        .unwrap_or("")
        .get(..8)
        .unwrap_or("x");
    let id = |round: &str| format!("{uid}-g{}-{round}-{nonce}", gen.unwrap_or(0));
    let registries = rounds::registries(&target.images);
    let mut work = rounds::round1(
        &cands.nodes,
        &registries,
        |n| ctx.fleet.status(n),
        SystemTime::now(),
    );
    let asks = rounds::path_asks(&work, &target.images);
    let path_id = id("path");
    let answers = ask(ctx, &target, &path_id, AssignmentDepth::Path, asks).await;
    apply_paths(&mut work, &target.images, &answers, ctx.answer_timeout);
    let plan = rounds::plan_images(&work);
    let image_asks: BTreeMap<String, Vec<String>> = plan
        .asks
        .iter()
        .map(|(n, idx)| {
            let imgs = idx
                .iter()
                .filter_map(|i| target.images.get(*i).cloned())
                .collect();
            (n.clone(), imgs)
        })
        .collect();
    let image_id = id("image");
    let image_answers = ask(ctx, &target, &image_id, AssignmentDepth::Image, image_asks).await;
    rounds::apply_image_answers(
        &mut work,
        &target.images,
        &plan,
        &image_answers.answers,
        ctx.answer_timeout,
    );
    let st = finish(p, &target, cands.excluded, cands.nowhere, work);
    write_status(ctx, p, full(&st)).await?;
    tracing::info!(preflight = %fleet::key(p), summary = st.summary.as_ref().map(|s| s.line.as_str()).unwrap_or(""), "pre-flight finished");
    let touched: Vec<String> = answers
        .touched
        .into_iter()
        .chain(image_answers.touched)
        .collect();
    cleanup(ctx, &touched, &[path_id, image_id]).await;
    guard::after_finish(&ctx.client, p, &target, &st).await;
    Ok(())
}

/// Path answers into the work; unanswered nodes time out.
fn apply_paths(work: &mut [NodeWork], images: &[String], got: &Asked, waited: Duration) {
    for w in work.iter_mut() {
        if let Some(a) = got.answers.get(&w.node) {
            rounds::apply_path_answer(w, images, a);
        }
        rounds::time_out(w, waited);
    }
}

/// A short random suffix for this run's assignment ids.
fn nonce() -> String {
    let mut b = [0u8; 4];
    let _ = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b));
    hex::encode(b)
}

/// What one round got back.
#[derive(Default)]
pub struct Asked {
    /// Node → its answer.
    pub answers: BTreeMap<String, Answer>,
    /// Nodes an assignment was written to.
    pub touched: Vec<String>,
}

/// Writes one assignment per node of `asks` and waits for the answers (until all are in
/// or the answer timeout).
async fn ask(
    ctx: &Ctx,
    target: &resolve::Target,
    id: &str,
    depth: AssignmentDepth,
    asks: BTreeMap<String, Vec<String>>,
) -> Asked {
    let issued_at = fleet::format_time(SystemTime::now());
    let deadline = tokio::time::Instant::now() + ctx.answer_timeout;
    let writes = futures::stream::iter(asks)
        .map(|(node, images)| {
            let a = Assignment {
                id: id.to_string(),
                depth,
                images,
                namespace: target.namespace.clone(),
                // Path checks use the node's own credentials (no Secret read for them).
                pull_secrets: if depth == AssignmentDepth::Image {
                    target.pull_secrets.clone()
                } else {
                    Vec::new()
                },
                service_account: Some(target.service_account.clone()),
                issued_at: issued_at.clone(),
            };
            async move {
                let r = ctx.assigner.add(&node, a).await;
                (node, r)
            }
        })
        .buffer_unordered(WRITE_CONCURRENCY);
    let results: Vec<(String, Result<(), K8sError>)> = writes.collect().await;
    let mut touched = Vec::new();
    for (node, r) in results {
        match r {
            Ok(()) => touched.push(node),
            Err(e) => tracing::warn!(node, error = %e, "cannot write the assignment"),
        }
    }
    let answers = wait_answers(&ctx.fleet, &touched, id, deadline).await;
    Asked { answers, touched }
}

/// Waits until every node in `nodes` answered `id` (in its NodePullStatus status), or the
/// deadline. Wakes on the NodePullStatus watch, at most every 25 ms.
async fn wait_answers(
    fleet: &Fleet,
    nodes: &[String],
    id: &str,
    deadline: tokio::time::Instant,
) -> BTreeMap<String, Answer> {
    let mut pending: Vec<String> = nodes.to_vec();
    let mut out = BTreeMap::new();
    let mut changes = fleet.changes();
    loop {
        changes.borrow_and_update();
        pending.retain(|node| {
            let answer = fleet.status(node).and_then(|n| {
                n.status
                    .as_ref()
                    .and_then(|s| s.answers.iter().find(|a| a.id == id).cloned())
            });
            match answer {
                Some(a) => {
                    out.insert(node.clone(), a);
                    false
                }
                None => true,
            }
        });
        if pending.is_empty() {
            return out;
        }
        tokio::select! {
            r = changes.changed() => if r.is_err() { return out },
            () = tokio::time::sleep_until(deadline) => return out,
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The final status from the rows.
fn finish(
    p: &ImagePreflight,
    target: &resolve::Target,
    excluded: Vec<crate::preflight::matrix::ExcludedNode>,
    nowhere: Option<String>,
    work: Vec<NodeWork>,
) -> ImagePreflightStatus {
    let strict = p.spec.degraded_fails;
    let unplaced: Vec<Unplaced> = nowhere
        .map(|why| Unplaced {
            workload: target.source.clone(),
            images: target.images.clone(),
            why,
        })
        .into_iter()
        .collect();
    let m = Matrix::new(
        target.images.clone(),
        rounds::rows(work),
        excluded,
        target.warnings.clone(),
        strict,
    )
    .with_unplaced(unplaced);
    let mut st = object::to_status(&m);
    let gen = p.metadata.generation;
    let s = &m.summary;
    let line = s.line.as_str();
    let (ready, failed) = if s.nodes == 0 {
        let why = "no candidate node: the workload lands on none of the selected nodes";
        (
            cond(
                "Ready",
                ConditionStatus::False,
                "NoCandidateNodes",
                why,
                gen,
            ),
            cond(
                "Failed",
                ConditionStatus::True,
                "NoCandidateNodes",
                why,
                gen,
            ),
        )
    } else if m.exit_code() == 1 {
        (
            cond(
                "Ready",
                ConditionStatus::False,
                "NodesCannotPull",
                line,
                gen,
            ),
            cond(
                "Failed",
                ConditionStatus::True,
                "NodesCannotPull",
                line,
                gen,
            ),
        )
    } else if s.unknown > 0 {
        (
            cond("Ready", ConditionStatus::False, "NodesUnknown", line, gen),
            cond("Failed", ConditionStatus::False, "NodesUnknown", line, gen),
        )
    } else {
        (
            cond("Ready", ConditionStatus::True, "AllNodesCanPull", line, gen),
            cond(
                "Failed",
                ConditionStatus::False,
                "AllNodesCanPull",
                line,
                gen,
            ),
        )
    };
    let done = cond("Reconciling", ConditionStatus::False, "Done", line, gen);
    st.conditions = conditions(p, [done, ready, failed]);
    st.observed_generation = gen;
    st.finished_at = Some(fleet::format_time(SystemTime::now()));
    st
}

/// Forgets this run's assignments on every node it wrote to: no write now, the next
/// write to each node leaves them out ([`super::assign`]).
async fn cleanup(ctx: &Ctx, nodes: &[String], ids: &[String]) {
    let mut nodes = nodes.to_vec();
    nodes.sort();
    nodes.dedup();
    for node in nodes {
        ctx.assigner.forget(&node, ids).await;
    }
}
