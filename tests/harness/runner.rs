//! Runs the `pullprobe` binary built by cargo for this test target.

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// Runs `pullprobe ARGS…`, feeding `stdin` if given; never panics on a non-zero exit (assert on
/// `output.status` yourself).
pub fn run_pullprobe(args: &[&str], stdin: Option<&str>) -> Output {
    run_pullprobe_env(args, stdin, &[])
}

/// Like `run_pullprobe`, with extra environment variables.
pub fn run_pullprobe_env(args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pullprobe"));
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn pullprobe");
    if let Some(input) = stdin {
        let mut si = child.stdin.take().expect("stdin");
        // A probe that exits early closes its stdin: ignore EPIPE.
        let _ = si.write_all(input.as_bytes());
    }
    child.wait_with_output().expect("wait pullprobe")
}

/// Parses each non-empty line of `--json` output as a JSON value (panics with the line if invalid).
pub fn json_lines(bytes: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}
