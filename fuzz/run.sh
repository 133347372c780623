#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 10): `fuzz/run.sh 5` in CI (.ci/run),
# `fuzz/run.sh 600` for the longer run documented in bench/README.md.
#
# libFuzzer through cargo-fuzz on the stable toolchain: cargo-fuzz passes `-Z` flags
# (`-Zsanitizer`, `-Cpasses=sancov-module` needs none) which only nightly accepts unless
# RUSTC_BOOTSTRAP=1 is set; that is all the stable 1.95 compiler needs. No sanitizer
# (`-s none`): the crate forbids unsafe code, so ASan would only slow the run; debug
# assertions are on (`-a`), so integer overflow panics like any other panic.
#
# Every crash or hang (libFuzzer `-timeout`) stops that target and leaves its input in
# fuzz/artifacts/TARGET/; the script then exits non-zero after running the others.
# Turn each such input into a regression test (fuzz/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
export PATH="$HOME/.cargo/bin:$PATH"
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-/var/cache/pullprobe/target-fuzz}"
mkdir -p "$CARGO_TARGET_DIR"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# Seeds: fuzz/seeds/TARGET plus the real node files of tests/fixtures/corpus.
declare -A corpus_dirs=(
    [containerd_config]="tests/fixtures/corpus/containerd"
    [hosts_toml]="tests/fixtures/corpus/hosts-toml"
    [registries_conf]="tests/fixtures/corpus/registries-conf tests/fixtures/corpus/registries-conf-d"
    [registries_yaml]="tests/fixtures/corpus/k3s-registries-yaml"
    [docker_config]="tests/fixtures/corpus/docker-config-json"
    [provider_config]="tests/fixtures/corpus/credential-provider"
    [agent_config]="tests/fixtures/agent-config/valid tests/fixtures/agent-config/invalid"
)

cargo fuzz build -s none -a
bin="$CARGO_TARGET_DIR/$(rustc -vV | sed -n 's/^host: //p')/release"
failed=()
for t in $(cargo fuzz list); do
    work="fuzz/corpus/$t"
    mkdir -p "$work" "fuzz/seeds/$t"
    # The binary `cargo fuzz build` made above (`cargo fuzz run` would rebuild when the
    # sources changed meanwhile). Crash inputs go to fuzz/artifacts/TARGET/.
    mkdir -p "fuzz/artifacts/$t"
    # shellcheck disable=SC2086 # word-splitting the seed directory list is intended
    if ! "$bin/$t" -artifact_prefix="fuzz/artifacts/$t/" -max_total_time="$secs" -timeout=10 \
        -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
        "$work" "fuzz/seeds/$t" ${corpus_dirs[$t]:-} 2>"fuzz/corpus/$t.log"; then
        echo "[fuzz] $t: FAILED (see fuzz/corpus/$t.log and fuzz/artifacts/$t/)"
        tail -n 40 "fuzz/corpus/$t.log"
        failed+=("$t")
        continue
    fi
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "fuzz/corpus/$t.log" | grep -o '[0-9]*$' || echo '?')
    cov=$(grep -o 'cov: [0-9]*' "fuzz/corpus/$t.log" | tail -n1 || true)
    echo "[fuzz] $t: ok, ${runs} runs in ${secs}s, ${cov}, corpus $(find "$work" -type f | wc -l) inputs"
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "[fuzz] failing targets: ${failed[*]}"
    exit 1
fi
