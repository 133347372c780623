//! The node's own images, built without a Docker engine: the pod sandbox ("pause") image from
//! Debian's static busybox, and the agent image from the release `pullprobe` binary plus the
//! shared libraries `ldd` lists for it (no musl target can be installed here).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::{ImageFile, OciImage};

/// Static busybox (Debian `busybox-static`).
pub const BUSYBOX: &str = "/bin/busybox";

/// The pause image: `/bin/busybox` with entrypoint `busybox sleep 2147483647`.
pub fn pause_image(tag: &str) -> OciImage {
    let data = std::fs::read(BUSYBOX)
        .unwrap_or_else(|e| panic!("read {BUSYBOX} (.ci/install-deps.sh: busybox-static): {e}"));
    let files = [ImageFile {
        path: BUSYBOX.into(),
        data,
        mode: 0o755,
    }];
    OciImage::from_files(tag, &files, &[BUSYBOX, "sleep", "2147483647"])
}

/// `$CARGO_TARGET_DIR/release/pullprobe`, derived from the debug binary cargo built for this
/// test (`target/debug/pullprobe` → `target/release/pullprobe`).
pub fn release_binary() -> PathBuf {
    let debug = Path::new(env!("CARGO_BIN_EXE_pullprobe"));
    let target = debug
        .parent()
        .and_then(Path::parent)
        .expect("CARGO_BIN_EXE_pullprobe has a target dir");
    target.join("release").join("pullprobe")
}

/// The release binary, brought up to date first with `cargo build --release --bin pullprobe`
/// in the same target dir (a no-op taking well under a second when `.ci/test.sh` built it
/// already; minutes when cold). The agent deployed to the node is always the code under test.
/// Cargo holds no lock while test binaries run, so the nested build cannot deadlock.
pub fn require_release_binary() -> PathBuf {
    let bin = release_binary();
    let target_dir = bin
        .parent()
        .and_then(Path::parent)
        .expect("release binary has a target dir");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let t = std::time::Instant::now();
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args([
        "build",
        "--release",
        "--bin",
        "pullprobe",
        "--manifest-path",
    ])
    .arg(&manifest)
    .arg("--target-dir")
    .arg(target_dir);
    // What cargo sets for a test binary must not reach the nested build: build scripts track
    // some of it (ring: `rerun-if-env-changed=CARGO_MANIFEST_DIR`), and a difference from a
    // plain shell's environment would rebuild the release binary each time (minutes).
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        let set_by_cargo_test = k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_BIN_")
            || matches!(
                k.as_ref(),
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
            );
        if set_by_cargo_test {
            cmd.env_remove(&key);
        }
    }
    let out = cmd.output().expect("run cargo build --release");
    assert!(
        out.status.success(),
        "cargo build --release failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if t.elapsed() > std::time::Duration::from_secs(5) {
        eprintln!(
            "node harness: built the release binary in {:.0?} (.ci/test.sh builds it before the tests)",
            t.elapsed()
        );
    }
    assert!(bin.is_file(), "{} missing after cargo build", bin.display());
    bin
}

/// Absolute paths of the shared objects `ldd BIN` lists (the loader included).
pub fn ldd_libraries(bin: &Path) -> Vec<String> {
    let out = Command::new("ldd").arg(bin).output().expect("run ldd");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(p.to_string());
        }
    }
    libs
}

/// The agent image: `/pullprobe` (mode 0755) + its shared libraries at the paths `ldd` shows,
/// entrypoint `["/pullprobe"]`, one layer.
pub fn agent_image(tag: &str) -> OciImage {
    let bin = require_release_binary();
    let mut files = vec![ImageFile {
        path: "/pullprobe".into(),
        data: std::fs::read(&bin).expect("read the release binary"),
        mode: 0o755,
    }];
    for lib in ldd_libraries(&bin) {
        let data = std::fs::read(&lib).unwrap_or_else(|e| panic!("read {lib}: {e}"));
        files.push(ImageFile {
            path: lib,
            data,
            mode: 0o755,
        });
    }
    OciImage::from_files(tag, &files, &["/pullprobe"])
}
