"""Text for ROME: corpora for key statistics, and the short context prefixes the model writes.

Usage::

    source = text_source("wikitext-2")              # reference data, else the hub
    next(iter(source.documents()))[:60]             # 'Homarus gammarus\\n\\nHomarus gammarus, known as ...'
    context_prefixes(mt)                            # ['', 'The first time I saw. ', ...]

ROME averages the key k* over the subject seen after a few short texts that the model
itself generated (10 of 5 tokens and 10 of 10 tokens, plus no prefix), so that the edit
does not depend on the exact prompt.  Those prefixes do not depend on the fact being
edited: they are generated once per model and kept on disk (``data/context_prefixes/``
for the default model, the user cache for others).
"""
from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .hparams import DATA_DIR
from .data import shared_data_dir
from .models import cache_dir
from .tokens import encode

log = logging.getLogger(__name__)

PREFIX_FORMAT = 2  # 2: special tokens suppressed while generating
SHIPPED_PREFIX_DIR = DATA_DIR / "context_prefixes"


class SourceUnavailable(RuntimeError):
    """The requested text is not on this machine and cannot be fetched."""


@dataclass(frozen=True)
class TextSource:
    """A named corpus; ``documents()`` starts a fresh iterator over its texts each call."""

    name: str
    description: str
    documents: Callable[[], Iterator[str]]


_DETOKENIZE = [(" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."), (" , ", ", "), (" . ", ". "),
               (" ; ", "; "), (" : ", ": "), (" 's", "'s"), ("( ", "("), (" )", ")"),
               (" n't", "n't"), (" ' ", "' ")]


def detokenize_wikitext(line: str) -> str:
    """Undo WikiText's spaced punctuation. Usage: ``detokenize_wikitext("a @-@ b , c")`` -> ``"a-b, c"``."""
    for spaced, plain in _DETOKENIZE:
        line = line.replace(spaced, plain)
    return line.strip()


def wikitext_articles(lines: Iterator[str]) -> Iterator[str]:
    """Group raw WikiText lines into articles (split at top-level ``= Title =`` lines).

    Usage: ``articles = wikitext_articles(open("wiki.valid.raw"))``.
    """
    article: list[str] = []
    for line in lines:
        heading = re.fullmatch(r"\s*((?:=\s*)+?)([^=\s].*?)\s*[=\s]*=\s*", line)
        if heading and heading.group(1).count("=") == 1 and article:
            yield "\n\n".join(article)
            article = []
        text = heading.group(2) if heading else detokenize_wikitext(line)
        if text:
            article.append(text)
    if article:
        yield "\n\n".join(article)


def _local_wikitext() -> TextSource | None:
    files = [shared_data_dir() / "text" / f"wiki.{split}.raw" for split in ("valid", "test")]
    if not all(f.is_file() for f in files):
        return None

    def documents():
        for path in files:
            with open(path, encoding="utf-8") as handle:
                yield from wikitext_articles(handle)
    return TextSource("wikitext-2", "WikiText-2 raw valid+test (shared data: text/wiki.valid.raw, "
                      "text/wiki.test.raw)", documents)   # no machine-specific path in file headers


def _hub_source(name: str, path: str, config: str, splits: Sequence[str]) -> TextSource:
    try:
        import datasets
    except ImportError:
        raise SourceUnavailable(f"{name}: the `datasets` library is not installed "
                                "(pip install datasets) and no local copy exists") from None

    def documents():
        for split in splits:
            rows = datasets.load_dataset(path, config, split=split, streaming=True)
            lines = (row["text"] for row in rows)
            yield from (wikitext_articles(lines) if name == "wikitext-2" else lines)
    try:
        next(iter(documents()))
    except Exception as error:  # no network, no hub, dataset moved: all mean "unavailable"
        raise SourceUnavailable(f"{name}: could not reach the Hugging Face hub ({error})") from None
    return TextSource(name, f"{path} {config} {'+'.join(splits)} via datasets", documents)


def _files_source(spec: str) -> TextSource:
    paths = [Path(p).expanduser() for p in spec.split(",") if p]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing or not paths:
        raise SourceUnavailable(f"file source: no such file(s) {missing or spec!r}")

    def documents():
        for path in paths:
            yield from (p for p in path.read_text(encoding="utf-8").split("\n\n") if p.strip())
    names = "+".join(p.name for p in paths)
    return TextSource(f"files-{names}", f"local files {', '.join(map(str, paths))}", documents)


def _generated_source(mt, seed: int = 0, length: int = 128, batch: int = 16) -> TextSource:
    def documents():
        for round_ in range(10**6):
            yield from generate_texts(mt, batch, length, seed=seed + round_, top_k=50)
    return TextSource("generated", f"text sampled from {mt.name} itself (top-k 50, seed {seed})",
                      documents)


def text_source(name: str = "wikitext-2", mt=None, fallback: bool = False) -> TextSource:
    """A corpus by name: ``"wikitext-2"``, ``"wikipedia"``, ``"generated"`` or ``"file:a.txt,b.txt"``.

    Usage: ``text_source("wikitext-2")``; with ``fallback=True`` an unavailable corpus is
    replaced by text the model ``mt`` generates, with a warning.
    """
    try:
        if name == "wikitext-2":
            return _local_wikitext() or _hub_source(name, "Salesforce/wikitext",
                                                    "wikitext-2-raw-v1", ["validation", "test"])
        if name == "wikipedia":
            return _hub_source(name, "wikimedia/wikipedia", "20231101.en", ["train"])
        if name.startswith("file:"):
            return _files_source(name[len("file:"):])
        if name != "generated":
            raise ValueError(f"Unknown text source {name!r}; use 'wikitext-2', 'wikipedia', "
                             "'generated' or 'file:PATH[,PATH...]'.")
    except SourceUnavailable as problem:
        if not fallback or mt is None:
            raise
        log.warning("%s; using text generated by the model instead.", problem)
    if mt is None:
        raise ValueError("The 'generated' text source needs the model: text_source(name, mt=mt).")
    return _generated_source(mt)


def special_prefix(mt) -> list[int]:
    """Token ids the tokenizer puts before any text (``[<bos>]`` for Gemma, ``[]`` for GPT-2).

    Usage: ``special_prefix(mt)`` -> ``[2]``.
    """
    with_special = encode(mt, "a")
    plain = mt.tokenizer("a", add_special_tokens=False)["input_ids"]
    return with_special[:len(with_special) - len(plain)]


@torch.no_grad()
def generate_texts(mt, count: int, length: int, seed: int = 0, top_k: int = 5) -> list[str]:
    """Sample ``count`` texts of ``length`` new tokens from the model, starting from nothing.

    Usage: ``generate_texts(mt, 10, 5)``; the global random state is left untouched.
    """
    start = special_prefix(mt) or [mt.tokenizer.eos_token_id]
    input_ids = torch.tensor([start] * count, device=mt.device)
    special = sorted(set(mt.tokenizer.added_tokens_decoder) | set(mt.tokenizer.all_special_ids))
    with torch.random.fork_rng(devices=[] if mt.device.type == "cpu" else [mt.device]):
        torch.manual_seed(seed)
        output = mt.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                   do_sample=True, top_k=top_k, top_p=1.0, temperature=1.0,
                                   max_new_tokens=length, min_new_tokens=length,
                                   suppress_tokens=special,  # plain text only: no <eos>, no <image>
                                   pad_token_id=mt.tokenizer.pad_token_id)
    return mt.tokenizer.batch_decode(output[:, len(start):], skip_special_tokens=True)


def _prefix_key(mt, lengths, per_length, seed) -> dict:
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
    key = _prefix_key(mt, lengths, per_length, seed)
    file_name = f"{key['model']}.json"
    for path in (SHIPPED_PREFIX_DIR / file_name, cache_dir() / "context_prefixes" / file_name):
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
        texts = generate_texts(mt, per_length, length, seed=seed + i, top_k=5)
        prefixes += [" ".join(t.replace("{", " ").replace("}", " ").split()) + ". " for t in texts]
    return prefixes


def save_prefixes(path: Path, key: dict, prefixes: list[str]) -> None:
    """Usage: ``save_prefixes(path, key, prefixes)``; JSON with the key it was generated for."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": key, "prefixes": prefixes}, indent=1, ensure_ascii=False) + "\n")


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python -m romelib.texts --out data/context_prefixes`` (re)generates the
    default model's context prefixes into a folder (default: the user cache)."""
    import argparse

    from .models import load_model

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--model", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    mt = load_model(args.model)
    key = _prefix_key(mt, (5, 10), 10, 0)
    folder = Path(args.out) if args.out else cache_dir() / "context_prefixes"
    save_prefixes(folder / f"{key['model']}.json", key, generate_prefixes(mt, (5, 10), 10, 0))


if __name__ == "__main__":
    main()
