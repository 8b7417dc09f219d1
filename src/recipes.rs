//! The recipes that ship with phi-zoo (the files in `recipes/`), selectable by name, and recipe
//! files selectable by path: one parse for every program that trains.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use phi_zoo_common::train::Recipe;
use phi_zoo_common::{PhiConfig, PhiError, Result};

/// A recipe in the repository's `recipes/` folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NamedRecipe {
    /// phi-1 pretraining on CodeTextbook.
    Phi1,
    /// phi-1 fine-tuning on CodeExercises.
    Phi1Finetune,
    /// phi-1.5: 20% code, 80% synthetic textbooks.
    Phi1_5,
    /// phi-1.5-web: 20% code, 40% filtered web, 40% synthetic.
    Phi1_5Web,
    /// Phi-2: phi-zoo's defaults (none was published).
    Phi2,
    /// The demo: the tiny shape on the embedded corpora, in minutes on a CPU.
    Tiny,
    /// Fine-tuning models under 100M parameters (the demo's).
    TinyFinetune,
}

impl NamedRecipe {
    /// Every named recipe.
    pub const ALL: [NamedRecipe; 7] = [
        NamedRecipe::Phi1,
        NamedRecipe::Phi1Finetune,
        NamedRecipe::Phi1_5,
        NamedRecipe::Phi1_5Web,
        NamedRecipe::Phi2,
        NamedRecipe::Tiny,
        NamedRecipe::TinyFinetune,
    ];

    /// Every name it is accepted by; the first is its file's name in `recipes/`.
    pub fn names(self) -> &'static [&'static str] {
        match self {
            NamedRecipe::Phi1 => &["phi-1", "phi1"],
            NamedRecipe::Phi1Finetune => &["phi-1-finetune", "phi1-finetune"],
            NamedRecipe::Phi1_5 => &["phi-1.5", "phi-1_5", "phi1_5", "phi1.5"],
            NamedRecipe::Phi1_5Web => &["phi-1.5-web", "phi-1_5-web", "phi1_5-web"],
            NamedRecipe::Phi2 => &["phi-2", "phi2"],
            NamedRecipe::Tiny => &["tiny"],
            NamedRecipe::TinyFinetune => &["tiny-finetune"],
        }
    }

    /// The name it is printed as.
    pub fn name(self) -> &'static str {
        self.names()[0]
    }

    /// The recipe file's text.
    pub fn toml(self) -> &'static str {
        match self {
            NamedRecipe::Phi1 => include_str!("../recipes/phi-1.toml"),
            NamedRecipe::Phi1Finetune => include_str!("../recipes/phi-1-finetune.toml"),
            NamedRecipe::Phi1_5 => include_str!("../recipes/phi-1.5.toml"),
            NamedRecipe::Phi1_5Web => include_str!("../recipes/phi-1.5-web.toml"),
            NamedRecipe::Phi2 => include_str!("../recipes/phi-2.toml"),
            NamedRecipe::Tiny => include_str!("../recipes/tiny.toml"),
            NamedRecipe::TinyFinetune => include_str!("../recipes/tiny-finetune.toml"),
        }
    }

    /// The recipe.
    pub fn recipe(self) -> Recipe {
        Recipe::from_toml(self.toml(), &format!("recipes/{}.toml", self.name()))
            .expect("the shipped recipes parse (tested)")
    }

    /// The fine-tuning recipe for a model of this config: phi-1's for real models, the demo's
    /// (ten times the rate) for models under 100M parameters, whose rates the papers do not cover.
    pub fn finetune_for(config: &PhiConfig) -> NamedRecipe {
        if config.num_parameters() < 100_000_000 {
            NamedRecipe::TinyFinetune
        } else {
            NamedRecipe::Phi1Finetune
        }
    }

    /// The accepted names, for help and error texts.
    pub fn listing() -> String {
        Self::ALL
            .iter()
            .map(|r| r.name())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl FromStr for NamedRecipe {
    type Err = String;

    fn from_str(name: &str) -> std::result::Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|r| r.names().contains(&name))
            .ok_or_else(|| {
                format!(
                    "unknown recipe {name:?}: {}, or a .toml file",
                    Self::listing()
                )
            })
    }
}

impl fmt::Display for NamedRecipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A recipe by name (`phi-1.5`, `tiny`, …) or by the path of a TOML file.
pub fn recipe(name_or_path: &str) -> Result<Recipe> {
    match NamedRecipe::from_str(name_or_path) {
        Ok(named) => Ok(named.recipe()),
        Err(_) if Path::new(name_or_path).is_file() => Recipe::from_file(name_or_path),
        Err(unknown) => Err(PhiError::Input(unknown)),
    }
}
