"""Exercises of notebook 00 (a tour of the model): the residual identity, a next-token probability.

Usage::

    romelib.exercises.check_mlp_term(mlp_term, mt)
    romelib.exercises.check_next_token_probability(next_token_probability, mt)
"""
from __future__ import annotations

import math

import torch

from ..core.hooks import hooks
from ..core.tokens import make_inputs, next_token_probs, target_tokens
from .feedback import call, compare, exercise, number, tensor

PROMPT = "The Eiffel Tower is located in the city of"


@exercise("mlp_term")
def check_mlp_term(mlp_term, mt) -> str:
    """Check ``mlp_term(mt, prompt, layer)``: m_l = h_l - h_(l-1) - a_l at every position.

    Usage: ``romelib.exercises.check_mlp_term(mlp_term, mt)``; compared with the MLP's own
    output read by a hook, on a middle layer.
    """
    layer = mt.num_layers // 2
    answer = tensor(call(mlp_term, mt, PROMPT, layer), "mlp_term(...)")
    names = [f"{c}.{layer}" for c in ("block", "attn", "mlp")] + [f"mlp.{layer - 1}", f"mlp.{layer + 1}"]
    with hooks(mt, names, retain_input=True) as acts, torch.no_grad():
        mt.model(**make_inputs(mt, PROMPT), logits_to_keep=1)
    h_in, h_out = acts[f"block.{layer}"].input[0].double(), acts[f"block.{layer}"].output[0].double()
    a, m = acts[f"attn.{layer}"].output[0].double(), acts[f"mlp.{layer}"].output[0].double()
    compare(answer, m, {
        "keep every position but drop the batch dimension: return (positions, d_model), e.g. tensor[0].": m[None],
        "return every position, not only the last one: shape (positions, d_model).": m[-1],
        "wrong sign: m_l = h_l - h_(l-1) - a_l, the block's output minus its input.": -m,
        "this is a_l + m_l, everything the block added: subtract the attention term a_l too.": h_out - h_in,
        "subtract the attention term a_l; you added it.": h_out - h_in + a,
        f"that is the MLP term of layer {layer - 1}: read block.{layer} and attn.{layer}.":
            acts[f"mlp.{layer - 1}"].output[0],
        f"that is the MLP term of layer {layer + 1}: read block.{layer} and attn.{layer}.":
            acts[f"mlp.{layer + 1}"].output[0],
    }, what="m_l", rtol=1e-4, atol=1e-5 * float(h_out.abs().max()))
    return f"the residual identity gives the MLP's output at layer {layer}, at every position"


@exercise("next_token_probability")
def check_next_token_probability(next_token_probability, mt) -> str:
    """Check ``next_token_probability(mt, prompt, token_id)``: softmax of the last position's logits.

    Usage: ``romelib.exercises.check_next_token_probability(next_token_probability, mt)``;
    compared with ``romelib.next_token_probs`` for the likely answer and for an unlikely one.
    """
    _, (token_id, *_) = target_tokens(mt, PROMPT, "Paris")
    other = 1000 if token_id != 1000 else 1001
    answer = number(call(next_token_probability, mt, PROMPT, token_id), "the probability")
    second = number(call(next_token_probability, mt, PROMPT, other), "the probability")
    probs = next_token_probs(mt, PROMPT)[0]
    expected = float(probs[token_id])

    def logits():                                                            # (positions, vocab)
        with torch.no_grad():
            return mt.model(**make_inputs(mt, PROMPT)).logits[0].double()
    compare(answer, expected, {
        "that is a logit: turn the logits into probabilities with a softmax over the vocabulary.":
            lambda: logits()[-1, token_id],
        "that is a log-probability: use softmax, not log_softmax (or take exp).": math.log(expected),
        "that is the prediction after the first token: read the logits of the last position, [-1].":
            lambda: logits()[0].softmax(-1)[token_id],
        "the softmax runs over the wrong axis: normalise over the vocabulary (dim=-1), not the positions.":
            lambda: logits().softmax(0)[-1, token_id],
    }, what="the probability", rtol=1e-3, atol=1e-6)
    compare(second, float(probs[other]), {
        "the answer does not depend on token_id: index the probabilities with it.": answer,
    }, what=f"the probability of token {other}", rtol=1e-3, atol=1e-7)
    return f"P('{mt.tokenizer.decode([token_id])}') = {expected:.3f}"
