//! Rendering probe reports for people (a table) and machines (JSON lines).

pub mod records;
pub mod table;

pub use table::{table, TableStyle};

use crate::probe::ProbeReport;

/// One JSON object per line, as `pullprobe check --json` prints.
pub fn json_line(report: &ProbeReport) -> String {
    serde_json::to_string(report).unwrap_or_else(|e| {
        // Serialising plain data cannot fail; keep the line valid JSON anyway.
        format!(
            "{{\"image\":{:?},\"error\":{:?}}}",
            report.image,
            e.to_string()
        )
    })
}

/// How `check` prints its results (`-o`, kubectl's names).
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// One row per image, the failure's message and fix below it.
    #[default]
    Table,
    /// The table with the endpoint and credential source of each image.
    Wide,
    /// One JSON object per image per line.
    Json,
    /// A YAML list of the JSON objects.
    Yaml,
    /// The normalized references only, one per line.
    Name,
}

/// Render reports in `format`.
pub fn render(reports: &[ProbeReport], format: Format, style: &TableStyle) -> String {
    match format {
        Format::Table | Format::Wide => table(
            reports,
            &TableStyle {
                wide: format == Format::Wide,
                ..style.clone()
            },
        ),
        Format::Json => reports.iter().map(|r| json_line(r) + "\n").collect(),
        Format::Yaml => serde_saphyr::to_string(&reports).unwrap_or_else(|_| "[]\n".into()),
        Format::Name => reports
            .iter()
            .map(|r| r.reference.clone().unwrap_or_else(|| r.image.clone()) + "\n")
            .collect(),
    }
}
