#!/usr/bin/env bash
# Install the Rust CI tools that are not Debian packages (today: cargo-deny), idempotently, into a cache
# outside the clone (/var/cache/pullprobe/bin), so only a brand-new machine pays the ~4 min build.
# `cargo install --locked` builds from crates.io with the ordinary client; nothing else is downloaded.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
CACHE="${PULLPROBE_CACHE:-/var/cache/pullprobe}"
BIN="$CACHE/bin"
CARGO_DENY_VERSION="${CARGO_DENY_VERSION:-0.20.2}"
mkdir -p "$BIN"

have_version() { # tool version
    [ -x "$BIN/$1" ] && "$BIN/$1" --version 2>/dev/null | grep -q " $2\$"
}

if have_version cargo-deny "$CARGO_DENY_VERSION"; then
    echo "[install-tools] cargo-deny $CARGO_DENY_VERSION already in $BIN"
else
    echo "[install-tools] building cargo-deny $CARGO_DENY_VERSION (about 4 min on 2 cores)"
    # Its own target dir, so the build does not touch the project's cache; removed afterwards.
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    CARGO_TARGET_DIR="$tmp/target" cargo install --locked --root "$tmp/root" \
        cargo-deny --version "$CARGO_DENY_VERSION"
    install -m 0755 "$tmp/root/bin/cargo-deny" "$BIN/cargo-deny"
    echo "[install-tools] cargo-deny installed in $BIN"
fi
