#!/usr/bin/env bash
# The README's test command: installs what the tests need on a fresh machine (root), builds the cached
# Kubernetes binaries used by the agent tests, the release binary the one-node cluster deploys as the
# agent's image (tests/node; the harness would otherwise build it inside the first test that needs it),
# and runs the whole test suite against real servers.
#
# Two lanes of test binaries at once (.ci/run-tests.sh): the tests mostly wait on real servers. The
# Kubernetes build (~10 min on 2 cores, once per machine; cached) runs in the background while the
# Rust builds and the tests that need no Kubernetes binary run; the rest start when it is done.
#
#   PULLPROBE_TEST_LOGS=DIR   keep each test binary's output in DIR/NAME.log (default: a temp dir)
#   PULLPROBE_TEST_LANES=N    test binaries at once (default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
bash .ci/install-deps.sh
# containerd 1.7.x and 2.x beside the machine's 1.6.20 for the per-version oracles (~20 s cold, cached).
bash .ci/cache-containerd.sh
logs="${PULLPROBE_TEST_LOGS:-$(mktemp -d /tmp/pullprobe-tests.XXXXXX)}"
lanes="${PULLPROBE_TEST_LANES:-2}"
mkdir -p "$logs"
echo "[test] logs in $logs"
start=$(date +%s)
bash .ci/build-kubernetes.sh >"$logs/build-kubernetes.log" 2>&1 &
kube_build=$!

cargo build --release --bin pullprobe
cargo test --no-run --lib --bins --tests --message-format=json-render-diagnostics >"$logs/build.json"
# NAME=PATH of every test binary (the lib's unit tests are `lib`).
mapfile -t all < <(python3 - "$logs/build.json" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        kind = m["target"]["kind"][0]
        name = {"lib": "lib", "bin": "bin-" + m["target"]["name"]}.get(kind, m["target"]["name"])
        print(f"{name}={m['executable']}")
EOF
)
[ "${#all[@]}" -gt 0 ] || { echo "[test] no test binaries in $logs/build.json" >&2; exit 1; }
path_of() { local e; for e in "${all[@]}"; do [ "${e%%=*}" = "$1" ] && echo "${e#*=}"; done; return 0; }

# Binaries that start a kube-apiserver or a one-node cluster (tests/kube, tests/node), longest first;
# the two cluster tests share a lane (one cluster at a time on the machine: tests/node/lock.rs).
kube_tests=("kubelet_oracle+node_cluster" manifests tenant_attack preflight agent_api_faults agent_kube agent_drift agent_reviews provider_sa_tokens kube_selftest)
declare -A is_kube=()
for g in "${kube_tests[@]}"; do for t in ${g//+/ }; do is_kube[$t]=1; done; done
# Any other binary that starts a kube-apiserver (`mod kube;`) waits for the Kubernetes build too.
for f in $(grep -l '^mod kube;' tests/*.rs); do
    t="$(basename "$f" .rs)"
    [ -n "${is_kube[$t]:-}" ] || { kube_tests+=("$t"); is_kube[$t]=1; }
done
# The others, longest first where known.
first=(oracle_containerd fault_matrix prometheus secrets preflight_html)
others=()
for t in "${first[@]}"; do [ -n "$(path_of "$t")" ] && others+=("$t=$(path_of "$t")"); done
for e in "${all[@]}"; do
    n="${e%%=*}"
    [ -n "${is_kube[$n]:-}" ] && continue
    [[ " ${first[*]} " == *" $n "* ]] && continue
    others+=("$e")
done
kube_entries=()
for g in "${kube_tests[@]}"; do
    entry=""
    for t in ${g//+/ }; do
        p="$(path_of "$t")"
        [ -n "$p" ] || { echo "[test] no test binary $t" >&2; exit 1; }
        entry+="${entry:++}$t=$p"
    done
    kube_entries+=("$entry")
done

status=0
bash .ci/run-tests.sh "$lanes" "$logs" "${others[@]}" || status=1
if ! wait "$kube_build"; then
    cat "$logs/build-kubernetes.log"
    echo "[test] the Kubernetes build failed: the tests that need it are not run" >&2
    exit 1
fi
tail -n 1 "$logs/build-kubernetes.log"
bash .ci/run-tests.sh "$lanes" "$logs" "${kube_entries[@]}" || status=1

# One closing line over every test binary.
cat "$logs"/*.log | awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed", p, f }'
echo " ($(($(date +%s) - start)) s)"
exit "$status"
