#!/usr/bin/env python3
"""Run examples/logits on every layout of a fixture folder and compare with transformers.

A fixture folder is what tools/make_fixtures.py writes: `reference.json` plus one subfolder per
layout. Prints the largest |difference| per layout and exits non-zero above the tolerance.

    cargo build --example logits
    python3 tools/check_logits.py /tmp/fx/custom [--binary target/debug/examples/logits] [--tol 1e-4]

Needs only the Python standard library.
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def default_binary():
    for profile in ("release", "debug"):
        path = os.path.join(ROOT, "target", profile, "examples", "logits")
        if os.path.exists(path):
            return path
    sys.exit("no examples/logits binary: run `cargo build --example logits` first")


def flatten(x):
    if isinstance(x, list):
        for item in x:
            yield from flatten(item)
    else:
        yield x


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fixture")
    parser.add_argument("--binary", default=None)
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--args", default="", help="extra arguments for the example, e.g. '--backend cuda --dtype f16'")
    args = parser.parse_args()
    binary = args.binary or default_binary()
    with open(os.path.join(args.fixture, "reference.json")) as f:
        reference = json.load(f)
    ids = ";".join(",".join(str(i) for i in row) for row in reference["input_ids"])
    expected = list(flatten(reference["logits"]))
    worst_overall = 0.0
    for layout in reference["layouts"]:
        folder = os.path.join(args.fixture, layout)
        run = subprocess.run([binary, "--model", folder, "--ids", ids, *args.args.split()], capture_output=True, text=True)
        if run.returncode != 0:
            print(f"{layout}: FAILED\n{run.stderr}")
            worst_overall = float("inf")
            continue
        got = list(flatten(json.loads(run.stdout)["logits"]))
        if len(got) != len(expected):
            print(f"{layout}: {len(got)} values, expected {len(expected)}")
            worst_overall = float("inf")
            continue
        worst = max(abs(a - b) for a, b in zip(got, expected))
        worst_overall = max(worst_overall, worst)
        print(f"{layout}: max |Δ| {worst:.2e}")
    sys.exit(0 if worst_overall <= args.tol else 1)


if __name__ == "__main__":
    main()
