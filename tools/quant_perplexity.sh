#!/usr/bin/env bash
# What each weight format costs in perplexity: trains the tiny model on the embedded corpora
# (examples/pretrain), then scores the embedded held-out documents with examples/eval in every
# --dtype, and prints each perplexity and its change against f32.
#
#   tools/quant_perplexity.sh [STEPS] [CONTEXT]     # defaults: 300 steps, context 128
#
# CONTEXT 128 is the length the tiny recipe trains on; windows advance by half of it. A context of
# 32 or less with --batch 1 sends every product through the packed decode kernels (up to 32 rows)
# rather than the prompt kernels (integer products of 16-bit inputs for Q8_0/Q4_0). Needs the
# release examples:
#   cargo build --release --example pretrain --example eval
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-300}
context=${2:-128}
run=${PHI_ZOO_PPL_RUN:-target/quant-perplexity}
if [ ! -f "$run/final/config.json" ]; then
  target/release/examples/pretrain --steps "$steps" --checkpoint-every "$steps" --out "$run" >&2
fi
batch=()
if [ "$context" -le 32 ]; then batch=(--batch 1); fi
base=""
printf '%-6s %12s %10s\n' dtype perplexity change
for dtype in f32 f16 bf16 q8_0 q4_0; do
  ppl=$(target/release/examples/eval --model "$run/final" --task perplexity --dtype "$dtype" \
    --context "$context" --stride $((context / 2)) "${batch[@]}" --json 2>/dev/null |
    python3 -c "import json, sys; print(json.load(sys.stdin)['tasks']['perplexity']['perplexity'])")
  base=${base:-$ppl}
  python3 -c "print(f'{\"$dtype\":<6} {$ppl:12.5f} {100 * ($ppl / $base - 1):+9.3f}%')"
done
