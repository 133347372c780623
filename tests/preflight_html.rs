//! `pullprobe preflight -o html` rendered in headless Chromium (Debian `chromium`,
//! .ci/install-deps.sh) and the screenshot checked: every verdict's colour is on screen in
//! its cells, hostile text from agents does not run, and the page needs nothing from outside
//! (Chromium runs with networking off).

use std::path::Path;
use std::process::Command;

use pullprobe::preflight::html::{colour, page};
use pullprobe::preflight::matrix::{Cell, CellVerdict, Matrix, NodeRow, UnknownReason};

fn cell(v: CellVerdict, reason: Option<&str>, host: Option<&str>) -> Cell {
    Cell {
        verdict: v,
        phase: reason.map(|_| "tls".to_string()),
        reason: reason.map(String::from),
        host: host.map(String::from),
        message: "<img src=x onerror=\"document.body.style.background='#ff00ff'\">".into(),
        checked_on: None,
        source: None,
        report: None,
    }
}

fn matrix() -> Matrix {
    use CellVerdict::*;
    let mut rows = Vec::new();
    for i in 0..37 {
        rows.push(NodeRow {
            node: format!("ok-{i:02}"),
            agent: None,
            cells: vec![
                cell(Ready, None, None),
                cell(Ready, None, None),
                cell(Ready, None, None),
            ],
        });
    }
    for i in 0..3 {
        rows.push(NodeRow {
            node: format!("mirror-{i}"),
            agent: None,
            cells: vec![
                cell(
                    NotReady,
                    Some("TLSUnknownAuthority"),
                    Some("mirror.internal"),
                ),
                cell(Degraded, None, None),
                cell(Ready, None, None),
            ],
        });
    }
    rows.push(NodeRow {
        node: "silent".into(),
        agent: None,
        cells: vec![Cell::unknown(UnknownReason::AgentTimeout, "no answer within 10s"); 3],
    });
    Matrix::new(
        vec![
            "registry.internal/app:v2".into(),
            "docker.io/library/busybox:1.36".into(),
            "<script>alert(1)</script>".into(),
        ],
        rows,
        Vec::new(),
        Vec::new(),
        false,
    )
}

/// RGB pixels of an 8-bit, non-interlaced RGB/RGBA PNG (what Chromium writes).
fn decode_png(bytes: &[u8]) -> (usize, usize, Vec<[u8; 3]>) {
    use std::io::Read;
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let (mut i, mut w, mut h, mut channels, mut idat) = (8, 0usize, 0usize, 0usize, Vec::new());
    while i + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap()) as usize;
        let kind = &bytes[i + 4..i + 8];
        let data = &bytes[i + 8..i + 8 + len];
        match kind {
            b"IHDR" => {
                w = u32::from_be_bytes(data[0..4].try_into().unwrap()) as usize;
                h = u32::from_be_bytes(data[4..8].try_into().unwrap()) as usize;
                assert_eq!((data[8], data[12]), (8, 0), "8-bit, non-interlaced");
                channels = match data[9] {
                    2 => 3,
                    6 => 4,
                    t => panic!("colour type {t}"),
                };
            }
            b"IDAT" => idat.extend_from_slice(data),
            _ => {}
        }
        i += 12 + len;
    }
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(&idat[..])
        .read_to_end(&mut raw)
        .unwrap();
    let stride = w * channels;
    let mut prev = vec![0u8; stride];
    let mut px = Vec::with_capacity(w * h);
    for y in 0..h {
        let line = &raw[y * (stride + 1)..(y + 1) * (stride + 1)];
        let (f, src) = (line[0], &line[1..]);
        let mut cur = vec![0u8; stride];
        for x in 0..stride {
            let a = if x >= channels {
                cur[x - channels] as i16
            } else {
                0
            };
            let b = prev[x] as i16;
            let c = if x >= channels {
                prev[x - channels] as i16
            } else {
                0
            };
            let pred = match f {
                0 => 0,
                1 => a,
                2 => b,
                3 => (a + b) / 2,
                4 => {
                    let p = a + b - c;
                    let (pa, pb, pc) = ((p - a).abs(), (p - b).abs(), (p - c).abs());
                    if pa <= pb && pa <= pc {
                        a
                    } else if pb <= pc {
                        b
                    } else {
                        c
                    }
                }
                _ => panic!("filter {f}"),
            };
            cur[x] = (src[x] as i16 + pred) as u8;
        }
        for p in cur.chunks(channels) {
            px.push([p[0], p[1], p[2]]);
        }
        prev = cur;
    }
    (w, h, px)
}

fn hex(c: &str) -> [u8; 3] {
    let v = u32::from_str_radix(c.trim_start_matches('#'), 16).unwrap();
    [(v >> 16) as u8, (v >> 8) as u8, v as u8]
}

fn count(px: &[[u8; 3]], want: [u8; 3]) -> usize {
    px.iter()
        .filter(|p| {
            p.iter()
                .zip(want)
                .all(|(a, b)| (*a as i16 - b as i16).abs() <= 6)
        })
        .count()
}

/// `text` rendered by headless Chromium (networking off) at 900×700: its pixels.
fn screenshot(name: &str, text: &str) -> Vec<[u8; 3]> {
    let Some(chromium) = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        panic!("chromium not installed: run .ci/install-deps.sh (Debian package chromium)");
    };
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join(format!("{name}.html"));
    std::fs::write(&html, text).unwrap();
    let shot = dir.path().join("shot.png");
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=900,700",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.path().join("profile").display()
        ))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .unwrap();
    assert!(
        shot.exists(),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if let Ok(keep) = std::env::var("PULLPROBE_KEEP_SCREENSHOT") {
        std::fs::copy(&shot, format!("{keep}.{name}.png")).unwrap();
    }
    let (w, h, px) = decode_png(&std::fs::read(&shot).unwrap());
    assert_eq!((w, h), (900, 700));
    px
}

#[test]
fn heatmap_renders_in_headless_chromium() {
    let m = matrix();
    let text = page(&m);
    assert!(
        !text.contains("<script>") && !text.contains("<img"),
        "agent text is escaped"
    );
    assert!(
        !text.contains("http://") && !text.contains("https://"),
        "self-contained: no external resource"
    );
    let px = screenshot("preflight", &text);
    // Three rows (groups) × three images: 56×34-pixel cells, colour by verdict.
    let cell_px = 56 * 34;
    let ready = count(&px, hex(colour(CellVerdict::Ready)));
    let bad = count(&px, hex(colour(CellVerdict::NotReady)));
    let degraded = count(&px, hex(colour(CellVerdict::Degraded)));
    let unknown = count(&px, hex(colour(CellVerdict::Unknown)));
    eprintln!("pixels: ready {ready}, not_ready {bad}, degraded {degraded}, unknown {unknown}");
    // ready: 3 cells of the first group + 1 of the mirror group (+ legend swatch).
    assert!(ready > cell_px * 3, "ready cells on screen: {ready}");
    assert!(
        bad > cell_px / 2,
        "the not-ready cell (its reason written on it): {bad}"
    );
    assert!(degraded > cell_px / 2, "the degraded cell: {degraded}");
    assert!(unknown > cell_px * 2, "the unknown row: {unknown}");
    // The injected handler never ran (it would paint the page magenta).
    assert_eq!(count(&px, [0xff, 0x00, 0xff]), 0);
}

/// `pullprobe status -o html`: 40 nodes from their NodePullStatus reports — 37 healthy, 3
/// failing alike at one registry, 2 without any agent report — as three rows of a node ×
/// registry heatmap, each colour on screen where it belongs; hostile text from a report does
/// not run.
#[test]
fn status_heatmap_renders_in_headless_chromium() {
    use pullprobe::api::NodePullStatus;
    use pullprobe::preflight::fleet;
    let now = std::time::SystemTime::now();
    let heartbeat = jiff::Timestamp::try_from(now).unwrap().to_string();
    let report = |name: &str, registries: serde_json::Value| -> NodePullStatus {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "pullprobe.io/v1alpha1", "kind": "NodePullStatus",
            "metadata": {"name": name}, "spec": {"assignments": []},
            "status": {"heartbeatTime": heartbeat, "intervalSeconds": 60, "registries": registries}}))
        .unwrap()
    };
    let path = |registry: &str, state: &str, reason: &str| {
        serde_json::json!({"registry": registry, "state": state, "checkedAt": "2026-01-01T00:00:00Z",
            "cell": {"verdict": "not_ready", "phase": "tls", "reason": reason, "message": "m"}})
    };
    let mut nodes = Vec::new();
    let mut reports = Vec::new();
    for i in 0..37 {
        nodes.push(format!("ok-{i:02}"));
        reports.push(report(
            &nodes[i],
            serde_json::json!([path("mirror.internal", "ok", "")]),
        ));
    }
    for i in 0..3 {
        let n = format!("bad-{i}");
        reports.push(report(
            &n,
            serde_json::json!([
                path("mirror.internal", "failing", "TLSUnknownAuthority"),
                path(
                    "<img src=x onerror=\"document.body.style.background='#ff00ff'\">",
                    "failing",
                    "X"
                )
            ]),
        ));
        nodes.push(n);
    }
    for i in 0..2 {
        nodes.push(format!("new-{i}"));
    }
    let stale = fleet::Staleness {
        now,
        default_interval: std::time::Duration::from_secs(60),
    };
    let f = fleet::build(&nodes, &reports, &stale);
    let text = fleet::html(&f);
    assert!(!text.contains("<img"), "report text is escaped");
    assert!(
        !text.contains("http://") && !text.contains("https://"),
        "self-contained: no external resource"
    );
    assert!(
        text.contains(">37 nodes<") && text.contains(">3 nodes<") && text.contains(">2 nodes<"),
        "{text}"
    );
    let px = screenshot("status", &text);
    // 90×28-pixel cells; three columns (mirror.internal, the hostile name, other registries).
    let cell_px = 90 * 28;
    let ready = count(&px, hex(colour(CellVerdict::Ready)));
    let bad = count(&px, hex(colour(CellVerdict::NotReady)));
    let unknown = count(&px, hex(colour(CellVerdict::Unknown)));
    eprintln!("status pixels: ready {ready}, not_ready {bad}, unknown {unknown}");
    // ready: the healthy row's 3 cells and the failing row's "other registries".
    assert!(ready > cell_px * 3, "ready cells on screen: {ready}");
    assert!(
        bad > cell_px,
        "the failing row's two cells (reasons written on them): {bad}"
    );
    assert!(unknown > cell_px * 2, "the unreported row: {unknown}");
    assert_eq!(count(&px, [0xff, 0x00, 0xff]), 0);
}
