"""Context prefixes: the short texts ROME puts before the prompt when it reads the key k*.

Usage::

    prefixes = context_prefixes(mt)        # ['', 'The first time I saw. ', ...]
    [prefix + "Michael Jordan plays" for prefix in prefixes]

ROME averages the key k* over the subject seen after a few short texts that the model
itself generated (10 of 5 tokens and 10 of 10 tokens, plus no prefix), so that the edit
does not depend on the exact prompt.  Those prefixes do not depend on the fact being
edited: they are generated once per model and kept on disk (``data/context_prefixes/``
for the default model, the user cache for others; ``python -m
romelib.experiments.context_prefixes`` regenerates them).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from ..core.generation import generate
from ..paths import cache_dir, project_data
from ..results import write_text

PREFIX_FORMAT = 2  # 2: special tokens suppressed while generating


def prefix_key(mt, lengths: Sequence[int] = (5, 10), per_length: int = 10, seed: int = 0) -> dict:
    """Usage: ``prefix_key(mt)``: what a saved prefix file must have been generated for."""
    return {"format": PREFIX_FORMAT, "model": Path(mt.name).name, "lengths": list(lengths),
            "per_length": per_length, "seed": seed,
            "embed_norm": float(mt.module("embed").weight.float().norm())}


def _same_key(saved: dict, key: dict) -> bool:
    norm_a, norm_b = saved.get("embed_norm", 0.0), key["embed_norm"]
    return ({k: v for k, v in saved.items() if k != "embed_norm"} ==
            {k: v for k, v in key.items() if k != "embed_norm"}
            and abs(norm_a - norm_b) <= 1e-4 * max(abs(norm_a), abs(norm_b)))


def context_prefixes(mt, lengths: Sequence[int] = (5, 10), per_length: int = 10,
                     seed: int = 0) -> list[str]:
    """The empty prefix plus ``per_length`` model-written texts of each length, each ending '. '.

    Usage: ``prefixes = context_prefixes(mt)``; ``prefix + "Michael Jordan plays"``.
    Read from ``data/context_prefixes/`` or the user cache when present, else generated
    once (sampling with top-k 5, as ROME does) and saved to the user cache.
    """
    key = prefix_key(mt, lengths, per_length, seed)
    file_name = f"{key['model']}.json"
    for path in (project_data("context_prefixes", file_name),
                 cache_dir() / "context_prefixes" / file_name):
        try:
            saved = json.loads(path.read_text())
            if _same_key(saved["key"], key):
                return saved["prefixes"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
    prefixes = generate_prefixes(mt, lengths, per_length, seed)
    save_prefixes(cache_dir() / "context_prefixes" / file_name, key, prefixes)
    return prefixes


def generate_prefixes(mt, lengths: Sequence[int], per_length: int, seed: int) -> list[str]:
    """Usage: ``generate_prefixes(mt, (5, 10), 10, 0)``: new samples, no cache involved."""
    prefixes = [""]
    for i, length in enumerate(lengths):
        texts = generate(mt, [""] * per_length, length, top_k=5, seed=seed + i,
                         suppress_special=True, include_prompt=False)
        prefixes += [" ".join(t.replace("{", " ").replace("}", " ").split()) + ". " for t in texts]
    return prefixes


def save_prefixes(path: Path, key: dict, prefixes: list[str]) -> None:
    """Usage: ``save_prefixes(path, key, prefixes)``; JSON with the key it was generated for."""
    write_text(path, json.dumps({"key": key, "prefixes": prefixes}, indent=1,
                                ensure_ascii=False) + "\n")
