use super::*;

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
