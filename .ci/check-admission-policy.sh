#!/usr/bin/env bash
# Offline checks of the admission-policy component (manifests/components/admission-policy: a
# ValidatingAdmissionPolicy and its binding), as an overlay of the base with that component renders
# it (the project's API server is 1.20, which has no ValidatingAdmissionPolicy): (0) the render
# holds exactly the policy and its binding besides the base, naming the DaemonSet's
# ServiceAccount; (1) their shape against the 1.30 and
# 1.37 OpenAPI schemas (kubernetes-validate, the venv of .ci/validate-manifests.sh); (2) every CEL
# expression parses
# (cel-python, pinned, in a cached venv: PyPI only on the first run); (3) the validations, evaluated
# like the API server would (variables in order, then each validation), allow the agent's own
# write and refuse the writes they exist to refuse. Not checked: the server's type checking
# against the Node schema and its CEL cost budget (`kubectl apply --dry-run=server` on >= 1.30).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE_ROOT="${PULLPROBE_CACHE:-/var/cache/pullprobe}"
CEL_PIN=0.5.0
CEL_VENV="$CACHE_ROOT/cel-python-$CEL_PIN"
KV="$CACHE_ROOT/kubernetes-validate-1.37.0/bin/kubernetes-validate"
log() { echo "[check-admission-policy] $*" >&2; }

if ! "$CEL_VENV/bin/python" -c 'import celpy, yaml' 2>/dev/null; then
    log "installing cel-python==$CEL_PIN into $CEL_VENV"
    rm -rf "$CEL_VENV"
    python3 -m venv "$CEL_VENV"
    "$CEL_VENV/bin/pip" install --quiet --disable-pip-version-check "cel-python==$CEL_PIN" pyyaml
fi
if [ ! -x "$KV" ]; then
    bash .ci/validate-manifests.sh >/dev/null # installs kubernetes-validate into its venv
fi
# The component as an overlay renders it (kubectl with kustomize >= 3.7: .ci/install-kustomize.sh).
KUBECTL="$(bash .ci/install-kustomize.sh)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir "$WORK/overlay"
BASE="$(realpath --relative-to="$WORK/overlay" manifests)"
printf 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [%s]\ncomponents: [%s/components/admission-policy]\n' \
    "$BASE" "$BASE" >"$WORK/overlay/kustomization.yaml"
"$KUBECTL" kustomize "$WORK/overlay" >"$WORK/render.yaml"
"$KUBECTL" kustomize manifests >"$WORK/base.yaml"
POLICY="$WORK/policy.yaml"
"$CEL_VENV/bin/python" - "$WORK/render.yaml" "$WORK/base.yaml" "$POLICY" <<'PY'
import sys, yaml
render = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
base = [d for d in yaml.safe_load_all(open(sys.argv[2])) if d]
added = [d for d in render if d not in base]
kinds = sorted(d["kind"] for d in added)
want = ["ValidatingAdmissionPolicy"] * 2 + ["ValidatingAdmissionPolicyBinding"] * 2
if kinds != want or len(render) != len(base) + 4:
    sys.exit(f"the component must add exactly {want} to the base, added {kinds}")
ds = next(d for d in base if d["kind"] == "DaemonSet")
user = f"system:serviceaccount:{ds['metadata']['namespace']}:{ds['spec']['template']['spec']['serviceAccountName']}"
policies = {d["metadata"]["name"] for d in added if d["kind"] == "ValidatingAdmissionPolicy"}
bound = {d["spec"]["policyName"] for d in added if d["kind"] == "ValidatingAdmissionPolicyBinding"}
if policies != bound:
    sys.exit(f"every policy needs its binding: policies {sorted(policies)}, bound {sorted(bound)}")
for policy in (d for d in added if d["kind"] == "ValidatingAdmissionPolicy"):
    if not any(f"'{user}'" in m["expression"] for m in policy["spec"]["matchConditions"]):
        sys.exit(f"{policy['metadata']['name']}: matchConditions do not name the DaemonSet's ServiceAccount {user}")
yaml.safe_dump_all(added, open(sys.argv[3], "w"))
PY
log "the component adds the two policies and their bindings to the base, nothing else; they name the agent's ServiceAccount"
for v in 1.30.0 1.37.0; do
    "$KV" --strict --kubernetes-version "$v" "$POLICY" >/dev/null || { log "schema $v: invalid"; "$KV" --strict --kubernetes-version "$v" "$POLICY"; exit 1; }
done
log "shape valid for Kubernetes 1.30 and 1.37"

"$CEL_VENV/bin/python" - "$POLICY" <<'PY'
import copy, sys, yaml, celpy
from celpy import celtypes

docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
env = celpy.Environment()
def prog(e):
    return env.program(env.compile(e))
class Policy:
    def __init__(self, name):
        spec = next(d for d in docs if d["kind"] == "ValidatingAdmissionPolicy" and d["metadata"]["name"] == name)["spec"]
        self.match = [(m["name"], prog(m["expression"])) for m in spec["matchConditions"]]
        self.variables = [(v["name"], prog(v["expression"])) for v in spec["variables"]]
        self.validations = [(v["message"], prog(v["expression"])) for v in spec["validations"]]
        self.count = len(self.match) + len(self.variables) + len(self.validations)
    def evaluate(self, request, new, old):
        act = {"request": celpy.json_to_cel(request), "object": celpy.json_to_cel(new),
               "oldObject": celpy.json_to_cel(old)}
        if not all(bool(p.evaluate(act)) for _, p in self.match):
            return "not matched"
        vs = {}
        for name, p in self.variables:
            act["variables"] = celtypes.MapType(vs)
            vs[celtypes.StringType(name)] = p.evaluate(act)
        act["variables"] = celtypes.MapType(vs)
        failed = [msg for msg, p in self.validations if not bool(p.evaluate(act))]
        return "allowed" if not failed else "denied: " + failed[0]
nodes_policy = Policy("pullprobe-own-node-conditions")
nps_policy = Policy("pullprobe-own-nodepullstatus")
print(f"parsed {nodes_policy.count + nps_policy.count} CEL expressions")

SA = "system:serviceaccount:pullprobe:pullprobe"
def cond(t, s, reason="R"):
    return {"type": t, "status": s, "reason": reason, "message": "m",
            "lastHeartbeatTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"}
old = {"metadata": {"name": "node-a"},
       "status": {"capacity": {"cpu": "2"}, "allocatable": {"cpu": "2"},
                  "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
                  "nodeInfo": {"kubeletVersion": "v1.30.0"},
                  "conditions": [cond("Ready", "True"), cond("MemoryPressure", "False"),
                                 cond("RegistryUnreachable", "False")]}}
def req(node=None, user=SA, name="node-a", operation="UPDATE"):
    extra = {} if node is None else {"authentication.kubernetes.io/node-name": [node]}
    return {"userInfo": {"username": user, "extra": extra}, "name": name, "operation": operation}
def evaluate(request, new):
    return nodes_policy.evaluate(request, new, old)

def with_conditions(conds, **status):
    n = copy.deepcopy(old)
    n["status"]["conditions"] = conds
    n["status"].update(status)
    return n
ours = [cond("Ready", "True"), cond("MemoryPressure", "False"),
        cond("RegistryUnreachable", "True", "ConnectRefused"), cond("RegistryAuthFailing", "False")]
cases = [
    ("the agent flips its own conditions on its own node", req("node-a"), with_conditions(ours), "allowed"),
    ("the agent removes its own condition", req("node-a"), with_conditions(ours[:2]), "allowed"),
    ("another node's status", req("node-b"), with_conditions(ours), "denied: pullprobe may write only"),
    ("a token without a node", req(None), with_conditions(ours), "denied: pullprobe may write only"),
    ("Ready changed", req("node-a"), with_conditions([cond("Ready", "False")] + ours[1:]), "denied: pullprobe may change only"),
    ("a foreign condition added", req("node-a"), with_conditions(ours + [cond("DiskPressure", "True")]), "denied: pullprobe may change only"),
    ("a foreign condition removed", req("node-a"), with_conditions(ours[1:]), "denied: pullprobe may change only"),
    ("capacity changed", req("node-a"), with_conditions(ours, capacity={"cpu": "64"}), "denied: pullprobe may not change"),
    ("the kubelet (policy does not apply)", req("node-a", "system:node:node-a"), with_conditions([cond("Ready", "False")]), "not matched"),
]
# NodePullStatus (named after its node): create and status writes of its own only.
def nps(name, assignments=None):
    o = {"apiVersion": "pullprobe.io/v1alpha1", "kind": "NodePullStatus", "metadata": {"name": name},
         "spec": {"assignments": assignments or []}, "status": {"heartbeatTime": "2026-01-01T00:00:00Z"}}
    return o
assignment = [{"id": "a1", "depth": "Image", "images": ["reg/app:1"], "namespace": "team-a",
               "issuedAt": "2026-01-01T00:00:00Z"}]
nps_cases = [
    ("the agent creates its node's NodePullStatus", req("node-a", operation="CREATE"), nps("node-a"), None, "allowed"),
    ("the agent writes its node's status", req("node-a"), nps("node-a", assignment), nps("node-a", assignment), "allowed"),
    ("another node's status", req("node-a", name="node-b"), nps("node-b"), nps("node-b"), "denied: pullprobe may write only the NodePullStatus"),
    ("another node's object created", req("node-a", name="node-b", operation="CREATE"), nps("node-b"), None, "denied: pullprobe may write only the NodePullStatus"),
    ("a token without a node", req(None), nps("node-a"), nps("node-a"), "denied: pullprobe may write only the NodePullStatus"),
    ("created with assignments", req("node-a", operation="CREATE"), nps("node-a", assignment), None, "denied: pullprobe may not create"),
    ("the controller (policy does not apply)", req(None, "system:serviceaccount:pullprobe:pullprobe-controller", "node-b"), nps("node-b", assignment), nps("node-b"), "not matched"),
]
cases = [(n, r, new, lambda r, new: evaluate(r, new), want) for n, r, new, want in cases]
cases += [(n, r, new, (lambda o: lambda r, new: nps_policy.evaluate(r, new, o))(o), want) for n, r, new, o, want in nps_cases]
bad = 0
for name, r, new, judge, want in cases:
    got = judge(r, new)
    ok = got.startswith(want)
    bad += not ok
    print(f"{'ok ' if ok else 'BAD'} {name}: {got}")
sys.exit(1 if bad else 0)
PY
log "CEL parsed and evaluated: ok"
