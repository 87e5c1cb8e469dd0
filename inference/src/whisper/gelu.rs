//! Exact (erf) GELU, parallel on the CPU.
//!
//! candle's CPU unary ops run on one thread; GELU over the encoder's MLP
//! activations (1500 × 1536 per window per layer) is one of the few
//! element-wise passes big enough to matter, so it gets split across
//! rayon's threads. Other devices use candle's own kernel.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

struct ParGeluErf;

/// erf by Abramowitz & Stegun 7.1.26 (|error| ≤ 1.5e-7 in exact arithmetic,
/// < 1e-6 in f32): one `exp` and a short polynomial, several times cheaper than
/// libm's `erff`, which was ~9% of transcription CPU time in profiles.
#[inline(always)]
fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_7,
        -1.453_152_1,
        1.061_405_4,
    ];
    let a = x.abs();
    let t = 1.0 / (1.0 + P * a);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let y = 1.0 - poly * (-a * a).exp();
    y.copysign(x)
}

impl CustomOp1 for ParGeluErf {
    fn name(&self) -> &'static str {
        "earshot-par-gelu-erf"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(v) = s else {
            candle_core::bail!("par gelu expects f32");
        };
        let Some((start, end)) = l.contiguous_offsets() else {
            candle_core::bail!("par gelu expects a contiguous input");
        };
        let src = &v[start..end];
        let mut out = vec![0f32; src.len()];
        out.par_chunks_mut(1 << 14)
            .zip(src.par_chunks(1 << 14))
            .for_each(|(o, i)| {
                for (o, &x) in o.iter_mut().zip(i) {
                    *o = 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
                }
            });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

/// `x · Φ(x)` with the exact normal CDF.
pub fn gelu_erf(x: &Tensor) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        x.contiguous()?.apply_op1_no_bwd(&ParGeluErf)
    } else {
        x.gelu_erf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_candle_gelu_erf() {
        let x = Tensor::arange(-60_000i64, 60_000, &candle_core::Device::Cpu)
            .unwrap()
            .to_dtype(candle_core::DType::F32)
            .unwrap()
            .affine(1e-4, 0.0)
            .unwrap();
        let a = gelu_erf(&x).unwrap();
        let b = x.gelu_erf().unwrap();
        let d = crate::testing::max_abs(&(a - b).unwrap());
        assert!(d < 1e-6, "{d}");
    }

    #[test]
    fn erf_matches_libm() {
        let mut worst = 0f32;
        for i in -80_000..80_000 {
            let x = i as f32 * 1e-4;
            worst = worst.max((erf(x) - candle_core::cpu::erf::erf_f32(x)).abs());
        }
        assert!(worst < 1e-6, "{worst}");
    }
}
