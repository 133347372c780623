#!/usr/bin/env bash
# The main job on an embedded default, no cluster and no config needed: start a real
# registry on loopback, push a tiny image with skopeo, then run `pullprobe check` on it
# (one image that pulls, one tag that does not) and the standalone agent for one cycle.
# Run as root on a fresh Debian machine: it installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

need=()
for p in docker-registry skopeo python3; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if [ "${#need[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq "${need[@]}"
fi

cargo build --quiet
bin="${CARGO_TARGET_DIR:-target}/debug/pullprobe"

work=$(mktemp -d)
cleanup() { [ -n "${reg_pid:-}" ] && kill "$reg_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/registry.yml" <<YML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $work/storage}}
http: {addr: 127.0.0.1:$port}
YML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
reg_pid=$!
for _ in $(seq 50); do
    python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/v2/')" 2>/dev/null && break
    sleep 0.1
done
python3 scripts/make-oci-image.py "$work/oci"
skopeo copy --quiet --dest-tls-verify=false "oci:$work/oci:v1" "docker://127.0.0.1:$port/demo/app:v1"

echo "== pullprobe check (a local registry on 127.0.0.1:$port)"
set +e
"$bin" check -v "127.0.0.1:$port/demo/app:v1" "127.0.0.1:$port/demo/app:missing"
echo "exit code: $? (0 = every image pulls, 1 = some would not, 2 = usage/config error)"
echo
echo "== the same as JSON lines"
"$bin" check --json "127.0.0.1:$port/demo/app:missing"
if "$bin" agent --help >/dev/null 2>&1 && [ -f examples/standalone.yaml ]; then
    echo
    echo "== pullprobe agent --standalone, one cycle (examples/standalone.yaml)"
    sed "s/localhost:5000/localhost:$port/g" examples/standalone.yaml > "$work/standalone.yaml"
    "$bin" agent --standalone --config "$work/standalone.yaml" --once --listen 127.0.0.1:0 --log-format json
fi
exit 0
