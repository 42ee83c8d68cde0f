"""Hiding the subject from the model: the corrupted run of causal tracing.

Usage::

    corruption = romelib.make_corruption(mt)                   # Gaussian, 3 sigma (the paper's)
    corruption = romelib.make_corruption(mt, "uniform")        # uniform noise, same spread
    corruption = romelib.make_corruption(mt, "zero")           # subject embeddings set to 0
    corruption = romelib.make_corruption(mt, "replace")        # another subject's tokens
    embeddings = corrupt_embeddings(mt, corruption, prompt, subject, samples=10, seed=0)

The paper (Meng et al. 2022, section 2.1) adds Gaussian noise ``N(0, nu^2)`` to the
embeddings of the subject's tokens, with ``nu = 3 sigma`` and ``sigma`` the standard
deviation of embeddings measured over the subjects of its known facts.  All corruptions
act on the output of the embedding module (for Gemma that output is already scaled by
``sqrt(d_model)``), so sigma is measured there too.  "replace" swaps in the tokens of
other subjects with the same number of tokens: the symmetric token replacement that
Zhang & Nanda (2024, "Towards best practices of activation patching") recommend, since
it keeps the corrupted run on the model's input distribution.
"""
from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from ..core.checks import check_choice, check_int, check_number
from ..core.tokens import encode, find_subject_range, subject_char_spans
from ..datasets.facts import reference_facts

CORRUPTIONS = ("gaussian", "uniform", "zero", "replace")
NOISY = ("gaussian", "uniform")          # the corruptions that have a noise level


@dataclass(frozen=True)
class Corruption:
    """How the subject is corrupted.  ``noise`` is the noise's std in units of ``sigma``.

    Usage: ``Corruption("gaussian", noise=3.0, sigma=0.9)``; ``corruption.describe()``.
    """

    kind: str = "gaussian"
    noise: float = 3.0
    sigma: float = 1.0
    replacements: tuple[str, ...] = ()    # candidate subjects for "replace"

    def __post_init__(self):
        check_choice("corruption", self.kind, CORRUPTIONS)
        if self.kind in NOISY:
            # noise = 0 would leave the subject intact: the "corrupted" run is the clean one
            object.__setattr__(self, "noise", check_number("noise", self.noise, minimum=0,
                                                           exclusive_minimum=True))
            object.__setattr__(self, "sigma", check_number("sigma", self.sigma, minimum=0,
                                                           exclusive_minimum=True))

    @property
    def std(self) -> float:
        """The noise's standard deviation on the embedding scale."""
        return self.noise * self.sigma

    @property
    def deterministic(self) -> bool:
        """Zeroing gives the same corrupted run every time: one sample is enough."""
        return self.kind == "zero"

    def describe(self) -> str:
        """Usage: ``corruption.describe()`` -> ``'Gaussian noise 3σ (σ=0.91)'``."""
        if self.kind == "gaussian":
            return f"Gaussian noise {self.noise:g}σ (σ={self.sigma:.3g})"
        if self.kind == "uniform":
            return f"uniform noise, std {self.noise:g}σ (σ={self.sigma:.3g})"
        if self.kind == "zero":
            return "subject embeddings set to zero"
        return "subject replaced by other subjects"


def embedding_sigma(mt, facts=None) -> float:
    """Standard deviation of the embedding-module outputs of subject tokens.

    Usage: ``embedding_sigma(mt)`` over the reference facts' subjects (as tokenised inside
    their prompts), or ``embedding_sigma(mt, facts)`` / ``embedding_sigma(mt, ["Paris"])``.
    """
    facts = reference_facts() if facts is None else facts
    ids: list[int] = []
    for fact in facts:
        if isinstance(fact, str):
            ids += mt.tokenizer(fact, add_special_tokens=False)["input_ids"]
        else:
            start, end = find_subject_range(mt, fact.prompt, fact.subject)
            ids += encode(mt, fact.prompt)[start:end]
    if not ids:
        raise ValueError("No subject tokens to measure sigma on; pass some facts or subjects.")
    with torch.no_grad():
        embeddings = mt.module("embed")(torch.tensor([ids], device=mt.device))
    return float(embeddings.double().std())


def make_corruption(mt, kind: str = "gaussian", noise: float = 3.0, sigma: float | None = None,
                    replacements: Sequence[str] | None = None) -> Corruption:
    """A :class:`Corruption` with sigma measured on the reference subjects when not given.

    Usage: ``make_corruption(mt, "uniform", noise=3.0)``.  ``noise`` and ``sigma`` matter only
    for the noisy corruptions (``"gaussian"``, ``"uniform"``), where they must be positive.
    """
    check_choice("corruption", kind, CORRUPTIONS)
    if kind == "replace" and not replacements:
        replacements = [fact.subject for fact in reference_facts()]
    if kind in NOISY and sigma is None:
        sigma = embedding_sigma(mt)
    return Corruption(kind, noise if kind in NOISY else 0.0, sigma if kind in NOISY else 1.0,
                      tuple(replacements or ()))


def corrupt_embeddings(mt, corruption: Corruption, prompt: str, subject: str, samples: int,
                       seed: int = 0, occurrence: int | None = None,
                       extra_ids: Sequence[int] = ()) -> torch.Tensor:
    """Embedding-module outputs of ``prompt`` with the subject corrupted, (samples, tokens, d).

    Usage: ``corrupt_embeddings(mt, make_corruption(mt), prompt, "Space Needle", 10)``.
    Zeroing returns one row; "replace" returns up to ``samples`` rows, one per other subject.
    ``extra_ids`` are token ids appended after the prompt (an answer's first tokens).
    """
    samples = check_int("samples", samples, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    if not isinstance(corruption, Corruption):
        raise TypeError(f"corruption must be a Corruption (romelib.make_corruption), got "
                        f"{type(corruption).__name__}.")
    ids = torch.tensor([encode(mt, prompt) + list(extra_ids)], device=mt.device)
    start, end = find_subject_range(mt, prompt, subject, occurrence)
    with torch.no_grad():
        clean = mt.module("embed")(ids)                              # (1, tokens, d)
    if corruption.kind == "replace":
        return _replaced(mt, corruption, prompt, subject, samples, seed, occurrence, extra_ids)
    rows = 1 if corruption.deterministic else samples
    embeddings = clean.repeat(rows, 1, 1)
    shape = (rows, end - start, clean.shape[-1])
    generator = torch.Generator().manual_seed(seed)
    if corruption.kind == "zero":
        embeddings[:, start:end] = 0
    elif corruption.kind == "gaussian":
        noise = torch.randn(shape, generator=generator, dtype=torch.float64) * corruption.std
        embeddings[:, start:end] += noise.to(embeddings)
    else:  # uniform on [-a, a] with a = sqrt(3) * std, so that its std is corruption.std
        unit = torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1
        embeddings[:, start:end] += (unit * math.sqrt(3) * corruption.std).to(embeddings)
    return embeddings


def _subject_span(prompt: str, subject: str, occurrence: int | None) -> tuple[int, int]:
    return subject_char_spans(prompt, subject.strip())[occurrence or 0]


def replacement_subjects(mt, prompt: str, subject: str, candidates: Sequence[str],
                         count: int, seed: int = 0, occurrence: int | None = None) -> list[str]:
    """Up to ``count`` other subjects that fill the prompt with the same number of tokens.

    Usage: ``replacement_subjects(mt, prompt, "Space Needle", ["Eiffel Tower", ...], 5)``.
    Only the subject's tokens may differ, so every position keeps its meaning.
    """
    ids = encode(mt, prompt)
    start, end = find_subject_range(mt, prompt, subject, occurrence)
    char, char_end = _subject_span(prompt, subject, occurrence)
    order = sorted(set(candidates) - {subject})
    random.Random(seed).shuffle(order)
    chosen = []
    for other in order:
        filled = prompt[:char] + other.strip() + prompt[char_end:]
        other_ids = encode(mt, filled)
        if (len(other_ids) == len(ids) and other_ids[:start] == ids[:start]
                and other_ids[end:] == ids[end:] and other_ids[start:end] != ids[start:end]):
            chosen.append(other.strip())
            if len(chosen) == count:
                break
    return chosen


def _replaced(mt, corruption, prompt, subject, samples, seed, occurrence, extra_ids) -> torch.Tensor:
    others = replacement_subjects(mt, prompt, subject, corruption.replacements, samples, seed,
                                  occurrence)
    if not others:
        start, end = find_subject_range(mt, prompt, subject, occurrence)
        raise ValueError(
            f"No replacement subject fills {prompt!r} with the same number of tokens as "
            f"{subject!r} ({end - start} subject tokens). Pass candidates of that length: "
            "make_corruption(mt, 'replace', replacements=[...]).")
    char, char_end = _subject_span(prompt, subject, occurrence)
    prompts = [prompt[:char] + other + prompt[char_end:] for other in others]
    ids = torch.tensor([encode(mt, p) + list(extra_ids) for p in prompts], device=mt.device)
    with torch.no_grad():
        return mt.module("embed")(ids)


def with_sigma(corruption: Corruption, sigma: float) -> Corruption:
    """Usage: ``with_sigma(corruption, 0.5)``: the same corruption with another sigma."""
    return replace(corruption, sigma=float(sigma))
