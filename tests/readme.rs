//! The README documents every reason code the engine can emit (they are an interface), with
//! its phase and the hint `check` prints for it.

use pullprobe::probe::hints::fix;
use pullprobe::probe::Reason;

#[test]
fn readme_lists_every_reason_code_with_its_phase_and_fix() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for r in Reason::ALL {
        let start = format!("| `{}` | {} |", r.as_str(), r.phase().as_str());
        let row = readme
            .lines()
            .find(|l| l.starts_with(&start))
            .unwrap_or_else(|| panic!("README is missing the row for {}", r.as_str()));
        let fix = fix(*r).replace('|', "\\|");
        assert!(
            row.trim_end().ends_with(&format!("| {fix} |")),
            "README row for {} should end with its fix: {fix}\n{row}",
            r.as_str()
        );
    }
}

#[test]
fn readme_lists_every_row_of_the_fault_matrix() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let faults = std::fs::read_to_string(format!("{root}/docs/faults.md")).unwrap();
    let mut n = 0;
    for line in faults.lines().filter(|l| l.starts_with("| ")) {
        let cells: Vec<&str> = line
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        if cells.len() < 5 || cells[0] == "group" || cells[0].starts_with("---") {
            continue;
        }
        let row = format!(
            "| {}: {} | {} | {} |",
            cells[0], cells[1], cells[2], cells[3]
        );
        assert!(readme.contains(&row), "README lacks the fault row: {row}");
        n += 1;
    }
    assert!(n >= 40, "{n} fault rows");
}
