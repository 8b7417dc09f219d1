#!/usr/bin/env python3
"""Checks that numpy reads what `examples/textbooks embed` wrote: the array's shape and dtype match
the sidecar, and its values are finite.

    python3 tools/check_npy.py runs/textbooks/embed/embeddings-shard-00000-of-00001.npy
"""

import json
import pathlib
import sys

import numpy


def main() -> int:
    path = pathlib.Path(sys.argv[1])
    array = numpy.load(path)
    sidecar = json.loads(path.with_suffix(".json").read_text())
    expected = (len(sidecar["documents"]), sidecar["embedder"]["dim"])
    if array.dtype != numpy.float32 or array.shape != expected:
        print(f"{path}: {array.dtype} {array.shape}, expected float32 {expected}", file=sys.stderr)
        return 1
    if not numpy.isfinite(array).all():
        print(f"{path}: values that are not finite", file=sys.stderr)
        return 1
    print(f"{path}: float32 {array.shape}, finite, as the sidecar says")
    return 0


if __name__ == "__main__":
    sys.exit(main())
