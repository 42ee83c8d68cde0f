"""Text corpora: general English text for key statistics and TF-IDF, by name.

Usage::

    source = text_source("wikitext-2")              # reference data, else the hub
    next(iter(source.documents()))[:60]             # 'Homarus gammarus\\n\\nHomarus gammarus, known as ...'
    wikitext_paragraphs()                           # for TF-IDF (fluency metrics)

Sources: ``"wikitext-2"`` (WikiText-2 raw valid+test: the shared data folder, romelib's
cache, or downloaded once from the Hugging Face hub, see :mod:`romelib.datasets.download`), ``"wikipedia"``
(``datasets``, hub only), ``"generated"`` (text the model samples itself) and
``"file:PATH[,PATH...]"`` for local text files.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..core.checks import check_text
from ..core.generation import generate
from ..paths import project_data
from .download import ReferenceDataMissing, reference_path

log = logging.getLogger(__name__)

PROJECT_CORPUS = "project-corpus"


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


WIKITEXT_FILES = ("wiki.valid.raw", "wiki.test.raw")


def wikitext_files(download: bool = False) -> list[Path]:
    """WikiText-2's raw validation and test files, from the shared data or romelib's cache.

    Usage: ``wikitext_files()``; ``download=True`` fetches them when they are nowhere.  Raises
    :class:`romelib.datasets.download.ReferenceDataMissing` (one line) when they are absent.
    """
    return [reference_path(name, download=download) for name in WIKITEXT_FILES]


def _wikitext() -> TextSource:
    try:
        files = wikitext_files(download=True)
    except ReferenceDataMissing as missing:
        raise SourceUnavailable(str(missing)) from None

    def documents():
        for path in files:
            with open(path, encoding="utf-8") as handle:
                yield from wikitext_articles(handle)
    return TextSource("wikitext-2", "WikiText-2 raw valid+test (reference data: wiki.valid.raw, "
                      "wiki.test.raw)", documents)   # no machine-specific path in file headers


def _hub_source(name: str, path: str, config: str, splits: Sequence[str]) -> TextSource:
    try:
        import datasets
    except ImportError:
        raise SourceUnavailable(f"{name}: the `datasets` library is not installed "
                                "(pip install datasets) and no local copy exists") from None

    def documents():
        for split in splits:
            yield from (row["text"] for row in datasets.load_dataset(path, config, split=split, streaming=True))
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
            yield from generate(mt, [""] * batch, length, top_k=50, seed=seed + round_,
                                suppress_special=True, include_prompt=False)
    return TextSource("generated", f"text sampled from {mt.name} itself (top-k 50, seed {seed})",
                      documents)


def project_corpus_path(model_name: str) -> Path:
    """Usage: ``project_corpus_path("gemma-3-270m")`` -> ``data/corpora/gemma-3-270m.txt``."""
    return project_data("corpora", f"{Path(model_name).name}.txt")


def _project_corpus(mt) -> TextSource:
    path = project_corpus_path(mt.name)
    if not path.is_file():
        raise SourceUnavailable(f"{PROJECT_CORPUS}: the project ships no corpus for {mt.name} "
                                f"({path}); write one with python -m romelib.experiments.project_corpus "
                                f"--model {mt.name} --out data/corpora")

    def documents():
        yield from (p for p in path.read_text(encoding="utf-8").split("\n\n") if p.strip())
    return TextSource(PROJECT_CORPUS, f"text {mt.name} wrote itself, shipped in data/corpora "
                      "(python -m romelib.experiments.project_corpus)", documents)


def text_source(name: str = "wikitext-2", mt=None) -> TextSource:
    """A corpus by name: ``"wikitext-2"``, ``"wikipedia"``, ``"project-corpus"``, ``"generated"``
    or ``"file:a.txt,b.txt"``.

    Usage: ``text_source("wikitext-2")``.  A corpus that is not on this machine raises
    :class:`SourceUnavailable` saying how to get it; nothing is ever replaced silently
    (:func:`romelib.editing.key_statistics.key_statistics` announces any substitute).
    ``"project-corpus"`` is text the model wrote itself, shipped in ``data/corpora``;
    ``"generated"`` samples new text now (slow: about a minute per 2,000 tokens on a CPU).
    """
    check_text("source", name)
    if name == "wikitext-2":
        return _wikitext()
    if name == "wikipedia":
        return _hub_source(name, "wikimedia/wikipedia", "20231101.en", ["train"])
    if name.startswith("file:"):
        return _files_source(name[len("file:"):])
    if name not in (PROJECT_CORPUS, "generated"):
        raise ValueError(f"Unknown text source {name!r}; use 'wikitext-2', 'wikipedia', "
                         f"'{PROJECT_CORPUS}', 'generated' or 'file:PATH[,PATH...]'.")
    if mt is None:
        raise ValueError(f"The {name!r} text source needs the model: text_source({name!r}, mt=mt).")
    return _project_corpus(mt) if name == PROJECT_CORPUS else _generated_source(mt)




def wikitext_paragraphs(download: bool = False) -> list[str]:
    """Paragraphs of WikiText-2 (validation + test) from the shared data or the cache, [] when absent.

    Usage: ``Tfidf.fit(wikitext_paragraphs(), source="wikitext-2")``; ``download=True``
    fetches the files first when they are nowhere (and still returns [] when that fails).
    """
    try:
        files = wikitext_files(download=download)
    except ReferenceDataMissing as missing:
        log.info("%s", missing)
        return []
    paragraphs = []
    for path in files:
        lines = path.read_text(encoding="utf-8").split("\n")
        paragraphs += [p.strip() for p in lines if p.strip() and not p.strip().startswith("=")]
    return paragraphs
