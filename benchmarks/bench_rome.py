"""One ROME edit on the default model: romelib's implementation beside the authors' algorithm.

Usage::

    python benchmarks/bench_rome.py                 # 5 held-out CounterFact cases
    python benchmarks/bench_rome.py --cases 3 --threads 2

The baseline is :func:`romelib.editing.rome_reference.compute_rome_reference`, which does
what the authors' ``compute_u``/``compute_v`` do: every optimisation step runs one batch
of all the prefixed prompts and the KL prompt through the whole model, with logits over
the whole vocabulary at every position; the keys come from full forward passes; ``C^-1``
is inverted once and kept between edits (the authors' ``inv_mom2_cache``).
romelib's :func:`romelib.compute_rome` computes the same loss with the same
hyperparameters, prefixes and statistics, but runs each prompt's head once (cached keys
and values), replays the layers below the edit, and unembeds only the positions that
predict a target token.  Both edits run in the same process, alternately, so the ratio is
fair on a busy machine; the script prints both times, the ratio, how far apart the two
weight changes are, and both edits' success.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import romelib
from romelib.datasets.counterfact import load_split
from romelib.editing.handle import EditHandle
from romelib.editing.request import EditRequest, as_request
from romelib.editing.rome import resolve_hparams
from romelib.editing.rome_reference import compute_rome_reference

FALLBACK_CASES = [EditRequest("{} plays the sport of", "Michael Jordan", "soccer", "basketball"),
                  EditRequest("The mother tongue of {} is", "Danielle Darrieux", "English", "French")]


def success(mt, request, change) -> dict:
    """P(new) and P(true) on the prompt after the edit, undone afterwards."""
    with EditHandle(mt, request, "rome", None, change):
        new = romelib.target_probability(mt, request.filled_prompt, request.target_new).probability
        true = romelib.target_probability(mt, request.filled_prompt, request.target_true).probability
    return {"p_new": new, "p_true": true, "success": new > true}


def load_cases(count: int) -> list[EditRequest]:
    """The first ``count`` held-out records of the shared CounterFact sample, or two fallbacks."""
    try:
        records = load_split("shared").held_out
    except FileNotFoundError:
        return FALLBACK_CASES[:count]
    return [as_request(r["requested_rewrite"]) for r in records[:count]]


def timed(function):
    wall, cpu = time.perf_counter(), time.process_time()
    value = function()
    return value, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    mt = romelib.load_model()
    hparams = resolve_hparams(mt, None)
    inverse_cache: dict = {}
    warm = FALLBACK_CASES[0]                                      # statistics, prefixes, C^-1
    romelib.compute_rome(mt, warm, hparams)
    compute_rome_reference(mt, warm, hparams, inverse_cache=inverse_cache)
    print(f"{mt.name}, layer {hparams.layer}, kl_token {hparams.kl_token!r}, "
          f"{torch.get_num_threads()} threads")
    rows = []
    for request in load_cases(args.cases):
        fast, fast_s, fast_cpu = timed(lambda r=request: romelib.compute_rome(mt, r, hparams))
        slow, slow_s, slow_cpu = timed(lambda r=request: compute_rome_reference(
            mt, r, hparams, inverse_cache=inverse_cache))
        (name, change), = fast.deltas.items()
        relative = float((change.double() - slow.deltas[name].double()).norm()
                         / slow.deltas[name].double().norm())
        checks = {"romelib": success(mt, request, fast), "authors": success(mt, request, slow)}
        rows.append({"fast_s": fast_s, "slow_s": slow_s, "fast_cpu": fast_cpu, "slow_cpu": slow_cpu,
                     "relative": relative, "checks": checks})
        print(f"{request.filled_prompt!r} -> {request.target_new!r}: romelib {fast_s:.1f} s "
              f"({fast_cpu:.1f} s CPU), authors' algorithm {slow_s:.1f} s ({slow_cpu:.1f} s CPU), "
              f"ratio {slow_s / fast_s:.1f}x; |dW - dW_ref| / |dW_ref| = {relative:.1e}; "
              f"P(new) {checks['romelib']['p_new']:.3f} vs {checks['authors']['p_new']:.3f}",
              flush=True)
    median = {key: statistics.median(r[key] for r in rows)
              for key in ("fast_s", "slow_s", "fast_cpu", "slow_cpu", "relative")}
    ratios = [r["slow_s"] / r["fast_s"] for r in rows]
    print(f"\n{len(rows)} edits: romelib median {median['fast_s']:.1f} s per edit "
          f"({median['fast_cpu']:.1f} s CPU), authors' algorithm {median['slow_s']:.1f} s "
          f"({median['slow_cpu']:.1f} s CPU); speed-up median {statistics.median(ratios):.1f}x "
          f"(range {min(ratios):.1f}-{max(ratios):.1f}x); weight changes agree to "
          f"{max(r['relative'] for r in rows):.1e} (relative); success romelib "
          f"{sum(r['checks']['romelib']['success'] for r in rows)}/{len(rows)}, authors' "
          f"{sum(r['checks']['authors']['success'] for r in rows)}/{len(rows)}")


if __name__ == "__main__":
    main()
