//! The matrix for people (grouped table, `-o wide`) and machines (`-o json|yaml`).

use super::matrix::{Cell, CellVerdict, Matrix};

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Grouped table: identical rows together, the summary line last.
    Table,
    /// The table with every node named, messages, and which node checked shared images.
    Wide,
    Json,
    Yaml,
    /// One self-contained HTML page: the matrix as a heatmap.
    Html,
}

fn cell_text(c: &Cell, wide: bool) -> String {
    match c.verdict {
        CellVerdict::Ready | CellVerdict::NotScheduled => c.verdict.as_str().to_string(),
        CellVerdict::Degraded if c.reason.is_none() => "degraded".into(),
        _ => {
            let reason = c.reason.clone().unwrap_or_default();
            let phase = match (&c.phase, wide) {
                (Some(p), true) => format!("{p}/"),
                _ => String::new(),
            };
            format!("{} {phase}{reason}", c.verdict.as_str())
        }
    }
}

fn names(nodes: &[String], wide: bool) -> String {
    match (nodes.len(), wide) {
        (0, _) => String::new(),
        (1, _) => nodes[0].clone(),
        (n, false) => format!("{} (+{} more)", nodes[0], n - 1),
        (_, true) => nodes.join(","),
    }
}

/// The line under a cell: every failure, and in `-o wide` every cell (where its answer
/// came from, the message of a ready one, why a `-` is not scheduled).
fn detail_line(i: usize, c: &Cell, wide: bool) -> Option<String> {
    let quiet = c.verdict.pulls(false) && c.verdict != CellVerdict::NotScheduled;
    if !wide && (quiet || c.verdict == CellVerdict::NotScheduled) {
        return None;
    }
    let at = c
        .host
        .as_deref()
        .map(|h| format!(" at {h}"))
        .unwrap_or_default();
    let mut extra = Vec::new();
    if wide {
        if let Some(n) = &c.checked_on {
            extra.push(format!("image checked on {n}"));
        }
        if let Some(s) = &c.source {
            extra.push(format!("answered from {s}"));
        }
    }
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!(" ({})", extra.join(", "))
    };
    let what = match c.verdict {
        CellVerdict::NotScheduled => "not scheduled",
        v => c.reason.as_deref().unwrap_or(v.as_str()),
    };
    let message = if c.message.is_empty() {
        String::new()
    } else {
        format!(": {}", c.message)
    };
    Some(format!("    [{}] {what}{at}{message}{extra}\n", i + 1))
}

/// `-o wide`: what the group's first node's agent said about itself.
fn agent_line(m: &Matrix, g: &super::matrix::Group) -> String {
    let agent = g
        .nodes
        .first()
        .and_then(|n| m.rows.iter().find(|r| &r.node == n))
        .and_then(|r| r.agent.as_ref());
    match agent {
        Some(a) => format!(
            "    agent {} · runtime {} · platform {}\n",
            a.version, a.runtime, a.platform
        ),
        None => "    no agent answered\n".to_string(),
    }
}

/// The grouped table.
pub fn table(m: &Matrix, wide: bool) -> String {
    let mut out = String::new();
    out.push_str("IMAGES\n");
    for (i, img) in m.images.iter().enumerate() {
        out.push_str(&format!("  [{}] {img}\n", i + 1));
    }
    out.push('\n');
    let mut header = vec![format!("NODES ({})", m.rows.len())];
    header.extend((1..=m.images.len()).map(|i| format!("[{i}]")));
    let rows: Vec<Vec<String>> = m
        .groups
        .iter()
        .map(|g| {
            let mut r = vec![names(&g.nodes, wide)];
            r.extend(g.cells.iter().map(|c| cell_text(c, wide)));
            r
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count()).min(if wide { 400 } else { 60 });
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
            + "\n"
    };
    out.push_str(&line(&header));
    for (g, r) in m.groups.iter().zip(&rows) {
        out.push_str(&line(r));
        if wide {
            out.push_str(&agent_line(m, g));
        }
        for (i, c) in g.cells.iter().enumerate() {
            if let Some(l) = detail_line(i, c, wide) {
                out.push_str(&l);
            }
        }
    }
    if m.groups.iter().any(|g| {
        g.cells
            .iter()
            .any(|c| c.verdict == CellVerdict::NotScheduled)
    }) {
        out.push_str(&format!("\n{}\n", CellVerdict::NotScheduled.meaning()));
    }
    if !m.unplaced.is_empty() {
        out.push_str(&format!("\nLANDS ON NO NODE ({})\n", m.unplaced.len()));
        for u in &m.unplaced {
            out.push_str(&format!("  {}: {}\n", u.workload, u.why));
        }
    }
    if wide && !m.excluded.is_empty() {
        out.push_str(&format!("\nNOT SELECTED ({})\n", m.excluded.len()));
        for e in &m.excluded {
            out.push_str(&format!("  {}: {}\n", e.node, e.why));
        }
    }
    for w in &m.warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    out.push('\n');
    out.push_str(&m.summary.line);
    out.push('\n');
    out
}

/// JSON (one document) or YAML.
pub fn structured(m: &Matrix, format: Format) -> String {
    match format {
        Format::Yaml => {
            serde_saphyr::to_string(m).unwrap_or_else(|e| format!("# cannot render YAML: {e}\n"))
        }
        _ => serde_json::to_string_pretty(m).unwrap_or_else(|_| "{}".into()) + "\n",
    }
}

/// Render in `format`.
pub fn render(m: &Matrix, format: Format) -> String {
    match format {
        Format::Table => table(m, false),
        Format::Wide => table(m, true),
        Format::Json | Format::Yaml => structured(m, format),
        Format::Html => super::html::page(m),
    }
}
