//! Reductions over a vocabulary's logits for the decode loop: the maximum,
//! the first index of it, and the log-sum-exp.
//!
//! Why: every decode step applies the logit rules to every row, and each
//! row is ~52k logits. Written as `fold(f32::max)` and a libm `exp` per
//! logit these stay scalar (the fold for its NaN rule, the exp for the
//! call), a few hundred microseconds per row on one core while the other
//! waits; at batch 8 that was the decode loop's largest serial stretch.
//! Here the same reductions run in 16 lanes with the attention kernels'
//! vectorisable `exp`, compiled per ISA and picked at run time as those
//! kernels are. The log-sum-exp still accumulates in f64 (per block of
//! 1024 logits), so it agrees with the scalar one to ~1e-7.

use super::attn::{exp_nonpositive, simd_level, Simd};

/// Lanes of the reductions (fixed, so every ISA adds in the same order).
const LANES: usize = 16;
/// Logits summed in f32 lanes before the running f64 total.
const BLOCK: usize = 1024;

/// The largest logit (`-inf` for an empty or all-`-inf` slice; NaN is
/// never the maximum, as with `fold(f32::max)`).
pub(crate) fn max(x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    match simd_level() {
        // SAFETY: the features were detected at run time.
        Simd::Avx512 => return unsafe { max_avx512(x) },
        Simd::Avx2 => return unsafe { max_avx2(x) },
        Simd::Baseline => {}
    }
    max_impl(x)
}

/// The first index of the largest logit (0 when none is larger than
/// `-inf`): greedy decoding's pick.
pub(crate) fn argmax(x: &[f32]) -> u32 {
    let m = max(x);
    if m == f32::NEG_INFINITY {
        return 0;
    }
    x.iter().position(|&v| v == m).unwrap_or(0) as u32
}

/// `ln Σ eˣ` over the finite logits (`-inf` when there are none).
pub(crate) fn log_sum_exp(x: &[f32]) -> f32 {
    let m = max(x);
    if m == f32::NEG_INFINITY {
        return m;
    }
    #[cfg(target_arch = "x86_64")]
    let sum = match simd_level() {
        // SAFETY: the features were detected at run time.
        Simd::Avx512 => unsafe { sum_exp_avx512(x, m) },
        Simd::Avx2 => unsafe { sum_exp_avx2(x, m) },
        Simd::Baseline => sum_exp_impl(x, m),
    };
    #[cfg(not(target_arch = "x86_64"))]
    let sum = sum_exp_impl(x, m);
    m + sum.ln() as f32
}

#[inline(always)]
fn max_impl(x: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks
        .remainder()
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    for c in chunks {
        for l in 0..LANES {
            lanes[l] = if c[l] > lanes[l] { c[l] } else { lanes[l] };
        }
    }
    lanes.iter().copied().fold(tail, f32::max)
}

/// `Σ e^(x − m)` for `x ≤ m`, `-inf` terms exactly 0.
#[inline(always)]
fn sum_exp_impl(x: &[f32], m: f32) -> f64 {
    let e = |v: f32| {
        if v == f32::NEG_INFINITY {
            0.0
        } else {
            exp_nonpositive(v - m)
        }
    };
    let mut total = 0f64;
    for block in x.chunks(BLOCK) {
        let mut sums = [0f32; LANES];
        let chunks = block.chunks_exact(LANES);
        let tail: f32 = chunks.remainder().iter().map(|&v| e(v)).sum();
        for c in chunks {
            for l in 0..LANES {
                sums[l] += e(c[l]);
            }
        }
        total += sums.iter().map(|&s| s as f64).sum::<f64>() + tail as f64;
    }
    total
}

/// [`max_impl`] for AVX2.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn max_avx2(x: &[f32]) -> f32 {
    max_impl(x)
}

/// [`max_impl`] for AVX-512.
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn max_avx512(x: &[f32]) -> f32 {
    max_impl(x)
}

/// [`sum_exp_impl`] for AVX2.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn sum_exp_avx2(x: &[f32], m: f32) -> f64 {
    sum_exp_impl(x, m)
}

/// [`sum_exp_impl`] for AVX-512.
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn sum_exp_avx512(x: &[f32], m: f32) -> f64 {
    sum_exp_impl(x, m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar_lse(x: &[f32]) -> f32 {
        let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if m == f32::NEG_INFINITY {
            return m;
        }
        let s: f64 = x
            .iter()
            .filter(|v| **v != f32::NEG_INFINITY)
            .map(|&v| ((v - m) as f64).exp())
            .sum();
        m + s.ln() as f32
    }

    fn logits(n: usize, seed: u64) -> Vec<f32> {
        // A deterministic spread like a vocabulary's: most logits far
        // below the top few, some masked.
        let mut s = seed;
        (0..n)
            .map(|i| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (s >> 40) as f32 / (1u64 << 24) as f32;
                if i % 97 == 3 {
                    f32::NEG_INFINITY
                } else {
                    u * 30.0 - 25.0
                }
            })
            .collect()
    }

    #[test]
    fn agrees_with_the_scalar_reductions() {
        for (n, seed) in [(51_864, 1), (1501, 2), (17, 3), (1, 4), (1024, 5)] {
            let x = logits(n, seed);
            let want_max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(max(&x), want_max, "n={n}");
            assert_eq!(max_impl(&x), want_max, "n={n}");
            assert_eq!(argmax(&x), crate::llm::sampling::argmax(&x), "n={n}");
            let (a, b) = (log_sum_exp(&x), scalar_lse(&x));
            assert!(
                (a - b).abs() <= 2e-6 * b.abs().max(1.0),
                "n={n}: {a} vs {b}"
            );
            let c = want_max + sum_exp_impl(&x, want_max).ln() as f32;
            assert!(
                (c - b).abs() <= 2e-6 * b.abs().max(1.0),
                "n={n}: {c} vs {b}"
            );
        }
    }

    #[test]
    fn ties_masks_and_empty_input() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[f32::NEG_INFINITY; 40]), 0);
        assert_eq!(argmax(&[]), 0);
        assert_eq!(log_sum_exp(&[]), f32::NEG_INFINITY);
        assert_eq!(log_sum_exp(&[f32::NEG_INFINITY; 33]), f32::NEG_INFINITY);
        // One finite logit: exactly itself.
        let mut x = vec![f32::NEG_INFINITY; 100];
        x[57] = -3.5;
        assert_eq!(log_sum_exp(&x), -3.5);
        assert_eq!(argmax(&x), 57);
        // NaN is never the maximum.
        assert_eq!(max(&[f32::NAN, 1.0, f32::NAN]), 1.0);
    }
}
