"""Exercises of notebook 07 (ROME step by step): k* as a mean over prefixes, the rank-one update.

Usage::

    romelib.exercises.check_average_key(average_key, mt)
    romelib.exercises.check_rank_one_update(rank_one_update)
"""
from __future__ import annotations

from dataclasses import replace

import torch

from ..editing.memory import rank_one_update as reference_rank_one_update
from ..editing.request import EditRequest
from ..editing.rome import ROMEHyperParams, compute_key, compute_keys
from .associative_memory import example_memory, random_keys
from .feedback import Mistake, call, compare, exercise, expect, tensor

REQUEST = EditRequest("{} is located in the city of", "The Eiffel Tower", "Rome")
PREFIXES = ["", "The weather was cold that day. ", "I read about it. ", "Here is a short story. "]


@exercise("average_key")
def check_average_key(average_key, mt) -> str:
    """Check ``average_key(mt, prompt, subject, layer, prefixes)``: k* averaged over prefixed prompts.

    Usage: ``romelib.exercises.check_average_key(average_key, mt)``; compared with
    ``romelib.compute_key`` on four prefixes.
    """
    layer = mt.num_layers // 3
    answer = tensor(call(average_key, mt, REQUEST.prompt, REQUEST.subject, layer, list(PREFIXES)), "the key")
    hparams = ROMEHyperParams(layer=layer)
    keys = compute_keys(mt, REQUEST, hparams, PREFIXES)                     # (prefixes, d_mlp)
    expected = keys.mean(0)
    d_mlp = expected.numel()
    if answer.shape == (mt.d_model,) and mt.d_model != d_mlp:
        raise Mistake(f"the key has {d_mlp} entries, yours {mt.d_model}: that is the matrix's output; the key "
                      f"is its input (hook mlp_proj.{layer} with retain_input=True).")
    at = {token: lambda token=token: compute_key(mt, REQUEST, replace(hparams, fact_token=token), PREFIXES)
          for token in ("last", "subject_first")}
    compare(answer, expected, {
        "average over the prefixes: return one vector, keys.mean(0).": keys,
        "that is the key of the plain prompt only: average over every prefix.": keys[PREFIXES.index("")],
        "wrong token position: the key is read at the subject's last token, not the prompt's last token.":
            at["last"],
        "wrong token position: the key is read at the subject's last token, not its first.": at["subject_first"],
    }, what="k*", rtol=1e-3, atol=1e-3 * float(expected.abs().max()))
    return f"k* has {d_mlp} entries, the mean of {len(PREFIXES)} keys"


def example_update(d_value: int = 4, d_key: int = 6, seed: int = 0):
    """W, C, the stored key k*, its value v*, and an average key close to k*, all float64.

    Usage: ``W, C, k_star, v_star, k_average = example_update()``.
    """
    W, C, k_star, v_star = example_memory(d_value, d_key, 30, seed)
    k_average = k_star + 0.3 * random_keys(d_key, 1, torch.Generator().manual_seed(seed + 1))[:, 0]
    return W, C, k_star, v_star, k_average


@exercise("rank_one_update")
def check_rank_one_update(rank_one_update) -> str:
    """Check ``rank_one_update(W, C, k_star, v_star, k_average)``, the change W' - W of ROME's code.

    Usage: ``romelib.exercises.check_rank_one_update(rank_one_update)``: the direction is
    ``C^-1 k_average``, the key stored exactly is ``k_star``; compared with
    ``romelib.editing.memory.rank_one_update(W, k_star, v_star, C, direction_key=k_average)``.
    """
    W, C, k_star, v_star, k_average = example_update()
    answer = tensor(call(rank_one_update, W.clone(), C.clone(), k_star.clone(), v_star.clone(), k_average.clone()),
                    "the change")
    expected = reference_rank_one_update(W, k_star, v_star, C, direction_key=k_average)
    u = torch.linalg.solve(C, k_average)
    residual = v_star - W @ k_star
    compare(answer, expected, {
        "the direction is C^-1 k_average (every context shares it); k_star is the key stored exactly.":
            reference_rank_one_update(W, k_star, v_star, C),
        "the denominator must use the stored key, (C^-1 k_average)^T k_star, so that W' k* = v* exactly.":
            torch.outer(residual, u) / (u @ k_average),
        "you used C where the formula has C^-1: solve C u = k_average.":
            torch.outer(residual, C @ k_average) / ((C @ k_average) @ k_star),
        "this is the update with C = I: its direction must be C^-1 k_average.":
            reference_rank_one_update(W, k_star, v_star, None, direction_key=k_average),
        "wrong sign: the residual is v* - W k*.": -expected,
        "return the change W' - W, not the new matrix.": W + expected,
    }, what="the change", rtol=1e-6, atol=1e-8)
    expect(torch.allclose((W + answer) @ k_star, v_star), "(W + change) k* is not v*.")
    return "rank one, and (W + change) k* = v* exactly"
