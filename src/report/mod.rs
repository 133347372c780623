//! Rendering probe reports for people (a table) and machines (JSON lines).

pub mod records;

use crate::probe::{ProbeReport, Verdict};

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

fn fmt_ms(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.2}s", ms / 1000.0)
    } else {
        format!("{ms:.1}ms")
    }
}

/// A readable table: one row per image; `verbose` adds every phase of the deciding
/// attempt and every endpoint tried.
pub fn table(reports: &[ProbeReport], verbose: bool) -> String {
    let rows: Vec<[String; 5]> = reports
        .iter()
        .map(|r| {
            [
                r.image.clone(),
                r.verdict.as_str().to_string(),
                r.phase
                    .map(|p| p.as_str().to_string())
                    .unwrap_or_else(|| "-".into()),
                r.reason
                    .map(|p| p.as_str().to_string())
                    .unwrap_or_else(|| "-".into()),
                fmt_ms(r.duration_ms),
            ]
        })
        .collect();
    let header = ["IMAGE", "VERDICT", "PHASE", "REASON", "TIME"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| -> String {
        cells
            .iter()
            .zip(widths.iter())
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = String::new();
    out.push_str(&line(&header.map(String::from)));
    out.push('\n');
    for (row, r) in rows.iter().zip(reports) {
        out.push_str(&line(row));
        out.push('\n');
        if r.verdict != Verdict::Ready || verbose {
            out.push_str(&format!("    {}\n", r.message));
        }
        if verbose {
            if let Some(reference) = &r.reference {
                out.push_str(&format!("    reference  {reference}\n"));
            }
            if let Some(ep) = &r.endpoint {
                out.push_str(&format!("    endpoint   {ep}\n"));
            }
            if let Some(src) = &r.credential_source {
                out.push_str(&format!("    credential {src}\n"));
            }
            for p in &r.phases {
                out.push_str(&format!(
                    "    {:<9} {:<6} {:>9}  {:<28} {}\n",
                    p.name.as_str(),
                    if p.ok { "ok" } else { "FAIL" },
                    fmt_ms(p.duration_ms),
                    p.host,
                    p.detail
                ));
            }
            if r.attempts.len() > 1 {
                out.push_str("    attempts:\n");
                for a in &r.attempts {
                    out.push_str(&format!(
                        "      {} {} [{}] {}\n",
                        if a.ok { "ok  " } else { "FAIL" },
                        a.endpoint,
                        a.credential_source
                            .as_ref()
                            .map(|c| c.to_string())
                            .unwrap_or_else(|| "anonymous".into()),
                        a.reason.map(|x| x.as_str()).unwrap_or("")
                    ));
                }
            }
        }
    }
    out
}
