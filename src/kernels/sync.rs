//! `RLHF_CUDA_SYNC=1`: the GPU waits after every kernel launch and matrix product, so that an asynchronous
//! fault (an illegal address, a trap, a launch that never ran) is reported by the operation that caused it,
//! named with its grid or shapes, instead of by whichever later call next touches the stream. Off by default:
//! waiting serialises the host and the device.
//!
//! Errors name the operation either way ([`launch_label`], [`gemm_label`]); [`finish`] is the one place
//! that adds the wait.

use super::device::Gemm;
use super::launch::LaunchConfig;
use anyhow::{anyhow, Result};
use std::sync::OnceLock;

/// The environment variable that turns the wait on (`1`).
pub const VAR: &str = "RLHF_CUDA_SYNC";

/// Whether `RLHF_CUDA_SYNC=1` (read once per process).
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var(VAR).is_ok_and(|v| v.trim() == "1"))
}

/// `kernel NAME (grid [x, y, z], block [x, y, z], N bytes of dynamic shared memory)`.
pub fn launch_label(kernel: &str, cfg: &LaunchConfig) -> String {
    format!("kernel {kernel} (grid {:?}, block {:?}, {} bytes of dynamic shared memory)", cfg.grid, cfg.block, cfg.smem)
}

/// `GEMM M x N x K (ta, tb, batch, storage types, bias)`: the product as [`Gemm`] states it (row-major).
pub fn gemm_label(g: &Gemm) -> String {
    format!(
        "GEMM {} x {} x {} (ta {}, tb {}, batch {}, {:?} -> {:?}, beta {}, {})",
        g.m,
        g.n,
        g.k,
        g.ta,
        g.tb,
        g.batch,
        g.in_dt,
        g.out_dt,
        g.beta,
        if g.bias != 0 { "bias epilogue" } else { "no bias" }
    )
}

/// The outcome of the operation `label` names, issued with result `issued`: its own error, named; else,
/// with `wait` (given when [`enabled`]), the error of waiting for the device to finish it, named too.
pub fn finish(label: impl Fn() -> String, issued: Result<()>, wait: Option<&dyn Fn() -> Result<()>>) -> Result<()> {
    issued.map_err(|e| anyhow!("{}: {e:#}", label()))?;
    match wait {
        Some(wait) => wait().map_err(|e| anyhow!("{} failed on the device ({VAR}=1 waited after it): {e:#}", label())),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::DType;
    use anyhow::bail;

    fn cfg() -> LaunchConfig {
        LaunchConfig { grid: [3, 2, 1], block: [256, 1, 1], smem: 4096 }
    }

    #[test]
    fn a_failed_wait_names_the_kernel_and_its_grid() {
        let fail = || -> Result<()> { bail!("CUDA_ERROR_ILLEGAL_ADDRESS") };
        let e = finish(|| launch_label("gelu_forward_bf16", &cfg()), Ok(()), Some(&fail)).unwrap_err().to_string();
        assert!(e.contains("kernel gelu_forward_bf16 (grid [3, 2, 1], block [256, 1, 1], 4096 bytes"), "{e}");
        assert!(e.contains("RLHF_CUDA_SYNC=1 waited") && e.contains("CUDA_ERROR_ILLEGAL_ADDRESS"), "{e}");
    }

    #[test]
    fn a_failed_issue_is_named_and_not_waited_for() {
        let never = || -> Result<()> { panic!("waited after a launch that failed") };
        let e = finish(|| launch_label("k", &cfg()), Err(anyhow!("launching k: bad")), Some(&never)).unwrap_err();
        assert!(e.to_string().starts_with("kernel k (grid"), "{e}");
    }

    #[test]
    fn without_the_wait_success_stays_success() {
        assert!(finish(|| unreachable!(), Ok(()), None).is_ok());
    }

    #[test]
    fn gemm_label_gives_the_shapes() {
        let g = Gemm::single(16, 32, 48, 7, 1, 64, false, true, DType::BF16, DType::F32, 0.0);
        assert_eq!(gemm_label(&g), "GEMM 7 x 1 x 64 (ta false, tb true, batch 1, BF16 -> F32, beta 0, no bias)");
    }
}
