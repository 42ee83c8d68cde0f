"""How specific is an edit?  Close neighbours, CounterFact+ prompts, and the keys that predict bleed.

Usage::

    python -m romelib.experiments.specificity --methods none,rome,memit,ft+l       # close neighbours
    python -m romelib.experiments.specificity --plus 50                            # + CounterFact+
    torchrun --nproc_per_node 2 -m romelib.experiments.specificity                 # shares the cases

**Close neighbours** (``data/close_neighbours.json``, written by the project): each edit comes
with three subjects that share its relation, its true object and its context (the Sydney
Opera House -> Toronto; is the Sydney Harbour Bridge still in Sydney?).  Per edit: ES (the
new target beats the true one on the edited prompt), PS (on the paraphrase), and the
close-neighbour score CN (the true object still beats the new target, on the neighbours
the unedited model gets right).  For ROME, each neighbour's key at its subject's last token
is also read, and the update's reach ``(u . k) / (u . k*)`` recorded beside the drop of its
true object's probability: the key similarity that predicts bleed.

**CounterFact+** (Hoelscher-Obermaier et al. 2023): the neighbourhood prompts of held-out
CounterFact records with the edited sentence written before them ("Danielle Darrieux's
mother tongue is English. Michel Rocard's mother tongue is"): NS+ asks whether the edit
leaks into text about other subjects once the edited fact is in context.  The unedited
model is scored on the same prompts.  Results: ``data/results/specificity/``, resumable.
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from tqdm.auto import tqdm

from ..core.hooks import hooks
from ..core.tokens import encode, find_subject_range, target_log_probs
from ..datasets.counterfact import load_split, targets
from ..editing.handle import edit
from ..editing.key_statistics import key_statistics
from ..editing.memory import update_direction
from ..editing.request import as_request
from ..intervals import mean_and_ci
from ..paths import project_data, results_dir
from ..plots.figures import plot_reach_vs_drop
from ..results import append_jsonl, read_json, read_jsonl, write_json
from .launch import Worker, command_line, runner_parser, setup_logging

MODULE = "romelib.experiments.specificity"
RESULTS = results_dir("results", "specificity")
METHODS = ("none", "rome", "memit", "ft+l")


def load_cases(mt, path=None) -> list[dict]:
    """The close-neighbour cases whose edited fact ``mt`` gets right (true object over new target).

    Usage: ``load_cases(mt)`` (``data/close_neighbours.json``) or ``load_cases(mt, "my_cases.json")``.
    Cases need ``requested_rewrite``, ``paraphrase_prompts`` and ``close_neighbours``
    (``subject``, ``prompt``); which facts the model knows is read from the file when it was
    written for this model, else measured here with the unedited model.
    """
    cases = read_json(path or project_data("close_neighbours.json"))
    if path is not None or not mt.name.startswith("gemma-3-270m"):
        cases = [mark_known(mt, case) for case in cases]
    return [c for c in cases if c["known"]["edited"]]


@torch.no_grad()
def mark_known(mt, case: dict) -> dict:
    """``case`` with ``known`` and each neighbour's ``true_preferred`` measured on the unedited ``mt``."""
    rewrite = case["requested_rewrite"]
    new, true = rewrite["target_new"]["str"], rewrite["target_true"]["str"]
    neighbours = case["close_neighbours"]
    edited = wins(mt, [rewrite["prompt"].format(rewrite["subject"])], true, new)[0] > 0
    preferred = [m > 0 for m in wins(mt, [n["prompt"] for n in neighbours], true, new)]
    return {**case, "close_neighbours": [{**n, "true_preferred": p} for n, p in zip(neighbours, preferred)],
            "known": {"edited": edited, "neighbours": preferred,
                      "paraphrases": [m < 0 for m in wins(mt, case["paraphrase_prompts"], new, true)]}}


def wins(mt, prompts: list[str], first: str, second: str) -> list[float]:
    """Mean log-probability per token of ``first`` minus that of ``second``, after each prompt."""
    if not prompts:
        return []
    scores = target_log_probs(mt, prompts * 2, [first] * len(prompts) + [second] * len(prompts))
    means = [sum(s) / len(s) for s in scores]
    return [a - b for a, b in zip(means[:len(prompts)], means[len(prompts):])]


def score_case(mt, case: dict) -> dict:
    """ES, PS, CN (fractions) and each neighbour's margin of the true object over the new target."""
    rewrite = case["requested_rewrite"]
    new, true = rewrite["target_new"]["str"], rewrite["target_true"]["str"]
    known = [n for n in case["close_neighbours"] if n["true_preferred"]]
    edited = wins(mt, [rewrite["prompt"].format(rewrite["subject"])], new, true)[0]
    paraphrase = wins(mt, case["paraphrase_prompts"], new, true)
    margins = wins(mt, [n["prompt"] for n in known], true, new)
    return {"ES": float(edited > 0), "PS": statistics.mean(m > 0 for m in paraphrase),
            "CN": statistics.mean(m > 0 for m in margins), "margins": margins,
            "neighbours": [n["subject"] for n in known]}


@torch.no_grad()
def reach(mt, handle, case: dict) -> list[float]:
    """The update's reach ``(u . k) / (u . k*)`` at each known neighbour's last subject token (ROME)."""
    info, hparams = handle.info, handle.hparams
    second = None if hparams.identity_covariance else key_statistics(
        mt, hparams.layer, hparams.mom2_source, hparams.mom2_max_tokens).mom2
    u = update_direction(info["k_average"], second)
    k_star = info["k_star"].double()
    name, values = f"mlp_proj.{hparams.layer}", []
    for neighbour in (n for n in case["close_neighbours"] if n["true_preferred"]):
        position = find_subject_range(mt, neighbour["prompt"], neighbour["subject"])[1] - 1
        ids = torch.tensor([encode(mt, neighbour["prompt"])], device=mt.device)
        with hooks(mt, [name], retain_input=True, retain_output=False, stop=True) as acts:
            mt.model(input_ids=ids, use_cache=False)
        key = acts[name].input[0, position].double()
        values.append(float((key @ u) / (k_star @ u)))
    return values


def run_close_neighbours(mt, cases, methods, worker: Worker, folder=RESULTS, hparams=None) -> None:
    """Score every case unedited (``none``) and after each method's edit; ``hparams`` maps a method
    to settings that replace its shipped ones."""
    for method in methods:
        path = folder / f"close_{method.replace('+', '_plus_')}.jsonl"
        done = {r["case_id"] for r in read_jsonl(path, key="case_id", repair=True)}
        for case in tqdm(worker.share(cases), desc=f"close neighbours, {method}"):
            if case["case_id"] in done:
                continue
            row = {"case_id": case["case_id"], "method": method}
            if method == "none":
                row.update(score_case(mt, case))
            else:
                request = as_request(case["requested_rewrite"])
                with edit(mt, [request] if method == "memit" else request, method=method,
                          hparams=(hparams or {}).get(method)) as handle:
                    row.update(score_case(mt, case))
                    if method == "rome":
                        row["reach"] = reach(mt, handle, case)
            append_jsonl(path, row)


def plus_prompts(record: dict) -> list[str]:
    """Usage: ``plus_prompts(record)`` -> the neighbourhood prompts after the edited sentence."""
    rewrite = record["requested_rewrite"]
    sentence = f"{rewrite['prompt'].format(rewrite['subject'])} {targets(record)[0]}."
    return [f"{sentence} {prompt}" for prompt in record["neighborhood_prompts"]]


def run_plus(mt, records, methods, worker: Worker, folder=RESULTS) -> None:
    for method in methods:
        path = folder / f"plus_{method.replace('+', '_plus_')}.jsonl"
        done = {r["case_id"] for r in read_jsonl(path, key="case_id", repair=True)}
        for record in tqdm(worker.share(records), desc=f"CounterFact+, {method}"):
            if record["case_id"] in done:
                continue
            new, true = targets(record)
            plain, plus = record["neighborhood_prompts"], plus_prompts(record)
            if method == "none":
                margins = (wins(mt, plain, true, new), wins(mt, plus, true, new))
            else:
                request = as_request(record["requested_rewrite"])
                with edit(mt, [request] if method == "memit" else request, method=method):
                    margins = (wins(mt, plain, true, new), wins(mt, plus, true, new))
            append_jsonl(path, {"case_id": record["case_id"], "method": method,
                                "NS": statistics.mean(m > 0 for m in margins[0]),
                                "NS_plus": statistics.mean(m > 0 for m in margins[1])})


def reach_pairs(folder=RESULTS) -> list[tuple[float, float]]:
    """(reach, drop of the margin) for every known close neighbour of every saved ROME edit.

    Usage: ``x, y = zip(*reach_pairs())``.
    """
    unedited = {r["case_id"]: r for r in read_jsonl(folder / "close_none.jsonl", key="case_id")}
    return [(reach, unedited[r["case_id"]]["margins"][i] - after)
            for r in read_jsonl(folder / "close_rome.jsonl", key="case_id") if r["case_id"] in unedited
            for i, (reach, after) in enumerate(zip(r.get("reach", []), r["margins"]))]


def summarize(folder=RESULTS) -> dict:
    """Per method: ES, PS, CN (close neighbours) and NS, NS+ (CounterFact+), mean and 95% CI, in
    percent; and the correlation of ROME's reach with the drop of the neighbours' margins."""
    summary = {"close": {}, "plus": {}}
    unedited = {r["case_id"]: r for r in read_jsonl(folder / "close_none.jsonl", key="case_id")}
    for path in sorted(folder.glob("close_*.jsonl")):
        rows = [r for r in read_jsonl(path, key="case_id") if r["case_id"] in unedited]
        if rows:
            summary["close"][rows[0]["method"]] = {
                metric: mean_and_ci([r[metric] for r in rows]) for metric in ("ES", "PS", "CN")} | {
                "cases": len(rows), "neighbours": sum(len(r["margins"]) for r in rows)}
    pairs = reach_pairs(folder)
    if len(pairs) > 2:
        x, y = (torch.tensor(v, dtype=torch.float64) for v in zip(*pairs))
        r = float(torch.corrcoef(torch.stack([x.abs(), y]))[0, 1])
        summary["reach_vs_drop"] = {"pairs": len(pairs), "pearson_r": r,
                                    "r_95": [math.tanh(math.atanh(r) + s * 1.96 / math.sqrt(len(pairs) - 3))
                                             for s in (-1, 1)]}
    for path in sorted(folder.glob("plus_*.jsonl")):
        rows = read_jsonl(path, key="case_id")
        if rows:
            summary["plus"][rows[0]["method"]] = {m: mean_and_ci([r[m] for r in rows])
                                                  for m in ("NS", "NS_plus")} | {"records": len(rows)}
    return summary


def draw_summary(folder=RESULTS):
    """Close-neighbour scores per method and ROME's reach against bleed: (figure, Markdown), used.

    Usage: ``(fig, text), used = draw_summary()`` (``python -m romelib.experiments.reproduce``).
    """
    summary = read_json(folder / "summary.json")
    close = summary["close"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    metrics = ("ES", "PS", "CN")
    for i, (method, row) in enumerate(close.items()):
        axes[0].bar(np.arange(3) + 0.2 * i - 0.3, [row[m][0] for m in metrics], width=0.2,
                    yerr=[row[m][1] for m in metrics], label=method, capsize=2)
    axes[0].set_xticks(range(3), ["efficacy", "paraphrase", "close neighbours"])
    axes[0].set(ylabel="percent (95% CI)", title=f"{close['none']['cases']} close-neighbour cases")
    axes[0].legend(fontsize=8)
    pairs = reach_pairs(folder)
    if "reach_vs_drop" in summary:
        x, y = zip(*pairs)
        plot_reach_vs_drop([abs(v) for v in x], y, summary["reach_vs_drop"], ax=axes[1])
    fig.tight_layout()
    text = "| method | cases | " + " | ".join(metrics) + " |\n|---|---|" + "---|" * len(metrics) + "\n" + "\n".join(
        f"| {m} | {r['cases']} | " + " | ".join(f"{r[k][0]:.1f} ({r[k][1]:.1f})" for k in metrics) + " |"
        for m, r in close.items())
    return (fig, text), f"saved run {folder}: {summary['command']}"


def main(argv=None) -> None:
    """``python -m romelib.experiments.specificity --methods none,rome,memit,ft+l --plus 50``."""
    parser = runner_parser("Specificity: close neighbours, CounterFact+ and key similarity.")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--cases", default=None, help="a JSON file of close-neighbour cases (default: the project's)")
    parser.add_argument("--plus", type=int, default=0, help="held-out CounterFact records for CounterFact+")
    parser.add_argument("--out", default=None, help="results folder (default: data/results/specificity, "
                        "or a subfolder named after --cases)")
    parser.add_argument("--summarize-only", action="store_true")
    args = parser.parse_args(argv)
    setup_logging()
    methods = args.methods.split(",")
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"--methods must be among {', '.join(METHODS)}; got {', '.join(unknown)}")
    folder = Path(args.out) if args.out else RESULTS / Path(args.cases).stem if args.cases else RESULTS
    if not args.summarize_only:
        worker = Worker.from_environment(args.device)
        mt = worker.load_model(args.model, args.threads)
        run_close_neighbours(mt, load_cases(mt, args.cases), methods, worker, folder)
        if args.plus:
            run_plus(mt, load_split("shared").held_out[:args.plus], methods, worker, folder)
    summary = {"command": command_line(MODULE, argv, drop=("--summarize-only",)), **summarize(folder)}
    write_json(folder / "summary.json", summary)
    for method, row in summary["close"].items():
        print(method, {k: (round(v[0], 1), round(v[1], 1)) if isinstance(v, tuple) else v for k, v in row.items()})
    print(summary.get("reach_vs_drop"), summary["plus"])


if __name__ == "__main__":
    main()
