"""Check the project's own fact list and edit cases against a model, as a printed report.

Usage::

    python -m romelib.experiments.factcheck                       # the default model
    python -m romelib.experiments.factcheck --write-predictions   # also store `prediction`s
    python -m romelib.experiments.factcheck --model smollm2-135m

A fact is *known* when the model's top next token is the first token of its attribute
(how known_1000 was filtered); an edit case starts from a known fact when target_true
beats target_new on its prompt (see :mod:`romelib.evaluation.factcheck`).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from ..datasets.counterfact import load_counterfact
from ..datasets.facts import load_fact_records
from ..evaluation.factcheck import check_counterfact_cases, check_known_facts, format_report
from ..paths import project_data
from ..results import write_text
from .launch import Worker, runner_parser


def write_predictions(facts: list[dict], predictions: Sequence[str], path: str | Path) -> None:
    """Usage: ``write_predictions(facts, report.predictions, path)``: store the recomputed `prediction` fields."""
    if len(facts) != len(predictions):
        raise ValueError(f"Got {len(predictions)} predictions for {len(facts)} facts.")
    for fact, prediction in zip(facts, predictions):
        fact["prediction"] = prediction
    write_text(path, json.dumps(facts, indent=2, ensure_ascii=False) + "\n")


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m romelib.experiments.factcheck [--model NAME] [--write-predictions]``."""
    parser = runner_parser("Check data/known_facts.json and data/counterfact_cases.json against a model.")
    parser.add_argument("--write-predictions", action="store_true",
                        help="store the recomputed greedy continuations as `prediction` in the facts file")
    parser.add_argument("--facts", default=str(project_data("known_facts.json")))
    parser.add_argument("--cases", default=str(project_data("counterfact_cases.json")))
    args = parser.parse_args(argv)
    worker = Worker.from_environment(args.device)
    worker.require_one_process("A fact check is one short printed report")
    mt = worker.load_model(args.model, args.threads)
    facts, cases = load_fact_records(args.facts), load_counterfact(args.cases)
    facts_report = check_known_facts(mt, facts)
    print(format_report(facts_report, check_counterfact_cases(mt, cases), mt.name))
    if args.write_predictions:
        write_predictions(facts, facts_report.predictions, args.facts)
        print(f"wrote {len(facts)} predictions to {args.facts}")


if __name__ == "__main__":
    main()
