"""Choose FT's and FT+L's layer and epsilon on the tune split, as the paper did for GPT-2 XL.

Usage::

    python -m romelib.experiments.baseline_sweep --n-sweep 10 --write-hparams
    torchrun --nproc_per_node 2 -m romelib.experiments.baseline_sweep --n-sweep 10

Each (method, layer, epsilon) setting is scored on the same tune records (CounterFact's
Score, with ES, PS, NS); the best Score of each method is written to
``data/hparams/ft*/<model>.json`` with ``--write-hparams``.  The sweep is saved in
``data/results/baseline_sweep.json`` after every setting and resumes from it; launched
processes split the settings between them.  Only tune records are used (never held-out).
"""
from __future__ import annotations

import itertools
import time
from dataclasses import asdict
from pathlib import Path

from ..core.hparams import hparams_path, save_hparams
from ..datasets.counterfact import load_split
from ..editing.finetune import FTHyperParams
from ..evaluation.metrics import evaluate_counterfact
from ..paths import results_dir
from ..results import locked, read_json, write_json
from .launch import Worker, command_line, runner_parser, setup_logging

MODULE = "romelib.experiments.baseline_sweep"


def tune_records(count: int) -> list[dict]:
    """The first ``count`` tune records in the split's seed-0 order (the drawn ones come first).

    Usage: ``tune_records(10)``.
    """
    return load_split("shared").tune_shuffled[:count]


def merge_rows(saved: list[dict], new: list[dict]) -> list[dict]:
    """Usage: ``merge_rows(saved, rows)``: one row per (method, layer, epsilon), saved ones first."""
    merged = {}
    for row in [*saved, *new]:
        merged.setdefault((row["method"], row["layer"], row["epsilon"]), row)
    return list(merged.values())


def sweep_settings(layers, epsilons) -> list[tuple[str, int, float | None]]:
    """Usage: ``sweep_settings([0, 1], [5e-4])`` -> ``[("ft", 0, None), ..., ("ft+l", 1, 5e-4)]``."""
    settings = [("ft", layer, None) for layer in layers]
    return settings + [("ft+l", layer, eps) for layer, eps in itertools.product(layers, epsilons)]


def sweep(mt, records, settings, done: list[dict] = (), on_row=None,
          progress: bool = True) -> list[dict]:
    """Score FT / FT+L at each ``(method, layer, epsilon)`` setting on tuning records.

    Usage: ``rows = sweep(mt, tune_records, sweep_settings([0, 1, 2], [5e-4]))``; each row
    holds method, layer, epsilon and the table values (S, ES, PS, NS, ...).  Settings
    already in ``done`` are skipped; ``on_row(rows)`` is called after each new one.
    """
    rows = list(done)
    finished = {(r["method"], r["layer"], r["epsilon"]) for r in rows}
    for method, layer, eps in settings:
        if (method, layer, eps) in finished:
            continue
        hparams = FTHyperParams(layer=layer, norm_constraint=eps)
        started = time.perf_counter()
        result = evaluate_counterfact(mt, records, method=method, hparams=hparams, progress=progress)
        rows.append({"method": method, "layer": layer, "epsilon": eps, **result.table_row(2),
                     "seconds": round(time.perf_counter() - started, 1)})
        if on_row is not None:
            on_row(rows)
    return rows


def best_settings(rows: list[dict]) -> dict[str, FTHyperParams]:
    """The highest-Score row of each method as hyperparameters.

    Usage: ``best_settings(sweep(...))["ft+l"]`` -> ``FTHyperParams(layer=0, norm_constraint=5e-4)``.
    """
    best = {}
    for method in ("ft", "ft+l"):
        candidates = [r for r in rows if r["method"] == method]
        if candidates:
            top = max(candidates, key=lambda r: (r["S"], r["NS"]))
            best[method] = FTHyperParams(layer=top["layer"], norm_constraint=top["epsilon"])
    return best


def main(argv=None) -> None:
    """``python -m romelib.experiments.baseline_sweep``: sweep FT/FT+L on the tune split, write hparams."""
    parser = runner_parser("Sweep FT / FT+L layer and epsilon on tune records.")
    parser.add_argument("--n-sweep", type=int, default=10,
                        help="how many tune records (the drawn ones first) to score")
    parser.add_argument("--layers", default="0,1,2,4,6,8,10,12,14,17")
    parser.add_argument("--epsilons", default="1e-4,5e-4,2e-3")
    parser.add_argument("--out", default=str(results_dir("results", "baseline_sweep.json")))
    parser.add_argument("--write-hparams", action="store_true",
                        help="save the best settings to data/hparams/ft*/<model>.json")
    args = parser.parse_args(argv)
    setup_logging()
    worker = Worker.from_environment(args.device)
    mt = worker.load_model(args.model, args.threads)
    tune = tune_records(args.n_sweep)
    settings = worker.share(sweep_settings([int(x) for x in args.layers.split(",")],
                                           [float(x) for x in args.epsilons.split(",")]))
    out = Path(args.out)
    command = command_line(MODULE, argv)

    def save(_rows=None):
        with locked(out):
            previous = read_json(out, {})
            rows = merge_rows(previous.get("rows", []), _rows or [])
            commands = previous.get("commands", [previous["command"]] if "command" in previous else [])
            best = {m: asdict(h) for m, h in best_settings(rows).items()}
            write_json(out, {"commands": [c for c in commands if c != command] + [command],
                             "model": mt.name, "tuning_case_ids": [r["case_id"] for r in tune],
                             "chosen": best, "rows": rows})
        return rows

    rows = sweep(mt, tune, settings, done=read_json(out, {}).get("rows", []), on_row=save)
    rows = save(rows)
    if args.write_hparams:
        for method, hparams in best_settings(rows).items():
            save_hparams(hparams, hparams_path(method, mt.name))


if __name__ == "__main__":
    main()
