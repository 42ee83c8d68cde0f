"""The reference causal-tracing engine: what the paper's code computes, written plainly.

Usage::

    scores, low = reference_scores(mt, ids, corrupted, [target_id], "hidden", 10, None, range(10))
    restored_probability(mt, prompt, "Space Needle", [(3, "block.5")], corruption)
    window_layers(7, 10, 18)        # range(2, 12): the MLP/attention layers restored together

Row 0 of every batch is the clean run; rows 1.. are the corrupted samples, into which
row 0's states are copied at the restored sites; one forward pass per (position, layer),
logits over the whole vocabulary.  The fast engine (:mod:`romelib.tracing.fast`) must
give the same numbers; tests and ``benchmarks/bench_tracing.py`` compare the two.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..core.checks import check_text
from ..core.hooks import hooks
from ..core.tokens import encode, target_tokens
from .corruption import Corruption, corrupt_embeddings


def window_layers(layer: int, window: int, num_layers: int) -> range:
    """The layers restored together for ``kind="mlp"``/``"attn"``: ``window`` centred on ``layer``.

    Usage: ``window_layers(7, 10, 18)`` -> ``range(2, 12)`` (clipped at both ends).
    """
    return range(max(0, layer - window // 2), min(num_layers, layer - (-window // 2)))



def answer_log_probs(mt, logits: torch.Tensor, target_ids: list[int]) -> torch.Tensor:
    """log P(answer) from the logits of the positions that predict its tokens, (rows, k, vocab) -> (rows,).

    Usage: ``answer_log_probs(mt, logits[:, -2:], [id_1, id_2])``: the sum of the tokens'
    log-probabilities, each token predicted after the ones before it (teacher forcing).
    """
    ids = torch.tensor(target_ids, device=logits.device)
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    return log_probs[:, torch.arange(len(target_ids)), ids].sum(-1)


@torch.no_grad()
def answer_ids(mt, prompt: str, target: str | None) -> list[int]:
    """The tokens of the answer a trace scores: ``target``'s, or the model's top next token.

    Usage: ``answer_ids(mt, "The Space Needle is located in the city of", None)`` -> ``[Seattle]``;
    ``answer_ids(mt, prompt, "San Francisco")`` -> two ids, scored as a whole.
    """
    if target is not None:
        return target_tokens(mt, prompt, check_text("target", target))[1]
    ids = torch.tensor([encode(mt, prompt)], device=mt.device)
    return [int(mt.model(input_ids=ids, logits_to_keep=1).logits[0, -1].argmax())]


@torch.no_grad()
def restored_probability(mt, prompt: str, subject: str, states: Sequence[tuple[int, str]],
                         corruption: Corruption, samples: int = 10, seed: int = 0,
                         target: str | None = None, occurrence: int | None = None,
                         frozen: Sequence[tuple[int, str]] = ()) -> float:
    """P(answer) in the corrupted run with any set of (position, hook name) states restored.

    Usage: ``restored_probability(mt, prompt, "Space Needle", [(3, "block.5")], corruption)``
    is ``trace(...).scores[3, 5]``; restoring ``[(p, "block.0") for every p]`` gives the
    clean probability and restoring ``[]`` the corrupted one.  ``frozen`` states keep their
    corrupted values (severing, the paper's Figure 3): ``frozen=[(3, f"mlp.{k}") for k in
    range(6, mt.num_layers)]`` with ``[(3, "block.5")]`` restored is
    ``trace(..., sever="mlp").scores[3, 5]``.
    """
    target_ids = answer_ids(mt, prompt, target)
    ids = torch.tensor([encode(mt, prompt) + target_ids[:-1]], device=mt.device)
    embeddings = corrupt_embeddings(mt, corruption, prompt, subject, samples, seed,
                                    occurrence=occurrence, extra_ids=target_ids[:-1])
    batch = ids.repeat(embeddings.shape[0] + 1, 1)
    restore, freeze = _by_name(states), _by_name(frozen)
    corrupt = _corrupt_rows(embeddings)
    corrupted = {}
    if freeze:  # a corrupted pass first: the values the frozen states keep
        with hooks(mt, ["embed", *freeze], edit_output=corrupt, clone=True) as acts:
            mt.model(input_ids=batch, logits_to_keep=1)
        corrupted = {name: acts[name].output for name in freeze}

    def edit(output, name):
        if name == "embed":
            return corrupt(output, name)
        output = output.clone()
        if name in restore:
            output[1:, restore[name]] = output[0, restore[name]]
        if name in freeze:
            output[1:, freeze[name]] = corrupted[name][1:, freeze[name]]
        return output
    with hooks(mt, ["embed", *restore, *freeze], edit_output=edit, retain_output=False):
        logits = mt.model(input_ids=batch, logits_to_keep=len(target_ids)).logits
    return float(answer_log_probs(mt, logits[1:], target_ids).exp().mean())


def _by_name(states: Sequence[tuple[int, str]]) -> dict[str, list[int]]:
    by_name: dict[str, list[int]] = {}
    for position, name in states:
        by_name.setdefault(name, []).append(position)
    return by_name


def restored_names(kind: str, layer: int, window: int, num_layers: int) -> list[str]:
    """Hook names restored for one score: ``["block.5"]`` or the window's ``["mlp.0", ...]``.

    Usage: ``restored_names("mlp", 7, 10, 18)``.
    """
    if kind == "hidden":
        return [f"block.{layer}"]
    return [f"{kind}.{m}" for m in window_layers(layer, window, num_layers)]


@torch.no_grad()
def reference_scores(mt, ids, embeddings, target_ids, kind, window, sever, positions):
    """The straightforward engine, as in the paper's code: per (position, layer) one forward.

    Usage: ``scores, low = reference_scores(mt, ids, corrupted, [target_id], "hidden", 10,
    None, range(ids.shape[1]))``.  Row 0 of each batch is the clean run; rows 1.. are
    the corrupted samples, into which row 0's states are copied at the restored sites.
    Logits are computed over the full vocabulary at every position.  ``ids`` end with the
    answer's tokens but the last; the answer's probability is the product over its tokens.
    """
    scored = len(target_ids)
    samples, num_layers = embeddings.shape[0], mt.num_layers
    batch = ids.repeat(samples + 1, 1)
    frozen = {}
    if sever:  # first pass: the corrupted outputs that stay frozen
        names = [f"{sever}.{m}" for m in range(num_layers)]
        with hooks(mt, ["embed", *names], edit_output=_corrupt_rows(embeddings)) as acts:
            mt.model(input_ids=batch, logits_to_keep=1)
        frozen = {name: acts[name].output.clone() for name in names}
    scores = torch.full((ids.shape[1] - scored + 1, num_layers), math.nan)
    low = None
    for position in positions:
        for layer in range(num_layers):
            restore = restored_names(kind, layer, window, num_layers)
            freeze = [f"{sever}.{m}" for m in range(layer + 1, num_layers)] if sever else []
            edit = _restoring_edit(embeddings, position, restore, freeze, frozen)
            with hooks(mt, ["embed", *restore, *freeze], edit_output=edit, retain_output=False):
                logits = mt.model(input_ids=batch).logits          # (rows, tokens, vocab)
            probs = answer_log_probs(mt, logits[1:, -scored:], target_ids).exp()
            scores[position, layer] = probs.mean().item()
    with hooks(mt, ["embed"], edit_output=_corrupt_rows(embeddings), retain_output=False):
        logits = mt.model(input_ids=batch).logits
    low = float(answer_log_probs(mt, logits[1:, -scored:], target_ids).exp().mean())
    return scores, low


def _corrupt_rows(embeddings):
    def edit(output, name):
        if name == "embed":
            output = output.clone()
            output[1:] = embeddings
        return output
    return edit


def _restoring_edit(embeddings, position, restore, freeze, frozen):
    corrupt = _corrupt_rows(embeddings)

    def edit(output, name):
        if name == "embed":
            return corrupt(output, name)
        output = output.clone()
        if name in restore:
            output[1:, position] = output[0, position]
        if name in freeze:
            output[1:, position] = frozen[name][1:, position]
        return output
    return edit
