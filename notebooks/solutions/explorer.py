"""Solution to the exercise of notebook 05 (explorer)."""
import math


def strongest_token(result, layer):
    """Usage: ``strongest_token(romelib.trace(mt, prompt, subject), 4)`` -> (' Needle', 0.21)."""
    column = result.indirect_effects[:, layer].nan_to_num(-math.inf)     # one layer: a column
    position = int(column.argmax())
    return result.tokens[position], column[position].item()
