"""Exercises of notebook 12 (sequential editing): perplexity, and how far the weights have moved.

Usage::

    romelib.exercises.check_perplexity(perplexity)
    romelib.exercises.check_weight_distance(weight_distance)
"""
from __future__ import annotations

import math

import torch

from .feedback import call, compare, exercise, number


def reference_perplexity(logits: torch.Tensor, ids: torch.Tensor) -> float:
    """exp of the mean negative log-likelihood of ``ids[1:]`` given the logits before them."""
    losses = torch.nn.functional.cross_entropy(logits[:-1].double(), ids[1:], reduction="none")
    return math.exp(float(losses.mean()))


@exercise("perplexity")
def check_perplexity(perplexity, sizes=((6, 11), (9, 5)), seed: int = 0) -> str:
    """Check ``perplexity(logits, ids) -> float``: logits (T, vocab) of one text, ids (T,) its tokens;
    the logits at position t predict token t + 1.

    Usage: ``romelib.exercises.check_perplexity(perplexity)``.
    """
    generator = torch.Generator().manual_seed(seed)
    for length, vocab in sizes:
        logits = 2 * torch.randn(length, vocab, generator=generator, dtype=torch.float64)
        ids = torch.randint(vocab, (length,), generator=generator)
        answer = number(call(perplexity, logits.clone(), ids.clone()), "the perplexity")
        log_probs = logits.log_softmax(-1)
        shifted = -log_probs[:-1].gather(1, ids[1:, None])[:, 0]
        unshifted = -log_probs.gather(1, ids[:, None])[:, 0]
        compare(answer, reference_perplexity(logits, ids), {
            "the logits at position t predict token t + 1: compare logits[:-1] with ids[1:].":
                math.exp(float(unshifted.mean())),
            "that is the mean negative log-likelihood; perplexity is its exponential.": float(shifted.mean()),
            "exponentiate the mean, not the sum, of the negative log-likelihoods (per token).":
                math.exp(float(shifted.sum())),
            "use the natural logarithm (cross-entropy in nats), and exp, not powers of 2.":
                2 ** float(shifted.mean()),
            "take the log-softmax: raw logits are not log-probabilities.":
                math.exp(float(-logits[:-1].gather(1, ids[1:, None])[:, 0].mean())),
        }, what=f"the perplexity of {length} tokens over a vocabulary of {vocab}", rtol=1e-6)
    return "perplexity = exp(mean next-token NLL); a model that guesses uniformly scores the vocabulary size"


@exercise("weight_distance")
def check_weight_distance(weight_distance, seed: int = 0) -> str:
    """Check ``weight_distance(originals, current) -> float``: the Frobenius distance of all the
    changed matrices from the originals together, ``sqrt(sum_m ||W_m - W0_m||_F^2)``.

    Usage: ``romelib.exercises.check_weight_distance(weight_distance)``; both arguments are dicts
    from parameter name to tensor.
    """
    generator = torch.Generator().manual_seed(seed)
    for shapes in (((3, 4),), ((3, 4), (5, 2), (2, 2))):
        originals = {f"layer{i}": torch.randn(*s, generator=generator, dtype=torch.float64)
                     for i, s in enumerate(shapes)}
        current = {k: v + 0.3 * torch.randn(*v.shape, generator=generator, dtype=torch.float64)
                   for k, v in originals.items()}
        answer = number(call(weight_distance, {k: v.clone() for k, v in originals.items()},
                             {k: v.clone() for k, v in current.items()}), "the distance")
        norms = [float((current[k] - originals[k]).norm()) for k in originals]
        compare(answer, math.sqrt(sum(x * x for x in norms)), {
            "adding the matrices' distances overstates the total: square them, add, take the root.": sum(norms),
            "take the square root of the summed squares.": sum(x * x for x in norms),
            "that is the distance of the current weights from zero, not from the originals.":
                math.sqrt(sum(float(current[k].norm()) ** 2 for k in current)),
        }, what=f"the distance over {len(shapes)} matrices", rtol=1e-6)
    return "one number for how far the edits have moved the model, whatever the number of matrices"
