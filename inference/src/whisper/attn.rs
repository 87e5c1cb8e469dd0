//! Fused attention kernels for the CPU: single-query attention for decode
//! steps, and the encoder's self-attention straight from its fused qkv
//! projection.
//!
//! A decode step asks, for every (row, head), one query against up to 1500
//! keys. Expressed as candle ops that is a batched matmul, a scale, a mask,
//! a softmax and another batched matmul — and candle's CPU matmul runs the
//! batch as one gemm call after another, each with its own thread hand-off.
//! For a batch of 8 with 6 heads that is 96 tiny gemms per layer per step,
//! and profiles showed the step dominated by that overhead rather than by
//! arithmetic. This op does the whole thing in one pass per (row, head),
//! the (row, head) pairs spread over rayon's threads, and reads each key and
//! value once. GPUs keep the generic path (their batched matmuls are fine).

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

/// Which key positions a row may attend to: `[0, prompt_len)` and
/// `[prefill_len, ..)` (right-padding of shorter prompts is skipped).
#[derive(Debug, Clone)]
pub struct RowMask {
    pub prompt_lens: Vec<usize>,
    pub prefill_len: usize,
}

impl RowMask {
    /// The same mask as an additive `[b, 1, 1, total]` tensor, for the
    /// generic (non-fused) attention path.
    pub fn to_tensor(
        &self,
        total: usize,
        device: &candle_core::Device,
        dtype: candle_core::DType,
    ) -> candle_core::Result<Tensor> {
        let b = self.prompt_lens.len();
        let mut mask = vec![0f32; b * total];
        for (r, &pl) in self.prompt_lens.iter().enumerate() {
            for m in &mut mask[r * total + pl..r * total + self.prefill_len.min(total)] {
                *m = f32::NEG_INFINITY;
            }
        }
        Tensor::from_vec(mask, (b, 1, 1, total), device)?.to_dtype(dtype)
    }
}

struct DecodeAttention<'a> {
    mask: Option<&'a RowMask>,
    /// Which batch row of the keys/values each query row reads (identity
    /// when `None`).
    kv_rows: Option<&'a [usize]>,
}

/// Which build of the loops below runs. They are the same Rust compiled
/// for wider registers: LLVM never fuses a multiply and an add on its own
/// and every reduction keeps its order in the source, so all builds give
/// the same bits. (The baseline build kept `dot` scalar and the rest 4
/// lanes wide: a decode step's cross-attention was ~20% of a batched int8
/// run.)
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Simd {
    Baseline,
    Avx2,
    Avx512,
}

pub(super) fn simd_level() -> Simd {
    #[cfg(target_arch = "x86_64")]
    {
        static LEVEL: std::sync::OnceLock<Simd> = std::sync::OnceLock::new();
        *LEVEL.get_or_init(|| {
            if std::arch::is_x86_feature_detected!("avx512f") {
                Simd::Avx512
            } else if std::arch::is_x86_feature_detected!("avx2") {
                Simd::Avx2
            } else {
                Simd::Baseline
            }
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    Simd::Baseline
}

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent accumulators so the compiler vectorises the loop.
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ar.iter().zip(br) {
        s += x * y;
    }
    s
}

/// One (row, head) of a decode step: `o = softmax(q·kᵀ·scale) v` over the
/// keys `j < lo || j >= hi` (the row's prompt and everything after the
/// padded prefill), `scores` as scratch.
#[inline(always)]
fn attend_one(
    qv: &[f32],
    kb: &[f32],
    vb: &[f32],
    (lo, hi): (usize, usize),
    scale: f32,
    scores: &mut [f32],
    o: &mut [f32],
) {
    let hd = qv.len();
    let mut max = f32::NEG_INFINITY;
    for (j, s) in scores.iter_mut().enumerate() {
        *s = if j < lo || j >= hi {
            dot(qv, &kb[j * hd..(j + 1) * hd]) * scale
        } else {
            f32::NEG_INFINITY
        };
        max = max.max(*s);
    }
    // The encoder's vectorisable exp (to ~1 ulp; masked keys stay exactly
    // 0), summed in 16 lanes rather than one chain of dependent adds.
    let e = |s: f32| {
        if s == f32::NEG_INFINITY {
            0.0
        } else {
            exp_nonpositive(s - max)
        }
    };
    let mut sums = [0f32; 16];
    let mut chunks = scores.chunks_exact_mut(16);
    for c in &mut chunks {
        for l in 0..16 {
            c[l] = e(c[l]);
            sums[l] += c[l];
        }
    }
    let mut sum: f32 = sums.iter().sum();
    for s in chunks.into_remainder() {
        *s = e(*s);
        sum += *s;
    }
    let inv = 1.0 / sum;
    o.fill(0.0);
    for (j, &w) in scores.iter().enumerate() {
        if w == 0.0 {
            continue;
        }
        let w = w * inv;
        for (x, y) in o.iter_mut().zip(&vb[j * hd..(j + 1) * hd]) {
            *x += w * y;
        }
    }
}

/// [`attend_one`] for AVX2 (see [`simd_level`]).
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn attend_one_avx2(
    qv: &[f32],
    kb: &[f32],
    vb: &[f32],
    valid: (usize, usize),
    scale: f32,
    scores: &mut [f32],
    o: &mut [f32],
) {
    attend_one(qv, kb, vb, valid, scale, scores, o)
}

/// [`attend_one`] for AVX-512.
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn attend_one_avx512(
    qv: &[f32],
    kb: &[f32],
    vb: &[f32],
    valid: (usize, usize),
    scale: f32,
    scores: &mut [f32],
    o: &mut [f32],
) {
    attend_one(qv, kb, vb, valid, scale, scores, o)
}

impl CustomOp3 for DecodeAttention<'_> {
    fn name(&self) -> &'static str {
        "earshot-decode-attention"
    }

    fn cpu_fwd(
        &self,
        sq: &CpuStorage,
        lq: &Layout,
        sk: &CpuStorage,
        lk: &Layout,
        sv: &CpuStorage,
        lv: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, h, one, hd) = lq.shape().dims4()?;
        let (bk, hk, t, hdk) = lk.shape().dims4()?;
        let rows_ok = match self.kv_rows {
            Some(m) => m.len() == b && m.iter().all(|&r| r < bk),
            None => bk == b,
        };
        if one != 1 || !rows_ok || (hk, hdk) != (h, hd) || lv.shape() != lk.shape() {
            candle_core::bail!(
                "decode attention: shapes {:?} {:?} {:?}",
                lq.shape(),
                lk.shape(),
                lv.shape()
            );
        }
        let (q, k, v) = match (sq, sk, sv) {
            (CpuStorage::F32(q), CpuStorage::F32(k), CpuStorage::F32(v)) => (q, k, v),
            _ => candle_core::bail!("decode attention expects f32"),
        };
        let Some((q0, _)) = lq.contiguous_offsets() else {
            candle_core::bail!("decode attention expects a contiguous query");
        };
        let (Some((k0, ks)), Some((v0, vs))) = (kv_strides(lk, hd), kv_strides(lv, hd)) else {
            candle_core::bail!("decode attention expects keys/values contiguous per head");
        };
        let q = &q[q0..];
        let scale = 1.0 / (hd as f32).sqrt();
        let mut out = vec![0f32; b * h * hd];
        out.par_chunks_mut(hd).enumerate().for_each_init(
            || vec![0f32; t],
            |scores, (i, o)| {
                let r = i / h;
                let qv = &q[i * hd..(i + 1) * hd];
                let (kr, head) = (self.kv_rows.map_or(r, |m| m[r]), i % h);
                let ko = k0 + kr * ks.0 + head * ks.1;
                let vo = v0 + kr * vs.0 + head * vs.1;
                let kb = &k[ko..ko + t * hd];
                let vb = &v[vo..vo + t * hd];
                let valid = match self.mask {
                    Some(m) => (m.prompt_lens[r], m.prefill_len),
                    None => (t, t),
                };
                #[cfg(target_arch = "x86_64")]
                match simd_level() {
                    // SAFETY: the features were detected at run time.
                    Simd::Avx512 => {
                        return unsafe { attend_one_avx512(qv, kb, vb, valid, scale, scores, o) }
                    }
                    Simd::Avx2 => {
                        return unsafe { attend_one_avx2(qv, kb, vb, valid, scale, scores, o) }
                    }
                    Simd::Baseline => {}
                }
                attend_one(qv, kb, vb, valid, scale, scores, o);
            },
        );
        Ok((CpuStorage::F32(out), Shape::from((b, h, 1, hd))))
    }
}

/// Where a `[b, h, t, hd]` key or value tensor's data starts and its row
/// and head strides, when each (row, head) holds its `t` positions as one
/// contiguous block (a contiguous tensor, or the first `t` positions of a
/// longer cache); `None` otherwise.
fn kv_strides(l: &Layout, hd: usize) -> Option<(usize, (usize, usize))> {
    let (s, dims) = (l.stride(), l.dims());
    let blocked = dims.len() == 4 && dims[3] == hd && (s[3] == 1 || hd == 1) && s[2] == hd;
    blocked.then(|| (l.start_offset(), (s[0], s[1])))
}

/// Attention of one query per (row, head) over `[b, h, t, hd]` keys/values;
/// with `kv_rows`, query row `r` reads key/value row `kv_rows[r]` (the
/// cross-attention of a batch whose finished rows have left, without
/// copying the encoder's keys and values). Returns `None` when the fused
/// kernel does not apply (not CPU f32), so the caller uses the generic path.
pub fn decode_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&RowMask>,
    kv_rows: Option<&[usize]>,
) -> candle_core::Result<Option<Tensor>> {
    if !q.device().is_cpu() || q.dtype() != candle_core::DType::F32 || q.dim(2)? != 1 {
        return Ok(None);
    }
    // Keys and values may be views into a longer cache (per-head blocks
    // of contiguous positions); anything else is copied first.
    let hd = q.dim(3)?;
    let packed = |x: &Tensor| -> candle_core::Result<Tensor> {
        if kv_strides(x.layout(), hd).is_some() {
            Ok(x.clone())
        } else {
            x.contiguous()
        }
    };
    let (q, k, v) = (q.contiguous()?, packed(k)?, packed(v)?);
    q.apply_op3_no_bwd(&k, &v, &DecodeAttention { mask, kv_rows })
        .map(Some)
}

/// Query rows per block of the encoder kernel: a 64 × 1500 score block is
/// 384 KB, which stays in L2 between its two products.
const QUERY_BLOCK: usize = 64;

/// Encoder self-attention from the fused projection `qkv [b, t, 3d]` (q, k,
/// v side by side, heads of `d / n_head` within each): `[b, t, d]`, heads
/// already merged.
///
/// Why: candle's path splits the heads into three contiguous copies,
/// materialises every head's t×t scores (54 MB per 30 s window in f32,
/// fresh pages the kernel must zero on every call), runs a generic softmax
/// over them and merges the heads with another copy; profiles of the
/// batched pipeline put ~35% of the run in that overhead rather than in
/// arithmetic. Here each (row, head, block of 64 queries) does two gemm
/// calls reading q, k and v in place through strides, an in-cache softmax
/// with a vectorisable `exp`, and writes its output where the merged heads
/// go. The numbers agree with the generic path to ~1e-6.
struct EncoderAttention {
    n_head: usize,
}

impl candle_core::CustomOp1 for EncoderAttention {
    fn name(&self) -> &'static str {
        "earshot-encoder-attention"
    }

    fn cpu_fwd(&self, st: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, t, d3) = l.shape().dims3()?;
        let d = d3 / 3;
        if d3 % 3 != 0 || self.n_head == 0 || d % self.n_head != 0 {
            candle_core::bail!(
                "encoder attention: qkv width {d3} with {} heads",
                self.n_head
            );
        }
        let CpuStorage::F32(data) = st else {
            candle_core::bail!("encoder attention expects f32");
        };
        let Some((o0, o1)) = l.contiguous_offsets() else {
            candle_core::bail!("encoder attention expects a contiguous input");
        };
        let x = &data[o0..o1];
        let (h, hd) = (self.n_head, d / self.n_head);
        let scale = 1.0 / (hd as f32).sqrt();
        let blocks = t.div_ceil(QUERY_BLOCK);
        let mut out = vec![0f32; b * t * d];
        let out_ptr = out.as_mut_ptr() as usize;
        let x_ptr = x.as_ptr() as usize;
        (0..b * h * blocks).into_par_iter().for_each_init(
            || (vec![0f32; QUERY_BLOCK * t], vec![0f32; QUERY_BLOCK]),
            |(scores, sums), item| {
                let (bh, blk) = (item / blocks, item % blocks);
                let (r, head) = (bh / h, bh % h);
                let q0 = blk * QUERY_BLOCK;
                let m = QUERY_BLOCK.min(t - q0);
                let row = (r * t) * d3;
                let x = x_ptr as *const f32;
                // SAFETY: every offset stays inside `x` ([b, t, 3d]) and
                // `out` ([b, t, d]); each item writes only its own rows of
                // its own head, so no two items write the same element.
                unsafe {
                    let q = x.add(row + q0 * d3 + head * hd);
                    let k = x.add(row + d + head * hd);
                    let v = x.add(row + 2 * d + head * hd);
                    // scores[m, t] = q[m, hd] · kᵀ[hd, t]
                    gemm::gemm(
                        m,
                        t,
                        hd,
                        scores.as_mut_ptr(),
                        1,
                        t as isize,
                        false,
                        q,
                        1,
                        d3 as isize,
                        k,
                        d3 as isize,
                        1,
                        0.0f32,
                        1.0f32,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                    for (i, srow) in scores.chunks_exact_mut(t).take(m).enumerate() {
                        sums[i] = softmax_unnormalised(srow, scale);
                    }
                    let o = (out_ptr as *mut f32).add((r * t + q0) * d + head * hd);
                    // out[m, hd] = e[m, t] · v[t, hd]
                    gemm::gemm(
                        m,
                        hd,
                        t,
                        o,
                        1,
                        d as isize,
                        false,
                        scores.as_ptr(),
                        1,
                        t as isize,
                        v,
                        1,
                        d3 as isize,
                        0.0f32,
                        1.0f32,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                    for (i, &sum) in sums.iter().take(m).enumerate() {
                        let inv = 1.0 / sum;
                        for c in 0..hd {
                            *o.add(i * d + c) *= inv;
                        }
                    }
                }
            },
        );
        Ok((CpuStorage::F32(out), Shape::from((b, t, d))))
    }
}

/// `x ← exp(scale·x − max)` in place; returns the sum (the softmax's
/// denominator, applied after the product with v).
fn softmax_unnormalised(x: &mut [f32], scale: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    match simd_level() {
        // SAFETY: the features were detected at run time.
        Simd::Avx512 => return unsafe { softmax_unnormalised_avx512(x, scale) },
        Simd::Avx2 => return unsafe { softmax_unnormalised_avx2(x, scale) },
        Simd::Baseline => {}
    }
    softmax_unnormalised_impl(x, scale)
}

/// [`softmax_unnormalised_impl`] for AVX2 (see [`simd_level`]).
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn softmax_unnormalised_avx2(x: &mut [f32], scale: f32) -> f32 {
    softmax_unnormalised_impl(x, scale)
}

/// [`softmax_unnormalised_impl`] for AVX-512.
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn softmax_unnormalised_avx512(x: &mut [f32], scale: f32) -> f32 {
    softmax_unnormalised_impl(x, scale)
}

#[inline(always)]
fn softmax_unnormalised_impl(x: &mut [f32], scale: f32) -> f32 {
    // Maximum and sum in 16 lanes, written out so that LLVM keeps them in
    // registers (a `fold(f32::max)` stays scalar for its NaN rule, and one
    // running sum is a chain of dependent adds). The lanes fix the order of
    // the additions whatever the register width.
    let mut lanes = [f32::NEG_INFINITY; 16];
    let chunks = x.chunks_exact(16);
    let mut max = chunks
        .remainder()
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    for c in chunks {
        for l in 0..16 {
            lanes[l] = if c[l] > lanes[l] { c[l] } else { lanes[l] };
        }
    }
    max = lanes.iter().copied().fold(max, f32::max) * scale;
    let mut sums = [0f32; 16];
    let mut chunks = x.chunks_exact_mut(16);
    for c in &mut chunks {
        for l in 0..16 {
            c[l] = exp_nonpositive(c[l] * scale - max);
            sums[l] += c[l];
        }
    }
    let mut sum: f32 = sums.iter().sum();
    for v in chunks.into_remainder() {
        *v = exp_nonpositive(*v * scale - max);
        sum += *v;
    }
    sum
}

/// `eˣ` for `x ≤ 0` to ~1 ulp (Cephes' `expf` polynomial after range
/// reduction by ln 2), written so the compiler vectorises it: no calls, no
/// branches, rounding by the 1.5·2²³ trick instead of `round()`.
#[inline(always)]
// The polynomial's coefficients are written as published (Cephes' expf);
// the f32 they round to is what the kernel was checked with.
#[allow(clippy::excessive_precision)]
pub(super) fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2²³
    let x = x.max(-87.0);
    let n = (x * LOG2E + MAGIC) - MAGIC;
    let r = x - n * C1 - n * C2;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5.000_000_1e-1;
    let e = p * r * r + r + 1.0;
    let two_n = f32::from_bits(((n as i32 + 127) as u32) << 23);
    e * two_n
}

/// The encoder's self-attention from its fused qkv projection (see
/// [`EncoderAttention`]). `None` when the kernel does not apply (not CPU
/// f32): the caller takes the generic path.
pub fn encoder_attention(qkv: &Tensor, n_head: usize) -> candle_core::Result<Option<Tensor>> {
    if !qkv.device().is_cpu() || qkv.dtype() != candle_core::DType::F32 {
        return Ok(None);
    }
    qkv.contiguous()?
        .apply_op1_no_bwd(&EncoderAttention { n_head })
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// The fused kernel equals plain candle ops with the tensor form of the
    /// same mask (the path GPUs take).
    #[test]
    fn fused_matches_generic_with_row_mask() {
        let dev = Device::Cpu;
        let (b, h, t, hd) = (3, 2, 9, 8);
        let q = Tensor::randn(0f32, 1.0, (b, h, 1, hd), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (b, h, t, hd), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (b, h, t, hd), &dev).unwrap();
        let rows = RowMask {
            prompt_lens: vec![2, 5, 6],
            prefill_len: 6,
        };
        let fused = decode_attention(&q, &k, &v, Some(&rows), None)
            .unwrap()
            .unwrap();
        let mask = rows.to_tensor(t, &dev, DType::F32).unwrap();
        let w = ((q.matmul(&k.t().unwrap()).unwrap() * (1.0 / (hd as f64).sqrt())).unwrap())
            .broadcast_add(&mask)
            .unwrap();
        let w = candle_nn::ops::softmax_last_dim(&w).unwrap();
        let generic = w.matmul(&v).unwrap();
        let d = crate::testing::max_abs(&(fused - generic).unwrap());
        assert!(d < 1e-5, "{d}");
    }

    /// Reading keys/values through a row map equals gathering the rows
    /// first (how a batch's finished rows leave cross-attention).
    #[test]
    fn row_map_equals_gathered_rows() {
        let dev = Device::Cpu;
        let (h, t, hd) = (2, 11, 8);
        let k = Tensor::randn(0f32, 1.0, (4, h, t, hd), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (4, h, t, hd), &dev).unwrap();
        let q = Tensor::randn(0f32, 1.0, (2, h, 1, hd), &dev).unwrap();
        let map = [3usize, 1];
        let mapped = decode_attention(&q, &k, &v, None, Some(&map))
            .unwrap()
            .unwrap();
        let idx = Tensor::new(&[3u32, 1], &dev).unwrap();
        let (kg, vg) = (
            k.index_select(&idx, 0).unwrap(),
            v.index_select(&idx, 0).unwrap(),
        );
        let gathered = decode_attention(&q, &kg, &vg, None, None).unwrap().unwrap();
        assert_eq!(crate::testing::max_abs(&(mapped - gathered).unwrap()), 0.0);
        // A map that points outside the keys is an error, not a read out of bounds.
        assert!(decode_attention(&q, &k, &v, None, Some(&[4, 0])).is_err());
        assert!(decode_attention(&q, &k, &v, None, Some(&[0])).is_err());
    }

    #[test]
    fn exp_matches_std_over_the_softmax_range() {
        let mut worst = 0f32;
        for i in 0..=200_000 {
            let x = -87.0 * i as f32 / 200_000.0;
            let (a, b) = (exp_nonpositive(x), x.exp());
            worst = worst.max(((a - b) / b).abs());
        }
        assert!(worst < 4e-7, "relative error {worst}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert!(exp_nonpositive(-1000.0) < 1e-37);
        assert!(exp_nonpositive(f32::NEG_INFINITY).is_finite());
    }

    /// The fused encoder kernel equals split heads → softmax(qkᵀ/√d)v →
    /// merged heads, with more queries than one block and an uneven tail.
    #[test]
    fn encoder_kernel_matches_generic_attention() {
        let dev = Device::Cpu;
        let (b, t, h, hd) = (2, QUERY_BLOCK * 2 + 13, 3, 16);
        let d = h * hd;
        let qkv = Tensor::randn(0f32, 1.0, (b, t, 3 * d), &dev).unwrap();
        let fused = encoder_attention(&qkv, h).unwrap().unwrap();
        let heads = |i: usize| {
            qkv.narrow(2, i * d, d)
                .unwrap()
                .reshape((b, t, h, hd))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let (q, k, v) = (heads(0), heads(1), heads(2));
        let w = (q.matmul(&k.t().unwrap()).unwrap() * (1.0 / (hd as f64).sqrt())).unwrap();
        let w = candle_nn::ops::softmax_last_dim(&w).unwrap();
        let generic = w
            .matmul(&v)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((b, t, d))
            .unwrap();
        assert_eq!(fused.dims(), generic.dims());
        let diff = crate::testing::max_abs(&(fused - generic).unwrap());
        assert!(diff < 1e-5, "{diff}");
    }
}
