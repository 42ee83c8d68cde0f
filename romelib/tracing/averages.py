"""Average indirect effects over many facts (the paper's Figure 2 and Figure 3).

Usage::

    records = trace_facts(mt, facts[:20], samples=10)        # with a progress bar
    averages = average_effects(records, "hidden")
    averages.row("last subject token")                        # (layers,)

    python -m romelib.experiments.averages --source known_1000 --limit 150   # the full run

For every fact the model knows, the three kinds of trace are computed (and, at the last
subject token, the hidden-state restoration with the MLP or attention paths severed).
Positions are grouped as in the paper: first, middle and last subject token, first
subsequent token, further tokens, last token.  Within a group a fact counts once (the
mean of its positions); the indirect effect is ``score - low_score``; the 95% confidence
interval is ``1.96 * std / sqrt(n)`` over facts.  The full run writes one JSON line per
fact (so it resumes where it stopped) and a summary next to it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..core.tokens import find_subject_range
from ..datasets.facts import Fact
from ..intervals import nan_mean_and_ci
from ..results import append_jsonl, read_jsonl
from .corruption import Corruption, make_corruption
from .trace import KINDS, trace

POSITION_GROUPS = ("first subject token", "middle subject tokens", "last subject token",
                   "first subsequent token", "further tokens", "last token")
SEVERED = ("none", "mlp", "attn")

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
        return self.mean[POSITION_GROUPS.index(group)]

    def headline(self) -> dict:
        """The paper's summary numbers: total effect and the best AIE at the two sites.

        Usage: ``averages.headline()["last subject token"]`` -> ``(best AIE, its layer)``.
        """
        out = {"facts": self.facts, "total effect": self.high_score - self.low_score}
        for group in ("last subject token", "last token"):
            row = self.row(group)
            out[group] = (float(row.max()), int(row.argmax()))
        return out


def critical_layers(effects: torch.Tensor, fraction: float = 0.8) -> list[int]:
    """The contiguous layers around the peak of ``effects`` (one value per layer) that reach at
    least ``fraction`` of the peak: MEMIT's "critical path" of MLP layers.

    Usage: ``critical_layers(average_effects(records, "mlp").row("last subject token"))``
    -> ``[2, 3, 4, 5, 6]``.
    """
    values = [float(v) for v in effects]
    if not values or not all(math.isfinite(v) for v in values):
        raise ValueError(f"effects must be finite numbers, one per layer; got {values!r}.")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}.")
    peak = max(range(len(values)), key=values.__getitem__)
    if values[peak] <= 0:
        raise ValueError("effects has no positive peak: no layer restores the fact.")
    low = high = peak
    while low > 0 and values[low - 1] >= fraction * values[peak]:
        low -= 1
    while high < len(values) - 1 and values[high + 1] >= fraction * values[peak]:
        high += 1
    return list(range(low, high + 1))


def average_effects(records: list[dict], kind: str) -> AverageEffects:
    """Average one kind over fact records written by :func:`trace_facts`.

    Usage: ``average_effects(records, "mlp")``.
    """
    if not records:
        raise ValueError("No fact records to average; run trace_facts first.")
    effects = torch.stack([group_effects(r[kind]["scores"], r["low_score"], r["subject_range"],
                                         r["length"]) for r in records])
    mean, ci, counts = nan_mean_and_ci(effects)
    return AverageEffects(kind, mean.float(), ci.float(), counts[:, 0].tolist(),
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
        mean, ci, _ = nan_mean_and_ci(values)
        out[sever] = (mean.float(), ci.float())
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
        record[kind] = {"scores": keep(trace(mt, fact.prompt, fact.subject, kind=kind, **options))}
    if severed:
        last = find_subject_range(mt, fact.prompt, fact.subject)[1] - 1
        record["severed"] = {}
        for sever in SEVERED:
            if sever == "none" and "hidden" in kinds:
                record["severed"]["none"] = record["hidden"]["scores"][last]
                continue
            result = trace(mt, fact.prompt, fact.subject, kind="hidden", positions=[last],
                           sever=None if sever == "none" else sever, **options)
            record["severed"][sever] = keep(result)[last]
    return record


def fact_key(record: dict) -> tuple[str, str]:
    """Usage: ``fact_key(record)`` -> ``(prompt, subject)``: what identifies a traced fact."""
    return record["fact"]["prompt"], record["fact"]["subject"]


def trace_facts(mt, facts: list[Fact], corruption: Corruption | None = None, samples: int = 10,
                window: int = 10, seed: int = 0, kinds=KINDS, severed: bool = True,
                path: str | Path | None = None, progress: bool = True) -> list[dict]:
    """Trace many facts; with ``path``, append one JSON line per fact and skip those saved.

    Usage: ``records = trace_facts(mt, facts, samples=10, path="run.jsonl")``; several
    processes may share ``path`` (each line is written whole, under a lock).
    """
    corruption = corruption or make_corruption(mt)
    done = read_jsonl(path, key=fact_key, repair=True) if path else []
    finished = {fact_key(r): r for r in done}
    todo = [f for f in facts if (f.prompt, f.subject) not in finished]
    for fact in tqdm(todo, desc="tracing facts", disable=not progress):
        if path:                                  # another process may have saved it meanwhile
            finished.update({fact_key(r): r for r in read_jsonl(path, key=fact_key)})
            if (fact.prompt, fact.subject) in finished:
                continue
        record = trace_fact(mt, fact, corruption, samples, window, seed, kinds, severed)
        finished[(fact.prompt, fact.subject)] = record
        if path:
            append_jsonl(path, record)
    return [finished[(f.prompt, f.subject)] for f in facts]


def summarize(records: list[dict], settings: dict) -> dict:
    """The saved summary: per kind, mean and CI tables, headline numbers; and Figure 3.

    Usage: ``write_json(folder / "summary.json", summarize(records, settings))`` (``romelib.results``).
    """
    summary = {"settings": settings, "groups": list(POSITION_GROUPS), "kinds": {}}
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


def averages_from_summary(summary: dict, kind: str) -> AverageEffects:
    """Usage: ``averages_from_summary(load_summary(), "hidden")``."""
    entry = summary["kinds"][kind]
    return AverageEffects(kind, torch.tensor(entry["mean"]), torch.tensor(entry["ci"]),
                          entry["counts"], entry["low_score"], entry["high_score"], entry["facts"])


