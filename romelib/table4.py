"""The paper's Table 4 on the default model: every editing method on a CounterFact sample.

Usage::

    python -m romelib.table4 --records shared --n 100 --generation-records 30
    python -m romelib.table4 --records project            # the project's own cases
    romelib.table4.load_summary("counterfact")             # what a finished run saved

Each record is evaluated with every method in turn (the unedited model, FT, FT+L, ROME,
ROME with C = identity, and FT / FT+L at ROME's layer); every edit is undone before the
next.  Results are appended
to ``data/results/table4_<name>/<method>.jsonl`` one record at a time, so an
interrupted run resumes where it stopped.  At the end ``summary.json`` (the table, the
command, run times) and ``table.md`` are written.  On the shared CounterFact sample,
the records used to tune FT/FT+L (``romelib.counterfact.split_records(..., n_tune=20)``)
are left out.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from .hparams import DATA_DIR
from .results import append_jsonl, check_settings, read_jsonl

RESULTS_DIR = DATA_DIR / "results"
N_TUNE = 20  # shared CounterFact records reserved for tuning the baselines (split_records, seed 0)
N_ROME_TUNE = 50  # the first records of the shared file: ROME's layer was chosen on (some of) them
METHODS = ("none", "ft", "ft+l", "rome", "rome-identity", "ft-rome-layer", "ft+l-rome-layer")
LABELS = {"none": "unedited", "ft": "FT", "ft+l": "FT+L", "rome": "ROME",
          "rome-identity": "ROME, C = I", "ft-rome-layer": "FT at ROME's layer",
          "ft+l-rome-layer": "FT+L at ROME's layer"}

# Meng et al. (2022), Table 4, GPT-2 XL on 7,500 CounterFact records (95% CI in the paper).
PAPER_COLUMNS = ("S", "ES", "EM", "PS", "PM", "NS", "NM", "GE", "RS")
PAPER_TABLE4 = {name: dict(zip(PAPER_COLUMNS, values)) for name, values in {
    "GPT-2 XL": (30.5, 22.2, -4.8, 24.7, -5.0, 78.1, 5.0, 626.6, 31.9),
    "FT": (65.1, 100.0, 98.8, 87.9, 46.6, 40.4, -6.2, 607.1, 40.5),
    "FT+L": (66.9, 99.1, 91.5, 48.7, 28.9, 70.3, 3.5, 621.4, 37.4),
    "ROME": (89.2, 100.0, 97.9, 96.4, 62.7, 75.4, 4.2, 621.9, 41.9),
}.items()}


def method_and_hparams(mt, name: str):
    """The ``romelib.edit`` method and hyperparameters behind a table row name.

    Usage: ``method, hparams = method_and_hparams(mt, "rome-identity")`` -> ``"rome"`` and
    ROME's hyperparameters with ``identity_covariance=True``.
    ``"ft-rome-layer"`` and ``"ft+l-rome-layer"`` are the tuned baselines moved to ROME's
    layer (the issue's "the same layer's MLP output matrix").
    """
    from .baselines import FTHyperParams
    from .hparams import load_hparams
    from .rome import resolve_hparams

    if name == "none":
        return None, None
    if name == "rome":
        return "rome", resolve_hparams(mt, None)      # data/hparams/rome/<model>.json
    if name == "rome-identity":
        return "rome", replace(resolve_hparams(mt, None), identity_covariance=True)
    if name in ("ft", "ft+l"):
        return name, load_hparams(FTHyperParams, name, mt.name)
    if name in ("ft-rome-layer", "ft+l-rome-layer"):  # the tuned FT/FT+L, moved to ROME's layer
        method = name.removesuffix("-rome-layer")
        tuned = load_hparams(FTHyperParams, method, mt.name)
        return method, replace(tuned, layer=resolve_hparams(mt, None).layer)
    raise ValueError(f"Unknown table method {name!r}; choose from {METHODS}.")


def select_records(source: str, n: int | None) -> list[dict]:
    """The table's records: held-out shared CounterFact records, or all project cases.

    Usage: ``select_records("shared", 100)``.  From the shared sample it leaves out the
    records FT/FT+L were tuned on and the first ``N_ROME_TUNE`` records of the file, on
    which ROME's editing layer was chosen (data/edit_layer_sweep/).
    """
    from .counterfact import PROJECT_CASES, counterfact_path, load_counterfact, split_records

    if source == "auto":
        source = "project" if counterfact_path("auto") == PROJECT_CASES else "shared"
    records = load_counterfact(source)
    if source in ("shared", "counterfact"):
        rome_tuning = {r["case_id"] for r in records[:N_ROME_TUNE]}
        _, held_out = split_records(records, n_tune=N_TUNE)
        records = [r for r in held_out if r["case_id"] not in rome_tuning]
    return records[:n] if n else records


def run(mt, records: list[dict], folder: Path, methods=METHODS, generation_records: int = 0,
        progress: bool = True, max_new_tokens: int = 50, from_end: bool = False) -> None:
    """Evaluate ``methods`` on ``records``, appending to ``folder/<method>.jsonl``; resumable.

    Usage: ``run(mt, select_records("shared", 10), RESULTS_DIR / "table4_try")``.
    ``from_end=True`` walks the records from the last one, so a second process sharing the
    folder (another core) meets the first in the middle; each skips what the other saved.
    """
    from tqdm.auto import tqdm

    from .evaluation import evaluate_record
    from .fluency import default_tfidf, reference_texts

    folder.mkdir(parents=True, exist_ok=True)
    saved = lambda m: {r["case_id"] for r in read_jsonl(folder / f"{_file(m)}.jsonl")}
    references = {r["case_id"]: r["texts"] for r in read_jsonl(folder / "references.jsonl")}
    tfidf = (default_tfidf([p for r in records for p in r["attribute_prompts"]])
             if generation_records else None)
    hparams = {m: method_and_hparams(mt, m) for m in methods}
    check_settings(folder, {"model": mt.name, "max_new_tokens": max_new_tokens,
                            **{m: [method, asdict(hp) if hp else None]
                               for m, (method, hp) in hparams.items()}})
    bar = tqdm(total=len(records) * len(methods), desc="table 4", disable=not progress)
    order = list(enumerate(records))
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
                append_jsonl(folder / f"{_file(name)}.jsonl", result)
            bar.update()
    bar.close()


def _file(method: str) -> str:
    return method.replace("+", "_plus_")


def _common_rows(folder: Path, methods) -> dict[str, list[dict]]:
    """Each method's saved results on the records every method has finished, by case id.

    A record saved twice (two runs appending to one folder at once) counts once: the first
    line is kept; evaluations are deterministic, so both lines hold the same metrics.
    """
    rows = {m: list({r["case_id"]: r for r in reversed(read_jsonl(folder / f"{_file(m)}.jsonl"))}
                    .values()) for m in methods}
    rows = {m: r for m, r in rows.items() if r}
    if not rows:
        raise FileNotFoundError(f"No results saved in {folder}; run python -m romelib.table4 "
                                "(data/results/README.md has the exact command).")
    common = set.intersection(*[{r["case_id"] for r in rs} for rs in rows.values()])
    return {m: sorted((r for r in rs if r["case_id"] in common), key=lambda r: r["case_id"])
            for m, rs in rows.items()}


def summarize_folder(folder: Path, methods=METHODS) -> dict:
    """Table values per method over the records every method has finished.

    Usage: ``summarize_folder(RESULTS_DIR / "table4_counterfact")["rome"]["S"]`` -> ``(mean, ci)``.
    """
    from .evaluation import summarize

    table = {}
    for method, kept in _common_rows(folder, methods).items():
        table[method] = {**summarize([r["metrics"] for r in kept]), "records": len(kept),
                         "seconds_per_record": sum(r["seconds"]["total"] for r in kept) / len(kept)}
    return table


# The paper's comparative claims, as paired differences (first - second, same records).
COMPARISONS = (("rome", "ft+l", "S"), ("rome", "ft", "S"), ("rome", "ft+l-rome-layer", "S"),
               ("rome", "none", "NS"), ("ft+l", "none", "NS"), ("rome", "rome-identity", "NS"))


def compare_folder(folder: Path, methods=METHODS) -> list[dict]:
    """Paired differences with 95% bootstrap intervals for the ``COMPARISONS`` present.

    Usage: ``compare_folder(RESULTS_DIR / "table4_counterfact")[0]`` ->
    ``{"first": "rome", "second": "ft+l", "metric": "S", "difference": 6.0, "low": ..., "high": ...}``.
    Each pair is compared on the records *both* methods have finished (which can be more
    than the table's, when some methods were run on more records).
    """
    from .evaluation import paired_difference

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
    path = RESULTS_DIR / f"table4_{name}" / "summary.json"
    if not path.exists():
        raise FileNotFoundError(f"No saved table at {path}; run python -m romelib.table4 first "
                                "(data/results/README.md has the exact command).")
    return json.loads(path.read_text())


def main(argv=None) -> None:
    """``python -m romelib.table4 --records shared --n 100``: compute and save Table 4."""
    import torch

    from .models import load_model

    parser = argparse.ArgumentParser(description="Table 4 (CounterFact) on one model, resumable.")
    parser.add_argument("--records", default="shared",
                        help="shared | project | auto | path to a JSON file")
    parser.add_argument("--n", type=int, default=None, help="number of records (default: all)")
    parser.add_argument("--name", default=None, help="results folder suffix (default from --records)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--generation-records", type=int, default=0,
                        help="measure GE/RS on the first this many records")
    parser.add_argument("--max-new-tokens", type=int, default=50)
    parser.add_argument("--model", default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--from-end", action="store_true",
                        help="walk the records from the last one: a second run on another core "
                             "shares the folder with the first and they meet in the middle")
    parser.add_argument("--summarize-only", action="store_true",
                        help="write summary.json and table.md from what is saved (a partial or "
                             "stopped run too); evaluate nothing")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.records == "auto":
        from .counterfact import PROJECT_CASES, counterfact_path
        args.records = "project" if counterfact_path("auto") == PROJECT_CASES else "shared"
    default_name = {"shared": "counterfact", "project": "project"}.get(args.records)
    name = args.name or default_name or Path(args.records).stem
    folder = RESULTS_DIR / f"table4_{name}"
    methods = tuple(args.methods.split(","))
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {','.join(METHODS)}")
    records = select_records(args.records, args.n)
    started = time.perf_counter()
    if args.summarize_only:
        model_name = json.loads((folder / "settings.json").read_text())["model"] \
            if (folder / "settings.json").exists() else args.model
    else:
        mt = load_model(args.model, device="cpu")
        model_name = mt.name
        run(mt, records, folder, methods, args.generation_records,
            max_new_tokens=args.max_new_tokens, from_end=args.from_end)
    table = summarize_folder(folder, methods)
    computed = sum(r["seconds"]["total"] for m in methods
                   for r in read_jsonl(folder / f"{_file(m)}.jsonl"))
    computed += sum(r.get("seconds", 0.0) for r in read_jsonl(folder / "references.jsonl"))
    arguments = sys.argv[1:] if argv is None else argv
    arguments = [a for a in arguments if a not in ("--summarize-only", "--from-end")]
    done = min(row["records"] for row in table.values())
    summary = {"command": "python -m romelib.table4 " + " ".join(arguments),
               "summarized_only": args.summarize_only, "model": model_name,
               "records": args.records, "records_requested": len(records), "records_done": done,
               "complete": done == len(records) and len(table) == len(methods),
               "case_ids": [r["case_id"] for r in records],
               "generation_records": args.generation_records, "max_new_tokens": args.max_new_tokens,
               "this_session_seconds": round(time.perf_counter() - started, 1),
               "compute_seconds_all_sessions": round(computed, 1),
               "machine": f"{platform.machine()}, torch threads {torch.get_num_threads()}",
               "table": table, "comparisons": compare_folder(folder, methods)}
    (folder / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    text = markdown(table) + "\n\nPaired differences (bootstrap over records):\n\n" + \
        markdown_comparisons(summary["comparisons"])
    (folder / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
