//! The element type of the CPU reference: `f32` for the engine, `f64` for finite-difference checks.

use std::fmt::Debug;
use std::iter::Sum;
use std::ops::{AddAssign, DivAssign, MulAssign, SubAssign};

pub trait Float:
    num_traits::Float + AddAssign + SubAssign + MulAssign + DivAssign + Sum + Default + Debug + Send + Sync + bytemuck::Pod + 'static
{
    fn of(x: f64) -> Self;
    fn f64(self) -> f64;
    const NAME: &'static str;
}

impl Float for f32 {
    fn of(x: f64) -> f32 {
        x as f32
    }
    fn f64(self) -> f64 {
        self as f64
    }
    const NAME: &'static str = "f32";
}

impl Float for f64 {
    fn of(x: f64) -> f64 {
        x
    }
    fn f64(self) -> f64 {
        self
    }
    const NAME: &'static str = "f64";
}
