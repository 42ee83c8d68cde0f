"""Scoring targets after prompts: the log-probability of each target token, fast and plainly.

Usage::

    score_targets(mt, ["Rome is in", "Rome is in"], ["Italy", "Spain"])      # [[-0.3], [-4.1]]
    score_targets_reference(mt, prompts, targets)                           # the same numbers

Every CounterFact metric needs P(target_new) and P(target_true) after each of a record's
prompts (about 46 prompt-target pairs).  :func:`score_targets_reference` does what ROME's
``test_batch_prediction`` does: one padded batch of all pairs, logits over the whole
vocabulary at every position.  :func:`score_targets` computes the same numbers with less
work (see its docstring); ``benchmarks/bench_evaluation.py`` times the two.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ..core.hooks import hooks
from ..core.tokens import pad_batch, target_tokens


@torch.no_grad()
def score_targets(mt, prompts: Sequence[str], targets: Sequence[str],
                  max_batch_tokens: int = 2048) -> list[list[float]]:
    """Token log-probabilities of each target after its prompt, like ``romelib.target_log_probs``.

    Usage: ``score_targets(mt, ["Rome is in", "Rome is in"], ["Italy", "Spain"])``.
    Faster when prompts repeat with different targets (every CounterFact prompt is
    scored with target_new and target_true): a target whose tokens before the last one
    are a prefix of another target of the same prompt reuses that sequence's forward
    pass (one-token targets always do); sequences are batched by length, and the
    unembedding runs only at positions that predict target tokens.
    """
    if len(prompts) != len(targets):
        raise ValueError(f"Got {len(prompts)} prompts but {len(targets)} targets.")
    pairs = [target_tokens(mt, p, t) for p, t in zip(prompts, targets)]
    sequences, owner = plan_sequences(pairs)
    order = sorted(range(len(sequences)), key=lambda s: len(sequences[s]))
    results: list[list[float]] = [[] for _ in pairs]
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and (end - start + 1) * len(sequences[order[end]]) <= max_batch_tokens:
            end += 1
        batch = order[start:end]
        members = set(batch)
        users = [i for i in range(len(pairs)) if owner[i] in members]
        _score_batch(mt, [sequences[s] for s in batch], {s: row for row, s in enumerate(batch)},
                     [(i, owner[i], pairs[i]) for i in users], results)
        start = end
    return results


def plan_sequences(pairs) -> tuple[list[list[int]], list[int]]:
    """Token sequences to run and, per (prompt, target) pair, the sequence that scores it."""
    sequences, owner, by_prompt = [], [0] * len(pairs), {}
    for index in sorted(range(len(pairs)), key=lambda i: -len(pairs[i][1])):  # longest first
        prompt, target = pairs[index]
        candidates = by_prompt.setdefault(tuple(prompt), [])
        reuse = [s for s in candidates if sequences[s][len(prompt):][:len(target) - 1] == target[:-1]]
        if reuse:
            owner[index] = reuse[0]
        else:
            owner[index] = len(sequences)
            candidates.append(len(sequences))
            sequences.append(prompt + target)
    return sequences, owner


def _score_batch(mt, sequences, row_of, users, results) -> None:
    inputs = pad_batch(mt, sequences)
    width = inputs["input_ids"].shape[1]
    with hooks(mt, ["final_norm"]) as acts:
        mt.model(**inputs, logits_to_keep=1)
    hidden = acts["final_norm"].output                         # (batch, position, d_model)
    slots: dict[tuple[int, int], int] = {}                     # (row, position) -> unembedded row
    wanted = []                                                # per user: [(slot, token id)]
    for _, sequence_index, (prompt, target) in users:
        row = row_of[sequence_index]
        first = width - len(sequences[row]) + len(prompt) - 1  # position predicting target[0]
        wanted.append([(slots.setdefault((row, first + j), len(slots)), token)
                       for j, token in enumerate(target)])
    rows, positions = zip(*slots)
    log_probs = torch.log_softmax(mt.unembed(hidden[list(rows), list(positions)]).float(), -1)
    for (index, _, _), needed in zip(users, wanted):
        results[index] = [float(log_probs[slot, token]) for slot, token in needed]


@torch.no_grad()
def score_targets_reference(mt, prompts: Sequence[str], targets: Sequence[str]) -> list[list[float]]:
    """All pairs in one padded batch, logits over the whole vocabulary at every position.

    Usage: ``score_targets_reference(mt, ["Rome is in"], ["Italy"])`` -> ``[[-0.3]]``.
    """
    if len(prompts) != len(targets):
        raise ValueError(f"Got {len(prompts)} prompts but {len(targets)} targets.")
    pairs = [target_tokens(mt, p, t) for p, t in zip(prompts, targets)]
    inputs = pad_batch(mt, [p + t for p, t in pairs])
    log_probs = torch.log_softmax(mt.model(**inputs).logits.float(), dim=-1)
    width = inputs["input_ids"].shape[1]
    results = []
    for row, (_, target) in enumerate(pairs):
        first = width - len(target) - 1
        results.append([float(log_probs[row, first + j, token]) for j, token in enumerate(target)])
    return results
