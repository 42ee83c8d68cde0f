"""CounterFact metrics for edited models, as in the paper's Table 4 and ROME's code.

Usage::

    records = romelib.load_counterfact(n=20)
    result = romelib.evaluate_counterfact(mt, records, method="rome")
    result.summary["S"]           # (mean, 95% CI half-width), in percent
    result.table_row()            # {"S": 89.2, "ES": 100.0, ...}

For each record the model is edited, measured and restored (bit-identical). Per record
(Meng et al. 2022, Section 3.3; ROME's ``experiments/summarize.py``):

- ES, EM: on the rewrite prompt, [P(new) > P(true)] and P(new) - P(true);
- PS, PM: the same averaged over the paraphrase prompts;
- NS, NM: on the neighbourhood prompts, [P(true) > P(new)] and P(true) - P(new);
- GE, RS: fluency and consistency of sampled generations (:mod:`romelib.evaluation.fluency`).

As in ROME's code, P(target) is the geometric mean of the target's token
probabilities (exp of the mean token log-probability), so targets of different token
lengths compare fairly; ``length_normalized=False`` uses the product instead.  Table
values are means over records x100 with 95% confidence half-widths (1.96 standard
errors); the Score S is the harmonic mean of ES, PS and NS, its interval from a
bootstrap over records.
"""
from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from ..core.checks import check_int
from ..core.generation import generate
from ..datasets.counterfact import rewrite_prompt, targets, validate_record
from ..editing.handle import METHODS, edit
from ..intervals import bootstrap, mean_and_ci, paired_bootstrap
from .fluency import default_tfidf, ngram_entropy, reference_texts
from .scoring import score_targets

PROMPT_GROUPS = ("rewrite", "paraphrase", "neighborhood", "attribute")
METRICS = ("S", "ES", "EM", "PS", "PM", "NS", "NM", "GE", "RS")


def record_prompts(record: dict) -> dict[str, list[str]]:
    """Usage: ``record_prompts(record)["paraphrase"]`` -> the prompts of each metric group."""
    return {"rewrite": [rewrite_prompt(record)], "paraphrase": list(record["paraphrase_prompts"]),
            "neighborhood": list(record["neighborhood_prompts"]),
            "attribute": list(record["attribute_prompts"])}


def score_record(mt, record: dict) -> dict[str, dict[str, list[list[float]]]]:
    """Token log-probs of target_new and target_true after every prompt of a record, in one batch.

    Usage: ``score_record(mt, record)["neighborhood"]["true"][3]`` -> ``[-0.2, -1.3]``.
    """
    validate_record(record)
    groups = record_prompts(record)
    new, true = targets(record)
    prompts = [p for group in PROMPT_GROUPS for p in groups[group] for _ in (0, 1)]
    answers = [t for group in PROMPT_GROUPS for _ in groups[group] for t in (new, true)]
    flat = score_targets(mt, prompts, answers)
    scores, offset = {}, 0
    for group in PROMPT_GROUPS:
        n = len(groups[group])
        chunk = flat[offset:offset + 2 * n]
        scores[group] = {"new": chunk[0::2], "true": chunk[1::2]}
        offset += 2 * n
    return scores


def _probability(token_log_probs: list[float], length_normalized: bool) -> float:
    total = sum(token_log_probs)
    return math.exp(total / len(token_log_probs) if length_normalized else total)


def record_metrics(scores: dict, length_normalized: bool = True) -> dict[str, float]:
    """Per-record ES, EM, PS, PM, NS, NM (fractions, not percent) from ``score_record``'s output.

    Usage: ``record_metrics(score_record(mt, record))["PS"]`` -> ``0.5``.
    """
    if not isinstance(scores, dict) or any(g not in scores for g in ("rewrite", "paraphrase", "neighborhood")):
        raise ValueError("scores must be score_record(mt, record)'s output: a dict with 'rewrite', "
                         f"'paraphrase' and 'neighborhood', got {repr(scores)[:80]}.")
    metrics = {}
    for group, (success, magnitude), sign in (("rewrite", ("ES", "EM"), 1),
                                               ("paraphrase", ("PS", "PM"), 1),
                                               ("neighborhood", ("NS", "NM"), -1)):
        new = [_probability(lp, length_normalized) for lp in scores[group]["new"]]
        true = [_probability(lp, length_normalized) for lp in scores[group]["true"]]
        differences = [sign * (n - t) for n, t in zip(new, true)]
        metrics[success] = float(np.mean([d > 0 for d in differences]))
        metrics[magnitude] = float(np.mean(differences))
    return metrics


def rewrite_score(p_before: float, p_after: float) -> float:
    """Hase et al.'s rewrite score: the share of the missing probability the edit added.

    Usage: ``rewrite_score(0.1, 0.82)`` -> ``0.8``; 1 is a perfect edit, 0 no change.
    """
    return (p_after - p_before) / (1.0 - p_before) if p_before < 1 else 0.0


def harmonic_mean(values: Sequence[float]) -> float:
    """Usage: ``harmonic_mean([22.2, 24.7, 78.1])`` -> ``30.5`` (0 if any value is 0)."""
    values = list(values)
    if any(v < 0 for v in values):
        raise ValueError(f"The harmonic mean needs non-negative values, got {values}.")
    return 0.0 if min(values) == 0 else len(values) / sum(1 / v for v in values)


def score_and_ci(per_record: Sequence[dict], samples: int = 1000,
                 seed: int = 0) -> tuple[float, float]:
    """Score S = harmonic mean of ES, PS, NS (percent) and the half-width of its 95% bootstrap interval.

    Usage: ``score_and_ci([{"ES": 1, "PS": .5, "NS": .8}, ...])`` -> ``(71.6, 6.3)``.
    """
    table = np.array([[m["ES"], m["PS"], m["NS"]] for m in per_record], dtype=float) * 100
    score, low, high = bootstrap(len(table), lambda idx: harmonic_mean(table[idx].mean(0)),
                                 samples, seed)
    return score, (high - low) / 2


def paired_difference(first: Sequence[dict], second: Sequence[dict], metric: str = "S",
                      samples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """``metric`` of ``first`` minus that of ``second`` on the same records, with a 95% interval.

    Usage: ``paired_difference(rome_metrics, ftl_metrics, "S")`` -> ``(6.0, 1.2, 10.9)``
    (difference, low, high, in points).  The two lists hold the per-record metrics of two
    methods *in the same record order*; the records are resampled together (a paired
    bootstrap, :func:`romelib.intervals.paired_bootstrap`).  ``metric="S"`` compares
    Scores (harmonic means of the ES, PS and NS means); any other metric compares means.
    """
    samples = check_int("samples", samples, minimum=10)
    seed = check_int("seed", seed, minimum=0)
    known = ("S", *(k for k in first[0] if k != "S")) if first and isinstance(first[0], dict) else ("S",)
    if metric not in known:
        raise ValueError(f"metric must be one of {', '.join(known)}, got {metric!r}.")
    if len(first) != len(second) or not first:
        raise ValueError(f"Paired comparison needs the same records for both methods, got "
                         f"{len(first)} and {len(second)}; align them by case_id first.")
    columns = ("ES", "PS", "NS") if metric == "S" else (metric,)
    a = np.array([[m[c] for c in columns] for m in first], dtype=float) * 100
    b = np.array([[m[c] for c in columns] for m in second], dtype=float) * 100
    statistic = ((lambda t: harmonic_mean(t.mean(0))) if metric == "S"
                 else (lambda t: float(t.mean())))
    return paired_bootstrap(a, b, statistic, samples, seed)


def summarize(per_record: Sequence[dict]) -> dict[str, tuple[float, float]]:
    """Table values (mean, 95% CI half-width) in percent from per-record metrics.

    Usage: ``summarize([r["metrics"] for r in result.records])["NS"]``.
    """
    if not per_record:
        raise ValueError("No records to summarize.")
    summary = {"S": score_and_ci(per_record)}
    for name in METRICS[1:]:
        values = [m[name] for m in per_record if m.get(name) is not None]
        if values:
            summary[name] = mean_and_ci(values)
    return summary


@dataclass
class EvaluationResult:
    """Per-record measurements of one method and the table row they add up to.

    Usage: ``result.table_row()`` -> ``{"S": 89.2, "ES": 100.0, ...}``; ``result.records[0]``.
    """

    method: str
    records: list[dict]
    summary: dict[str, tuple[float, float]] = field(default_factory=dict)

    def table_row(self, digits: int = 1) -> dict[str, float]:
        return {k: round(v[0], digits) for k, v in self.summary.items()}


def evaluate_record(mt, record: dict, method: str | None = "rome", hparams=None,
                    generation: bool = False, references: list[str] | None = None,
                    tfidf=None, generation_settings: dict | None = None,
                    length_normalized: bool = True) -> dict:
    """Edit the model for one record, measure everything, restore the weights.

    Usage: ``evaluate_record(mt, record, method="ft")["metrics"]["ES"]``; ``method=None``
    measures the unedited model.  With ``generation=True``, ``references`` (the
    reference texts, made with the *unedited* model) are computed first when not given.
    """
    validate_record(record)
    if method not in (None, "none", *METHODS):
        raise ValueError(f"method must be None, 'none' or one of {tuple(METHODS)}, got {method!r}.")
    settings = {"max_new_tokens": 50, "reference_tokens": 40, **(generation_settings or {})}
    if generation and references is None:
        references = reference_texts(mt, record, settings["reference_tokens"], seed=record["case_id"])
    if generation and tfidf is None:
        tfidf = default_tfidf(record["attribute_prompts"])
    started = time.perf_counter()
    handle, info, texts = None, {}, None
    if method not in (None, "none"):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The model already continues")
            handle = edit(mt, record["requested_rewrite"], method=method, hparams=hparams)
        info = {k: v for k, v in handle.info.items() if isinstance(v, (int, float, str, bool))}
    edit_seconds = time.perf_counter() - started
    try:
        scores = score_record(mt, record)
        metrics = record_metrics(scores, length_normalized)
        if generation:
            texts, fluency_metrics = _generation_metrics(mt, record, references, tfidf,
                                                         settings["max_new_tokens"])
            metrics.update(fluency_metrics)
    finally:
        if handle is not None:
            handle.restore()
    return {"case_id": record["case_id"], "method": method or "none", "metrics": metrics,
            "log_probs": scores, "generations": texts, "references": references, "edit_info": info,
            "seconds": {"edit": edit_seconds, "total": time.perf_counter() - started}}


def _generation_metrics(mt, record, references, tfidf, max_new_tokens):
    """Sample one text per generation prompt (all of them, repeats too, as ROME); GE and RS."""
    texts = generate(mt, record["generation_prompts"], max_new_tokens, top_k=5,
                     seed=record["case_id"])
    return texts, {"GE": ngram_entropy(texts),
                   "RS": tfidf.similarity(" ".join(texts), " ".join(references))}


GENERATION_SETTINGS = ("max_new_tokens", "reference_tokens")   # **settings of evaluate_counterfact


def evaluate_counterfact(mt, records: Sequence[dict], method: str | None = "rome", hparams=None,
                         generation: bool = False, progress: bool = True,
                         length_normalized: bool = True, **settings) -> EvaluationResult:
    """Evaluate one editing method on CounterFact records; each edit is undone before the next.

    Usage: ``evaluate_counterfact(mt, records, method="ft+l").summary`` or ``method=None``
    for the unedited model.  ``generation=True`` adds fluency (GE) and consistency (RS),
    which cost most of the time on a CPU.
    """
    unknown = sorted(set(settings) - set(GENERATION_SETTINGS))
    if unknown:
        raise TypeError(f"evaluate_counterfact got unknown settings {unknown}; the generation settings are "
                        f"{', '.join(GENERATION_SETTINGS)}.")
    for name, value in settings.items():
        check_int(name, value, minimum=1)
    if not isinstance(records, (list, tuple)) or not records:
        shown = repr(records)[:80]
        raise ValueError(f"records must be a non-empty list of CounterFact records, got {shown}.")
    tfidf = None
    if generation:
        tfidf = default_tfidf([p for r in records for p in r["attribute_prompts"]])
    per_record = [evaluate_record(mt, record, method, hparams, generation, tfidf=tfidf,
                                  length_normalized=length_normalized, generation_settings=settings)
                  for record in tqdm(records, desc=f"{method or 'unedited'}", disable=not progress)]
    return EvaluationResult(method or "none", per_record, summarize([r["metrics"] for r in per_record]))
