"""Causal tracing: the fast engine against the authors' algorithm, side by side, in one run.

    python benchmarks/bench_tracing.py                          # 3 facts x 3 kinds, 10 samples
    python benchmarks/bench_tracing.py --facts 0 --kinds hidden --profile

The baseline is ``romelib.trace(..., engine="reference")``, which does what the authors'
``calculate_hidden_flow`` / ``trace_with_patch`` do: for every (position, layer) one
forward pass of ``samples + 1`` rows (the clean run and the corrupted samples) through the
whole model, logits over the whole vocabulary at every position.  Both engines get the same
corruption (sigma measured once, as the authors' script does once per run), the same noise
draw and seed; they alternate, so a busy machine slows both alike.  For each fact and kind
the script prints both times, the ratio, the largest difference between the two score
tables, and the floating-point work each engine does (``romelib.tracing.trace.trace_work``),
whose ratio bounds what any engine doing the same exact computation at the same speed can
gain.  ``--profile`` prints where the fast engine's time goes.

The baseline runs PyTorch's default float32 kernel, as the authors' code does; romelib runs
the kernel :mod:`romelib.core.linear_kernel` chooses (oneDNN where it is clearly faster).
The fast engine is timed a second time with PyTorch's default kernel, so the table also
shows the speed-up of the algorithm alone (``--no-stock`` skips that run).
"""
from __future__ import annotations

import argparse
import cProfile
import json
import math
import pstats
import time

import torch

import romelib
from romelib.core.linear_kernel import current_kernel, linear_kernel
from romelib.core.tokens import encode
from romelib.tracing.reference import answer_ids
from romelib.tracing.trace import trace_work

FACTS = [  # three lengths: a 2-token subject at the start, the paper's example, a long subject
    ("Michael Jordan plays the sport of", "Michael Jordan"),
    ("The Space Needle is located in the city of", "Space Needle"),
    ("The Leaning Tower of Pisa is in the city of", "Leaning Tower of Pisa"),
]


def timed(function):
    """Run ``function``; return its value, wall seconds and this process's CPU seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    value = function()
    return value, time.perf_counter() - wall, time.process_time() - cpu


def work(mt, prompt, subject, kind, samples, engine) -> float:
    ids = encode(mt, prompt)
    start = romelib.find_subject_range(mt, prompt, subject)[0]
    scored = len(answer_ids(mt, prompt, None))
    return trace_work(mt, len(ids) + scored - 1, scored, range(len(ids)), (start, start + 1), kind,
                      samples, engine).flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--facts", default="0,1,2", help="indices into FACTS")
    parser.add_argument("--kinds", nargs="+", default=["hidden", "mlp", "attn"])
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--profile", action="store_true", help="profile the fast engine")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--no-stock", action="store_true",
                        help="skip timing the fast engine with PyTorch's default kernel")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    mt = romelib.load_model()
    corruption = romelib.make_corruption(mt, "gaussian", 3.0)
    options = dict(samples=args.samples, window=args.window, corruption=corruption, seed=0,
                   max_seconds=None)
    romelib.trace(mt, *FACTS[1], positions=[-1], **{**options, "samples": 2})   # warm-up
    print(f"{mt.name}, torch threads {torch.get_num_threads()}, {args.samples} samples, "
          f"window {args.window}, {corruption.describe()}; romelib's kernel: {current_kernel()}, "
          "the authors' algorithm: torch")
    rows = []
    for index in (int(i) for i in args.facts.split(",")):
        prompt, subject = FACTS[index]
        for kind in args.kinds:
            if args.profile:
                profiler = cProfile.Profile()
                profiler.enable()
            fast, fast_s, fast_cpu = timed(lambda p=prompt, s=subject, k=kind: romelib.trace(
                mt, p, s, kind=k, **options))
            if args.profile:
                profiler.disable()
                pstats.Stats(profiler).sort_stats("cumulative").print_stats(15)
            with linear_kernel("torch"):    # what the authors' code runs on
                slow, slow_s, slow_cpu = timed(lambda p=prompt, s=subject, k=kind: romelib.trace(
                    mt, p, s, kind=k, engine="reference", **options))
                stock_s = math.nan if args.no_stock else timed(
                    lambda p=prompt, s=subject, k=kind: romelib.trace(mt, p, s, kind=k, **options))[1]
            row = {"fact": subject, "tokens": len(fast.tokens), "subject_tokens":
                   fast.subject_range[1] - fast.subject_range[0], "kind": kind,
                   "fast_s": fast_s, "reference_s": slow_s, "fast_cpu_s": fast_cpu,
                   "reference_cpu_s": slow_cpu, "ratio": slow_s / fast_s,
                   "ratio_cpu": slow_cpu / fast_cpu, "fast_stock_kernel_s": stock_s,
                   "ratio_algorithm": slow_s / stock_s,
                   "flop_ratio": work(mt, prompt, subject, kind, args.samples, "reference")
                   / work(mt, prompt, subject, kind, args.samples, "fast"),
                   "max_abs_difference": float((fast.scores - slow.scores).abs().nan_to_num().max()),
                   "low_difference": abs(fast.low_score - slow.low_score)}
            rows.append(row)
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}),
                  flush=True)
    print("\n| fact (tokens, subject tokens) | kind | authors' algorithm (s) | fast (s) | ratio wall / CPU "
          "| fast, stock kernel (s) | ratio of the algorithm alone | FLOP ratio | max abs difference |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['fact']} ({r['tokens']}, {r['subject_tokens']}) | {r['kind']} | {r['reference_s']:.1f} "
              f"| {r['fast_s']:.1f} | {r['ratio']:.1f}x / {r['ratio_cpu']:.1f}x | {r['fast_stock_kernel_s']:.1f} "
              f"| {r['ratio_algorithm']:.1f}x | {r['flop_ratio']:.1f}x | {r['max_abs_difference']:.1e} |")
    total_slow, total_fast = sum(r["reference_s"] for r in rows), sum(r["fast_s"] for r in rows)
    total_stock = sum(r["fast_stock_kernel_s"] for r in rows)
    print(f"\nall: {total_slow:.0f} s vs {total_fast:.0f} s, {total_slow / total_fast:.1f}x; smallest "
          f"ratio {min(r['ratio'] for r in rows):.1f}x; largest score difference "
          f"{max(r['max_abs_difference'] for r in rows):.1e}; the algorithm alone (both on PyTorch's "
          f"default kernel): {total_slow / total_stock:.1f}x, smallest "
          f"{min(r['ratio_algorithm'] for r in rows):.1f}x")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"rows": rows, "threads": torch.get_num_threads(), "kernel": current_kernel()},
                      handle, indent=1)


if __name__ == "__main__":
    main()
