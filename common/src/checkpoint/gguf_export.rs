//! Export to GGUF (llama.cpp's `phi2` architecture) in F32, F16, BF16, `Q8_0` or `Q4_0`.
//!
//! The matrices (every linear layer, the LM head and the token embedding, as llama.cpp's
//! converter does) are stored in the chosen type, norms and biases in F32. A linear layer that
//! is already packed in that type is written from its bytes, so a `Q8_0` model exports exactly
//! the blocks it computes with; others are quantized by the reference quantizer, which is
//! llama.cpp's. Tensors are streamed one at a time under a temporary name, renamed when complete.

use std::io::Write;
use std::path::Path;

use burn::prelude::*;

use super::export::{hf_values, write_atomically};
use super::ggml_type::{GgmlType, encode_float};
use super::gguf_file::{DEFAULT_ALIGNMENT, MAGIC, MetaValue};
use super::gguf_phi2::metadata;
use super::layout::KeyLayout;
use crate::error::{PhiError, Result};
use crate::model::{HfParam, Leaf, PackedWeight, Part, Phi, WeightFormat, hf_params};
use crate::tokenizer::PhiTokenizer;

/// Writes `model` to `path` as a `phi2` GGUF with its matrices in `format`, with `tokenizer`'s
/// vocabulary and merges when given (llama.cpp needs them to run the file).
pub fn save_gguf<B: Backend>(
    model: &Phi<B>,
    path: impl AsRef<Path>,
    format: WeightFormat,
    tokenizer: Option<&PhiTokenizer>,
) -> Result<()> {
    let path = path.as_ref();
    let config = model.config();
    if config.qk_layernorm {
        return Err(PhiError::Input(format!(
            "{}: llama.cpp's phi2 architecture has no q/k LayerNorm (qk_layernorm)",
            path.display()
        )));
    }
    let layout = KeyLayout::Gguf { fused_qkv: false };
    let matrix_type = GgmlType::of_format(format);
    let mut tensors = Vec::new();
    for param in hf_params(config) {
        let name = layout
            .locate(param.part, param.leaf, &param.shape, config)
            .expect("every parameter of a model without q/k norms has a GGUF name")
            .key;
        let ty = if param.shape.len() == 2 {
            matrix_type
        } else {
            GgmlType::F32
        };
        let cols = *param.shape.last().expect("a shape");
        let rows: usize = param.shape.iter().product::<usize>() / cols;
        let row_bytes = ty.row_bytes(cols as u64).ok_or_else(|| {
            PhiError::Input(format!(
                "{}: `{name}` has rows of {cols} values, not whole {} blocks of {}",
                path.display(),
                ty.name(),
                ty.block_values()
            ))
        })?;
        tensors.push((param, name, ty, rows as u64 * row_bytes));
    }
    let file_type = match format {
        WeightFormat::F32 => 0,
        WeightFormat::F16 => 1,
        WeightFormat::Q4_0 => 2,
        WeightFormat::Q8_0 => 7,
        WeightFormat::Bf16 => 32,
    };
    let meta = metadata(config, tokenizer, file_type)?;
    write_atomically(path, |out| {
        let mut header = Vec::new();
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&3u32.to_le_bytes());
        header.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        header.extend_from_slice(&(meta.len() as u64).to_le_bytes());
        for (key, value) in &meta {
            put_string(&mut header, key);
            put_value(&mut header, value, true);
        }
        let mut offset = 0u64;
        for (param, name, ty, size) in &tensors {
            put_string(&mut header, name);
            header.extend_from_slice(&(param.shape.len() as u32).to_le_bytes());
            for &d in param.shape.iter().rev() {
                header.extend_from_slice(&(d as u64).to_le_bytes());
            }
            header.extend_from_slice(&ty.id().to_le_bytes());
            header.extend_from_slice(&offset.to_le_bytes());
            offset += size.next_multiple_of(DEFAULT_ALIGNMENT);
        }
        pad(&mut header);
        out.write_all(&header)?;
        let mut bytes = Vec::new();
        for (param, _, ty, size) in &tensors {
            bytes.clear();
            tensor_bytes(model, param, *ty, &mut bytes);
            debug_assert_eq!(bytes.len() as u64, *size);
            pad(&mut bytes);
            out.write_all(&bytes)?;
        }
        Ok(())
    })
}

/// A parameter's data as `ty` stores it: a packed layer's own bytes when it is packed in `ty`.
fn tensor_bytes<B: Backend>(model: &Phi<B>, param: &HfParam, ty: GgmlType, out: &mut Vec<u8>) {
    if param.leaf == Leaf::Weight
        && let Some(packed) = packed_weight(model, param.part)
        && GgmlType::of_format(packed.format()) == ty
    {
        out.extend_from_slice(packed.bytes());
        return;
    }
    let values = hf_values(model, param.part, param.leaf);
    match ty.weight_format() {
        Some(format @ (WeightFormat::Q8_0 | WeightFormat::Q4_0)) => {
            let cols = *param.shape.last().expect("a shape");
            let packed = PackedWeight::pack(&values, [values.len() / cols, cols], format)
                .expect("whole blocks, checked before writing");
            out.extend_from_slice(packed.bytes());
        }
        _ => encode_float(ty, &values, out),
    }
}

/// The packed weight of a linear part, if the model keeps it packed.
fn packed_weight<B: Backend>(model: &Phi<B>, part: Part) -> Option<&PackedWeight> {
    let linear = match part {
        Part::Embed => return model.model.embed_tokens.packed.as_deref(),
        Part::Head => &model.lm_head,
        _ => {
            let (i, projection) = part.projection()?;
            model.model.layers[i].projection(projection)
        }
    };
    linear.packed.as_deref()
}

/// Zero bytes up to the next multiple of the alignment.
fn pad(bytes: &mut Vec<u8>) {
    let len = (bytes.len() as u64).next_multiple_of(DEFAULT_ALIGNMENT);
    bytes.resize(len as usize, 0);
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A metadata value with its type first (`typed`) or, inside an array, without. Integers are
/// written as u32 and i32 and floats as f32, the types llama.cpp reads these keys as.
fn put_value(out: &mut Vec<u8>, value: &MetaValue, typed: bool) {
    let type_id = |v: &MetaValue| -> u32 {
        match v {
            MetaValue::Uint(_) => 4,
            MetaValue::Int(_) => 5,
            MetaValue::Float(_) => 6,
            MetaValue::Bool(_) => 7,
            MetaValue::Str(_) => 8,
            MetaValue::Array(_) => 9,
        }
    };
    if typed {
        out.extend_from_slice(&type_id(value).to_le_bytes());
    }
    match value {
        MetaValue::Uint(v) => out.extend_from_slice(&(*v as u32).to_le_bytes()),
        MetaValue::Int(v) => out.extend_from_slice(&(*v as i32).to_le_bytes()),
        MetaValue::Float(v) => out.extend_from_slice(&(*v as f32).to_le_bytes()),
        MetaValue::Bool(v) => out.push(*v as u8),
        MetaValue::Str(s) => put_string(out, s),
        MetaValue::Array(items) => {
            let item_type = items.first().map_or(4, type_id);
            out.extend_from_slice(&item_type.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                put_value(out, item, false);
            }
        }
    }
}
