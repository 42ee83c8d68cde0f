"""Exercises of notebook 13 (specificity): the update's reach, and the close-neighbour score.

Usage::

    romelib.exercises.check_reach(reach)
    romelib.exercises.check_close_neighbour_score(close_neighbour_score)
"""
from __future__ import annotations

import torch

from .feedback import call, compare, exercise, number


def reference_reach(C: torch.Tensor, k_average: torch.Tensor, k_star: torch.Tensor, key: torch.Tensor) -> float:
    """``(u . key) / (u . k*)`` with ``u = C^-1 k_average``: the share of the edit's output change
    that a token with this key receives."""
    u = torch.linalg.solve(C.double(), k_average.double())
    return float((u @ key.double()) / (u @ k_star.double()))


@exercise("reach")
def check_reach(reach, d: int = 6, seed: int = 0) -> str:
    """Check ``reach(C, k_average, k_star, key) -> float``.

    Usage: ``romelib.exercises.check_reach(reach)``.
    """
    generator = torch.Generator().manual_seed(seed)
    for _ in range(3):
        text = torch.randn(5 * d, d, generator=generator, dtype=torch.float64) * torch.logspace(0, -1, d)
        C = text.T @ text / len(text)
        k_average = torch.randn(d, generator=generator, dtype=torch.float64)
        k_star = k_average + 0.1 * torch.randn(d, generator=generator, dtype=torch.float64)
        key = k_star + torch.randn(d, generator=generator, dtype=torch.float64)
        answer = number(call(reach, C.clone(), k_average.clone(), k_star.clone(), key.clone()), "the reach")
        u_wrong = C @ k_average
        compare(answer, reference_reach(C, k_average, k_star, key), {
            "the update's direction is C^-1 k_average (solve C u = k_average), not C k_average.":
                float((u_wrong @ key) / (u_wrong @ k_star)),
            "that is the keys' cosine similarity; what matters is the projection on the update's "
            "direction u = C^-1 k_average, relative to k*'s.":
                float(key @ k_star / (key.norm() * k_star.norm())),
            "that is the reach with C = I: the direction is C^-1 k_average.":
                float((k_average @ key) / (k_average @ k_star)),
            "divide by u . k*, the projection of the edited key itself, so that k* has reach 1.":
                float(torch.linalg.solve(C, k_average) @ key),
        }, what="the reach of one key", rtol=1e-6)
    return "a key with reach 1 receives the whole edit; 0 receives none of it"


@exercise("close_neighbour_score")
def check_close_neighbour_score(close_neighbour_score) -> str:
    """Check ``close_neighbour_score(before, after) -> percent``: among the neighbours the unedited
    model got right (margin of the true object over the new target > 0 before), the share that
    still has it after the edit, times 100.

    Usage: ``romelib.exercises.check_close_neighbour_score(close_neighbour_score)``.
    """
    cases = (([1.2, 0.4, -0.3, 2.0], [0.5, -0.1, -0.8, 1.5]),
             ([0.3, 0.9, 1.1], [0.4, 1.0, -0.2]),
             ([2.0, -1.0, 0.5, 0.7, 0.1], [-0.5, 0.3, 0.2, -0.1, 0.05]))
    for before, after in cases:
        answer = number(call(close_neighbour_score, list(before), list(after)), "the score")
        known = [a for b, a in zip(before, after) if b > 0]
        expected = 100 * sum(a > 0 for a in known) / len(known)
        compare(answer, expected, {
            "count only the neighbours the unedited model got right (before > 0): the edit cannot "
            "break a fact the model never had.": 100 * sum(a > 0 for a in after) / len(after),
            "the score is a percentage: multiply the share by 100.": expected / 100,
            "a neighbour is kept when its margin after the edit is still positive, not when it grew.":
                100 * sum(a >= b for b, a in zip(before, after) if b > 0) / len(known),
        }, what=f"the score for margins before {before} and after {after}", rtol=1e-9)
    return "the unedited model scores 100 on its own known neighbours by construction"
