"""Exercises of notebook 11 (MEMIT): the spread update of one layer, and the critical layers.

Usage::

    romelib.exercises.check_spread_update(spread_update)
    romelib.exercises.check_critical_layers(critical_layers)
"""
from __future__ import annotations

import torch

from ..editing.memit import spread_update as reference_spread_update
from ..tracing.averages import critical_layers as reference_critical_layers
from .feedback import Mistake, call, compare, exercise, expect, tensor

SPREAD_SIZES = ((1, 6, 3, 0.5), (4, 8, 5, 2.0), (3, 5, 4, 0.0))   # (n, d_key, d_out, lambda)


@exercise("spread_update")
def check_spread_update(spread_update, sizes=SPREAD_SIZES, seed: int = 0) -> str:
    """Check ``spread_update(K, R, C, lam) -> dW = R^T K (lam C + K^T K)^-1``, shape (d_out, d_key).

    Usage: ``romelib.exercises.check_spread_update(spread_update)``; ``K`` is (n, d_key), one key
    per row, ``R`` (n, d_out) the residuals to add, ``C`` (d_key, d_key) the key statistics.
    """
    generator = torch.Generator().manual_seed(seed)
    for n, d_key, d_out, lam in sizes:
        K = torch.randn(n, d_key, generator=generator, dtype=torch.float64)
        R = torch.randn(n, d_out, generator=generator, dtype=torch.float64)
        text = torch.randn(4 * d_key, d_key, generator=generator, dtype=torch.float64)
        C = text.T @ text / len(text)
        answer = tensor(call(spread_update, K.clone(), R.clone(), C.clone(), lam), "dW")
        expected = reference_spread_update(K, R, C, lam)
        compare(answer, expected, {
            "dW maps keys to outputs: its shape is (d_out, d_key); you returned its transpose.": expected.T,
            "the keys' own statistics K^T K belong in the inverse next to lam C: (lam C + K^T K)^-1.":
                (torch.linalg.solve(lam * C, K.T @ R).T if lam > 0 else expected.T),
            "lam weighs C: the inverse is (lam C + K^T K)^-1, not (C + K^T K)^-1.":
                reference_spread_update(K, R, C, 1.0) if lam != 1.0 else expected.T,
            "that is the update without C (lam = 0): old keys are then free to change.":
                torch.linalg.lstsq(K, R).solution.T if lam > 0 else expected.T,
        }, what=f"dW for {n} keys of size {d_key}, lam = {lam}", rtol=1e-6, atol=1e-8)
    return "each layer stores R for its keys and leaves directions common in text alone"


LAYER_CASES = (([0.3, 0.6, 0.7, 0.72, 0.1], 0.9),
               ([0.1, 0.5, 0.9, 1.0, 0.85, 0.3, 0.95], 0.8),
               ([0.2, 0.9, 0.85, 0.1, 1.0, 0.92], 0.8),
               ([1.0, 0.4, 0.3], 0.5))


@exercise("critical_layers")
def check_critical_layers(critical_layers, cases=LAYER_CASES) -> str:
    """Check ``critical_layers(effects, fraction) -> list of layers``: the contiguous run around the
    peak where the effect is at least ``fraction`` of the peak.

    Usage: ``romelib.exercises.check_critical_layers(critical_layers)``.
    """
    for values, fraction in cases:
        effects = torch.tensor(values, dtype=torch.float64)
        answer = call(critical_layers, effects.clone(), fraction)
        try:
            answer = [int(x) for x in answer]
        except (TypeError, ValueError):
            raise Mistake(f"return a list of layer numbers, got {type(answer).__name__}.") from None
        expected = reference_critical_layers(effects, fraction)
        above = [i for i, v in enumerate(values) if v >= fraction * max(values)]
        if answer == expected:
            continue
        expect(answer != above, f"for effects {values} and fraction {fraction} you returned every layer "
               f"above the threshold, {above}; MEMIT edits one contiguous range: grow it outwards from the "
               f"peak and stop at the first layer below {fraction} x peak.")
        expect(answer != [i for i, v in enumerate(values) if v >= fraction],
               f"the threshold is relative: {fraction} x the peak ({max(values)}), not {fraction} itself.")
        raise Mistake(f"for effects {values} and fraction {fraction} the critical layers are not {answer}.")
    return "the range holds the peak and every neighbouring layer close to it"
