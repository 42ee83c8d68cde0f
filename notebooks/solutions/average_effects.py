"""Solutions to the exercises of notebook 04 (average effects)."""
import math

import torch


def group_positions(subject_range, length):
    """Usage: ``group_positions((2, 4), 10)["last subject token"]`` -> [3]."""
    start, end = subject_range
    last = length - 1
    return {"first subject token": [start],
            "middle subject tokens": list(range(start + 1, end - 1)),
            "last subject token": [end - 1],
            "first subsequent token": [end] if end <= last else [],
            "further tokens": list(range(end + 1, last)),
            "last token": [last]}


def grouped_effects(scores, low_score, subject_range, length):
    """Usage: ``grouped_effects(result.scores, result.low_score, (2, 4), 10)`` -> (6, layers)."""
    rows = []
    for positions in group_positions(subject_range, length).values():
        if positions:
            rows.append(scores[positions].mean(0) - low_score)
        else:
            rows.append(torch.full((scores.shape[1],), math.nan, dtype=scores.dtype))
    return torch.stack(rows)


def mean_and_ci95(effects):
    """Usage: ``mean_and_ci95(torch.tensor([0.1, 0.3, float("nan")]))`` -> (0.2, 0.277)."""
    values = effects[~effects.isnan()]
    half_width = 1.96 * values.std() / math.sqrt(values.numel())    # std: sample standard deviation
    return values.mean().item(), half_width.item()
