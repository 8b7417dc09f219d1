//! Recipes as data: the shipped files carry the papers' numbers, every name and alias parses to one
//! thing, bad recipe files are refused by field, and a recipe's optimizer is the one it describes.

use std::str::FromStr;

use burn::module::{Module, Param};
use burn::optim::{GradientsParams, Optimizer};
use burn::prelude::*;
use phi_zoo::common::train::{Decay, OptimizerKind};
use phi_zoo::{NamedRecipe, Recipe, Variant};

use crate::fixtures::Train;

#[test]
fn shipped_recipes_carry_the_papers_numbers() {
    let phi1 = NamedRecipe::Phi1.recipe();
    assert_eq!(phi1.optimizer.kind, OptimizerKind::AdamW);
    assert_eq!(
        (phi1.schedule.peak, phi1.schedule.warmup_steps),
        (1e-3, 750)
    );
    assert_eq!(phi1.schedule.decay, Decay::Linear);
    assert_eq!(
        (
            phi1.optimizer.weight_decay,
            phi1.dropout.attention,
            phi1.dropout.resid
        ),
        (0.1, 0.1, 0.1)
    );
    assert_eq!(phi1.global_batch_sequences(), Some(1024));

    let finetune = NamedRecipe::Phi1Finetune.recipe();
    assert_eq!(
        (finetune.schedule.peak, finetune.schedule.warmup_steps),
        (1e-4, 50)
    );
    assert_eq!(finetune.optimizer.weight_decay, 0.01);
    assert_eq!(finetune.global_batch_sequences(), Some(256));
    assert_eq!(finetune.for_lora().schedule.peak, 1e-3);

    let phi15 = NamedRecipe::Phi1_5.recipe();
    assert_eq!(phi15.optimizer.kind, OptimizerKind::Adam);
    let o = phi15.optimizer;
    assert_eq!((o.beta_1, o.beta_2, o.epsilon), (0.9, 0.98, 1e-7));
    assert_eq!(
        (phi15.schedule.rate_at(0), phi15.schedule.rate_at(30_000)),
        (2e-4, 2e-4)
    );
    assert_eq!(phi15.global_batch_sequences(), Some(2048));
    // 150B tokens in steps of 2048 × 2048.
    assert_eq!(phi15.schedule.total_steps, 150_000_000_000 / (2048 * 2048));
    let weights = |r: &Recipe| -> Vec<(String, f64)> {
        r.mixture
            .iter()
            .map(|m| (m.source.clone(), m.weight))
            .collect()
    };
    assert_eq!(
        weights(&phi15),
        [("code".to_string(), 0.2), ("synthetic".to_string(), 0.8)]
    );
    let web = NamedRecipe::Phi1_5Web.recipe();
    assert_eq!(
        weights(&web),
        [
            ("code".to_string(), 0.2),
            ("web".to_string(), 0.4),
            ("synthetic".to_string(), 0.4)
        ]
    );
    assert_eq!(web.schedule.total_steps, 300_000_000_000 / (2048 * 2048));
    let phi2 = NamedRecipe::Phi2.recipe();
    assert!(phi2.source.contains("unpublished"));
    assert_eq!(
        (phi2.optimizer.beta_2, phi2.schedule.decay),
        (0.95, Decay::Cosine)
    );

    // The demo: one micro-batch per step, whatever the batch; ten times phi-1.5's rate.
    let tiny = NamedRecipe::Tiny.recipe();
    assert_eq!(tiny.grad_accum(1, 16, 1), 1);
    assert_eq!(tiny.schedule.peak, 2e-3);
    assert_eq!(weights(&tiny), weights(&phi15));
    assert_eq!(phi15.grad_accum(8, 2048, 4), 64);

    for named in NamedRecipe::ALL {
        let recipe = named.recipe();
        assert_eq!(recipe.name, named.name(), "recipes/{}.toml", named.name());
        let total: f64 = recipe.mixture.iter().map(|m| m.weight).sum();
        assert!(
            recipe.mixture.is_empty() || (total - 1.0).abs() < 1e-9,
            "{}",
            recipe.name
        );
        // Every slot names an embedded corpus, so the demo can run any recipe.
        for slot in &recipe.mixture {
            slot.source
                .parse::<phi_zoo::datasets::corpora::EmbeddedCorpus>()
                .unwrap();
        }
        // What `to_toml` writes, `from_toml` reads back unchanged.
        assert_eq!(
            Recipe::from_toml(&recipe.to_toml(), "round trip").unwrap(),
            recipe
        );
    }
}

#[test]
fn every_name_and_alias_parses_to_one_thing() {
    for variant in Variant::ALL {
        for name in variant.names() {
            assert_eq!(Variant::from_str(name).unwrap(), variant, "{name}");
            assert_eq!(phi_zoo::named_config(name), Some(variant.config()));
        }
        variant.config().validate(variant.name()).unwrap();
    }
    for recipe in NamedRecipe::ALL {
        for name in recipe.names() {
            assert_eq!(NamedRecipe::from_str(name).unwrap(), recipe, "{name}");
            assert_eq!(phi_zoo::recipe(name).unwrap(), recipe.recipe());
        }
    }
    assert_eq!(Variant::Phi1_5.hub_id(), Some("microsoft/phi-1_5"));
    assert_eq!(Variant::Tiny.hub_id(), None);
    let unknown = Variant::from_str("phi-3").unwrap_err();
    assert!(
        unknown.contains("phi-1.5") && unknown.contains("tiny"),
        "{unknown}"
    );
    let unknown = phi_zoo::recipe("phi-3").unwrap_err().to_string();
    assert!(unknown.contains("tiny-finetune"), "{unknown}");

    // Fine-tuning picks the demo's rate for demo-sized models and phi-1's otherwise.
    let small = Variant::Tiny.config();
    assert_eq!(NamedRecipe::finetune_for(&small), NamedRecipe::TinyFinetune);
    let phi = Variant::Phi1_5.config();
    assert_eq!(NamedRecipe::finetune_for(&phi), NamedRecipe::Phi1Finetune);

    // A recipe file is selected by its path.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mine.toml");
    let mine = NamedRecipe::Phi2.recipe().with_peak(3e-4);
    std::fs::write(&path, mine.to_toml()).unwrap();
    assert_eq!(phi_zoo::recipe(path.to_str().unwrap()).unwrap(), mine);
}

#[test]
fn bad_recipe_files_are_refused_by_field() {
    let good = NamedRecipe::Phi1_5.toml();
    let cases = [
        (
            good.replace("beta_2 = 0.98", "beta_2 = 1.5"),
            "optimizer.beta_2",
        ),
        (
            good.replace("epsilon = 1e-7", "epsilon = -1.0"),
            "optimizer.epsilon",
        ),
        (good.replace("peak = 2e-4", "peak = 0.0"), "schedule.peak"),
        (
            good.replace("weight = 0.8", "weight = -1.0"),
            "mixture[1].weight",
        ),
        (good.replace("seq_len = 2048", "seq_len = 0"), "seq_len"),
        (
            good.replace("decay = \"constant\"", "decay = \"sawtooth\""),
            "sawtooth",
        ),
        (
            good.replace("beta_1 = 0.9", "beta_1 = 0.9\nbeta_3 = 0.5"),
            "beta_3",
        ),
        (good.replace("peak = 2e-4\n", ""), "peak"),
        ("name = [".to_string(), "line 1"),
    ];
    for (text, named) in cases {
        let error = Recipe::from_toml(&text, "bad.toml")
            .unwrap_err()
            .to_string();
        assert!(error.contains("bad.toml"), "{error}");
        assert!(error.contains(named), "{named}: {error}");
    }
    // A file far larger than any recipe is refused before it is read.
    let dir = tempfile::tempdir().unwrap();
    let huge = dir.path().join("huge.toml");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let error = Recipe::from_file(&huge).unwrap_err().to_string();
    assert!(
        error.contains("huge.toml") && error.contains("not a recipe"),
        "{error}"
    );
    let missing = Recipe::from_file(dir.path().join("none.toml"))
        .unwrap_err()
        .to_string();
    assert!(missing.contains("none.toml"), "{missing}");
}

#[derive(Module, Debug)]
struct Scalar<B: Backend> {
    w: Param<Tensor<B, 1>>,
}

/// Two AdamW steps with the recipe's β₁, β₂ and ε (and no decay of the optimizer's own) on a
/// parameter whose gradients are 1 then 3, against the update written out by hand.
#[test]
fn a_recipes_optimizer_uses_its_betas_and_epsilon() {
    let text = NamedRecipe::Phi1Finetune
        .toml()
        .replace("beta_1 = 0.9", "beta_1 = 0.8")
        .replace("beta_2 = 0.98", "beta_2 = 0.9")
        .replace("epsilon = 1e-7", "epsilon = 0.5");
    let recipe = Recipe::from_toml(&text, "test").unwrap();
    let device = Default::default();
    let mut module = Scalar::<Train> {
        w: Param::from_tensor(Tensor::from_floats([0.0], &device)),
    };
    let mut optim = recipe.optimizer::<Train, Scalar<Train>>();
    let lr = 0.1;
    for g in [1.0f32, 3.0] {
        let loss = module.w.val().mul_scalar(g).sum();
        let grads = GradientsParams::from_grads(loss.backward(), &module);
        module = optim.step(lr, module, grads);
    }
    let adam = |b1: f64, b2: f64, eps: f64| {
        let (mut m, mut v, mut w) = (0.0f64, 0.0f64, 0.0f64);
        for (t, g) in [(1, 1.0f64), (2, 3.0)] {
            m = b1 * m + (1.0 - b1) * g;
            v = b2 * v + (1.0 - b2) * g * g;
            let m_hat = m / (1.0 - b1.powi(t));
            let v_hat = v / (1.0 - b2.powi(t));
            w -= lr * m_hat / (v_hat.sqrt() + eps);
        }
        w
    };
    let got = module.w.val().into_scalar() as f64;
    let want = adam(0.8, 0.9, 0.5);
    assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    // burn's defaults (0.9, 0.999, 1e-5), which fine-tuning used before, land elsewhere.
    let defaults = adam(0.9, 0.999, 1e-5);
    assert!((got - defaults).abs() > 1e-2, "{got} vs {defaults}");
}

#[test]
fn a_fitted_recipe_spans_the_run() {
    let phi1 = NamedRecipe::Phi1.recipe();
    let fitted = phi1.fitted_to(200);
    assert_eq!(fitted.schedule.total_steps, 200);
    assert_eq!(fitted.schedule.warmup_steps, 20);
    assert!((fitted.schedule.rate_at(199) - 1e-3 / 180.0).abs() < 1e-12);
    assert_eq!(fitted.optimizer, phi1.optimizer);
    assert_eq!(
        NamedRecipe::Phi1
            .recipe()
            .fitted_to(100_000)
            .schedule
            .warmup_steps,
        750
    );
}
