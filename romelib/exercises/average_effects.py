"""Exercises of notebook 04 (average effects): position groups, grouped effects, a 95% interval.

Usage::

    romelib.exercises.check_group_positions(group_positions)
    romelib.exercises.check_grouped_effects(grouped_effects)
    romelib.exercises.check_mean_and_ci95(mean_and_ci95)
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..intervals import Z95, nan_mean_and_ci
from ..tracing.averages import POSITION_GROUPS, group_effects, position_groups
from .feedback import Mistake, call, compare, exercise, expect, number, tensor

GROUP_CASES = (((2, 4), 10), ((1, 2), 6), ((3, 7), 12), ((2, 5), 6), ((1, 5), 5))


def _group_hint(group: str, answer: list[int], subject_range, length: int) -> str:
    """Name the mistake behind a wrong group, where it is a typical one."""
    start, end = subject_range
    typical = {
        "last subject token": ([end], "the range's end is exclusive: the last subject token is end - 1."),
        "middle subject tokens": (list(range(start, end)), "the middle tokens exclude the first and the "
                                                          "last subject token."),
        "first subsequent token": ([end] if end >= length else None, "a subject that ends the prompt has "
                                                                    "no subsequent token: return []."),
        "further tokens": (list(range(end + 1, length)), "'further tokens' stops before the last token, "
                                                         "which has its own group."),
    }
    wrong, hint = typical.get(group, (None, ""))
    return hint if answer == wrong else ""


@exercise("group_positions")
def check_group_positions(group_positions, cases: Sequence = GROUP_CASES) -> str:
    """Check ``group_positions(subject_range, length) -> {group: positions}`` for the paper's six groups.

    Usage: ``romelib.exercises.check_group_positions(group_positions)``; compared with
    ``romelib.tracing.averages.position_groups`` on short and long subjects, also at the prompt's end.
    """
    for subject_range, length in cases:
        answer = call(group_positions, tuple(subject_range), length)
        expect(isinstance(answer, dict) and set(answer) == set(POSITION_GROUPS),
               f"return a dict with the six groups as keys: {list(POSITION_GROUPS)}.")
        for group, expected in position_groups(tuple(subject_range), length).items():
            try:
                got = [int(p) for p in answer[group]]
            except (TypeError, ValueError):
                raise Mistake(f"'{group}' should be a list of positions (ints).") from None
            if got != expected:
                hint = _group_hint(group, got, subject_range, length)
                raise Mistake(f"for the subject {tuple(subject_range)} in {length} tokens, '{group}' should be "
                              f"{expected}, you gave {got}. {hint}".strip())
    return "six groups, so facts of any length can be averaged"


def example_scores() -> tuple[torch.Tensor, float]:
    """Made-up scores of one fact: 10 positions x 5 layers, and its low score.

    Usage: ``scores, low = example_scores()``.
    """
    scores = 0.05 + 0.3 * torch.rand(10, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return scores, 0.04


@exercise("grouped_effects")
def check_grouped_effects(grouped_effects) -> str:
    """Check ``grouped_effects(scores, low_score, subject_range, length)`` -> (groups, layers).

    Usage: ``romelib.exercises.check_grouped_effects(grouped_effects)``; compared with
    ``romelib.tracing.averages.group_effects`` for a three-token and a one-token subject.
    """
    scores, low = example_scores()
    for subject_range in ((2, 5), (1, 2)):
        answer = tensor(call(grouped_effects, scores.clone(), low, subject_range, 10), "the grouped effects")
        expected = group_effects(scores, low, subject_range, 10)
        groups = position_groups(subject_range, 10).values()
        summed = torch.stack([scores[p].sum(0) - low * len(p) if p else torch.full((5,), math.nan)
                              for p in groups])
        compare(answer, expected, {
            "subtract the low score: an indirect effect is score - low_score.": expected + low,
            "average a group's positions, don't add them up.": summed,
            "an empty group has no value: use NaN, not 0 (a 0 would pull the average over facts down).":
                expected.nan_to_num(0.0),
            "rows are the groups and columns the layers: shape (6, layers).": expected.T,
        }, what=f"the grouped effects for the subject {subject_range}", atol=1e-6)
    return "one row per group, the middle row NaN for a one-token subject"


@exercise("mean_and_ci95")
def check_mean_and_ci95(mean_and_ci95) -> str:
    """Check ``mean_and_ci95(effects) -> (mean, half_width)`` over facts, NaN values left out.

    Usage: ``romelib.exercises.check_mean_and_ci95(mean_and_ci95)``; compared with
    ``romelib.intervals.nan_mean_and_ci`` (1.96 standard errors, sample standard deviation).
    """
    effects = torch.tensor([0.12, 0.30, math.nan, 0.05, 0.22, 0.18, 0.41, math.nan, 0.09, 0.15, 0.27, 0.02],
                           dtype=torch.float64)
    answer = call(mean_and_ci95, effects.clone())
    expect(isinstance(answer, (tuple, list)) and len(answer) == 2, "return a pair (mean, half_width).")
    mean, half = number(answer[0], "the mean"), number(answer[1], "the half-width")
    expect(not math.isnan(mean), "the mean is NaN: leave out the facts with no value (NaN), e.g. torch.nanmean.")
    expected_mean, expected_half, count = (float(x) for x in nan_mean_and_ci(effects))
    valid = effects[~effects.isnan()]
    compare(mean, expected_mean, {
        "divide by the number of facts with a value, not by all facts.": float(valid.sum() / effects.numel()),
    }, what="the mean")
    std, n = float(valid.std()), int(count)
    compare(half, expected_half, {
        "the half-width is NaN: compute the spread of the facts with a value only.": math.nan,
        "use the sample standard deviation (divide by n - 1), as for any estimate from a sample.":
            Z95 * float(valid.std(correction=0)) / math.sqrt(n),
        "divide the standard deviation by sqrt(n): the interval is for the mean, not for one fact.": Z95 * std,
        "divide by sqrt(n), not by n.": Z95 * std / n,
        "n is the number of facts with a value, not all facts.": Z95 * std / math.sqrt(effects.numel()),
        "a 95% interval is 1.96 standard errors wide on each side.": 2 * std / math.sqrt(n),
        "return the half-width (the interval is mean +- half-width), not the full width.":
            2 * Z95 * std / math.sqrt(n),
    }, what="the half-width")
    return f"{expected_mean:.3f} +- {expected_half:.3f} over {n} facts"
