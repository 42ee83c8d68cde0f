"""Exercises of notebook 03 (severed paths): restore a state with later components frozen; the share removed.

Usage::

    romelib.exercises.check_severed_probability(severed_probability, mt)
    romelib.exercises.check_effect_removed(effect_removed)
"""
from __future__ import annotations

import torch

from ..core.tokens import encode, find_subject_range
from ..tracing.corruption import corrupt_embeddings, make_corruption
from ..tracing.reference import restored_probability
from .feedback import Mistake, call, compare, exercise, number, tensor

PROMPT, SUBJECT = "The Space Needle is located in the city of", "Space Needle"


@exercise("severed_probability")
def check_severed_probability(severed_probability, mt) -> str:
    """Check ``severed_probability(mt, ids, corrupted, target_id, layer, position)``.

    Usage: ``romelib.exercises.check_severed_probability(severed_probability, mt)``; compared
    with ``romelib.restored_probability(..., frozen=...)``, which is ``trace(..., sever="mlp")``.
    """
    corruption, samples, seed = make_corruption(mt), 3, 0
    ids = torch.tensor([encode(mt, PROMPT)], device=mt.device)
    _, end = find_subject_range(mt, PROMPT, SUBJECT)
    position, layer, layers = end - 1, min(3, mt.num_layers - 2), mt.num_layers
    corrupted = corrupt_embeddings(mt, corruption, PROMPT, SUBJECT, samples, seed)
    with torch.no_grad():
        target_id = int(mt.model(input_ids=ids, logits_to_keep=1).logits[0, -1].argmax())
    answer = tensor(call(severed_probability, mt, ids, corrupted, target_id, layer, position), "the probability")
    restored = [(position, f"block.{layer}")]

    def severed(frozen, states=restored):
        return restored_probability(mt, PROMPT, SUBJECT, states, corruption, samples, seed, frozen=frozen)
    above = [(position, f"mlp.{k}") for k in range(layer + 1, layers)]
    expected = severed(above)
    if answer.numel() == samples and abs(float(answer.mean()) - expected) < 1e-4:
        raise Mistake("that is one probability per noise sample: return their mean.")
    compare(number(answer, "the probability"), expected, {
        f"nothing was frozen: this is the plain restoration. Keep the MLP outputs above layer {layer} at "
        "their corrupted values.": lambda: severed([]),
        "you froze the attention outputs: freeze the MLP outputs.":
            lambda: severed([(position, f"attn.{k}") for k in range(layer + 1, layers)]),
        "freeze only the restored token's position, not every position.":
            lambda: severed([(p, name) for _, name in above for p in range(ids.shape[1])]),
        f"freeze the layers above the restored one (layer {layer}), not those below it.":
            lambda: severed([(position, f"mlp.{k}") for k in range(layer)]),
        "those frozen outputs are the clean run's: record them in the corrupted run.":
            lambda: severed([], restored + above),
    }, what="the probability with the MLP paths severed", rtol=1e-3, atol=2e-5)
    return f"with block {layer} restored at position {position} and the MLPs above it frozen, P = {expected:.3f}"


@exercise("effect_removed")
def check_effect_removed(effect_removed) -> str:
    """Check ``effect_removed(plain, severed, layers)``: 1 - mean(severed[layers]) / mean(plain[layers]).

    Usage: ``romelib.exercises.check_effect_removed(effect_removed)``, on made-up effects.
    """
    plain = torch.tensor([0.30, 0.28, 0.25, 0.02, 0.20, 0.10, 0.05, 0.01], dtype=torch.float64)
    severed = torch.tensor([0.10, 0.12, 0.09, 0.015, 0.12, 0.08, 0.05, 0.01], dtype=torch.float64)
    layers = slice(0, 5)
    answer = number(call(effect_removed, plain.clone(), severed.clone(), layers), "the share removed")
    kept = severed[layers].mean() / plain[layers].mean()
    compare(answer, 1 - kept, {
        "that is the share that remains: the share removed is 1 minus it.": kept,
        "divide the means over the layers, not layer by layer (a layer with a tiny effect would weigh "
        "as much as the strongest).": 1 - (severed[layers] / plain[layers]).mean(),
        "use only the given layers.": 1 - severed.mean() / plain.mean(),
        "return a fraction (0.6), not a percentage.": 100 * (1 - kept),
    }, what="the share removed")
    return f"severing removes {float(1 - kept):.0%} of the effect in these layers"
