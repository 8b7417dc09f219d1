#!/usr/bin/env python3
"""GGUF files written by llama.cpp's own Python writer and quantizer, and what they must compute.

From the `tiny_p05` fixture (the one whose rows are whole 32-value blocks) this writes, with the
`gguf` package's `GGUFWriter` and `gguf.quants.quantize` (the numpy port of llama.cpp's reference
quantizers), one `phi2` GGUF per type into tests/fixtures/gguf:

    f32.gguf    q, k, v as three tensors (what convert_hf_to_gguf.py writes today)
    f16.gguf    q, k, v fused into one `attn_qkv` tensor (what older conversions hold)
    bf16.gguf, q8_0.gguf, q4_0.gguf

Matrices are in the file's type, norms and biases in F32, as llama.cpp's converter stores them,
with a 96-token byte-level BPE vocabulary (two merges) so the tokenizer path is exercised.
`reference.json` holds, for each file, the logits transformers' `PhiForCausalLM` (eager, f32,
CPU) computes on `tiny_p05`'s input ids from the file's tensors dequantized by
`gguf.quants.dequantize`: what phi-zoo must compute after loading the file. It also holds random
`Q6_K` blocks and their dequantized values (llama.cpp puts the LM head of a Q4_0 model in Q6_K).

Usage (needs gguf, numpy, torch, transformers, safetensors):
    python3 tools/make_gguf_fixtures.py
"""

import json
import os

import numpy as np
import torch
from gguf import GGMLQuantizationType as Q
from gguf import GGUFReader, GGUFWriter
from gguf.quants import dequantize, quantize
from safetensors.numpy import load_file
from transformers import PhiConfig, PhiForCausalLM

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SOURCE = os.path.join(ROOT, "tests", "fixtures", "tiny_p05")
OUT = os.path.join(ROOT, "tests", "fixtures", "gguf")

# file -> (matrix type, fused qkv)
FILES = {
    "f32.gguf": (Q.F32, False),
    "f16.gguf": (Q.F16, True),
    "bf16.gguf": (Q.BF16, False),
    "q8_0.gguf": (Q.Q8_0, False),
    "q4_0.gguf": (Q.Q4_0, False),
}
FILE_TYPE = {Q.F32: 0, Q.F16: 1, Q.Q4_0: 2, Q.Q8_0: 7, Q.BF16: 32}


def tokens():
    """96 tokens: printable ASCII `!`..`|`, the byte-level space `Ġ`, two merged tokens and
    `<|endoftext|>` (control)."""
    vocab = [chr(c) for c in range(ord("!"), ord("|") + 1)] + ["\u0120", "\u0120t", "he"]
    types = [1] * len(vocab) + [3]
    vocab.append("<|endoftext|>")
    assert len(vocab) == 96
    return vocab, types, ["\u0120 t", "h e"]


def gguf_names(layers):
    """V3 key -> GGUF name, for every tensor but q/k/v."""
    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.final_layernorm.weight": "output_norm.weight",
        "model.final_layernorm.bias": "output_norm.bias",
        "lm_head.weight": "output.weight",
        "lm_head.bias": "output.bias",
    }
    for i in range(layers):
        for v3, gguf in [
            ("input_layernorm", "attn_norm"),
            ("self_attn.dense", "attn_output"),
            ("mlp.fc1", "ffn_up"),
            ("mlp.fc2", "ffn_down"),
        ]:
            for leaf in ["weight", "bias"]:
                names[f"model.layers.{i}.{v3}.{leaf}"] = f"blk.{i}.{gguf}.{leaf}"
    return names


def gguf_tensors(state, layers, fused):
    """GGUF name -> f32 array, q/k/v split or fused."""
    names = gguf_names(layers)
    out = {names[k]: v for k, v in state.items() if k in names}
    for i in range(layers):
        for leaf in ["weight", "bias"]:
            parts = [state[f"model.layers.{i}.self_attn.{p}_proj.{leaf}"] for p in "qkv"]
            if fused:
                out[f"blk.{i}.attn_qkv.{leaf}"] = np.concatenate(parts, axis=0)
            else:
                for p, t in zip("qkv", parts):
                    out[f"blk.{i}.attn_{p}.{leaf}"] = t
    return out


def write(path, config, tensors, qtype):
    writer = GGUFWriter(path, "phi2")
    writer.add_name("tiny_p05")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config["num_key_value_heads"])
    writer.add_layer_norm_eps(config["layer_norm_eps"])
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    writer.add_rope_dimension_count(int(config["partial_rotary_factor"] * head_dim))
    writer.add_file_type(FILE_TYPE[qtype])
    vocab, types, merges = tokens()
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("phi-2")
    writer.add_token_list(vocab)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_eos_token_id(95)
    for name, values in sorted(tensors.items()):
        values = values.astype(np.float32)
        if values.ndim == 1 or qtype == Q.F32:
            writer.add_tensor(name, values, raw_dtype=Q.F32)
        elif qtype == Q.F16:
            writer.add_tensor(name, values.astype(np.float16), raw_dtype=Q.F16)
        else:
            writer.add_tensor(name, quantize(values, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def dequantized_state(path, layers):
    """The file's tensors dequantized by gguf, under V3 keys (q/k/v split back)."""
    reader = GGUFReader(path)
    by_gguf = {}
    for t in reader.tensors:
        values = dequantize(t.data, t.tensor_type).astype(np.float32)
        shape = [int(d) for d in reversed(t.shape)]
        by_gguf[t.name] = values.reshape(shape)
    state = {v3: by_gguf[g] for v3, g in gguf_names(layers).items()}
    for i in range(layers):
        for leaf in ["weight", "bias"]:
            if f"blk.{i}.attn_qkv.{leaf}" in by_gguf:
                q, k, v = np.split(by_gguf[f"blk.{i}.attn_qkv.{leaf}"], 3, axis=0)
            else:
                q, k, v = (by_gguf[f"blk.{i}.attn_{p}.{leaf}"] for p in "qkv")
            for p, t in zip("qkv", (q, k, v)):
                state[f"model.layers.{i}.self_attn.{p}_proj.{leaf}"] = t
    return state


def logits(config, state, ids):
    model = PhiForCausalLM(PhiConfig(**config, attn_implementation="eager")).eval()
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()})
    with torch.no_grad():
        return model(torch.tensor(ids)).logits.tolist()


def q6_k_blocks(seed=0, blocks=3):
    """Random Q6_K blocks (any bytes are a block; the f16 scale is drawn finite) and their
    values, dequantized by gguf."""
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=(blocks, 210), dtype=np.uint8)
    raw[:, 208:210] = np.frombuffer(
        rng.normal(0, 0.01, size=blocks).astype(np.float16).tobytes(), dtype=np.uint8
    ).reshape(blocks, 2)
    values = dequantize(raw.reshape(-1), Q.Q6_K).astype(np.float32)
    return {"bytes": raw.reshape(-1).tolist(), "values": [float(v) for v in values]}


def main():
    config = {
        k: v
        for k, v in json.load(open(os.path.join(SOURCE, "v3", "config.json"))).items()
        if k not in ("architectures", "model_type", "transformers_version", "torch_dtype")
    }
    state = load_file(os.path.join(SOURCE, "v3", "model.safetensors"))
    ids = json.load(open(os.path.join(SOURCE, "reference.json")))["input_ids"]
    layers = config["num_hidden_layers"]
    os.makedirs(OUT, exist_ok=True)
    reference = {
        "source": "tools/make_gguf_fixtures.py: gguf's GGUFWriter and quantizer from tiny_p05; "
        "logits by transformers PhiForCausalLM (eager, f32, CPU) on gguf.quants.dequantize's values",
        "input_ids": ids,
        "files": {},
        "q6_k": q6_k_blocks(),
    }
    for name, (qtype, fused) in FILES.items():
        path = os.path.join(OUT, name)
        write(path, config, gguf_tensors(state, layers, fused), qtype)
        reference["files"][name] = {
            "type": qtype.name,
            "fused_qkv": fused,
            "logits": logits(config, dequantized_state(path, layers), ids),
        }
        print(f"{path}: {os.path.getsize(path)} bytes")
    with open(os.path.join(OUT, "reference.json"), "w") as f:
        json.dump(reference, f)


if __name__ == "__main__":
    main()
