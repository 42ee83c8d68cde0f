"""Text generation: the one function that makes a model write, greedy or sampled.

Usage::

    generate(mt, ["The Space Needle is in"], max_new_tokens=10)               # greedy
    generate(mt, ["My favourite scientist is"], 40, top_k=5, seed=1)         # ROME's sampling
    generate(mt, [""] * 10, 5, top_k=5, suppress_special=True,              # from nothing:
             include_prompt=False)                                          # context prefixes

Greedy decoding (``top_k=None``) takes the most likely token at every step; it is
deterministic and tends to repeat itself.  Sampling (``top_k=k``) draws each token from
the ``k`` most likely ones in proportion to their probabilities, as the ROME authors'
``generate_fast`` does with ``k = 5`` for CounterFact's fluency and consistency metrics.

Prompts are batched with prompts of the same token length, so no padding is involved
(padding can tip near-ties of greedy decoding).  Sampling is reproducible: the seed is set
inside a forked random state, which leaves the caller's random state untouched.  An empty
prompt starts from the model's start token (``<bos>``, or ``<eos>`` for GPT-2, which has
none).  With ``suppress_special`` no special token (``<eos>``, ``<pad>``, Gemma's image
tokens) is ever produced, so every text has exactly ``max_new_tokens`` tokens.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch

from .tokens import encode, special_prefix


def start_tokens(mt, prompt: str) -> list[int]:
    """Usage: ``start_tokens(mt, "")`` -> ``[2]`` (``<bos>``): the ids a generation starts from."""
    ids = encode(mt, prompt)
    return ids or special_prefix(mt) or [mt.tokenizer.eos_token_id]


@torch.no_grad()
def generate(mt, prompts: str | Sequence[str], max_new_tokens: int = 50, *,
             top_k: int | None = None, seed: int = 0, batch_size: int = 16,
             suppress_special: bool = False, include_prompt: bool = True) -> list[str]:
    """Continue each prompt; greedy when ``top_k`` is None, else top-k sampling.

    Usage: ``generate(mt, ["Michael Jordan plays"], 20, top_k=5, seed=0)`` -> one text per
    prompt, the prompt included unless ``include_prompt=False``.  Generation stops at
    ``<eos>`` (unless ``suppress_special``), and the text is cut there.
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    _check(max_new_tokens, top_k, batch_size)
    groups: dict[int, list[int]] = defaultdict(list)
    starts = [start_tokens(mt, p) for p in prompts]
    for index, ids in enumerate(starts):
        groups[len(ids)].append(index)
    texts = [""] * len(prompts)
    special = sorted(set(mt.tokenizer.added_tokens_decoder) | set(mt.tokenizer.all_special_ids))
    options = dict(max_new_tokens=max_new_tokens, pad_token_id=mt.tokenizer.pad_token_id)
    if top_k is None:
        options.update(do_sample=False, top_k=None, top_p=None, temperature=None)
    else:
        options.update(do_sample=True, top_k=top_k, top_p=1.0, temperature=1.0)
    if suppress_special:
        options.update(suppress_tokens=special, min_new_tokens=max_new_tokens)
    devices = [] if mt.device.type == "cpu" else [mt.device]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for length, members in sorted(groups.items()):
            for first in range(0, len(members), batch_size):
                chunk = members[first:first + batch_size]
                ids = torch.tensor([starts[i] for i in chunk], device=mt.device)  # (batch, length)
                output = mt.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                           **options)
                for row, index in enumerate(chunk):
                    new = _until_eos(mt, output[row, length:].tolist())
                    text = mt.tokenizer.decode(new, skip_special_tokens=True)
                    texts[index] = prompts[index] + text if include_prompt else text
    return texts


def _until_eos(mt, ids: list[int]) -> list[int]:
    eos = mt.tokenizer.eos_token_id
    return ids[:ids.index(eos)] if eos in ids else ids


def _check(max_new_tokens, top_k, batch_size) -> None:
    for name, value in (("max_new_tokens", max_new_tokens), ("batch_size", batch_size),
                        ("top_k", 1 if top_k is None else top_k)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}"
                             + (" (use top_k=None for greedy decoding)" if name == "top_k" else ""))
