//! Helpers shared by the simulator kernel tests (`tests/kernels_sim.rs`, `tests/kernels_unfused_sim.rs`):
//! random inputs and a typed "device" buffer in the simulator.
#![allow(dead_code)] // each test crate uses its own subset

use half::bf16;
use rlhf::kernels::launch::{DType, DevPtr};
use rlhf::kernels::sim::SimBuf;
use rlhf::util::rng::Rng;

pub fn randn(rng: &mut Rng, n: usize, scale: f64) -> Vec<f64> {
    rng.normals(n, scale)
}

/// A "device" buffer of dtype `dt` holding `x` (rounded to bf16 for BF16), read back as f64 or as bits.
pub struct DBuf {
    pub dt: DType,
    f: Option<SimBuf<f32>>,
    h: Option<SimBuf<bf16>>,
}

impl DBuf {
    pub fn new(dt: DType, x: &[f64]) -> DBuf {
        match dt {
            DType::F32 => {
                DBuf { dt, f: Some(SimBuf::from_slice(&x.iter().map(|&v| v as f32).collect::<Vec<_>>())), h: None }
            }
            DType::BF16 => DBuf {
                dt,
                f: None,
                h: Some(SimBuf::from_slice(&x.iter().map(|&v| bf16::from_f64(v)).collect::<Vec<_>>())),
            },
        }
    }
    pub fn poisoned(dt: DType, n: usize) -> DBuf {
        match dt {
            DType::F32 => DBuf { dt, f: Some(SimBuf::poisoned(n, 0xff)), h: None },
            DType::BF16 => DBuf { dt, f: None, h: Some(SimBuf::poisoned(n, 0xff)) },
        }
    }
    pub fn ptr(&self) -> DevPtr {
        match self.dt {
            DType::F32 => self.f.as_ref().unwrap().ptr(),
            DType::BF16 => self.h.as_ref().unwrap().ptr(),
        }
    }
    pub fn get(&self) -> Vec<f64> {
        match self.dt {
            DType::F32 => self.f.as_ref().unwrap().as_slice().iter().map(|&v| v as f64).collect(),
            DType::BF16 => self.h.as_ref().unwrap().as_slice().iter().map(|v| v.to_f64()).collect(),
        }
    }
    /// The stored bit patterns (f32 bits, or the 16 bf16 bits).
    pub fn bits(&self) -> Vec<u32> {
        match self.dt {
            DType::F32 => self.f.as_ref().unwrap().as_slice().iter().map(|v| v.to_bits()).collect(),
            DType::BF16 => self.h.as_ref().unwrap().as_slice().iter().map(|v| v.to_bits() as u32).collect(),
        }
    }
}
