"""Key statistics C for some or all layers, from a named corpus, into a folder.

Usage::

    python -m romelib.experiments.key_statistics --layers 5 --max-tokens 100000 --out data/stats
    python -m romelib.experiments.key_statistics --layers all --max-tokens 100000   # user cache
    torchrun --nproc_per_node 2 -m romelib.experiments.key_statistics --layers all

One pass over the text serves all the layers a process computes; launched processes
split the layers between them.  ``--out`` defaults to the user cache, where
``romelib.key_statistics`` looks after the shipped ``data/stats`` folder.
"""
from __future__ import annotations

import logging

from ..datasets.corpora import text_source
from ..editing.key_statistics import compute_statistics
from .launch import Worker, runner_parser, setup_logging

log = logging.getLogger(__name__)


def main(argv=None) -> None:
    """``python -m romelib.experiments.key_statistics --layers 5 --max-tokens 100000 --out data/stats``."""
    parser = runner_parser("Compute key statistics C = E[k k^T] at the rewritten matrix's input.")
    parser.add_argument("--layers", default="all", help="comma-separated layers, or 'all'")
    parser.add_argument("--source", default="wikitext-2")
    parser.add_argument("--max-tokens", type=int, default=None, help="default: all the text")
    parser.add_argument("--out", default=None, help="folder (default: the user cache)")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args(argv)
    setup_logging()
    worker = Worker.from_environment(args.device)
    mt = worker.load_model(args.model, args.threads)
    layers = (list(range(mt.num_layers)) if args.layers == "all"
              else [int(x) for x in args.layers.split(",")])
    layers = worker.share(layers)
    if not layers:
        log.info("%s: no layer left for this process", worker.describe())
        return
    source = text_source(args.source, mt=mt)
    stats = compute_statistics(mt, layers, source, max_tokens=args.max_tokens,
                               save_dir=args.out, batch_size=args.batch_size)
    for layer, item in stats.items():
        log.info("layer %d: %d tokens of %s, trace(C) = %.4g", layer, item.count, source.name,
                 float(item.mom2.diagonal().sum()))


if __name__ == "__main__":
    main()
