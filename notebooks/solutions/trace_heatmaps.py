"""Solutions to the exercises of notebook 02 (trace heatmaps)."""
import math


def strongest_state(scores, low_score, high_score):
    """Usage: ``strongest_state(result.scores, result.low_score, result.high_score)`` -> (position, layer, share)."""
    effects = (scores - low_score).nan_to_num(-math.inf)       # untraced positions never win
    position, layer = divmod(int(effects.argmax()), effects.shape[1])
    return position, layer, effects[position, layer].item() / (high_score - low_score)


def window_layers(layer, window, num_layers):
    """Usage: ``window_layers(7, 10, 18)`` -> [2, 3, ..., 11]."""
    start = layer - window // 2
    return [k for k in range(start, start + window) if 0 <= k < num_layers]
