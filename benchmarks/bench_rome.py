"""One ROME edit on the default model: romelib's implementation beside the authors' algorithm.

Usage::

    python benchmarks/bench_rome.py                 # 5 held-out CounterFact cases
    python benchmarks/bench_rome.py --cases 3 --threads 2
    python benchmarks/bench_rome.py --split tune --cases 24 --no-reference --score   # time and quality

The baseline is :func:`romelib.editing.rome_reference.compute_rome_reference`, which does
what the authors' ``compute_u``/``compute_v`` do: every optimisation step runs one batch
of all the prefixed prompts and the KL prompt through the whole model, with logits over
the whole vocabulary at every position; the keys come from full forward passes; ``C^-1``
is inverted once and kept between edits (the authors' ``inv_mom2_cache``).
romelib's :func:`romelib.compute_rome` computes the same loss with the same
hyperparameters, prefixes and statistics, but runs each prompt's head once (cached keys
and values), replays the layers below the edit, and unembeds only the positions that
predict a target token; the first step also yields the keys and the KL term's reference.
It runs twice: at the default settings, where the unembedding's product runs in bfloat16
on hardware that has it fast (``unembed_dtype="auto"``, :mod:`romelib.core.unembedding_precision`),
and exactly (``unembed_dtype="model"``, float32 like the authors'); both on the matrix kernel
:mod:`romelib.core.linear_kernel` chooses (oneDNN where it is clearly faster).  The authors'
algorithm runs on PyTorch's default kernel, as their code does, and so does a third romelib
run ("stock": exact, default kernel), whose ratio is that of the algorithm alone.  All run in the same
process, alternately, so the ratios are fair on a busy machine; the script prints the times,
the ratios, how far apart the weight changes are, and each edit's success.  It also times
``romelib.edit`` itself at the default settings (the checks before the edit included: what
the editing widget of notebook 08 runs) and counts the edits that returned within 5 s.
``--score`` adds CounterFact's efficacy, paraphrase and neighbourhood success of both
precisions (on the tune split: the records choices may be made on).
"""
from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch

import romelib
from romelib.core.linear_kernel import current_kernel, linear_kernel
from romelib.core.unembedding_precision import unembed_dtype
from romelib.datasets.counterfact import load_split
from romelib.editing.handle import EditHandle
from romelib.editing.request import ComputedEdit, EditRequest, as_request
from romelib.editing.rome import resolve_hparams
from romelib.editing.rome_reference import compute_rome_reference
from romelib.evaluation.metrics import record_metrics, score_record

SCORED = ("default", "exact")
FALLBACK_CASES = [EditRequest("{} plays the sport of", "Michael Jordan", "soccer", "basketball"),
                  EditRequest("The mother tongue of {} is", "Danielle Darrieux", "English", "French")]


def success(mt, request, change) -> dict:
    """P(new) and P(true) on the prompt after the edit, undone afterwards."""
    with EditHandle(mt, request, "rome", None, change):
        new = romelib.target_probability(mt, request.filled_prompt, request.target_new).probability
        true = romelib.target_probability(mt, request.filled_prompt, request.target_true).probability
    return {"p_new": new, "p_true": true, "success": new > true}


def load_cases(count: int, split: str = "held_out") -> list[dict]:
    """The first ``count`` records of one part of the shared CounterFact sample, or two fallbacks."""
    try:
        records = getattr(load_split("shared"), split)
    except FileNotFoundError:
        print("CounterFact is not available here (python -m romelib.datasets.download fetches it): "
              f"timing the {len(FALLBACK_CASES[:count])} built-in cases instead")
        return [{"requested_rewrite": r} for r in FALLBACK_CASES[:count]]
    return records[:count]


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


def relative_to(change: ComputedEdit, reference: ComputedEdit) -> float:
    """|dW - dW_ref| / |dW_ref| of two one-matrix edits."""
    (name, mine), = change.deltas.items()
    theirs = reference.deltas[name].double()
    return float((mine.double() - theirs).norm() / theirs.norm())


def scores(mt, record: dict, request, change: ComputedEdit) -> dict:
    """CounterFact's efficacy (0/1), paraphrase and neighbourhood success with ``change`` in place."""
    with EditHandle(mt, request, "rome", None, change):
        metrics = record_metrics(score_record(mt, record))
    return {key: metrics[key] for key in ("ES", "PS", "NS")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=5)
    parser.add_argument("--split", choices=("held_out", "tune"), default="held_out",
                        help="which part of the shared CounterFact sample to take the cases from")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-reference", action="store_true",
                        help="time romelib only (no run of the authors' algorithm)")
    parser.add_argument("--score", action="store_true",
                        help="also score each edit (efficacy, paraphrase, neighbourhood) in both precisions")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    mt = romelib.load_model()
    default = resolve_hparams(mt, None)
    exact = replace(default, unembed_dtype="model")
    ways = {"default": (default, "auto"), "exact": (exact, "auto"), "stock": (exact, "torch")}
    inverse_cache: dict = {}
    warm = FALLBACK_CASES[0]                                      # statistics, prefixes, C^-1
    for hparams, kernel in ways.values():
        with linear_kernel(kernel):
            romelib.compute_rome(mt, warm, hparams)
    if not args.no_reference:
        with linear_kernel("torch"):
            compute_rome_reference(mt, warm, default, inverse_cache=inverse_cache)
    print(f"{mt.name}, layer {default.layer}, kl_token {default.kl_token!r}, {torch.get_num_threads()} "
          f"threads, {args.split} cases; default unembedding in {unembed_dtype(mt, default.unembed_dtype)}, "
          f"exact in {mt.dtype}; matrix kernel {current_kernel()} (stock and the authors': torch)")
    rows = []
    records = load_cases(args.cases, args.split)
    if args.score and any("paraphrase_prompts" not in r for r in records):
        parser.error("--score needs CounterFact records (python -m romelib.datasets.download fetches them)")
    for record in records:
        request = as_request(record["requested_rewrite"])
        row = {"edit_s": timed_edit(mt, request, default)}
        changes = {}
        for way, (hparams, kernel) in ways.items():
            with linear_kernel(kernel):
                changes[way], row[f"{way}_s"], row[f"{way}_cpu"] = timed(
                    lambda r=request, h=hparams: romelib.compute_rome(mt, r, h))
            row[f"{way}_check"] = success(mt, request, changes[way])
        line = (f"{request.filled_prompt!r} -> {request.target_new!r}: romelib.edit {row['edit_s']:.1f} s; "
                f"compute_rome default {row['default_s']:.1f} s, exact {row['exact_s']:.1f} s, "
                f"stock {row['stock_s']:.1f} s")
        if not args.no_reference:
            with linear_kernel("torch"):
                changes["authors"], row["authors_s"], row["authors_cpu"] = timed(
                    lambda r=request: compute_rome_reference(mt, r, default, inverse_cache=inverse_cache))
            row["authors_check"] = success(mt, request, changes["authors"])
            for way in ways:
                row[f"{way}_relative"] = relative_to(changes[way], changes["authors"])
            line += (f"; authors' algorithm {row['authors_s']:.1f} s, ratio {row['authors_s'] / row['default_s']:.1f}x "
                     f"(exact {row['authors_s'] / row['exact_s']:.1f}x, "
                     f"stock {row['authors_s'] / row['stock_s']:.1f}x); "
                     f"|dW - dW_authors| / |dW_authors| "
                     f"{row['default_relative']:.1e} (exact {row['exact_relative']:.1e}); P(new) "
                     f"{row['default_check']['p_new']:.3f} / {row['exact_check']['p_new']:.3f} / "
                     f"{row['authors_check']['p_new']:.3f}")
        else:
            line += f"; |dW - dW_exact| / |dW_exact| {relative_to(changes['default'], changes['exact']):.1e}"
        if args.score:   # "stock" is "exact" on another kernel (same numbers to ~1e-6): not scored again
            for way in SCORED:
                row[f"{way}_scores"] = scores(mt, record, request, changes[way])
            line += "; ES/PS/NS " + ", ".join(
                f"{way} " + "/".join(f"{row[f'{way}_scores'][k]:.2f}" for k in ("ES", "PS", "NS")) for way in SCORED)
        rows.append(row)
        print(line, flush=True)
    summarise(rows, ways, args)


def summarise(rows: list[dict], ways: dict, args) -> None:
    median = lambda key: statistics.median(r[key] for r in rows)
    edits = [r["edit_s"] for r in rows]
    print(f"\n{len(rows)} edits: romelib.edit median {median('edit_s'):.1f} s (range "
          f"{min(edits):.1f}-{max(edits):.1f} s; {sum(e < 5 for e in edits)} of {len(rows)} under 5 s)")
    for way in ways:
        print(f"compute_rome {way}: median {median(f'{way}_s'):.1f} s ({median(f'{way}_cpu'):.1f} s CPU); "
              f"success {sum(r[f'{way}_check']['success'] for r in rows)}/{len(rows)}")
    if not args.no_reference:
        print(f"authors' algorithm: median {median('authors_s'):.1f} s ({median('authors_cpu'):.1f} s CPU); "
              f"success {sum(r['authors_check']['success'] for r in rows)}/{len(rows)}")
        for way in ways:
            ratios = [r["authors_s"] / r[f"{way}_s"] for r in rows]
            print(f"speed-up of {way} over the authors' algorithm: median {statistics.median(ratios):.1f}x "
                  f"(range {min(ratios):.1f}-{max(ratios):.1f}x); weight changes apart up to "
                  f"{max(r[f'{way}_relative'] for r in rows):.1e} (relative)")
    if args.score:
        for way in SCORED:
            means = {k: 100 * statistics.mean(r[f"{way}_scores"][k] for r in rows) for k in ("ES", "PS", "NS")}
            print(f"{way}: efficacy {means['ES']:.1f}%, paraphrase {means['PS']:.1f}%, "
                  f"neighbourhood {means['NS']:.1f}% over {len(rows)} {args.split} records")


if __name__ == "__main__":
    main()
