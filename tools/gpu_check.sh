#!/usr/bin/env bash
# Checks and measures phi-zoo on an NVIDIA GPU in one command (issue 17): each phase of
# examples/gpu_check in a process of its own, so a failing phase leaves the others and each
# process's GPU memory is its own:
#   parity in f32, f16 and bf16 (the fixtures against transformers' logits and greedy ids);
#   decode of the phi-1.5 and phi-2 shapes in f16 (512-token prompt, 128 steps, 2048-position cache);
#   training of the phi-1.5 shape in bf16 mixed precision at sequence 2048 (20 timed steps, MFU).
# Prints each phase's figures as it ends and a JSON summary as the last line, also written to
# $OUT/gpu_check.json. Peak GPU memory per phase is nvidia-smi's, sampled every 100 ms.
#
#   tools/gpu_check.sh [OUT]            # OUT: default gpu_check_out
#
# The binary: $GPU_CHECK_BIN, else target/release/examples/gpu_check, built here when missing
# (a machine without a toolchain gets one built beforehand with the same command):
#   cargo build --release --no-default-features --features cuda,train --example gpu_check
# Kernels compiled and tuned go to $OUT/kernel-cache (PHI_ZOO_KERNEL_CACHE), so a second run
# into the same OUT starts warm; each phase's wall time shows the difference.
# TRAIN_BATCH (default 1) and TRAIN_FLAGS (e.g. --checkpointing) change the training phase.
# GPU_CHECK_BACKEND (default cuda) picks another backend; GPU_CHECK_QUICK=1 runs the tiny shape
# with short sequences instead (to try the script itself on any machine, e.g. with flex).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu_check_out}
mkdir -p "$out"
bin=${GPU_CHECK_BIN:-target/release/examples/gpu_check}
if [ ! -x "$bin" ]; then
  echo "== building $bin" >&2
  cargo build --release --no-default-features --features cuda,train --example gpu_check >&2 || exit 1
fi
export PHI_ZOO_KERNEL_CACHE=${PHI_ZOO_KERNEL_CACHE:-$out/kernel-cache}
gpu=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null |
  head -n 1 | sed 's/"/\\"/g')

results=()
# run NAME LIMIT_S ARGS...: one phase; its JSON (the last stdout line), wall time, exit status
# and peak GPU memory join the summary.
run() {
  local name=$1 limit=$2
  shift 2
  local log="$out/$name.log" mem="$out/$name.mem"
  echo "== $name: $bin $*" >&2
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$mem" 2>/dev/null &
  local sampler=$!
  local start=$SECONDS
  timeout "$limit" "$bin" "$@" >"$out/$name.json.tmp" 2>"$log"
  local rc=$?
  local wall=$((SECONDS - start))
  kill "$sampler" 2>/dev/null
  wait "$sampler" 2>/dev/null
  local peak
  peak=$(sort -n "$mem" 2>/dev/null | tail -n 1)
  local result
  result=$(tail -n 1 "$out/$name.json.tmp")
  case "$result" in
    "{"*) ;;
    *) result=null ;;
  esac
  rm -f "$out/$name.json.tmp"
  if [ "$rc" -ne 0 ]; then
    echo "   $name failed (exit $rc$([ "$rc" -eq 124 ] && echo ", over ${limit} s")); last lines of $log:" >&2
    tail -n 5 "$log" >&2
  else
    grep -E '^(parity|decode|train) ' "$log" | tail -n 8 >&2
  fi
  echo "   ${wall} s, peak GPU memory ${peak:-?} MiB" >&2
  results+=("{\"name\": \"$name\", \"exit\": $rc, \"wall_s\": $wall, \"peak_gpu_memory_mib\": ${peak:-null}, \"result\": $result}")
}

backend=${GPU_CHECK_BACKEND:-cuda}
if [ "${GPU_CHECK_QUICK:-0}" = 1 ]; then
  shapes=(tiny) decode="--prompt-tokens 32 --new-tokens 8 --context 256" train="--config tiny --seq-len 64 --steps 3"
else
  shapes=(phi-1.5 phi-2) decode="--prompt-tokens 512 --new-tokens 128 --context 2048"
  train="--config phi-1.5 --seq-len 2048 --steps 20"
fi
for dtype in f32 f16 bf16; do
  run "parity-$dtype" 90 --backend "$backend" --dtype "$dtype" parity
done
for shape in "${shapes[@]}"; do
  # shellcheck disable=SC2086
  run "decode-$shape-f16" 90 --backend "$backend" --dtype f16 decode --config "$shape" $decode
done
# shellcheck disable=SC2086
run train-bf16 180 --backend "$backend" --dtype bf16 train $train --batch "${TRAIN_BATCH:-1}" ${TRAIN_FLAGS:-}

summary="{\"gpu\": \"${gpu:-none found}\", \"phases\": [$(IFS=,; echo "${results[*]}")]}"
echo "$summary" >"$out/gpu_check.json"
echo "$summary"
