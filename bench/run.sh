#!/usr/bin/env bash
# Runs pullprobe's benchmarks and prints their tables (see bench/README.md). Not a test: nothing
# is asserted. Output is also saved to target/bench-last.txt.
# Env knobs: BENCH_N (30), BENCH_N_DELAY (8), BENCH_AGENT_CYCLES (20), BENCH_AGENT_BIG (1000).
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1 || { echo "missing $1: apt-get install -y $2" >&2; exit 2; }; }
if [ ! -x /usr/bin/time ]; then
  echo "installing GNU time (/usr/bin/time -v)" >&2
  apt-get install -y time >/dev/null
fi
need docker-registry docker-registry
need skopeo skopeo
need htpasswd apache2-utils
command -v containerd >/dev/null 2>&1 || echo "note: containerd not installed: the ctr column is skipped" >&2

mkdir -p target
out=target/bench-last.txt
{
  echo "# pullprobe benchmarks, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "nproc: $(nproc); CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'); kernel: $(uname -sr)"
  echo "rustc: $(rustc --version); load average: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$out"

# Build once, then run the executables that build produced (not `cargo bench --bench X`, which
# would rebuild if the tree changed in between).
build_log=$(cargo bench --no-run --bench probe --bench agent --bench preflight 2>&1) || { echo "$build_log" >&2; exit 1; }
for b in probe agent preflight; do
  exe=$(printf '%s\n' "$build_log" | sed -n "s|.*Executable benches/$b.rs (\(.*\))|\1|p" | tail -n 1)
  [ -x "$exe" ] || { echo "no executable for bench $b:" >&2; echo "$build_log" >&2; exit 1; }
  echo | tee -a "$out"
  "$exe" --bench | tee -a "$out"
done
