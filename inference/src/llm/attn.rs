//! Attention over per-sequence KV caches.
//!
//! The tokens of one forward step belong to several sequences at different
//! positions, so attention is the one place the packed token matrix is split
//! up again. Two paths compute the same thing:
//!
//! - [`Path::CpuKernel`]: one task per (token, kv head), reading keys and
//!   values straight out of the cache rows once for all the query heads
//!   that share them. On CPU this beats building
//!   per-sequence score matrices with tensor ops, whose per-op overhead
//!   dominates for a handful of query rows.
//! - [`Path::Generic`]: tensor ops per sequence (matmul, mask, softmax,
//!   matmul), for CUDA, and as the reference the kernel is tested against.

use candle_core::Tensor;

use super::model::{cache_append, cache_slices, cache_view, SeqStep};
use crate::error::InferenceError;

type Result<T> = std::result::Result<T, InferenceError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Path {
    CpuKernel,
    Generic,
}

pub(crate) fn default_path(dev: &candle_core::Device) -> Path {
    if dev.is_cpu() {
        Path::CpuKernel
    } else {
        Path::Generic
    }
}

/// Appends this step's keys/values of layer `il` to each sequence's cache,
/// then attends. `q` is `[t, heads, hd]`, `k`/`v` `[t, kv_heads, hd]`;
/// `spans[i]` = (first row in the packed matrix, row count, start position)
/// of `steps[i]`. Returns `[t, heads * hd]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attend(
    path: Path,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    steps: &mut [SeqStep<'_>],
    spans: &[(usize, usize, usize)],
    il: usize,
    window: Option<usize>,
    scale: f32,
) -> Result<Tensor> {
    for (s, &(off, n, _)) in steps.iter_mut().zip(spans) {
        cache_append(s.cache, il, &k.narrow(0, off, n)?, &v.narrow(0, off, n)?)?;
    }
    let steps: &[SeqStep<'_>] = steps;
    match path {
        Path::CpuKernel if q.device().is_cpu() => cpu(q, k, steps, spans, il, window, scale),
        _ => generic(q, k, steps, spans, il, window, scale),
    }
}

/// Whether key position `j` is visible from query position `p`
/// (causal, and inside the window: llama.cpp keeps `p - j < window`).
#[inline]
fn first_visible(p: usize, window: Option<usize>) -> usize {
    window.map_or(0, |w| (p + 1).saturating_sub(w))
}

fn cpu(
    q: &Tensor,
    k: &Tensor,
    steps: &[SeqStep<'_>],
    spans: &[(usize, usize, usize)],
    il: usize,
    window: Option<usize>,
    scale: f32,
) -> Result<Tensor> {
    let (t, nh, hd) = q.dims3()?;
    let nkv = k.dim(1)?;
    let groups = nh / nkv;
    let qs = q.flatten_all()?.to_vec1::<f32>()?;
    let mut caches = Vec::with_capacity(steps.len());
    for s in steps {
        caches.push(
            cache_slices(s.cache, il)
                .ok_or_else(|| InferenceError::Backend("CPU kernel on a device cache".into()))?,
        );
    }
    // (sequence, position) of each packed token.
    let mut tok = Vec::with_capacity(t);
    for (si, &(_, n, start)) in spans.iter().enumerate() {
        tok.extend((0..n).map(|i| (si, start + i)));
    }
    let row = nkv * hd;
    // Long prompt chunks go through gemm instead: the kernel's cost grows
    // with chunk length times context, a matrix product's far more slowly.
    let min_rows = gemm_min_rows();
    let long: Vec<bool> = spans.iter().map(|sp| sp.1 >= min_rows).collect();
    let mut out = vec![0f32; t * nh * hd];
    let out_ptr = out.as_mut_ptr() as usize;
    // One item per (token, kv head): the `groups` query heads sharing that kv
    // head read each key and value row once. On candle's barrier pool, like
    // the matmuls (see q8.rs).
    candle_core::utils::barrier_pool().execute_chunked(t * nkv, |range| {
        let mut scores: Vec<f32> = Vec::new();
        for item in range {
            let (ti, kvh) = (item / nkv, item % nkv);
            let (si, pos) = tok[ti];
            if long[si] {
                continue;
            }
            let (kc, vc) = caches[si];
            let lo = first_visible(pos, window);
            let n = pos + 1 - lo;
            let h0 = kvh * groups;
            // SAFETY: item (ti, kvh) owns output rows h0..h0+groups of token ti alone.
            let o = unsafe {
                std::slice::from_raw_parts_mut(
                    (out_ptr as *mut f32).add((ti * nh + h0) * hd),
                    groups * hd,
                )
            };
            let qg = &qs[(ti * nh + h0) * hd..(ti * nh + h0 + groups) * hd];
            scores.clear();
            scores.resize(groups * n, 0.0);
            for (jj, j) in (lo..=pos).enumerate() {
                let kr = &kc[j * row + kvh * hd..j * row + (kvh + 1) * hd];
                for g in 0..groups {
                    scores[g * n + jj] = dot(&qg[g * hd..(g + 1) * hd], kr) * scale;
                }
            }
            for g in 0..groups {
                let sg = &mut scores[g * n..(g + 1) * n];
                let max = sg.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0f32;
                for s in sg.iter_mut() {
                    *s = (*s - max).exp();
                    sum += *s;
                }
                let inv = 1.0 / sum;
                sg.iter_mut().for_each(|s| *s *= inv);
            }
            for (jj, j) in (lo..=pos).enumerate() {
                let vr = &vc[j * row + kvh * hd..j * row + (kvh + 1) * hd];
                for g in 0..groups {
                    let w = scores[g * n + jj];
                    for (od, &vd) in o[g * hd..(g + 1) * hd].iter_mut().zip(vr) {
                        *od += w * vd;
                    }
                }
            }
        }
    });
    for (si, &span) in spans.iter().enumerate() {
        if long[si] {
            let o = generic_one(q, k, &steps[si], span, il, window, scale)?;
            let o = o.flatten_all()?.to_vec1::<f32>()?;
            out[span.0 * nh * hd..(span.0 + span.1) * nh * hd].copy_from_slice(&o);
        }
    }
    Ok(Tensor::from_vec(out, (t, nh * hd), q.device())?)
}

/// Prompt chunks at least this long take the tensor (gemm) path on CPU
/// (`EARSHOT_ATTN_GEMM_ROWS` overrides, for measuring).
fn gemm_min_rows() -> usize {
    static ROWS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *ROWS.get_or_init(|| {
        std::env::var("EARSHOT_ATTN_GEMM_ROWS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(32)
    })
}

/// Dot product in 8 independent lanes so the compiler vectorizes it.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

fn generic(
    q: &Tensor,
    k: &Tensor,
    steps: &[SeqStep<'_>],
    spans: &[(usize, usize, usize)],
    il: usize,
    window: Option<usize>,
    scale: f32,
) -> Result<Tensor> {
    let mut outs = Vec::with_capacity(steps.len());
    for (s, &span) in steps.iter().zip(spans) {
        outs.push(generic_one(q, k, s, span, il, window, scale)?);
    }
    Ok(Tensor::cat(&outs, 0)?.to_dtype(q.dtype())?.contiguous()?)
}

/// One sequence's attention with tensor ops: `[n, heads * hd]`.
fn generic_one(
    q: &Tensor,
    k: &Tensor,
    s: &SeqStep<'_>,
    (off, n, start): (usize, usize, usize),
    il: usize,
    window: Option<usize>,
    scale: f32,
) -> Result<Tensor> {
    let (_, nh, hd) = q.dims3()?;
    let nkv = k.dim(1)?;
    let groups = nh / nkv;
    let len = start + n;
    let qs = (q.narrow(0, off, n)?.transpose(0, 1)?.contiguous()? * scale as f64)?;
    let (kc, vc) = cache_view(s.cache, il, len, nkv, hd)?;
    let expand = |x: Tensor| -> Result<Tensor> {
        // [len, nkv, hd] -> [nh, len, hd], each kv head shared by `groups` q heads.
        let x = x.to_dtype(qs.dtype())?.transpose(0, 1)?;
        Ok(x.unsqueeze(1)?
            .expand((nkv, groups, len, hd))?
            .reshape((nh, len, hd))?)
    };
    let kx = expand(kc)?;
    let vx = expand(vc)?;
    let mut mask = Vec::with_capacity(n * len);
    for i in 0..n {
        let p = start + i;
        let lo = first_visible(p, window);
        mask.extend((0..len).map(|j| {
            if j >= lo && j <= p {
                0f32
            } else {
                f32::NEG_INFINITY
            }
        }));
    }
    let mask = Tensor::from_vec(mask, (1, n, len), q.device())?.to_dtype(qs.dtype())?;
    let scores = qs.matmul(&kx.t()?)?.broadcast_add(&mask)?;
    let w = candle_nn::ops::softmax_last_dim(&scores)?;
    let o = w.matmul(&vx)?; // [nh, n, hd]
    Ok(o.transpose(0, 1)?.reshape((n, nh * hd))?)
}
