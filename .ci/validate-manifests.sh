#!/usr/bin/env bash
# Validate the Kubernetes manifests offline against the Kubernetes OpenAPI schemas (strict: unknown
# fields are errors), with PyPI `kubernetes-validate` pinned and installed once into a venv in the
# cache (network only for that first install; offline afterwards): the base (manifests/*.yaml) and
# the render of every combination of manifests/components/. Also checks that kustomization.yaml
# lists every top-level manifest and only existing files.
#
#   PULLPROBE_CACHE   cache root (default /var/cache/pullprobe)
#   KUBE_VERSIONS     schema versions to validate against (default: oldest and newest bundled + 1.33)
set -euo pipefail
cd "$(dirname "$0")/.."

PIN=1.37.0
CACHE_ROOT="${PULLPROBE_CACHE:-/var/cache/pullprobe}"
VENV="$CACHE_ROOT/kubernetes-validate-$PIN"
KUBE_VERSIONS="${KUBE_VERSIONS:-1.25.0 1.33.0 1.37.0}"

log() { echo "[validate-manifests] $*" >&2; }

if ! "$VENV/bin/kubernetes-validate" --version 2>/dev/null | grep -qF "$PIN"; then
    log "installing kubernetes-validate==$PIN into $VENV"
    mkdir -p "$CACHE_ROOT"
    exec 9>"$CACHE_ROOT/.kubernetes-validate.lock"
    flock 9
    if ! "$VENV/bin/kubernetes-validate" --version 2>/dev/null | grep -qF "$PIN"; then
        rm -rf "$VENV"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$PIN"
    fi
    flock -u 9
fi

mapfile -t files < <(find manifests -maxdepth 1 -name '*.yaml' ! -name kustomization.yaml | sort)
[ "${#files[@]}" -gt 0 ] || { log "no manifests found"; exit 1; }

# Every combination of the components (manifests/components/, kustomize >= 3.7: the hermetic
# kubectl of .ci/install-kustomize.sh) rendered with `kubectl kustomize`; the Kubernetes objects of
# each render are validated below with the base. Custom resources (monitoring.coreos.com) are
# validated against their CRDs on a real API server by tests/manifests.rs.
KUBECTL="$(bash .ci/install-kustomize.sh)"
RENDER="$(mktemp -d)"
trap 'rm -rf "$RENDER"' EXIT
"$VENV/bin/python" - "$KUBECTL" "$RENDER" <<'PY' || { log "rendering the component combinations failed"; exit 1; }
import itertools, os, subprocess, sys, yaml
kubectl, out = sys.argv[1], sys.argv[2]
base = os.path.abspath("manifests")
independent = ["prometheus", "grafana-dashboard", "pull-secrets", "non-root", "control-plane", "large-nodes"]
combos = [list(c) for n in range(len(independent) + 1) for c in itertools.combinations(independent, n)]
combos += [c + ["prometheus-servicemonitor"] for c in combos if "prometheus" in c]
# provider-sa-tokens only adds its own RBAC objects: alone and with the ConfigMap/DaemonSet changers.
combos += [["provider-sa-tokens"], ["provider-sa-tokens", "pull-secrets", "non-root"]]
for i, combo in enumerate(combos):
    d = os.path.join(out, f"overlay-{i:03}")
    os.makedirs(d)
    rel = os.path.relpath(base, d)
    k = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": [rel],
         "components": [os.path.join(rel, "components", c) for c in combo]}
    yaml.safe_dump(k, open(os.path.join(d, "kustomization.yaml"), "w"))
    r = subprocess.run([kubectl, "kustomize", d], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"kubectl kustomize {combo}: {r.stderr}")
    docs = [x for x in yaml.safe_load_all(r.stdout) if x]
    core = [x for x in docs if not x["apiVersion"].startswith("monitoring.coreos.com/")]
    yaml.safe_dump_all(core, open(os.path.join(out, f"render-{i:03}.yaml"), "w"))
print(len(combos))
PY
mapfile -t renders < <(find "$RENDER" -maxdepth 1 -name 'render-*.yaml' | sort)
log "rendered ${#renders[@]} component combinations"
files+=("${renders[@]}")

fail=0
for v in $KUBE_VERSIONS; do
    # --quiet: print only failures and warnings; a warning (e.g. an unknown kind) is a failure here.
    out="$("$VENV/bin/kubernetes-validate" --strict --quiet -k "$v" "${files[@]}" 2>&1)" || fail=1
    if [ -n "$out" ]; then
        echo "$out" >&2
        fail=1
    fi
    log "Kubernetes $v: ${#files[@]} files (base + renders) $([ "$fail" = 0 ] && echo ok || echo FAILED)"
done

# kustomization.yaml: every resource exists; every top-level manifest is listed (components/ are opt-in).
"$VENV/bin/python" - <<'PY' || fail=1
import os, sys, yaml
k = yaml.safe_load(open("manifests/kustomization.yaml"))
res = k.get("resources", [])
bad = [r for r in res if not os.path.isfile(os.path.join("manifests", r))]
top = sorted(f for f in os.listdir("manifests") if f.endswith(".yaml") and f != "kustomization.yaml")
unlisted = [f for f in top if f not in res]
images = {i["name"] for i in k.get("images", [])}
used = set()
for f in res:
    for doc in yaml.safe_load_all(open(os.path.join("manifests", f))):
        spec = (doc or {}).get("spec", {}).get("template", {}).get("spec", {})
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            used.add(c["image"].split(":")[0])
errs = []
if bad: errs.append(f"kustomization.yaml lists missing files: {bad}")
if unlisted: errs.append(f"manifests not in kustomization.yaml: {unlisted}")
if images - used: errs.append(f"kustomization images not used by any container: {sorted(images - used)}")
for e in errs: print("[validate-manifests] " + e, file=sys.stderr)
sys.exit(1 if errs else 0)
PY

if [ "$fail" != 0 ]; then
    log "FAILED"
    exit 1
fi
log "all manifests valid"
