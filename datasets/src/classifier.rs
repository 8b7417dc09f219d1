//! The quality classifier: a random forest on document embeddings, as phi-1 scored its corpus
//! (GPT-4 labels for a sample, a random forest on a pretrained model's embeddings for the rest).
//! The forest is smartcore's (maintained, pure Rust, no BLAS, saveable with serde). Two modes:
//! [`ForestMode::Classify`], on labels `score ≥ threshold` (phi-1's), predicting keep or drop;
//! and [`ForestMode::Regress`], on the scores themselves, predicting a score that the filter
//! compares with the threshold. A saved classifier carries its embedder's identity, and refuses
//! embeddings from another model.

use std::path::Path;

use serde::{Deserialize, Serialize};
use smartcore::ensemble::random_forest_classifier::{
    RandomForestClassifier, RandomForestClassifierParameters,
};
use smartcore::ensemble::random_forest_regressor::{
    RandomForestRegressor, RandomForestRegressorParameters,
};
use smartcore::linalg::basic::matrix::DenseMatrix;

use crate::atomic_file::AtomicFile;
use crate::embed::EmbedderIdentity;
use crate::error::{DataError, Result};
use crate::permutation::finalize;

/// What the forest learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForestMode {
    /// Keep (score ≥ threshold) or drop.
    Classify,
    /// The score.
    Regress,
}

/// Forest settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForestSettings {
    /// Trees.
    pub trees: u16,
    /// Depth limit (`None`: grown until pure).
    pub max_depth: Option<u16>,
    /// Fewest samples in a leaf.
    pub min_samples_leaf: usize,
    /// Share of the labelled documents held out for evaluation.
    pub held_out: f64,
    /// Seed of the bootstrap samples, feature draws and the held-out split.
    pub seed: u64,
}

impl Default for ForestSettings {
    /// 100 trees grown fully, 20% held out, seed 0.
    fn default() -> Self {
        Self {
            trees: 100,
            max_depth: None,
            min_samples_leaf: 1,
            held_out: 0.2,
            seed: 0,
        }
    }
}

type Matrix = DenseMatrix<f32>;

#[derive(Debug, Serialize, Deserialize)]
enum Forest {
    Classify(RandomForestClassifier<f32, u32, Matrix, Vec<u32>>),
    Regress(RandomForestRegressor<f32, f32, Matrix, Vec<f32>>),
}

/// How the forest did on the held-out documents (labels: score ≥ threshold).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Documents trained on.
    pub train: usize,
    /// Documents held out.
    pub held_out: usize,
    /// Share of held-out documents labelled right.
    pub accuracy: f64,
    /// Of those predicted kept, the share that should be.
    pub precision: f64,
    /// Of those that should be kept, the share predicted kept.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// `[[true drop, false keep], [false drop, true keep]]`: rows the label, columns the
    /// prediction.
    pub confusion: [[u64; 2]; 2],
    /// Root-mean-square error of the predicted scores (regression only).
    pub rmse: Option<f64>,
}

/// A trained classifier and what it was trained on.
#[derive(Debug, Serialize, Deserialize)]
pub struct QualityClassifier {
    /// The embedder whose embeddings it reads.
    pub embedder: EmbedderIdentity,
    /// Classification or regression.
    pub mode: ForestMode,
    /// Scores at or above it are kept.
    pub threshold: f64,
    /// The settings it was trained with.
    pub settings: ForestSettings,
    /// Its held-out evaluation.
    pub evaluation: Evaluation,
    forest: Forest,
}

fn matrix(rows: &[&[f32]]) -> Result<Matrix> {
    DenseMatrix::from_2d_vec(&rows.iter().map(|r| r.to_vec()).collect())
        .map_err(|e| DataError::Invalid(format!("embeddings: {e}")))
}

impl QualityClassifier {
    /// Trains on `rows` (embeddings by `embedder`) and their `scores`; holds out
    /// `settings.held_out` of them (a seeded shuffle) and evaluates on those.
    pub fn train(
        rows: &[&[f32]],
        scores: &[f64],
        embedder: EmbedderIdentity,
        mode: ForestMode,
        threshold: f64,
        settings: ForestSettings,
    ) -> Result<Self> {
        if rows.len() != scores.len() {
            return Err(DataError::Invalid(format!(
                "{} embeddings but {} scores",
                rows.len(),
                scores.len()
            )));
        }
        if let Some(r) = rows.iter().find(|r| r.len() != embedder.dim) {
            return Err(DataError::Invalid(format!(
                "an embedding of width {} where the embedder gives {}",
                r.len(),
                embedder.dim
            )));
        }
        if !(0.0..1.0).contains(&settings.held_out) || settings.trees == 0 {
            return Err(DataError::Invalid(
                "held_out must be in [0, 1) and trees at least 1".into(),
            ));
        }
        // A seeded shuffle: documents ordered by a hash of (seed, index).
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.sort_by_key(|&i| mix(settings.seed, i as u64));
        let held = ((rows.len() as f64) * settings.held_out).round() as usize;
        let (test, train) = order.split_at(held);
        if train.len() < 2 {
            return Err(DataError::Invalid(format!(
                "{} labelled documents leave {} to train on; the forest needs at least 2",
                rows.len(),
                train.len()
            )));
        }
        let pick = |idx: &[usize]| -> Vec<&[f32]> { idx.iter().map(|&i| rows[i]).collect() };
        let x = matrix(&pick(train))?;
        let label = |s: f64| u32::from(s >= threshold);
        let forest = match mode {
            ForestMode::Classify => {
                let y: Vec<u32> = train.iter().map(|&i| label(scores[i])).collect();
                let params = RandomForestClassifierParameters {
                    max_depth: settings.max_depth,
                    min_samples_leaf: settings.min_samples_leaf,
                    n_trees: settings.trees,
                    seed: settings.seed,
                    ..Default::default()
                };
                Forest::Classify(
                    RandomForestClassifier::fit(&x, &y, params)
                        .map_err(|e| DataError::Invalid(format!("training the forest: {e}")))?,
                )
            }
            ForestMode::Regress => {
                let y: Vec<f32> = train.iter().map(|&i| scores[i] as f32).collect();
                let params = RandomForestRegressorParameters {
                    max_depth: settings.max_depth,
                    min_samples_leaf: settings.min_samples_leaf,
                    min_samples_split: 2,
                    n_trees: settings.trees as usize,
                    m: None,
                    keep_samples: false,
                    seed: settings.seed,
                };
                Forest::Regress(
                    RandomForestRegressor::fit(&x, &y, params)
                        .map_err(|e| DataError::Invalid(format!("training the forest: {e}")))?,
                )
            }
        };
        let mut classifier = Self {
            embedder,
            mode,
            threshold,
            settings,
            evaluation: Evaluation::default(),
            forest,
        };
        let mut evaluation = Evaluation {
            train: train.len(),
            held_out: test.len(),
            ..Default::default()
        };
        if !test.is_empty() {
            let predicted = classifier.score(&pick(test))?;
            let mut squared = 0.0;
            for (&i, &p) in test.iter().zip(&predicted) {
                let (truth, kept) = (label(scores[i]) as usize, classifier.keeps(p) as usize);
                evaluation.confusion[truth][kept] += 1;
                squared += (p - scores[i]).powi(2);
            }
            let [[tn, fp], [fn_, tp]] = evaluation.confusion.map(|r| r.map(|v| v as f64));
            let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
            evaluation.accuracy = ratio(tp + tn, test.len() as f64);
            evaluation.precision = ratio(tp, tp + fp);
            evaluation.recall = ratio(tp, tp + fn_);
            evaluation.f1 = ratio(
                2.0 * evaluation.precision * evaluation.recall,
                evaluation.precision + evaluation.recall,
            );
            if mode == ForestMode::Regress {
                evaluation.rmse = Some((squared / test.len() as f64).sqrt());
            }
        }
        classifier.evaluation = evaluation;
        Ok(classifier)
    }

    /// Scores of `rows`: the predicted class (0 or 1) when classifying, the predicted score when
    /// regressing.
    pub fn score(&self, rows: &[&[f32]]) -> Result<Vec<f64>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(r) = rows.iter().find(|r| r.len() != self.embedder.dim) {
            return Err(DataError::Invalid(format!(
                "an embedding of width {} given to a classifier trained on width {}",
                r.len(),
                self.embedder.dim
            )));
        }
        let x = matrix(rows)?;
        let failed = |e: smartcore::error::Failed| DataError::Invalid(format!("the forest: {e}"));
        Ok(match &self.forest {
            Forest::Classify(f) => f
                .predict(&x)
                .map_err(failed)?
                .into_iter()
                .map(f64::from)
                .collect(),
            Forest::Regress(f) => f
                .predict(&x)
                .map_err(failed)?
                .into_iter()
                .map(f64::from)
                .collect(),
        })
    }

    /// Whether a document of this score is kept.
    pub fn keeps(&self, score: f64) -> bool {
        match self.mode {
            ForestMode::Classify => score >= 0.5,
            ForestMode::Regress => score >= self.threshold,
        }
    }

    /// Writes the classifier (JSON), atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut file = AtomicFile::create(path)?;
        let text = serde_json::to_vec(self)
            .map_err(|e| DataError::Invalid(format!("{}: {e}", path.display())))?;
        file.write_all(&text)?;
        file.commit()?;
        Ok(())
    }

    /// Reads a saved classifier.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        serde_json::from_slice(&text)
            .map_err(|e| DataError::corpus(path, format!("not a saved quality classifier: {e}")))
    }
}

/// SplitMix64's finaliser of `seed ⊕ i·φ`: a seeded order for the held-out split.
fn mix(seed: u64, i: u64) -> u64 {
    finalize(seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(dim: usize) -> EmbedderIdentity {
        EmbedderIdentity {
            source: "test".into(),
            fingerprint: "0".repeat(64),
            dim,
            max_tokens: 8,
        }
    }

    #[test]
    fn a_separable_labelling_is_learnt_in_both_modes_and_saved() {
        // Score = 5 when the first feature is positive, else 1; the rest is noise.
        let mut state = 1u64;
        let mut next = || {
            state = mix(state, 7);
            (state >> 11) as f32 / (1u64 << 53) as f32 - 0.5
        };
        let rows: Vec<Vec<f32>> = (0..300).map(|_| (0..6).map(|_| next()).collect()).collect();
        let scores: Vec<f64> = rows
            .iter()
            .map(|r| if r[0] > 0.0 { 5.0 } else { 1.0 })
            .collect();
        let refs: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
        for mode in [ForestMode::Classify, ForestMode::Regress] {
            let settings = ForestSettings {
                trees: 30,
                ..Default::default()
            };
            let c =
                QualityClassifier::train(&refs, &scores, identity(6), mode, 3.0, settings).unwrap();
            assert_eq!((c.evaluation.train, c.evaluation.held_out), (240, 60));
            assert!(c.evaluation.f1 > 0.9, "{mode:?}: {:?}", c.evaluation);
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("c.json");
            c.save(&path).unwrap();
            let back = QualityClassifier::load(&path).unwrap();
            assert_eq!(
                back.score(&refs[..10]).unwrap(),
                c.score(&refs[..10]).unwrap()
            );
            assert!(back.score(&[&[0.0; 5]]).is_err());
        }
    }
}
