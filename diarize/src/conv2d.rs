//! CAM++'s 2-D convolutions on the CPU as implicit GEMM: the FCM front end
//! is the most expensive part of an embedding, and candle's general CPU
//! `conv2d` gathers its im2col tiles one element at a time (a third of all
//! diarization time in a profile, more than the matrix products).
//!
//! The trick: pad the input once, and compute every output row over the
//! padded width (dropping the last `k - 1` columns afterwards). Output
//! position `n = y·Wp + x` of kernel tap `(kh, kw)` then reads input
//! element `n + kh·Wp + kw` of each channel: for a fixed tap, the input
//! is a plain strided matrix `(cin, out_h·Wp)` and the conv is `k²` GEMMs
//! accumulating into one output, with no im2col at all. A frequency stride
//! `s` splits the padded rows into `s` phases (row `j·s + r` in phase `r`),
//! so tap row `kh` reads phase `kh mod s` from row `kh div s` on, again a
//! plain matrix, and the rows the stride drops are never computed. Inputs
//! with few channels (the first conv has one) copy the `cin·k²` shifted
//! views into a small im2col matrix instead, for one GEMM with a useful
//! inner dimension.
//!
//! GPUs keep candle's `conv2d`; this is only built for CPU tensors.

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use crate::bf16::{self, PackedA, Term};
use crate::error::Result;

/// Below this inner size (`cin·k²`) one im2col GEMM beats `k²` thin ones.
const IM2COL_MAX_INNER: usize = 64;

/// The weights in the layout the conv's path reads, chosen once at load.
#[derive(Debug, Clone)]
enum Kernel {
    /// Thin inputs (`cin·k² ≤` [`IM2COL_MAX_INNER`]): `(cout, cin·k·k)`,
    /// PyTorch's order (channel, then kernel row, column), for one GEMM
    /// over an im2col matrix.
    Im2col(Vec<f32>),
    /// Tap `kh·k + kw` as its own `(cout, cin)` matrix, one GEMM each.
    Taps(Vec<Vec<f32>>),
}

/// A `k×k` conv with equal padding on both axes, stride `freq_stride` on
/// axis 2 (frequency) and 1 on axis 3 (time), and a per-channel bias; the
/// weights live on the host.
#[derive(Debug, Clone)]
pub(crate) struct HostConv2d {
    kernel: Kernel,
    bias: Vec<f32>,
    cout: usize,
    cin: usize,
    k: usize,
    pad: usize,
    freq_stride: usize,
    /// The taps as bf16 ([`crate::bf16`]), when the convs run in bf16:
    /// then the input is packed as bf16 channel pairs and all taps are one
    /// pass of the bf16 kernel. Thin convs (im2col) stay f32.
    taps_bf16: Option<Vec<PackedA>>,
}

impl HostConv2d {
    /// From a `(cout, cin, k, k)` weight and a `cout` bias.
    pub(crate) fn new(
        weight: &Tensor,
        bias: &Tensor,
        pad: usize,
        freq_stride: usize,
    ) -> Result<Self> {
        let (cout, cin, k, k2) = weight.dims4()?;
        debug_assert_eq!(k, k2, "square kernels only");
        let flat = weight
            .to_device(&Device::Cpu)?
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let bias = bias
            .to_device(&Device::Cpu)?
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let kernel = if cin * k * k <= IM2COL_MAX_INNER {
            Kernel::Im2col(flat)
        } else {
            Kernel::Taps(
                (0..k * k)
                    .map(|tap| {
                        let mut m = Vec::with_capacity(cout * cin);
                        for co in 0..cout {
                            for ci in 0..cin {
                                m.push(flat[(co * cin + ci) * k * k + tap]);
                            }
                        }
                        m
                    })
                    .collect(),
            )
        };
        Ok(Self {
            kernel,
            bias,
            cout,
            cin,
            k,
            pad,
            freq_stride: freq_stride.max(1),
            taps_bf16: None,
        })
    }

    /// Runs the per-tap convs in bf16 (`true`, where
    /// [`crate::bf16::available`]) or f32. Returns whether bf16 is on.
    pub(crate) fn set_bf16(&mut self, on: bool) -> bool {
        self.taps_bf16 = match &self.kernel {
            Kernel::Taps(taps) if on && bf16::available() => Some(
                taps.iter()
                    .map(|t| PackedA::new(t, self.cout, self.cin))
                    .collect(),
            ),
            _ => None,
        };
        self.taps_bf16.is_some()
    }

    /// Whether this conv runs per tap (not thin enough for im2col).
    #[cfg(test)]
    pub(crate) fn per_tap(&self) -> bool {
        matches!(self.kernel, Kernel::Taps(_))
    }

    /// Whether the per-tap convs run in bf16.
    #[cfg(test)]
    pub(crate) fn bf16(&self) -> bool {
        self.taps_bf16.is_some()
    }

    /// The output's `(out_h, out_w)` for a `cin × h × t` input, or why
    /// there is none.
    fn out_dims(&self, cin: usize, h: usize, t: usize) -> Result<(usize, usize)> {
        if cin != self.cin {
            return Err(crate::error::DiarizeError::Input(format!(
                "conv2d expects {} input channels, got {cin}",
                self.cin
            )));
        }
        let (k, p, s) = (self.k, self.pad, self.freq_stride);
        let (hp, wp) = (h + 2 * p, t + 2 * p);
        if hp < k || wp < k {
            return Err(crate::error::DiarizeError::Input(format!(
                "conv2d input {h}×{t} is smaller than its {k}×{k} kernel"
            )));
        }
        Ok(((hp - k) / s + 1, wp - k + 1))
    }

    /// One item on host buffers: `src` `(cin, h, t)` → `(cout, out_h,
    /// out_w)` with `out_h` and `out_w`.
    pub(crate) fn apply(
        &self,
        src: &[f32],
        h: usize,
        t: usize,
        par: gemm::Parallelism,
    ) -> Result<(Vec<f32>, usize, usize)> {
        let cin = src.len() / (h * t).max(1);
        if cin * h * t != src.len() {
            return Err(crate::error::DiarizeError::Input(format!(
                "conv2d input of {} values is not channels × {h} × {t}",
                src.len()
            )));
        }
        let (out_h, out_w) = self.out_dims(cin, h, t)?;
        let mut out = vec![0f32; self.cout * out_h * out_w];
        self.one(src, h, t, out_h, out_w, &mut out, par);
        Ok((out, out_h, out_w))
    }

    /// `(b, cin, h, t)` → `(b, cout, out_h, t + 2·pad − k + 1)`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, cin, h, t) = x.dims4()?;
        let (out_h, out_w) = self.out_dims(cin, h, t)?;
        let data = x.flatten_all()?.to_vec1::<f32>()?;
        let per_out = self.cout * out_h * out_w;
        let mut out = vec![0f32; b * per_out];
        let one = |(item, dst): (usize, &mut [f32]), par: gemm::Parallelism| {
            let src = &data[item * cin * h * t..(item + 1) * cin * h * t];
            self.one(src, h, t, out_h, out_w, dst, par);
        };
        if b == 1 {
            one((0, &mut out[..]), gemm::Parallelism::Rayon(0));
        } else {
            out.par_chunks_mut(per_out)
                .enumerate()
                .for_each(|job| one(job, gemm::Parallelism::None));
        }
        Ok(Tensor::from_vec(
            out,
            (b, self.cout, out_h, out_w),
            x.device(),
        )?)
    }

    /// One batch item: `src` `(cin, h, t)` into `dst` `(cout, out_h, out_w)`.
    #[allow(clippy::too_many_arguments)]
    fn one(
        &self,
        src: &[f32],
        h: usize,
        t: usize,
        out_h: usize,
        out_w: usize,
        dst: &mut [f32],
        par: gemm::Parallelism,
    ) {
        let (k, p, s, cin, cout) = (self.k, self.pad, self.freq_stride, self.cin, self.cout);
        let wp = t + 2 * p;
        // Phase rows: every output row's taps plus one spare row, so the
        // views of the dropped last columns stay inside the buffer.
        let rows = out_h + (k - 1) / s + 1;
        let plane = rows * wp;
        if let Some(taps) = &self.taps_bf16 {
            self.one_bf16(taps, src, h, t, out_h, out_w, rows, dst, par);
            return;
        }
        let mut phases = vec![0f32; s * cin * plane];
        for r in 0..s {
            for c in 0..cin {
                for j in 0..rows {
                    let Some(iy) = (j * s + r).checked_sub(p).filter(|&iy| iy < h) else {
                        continue;
                    };
                    let at = (r * cin + c) * plane + j * wp + p;
                    phases[at..at + t].copy_from_slice(&src[(c * h + iy) * t..][..t]);
                }
            }
        }
        let view = |kh: usize, kw: usize| (kh % s) * cin * plane + (kh / s) * wp + kw;
        let n = out_h * wp;
        let mut acc = vec![0f32; cout * n];
        for (co, row) in acc.chunks_mut(n).enumerate() {
            row.fill(self.bias[co]);
        }
        // SAFETY (both kernels): every matrix is described by its pointer,
        // dimensions and strides within its buffer. The output is
        // `cout × n` in `acc`; a tap's input view starts at `view(kh, kw)`
        // and its last element is `view(kh, kw) + (cin − 1)·plane + n − 1
        // < s·cin·plane` because `(kh div s)·wp + kw + n ≤ rows·wp`.
        match &self.kernel {
            Kernel::Im2col(weight) => {
                let inner = cin * k * k;
                let mut col = vec![0f32; inner * n];
                for c in 0..cin {
                    for kh in 0..k {
                        for kw in 0..k {
                            let at = view(kh, kw) + c * plane;
                            let r = (c * k + kh) * k + kw;
                            col[r * n..(r + 1) * n].copy_from_slice(&phases[at..at + n]);
                        }
                    }
                }
                // SAFETY: see above; `weight` is `cout × inner`, `col` `inner × n`.
                unsafe {
                    gemm_accumulate(
                        (cout, n, inner),
                        &mut acc,
                        weight.as_ptr(),
                        inner,
                        col.as_ptr(),
                        n,
                        par,
                    )
                };
            }
            Kernel::Taps(taps) => {
                for kh in 0..k {
                    for kw in 0..k {
                        // SAFETY: see above; the tap is `cout × cin`.
                        unsafe {
                            gemm_accumulate(
                                (cout, n, cin),
                                &mut acc,
                                taps[kh * k + kw].as_ptr(),
                                cin,
                                phases.as_ptr().add(view(kh, kw)),
                                plane,
                                par,
                            )
                        };
                    }
                }
            }
        }
        for co in 0..cout {
            for y in 0..out_h {
                let from = co * n + y * wp;
                let to = (co * out_h + y) * out_w;
                dst[to..to + out_w].copy_from_slice(&acc[from..from + out_w]);
            }
        }
    }
}

impl HostConv2d {
    /// [`Self::one`] in bf16: the phases hold channel pairs (pair row `cp`
    /// of phase `r` is channels `2cp` and `2cp+1`, see [`crate::bf16`]),
    /// and the `k²` taps are the terms of one product, so each output
    /// tile stays in registers across all of them.
    #[allow(clippy::too_many_arguments)]
    fn one_bf16(
        &self,
        taps: &[PackedA],
        src: &[f32],
        h: usize,
        t: usize,
        out_h: usize,
        out_w: usize,
        rows: usize,
        dst: &mut [f32],
        par: gemm::Parallelism,
    ) {
        let (k, p, s, cin, cout) = (self.k, self.pad, self.freq_stride, self.cin, self.cout);
        let wp = t + 2 * p;
        let plane = rows * wp;
        let cp = cin.div_ceil(2);
        let zero_row = vec![0f32; t];
        let mut phases = vec![0u32; s * cp * plane];
        for r in 0..s {
            for j in 0..rows {
                let Some(iy) = (j * s + r).checked_sub(p).filter(|&iy| iy < h) else {
                    continue;
                };
                for q in 0..cp {
                    let lo = &src[(2 * q * h + iy) * t..][..t];
                    let hi = if 2 * q + 1 < cin {
                        &src[((2 * q + 1) * h + iy) * t..][..t]
                    } else {
                        &zero_row[..]
                    };
                    let at = (r * cp + q) * plane + j * wp + p;
                    bf16::pack_pair(lo, hi, &mut phases[at..at + t]);
                }
            }
        }
        let n = out_h * wp;
        let mut acc = vec![0f32; cout * n];
        for (co, row) in acc.chunks_mut(n).enumerate() {
            row.fill(self.bias[co]);
        }
        // Views as in `one`, in pairs: tap (kh, kw) reads phase kh mod s
        // from row kh div s, column kw on; the same bound holds.
        let terms: Vec<Term> = (0..k * k)
            .map(|tap| {
                let (kh, kw) = (tap / k, tap % k);
                let at = (kh % s) * cp * plane + (kh / s) * wp + kw;
                Term {
                    a: &taps[tap],
                    // SAFETY: `at + (cp − 1)·plane + n ≤ s·cp·plane`, as
                    // in `one`.
                    b: unsafe { phases.as_ptr().add(at) },
                    ldb: plane,
                }
            })
            .collect();
        let parallel = matches!(par, gemm::Parallelism::Rayon(_));
        // SAFETY: bf16 is available (taps exist only then); each term's view
        // holds `cp` pair rows of `n` readable values `plane` apart; `acc`
        // is `cout × n`.
        unsafe { bf16::gemm(&terms, cout, n, acc.as_mut_ptr(), n, true, parallel) };
        for co in 0..cout {
            for y in 0..out_h {
                let from = co * n + y * wp;
                let to = (co * out_h + y) * out_w;
                dst[to..to + out_w].copy_from_slice(&acc[from..from + out_w]);
            }
        }
    }
}

/// `dst (m × n) += lhs (m × k) · rhs (k × n)`, all row-major with unit
/// column stride; `lhs_rs` and `rhs_rs` are their row strides.
///
/// # Safety
/// `lhs` must point at `m` readable rows of `k` floats `lhs_rs` apart and
/// `rhs` at `k` readable rows of `n` floats `rhs_rs` apart.
pub(crate) unsafe fn gemm_accumulate(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    lhs: *const f32,
    lhs_rs: usize,
    rhs: *const f32,
    rhs_rs: usize,
    par: gemm::Parallelism,
) {
    assert!(dst.len() >= m * n, "the output holds m × n");
    gemm::gemm(
        m,
        n,
        k,
        dst.as_mut_ptr(),
        1,
        n as isize,
        true,
        lhs,
        1,
        lhs_rs as isize,
        rhs,
        1,
        rhs_rs as isize,
        1.0f32,
        1.0f32,
        false,
        false,
        false,
        par,
    );
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Reproducible values in [-0.5, 0.5) (xorshift; no rand dependency).
    pub(crate) fn noise(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect()
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// candle's own conv2d (stride 1), then every `s`-th row, plus bias.
    fn reference(x: &Tensor, w: &Tensor, bias: &Tensor, pad: usize, s: usize) -> Tensor {
        let y = x.conv2d(w, pad, 1, 1, 1).unwrap();
        let h = y.dim(2).unwrap();
        let idx: Vec<u32> = (0..h).step_by(s).map(|i| i as u32).collect();
        let idx = Tensor::new(idx.as_slice(), &Device::Cpu).unwrap();
        let cout = w.dim(0).unwrap();
        y.index_select(&idx, 2)
            .unwrap()
            .broadcast_add(&bias.reshape((1, cout, 1, 1)).unwrap())
            .unwrap()
    }

    #[test]
    fn matches_candle_conv2d_for_every_shape_cam_uses() {
        // (batch, cin, cout, h, t, k, pad, freq stride): the thin path
        // (cin·k² ≤ 64) and the per-tap path, strides 1 and 2, odd and even
        // heights, batch 1 (threaded GEMM) and several (threaded batch).
        let cases = [
            (1, 1, 4, 16, 23, 3, 1, 1),
            (3, 1, 4, 15, 9, 3, 1, 1),
            (1, 8, 6, 16, 21, 3, 1, 2),
            (2, 8, 6, 17, 5, 3, 1, 2),
            (2, 8, 8, 8, 40, 3, 1, 1),
            (1, 3, 5, 7, 6, 3, 0, 1),
            (2, 2, 3, 9, 11, 3, 0, 2),
        ];
        for (i, &(b, cin, cout, h, t, k, pad, s)) in cases.iter().enumerate() {
            let dev = Device::Cpu;
            let x =
                Tensor::from_vec(noise(b * cin * h * t, i as u64), (b, cin, h, t), &dev).unwrap();
            let w = Tensor::from_vec(
                noise(cout * cin * k * k, 100 + i as u64),
                (cout, cin, k, k),
                &dev,
            )
            .unwrap();
            let bias = Tensor::from_vec(noise(cout, 200 + i as u64), cout, &dev).unwrap();
            let want = reference(&x, &w, &bias, pad, s);
            let got = HostConv2d::new(&w, &bias, pad, s)
                .unwrap()
                .forward(&x)
                .unwrap();
            assert_eq!(got.dims(), want.dims(), "case {i}");
            let diff = max_abs_diff(&got, &want);
            assert!(diff < 1e-5, "case {i}: max difference {diff}");
            // bf16: the same conv with the operands rounded to bf16 (the
            // per-tap path only; thin convs stay f32). Against the f32
            // result, within what 8-bit mantissas allow for inputs and
            // weights of ±0.5 summed over `cin·k²` products.
            let mut conv = HostConv2d::new(&w, &bias, pad, s).unwrap();
            let on = conv.set_bf16(true);
            assert_eq!(
                on,
                crate::bf16::available() && cin * k * k > IM2COL_MAX_INNER
            );
            if on {
                let got = conv.forward(&x).unwrap();
                let diff = max_abs_diff(&got, &want);
                let bound = 2.0 * 0.25 / 128.0 * ((cin * k * k) as f32).sqrt();
                assert!(
                    diff < bound,
                    "case {i} in bf16: max difference {diff} (bound {bound})"
                );
                assert!(diff > 0.0, "case {i}: bf16 rounded nothing");
            }
        }
    }

    #[test]
    fn wrong_channels_and_tiny_inputs_are_errors() {
        let dev = Device::Cpu;
        let w = Tensor::zeros((2, 3, 3, 3), candle_core::DType::F32, &dev).unwrap();
        let bias = Tensor::zeros(2, candle_core::DType::F32, &dev).unwrap();
        let conv = HostConv2d::new(&w, &bias, 0, 1).unwrap();
        let x = Tensor::zeros((1, 2, 5, 5), candle_core::DType::F32, &dev).unwrap();
        assert!(
            conv.forward(&x).is_err(),
            "2 channels into a 3-channel conv"
        );
        let x = Tensor::zeros((1, 3, 2, 5), candle_core::DType::F32, &dev).unwrap();
        assert!(conv.forward(&x).is_err(), "2 rows under a 3-row kernel");
    }
}
