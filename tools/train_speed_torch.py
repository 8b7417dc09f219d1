#!/usr/bin/env python3
"""Training throughput of transformers' PhiForCausalLM on the CPU, for the back-to-back comparison
with phi-zoo's `examples/pretrain` (issue 17): the same shape (the `tiny` config: hidden 128,
4 layers, 4 heads, 16 rotary channels, vocabulary 51200), the same batch (6 sequences of 128
tokens), AdamW with the tiny recipe's betas, epsilon and weight decay, and gradient clipping to
norm 1.0, in PyTorch eager mode.

    python3 tools/train_speed_torch.py [--steps 20] [--warmup 3] [--threads 2] [--json]
    cargo build --release --example pretrain
    python3 tools/train_speed_torch.py --pretrain target/release/examples/pretrain --pairs 3

With `--pretrain`, it alternates runs of phi-zoo's pretrain example (its default tiny run cut to
`--steps` steps, the learner's tok/s figure) and of this measurement, `--pairs` times, back to
back, and prints each pair's figures and the median ratio (phi-zoo / PyTorch).

Random token ids (the speed does not depend on them); the first `--warmup` steps are not timed.
Prints tokens/s over the timed steps, and the split of a step into forward, backward and optimizer.
Needs torch and transformers on the CPU.
"""

import argparse
import json
import re
import statistics
import subprocess
import tempfile
import time

import torch
from transformers import PhiConfig, PhiForCausalLM


def tiny_config():
    """examples/pretrain's default shape (src/variant.rs, Variant::Tiny)."""
    return PhiConfig(
        vocab_size=51200,
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        partial_rotary_factor=0.5,
        max_position_embeddings=256,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attention_dropout=0.0,
        tie_word_embeddings=False,
    )


def measure(args):
    """PyTorch's tokens/s and step split over `args.steps` timed steps."""
    torch.manual_seed(0)
    model = PhiForCausalLM(tiny_config()).float().train()
    # The tiny recipe's optimizer (recipes/tiny.toml): AdamW, betas (0.9, 0.98), eps 1e-7, decay 0.1.
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.98), eps=1e-7, weight_decay=0.1)
    vocab = model.config.vocab_size
    split = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0}
    timed = 0.0
    for step in range(args.warmup + args.steps):
        ids = torch.randint(0, vocab, (args.batch, args.seq_len))
        t0 = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        if step >= args.warmup:
            split["forward"] += t1 - t0
            split["backward"] += t2 - t1
            split["optimizer"] += t3 - t2
            timed += t3 - t0
    tokens = args.steps * args.batch * args.seq_len
    return {
        "engine": f"pytorch {torch.__version__} eager, transformers PhiForCausalLM",
        "threads": args.threads,
        "steps": args.steps,
        "tokens_per_second": tokens / timed,
        "ms_per_step": {k: 1e3 * v / args.steps for k, v in split.items()},
    }


def phi_zoo_tokens_per_second(binary, steps):
    """The learner's tokens/s from one run of examples/pretrain on its defaults."""
    with tempfile.TemporaryDirectory() as out:
        run = subprocess.run([binary, "--steps", str(steps), "--out", out], capture_output=True, text=True, check=True)
    figures = re.findall(r"tok/s (\d+)", run.stdout + run.stderr)
    if not figures:
        raise SystemExit(f"no tok/s figure in {binary}'s output:\n{run.stdout}{run.stderr}")
    return float(figures[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=6)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--pretrain", help="phi-zoo's examples/pretrain binary, for back-to-back pairs")
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.pretrain:
        ratios = []
        for pair in range(args.pairs):
            ours = phi_zoo_tokens_per_second(args.pretrain, args.steps)
            theirs = measure(args)["tokens_per_second"]
            ratios.append(ours / theirs)
            print(f"pair {pair + 1}: phi-zoo {ours:.0f} tokens/s, PyTorch {theirs:.0f} tokens/s, ratio {ours / theirs:.2f}")
        print(f"median ratio (phi-zoo / PyTorch eager): {statistics.median(ratios):.2f}")
        return

    result = measure(args)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['engine']}, {args.threads} threads: {result['tokens_per_second']:.0f} tokens/s over {args.steps} steps")
        print("  per step: " + ", ".join(f"{k} {v:.1f} ms" for k, v in result["ms_per_step"].items()))


if __name__ == "__main__":
    main()
