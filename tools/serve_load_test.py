"""Load and fuzz the server on loopback, bounded in time.

Load: N concurrent streaming clients (the `openai` package's async client) for a fixed time on a
tiny model, each repeatedly asking for a greedy completion; every stream must complete without
error and equal what the same request gives when it runs alone.
Fuzz: a few hundred malformed bodies (random bytes, cut JSON, wrong types, absurd values, deep
nesting, invalid UTF-8, oversized); each must get a 4xx with OpenAI's error object (or a 200 when
it happens to be valid), never a 5xx or a dropped connection, and the server must serve after.

    python tools/serve_load_test.py --clients 32 --seconds 60
"""

import argparse
import asyncio
import http.client
import json
import random
import sys
import tempfile
import time
from urllib.parse import urlparse

import openai

from serve_common import get_json, server, tiny_model, wait_idle

PROMPTS = [
    "def quicksort(items):",
    "The three laws of motion are",
    "import os\nimport sys\n",
    "Once upon a time",
    "SELECT name FROM users WHERE",
    "A prime number is",
    "for i in range(10):",
    "Photosynthesis converts",
    "class Stack:\n    def __init__(self):",
    "The French Revolution began in",
    "x = [1, 2, 3]\nprint(",
    "Alice: Hello, Bob!\nBob:",
]


def requests_to_make():
    """(prompt, max_tokens, stop) combinations the clients draw from."""
    combos = []
    for i, prompt in enumerate(PROMPTS):
        for max_tokens in (8, 24, 48):
            stop = ["\n\n"] if (i + max_tokens) % 3 == 0 else None
            combos.append((prompt, max_tokens, stop))
    return combos


async def stream_one(client, prompt, max_tokens, stop):
    text, finish = [], None
    stream = await client.completions.create(
        model="tiny", prompt=prompt, max_tokens=max_tokens, temperature=0, stop=stop, stream=True,
    )
    async for chunk in stream:
        for choice in chunk.choices:
            text.append(choice.text)
            finish = choice.finish_reason or finish
    return "".join(text), finish


async def load(base, clients, seconds):
    client = openai.AsyncOpenAI(base_url=base + "/v1", api_key="none", max_retries=0, timeout=120)
    combos = requests_to_make()
    # Each request alone first: the reference.
    alone = {}
    for combo in combos:
        alone[combo_key(combo)] = await stream_one(client, *combo)
    deadline = time.monotonic() + seconds
    stats = {"requests": 0, "errors": 0, "mismatches": 0, "chars": 0}
    first_error = []

    async def worker(seed):
        rng = random.Random(seed)
        while time.monotonic() < deadline:
            combo = rng.choice(combos)
            try:
                got = await stream_one(client, *combo)
            except Exception as e:  # counted: any failure fails the run
                stats["errors"] += 1
                first_error.append(repr(e))
                continue
            stats["requests"] += 1
            stats["chars"] += len(got[0])
            if got != alone[combo_key(combo)]:
                stats["mismatches"] += 1
                first_error.append(f"{combo}: {got!r} != alone {alone[combo_key(combo)]!r}")

    started = time.monotonic()
    await asyncio.gather(*(worker(i) for i in range(clients)))
    elapsed = time.monotonic() - started
    await client.close()
    return stats, elapsed, first_error[:3]


def combo_key(combo):
    prompt, max_tokens, stop = combo
    return (prompt, max_tokens, tuple(stop or ()))


def fuzz_bodies(rng, count):
    fields = ["prompt", "max_tokens", "temperature", "top_p", "top_k", "min_p", "n", "logprobs",
              "echo", "stop", "seed", "stream", "messages", "model", "repetition_penalty",
              "stream_options", "tokens"]
    values = [None, -1, 0, 1, 2**70, -(2**70), 1e308, -1e-308, float("nan"), "x", "",
              "\u0000\u202e", [], {}, [1, "a"], [[1], [2, [3]]], True, "a" * 20000, [-5],
              [999999999], {"role": "user"}, [{"role": "user", "content": 5}]]
    valid = {"prompt": "hello", "max_tokens": 2, "temperature": 0}
    bodies = []
    for i in range(count):
        kind = i % 7
        if kind == 0:
            body = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 300)))
        elif kind == 1:
            text = json.dumps(valid)
            body = text[: rng.randrange(0, len(text))].encode()
        elif kind in (2, 3):
            doc = dict(valid)
            for _ in range(rng.randrange(1, 4)):
                doc[rng.choice(fields)] = rng.choice(values)
            body = json.dumps(doc, allow_nan=True).encode()
        elif kind == 4:
            depth = rng.choice([50, 200, 5000])
            body = ('{"prompt": ' + "[" * depth + "1" + "]" * depth + "}").encode()
        elif kind == 5:
            body = b'{"prompt": "\xff\xfe bad utf8", "max_tokens": 2}'
        else:
            body = json.dumps(rng.choice(values), allow_nan=True).encode()
        bodies.append(body)
    bodies.append(b'{"prompt": "' + b"a" * (9 << 20) + b'"}')  # over the body limit
    return bodies


def fuzz(base, count, seed=7):
    rng = random.Random(seed)
    url = urlparse(base)
    paths = ["/v1/completions", "/v1/chat/completions", "/tokenize", "/detokenize"]
    statuses = {}
    for body in fuzz_bodies(rng, count):
        path = rng.choice(paths)
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        try:
            connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            status, payload = response.status, response.read()
        except (ConnectionError, http.client.HTTPException) as e:
            if len(body) > (8 << 20):
                # A server may close on an oversized body before reading it all.
                statuses["closed on oversized body"] = statuses.get("closed on oversized body", 0) + 1
                continue
            sys.exit(f"FAILED: {path} with {body[:80]!r}: connection error {e!r}")
        finally:
            connection.close()
        statuses[status] = statuses.get(status, 0) + 1
        if status >= 500:
            sys.exit(f"FAILED: {path} with {body[:80]!r}: {status} {payload[:200]!r}")
        if status >= 400:
            error = json.loads(payload)["error"]
            if not (error.get("message") and error.get("type")):
                sys.exit(f"FAILED: {path}: not an OpenAI error object: {payload[:200]!r}")
    return statuses


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--fuzz", type=int, default=300)
    parser.add_argument("--model", help="a model folder (default: a fresh tiny model)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        model = args.model or tiny_model(f"{scratch}/tiny")
        with server(model, "--max-batch", str(args.clients)) as base:
            stats, elapsed, errors = asyncio.run(load(base, args.clients, args.seconds))
            health = wait_idle(base)
            print(
                f"load: {args.clients} streaming clients for {elapsed:.0f} s: "
                f"{stats['requests']} requests, {stats['errors']} errors, "
                f"{stats['mismatches']} differing from their run alone; engine {health['engine']}"
            )
            if stats["errors"] or stats["mismatches"] or not stats["requests"]:
                sys.exit(f"FAILED: {errors}")
            statuses = fuzz(base, args.fuzz)
            print(f"fuzz: {sum(statuses.values())} malformed requests, statuses {statuses}")
            health = get_json(base + "/health")
            if health["status"] != "ok":
                sys.exit(f"FAILED: unhealthy after the fuzz: {health}")
            after = asyncio.run(after_fuzz(base))
            print(f"after the fuzz the server still serves: {after!r}")


async def after_fuzz(base):
    client = openai.AsyncOpenAI(base_url=base + "/v1", api_key="none", max_retries=0)
    text = await stream_one(client, "def f(x):", 4, None)
    await client.close()
    return text


if __name__ == "__main__":
    main()
