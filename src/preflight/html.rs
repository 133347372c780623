//! `-o html`: one self-contained page (no script, no external resource) with the matrix as
//! a heatmap — a row per group of nodes that answered alike, a column per image, coloured
//! by verdict, the reason on hover (`title`) and written in failing cells. Every text
//! from manifests or agents is HTML-escaped.

use super::matrix::{Cell, CellVerdict, Matrix};

/// Colours by verdict (also the legend).
pub const COLOURS: [(CellVerdict, &str); 6] = [
    (CellVerdict::Ready, "#2e9e48"),
    (CellVerdict::Degraded, "#e6b422"),
    (CellVerdict::NotReady, "#d7263d"),
    (CellVerdict::Blocked, "#7b2d8b"),
    (CellVerdict::Unknown, "#8c8c8c"),
    (CellVerdict::NotScheduled, "#e8e8e8"),
];

pub fn colour(v: CellVerdict) -> &'static str {
    COLOURS
        .iter()
        .find(|(c, _)| *c == v)
        .map(|(_, h)| *h)
        .unwrap_or("#8c8c8c")
}

/// Escape text for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

fn tooltip(nodes: &[String], image: &str, c: &Cell) -> String {
    let shown: Vec<&str> = nodes.iter().take(50).map(String::as_str).collect();
    let more = if nodes.len() > 50 {
        format!(" and {} more", nodes.len() - 50)
    } else {
        String::new()
    };
    let mut t = format!(
        "{}{more}\n{image}\n{}",
        shown.join(", "),
        c.verdict.as_str()
    );
    if let Some(p) = &c.phase {
        t.push_str(&format!(" · {p}"));
    }
    if let Some(r) = &c.reason {
        t.push_str(&format!(" · {r}"));
    }
    if let Some(h) = &c.host {
        t.push_str(&format!(" at {h}"));
    }
    if !c.message.is_empty() {
        t.push_str(&format!("\n{}", c.message));
    }
    if let Some(n) = &c.checked_on {
        t.push_str(&format!("\n(image checked on {n})"));
    }
    t
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:24px;color:#222;background:#fff}\
h1{font-size:20px;margin:0 0 4px}.summary{font-size:16px;margin:0 0 16px}\
table{border-collapse:separate;border-spacing:3px}th{font-weight:600;font-size:12px;text-align:left;padding:2px 6px}\
th.img{writing-mode:vertical-rl;transform:rotate(180deg);max-height:220px;white-space:nowrap}\
td.nodes{font-size:13px;padding:0 8px 0 0;white-space:nowrap}\
td.cell{min-width:56px;height:34px;padding:0 4px;border-radius:4px;font-size:10px;color:#fff;text-align:center;white-space:nowrap}\
.legend span{display:inline-block;margin-right:14px;font-size:13px}.legend i{display:inline-block;width:14px;height:14px;border-radius:3px;margin-right:4px;vertical-align:-2px}\
ul{font-size:13px}";

/// The page.
pub fn page(m: &Matrix) -> String {
    let mut h = String::from("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>pullprobe pre-flight</title><style>");
    h.push_str(STYLE);
    h.push_str("</style></head><body>\n<h1>pullprobe pre-flight</h1>\n");
    h.push_str(&format!(
        "<p class=\"summary\" id=\"summary\">{}</p>\n<div class=\"legend\">",
        escape(&m.summary.line)
    ));
    for (v, c) in COLOURS {
        h.push_str(&format!(
            "<span><i style=\"background:{c}\"></i>{}</span>",
            escape(v.meaning())
        ));
    }
    h.push_str("</div>\n<table id=\"matrix\"><thead><tr><th>nodes</th>");
    for img in &m.images {
        h.push_str(&format!(
            "<th class=\"img\" title=\"{0}\">{0}</th>",
            escape(img)
        ));
    }
    h.push_str("</tr></thead><tbody>\n");
    for g in &m.groups {
        let label = match g.nodes.len() {
            1 => g.nodes[0].clone(),
            n => format!("{n} nodes: {} …", g.nodes[0]),
        };
        h.push_str(&format!(
            "<tr><td class=\"nodes\" title=\"{}\">{}</td>",
            escape(&g.nodes.join(", ")),
            escape(&label)
        ));
        for (img, c) in m.images.iter().zip(&g.cells) {
            let text = match c.verdict {
                CellVerdict::Ready | CellVerdict::NotScheduled => String::new(),
                _ => c.reason.clone().unwrap_or_default(),
            };
            h.push_str(&format!(
                "<td class=\"cell v-{}\" style=\"background:{}\" title=\"{}\">{}</td>",
                c.verdict.as_str(),
                colour(c.verdict),
                escape(&tooltip(&g.nodes, img, c)),
                escape(&text)
            ));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody></table>\n");
    if !m.unplaced.is_empty() {
        h.push_str("<h2>Lands on no node</h2><ul id=\"unplaced\">");
        for u in &m.unplaced {
            h.push_str(&format!(
                "<li>{}: {}</li>",
                escape(&u.workload),
                escape(&u.why)
            ));
        }
        h.push_str("</ul>\n");
    }
    if !m.warnings.is_empty() {
        h.push_str("<ul>");
        for w in &m.warnings {
            h.push_str(&format!("<li>{}</li>", escape(w)));
        }
        h.push_str("</ul>\n");
    }
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_text_is_escaped() {
        assert_eq!(
            escape("<img src=x onerror=alert(1)>\"'&"),
            "&lt;img src=x onerror=alert(1)&gt;&quot;&#39;&amp;"
        );
        let c = Cell::unknown(
            super::super::matrix::UnknownReason::AgentError,
            "<script>x</script>",
        );
        let m = Matrix::new(
            vec!["reg/<b>:1".into()],
            vec![super::super::matrix::NodeRow {
                node: "n\"1".into(),
                agent: None,
                cells: vec![c],
            }],
            Vec::new(),
            Vec::new(),
            false,
        );
        let p = page(&m);
        assert!(
            !p.contains("<script>") && !p.contains("<b>") && !p.contains("n\"1"),
            "{p}"
        );
        assert!(p.contains("background:#8c8c8c"));
    }
}
