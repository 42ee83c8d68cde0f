"""The exercise of notebook 05 (explorer): which token's state matters most at one layer.

Usage::

    romelib.exercises.check_strongest_token(strongest_token)
"""
from __future__ import annotations

import math

from .feedback import Mistake, call, compare, exercise, expect, number
from .trace_heatmaps import example_trace


@exercise("strongest_token")
def check_strongest_token(strongest_token) -> str:
    """Check ``strongest_token(result, layer) -> (token, effect)`` on a made-up trace.

    Usage: ``romelib.exercises.check_strongest_token(strongest_token)``: the token whose state
    at ``layer`` has the largest indirect effect (untraced NaN positions skipped), and that effect.
    """
    result, layer = example_trace(), 3
    result.scores[6, layer] = 0.35          # the strongest state at this layer: position 6
    result.scores[layer, 1] = 0.32          # what reading row `layer` instead of the column finds
    answer = call(strongest_token, result, layer)
    expect(isinstance(answer, (tuple, list)) and len(answer) == 2, "return a pair (token, effect).")
    column = result.indirect_effects[:, layer].nan_to_num(-math.inf)         # (positions,)
    position = int(column.argmax())
    token, effect = result.tokens[position], float(column[position])
    if isinstance(answer[0], int) or not isinstance(answer[0], str):
        raise Mistake(f"return the token's text, result.tokens[position] (got {answer[0]!r}).")
    row = result.indirect_effects[layer].nan_to_num(-math.inf)
    if answer[0] == result.tokens[int(row.argmax())] and answer[0] != token:
        raise Mistake("you read row `layer` of the table: scores is (positions, layers), so the states of "
                      "one layer are the column scores[:, layer].")
    expect(answer[0] == token, f"{answer[0]!r} is not the token with the largest effect at layer {layer}.")
    compare(number(answer[1], "the effect"), effect, {
        "subtract the low score: result.indirect_effects (= scores - low_score).": effect + result.low_score,
        "that is the share of the total effect; return the indirect effect itself.": effect / result.total_effect,
    }, what="the effect")
    return f"{token!r} has the largest effect at layer {layer}, {effect:.2f}"
