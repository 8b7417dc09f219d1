//! Checkpoints: Hugging Face weights in any published layout and format, and llama.cpp's GGUF
//! files, in and out.
//!
//! `Checkpoint::open` finds the files, reads their headers, tells the key layout and checks every
//! tensor against the config before any weight is read, so a bad checkpoint fails at once with
//! every missing, unexpected and misshapen tensor named. `Checkpoint::load` then reads each tensor
//! once, converts it to f32 on the host and hands it to the model in the backend's float type.

mod dtype;
mod export;
mod ggml_type;
mod gguf_export;
mod gguf_file;
mod gguf_phi2;
#[cfg(feature = "hub")]
mod hub;
mod layout;
mod pickle;
mod pytorch_file;
mod safetensors_file;
mod weight_file;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::nn::{LayerNorm, LayerNormConfig};
use burn::prelude::*;

pub use dtype::StoredDType;
pub use export::save_hf;
pub use ggml_type::GgmlType;
pub use gguf_export::save_gguf;
pub use gguf_file::{GgufFile, MetaValue};
#[cfg(feature = "hub")]
pub use hub::{HubOptions, resolve_hub};
pub use layout::KeyLayout;
pub(crate) use layout::Location;
pub(crate) use weight_file::WeightFile;

use crate::config::PhiConfig;
use crate::error::{PhiError, Result, ShapeMismatch};
use crate::model::{
    HfParam, Leaf, PackedWeight, ParamSource, Part, Phi, PhiLinear, TokenEmbedding, WeightFormat,
    hf_params,
};
use crate::tokenizer::PhiTokenizer;

/// An opened, checked checkpoint: config, files, layout, and where each parameter lives.
pub struct Checkpoint {
    /// The folder the checkpoint was opened from (the weights file's folder for a single file).
    dir: PathBuf,
    config: PhiConfig,
    layout: KeyLayout,
    files: Vec<WeightFile>,
    /// Every stored key → (index into `files`, shape).
    keys: HashMap<String, (usize, Vec<usize>)>,
    /// Each model parameter's location, in `hf_params` order.
    plan: Vec<(HfParam, Location)>,
    /// The tokenizer a GGUF file carries, as tokenizer.json text.
    embedded_tokenizer: Option<String>,
}

impl Checkpoint {
    /// Opens a model folder (config.json plus weights in any supported format and layout), or a
    /// single weights file with a config.json beside it.
    /// A GGUF file carries its own config and tokenizer.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if path.is_file() && is_gguf(path) {
            return Self::open_gguf(path);
        }
        let dir = if path.is_dir() {
            path
        } else {
            path.parent().unwrap_or(Path::new("."))
        };
        let config_path = dir.join("config.json");
        // Validated only after its sizes are compared with the weights' (`open_parsed`).
        let config = PhiConfig::parse_file(&config_path)?;
        Self::open_parsed(path, config, &config_path.display().to_string())
    }

    /// Opens `source`: a local folder or weights file if one exists at that path, else (with the
    /// `hub` feature) a hub id such as `microsoft/phi-2` at `revision` (default `main`).
    pub fn open_source(source: &str, revision: Option<&str>) -> Result<Self> {
        let path = Path::new(source);
        if path.exists() {
            return Self::open(path);
        }
        #[cfg(feature = "hub")]
        {
            let dir = resolve_hub(source, revision, &HubOptions::default())?;
            Self::open(dir)
        }
        #[cfg(not(feature = "hub"))]
        {
            let _ = revision;
            Err(PhiError::io(
                path,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no such file or folder (hub ids need the `hub` feature)",
                ),
            ))
        }
    }

    /// Opens weights (a folder or a single file) described by `config`.
    pub fn open_with_config(path: impl AsRef<Path>, config: PhiConfig) -> Result<Self> {
        Self::open_parsed(path.as_ref(), config, "the given config")
    }

    /// Opens a GGUF file of llama.cpp's `phi2` architecture: the config from its metadata (keys
    /// named in errors), its tensors under llama.cpp's names, its tokenizer where it has one.
    fn open_gguf(path: &Path) -> Result<Self> {
        let file = GgufFile::open(path)?;
        let config = gguf_phi2::config(&file)?;
        let embedded_tokenizer = gguf_phi2::tokenizer_json(&file)?;
        let origin = format!("{} (GGUF metadata)", path.display());
        let mut checkpoint =
            Self::assemble(path, vec![WeightFile::Gguf(file)], None, config, |config| {
                config.validate(&origin)
            })
            .map_err(gguf_phi2::name_keys)?;
        checkpoint.embedded_tokenizer = embedded_tokenizer;
        Ok(checkpoint)
    }

    /// Opens weights described by `config`, which may not be validated yet: its sizes are first
    /// compared with what the weights hold, then it is validated (`config_origin` naming it in
    /// errors), and only then is anything sized from it.
    fn open_parsed(path: &Path, config: PhiConfig, config_origin: &str) -> Result<Self> {
        let weight_file::WeightFiles { paths, index } = if path.is_dir() {
            weight_file::discover(path)?
        } else if path.is_file() {
            weight_file::WeightFiles {
                paths: vec![path.to_owned()],
                index: None,
            }
        } else {
            return Err(PhiError::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
            ));
        };
        let files = paths
            .iter()
            .map(|p| WeightFile::open(p))
            .collect::<Result<Vec<_>>>()?;
        Self::assemble(path, files, index, config, |config| {
            config.validate(config_origin)
        })
    }

    /// Indexes `files`, tells their layout and checks them against `config` (validated by
    /// `validate` once its sizes agree with the weights).
    fn assemble(
        path: &Path,
        files: Vec<WeightFile>,
        index: Option<Vec<(String, PathBuf)>>,
        config: PhiConfig,
        validate: impl FnOnce(&PhiConfig) -> Result<()>,
    ) -> Result<Self> {
        let mut keys: HashMap<String, (usize, Vec<usize>)> = HashMap::new();
        for (n, file) in files.iter().enumerate() {
            for (key, shape) in file.shapes() {
                if KeyLayout::is_ignored(&key) {
                    continue;
                }
                if let Some((other, _)) = keys.get(&key) {
                    return Err(PhiError::weights(
                        file.path(),
                        Some(&key),
                        format!("also stored in {}", files[*other].path().display()),
                    ));
                }
                keys.insert(key, (n, shape));
            }
        }
        if let Some(index) = index {
            check_index(&index, &files, &keys)?;
        }
        let origin = path.display().to_string();
        let layout = KeyLayout::detect(keys.keys().map(String::as_str)).ok_or_else(|| {
            PhiError::weights(
                path,
                None,
                "cannot tell the key layout: none of model.embed_tokens.weight (V3), \
                 transformer.embd.wte.weight (V2) or layers.0.wte.weight (V1) is present",
            )
        })?;
        check_sizes(&config, layout, &keys, &origin)?;
        validate(&config)?;
        let plan = Self::plan(&config, layout, &keys, &origin)?;
        let dir = if path.is_dir() {
            path.to_owned()
        } else {
            path.parent().unwrap_or(Path::new(".")).to_owned()
        };
        Ok(Self {
            dir,
            config,
            layout,
            files,
            keys,
            plan,
            embedded_tokenizer: None,
        })
    }

    /// Locates every parameter and checks names and shapes, naming every culprit at once.
    fn plan(
        config: &PhiConfig,
        layout: KeyLayout,
        keys: &HashMap<String, (usize, Vec<usize>)>,
        origin: &str,
    ) -> Result<Vec<(HfParam, Location)>> {
        let mut missing = Vec::new();
        let mut wrong_shape: BTreeMap<String, ShapeMismatch> = BTreeMap::new();
        let mut claimed = BTreeSet::new();
        let mut plan = Vec::new();
        for param in hf_params(config) {
            let Some(location) = layout.locate(param.part, param.leaf, &param.shape, config) else {
                missing.push(format!(
                    "{} (the {} layout has no place for it)",
                    param.name(),
                    layout.name()
                ));
                continue;
            };
            match keys.get(&location.key) {
                // A fused Wqkv holds three parameters: name it once.
                None if !missing.contains(&location.key) => missing.push(location.key.clone()),
                None => {}
                Some((_, found)) => {
                    claimed.insert(location.key.clone());
                    if *found != location.stored_shape {
                        wrong_shape.insert(
                            location.key.clone(),
                            ShapeMismatch {
                                key: location.key.clone(),
                                expected: location.stored_shape.clone(),
                                found: found.clone(),
                            },
                        );
                    }
                }
            }
            plan.push((param, location));
        }
        let mut unexpected: Vec<String> = keys
            .keys()
            .filter(|k| !claimed.contains(*k))
            .cloned()
            .collect();
        unexpected.sort();
        if missing.is_empty() && unexpected.is_empty() && wrong_shape.is_empty() {
            return Ok(plan);
        }
        Err(PhiError::Mismatch {
            origin: format!("{origin} ({} layout)", layout.name()),
            missing,
            unexpected,
            wrong_shape: wrong_shape.into_values().collect(),
        })
    }

    /// The config the checkpoint was opened with (validated against its weights).
    pub fn config(&self) -> &PhiConfig {
        &self.config
    }

    /// The checkpoint's folder (where a tokenizer.json would sit).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The key layout the checkpoint's tensor names follow.
    pub fn layout(&self) -> KeyLayout {
        self.layout
    }

    /// The model's tokenizer: the one a GGUF file carries, else the folder's tokenizer.json,
    /// else the bundled one when the vocabulary is Phi's ([`PhiTokenizer::for_model`]).
    pub fn tokenizer(&self) -> Result<Option<PhiTokenizer>> {
        match &self.embedded_tokenizer {
            Some(json) => {
                let origin = format!("{} (GGUF tokenizer)", self.files[0].path().display());
                PhiTokenizer::from_json(json, &origin).map(Some)
            }
            None => PhiTokenizer::for_model(&self.dir, self.config.vocab_size),
        }
    }

    /// The format the checkpoint stores its linear layers in, as `load_as` can use it with no
    /// conversion: a GGUF file's type for its first MLP weight when phi-zoo computes in that
    /// type, else f32.
    pub fn stored_format(&self) -> WeightFormat {
        self.stored_type(Part::Fc1(0), Leaf::Weight)
            .and_then(GgmlType::weight_format)
            .unwrap_or(WeightFormat::F32)
    }

    /// The GGUF type a parameter is stored in, for GGUF checkpoints.
    pub fn stored_type(&self, part: Part, leaf: Leaf) -> Option<GgmlType> {
        let (_, location) = self.locate(part, leaf).ok()?;
        let (file, _) = self.keys.get(&location.key)?;
        self.files[*file].stored_type(&location.key)
    }

    /// The weight files, in the order their tensors are looked up.
    pub fn files(&self) -> Vec<&Path> {
        self.files.iter().map(WeightFile::path).collect()
    }

    /// The weight of `part` as it is stored, when the file stores it in `format` (a GGUF tensor
    /// of that type): used as it is, with no conversion.
    fn read_stored_as(&self, part: Part, format: WeightFormat) -> Result<Option<PackedWeight>> {
        let (param, location) = self.locate(part, Leaf::Weight)?;
        let (file, _) = &self.keys[&location.key];
        let file = &self.files[*file];
        if file
            .stored_type(&location.key)
            .and_then(GgmlType::weight_format)
            != Some(format)
        {
            return Ok(None);
        }
        let Some((_, bytes)) = file.read_stored(&location.key, location.rows.clone())? else {
            return Ok(None);
        };
        let [rows, cols] = param.shape[..] else {
            return Ok(None);
        };
        PackedWeight::from_bytes(format, [rows, cols], bytes)
            .map(Some)
            .map_err(|e| PhiError::weights(file.path(), Some(&location.key), e.to_string()))
    }

    fn locate(&self, part: Part, leaf: Leaf) -> Result<&(HfParam, Location)> {
        self.plan
            .iter()
            .find(|(p, _)| p.part == part && p.leaf == leaf)
            .ok_or_else(|| {
                PhiError::Input(format!(
                    "{}.{} is not a parameter of this config",
                    part.v3_module(),
                    leaf.suffix()
                ))
            })
    }

    /// The parameter `part.leaf` as f32 values in transformers' `[out, in]` layout.
    pub fn read(&self, part: Part, leaf: Leaf) -> Result<(Vec<f32>, Vec<usize>)> {
        let (param, location) = self.locate(part, leaf)?;
        let (file, _) = &self.keys[&location.key];
        let values = self.files[*file].read_f32(&location.key, location.rows.clone())?;
        Ok((values, param.shape.clone()))
    }

    /// Builds the model on `device`, in the backend's float type.
    pub fn load<B: Backend>(&self, device: &B::Device) -> Result<Phi<B>> {
        self.load_as(device, WeightFormat::F32)
    }

    /// Builds the model on `device` with every linear layer's weight (the projections and the
    /// LM head) in `format`: f16, bf16, `Q8_0` or `Q4_0` weights are packed as each is read, so
    /// memory never holds the f32 model (CPU backend; f32 is `load`). Embeddings and norms are
    /// kept in the backend's float type.
    pub fn load_as<B: Backend>(&self, device: &B::Device, format: WeightFormat) -> Result<Phi<B>> {
        Phi::build(
            &self.config,
            &mut CheckpointParams {
                checkpoint: self,
                device: device.clone(),
                format,
            },
        )
    }
}

/// The config's sizes against the checkpoint's own, before anything is sized from the config:
/// the number of decoder blocks stored, and the embedding's and first MLP's shapes. A config that
/// disagrees is refused by field name (a billion layers beside two stored must fail at once, not
/// after the parameter plan has been built for a billion).
fn check_sizes(
    config: &PhiConfig,
    layout: KeyLayout,
    keys: &HashMap<String, (usize, Vec<usize>)>,
    origin: &str,
) -> Result<()> {
    let refuse = |field: &str, message: String| {
        Err(PhiError::Config {
            origin: format!("{origin} (config.json against the weights)"),
            field: field.to_owned(),
            message,
        })
    };
    // More layers than stored blocks is refused here, which bounds the plan by the checkpoint's
    // own key count; fewer is refused by name when the blocks are plainly 0..n, and otherwise
    // left to the plan, which names each stray key.
    let blocks: BTreeSet<usize> = keys.keys().filter_map(|k| layout.block_of(k)).collect();
    let contiguous = blocks.last().is_none_or(|&last| last + 1 == blocks.len());
    if config.num_hidden_layers > blocks.len()
        || (contiguous && config.num_hidden_layers != blocks.len())
    {
        return refuse(
            "num_hidden_layers",
            format!(
                "the config says {} but the weights hold {} decoder layers",
                config.num_hidden_layers,
                blocks.len()
            ),
        );
    }
    let stored = |part: Part| {
        let location = layout.locate(part, Leaf::Weight, &[], config)?;
        keys.get(&location.key)
            .map(|(_, shape)| (location.key, shape))
    };
    if let Some((key, shape)) = stored(Part::Embed)
        && let [vocab, hidden] = shape[..]
    {
        for (field, configured, found) in [
            ("vocab_size", config.vocab_size, vocab),
            ("hidden_size", config.hidden_size, hidden),
        ] {
            if configured != found {
                return refuse(
                    field,
                    format!("the config says {configured} but {key} has shape {shape:?}"),
                );
            }
        }
    }
    if let Some((key, shape)) = stored(Part::Fc1(0))
        && let [intermediate, _] = shape[..]
        && intermediate != config.intermediate_size
    {
        return refuse(
            "intermediate_size",
            format!(
                "the config says {} but {key} has shape {shape:?}",
                config.intermediate_size
            ),
        );
    }
    Ok(())
}

/// A shard index must agree with the shards: every key it lists is in the file it names.
fn check_index(
    index: &[(String, PathBuf)],
    files: &[WeightFile],
    keys: &HashMap<String, (usize, Vec<usize>)>,
) -> Result<()> {
    for (key, file) in index {
        if KeyLayout::is_ignored(key) {
            continue;
        }
        let stored_in = keys.get(key).map(|(n, _)| files[*n].path());
        if stored_in != Some(file.as_path()) {
            return Err(PhiError::weights(
                file,
                Some(key),
                "the shard index places it in this file, but the file does not hold it",
            ));
        }
    }
    Ok(())
}

/// Feeds a checkpoint's tensors to `Phi::build`.
struct CheckpointParams<'a, B: Backend> {
    checkpoint: &'a Checkpoint,
    device: B::Device,
    format: WeightFormat,
}

impl<B: Backend> CheckpointParams<'_, B> {
    fn tensor<const D: usize>(&self, part: Part, leaf: Leaf) -> Result<Tensor<B, D>> {
        let (values, shape) = self.checkpoint.read(part, leaf)?;
        Ok(Tensor::from_data(
            TensorData::new(values, shape),
            &self.device,
        ))
    }
}

impl<B: Backend> ParamSource<B> for CheckpointParams<'_, B> {
    fn device(&self) -> B::Device {
        self.device.clone()
    }

    fn linear(&mut self, part: Part, d_in: usize, d_out: usize) -> Result<PhiLinear<B>> {
        let bias = self.tensor(part, Leaf::Bias)?;
        if self.format.is_packed()
            && let Some(packed) = self.checkpoint.read_stored_as(part, self.format)?
        {
            return Ok(PhiLinear::from_packed(packed, bias, &self.device));
        }
        // The load plan has checked the stored shape is [d_out, d_in].
        let (weight, _) = self.checkpoint.read(part, Leaf::Weight)?;
        if self.format == WeightFormat::F32 {
            return Ok(PhiLinear::from_hf(
                weight,
                [d_out, d_in],
                bias,
                &self.device,
            ));
        }
        PhiLinear::packed_from_hf(&weight, [d_out, d_in], self.format, bias, &self.device)
            .map_err(|e| PhiError::Input(format!("{}.weight: {e}", part.v3_module())))
    }

    fn layer_norm(&mut self, part: Part, dim: usize, eps: f64) -> Result<LayerNorm<B>> {
        let mut norm = LayerNormConfig::new(dim)
            .with_epsilon(eps)
            .init(&self.device);
        norm.gamma = Param::from_tensor(self.tensor(part, Leaf::Weight)?);
        norm.beta = Some(Param::from_tensor(self.tensor(part, Leaf::Bias)?));
        Ok(norm)
    }

    fn embedding(&mut self, part: Part, _: usize, _: usize) -> Result<TokenEmbedding<B>> {
        // Packed beside quantized linear layers, as GGUF files store it (a GGUF table of that
        // type is used as stored).
        let format = self.format.embedding_format();
        if format.is_packed() {
            if let Some(packed) = self.checkpoint.read_stored_as(part, format)? {
                return Ok(TokenEmbedding::from_packed(packed, &self.device));
            }
            let (values, shape) = self.checkpoint.read(part, Leaf::Weight)?;
            let packed = PackedWeight::pack(&values, [shape[0], shape[1]], format)
                .map_err(|e| PhiError::Input(format!("{}.weight: {e}", part.v3_module())))?;
            return Ok(TokenEmbedding::from_packed(packed, &self.device));
        }
        Ok(TokenEmbedding::new(self.tensor(part, Leaf::Weight)?))
    }
}

/// Whether `path` is named `.gguf` or begins with GGUF's magic number.
fn is_gguf(path: &Path) -> bool {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    {
        return true;
    }
    let mut head = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
        .is_ok()
        && &head == gguf_file::MAGIC
}
