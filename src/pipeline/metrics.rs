//! Run metrics: one JSON object per line (`metrics.jsonl`), read back as series for the plots
//! ([`crate::util::plot`]).
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
