"""Solution to the exercise of notebook 05 (explorer)."""
import math


def strongest_token(result, layer):
    """Usage: ``strongest_token(romelib.trace(mt, prompt, subject), 4)`` -> (' Needle', 0.21)."""
    column = result.indirect_effects[:, layer].nan_to_num(-math.inf)     # one layer: a column
    position = int(column.argmax())
    return result.tokens[position], column[position].item()


def handover_layer(result):
    """Usage: ``handover_layer(romelib.trace(mt, prompt, subject))`` -> the first layer at which
    the last token's state matters more than the last subject token's, or None."""
    last_subject = result.subject_range[1] - 1                         # the end is exclusive
    effects = result.indirect_effects                                  # (positions, layers)
    for layer in range(effects.shape[1]):
        if effects[-1, layer] > effects[last_subject, layer]:
            return layer
    return None
