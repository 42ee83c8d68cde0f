"""Exercises of notebook 02 (trace heatmaps): the strongest state of a trace, the restored window.

Usage::

    romelib.exercises.check_strongest_state(strongest_state)
    romelib.exercises.check_window_layers(window_layers)
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch

from ..tracing.reference import window_layers as reference_window_layers
from ..tracing.trace import TraceResult
from .feedback import Mistake, call, compare, exercise, expect, number

WINDOW_CASES = ((7, 10, 18), (0, 10, 18), (17, 10, 18), (5, 4, 18), (3, 1, 18), (8, 5, 12))


def example_trace() -> TraceResult:
    """A small trace: 8 positions x 6 layers, positions 0-1 not traced (NaN).

    Usage: ``result = example_trace(); result.indirect_effects``.
    """
    generator = torch.Generator().manual_seed(0)
    scores = 0.02 + 0.2 * torch.rand(8, 6, generator=generator, dtype=torch.float64)
    scores[0:2] = math.nan
    scores[5, 2] = 0.4                                      # the strongest state
    scores[2, 5] = 0.3                                      # what swapping the two indices finds
    tokens = ["<bos>", "The", " Space", " Needle", " is", " in", " the", " of"]
    return TraceResult(scores, 0.02, 0.5, tokens, (2, 4), "hidden", "".join(tokens[1:]), "Space Needle",
                       " Seattle", 0, {})


@exercise("strongest_state")
def check_strongest_state(strongest_state) -> str:
    """Check ``strongest_state(scores, low_score, high_score) -> (position, layer, share)``.

    Usage: ``romelib.exercises.check_strongest_state(strongest_state)``; ``share`` is the
    largest indirect effect divided by the total effect, and untraced (NaN) positions are skipped.
    """
    result = example_trace()
    answer = call(strongest_state, result.scores.clone(), result.low_score, result.high_score)
    expect(isinstance(answer, (tuple, list)) and len(answer) == 3,
           "return a tuple (position, layer, share).")
    effects = result.indirect_effects.nan_to_num(-math.inf)                # (positions, layers)
    position, layer = divmod(int(effects.argmax()), effects.shape[1])
    best = float(result.indirect_effects[position, layer])
    values = [number(x, what) for x, what in zip(answer, ("the position", "the layer", "the share"))]
    expect(not any(math.isnan(v) for v in values), "NaN in the answer: positions that were not traced are "
                                                   "NaN, skip them (e.g. nan_to_num(-inf)).")
    got = (int(values[0]), int(values[1]))
    if got == (layer, position):
        raise Mistake("position and layer are swapped: scores is (positions, layers).")
    untraced = 0 <= got[0] < len(result.tokens) and math.isnan(float(result.scores[got[0], 0]))
    expect(not untraced, f"position {got[0]} was not traced (its scores are NaN): skip NaN values, e.g. with "
                         "nan_to_num(-inf), before taking the largest.")
    expect(got == (position, layer), f"the strongest state is not ({got[0]}, {got[1]}): take the largest "
                                     "indirect effect over all positions and layers.")
    total = result.total_effect
    compare(values[2], best / total, {
        "subtract the low score: the indirect effect is score - low_score.": (best + result.low_score) / total,
        "divide by the total effect, high_score - low_score, not by the high score.": best / result.high_score,
        "return the share of the total effect: divide the indirect effect by high_score - low_score.": best,
        "return a fraction, not a percentage.": 100 * best / total,
    }, what="the share")
    return f"the state at position {position}, layer {layer} restores {best / total:.0%} of the total effect"


def _as_layers(value: Iterable) -> list[int]:
    try:
        return [int(layer) for layer in value]
    except (TypeError, ValueError):
        raise Mistake(f"return the layers as a list of ints, got {type(value).__name__}.") from None


@exercise("window_layers")
def check_window_layers(window_layers, cases: Sequence[tuple[int, int, int]] = WINDOW_CASES) -> str:
    """Check ``window_layers(layer, window, num_layers)``: ``window`` layers centred on ``layer``, clipped.

    Usage: ``romelib.exercises.check_window_layers(window_layers)``; compared with
    ``romelib.tracing.reference.window_layers`` on windows of even and odd sizes, at both ends.
    """
    for layer, window, num_layers in cases:
        answer = _as_layers(call(window_layers, layer, window, num_layers))
        expected = list(reference_window_layers(layer, window, num_layers))
        if answer == expected:
            continue
        start = layer - window // 2
        typical = {
            "clip the window at layer 0 and at the last layer (num_layers - 1).":
                list(range(start, start + window)),
            "the window has one layer too many: range(a, b) stops before b.":
                [x for x in range(start, start + window + 1) if 0 <= x < num_layers],
            "centre the window on the layer: it starts at layer - window // 2.":
                [x for x in range(layer, layer + window) if 0 <= x < num_layers],
        }
        hint = next((hint for hint, wrong in typical.items() if answer == wrong), "")
        raise Mistake(f"for layer {layer}, window {window}, {num_layers} layers: expected {expected}, "
                      f"got {answer}. {hint}".strip())
    return f"e.g. column 7 of an 18-layer MLP trace restores layers {list(reference_window_layers(7, 10, 18))}"
