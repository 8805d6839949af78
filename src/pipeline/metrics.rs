//! Run metrics: one JSON object per line (`metrics.jsonl`), and SVG line plots drawn from it.
//!
//! The log is append-only and each record is one `write` of its whole line, so a killed run loses nothing it
//! reported and a failed write (a full disk) is cut back off; on resume it is cut back to the length
//! recorded with the checkpoint, so the resumed run's lines follow without gaps or duplicates, and a fresh
//! run starts it empty.

use anyhow::{Context, Result};
use serde_json::Value;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub struct MetricsLog {
    path: PathBuf,
    file: File,
}

impl MetricsLog {
    /// Open `path` for appending; with `truncate_to`, first cut it to that many bytes (a resume cuts back to
    /// its checkpoint's length, a fresh run to 0). A log shorter than that is left as it is (never padded),
    /// and a torn last line (no newline: a write that failed half-way) is cut off.
    pub fn open(path: &Path, truncate_to: Option<u64>) -> Result<Self> {
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening metrics log {}", path.display()))?;
        let len = file.metadata().with_context(|| format!("reading metrics log {}", path.display()))?.len();
        let mut keep = len;
        if let Some(want) = truncate_to {
            if want > len {
                eprintln!(
                    "warning: {} is shorter ({len} bytes) than its checkpoint recorded ({want}); its earlier records are missing",
                    path.display()
                );
            }
            keep = want.min(len);
        }
        keep = complete_lines(&mut file, keep).with_context(|| format!("reading metrics log {}", path.display()))?;
        if keep != len {
            file.set_len(keep).with_context(|| format!("truncating metrics log {}", path.display()))?;
        }
        Ok(MetricsLog { path: path.to_owned(), file })
    }

    /// Append `record` as one line, in one write; a write that fails part-way is cut back off.
    pub fn write(&mut self, record: &Value) -> Result<()> {
        let line = format!("{record}\n");
        let before = self.file.metadata().with_context(|| format!("writing {}", self.path.display()))?.len();
        let result = self.file.write_all(line.as_bytes()).and_then(|_| self.file.flush());
        if result.is_err() {
            let _ = self.file.set_len(before);
        }
        result.with_context(|| format!("writing {}", self.path.display()))
    }

    /// Current length in bytes (stored with a checkpoint).
    pub fn len_bytes(&self) -> Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The length of the first `len` bytes of `file` cut back to its last newline (0 when none).
fn complete_lines(file: &mut File, len: u64) -> std::io::Result<u64> {
    let mut end = len;
    let mut buf = [0u8; 4096];
    while end > 0 {
        let n = end.min(buf.len() as u64);
        file.seek(SeekFrom::Start(end - n))?;
        file.read_exact(&mut buf[..n as usize])?;
        if let Some(i) = buf[..n as usize].iter().rposition(|&b| b == b'\n') {
            return Ok(end - n + i as u64 + 1);
        }
        end -= n;
    }
    Ok(0)
}

/// Read every record of a metrics log.
pub fn read(path: &Path) -> Result<Vec<Value>> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    BufReader::new(f)
        .lines()
        .enumerate()
        .map(|(i, l)| {
            let l = l.with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str(&l).with_context(|| format!("{}:{}: not a JSON object", path.display(), i + 1))
        })
        .collect()
}

/// (x, y) points of `y_key` against `x_key` over the records that have both as numbers.
pub fn series(records: &[Value], x_key: &str, y_key: &str) -> Vec<(f64, f64)> {
    records
        .iter()
        .filter_map(|r| Some((r.get(x_key)?.as_f64()?, r.get(y_key)?.as_f64()?)))
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect()
}

/// A small self-contained SVG line chart: one or more named series on shared axes.
pub fn svg_plot(title: &str, x_label: &str, series: &[(&str, Vec<(f64, f64)>)]) -> String {
    const W: f64 = 640.0;
    const H: f64 = 400.0;
    const M: f64 = 56.0;
    const COLORS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];
    let pts = series.iter().flat_map(|(_, s)| s.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if !x0.is_finite() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    if y1 - y0 < 1e-12 {
        y1 = y0 + 1.0;
    }
    let sx = |x: f64| M + (x - x0) / (x1 - x0) * (W - 2.0 * M);
    let sy = |y: f64| H - M - (y - y0) / (y1 - y0) * (H - 2.0 * M);
    let mut s = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n");
    s += &format!("<text x=\"{}\" y=\"20\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n", W / 2.0, esc(title));
    s += &format!("<line x1=\"{M}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n", H - M, W - M, H - M);
    s += &format!("<line x1=\"{M}\" y1=\"{M}\" x2=\"{M}\" y2=\"{}\" stroke=\"black\"/>\n", H - M);
    for i in 0..=4 {
        let f = i as f64 / 4.0;
        let (xv, yv) = (x0 + f * (x1 - x0), y0 + f * (y1 - y0));
        s += &format!(
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
            sx(xv),
            H - M + 16.0,
            fmt_tick(xv)
        );
        s +=
            &format!("<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n", M - 6.0, sy(yv) + 4.0, fmt_tick(yv));
        s += &format!("<line x1=\"{M}\" y1=\"{0:.1}\" x2=\"{1}\" y2=\"{0:.1}\" stroke=\"#eee\"/>\n", sy(yv), W - M);
    }
    s += &format!("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", W / 2.0, H - 12.0, esc(x_label));
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = pts.iter().map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y))).collect();
        s += &format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/>\n",
            path.join(" ")
        );
        s += &format!(
            "<text x=\"{}\" y=\"{}\" fill=\"{color}\">{}</text>\n",
            W - M - 150.0,
            M + 14.0 * i as f64,
            esc(name)
        );
    }
    s + "</svg>\n"
}

fn fmt_tick(v: f64) -> String {
    if v.abs() >= 1e4 || (v != 0.0 && v.abs() < 1e-2) {
        format!("{v:.2e}")
    } else {
        format!("{v:.3}")
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Write `svg` to `path` atomically.
pub fn write_plot(path: &Path, svg: &str) -> Result<()> {
    crate::util::fs::write_atomic(path, svg.as_bytes())
}
