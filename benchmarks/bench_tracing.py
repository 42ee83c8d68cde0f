"""Causal tracing: the fast engine against the straightforward one, side by side.

    python benchmarks/bench_tracing.py                     # default model, 10 samples, 3 kinds
    python benchmarks/bench_tracing.py --threads 1 --ablation

For one fact (the paper's Space Needle), each kind ("hidden", "mlp", "attn") is traced by
both engines in this one process with the same noise, the same seed and the same settings,
alternating fast/reference so that a busy machine slows both alike.  Printed: wall-clock
and CPU seconds (this process's CPU time, the fairer measure on a shared machine, exact
with ``--threads 1``) per engine and kind, the ratios, and the largest absolute difference
between the two score tables.  ``--ablation`` also times the fast engine without the key/value prefix cache
(every position fed), to show what skipping earlier positions is worth.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

import romelib
from romelib.core.tokens import encode, find_subject_range
from romelib.tracing.corruption import corrupt_embeddings, make_corruption
from romelib.tracing.fast import fast_scores


def timed(function):
    """Run ``function``; return its value, wall seconds and this process's CPU seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    value = function()
    return value, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompt", default="The Space Needle is located in the city of")
    parser.add_argument("--subject", default="Space Needle")
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--kinds", nargs="+", default=["hidden", "mlp", "attn"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--ablation", action="store_true",
                        help="also time the fast engine without the prefix cache")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    mt = romelib.load_model()
    corruption = make_corruption(mt, "gaussian", 3.0)
    trace = dict(samples=args.samples, window=args.window, corruption=corruption, seed=0)
    romelib.trace(mt, args.prompt, args.subject, positions=[-1], **trace)   # warm-up
    print(f"{mt.name}, torch threads {torch.get_num_threads()}, {args.samples} samples, "
          f"window {args.window}, {corruption.describe()}, prompt {args.prompt!r}")
    rows = []
    for kind in args.kinds:
        fast, fast_s, fast_cpu = timed(lambda kind=kind: romelib.trace(
            mt, args.prompt, args.subject, kind=kind, **trace))
        reference, reference_s, reference_cpu = timed(lambda kind=kind: romelib.trace(
            mt, args.prompt, args.subject, kind=kind, engine="reference", **trace))
        row = {"kind": kind, "fast_s": fast_s, "reference_s": reference_s,
               "fast_cpu_s": fast_cpu, "reference_cpu_s": reference_cpu,
               "ratio_wall": reference_s / fast_s, "ratio_cpu": reference_cpu / fast_cpu,
               "max_abs_difference": float((fast.scores - reference.scores).abs().max()),
               "low_difference": abs(fast.low_score - reference.low_score)}
        if args.ablation:
            _, row["fast_no_prefix_s"], row["fast_no_prefix_cpu_s"] = timed(
                lambda kind=kind: _without_prefix(mt, args, kind, corruption))
        rows.append(row)
        print(json.dumps(row), flush=True)
    total = {key: sum(row[key] for row in rows)
             for key in ("fast_s", "reference_s", "fast_cpu_s", "reference_cpu_s")}
    worst = max(row["max_abs_difference"] for row in rows)
    extra = " fast, no prefix cache: wall / CPU (s) |" if args.ablation else ""
    print(f"\n| kind | reference: wall / CPU (s) | fast: wall / CPU (s) | ratio wall / CPU | "
          f"max abs difference |{extra}")
    print("| --- | --- | --- | --- | --- |" + (" --- |" if args.ablation else ""))
    for row in rows:
        print(f"| {row['kind']} | {row['reference_s']:.1f} / {row['reference_cpu_s']:.1f} | "
              f"{row['fast_s']:.1f} / {row['fast_cpu_s']:.1f} | "
              f"{row['ratio_wall']:.1f}x / {row['ratio_cpu']:.1f}x | {row['max_abs_difference']:.1e} |"
              + (f" {row['fast_no_prefix_s']:.1f} / {row['fast_no_prefix_cpu_s']:.1f} |"
                 if args.ablation else ""))
    print(f"| all | {total['reference_s']:.1f} / {total['reference_cpu_s']:.1f} | "
          f"{total['fast_s']:.1f} / {total['fast_cpu_s']:.1f} | "
          f"{total['reference_s'] / total['fast_s']:.1f}x / "
          f"{total['reference_cpu_s'] / total['fast_cpu_s']:.1f}x | {worst:.1e} |"
          + (" |" if args.ablation else ""))
    print(f"\nfast engine over all kinds: {total['reference_s'] / total['fast_s']:.1f}x faster "
          f"(wall), {total['reference_cpu_s'] / total['fast_cpu_s']:.1f}x (CPU); largest "
          f"difference of scores {worst:.1e} (targets: >= 8x, <= 1e-4)")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"rows": rows, "total": total, "threads": torch.get_num_threads(),
                       "samples": args.samples}, handle, indent=1)


def _without_prefix(mt, args, kind, corruption):
    ids = torch.tensor([encode(mt, args.prompt)], device=mt.device)
    embeddings = corrupt_embeddings(mt, corruption, args.prompt, args.subject, args.samples, 0)
    target_id = romelib.next_token_probs(mt, args.prompt)[0].argmax().item()
    return fast_scores(mt, ids, embeddings, find_subject_range(mt, args.prompt, args.subject),
                       target_id, kind, args.window, None, range(ids.shape[1]), use_prefix=False)


if __name__ == "__main__":
    main()
