"""How ROME's v* optimisation computes only what it needs: the batch it runs every step.

Usage::

    rows, positions = prompt_rows(mt, request, prefixes, "subject_last")
    batch = value_batch(mt, request, prefixes, "subject_last", ["{} is a"])
    cache = head_cache(mt, batch)                                       # once
    with saving_block_output(mt, layer, saved := {}):                   # the first step
        logits = scored_logits(mt, batch, cache)
    with replay_blocks_below(mt, layer, saved["output"]):               # every later step
        logits = scored_logits(mt, batch, cache)

Every prompt is cut just before its fact token (the subject's last token).  Nothing before
that token depends on the vector delta being optimised, so the heads run once and their
attention keys and values are cached; the tails run every step, with the layers below the
edit replayed from the first step (they do not depend on delta either), and the unembedding
(262k tokens for Gemma) sees only the positions that predict a target token.  The first
step, with delta still zero, also gives what the optimisation needs once: the keys, the
value delta starts from, and the KL term's reference distribution.  The result
equals running every whole prompt through the whole model (tests/test_rome.py checks it
against the straightforward implementation in :mod:`romelib.editing.rome_reference`).
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ..core.hooks import hooks
from ..core.tokens import encode, target_tokens, whole_token_range
from .request import EditRequest


def prompt_rows(mt, request: EditRequest, prefixes: list[str], fact_token: str,
                extra_ids: list[int] = ()) -> tuple[list[list[int]], list[int]]:
    """Token ids of ``prefix + prompt (+ extra_ids)`` for each prefix, and each row's fact position.

    Usage: ``rows, positions = prompt_rows(mt, request, ["", "Hello. "], "subject_last")``.
    The subject is where the template's ``{}`` is, and must cover whole tokens there
    (:func:`romelib.core.tokens.whole_token_range`, the rule tracing uses too).
    """
    subject = request.subject.strip()
    offset = request.prompt.index("{}") + len(request.subject) - len(request.subject.lstrip())
    rows, positions = [], []
    for prefix in prefixes:
        text = prefix + request.filled_prompt
        start = len(prefix) + offset
        first, end = whole_token_range(mt, text, start, start + len(subject))
        ids = encode(mt, text)
        position = {"subject_last": end - 1, "subject_first": first, "last": len(ids) - 1}[fact_token]
        rows.append(ids + list(extra_ids))
        positions.append(position)
    return rows, positions


def padded_positions(rows: list[list[int]], positions: list[int]) -> list[int]:
    """Usage: ``padded_positions(rows, positions)``: the positions after left padding."""
    longest = max(len(r) for r in rows)
    return [p + longest - len(r) for r, p in zip(rows, positions)]


@contextmanager
def replay_blocks_below(mt, layer: int, block_output):
    """Make blocks ``0..layer-1`` return a saved output instead of computing it.

    Usage: ``with replay_blocks_below(mt, 6, saved): mt.model(**same_inputs)``.  Valid
    only for the very inputs that produced ``saved``: the layers below an edit do not
    change while v* is optimised, so running them once is enough.
    """
    blocks = list(mt.module("blocks"))[:layer]
    try:
        for block in blocks:
            block.forward = lambda *args, **kwargs: block_output
        yield
    finally:
        for block in blocks:
            block.__dict__.pop("forward", None)


@dataclass
class ValueBatch:
    """Every prompt cut just before its fact token, so that the fact tokens share a column.

    ``head`` (left-padded, may be None) is all that comes before the fact token: it does
    not depend on delta, so it runs once and its attention keys/values are cached.
    ``tail`` (right-padded) starts at the fact token (column 0, where delta is added).
    Logits are computed only at ``(rows, columns)``: first the positions that predict each
    target token of each rewrite prompt (prompt-major), then the last token of each KL prompt.
    """

    head: dict | None
    tail: dict
    rows: torch.Tensor             # (positions scored,)
    columns: torch.Tensor          # (positions scored,) tail columns
    target_ids: list[int]
    n_rewrite: int


def split_rows(mt, rows: list[list[int]], positions: list[int]) -> tuple[dict | None, dict]:
    """Model inputs for the heads ``row[:position]`` and the tails ``row[position:]``.

    Usage: ``head, tail = split_rows(mt, rows, positions)``; running ``tail`` with the
    cache of ``head`` gives the same outputs as running the whole rows.
    """
    heads = [row[:p] for row, p in zip(rows, positions)]
    tails = [row[p:] for row, p in zip(rows, positions)]
    head_len, tail_len, pad = max(map(len, heads)), max(map(len, tails)), mt.tokenizer.pad_token_id
    as_tensor = lambda values: torch.tensor(values, device=mt.device)
    head_mask = as_tensor([[0] * (head_len - len(h)) + [1] * len(h) for h in heads])
    tail_mask = as_tensor([[1] * len(t) + [0] * (tail_len - len(t)) for t in tails])
    head = None if head_len == 0 else {
        "input_ids": as_tensor([[pad] * (head_len - len(h)) + h for h in heads]),
        "attention_mask": head_mask,
        "position_ids": (head_mask.cumsum(-1) - 1).clamp(min=0)}
    tail = {"input_ids": as_tensor([t + [pad] * (tail_len - len(t)) for t in tails]),
            "attention_mask": torch.cat([head_mask, tail_mask], dim=1),
            "position_ids": as_tensor([[len(h) + j for j in range(tail_len)] for h in heads])}
    return head, tail


def value_batch(mt, request: EditRequest, prefixes: list[str], fact_token: str,
                kl_prompts: Sequence[str], kl_token: str = "fact") -> ValueBatch:
    """The prefixed prompts followed by the target's first tokens, then the KL prompts.

    Usage: ``batch = value_batch(mt, request, context_prefixes(mt), "subject_last", ["{} is a"])``.
    The KL term reads each KL prompt's distribution at its fact token (``kl_token="fact"``,
    as the authors' code) or at its last token (``"last"``); with ``"fact"`` the tokens
    after the fact token cannot matter, so the KL rows end there.
    """
    _, target_ids = target_tokens(mt, request.filled_prompt, request.target_new)
    rows, positions = prompt_rows(mt, request, prefixes, fact_token, target_ids[:-1])
    for template in kl_prompts:
        kl_request = EditRequest(template, request.subject, request.target_new)
        kl_rows, kl_positions = prompt_rows(mt, kl_request, [""], fact_token)
        if kl_token == "fact":
            kl_rows = [row[:p + 1] for row, p in zip(kl_rows, kl_positions)]
        rows, positions = rows + kl_rows, positions + kl_positions
    head, tail = split_rows(mt, rows, positions)
    ends = [len(row) - p for row, p in zip(rows, positions)]          # tail lengths
    n, size = len(prefixes), len(target_ids)
    scored = [(r, ends[r] - size + j) for r in range(n) for j in range(size)]
    scored += [(r, ends[r] - 1) for r in range(n, len(rows))]        # fact or last token
    as_tensor = lambda values: torch.tensor(values, device=mt.device)
    return ValueBatch(head, tail, as_tensor([r for r, _ in scored]),
                      as_tensor([c for _, c in scored]), target_ids, n)


def scored_logits(mt, batch: ValueBatch, cache) -> torch.Tensor:
    """Run the tails; the unembedding sees only the scored positions: (positions, vocab).

    Usage: ``logits = scored_logits(mt, batch, cache)``; the cache is copied, never changed.
    """
    gather = lambda hidden, name: hidden[batch.rows, batch.columns][None]  # (1, positions, d)
    with hooks(mt, ["unembed"], retain_output=False, edit_input=gather):
        logits = mt.model(**batch.tail, cache=copy.deepcopy(cache), use_cache=cache is not None).logits
    return logits[0].float()


@torch.no_grad()
def head_cache(mt, batch: ValueBatch):
    """Run the heads (everything before each fact token) once: their attention cache, or None.

    Usage: ``cache = head_cache(mt, batch)``; the heads do not depend on delta, and their
    logits are never needed, so only the blocks run.
    """
    if batch.head is None:
        return None
    return mt.model.base_model(**batch.head, use_cache=True).cache


@contextmanager
def saving_block_output(mt, count: int, saved: dict):
    """Save the output of block ``count - 1`` into ``saved["output"]`` (nothing when count is 0),
    detached: a replayed output must not carry the graph of the pass that made it.

    Usage: ``with saving_block_output(mt, 5, saved): scored_logits(...)``; then
    ``replay_blocks_below(mt, 5, saved["output"])`` replays blocks 0..4.
    """
    detach = lambda value: value.detach() if isinstance(value, torch.Tensor) else value
    keep = lambda output: tuple(map(detach, output)) if isinstance(output, tuple) else detach(output)
    handle = (mt.module("block", count - 1).register_forward_hook(
        lambda module, args, output: saved.update(output=keep(output))) if count > 0 else None)
    try:
        yield saved
    finally:
        if handle is not None:
            handle.remove()


def replayed_layers(layer: int, site: str) -> int:
    """Usage: ``replayed_layers(5, "block")`` -> 6: blocks 0..5 do not depend on a delta added
    to block 5's output (for ``"mlp_proj"``, blocks 0..4)."""
    return layer + 1 if site == "block" else layer
