#!/usr/bin/env python3
"""Build tiny random Phi models and the reference outputs phi-zoo's parity tests compare against.

Each fixture is a `PhiForCausalLM` from Hugging Face transformers (eager attention, float32, CPU)
with weights drawn far wider than the usual 0.02 so that a wrong rotary convention, GELU, bias or
key mapping shows up in the logits. It is written in the checkpoint layouts phi-zoo reads
(docs/ARCHITECTURE.md §3): V3 (current hub names), V2 "phi-msft" and V1 "MixFormerSequential" (fused Wqkv),
as single or sharded safetensors, or single or sharded PyTorch `.bin`, each with a
config.json in the matching dialect (flat hub, nested transformers-5 `rope_parameters`, or the
old msft/MixFormer names). `reference.json` holds the input ids, logits and final hidden states.

Usage (needs torch, transformers >= 5, safetensors):
    python3 tools/make_fixtures.py                       # the committed set, into tests/fixtures
    python3 tools/make_fixtures.py --out /tmp/fx --seed 7 --custom hidden=48,heads=6,kv_heads=3,layers=3,partial=0.25
The second form writes one extra fixture (`custom`) in every layout, for spot checks with other
seeds and shapes: `cargo run --example logits -- --model /tmp/fx/custom/v1 --ids ...`.
"""

import argparse
import json
import os
import shutil

import torch
from safetensors.torch import save_file
from transformers import PhiConfig, PhiForCausalLM

# name -> (model shape, layouts to write). Every layout entry is (folder, key layout, file format,
# config dialect). qk_layernorm has no representation in the old fused layouts, so that fixture is
# V3 only; GQA does (msft's n_head_kv), so the GQA fixture covers the fused split too.
FIXTURES = {
    "tiny_p05": (
        dict(hidden=32, heads=4, kv_heads=4, layers=2, inter=64, vocab=96, partial=0.5, qk=False),
        [
            ("v3", "v3", "safetensors", "flat"),
            ("v3_sharded", "v3", "sharded", "nested"),
            ("v2", "v2", "safetensors", "msft"),
            ("v1", "v1", "bin", "mixformer"),
        ],
    ),
    "tiny_p04": (
        dict(hidden=40, heads=4, kv_heads=4, layers=2, inter=80, vocab=100, partial=0.4, qk=False),
        [
            ("v3", "v3", "safetensors", "nested"),
            ("v3_bin", "v3", "bin", "flat"),
            ("v2", "v2", "bin_sharded", "msft"),
            ("v1", "v1", "safetensors", "mixformer"),
        ],
    ),
    "tiny_qk_gqa": (
        dict(hidden=32, heads=4, kv_heads=2, layers=2, inter=48, vocab=80, partial=0.5, qk=True),
        [
            ("v3", "v3", "safetensors", "nested"),
            ("v3_sharded", "v3", "sharded", "flat"),
        ],
    ),
    "tiny_gqa": (
        dict(hidden=48, heads=6, kv_heads=2, layers=3, inter=96, vocab=112, partial=0.5, qk=False),
        [
            ("v3", "v3", "safetensors", "flat"),
            ("v2", "v2", "safetensors", "msft"),
            ("v1", "v1", "sharded", "mixformer"),
        ],
    ),
}

ALL_LAYOUTS = [
    ("v3", "v3", "safetensors", "flat"),
    ("v3_nested", "v3", "safetensors", "nested"),
    ("v3_sharded", "v3", "sharded", "flat"),
    ("v3_bin", "v3", "bin", "nested"),
    ("v2", "v2", "safetensors", "msft"),
    ("v2_bin", "v2", "bin_sharded", "msft"),
    ("v1", "v1", "bin", "mixformer"),
    ("v1_safetensors", "v1", "safetensors", "mixformer"),
]

MAX_POSITIONS = 64
GREEDY_NEW_TOKENS = 16


def build_model(shape, seed):
    config = PhiConfig(
        vocab_size=shape["vocab"],
        hidden_size=shape["hidden"],
        intermediate_size=shape["inter"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        num_key_value_heads=shape["kv_heads"],
        partial_rotary_factor=shape["partial"],
        qk_layernorm=shape["qk"],
        max_position_embeddings=MAX_POSITIONS,
        resid_pdrop=0.1,  # dropout is configured but must be inactive at inference
        bos_token_id=None,
        eos_token_id=None,
        attn_implementation="eager",
    )
    torch.manual_seed(seed)
    model = PhiForCausalLM(config).eval().float()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "layernorm" in name and name.endswith(".weight"):
                param.copy_(1.0 + 0.3 * torch.randn_like(param))
            elif name.endswith(".bias"):
                param.copy_(0.2 * torch.randn_like(param))
            else:
                param.copy_(0.25 * torch.randn_like(param))
    return config, model


def v3_state(model):
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def fused_state(model, shape, layout):
    """The old microsoft layouts: q/k/v fused into Wqkv as plain [q; k; v] rows (docs/ARCHITECTURE.md §3)."""
    sd = model.state_dict()
    layers = shape["layers"]
    if layout == "v2":
        embed, block, final_ln, head = "transformer.embd.wte", "transformer.h.{}", "lm_head.ln", "lm_head.linear"
        block_index = lambda i: i  # noqa: E731
    else:
        embed, block = "layers.0.wte", "layers.{}"
        final_ln, head = f"layers.{layers + 1}.ln", f"layers.{layers + 1}.linear"
        block_index = lambda i: i + 1  # noqa: E731
    out = {f"{embed}.weight": sd["model.embed_tokens.weight"]}
    for i in range(layers):
        src, dst = f"model.layers.{i}", block.format(block_index(i))
        for p in ("weight", "bias"):
            out[f"{dst}.ln.{p}"] = sd[f"{src}.input_layernorm.{p}"]
            out[f"{dst}.mixer.Wqkv.{p}"] = torch.cat(
                [sd[f"{src}.self_attn.{n}_proj.{p}"] for n in ("q", "k", "v")], dim=0
            )
            out[f"{dst}.mixer.out_proj.{p}"] = sd[f"{src}.self_attn.dense.{p}"]
            out[f"{dst}.mlp.fc1.{p}"] = sd[f"{src}.mlp.fc1.{p}"]
            out[f"{dst}.mlp.fc2.{p}"] = sd[f"{src}.mlp.fc2.{p}"]
    for p in ("weight", "bias"):
        out[f"{final_ln}.{p}"] = sd[f"model.final_layernorm.{p}"]
        out[f"{head}.{p}"] = sd[f"lm_head.{p}"]
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def config_json(shape, dialect):
    head_dim = shape["hidden"] // shape["heads"]
    if dialect in ("flat", "nested"):
        cfg = {
            "architectures": ["PhiForCausalLM"],
            "model_type": "phi",
            "vocab_size": shape["vocab"],
            "hidden_size": shape["hidden"],
            "intermediate_size": shape["inter"],
            "num_hidden_layers": shape["layers"],
            "num_attention_heads": shape["heads"],
            "num_key_value_heads": shape["kv_heads"],
            "hidden_act": "gelu_new",
            "max_position_embeddings": MAX_POSITIONS,
            "layer_norm_eps": 1e-5,
            "qk_layernorm": shape["qk"],
            "resid_pdrop": 0.1,
            "embd_pdrop": 0.0,
            "attention_dropout": 0.0,
            "bos_token_id": None,
            "eos_token_id": None,
            "tie_word_embeddings": False,
            "torch_dtype": "float32",
        }
        if dialect == "flat":  # the hub's config.json (transformers 4.x)
            cfg.update(partial_rotary_factor=shape["partial"], rope_theta=10000.0, rope_scaling=None)
            cfg["transformers_version"] = "4.37.0"
        else:  # what transformers 5 writes
            cfg["rope_parameters"] = {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "partial_rotary_factor": shape["partial"],
            }
            cfg["transformers_version"] = "5.0.0"
        return cfg
    cfg = {
        "activation_function": "gelu_new",
        "n_embd": shape["hidden"],
        "n_layer": shape["layers"],
        "n_head": shape["heads"],
        "n_head_kv": None if shape["kv_heads"] == shape["heads"] else shape["kv_heads"],
        "n_inner": shape["inter"],
        "n_positions": MAX_POSITIONS,
        "rotary_dim": int(head_dim * shape["partial"]),
        "layer_norm_epsilon": 1e-5,
        "vocab_size": shape["vocab"],
        "pad_vocab_size_multiple": 4,
        "resid_pdrop": 0.1,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "tie_word_embeddings": False,
        "initializer_range": 0.02,
    }
    if dialect == "msft":
        cfg.update(model_type="phi-msft", architectures=["PhiForCausalLM"], flash_attn=False,
                   flash_rotary=False, fused_dense=False)
    else:
        cfg.update(model_type="mixformer-sequential", architectures=["MixFormerSequentialForCausalLM"],
                   architecture={"block_cls": "parallel", "mixer": {}, "mlp": {"mlp_cls": "mlp"}})
    return cfg


def write_weights(state, folder, fmt):
    if fmt == "safetensors":
        save_file(state, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    elif fmt == "bin":
        torch.save(state, os.path.join(folder, "pytorch_model.bin"))
    elif fmt in ("sharded", "bin_sharded"):
        # Two shards and an index, named as transformers' save_pretrained names them.
        keys = list(state)
        half = len(keys) // 2
        shards = [keys[:half], keys[half:]]
        stem, ext = ("model", "safetensors") if fmt == "sharded" else ("pytorch_model", "bin")
        weight_map = {}
        for n, shard_keys in enumerate(shards, start=1):
            name = f"{stem}-{n:05d}-of-{len(shards):05d}.{ext}"
            shard = {k: state[k] for k in shard_keys}
            if fmt == "sharded":
                save_file(shard, os.path.join(folder, name), metadata={"format": "pt"})
            else:
                torch.save(shard, os.path.join(folder, name))
            weight_map.update({k: name for k in shard_keys})
        total = sum(v.numel() * v.element_size() for v in state.values())
        with open(os.path.join(folder, f"{stem}.{ext}.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    else:
        raise ValueError(fmt)


def input_ids(shape, seed):
    g = torch.Generator().manual_seed(seed + 1000)
    return torch.randint(0, shape["vocab"], (2, 9), generator=g)


def write_fixture(root, name, shape, layouts, seed):
    config, model = build_model(shape, seed)
    ids = input_ids(shape, seed)
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
        hidden = model.model(input_ids=ids).last_hidden_state
        # One row filling the whole context, so rotary is checked at every position; the last
        # few positions' logits are kept (they depend on all earlier ones).
        g = torch.Generator().manual_seed(seed + 2000)
        long_ids = torch.randint(0, shape["vocab"], (1, MAX_POSITIONS), generator=g)
        long_logits = model(input_ids=long_ids).logits[:, -4:]
        # Greedy continuations, one prompt at a time (the configs have no EOS: no early stop).
        greedy = []
        for row in ids:
            prompt = row[None, :]
            generated = model.generate(
                prompt,
                attention_mask=torch.ones_like(prompt),
                do_sample=False,
                max_new_tokens=GREEDY_NEW_TOKENS,
                pad_token_id=0,
            )
            greedy.append(generated[0, prompt.shape[1]:].tolist())
    assert torch.allclose(out.hidden_states[-1], hidden)
    base = os.path.join(root, name)
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base)
    for folder, layout, fmt, dialect in layouts:
        path = os.path.join(base, folder)
        os.makedirs(path)
        state = v3_state(model) if layout == "v3" else fused_state(model, shape, layout)
        write_weights(state, path, fmt)
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump(config_json(shape, dialect), f, indent=2)
    reference = {
        "source": f"tools/make_fixtures.py, transformers PhiForCausalLM (eager, float32, CPU), seed {seed}",
        "shape": shape,
        "layouts": [folder for folder, *_ in layouts],
        "input_ids": ids.tolist(),
        "logits": out.logits.tolist(),
        "hidden": hidden.tolist(),
        "long_input_ids": long_ids.tolist(),
        "long_logits_last4": long_logits.tolist(),
        "greedy_new_tokens": greedy,
    }
    with open(os.path.join(base, "reference.json"), "w") as f:
        json.dump(reference, f)
    print(f"{name}: {', '.join(reference['layouts'])}")


def parse_custom(text):
    shape = dict(hidden=48, heads=6, kv_heads=6, layers=2, inter=96, vocab=100, partial=0.5, qk=False)
    for item in filter(None, text.split(",")):
        key, value = item.split("=")
        if key not in shape:
            raise SystemExit(f"unknown shape field {key!r}; known: {', '.join(shape)}")
        if key == "qk":
            shape[key] = value.lower() in ("1", "true")
        elif key == "partial":
            shape[key] = float(value)
        else:
            shape[key] = int(value)
    return shape


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--custom", help="write only one fixture named `custom` with this shape, in every layout")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.custom is not None:
        shape = parse_custom(args.custom)
        layouts = [l for l in ALL_LAYOUTS if not (shape["qk"] and l[1] != "v3")]
        write_fixture(args.out, "custom", shape, layouts, args.seed)
        return
    for index, (name, (shape, layouts)) in enumerate(FIXTURES.items()):
        write_fixture(args.out, name, shape, layouts, args.seed + index)


if __name__ == "__main__":
    main()
