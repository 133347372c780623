//! The human table of `check`: aligned columns under a header, each failure's message
//! and what to do next beneath its row, every phase and attempt under headers with `-v`,
//! colour only on a terminal (and never with `NO_COLOR`).

use crate::probe::{ProbeReport, Verdict};

/// How the table is drawn.
#[derive(Clone, Debug, Default)]
pub struct TableStyle {
    /// `-v`: every phase of the deciding attempt and every attempt.
    pub verbose: bool,
    /// `-o wide`: endpoint and credential columns.
    pub wide: bool,
    /// `--no-headers`.
    pub no_headers: bool,
    /// ANSI colour for verdicts (a terminal without `NO_COLOR`).
    pub colour: bool,
}

impl TableStyle {
    /// Colour when stdout is a terminal and `NO_COLOR` is unset or empty.
    pub fn detect_colour() -> bool {
        use std::io::IsTerminal as _;
        std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
    }
}

fn fmt_ms(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else {
        format!("{ms:.1} ms")
    }
}

/// Cells padded to their column's widest cell.
fn pad(rows: &[Vec<String>]) -> Vec<Vec<String>> {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; cols];
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    rows.iter()
        .map(|row| {
            row.iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect()
        })
        .collect()
}

fn join(cells: &[String]) -> String {
    cells.join("  ").trim_end().to_string()
}

/// Columns aligned; the last column is not padded.
fn align(rows: &[Vec<String>]) -> Vec<String> {
    pad(rows).iter().map(|r| join(r)).collect()
}

fn paint(verdict: Verdict, text: &str, colour: bool) -> String {
    if !colour {
        return text.to_string();
    }
    let code = match verdict {
        Verdict::Ready => "32",
        Verdict::Degraded => "33",
        Verdict::NotReady | Verdict::Blocked => "31",
    };
    // Pad first so the escape codes do not upset the alignment.
    format!("\x1b[{code}m{text}\x1b[0m")
}

fn row(r: &ProbeReport, wide: bool) -> Vec<String> {
    let dash = |s: Option<&str>| s.unwrap_or("-").to_string();
    let mut row = vec![
        r.image.clone(),
        r.verdict.as_str().to_string(),
        dash(r.phase.map(|p| p.as_str())),
        dash(r.reason.map(|p| p.as_str())),
        fmt_ms(r.duration_ms),
    ];
    if wide {
        row.push(dash(r.endpoint.as_deref()));
        row.push(
            r.credential_source
                .as_ref()
                .map(|c| c.to_string())
                .unwrap_or_else(|| "anonymous".into()),
        );
    }
    row
}

/// A readable table: one row per image; the message and the fix of each failure under
/// its row; with `verbose`, the phases and attempts of each image under their headers.
pub fn table(reports: &[ProbeReport], style: &TableStyle) -> String {
    let mut rows = Vec::new();
    if !style.no_headers {
        let mut h = vec!["IMAGE", "VERDICT", "PHASE", "REASON", "TIME"];
        if style.wide {
            h.extend(["ENDPOINT", "CREDENTIAL"]);
        }
        rows.push(h.into_iter().map(String::from).collect());
    }
    rows.extend(reports.iter().map(|r| row(r, style.wide)));
    let cells = pad(&rows);
    let skip = usize::from(!style.no_headers);
    let mut out = String::new();
    if let Some(h) = cells.first().filter(|_| skip == 1) {
        out.push_str(&join(h));
        out.push('\n');
    }
    for (mut line, r) in cells.into_iter().skip(skip).zip(reports) {
        // Colour the padded verdict cell, so escape codes never shift a column.
        if let Some(v) = line.get_mut(1) {
            *v = paint(r.verdict, v, style.colour);
        }
        out.push_str(&join(&line));
        out.push('\n');
        if r.verdict != Verdict::Ready || style.verbose {
            out.push_str(&format!("    {}\n", r.message));
        }
        if let Some(h) = &r.hint {
            out.push_str(&format!("    fix: {h}\n"));
        }
        for w in &r.warnings {
            out.push_str(&format!("    warning: {w}\n"));
        }
        if style.verbose {
            out.push_str(&details(r));
        }
    }
    out
}

/// `-v`: the reference, endpoint and credential, then the phases and the attempts, each
/// under a header.
fn details(r: &ProbeReport) -> String {
    let mut out = String::new();
    if let Some(reference) = &r.reference {
        out.push_str(&format!("    reference   {reference}\n"));
    }
    if let Some(ep) = &r.endpoint {
        let fallback = r
            .attempts
            .iter()
            .any(|a| a.https_to_http && a.endpoint == *ep);
        // An `http://` host containerd reached over TLS first: the report names the
        // scheme used, the attempts the one configured.
        let configured = ep.strip_prefix("https://").and_then(|rest| {
            r.attempts
                .iter()
                .find(|a| a.endpoint.strip_prefix("http://") == Some(rest))
        });
        let note = match (fallback, configured) {
            (true, _) => "  (https→http fallback)".to_string(),
            (false, Some(a)) => format!(
                "  (configured as {}: containerd tries HTTPS first)",
                a.endpoint
            ),
            (false, None) => String::new(),
        };
        out.push_str(&format!("    endpoint    {ep}{note}\n"));
    }
    if let Some(src) = &r.credential_source {
        out.push_str(&format!("    credential  {src}\n"));
    }
    let mut phases = vec![["PHASE", "RESULT", "TIME", "HOST", "DETAIL"]
        .map(String::from)
        .to_vec()];
    phases.extend(r.phases.iter().map(|p| {
        vec![
            p.name.as_str().to_string(),
            if p.ok { "ok" } else { "FAIL" }.to_string(),
            fmt_ms(p.duration_ms),
            if p.host.is_empty() {
                "-".into()
            } else {
                p.host.clone()
            },
            p.detail.clone(),
        ]
    }));
    for l in align(&phases) {
        out.push_str(&format!("    {l}\n"));
    }
    if r.attempts.len() > 1 {
        let mut att = vec![[
            "ATTEMPT",
            "ROLE",
            "RESULT",
            "ENDPOINT",
            "CREDENTIAL",
            "REASON",
        ]
        .map(String::from)
        .to_vec()];
        att.extend(r.attempts.iter().enumerate().map(|(i, a)| {
            vec![
                (i + 1).to_string(),
                a.role.clone(),
                if a.ok { "ok" } else { "FAIL" }.to_string(),
                a.endpoint.clone(),
                a.credential_source
                    .as_ref()
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "anonymous".into()),
                a.reason.map(|x| x.as_str()).unwrap_or("-").to_string(),
            ]
        }));
        for l in align(&att) {
            out.push_str(&format!("    {l}\n"));
        }
    }
    out
}
