//! Attention for a decode step (one query per row) on the CPU, reading the cache in place and
//! visiting only the keys a row may see.
//!
//! Continuous batching promises that a request's tokens do not depend on the batch it runs in.
//! A batch row is left-padded to the longest row, and the generic tensor code reduces over every
//! slot, padding included, in an order that depends on where the row's own slots start: after
//! 50-odd slots of padding its softmax and weighted sum rounded differently from the same row
//! decoded alone (2e-7 in the logits, enough to change a top-p draw). Here each (row, head)
//! skips hidden slots and reduces over its visible ones in slot order, so a row's arithmetic is
//! the same whatever padding or company it has. It also reads the keys and values where the
//! cache holds them, with no copy.

use burn::prelude::*;
use burn::tensor::DType;
use rayon::prelude::*;

use super::{LANES, flex, sum_lanes};

/// `softmax(q·kᵀ·scale)·v` for one query per row: `q: [batch, heads, 1, dim]`, keys and values
/// `[batch, kv_heads, keys, dim]` (views of the cache are read in place), `mask`
/// (`[batch, 1, 1, keys]`, true = hidden) hiding slots; returns `[batch, 1, heads·dim]`.
/// `None` when the keys or values are not f32 with contiguous rows (the generic path runs).
pub(crate) fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: Option<Tensor<B, 4, Bool>>,
    scale: f32,
) -> Option<Tensor<B, 3>> {
    let device = q.device();
    let [batch, heads, seq, dim] = q.dims();
    let [_, kv_heads, keys, _] = k.dims();
    if seq != 1 || k.dtype() != DType::F32 || v.dtype() != DType::F32 {
        return None;
    }
    let (k, v) = (flex(k)?, flex(v)?);
    let (k, v) = (CacheView::new(&k)?, CacheView::new(&v)?);
    let q = super::host_f32(q);
    let hidden = mask.map(super::host_bools);
    let shape = Shape {
        batch,
        heads,
        kv_heads,
        keys,
        dim,
    };
    let out = attend(&shape, &q, &k, &v, hidden.as_deref(), scale);
    Some(Tensor::from_data(
        TensorData::new(out, [batch, 1, heads * dim]),
        &device,
    ))
}

/// The sizes `attend` works on.
#[derive(Clone, Copy)]
struct Shape {
    batch: usize,
    heads: usize,
    kv_heads: usize,
    keys: usize,
    dim: usize,
}

/// `attention`'s arithmetic, `[batch, heads·dim]` out; not generic, so it is compiled (and
/// optimised) once, in this crate.
fn attend(
    s: &Shape,
    q: &[f32],
    k: &CacheView,
    v: &CacheView,
    hidden: Option<&[bool]>,
    scale: f32,
) -> Vec<f32> {
    let Shape {
        batch,
        heads,
        kv_heads,
        keys,
        dim,
    } = *s;
    let group = heads / kv_heads;
    let mut out = vec![0.0f32; batch * heads * dim];
    out.par_chunks_mut(dim).enumerate().for_each(|(item, out)| {
        let (row, head) = (item / heads, item % heads);
        let kv_head = head / group;
        let visible = |slot: usize| hidden.is_none_or(|h| !h[row * keys + slot]);
        let query = &q[item * dim..][..dim];
        let slots: Vec<usize> = (0..keys).filter(|&s| visible(s)).collect();
        let mut probs: Vec<f32> = slots
            .iter()
            .map(|&s| dot(query, k.row(row, kv_head, s, dim)) * scale)
            .collect();
        let max = probs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if max == f32::NEG_INFINITY {
            return; // nothing visible (no mask phi-zoo builds does this): attend to nothing
        }
        let mut sum = 0.0f32;
        for p in probs.iter_mut() {
            *p = (*p - max).exp();
            sum += *p;
        }
        for (&s, &p) in slots.iter().zip(&probs) {
            let p = p / sum;
            for (o, &x) in out.iter_mut().zip(v.row(row, kv_head, s, dim)) {
                *o += p * x;
            }
        }
    });
    out
}

/// Keys or values `[batch, kv_heads, keys, dim]` where the CPU backend holds them.
struct CacheView<'a> {
    values: &'a [f32],
    start: isize,
    strides: [isize; 3],
}

impl<'a> CacheView<'a> {
    /// `None` unless each (row, head, slot) is `dim` contiguous floats.
    fn new(tensor: &'a burn_flex::FlexTensor) -> Option<Self> {
        let layout = tensor.layout();
        let s = layout.strides();
        if s.len() != 4 || s[3] != 1 {
            return None;
        }
        Some(Self {
            values: tensor.storage::<f32>(),
            start: layout.start_offset() as isize,
            strides: [s[0], s[1], s[2]],
        })
    }

    fn row(&self, row: usize, head: usize, slot: usize, dim: usize) -> &'a [f32] {
        let [a, b, c] = self.strides;
        let at = self.start + row as isize * a + head as isize * b + slot as isize * c;
        &self.values[at as usize..][..dim]
    }
}

/// `a·b` in eight running lanes, then the lanes in one fixed order, then the tail.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let body = a.len() - a.len() % LANES;
    let mut lanes = [0.0f32; LANES];
    for (x, y) in a[..body]
        .chunks_exact(LANES)
        .zip(b[..body].chunks_exact(LANES))
    {
        for l in 0..LANES {
            lanes[l] += x[l] * y[l];
        }
    }
    let mut sum = sum_lanes(&lanes);
    for (x, y) in a[body..].iter().zip(&b[body..]) {
        sum += x * y;
    }
    sum
}

#[cfg(test)]
mod tests {
    use burn::prelude::*;
    use burn::tensor::Distribution;

    type B = burn::backend::Flex;

    /// Against the generic tensor code, on cache-like views (a slice of a larger buffer) with
    /// padding masked; and a row's result is the same with other rows and padding around it.
    #[test]
    fn equals_the_tensor_code_and_a_row_does_not_depend_on_its_padding() {
        let device = Default::default();
        let (heads, dim, keys) = (4, 12, 37);
        let buffer = |seed| {
            Tensor::<B, 4>::random([3, heads, 50, dim], Distribution::Default, &device)
                .mul_scalar(seed)
        };
        let (k_all, v_all) = (buffer(1.0), buffer(0.5));
        let k = k_all.clone().slice([0..3, 0..heads, 0..keys, 0..dim]);
        let v = v_all.clone().slice([0..3, 0..heads, 0..keys, 0..dim]);
        let q = Tensor::<B, 4>::random([3, heads, 1, dim], Distribution::Default, &device);
        let pads = [0usize, 5, 20];
        let hidden: Vec<bool> = pads
            .iter()
            .flat_map(|&p| (0..keys).map(move |s| s < p))
            .collect();
        let mask =
            Tensor::<B, 4, Bool>::from_data(TensorData::new(hidden, [3, 1, 1, keys]), &device);
        let fast = super::attention(q.clone(), k.clone(), v.clone(), Some(mask.clone()), 0.3)
            .unwrap()
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let dropout = burn::nn::DropoutConfig::new(0.0).init();
        let plain =
            crate::model::ops::tensor::attention(q.clone(), k, v, Some(mask), &dropout, 0.3, None)
                .swap_dims(1, 2)
                .reshape([3, 1, heads * dim])
                .into_data()
                .to_vec::<f32>()
                .unwrap();
        let diff = fast
            .iter()
            .zip(&plain)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(diff < 1e-5, "{diff}");
        // Row 2 alone, without its padding: the same bits.
        let alone = super::attention(
            q.slice([2..3, 0..heads, 0..1, 0..dim]),
            k_all.slice([2..3, 0..heads, 20..keys, 0..dim]),
            v_all.slice([2..3, 0..heads, 20..keys, 0..dim]),
            None,
            0.3,
        )
        .unwrap()
        .into_data()
        .to_vec::<f32>()
        .unwrap();
        assert_eq!(alone, fast[2 * heads * dim..]);
    }
}
