//! A Q8_0 matrix product for CPU decoding of several sequences at once,
//! shared by both engines: the LLM's GGUF Q8_0 weights, and Whisper's
//! weights quantized at load time for `--compute-type int8`.
//!
//! candle's quantized CPU matmul computes each (activation row, weight row)
//! dot product separately; for a handful of rows (a decode step of a batch)
//! and widths that are not a multiple of 256 (Gemma 3 270M: 640, SmolLM2:
//! 576) it cannot use its tiled kernels, so batching 8 sequences bought
//! only ~15% more tokens per second. Here every weight block is loaded
//! once and multiplied with up to eight activation rows while it sits in
//! registers, with the scales already in f32.
//!
//! The arithmetic is ggml's Q8_0 x Q8_0 product: activations are quantized
//! per 32 values (scale rounded to f16 like ggml's), each block's integer
//! dot product is scaled by both block scales and summed in f32.

use half::f16;

/// A weight matrix `[n, k]` in Q8_0: 32 int8 values per block, one scale each.
#[derive(Debug)]
pub struct Q8Matrix {
    pub n: usize,
    pub k: usize,
    /// `n * k / 32` block scales.
    scales: Vec<f32>,
    /// `n * k` quantized values, row-major.
    qs: Vec<i8>,
    /// Per block, `-128 * Σ q`: the VNNI kernel multiplies activations
    /// shifted to unsigned bytes (`a + 128`) and takes this back off.
    corr: Vec<i32>,
}

const QK: usize = 32;
const BLOCK_BYTES: usize = 34;

impl Q8Matrix {
    /// From GGUF Q8_0 bytes (34-byte blocks: f16 scale, 32 int8).
    pub fn from_q8_0_bytes(data: &[u8], n: usize, k: usize) -> Option<Self> {
        if !k.is_multiple_of(QK) || data.len() != n * k / QK * BLOCK_BYTES {
            return None;
        }
        let nb = n * k / QK;
        let mut scales = Vec::with_capacity(nb);
        let mut qs = Vec::with_capacity(n * k);
        for b in data.chunks_exact(BLOCK_BYTES) {
            scales.push(f16::from_le_bytes([b[0], b[1]]).to_f32());
            qs.extend(b[2..].iter().map(|&x| x as i8));
        }
        Some(Self::from_blocks(n, k, scales, qs))
    }

    fn from_blocks(n: usize, k: usize, scales: Vec<f32>, qs: Vec<i8>) -> Self {
        let corr = qs
            .chunks_exact(QK)
            .map(|b| -128 * b.iter().map(|&x| x as i32).sum::<i32>())
            .collect();
        Self {
            n,
            k,
            scales,
            qs,
            corr,
        }
    }

    /// Quantizes an f32 weight matrix `[n, k]` (row-major) to Q8_0, as
    /// ggml's `quantize_row_q8_0` does: per 32 values, scale = max|x|/127
    /// (rounded to f16), values rounded to int8. `None` when `k` is not a
    /// multiple of 32 or the length is not `n * k`.
    pub fn quantize(w: &[f32], n: usize, k: usize) -> Option<Self> {
        if !k.is_multiple_of(QK) || w.len() != n * k {
            return None;
        }
        let (qs, scales) = quantize_rows(w, n, k);
        Some(Self::from_blocks(n, k, scales, qs))
    }

    /// Dequantized rows (embedding lookup), `[ids.len(), k]` flattened.
    pub fn rows(&self, ids: &[u32]) -> Vec<f32> {
        let kb = self.k / QK;
        let mut out = Vec::with_capacity(ids.len() * self.k);
        for &id in ids {
            let r = (id as usize).min(self.n.saturating_sub(1));
            for b in 0..kb {
                let d = self.scales[r * kb + b];
                out.extend(
                    self.qs[r * self.k + b * QK..r * self.k + (b + 1) * QK]
                        .iter()
                        .map(|&q| q as f32 * d),
                );
            }
        }
        out
    }

    /// `x [m, k]` (row-major f32) times this matrix transposed: `[m, n]`.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        self.matmul_with(x, m, has_vnni())
    }

    /// [`Self::matmul`] with the kernel chosen (`vnni` needs the CPU feature).
    fn matmul_with(&self, x: &[f32], m: usize, vnni: bool) -> Vec<f32> {
        assert_eq!(x.len(), m * self.k, "activation shape");
        let kb = self.k / QK;
        let (aq, ad) = quantize_rows(x, m, self.k);
        // The VNNI kernel takes activations as unsigned bytes.
        let au: Vec<i8> = if vnni {
            aq.iter().map(|&q| ((q as u8) ^ 0x80) as i8).collect()
        } else {
            Vec::new()
        };
        let mut out = vec![0f32; m * self.n];
        let n = self.n;
        let k = self.k;
        let out_ptr = out.as_mut_ptr() as usize;
        let (kernel, acts): (RowsKernel, &[i8]) = if vnni {
            (vnni_rows, &au)
        } else {
            (dot_rows, &aq)
        };
        const COLS: usize = 16;
        let task = |range: std::ops::Range<usize>| {
            let mut col = [0f32; 8];
            for c in range {
                // Rows outer, columns inner: eight activation rows and the
                // chunk's weight rows both stay in L1 (a prompt of hundreds
                // of rows would otherwise stream through per weight row).
                let mut r0 = 0;
                while r0 < m {
                    let rows = (m - r0).min(8);
                    for j in c * COLS..((c + 1) * COLS).min(n) {
                        let w = (
                            &self.qs[j * k..(j + 1) * k],
                            &self.scales[j * kb..(j + 1) * kb],
                            &self.corr[j * kb..(j + 1) * kb],
                        );
                        kernel(w, &acts[r0 * k..], &ad[r0 * kb..], k, &mut col[..rows]);
                        for (i, &v) in col[..rows].iter().enumerate() {
                            // SAFETY: element (r0 + i, j) is written by this column's task only.
                            unsafe { *(out_ptr as *mut f32).add((r0 + i) * n + j) = v };
                        }
                    }
                    r0 += rows;
                }
            }
        };
        // candle's barrier pool: its elementwise ops run there, and for the
        // summarizer (every linear layer in Q8) one pool avoids two sets of
        // threads fighting for the same cores.
        candle_core::utils::barrier_pool().execute_chunked(n.div_ceil(COLS), task);
        out
    }
}

/// ggml's `quantize_row_q8_0`: per block d = amax/127 (stored as f16),
/// q = round(x / d).
fn quantize_rows(x: &[f32], m: usize, k: usize) -> (Vec<i8>, Vec<f32>) {
    let mut q = vec![0i8; m * k];
    let mut d = Vec::with_capacity(m * k / QK);
    for (xb, qb) in x.chunks_exact(QK).zip(q.chunks_exact_mut(QK)) {
        let amax = xb.iter().fold(0f32, |a, &v| a.max(v.abs()));
        let dv = amax / 127.0;
        let id = if dv != 0.0 { 1.0 / dv } else { 0.0 };
        for (o, &v) in qb.iter_mut().zip(xb) {
            *o = (v * id).round() as i8;
        }
        d.push(f16::from_f32(dv).to_f32());
    }
    (q, d)
}

/// One weight row (values, scales, VNNI corrections) against `out.len()`
/// activation rows.
type RowsKernel = fn((&[i8], &[f32], &[i32]), &[i8], &[f32], usize, &mut [f32]);

/// Dot products of one weight row with `out.len()` activation rows (AVX2).
fn dot_rows(
    (wq, wd, wc): (&[i8], &[f32], &[i32]),
    aq: &[i8],
    ad: &[f32],
    k: usize,
    out: &mut [f32],
) {
    let rows = out.len();
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2() {
            // SAFETY: AVX2 and FMA were detected at run time.
            unsafe {
                match rows {
                    0 => {}
                    8 => avx2::dot::<8>(wq, wd, aq, ad, k, out),
                    4..=7 => {
                        avx2::dot::<4>(wq, wd, aq, ad, k, &mut out[..4]);
                        let rest = &mut out[4..];
                        dot_rows((wq, wd, wc), &aq[4 * k..], &ad[4 * k / QK..], k, rest);
                    }
                    2 | 3 => {
                        avx2::dot::<2>(wq, wd, aq, ad, k, &mut out[..2]);
                        if rows == 3 {
                            avx2::dot::<1>(
                                wq,
                                wd,
                                &aq[2 * k..],
                                &ad[2 * k / QK..],
                                k,
                                &mut out[2..3],
                            );
                        }
                    }
                    _ => avx2::dot::<1>(wq, wd, aq, ad, k, out),
                }
            }
            return;
        }
    }
    let kb = k / QK;
    for r in 0..rows {
        let mut s = 0f32;
        for b in 0..kb {
            let mut si = 0i32;
            for i in 0..QK {
                si += wq[b * QK + i] as i32 * aq[r * k + b * QK + i] as i32;
            }
            s += si as f32 * wd[b] * ad[r * kb + b];
        }
        out[r] = s;
    }
}

/// Dot products with AVX-512 VNNI on 256-bit registers (no 512-bit
/// frequency penalty): one `vpdpbusd` replaces sign/maddubs/madd.
fn vnni_rows(
    (wq, wd, wc): (&[i8], &[f32], &[i32]),
    au: &[i8],
    ad: &[f32],
    k: usize,
    out: &mut [f32],
) {
    let rows = out.len();
    #[cfg(target_arch = "x86_64")]
    {
        let kb = k / QK;
        let mut r0 = 0;
        while r0 < rows {
            let n = rows - r0;
            let (a, d, o) = (&au[r0 * k..], &ad[r0 * kb..], &mut out[r0..]);
            // SAFETY: VNNI support was detected at run time (has_vnni).
            unsafe {
                let step = match n {
                    8.. => {
                        vnni::dot::<8>(wq, wd, wc, a, d, k, o);
                        8
                    }
                    4..=7 => {
                        vnni::dot::<4>(wq, wd, wc, a, d, k, o);
                        4
                    }
                    2 | 3 => {
                        vnni::dot::<2>(wq, wd, wc, a, d, k, o);
                        2
                    }
                    _ => {
                        vnni::dot::<1>(wq, wd, wc, a, d, k, o);
                        1
                    }
                };
                r0 += step;
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (wq, wd, wc, au, ad, k, rows, out);
        unreachable!("has_vnni is false off x86_64")
    }
}

fn has_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| {
            std::env::var_os("EARSHOT_NO_VNNI").is_none()
                && is_x86_feature_detected!("avx512vnni")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("fma")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)] // `R` accumulators kept in registers
mod vnni {
    use std::arch::x86_64::*;

    use super::QK;

    /// `R` rows of unsigned activations against one weight row. Each
    /// block's correction (`-128 Σw`) seeds lane 0 of its accumulator, so
    /// the lane sum is the signed dot product.
    #[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512vnni")]
    pub(super) unsafe fn dot<const R: usize>(
        wq: &[i8],
        wd: &[f32],
        wc: &[i32],
        au: &[i8],
        ad: &[f32],
        k: usize,
        out: &mut [f32],
    ) {
        let kb = k / QK;
        let mut acc = [_mm256_setzero_ps(); R];
        for b in 0..kb {
            let w = _mm256_loadu_si256(wq.as_ptr().add(b * QK) as *const __m256i);
            let c = _mm256_setr_epi32(*wc.get_unchecked(b), 0, 0, 0, 0, 0, 0, 0);
            let dw = _mm256_set1_ps(*wd.get_unchecked(b));
            for r in 0..R {
                let a = _mm256_loadu_si256(au.as_ptr().add(r * k + b * QK) as *const __m256i);
                let p = _mm256_dpbusd_epi32(c, a, w);
                let d = _mm256_mul_ps(dw, _mm256_broadcast_ss(ad.get_unchecked(r * kb + b)));
                acc[r] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc[r]);
            }
        }
        for r in 0..R {
            let v = acc[r];
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
            out[r] = _mm_cvtss_f32(s);
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)] // `R` accumulators kept in registers
mod avx2 {
    use std::arch::x86_64::*;

    use super::QK;

    /// `R` activation rows against one weight row, the weight block loaded once.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot<const R: usize>(
        wq: &[i8],
        wd: &[f32],
        aq: &[i8],
        ad: &[f32],
        k: usize,
        out: &mut [f32],
    ) {
        let kb = k / QK;
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); R];
        for b in 0..kb {
            let w = _mm256_loadu_si256(wq.as_ptr().add(b * QK) as *const __m256i);
            // maddubs multiplies unsigned by signed bytes: move w's sign onto a.
            let wabs = _mm256_sign_epi8(w, w);
            let dw = *wd.get_unchecked(b);
            for r in 0..R {
                let a = _mm256_loadu_si256(aq.as_ptr().add(r * k + b * QK) as *const __m256i);
                let sa = _mm256_sign_epi8(a, w);
                let p16 = _mm256_maddubs_epi16(wabs, sa);
                let p32 = _mm256_madd_epi16(p16, ones);
                let d = _mm256_set1_ps(dw * *ad.get_unchecked(r * kb + b));
                acc[r] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p32), acc[r]);
            }
        }
        for r in 0..R {
            let v = acc[r];
            let lo = _mm256_castps256_ps128(v);
            let hi = _mm256_extractf128_ps(v, 1);
            let s = _mm_add_ps(lo, hi);
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
            out[r] = _mm_cvtss_f32(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Module, Tensor};

    #[test]
    fn quantize_matches_ggml_and_stays_close_to_f32() {
        let (n, k) = (40, 96);
        let w: Vec<f32> = (0..n * k)
            .map(|i| (i * 7919 % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let wt = Tensor::from_vec(w.clone(), (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&wt, GgmlDType::Q8_0).unwrap();
        let theirs = Q8Matrix::from_q8_0_bytes(&q.data().unwrap(), n, k).unwrap();
        let mine = Q8Matrix::quantize(&w, n, k).unwrap();
        assert_eq!(mine.qs, theirs.qs);
        assert_eq!(mine.scales, theirs.scales);
        // Against the f32 product: within int8 rounding.
        let x: Vec<f32> = (0..3 * k).map(|i| (i % 17) as f32 / 8.0 - 1.0).collect();
        let got = mine.matmul(&x, 3);
        for r in 0..3 {
            for j in 0..n {
                let want: f32 = (0..k).map(|i| x[r * k + i] * w[j * k + i]).sum();
                assert!((got[r * n + j] - want).abs() < 0.05 * (1.0 + want.abs()));
            }
        }
        assert!(Q8Matrix::quantize(&w, n, k + 1).is_none());
        assert!(Q8Matrix::quantize(&w[..n * 40], n, 40).is_none());
    }

    #[test]
    fn matches_candle_q8_0_for_every_row_count() {
        for k in [96, 128] {
            check(70, k);
        }
    }

    fn check(n: usize, k: usize) {
        let w: Vec<f32> = (0..n * k)
            .map(|i| (i * 7919 % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let wt = Tensor::from_vec(w, (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&wt, GgmlDType::Q8_0).unwrap();
        let mine = Q8Matrix::from_q8_0_bytes(&q.data().unwrap(), n, k).unwrap();
        let qm = candle_core::quantized::QMatMul::from_qtensor(q).unwrap();
        for m in 1..=11 {
            let x: Vec<f32> = (0..m * k)
                .map(|i| (i * 31 % 97) as f32 / 40.0 - 1.2)
                .collect();
            // Both kernels where the CPU has VNNI, else AVX2 (or scalar) only.
            let mut kernels = vec![false];
            if has_vnni() {
                kernels.push(true);
            }
            let got: Vec<Vec<f32>> = kernels
                .iter()
                .map(|&v| mine.matmul_with(&x, m, v))
                .collect();
            let xt = Tensor::from_vec(x, (m, k), &Device::Cpu).unwrap();
            let want = qm
                .forward(&xt)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            for (g, w) in got.iter().flatten().zip(want.iter().cycle()) {
                assert!(
                    (g - w).abs() <= 1e-3 * (1.0 + w.abs()),
                    "k={k} m={m}: {g} vs {w}"
                );
            }
        }
    }
}
