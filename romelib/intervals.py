"""Confidence intervals: the one home of every interval the collection reports.

Usage::

    mean_and_ci([1, 0, 1, 1])                       # (75.0, 49.0): mean, 95% half-width, x100
    mean, ci, counts = nan_mean_and_ci(values)      # over facts (first axis), NaN ignored
    value, low, high = bootstrap(len(rows), lambda idx: statistic(rows[idx]))
    diff, low, high = paired_bootstrap(a, b, harmonic_mean_of_columns)

Two kinds are used.  A mean of independent values gets the normal interval
``mean +- 1.96 * std / sqrt(n)`` (the paper's Figure 2 and Table 4 bands).  A statistic
that is not a mean (the Score, a harmonic mean of means; a correlation) gets a
percentile bootstrap: resample the units (records, facts) with replacement, recompute,
and take the 2.5th and 97.5th percentiles.  Comparing two methods on the same records
resamples the records *together* (a paired bootstrap), which is tighter than two
separate intervals because each record's difficulty cancels.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

Z95 = 1.96


def mean_and_ci(values: Sequence[float], scale: float = 100.0) -> tuple[float, float]:
    """Mean and 95% half-width (1.96 standard errors), both times ``scale``; NaN half-width for n = 1.

    Usage: ``mean_and_ci([1, 0, 1, 1])`` -> ``(75.0, 49.0)``.
    """
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return float("nan"), float("nan")
    half = Z95 * values.std(ddof=1) / math.sqrt(values.size) if values.size > 1 else float("nan")
    return float(values.mean() * scale), float(half * scale)


def nan_mean_and_ci(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, 95% half-width and count over the first axis, ignoring NaN entries.

    Usage: ``mean, ci, counts = nan_mean_and_ci(effects)`` with ``effects`` (facts, groups,
    layers) -> each (groups, layers).  Entries with no value are NaN in ``mean``; with one
    value the half-width is 0.
    """
    valid = ~torch.isnan(values)
    counts = valid.sum(0)
    filled = torch.where(valid, values, torch.zeros_like(values))
    mean = filled.sum(0) / counts.clamp(min=1)
    spread = torch.where(valid, values - mean, torch.zeros_like(values)).pow(2).sum(0)
    std = (spread / (counts - 1).clamp(min=1)).sqrt()
    ci = Z95 * std / counts.clamp(min=1).sqrt()
    mean = mean.masked_fill(counts == 0, math.nan)
    return mean, ci, counts


def percentile_interval(draws: np.ndarray) -> tuple[float, float]:
    """2.5th and 97.5th percentiles of bootstrap draws, NaN draws left out (NaN if none remain)."""
    draws = np.asarray(draws, dtype=float)
    draws = draws[~np.isnan(draws)]
    if draws.size == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(draws, [2.5, 97.5])
    return float(low), float(high)


def bootstrap_draws(units: int, statistic: Callable[[np.ndarray], float | Sequence[float]],
                    samples: int = 1000, seed: int = 0) -> np.ndarray:
    """``statistic(indices)`` on ``samples`` resamples of ``units`` indices drawn with replacement.

    Usage: ``draws = bootstrap_draws(len(rows), lambda idx: rows[idx].mean())``; shape
    (samples,) or (samples, k) when the statistic returns k values.
    """
    if units < 1 or samples < 1:
        raise ValueError(f"bootstrap needs at least one unit and one sample, got units={units}, "
                         f"samples={samples}.")
    rng = np.random.default_rng(seed)
    return np.array([statistic(rng.integers(0, units, units)) for _ in range(samples)], dtype=float)


def bootstrap(units: int, statistic: Callable[[np.ndarray], float], samples: int = 1000,
              seed: int = 0) -> tuple[float, float, float]:
    """The statistic on all units and its 95% percentile-bootstrap interval: ``(value, low, high)``.

    Usage: ``bootstrap(len(table), lambda idx: harmonic_mean(table[idx].mean(0)))``.
    """
    value = float(statistic(np.arange(units)))
    if units < 2:
        return value, float("nan"), float("nan")
    low, high = percentile_interval(bootstrap_draws(units, statistic, samples, seed))
    return value, low, high


def paired_bootstrap(first: np.ndarray, second: np.ndarray,
                     statistic: Callable[[np.ndarray], float], samples: int = 2000,
                     seed: int = 0) -> tuple[float, float, float]:
    """``statistic(first) - statistic(second)`` with rows resampled together: ``(difference, low, high)``.

    Usage: ``paired_bootstrap(rome_table, ftl_table, lambda t: t.mean())``; row ``i`` of
    both arrays must belong to the same unit (record).
    """
    first, second = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    if first.shape[0] != second.shape[0] or first.shape[0] == 0:
        raise ValueError(f"A paired comparison needs the same units for both, got {first.shape[0]} "
                         f"and {second.shape[0]} rows; align them (by case_id) first.")
    return bootstrap(first.shape[0], lambda idx: statistic(first[idx]) - statistic(second[idx]),
                     samples, seed)
