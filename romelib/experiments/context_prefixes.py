"""Regenerate a model's context prefixes (the short texts k* is averaged over).

Usage::

    python -m romelib.experiments.context_prefixes --out data/context_prefixes   # shipped file
    python -m romelib.experiments.context_prefixes --model smollm2-135m          # user cache

The prefixes are sampled from the model itself (top-k 5, seeds 0 and 1, 10 of 5 tokens
and 10 of 10 tokens, as ROME does); see :mod:`romelib.editing.context_prefixes`.
"""
from __future__ import annotations

from pathlib import Path

from ..editing.context_prefixes import generate_prefixes, prefix_key, save_prefixes
from ..paths import cache_dir
from .launch import Worker, runner_parser


def main(argv=None) -> None:
    """``python -m romelib.experiments.context_prefixes --out data/context_prefixes``."""
    parser = runner_parser("Regenerate the context prefixes of a model.")
    parser.add_argument("--out", default=None, help="folder (default: the user cache)")
    args = parser.parse_args(argv)
    worker = Worker.from_environment(args.device)
    worker.require_one_process("The context prefixes are one seeded generation of a few seconds")
    mt = worker.load_model(args.model, args.threads)
    key = prefix_key(mt)
    folder = Path(args.out) if args.out else cache_dir() / "context_prefixes"
    path = folder / f"{key['model']}.json"
    save_prefixes(path, key, generate_prefixes(mt, key["lengths"], key["per_length"], key["seed"]))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
