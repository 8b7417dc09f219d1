//! Hugging Face hub ids (`microsoft/phi-2` at a revision) resolved to a local snapshot folder.
//!
//! Files already in the cache are used without any network access, exactly as Python's
//! huggingface_hub lays the cache out (`models--org--name/refs/REV` holding a commit, files under
//! `snapshots/COMMIT/`); anything missing is downloaded through `hf-hub` unless offline.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};
use serde_json::Value;

use crate::error::{PhiError, Result};

/// Where the cache is and whether the network may be used.
#[derive(Clone, Debug, Default)]
pub struct HubOptions {
    /// The hub cache folder; default: `HF_HUB_CACHE`, else `HF_HOME/hub`, else
    /// `~/.cache/huggingface/hub`.
    pub cache_dir: Option<PathBuf>,
    /// Never download (also set by `HF_HUB_OFFLINE=1`).
    pub offline: bool,
}

impl HubOptions {
    fn cache(&self) -> Cache {
        if let Some(dir) = &self.cache_dir {
            return Cache::new(dir.clone());
        }
        match std::env::var_os("HF_HUB_CACHE") {
            Some(dir) => Cache::new(dir.into()),
            None => Cache::from_env(),
        }
    }

    fn offline(&self) -> bool {
        self.offline
            || std::env::var("HF_HUB_OFFLINE")
                .is_ok_and(|v| matches!(v.as_str(), "1" | "true" | "TRUE" | "yes"))
    }
}

/// Brings `model_id` at `revision` (default `main`) into the cache and returns its snapshot folder,
/// ready for `Checkpoint::open`. Fetches config.json, tokenizer.json where the repo has one, and
/// the weights in the first format the repo has: sharded safetensors, safetensors, sharded `.bin`,
/// `.bin`.
pub fn resolve_hub(
    model_id: &str,
    revision: Option<&str>,
    options: &HubOptions,
) -> Result<PathBuf> {
    let revision = revision.unwrap_or("main").to_owned();
    let cache = options.cache();
    let repo = Repo::with_revision(model_id.to_owned(), RepoType::Model, revision.clone());
    let api = if options.offline() {
        None
    } else {
        Some(
            ApiBuilder::from_cache(cache.clone())
                .with_progress(true)
                .build()
                .map_err(|e| PhiError::Hub(format!("cannot start the hub client: {e}")))?,
        )
    };
    let fetch = |file: &str| -> Result<PathBuf> {
        if let Some(path) = cached(&cache, &repo, &revision, file) {
            return Ok(path);
        }
        match &api {
            None => Err(PhiError::Hub(format!(
                "{model_id}@{revision}: {file} is not in the cache at {} and downloads are off",
                cache.path().display()
            ))),
            Some(api) => api.repo(repo.clone()).get(file).map_err(|e| {
                PhiError::Hub(format!("{model_id}@{revision}: cannot fetch {file}: {e}"))
            }),
        }
    };

    let config = fetch("config.json")?;
    // Optional: generation falls back to the bundled tokenizer without it.
    let _ = fetch("tokenizer.json");
    let mut failures = Vec::new();
    for (index, single) in [
        ("model.safetensors.index.json", "model.safetensors"),
        ("pytorch_model.bin.index.json", "pytorch_model.bin"),
    ] {
        match fetch(index) {
            Ok(index_path) => {
                for shard in shard_names(&index_path)? {
                    fetch(&shard)?;
                }
                return Ok(snapshot_dir(&config));
            }
            Err(e) => failures.push(e.to_string()),
        }
        match fetch(single) {
            Ok(_) => return Ok(snapshot_dir(&config)),
            Err(e) => failures.push(e.to_string()),
        }
    }
    Err(PhiError::Hub(format!(
        "{model_id}@{revision}: no weights found:\n  {}",
        failures.join("\n  ")
    )))
}

/// A file already in the cache, for a branch or tag (through `refs/`) or a commit hash.
fn cached(cache: &Cache, repo: &Repo, revision: &str, file: &str) -> Option<PathBuf> {
    if let Some(path) = cache.repo(repo.clone()).get(file) {
        return Some(path);
    }
    let by_commit = cache
        .path()
        .join(repo.folder_name())
        .join("snapshots")
        .join(revision)
        .join(file);
    by_commit.is_file().then_some(by_commit)
}

fn snapshot_dir(config: &Path) -> PathBuf {
    config.parent().unwrap_or(Path::new(".")).to_owned()
}

fn shard_names(index: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(index).map_err(|e| PhiError::io(index, e))?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| PhiError::weights(index, None, format!("not valid JSON: {e}")))?;
    let map = value
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| PhiError::weights(index, None, "has no `weight_map` object"))?;
    let mut names: Vec<String> = map
        .values()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}
