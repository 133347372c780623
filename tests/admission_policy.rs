//! manifests/components/admission-policy (the ValidatingAdmissionPolicy), checked as far as this project can without an
//! API server >= 1.30 (the tests' kube-apiserver is 1.20, which has no
//! ValidatingAdmissionPolicy): `.ci/check-admission-policy.sh` validates its shape against the
//! 1.30 and 1.37 schemas, parses every CEL expression, and evaluates the validations on sample
//! writes — the agent's own conditions on its own Node allowed; another Node, a token without
//! a node, a changed/added/removed foreign condition and a changed capacity refused; the
//! agent's own NodePullStatus created and its status written, another node's (or one created
//! with the controller's assignments, or by a token without a node) refused.

use std::path::Path;
use std::process::Command;

#[test]
fn admission_policy_allows_own_conditions_and_refuses_the_rest() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(repo.join(".ci/check-admission-policy.sh"))
        .output()
        .expect("run .ci/check-admission-policy.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "check-admission-policy failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("parsed 12 CEL expressions"), "{stdout}");
    let ok = stdout.lines().filter(|l| l.starts_with("ok ")).count();
    assert_eq!(ok, 16, "every sample write judged as expected:\n{stdout}");
    assert!(!stdout.contains("BAD"), "{stdout}");
}
