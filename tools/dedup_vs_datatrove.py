#!/usr/bin/env python3
"""MinHash dedup, phi-zoo against datatrove on the same corpus and settings (word 5-grams,
14 bands x 8 rows, 64-bit hashes): cluster agreement per document and documents per second,
run back to back.

Two corpora (see `corpus`), each written as two JSONL files so that both tools use both cores.

    python3 -m venv /tmp/dt && /tmp/dt/bin/pip install datatrove spacy xxhash
    cargo build --release --example textbooks
    /tmp/dt/bin/python tools/dedup_vs_datatrove.py [--corpus planted|embedded|both] [--copies 2]
"""

import argparse
import json
import pathlib
import random
import shutil
import struct
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
BINARY = ROOT / "target" / "release" / "examples" / "textbooks"


def embedded_docs() -> list[str]:
    docs = []
    for name in ["code", "synthetic", "web"]:
        with open(ROOT / "datasets" / "assets" / f"{name}.jsonl") as f:
            docs += [json.loads(line)["text"] for line in f if line.strip()]
    return docs


def edit(text: str, rate: float, rng: random.Random) -> str:
    words = text.split(" ")
    return " ".join(f"edit{rng.randrange(10**6)}" if rng.random() < rate else w for w in words)


def corpus(kind: str, copies: int, seed: int) -> list[str]:
    """`embedded`: the embedded corpora, templated (many pairs near the LSH threshold), and
    near copies of each at edit rates from 1% to 30%. `planted`: documents of random words drawn
    from the embedded corpora's vocabulary (letters only) (unrelated to each other), with near copies (one or two
    words changed, Jaccard of 5-gram shingles above 0.9), reformatted exact copies, and far copies (40% changed): pairs clearly above
    or below the threshold, as in most real corpora."""
    rng = random.Random(seed)
    if kind == "embedded":
        docs = embedded_docs()
        base = list(docs)
        for _ in range(copies):
            docs += [edit(t, rng.choice([0.01, 0.03, 0.1, 0.3]), rng) for t in base]
    else:
        # Words only: numbers all simplify to "0" and would make unrelated documents alike.
        vocabulary = sorted({w for t in embedded_docs() for w in t.split() if w.isalpha()})
        base = [" ".join(rng.choice(vocabulary) for _ in range(rng.randrange(100, 400)))
                for _ in range(5000 * copies)]
        docs = list(base)
        for text in base:
            r = rng.random()
            if r < 0.2:
                words = text.split(" ")
                for _ in range(rng.choice([1, 2])):
                    words[rng.randrange(len(words))] = f"edit{rng.randrange(10**6)}"
                docs.append(" ".join(words))
            elif r < 0.25:
                docs.append(text.upper().replace(" ", "  "))
            elif r < 0.35:
                docs.append(edit(text, 0.4, rng))
    rng.shuffle(docs)
    return docs


def write_halves(docs: list[str], folder: pathlib.Path) -> list[int]:
    folder.mkdir(parents=True)
    half = (len(docs) + 1) // 2
    sizes = []
    for i, part in enumerate([docs[:half], docs[half:]]):
        with open(folder / f"part-{i}.jsonl", "w") as f:
            for j, text in enumerate(part):
                f.write(json.dumps({"text": text, "id": f"{i}-{j}"}) + "\n")
        sizes.append(len(part))
    return sizes


def run_datatrove(input_dir: pathlib.Path, work: pathlib.Path, sizes: list[int]) -> tuple[float, list[int]]:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig

    config = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8,
                           hash_config=HashConfig(precision=64))
    reader = lambda: JsonlReader(str(input_dir), glob_pattern="*.jsonl", text_key="text", id_key="id")
    sigs, buckets, clusters = work / "sigs", work / "buckets", work / "clusters"
    start = time.perf_counter()
    LocalPipelineExecutor(
        pipeline=[reader(), MinhashDedupSignature(output_folder=str(sigs), config=config)],
        tasks=2, workers=2, logging_dir=str(work / "logs1"),
    ).run()
    LocalPipelineExecutor(
        pipeline=[MinhashDedupBuckets(input_folder=str(sigs), output_folder=str(buckets), config=config)],
        tasks=config.num_buckets, workers=2, logging_dir=str(work / "logs2"),
    ).run()
    LocalPipelineExecutor(
        pipeline=[MinhashDedupCluster(input_folder=str(buckets), output_folder=str(clusters),
                                      config=config, save_cluster_id=True)],
        tasks=1, logging_dir=str(work / "logs3"),
    ).run()
    LocalPipelineExecutor(
        pipeline=[reader(), MinhashDedupFilter(input_folder=str(clusters)),
                  JsonlWriter(str(work / "kept"))],
        tasks=2, workers=2, logging_dir=str(work / "logs4"),
    ).run()
    seconds = time.perf_counter() - start
    # Cluster ids: (document index within the rank's input, cluster id) pairs per rank.
    label = list(range(sum(sizes)))
    offset = [0, sizes[0]]
    for rank in range(2):
        path = clusters / f"{rank:06d}.clusters"
        if not path.exists():
            continue
        data = path.read_bytes()
        for doc, cluster in struct.iter_unpack("<2I", data):
            label[offset[rank] + doc] = -1 - cluster
    return seconds, label


def run_phi_zoo(input_dir: pathlib.Path, out: pathlib.Path, total: int, seed: int) -> tuple[float, list[int]]:
    start = time.perf_counter()
    subprocess.run([str(BINARY), "dedup", "--input", str(input_dir), "--out", str(out),
                    "--seed", str(seed)], check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    label = list(range(total))
    with open(out / "clusters.jsonl") as f:
        for line in f:
            c = json.loads(line)
            for d in [c["kept"]] + c["duplicates"]:
                label[d] = -1 - c["kept"]
    return seconds, label


def partition(label: list[int]) -> list[frozenset]:
    groups: dict[int, set] = {}
    for doc, l in enumerate(label):
        groups.setdefault(l, set()).add(doc)
    members = [None] * len(label)
    for group in groups.values():
        frozen = frozenset(group)
        for doc in group:
            members[doc] = frozen
    return members


def agreement(x: list[int], y: list[int]) -> float:
    """The share of documents whose cluster (the set of its members) is the same in both."""
    a, b = partition(x), partition(y)
    return sum(1 for p, q in zip(a, b) if p == q) / len(a)


def compare(kind: str, copies: int, seed: int, work: pathlib.Path) -> dict:
    shutil.rmtree(work, ignore_errors=True)
    docs = corpus(kind, copies, seed)
    sizes = write_halves(docs, work / "input")
    total = len(docs)
    ours_s, ours = run_phi_zoo(work / "input", work / "phi-zoo", total, 1)
    theirs_s, theirs = run_datatrove(work / "input", work / "datatrove", sizes)
    _, reseeded = run_phi_zoo(work / "input", work / "phi-zoo-seed2", total, 2)
    in_clusters = lambda label: sum(1 for doc, l in enumerate(label) if l != doc)
    return {
        "corpus": kind,
        "documents": total,
        "agreement": round(agreement(ours, theirs), 4),
        # Two seeds of phi-zoo: how much two random LSH draws disagree by chance on this corpus.
        "agreement_phi_zoo_seed_1_vs_2": round(agreement(ours, reseeded), 4),
        "documents_in_clusters": {"phi-zoo": in_clusters(ours), "datatrove": in_clusters(theirs)},
        "seconds": {"phi-zoo": round(ours_s, 2), "datatrove": round(theirs_s, 2)},
        "documents_per_second": {"phi-zoo": round(total / ours_s), "datatrove": round(total / theirs_s)},
        "speedup": round(theirs_s / ours_s, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", choices=["planted", "embedded", "both"], default="both")
    parser.add_argument("--copies", type=int, default=2, help="scale: copies of the base documents")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="/tmp/dedup-cmp")
    args = parser.parse_args()
    if not BINARY.exists():
        print(f"{BINARY} is missing: cargo build --release --example textbooks", file=sys.stderr)
        return 1
    kinds = ["planted", "embedded"] if args.corpus == "both" else [args.corpus]
    results = [compare(k, args.copies, args.seed, pathlib.Path(args.work) / k) for k in kinds]
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
