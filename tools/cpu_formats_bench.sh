#!/usr/bin/env bash
# phi-zoo against llama.cpp and mistral.rs on the same weights, one weight type at a time, back to
# back: prefill and decode tokens/s and peak RSS for f32, f16, Q8_0 and Q4_0.
#
#   LLAMA_BIN=.../llama.cpp/build/bin GGUF=/tmp/phi15 MODEL=/tmp/phi15-random \
#     PYTHON=venv/bin/python tools/cpu_formats_bench.sh [TYPES...]
#
# MODEL: a Hugging Face folder (`examples/bench --config phi-1.5 --export DIR` writes random phi-1.5
# weights, tokenizer included); GGUF: the prefix of llama.cpp's own files of it, `$GGUF-f32.gguf`
# from `convert_hf_to_gguf.py --outtype f32` and `$GGUF-{f16,q8_0,q4_0}.gguf` from
# `llama-quantize`; LLAMA_BIN: where `llama-bench` is (built with -DGGML_NATIVE=ON); PYTHON: one
# with `mistralrs` (tools/mistralrs_bench.py; mistral.rs has no f16 CPU type here, so f16 is
# skipped for it; MISTRAL_RUNS timed requests, default 2). Prompt 512 tokens, 64 new, 2 threads (llama.cpp's `-t 2`; phi-zoo and mistral.rs
# use every core). phi-zoo runs from $MODEL with `--dtype`, so it packs at load as llama.cpp's
# quantizer would. Needs `cargo build --release --example bench`.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${LLAMA_BIN:?where llama-bench is}" "${GGUF:?prefix of the GGUF files}" "${MODEL:?HF folder}"
PYTHON=${PYTHON:-python3}
types=("$@")
[ ${#types[@]} -eq 0 ] && types=(f32 f16 q8_0 q4_0)
rss() { awk '/Maximum resident/ {printf "%.2f", $6 / 1048576}' "$1"; }
printf '%-6s %-10s %10s %10s %8s\n' type engine prefill decode "RSS GiB"
for t in "${types[@]}"; do
  /usr/bin/time -v "$LLAMA_BIN/llama-bench" -m "$GGUF-$t.gguf" -p 512 -n 64 -t 2 -r 2 -o json \
    > /tmp/cpu_bench_llama.json 2> /tmp/cpu_bench_llama.time
  "$PYTHON" - "$t" "$(rss /tmp/cpu_bench_llama.time)" <<'EOF'
import json, sys
runs = json.load(open("/tmp/cpu_bench_llama.json"))
pp = next(r["avg_ts"] for r in runs if r["n_prompt"] > 0)
tg = next(r["avg_ts"] for r in runs if r["n_gen"] > 0)
print(f"{sys.argv[1]:<6} {'llama.cpp':<10} {pp:10.2f} {tg:10.2f} {sys.argv[2]:>8}")
EOF
  target/release/examples/bench --model "$MODEL" --dtype "$t" --prompt-tokens 512 --new-tokens 64 \
    --json 2>/dev/null | "$PYTHON" -c "
import json, sys
d = json.load(sys.stdin)
print(f\"{'$t':<6} {'phi-zoo':<10} {d['prefill_tokens_per_s']:10.2f} {d['decode_tokens_per_s']:10.2f} {d['peak_rss_bytes'] / 2**30:8.2f}\")"
  if [ "$t" != f16 ]; then
    "$PYTHON" tools/mistralrs_bench.py --model "$MODEL" --quant "$t" --runs "${MISTRAL_RUNS:-2}" 2>/dev/null | "$PYTHON" -c "
import json, sys
d = json.loads(sys.stdin.read().strip().splitlines()[-1])
print(f\"{'$t':<6} {'mistral.rs':<10} {d['prefill_tokens_per_s']:10.2f} {d['decode_tokens_per_s']:10.2f} {d['peak_rss_bytes'] / 2**30:8.2f}\")"
  fi
done
