"""One ROME edit on the default model: romelib's implementation beside the authors' algorithm.

Usage::

    python benchmarks/bench_rome.py                 # 5 held-out CounterFact cases
    python benchmarks/bench_rome.py --cases 3 --threads 2
    python benchmarks/bench_rome.py --split tune --cases 10 --no-reference   # edit time only

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
weight changes are, and both edits' success.  It also times ``romelib.edit`` itself (the
checks before the edit included: what the editing widget of notebook 08 runs) and counts
the edits that returned within 5 s.
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


def load_cases(count: int, split: str = "held_out") -> list[EditRequest]:
    """The first ``count`` records of one part of the shared CounterFact sample, or two fallbacks."""
    try:
        records = getattr(load_split("shared"), split)
    except FileNotFoundError:
        print("CounterFact is not available here (python -m romelib.datasets.download fetches it): "
              f"timing the {len(FALLBACK_CASES[:count])} built-in cases instead")
        return FALLBACK_CASES[:count]
    return [as_request(r["requested_rewrite"]) for r in records[:count]]


def timed(function):
    wall, cpu = time.perf_counter(), time.process_time()
    value = function()
    return value, time.perf_counter() - wall, time.process_time() - cpu


def timed_edit(mt, request, hparams) -> float:
    """Seconds of ``romelib.edit`` (checks, edit, weights written), undone afterwards."""
    started = time.perf_counter()
    handle = romelib.edit(mt, request, hparams=hparams)
    seconds = time.perf_counter() - started
    handle.restore()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=5)
    parser.add_argument("--split", choices=("held_out", "tune"), default="held_out",
                        help="which part of the shared CounterFact sample to take the cases from")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-reference", action="store_true",
                        help="time romelib only (no run of the authors' algorithm)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    mt = romelib.load_model()
    hparams = resolve_hparams(mt, None)
    inverse_cache: dict = {}
    warm = FALLBACK_CASES[0]                                      # statistics, prefixes, C^-1
    romelib.compute_rome(mt, warm, hparams)
    if not args.no_reference:
        compute_rome_reference(mt, warm, hparams, inverse_cache=inverse_cache)
    print(f"{mt.name}, layer {hparams.layer}, kl_token {hparams.kl_token!r}, "
          f"{torch.get_num_threads()} threads, {args.split} cases")
    rows = []
    for request in load_cases(args.cases, args.split):
        edit_s = timed_edit(mt, request, hparams)
        fast, fast_s, fast_cpu = timed(lambda r=request: romelib.compute_rome(mt, r, hparams))
        row = {"edit_s": edit_s, "fast_s": fast_s, "fast_cpu": fast_cpu,
               "checks": {"romelib": success(mt, request, fast)}}
        line = (f"{request.filled_prompt!r} -> {request.target_new!r}: romelib.edit {edit_s:.1f} s, "
                f"compute_rome {fast_s:.1f} s ({fast_cpu:.1f} s CPU)")
        if not args.no_reference:
            slow, slow_s, slow_cpu = timed(lambda r=request: compute_rome_reference(
                mt, r, hparams, inverse_cache=inverse_cache))
            (name, change), = fast.deltas.items()
            relative = float((change.double() - slow.deltas[name].double()).norm()
                             / slow.deltas[name].double().norm())
            row.update(slow_s=slow_s, slow_cpu=slow_cpu, relative=relative)
            row["checks"]["authors"] = success(mt, request, slow)
            line += (f", authors' algorithm {slow_s:.1f} s ({slow_cpu:.1f} s CPU), ratio "
                     f"{slow_s / fast_s:.1f}x; |dW - dW_ref| / |dW_ref| = {relative:.1e}; P(new) "
                     f"{row['checks']['romelib']['p_new']:.3f} vs {row['checks']['authors']['p_new']:.3f}")
        rows.append(row)
        print(line, flush=True)
    median = lambda key: statistics.median(r[key] for r in rows)
    edits = [r["edit_s"] for r in rows]
    print(f"\n{len(rows)} edits: romelib.edit median {median('edit_s'):.1f} s (range "
          f"{min(edits):.1f}-{max(edits):.1f} s; {sum(e < 5 for e in edits)} of {len(rows)} under 5 s); "
          f"compute_rome median {median('fast_s'):.1f} s ({median('fast_cpu'):.1f} s CPU); success "
          f"{sum(r['checks']['romelib']['success'] for r in rows)}/{len(rows)}")
    if not args.no_reference:
        ratios = [r["slow_s"] / r["fast_s"] for r in rows]
        print(f"authors' algorithm median {median('slow_s'):.1f} s ({median('slow_cpu'):.1f} s CPU); "
              f"speed-up median {statistics.median(ratios):.1f}x (range {min(ratios):.1f}-{max(ratios):.1f}x); "
              f"weight changes agree to {max(r['relative'] for r in rows):.1e} (relative); success "
              f"authors' {sum(r['checks']['authors']['success'] for r in rows)}/{len(rows)}")


if __name__ == "__main__":
    main()
