#!/usr/bin/env bash
# Soak: the agent at a 1 s interval, 200 images, faults toggling, against the real registries and
# kube-apiserver of the tests (bench/soak.rs); samples RSS, open fds, threads, tokio tasks and API
# writes, prints the curves and a flat-or-not verdict, and plots target/soak/soak.png. Not a test:
# nothing is asserted. Env: SOAK_SECONDS (600), SOAK_SAMPLE_S (5), SOAK_TOGGLE_S (20),
# SOAK_OUT (target/soak). Needs root (like the tests), the apiserver of .ci/build-kubernetes.sh,
# and python3-venv (matplotlib from PyPI into a cached venv) or gnuplot for the PNG.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
out="${SOAK_OUT:-target/soak}"
mkdir -p "$out"
export SOAK_OUT="$out"

build_log=$(cargo bench --no-run --bench soak 2>&1) || { echo "$build_log" >&2; exit 1; }
exe=$(printf '%s\n' "$build_log" | sed -n 's|.*Executable bench/soak.rs (\(.*\))|\1|p' | tail -n 1)
[ -x "$exe" ] || { echo "no soak executable:" >&2; echo "$build_log" >&2; exit 1; }
"$exe" --bench | tee "$out/soak.txt"

# The PNG: matplotlib in a venv cached outside the clone, else gnuplot, else only the text curves.
venv="${PULLPROBE_CACHE:-/var/cache/pullprobe}/venv-soak"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
    python3 -m venv "$venv" >/dev/null 2>&1 && "$venv/bin/pip" install -q matplotlib >/dev/null 2>&1 \
        || echo "note: no matplotlib (python3-venv missing or PyPI unreachable)" >&2
fi
if "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
    "$venv/bin/python" bench/soak_plot.py "$out/samples.csv" "$out/soak.png" "$out/verdict.txt"
elif command -v gnuplot >/dev/null; then
    gnuplot -e "set datafile separator ','; set terminal png size 1200,800; set output '$out/soak.png'; \
      set multiplot layout 2,2; set xlabel 't (s)'; \
      plot '$out/samples.csv' every ::1 using 1:(\$2/1024) with lines title 'RSS MiB'; \
      plot '$out/samples.csv' every ::1 using 1:3 with lines title 'open fds', '' every ::1 using 1:4 with lines title 'threads'; \
      plot '$out/samples.csv' every ::1 using 1:5 with lines title 'tokio tasks'; \
      plot '$out/samples.csv' every ::1 using 1:7 with lines title 'API writes'; unset multiplot"
else
    echo "note: no PNG (neither matplotlib nor gnuplot)" >&2
fi
[ -f "$out/soak.png" ] && echo "plot: $out/soak.png"
