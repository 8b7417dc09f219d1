#!/usr/bin/env python3
"""Write the tiny_p04 fixture's weights in every PyTorch `.bin` form torch.save has produced.

The weights are read from the committed `tests/fixtures/tiny_p04/v3/model.safetensors`, so
`tests/fixtures/tiny_p04/reference.json` (transformers' logits) holds for each of them:

    tests/fixtures/formats/zip_p2/pytorch_model.bin     torch >= 1.6 default: zip archive, pickle protocol 2
    tests/fixtures/formats/zip_p4/pytorch_model.bin     zip archive, pickle protocol 4
    tests/fixtures/formats/legacy_p2/pytorch_model.bin  torch < 1.6: sequence of pickles, protocol 2
    tests/fixtures/formats/legacy_p4/pytorch_model.bin  sequence of pickles, protocol 4

each beside a copy of the fixture's config.json.

Usage (needs torch and safetensors):
    python3 tools/make_format_fixtures.py [--out tests/fixtures/formats]
"""

import argparse
import os
import shutil

import torch
from safetensors.torch import load_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SOURCE = os.path.join(ROOT, "tests", "fixtures", "tiny_p04", "v3")

FORMS = {
    "zip_p2": dict(_use_new_zipfile_serialization=True, pickle_protocol=2),
    "zip_p4": dict(_use_new_zipfile_serialization=True, pickle_protocol=4),
    "legacy_p2": dict(_use_new_zipfile_serialization=False, pickle_protocol=2),
    "legacy_p4": dict(_use_new_zipfile_serialization=False, pickle_protocol=4),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "formats"))
    args = parser.parse_args()
    state = load_file(os.path.join(SOURCE, "model.safetensors"))
    for name, options in FORMS.items():
        folder = os.path.join(args.out, name)
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, "pytorch_model.bin")
        torch.save(state, path, **options)
        shutil.copy(os.path.join(SOURCE, "config.json"), os.path.join(folder, "config.json"))
        # The check that the file is what its name says: torch reads it back unchanged.
        back = torch.load(path, weights_only=False)  # our own file: the full unpickler is safe here
        assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)
        with open(path, "rb") as f:
            head = f.read(4)
        print(f"{path}: {os.path.getsize(path)} bytes, begins {head.hex()}")


if __name__ == "__main__":
    main()
