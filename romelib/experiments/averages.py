"""The paper's Figures 2 and 3 on many facts: trace every known fact, average by token group.

Usage::

    python -m romelib.experiments.averages --source known_1000 --limit 150 --samples 10
    torchrun --nproc_per_node 2 -m romelib.experiments.averages --source known_1000 --limit 150
    python -m romelib.experiments.averages --summarize-only        # from what is saved

    summary = load_summary()          # in Python: the saved run's summary
    summary["kinds"]["hidden"]["headline"]

The facts the model knows (its top prediction is the fact's attribute) are sampled with
a seed, traced (three kinds, and the severed paths at the last subject token) and saved
one JSON line per fact in ``data/tracing/<model>_<source>.jsonl``, with the settings and
the summary beside it.  Rerunning the command resumes it; several processes share it.
"""
from __future__ import annotations

import logging
import math
import random
from pathlib import Path

from ..datasets.facts import facts_known_by, load_facts
from ..paths import results_dir
from ..results import locked, read_json, read_jsonl, write_json
from ..tracing.averages import fact_key, summarize, trace_facts
from ..tracing.corruption import make_corruption
from .launch import Worker, command_line, runner_parser, setup_logging

log = logging.getLogger(__name__)

MODULE = "romelib.experiments.averages"
# Settings that must match for a run to be resumed (the averages would mix them otherwise).
RESUME_KEYS = ("model", "source", "samples", "noise", "window", "seed", "facts_selected")


def run_path(model: str, source: str) -> Path:
    """Usage: ``run_path("gemma-3-270m", "known_1000")`` -> ``data/tracing/gemma-3-270m_known_1000.jsonl``."""
    source_name = source if source in ("known_1000", "project") else Path(source).stem
    return results_dir("tracing", f"{Path(model).name}_{source_name}.jsonl")


def settings_path(run: Path) -> Path:
    return run.with_name(run.stem + "_settings.json")


def summary_path(run: Path) -> Path:
    return run.with_name(run.stem + "_summary.json")


def load_summary(name: str = "gemma-3-270m_known_1000") -> dict:
    """The saved run's summary (``data/tracing/<name>_summary.json``).

    Usage: ``summary = load_summary(); summary["settings"]["facts_traced"]``.
    """
    path = summary_path(results_dir("tracing", f"{name}.jsonl"))
    if not path.is_file():
        raise FileNotFoundError(f"No saved tracing summary at {path}; regenerate it with "
                                f"python -m {MODULE} (data/tracing/README.md has the command).")
    return read_json(path)


def check_resumable(run: Path, settings: dict) -> None:
    """Refuse to add to a run traced with other settings; then record the settings.

    Usage: ``check_resumable(run_path(...), settings)``; raises ``ValueError`` naming what differs.
    """
    with locked(settings_path(run)):
        previous = read_json(settings_path(run), {})
        if read_jsonl(run) and previous:
            changed = [k for k in RESUME_KEYS if previous.get(k) != settings[k]]
            if not math.isclose(previous.get("sigma", math.nan), settings["sigma"], rel_tol=1e-9):
                changed.append("sigma")
            if changed:
                raise ValueError(f"{run} holds facts traced with other settings "
                                 f"({', '.join(changed)}); pass another --out, or delete it "
                                 "(and its _settings.json) to start over.")
        write_json(settings_path(run), {**previous, **settings})


def write_summary(run: Path) -> dict:
    """Write ``<run>_summary.json`` from the facts saved in ``run`` (each counted once).

    Usage: ``write_summary(run_path("gemma-3-270m", "known_1000"))``.
    """
    records = read_jsonl(run, key=fact_key)
    settings = {**read_json(settings_path(run)), "facts_traced": len(records)}
    summary = summarize(records, settings)
    write_json(summary_path(run), summary)
    log.info("wrote %s from %d facts in %s", summary_path(run), len(records), run)
    return summary


def main(argv=None) -> None:
    """``python -m romelib.experiments.averages --source known_1000 --limit 150``."""
    parser = runner_parser("Average causal-tracing effects over known facts (Figures 2 and 3).")
    parser.add_argument("--source", default="known_1000", help="'known_1000', 'project' or a JSON file")
    parser.add_argument("--limit", type=int, default=None,
                        help="trace a seeded random sample of this many known facts")
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--noise", type=float, default=3.0)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="output .jsonl (default data/tracing/<model>_<source>.jsonl)")
    parser.add_argument("--summarize-only", action="store_true",
                        help="only rewrite the summary from the facts traced so far")
    args = parser.parse_args(argv)
    setup_logging()
    if args.summarize_only:
        write_summary(Path(args.out) if args.out else run_path(args.model or "gemma-3-270m", args.source))
        return
    worker = Worker.from_environment(args.device)
    mt = worker.load_model(args.model, args.threads)
    out = Path(args.out) if args.out else run_path(mt.name, args.source)
    facts = load_facts(args.source)
    known = facts_known_by(mt, facts)
    log.info("%s knows %d of %d facts from %s (%s)", mt.name, len(known), len(facts),
             args.source, worker.describe())
    facts_known = len(known)
    if args.limit and args.limit < len(known):   # a seeded sample, kept in file order
        chosen = sorted(random.Random(args.seed).sample(range(len(known)), args.limit))
        known = [known[i] for i in chosen]
    corruption = make_corruption(mt, "gaussian", args.noise)
    settings = {"model": mt.name, "source": args.source, "facts_total": len(facts),
                "facts_known": facts_known, "facts_selected": len(known),
                "samples": args.samples, "noise": args.noise, "sigma": corruption.sigma,
                "window": args.window, "seed": args.seed, "corruption": corruption.describe(),
                "command": command_line(MODULE, argv, drop=("--summarize-only",))}
    check_resumable(out, settings)
    trace_facts(mt, worker.share(known), corruption, args.samples, args.window, args.seed,
                path=out)
    write_summary(out)


if __name__ == "__main__":
    main()
