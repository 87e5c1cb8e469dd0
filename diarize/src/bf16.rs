//! bf16 matrix products for CAM++ on CPUs with AVX512-BF16.
//!
//! CAM++'s convolutions are ~55% of diarization's CPU time, and they
//! already run as f32 GEMMs near this kind of CPU's floating-point peak
//! (README: 520 M multiply-adds a second of clip, ~37 G a second a core).
//! What is left is the arithmetic's width: `vdpbf16ps` multiplies 32 pairs
//! of bf16 and adds them into 16 f32 lanes, twice an f32 FMA's work per
//! instruction, and halves the bytes each operand streams. Products are
//! summed in f32; only the operands are rounded (to nearest even, 8 bits
//! of mantissa), which moves an embedding by a cosine of ~1e-5 (tested in
//! `tests/campplus_ref.rs`) and no DER measured (README).
//!
//! Layout, chosen so `vdpbf16ps`'s pairs run along the inner dimension:
//! - the left operand (weights, `m × k`, packed once at load) holds each
//!   row's consecutive pairs `(w[i][2p], w[i][2p+1])` as one `u32`, which a
//!   broadcast puts in every lane;
//! - the right operand (activations, `k × n`) holds rows `2p` and `2p+1`
//!   interleaved, column by column (a "pair row" of `n` `u32`s), packed by
//!   the caller as it writes its BatchNorm-ReLU'd input anyway;
//! - a product may be a sum of several terms (one per convolution tap,
//!   each with its own weights and a shifted view of one packed input), so
//!   the FCM's 3×3 convs are one pass with all nine taps in the inner loop.
//!
//! The microkernel keeps an 8 × 48 tile of the output in 24 registers.

use rayon::prelude::*;

/// Whether this CPU runs the bf16 kernels (AVX512-BF16 with AVX-512 F/BW).
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *HAS.get_or_init(|| {
            is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512bf16")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `x` as bf16 bits, rounded to nearest even (what `vcvtneps2bf16` does
/// for finite values; a NaN stays a NaN).
pub(crate) fn to_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    if x.is_nan() {
        return ((u >> 16) | 0x40) as u16;
    }
    let round = 0x7FFF + ((u >> 16) & 1);
    (u.wrapping_add(round) >> 16) as u16
}

/// The f32 a bf16 stands for.
#[cfg(test)]
pub(crate) fn from_bf16(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

fn pair(lo: f32, hi: f32) -> u32 {
    to_bf16(lo) as u32 | (to_bf16(hi) as u32) << 16
}

/// `src`'s consecutive values as bf16 pairs (`dst[p]` = `src[2p]`,
/// `src[2p+1]`, a zero high half past an odd end).
pub(crate) fn to_pairs(src: &[f32], dst: &mut [u32]) {
    assert!(dst.len() >= src.len().div_ceil(2));
    let even = src.len() & !1;
    #[cfg(target_arch = "x86_64")]
    let vector = available();
    #[cfg(not(target_arch = "x86_64"))]
    let vector = false;
    if vector {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX-512 BF16 checked; `dst` holds `even / 2`.
        unsafe {
            x86::convert(&src[..even], dst)
        };
    } else {
        for (d, p) in dst.iter_mut().zip(src[..even].chunks_exact(2)) {
            *d = pair(p[0], p[1]);
        }
    }
    if even < src.len() {
        dst[even / 2] = to_bf16(src[even]) as u32;
    }
}

/// Weights `(m × k)` as bf16 pairs along `k` (see the module docs); an odd
/// `k`'s last pair has a zero high half.
#[derive(Debug, Clone)]
pub(crate) struct PackedA {
    pub m: usize,
    /// Pairs per row: `k` halved, rounded up.
    pub kp: usize,
    data: Vec<u32>,
}

impl PackedA {
    /// From row-major `w` `(m × k)`.
    pub(crate) fn new(w: &[f32], m: usize, k: usize) -> Self {
        assert_eq!(w.len(), m * k, "weights are m × k");
        let kp = k.div_ceil(2);
        if k.is_multiple_of(2) {
            // Even rows: pairs never straddle two rows, so the whole
            // matrix converts as one run (the segmentation's activations
            // are packed this way every call).
            let mut data = vec![0u32; m * kp];
            to_pairs(w, &mut data);
            return Self { m, kp, data };
        }
        let mut data = Vec::with_capacity(m * kp);
        for row in w.chunks(k.max(1)).take(m) {
            for p in 0..kp {
                let hi = row.get(2 * p + 1).copied().unwrap_or(0.0);
                data.push(pair(row[2 * p], hi));
            }
        }
        Self { m, kp, data }
    }
}

/// Packs `k` rows of `n` (`src` row `r` at `r·rs`) into `kp = ⌈k/2⌉` pair
/// rows of `out` (`ldb` apart), each value mapped by `f(row, value)` first
/// (the caller's BatchNorm-ReLU; identity for plain copies). An odd `k`'s
/// last pair row has zero high halves. Columns `n..ldb` are left alone.
pub(crate) fn pack_rows(
    src: &[f32],
    k: usize,
    n: usize,
    rs: usize,
    out: &mut [u32],
    ldb: usize,
    f: &(dyn Fn(usize, f32) -> f32 + Sync),
) {
    let kp = k.div_ceil(2);
    assert!(ldb >= n && out.len() >= kp.saturating_sub(1) * ldb + n.min(ldb));
    for p in 0..kp {
        let (r0, r1) = (2 * p, 2 * p + 1);
        let lo = &src[r0 * rs..r0 * rs + n];
        let dst = &mut out[p * ldb..p * ldb + n];
        if r1 < k {
            let hi = &src[r1 * rs..r1 * rs + n];
            pack_pair_row(lo, hi, dst, &|v| f(r0, v), &|v| f(r1, v));
        } else {
            for (d, &a) in dst.iter_mut().zip(lo) {
                *d = to_bf16(f(r0, a)) as u32;
            }
        }
    }
}

/// `dst[j] = pair(flo(lo[j]), fhi(hi[j]))`.
fn pack_pair_row(
    lo: &[f32],
    hi: &[f32],
    dst: &mut [u32],
    flo: &dyn Fn(f32) -> f32,
    fhi: &dyn Fn(f32) -> f32,
) {
    for ((d, &a), &b) in dst.iter_mut().zip(lo).zip(hi) {
        *d = pair(flo(a), fhi(b));
    }
}

/// `dst[j]` = the pair `(lo[j], hi[j])` for the shortest of the three:
/// two rows of an input as one pair row, unchanged (the 2-D convs'
/// inputs, already activated).
pub(crate) fn pack_pair(lo: &[f32], hi: &[f32], dst: &mut [u32]) {
    let n = dst.len().min(lo.len()).min(hi.len());
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: AVX-512 BF16 checked; `n` values of each are in bounds.
        unsafe { x86::pack_pair(&lo[..n], &hi[..n], &mut dst[..n]) };
        return;
    }
    pack_pair_row(&lo[..n], &hi[..n], &mut dst[..n], &|v| v, &|v| v);
}

/// Packs rows as [`pack_rows`] does, each through BatchNorm (`scale`,
/// `shift` per row) and ReLU: the input of CAM++'s 1×1 convs.
pub(crate) fn pack_rows_bn_relu(
    src: &[f32],
    k: usize,
    n: usize,
    scale: &[f32],
    shift: &[f32],
    out: &mut Vec<u32>,
) {
    let kp = k.div_ceil(2);
    // Every value is written below: no need to clear what is kept.
    out.truncate(kp * n);
    out.resize(kp * n, 0);
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: the CPU has AVX-512 F/BW and BF16 (checked); every row
        // read is inside `src` (`k` rows of `n`), every write inside `out`.
        unsafe { x86::pack_bn_relu(src, k, n, scale, shift, out) };
        return;
    }
    pack_rows(src, k, n, n, out, n, &|r, v| {
        (v * scale[r] + shift[r]).max(0.0)
    });
}

/// One term of a product: weights times a view of a packed input whose
/// pair row `p` starts at `b + p·ldb` and holds at least the output's `n`
/// columns.
pub(crate) struct Term<'a> {
    pub a: &'a PackedA,
    pub b: *const u32,
    pub ldb: usize,
}

// SAFETY: a Term only reads through `b`, and the caller of `gemm`
// guarantees the memory outlives the call and is not written meanwhile.
unsafe impl Sync for Term<'_> {}

/// `c (m × n, rows ldc apart) += Σ terms a · b` on the bf16 kernel
/// (`accumulate`; else `c =`, and what `c` held is never read); every
/// term's `a` has `m` rows. `parallel` splits the output's rows over
/// rayon's pool (for a single large product; batches parallelise
/// outside).
///
/// # Safety
/// [`available`] must be true; each term's `b` must point at `a.kp` pair
/// rows `ldb` apart with `n` readable `u32`s each; `c` must hold `m` rows
/// of `n` floats `ldc` apart, written by nobody else during the call.
pub(crate) unsafe fn gemm(
    terms: &[Term],
    m: usize,
    n: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    parallel: bool,
) {
    debug_assert!(available());
    debug_assert!(terms.iter().all(|t| t.a.m == m));
    if m == 0 || n == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        struct Out(*mut f32);
        // SAFETY: row blocks write disjoint rows of `c`.
        unsafe impl Sync for Out {}
        let out = Out(c);
        let block = |i0: usize| {
            let c = &out;
            // SAFETY: as this function's contract; rows i0..i0+8 only.
            unsafe { x86::rows(terms, i0, (m - i0).min(x86::MR), n, c.0, ldc, accumulate) }
        };
        if parallel {
            (0..m).into_par_iter().step_by(x86::MR).for_each(block);
        } else {
            (0..m).step_by(x86::MR).for_each(block);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (terms, c, ldc, parallel);
        unreachable!("bf16 kernels are x86-64 only (available() is false)");
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Term;
    use std::arch::x86_64::*;

    /// Output rows per tile.
    pub(super) const MR: usize = 8;
    /// Output columns per tile (three registers of 16).
    const NR: usize = 48;

    /// Rows `i0..i0+mr` (`mr ≤ MR`) of the product, all columns.
    ///
    /// # Safety
    /// As [`super::gemm`].
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn rows(
        terms: &[Term],
        i0: usize,
        mr: usize,
        n: usize,
        c: *mut f32,
        ldc: usize,
        acc: bool,
    ) {
        let mut j0 = 0;
        while j0 < n {
            let nr = (n - j0).min(NR);
            unsafe {
                match (mr, nr.div_ceil(16)) {
                    (8, 3) => tile::<8, 3>(terms, i0, j0, nr, c, ldc, acc),
                    (8, 2) => tile::<8, 2>(terms, i0, j0, nr, c, ldc, acc),
                    (8, _) => tile::<8, 1>(terms, i0, j0, nr, c, ldc, acc),
                    (4..=7, 3) => {
                        tile::<4, 3>(terms, i0, j0, nr, c, ldc, acc);
                        if mr > 4 {
                            rest(terms, i0 + 4, mr - 4, j0, nr, c, ldc, acc);
                        }
                    }
                    _ => rest(terms, i0, mr, j0, nr, c, ldc, acc),
                }
            }
            j0 += nr;
        }
    }

    /// Leftover rows (under 8) a row or four at a time.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn rest(
        terms: &[Term],
        i0: usize,
        mr: usize,
        j0: usize,
        nr: usize,
        c: *mut f32,
        ldc: usize,
        acc: bool,
    ) {
        let mut i = i0;
        let end = i0 + mr;
        while i < end {
            unsafe {
                if end - i >= 4 {
                    match nr.div_ceil(16) {
                        3 => tile::<4, 3>(terms, i, j0, nr, c, ldc, acc),
                        2 => tile::<4, 2>(terms, i, j0, nr, c, ldc, acc),
                        _ => tile::<4, 1>(terms, i, j0, nr, c, ldc, acc),
                    }
                    i += 4;
                } else {
                    match nr.div_ceil(16) {
                        3 => tile::<1, 3>(terms, i, j0, nr, c, ldc, acc),
                        2 => tile::<1, 2>(terms, i, j0, nr, c, ldc, acc),
                        _ => tile::<1, 1>(terms, i, j0, nr, c, ldc, acc),
                    }
                    i += 1;
                }
            }
        }
    }

    /// Column mask of register `q` for a tile `nr` columns wide.
    fn mask(q: usize, nr: usize) -> __mmask16 {
        let lo = 16 * q;
        if nr >= lo + 16 {
            0xFFFF
        } else if nr > lo {
            ((1u32 << (nr - lo)) - 1) as __mmask16
        } else {
            0
        }
    }

    /// The `M × 16·Q` tile at `(i0, j0)`, `nr ≤ 16·Q` columns of it valid:
    /// loads it from `c`, adds every term's product, stores it back.
    // Register tiles read clearest as index loops.
    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn tile<const M: usize, const Q: usize>(
        terms: &[Term],
        i0: usize,
        j0: usize,
        nr: usize,
        c: *mut f32,
        ldc: usize,
        load: bool,
    ) {
        let masks: [__mmask16; Q] = std::array::from_fn(|q| mask(q, nr));
        let mut acc = [[_mm512_setzero_ps(); Q]; M];
        unsafe {
            if load {
                for r in 0..M {
                    for q in 0..Q {
                        acc[r][q] =
                            _mm512_maskz_loadu_ps(masks[q], c.add((i0 + r) * ldc + j0 + 16 * q));
                    }
                }
            }
            for t in terms {
                let a = t.a.data.as_ptr().add(i0 * t.a.kp);
                let kp = t.a.kp;
                let mut b = t.b.add(j0);
                for p in 0..kp {
                    let mut bv = [_mm512_setzero_si512(); Q];
                    for q in 0..Q {
                        bv[q] = _mm512_maskz_loadu_epi32(masks[q], b.add(16 * q) as *const i32);
                    }
                    for r in 0..M {
                        let av = std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(
                            *a.add(r * kp + p) as i32,
                        ));
                        for q in 0..Q {
                            let b = std::mem::transmute::<__m512i, __m512bh>(bv[q]);
                            acc[r][q] = _mm512_dpbf16_ps(acc[r][q], av, b);
                        }
                    }
                    b = b.add(t.ldb);
                }
            }
            for r in 0..M {
                for q in 0..Q {
                    _mm512_mask_storeu_ps(c.add((i0 + r) * ldc + j0 + 16 * q), masks[q], acc[r][q]);
                }
            }
        }
    }

    /// Consecutive f32 pairs of `src` (even length) as bf16 pairs in `dst`.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn convert(src: &[f32], dst: &mut [u32]) {
        debug_assert!(src.len().is_multiple_of(2) && dst.len() * 2 >= src.len());
        let mut i = 0;
        while i + 16 <= src.len() {
            unsafe {
                let v = std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(
                    _mm512_loadu_ps(src.as_ptr().add(i)),
                ));
                _mm256_storeu_si256(dst.as_mut_ptr().add(i / 2) as *mut __m256i, v);
            }
            i += 16;
        }
        while i < src.len() {
            dst[i / 2] = super::pair(src[i], src[i + 1]);
            i += 2;
        }
    }

    /// The first `w` (≤ 16) lanes.
    fn lanes(w: usize) -> __mmask16 {
        if w >= 16 {
            0xFFFF
        } else {
            ((1u32 << w) - 1) as __mmask16
        }
    }

    /// Sixteen values of two rows as sixteen bf16 pairs: `lo` rounded in
    /// the low halves, `hi` in the high halves.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    fn interleave(lo: __m512, hi: __m512) -> __m512i {
        // SAFETY: both casts reinterpret 256 bits.
        let (l, h) = unsafe {
            (
                std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(lo)),
                std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(hi)),
            )
        };
        _mm512_or_si512(
            _mm512_cvtepu16_epi32(l),
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16),
        )
    }

    /// [`super::pack_pair`] sixteen values at a time.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn pack_pair(lo: &[f32], hi: &[f32], dst: &mut [u32]) {
        let n = dst.len();
        debug_assert!(lo.len() >= n && hi.len() >= n);
        let mut j = 0;
        while j < n {
            let m = lanes(n - j);
            // SAFETY: the mask keeps every access below `n`.
            unsafe {
                let v = interleave(
                    _mm512_maskz_loadu_ps(m, lo.as_ptr().add(j)),
                    _mm512_maskz_loadu_ps(m, hi.as_ptr().add(j)),
                );
                _mm512_mask_storeu_epi32(dst.as_mut_ptr().add(j) as *mut i32, m, v);
            }
            j += 16;
        }
    }

    /// [`super::pack_rows_bn_relu`] with AVX-512: sixteen columns at a
    /// time, the two rows' bf16 halves interleaved into one `u32` each.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn pack_bn_relu(
        src: &[f32],
        k: usize,
        n: usize,
        scale: &[f32],
        shift: &[f32],
        out: &mut [u32],
    ) {
        let kp = k.div_ceil(2);
        let zero = _mm512_setzero_ps();
        for p in 0..kp {
            let r0 = 2 * p;
            let r1 = (r0 + 1).min(k - 1);
            let has_hi = r0 + 1 < k;
            let (s0, b0) = (_mm512_set1_ps(scale[r0]), _mm512_set1_ps(shift[r0]));
            let (s1, b1) = (_mm512_set1_ps(scale[r1]), _mm512_set1_ps(shift[r1]));
            let lo = src[r0 * n..(r0 + 1) * n].as_ptr();
            let hi = src[r1 * n..(r1 + 1) * n].as_ptr();
            let dst = out[p * n..(p + 1) * n].as_mut_ptr();
            let mut j = 0;
            while j < n {
                let m = lanes(n - j);
                unsafe {
                    // Multiply, then add (two roundings), as the f32
                    // path's `v * s + b` does.
                    let x0 = _mm512_max_ps(
                        _mm512_add_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, lo.add(j)), s0), b0),
                        zero,
                    );
                    let x1 = if has_hi {
                        _mm512_max_ps(
                            _mm512_add_ps(
                                _mm512_mul_ps(_mm512_maskz_loadu_ps(m, hi.add(j)), s1),
                                b1,
                            ),
                            zero,
                        )
                    } else {
                        zero
                    };
                    let v = interleave(x0, x1);
                    _mm512_mask_storeu_epi32(dst.add(j) as *mut i32, m, v);
                }
                j += 16;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::conv2d::tests::noise;

    #[test]
    fn rounding_is_to_nearest_even() {
        // 1 + 2^-8 is halfway between two bf16s: ties go to the even one.
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0), to_bf16(1.0));
        assert_eq!(from_bf16(to_bf16(1.0 + 3.0 / 256.0)), 1.0 + 4.0 / 256.0);
        assert_eq!(from_bf16(to_bf16(-2.5)), -2.5);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        for x in noise(1000, 3) {
            let y = from_bf16(to_bf16(x));
            assert!((x - y).abs() <= x.abs() / 256.0, "{x} -> {y}");
        }
    }

    /// The exact product of the rounded operands, in f64.
    fn reference(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f64> {
        let r = |x: f32| from_bf16(to_bf16(x)) as f64;
        let mut c = vec![0f64; m * n];
        for i in 0..m {
            for p in 0..k {
                let av = r(a[i * k + p]);
                for j in 0..n {
                    c[i * n + j] += av * r(b[p * n + j]);
                }
            }
        }
        c
    }

    #[test]
    fn products_match_the_rounded_operands_for_every_edge() {
        if !available() {
            eprintln!("no AVX512-BF16 here: the bf16 kernels are not used, not tested");
            return;
        }
        // m around the 8-row tile (1, 3, 4, 5, 8, 13, 32), n around the
        // 48-column tile and its 16-lane registers, odd and even k.
        for &(m, n, k) in &[
            (1, 1, 1),
            (3, 17, 5),
            (4, 48, 64),
            (5, 49, 33),
            (8, 100, 128),
            (13, 7, 2),
            (32, 130, 31),
            (16, 200, 300),
        ] {
            for parallel in [false, true] {
                let a = noise(m * k, (m * 31 + k) as u64);
                let b = noise(k * n, (n * 17 + k) as u64);
                let pa = PackedA::new(&a, m, k);
                let ldb = n + 3;
                let mut pb = vec![0u32; k.div_ceil(2) * ldb];
                pack_rows(&b, k, n, n, &mut pb, ldb, &|_, v| v);
                let init = noise(m * n, 99);
                let mut c = init.clone();
                let terms = [Term {
                    a: &pa,
                    b: pb.as_ptr(),
                    ldb,
                }];
                // SAFETY: shapes as documented; `available()` checked.
                unsafe { gemm(&terms, m, n, c.as_mut_ptr(), n, true, parallel) };
                let want = reference(&a, &b, m, n, k);
                // Overwriting: what the output held (NaN here) is never read.
                let mut fresh = vec![f32::NAN; m * n];
                // SAFETY: as above.
                unsafe { gemm(&terms, m, n, fresh.as_mut_ptr(), n, false, parallel) };
                for i in 0..m * n {
                    let w = want[i] + init[i] as f64;
                    let tol = 1e-5 * (k as f64).sqrt() + 1e-6 * w.abs();
                    assert!(
                        (c[i] as f64 - w).abs() <= tol,
                        "m{m} n{n} k{k} at {i}: {} against {w}",
                        c[i]
                    );
                    assert!(
                        (fresh[i] as f64 - want[i]).abs() <= tol,
                        "m{m} n{n} k{k} at {i}, overwriting: {} against {}",
                        fresh[i],
                        want[i]
                    );
                }
            }
        }
    }

    #[test]
    fn weights_pack_alike_on_both_paths() {
        // Even k takes the vector conversion where bf16 runs; it must
        // give the scalar pairs bit for bit (odd k is always scalar).
        for &(m, k) in &[(3, 2), (5, 16), (7, 34), (2, 256)] {
            let w = noise(m * k, (m + k) as u64);
            let got = PackedA::new(&w, m, k);
            let want: Vec<u32> = w.chunks(2).map(|p| pair(p[0], p[1])).collect();
            assert_eq!(got.data, want, "m{m} k{k}");
            assert_eq!(got.kp, k / 2);
        }
    }

    #[test]
    fn terms_sum_and_views_shift() {
        if !available() {
            return;
        }
        // Two terms over shifted views of one packed input: the sum of
        // the two products, as a conv's taps are.
        let (m, n, k) = (8, 40, 6);
        let wide = n + 5;
        let b = noise(k * wide, 5);
        let mut pb = vec![0u32; k.div_ceil(2) * wide];
        pack_rows(&b, k, wide, wide, &mut pb, wide, &|_, v| v);
        let (a0, a1) = (noise(m * k, 6), noise(m * k, 7));
        let (p0, p1) = (PackedA::new(&a0, m, k), PackedA::new(&a1, m, k));
        let mut c = vec![0f32; m * n];
        let terms = [
            Term {
                a: &p0,
                b: pb.as_ptr(),
                ldb: wide,
            },
            Term {
                a: &p1,
                b: unsafe { pb.as_ptr().add(5) },
                ldb: wide,
            },
        ];
        unsafe { gemm(&terms, m, n, c.as_mut_ptr(), n, true, false) };
        let view = |off: usize| -> Vec<f32> {
            (0..k)
                .flat_map(|r| b[r * wide + off..r * wide + off + n].to_vec())
                .collect()
        };
        let (w0, w1) = (
            reference(&a0, &view(0), m, n, k),
            reference(&a1, &view(5), m, n, k),
        );
        for i in 0..m * n {
            assert!((c[i] as f64 - (w0[i] + w1[i])).abs() < 1e-5, "at {i}");
        }
    }

    #[test]
    fn pair_packing_matches_the_scalar_path() {
        for n in [0, 1, 15, 16, 17, 40] {
            let (lo, hi) = (noise(n, 21), noise(n, 22));
            let mut got = vec![0u32; n];
            pack_pair(&lo, &hi, &mut got);
            let want: Vec<u32> = lo.iter().zip(&hi).map(|(&a, &b)| pair(a, b)).collect();
            assert_eq!(got, want, "n {n}");
        }
    }

    #[test]
    fn bn_relu_packing_matches_the_scalar_path() {
        let (k, n) = (7, 37);
        let x = noise(k * n, 11);
        let scale = noise(k, 12);
        let shift = noise(k, 13);
        let mut got = Vec::new();
        pack_rows_bn_relu(&x, k, n, &scale, &shift, &mut got);
        let mut want = vec![0u32; k.div_ceil(2) * n];
        pack_rows(&x, k, n, n, &mut want, n, &|r, v| {
            (v * scale[r] + shift[r]).max(0.0)
        });
        assert_eq!(got, want);
    }
}
