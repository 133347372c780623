#!/usr/bin/env bash
# Build Kubernetes v1.20.2 offline from Debian's `kubernetes` source package into a cache outside the clone:
# kube-apiserver (the tests' real API server, tests/kube/mod.rs) and kubelet, kube-controller-manager and
# kube-scheduler (the real one-node cluster, tests/node/mod.rs) and kubectl (`kubectl apply -k` in the tests), in one `make WHAT=…` so they share one Go build
# cache. Skips when sane binaries are already cached.
#
#   PULLPROBE_CACHE   cache root (default /var/cache/pullprobe); binaries in $PULLPROBE_CACHE/kubernetes/
#   KEEP_BUILD=1      keep the ~3 GB build tree after a successful build
#   DEBSRC_ONLY=1     only print the deb-src entries derived from APT_ETC (default /etc/apt) and exit
#
# Steps and traps: /work/shared/test-infra.md "A real Kubernetes API server". In short: deb-src from a private
# apt source list (never touches /etc/apt), the vendored modern-go/reflect2 1.0.1 replaced by Debian's (the
# vendored one crashes at run time with Go >= 1.18), GOPATH mode (module mode fails), ~6 min on 2 cores.
set -euo pipefail

WANT_VERSION=v1.20.2
# Read only (deb-src entries are derived from it into a private list); overridable for testing.
APT_ETC="${APT_ETC:-/etc/apt}"
CACHE_ROOT="${PULLPROBE_CACHE:-/var/cache/pullprobe}"
OUT_DIR="$CACHE_ROOT/kubernetes"
WORK="$OUT_DIR/build"
COMPONENTS=(kube-apiserver kubelet kube-controller-manager kube-scheduler kubectl)

log() { echo "[build-kubernetes] $*" >&2; }

is_sane() {
    local c
    for c in "${COMPONENTS[@]}"; do
        [ -x "$OUT_DIR/$c" ] || return 1
        if [ "$c" = kubectl ]; then
            "$OUT_DIR/$c" version --client --short 2>/dev/null | grep -q "Client Version: $WANT_VERSION\$" || return 1
        else
            "$OUT_DIR/$c" --version 2>/dev/null | grep -q "Kubernetes $WANT_VERSION\$" || return 1
        fi
    done
}

mkdir -p "$OUT_DIR"
# One build at a time (the lead's .ci/run and a developer may both call this).
exec 9>"$OUT_DIR/.lock"
flock 9

if is_sane; then
    log "cached: ${COMPONENTS[*]} $WANT_VERSION in $OUT_DIR"
    exit 0
fi

need=()
for p in golang-go rsync make golang-github-modern-go-reflect2-dev dpkg-dev; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if [ "${#need[@]}" -gt 0 ]; then
    log "installing: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

REFLECT2=/usr/share/gocode/src/github.com/modern-go/reflect2
[ -d "$REFLECT2" ] || { log "missing $REFLECT2 (golang-github-modern-go-reflect2-dev)"; exit 1; }

# --- 1. source package via a private apt configuration --------------------------------------------------
APT="$WORK/apt"
rm -rf "$APT/parts"
mkdir -p "$APT/lists/partial" "$APT/parts" "$APT/archives/partial"
: >"$APT/sources.list"
codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")"
# Turn the machine's own Debian entries (suite "$codename" or "$codename-*") into deb-src entries.
suite_ok() { [[ "$1" == "$codename" || "$1" == "$codename"-* ]]; }
if [ -f "$APT_ETC/sources.list" ]; then
    while read -r kind rest; do
        [ "$kind" = deb ] || continue
        # shellcheck disable=SC2086
        set -- $rest
        opts=""
        if [[ "$1" == \[* ]]; then
            while [[ "$1" != *\] ]]; do opts="$opts $1"; shift; done
            opts="$opts $1"; shift
        fi
        uri="$1"; suite="$2"; shift 2
        suite_ok "$suite" && echo "deb-src$opts $uri $suite $*" >>"$APT/sources.list"
    done < <(grep -E '^[[:space:]]*deb[[:space:]]' "$APT_ETC/sources.list" || true)
fi
for f in "$APT_ETC"/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    grep -E '^[[:space:]]*deb[[:space:]]' "$f" | while read -r kind rest; do
        set -- $rest
        opts=""
        if [[ "$1" == \[* ]]; then
            while [[ "$1" != *\] ]]; do opts="$opts $1"; shift; done
            opts="$opts $1"; shift
        fi
        uri="$1"; suite="$2"; shift 2
        suite_ok "$suite" && echo "deb-src$opts $uri $suite $*" >>"$APT/sources.list"
    done || true
done
n=0
for f in "$APT_ETC"/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    # deb822: split into stanzas, keep those whose Suites are all ours, rewrite Types.
    awk -v cn="$codename" -v out="$APT/parts" -v base="$(basename "$f" .sources)" '
        function flush() {
            if (st != "" && ok && hasdeb) { n++; f = out "/" base "-" n ".sources"; printf "%s", st > f; close(f) }
            st = ""; ok = 0; hasdeb = 0
        }
        /^[[:space:]]*$/ { flush(); next }
        /^#/ { next }
        /^Types:/ { if ($0 ~ /[[:space:]]deb([[:space:]]|$)/) hasdeb = 1; st = st "Types: deb-src\n"; next }
        /^Suites:/ { ok = 1; for (i = 2; i <= NF; i++) if ($i != cn && index($i, cn "-") != 1) ok = 0 }
        /^Enabled:[[:space:]]*no/ { hasdeb = 0 }
        { st = st $0 "\n" }
        END { flush() }
    ' "$f"
    n=$((n + 1))
done
if [ ! -s "$APT/sources.list" ] && [ -z "$(ls -A "$APT/parts")" ]; then
    log "no Debian '$codename' apt sources found to derive deb-src entries from"
    exit 1
fi
if [ "${DEBSRC_ONLY:-0}" = 1 ]; then  # print the derived deb-src entries and stop (for testing)
    cat "$APT/sources.list" "$APT"/parts/* 2>/dev/null
    exit 0
fi
APT_OPTS=(-o "Dir::Etc::SourceList=$APT/sources.list" -o "Dir::Etc::SourceParts=$APT/parts"
    -o "Dir::State::Lists=$APT/lists" -o "Dir::Cache::Archives=$APT/archives"
    -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache=")
log "private deb-src sources: $(cat "$APT/sources.list" "$APT"/parts/* 2>/dev/null | grep -E '^(deb-src|URIs|Suites)' | tr '\n' ' ')"

SRC="$WORK/src"
mkdir -p "$SRC"
if ! ls "$SRC"/kubernetes_*.orig.tar.* >/dev/null 2>&1; then
    apt-get "${APT_OPTS[@]}" update -qq
    (cd "$SRC" && apt-get "${APT_OPTS[@]}" source --download-only kubernetes)
fi
ORIG="$(ls "$SRC"/kubernetes_*.orig.tar.* | head -n1)"
log "source: $ORIG"

# --- 2. GOPATH tree -------------------------------------------------------------------------------------
export GOPATH="$WORK/gopath"
TREE="$GOPATH/src/k8s.io/kubernetes"
if [ ! -f "$TREE/.unpacked" ]; then
    rm -rf "$TREE"
    mkdir -p "$TREE"
    tar -xf "$ORIG" -C "$TREE" --strip-components=1
    # 3. Go >= 1.18 breaks the vendored reflect2 1.0.1 at run time; use Debian's patched copy.
    rm -rf "$TREE/vendor/github.com/modern-go/reflect2"
    cp -a "$REFLECT2" "$TREE/vendor/github.com/modern-go/reflect2"
    touch "$TREE/.unpacked"
fi

# --- 4. build -------------------------------------------------------------------------------------------
log "building ${COMPONENTS[*]} with $(go version) (about 10 min cold on 2 cores)"
start=$(date +%s)
(
    cd "$TREE"
    export GO111MODULE=off GOPROXY=off GOFLAGS=-mod=vendor CGO_ENABLED=0 GOCACHE="$WORK/gocache"
    # GOFLAGS=-mod=vendor is rejected in GOPATH mode; unset it.
    unset GOFLAGS
    what=""
    for c in "${COMPONENTS[@]}"; do what="$what cmd/$c"; done
    make WHAT="${what# }" KUBE_GIT_VERSION="$WANT_VERSION" KUBE_GIT_TREE_STATE=clean
)
for c in "${COMPONENTS[@]}"; do
    built="$(find "$TREE/_output" -type f -name "$c" -perm -u+x | head -n1)"
    [ -n "$built" ] || { log "build produced no $c binary"; exit 1; }
    install -m 0755 "$built" "$OUT_DIR/$c.tmp"
    mv -f "$OUT_DIR/$c.tmp" "$OUT_DIR/$c"
done
log "built in $(( $(date +%s) - start )) s: ${COMPONENTS[*]} in $OUT_DIR"
is_sane || { log "built binaries do not report $WANT_VERSION"; exit 1; }

if [ "${KEEP_BUILD:-0}" != 1 ]; then
    rm -rf "$GOPATH" "$WORK/gocache"
fi
