"""The paper's Table 4 on the default model: every editing method on held-out CounterFact records.

Usage::

    python -m romelib.experiments.table4 --records shared --n 100 --generation-records 10
    torchrun --nproc_per_node 2 -m romelib.experiments.table4 --records shared --n 100
    python -m romelib.experiments.table4 --records project       # the project's own cases
    load_summary("counterfact")                                   # what a finished run saved

Each record is evaluated with every method in turn (the unedited model, FT, FT+L, ROME,
ROME with C = identity, and FT / FT+L at ROME's layer); every edit is undone before the
next.  Results are appended to ``data/results/table4_<name>/<method>.jsonl`` one record
at a time, so an interrupted run resumes where it stopped, and launched processes share
the records.  At the end ``summary.json`` (the table, the paired differences, the command,
run times) and ``table.md`` are written.  Only held-out records are used: on the shared
CounterFact sample, :func:`romelib.datasets.counterfact.counterfact_split` leaves out every
record a choice was made on.
"""
from __future__ import annotations

import platform
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..datasets.counterfact import load_split, resolve_source
from ..editing.variants import method_and_hparams
from ..evaluation.fluency import default_tfidf, reference_texts
from ..evaluation.metrics import evaluate_record, paired_difference, summarize
from ..paths import results_dir
from ..results import append_jsonl, check_settings, read_json, read_jsonl, write_json, write_text
from .launch import Worker, command_line, runner_parser, setup_logging

MODULE = "romelib.experiments.table4"
METHODS = ("none", "ft", "ft+l", "rome", "rome-identity", "rome-kl-last", "ft-rome-layer",
           "ft+l-rome-layer")
LABELS = {"none": "unedited", "ft": "FT", "ft+l": "FT+L", "rome": "ROME",
          "rome-identity": "ROME, C = I", "rome-kl-last": "ROME, KL at the last token",
          "ft-rome-layer": "FT at ROME's layer", "ft+l-rome-layer": "FT+L at ROME's layer"}

# Meng et al. (2022), Table 4, GPT-2 XL on 7,500 CounterFact records (95% CI in the paper).
PAPER_COLUMNS = ("S", "ES", "EM", "PS", "PM", "NS", "NM", "GE", "RS")
PAPER_TABLE4 = {name: dict(zip(PAPER_COLUMNS, values)) for name, values in {
    "GPT-2 XL": (30.5, 22.2, -4.8, 24.7, -5.0, 78.1, 5.0, 626.6, 31.9),
    "FT": (65.1, 100.0, 98.8, 87.9, 46.6, 40.4, -6.2, 607.1, 40.5),
    "FT+L": (66.9, 99.1, 91.5, 48.7, 28.9, 70.3, 3.5, 621.4, 37.4),
    "ROME": (89.2, 100.0, 97.9, 96.4, 62.7, 75.4, 4.2, 621.9, 41.9),
}.items()}


def select_records(source: str, n: int | None) -> list[dict]:
    """The table's records: the first ``n`` held-out records of ``source`` (all when ``n`` is None).

    Usage: ``select_records("shared", 100)``; see :func:`romelib.datasets.counterfact.load_split`.
    """
    held_out = load_split(source).held_out
    return held_out[:n] if n else held_out


def results_folder(name: str) -> Path:
    """Usage: ``results_folder("counterfact")`` -> ``data/results/table4_counterfact``."""
    return results_dir("results", f"table4_{name}")


def run(mt, records: list[dict], folder: Path, methods=METHODS, generation_records: int = 0,
        progress: bool = True, max_new_tokens: int = 50, from_end: bool = False,
        worker: Worker | None = None) -> None:
    """Evaluate ``methods`` on ``records``, appending to ``folder/<method>.jsonl``; resumable.

    Usage: ``run(mt, select_records("shared", 10), results_folder("try"))``.
    ``from_end=True`` walks the records from the last one, so a second process sharing the
    folder meets the first in the middle; each skips what the other saved.  Launched
    processes (torchrun, accelerate) pass only their share of the records.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for name in [*methods, "references"]:                  # cut torn lines before appending
        read_jsonl(folder / f"{method_file(name)}.jsonl", repair=True)
    saved = lambda m: {r["case_id"] for r in read_jsonl(folder / f"{method_file(m)}.jsonl")}
    references = {r["case_id"]: r["texts"] for r in read_jsonl(folder / "references.jsonl")}
    tfidf = (default_tfidf([p for r in records for p in r["attribute_prompts"]])
             if generation_records else None)
    hparams = {m: method_and_hparams(mt, m) for m in methods}
    check_settings(folder, {"model": mt.name, "max_new_tokens": max_new_tokens,
                            **{m: [method, asdict(hp) if hp else None]
                               for m, (method, hp) in hparams.items()}})
    worker = worker or Worker()
    order = worker.share(list(enumerate(records)))     # this process's records, index kept
    bar = tqdm(total=len(order) * len(methods), desc="table 4", disable=not progress)
    for index, record in (reversed(order) if from_end else order):
        case_id, generate = record["case_id"], index < generation_records
        if generate and case_id not in references:
            started = time.perf_counter()
            references[case_id] = reference_texts(mt, record, seed=case_id)
            append_jsonl(folder / "references.jsonl", {"case_id": case_id, "texts": references[case_id],
                                                       "seconds": time.perf_counter() - started})
        for name in methods:
            bar.set_postfix_str(f"case {case_id} {name}")
            if case_id not in saved(name):      # read again: another run may share the folder
                method, hp = hparams[name]
                result = evaluate_record(mt, record, method, hp, generation=generate,
                                         references=references.get(case_id), tfidf=tfidf,
                                         generation_settings={"max_new_tokens": max_new_tokens})
                result.pop("log_probs"), result.pop("references")
                append_jsonl(folder / f"{method_file(name)}.jsonl", result)
            bar.update()
    bar.close()


def method_file(method: str) -> str:
    """Usage: ``method_file("ft+l")`` -> ``"ft_plus_l"`` (the results file's stem)."""
    return method.replace("+", "_plus_")


def _common_rows(folder: Path, methods) -> dict[str, list[dict]]:
    """Each method's saved results on the records every method has finished, by case id.

    A record saved twice (two runs appending to one folder at once) counts once: the first
    line is kept; evaluations are deterministic, so both lines hold the same metrics.
    """
    rows = {m: read_jsonl(folder / f"{method_file(m)}.jsonl", key="case_id") for m in methods}
    rows = {m: r for m, r in rows.items() if r}
    if not rows:
        raise FileNotFoundError(f"No results saved in {folder}; run python -m {MODULE} "
                                "(data/results/README.md has the exact command).")
    common = set.intersection(*[{r["case_id"] for r in rs} for rs in rows.values()])
    return {m: sorted((r for r in rs if r["case_id"] in common), key=lambda r: r["case_id"])
            for m, rs in rows.items()}


def summarize_folder(folder: Path, methods=METHODS) -> dict:
    """Table values per method over the records every method has finished.

    Usage: ``summarize_folder(results_folder("counterfact"))["rome"]["S"]`` -> ``(mean, ci)``.
    """
    table = {}
    for method, kept in _common_rows(folder, methods).items():
        table[method] = {**summarize([r["metrics"] for r in kept]), "records": len(kept),
                         "seconds_per_record": sum(r["seconds"]["total"] for r in kept) / len(kept)}
    return table


# The paper's comparative claims, as paired differences (first - second, same records).
COMPARISONS = (("rome", "ft+l", "S"), ("rome", "ft", "S"), ("rome", "ft+l-rome-layer", "S"),
               ("rome", "none", "NS"), ("ft+l", "none", "NS"), ("rome", "rome-identity", "NS"),
               ("rome", "rome-kl-last", "S"), ("rome", "rome-kl-last", "NS"))


def compare_folder(folder: Path, methods=METHODS) -> list[dict]:
    """Paired differences with 95% bootstrap intervals for the ``COMPARISONS`` present.

    Usage: ``compare_folder(results_folder("counterfact"))[0]`` ->
    ``{"first": "rome", "second": "ft+l", "metric": "S", "difference": 6.0, "low": ..., "high": ...}``.
    Each pair is compared on the records *both* methods have finished (which can be more
    than the table's, when some methods were run on more records).
    """
    found = []
    for first, second, metric in COMPARISONS:
        if first in methods and second in methods:
            try:
                rows = _common_rows(folder, (first, second))
            except FileNotFoundError:
                continue
            if len(rows) < 2 or not rows[first]:
                continue
            difference, low, high = paired_difference(
                [r["metrics"] for r in rows[first]], [r["metrics"] for r in rows[second]], metric)
            found.append({"first": first, "second": second, "metric": metric,
                          "difference": difference, "low": low, "high": high,
                          "records": len(rows[first])})
    return found


def markdown(table: dict) -> str:
    """Usage: ``print(markdown(summarize_folder(folder)))`` -> a Table 4 in Markdown."""
    columns = ("S", "ES", "EM", "PS", "PM", "NS", "NM", "GE", "RS")
    lines = ["| Editor | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for method, row in table.items():
        cells = []
        for c in columns:
            if c not in row:
                cells.append("-")
            else:
                mean, ci = row[c]
                cells.append(f"{mean:.1f} ({ci:.1f})")
        lines.append(f"| {LABELS.get(method, method)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_comparisons(comparisons: list[dict]) -> str:
    """Usage: ``print(markdown_comparisons(compare_folder(folder)))``."""
    lines = ["| comparison (same records) | records | difference | 95% interval |",
             "|---|---|---|---|"]
    for c in comparisons:
        lines.append(f"| {c['metric']}: {LABELS.get(c['first'], c['first'])} - "
                     f"{LABELS.get(c['second'], c['second'])} | {c['records']} "
                     f"| {c['difference']:+.1f} | [{c['low']:+.1f}, {c['high']:+.1f}] |")
    return "\n".join(lines)


def load_summary(name: str = "counterfact") -> dict:
    """Usage: ``load_summary("counterfact")["table"]["rome"]["S"]`` -> what a finished run saved."""
    path = results_folder(name) / "summary.json"
    if not path.exists():
        raise FileNotFoundError(f"No saved table at {path}; run python -m {MODULE} first "
                                "(data/results/README.md has the exact command).")
    return read_json(path)


def write_summary(folder: Path, records: list[dict], methods, settings: dict) -> dict:
    """Write ``summary.json`` and ``table.md`` from what ``folder`` holds (atomically).

    Usage: ``write_summary(results_folder("counterfact"), records, METHODS, {...})``.
    """
    table = summarize_folder(folder, methods)
    computed = sum(r["seconds"]["total"] for m in methods
                   for r in read_jsonl(folder / f"{method_file(m)}.jsonl", key="case_id"))
    computed += sum(r.get("seconds", 0.0) for r in read_jsonl(folder / "references.jsonl",
                                                              key="case_id"))
    done = min(row["records"] for row in table.values())
    summary = {**settings, "records_requested": len(records), "records_done": done,
               "complete": done == len(records) and len(table) == len(methods),
               "case_ids": [r["case_id"] for r in records],
               "compute_seconds_all_sessions": round(computed, 1),
               "table": table, "comparisons": compare_folder(folder, methods)}
    write_json(folder / "summary.json", summary)
    text = markdown(table) + "\n\nPaired differences (bootstrap over records):\n\n" + \
        markdown_comparisons(summary["comparisons"])
    write_text(folder / "table.md", text + "\n")
    return summary


def main(argv=None) -> None:
    """``python -m romelib.experiments.table4 --records shared --n 100``: compute and save Table 4."""
    parser = runner_parser("Table 4 (CounterFact) on one model, resumable.")
    parser.add_argument("--records", default="shared",
                        help="shared (the 500-record sample) | full (all of CounterFact, downloaded "
                             "once) | project | auto | path to a JSON file")
    parser.add_argument("--n", type=int, default=None, help="number of records (default: all)")
    parser.add_argument("--name", default=None, help="results folder suffix (default from --records)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--generation-records", type=int, default=0,
                        help="measure GE/RS on the first this many records")
    parser.add_argument("--max-new-tokens", type=int, default=50)
    parser.add_argument("--from-end", action="store_true",
                        help="walk the records from the last one (a second process started by "
                             "hand meets the first in the middle)")
    parser.add_argument("--summarize-only", action="store_true",
                        help="write summary.json and table.md from what is saved (a partial or "
                             "stopped run too); evaluate nothing")
    args = parser.parse_args(argv)
    setup_logging()
    source = resolve_source(args.records)
    folder_names = {"shared": "counterfact", "full": "counterfact_full", "project": "project"}
    name = args.name or folder_names.get(source) or Path(source).stem
    folder = results_folder(name)
    methods = tuple(args.methods.split(","))
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {','.join(METHODS)}")
    records = select_records(source, args.n)
    started = time.perf_counter()
    worker = Worker.from_environment(args.device)
    if args.summarize_only:
        model_name = read_json(folder / "settings.json", {}).get("model", args.model)
    else:
        mt = worker.load_model(args.model, args.threads)
        model_name = mt.name
        run(mt, records, folder, methods, args.generation_records,
            max_new_tokens=args.max_new_tokens, from_end=args.from_end, worker=worker)
    settings = {"command": command_line(MODULE, argv, drop=("--summarize-only", "--from-end")),
                "summarized_only": args.summarize_only, "model": model_name,
                "records": source, "held_out": True,
                "generation_records": args.generation_records,
                "max_new_tokens": args.max_new_tokens,
                "this_session_seconds": round(time.perf_counter() - started, 1),
                "machine": f"{platform.machine()}, torch threads {torch.get_num_threads()}, "
                           f"{worker.describe()}"}
    summary = write_summary(folder, records, methods, settings)
    print(markdown(summary["table"]) + "\n\n" + markdown_comparisons(summary["comparisons"]))


if __name__ == "__main__":
    main()
