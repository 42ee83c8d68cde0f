"""Exercises of notebook 10 (where to edit): the rewrite score of Hase et al., a correlation.

Usage::

    romelib.exercises.check_rewrite_score(rewrite_score)
    romelib.exercises.check_pearson_r(pearson_r)
"""
from __future__ import annotations

import numpy as np

from ..evaluation.metrics import rewrite_score as reference_rewrite_score
from .feedback import Mistake, call, compare, exercise, number

REWRITE_CASES = ((0.1, 0.82), (0.5, 0.4), (0.0, 0.3), (0.02, 0.99))


@exercise("rewrite_score")
def check_rewrite_score(rewrite_score) -> str:
    """Check ``rewrite_score(p_before, p_after)``: the share of the missing probability the edit added.

    Usage: ``romelib.exercises.check_rewrite_score(rewrite_score)``; compared with
    ``romelib.evaluation.metrics.rewrite_score``, also for an edit that lowers the probability
    and for ``p_before = 1``.
    """
    for before, after in REWRITE_CASES:
        answer = number(call(rewrite_score, before, after), f"rewrite_score({before}, {after})")
        compare(answer, reference_rewrite_score(before, after), {
            "normalise the gain by the room there was to gain, 1 - p_before.": after - before,
            "divide by 1 - p_before (the probability that was missing), not by p_before.":
                (after - before) / before if before else None,
            "wrong sign: the score is (p_after - p_before) / (1 - p_before).": (before - after) / (1 - before),
        }, what=f"rewrite_score({before}, {after})", rtol=1e-6)
    try:
        answer = number(call(rewrite_score, 1.0, 1.0), "rewrite_score(1.0, 1.0)")
    except Mistake as mistake:
        raise Mistake(f"rewrite_score(1.0, 1.0) failed ({mistake}): with p_before = 1 there is nothing left "
                      "to add, return 0 there.") from None
    compare(answer, 0.0, {}, what="rewrite_score(1.0, 1.0)")
    return "rewrite_score(0.1, 0.82) = 0.8: the edit added 80% of what was missing"


@exercise("pearson_r")
def check_pearson_r(pearson_r) -> str:
    """Check ``pearson_r(x, y)``: Pearson's correlation of two equally long sequences.

    Usage: ``romelib.exercises.check_pearson_r(pearson_r)``; compared with ``numpy.corrcoef``.
    """
    rng = np.random.default_rng(0)
    x = rng.normal(0.5, 0.2, 12)
    y = 0.6 * x + rng.normal(0.3, 0.1, 12)
    answer = number(call(pearson_r, x.copy(), y.copy()), "r")
    dx, dy = x - x.mean(), y - y.mean()
    covariance = float((dx * dy).mean())
    compare(answer, float(np.corrcoef(x, y)[0, 1]), {
        "centre both variables (subtract their means) first; this is the cosine of the raw values.":
            float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y))),
        "that is the covariance: divide it by both standard deviations.": covariance,
        "use the same denominator (n or n - 1) in the covariance and in the standard deviations.":
            covariance / (x.std(ddof=1) * y.std(ddof=1)),
        "r is the covariance divided by the product of the standard deviations, not their sum.":
            covariance / (x.std() + y.std()),
    }, what="r", rtol=1e-6)
    return f"r = {float(np.corrcoef(x, y)[0, 1]):.3f}; like any correlation it is blind to the scale of x and y"
