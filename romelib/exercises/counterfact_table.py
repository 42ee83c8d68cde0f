"""Exercises of notebook 09 (CounterFact table): ES/PS/NS of one record, the n-gram entropy, the Score.

Usage::

    romelib.exercises.check_es_ps_ns(es_ps_ns)
    romelib.exercises.check_ngram_entropy(ngram_entropy)
    romelib.exercises.check_counterfact_score(counterfact_score)
"""
from __future__ import annotations

import math
from collections import Counter

from ..evaluation.fluency import ngram_entropy_of_text, words
from ..evaluation.metrics import harmonic_mean, record_metrics
from .feedback import Mistake, call, compare, exercise, expect, number

# Token log-probabilities of the new and the true target after each prompt, as romelib.evaluation.
# metrics.score_record returns them; the new target has two tokens, the true one a single token,
# so comparing whole-target probabilities instead of per-token ones flips some answers.
EXAMPLE_SCORES = {
    "rewrite": {"new": [[-0.5, -0.5]], "true": [[-0.7]]},
    "paraphrase": {"new": [[-0.4, -0.6], [-2.0, -0.5], [-0.1, -0.2]], "true": [[-0.8], [-0.3], [-2.5]]},
    "neighborhood": {"new": [[-1.0, -0.2], [-3.0, -1.0], [-0.2, -0.2], [-2.0, -2.0]],
                     "true": [[-0.5], [-0.1], [-0.4], [-1.0]]},
}
TEXTS = ("The tower was built in 1889 for the World's Fair, and the tower is now the most visited "
         "monument in the country.",
         "Paris Paris Paris Paris Paris Paris Paris Paris",
         "the cat sat on the mat and the cat sat on the hat")


@exercise("es_ps_ns")
def check_es_ps_ns(es_ps_ns) -> str:
    """Check ``es_ps_ns(scores) -> {"ES": ..., "PS": ..., "NS": ...}`` (fractions) for one record.

    Usage: ``romelib.exercises.check_es_ps_ns(es_ps_ns)``; compared with
    ``romelib.record_metrics`` on made-up token log-probabilities.
    """
    answer = call(es_ps_ns, {g: {k: [list(lp) for lp in v] for k, v in s.items()} for g, s in EXAMPLE_SCORES.items()})
    expect(isinstance(answer, dict) and {"ES", "PS", "NS"} <= set(answer),
           'return a dict with the keys "ES", "PS" and "NS".')
    expected = record_metrics(EXAMPLE_SCORES)
    product = record_metrics(EXAMPLE_SCORES, length_normalized=False)
    for metric, magnitude in (("ES", "EM"), ("PS", "PM"), ("NS", "NM")):
        compare(number(answer[metric], metric), expected[metric], {
            "compare per-token probabilities, exp(mean log-probability), as ROME's code does: a target of "
            "several tokens would otherwise always lose against a shorter one.": product[metric],
            "neighbourhood success is P(true) > P(new): the neighbours must keep their true answer.":
                1 - expected["NS"] if metric == "NS" else None,
            "return fractions (0.5), not percentages.": 100 * expected[metric],
            f"that is the magnitude {magnitude} (a difference of probabilities); the success {metric} is "
            "the fraction of prompts where the right target wins.": expected[magnitude],
        }, what=metric)
    return ", ".join(f"{m} = {expected[m]:.2f}" for m in ("ES", "PS", "NS"))


def _entropy(tokens: list, n: int, log=math.log2) -> float:
    counts = Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
    total = sum(counts.values())
    return -sum(c / total * log(c / total) for c in counts.values()) if total else 0.0


def _typical_entropies(text: str) -> dict:
    tokens = words(text)
    return {
        "use logarithms in base 2 (bits), not natural logarithms.":
            (2 / 3 * _entropy(tokens, 2, math.log) + 4 / 3 * _entropy(tokens, 3, math.log)) / 2,
        "weight the bigram entropy by 2/3 and the trigram entropy by 4/3.":
            (_entropy(tokens, 2) + _entropy(tokens, 3)) / 2,
        "average the two weighted entropies (divide their sum by 2).":
            2 / 3 * _entropy(tokens, 2) + 4 / 3 * _entropy(tokens, 3),
        "use bigrams and trigrams (n = 2 and 3).": (2 / 3 * _entropy(tokens, 1) + 4 / 3 * _entropy(tokens, 2)) / 2,
        "split the text with fluency.words: punctuation marks count as words.":
            (2 / 3 * _entropy(text.split(), 2) + 4 / 3 * _entropy(text.split(), 3)) / 2,
    }


@exercise("ngram_entropy")
def check_ngram_entropy(ngram_entropy) -> str:
    """Check ``ngram_entropy(text)``: ROME's weighted bigram and trigram entropy, in bits.

    Usage: ``romelib.exercises.check_ngram_entropy(ngram_entropy)``; compared with
    ``romelib.evaluation.fluency.ngram_entropy_of_text`` on a fluent, a repetitive and a short text.
    """
    for text in TEXTS:
        answer = number(call(ngram_entropy, text), "the entropy")
        compare(answer, ngram_entropy_of_text(text), _typical_entropies(text),
                what=f"the entropy of {text[:30]!r}...", rtol=1e-6)
    fluent, stuck = (ngram_entropy_of_text(t) for t in TEXTS[:2])
    return f"{fluent:.2f} bits for fluent text, {stuck:.2f} for 'Paris Paris ...'"


@exercise("counterfact_score")
def check_counterfact_score(counterfact_score) -> str:
    """Check ``counterfact_score(es, ps, ns)``: the harmonic mean of the three, 0 if any is 0.

    Usage: ``romelib.exercises.check_counterfact_score(counterfact_score)``; compared with
    ``romelib.evaluation.metrics.harmonic_mean``.
    """
    for values in ((100.0, 89.0, 70.4), (22.2, 24.7, 78.1), (100.0, 100.0, 0.0)):
        try:
            answer = number(call(counterfact_score, *values), "the Score")
        except Mistake as mistake:
            if 0.0 in values and "ZeroDivisionError" in str(mistake):
                raise Mistake("a metric of 0 makes the Score 0: handle it before dividing by it.") from None
            raise
        compare(answer, harmonic_mean(values), {
            "that is the arithmetic mean; the Score is the harmonic mean 3 / (1/ES + 1/PS + 1/NS), high "
            "only if all three are.": sum(values) / 3,
            "that is the geometric mean; the Score is the harmonic mean 3 / (1/ES + 1/PS + 1/NS).":
                math.prod(values) ** (1 / 3),
        }, what=f"the Score of ES, PS, NS = {values}", rtol=1e-6)
    return "the harmonic mean: one weak metric pulls the Score down"
