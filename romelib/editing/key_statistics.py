"""Key statistics: the uncentred second moment C = E[k k^T] of the inputs of the MLP matrix
that ROME rewrites, estimated from text, cached on disk with checked metadata.

Usage::

    stats = romelib.key_statistics(mt, layer=6)       # shipped, cached, or computed now
    stats.mom2.shape                                   # (d_mlp, d_mlp)
    stats.count                                        # tokens it was estimated from

From the shell, to regenerate the shipped file (or fill the user cache for other layers)::

    python -m romelib.experiments.key_statistics --layers 5 --max-tokens 100000 --out data/stats

Text sources (``source=``, see :func:`romelib.datasets.corpora.text_source`):
``"wikitext-2"`` (WikiText-2 valid+test: the reference data mirror, the cache, or the
Hugging Face hub), ``"wikipedia"`` (hub only), ``"project-corpus"`` (text the default model
wrote itself, shipped in ``data/corpora``: C for any layer offline, in minutes),
``"generated"`` (the model writes new text now; slow) and ``"file:PATH[,PATH...]"``.
The forward pass stops at the highest layer needed: the unembedding is never computed.

Files are safetensors with a JSON header (format, model, layer, source, token cap, token
count, a probe of the weights that produce the keys, and a SHA-256 of the matrix).  A file
whose header does not match, or whose contents do not hash to the header, is recomputed,
never trusted.  Lookup order: the shipped ``data/stats/`` folder, then the user cache.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..core.checks import check_int, check_optional_int, check_text
from ..core.cost import NOMINAL_FLOPS, Work, per_token_layer_flops
from ..core.hooks import hooks
from ..core.tokens import pad_batch, special_prefix
from ..datasets.corpora import PROJECT_CORPUS, SourceUnavailable, TextSource, text_source
from ..notices import announce
from .statistics_files import (
    KeyStatistics,
    expected_metadata,
    load_statistics,
    save_statistics,
    statistics_paths,
    weights_probe,
)

log = logging.getLogger(__name__)

WHOLE_TEXT_TOKENS = 525_000    # about WikiText-2's training split, when no max_tokens is set
GENERATED_MAX_TOKENS = 50_000  # default cap when the model has to write its own text


def token_windows(mt, documents: Iterator[str], window: int,
                  max_tokens: int | None) -> Iterator[list[int]]:
    """Pack documents (separated by a blank line) into windows of ``window`` text tokens.

    Usage: ``for ids in token_windows(mt, docs, 256, 100_000): ...``; each window starts
    with the model's special prefix (``<bos>``) when its tokenizer adds one.
    """
    prefix, buffer, produced = special_prefix(mt), [], 0
    for document in documents:
        buffer += mt.tokenizer(document + "\n\n", add_special_tokens=False)["input_ids"]
        while len(buffer) >= window:
            take = window if max_tokens is None else min(window, max_tokens - produced)
            yield prefix + buffer[:take]
            buffer, produced = buffer[take:], produced + take
            if max_tokens is not None and produced >= max_tokens:
                return
    if buffer:
        take = len(buffer) if max_tokens is None else min(len(buffer), max_tokens - produced)
        if take > 0:
            yield prefix + buffer[:take]


def _batches(windows: Iterator[list[int]], batch_size: int) -> Iterator[list[list[int]]]:
    batch = []
    for ids in windows:
        batch.append(ids)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


@torch.no_grad()
def collect_key_statistics(mt, layers: Sequence[int], documents: Iterator[str], *,
                           max_tokens: int | None = None, window: int = 256,
                           batch_size: int = 8, progress: bool = True) -> dict[int, tuple]:
    """Sum of k k^T and token count at each layer's mlp_proj input, in one pass over text.

    Usage: ``sums = collect_key_statistics(mt, [4, 6], source.documents())``;
    ``sums[6]`` is ``(sum_kkT float64 (d_mlp, d_mlp), count)``.  Special tokens (``<bos>``)
    and padding are left out; the forward pass stops after the highest layer.
    """
    layers = sorted({mt.check_layer(layer, "layers") for layer in layers})
    window = check_int("window", window, minimum=2)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    max_tokens = check_optional_int("max_tokens", max_tokens, minimum=1)
    names = [f"mlp_proj.{layer}" for layer in layers]
    n_special = len(special_prefix(mt))
    sums: dict[int, torch.Tensor] = {}
    count = 0
    bar = tqdm(total=max_tokens, unit="tok", desc="key statistics", disable=not progress)
    for batch in _batches(token_windows(mt, documents, window, max_tokens), batch_size):
        inputs = pad_batch(mt, batch)
        keep = inputs["attention_mask"].bool()                      # (batch, position)
        for row, ids in enumerate(batch):                           # drop <bos>
            keep[row, keep.shape[1] - len(ids):][:n_special] = False
        with hooks(mt, names, retain_input=True, retain_output=False, stop=True) as acts:
            mt.model(**inputs, use_cache=False)
        for layer, name in zip(layers, names):
            keys = acts[name].input[keep].float()                  # (tokens, d_mlp)
            product = (keys.T @ keys).double()
            sums[layer] = product if layer not in sums else sums[layer] + product
        added = int(keep.sum())
        count += added
        bar.update(added)
    bar.close()
    if count == 0:
        raise ValueError("The text source gave no tokens; check that its files are not empty.")
    return {layer: (sums[layer], count) for layer in layers}


def compute_statistics(mt, layers: Sequence[int], source: TextSource, *,
                       max_tokens: int | None = None, save_dir: Path | None = None,
                       progress: bool = True, **options) -> dict[int, KeyStatistics]:
    """Compute statistics for several layers in one pass and save each to the user cache.

    Usage: ``compute_statistics(mt, range(mt.num_layers), text_source("wikitext-2"))``.
    ``save_dir`` replaces the cache folder (``data/stats`` for the shipped files).
    """
    if max_tokens is None and source.name == "generated":
        max_tokens = GENERATED_MAX_TOKENS
    sums = collect_key_statistics(mt, layers, source.documents(), max_tokens=max_tokens,
                                  progress=progress, **options)
    result = {}
    for layer, (total, count) in sums.items():
        metadata = {**expected_metadata(mt, layer, source.name, max_tokens),
                    "description": source.description, "weights_probe": weights_probe(mt, layer)}
        stats = KeyStatistics(mom2=(total / count).float(), count=count, metadata=metadata)
        path = statistics_paths(mt, layer, source.name, max_tokens)[1]
        save_statistics(path if save_dir is None else
                        Path(save_dir) / Path(mt.name).name / path.name, stats)
        result[layer] = stats
    return result


def key_statistics(mt, layer: int, source: str = "wikitext-2", max_tokens: int | None = None,
                   *, progress: bool = True, recompute: bool = False) -> KeyStatistics:
    """E[k k^T] at ``layer``: from the shipped files or the cache when valid, else computed.

    Usage: ``C = key_statistics(mt, 6).mom2``.  What happens when no valid file is found
    is always said (a :class:`romelib.notices.SubstituteWarning`, shown under a notebook
    cell), never done silently:

    * the source is on this machine: C is computed from it now (and cached), with the time
      it will take; a damaged file is rebuilt from the same source;
    * the source is not here and a file for it is damaged: an error names the file and the
      command that rebuilds it;
    * the source is not here and no file exists: C is computed from the corpus the project
      ships for this model (``"project-corpus"``), the substitute named in the notice and in
      the statistics' metadata; without such a corpus, an error says how to get the source.
    """
    layer = mt.check_layer(layer)
    check_text("source", source)
    max_tokens = check_optional_int("max_tokens", max_tokens, minimum=1)
    for name, value in (("progress", progress), ("recompute", recompute)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__}).")
    probe = weights_probe(mt, layer)
    found, problems = (None, []) if recompute else _find_cached(mt, layer, source, max_tokens, probe)
    if found is not None:
        return found
    try:
        resolved = text_source(source, mt=mt)
    except SourceUnavailable as missing:
        if problems:
            raise ValueError(f"The key statistics file {problems[0][0]} is damaged ({problems[0][1]}) "
                             f"and its text ({source}) is not on this machine to rebuild it: run "
                             f"python -m romelib.datasets.download {source}, then "
                             f"python -m romelib.experiments.key_statistics --layers {layer} "
                             f"--source {source}" + (f" --max-tokens {max_tokens}" if max_tokens else "")
                             ) from None
        resolved = _substitute(mt, source, missing)
        found, _ = _find_cached(mt, layer, resolved.name, max_tokens, probe)
        if found is not None:
            announce(f"Key statistics C for {mt.name} layer {layer}: {source} is not on this machine "
                     f"({missing}); using C from {resolved.name} ({resolved.description}), cached.")
            return found
        announce(f"Key statistics C for {mt.name} layer {layer}: {source} is not on this machine "
                 f"({missing}); computing C from {resolved.name} instead ({resolved.description}), "
                 f"{_duration(mt, layer, max_tokens)}.")
    else:
        if resolved.name != source and not recompute:        # "file:a.txt" is saved as "files-a.txt"
            found, more = _find_cached(mt, layer, resolved.name, max_tokens, probe)
            if found is not None:
                return found
            problems += more
        reason = (f"the file {problems[0][0]} cannot be used ({problems[0][1]}); rebuilding it"
                  if problems else "no saved file")
        if not recompute:
            announce(f"Key statistics C for {mt.name} layer {layer} from {source}: {reason}, "
                     f"{_duration(mt, layer, max_tokens)}.")
    return compute_statistics(mt, [layer], resolved, max_tokens=max_tokens,
                              progress=progress)[layer]


def key_statistics_for_layers(mt, layers: Sequence[int], source: str = "wikitext-2",
                              max_tokens: int | None = None) -> dict[int, KeyStatistics]:
    """:func:`key_statistics` for several layers; the ones with no valid file are computed
    together, in one pass over the text (MEMIT needs a range of layers).

    Usage: ``C = {layer: s.mom2 for layer, s in key_statistics_for_layers(mt, [2, 3, 4]).items()}``.
    When the text is not on this machine, each layer goes through :func:`key_statistics`,
    which says what it uses instead.
    """
    layers = [mt.check_layer(layer) for layer in layers]
    check_text("source", source)
    max_tokens = check_optional_int("max_tokens", max_tokens, minimum=1)
    found, missing = {}, []
    for layer in layers:
        probe = weights_probe(mt, layer)
        stats, _ = _find_cached(mt, layer, source, max_tokens, probe)
        if stats is None and source.startswith("file:"):
            try:
                stats, _ = _find_cached(mt, layer, text_source(source, mt=mt).name, max_tokens, probe)
            except SourceUnavailable:
                pass
        if stats is None:
            missing.append(layer)
        else:
            found[layer] = stats
    if len(missing) > 1:
        try:
            resolved = text_source(source, mt=mt)
        except SourceUnavailable:
            resolved = None
        if resolved is not None:
            announce(f"Key statistics C for {mt.name} layers {missing} from {source}: no valid saved file; "
                     f"computing them together, {_duration(mt, max(missing), max_tokens)}.")
            found.update(compute_statistics(mt, missing, resolved, max_tokens=max_tokens))
            missing = []
    for layer in missing:
        found[layer] = key_statistics(mt, layer, source, max_tokens)
    return {layer: found[layer] for layer in layers}


def _substitute(mt, source: str, missing: SourceUnavailable) -> TextSource:
    if source.startswith("file:"):            # a path the user typed: a typo must not become other text
        raise SourceUnavailable(f"mom2_source / source {source!r}: {missing}. Check the path; a text file "
                                "you name is never replaced by another text.") from None
    try:
        return text_source(PROJECT_CORPUS, mt=mt)
    except SourceUnavailable:
        raise SourceUnavailable(f"The key statistics need {source}, which is not on this machine ({missing}), "
                                f"and the project ships no corpus of {mt.name}'s own to use instead. "
                                f"Run python -m romelib.datasets.download {source} where the internet is "
                                "reachable, or pass mom2_source='generated' to let the model write its "
                                "own text (slow).") from None


def statistics_work(mt, layers: Sequence[int], source: str, max_tokens: int | None) -> Work:
    """The work of computing C for those of ``layers`` with no saved file (none: zero work), for
    an edit's cost estimate.

    Usage: ``statistics_work(mt, [5], "wikitext-2", 100_000).seconds(mt.device)``.
    """
    names = {source}
    try:
        names.add(text_source(source, mt=mt).name)        # "file:a.txt" is saved as "files-a.txt"
    except SourceUnavailable:
        names.add(PROJECT_CORPUS)                          # what key_statistics substitutes
    except ValueError:
        pass                                               # an unknown name: key_statistics says so
    missing = [layer for layer in layers
               if not any(path.is_file() for name in names for path in statistics_paths(mt, layer, name, max_tokens))]
    tokens = max_tokens or WHOLE_TEXT_TOKENS
    flops = tokens * (max(missing) + 1) * per_token_layer_flops(mt) if missing else 0.0
    return Work(flops, 0.0, f"key statistics C of layer(s) {missing} from {source} ({tokens:,} tokens)")


def _duration(mt, layer: int, max_tokens: int | None) -> str:
    tokens = max_tokens or WHOLE_TEXT_TOKENS
    seconds = tokens * (layer + 1) * per_token_layer_flops(mt) / NOMINAL_FLOPS.get(mt.device.type, 100e9)
    when = f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"
    return f"about {when} for {tokens:,} tokens on {mt.device.type}"


def _find_cached(mt, layer, source, max_tokens, probe) -> tuple[KeyStatistics | None, list]:
    """The first valid file, and the problems of the invalid ones (no message when one is valid)."""
    expected = expected_metadata(mt, layer, source, max_tokens)
    problems = []
    for path in statistics_paths(mt, layer, source, max_tokens):
        if path.exists():
            try:
                return load_statistics(path, expected, probe), problems
            except ValueError as problem:
                problems.append((path, str(problem).removeprefix(f"{path}: ")))
    return None, problems
