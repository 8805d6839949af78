//! `RLHF_CUDA_PROFILE=1`: the time of every kernel launch and matrix product while recording is on, summed per
//! kernel name ([`ProfileRow`]). `rlhf bench --device cuda` records a few training steps with it and prints the
//! table at the end (and puts it in the JSON).
//!
//! On the GPU each operation is bracketed by two CUDA events on the stream, read once the recording ends (so
//! recording does not synchronise); in the simulator, which runs a launch to completion before returning, by
//! the host clock. Recording is per process: launches of every device in it while it is on are counted.

use anyhow::Result;
use cudarc::driver::CudaEvent;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// The environment variable that asks `rlhf bench` for the profile (`1`).
pub const VAR: &str = "RLHF_CUDA_PROFILE";

/// Whether `RLHF_CUDA_PROFILE=1`.
pub fn requested() -> bool {
    std::env::var(VAR).is_ok_and(|v| v.trim() == "1")
}

/// One operation's time.
pub enum Span {
    /// Milliseconds measured on the host around a synchronous operation.
    Host(f64),
    /// Events recorded on the stream before and after the operation.
    Events(CudaEvent, CudaEvent),
}

// SAFETY: events are plain driver handles (with their context), read only after the recording ends.
unsafe impl Send for Span {}

static RECORDING: AtomicBool = AtomicBool::new(false);
static SPANS: Mutex<Vec<(String, Span)>> = Mutex::new(Vec::new());

/// Whether launches are being recorded now.
pub fn recording() -> bool {
    RECORDING.load(Ordering::Relaxed)
}

/// Starts recording (dropping anything recorded before).
pub fn start() {
    SPANS.lock().unwrap_or_else(|e| e.into_inner()).clear();
    RECORDING.store(true, Ordering::Relaxed);
}

/// Adds one operation (ignored unless recording).
pub fn record(name: &str, span: Span) {
    if recording() {
        SPANS.lock().unwrap_or_else(|e| e.into_inner()).push((name.to_string(), span));
    }
}

/// Stops recording and returns the table (the device must have finished the recorded work, or the events'
/// reads wait for it).
pub fn finish() -> Result<Vec<ProfileRow>> {
    RECORDING.store(false, Ordering::Relaxed);
    let spans = std::mem::take(&mut *SPANS.lock().unwrap_or_else(|e| e.into_inner()));
    let mut timed = Vec::with_capacity(spans.len());
    for (name, span) in spans {
        let ms = match span {
            Span::Host(ms) => ms,
            Span::Events(a, b) => {
                a.elapsed_ms(&b).map_err(|e| anyhow::anyhow!("reading the events of {name}: {e}"))? as f64
            }
        };
        timed.push((name, ms));
    }
    Ok(summarize(&timed))
}

/// One kernel's share of the recorded time.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProfileRow {
    pub kernel: String,
    pub calls: usize,
    pub total_ms: f64,
    pub mean_us: f64,
    /// Of the total over all kernels.
    pub share: f64,
}

/// (name, milliseconds) per operation to rows per name, the most time first.
pub fn summarize(timed: &[(String, f64)]) -> Vec<ProfileRow> {
    let mut rows: Vec<ProfileRow> = Vec::new();
    for (name, ms) in timed {
        match rows.iter_mut().find(|r| &r.kernel == name) {
            Some(r) => (r.calls, r.total_ms) = (r.calls + 1, r.total_ms + ms),
            None => rows.push(ProfileRow { kernel: name.clone(), calls: 1, total_ms: *ms, mean_us: 0.0, share: 0.0 }),
        }
    }
    let total: f64 = rows.iter().map(|r| r.total_ms).sum();
    for r in &mut rows {
        r.mean_us = 1e3 * r.total_ms / r.calls as f64;
        r.share = if total > 0.0 { r.total_ms / total } else { 0.0 };
    }
    rows.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
    rows
}

/// The table: kernel, calls, total ms, mean us, share.
pub fn table(rows: &[ProfileRow]) -> String {
    let mut s = format!("{:<44} {:>7} {:>11} {:>10} {:>7}\n", "kernel", "calls", "total ms", "mean us", "share");
    for r in rows {
        s += &format!(
            "{:<44} {:>7} {:>11.3} {:>10.1} {:>6.1}%\n",
            r.kernel,
            r.calls,
            r.total_ms,
            r.mean_us,
            100.0 * r.share
        );
    }
    s
}

/// The profile name of a matrix product: `gemm MxNxK in->out` (with `+bias` and `xB` for a batch).
pub fn gemm_name(g: &super::device::Gemm) -> String {
    let batch = if g.batch > 1 { format!(" x{}", g.batch) } else { String::new() };
    let bias = if g.bias != 0 { "+bias" } else { "" };
    format!("gemm {}x{}x{}{batch} {}->{}{bias}", g.m, g.n, g.k, g.in_dt.suffix(), g.out_dt.suffix())
}

/// Runs `op`, timed by the host clock while recording.
pub fn host_timed(name: impl FnOnce() -> String, op: impl FnOnce() -> Result<()>) -> Result<()> {
    if !recording() {
        return op();
    }
    let t0 = std::time::Instant::now();
    let r = op();
    record(&name(), Span::Host(t0.elapsed().as_secs_f64() * 1e3));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_sum_per_kernel_most_time_first() {
        let t = [("a".to_string(), 1.0), ("b".to_string(), 2.0), ("a".to_string(), 5.0)];
        let rows = summarize(&t);
        assert_eq!(rows.iter().map(|r| (r.kernel.as_str(), r.calls)).collect::<Vec<_>>(), [("a", 2), ("b", 1)]);
        assert_eq!((rows[0].total_ms, rows[0].mean_us, rows[0].share), (6.0, 3000.0, 0.75));
        assert!(table(&rows).lines().nth(1).unwrap().starts_with("a "));
    }
}
