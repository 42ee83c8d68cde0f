"""Solutions to the exercises of notebook 12 (sequential editing)."""
import math

import torch


def perplexity(logits, ids):
    """Usage: ``perplexity(logits, ids)`` with logits (T, vocab) and ids (T,) -> exp(mean next-token NLL)."""
    losses = torch.nn.functional.cross_entropy(logits[:-1], ids[1:], reduction="none")
    return math.exp(float(losses.mean()))


def weight_distance(originals, current):
    """Usage: ``weight_distance(originals, current)`` -> sqrt of the summed squared Frobenius distances."""
    return math.sqrt(sum(float((current[name] - originals[name]).norm()) ** 2 for name in originals))
