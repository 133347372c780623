//! The rollout guard's admission webhook on the REAL kube-apiserver: the CRDs applied,
//! Nodes and NodePullStatus objects created as agents would write them, the webhook started
//! in-process (`pullprobe::controller::webhook::start`, as `pullprobe controller` runs it)
//! on 127.0.0.1, a ValidatingWebhookConfiguration pointing the API server at it, and
//! `kubectl apply` (the harness's kubectl) printing what the API server relays. The fleet
//! caches are the controller's own (`controller::fleet::Fleet`).

mod kube;
mod webhook_lab;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use crate::kube::KubeApiServer;
use pullprobe::controller::webhook;
use webhook_lab::{
    controller_token, create_guarded_namespaces, create_webhook_config, wait_for, Controller, NS,
};

/// Nodes `ok-0..3` reach registry.example (fingerprint `fp-ok`, whose image checks say
/// app:v2 pulls and app:v3's tag is missing); `bad-0..1` fail its TLS.
fn seed_fleet(api: &KubeApiServer) {
    let admin = api.admin_token();
    let now = jiff::Timestamp::now().to_string();
    let cell = |v: &str, r: Option<&str>| match r {
        Some(r) => json!({"verdict": v, "reason": r, "host": "registry.example", "message": "m"}),
        None => json!({"verdict": v, "message": "ok"}),
    };
    let nodes: Vec<(String, bool)> = (0..3)
        .map(|i| (format!("ok-{i}"), true))
        .chain((0..2).map(|i| (format!("bad-{i}"), false)))
        .collect();
    for (name, ok) in &nodes {
        api.create_if_missing(
            "/api/v1/nodes",
            &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"pool": if *ok {"ok"} else {"bad"}}}}),
            admin,
        );
        // The API server's TaintNodesByCondition taints every new Node not-ready until a
        // kubelet reports; these nodes are Ready as far as scheduling goes.
        let r = api
            .request_with(
                "PATCH",
                &format!("/api/v1/nodes/{name}"),
                admin,
                "application/merge-patch+json",
                Some(r#"{"spec":{"taints":null}}"#),
            )
            .unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        let path_cell = if *ok {
            cell("ready", None)
        } else {
            cell("not_ready", Some("TLSUnknownAuthority"))
        };
        let answers = if name == "ok-0" {
            json!([{"id": "a1", "depth": "Image", "answeredAt": now, "results": [
                {"image": "registry.example/app:v2", "fingerprint": "fp-ok", "pathState": "ok", "cell": cell("ready", None)},
                {"image": "registry.example/app:v3", "fingerprint": "fp-ok", "pathState": "ok", "cell": cell("not_ready", Some("ManifestNotFound"))}]}])
        } else {
            json!([])
        };
        let mut obj = json!({"apiVersion": "pullprobe.io/v1alpha1", "kind": "NodePullStatus",
                             "metadata": {"name": name}, "spec": {"assignments": []}});
        let created = api.must(
            "POST",
            "/apis/pullprobe.io/v1alpha1/nodepullstatuses",
            admin,
            Some(&obj),
        );
        obj["metadata"]["resourceVersion"] = created["metadata"]["resourceVersion"].clone();
        obj["status"] = json!({
            "agentVersion": "test", "runtime": "containerd 1.7.24", "platform": "linux/amd64",
            "heartbeatTime": now, "intervalSeconds": 3600, "registriesTotal": 1, "registriesFailing": if *ok {0} else {1},
            "registries": [{"registry": "registry.example", "fingerprint": if *ok {"fp-ok"} else {"fp-bad"},
                            "state": if *ok {"ok"} else {"failing"}, "cell": path_cell, "checkedAt": now}],
            "answers": answers,
        });
        api.must(
            "PUT",
            &format!("/apis/pullprobe.io/v1alpha1/nodepullstatuses/{name}/status"),
            admin,
            Some(&obj),
        );
    }
    create_guarded_namespaces(api);
    api.create_namespace(NS);
}

fn secret(api: &KubeApiServer) -> Value {
    api.request(
        "GET",
        &format!("/api/v1/namespaces/{NS}/secrets/{}", webhook::SECRET),
        api.admin_token(),
        None,
    )
    .map(|r| r.json())
    .unwrap_or(Value::Null)
}

fn ca_bundle(api: &KubeApiServer) -> Option<String> {
    let v = api.must(
        "GET",
        &format!(
            "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/{}",
            webhook::WEBHOOK_CONFIG
        ),
        api.admin_token(),
        None,
    );
    v["webhooks"][0]["clientConfig"]["caBundle"]
        .as_str()
        .map(String::from)
}

/// What kubectl printed (stdout + stderr) and whether it succeeded.
fn kubectl(kubeconfig: &Path, args: &[&str], stdin: &str) -> (bool, String) {
    let out = crate::kube::kubectl(kubeconfig, args, stdin);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn deployment(ns: &str, name: &str, images: &[&str], pool: Option<&str>) -> String {
    let containers: Vec<Value> = images
        .iter()
        .enumerate()
        .map(|(i, im)| json!({"name": format!("c{i}"), "image": im}))
        .collect();
    let mut spec = json!({"containers": containers});
    if let Some(p) = pool {
        spec["nodeSelector"] = json!({"pool": p});
    }
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
           "spec": {"selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}}, "spec": spec}}})
    .to_string()
}

/// Until the API server calls the webhook with a caBundle that verifies it (it reads the
/// configuration through an informer), a server-side dry run gets no warning.
fn wait_until_the_api_server_calls_it(kubeconfig: &Path) {
    let probe = deployment("guarded", "probe", &["registry.example/app:v3"], None);
    wait_for(
        "the API server to relay the webhook's warning",
        Duration::from_secs(60),
        || {
            let (ok, out) = kubectl(
                kubeconfig,
                &["apply", "--dry-run=server", "-f", "-"],
                &probe,
            );
            ok && out.contains("Warning: pullprobe:")
        },
    );
}

fn setup() -> (KubeApiServer, PathBuf) {
    let api = KubeApiServer::start();
    api.apply_crds();
    seed_fleet(&api);
    let kubeconfig = api.write_kubeconfig(api.admin_token());
    (api, kubeconfig)
}

#[test]
fn kubectl_apply_prints_the_warning_only_where_labelled_and_enforce_denies() {
    let (api, kubeconfig) = setup();
    let ctl = Controller::start(&api, &controller_token(&api), webhook::CERT_LIFETIME);

    create_webhook_config(&api, ctl.port());
    wait_for("the controller's caBundle", Duration::from_secs(30), || {
        let ca = secret(&api)["data"]["ca.crt"].as_str().map(String::from);
        ca.is_some() && ca_bundle(&api) == ca
    });
    wait_until_the_api_server_calls_it(&kubeconfig);

    // 2 of 5 nodes fail the registry's TLS; another registry nobody checked yet.
    let web = deployment(
        "guarded",
        "web",
        &["registry.example/app:v2", "other.example/tool:1"],
        None,
    );
    let (ok, out) = kubectl(&kubeconfig, &["apply", "-f", "-"], &web);
    assert!(ok, "{out}");
    assert!(out.contains(
        "Warning: pullprobe: 2 of 5 nodes cannot pull registry.example/app:v2: TLSUnknownAuthority at registry.example \
         (TLS to it fails on the nodes); kubectl get imagepreflight -n guarded deployment-web"), "{out}");
    assert!(out.contains("Warning: pullprobe: other.example/tool:1 is not checked yet; the rollout guard checks it now"), "{out}");
    assert!(out.contains("deployment.apps/web created"), "{out}");

    // The same images again: no change, no warning.
    let (ok, out) = kubectl(
        &kubeconfig,
        &["apply", "-f", "-"],
        &web.replace(
            "{\"containers\":",
            "{\"terminationGracePeriodSeconds\":5,\"containers\":",
        ),
    );
    assert!(ok && !out.contains("Warning"), "{out}");
    // A missing tag, on the pool whose path is fine.
    let v3 = deployment(
        "guarded",
        "web",
        &["registry.example/app:v3", "other.example/tool:1"],
        Some("ok"),
    );
    let (ok, out) = kubectl(&kubeconfig, &["apply", "-f", "-"], &v3);
    assert!(ok, "{out}");
    assert!(out.contains("Warning: pullprobe: 3 of 3 nodes cannot pull registry.example/app:v3: ManifestNotFound at registry.example \
                          (the tag or digest does not exist)"), "{out}");

    // A CronJob (batch/v1beta1 on this 1.20 server; the same pod template as batch/v1).
    let cron = json!({"apiVersion": "batch/v1beta1", "kind": "CronJob",
        "metadata": {"name": "nightly", "namespace": "guarded"},
        "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "c", "image": "registry.example/app:v3"}]}}}}}});
    let (ok, out) = kubectl(&kubeconfig, &["apply", "-f", "-"], &cron.to_string());
    assert!(ok, "{out}");
    assert!(out.contains("Warning: pullprobe: 5 of 5 nodes cannot pull registry.example/app:v3: ManifestNotFound at \
                          registry.example (the tag or digest does not exist); kubectl get imagepreflight -n guarded cronjob-nightly"), "{out}");

    // Unlabelled namespace: nothing said.
    let (ok, out) = kubectl(
        &kubeconfig,
        &["apply", "-f", "-"],
        &deployment("plain", "web", &["registry.example/app:v3"], None),
    );
    assert!(ok && !out.contains("Warning"), "{out}");

    // enforce: denied while some node cannot pull; allowed when all candidates can.
    let (ok, out) = kubectl(
        &kubeconfig,
        &["apply", "-f", "-"],
        &deployment("strict", "web", &["registry.example/app:v3"], Some("ok")),
    );
    assert!(!ok, "{out}");
    assert!(out.contains("denied the request: pullprobe: namespace strict enforces the rollout guard: 3 of 3 nodes cannot pull registry.example/app:v3"), "{out}");
    let (ok, out) = kubectl(
        &kubeconfig,
        &["apply", "-f", "-"],
        &deployment("strict", "web", &["registry.example/app:v2"], Some("ok")),
    );
    assert!(ok && !out.contains("Warning"), "{out}");

    // Anyone reaching the port: a body over the API server's 3 MiB is refused unread;
    // garbage is answered (allowed, with a reason), never a crash.
    let ca = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(secret(&api)["data"]["ca.crt"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let huge = vec![b' '; 4 * 1024 * 1024];
    assert_eq!(https_post(ctl.port(), &ca, Some(huge)), Some(413));
    assert_eq!(
        https_post(ctl.port(), &ca, Some(b"{\"request\": 7".to_vec())),
        Some(200)
    );

    // The shipped RBAC is all it needed.
    let refused: Vec<String> = api
        .audit_events()
        .iter()
        .filter(|e| e["user"]["username"] == "system:serviceaccount:pullprobe:pullprobe-controller")
        .filter(|e| e["responseStatus"]["code"] == 403)
        .map(|e| format!("{} {}", e["verb"], e["requestURI"]))
        .collect();
    assert!(
        refused.is_empty(),
        "refused by the shipped RBAC: {refused:?}"
    );

    // The controller gone: failurePolicy Ignore lets the write through, unwarned.
    ctl.stop();
    let (ok, out) = kubectl(
        &kubeconfig,
        &["apply", "-f", "-"],
        &deployment("strict", "after", &["registry.example/app:v3"], None),
    );
    assert!(ok, "{out}");
    assert!(!out.contains("Warning"), "{out}");
}

/// A TLS client that trusts only `ca_pem` reaches the webhook (it serves a certificate that
/// CA signed).
fn served_by(port: u16, ca_pem: &str) -> bool {
    https_post(port, ca_pem, None).is_some()
}

/// Over TLS trusting only `ca_pem`: `None` when the handshake fails, else the status of
/// `POST /validate` with `body` (0 when there is no body to send).
fn https_post(port: u16, ca_pem: &str, body: Option<Vec<u8>>) -> Option<u16> {
    use http_body_util::Full;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
            .ok()?;
        let Some(body) = body else { return Some(0) };
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .ok()?;
        tokio::spawn(conn);
        let req = http::Request::post("/validate")
            .header("host", "127.0.0.1")
            .header("content-type", "application/json")
            .body(Full::new(bytes::Bytes::from(body)))
            .unwrap();
        send.send_request(req)
            .await
            .ok()
            .map(|r| r.status().as_u16())
    })
}

fn first_pem(bundle: &str) -> String {
    let end = "-----END CERTIFICATE-----";
    bundle
        .find(end)
        .map(|i| bundle[..i + end.len()].to_string() + "\n")
        .unwrap_or_default()
}

#[test]
fn a_rotated_certificate_keeps_working() {
    let (api, kubeconfig) = setup();
    // 60 s certificates: rotated 40 s after they start (15 s before they were made).
    let ctl = Controller::start(&api, &controller_token(&api), Duration::from_secs(60));
    create_webhook_config(&api, ctl.port());
    let b64 = |s: &Value| {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(s.as_str().unwrap_or(""))
                .unwrap(),
        )
        .unwrap()
    };
    wait_for("the first certificate", Duration::from_secs(30), || {
        secret(&api)["data"]["tls.crt"].is_string()
    });
    let first = b64(&secret(&api)["data"]["tls.crt"]);
    wait_until_the_api_server_calls_it(&kubeconfig);

    wait_for("a rotation", Duration::from_secs(60), || {
        let s = secret(&api);
        s["data"]["tls.crt"].is_string() && b64(&s["data"]["tls.crt"]) != first
    });
    let s = secret(&api);
    let bundle = b64(&s["data"]["ca.crt"]);
    assert_eq!(
        bundle.matches("BEGIN CERTIFICATE").count(),
        2,
        "new and previous CA while the old may be served: {bundle}"
    );
    let fresh_ca = first_pem(&bundle);
    // Picked up without a restart: the listener serves the new certificate.
    wait_for(
        "the new certificate on the listener",
        Duration::from_secs(30),
        || served_by(ctl.port(), &fresh_ca),
    );
    wait_for(
        "the caBundle to be the Secret's ca.crt",
        Duration::from_secs(30),
        || {
            ca_bundle(&api)
                .is_some_and(|b| b64(&Value::String(b)) == b64(&secret(&api)["data"]["ca.crt"]))
        },
    );

    wait_until_the_api_server_calls_it(&kubeconfig);
    let (ok, out) = kubectl(
        &kubeconfig,
        &["apply", "-f", "-"],
        &deployment("guarded", "web", &["registry.example/app:v3"], Some("ok")),
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("Warning: pullprobe: 3 of 3 nodes cannot pull registry.example/app:v3"),
        "{out}"
    );
    ctl.stop();
}
