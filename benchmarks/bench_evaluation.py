"""Speed of scoring a CounterFact record: three ways side by side, in one run.

Usage::

    python benchmarks/bench_evaluation.py --records 5 --repeats 2 --threads 1

Each record's probability metrics need P(target_new) and P(target_true) after its
rewrite, paraphrase, neighbourhood and attribute prompts (about 23 prompts, 46
prompt-target pairs).  Compared, on the same records and interleaved so that machine
load affects them alike:

1. ``straightforward``: ROME's ``test_batch_prediction`` way: one padded batch of all
   pairs, logits for every position over the whole vocabulary;
2. ``target_log_probs``: ``romelib.target_log_probs`` (batches of 16, logits only for
   the last target-length positions);
3. ``score_targets``: ``romelib.evaluation.score_targets`` (a prompt's targets share one
   forward pass when possible, batches by length, unembedding only at the positions
   that predict target tokens).

The straightforward way runs on PyTorch's default float32 kernel, as the authors' code
does; romelib's two ways run on the kernel :mod:`romelib.core.linear_kernel` chooses, and
``score_targets`` runs once more on PyTorch's default kernel (``score_targets, stock``: the
gain of the algorithm alone).  It prints the median seconds per record of each, the
speed-ups, and the largest difference between their log-probabilities (they must agree).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import romelib
from romelib.core.linear_kernel import current_kernel, linear_kernel
from romelib.datasets.counterfact import load_counterfact, targets
from romelib.evaluation.metrics import PROMPT_GROUPS, record_prompts
from romelib.evaluation.scoring import score_targets, score_targets_reference


def pairs_of(record):
    groups = record_prompts(record)
    new, true = targets(record)
    prompts = [p for g in PROMPT_GROUPS for p in groups[g] for _ in (0, 1)]
    answers = [t for g in PROMPT_GROUPS for _ in groups[g] for t in (new, true)]
    return prompts, answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    mt = romelib.load_model(device="cpu")
    ways = {"straightforward": (score_targets_reference, "torch"),
            "target_log_probs": (romelib.target_log_probs, "auto"), "score_targets": (score_targets, "auto"),
            "score_targets, stock": (score_targets, "torch")}
    seconds = {name: [] for name in ways}
    worst = 0.0
    records = load_counterfact("auto", n=args.records)
    score_targets(mt, *pairs_of(records[0]))  # warm up
    for _ in range(args.repeats):
        for record in records:
            prompts, answers = pairs_of(record)
            outputs = {}
            for name, (way, kernel) in ways.items():
                with linear_kernel(kernel):
                    started = time.perf_counter()
                    outputs[name] = way(mt, prompts, answers)
                    seconds[name].append(time.perf_counter() - started)
            for name in ways:
                for a, b in zip(outputs[name], outputs["score_targets"]):
                    worst = max(worst, max(abs(x - y) for x, y in zip(a, b)))
    median = {name: statistics.median(s) for name, s in seconds.items()}
    print(f"{len(records)} records x {args.repeats} repeats, torch threads {torch.get_num_threads()}, "
          f"romelib's kernel {current_kernel()}")
    for name, value in median.items():
        print(f"{name:>18}: {value:6.2f} s per record  (x{median['straightforward'] / value:.1f} "
              "vs straightforward)")
    print(f"score_targets is x{median['target_log_probs'] / median['score_targets']:.1f} faster than "
          f"target_log_probs; largest log-prob difference {worst:.1e}")


if __name__ == "__main__":
    main()
