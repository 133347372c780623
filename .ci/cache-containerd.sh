#!/usr/bin/env bash
# Cache containerd 1.7.x (Debian trixie) and 2.x (Debian sid) from Debian's own archive, next to the
# machine's containerd 1.6.20 (bookworm), for the per-version oracle tests (tests/harness/containerd.rs)
# and the one-node cluster's second flavour (tests/node). Nothing is installed: a private apt list
# (never touches /etc/apt), `apt-get download`, `dpkg -x` into the cache. Idempotent: skips when both
# versions are cached and run; works on a cold machine (root, Debian bookworm).
#
#   PULLPROBE_CACHE   cache root (default /var/cache/pullprobe); binaries in
#                     $PULLPROBE_CACHE/containerd/<series>/usr/bin/{containerd,ctr,containerd-shim-runc-v2}
#                     with <series> = 1.7 and 2; $PULLPROBE_CACHE/containerd/<series>/VERSION holds the
#                     Debian version taken.
#   APT_ETC           read only: where the machine's Debian sources are (default /etc/apt)
#
# Steps and traps: /work/shared/test-infra.md "containerd 1.7 and 2.x from Debian's own archive". The
# archive moves: the newest version each suite lists is taken (trixie: 1.7.x, sid: 2.x).
set -euo pipefail

APT_ETC="${APT_ETC:-/etc/apt}"
CACHE_ROOT="${PULLPROBE_CACHE:-/var/cache/pullprobe}"
OUT="$CACHE_ROOT/containerd"
# series=suite:major.minor prefix the version must have
SERIES=("1.7=trixie:1.7." "2=sid:2.")

log() { echo "[cache-containerd] $*" >&2; }

is_sane() { # SERIES PREFIX
    local d="$OUT/$1"
    [ -x "$d/usr/bin/containerd" ] && [ -x "$d/usr/bin/ctr" ] && [ -s "$d/VERSION" ] || return 1
    "$d/usr/bin/containerd" --version 2>/dev/null | grep -q " $2" || return 1
}

all_sane() {
    local s
    for s in "${SERIES[@]}"; do
        local series="${s%%=*}" rest="${s#*=}"
        is_sane "$series" "${rest#*:}" || return 1
    done
}

mkdir -p "$OUT"
exec 9>"$OUT/.lock"
flock 9
if all_sane; then
    log "cached: $(for s in "${SERIES[@]}"; do printf '%s ' "$(cat "$OUT/${s%%=*}/VERSION")"; done)in $OUT"
    exit 0
fi

# --- a private apt configuration: the machine's own Debian archive URI, suites trixie and sid -----------
APT="$OUT/apt"
mkdir -p "$APT/lists/partial" "$APT/archives/partial"
codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")"
# The URI (and Signed-By) of the machine's main-archive entry for "$codename" itself (not -security).
uri=""
signed=""
if [ -f "$APT_ETC/sources.list" ]; then
    uri="$(awk -v cn="$codename" '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
        if ($(i+1) == cn) { print $i; exit } }' "$APT_ETC/sources.list")"
fi
if [ -z "$uri" ]; then
    for f in "$APT_ETC"/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        read -r uri signed < <(awk -v cn="$codename" '
            function flush() { if (ok && u != "") { print u, s; found = 1; exit } ok = 0; u = ""; s = "" }
            /^[[:space:]]*$/ { flush(); next }
            /^URIs:/ { u = $2 }
            /^Signed-By:/ { s = $2 }
            /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == cn) ok = 1 }
            /^Enabled:[[:space:]]*no/ { ok = 0; u = "" }
            END { if (!found) flush() }' "$f") || true
        [ -n "$uri" ] && break
    done
fi
if [ -z "$uri" ]; then
    for f in "$APT_ETC"/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        uri="$(awk -v cn="$codename" '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
            if ($(i+1) == cn) { print $i; exit } }' "$f")"
        [ -n "$uri" ] && break
    done
fi
[ -n "$uri" ] || { log "no Debian '$codename' apt source found under $APT_ETC to take the archive URI from"; exit 1; }
signed="${signed:-/usr/share/keyrings/debian-archive-keyring.gpg}"
: >"$APT/sources.list"
for s in "${SERIES[@]}"; do
    rest="${s#*=}"
    echo "deb [signed-by=$signed] $uri ${rest%%:*} main" >>"$APT/sources.list"
done
APT_OPTS=(-o "Dir::Etc::SourceList=$APT/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
    -o "Dir::State::Lists=$APT/lists" -o "Dir::Cache::Archives=$APT/archives"
    -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache=" -o "APT::Default-Release=")
log "private apt sources: $(tr '\n' ' ' <"$APT/sources.list")"
apt-get "${APT_OPTS[@]}" update -qq

# --- download and unpack the newest containerd of each suite --------------------------------------------
for s in "${SERIES[@]}"; do
    series="${s%%=*}"
    rest="${s#*=}"
    suite="${rest%%:*}"
    prefix="${rest#*:}"
    is_sane "$series" "$prefix" && continue
    # `apt-cache madison` lists every version with its suite; take the first (newest) of this suite.
    version="$(apt-cache "${APT_OPTS[@]}" madison containerd |
        awk -F'|' -v suite="$suite" -v prefix="$prefix" '
            { gsub(/ /, "", $2); if ($3 ~ ("[ /]" suite "[/ ]") && index($2, prefix) == 1) { print $2; exit } }')"
    [ -n "$version" ] || { log "no containerd $prefix* in $suite"; exit 1; }
    work="$(mktemp -d "$OUT/.dl.XXXXXX")"
    chmod 755 "$work" # apt downloads as _apt
    (cd "$work" && apt-get "${APT_OPTS[@]}" download -qq "containerd=$version")
    rm -rf "$OUT/$series.new"
    mkdir -p "$OUT/$series.new"
    dpkg -x "$work"/containerd_*.deb "$OUT/$series.new"
    echo "$version" >"$OUT/$series.new/VERSION"
    rm -rf "$work" "$OUT/$series"
    mv "$OUT/$series.new" "$OUT/$series"
    is_sane "$series" "$prefix" || { log "containerd $version ($suite) does not run here"; exit 1; }
    log "cached containerd $version ($suite): $("$OUT/$series/usr/bin/containerd" --version)"
done
rm -rf "$APT" # the lists (~60 MB) are only needed to download
