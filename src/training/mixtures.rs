//! A recipe's data mixture made concrete: the embedded corpora in the recipe's slots and weights
//! (the demo), or the user's token stores (`--data name=STORE_DIR:weight`), each with a held-out
//! part for validation.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use phi_zoo_common::PhiTokenizer;
use phi_zoo_common::train::Recipe;
use phi_zoo_datasets::corpora::EmbeddedCorpus;
use phi_zoo_datasets::{DataError, Mixture, MixtureSource, TokenStore};

pub use phi_zoo_datasets::corpora::HELD_OUT_DOCUMENTS;

/// One source of a mixture from the command line: `name=STORE_DIR:weight`.
#[derive(Debug, Clone, PartialEq)]
pub struct DataSource {
    /// The slot it fills.
    pub name: String,
    /// A token store folder (`examples/prepare_data` writes them).
    pub store: PathBuf,
    /// Sampling weight.
    pub weight: f64,
}

impl FromStr for DataSource {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, String> {
        let form = || format!("{spec:?}: a data source is name=STORE_DIR:weight");
        let (name, rest) = spec.split_once('=').ok_or_else(form)?;
        let (store, weight) = rest.rsplit_once(':').ok_or_else(form)?;
        let weight: f64 = weight
            .parse()
            .map_err(|_| format!("{spec:?}: the weight {weight:?} is not a number"))?;
        if name.is_empty() || store.is_empty() || !(weight > 0.0 && weight.is_finite()) {
            return Err(form());
        }
        Ok(Self {
            name: name.into(),
            store: store.into(),
            weight,
        })
    }
}

/// The training and validation mixtures of a run, and what validation holds out.
pub struct RunMixtures {
    /// What the run trains on.
    pub train: Mixture,
    /// What it validates on (never trained on).
    pub valid: Mixture,
    /// Where the validation data comes from, in words.
    pub validation: String,
}

/// The mixtures of a run: with no `sources`, the embedded corpora in `recipe`'s slots and weights
/// (stores prepared under `data_dir` on first use), validated on each corpus's last
/// [`HELD_OUT_DOCUMENTS`]; otherwise `sources`, validated on the final `held_out` fraction of each.
pub fn recipe_mixtures(
    recipe: &Recipe,
    sources: &[DataSource],
    data_dir: &Path,
    tokenizer: &PhiTokenizer,
    seq_len: usize,
    seed: u64,
    held_out: f64,
) -> Result<RunMixtures, DataError> {
    if !sources.is_empty() {
        let stores = sources
            .iter()
            .map(|s| {
                Ok(MixtureSource {
                    name: s.name.clone(),
                    store: Arc::new(TokenStore::open(&s.store)?),
                    weight: s.weight,
                })
            })
            .collect::<Result<Vec<_>, DataError>>()?;
        let (train, valid) = Mixture::split_held_out(stores, seq_len, seed, held_out)?;
        return Ok(RunMixtures {
            train,
            valid,
            validation: format!("the final {:.0}% of every --data store", held_out * 100.0),
        });
    }
    if recipe.mixture.is_empty() {
        return Err(DataError::Invalid(format!(
            "recipe {} has no [[mixture]]: give --data name=STORE_DIR:weight",
            recipe.name
        )));
    }
    let (mut train, mut valid) = (vec![], vec![]);
    for slot in &recipe.mixture {
        let corpus: EmbeddedCorpus = slot.source.parse()?;
        let (t, v) = corpus.split_stores(data_dir, tokenizer, HELD_OUT_DOCUMENTS)?;
        for (stores, store) in [(&mut train, t), (&mut valid, v)] {
            stores.push(MixtureSource {
                name: slot.source.clone(),
                store: Arc::new(store),
                weight: slot.weight,
            });
        }
    }
    Ok(RunMixtures {
        train: Mixture::new(train, seq_len, seed)?,
        valid: Mixture::new(valid, seq_len, seed.wrapping_add(1))?,
        validation: format!("the last {HELD_OUT_DOCUMENTS} documents of each embedded corpus"),
    })
}
