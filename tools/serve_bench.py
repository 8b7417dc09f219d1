"""Serving benchmark (not a test): aggregate decode throughput at several concurrency levels and
time to first token, against any OpenAI-compatible server: phi-zoo's (examples/serve) or a peer
such as llama.cpp's llama-server, on the same weights, run back to back.

    python tools/serve_bench.py --base http://127.0.0.1:8000 --model phi-1.5 \
        --levels 1,4,16 --prompt-words 24 --max-tokens 64 --rounds 1

Each of C clients sends `rounds` streamed greedy completions of its own prompt (distinct, so no
prompt cache helps) one after another. Figures per level: output tokens per second over the wall
time (the aggregate), the mean per-stream decode rate after the first token, and time to first
token (p50 / p99). Prints one JSON object per level.
"""

import argparse
import asyncio
import json
import statistics
import time

import aiohttp

WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi "
         "rho sigma tau upsilon phi chi psi omega").split()


def prompt_for(client, words):
    return " ".join(WORDS[(client * 7 + i * 3) % len(WORDS)] for i in range(words)) + f" {client}"


async def one_request(session, url, model, prompt, max_tokens):
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
            "stream": True, "ignore_eos": True, "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    first = last = None
    tokens = 0
    usage = None
    async with session.post(url, json=body) as response:
        response.raise_for_status()
        async for raw in response.content:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]["completion_tokens"]
            for choice in chunk.get("choices", []):
                if choice.get("text"):
                    now = time.perf_counter()
                    first = first or now
                    last = now
                    tokens += 1
    # Text chunks undercount tokens that end mid-character; the usage counts them all.
    tokens = usage if usage is not None else tokens
    return {
        "ttft": (first or time.perf_counter()) - started,
        "tokens": tokens,
        "decode_rate": (tokens - 1) / (last - first) if tokens > 1 and last > first else None,
    }


async def level(base, model, clients, rounds, words, max_tokens):
    url = base.rstrip("/") + "/v1/completions"
    timeout = aiohttp.ClientTimeout(total=3600)
    # A connection per request: idle keep-alive connections closed by a server (llama-server's
    # HTTP library does) would otherwise fail the next request that reuses them.
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        await one_request(session, url, model, prompt_for(999, words), 4)  # warm-up

        async def client(c):
            return [await one_request(session, url, model, prompt_for(c, words), max_tokens)
                    for _ in range(rounds)]

        before = await engine_stats(session, base)
        started = time.perf_counter()
        results = [r for rs in await asyncio.gather(*(client(c) for c in range(clients)))
                   for r in rs]
        wall = time.perf_counter() - started
        after = await engine_stats(session, base)
    ttfts = sorted(r["ttft"] for r in results)
    rates = [r["decode_rate"] for r in results if r["decode_rate"]]
    total = sum(r["tokens"] for r in results)
    engine = {}
    if before and after:
        # phi-zoo's engine counters: decode throughput with the prompts' reading taken out.
        rows = after["rows_decoded"] - before["rows_decoded"]
        seconds = after["decode_seconds"] - before["decode_seconds"]
        prefill = after["prefill_tokens"] - before["prefill_tokens"]
        prefill_s = after["prefill_seconds"] - before["prefill_seconds"]
        engine = {
            "engine_decode_tokens_per_s": round(rows / seconds, 2) if seconds else None,
            "engine_mean_batch": round(rows / max(1, after["decode_steps"] - before["decode_steps"]), 2),
            "engine_prefill_tokens_per_s": round(prefill / prefill_s, 2) if prefill_s else None,
        }
    return {
        **engine,
        "concurrency": clients,
        "requests": len(results),
        "output_tokens": total,
        "wall_s": round(wall, 2),
        "aggregate_tokens_per_s": round(total / wall, 2),
        "mean_stream_decode_tokens_per_s": round(statistics.mean(rates), 2) if rates else None,
        "ttft_p50_s": round(percentile(ttfts, 50), 3),
        "ttft_p99_s": round(percentile(ttfts, 99), 3),
    }


async def engine_stats(session, base):
    """phi-zoo's engine counters from /health; None for servers without them."""
    try:
        async with session.get(base.rstrip("/") + "/health") as response:
            body = await response.json(content_type=None)
        return body["engine"]["stats"]
    except Exception:
        return None


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--model", required=True, help="the model name the server expects")
    parser.add_argument("--levels", default="1,4,16")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--prompt-words", type=int, default=24)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    for clients in map(int, args.levels.split(",")):
        figures = asyncio.run(level(args.base, args.model, clients, args.rounds,
                                    args.prompt_words, args.max_tokens))
        figures["label"] = args.label
        print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
