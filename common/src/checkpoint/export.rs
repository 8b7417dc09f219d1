//! Export to the Hugging Face V3 layout: `model.safetensors` + `config.json`, which transformers'
//! `PhiForCausalLM.from_pretrained` loads with no missing keys.
//!
//! The safetensors file is streamed one tensor at a time (the header is known from the config
//! alone), so exporting phi-2 does not hold a second copy of the model in memory. Both files are
//! written under temporary names and renamed into place, so an interrupted export never leaves a
//! file that looks complete.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use burn::nn::LayerNorm;
use burn::prelude::*;
use serde_json::{Map, Value, json};

use super::dtype::StoredDType;
use crate::error::{PhiError, Result};
use crate::model::{HfParam, Leaf, Part, Phi, PhiLinear, hf_params};

/// Writes `model` into `dir` (created if needed) as HF V3 safetensors stored as `dtype`, plus config.json.
pub fn save_hf<B: Backend>(
    model: &Phi<B>,
    dir: impl AsRef<Path>,
    dtype: StoredDType,
) -> Result<()> {
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir).map_err(|e| PhiError::io(dir, e))?;
    let params = hf_params(model.config());

    let weights = dir.join("model.safetensors");
    write_atomically(&weights, |out| {
        let header = safetensors_header(&params, dtype);
        out.write_all(&(header.len() as u64).to_le_bytes())?;
        out.write_all(&header)?;
        let mut bytes = Vec::new();
        for param in &params {
            let values = hf_values(model, param.part, param.leaf);
            // Phi's fields are public, so a hand-assembled model can disagree with its config.
            if values.len() != param.shape.iter().product::<usize>() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{} holds {} values but the config implies shape {:?}",
                        param.name(),
                        values.len(),
                        param.shape
                    ),
                ));
            }
            bytes.clear();
            dtype.encode(&values, &mut bytes);
            out.write_all(&bytes)?;
        }
        Ok(())
    })?;

    let mut config = model.config().to_hf_json();
    config["torch_dtype"] = json!(dtype.torch_name());
    let text = serde_json::to_string_pretty(&config).expect("a JSON value serialises");
    write_atomically(&dir.join("config.json"), |out| {
        out.write_all(text.as_bytes())
    })
}

/// The safetensors header for `params` stored back to back in order, padded with spaces to a
/// multiple of 8 bytes as the format recommends.
fn safetensors_header(params: &[HfParam], dtype: StoredDType) -> Vec<u8> {
    let mut header = Map::new();
    header.insert("__metadata__".into(), json!({"format": "pt"}));
    let mut offset = 0;
    for param in params {
        let size = param.shape.iter().product::<usize>() * dtype.size();
        header.insert(
            param.name(),
            json!({
                "dtype": dtype.safetensors_name(),
                "shape": param.shape,
                "data_offsets": [offset, offset + size],
            }),
        );
        offset += size;
    }
    let mut bytes = serde_json::to_vec(&Value::Object(header)).expect("a JSON value serialises");
    while !bytes.len().is_multiple_of(8) {
        bytes.push(b' ');
    }
    bytes
}

/// A parameter's values in transformers' layout (`[out, in]` for linear weights).
pub(super) fn hf_values<B: Backend>(model: &Phi<B>, part: Part, leaf: Leaf) -> Vec<f32> {
    let body = &model.model;
    let linear = |l: &PhiLinear<B>| match leaf {
        Leaf::Weight => l.weight_out_in().into_data(),
        Leaf::Bias => l.bias.val().into_data(),
    };
    let norm = |n: &LayerNorm<B>| match leaf {
        Leaf::Weight => n.gamma.val().into_data(),
        Leaf::Bias => n
            .beta
            .as_ref()
            .expect("Phi LayerNorms have biases")
            .val()
            .into_data(),
    };
    let layer = |i: usize| &body.layers[i];
    let data = match part {
        Part::Q(i) | Part::K(i) | Part::V(i) | Part::Dense(i) | Part::Fc1(i) | Part::Fc2(i) => {
            let (_, projection) = part
                .projection()
                .expect("every linear part is a projection");
            linear(layer(i).projection(projection))
        }
        Part::Embed => body.embed_tokens.table().into_data(),
        Part::InputNorm(i) => norm(&layer(i).input_layernorm),
        Part::QNorm(i) => norm(
            layer(i)
                .self_attn
                .q_layernorm
                .as_ref()
                .expect("qk_layernorm"),
        ),
        Part::KNorm(i) => norm(
            layer(i)
                .self_attn
                .k_layernorm
                .as_ref()
                .expect("qk_layernorm"),
        ),
        Part::FinalNorm => norm(&body.final_layernorm),
        Part::Head => linear(&model.lm_head),
    };
    data.iter::<f32>().collect()
}

/// Writes `path` through a temporary sibling that is renamed over it only once complete.
pub(super) fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp: PathBuf = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut out = BufWriter::new(File::create(&tmp)?);
        write(&mut out)?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(PhiError::io(path, e));
    }
    Ok(())
}
