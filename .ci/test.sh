#!/usr/bin/env bash
# The README's test command: installs what the tests need on a fresh machine (root), builds the cached
# Kubernetes binaries used by the agent tests, the release binary the one-node cluster deploys as the
# agent's image (tests/node; the harness would otherwise build it inside the first test that needs it),
# and runs the whole test suite against real servers.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
bash .ci/install-deps.sh
bash .ci/build-kubernetes.sh
cargo build --release --bin pullprobe
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --lib --bins --tests 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line over every test binary (cargo prints one per binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
