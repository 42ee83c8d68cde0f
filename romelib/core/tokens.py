"""Tokens: batching prompts, next-token predictions, target probabilities, subject ranges.

Usage::

    romelib.predict(mt, "The Space Needle is located in the city of", k=3)
    romelib.target_probability(mt, "The Space Needle is located in the city of", "Seattle")
    romelib.find_subject_range(mt, "The Space Needle is located in", "Space Needle")  # (2, 4)

Batches are padded on the left, so the last position of every row is that row's last
real token and logits are needed only there (``logits_to_keep``): for a 262k-token
vocabulary the unembedding costs more than the whole rest of a small model.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch

from .checks import check_int, check_subject, check_text


class Prediction(NamedTuple):
    token: str
    probability: float


class TargetScore(NamedTuple):
    """Probability of a whole continuation and its mean log-probability per token."""

    probability: float
    mean_log_prob: float
    token_log_probs: list[float]
    tokens: list[str]


def _as_list(prompts: str | Sequence[str], name: str = "prompts") -> list[str]:
    if isinstance(prompts, str):
        return [check_text(name, prompts)]
    if not isinstance(prompts, (list, tuple)):
        raise TypeError(f"{name} must be a string or a list of strings, got {type(prompts).__name__}.")
    if not prompts:
        raise ValueError(f"{name} is an empty list; give at least one prompt.")
    return [check_text(f"{name}[{i}]", p) for i, p in enumerate(prompts)]


def encode(mt, prompt: str) -> list[int]:
    """Usage: ``encode(mt, "The Space Needle")`` -> token ids, with ``<bos>`` if the model uses one."""
    return mt.tokenizer(prompt)["input_ids"]


def special_prefix(mt) -> list[int]:
    """Token ids the tokenizer puts before any text (``[<bos>]`` for Gemma, ``[]`` for GPT-2).

    Usage: ``special_prefix(mt)`` -> ``[2]``.
    """
    with_special = encode(mt, "a")
    plain = mt.tokenizer("a", add_special_tokens=False)["input_ids"]
    return with_special[:len(with_special) - len(plain)]


def token_strings(mt, ids: Sequence[int]) -> list[str]:
    """Usage: ``token_strings(mt, encode(mt, prompt))`` -> ``['<bos>', 'The', ' Space', ...]``."""
    return [mt.tokenizer.decode([int(i)]) for i in ids]


def pad_batch(mt, token_lists: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
    """Left-pad token lists into model inputs with matching ``position_ids``.

    Usage: ``mt.model(**pad_batch(mt, [encode(mt, p) for p in prompts]), logits_to_keep=1)``.
    """
    if not token_lists or any(len(t) == 0 for t in token_lists):
        raise ValueError("Every prompt must have at least one token.")
    length = max(len(t) for t in token_lists)
    pad = mt.tokenizer.pad_token_id
    ids = [[pad] * (length - len(t)) + list(t) for t in token_lists]
    mask = [[0] * (length - len(t)) + [1] * len(t) for t in token_lists]
    attention_mask = torch.tensor(mask, device=mt.device)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": torch.tensor(ids, device=mt.device),
            "attention_mask": attention_mask, "position_ids": position_ids}


def make_inputs(mt, prompts: str | Sequence[str]) -> dict[str, torch.Tensor]:
    """Usage: ``inputs = make_inputs(mt, ["The Eiffel Tower is in", "Rome is the capital of"])``."""
    return pad_batch(mt, [encode(mt, p) for p in _as_list(prompts)])


@torch.no_grad()
def next_token_probs(mt, prompts: str | Sequence[str], batch_size: int = 32) -> torch.Tensor:
    """Next-token distribution after each prompt, shape (prompts, vocab).

    Usage: ``probs = next_token_probs(mt, ["The Space Needle is in"])``.
    """
    prompts = _as_list(prompts)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    chunks = []
    for start in range(0, len(prompts), batch_size):
        inputs = make_inputs(mt, prompts[start:start + batch_size])
        logits = mt.model(**inputs, logits_to_keep=1).logits[:, -1]  # (batch, vocab)
        chunks.append(torch.softmax(logits.float(), dim=-1))
    return torch.cat(chunks)


def predict(mt, prompts: str | Sequence[str], k: int = 5):
    """Top-``k`` next tokens with probabilities; a list per prompt when given a list.

    Usage: ``predict(mt, "The Space Needle is located in the city of", k=3)``
    -> ``[Prediction(token=' Seattle', probability=0.47), ...]``.
    """
    k = check_int("k", k, minimum=1, maximum=mt.module("unembed").weight.shape[0])
    probs = next_token_probs(mt, prompts)
    top = probs.topk(k, dim=-1)
    result = [[Prediction(mt.tokenizer.decode([int(i)]), float(p)) for p, i in zip(ps, ids)]
              for ps, ids in zip(top.values, top.indices)]
    return result[0] if isinstance(prompts, str) else result


def continuation_text(prompt: str, target: str) -> str:
    """The target as it continues the prompt: a space is put between words.

    Usage: ``continuation_text("in the city of", "Seattle")`` -> ``" Seattle"``.
    """
    check_text("prompt", prompt, allow_empty=True)
    if not isinstance(target, str):
        raise TypeError(f"target must be a string, got {target!r} ({type(target).__name__}).")
    if not target.strip():
        raise ValueError(f"The target {target!r} is empty; give the word(s) the prompt should continue with.")
    if target[0].isspace() or not prompt or prompt[-1].isspace():
        return target
    return " " + target


def target_tokens(mt, prompt: str, target: str) -> tuple[list[int], list[int]]:
    """Token ids of the prompt and of the target continuing it.

    Usage: ``prompt_ids, target_ids = target_tokens(mt, "The capital of France is", "Paris")``.
    The target is tokenised in context (prompt + target) so that tokenizers which merge
    across the boundary or mark word starts still give the tokens the model would see.
    """
    text = continuation_text(prompt, target)
    prompt_ids = encode(mt, prompt)
    full = encode(mt, prompt + text)
    if full[:len(prompt_ids)] == prompt_ids and len(full) > len(prompt_ids):
        return prompt_ids, full[len(prompt_ids):]
    return prompt_ids, mt.tokenizer(text, add_special_tokens=False)["input_ids"]


@torch.no_grad()
def target_log_probs(mt, prompts: Sequence[str], targets: Sequence[str],
                     batch_size: int = 16) -> list[list[float]]:
    """Log-probability of each token of each target after its prompt (teacher forcing).

    Usage: ``target_log_probs(mt, ["The capital of France is"], ["Paris"])`` -> ``[[-0.4]]``.
    Logits are computed only at the positions that predict target tokens.
    """
    prompts, targets = _as_list(list(prompts)), list(targets)
    if len(prompts) != len(targets):
        raise ValueError(f"Got {len(prompts)} prompts but {len(targets)} targets.")
    batch_size = check_int("batch_size", batch_size, minimum=1)
    pairs = [target_tokens(mt, p, t) for p, t in zip(prompts, targets)]
    results: list[list[float]] = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        longest = max(len(t) for _, t in chunk)
        inputs = pad_batch(mt, [p + t for p, t in chunk])
        logits = mt.model(**inputs, logits_to_keep=longest + 1).logits[:, :-1]
        log_probs = torch.log_softmax(logits.float(), dim=-1)  # (batch, longest, vocab)
        for row, (_, target) in enumerate(chunk):
            rows = log_probs[row, longest - len(target):]
            ids = torch.tensor(target, device=rows.device)
            results.append(rows.gather(-1, ids[:, None])[:, 0].tolist())
    return results


def target_probability(mt, prompt: str, target: str) -> TargetScore:
    """Probability of the whole target continuation (product over its tokens).

    Usage: ``target_probability(mt, "The Space Needle is in the city of", "Seattle").probability``.
    """
    _, ids = target_tokens(mt, prompt, target)
    logs = target_log_probs(mt, [prompt], [target])[0]
    return TargetScore(math.exp(sum(logs)), sum(logs) / len(logs), logs, token_strings(mt, ids))


def subject_char_spans(prompt: str, subject: str) -> list[tuple[int, int]]:
    """Every place ``subject`` occurs in ``prompt``, exactly as spelled: ``[(start, end), ...]`` in characters.

    Usage: ``subject_char_spans("Paris is a city, and Paris is the capital of", "Paris")``
    -> ``[(0, 5), (21, 26)]``.
    """
    spans, start = [], prompt.find(subject)
    while subject and start >= 0:
        spans.append((start, start + len(subject)))
        start = prompt.find(subject, start + 1)
    return spans


def whole_token_range(mt, text: str, char_start: int, char_end: int, what: str = "The subject"):
    """Token range ``(start, end)`` of the characters ``[char_start, char_end)``, which must be whole tokens.

    Usage: ``whole_token_range(mt, "The Space Needle is", 4, 16)`` -> ``(2, 4)``.  A token may
    start with the whitespace before the span (``' Space'``); a span that cuts a token raises
    ``ValueError`` showing the tokens and where the cut falls.
    """
    encoding = mt.tokenizer(text, return_offsets_mapping=True)
    offsets = encoding["offset_mapping"]
    covered = [i for i, (a, b) in enumerate(offsets) if b > a and a < char_end and b > char_start]
    if not covered:
        raise ValueError(f"{what} {text[char_start:char_end]!r} covers no token of {text!r}.")
    first_start = offsets[covered[0]][0]
    first_text = text[first_start:offsets[covered[0]][1]]
    word_start = first_start + len(first_text) - len(first_text.lstrip())
    if word_start < char_start or offsets[covered[-1]][1] > char_end:
        pieces = [text[a:b] for a, b in (offsets[i] for i in covered)]
        raise ValueError(
            f"{what} {text[char_start:char_end]!r} cuts through a token: it lies in the tokens "
            f"{pieces} of {text!r}, which run from character {word_start} to "
            f"{offsets[covered[-1]][1]}. A subject must consist of whole tokens; write it as "
            f"{text[word_start:offsets[covered[-1]][1]]!r}.")
    return covered[0], covered[-1] + 1


def find_subject_range(mt, prompt: str, subject: str, occurrence: int | None = None) -> tuple[int, int]:
    """Token range ``(start, end)`` (end exclusive) of ``subject`` inside the tokenised prompt.

    Usage: ``find_subject_range(mt, "The Space Needle is in", "Space Needle")`` -> ``(2, 4)``
    (position 0 is ``<bos>``).  The subject must be spelled exactly as in the prompt (the
    same rule as for edits), cover whole tokens, and occur once, or ``occurrence`` says
    which one (0 for the first).  Anything else raises ``ValueError`` saying how to fix it.
    """
    check_text("prompt", prompt)
    needle = check_subject(subject)
    spans = subject_char_spans(prompt, needle)
    if not spans:
        other = [prompt[a:b] for a, b in subject_char_spans(prompt.lower(), needle.lower())]
        hint = (f" The prompt spells it {other[0]!r}; subjects are matched exactly, as in edits."
                if other else " Pass a subject spelled exactly as in the prompt (for a template, "
                              "fill it first: template.format(subject)).")
        raise ValueError(f"Subject {subject!r} does not occur in the prompt {prompt!r}.{hint}")
    if occurrence is None and len(spans) > 1:
        places = ", ".join(f"occurrence={i} at characters {a}-{b}" for i, (a, b) in enumerate(spans))
        raise ValueError(f"Subject {needle!r} occurs {len(spans)} times in {prompt!r} ({places}); "
                         "say which one to use with occurrence=.")
    if occurrence is not None:
        check_int("occurrence", occurrence, minimum=0, maximum=len(spans) - 1)
    return whole_token_range(mt, prompt, *spans[occurrence or 0])
