"""What edited models write: sampled generations, their fluency and their consistency.

Usage::

    texts = generate(mt, ["Angola's surroundings include"], 40, top_k=5)   # romelib.core.generation
    ngram_entropy(texts)                        # fluency (GE): drops when text repeats itself
    tfidf = default_tfidf()                     # IDF from WikiText-2 (../shared/data/text)
    tfidf.similarity(" ".join(texts), " ".join(reference_texts(mt, record)))   # consistency (RS)

Fluency follows ROME's ``n_gram_entropy``: for each text the entropy (bits) of its
bigram and trigram frequency distributions, weighted 2/3 and 4/3 and averaged, then
averaged over texts (the paper reports it x100 as GE).  Consistency (RS) is the
cosine between unigram TF-IDF vectors of the text generated about the subject and
reference text about the new target.  The paper's references were Wikipedia articles
about other subjects that truly have the new target, with IDF fitted on Wikipedia;
neither is available offline, so here the reference is what the *unedited* model
writes after each ``attribute_prompt`` (other subjects that truly have the new target)
completed with the target itself, and IDF is fitted on WikiText-2 paragraphs.  Words
are split with a small regular expression instead of NLTK's tokenizer.
"""
from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Iterable

from ..core.generation import generate
from ..core.tokens import continuation_text
from ..datasets.corpora import wikitext_paragraphs
from ..datasets.counterfact import targets
from ..datasets.download import missing_message

log = logging.getLogger(__name__)

WORD = re.compile(r"\w+(?:'\w+)?|[^\w\s]")
IDF_WORD = re.compile(r"(?u)\b\w\w+\b")  # scikit-learn's default token pattern


def words(text: str) -> list[str]:
    """Usage: ``words("Rome's 2 cats.")`` -> ``["Rome's", "2", "cats", "."]``."""
    return WORD.findall(text)


def ngram_entropy_of_text(text: str, ns=(2, 3), weights=(2 / 3, 4 / 3)) -> float:
    """ROME's ``compute_n_gram_entropy`` of one text: mean of weighted n-gram entropies (bits).

    Usage: ``ngram_entropy_of_text("the cat sat on the mat")``.
    """
    tokens = words(text)
    entropies = []
    for n, weight in zip(ns, weights):
        counts = Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
        total = sum(counts.values())
        entropy = -sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0
        entropies.append(weight * entropy)
    return sum(entropies) / len(entropies)


def ngram_entropy(texts: str | Iterable[str]) -> float:
    """Fluency of generated texts: mean over texts of ``ngram_entropy_of_text``.

    Usage: ``ngram_entropy(generate(mt, prompts, 50, top_k=5))``; x100 gives the paper's GE.
    """
    if not isinstance(texts, str) and not hasattr(texts, "__iter__"):
        raise TypeError(f"texts must be a text or a list of texts, got {texts!r} ({type(texts).__name__}).")
    texts = [texts] if isinstance(texts, str) else list(texts)
    bad = [t for t in texts if not isinstance(t, str)]
    if bad:
        raise TypeError(f"texts must be strings, got {bad[0]!r} ({type(bad[0]).__name__}) among them.")
    if not texts:
        raise ValueError("ngram_entropy needs at least one text.")
    return sum(ngram_entropy_of_text(t) for t in texts) / len(texts)


class Tfidf:
    """Unigram TF-IDF vectors and their cosine similarity (scikit-learn's conventions).

    Usage: ``tfidf = Tfidf.fit(documents); tfidf.similarity("a text", "another text")``.
    IDF is ``ln((1 + n) / (1 + df)) + 1``; words never seen in fitting are ignored, as
    in scikit-learn's ``TfidfVectorizer`` that ROME used.
    """

    def __init__(self, idf: dict[str, float], source: str = "custom"):
        self.idf, self.source = idf, source

    @classmethod
    def fit(cls, documents: Iterable[str], source: str = "custom") -> Tfidf:
        document_frequency, n = Counter(), 0
        for document in documents:
            document_frequency.update(set(IDF_WORD.findall(document.lower())))
            n += 1
        if n == 0:
            raise ValueError("Tfidf.fit needs at least one document.")
        idf = {w: math.log((1 + n) / (1 + df)) + 1 for w, df in document_frequency.items()}
        return cls(idf, source)

    def vector(self, text: str) -> dict[str, float]:
        """Usage: ``tfidf.vector("Paris is in France")`` -> ``{"paris": 0.7, ...}`` (unit norm)."""
        counts = Counter(w for w in IDF_WORD.findall(text.lower()) if w in self.idf)
        weights = {w: c * self.idf[w] for w, c in counts.items()}
        norm = math.sqrt(sum(v * v for v in weights.values()))
        return {w: v / norm for w, v in weights.items()} if norm else {}

    def similarity(self, text_a: str, text_b: str) -> float:
        """Cosine of the two texts' TF-IDF vectors, 0 when either has no known word."""
        a, b = self.vector(text_a), self.vector(text_b)
        return sum(v * b.get(w, 0.0) for w, v in a.items())


def default_tfidf(fallback_documents: Iterable[str] = ()) -> Tfidf:
    """IDF fitted on WikiText-2 paragraphs; without them (shared data or cache), on ``fallback_documents``.

    Usage: ``tfidf = default_tfidf([p for r in records for p in r["attribute_prompts"]])``.
    The fallback is logged and recorded in ``tfidf.source``: its numbers are not
    comparable with those of the WikiText-2 IDF.
    """
    paragraphs = wikitext_paragraphs()
    if paragraphs:
        return Tfidf.fit(paragraphs, source="wikitext-2 (valid+test paragraphs)")
    fallback = list(fallback_documents)
    if not fallback:
        raise FileNotFoundError(f"{missing_message('wikitext-2')}, and no fallback documents were "
                                "given to fit TF-IDF on")
    log.warning("%s; fitting TF-IDF on %d fallback documents instead.", missing_message("wikitext-2"),
                len(fallback))
    return Tfidf.fit(fallback, source=f"fallback ({len(fallback)} documents)")


def reference_texts(mt, record: dict, max_new_tokens: int = 40, seed: int = 0,
                    n_prompts: int | None = None) -> list[str]:
    """Reference text about the new target: the unedited model continues each attribute
    prompt completed with ``target_new`` ("Vostok Station is located in Antarctica...").

    Usage: ``refs = reference_texts(mt, record)`` *before* editing the model.
    """
    target_new, _ = targets(record)
    prompts = list(dict.fromkeys(record["attribute_prompts"]))[:n_prompts]
    seeded = [p + continuation_text(p, target_new) for p in prompts]
    return generate(mt, seeded, max_new_tokens, top_k=5, seed=seed)
