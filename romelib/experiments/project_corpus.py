"""Write the project's own text corpus: text the model samples itself, for key statistics offline.

Usage::

    python -m romelib.experiments.project_corpus --tokens 100000 --out data/corpora

Key statistics C need general text run through the model.  WikiText-2 is the default,
but a fresh clone has no reference data; this corpus ships with the repository instead
(``data/corpora/<model>.txt``), so that C for any layer is computed offline in minutes
(:func:`romelib.editing.key_statistics.key_statistics` uses it, and says so, when the
requested text is not on the machine).  The model writes it from nothing, in batches with
a key/value cache (``romelib.generate``, top-k 50 sampling, fixed seeds), 256 tokens per
text, special tokens suppressed; texts are separated by blank lines.
"""
from __future__ import annotations

import logging
from pathlib import Path

from tqdm.auto import tqdm

from ..core.generation import generate
from ..paths import results_dir
from ..results import write_text
from .launch import Worker, command_line, runner_parser, setup_logging

log = logging.getLogger(__name__)
MODULE = "romelib.experiments.project_corpus"


def write_corpus(mt, tokens: int, path: Path, length: int = 256, batch: int = 32,
                 seed: int = 0, progress: bool = True) -> int:
    """Sample about ``tokens`` tokens of text from ``mt`` into ``path``; returns the texts written.

    Usage: ``write_corpus(mt, 100_000, Path("data/corpora/gemma-3-270m.txt"))``.
    """
    texts, rounds = [], -(-tokens // (length * batch))
    for round_ in tqdm(range(rounds), desc="corpus", disable=not progress):
        texts += generate(mt, [""] * batch, length, top_k=50, seed=seed + round_,
                          suppress_special=True, include_prompt=False)
    cleaned = [" ".join(t.split("\n\n")).strip() for t in texts]
    write_text(path, "\n\n".join(t for t in cleaned if t) + "\n")
    return len(cleaned)


def main(argv=None) -> None:
    """``python -m romelib.experiments.project_corpus --tokens 100000 --out data/corpora``."""
    parser = runner_parser("Sample the project's own text corpus from the model.")
    parser.add_argument("--tokens", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--out", default=str(results_dir("corpora")))
    args = parser.parse_args(argv)
    setup_logging()
    worker = Worker.from_environment(args.device)
    worker.require_one_process("The corpus is one seeded stream of samples (split, it would be other text)")
    mt = worker.load_model(args.model, args.threads)
    path = Path(args.out) / f"{Path(mt.name).name}.txt"
    count = write_corpus(mt, args.tokens, path, batch=args.batch)
    log.info("wrote %d texts to %s (%s)", count, path, command_line(MODULE, argv))


if __name__ == "__main__":
    main()
