"""Check the project's own fact list and edit cases against a model.

Usage::

    report = check_known_facts(mt, load_fact_records("project")); report.known_fraction
    check_counterfact_cases(mt, load_counterfact("project")).summary()
    python -m romelib.experiments.factcheck             # the same, as a report

Two questions are asked, as in the ROME paper (Meng et al., 2022):

* a fact of ``data/known_facts.json`` is *known* when the model's top-1 next token after
  the prompt is the first token of " " + attribute (how known_1000 was filtered);
* an edit case of ``data/counterfact_cases.json`` starts from a known fact when
  ``target_true`` is more likely than ``target_new`` after the prompt, comparing the mean
  log-probability per token (CounterFact's comparison); the same test is reported for the
  paraphrase and neighbourhood prompts, and the reverse one (``target_new`` wins) for the
  attribute prompts, whose subjects truly have ``target_new``.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from ..core.generation import generate
from ..core.tokens import next_token_probs, target_log_probs, target_tokens

PREDICTION_TOKENS = 10  # length of the greedy continuation stored as `prediction`


def _require(records: Sequence[dict], keys: Sequence[str], what: str) -> None:
    for index, record in enumerate(records):
        missing = [k for k in keys if k not in record]
        if missing:
            raise ValueError(f"{what} record {index} lacks {missing}; every record needs {list(keys)} "
                             f"(see data/README.md). The record: {record!r}")


def greedy_continuations(mt, prompts: Sequence[str], max_new_tokens: int = PREDICTION_TOKENS) -> list[str]:
    """Usage: ``greedy_continuations(mt, ["The Space Needle is in the city of"])`` -> ``[" Seattle, ..."]``."""
    return generate(mt, list(prompts), max_new_tokens, include_prompt=False)


def top1_matches(mt, prompts: Sequence[str], answers: Sequence[str]) -> list[bool]:
    """Whether the top-1 next token after each prompt is the first token of its answer.

    Usage: ``top1_matches(mt, ["The Eiffel Tower is in the city of"], ["Paris"])`` -> ``[True]``.
    """
    if len(prompts) != len(answers):
        raise ValueError(f"Got {len(prompts)} prompts but {len(answers)} answers.")
    top = next_token_probs(mt, list(prompts)).argmax(-1).tolist()
    return [best == target_tokens(mt, p, a)[1][0] for best, p, a in zip(top, prompts, answers)]


@dataclass
class KnownFactsReport:
    """Outcome of ``check_known_facts``: how many facts the model knows, overall and per relation."""

    known: list[bool]
    predictions: list[str]
    changed_predictions: int                 # recomputed `prediction` differs from the stored one
    by_relation: dict[str, tuple[int, int]]  # relation_id -> (known, total)

    @property
    def known_fraction(self) -> float:
        return sum(self.known) / max(len(self.known), 1)


def check_known_facts(mt, facts: Sequence[dict], max_new_tokens: int = PREDICTION_TOKENS) -> KnownFactsReport:
    """Recompute `prediction` and the known flag of every fact.

    Usage: ``report = check_known_facts(mt, load_known_facts()); report.known_fraction``.
    """
    _require(facts, ("prompt", "attribute", "relation_id"), "Known-fact")
    prompts = [f["prompt"] for f in facts]
    known = top1_matches(mt, prompts, [f["attribute"] for f in facts])
    predictions = greedy_continuations(mt, prompts, max_new_tokens) if max_new_tokens else []
    changed = sum(p != f.get("prediction") for p, f in zip(predictions, facts))
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for fact, is_known in zip(facts, known):
        counts[fact["relation_id"]][0] += int(is_known)
        counts[fact["relation_id"]][1] += 1
    return KnownFactsReport(known, predictions, changed, {r: tuple(c) for r, c in sorted(counts.items())})


def prefers_first(mt, prompts: Sequence[str], first: Sequence[str], second: Sequence[str]) -> list[bool]:
    """Whether ``first[i]`` has a higher mean log-probability per token than ``second[i]``.

    Usage: ``prefers_first(mt, ["Danielle Darrieux's mother tongue is"], ["French"], ["English"])``.
    """
    if not len(prompts) == len(first) == len(second):
        raise ValueError(f"Got {len(prompts)} prompts, {len(first)} first and {len(second)} second targets; "
                         "give one of each per prompt.")
    both = target_log_probs(mt, list(prompts) * 2, list(first) + list(second))
    means = [sum(lp) / len(lp) for lp in both]
    return [a > b for a, b in zip(means[:len(prompts)], means[len(prompts):])]


@dataclass
class CounterfactReport:
    """Outcome of ``check_counterfact_cases``; each list has one entry per case."""

    true_preferred: list[bool]            # on the rewrite prompt
    paraphrase_fraction: list[float]      # paraphrase prompts where target_true wins
    neighborhood_fraction: list[float]    # neighbourhood prompts where target_true wins
    attribute_fraction: list[float]       # attribute prompts where target_new wins

    @staticmethod
    def _mean(values) -> float:
        return sum(values) / max(len(values), 1)

    def summary(self) -> dict[str, float]:
        """Usage: ``report.summary()`` -> the four fractions averaged over cases."""
        return {"true_preferred": self._mean(self.true_preferred),
                "paraphrase": self._mean(self.paraphrase_fraction),
                "neighborhood": self._mean(self.neighborhood_fraction),
                "attribute": self._mean(self.attribute_fraction)}


def check_counterfact_cases(mt, cases: Sequence[dict]) -> CounterfactReport:
    """Compare target_true with target_new on every prompt of every case.

    Usage: ``check_counterfact_cases(mt, load_counterfact_cases()).summary()``.
    """
    _require(cases, ("requested_rewrite", "paraphrase_prompts", "neighborhood_prompts", "attribute_prompts"),
             "CounterFact")
    prompts, firsts, seconds, owners = [], [], [], []
    for index, case in enumerate(cases):
        rewrite = case["requested_rewrite"]
        true, new = rewrite["target_true"]["str"], rewrite["target_new"]["str"]
        groups = {"rewrite": [rewrite["prompt"].format(rewrite["subject"])],
                  "paraphrase": case["paraphrase_prompts"], "neighborhood": case["neighborhood_prompts"],
                  "attribute": case["attribute_prompts"]}
        for group, group_prompts in groups.items():
            winner, loser = (new, true) if group == "attribute" else (true, new)
            prompts += group_prompts
            firsts += [winner] * len(group_prompts)
            seconds += [loser] * len(group_prompts)
            owners += [(index, group)] * len(group_prompts)
    results: dict[tuple[int, str], list[bool]] = defaultdict(list)
    for owner, won in zip(owners, prefers_first(mt, prompts, firsts, seconds)):
        results[owner].append(won)

    def fraction(index, group):
        won = results[(index, group)]
        return sum(won) / max(len(won), 1)

    indices = range(len(cases))
    return CounterfactReport([results[(i, "rewrite")][0] for i in indices],
                             [fraction(i, "paraphrase") for i in indices],
                             [fraction(i, "neighborhood") for i in indices],
                             [fraction(i, "attribute") for i in indices])


def format_report(facts_report: KnownFactsReport, cases_report: CounterfactReport, model_name: str) -> str:
    """Usage: ``print(format_report(facts_report, cases_report, mt.name))``."""
    known, total = sum(facts_report.known), len(facts_report.known)
    lines = [f"model: {model_name}",
             f"known_facts.json: {known}/{total} known ({facts_report.known_fraction:.1%}); "
             f"{facts_report.changed_predictions} stored predictions differ from the recomputed ones",
             "  per relation: " + ", ".join(f"{r} {k}/{n}" for r, (k, n) in facts_report.by_relation.items())]
    summary = cases_report.summary()
    lines.append(f"counterfact_cases.json: {sum(cases_report.true_preferred)}/{len(cases_report.true_preferred)} "
                 f"cases prefer target_true ({summary['true_preferred']:.1%}); target_true wins on "
                 f"{summary['paraphrase']:.1%} of paraphrase and {summary['neighborhood']:.1%} of neighbourhood "
                 f"prompts; target_new wins on {summary['attribute']:.1%} of attribute prompts")
    weak = [i for i, (preferred, neighborhood) in enumerate(zip(cases_report.true_preferred,
                                                                   cases_report.neighborhood_fraction))
            if not preferred or neighborhood < 0.6]
    lines.append(f"  cases (by position) not preferring target_true or below 60% on neighbourhood: {weak or 'none'}")
    return "\n".join(lines)
