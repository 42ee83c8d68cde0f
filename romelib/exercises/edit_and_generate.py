"""Exercises of notebook 08 (edit and generate): greedy decoding by hand, the probability of a whole answer.

Usage::

    romelib.exercises.check_greedy_generate(greedy_generate, mt)
    romelib.exercises.check_sequence_probability(sequence_probability, mt)
"""
from __future__ import annotations

import math

import torch

from ..core.generation import generate
from ..core.tokens import target_probability, target_tokens
from .feedback import Mistake, call, compare, exercise, expect, number

PROMPT = "The Eiffel Tower is located in the city of"


@exercise("greedy_generate")
def check_greedy_generate(greedy_generate, mt) -> str:
    """Check ``greedy_generate(mt, prompt, new_tokens) -> str``: the new text only, greedy.

    Usage: ``romelib.exercises.check_greedy_generate(greedy_generate, mt)``; compared with
    ``romelib.generate(mt, prompt, new_tokens, include_prompt=False)`` (which stops at <eos>).
    """
    new_tokens = 4
    answer = call(greedy_generate, mt, PROMPT, new_tokens)
    expect(isinstance(answer, str), f"return the generated text as a string, got {type(answer).__name__}.")
    expected = generate(mt, PROMPT, new_tokens, include_prompt=False)[0]
    if answer == expected:
        return f"{PROMPT!r} -> {expected!r}"
    expect(answer != PROMPT + expected, "return only the new text, without the prompt.")
    longer = generate(mt, PROMPT, new_tokens + 1, include_prompt=False)[0]
    expect(answer != longer, f"that is {new_tokens + 1} tokens: generate exactly new_tokens tokens.")
    shorter = generate(mt, PROMPT, new_tokens - 1, include_prompt=False)[0]
    expect(answer != shorter, f"that is {new_tokens - 1} tokens: generate exactly new_tokens tokens.")
    raise Mistake(f"expected {expected!r}, got {answer!r}: at every step take the argmax of the last "
                  "position's logits, append it to the input, and decode only the new tokens.")


@exercise("sequence_probability")
def check_sequence_probability(sequence_probability, mt) -> str:
    """Check ``sequence_probability(mt, prompt, target)``: the product of the target's token probabilities.

    Usage: ``romelib.exercises.check_sequence_probability(sequence_probability, mt)``; compared
    with ``romelib.target_probability`` on a target of several tokens.
    """
    target = "Paris, France"
    answer = number(call(sequence_probability, mt, PROMPT, target), "the probability")
    score = target_probability(mt, PROMPT, target)
    expected = score.probability
    prompt_ids, target_ids = target_tokens(mt, PROMPT, target)

    def off_by_one() -> float:              # each target token read at its own position, not the one before
        with torch.no_grad():
            ids = torch.tensor([prompt_ids + target_ids], device=mt.device)
            table = mt.model(input_ids=ids).logits[0].double().log_softmax(-1)   # (positions, vocab)
        return math.exp(sum(float(table[len(prompt_ids) + i, t]) for i, t in enumerate(target_ids)))
    compare(answer, expected, {
        "that is a log-probability: take exp of the sum.": math.log(expected),
        "that is only the first token's probability: multiply the probabilities of every target token, "
        "each predicted from the prompt and the target tokens before it.": math.exp(score.token_log_probs[0]),
        "that is the geometric mean (per-token average); the probability of the whole target is the product.":
            math.exp(score.mean_log_prob),
        "off by one: the logits at position i predict the token at position i + 1.": off_by_one,
    }, what="the probability", rtol=1e-3, atol=1e-9)
    return f"P({target!r}) = {expected:.3g} over {len(score.tokens)} tokens"
