//! API server faults under a running agent, against the REAL kube-apiserver v1.20.2
//! (tests/kube) and a REAL registry: the server refusing the agent's condition writes
//! with 429 + Retry-After and with 500, answering slowly, holding a write forever,
//! stopped and restarted. Through all of it probing goes on (cycles, `/status`,
//! `/metrics` advance), the writer backs off (jittered, honouring Retry-After) instead
//! of storming, the last transition is written once the server is back — once — and the
//! agent never exits.
//!
//! Faults the real server cannot produce on demand (429, 500, a held write) come from a
//! proxy in front of it (tests/api_proxy); attempts are counted there, successful writes
//! in the API server's audit log.

mod agent_proc;
mod api_proxy;
mod harness;
mod kube;

use std::time::Duration;

use serde_json::{json, Value};

use crate::agent_proc::{
    get_json, http_get, metric_sum, status_condition, wait_for, write_file, AgentProc, Switch,
};
use crate::api_proxy::{ApiProxy, Fault};
use crate::harness::{OciImage, Pki, PushOpts, Registry};
use crate::kube::KubeApiServer;

const NODE: &str = "node-c";
const SA_USER: &str = "system:serviceaccount:pullprobe:pullprobe";
const UNREACHABLE: &str = "RegistryUnreachable";

fn node_condition(api: &KubeApiServer, kind: &str) -> Option<Value> {
    let r = api
        .request(
            "GET",
            &format!("/api/v1/nodes/{NODE}"),
            api.admin_token(),
            None,
        )
        .ok()?;
    (r.status == 200).then_some(())?;
    r.json()["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .cloned()
}

fn wait_node(api: &KubeApiServer, status: &str, timeout: Duration) -> Value {
    wait_for(
        timeout,
        &format!("{UNREACHABLE}={status} on the Node"),
        || node_condition(api, UNREACHABLE).filter(|c| c["status"] == status),
    )
}

fn wait_local(agent: &AgentProc, status: &str) {
    wait_for(
        Duration::from_secs(10),
        &format!("{UNREACHABLE}={status} on /status"),
        || {
            let st = get_json(agent.port, "/status");
            (status_condition(&st, UNREACHABLE)["status"] == status).then_some(())
        },
    );
}

fn metric(agent: &AgentProc, prefix: &str) -> f64 {
    let m = http_get(agent.port, "/metrics")
        .expect("/metrics answers")
        .1;
    metric_sum(&m, prefix)
}

fn cycles(agent: &AgentProc) -> f64 {
    metric(agent, "pullprobe_cycles_total")
}

/// Successful node-status PATCHes by the agent (audit log), as Unix seconds.
fn audit_status_writes(api: &KubeApiServer, since: f64) -> Vec<f64> {
    api.audit_writes_by(SA_USER)
        .iter()
        .filter(|e| {
            e["verb"] == "patch"
                && e["objectRef"]["resource"] == "nodes"
                && e["objectRef"]["subresource"] == "status"
                && e["responseStatus"]["code"] == 200
        })
        .map(|e| {
            let s = e["requestReceivedTimestamp"].as_str().unwrap_or_default();
            let t: jiff::Timestamp = s.parse().expect("audit timestamp");
            t.as_millisecond() as f64 / 1000.0
        })
        .filter(|t| *t >= since)
        .collect()
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn gaps(times: &[f64]) -> Vec<f64> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

/// Keeps the agent alive-and-probing checks in one place: it did not exit, `/healthz`
/// answers, and cycles went on while the API server misbehaved.
fn assert_probing_went_on(agent: &mut AgentProc, cycles_before: f64, what: &str) {
    assert!(agent.try_wait().is_none(), "{what}: the agent exited");
    assert_eq!(
        http_get(agent.port, "/healthz").map(|r| r.0),
        Some(200),
        "{what}"
    );
    let c = cycles(agent);
    assert!(
        c >= cycles_before + 3.0,
        "{what}: cycles {cycles_before} -> {c}"
    );
}

struct World {
    api: KubeApiServer,
    proxy: ApiProxy,
    switch: Switch,
    agent: AgentProc,
    _reg: Registry,
    _root: tempfile::TempDir,
    _pki: Pki,
}

fn start() -> World {
    let api = KubeApiServer::start();
    let token = api.apply_project_rbac();
    api.must(
        "POST",
        "/api/v1/nodes",
        api.admin_token(),
        Some(&json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}})),
    );
    let pki = Pki::new();
    let proxy = ApiProxy::start(&pki.server, api.addr(), api.ca_pem());
    let reg = Registry::plain();
    OciImage::single("v1").push(&reg, "team/app", &PushOpts::insecure());
    let switch = Switch::start(reg.host_port().parse().unwrap());
    let image = format!("{}/team/app:v1", switch.host_port());
    let root = agent_proc::host_root();
    // A heartbeat longer than any phase, so every write below is a transition or a retry.
    let cfg = write_file(
        root.path(),
        "pullprobe.yaml",
        &format!(
            "interval: 1s\njitter: 0\nheartbeat: 120s\nfail_after: 1\nrecover_after: 1\n\
             fleet:\n  node_count: 1\nbackoff:\n  initial: 1s\n  max: 1s\nimages:\n  - \"{image}\"\n"
        ),
    );
    let ca = std::fs::read_to_string(&pki.ca_cert).unwrap();
    let kubeconfig = write_file(
        root.path(),
        "kubeconfig.yaml",
        &kube::kubeconfig_yaml_for(&proxy.url(), &ca, &token),
    );
    let mut agent = agent_proc::spawn_for_node(
        &["--kubeconfig", kubeconfig.to_str().unwrap()],
        NODE,
        &cfg,
        root.path(),
    );
    // The main listener reviews every caller (TokenReview + SubjectAccessReview).
    agent_proc::authorize(agent.port, &api.agent_caller_token());
    agent.wait_ready(Duration::from_secs(30));
    wait_node(&api, "False", Duration::from_secs(10));
    World {
        api,
        proxy,
        switch,
        agent,
        _reg: reg,
        _root: root,
        _pki: pki,
    }
}

/// Lift the fault; the pending transition is written within `bound`, exactly once.
fn recover_and_count(w: &World, fault_from: f64, status: &str, bound: Duration) -> f64 {
    w.proxy.set_fault(Fault::None);
    let lifted = now();
    wait_node(&w.api, status, bound);
    // Time for a storm to show, if there were one.
    std::thread::sleep(Duration::from_secs(3));
    let ok = audit_status_writes(&w.api, fault_from);
    assert_eq!(
        ok.len(),
        1,
        "one successful write after the fault (lifted at {lifted:.1}): {ok:?}"
    );
    ok[0]
}

const WRITE_ERRORS: &str = "pullprobe_api_writes_total{kind=\"node_status\",result=\"error\"}";
const WRITE_OKS: &str = "pullprobe_api_writes_total{kind=\"node_status\",result=\"ok\"}";

/// The times of the status writes the proxy saw since `t`.
fn attempts_since(w: &World, t: f64) -> Vec<f64> {
    w.proxy
        .status_writes_since(t)
        .iter()
        .map(|s| s.at)
        .collect()
}

/// 429 with Retry-After: 3 on every status write. The flip is seen locally at once;
/// attempts are Retry-After apart plus jitter (not the 1 s writer tick, not kube's 15
/// immediate retries); the flip lands once the server takes writes again.
fn too_many_requests_with_retry_after(w: &mut World) {
    let t = now();
    let c0 = cycles(&w.agent);
    w.proxy.set_fault(Fault::Status {
        codes: vec![429],
        retry_after: Some(3),
    });
    w.switch.set_up(false);
    wait_local(&w.agent, "True");
    std::thread::sleep(Duration::from_secs(12));
    let tries = attempts_since(w, t);
    eprintln!("429 attempt gaps: {:?}", gaps(&tries));
    assert!(
        !tries.is_empty() && tries.len() <= 5,
        "429 attempts: {tries:?}"
    );
    // Retry-After plus up to a quarter of it as jitter.
    for g in gaps(&tries) {
        assert!(
            (2.95..=4.3).contains(&g),
            "a retry {g:.2}s after a 429 with Retry-After: 3: {tries:?}"
        );
    }
    assert_eq!(
        node_condition(&w.api, UNREACHABLE).unwrap()["status"],
        "False"
    );
    assert_probing_went_on(&mut w.agent, c0, "429");
    let errors = metric(&w.agent, WRITE_ERRORS);
    assert!(
        errors >= tries.len() as f64,
        "error writes counted: {errors}"
    );
    let c = recover_and_count(w, t, "True", Duration::from_secs(10));
    assert_eq!(
        node_condition(&w.api, UNREACHABLE).unwrap()["reason"],
        "ConnectRefused"
    );
    eprintln!("429: written {:.1}s after the fault began", c - t);
}

/// 500 and 503 in turn, without Retry-After: jittered exponential backoff (1, 2, 4, 8 s
/// steps, each wait ½–1× of its step), a handful of attempts in 14 s — and no immediate
/// retry of a 503 inside one write (kube's built-in policy would send one 5 ms later).
fn server_errors_back_off_with_jitter(w: &mut World) {
    let t = now();
    let c0 = cycles(&w.agent);
    w.proxy.set_fault(Fault::Status {
        codes: vec![500, 503],
        retry_after: None,
    });
    w.switch.set_up(true);
    wait_local(&w.agent, "False");
    std::thread::sleep(Duration::from_secs(14));
    let tries = attempts_since(w, t);
    let g = gaps(&tries);
    eprintln!("500/503 attempt gaps: {g:?}");
    assert!(
        (3..=6).contains(&tries.len()),
        "500 attempts in 14 s: {tries:?}"
    );
    // Wait i follows step 2^i s, drawn from [½, 1] of it (plus the write's own latency).
    for (i, g) in g.iter().enumerate() {
        let step = f64::from(1u32 << i.min(5));
        assert!(
            *g >= step * 0.5 - 0.05 && *g <= step + 0.5,
            "wait {i} is {g:.2}s for a {step}s step: {tries:?}"
        );
    }
    assert_probing_went_on(&mut w.agent, c0, "500");
    recover_and_count(w, t, "False", Duration::from_secs(15));
}

/// Slow: every request (the pod watch too) waits 3 s. Probing does not wait for the API
/// server; the write lands once, late.
fn slow_server(w: &mut World) {
    let t = now();
    let c0 = cycles(&w.agent);
    w.proxy.set_fault(Fault::Delay(Duration::from_secs(3)));
    w.switch.set_up(false);
    wait_local(&w.agent, "True");
    wait_node(&w.api, "True", Duration::from_secs(15));
    assert_probing_went_on(&mut w.agent, c0, "slow");
    let tries = w.proxy.status_writes_since(t);
    assert_eq!(tries.len(), 1, "one write through a slow server: {tries:?}");
    recover_and_count(w, t, "True", Duration::from_secs(5));
}

/// A write that never gets an answer: it fails after the writer's timeout (not kube's
/// 295 s read timeout), is counted, and retried; the transition lands after.
fn held_write_times_out(w: &mut World) {
    let t = now();
    let c0 = cycles(&w.agent);
    let errors0 = metric(&w.agent, WRITE_ERRORS);
    w.proxy.set_fault(Fault::Hang);
    w.switch.set_up(true);
    wait_local(&w.agent, "False");
    wait_for(Duration::from_secs(20), "a held write to time out", || {
        (metric(&w.agent, WRITE_ERRORS) > errors0).then_some(())
    });
    assert_probing_went_on(&mut w.agent, c0, "hung write");
    recover_and_count(w, t, "False", Duration::from_secs(25));
}

/// Stopped, then restarted: attempts back off while it is down; the flip is written once
/// it is back, once.
fn stopped_then_restarted(w: &mut World) {
    let t = now();
    let c0 = cycles(&w.agent);
    w.api.stop_apiserver();
    w.switch.set_up(false);
    wait_local(&w.agent, "True");
    std::thread::sleep(Duration::from_secs(10));
    let down_tries = w.proxy.status_writes_since(t);
    assert!(
        !down_tries.is_empty() && down_tries.len() <= 6,
        "attempts while stopped: {down_tries:?}"
    );
    assert_probing_went_on(&mut w.agent, c0, "stopped");
    w.api.start_apiserver();
    let c = wait_node(&w.api, "True", Duration::from_secs(40));
    assert_eq!(c["reason"], "ConnectRefused");
    std::thread::sleep(Duration::from_secs(3));
    let ok = audit_status_writes(&w.api, t);
    assert_eq!(ok.len(), 1, "one write after the restart: {ok:?}");
}

#[test]
fn condition_writer_survives_api_server_faults() {
    let mut w = start();
    too_many_requests_with_retry_after(&mut w);
    server_errors_back_off_with_jitter(&mut w);
    slow_server(&mut w);
    held_write_times_out(&mut w);
    stopped_then_restarted(&mut w);
    // Every write the API server accepted is counted once by the agent.
    let ok_metric = metric(&w.agent, WRITE_OKS);
    let accepted = audit_status_writes(&w.api, 0.0).len();
    assert_eq!(ok_metric as usize, accepted, "metric vs audit log");
    w.agent.sigterm();
    let st = w.agent.wait_exit(Duration::from_secs(10));
    assert!(st.success(), "exit after SIGTERM: {st}");
}
