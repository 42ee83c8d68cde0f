"""Solutions to the exercises of notebook 10 (where to edit)."""
import numpy as np


def rewrite_score(p_before, p_after):
    """Usage: ``rewrite_score(0.1, 0.82)`` -> 0.8."""
    if p_before >= 1:
        return 0.0
    return (p_after - p_before) / (1 - p_before)


def pearson_r(x, y):
    """Usage: ``pearson_r([1, 2, 3], [2, 4, 7])`` -> 0.99."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    dx, dy = x - x.mean(), y - y.mean()
    return float((dx * dy).sum() / np.sqrt((dx ** 2).sum() * (dy ** 2).sum()))
