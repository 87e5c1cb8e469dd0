//! CTranslate2's int8 linear layer on the CPU, for Whisper's
//! `--compute-type int8`.
//!
//! faster-whisper's int8 scales each weight row by `127 / max|w|` once, each
//! activation row the same way at every call, multiplies the integers with
//! exact 32-bit sums and scales back. ggml's Q8_0 (`q8.rs`, 32-value blocks,
//! f16 scales) rounds differently, and on the fixture clips that alone put
//! earshot's int8 transcripts 3.3% of words away from faster-whisper's.
//! Here every rounding step is CTranslate2's (its `quantize_s8` with the
//! unsigned shift its MKL/oneDNN int8 GEMM uses, and its dequantize
//! epilogue), so a layer returns faster-whisper's int8 output to the bit
//! whenever it gets the same input.
//!
//! A whole row sums in integers, so the inner loop is one `vpdpbusd` (64
//! products) per weight register with no per-block rescaling: that is what
//! lets the encoder's 1500-row products run in int8, where Q8_0 lost to
//! f32 gemm. The kernel is a 6-row by 64-column register tile over weights
//! packed 16 columns × 4 depths per register. CPUs with AVX2 but not
//! AVX-512 VNNI (AMD's EPYC before Zen 4, Intel before Cascade Lake) take a
//! 6-row × 16-column `vpmaddwd` tile over weights widened to 16 bits at
//! load: `vpmaddubsw`, the usual AVX2 int8 product, saturates its 16-bit
//! pair sums (255 · 127 · 2 > 32767) and would round differently from the
//! VNNI path, while widened pairs sum exactly in 32 bits. Other CPUs take
//! a portable loop; all three give the same integers. (The portable loop
//! was ~72% of a batched int8 run on a 2-core EPYC, 2× slower than f32.)

use rayon::prelude::*;

/// Output columns per register tile (four 16-lane registers).
const NR: usize = 64;
/// Activation rows per register tile (6 × 4 accumulators + 4 weights + 1
/// broadcast fit AVX-512's 32 registers).
const MR: usize = 6;
/// Activation rows per parallel task: 8 tiles, ~72 KB of a 1536-wide row
/// block, reused against every weight column group while it sits in L2.
const MC: usize = 8 * MR;
/// Products (rows × columns × depth) below which one thread does the whole
/// matrix product.
const SERIAL_BELOW: usize = 1 << 21;

/// A weight matrix `[n, k]` quantized per output row, with its bias.
#[derive(Debug)]
pub struct I8Matrix {
    pub n: usize,
    pub k: usize,
    /// `k` rounded up to a multiple of 4 (one `vpdpbusd` lane's depth).
    kp: usize,
    /// Per row, CTranslate2's `weight_scale`: `127 / max|w|` (1 for a zero
    /// row). Padded to a multiple of [`NR`] with 1.
    scales: Vec<f32>,
    /// Per row `-128 Σ q`: activations travel as `q + 128` (unsigned bytes,
    /// what `vpdpbusd` multiplies), and this takes the shift back off.
    /// Padded like `scales`.
    corr: Vec<i32>,
    /// Padded like `scales` (zeros), or empty for no bias.
    bias: Vec<f32>,
    /// Row-major `[n, kp]` values for the portable kernel and [`Self::rows`].
    qs: Vec<i8>,
    /// For the VNNI kernel: panels of 16 rows, each `[kp / 4][16][4]`.
    packed: Vec<i8>,
    /// For the AVX2 kernel (built only without VNNI): panels of 8 rows,
    /// each `[kp / 2][8][2]`, widened to 16 bits.
    packed16: Vec<i16>,
}

/// Which tile kernel a product runs on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kernel {
    Portable,
    Avx2,
    Vnni,
}

impl I8Matrix {
    /// Quantizes `w` (`[n, k]`, row-major) as CTranslate2 quantizes a float
    /// weight at load: per row `s = 127 / max|w|`, `q = round(w · s)`, ties
    /// to even. `None` when the shapes disagree.
    pub fn quantize(w: &[f32], n: usize, k: usize, bias: Option<&[f32]>) -> Option<Self> {
        if k == 0 || w.len() != n * k || bias.is_some_and(|b| b.len() != n) {
            return None;
        }
        let kp = k.next_multiple_of(4);
        let np = n.next_multiple_of(NR);
        let mut qs = vec![0i8; n * kp];
        let mut scales = vec![1f32; np];
        let mut corr = vec![0i32; np];
        // Rows in parallel: the logits matrix alone is 20M values, and this
        // runs at every model load.
        qs.par_chunks_mut(kp)
            .zip(scales.par_iter_mut().zip(corr.par_iter_mut()))
            .zip(w.par_chunks(k))
            .for_each(|((q, (scale, corr)), row)| {
                (*scale, *corr) = quantize_weight_row_dispatch(row, q);
            });
        let mut b = Vec::new();
        if let Some(bias) = bias {
            b = vec![0f32; np];
            b[..n].copy_from_slice(bias);
        }
        let (packed, packed16) = if has_vnni() {
            (pack(&qs, n, kp), Vec::new())
        } else if has_avx2() {
            (Vec::new(), pack16(&qs, n, kp))
        } else {
            (Vec::new(), Vec::new())
        };
        Some(Self {
            n,
            k,
            kp,
            scales,
            corr,
            bias: b,
            qs,
            packed,
            packed16,
        })
    }

    /// Dequantized rows (an embedding lookup), `[ids.len(), k]` flattened:
    /// `q · (1 / s)`, CTranslate2's `Dequantize`.
    pub fn rows(&self, ids: &[u32]) -> Vec<f32> {
        let mut out = vec![0f32; ids.len() * self.k];
        out.par_chunks_mut(self.k.max(1))
            .zip(ids.par_iter())
            .for_each(|(o, &id)| {
                let r = (id as usize).min(self.n.saturating_sub(1));
                let inv = 1.0 / self.scales[r];
                let q = &self.qs[r * self.kp..r * self.kp + self.k];
                for (o, &v) in o.iter_mut().zip(q) {
                    *o = v as f32 * inv;
                }
            });
        out
    }

    /// `x [m, k]` (row-major f32) times this matrix transposed, plus the
    /// bias: `[m, n]`.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        let kernel = if !self.packed.is_empty() {
            Kernel::Vnni
        } else if !self.packed16.is_empty() {
            Kernel::Avx2
        } else {
            Kernel::Portable
        };
        self.matmul_with(x, m, kernel)
    }

    fn matmul_with(&self, x: &[f32], m: usize, kernel: Kernel) -> Vec<f32> {
        assert_eq!(x.len(), m * self.k, "activation shape");
        let (a, ra) = quantize_activations(x, m, self.k, self.kp);
        if m == 0 || self.n == 0 {
            return vec![0f32; m * self.n];
        }
        // The AVX2 kernel broadcasts 16-bit pairs of activations.
        let a16: Vec<i16> = if kernel == Kernel::Avx2 {
            a.iter().map(|&v| v as i16).collect()
        } else {
            Vec::new()
        };
        // Every element is written below (the tiles cover all rows and
        // columns), so the output is not zeroed first: for the encoder's
        // products that was a pass over fresh pages as long as the product.
        let mut out: Vec<f32> = Vec::with_capacity(m * self.n);
        let out_ptr = SendPtr(out.as_mut_ptr());
        let groups = self.n.div_ceil(NR);
        let m_chunks = m.div_ceil(MC);
        // Enough tasks to keep every thread busy when the rows are few (a
        // decode step), whole weight sweeps per row block when they are many.
        let threads = rayon::current_num_threads().max(1);
        let per = (groups * m_chunks / (8 * threads)).clamp(1, groups);
        let n_chunks = groups.div_ceil(per);
        let task = |t: usize| {
            let (mc, nc) = (t / n_chunks, t % n_chunks);
            let rows = mc * MC..((mc + 1) * MC).min(m);
            let cols = nc * per..((nc + 1) * per).min(groups);
            let out = out_ptr;
            for g in cols {
                let c0 = g * NR;
                let width = (self.n - c0).min(NR);
                let mut r0 = rows.start;
                while r0 < rows.end {
                    let h = (rows.end - r0).min(MR);
                    // SAFETY: this task alone writes rows `rows` × columns
                    // `c0..c0 + width` of `out`, which is `m × n`.
                    unsafe {
                        let o = out.0.add(r0 * self.n + c0);
                        if kernel == Kernel::Vnni {
                            self.tile_vnni(&a[r0 * self.kp..], &ra[r0..r0 + h], g, o, width);
                        } else if kernel == Kernel::Avx2 {
                            self.tile_avx2(&a16[r0 * self.kp..], &ra[r0..r0 + h], c0, o, width);
                        } else {
                            self.tile_portable(&a[r0 * self.kp..], &ra[r0..r0 + h], c0, o, width);
                        }
                    }
                    r0 += h;
                }
            }
        };
        // A decode step's smaller products (8 rows × 384 × 384 is ~1.2M
        // products, ~20 µs here) finish before a rayon hand-off would pay
        // for itself; the logits and every encoder product go parallel.
        if m * self.n * self.kp < SERIAL_BELOW {
            (0..m_chunks * n_chunks).for_each(task);
        } else {
            (0..m_chunks * n_chunks).into_par_iter().for_each(task);
        }
        // SAFETY: all `m * n` elements were initialised by the tiles.
        unsafe { out.set_len(m * self.n) };
        out
    }

    /// The `ra.len()` rows at `a` against column group `g`.
    ///
    /// # Safety
    /// `out` must be writable for `ra.len()` rows of stride `n` and `width`
    /// columns; the CPU must have AVX-512 VNNI (`packed` is only built then).
    unsafe fn tile_vnni(&self, a: &[u8], ra: &[f32], g: usize, out: *mut f32, width: usize) {
        #[cfg(target_arch = "x86_64")]
        {
            let t = vnni::Tile {
                a: a.as_ptr(),
                kp: self.kp,
                w: self.packed.as_ptr().add(g * NR * self.kp),
                corr: self.corr.as_ptr().add(g * NR),
                scale: self.scales.as_ptr().add(g * NR),
                bias: if self.bias.is_empty() {
                    std::ptr::null()
                } else {
                    self.bias.as_ptr().add(g * NR)
                },
                ra: ra.as_ptr(),
                out,
                ldo: self.n,
                width,
            };
            match ra.len() {
                6 => vnni::tile::<6>(&t),
                5 => vnni::tile::<5>(&t),
                4 => vnni::tile::<4>(&t),
                3 => vnni::tile::<3>(&t),
                2 => vnni::tile::<2>(&t),
                _ => vnni::tile::<1>(&t),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (a, ra, g, out, width);
            unreachable!("no VNNI packing off x86_64")
        }
    }

    /// The tile on AVX2: 16 columns (two 8-row panels of `packed16`) at a
    /// time.
    ///
    /// # Safety
    /// As [`Self::tile_vnni`]; the CPU must have AVX2 (`packed16` is only
    /// built then).
    unsafe fn tile_avx2(&self, a: &[i16], ra: &[f32], c0: usize, out: *mut f32, width: usize) {
        #[cfg(target_arch = "x86_64")]
        {
            let mut j = 0;
            while j < width {
                let t = avx2::Tile {
                    a: a.as_ptr(),
                    kp: self.kp,
                    w: self.packed16.as_ptr().add((c0 + j) * self.kp),
                    corr: self.corr.as_ptr().add(c0 + j),
                    scale: self.scales.as_ptr().add(c0 + j),
                    bias: if self.bias.is_empty() {
                        std::ptr::null()
                    } else {
                        self.bias.as_ptr().add(c0 + j)
                    },
                    ra: ra.as_ptr(),
                    out: out.add(j),
                    ldo: self.n,
                    width: (width - j).min(16),
                };
                match ra.len() {
                    6 => avx2::tile::<6>(&t),
                    5 => avx2::tile::<5>(&t),
                    4 => avx2::tile::<4>(&t),
                    3 => avx2::tile::<3>(&t),
                    2 => avx2::tile::<2>(&t),
                    _ => avx2::tile::<1>(&t),
                }
                j += 16;
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (a, ra, c0, out, width);
            unreachable!("no AVX2 packing off x86_64")
        }
    }

    /// The same tile in plain Rust (any CPU), identical integers.
    ///
    /// # Safety
    /// As [`Self::tile_vnni`], less the CPU feature.
    unsafe fn tile_portable(&self, a: &[u8], ra: &[f32], c0: usize, out: *mut f32, width: usize) {
        for (r, &rar) in ra.iter().enumerate() {
            let ar = &a[r * self.kp..(r + 1) * self.kp];
            for j in 0..width {
                let col = c0 + j;
                let w = &self.qs[col * self.kp..(col + 1) * self.kp];
                let dot: i32 = ar
                    .iter()
                    .zip(w)
                    .map(|(&x, &w)| x as i32 * w as i32)
                    .sum::<i32>()
                    + self.corr[col];
                let mut v = dot as f32 * rar / self.scales[col];
                if !self.bias.is_empty() {
                    v += self.bias[col];
                }
                *out.add(r * self.n + j) = v;
            }
        }
    }
}

/// One register tile's operands, for either SIMD kernel: activations `A`
/// (bytes for VNNI, 16-bit for AVX2) `kp` apart per row, weights `W` from
/// the tile's first panel, and the epilogue's per-column and per-row
/// factors.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct Tile<A, W> {
    a: *const A,
    kp: usize,
    w: *const W,
    corr: *const i32,
    scale: *const f32,
    /// Null for no bias.
    bias: *const f32,
    ra: *const f32,
    out: *mut f32,
    ldo: usize,
    /// Columns to write (up to the kernel's tile width).
    width: usize,
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: tasks write disjoint tiles (see `matmul_with`).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// CTranslate2's `quantize_s8` with `shift_to_uint8`: per row
/// `s = 127 / max|x|` (1 for a zero row), byte `round(x · s + 128)`, ties
/// to even; returns the bytes (`[m, kp]`, padding `128`, i.e. zero) and
/// each row's `1 / s` as its dequantize step computes it.
fn quantize_activations(x: &[f32], m: usize, k: usize, kp: usize) -> (Vec<u8>, Vec<f32>) {
    let mut a = Vec::with_capacity(m * kp);
    let mut ra = Vec::with_capacity(m);
    for row in x.chunks_exact(k) {
        #[cfg(target_arch = "x86_64")]
        if has_avx512() {
            // SAFETY: AVX-512F was detected at run time.
            ra.push(unsafe { quantize_row_avx512(row, &mut a) });
            a.extend(std::iter::repeat_n(128u8, kp - k));
            continue;
        }
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: AVX2 was detected at run time.
            ra.push(unsafe { quantize_row_avx2(row, &mut a) });
            a.extend(std::iter::repeat_n(128u8, kp - k));
            continue;
        }
        ra.push(quantize_row(row, &mut a));
        a.extend(std::iter::repeat_n(128u8, kp - k));
    }
    (a, ra)
}

/// One weight row's int8 values into `q`; returns its scale and the
/// zero-point correction (`-128 · Σ q`).
#[inline(always)]
fn quantize_weight_row(row: &[f32], q: &mut [i8]) -> (f32, i32) {
    let amax = row.iter().fold(0f32, |a, &v| a.max(v.abs()));
    let s = if amax != 0.0 { 127.0 / amax } else { 1.0 };
    for (o, &v) in q.iter_mut().zip(row) {
        *o = (v * s).round_ties_even().clamp(-127.0, 127.0) as i8;
    }
    (s, -128 * q.iter().map(|&x| x as i32).sum::<i32>())
}

/// [`quantize_weight_row`] compiled for AVX2 where the CPU has it: without
/// it every value's rounding is a `rintf` call, a fifth of an int8 model
/// load in a profile. Same results either way.
fn quantize_weight_row_dispatch(row: &[f32], q: &mut [i8]) -> (f32, i32) {
    /// # Safety
    /// The CPU must support AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn avx2(row: &[f32], q: &mut [i8]) -> (f32, i32) {
        quantize_weight_row(row, q)
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the feature was detected at run time.
        return unsafe { avx2(row, q) };
    }
    quantize_weight_row(row, q)
}

/// [`quantize_row`] compiled for AVX-512 (the rounding becomes one
/// instruction instead of a call per value; same results).
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn quantize_row_avx512(row: &[f32], a: &mut Vec<u8>) -> f32 {
    quantize_row(row, a)
}

/// [`quantize_row`] compiled for AVX2 (`vroundps` instead of a `rintf`
/// call per value; same results).
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_row_avx2(row: &[f32], a: &mut Vec<u8>) -> f32 {
    quantize_row(row, a)
}

/// Appends one row's bytes to `a`; returns `1 / s`.
#[inline(always)]
fn quantize_row(row: &[f32], a: &mut Vec<u8>) -> f32 {
    let mut lanes = [0f32; 16];
    let chunks = row.chunks_exact(16);
    let mut amax = chunks.remainder().iter().fold(0f32, |m, &v| m.max(v.abs()));
    for c in chunks {
        for l in 0..16 {
            let v = c[l].abs();
            lanes[l] = if v > lanes[l] { v } else { lanes[l] };
        }
    }
    amax = lanes.iter().copied().fold(amax, f32::max);
    let s = if amax != 0.0 { 127.0 / amax } else { 1.0 };
    a.extend(
        row.iter()
            .map(|&v| (v * s + 128.0).round_ties_even().clamp(0.0, 255.0) as u8),
    );
    1.0 / s
}

#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx512f"))
}

/// Rows of `qs` (`[n, kp]`) into VNNI panels: 16 rows per panel, each
/// 64-byte step holding 4 depths of those 16 rows; rows up to a multiple
/// of [`NR`] are zero.
fn pack(qs: &[i8], n: usize, kp: usize) -> Vec<i8> {
    let np = n.next_multiple_of(NR);
    let mut p = vec![0i8; np * kp];
    p.par_chunks_mut(16 * kp)
        .enumerate()
        .for_each(|(panel, dst)| {
            for lane in 0..16 {
                let r = panel * 16 + lane;
                if r >= n {
                    break;
                }
                for k4 in 0..kp / 4 {
                    let d = k4 * 64 + lane * 4;
                    dst[d..d + 4].copy_from_slice(&qs[r * kp + k4 * 4..r * kp + k4 * 4 + 4]);
                }
            }
        });
    p
}

/// Rows of `qs` (`[n, kp]`) into AVX2 panels, widened to 16 bits: 8 rows
/// per panel, each 32-byte step holding 2 depths of those 8 rows; rows up
/// to a multiple of [`NR`] are zero.
fn pack16(qs: &[i8], n: usize, kp: usize) -> Vec<i16> {
    let np = n.next_multiple_of(NR);
    let mut p = vec![0i16; np * kp];
    p.par_chunks_mut(8 * kp)
        .enumerate()
        .for_each(|(panel, dst)| {
            for lane in 0..8 {
                let r = panel * 8 + lane;
                if r >= n {
                    break;
                }
                for k2 in 0..kp / 2 {
                    let d = k2 * 16 + lane * 2;
                    dst[d] = qs[r * kp + 2 * k2] as i16;
                    dst[d + 1] = qs[r * kp + 2 * k2 + 1] as i16;
                }
            }
        });
    p
}

fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| {
            std::env::var_os("EARSHOT_NO_AVX2").is_none() && is_x86_feature_detected!("avx2")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

fn has_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| {
            std::env::var_os("EARSHOT_NO_VNNI").is_none()
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vnni")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)] // `R` × 4 accumulators kept in registers
mod vnni {
    use std::arch::x86_64::*;

    pub(super) type Tile = super::Tile<u8, i8>;

    /// `R` activation rows × 64 columns, summed over the whole depth in
    /// 32-bit integers, then CTranslate2's dequantize:
    /// `(c · (1 / s_a)) / s_w + bias`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn tile<const R: usize>(t: &Tile) {
        let mut acc = [[_mm512_setzero_si512(); 4]; R];
        let ps = 16 * t.kp;
        for k4 in 0..t.kp / 4 {
            let w = t.w.add(k4 * 64);
            let w0 = _mm512_loadu_si512(w as *const _);
            let w1 = _mm512_loadu_si512(w.add(ps) as *const _);
            let w2 = _mm512_loadu_si512(w.add(2 * ps) as *const _);
            let w3 = _mm512_loadu_si512(w.add(3 * ps) as *const _);
            for r in 0..R {
                let x = (t.a.add(r * t.kp + 4 * k4) as *const i32).read_unaligned();
                let av = _mm512_set1_epi32(x);
                acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], av, w0);
                acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], av, w1);
                acc[r][2] = _mm512_dpbusd_epi32(acc[r][2], av, w2);
                acc[r][3] = _mm512_dpbusd_epi32(acc[r][3], av, w3);
            }
        }
        for r in 0..R {
            let ra = _mm512_set1_ps(*t.ra.add(r));
            for v in 0..4 {
                let col = v * 16;
                if col >= t.width {
                    break;
                }
                let c =
                    _mm512_add_epi32(acc[r][v], _mm512_loadu_si512(t.corr.add(col) as *const _));
                let mut f = _mm512_mul_ps(_mm512_cvtepi32_ps(c), ra);
                f = _mm512_div_ps(f, _mm512_loadu_ps(t.scale.add(col)));
                if !t.bias.is_null() {
                    f = _mm512_add_ps(f, _mm512_loadu_ps(t.bias.add(col)));
                }
                let dst = t.out.add(r * t.ldo + col);
                let rem = t.width - col;
                if rem >= 16 {
                    _mm512_storeu_ps(dst, f);
                } else {
                    _mm512_mask_storeu_ps(dst, ((1u32 << rem) - 1) as u16, f);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)] // `R` × 2 accumulators kept in registers
mod avx2 {
    use std::arch::x86_64::*;

    pub(super) type Tile = super::Tile<i16, i16>;

    /// `R` activation rows × 16 columns: per depth pair one broadcast
    /// activation pair against 8 columns' weight pairs (`vpmaddwd`, exact
    /// in 32 bits), then the same dequantize as the VNNI tile.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn tile<const R: usize>(t: &Tile) {
        let mut acc = [[_mm256_setzero_si256(); 2]; R];
        let ps = 8 * t.kp;
        for k2 in 0..t.kp / 2 {
            let w = t.w.add(k2 * 16);
            let w0 = _mm256_loadu_si256(w as *const _);
            let w1 = _mm256_loadu_si256(w.add(ps) as *const _);
            for r in 0..R {
                let x = (t.a.add(r * t.kp + 2 * k2) as *const i32).read_unaligned();
                let av = _mm256_set1_epi32(x);
                acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(av, w0));
                acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(av, w1));
            }
        }
        for r in 0..R {
            let ra = _mm256_set1_ps(*t.ra.add(r));
            for v in 0..2 {
                let col = v * 8;
                if col >= t.width {
                    break;
                }
                let c =
                    _mm256_add_epi32(acc[r][v], _mm256_loadu_si256(t.corr.add(col) as *const _));
                let mut f = _mm256_mul_ps(_mm256_cvtepi32_ps(c), ra);
                f = _mm256_div_ps(f, _mm256_loadu_ps(t.scale.add(col)));
                if !t.bias.is_null() {
                    f = _mm256_add_ps(f, _mm256_loadu_ps(t.bias.add(col)));
                }
                let dst = t.out.add(r * t.ldo + col);
                let rem = t.width - col;
                if rem >= 8 {
                    _mm256_storeu_ps(dst, f);
                } else {
                    let mut buf = [0f32; 8];
                    _mm256_storeu_ps(buf.as_mut_ptr(), f);
                    std::ptr::copy_nonoverlapping(buf.as_ptr(), dst, rem);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut s = seed;
        (0..len)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
            })
            .collect()
    }

    #[test]
    fn quantization_is_ctranslate2s() {
        // Row max 127 → s = 1; 2.5 ties to 2, -3.5 to -4.
        let w = [127f32, 2.5, -3.5, 0.0, 0.0, 0.0, 0.0, 0.0];
        let m = I8Matrix::quantize(&w, 2, 4, None).unwrap();
        assert_eq!(m.scales[0], 1.0);
        assert_eq!(&m.qs[..4], &[127, 2, -4, 0]);
        // A zero row keeps scale 1 and zero values, as CTranslate2's does.
        assert_eq!(m.scales[1], 1.0);
        assert_eq!(&m.qs[4..8], &[0, 0, 0, 0]);
        assert_eq!(m.corr[0], -128 * (127 + 2 - 4));
        // Activations: bytes are round(x·s + 128); s = 63.5 here, so -1
        // lands on 64.5 (ties down to 64) and 1 on 191.5 (up to 192).
        let (a, ra) = quantize_activations(&[2.0, -1.0, 1.0, 0.0], 1, 4, 4);
        assert_eq!(a, vec![255, 64, 192, 128]);
        assert_eq!(ra, vec![1.0 / 63.5]);
        assert!(I8Matrix::quantize(&w, 3, 4, None).is_none());
        assert!(I8Matrix::quantize(&w, 2, 4, Some(&[0.0])).is_none());
    }

    #[test]
    fn every_kernel_gives_the_same_bits_and_stays_close_to_f32() {
        // Odd widths exercise the depth padding, odd row counts every tile
        // height, odd column counts the masked stores.
        for &(m, n, k) in &[
            (1, 1, 4),
            (3, 17, 7),
            (7, 64, 64),
            (13, 100, 384),
            (50, 130, 96),
            (2, 385, 40),
        ] {
            let w = data(n * k, (m * 31 + n * 7 + k) as u64, 0.2);
            let x = data(m * k, (m + n + k) as u64, 3.0);
            let bias = data(n, 5, 1.0);
            for b in [None, Some(bias.as_slice())] {
                let mut q = I8Matrix::quantize(&w, n, k, b).unwrap();
                // Test the AVX2 kernel on VNNI machines too.
                if has_avx2() && q.packed16.is_empty() {
                    q.packed16 = pack16(&q.qs, n, q.kp);
                }
                let portable = q.matmul_with(&x, m, Kernel::Portable);
                // Only the kernel this CPU packed for can run.
                let fast = [
                    (Kernel::Vnni, !q.packed.is_empty()),
                    (Kernel::Avx2, !q.packed16.is_empty()),
                ];
                for (kernel, _) in fast.into_iter().filter(|f| f.1) {
                    let got = q.matmul_with(&x, m, kernel);
                    assert_eq!(
                        got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        portable.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        "{kernel:?} m={m} n={n} k={k}"
                    );
                }
                for i in 0..m {
                    for j in 0..n {
                        let mut exact: f32 = (0..k).map(|t| x[i * k + t] * w[j * k + t]).sum();
                        if let Some(b) = b {
                            exact += b[j];
                        }
                        let xmax = x[i * k..(i + 1) * k]
                            .iter()
                            .fold(0f32, |a, v| a.max(v.abs()));
                        let wmax = w[j * k..(j + 1) * k]
                            .iter()
                            .fold(0f32, |a, v| a.max(v.abs()));
                        // Each product is off by at most half a step of either factor.
                        let bound = k as f32 * xmax * wmax / 127.0 + 1e-5;
                        let got = portable[i * n + j];
                        assert!(
                            (got - exact).abs() <= bound,
                            "{got} vs {exact} (m={m} n={n} k={k})"
                        );
                    }
                }
            }
        }
    }

    /// The weight quantizer's AVX2 build rounds like the baseline one, ties
    /// included (values landing on .5 after scaling).
    #[test]
    fn weight_quantizer_builds_agree() {
        let mut row: Vec<f32> = data(1000, 3, 2.0);
        // amax 127 makes s = 1, so these land exactly on halves.
        row.extend([127.0, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 126.5, -126.5]);
        let (mut a, mut b) = (vec![0i8; row.len()], vec![0i8; row.len()]);
        let base = quantize_weight_row(&row, &mut a);
        let fast = quantize_weight_row_dispatch(&row, &mut b);
        assert_eq!(base.0.to_bits(), fast.0.to_bits());
        assert_eq!((base.1, &a), (fast.1, &b));
        let n = row.len();
        assert_eq!(&a[n - 8..], &[0, 0, 2, -2, 2, -2, 126, -126]);
    }

    /// The AVX-512 and AVX2 builds of the activation quantizer round like the
    /// baseline one, ties included (x · s + 128 landing on .5).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn activation_quantizer_builds_agree() {
        let mut x = data(4096, 11, 8.0);
        x[0] = 4.0; // s = 127 / 4 → many multiples of 1/63.5 below hit ties
        for (i, v) in x.iter_mut().enumerate().skip(1).step_by(7) {
            *v = (i % 200) as f32 / 63.5 - 1.5;
        }
        for row in x.chunks(97) {
            let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
            let ra = quantize_row(row, &mut a);
            if has_avx512() {
                // SAFETY: AVX-512F was detected.
                let rb = unsafe { quantize_row_avx512(row, &mut b) };
                assert_eq!(a, b);
                assert_eq!(ra.to_bits(), rb.to_bits());
            }
            if has_avx2() {
                // SAFETY: AVX2 was detected.
                let rc = unsafe { quantize_row_avx2(row, &mut c) };
                assert_eq!(a, c);
                assert_eq!(ra.to_bits(), rc.to_bits());
            }
        }
    }

    #[test]
    fn rows_dequantize_like_ctranslate2() {
        let w = data(5 * 8, 9, 1.0);
        let q = I8Matrix::quantize(&w, 5, 8, None).unwrap();
        let r = q.rows(&[3, 99]);
        assert_eq!(r.len(), 16);
        let inv = 1.0 / q.scales[3];
        for t in 0..8 {
            assert_eq!(r[t], q.qs[3 * q.kp + t] as f32 * inv);
            // Out-of-range ids clamp to the last row.
            assert_eq!(r[8 + t], q.qs[4 * q.kp + t] as f32 * (1.0 / q.scales[4]));
        }
    }
}
