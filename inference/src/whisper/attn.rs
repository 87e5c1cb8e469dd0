//! Fused single-query attention for decode steps on the CPU.
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
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent accumulators so the compiler vectorises the loop.
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        for l in 0..8 {
            acc[l] += a[c * 8 + l] * b[c * 8 + l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in chunks * 8..a.len() {
        s += a[i] * b[i];
    }
    s
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
        if one != 1 || (bk, hk, hdk) != (b, h, hd) || lv.shape() != lk.shape() {
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
        let contiguous = |l: &Layout| l.contiguous_offsets();
        let (Some((q0, _)), Some((k0, _)), Some((v0, _))) =
            (contiguous(lq), contiguous(lk), contiguous(lv))
        else {
            candle_core::bail!("decode attention expects contiguous inputs");
        };
        let (q, k, v) = (&q[q0..], &k[k0..], &v[v0..]);
        let scale = 1.0 / (hd as f32).sqrt();
        let mut out = vec![0f32; b * h * hd];
        out.par_chunks_mut(hd).enumerate().for_each_init(
            || vec![0f32; t],
            |scores, (i, o)| {
                let r = i / h;
                let qv = &q[i * hd..(i + 1) * hd];
                let kb = &k[i * t * hd..(i + 1) * t * hd];
                let vb = &v[i * t * hd..(i + 1) * t * hd];
                let valid = |j: usize| match self.mask {
                    Some(m) => j < m.prompt_lens[r] || j >= m.prefill_len,
                    None => true,
                };
                let mut max = f32::NEG_INFINITY;
                for (j, s) in scores.iter_mut().enumerate() {
                    *s = if valid(j) {
                        dot(qv, &kb[j * hd..(j + 1) * hd]) * scale
                    } else {
                        f32::NEG_INFINITY
                    };
                    max = max.max(*s);
                }
                let mut sum = 0f32;
                for s in scores.iter_mut() {
                    *s = (*s - max).exp();
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
            },
        );
        Ok((CpuStorage::F32(out), Shape::from((b, h, 1, hd))))
    }
}

/// Attention of one query per (row, head) over `[b, h, t, hd]` keys/values.
/// Returns `None` when the fused kernel does not apply (not CPU f32), so the
/// caller uses the generic path.
pub fn decode_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&RowMask>,
) -> candle_core::Result<Option<Tensor>> {
    if !q.device().is_cpu() || q.dtype() != candle_core::DType::F32 || q.dim(2)? != 1 {
        return Ok(None);
    }
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    q.apply_op3_no_bwd(&k, &v, &DecodeAttention { mask })
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
        let fused = decode_attention(&q, &k, &v, Some(&rows)).unwrap().unwrap();
        let mask = rows.to_tensor(t, &dev, DType::F32).unwrap();
        let w = ((q.matmul(&k.t().unwrap()).unwrap() * (1.0 / (hd as f64).sqrt())).unwrap())
            .broadcast_add(&mask)
            .unwrap();
        let w = candle_nn::ops::softmax_last_dim(&w).unwrap();
        let generic = w.matmul(&v).unwrap();
        let d = crate::testing::max_abs(&(fused - generic).unwrap());
        assert!(d < 1e-5, "{d}");
    }
}
