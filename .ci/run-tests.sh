#!/usr/bin/env bash
# Runs test binaries that `cargo test --no-run` built, in LANES parallel lanes: each lane runs its share
# one after another, so at most LANES binaries run at once (2 cores: the tests mostly wait on real
# servers, so two lanes overlap their waits). Each binary's output goes to LOG_DIR/NAME.log; a passing
# binary prints its `test result:` line, a failing one its whole log. Exit 1 if any failed.
#
#   .ci/run-tests.sh LANES LOG_DIR NAME=PATH...
#
# A free lane takes the next binary in the order given, so list the longest first. A group of
# binaries joined by `+` (`a=PATH+b=PATH`) stays in one lane, in that order (the one-node cluster tests
# take a machine-wide lock: tests/node/lock.rs, so they would only wait on each other in two lanes).
# Test binaries run from the package root, as `cargo test` runs them.
set -uo pipefail
lanes="$1"
logs="$2"
shift 2
mkdir -p "$logs"

run_one() { # NAME PATH
    local name="$1" bin="$2" log="$logs/$1.log" t0 status
    t0=$(date +%s)
    "$bin" >"$log" 2>&1
    status=$?
    if [ "$status" = 0 ]; then
        echo "[tests] $name: $(grep '^test result:' "$log" | tail -n 1) ($(($(date +%s) - t0)) s)"
    else
        echo "[tests] $name: FAILED (exit $status, $(($(date +%s) - t0)) s); its output:"
        cat "$log"
        echo "[tests] $name: FAILED (end of its output)"
    fi
    return "$status"
}

run_lane() { # ENTRY... (NAME=PATH, or several joined by +)
    local entry item failed=0
    for entry in "$@"; do
        IFS='+' read -r -a items <<<"$entry"
        for item in "${items[@]}"; do
            run_one "${item%%=*}" "${item#*=}" || failed=1
        done
    done
    return "$failed"
}

export logs
export -f run_one run_lane
# xargs hands the next entry to whichever lane is free (longest first = balanced lanes);
# it exits 123 when any entry failed.
printf '%s\n' "$@" | xargs -P "$lanes" -n 1 bash -c 'run_lane "$1"' _
