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

/// The release binary, or a panic telling how to build it. A binary older than the sources is
/// refused too: the agent deployed to the node must be the code under test.
pub fn require_release_binary() -> PathBuf {
    let bin = release_binary();
    let built = std::fs::metadata(&bin).and_then(|m| m.modified());
    let Ok(built) = built else {
        panic!(
            "the agent image needs the release binary {}: run `cargo build --release` first \
             (.ci/test.sh does)",
            bin.display()
        );
    };
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    if let Some(newer) = newest_source(repo).filter(|(t, _)| *t > built) {
        panic!(
            "{} is older than {}: run `cargo build --release` again (.ci/test.sh does)",
            bin.display(),
            newer.1.display()
        );
    }
    bin
}

/// The newest of `src/**`, `Cargo.toml`, `Cargo.lock` (modification time, path).
fn newest_source(repo: &Path) -> Option<(std::time::SystemTime, PathBuf)> {
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    let mut stack = vec![
        repo.join("src"),
        repo.join("Cargo.toml"),
        repo.join("Cargo.lock"),
    ];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.filter_map(|e| e.ok().map(|e| e.path())));
            }
        } else if let Ok(t) = meta.modified() {
            if best.as_ref().is_none_or(|(b, _)| t > *b) {
                best = Some((t, p));
            }
        }
    }
    best
}

/// Absolute paths of the shared objects `ldd BIN` lists (the loader included).
pub fn ldd_libraries(bin: &Path) -> Vec<String> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .expect("run ldd");
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
