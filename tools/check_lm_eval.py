"""lm-evaluation-harness against phi-zoo's server: its `local-completions` model, with the
server's own tokenizer endpoints (`tokenizer_backend=remote`), on a multiple-choice task defined
in a local YAML over the project's embedded sample (assets/eval/choice_sample.jsonl). Every
choice's log-likelihood must equal examples/eval's for the same model and items (within 1e-4),
and acc / acc_norm must be identical.

    python tools/check_lm_eval.py            # after `cargo build --examples`
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from serve_common import ROOT, binary, server, tiny_model

DATA = ROOT / "assets" / "eval" / "choice_sample.jsonl"
TASK = """task: phi_zoo_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{gold}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""


def main():
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import lm_eval
    from lm_eval.tasks import TaskManager

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        model = tiny_model(scratch / "tiny")
        tasks = scratch / "tasks"
        tasks.mkdir()
        (tasks / "phi_zoo_mc.yaml").write_text(TASK.format(data=DATA))

        ours = scratch / "eval"
        subprocess.run(
            [binary("eval"), "--model", str(model), "--task", "mc", "--data", str(DATA),
             "--out", str(ours), "--json"],
            check=True, stdout=subprocess.DEVNULL,
        )
        # examples/eval names the per-item file after the format (`jsonl`).
        items = [json.loads(line) for line in (ours / "jsonl.jsonl").read_text().splitlines()]

        with server(model) as base:
            results = lm_eval.simple_evaluate(
                model="local-completions",
                model_args={
                    "base_url": base + "/v1/completions",
                    "model": "tiny",
                    "tokenizer_backend": "remote",
                    "tokenized_requests": True,
                    "num_concurrent": 4,
                    "max_retries": 1,
                },
                tasks=["phi_zoo_mc"],
                task_manager=TaskManager(include_path=str(tasks)),
                log_samples=True,
                batch_size=1,
            )

    samples = sorted(results["samples"]["phi_zoo_mc"], key=lambda s: s["doc_id"])
    if len(samples) != len(items):
        sys.exit(f"FAILED: lm-eval scored {len(samples)} items, examples/eval {len(items)}")
    worst = 0.0
    acc = acc_norm = 0  # lm-eval's, summed; each already checked against examples/eval's pick
    for sample, item in zip(samples, items):
        theirs = [resp[0][0] for resp in sample["resps"]]
        mine = item["scores"]
        if len(theirs) != len(mine):
            sys.exit(f"FAILED: item {item['id']}: {len(theirs)} choices vs {len(mine)}")
        worst = max(worst, max(abs(a - b) for a, b in zip(theirs, mine)))
        acc += sample["acc"]
        acc_norm += sample["acc_norm"]
        if sample["acc"] != float(item["pick"] == item["gold"]):
            sys.exit(f"FAILED: item {item['id']}: acc {sample['acc']} vs pick {item['pick']}")
        if sample["acc_norm"] != float(item["pick_norm"] == item["gold"]):
            sys.exit(f"FAILED: item {item['id']}: acc_norm {sample['acc_norm']} vs {item['pick_norm']}")
    if worst > 1e-4:
        sys.exit(f"FAILED: log-likelihoods differ by up to {worst:.2e} (> 1e-4)")
    figures = results["results"]["phi_zoo_mc"]
    if (figures["acc,none"], figures["acc_norm,none"]) != (acc / len(items), acc_norm / len(items)):
        sys.exit(f"FAILED: lm-eval's figures {figures} differ from its samples'")
    print(
        f"lm-eval local-completions: {len(items)} items, max |Δ log-likelihood| {worst:.2e}, "
        f"acc {figures.get('acc,none')} acc_norm {figures.get('acc_norm,none')} "
        f"(examples/eval: acc {acc / len(items)} acc_norm {acc_norm / len(items)})"
    )


if __name__ == "__main__":
    main()
