"""The exercises of notebook 05 (explorer): which token's state matters most at one layer, and
the layer at which the last token takes over from the last subject token.

Usage::

    romelib.exercises.check_strongest_token(strongest_token)
    romelib.exercises.check_handover_layer(handover_layer)
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


def _handover_trace():
    """``example_trace()`` with rows whose effects cross at known layers (6 layers).

    Last subject token (3) and last token (7) cross at layer 3; the first subject token (2)
    would cross at layer 2, the token after the subject (4) at layer 4.
    """
    result = example_trace()
    rows = {2: [0.30, 0.12, 0.08, 0.06, 0.05, 0.04], 3: [0.40, 0.38, 0.30, 0.20, 0.10, 0.05],
            4: [0.50, 0.45, 0.42, 0.41, 0.30, 0.20], 7: [0.05, 0.10, 0.25, 0.35, 0.40, 0.45]}
    for position, effects in rows.items():
        for layer, effect in enumerate(effects):
            result.scores[position, layer] = result.low_score + effect
    return result


@exercise("handover_layer")
def check_handover_layer(handover_layer) -> str:
    """Check ``handover_layer(result) -> layer or None`` on made-up traces.

    Usage: ``romelib.exercises.check_handover_layer(handover_layer)``: the first layer at which
    the last token's state has a larger indirect effect than the last subject token's.
    """
    result = _handover_trace()
    answer = call(handover_layer, result)
    wrong = {2: "you compared with the first subject token; the early site is at the LAST subject token, "
                "result.subject_range[1] - 1 (subject_range's end is exclusive).",
             4: "you compared with the token after the subject: subject_range's end is exclusive, so the last "
                "subject token is result.subject_range[1] - 1."}
    if isinstance(answer, int) and answer in wrong:
        raise Mistake(wrong[answer])
    if answer == 5:
        raise Mistake("return the FIRST layer at which the last token's effect is larger, not the last.")
    expect(isinstance(answer, int) and not isinstance(answer, bool),
           f"return a layer number (an int), got {answer!r}.")
    expect(answer == 3, f"got layer {answer}; at that layer, compare result.indirect_effects[-1, layer] "
                        "with the last subject token's.")
    never = _handover_trace()
    never.scores[7] = never.low_score + 0.01                  # the last token never takes over
    marked = lambda trace: "None" if (layer := handover_layer(trace)) is None else layer   # None is an answer here
    expect(call(marked, never) == "None",
           "when the last token's effect never exceeds the last subject token's, return None.")
    return "the last token takes over at layer 3 of the example trace, and never in the second"
