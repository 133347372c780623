//! dashboards/pullprobe.json against Grafana's own dashboard schema (npm `@grafana/schema`, via
//! `.ci/validate-dashboard.sh`): the shipped file passes, and the check really bites — an unknown
//! field, a wrong enum value and a panel option of the wrong type are each rejected. Its queries are
//! run against a real Prometheus scraping a real agent in tests/prometheus.rs.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{json, Value};

/// Breaks one thing in a dashboard.
type Breaker = Box<dyn Fn(&mut Value)>;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the validator on `file`: (ok, stderr).
fn validate(file: &std::path::Path) -> (bool, String) {
    let out = Command::new("bash")
        .arg(repo().join(".ci/validate-dashboard.sh"))
        .arg(file)
        .current_dir(repo())
        .output()
        .expect("run .ci/validate-dashboard.sh");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn dashboard_validates_against_grafanas_schema_and_the_check_bites() {
    let shipped = repo().join("dashboards/pullprobe.json");
    let (ok, err) = validate(&shipped);
    assert!(ok, "dashboards/pullprobe.json is not valid:\n{err}");
    assert!(err.contains("valid (Dashboard + "), "{err}");

    let d: Value = serde_json::from_str(&std::fs::read_to_string(&shipped).unwrap()).unwrap();
    let stat = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .position(|p| p["type"] == "stat")
        .expect("a stat panel");
    let broken: [(&str, Breaker); 3] = [
        (
            "unknown panel field",
            Box::new(|d| d["panels"][1]["colour"] = json!("red")),
        ),
        (
            "thresholds mode not in the enum",
            Box::new(move |d| {
                d["panels"][stat]["fieldConfig"]["defaults"]["thresholds"]["mode"] =
                    json!("relative")
            }),
        ),
        (
            "stat option of the wrong type",
            Box::new(move |d| d["panels"][stat]["options"]["wideLayout"] = json!("yes")),
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (what, breakit) in broken {
        let mut bad = d.clone();
        breakit(&mut bad);
        let f = dir.path().join("bad.json");
        std::fs::write(&f, bad.to_string()).unwrap();
        let (ok, err) = validate(&f);
        assert!(!ok, "{what}: accepted\n{err}");
    }
}
