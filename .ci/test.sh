#!/usr/bin/env bash
# The README's test command: installs what the tests need on a fresh machine (root), builds the cached
# kube-apiserver used by the agent tests, and runs the whole test suite against real servers.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
bash .ci/install-deps.sh
bash .ci/build-kube-apiserver.sh
cargo test
