#!/usr/bin/env bash
# Install every Debian package the tests, benchmarks and CI scripts need (root, Debian bookworm).
# Idempotent; fast path: when everything is already installed, no `apt-get update` and no network.
set -euo pipefail

PACKAGES=(
    # real servers for the probe tests (tests/harness)
    docker-registry skopeo unbound containerd apache2-utils openssl
    # real Kubernetes control plane (tests/kube): etcd + kube-apiserver built by .ci/build-kubernetes.sh
    etcd-server golang-go rsync make golang-github-modern-go-reflect2-dev dpkg-dev
    # the real one-node cluster (tests/node): CNI loopback plugin, a static busybox for the pause and agent images,
    # (kubectl comes from .ci/build-kubernetes.sh: Debian's kubernetes-client conflicts with a preinstalled kubectl)
    containernetworking-plugins busybox-static
    # a real Prometheus and promtool (tests/prometheus)
    prometheus
    # network faults and namespaces
    iptables nftables iproute2 tinyproxy util-linux
    # benchmarks
    hyperfine time
    # pre-flight's HTML heatmap rendered and checked in headless Chromium (tests/preflight_html.rs)
    chromium fonts-dejavu-core
    # the Argo CD health check of examples/argocd/ run on fixtures (tests/gitops.rs)
    lua5.4
    # manifest validation (.ci/validate-manifests.sh: kubernetes-validate in a venv)
    python3 python3-venv python3-pip
    # misc tooling used by the scripts
    curl ca-certificates util-linux procps
)

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "[install-deps] all ${#PACKAGES[@]} packages already installed"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "[install-deps] must run as root to install: ${missing[*]}" >&2
    exit 1
fi

echo "[install-deps] installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}"
