use super::*;
use crate::reference::ImageRef;

fn root(files: &[(&str, &str)]) -> (tempfile::TempDir, HostRoot) {
    let d = tempfile::tempdir().unwrap();
    for (p, text) in files {
        let path = d.path().join(p.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let hr = HostRoot::new(d.path()).unwrap();
    (d, hr)
}

fn found(files: &[(&str, &str)]) -> (KubeletSettings, Vec<ConfigProblem>) {
    let (_d, hr) = root(files);
    let mut problems = Vec::new();
    let s = discover(&hr, &mut problems);
    (s, problems)
}

const KUBEADM_UNIT: &str =
    "[Unit]\nDescription=kubelet\n[Service]\nExecStart=/usr/bin/kubelet\nRestart=always\n";
const KUBEADM_DROPIN: &str = r#"[Service]
Environment="KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf"
Environment="KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml"
# This is a file that "kubeadm init" and "kubeadm join" generates at runtime
EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
EnvironmentFile=-/etc/default/kubelet
ExecStart=
ExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS
"#;

#[test]
fn kubeadm_layout_with_extra_args_in_etc_default() {
    let (s, problems) = found(&[
        ("/usr/lib/systemd/system/kubelet.service", KUBEADM_UNIT),
        ("/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf", KUBEADM_DROPIN),
        (
            "/var/lib/kubelet/kubeadm-flags.env",
            "KUBELET_KUBEADM_ARGS=\"--container-runtime-endpoint=unix:///var/run/containerd/containerd.sock --pod-infra-container-image=registry.k8s.io/pause:3.9\"\n",
        ),
        (
            "/etc/default/kubelet",
            "KUBELET_EXTRA_ARGS=--root-dir /data/kubelet --image-credential-provider-config=/etc/kubernetes/cp.yaml --image-credential-provider-bin-dir=/opt/cp/bin\n",
        ),
    ]);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(
        s.unit.as_deref(),
        Some(Path::new("/usr/lib/systemd/system/kubelet.service"))
    );
    assert_eq!(s.root_dir.value, PathBuf::from("/data/kubelet"));
    assert_eq!(
        s.root_dir.source.to_string(),
        "/usr/lib/systemd/system/kubelet.service via $KUBELET_EXTRA_ARGS set in /etc/default/kubelet"
    );
    assert_eq!(
        s.credential_provider_config.unwrap().value,
        PathBuf::from("/etc/kubernetes/cp.yaml")
    );
    assert_eq!(
        s.credential_provider_bin_dir.unwrap().value,
        PathBuf::from("/opt/cp/bin")
    );
    let ep = s.container_runtime_endpoint.unwrap();
    assert_eq!(ep.value, "unix:///var/run/containerd/containerd.sock");
    assert!(matches!(
        ep.source,
        SettingSource::Unit { variable: Some(ref v), .. } if v == "KUBELET_KUBEADM_ARGS"
    ));
    assert_eq!(
        s.config_file.unwrap().value,
        PathBuf::from("/var/lib/kubelet/config.yaml")
    );
}

#[test]
fn eks_al2_flags_in_the_unit_with_continuations() {
    let unit = "[Service]\nExecStartPre=/sbin/iptables -P FORWARD ACCEPT -w 5\nExecStart=/usr/bin/kubelet \\\n    --config /etc/kubernetes/kubelet/kubelet-config.json \\\n    --kubeconfig /var/lib/kubelet/kubeconfig \\\n    --container-runtime-endpoint unix:///run/containerd/containerd.sock \\\n    --image-credential-provider-config /etc/eks/image-credential-provider/config.json \\\n    --image-credential-provider-bin-dir /etc/eks/image-credential-provider \\\n    $KUBELET_ARGS \\\n    $KUBELET_EXTRA_ARGS\n";
    let (s, problems) = found(&[
        ("/etc/systemd/system/kubelet.service", unit),
        (
            "/etc/systemd/system/kubelet.service.d/10-kubelet-args.conf",
            "[Service]\nEnvironment='KUBELET_ARGS=--node-ip=10.0.0.5 --pod-infra-container-image=602401143452.dkr.ecr.us-west-2.amazonaws.com/eks/pause:3.5 --v=2'\n",
        ),
    ]);
    assert!(problems.is_empty(), "{problems:?}");
    let cfg = s.credential_provider_config.unwrap();
    assert_eq!(
        cfg.value,
        PathBuf::from("/etc/eks/image-credential-provider/config.json")
    );
    assert_eq!(
        cfg.source.to_string(),
        "/etc/systemd/system/kubelet.service"
    );
    assert_eq!(
        s.credential_provider_bin_dir.unwrap().value,
        PathBuf::from("/etc/eks/image-credential-provider")
    );
    assert_eq!(s.root_dir.source, SettingSource::Default);
}

#[test]
fn eks_al2023_nodeadm_environment_file() {
    let (s, _) = found(&[
        (
            "/etc/systemd/system/kubelet.service",
            "[Service]\nEnvironmentFile=/etc/eks/kubelet/environment\nExecStart=/usr/bin/kubelet $NODEADM_KUBELET_ARGS\n",
        ),
        (
            "/etc/eks/kubelet/environment",
            "NODEADM_KUBELET_ARGS=\"--node-ip=10.0.0.1 --config=/etc/kubernetes/kubelet/config.json --config-dir=/etc/kubernetes/kubelet/config.json.d --image-credential-provider-bin-dir=/etc/eks/image-credential-provider --image-credential-provider-config=/etc/eks/image-credential-provider/config.json\"\n",
        ),
        (
            "/etc/kubernetes/kubelet/config.json",
            "{\"kind\":\"KubeletConfiguration\",\"apiVersion\":\"kubelet.config.k8s.io/v1beta1\",\"containerRuntimeEndpoint\":\"unix:///run/containerd/containerd.sock\"}",
        ),
    ]);
    assert_eq!(
        s.credential_provider_config.unwrap().value,
        PathBuf::from("/etc/eks/image-credential-provider/config.json")
    );
    let ep = s.container_runtime_endpoint.unwrap();
    assert_eq!(ep.value, "unix:///run/containerd/containerd.sock");
    assert_eq!(
        ep.source.to_string(),
        "/etc/kubernetes/kubelet/config.json (containerRuntimeEndpoint)"
    );
}

#[test]
fn gke_and_aks_keep_flags_in_etc_default_kubelet() {
    let (gke, _) = found(&[
        (
            "/etc/systemd/system/kubelet.service",
            "[Service]\nRestart=always\nEnvironmentFile=/etc/default/kubelet\nExecStart=/home/kubernetes/bin/kubelet $KUBELET_OPTS\n",
        ),
        (
            "/etc/default/kubelet",
            "KUBELET_OPTS=\"--v=2 --image-credential-provider-config=/etc/srv/kubernetes/cri_auth_config.yaml --image-credential-provider-bin-dir=/home/kubernetes/bin --container-runtime-endpoint=unix:///run/containerd/containerd.sock\"\n",
        ),
    ]);
    assert_eq!(
        gke.credential_provider_bin_dir.unwrap().value,
        PathBuf::from("/home/kubernetes/bin")
    );
    let (aks, _) = found(&[
        (
            "/etc/systemd/system/kubelet.service",
            "[Service]\nEnvironmentFile=/etc/default/kubelet\nExecStart=/usr/local/bin/kubelet \\\n        --enable-server \\\n        --node-labels=\"${KUBELET_NODE_LABELS}\" \\\n        $KUBELET_CONTAINERD_FLAGS \\\n        $KUBELET_FLAGS\n",
        ),
        (
            "/etc/systemd/system/kubelet.service.d/10-containerd.conf",
            "[Service]\nEnvironment=KUBELET_CONTAINERD_FLAGS=\"--runtime-request-timeout=15m --container-runtime-endpoint=unix:///run/containerd/containerd.sock\"\n",
        ),
        (
            "/etc/default/kubelet",
            "KUBELET_FLAGS=--address=0.0.0.0 --image-credential-provider-bin-dir=/var/lib/kubelet/credential-provider --image-credential-provider-config=/var/lib/kubelet/credential-provider-config.yaml\nKUBELET_NODE_LABELS=kubernetes.azure.com/role=agent\n",
        ),
    ]);
    assert_eq!(
        aks.credential_provider_config.unwrap().value,
        PathBuf::from("/var/lib/kubelet/credential-provider-config.yaml")
    );
    assert_eq!(
        aks.container_runtime_endpoint.unwrap().value,
        "unix:///run/containerd/containerd.sock"
    );
}

#[test]
fn drop_in_in_etc_masks_the_same_name_in_usr_lib_and_last_flag_wins() {
    let (s, _) = found(&[
        ("/usr/lib/systemd/system/kubelet.service", KUBEADM_UNIT),
        (
            "/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf",
            KUBEADM_DROPIN,
        ),
        (
            "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf",
            "[Service]\nExecStart=\nExecStart=/usr/bin/kubelet --root-dir=/a --root-dir=/b\n",
        ),
    ]);
    assert_eq!(s.root_dir.value, PathBuf::from("/b"));
    assert!(s.config_file.is_none(), "the /usr/lib drop-in is masked");
}

#[test]
fn without_a_unit_the_usual_environment_files_are_read() {
    let (s, _) = found(&[(
        "/etc/sysconfig/kubelet",
        "KUBELET_EXTRA_ARGS=--image-credential-provider-config=/etc/kubernetes/cp.yaml\n",
    )]);
    let c = s.credential_provider_config.unwrap();
    assert_eq!(c.value, PathBuf::from("/etc/kubernetes/cp.yaml"));
    assert_eq!(
        c.source.to_string(),
        "/etc/sysconfig/kubelet (KUBELET_EXTRA_ARGS)"
    );
    let (none, problems) = found(&[]);
    assert_eq!(none.root_dir.value, PathBuf::from(DEFAULT_ROOT_DIR));
    assert!(none.unit.is_none() && none.credential_provider_config.is_none());
    assert!(problems.is_empty());
}

#[test]
fn a_required_environment_file_that_is_missing_is_a_problem() {
    let (_, problems) = found(&[(
        "/etc/systemd/system/kubelet.service",
        "[Service]\nEnvironmentFile=/etc/default/kubelet\nExecStart=/usr/bin/kubelet $KUBELET_OPTS\n",
    )]);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].file, PathBuf::from("/etc/default/kubelet"));
}

/// KEP-2535 settings: `featureGates` and policy in `--config`, a `--config-dir` drop-in
/// overriding the policy, `--feature-gates` overriding the file's gate.
#[test]
fn cached_image_settings_from_config_drop_ins_and_flags() {
    use cached::{Gate, VerificationPolicy};
    let unit = "[Service]\nExecStart=/usr/bin/kubelet --config=/var/lib/kubelet/config.yaml --config-dir=/etc/kubernetes/kubelet.conf.d $EXTRA\nEnvironment=\"EXTRA=--feature-gates=Foo=true,KubeletEnsureSecretPulledImages=false\"\n";
    let config = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nfeatureGates:\n  KubeletEnsureSecretPulledImages: true\nimagePullCredentialsVerificationPolicy: AlwaysVerify\npreloadedImagesVerificationAllowlist: [\"registry.k8s.io/*\"]\n";
    let drop_in = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nimagePullCredentialsVerificationPolicy: NeverVerifyAllowlistedImages\n";
    let (s, problems) = found(&[
        ("/etc/systemd/system/kubelet.service", unit),
        ("/var/lib/kubelet/config.yaml", config),
        ("/etc/kubernetes/kubelet.conf.d/20-policy.conf", drop_in),
        (
            "/etc/kubernetes/kubelet.conf.d/ignored.yaml",
            "imagePullCredentialsVerificationPolicy: NeverVerify\n",
        ),
    ]);
    assert!(problems.is_empty(), "{problems:?}");
    let c = &s.cached_images;
    assert_eq!(
        c.policy.value,
        VerificationPolicy::NeverVerifyAllowlistedImages
    );
    assert_eq!(
        c.policy.source.to_string(),
        "/etc/kubernetes/kubelet.conf.d/20-policy.conf (imagePullCredentialsVerificationPolicy)"
    );
    assert_eq!(c.allowlist, ["registry.k8s.io/*"]);
    assert!(
        matches!(&c.gate, Gate::Off { source: SettingSource::Unit { variable: Some(v), .. } } if v == "EXTRA"),
        "the flag wins over featureGates: {:?}",
        c.gate
    );
    // Without the flag the file's featureGates entry stands; nothing set = the default.
    let (s, _) = found(&[
        (
            "/etc/systemd/system/kubelet.service",
            "[Service]\nExecStart=/usr/bin/kubelet --config /c.json\n",
        ),
        (
            "/c.json",
            "{\"featureGates\":{\"KubeletEnsureSecretPulledImages\":true}}",
        ),
    ]);
    assert!(matches!(s.cached_images.gate, Gate::On { .. }));
    assert_eq!(
        s.cached_images.policy.value,
        VerificationPolicy::NeverVerifyPreloadedImages,
        "the kubelet's default policy"
    );
    assert_eq!(s.cached_images.policy.source, SettingSource::Default);
    let (none, _) = found(&[]);
    assert_eq!(none.cached_images.gate, Gate::Default);
}

#[test]
fn invalid_cached_image_settings_are_problems_naming_the_field() {
    let (s, problems) = found(&[
        ("/etc/systemd/system/kubelet.service", "[Service]\nExecStart=/usr/bin/kubelet --config /k.yaml\n"),
        ("/k.yaml", "imagePullCredentialsVerificationPolicy: SometimesVerify-canary\npreloadedImagesVerificationAllowlist: [\"ok.io/a\", \"bad.io/a:1\", \"*\"]\n"),
    ]);
    let fields: Vec<&str> = problems.iter().filter_map(|p| p.field.as_deref()).collect();
    assert_eq!(
        fields,
        [
            "imagePullCredentialsVerificationPolicy",
            "preloadedImagesVerificationAllowlist[1]",
            "preloadedImagesVerificationAllowlist[2]"
        ],
        "{problems:?}"
    );
    assert!(problems.iter().all(|p| p.file == Path::new("/k.yaml")));
    assert!(!problems[0].message.contains("canary"), "{}", problems[0]);
    assert_eq!(s.cached_images.allowlist, ["ok.io/a"]);
    assert_eq!(
        s.cached_images.policy.value,
        cached::VerificationPolicy::NeverVerifyPreloadedImages
    );
}

/// The kubelet's pull records decide per image (MustAttemptImagePull), for each policy.
#[test]
fn cached_image_answers_per_policy_from_the_pull_records() {
    let record = |image_ref: &str, mapping: &str| {
        format!("{{\"kind\":\"ImagePulledRecord\",\"apiVersion\":\"kubelet.config.k8s.io/v1alpha1\",\"lastUpdatedTime\":\"2026-11-01T10:00:00Z\",\"imageRef\":\"{image_ref}\",\"credentialMapping\":{mapping}}}")
    };
    let node_wide = record(
        "sha256:1",
        r#"{"docker.io/library/nginx":{"nodePodsAccessible":true}}"#,
    );
    let secret = record(
        "sha256:2",
        r#"{"reg.example.com/team/app":{"kubernetesSecrets":[{"uid":"u","namespace":"a","name":"s","credentialHash":"h"}]}}"#,
    );
    let sa = record(
        "sha256:3",
        r#"{"reg.example.com/team/sa":{"kubernetesServiceAccounts":[{"uid":"u","namespace":"a","name":"default"}]}}"#,
    );
    let mixed_a = record(
        "sha256:4",
        r#"{"reg.example.com/team/mixed":{"nodePodsAccessible":true}}"#,
    );
    let mixed_b = record(
        "sha256:5",
        r#"{"reg.example.com/team/mixed":{"kubernetesSecrets":[]}}"#,
    );
    let dir = "/data/kubelet/image_manager/pulled";
    let policy = |p: &str| {
        format!("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nimagePullCredentialsVerificationPolicy: {p}\npreloadedImagesVerificationAllowlist: [\"reg.example.com/team/*\"]\n")
    };
    let unit = "[Service]\nExecStart=/usr/bin/kubelet --root-dir=/data/kubelet --config /k.yaml --feature-gates=KubeletEnsureSecretPulledImages=true\n";
    let answers = |p: &str| -> Vec<(bool, String)> {
        let files = [
            ("/etc/systemd/system/kubelet.service", unit.to_string()),
            ("/k.yaml", policy(p)),
            (&format!("{dir}/sha256-1") as &str, node_wide.clone()),
            (&format!("{dir}/sha256-2"), secret.clone()),
            (&format!("{dir}/sha256-3"), sa.clone()),
            (&format!("{dir}/sha256-4"), mixed_a.clone()),
            (&format!("{dir}/sha256-5"), mixed_b.clone()),
            (&format!("{dir}/sha256-6.tmp"), "half-written".to_string()),
            (&format!("{dir}/sha256-7"), "{not a record".to_string()),
        ]
        .map(|(a, b)| (a.to_string(), b));
        let borrowed: Vec<(&str, &str)> = files
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let (_d, hr) = root(&borrowed);
        let mut problems = Vec::new();
        let mut s = discover(&hr, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        s.cached_images.load_records(&hr, &s.root_dir.value);
        assert_eq!(
            (
                s.cached_images.records.read,
                s.cached_images.records.skipped
            ),
            (5, 1)
        );
        [
            "nginx:1.27",
            "reg.example.com/team/app:2",
            "reg.example.com/team/sa",
            "reg.example.com/team/mixed:1",
            "quay.io/other/preloaded:1",
        ]
        .iter()
        .map(|i| {
            let c = s.cached_images.cached_image(&ImageRef::parse(i).unwrap());
            assert!(c.assumes.is_none(), "the gate is given: {c:?}");
            (c.reverified, c.why)
        })
        .collect()
    };
    let flags = |p: &str| answers(p).into_iter().map(|(r, _)| r).collect::<Vec<_>>();
    // nginx node-wide, app secret, sa service account, mixed, preloaded (no record).
    assert_eq!(flags("NeverVerify"), [false, false, false, false, false]);
    assert_eq!(
        flags("NeverVerifyPreloadedImages"),
        [false, true, true, true, false]
    );
    assert_eq!(
        flags("NeverVerifyAllowlistedImages"),
        [false, false, false, false, true]
    );
    assert_eq!(flags("AlwaysVerify"), [false, true, true, true, true]);
    let why = answers("NeverVerifyPreloadedImages");
    assert!(why[0].1.contains("node-wide"), "{}", why[0].1);
    assert!(
        why[1].1.contains("pull secrets or a service account"),
        "{}",
        why[1].1
    );
    assert!(
        why[4].1.contains("no pull record") && why[4].1.contains(dir),
        "{}",
        why[4].1
    );
}
