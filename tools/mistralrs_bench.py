#!/usr/bin/env python3
"""mistral.rs on the same weights and shapes as `examples/bench`: prefill and decode tokens/s and
peak RSS, for one weight type per process (so each RSS is that type's alone).

    python3 tools/mistralrs_bench.py --model DIR [--quant f32|q8_0|q4_0] [--prompt-tokens 512]
        [--new-tokens 64] [--runs 2]

`DIR` is a Hugging Face Phi folder with tokenizer.json (`examples/bench --export DIR` writes
random phi-1.5 weights). mistral.rs loads it as `Architecture.Phi2`, in f32, or quantized in
situ to `Q8_0` / `Q4_0` (its `in_situ_quant`). The prompt is `the` and `the` repeated, which
Phi's tokenizer makes one token each, so it is exactly `--prompt-tokens` long; generation is
greedy with end-of-text ignored, so every run decodes `--new-tokens`. The first request warms
the engine up and is not counted; figures are the best of `--runs` requests, as mistral.rs
reports them (its prompt and completion timings). Prints one JSON object.

Needs `pip install mistralrs` (0.9.5 was measured).
"""

import argparse
import json
import resource

from mistralrs import Architecture, CompletionRequest, ModelDType, Runner, Which


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--quant", default="f32", choices=["f32", "q8_0", "q4_0"])
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()

    isq = {"f32": None, "q8_0": "Q8_0", "q4_0": "Q4_0"}[args.quant]
    runner = Runner(
        which=Which.Plain(model_id=args.model, arch=Architecture.Phi2, dtype=ModelDType.F32),
        in_situ_quant=isq,
        max_seqs=1,
        no_paged_attn=True,
        prefix_cache_n=0,
    )
    prompt = "the" + " the" * (args.prompt_tokens - 1)

    def request():
        response = runner.send_completion_request(
            CompletionRequest(
                model="phi",
                prompt=prompt,
                max_tokens=args.new_tokens,
                temperature=0.0,
                ignore_eos=True,
            )
        )
        return response.usage

    request()  # warm-up
    best = None
    for _ in range(args.runs):
        usage = request()
        if best is None or usage.total_time_sec < best.total_time_sec:
            best = usage
    print(
        json.dumps(
            {
                "engine": "mistral.rs",
                "quant": args.quant,
                "prompt_tokens": best.prompt_tokens,
                "completion_tokens": best.completion_tokens,
                "prefill_tokens_per_s": best.prompt_tokens / best.total_prompt_time_sec,
                "decode_tokens_per_s": best.completion_tokens / best.total_completion_time_sec,
                "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            }
        )
    )


if __name__ == "__main__":
    main()
