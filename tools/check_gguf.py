#!/usr/bin/env python3
"""Check a GGUF file phi-zoo wrote with llama.cpp's own reader (the `gguf` package).

    python3 tools/check_gguf.py OURS.gguf --hf tests/fixtures/tiny_p05/v3
    python3 tools/check_gguf.py OURS.gguf --like llama-cpp-converted.gguf

The reader must open the file and find llama.cpp's `phi2` metadata and tensor names. With
`--hf`, every tensor must equal the Hugging Face checkpoint's tensor (q, k, v as llama.cpp's
converter splits them) quantized by `gguf.quants.quantize`, the numpy port of llama.cpp's
reference quantizers: byte for byte, and its dequantized values within the type's step. With
`--like`, every tensor and metadata value must equal those of another file (one that llama.cpp's
`convert_hf_to_gguf.py` and `llama-quantize` wrote from the same weights), except the keys
that only name the writer. Prints one line per check and exits 1 on any difference.

Needs gguf and numpy (and safetensors for --hf).
"""

import argparse
import json
import os
import sys

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import GGUFReader
from gguf.quants import dequantize, quantize

REQUIRED = [
    "general.architecture",
    "phi2.context_length",
    "phi2.embedding_length",
    "phi2.feed_forward_length",
    "phi2.block_count",
    "phi2.attention.head_count",
    "phi2.attention.head_count_kv",
    "phi2.attention.layer_norm_epsilon",
    "phi2.rope.dimension_count",
]
# Keys that describe the writer or the run, not the model.
WRITER_KEYS = {"general.name", "general.type", "general.size_label", "general.quantization_version",
               "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
               "tokenizer.ggml.add_eos_token", "phi2.rope.freq_base", "GGUF.kv_count"}


def hf_tensors(folder, layers):
    """GGUF name -> f32 array from a V3 safetensors checkpoint."""
    from safetensors.numpy import load_file

    state = load_file(os.path.join(folder, "model.safetensors"))
    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.final_layernorm.weight": "output_norm.weight",
        "model.final_layernorm.bias": "output_norm.bias",
        "lm_head.weight": "output.weight",
        "lm_head.bias": "output.bias",
    }
    for i in range(layers):
        for v3, gguf in [("input_layernorm", "attn_norm"), ("self_attn.q_proj", "attn_q"),
                         ("self_attn.k_proj", "attn_k"), ("self_attn.v_proj", "attn_v"),
                         ("self_attn.dense", "attn_output"), ("mlp.fc1", "ffn_up"),
                         ("mlp.fc2", "ffn_down")]:
            for leaf in ["weight", "bias"]:
                names[f"model.layers.{i}.{v3}.{leaf}"] = f"blk.{i}.{gguf}.{leaf}"
    return {names[k]: v.astype(np.float32) for k, v in state.items() if k in names}


def encode(values, qtype):
    if qtype == Q.F32:
        return values.astype(np.float32).view(np.uint8).reshape(-1)
    if qtype == Q.F16:
        return values.astype(np.float16).view(np.uint8).reshape(-1)
    return np.asarray(quantize(values, qtype)).view(np.uint8).reshape(-1)


def field(reader, key):
    f = reader.fields.get(key)
    return None if f is None else f.contents()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("file")
    parser.add_argument("--hf", help="the V3 safetensors folder the file was written from")
    parser.add_argument("--like", help="another GGUF of the same weights to equal")
    args = parser.parse_args()

    reader = GGUFReader(args.file)
    failures = []
    arch = field(reader, "general.architecture")
    if arch != "phi2":
        failures.append(f"general.architecture is {arch!r}, not 'phi2'")
    for key in REQUIRED:
        if key not in reader.fields:
            failures.append(f"metadata {key} is missing")
    layers = field(reader, "phi2.block_count") or 0
    tensors = {t.name: t for t in reader.tensors}
    print(f"{args.file}: {len(tensors)} tensors, {len(reader.fields)} metadata fields, "
          f"{layers} blocks")

    if args.hf:
        expected = hf_tensors(args.hf, layers)
        if set(expected) != set(tensors):
            failures.append(f"tensor names differ: missing {sorted(set(expected) - set(tensors))}, "
                            f"unexpected {sorted(set(tensors) - set(expected))}")
        for name, values in sorted(expected.items()):
            t = tensors.get(name)
            if t is None:
                continue
            shape = [int(d) for d in reversed(t.shape)]
            if shape != list(values.shape):
                failures.append(f"{name}: shape {shape}, expected {list(values.shape)}")
                continue
            ours = np.asarray(t.data).view(np.uint8).reshape(-1)
            theirs = encode(values, t.tensor_type)
            step = np.abs(dequantize(t.data, t.tensor_type).reshape(values.shape) - values).max()
            same = ours.shape == theirs.shape and bool((ours == theirs).all())
            if not same:
                failures.append(f"{name} ({t.tensor_type.name}): bytes differ from gguf's "
                                f"quantizer (max |dequantized - source| {step:.3g})")
        print(f"--hf {args.hf}: {len(expected)} tensors compared with gguf.quants.quantize")

    if args.like:
        other = GGUFReader(args.like)
        other_tensors = {t.name: t for t in other.tensors}
        if set(other_tensors) != set(tensors):
            failures.append(f"tensor names differ from {args.like}")
        same = 0
        for name, t in sorted(tensors.items()):
            o = other_tensors.get(name)
            if o is None:
                continue
            if t.tensor_type != o.tensor_type:
                failures.append(f"{name}: {t.tensor_type.name}, theirs {o.tensor_type.name}")
                continue
            a = np.asarray(t.data).view(np.uint8).reshape(-1)
            b = np.asarray(o.data).view(np.uint8).reshape(-1)
            if a.shape == b.shape and (a == b).all():
                same += 1
            else:
                diff = np.abs(dequantize(t.data, t.tensor_type) - dequantize(o.data, o.tensor_type))
                failures.append(f"{name} ({t.tensor_type.name}): bytes differ, max |Δ| "
                                f"{diff.max():.3g}")
        keys = (set(reader.fields) | set(other.fields)) - WRITER_KEYS
        for key in sorted(keys):
            a, b = field(reader, key), field(other, key)
            if isinstance(a, float) or isinstance(b, float):
                equal = a is not None and b is not None and abs(a - b) <= 1e-12 + 1e-6 * abs(b)
            else:
                equal = a == b
            if not equal:
                show = lambda v: json.dumps(v)[:80] if v is not None else "absent"
                failures.append(f"metadata {key}: {show(a)}, theirs {show(b)}")
        print(f"--like {args.like}: {same}/{len(tensors)} tensors byte-identical, "
              f"{len(keys)} metadata keys compared")

    for failure in failures:
        print("FAIL", failure)
    print("ok" if not failures else f"{len(failures)} differences")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
