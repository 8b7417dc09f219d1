#!/usr/bin/env python3
"""Check phi-zoo on a checkpoint transformers itself wrote, at a real size and dtype.

Builds a randomly initialised phi-1.5-shaped `PhiForCausalLM` (the published microsoft/phi-1_5
shape and key names), saves it with `save_pretrained` in float16 (as the hub's files are), prints
the safetensors header length and first bytes (the byte a format sniff sees), then runs
`examples/logits` on the folder and compares with transformers' logits for the same f16 weights
computed in float32 (phi-zoo loads f16 into f32), with transformers' own PhiIntegrationTest
tolerance for phi-1.5 (|Δ| <= atol + rtol·|expected|, both 1e-4). Exits non-zero above it.

    cargo build --release --example logits
    python3 tools/check_transformers_checkpoint.py --out /tmp/phi15-hf-f16 [--seed 0] [--reuse]

The folder is left in place for `cargo run --release --example bench -- --model /tmp/phi15-hf-f16`.
Needs torch and transformers >= 5; about 9 GB of memory; never commit the 2.8 GB folder.
"""

import argparse
import json
import os
import struct
import subprocess
import sys

import torch
from transformers import PhiConfig, PhiForCausalLM

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

# microsoft/phi-1_5's config.json, in transformers' names.
PHI_1_5 = dict(
    vocab_size=51200,
    hidden_size=2048,
    intermediate_size=8192,
    num_hidden_layers=24,
    num_attention_heads=32,
    num_key_value_heads=32,
    max_position_embeddings=2048,
    partial_rotary_factor=0.5,
    rope_theta=10000.0,
    layer_norm_eps=1e-5,
    hidden_act="gelu_new",
    resid_pdrop=0.0,
    embd_pdrop=0.0,
    attention_dropout=0.0,
    bos_token_id=50256,
    eos_token_id=50256,
    tie_word_embeddings=False,
)

PROMPT = [[1212, 318, 257, 1332, 286, 262, 3303, 13, 198, 4299, 11887, 7, 77, 2599]]


def default_binary():
    for profile in ("release", "debug"):
        path = os.path.join(ROOT, "target", profile, "examples", "logits")
        if os.path.exists(path):
            return path
    sys.exit("no examples/logits binary: run `cargo build --release --example logits` first")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--atol", type=float, default=1e-4)
    parser.add_argument("--rtol", type=float, default=1e-4)
    parser.add_argument("--reuse", action="store_true", help="keep a folder an earlier run wrote")
    parser.add_argument("--binary", default=None)
    args = parser.parse_args()

    weights = os.path.join(args.out, "model.safetensors")
    if not (args.reuse and os.path.exists(weights)):
        torch.manual_seed(args.seed)
        PhiForCausalLM(PhiConfig(**PHI_1_5)).eval().to(torch.float16).save_pretrained(args.out)
    with open(weights, "rb") as f:
        head = f.read(8)
    (header_length,) = struct.unpack("<Q", head)
    print(f"{weights}: {os.path.getsize(weights)} bytes, header length {header_length} = {header_length:#x}, "
          f"first bytes {head[:2].hex()}")

    # transformers reading its own f16 file into f32, as phi-zoo does.
    model = PhiForCausalLM.from_pretrained(args.out, dtype=torch.float32).eval()
    with torch.no_grad():
        expected = model(torch.tensor(PROMPT)).logits[0].tolist()

    ids = ",".join(str(i) for i in PROMPT[0])
    run = subprocess.run([args.binary or default_binary(), "--model", args.out, "--ids", ids],
                         capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"examples/logits failed:\n{run.stderr}")
    got = json.loads(run.stdout)["logits"][0]
    pairs = [(a, b) for row_a, row_b in zip(got, expected) for a, b in zip(row_a, row_b)]
    worst = max(abs(a - b) for a, b in pairs)
    excess = max(abs(a - b) - (args.atol + args.rtol * abs(b)) for a, b in pairs)
    scale = max(abs(b) for _, b in pairs)
    print(f"max |phi-zoo - transformers| over {len(got)} positions x {len(got[0])} logits: {worst:.3e} "
          f"(largest logit {scale:.3f}); worst excess over atol {args.atol} + rtol {args.rtol}·|expected|: "
          f"{excess:.3e}")
    sys.exit(0 if excess <= 0 else 1)


if __name__ == "__main__":
    main()
