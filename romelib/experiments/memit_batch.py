"""Many facts in one edit: MEMIT on a batch of CounterFact records, scored and timed.

Usage::

    python -m romelib.experiments.memit_batch --split held_out --n 100          # the 100-edit batch
    python -m romelib.experiments.memit_batch --split tune --n 20 --lambdas 200,500,2000,15000   # lambda on tune

All ``n`` records are edited into the model at once (``romelib.edit(mt, requests,
method="memit")``), then every record is scored with the whole batch in place: ES, PS and
NS as in Table 4 (CounterFact's efficacy, paraphrase and neighbourhood scores), next to
the unedited model on the same records.  The held-out split's first 100 records are the
ones Table 4 reports, so each MEMIT row sits beside ROME editing the same fact alone.
Choices (``--set``, e.g. the covariance weight lambda) are made on ``--split tune`` only.

Timing: the seconds to compute the batch edit (v* per fact, then keys and the spread
update at each layer) are printed and saved, with the machine and thread count.  The
computed changes are saved before scoring, so a stopped run resumes without recomputing
them.  Results: ``data/results/memit/<name>/``.
"""
from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, replace

import matplotlib.pyplot as plt
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..core.hparams import load_hparams
from ..datasets.counterfact import load_split
from ..editing.handle import EditHandle
from ..editing.memit import MEMITHyperParams, compute_memit, memit_targets
from ..editing.request import ComputedEdit, as_request
from ..evaluation.metrics import record_metrics, score_record, summarize
from ..paths import results_dir
from ..results import append_jsonl, check_settings, read_json, read_jsonl, write_json
from .launch import Worker, command_line, runner_parser, setup_logging

MODULE = "romelib.experiments.memit_batch"
RESULTS = results_dir("results", "memit")


def settings(mt, changes: list[str]) -> MEMITHyperParams:
    """The shipped MEMIT settings for ``mt`` with ``KEY=JSON`` changes."""
    hparams = load_hparams(MEMITHyperParams, "memit", mt.name)
    updates = {}
    for change in changes:
        key, _, value = change.partition("=")
        if not hasattr(hparams, key):
            raise SystemExit(f"--set {change}: MEMIT has no setting {key!r}.")
        updates[key] = json.loads(value)
    return replace(hparams, **updates)


def compute_or_load(mt, records, hparams, folder, targets=None) -> tuple[dict, float]:
    """The batch's weight changes and the seconds they took (saved, so a rerun loads them).
    ``targets`` = ``(memit_targets(...), seconds they took)``, shared by several lambdas."""
    path = folder / "deltas.safetensors"
    timing = read_json(folder / "timing.json") if (folder / "timing.json").exists() else None
    if path.exists() and timing is not None:
        return load_file(str(path)), timing["seconds"]
    started = time.perf_counter()
    change = compute_memit(mt, [as_request(r["requested_rewrite"]) for r in records], hparams,
                           targets=None if targets is None else targets[0])
    seconds = time.perf_counter() - started + (0.0 if targets is None else targets[1])
    scratch = path.with_suffix(".partial")
    save_file({k: v.contiguous() for k, v in change.deltas.items()}, str(scratch))
    os.replace(scratch, path)
    write_json(folder / "timing.json", {
        "seconds": seconds, "edits": len(records), "threads": torch.get_num_threads(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "update_norms": change.info["update_norms"], "steps": change.info["steps"],
        "targets_shared": targets is not None})
    return change.deltas, seconds


def run(mt, records, hparams, folder, targets=None) -> dict:
    """Score ``records`` unedited and with all of them edited at once; returns the summary."""
    folder.mkdir(parents=True, exist_ok=True)
    check_settings(folder, {"memit": asdict(hparams), "case_ids": [r["case_id"] for r in records]})
    for method in ("none", "memit"):
        path = folder / f"{method}.jsonl"
        done = {r["case_id"] for r in read_jsonl(path, key="case_id", repair=True)}
        if len(done) == len(records):
            continue
        handle = None
        if method == "memit":
            deltas, _ = compute_or_load(mt, records, hparams, folder, targets)
            handle = EditHandle(mt, [as_request(r["requested_rewrite"]) for r in records], "memit", hparams,
                                ComputedEdit(deltas=deltas, info={}))
        try:
            for record in tqdm(records, desc=f"scoring, {method}"):
                if record["case_id"] not in done:
                    append_jsonl(path, {"case_id": record["case_id"],
                                        "metrics": record_metrics(score_record(mt, record))})
        finally:
            if handle is not None:
                handle.restore()
    return summary(folder, hparams)


def summary(folder, hparams) -> dict:
    rows = {m: [r["metrics"] for r in read_jsonl(folder / f"{m}.jsonl", key="case_id")] for m in ("none", "memit")}
    table = {m: {k: [round(x, 2) for x in v] for k, v in summarize(r).items()} for m, r in rows.items() if r}
    return {"table": table, "records": len(rows["memit"]), "hparams": asdict(hparams),
            "timing": read_json(folder / "timing.json") if (folder / "timing.json").exists() else None}


def draw_summary(name: str = "held_out-100"):
    """The saved batch run ``name`` beside the unedited model: (figure, Markdown table), what it used.

    Usage: ``(fig, text), used = draw_summary()`` (``python -m romelib.experiments.reproduce``).
    """
    folder = RESULTS / name
    summary = read_json(folder / "summary.json")
    rows = {"unedited": summary["table"]["none"], f"MEMIT, {summary['records']} at once": summary["table"]["memit"]}
    metrics = ("S", "ES", "PS", "NS")
    fig, axes = plt.subplots(1, 4, figsize=(12, 3), sharey=True)
    for ax, metric in zip(axes, metrics):
        ax.bar(range(len(rows)), [r[metric][0] for r in rows.values()],
               yerr=[r[metric][1] for r in rows.values()], color=["tab:gray", "tab:orange"], capsize=3)
        ax.set_xticks(range(len(rows)), list(rows), fontsize=8)
        ax.set_title(metric)
    axes[0].set_ylabel("percent (95% CI)")
    timing = summary["timing"]
    fig.suptitle(f"MEMIT batch edit: {summary['records']} held-out records, edit computed in "
                 f"{timing['seconds'] / 60:.1f} min ({timing['threads']} thread(s))", fontsize=10)
    fig.tight_layout()
    text = "| | " + " | ".join(metrics) + " |\n|---|" + "---|" * len(metrics) + "\n" + "\n".join(
        f"| {name} | " + " | ".join(f"{r[m][0]:.1f} ({r[m][1]:.1f})" for m in metrics) + " |"
        for name, r in rows.items())
    return (fig, text), f"saved run {folder}: {summary['command']}"


def main(argv=None) -> None:
    """``python -m romelib.experiments.memit_batch --split held_out --n 100``."""
    parser = runner_parser("MEMIT on a batch of CounterFact records at once: scores and timing.")
    parser.add_argument("--split", choices=("tune", "held_out"), default="held_out")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="change a MEMIT setting, e.g. --set mom2_update_weight=15000")
    parser.add_argument("--name", default=None, help="results subfolder (default: <split>-<n>)")
    parser.add_argument("--lambdas", default=None, help="tune split only: several values of "
                        "mom2_update_weight, comma-separated, sharing the facts' targets; one folder each")
    args = parser.parse_args(argv)
    setup_logging()
    if args.n < 1:
        parser.error(f"--n must be at least 1, got {args.n}")
    if args.set and args.split == "held_out":
        parser.error("--set changes a setting: make choices on --split tune, then write them to "
                     "data/hparams/memit/ and report on held_out.")
    worker = Worker.from_environment(args.device)
    if args.lambdas is None:
        worker.require_one_process("A batch edit is one computation")
    mt = worker.load_model(args.model, args.threads)
    split = load_split("shared")
    records = getattr(split, args.split)[:args.n]
    if len(records) < args.n:
        parser.error(f"--n {args.n}: the {args.split} split has {len(records)} records.")
    hparams, name = settings(mt, args.set), args.name or f"{args.split}-{args.n}"
    if args.lambdas is None:
        runs, targets = [(hparams, RESULTS / name)], None
    else:
        if args.split != "tune":
            parser.error("--lambdas compares settings: use it on --split tune")
        lambdas = [float(x) for x in args.lambdas.split(",")]
        runs = worker.share([(replace(hparams, mom2_update_weight=x), RESULTS / f"{name}-l{x:g}")
                             for x in lambdas])                # one lambda per process when launched
        pending = [h for h, folder in runs if not (folder / "timing.json").exists()]
        targets = None
        if pending:
            started = time.perf_counter()
            values = memit_targets(mt, [as_request(r["requested_rewrite"]) for r in records], hparams)
            targets = (values, time.perf_counter() - started)
    for run_hparams, folder in runs:
        result = {"command": command_line(MODULE, argv), "split": args.split,
                  **run(mt, records, run_hparams, folder, targets)}
        write_json(folder / "summary.json", result)
        print(folder.name, json.dumps({"table": result["table"], "seconds": (result["timing"] or {}).get("seconds")}))


if __name__ == "__main__":
    main()
