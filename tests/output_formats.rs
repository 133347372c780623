//! The human formats of `check`, as snapshots: `-o table` (default), `-o wide`, `-v`,
//! `--no-headers`, `-o name`, and the fields of `-o yaml` / `-o json`, against a real
//! registry. Ports, digests and timings are normalised (`PORT`, `sha256:…`, `N ms`); the
//! rest must match `tests/fixtures/snapshots/*.txt` exactly. `PULLPROBE_UPDATE_SNAPSHOTS=1`
//! rewrites them (then review the diff).

mod harness;

use harness::*;

fn normalise(text: &str, port: u16) -> String {
    let text = text.replace(&port.to_string(), "PORT");
    let digest = regex::Regex::new(r"sha256:[0-9a-f]{64}").unwrap();
    let time = regex::Regex::new(r"\b\d+(\.\d+)? (ms|s)\b").unwrap();
    let text = digest.replace_all(&text, "sha256:…");
    let text = time.replace_all(&text, "N ms");
    // Re-align the padding the normalisation shortened: compare columns, not spaces.
    let spaces = regex::Regex::new(r" {2,}").unwrap();
    text.lines()
        .map(|l| spaces.replace_all(l.trim_end(), "  ").to_string())
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn snapshot(name: &str, actual: &str) {
    let path = format!(
        "{}/tests/fixtures/snapshots/{name}.txt",
        env!("CARGO_MANIFEST_DIR")
    );
    if std::env::var_os("PULLPROBE_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e} (PULLPROBE_UPDATE_SNAPSHOTS=1 writes it)"));
    assert_eq!(
        actual, expected,
        "snapshot {name} differs (PULLPROBE_UPDATE_SNAPSHOTS=1 rewrites it)"
    );
}

#[test]
fn human_formats_match_their_snapshots() {
    let reg = Registry::plain();
    OciImage::single("v1").push(&reg, "demo/app", &PushOpts::insecure());
    let port = reg.port();
    let good = format!("{}/demo/app:v1", reg.host_port());
    let bad = format!("{}/demo/app:missing", reg.host_port());
    let run = |extra: &[&str]| {
        let mut args = vec!["check", &good, &bad];
        args.extend_from_slice(extra);
        let out = run_pullprobe(&args, None);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        normalise(&String::from_utf8_lossy(&out.stdout), port)
    };
    snapshot("table", &run(&[]));
    snapshot("wide", &run(&["-o", "wide"]));
    snapshot("no-headers", &run(&["--no-headers"]));
    snapshot("verbose", &run(&["-v"]));
    snapshot("name", &run(&["-o", "name"]));
    // Piped output never has colour, whatever the terminal would get.
    assert!(!run(&[]).contains('\u{1b}'));

    // YAML and JSON carry the same fields, with the hint.
    let yaml = run_pullprobe(&["check", &bad, "-o", "yaml"], None);
    let docs: serde_json::Value =
        serde_saphyr::from_str(&String::from_utf8_lossy(&yaml.stdout)).unwrap();
    let json = run_pullprobe(&["check", &bad, "--json"], None);
    let line = json_lines(&json.stdout).remove(0);
    assert_eq!(docs[0]["reason"], line["reason"]);
    assert_eq!(docs[0]["hint"], line["hint"]);
    assert!(line["hint"]
        .as_str()
        .unwrap()
        .contains("push it, or fix the reference"));
    // -o and --json are one choice.
    let both = run_pullprobe(&["check", &bad, "--json", "-o", "yaml"], None);
    assert_eq!(both.status.code(), Some(2));
}
