#!/usr/bin/env python3
"""Check a model phi-zoo exported (examples/finetune's `final/`, save_hf's output) with
transformers: it must load with no missing, unexpected or mismatched keys, and its logits must
match phi-zoo's on the same ids.

    cargo build --example logits
    python3 tools/check_export.py runs/finetune/final [--tol 1e-4] [--binary target/debug/examples/logits]

With --write-reference it writes `reference.json` into the folder instead (transformers' logits
and loading report for fixed ids): how tests/fixtures/lora_merged/reference.json was made, which
tests/all/finetune.rs compares phi-zoo against without Python.

Needs torch and transformers (>= 5) on the CPU.
"""

import argparse
import json
import os
import subprocess
import sys

import torch
from transformers import AutoModelForCausalLM

from check_logits import default_binary  # tools/ is on the path when this script runs


def fixed_ids(vocab):
    """Two rows of 12 ids spread over the vocabulary, the same every time."""
    return [[(7 + 31 * i + 997 * r) % vocab for i in range(12)] for r in range(2)]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder")
    parser.add_argument("--binary", default=None)
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--write-reference", action="store_true")
    args = parser.parse_args()

    model, info = AutoModelForCausalLM.from_pretrained(
        args.folder, output_loading_info=True, dtype=torch.float32
    )
    model.eval()
    report = {key: sorted(str(k) for k in info.get(key, [])) for key in
              ("missing_keys", "unexpected_keys", "mismatched_keys")}
    for key, keys in report.items():
        print(f"{key}: {keys if keys else 'none'}")
    tokenizer_ok = True
    if os.path.exists(os.path.join(args.folder, "tokenizer.json")):
        from transformers import AutoTokenizer
        try:
            tokenizer = AutoTokenizer.from_pretrained(args.folder)
            sample = tokenizer("def add(a, b):")["input_ids"]
            print(f"tokenizer: {type(tokenizer).__name__}, eos {tokenizer.eos_token!r}, 'def add(a, b):' -> {sample}")
        except Exception as error:  # report, do not hide: a user would hit the same
            print(f"tokenizer: FAILED to load: {error}")
            tokenizer_ok = False
    ids = fixed_ids(model.config.vocab_size)
    with torch.no_grad():
        logits = model(torch.tensor(ids)).logits.float()

    if args.write_reference:
        import transformers
        out = {
            "input_ids": ids,
            "logits": logits.tolist(),
            **report,
            "transformers_version": transformers.__version__,
            "torch_version": torch.__version__,
        }
        path = os.path.join(args.folder, "reference.json")
        with open(path, "w") as f:
            json.dump(out, f)
        print(f"wrote {path}")
        sys.exit(0 if not any(report.values()) else 1)

    binary = args.binary or default_binary()
    run = subprocess.run(
        [binary, "--model", args.folder, "--ids", ";".join(",".join(map(str, row)) for row in ids)],
        capture_output=True, text=True,
    )
    if run.returncode != 0:
        sys.exit(f"examples/logits failed:\n{run.stderr}")
    ours = torch.tensor(json.loads(run.stdout)["logits"]).reshape(logits.shape)
    worst = (ours - logits).abs().max().item()
    print(f"max |phi-zoo - transformers| over {logits.numel()} logits: {worst:.2e} (tolerance {args.tol:g})")
    sys.exit(0 if worst <= args.tol and tokenizer_ok and not any(report.values()) else 1)


if __name__ == "__main__":
    main()
