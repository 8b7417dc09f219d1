//! The token embedding: rows of a `[vocab, hidden]` table, f32 or packed for CPU inference.
//!
//! phi-1.5's table is 51200 × 2048: 420 MB in f32, a fifth of a `Q8_0` model's memory. Packed
//! (in the linear layers' format, as llama.cpp's files store it), a pass dequantizes only the
//! rows of its ids.

use std::sync::Arc;

use burn::module::Param;
use burn::prelude::*;

use super::packed::{PackedWeight, WeightFormat};
use crate::error::{PhiError, Result};

/// Token ids → embeddings.
#[derive(Module, Debug)]
pub struct TokenEmbedding<B: Backend> {
    /// The table, `[vocab, hidden]` (empty while `packed` holds it).
    pub weight: Param<Tensor<B, 2>>,
    /// The table packed for CPU inference, when it is (not saved in burn records, not trained).
    #[module(skip)]
    pub packed: Option<Arc<PackedWeight>>,
}

impl<B: Backend> TokenEmbedding<B> {
    /// An f32 table.
    pub fn new(weight: Tensor<B, 2>) -> Self {
        Self {
            weight: Param::from_tensor(weight),
            packed: None,
        }
    }

    /// A packed table (`[vocab, hidden]` rows).
    pub fn from_packed(table: PackedWeight, device: &B::Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::empty([0, 0], device)),
            packed: Some(Arc::new(table)),
        }
    }

    /// `ids: [batch, seq]` → `[batch, seq, hidden]`.
    pub fn forward(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let Some(table) = &self.packed else {
            return burn::tensor::module::embedding(self.weight.val(), ids);
        };
        let device = ids.device();
        let [batch, seq] = ids.dims();
        let [vocab, hidden] = table.dims();
        let mut out = vec![0.0f32; batch * seq * hidden];
        for (id, row) in ids
            .into_data()
            .iter::<i64>()
            .zip(out.chunks_exact_mut(hidden))
        {
            // Ids are checked against the vocabulary before a pass (`Phi::ids_tensor`).
            let id = usize::try_from(id).unwrap_or(usize::MAX).min(vocab - 1);
            table.dequantize_row(id, row);
        }
        Tensor::from_data(TensorData::new(out, [batch, seq, hidden]), &device)
    }

    /// The table in f32, `[vocab, hidden]` (dequantized when packed).
    pub fn table(&self) -> Tensor<B, 2> {
        match &self.packed {
            Some(table) => {
                let device = self.weight.val().device();
                Tensor::from_data(TensorData::new(table.dequantize(), table.dims()), &device)
            }
            None => self.weight.val(),
        }
    }

    /// How the table is stored.
    pub fn format(&self) -> WeightFormat {
        self.packed
            .as_ref()
            .map_or(WeightFormat::F32, |p| p.format())
    }

    /// The same table in `format` (f32 unpacks it).
    pub fn into_format(self, format: WeightFormat) -> Result<Self> {
        if format == self.format() {
            return Ok(self);
        }
        let table = self.table();
        let device = table.device();
        if format == WeightFormat::F32 {
            return Ok(Self::new(table));
        }
        let [vocab, hidden] = table.dims();
        let values: Vec<f32> = table
            .into_data()
            .into_vec()
            .map_err(|e| PhiError::Input(format!("the embedding's values: {e:?}")))?;
        let packed = PackedWeight::pack(&values, [vocab, hidden], format)
            .map_err(|e| PhiError::Input(format!("model.embed_tokens.weight: {e}")))?;
        Ok(Self::from_packed(packed, &device))
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;

    /// A packed table embeds each id as the f32 table of its dequantized values does, and
    /// `table` gives those values back.
    #[test]
    fn a_packed_table_embeds_its_dequantized_rows() {
        type B = burn::backend::Flex;
        let device = Default::default();
        let (vocab, hidden) = (10, 64);
        let values: Vec<f32> = (0..vocab * hidden)
            .map(|i| ((i as f32) * 0.37).sin())
            .collect();
        let f32_table = TokenEmbedding::<B>::new(Tensor::from_data(
            TensorData::new(values, [vocab, hidden]),
            &device,
        ));
        let ids = Tensor::<B, 2, Int>::from_data([[3, 0, 9], [1, 1, 4]], &device);
        for format in [WeightFormat::Q8_0, WeightFormat::Q4_0, WeightFormat::F16] {
            let packed = f32_table.clone().into_format(format).unwrap();
            assert_eq!(packed.format(), format);
            let dequantized = TokenEmbedding::<B>::new(packed.table());
            let a: Vec<f32> = packed.forward(ids.clone()).into_data().to_vec().unwrap();
            let b: Vec<f32> = dequantized
                .forward(ids.clone())
                .into_data()
                .to_vec()
                .unwrap();
            assert_eq!(a, b, "{format}");
            let back = packed.into_format(WeightFormat::F32).unwrap();
            assert_eq!(back.format(), WeightFormat::F32);
        }
    }
}
