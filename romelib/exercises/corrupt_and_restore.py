"""Exercises of notebook 01 (corrupt and restore): k-sigma noise on the subject, restoring one state.

Usage::

    romelib.exercises.check_corrupt_with_noise(corrupt_with_noise)
    romelib.exercises.check_restore_hidden_state(restore_hidden_state, mt)
"""
from __future__ import annotations

import torch

from ..core.tokens import encode, find_subject_range
from ..tracing.corruption import corrupt_embeddings, make_corruption
from ..tracing.reference import restored_probability
from .feedback import Mistake, call, compare, exercise, expect, number, tensor

PROMPT, SUBJECT = "The Space Needle is located in the city of", "Space Needle"


def _spread_hint(std: float, noise: float, sigma: float) -> str:
    """Name the scaling mistake that gives noise of standard deviation ``std``."""
    for value, hint in [(noise, "the noise is not scaled by sigma: its std must be noise x sigma."),
                        (sigma, "the noise is scaled by sigma but not by the noise level: std = noise x sigma."),
                        ((noise * sigma) ** 2, "you scaled by the variance (noise x sigma)^2; multiply the "
                                               "standard-normal draws by the std, noise x sigma."),
                        (1.0, "the noise is not scaled: multiply the standard-normal draws by noise x sigma.")]:
        if abs(std - value) < 0.06 * value:
            return hint
    return f"the noise has std {std:.3f}, expected noise x sigma = {noise * sigma:.3f}."


@exercise("corrupt_with_noise")
def check_corrupt_with_noise(corrupt_with_noise) -> str:
    """Check ``corrupt_with_noise(clean, start, end, noise, sigma, samples, generator)``.

    Usage: ``romelib.exercises.check_corrupt_with_noise(corrupt_with_noise)``: the result is
    (samples, tokens, d) and only positions ``start..end-1`` change, by centred Gaussian noise
    of std ``noise * sigma``, different in every sample and drawn from ``generator``.
    """
    tokens, d, start, end, noise, sigma, samples = 7, 64, 2, 5, 3.0, 0.5, 40
    clean = 4.0 + torch.randn(tokens, d, generator=torch.Generator().manual_seed(1))
    original = clean.clone()
    answer = call(corrupt_with_noise, clean, start, end, noise, sigma, samples, torch.Generator().manual_seed(0))
    expect(torch.equal(clean, original), "do not change `clean` in place: work on a copy (clean.clone()).")
    answer = tensor(answer, "the corrupted embeddings")
    expect(answer.shape == (samples, tokens, d), f"the result has shape {tuple(answer.shape)}; return one "
           f"row per sample, shape (samples, tokens, d_model) = {(samples, tokens, d)}.")
    change = answer - clean.double()                                   # (samples, tokens, d)
    changed = change.abs().amax(dim=(0, 2)) > 0                       # (tokens,)
    expect(changed.any(), "nothing changed: add the noise to the subject's embeddings.")
    expect(not changed[end], "position `end` changed: the subject is positions start..end-1 (the end is "
                             "exclusive, as in range(start, end)).")
    expect(changed[end - 1], "the last subject token (position end - 1) did not change: the subject is "
                             "positions start..end-1.")
    expect(changed[start:end].all() and not changed[:start].any() and not changed[end:].any(),
           "add noise to the subject's positions start..end-1 and to nothing else.")
    noise_added = change[:, start:end]
    expect(not torch.equal(noise_added[0], noise_added[1]), "every sample got the same noise: draw "
           "(samples, end - start, d_model) values, different for each sample.")
    expect(answer[:, start:end].mean().abs() > 2, "you replaced the subject's embeddings by noise: add the "
           "noise to the embeddings instead.")
    expect(noise_added.mean().abs() < 0.1, f"the noise has mean {float(noise_added.mean()):.2f}: it should be "
           "centred on 0 (torch.randn, not torch.rand).")
    std = float(noise_added.std())
    expect(abs(std - noise * sigma) < 0.06 * noise * sigma, _spread_hint(std, noise, sigma))
    again = call(corrupt_with_noise, clean, start, end, noise, sigma, samples, torch.Generator().manual_seed(0))
    expect(torch.equal(tensor(again, "the corrupted embeddings"), answer), "the same seed gave different "
           "noise: draw it from the generator you are given (torch.randn(..., generator=generator)).")
    return f"noise of std {std:.2f} = {noise:g} x {sigma:g} on the subject's {end - start} tokens only"


@exercise("restore_hidden_state")
def check_restore_hidden_state(restore_hidden_state, mt) -> str:
    """Check ``restore_hidden_state(mt, ids, corrupted, target_id, layer, position)``.

    Usage: ``romelib.exercises.check_restore_hidden_state(restore_hidden_state, mt)``;
    compared with ``romelib.restored_probability`` (3 noise samples, the last subject token).
    """
    corruption, samples, seed = make_corruption(mt), 3, 0
    ids = torch.tensor([encode(mt, PROMPT)], device=mt.device)
    _, end = find_subject_range(mt, PROMPT, SUBJECT)
    position, layer = end - 1, min(5, mt.num_layers - 2)
    corrupted = corrupt_embeddings(mt, corruption, PROMPT, SUBJECT, samples, seed)
    with torch.no_grad():
        target_id = int(mt.model(input_ids=ids, logits_to_keep=1).logits[0, -1].argmax())
    answer = tensor(call(restore_hidden_state, mt, ids, corrupted, target_id, layer, position), "the probability")

    def restored(states):
        return restored_probability(mt, PROMPT, SUBJECT, states, corruption, samples, seed)
    expected = restored([(position, f"block.{layer}")])
    if answer.numel() == samples and abs(float(answer.mean()) - expected) < 1e-4:
        raise Mistake("that is one probability per noise sample: return their mean.")
    answer = number(answer, "the probability")
    length = ids.shape[1]
    compare(answer, expected, {
        "that is the corrupted run's probability: the clean state was not put back (does your hook "
        "return the edited output?).": lambda: restored([]),
        "that is the clean run's probability: only one state is clean; the embeddings must be the "
        "corrupted ones.": lambda: restored([(p, "block.0") for p in range(length)]),
        f"you restored block {layer - 1}: restore the output of block {layer} (hook name 'block.{layer}').":
            lambda: restored([(position, f"block.{layer - 1}")]),
        f"you restored block {layer + 1}: restore the output of block {layer} (hook name 'block.{layer}').":
            lambda: restored([(position, f"block.{layer + 1}")]),
        f"wrong token position: restore position {position}, not {position + 1}.":
            lambda: restored([(position + 1, f"block.{layer}")]),
        f"wrong token position: restore position {position}, not {position - 1}.":
            lambda: restored([(position - 1, f"block.{layer}")]),
        "you restored every position of that layer; restore only the given position.":
            lambda: restored([(p, f"block.{layer}") for p in range(length)]),
    }, what="the restored probability", rtol=1e-3, atol=2e-5)
    return f"restoring block {layer} at position {position} gives P = {expected:.3f}"
