"""Average indirect effects over many facts (the paper's Figure 2 and Figure 3).

Usage::

    from romelib.averages import trace_facts, average_effects, GROUPS
    records = trace_facts(mt, facts[:20], samples=10)        # with a progress bar
    averages = average_effects(records, "hidden")
    averages.mean[GROUPS.index("last subject token")]                # (layers,)

    python -m romelib.averages --source known_1000 --limit 200       # the full run

For every fact the model knows, the three kinds of trace are computed (and, at the last
subject token, the hidden-state restoration with the MLP or attention paths severed).
Positions are grouped as in the paper: first, middle and last subject token, first
subsequent token, further tokens, last token.  Within a group a fact counts once (the
mean of its positions); the indirect effect is ``score - low_score``; the 95% confidence
interval is ``1.96 * std / sqrt(n)`` over facts.  The full run writes one JSON line per
fact (so it resumes where it stopped) and a summary next to it.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from .corruption import Corruption, make_corruption
from .data import PROJECT_DATA, Fact, facts_known_by, load_facts
from .tokens import find_subject_range
from .tracing import KINDS, trace

log = logging.getLogger(__name__)

GROUPS = ("first subject token", "middle subject tokens", "last subject token",
          "first subsequent token", "further tokens", "last token")
SEVERED = ("none", "mlp", "attn")
RESULTS_DIR = PROJECT_DATA / "tracing"

# The paper's headline numbers for GPT-2 XL (48 layers), 1000 known facts, 3-sigma noise,
# window 10: Meng et al. 2022, section 2.1 ("Causal tracing results") and Figure 2.
PAPER_GPT2_XL = {
    "total effect": 0.186,                                   # average total effect
    "hidden, last subject token": (0.087, 15),               # best AIE and its layer
    "mlp, last subject token": 0.066,                        # best AIE of the MLP windows
    "attn, last subject token": 0.016,                       # best AIE of the attention windows
    "layers": 48,
}


def position_groups(subject_range: tuple[int, int], length: int) -> dict[str, list[int]]:
    """Positions of each group; a group may be empty (one-token subject: no middle).

    Usage: ``position_groups((2, 4), 10)["last subject token"]`` -> ``[3]``.
    """
    start, end = subject_range
    last = length - 1
    return {"first subject token": [start],
            "middle subject tokens": list(range(start + 1, end - 1)),
            "last subject token": [end - 1],
            "first subsequent token": [end] if end <= last else [],
            "further tokens": list(range(end + 1, last)),
            "last token": [last]}


def group_effects(scores, low_score: float, subject_range, length: int) -> torch.Tensor:
    """Indirect effects averaged within each group: (groups, layers), NaN for empty groups.

    Usage: ``group_effects(result.scores, result.low_score, result.subject_range, 10)``.
    """
    scores = torch.as_tensor(scores, dtype=torch.float64)
    rows = []
    for positions in position_groups(tuple(subject_range), length).values():
        rows.append(scores[positions].mean(0) - low_score if positions
                    else torch.full((scores.shape[1],), math.nan, dtype=torch.float64))
    return torch.stack(rows)


@dataclass
class AverageEffects:
    """Mean indirect effect per (group, layer) over facts, with 95% CI half-widths.

    Usage: ``averages.mean``, ``averages.ci``, ``averages.headline()``.
    """

    kind: str
    mean: torch.Tensor          # (groups, layers)
    ci: torch.Tensor            # (groups, layers), 1.96 standard errors
    counts: list[int]           # facts contributing to each group
    low_score: float            # mean corrupted probability
    high_score: float           # mean clean probability
    facts: int

    def row(self, group: str) -> torch.Tensor:
        return self.mean[GROUPS.index(group)]

    def headline(self) -> dict:
        """The paper's summary numbers: total effect and the best AIE at the two sites.

        Usage: ``averages.headline()["last subject token"]`` -> ``(best AIE, its layer)``.
        """
        out = {"facts": self.facts, "total effect": self.high_score - self.low_score}
        for group in ("last subject token", "last token"):
            row = self.row(group)
            out[group] = (float(row.max()), int(row.argmax()))
        return out


def _mean_ci(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Mean and 95% CI over the first axis, ignoring NaN. values: (facts, groups, layers)."""
    valid = ~torch.isnan(values)
    counts = valid.sum(0)
    filled = torch.where(valid, values, torch.zeros_like(values))
    mean = filled.sum(0) / counts.clamp(min=1)
    spread = torch.where(valid, values - mean, torch.zeros_like(values)).pow(2).sum(0)
    std = (spread / (counts - 1).clamp(min=1)).sqrt()
    ci = 1.96 * std / counts.clamp(min=1).sqrt()
    mean[counts == 0] = math.nan
    return mean, ci, counts[:, 0].tolist() if counts.dim() == 2 else counts.tolist()


def average_effects(records: list[dict], kind: str) -> AverageEffects:
    """Average one kind over fact records written by :func:`trace_facts`.

    Usage: ``average_effects(records, "mlp")``.
    """
    if not records:
        raise ValueError("No fact records to average; run trace_facts first.")
    effects = torch.stack([group_effects(r[kind]["scores"], r["low_score"], r["subject_range"],
                                         r["length"]) for r in records])
    mean, ci, counts = _mean_ci(effects)
    return AverageEffects(kind, mean.float(), ci.float(), counts,
                          sum(r["low_score"] for r in records) / len(records),
                          sum(r["high_score"] for r in records) / len(records), len(records))


def severed_effects(records: list[dict]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Figure 3: AIE of restoring the last subject token's state, per layer, for each severing.

    Usage: ``severed_effects(records)["mlp"]`` -> ``(mean (layers,), ci (layers,))``.
    """
    out = {}
    for sever in SEVERED:
        values = torch.tensor([r["severed"][sever] for r in records], dtype=torch.float64)
        values -= torch.tensor([r["low_score"] for r in records], dtype=torch.float64)[:, None]
        mean, ci, _ = _mean_ci(values[:, None])
        out[sever] = (mean[0].float(), ci[0].float())
    return out


def trace_fact(mt, fact: Fact, corruption: Corruption, samples: int = 10, window: int = 10,
               seed: int = 0, kinds=KINDS, severed: bool = True) -> dict:
    """All traces of one fact as a JSON-ready record (scores rounded to 6 decimals).

    Usage: ``record = trace_fact(mt, fact, make_corruption(mt))``; ``kinds=()`` with
    ``severed=True`` computes only Figure 3's rows (the last subject token).
    """
    record: dict = {"fact": fact.to_dict()}
    options = dict(corruption=corruption, samples=samples, window=window, seed=seed)

    def keep(result):
        record.update(low_score=result.low_score, high_score=result.high_score,
                      subject_range=list(result.subject_range), length=len(result.tokens),
                      target=result.target, tokens=result.tokens)
        return [[round(x, 6) for x in row] for row in result.scores.tolist()]

    for kind in kinds:
        record[kind] = {"scores": keep(trace(mt, fact.prompt, fact.subject, kind, **options))}
    if severed:
        last = find_subject_range(mt, fact.prompt, fact.subject)[1] - 1
        record["severed"] = {}
        for sever in SEVERED:
            if sever == "none" and "hidden" in kinds:
                record["severed"]["none"] = record["hidden"]["scores"][last]
                continue
            result = trace(mt, fact.prompt, fact.subject, "hidden", positions=[last],
                           sever=None if sever == "none" else sever, **options)
            record["severed"][sever] = keep(result)[last]
    return record


def trace_facts(mt, facts: list[Fact], corruption: Corruption | None = None, samples: int = 10,
                window: int = 10, seed: int = 0, kinds=KINDS, severed: bool = True,
                path: str | Path | None = None, progress: bool = True) -> list[dict]:
    """Trace many facts; with ``path``, append one JSON line per fact and skip those done.

    Usage: ``records = trace_facts(mt, facts, samples=10, path="run.jsonl")``.
    """
    from tqdm.auto import tqdm

    corruption = corruption or make_corruption(mt)
    done = read_records(path) if path and Path(path).is_file() else []
    finished = {(r["fact"]["prompt"], r["fact"]["subject"]): r for r in done}
    todo = [f for f in facts if (f.prompt, f.subject) not in finished]
    for fact in tqdm(todo, desc="tracing facts", disable=not progress):
        record = trace_fact(mt, fact, corruption, samples, window, seed, kinds, severed)
        finished[(fact.prompt, fact.subject)] = record
        if path:
            with open(path, "a") as handle:
                handle.write(json.dumps(record) + "\n")
    return [finished[(f.prompt, f.subject)] for f in facts]


def read_records(path: str | Path) -> list[dict]:
    """Usage: ``records = read_records("data/tracing/gemma-3-270m_known_1000.jsonl")``."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def summarize(records: list[dict], settings: dict) -> dict:
    """The saved summary: per kind, mean and CI tables, headline numbers; and Figure 3.

    Usage: ``json.dump(summarize(records, settings), open("summary.json", "w"))``.
    """
    summary = {"settings": settings, "groups": list(GROUPS), "kinds": {}}
    for kind in KINDS:
        if all(kind in r for r in records):
            averages = average_effects(records, kind)
            summary["kinds"][kind] = {
                "mean": averages.mean.tolist(), "ci": averages.ci.tolist(),
                "counts": averages.counts, "low_score": averages.low_score,
                "high_score": averages.high_score, "facts": averages.facts,
                "headline": averages.headline()}
    if all("severed" in r and len(r["severed"]) == len(SEVERED) for r in records):
        summary["severed"] = {k: {"mean": m.tolist(), "ci": c.tolist()}
                              for k, (m, c) in severed_effects(records).items()}
    return summary


def load_summary(name: str = "gemma-3-270m_known_1000") -> dict:
    """The saved full-run summary (``data/tracing/<name>_summary.json``).

    Usage: ``summary = load_summary(); summary["kinds"]["hidden"]["headline"]``.
    """
    path = RESULTS_DIR / f"{name}_summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"No saved tracing summary at {path}; regenerate it with the "
                                f"command in {RESULTS_DIR / 'README.md'}.")
    return json.loads(path.read_text())


def averages_from_summary(summary: dict, kind: str) -> AverageEffects:
    """Usage: ``averages_from_summary(load_summary(), "hidden")``."""
    entry = summary["kinds"][kind]
    return AverageEffects(kind, torch.tensor(entry["mean"]), torch.tensor(entry["ci"]),
                          entry["counts"], entry["low_score"], entry["high_score"], entry["facts"])


def main(argv=None) -> None:
    """``python -m romelib.averages --source known_1000 --limit 200``: the resumable full run."""
    parser = argparse.ArgumentParser(description="Average causal-tracing effects over known facts.")
    parser.add_argument("--source", default="known_1000", help="'known_1000', 'project' or a JSON file")
    parser.add_argument("--limit", type=int, default=None,
                        help="trace a seeded random sample of this many known facts")
    parser.add_argument("--model", default=None, help="romelib.load_model name (default model)")
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--noise", type=float, default=3.0)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None, help="output .jsonl (default data/tracing/<model>_<source>.jsonl)")
    parser.add_argument("--summarize-only", action="store_true",
                        help="only rewrite the summary from the facts traced so far in --out")
    args = parser.parse_args(argv)
    from .models import load_model

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.summarize_only:
        return _summarize_file(Path(args.out or RESULTS_DIR / f"{args.model or 'gemma-3-270m'}_{args.source}.jsonl"))
    mt = load_model(args.model)
    source_name = Path(args.source).stem if args.source not in ("known_1000", "project") else args.source
    out = Path(args.out or RESULTS_DIR / f"{mt.name}_{source_name}.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    facts = load_facts(args.source)
    known = facts_known_by(mt, facts)
    log.info("%s knows %d of %d facts from %s", mt.name, len(known), len(facts), args.source)
    facts_known = len(known)
    if args.limit and args.limit < len(known):   # a seeded sample, kept in file order
        chosen = sorted(random.Random(args.seed).sample(range(len(known)), args.limit))
        known = [known[i] for i in chosen]
    corruption = make_corruption(mt, "gaussian", args.noise)
    settings = {"model": mt.name, "source": args.source, "facts_total": len(facts),
                "facts_known": facts_known, "facts_selected": len(known),
                "samples": args.samples, "noise": args.noise, "sigma": corruption.sigma,
                "window": args.window, "seed": args.seed, "corruption": corruption.describe(),
                "command": "python -m romelib.averages " + " ".join(argv or sys.argv[1:])}
    _check_resumable(out, settings)
    out.with_name(out.stem + "_settings.json").write_text(json.dumps(settings, indent=1))
    trace_facts(mt, known, corruption, args.samples, args.window, args.seed, path=out)
    _summarize_file(out)


def _check_resumable(out: Path, settings: dict) -> None:
    """Refuse to append to a run made with other settings (the averages would mix them)."""
    if not out.is_file() or not out.read_text().strip():
        return
    previous_path = out.with_name(out.stem + "_settings.json")
    previous = json.loads(previous_path.read_text()) if previous_path.is_file() else {}
    keys = ("model", "source", "samples", "noise", "window", "seed", "facts_selected")
    changed = [k for k in keys if previous.get(k) != settings[k]]
    if not math.isclose(previous.get("sigma", math.nan), settings["sigma"], rel_tol=1e-9):
        changed.append("sigma")
    if changed:
        raise SystemExit(f"{out} holds facts traced with other settings ({', '.join(changed)}); "
                         "pass another --out, or delete it (and its _settings.json) to start over.")


def _summarize_file(out: Path) -> None:
    """Write ``<out>_summary.json`` from the records in ``out`` and ``<out>_settings.json``."""
    records = read_records(out)
    settings = json.loads(out.with_name(out.stem + "_settings.json").read_text())
    settings["facts_traced"] = len(records)
    summary_path = out.with_name(out.stem + "_summary.json")
    summary_path.write_text(json.dumps(summarize(records, settings), indent=1))
    log.info("wrote %s from %d facts in %s", summary_path, len(records), out)


if __name__ == "__main__":
    main()
