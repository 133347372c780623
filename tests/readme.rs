//! The README documents every reason code the engine can emit (they are an interface).

use pullprobe::probe::Reason;

#[test]
fn readme_lists_every_reason_code_with_its_phase() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for r in Reason::ALL {
        let row = format!("| `{}` | {} |", r.as_str(), r.phase().as_str());
        assert!(
            readme.contains(&row),
            "README is missing the row for {}",
            r.as_str()
        );
    }
}
