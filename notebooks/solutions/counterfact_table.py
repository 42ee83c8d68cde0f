"""Solutions to the exercises of notebook 09 (CounterFact table)."""
import math
from collections import Counter

from romelib.evaluation import fluency


def es_ps_ns(scores):
    """Usage: ``es_ps_ns(romelib.evaluation.metrics.score_record(mt, record))`` -> {"ES": 1.0, "PS": 0.5, ...}."""
    def probability(token_log_probs):                    # per-token (geometric mean) probability
        return math.exp(sum(token_log_probs) / len(token_log_probs))

    def share(group, winner, loser):                     # prompts where `winner` is more likely
        pairs = zip(scores[group][winner], scores[group][loser])
        wins = [probability(a) > probability(b) for a, b in pairs]
        return sum(wins) / len(wins)
    return {"ES": share("rewrite", "new", "true"), "PS": share("paraphrase", "new", "true"),
            "NS": share("neighborhood", "true", "new")}


def ngram_entropy(text):
    """Usage: ``ngram_entropy("the cat sat on the mat")`` -> bits; low for repetitive text."""
    tokens = fluency.words(text)
    weighted = []
    for n, weight in ((2, 2 / 3), (3, 4 / 3)):
        counts = Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
        total = sum(counts.values())
        entropy = -sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0
        weighted.append(weight * entropy)
    return sum(weighted) / len(weighted)


def counterfact_score(es, ps, ns):
    """Usage: ``counterfact_score(100, 89, 70.4)`` -> 84.4."""
    if min(es, ps, ns) == 0:
        return 0.0
    return 3 / (1 / es + 1 / ps + 1 / ns)
