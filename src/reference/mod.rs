//! Plain CPU implementations of every kernel, written to be read: the specification that the
//! GPU kernels are tested against. Row-major f32 everywhere; shapes in the comments.

pub mod gemma;

pub use crate::config::AttentionShape;
use half::f16;

/// y[v, r] = sum_k W[r, k] x[v, k].  w: [rows, k], x: [n, k] -> [n, rows].
pub fn matmul(w: &[f32], x: &[f32], rows: usize, k: usize) -> Vec<f32> {
    let n = x.len() / k;
    let mut y = vec![0.0f32; n * rows];
    for v in 0..n {
        let xv = &x[v * k..(v + 1) * k];
        for r in 0..rows {
            let wr = &w[r * k..(r + 1) * k];
            y[v * rows + r] = wr.iter().zip(xv).map(|(a, b)| a * b).sum();
        }
    }
    y
}

/// The decode form of [`matmul`]: the same product for one (or a few) vectors.
pub fn matvec(w: &[f32], x: &[f32], rows: usize, k: usize) -> Vec<f32> {
    matmul(w, x, rows, k)
}

/// Weights per block of [`quantize_q8`].
pub const Q8_BLOCK: usize = 32;

/// The scale d of a [`quantize_q8`] block whose largest magnitude is `amax`, and the
/// reciprocal its codes are rounded from (0 for an all-zero block).
pub fn q8_scale(amax: f32) -> (f32, f32) {
    let d = amax * (1.0 / 127.0);
    (d, if d > 0.0 { 1.0 / d } else { 0.0 })
}

/// Activations as the GPUs' integer products see them (matvec with quantized activations):
/// each block of 32 as int8 codes c = round(x / d) with d = max |x| / 127 (GGML's q8_1), and
/// returned as the values c d. Rows of x are whole blocks.
pub fn quantize_q8(x: &[f32]) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    for block in x.chunks(Q8_BLOCK) {
        let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let (d, id) = q8_scale(amax);
        out.extend(
            block
                .iter()
                .map(|v| (v * id).round_ties_even().clamp(-127.0, 127.0) * d),
        );
    }
    out
}

/// Gemma's RMSNorm of each row of x [n, d]: x / sqrt(mean(x^2) + eps) * (w_offset + w).
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, w_offset: f32) -> Vec<f32> {
    let d = w.len();
    let mut y = vec![0.0f32; x.len()];
    for (xr, yr) in x.chunks(d).zip(y.chunks_mut(d)) {
        let mean_sq = xr.iter().map(|v| v * v).sum::<f32>() / d as f32;
        let scale = 1.0 / (mean_sq + eps).sqrt();
        for i in 0..d {
            yr[i] = xr[i] * scale * (w_offset + w[i]);
        }
    }
    y
}

/// (cos, sin) of pos * inv_freq\[i\] for pos < max_pos and i < head_dim / 2, laid out
/// [max_pos, head_dim / 2]. As transformers: inv_freq = 1 / theta^(2i / head_dim), divided by
/// `factor` for linear scaling (1 for none), and the angle pos * inv_freq rounded to f32; cos
/// and sin are then taken exactly (f64) and rounded.
pub fn rope_table(theta: f32, factor: f32, head_dim: usize, max_pos: usize) -> Vec<[f32; 2]> {
    let half = head_dim / 2;
    let inv_freq: Vec<f32> = (0..half)
        .map(|i| 1.0 / theta.powf((2 * i) as f32 / head_dim as f32) / factor)
        .collect();
    let mut table = Vec::with_capacity(max_pos * half);
    for pos in 0..max_pos {
        for f in &inv_freq {
            let angle = (pos as f32 * f) as f64;
            table.push([angle.cos() as f32, angle.sin() as f32]);
        }
    }
    table
}

/// Rotate-half RoPE of x [n, heads, head_dim] in place, token t at positions\[t\].
pub fn rope(x: &mut [f32], positions: &[u32], heads: usize, head_dim: usize, table: &[[f32; 2]]) {
    let half = head_dim / 2;
    for (t, &pos) in positions.iter().enumerate() {
        for h in 0..heads {
            let v = &mut x[(t * heads + h) * head_dim..][..head_dim];
            for i in 0..half {
                let [c, s] = table[pos as usize * half + i];
                let (x0, x1) = (v[i], v[i + half]);
                v[i] = x0 * c - x1 * s;
                v[i + half] = x1 * c + x0 * s;
            }
        }
    }
}

/// Gemma 2 attention of q [n, heads, head_dim] against keys and values by absolute position,
/// k and v [positions, kv_heads, head_dim] (keys already rotated). Returns [n, heads, head_dim].
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    positions: &[u32],
    s: &AttentionShape,
) -> Vec<f32> {
    let hd = s.head_dim;
    let group = s.heads / s.kv_heads;
    let mut out = vec![0.0f32; q.len()];
    for (t, &pos) in positions.iter().enumerate() {
        let pos = pos as usize;
        let first = match s.window {
            Some(w) => (pos + 1).saturating_sub(w),
            None => 0,
        };
        for h in 0..s.heads {
            let g = h / group;
            let qh = &q[(t * s.heads + h) * hd..][..hd];
            let key = |j: usize| &k[(j * s.kv_heads + g) * hd..][..hd];
            let val = |j: usize| &v[(j * s.kv_heads + g) * hd..][..hd];
            let scores: Vec<f32> = (first..=pos)
                .map(|j| {
                    let dot: f32 = qh.iter().zip(key(j)).map(|(a, b)| a * b).sum();
                    soft_cap_value(dot * s.scale, s.softcap)
                })
                .collect();
            let max = scores.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
            let weights: Vec<f32> = scores.iter().map(|x| (x - max).exp()).collect();
            let total: f32 = weights.iter().sum();
            let o = &mut out[(t * s.heads + h) * hd..][..hd];
            for (j, w) in (first..=pos).zip(&weights) {
                for (od, vd) in o.iter_mut().zip(val(j)) {
                    *od += w / total * vd;
                }
            }
        }
    }
    out
}

/// What the f16 KV cache keeps of a value: round to nearest even f16.
pub fn kv_f16_round(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| f16::from_f32(v).to_f32()).collect()
}

/// kv_store: token t's row of `rows` [n, kv_dim] into `cache` [capacity, kv_dim] at slot
/// positions\[t\] % capacity, rounded to f16 when the cache holds f16 (shaders/kv_store.wgsl).
pub fn kv_store(cache: &mut [f32], rows: &[f32], positions: &[u32], kv_dim: usize, f16: bool) {
    let capacity = cache.len() / kv_dim;
    for (row, &p) in rows.chunks(kv_dim).zip(positions) {
        let slot = &mut cache[p as usize % capacity * kv_dim..][..kv_dim];
        slot.copy_from_slice(row);
        if f16 {
            slot.copy_from_slice(&kv_f16_round(slot));
        }
    }
}

fn gelu_tanh(g: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * g * (1.0 + (SQRT_2_OVER_PI * (g + 0.044715 * g * g * g)).tanh())
}

/// gelu_tanh(gate) * up, rows of gate_up [n, 2d] holding gate then up. Returns [n, d].
pub fn geglu(gate_up: &[f32], d: usize) -> Vec<f32> {
    gate_up
        .chunks(2 * d)
        .flat_map(|row| (0..d).map(move |i| gelu_tanh(row[i]) * row[d + i]))
        .collect()
}

/// acc += x.
pub fn add(acc: &mut [f32], x: &[f32]) {
    for (a, b) in acc.iter_mut().zip(x) {
        *a += b;
    }
}

fn soft_cap_value(x: f32, cap: Option<f32>) -> f32 {
    match cap {
        Some(c) => c * (x / c).tanh(),
        None => x,
    }
}

/// x = cap * tanh(x / cap) in place.
pub fn soft_cap(x: &mut [f32], cap: f32) {
    for v in x {
        *v = soft_cap_value(*v, Some(cap));
    }
}

/// Rows ids of the table e [rows, d], times scale. Returns [ids.len(), d].
pub fn embedding(e: &[f32], d: usize, ids: &[u32], scale: f32) -> Vec<f32> {
    ids.iter()
        .flat_map(|&id| e[id as usize * d..][..d].iter().map(move |v| v * scale))
        .collect()
}

/// The k largest values with their indices, largest first; equal values by smaller index.
pub fn top_k(x: &[f32], k: usize) -> Vec<(f32, u32)> {
    let mut order: Vec<u32> = (0..x.len() as u32).collect();
    order.sort_by(|&a, &b| x[b as usize].total_cmp(&x[a as usize]).then(a.cmp(&b)));
    order
        .into_iter()
        .take(k)
        .map(|i| (x[i as usize], i))
        .collect()
}

/// 1 if any value of x is NaN or infinite, else 0 (the final norms' flag of a row:
/// shaders/rms_norm.wgsl, shaders/residual_norm.wgsl).
pub fn non_finite(x: &[f32]) -> u32 {
    x.iter().any(|v| !v.is_finite()) as u32
}

/// The fma yardstick (shaders/fma.wgsl): per invocation, the sum of its `chains` vec4 chains
/// a = fma(a, m, c) after `iters` steps, chain j's lane l starting at
/// ((4i + l) % 1024) / 1024 + j.
pub fn fma(invocations: usize, chains: usize, (iters, m, c): (u32, f32, f32)) -> Vec<f32> {
    (0..invocations)
        .map(|i| {
            let mut sum = [0.0f32; 4];
            for j in 0..chains {
                for (l, s) in sum.iter_mut().enumerate() {
                    let mut a = ((4 * i + l) % 1024) as f32 / 1024.0 + j as f32;
                    for _ in 0..iters {
                        a = a.mul_add(m, c);
                    }
                    *s += a;
                }
            }
            sum.iter().sum()
        })
        .collect()
}

/// The log-softmax of each row of `logits` [rows, vocab] at `ids` [rows, m], in f64: per row
/// its log-sum-exp, then `m` log-probabilities (shaders/log_prob.wgsl's `out`).
pub fn log_prob(logits: &[f32], vocab: usize, ids: &[u32], m: usize) -> Vec<f64> {
    logits
        .chunks_exact(vocab)
        .zip(ids.chunks_exact(m))
        .flat_map(|(row, ids)| {
            let max = row.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v)) as f64;
            let lse = max
                + row
                    .iter()
                    .map(|&v| (v as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            std::iter::once(lse).chain(ids.iter().map(move |&i| row[i as usize] as f64 - lse))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every entry lands within half a step d of its value, the largest magnitude on ±127 d,
    /// and an all-zero block stays zero.
    #[test]
    fn quantize_q8_rounds_each_block_to_its_own_step() {
        let x: Vec<f32> = (0..96)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * [0.01, 3.0, 0.0][i / 32])
            .collect();
        let q = quantize_q8(&x);
        for (xb, qb) in x.chunks(Q8_BLOCK).zip(q.chunks(Q8_BLOCK)) {
            let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let (d, _) = q8_scale(amax);
            for (a, b) in xb.iter().zip(qb) {
                assert!(
                    (a - b).abs() <= d * 0.5 * (1.0 + 1e-6),
                    "{a} -> {b}, step {d}"
                );
            }
            let top = xb.iter().position(|v| v.abs() == amax).unwrap();
            assert_eq!(qb[top], xb[top].signum() * 127.0 * d);
        }
        assert!(q[64..].iter().all(|&v| v == 0.0));
    }
}
