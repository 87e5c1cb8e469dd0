//! CAM++'s densely connected blocks on the CPU, on plain host buffers.
//!
//! After the FCM head these blocks are the rest of an embedding's cost:
//! 52 CAM layers, each a handful of small ops over `(channels, frames)`.
//! Through candle every op allocates its output and wakes the thread pool,
//! every layer re-copies the whole growing concatenation (`Tensor::cat`),
//! and the kernel-3 dilated conv goes through candle's im2col `conv1d`
//! (a profile of a 2-minute diarization: the dense part 6.5 s of 11.2 s of
//! embedding, its local conv at under half the matrix products' rate).
//! Here one buffer per block holds the concatenation and each layer appends
//! its 32 channels in place; BatchNorm and ReLU are one pass fused into
//! the copy that feeds each GEMM; the local conv is, in f32, one GEMM of
//! all its taps stacked, `(k·growth, 128) · h`, whose rows are then added
//! shifted by each tap's offset, and in bf16 one product whose terms are
//! the taps over shifted views of the padded bottleneck (no stacked
//! buffer written and read back); the context mask (global mean plus the mean of
//! each 100-frame segment, through a two-layer MLP) is computed per
//! segment and multiplied in as the layer's output is written.
//!
//! The arithmetic is the candle path's, only summed in another order, so
//! the outputs agree to float rounding (checked against it in the tests, and against
//! 3D-Speaker's own PyTorch output in `tests/campplus_ref.rs`). GPUs keep
//! the candle path.

use rayon::prelude::*;

use crate::bf16::{self, PackedA, Term};
use crate::conv2d::gemm_accumulate;

/// One CAM layer with its BatchNorms as per-channel scale and shift.
#[derive(Debug, Clone)]
pub(crate) struct HostLayer {
    pub cin: usize,
    /// BN before `linear1` (`cin`).
    pub s1: Vec<f32>,
    pub b1: Vec<f32>,
    /// `linear1`, `(bn, cin)`.
    pub w1: Vec<f32>,
    /// BN after `linear1` (`bn`).
    pub s2: Vec<f32>,
    pub b2: Vec<f32>,
    /// The local conv `(growth, bn, k)` as its taps stacked: row `j·growth
    /// + o` is tap `j` of output channel `o`, `(k·growth, bn)`.
    pub local: Vec<f32>,
    pub k: usize,
    pub dilation: usize,
    /// The mask MLP: `(bn/2, bn)` + bias, then `(growth, bn/2)` + bias.
    pub m1w: Vec<f32>,
    pub m1b: Vec<f32>,
    pub m2w: Vec<f32>,
    pub m2b: Vec<f32>,
    /// `w1` and the local conv's taps (each `(growth, bn)`) as bf16
    /// ([`crate::bf16`]) when the blocks run in bf16.
    pub bf16: Option<(PackedA, Vec<PackedA>)>,
}

/// A transit layer: BN-ReLU then a 1×1 conv `(cout, cin)`.
#[derive(Debug, Clone)]
pub(crate) struct HostTransit {
    pub s: Vec<f32>,
    pub b: Vec<f32>,
    pub w: Vec<f32>,
    pub cout: usize,
    /// `w` as bf16, when the blocks run in bf16.
    pub bf16: Option<PackedA>,
}

/// All dense blocks, each followed by its transit.
#[derive(Debug, Clone)]
pub(crate) struct HostBlocks {
    pub blocks: Vec<(Vec<HostLayer>, HostTransit)>,
    pub growth: usize,
    pub bn: usize,
    pub seg_len: usize,
}

impl HostBlocks {
    /// Runs the 1×1 and local convs in bf16 (`true`, where
    /// [`crate::bf16::available`]) or f32. Returns whether bf16 is on.
    pub(crate) fn set_bf16(&mut self, on: bool) -> bool {
        let on = on && bf16::available();
        let (g, bn) = (self.growth, self.bn);
        for (layers, transit) in &mut self.blocks {
            for l in layers.iter_mut() {
                l.bf16 = on.then(|| {
                    (
                        PackedA::new(&l.w1, bn, l.cin),
                        l.local
                            .chunks_exact(g * bn)
                            .map(|tap| PackedA::new(tap, g, bn))
                            .collect(),
                    )
                });
            }
            let total = transit.w.len() / transit.cout.max(1);
            transit.bf16 = on.then(|| PackedA::new(&transit.w, transit.cout, total));
        }
        on
    }

    /// The input's channels and the output's.
    pub(crate) fn channels(&self) -> (usize, usize) {
        let first = self.blocks.first().map_or(0, |(l, _)| l[0].cin);
        let last = self.blocks.last().map_or(0, |(_, t)| t.cout);
        (first, last)
    }

    /// `x` `(b, c_in, t)` row-major → `(b, c_out, t)`.
    pub(crate) fn forward(&self, x: &[f32], b: usize, t: usize) -> Vec<f32> {
        let (cin, cout) = self.channels();
        assert_eq!(x.len(), b * cin * t, "input is (b, c_in, t)");
        let mut out = vec![0f32; b * cout * t];
        if b == 1 {
            self.one(x, t, &mut out, gemm::Parallelism::Rayon(0));
        } else {
            out.par_chunks_mut(cout * t)
                .zip(x.par_chunks(cin * t))
                .for_each(|(dst, src)| self.one(src, t, dst, gemm::Parallelism::None));
        }
        out
    }

    /// One batch item: `src` `(c_in, t)` into `dst` `(c_out, t)`.
    fn one(&self, src: &[f32], t: usize, dst: &mut [f32], par: gemm::Parallelism) {
        let (g, bn) = (self.growth, self.bn);
        let mut input = src.to_vec();
        // Scratch reused by every layer: the BN-ReLU'd input, the
        // bottleneck, the stacked local-conv taps.
        let mut act: Vec<f32> = Vec::new();
        let mut h = vec![0f32; bn * t];
        let mut z: Vec<f32> = Vec::new();
        // The bf16 path's packed input, and its packed bottleneck with
        // zero columns either side (the local conv's padding).
        let mut packed: Vec<u32> = Vec::new();
        let mut packed_h: Vec<u32> = Vec::new();
        let zero_row = vec![0f32; t];
        let parallel = matches!(par, gemm::Parallelism::Rayon(_));
        let nblocks = self.blocks.len();
        for (bi, (layers, transit)) in self.blocks.iter().enumerate() {
            let c0 = layers[0].cin;
            let total = c0 + layers.len() * g;
            let mut buf = vec![0f32; total * t];
            buf[..c0 * t].copy_from_slice(&input[..c0 * t]);
            for layer in layers {
                let cin = layer.cin;
                if let Some((w1, _)) = &layer.bf16 {
                    bf16::pack_rows_bn_relu(
                        &buf[..cin * t],
                        cin,
                        t,
                        &layer.s1,
                        &layer.b1,
                        &mut packed,
                    );
                    let term = [Term {
                        a: w1,
                        b: packed.as_ptr(),
                        ldb: t,
                    }];
                    // SAFETY: bf16 is available (the weights exist only
                    // then); `packed` is ⌈cin/2⌉ pair rows of `t`, `h` `bn × t`.
                    unsafe { bf16::gemm(&term, bn, t, h.as_mut_ptr(), t, false, parallel) };
                } else {
                    h.fill(0.0);
                    bn_relu_into(&buf[..cin * t], &layer.s1, &layer.b1, t, &mut act);
                    // SAFETY: `w1` is `bn × cin`, `act` `cin × t`, `h` `bn × t`.
                    unsafe {
                        gemm_accumulate(
                            (bn, t, cin),
                            &mut h,
                            layer.w1.as_ptr(),
                            cin,
                            act.as_ptr(),
                            t,
                            par,
                        )
                    };
                }
                for (c, row) in h.chunks_mut(t).enumerate() {
                    let (s, b) = (layer.s2[c], layer.b2[c]);
                    for v in row {
                        *v = (*v * s + b).max(0.0);
                    }
                }
                let mask = self.mask(layer, &h, t);
                let nseg = t.div_ceil(self.seg_len);
                let out = &mut buf[cin * t..(cin + g) * t];
                let half = (layer.k - 1) / 2;
                if let Some((_, taps)) = &layer.bf16 {
                    // One product over the taps: tap j reads the padded
                    // bottleneck from column j·dilation, so output frame i
                    // sees input frame i + (j − half)·dilation, zeros past
                    // the ends, as the f32 path's shifted sums do.
                    // Zeros before (`half` taps' reach) and after (the
                    // rest: the same for odd k, one tap fewer for even).
                    let pad = half * layer.dilation;
                    let tp = t + (layer.k - 1) * layer.dilation;
                    let bp = bn.div_ceil(2);
                    packed_h.clear();
                    packed_h.resize(bp * tp, 0);
                    for p in 0..bp {
                        let lo = &h[2 * p * t..(2 * p + 1) * t];
                        let hi = if 2 * p + 1 < bn {
                            &h[(2 * p + 1) * t..(2 * p + 2) * t]
                        } else {
                            &zero_row[..]
                        };
                        bf16::pack_pair(lo, hi, &mut packed_h[p * tp + pad..p * tp + pad + t]);
                    }
                    let terms: Vec<Term> = taps
                        .iter()
                        .enumerate()
                        .map(|(j, a)| Term {
                            a,
                            // SAFETY: j·dilation ≤ (k − 1)·dilation = tp − t,
                            // inside `packed_h`.
                            b: unsafe { packed_h.as_ptr().add(j * layer.dilation) },
                            ldb: tp,
                        })
                        .collect();
                    // SAFETY: bf16 is available (the taps exist only then);
                    // each view's last read, (bp − 1)·tp + j·dilation + t −
                    // 1, is below bp·tp since j·dilation + t ≤ tp; `out` is
                    // `g × t`.
                    unsafe { bf16::gemm(&terms, g, t, out.as_mut_ptr(), t, false, parallel) };
                } else {
                    let kg = layer.k * g;
                    z.clear();
                    z.resize(kg * t, 0.0);
                    // SAFETY: `local` is `kg × bn`, `h` `bn × t`, `z` `kg × t`.
                    unsafe {
                        gemm_accumulate(
                            (kg, t, bn),
                            &mut z,
                            layer.local.as_ptr(),
                            bn,
                            h.as_ptr(),
                            t,
                            par,
                        )
                    };
                    for o in 0..g {
                        let row = &mut out[o * t..(o + 1) * t];
                        for j in 0..layer.k {
                            let zr = &z[(j * g + o) * t..(j * g + o + 1) * t];
                            let shift = j as isize - half as isize;
                            let off = shift * layer.dilation as isize;
                            let lo = (-off).max(0) as usize;
                            let hi = (t as isize - off.max(0)).max(0) as usize;
                            for i in lo..hi {
                                row[i] += zr[(i as isize + off) as usize];
                            }
                        }
                    }
                }
                for o in 0..g {
                    let row = &mut out[o * t..(o + 1) * t];
                    for s in 0..nseg {
                        let m = mask[o * nseg + s];
                        let end = ((s + 1) * self.seg_len).min(t);
                        for v in &mut row[s * self.seg_len..end] {
                            *v *= m;
                        }
                    }
                }
            }
            let next = if bi + 1 == nblocks {
                &mut dst[..]
            } else {
                input.clear();
                input.resize(transit.cout * t, 0.0);
                &mut input[..]
            };
            if let Some(w) = &transit.bf16 {
                bf16::pack_rows_bn_relu(&buf, total, t, &transit.s, &transit.b, &mut packed);
                let term = [Term {
                    a: w,
                    b: packed.as_ptr(),
                    ldb: t,
                }];
                // SAFETY: as above; `next` is `cout × t`.
                unsafe {
                    bf16::gemm(
                        &term,
                        transit.cout,
                        t,
                        next.as_mut_ptr(),
                        t,
                        false,
                        parallel,
                    )
                };
            } else {
                next.fill(0.0);
                bn_relu_into(&buf, &transit.s, &transit.b, t, &mut act);
                // SAFETY: `w` is `cout × total`, `act` `total × t`.
                unsafe {
                    gemm_accumulate(
                        (transit.cout, t, total),
                        next,
                        transit.w.as_ptr(),
                        total,
                        act.as_ptr(),
                        t,
                        par,
                    )
                };
            }
        }
    }

    /// The layer's context mask, `(growth, segments)`: sigmoid(MLP(global
    /// mean + segment mean)) of the bottleneck `h` `(bn, t)`.
    fn mask(&self, layer: &HostLayer, h: &[f32], t: usize) -> Vec<f32> {
        let (g, bn, half) = (self.growth, self.bn, self.bn / 2);
        let nseg = t.div_ceil(self.seg_len);
        let mut ctx = vec![0f32; bn * nseg];
        for c in 0..bn {
            let row = &h[c * t..(c + 1) * t];
            let global = row.iter().sum::<f32>() / t as f32;
            for s in 0..nseg {
                let seg = &row[s * self.seg_len..((s + 1) * self.seg_len).min(t)];
                ctx[c * nseg + s] = seg.iter().sum::<f32>() / seg.len() as f32 + global;
            }
        }
        let mut hid = vec![0f32; half * nseg];
        for o in 0..half {
            let w = &layer.m1w[o * bn..(o + 1) * bn];
            for s in 0..nseg {
                let v: f32 = (0..bn).map(|c| w[c] * ctx[c * nseg + s]).sum();
                hid[o * nseg + s] = (v + layer.m1b[o]).max(0.0);
            }
        }
        let mut mask = vec![0f32; g * nseg];
        for o in 0..g {
            let w = &layer.m2w[o * half..(o + 1) * half];
            for s in 0..nseg {
                let v: f32 = (0..half).map(|c| w[c] * hid[c * nseg + s]).sum();
                mask[o * nseg + s] = 1.0 / (1.0 + (-(v + layer.m2b[o])).exp());
            }
        }
        mask
    }
}

/// `dst = max(0, x · scale + shift)` per channel row of `x` `(c, t)`.
fn bn_relu_into(x: &[f32], scale: &[f32], shift: &[f32], t: usize, dst: &mut Vec<f32>) {
    dst.clear();
    dst.reserve(x.len());
    for (c, row) in x.chunks(t).enumerate() {
        let (s, b) = (scale[c], shift[c]);
        dst.extend(row.iter().map(|&v| (v * s + b).max(0.0)));
    }
}
