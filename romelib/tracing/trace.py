"""Causal tracing (Meng et al. 2022, section 2): which hidden states carry a fact?

Usage::

    result = romelib.trace(mt, "The Space Needle is located in the city of", "Space Needle")
    result.scores            # (positions, layers): P(target) after restoring one state
    result.low_score, result.high_score
    romelib.trace(mt, prompt, subject, kind="mlp")              # MLP outputs, window of 10 layers
    romelib.trace(mt, prompt, subject, corruption="zero")       # another corruption
    romelib.trace(mt, prompt, subject, sever="mlp")             # Figure 3: severed MLP paths

Three runs are compared.  The clean run predicts the target with probability
``high_score``.  The corrupted run hides the subject (noise on its token embeddings) and
predicts it with ``low_score``.  A restored run is the corrupted run in which one state
is put back to its clean value; ``scores[p, l]`` is the target's probability (averaged
over the noise samples) after restoring

* ``kind="hidden"``: the output of block ``l`` at position ``p``;
* ``kind="mlp"`` / ``"attn"``: the MLP (attention) outputs at position ``p`` in the
  ``window`` layers centred on ``l`` (as the paper does for its Figures 1 and 2).

``sever="mlp"`` (or ``"attn"``) restores the block output while keeping that component's
outputs at position ``p`` frozen at their corrupted values in every later layer.

Two engines compute the same numbers.  ``engine="reference"`` is the straightforward one
of the paper's code: one forward of ``samples + 1`` rows per (position, layer).  The
default ``engine="fast"`` (see :mod:`romelib.tracing.fast`) skips what a restoration cannot
change and batches restorations; a test checks that both agree.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..core.tokens import encode, find_subject_range, target_tokens, token_strings
from .corruption import Corruption, corrupt_embeddings, make_corruption
from .fast import fast_scores
from .reference import last_token_probs, reference_scores

KINDS = ("hidden", "mlp", "attn")
ENGINES = ("fast", "reference")


@dataclass
class TraceResult:
    """Scores of one causal trace; ``scores[p, l]`` is NaN where position ``p`` was not traced.

    Usage: ``result.scores.shape``, ``result.indirect_effects``, ``result.settings``.
    """

    scores: torch.Tensor               # (positions, layers) target probability when restored
    low_score: float                   # corrupted run
    high_score: float                  # clean run
    tokens: list[str]
    subject_range: tuple[int, int]     # (start, end), end exclusive
    kind: str
    prompt: str
    subject: str
    target: str                        # the target token as text
    target_id: int
    settings: dict = field(default_factory=dict)

    @property
    def indirect_effects(self) -> torch.Tensor:
        """``scores - low_score``: how much restoring each state brings the fact back."""
        return self.scores - self.low_score

    @property
    def total_effect(self) -> float:
        """``high_score - low_score``: how much the corruption removed."""
        return self.high_score - self.low_score

    @property
    def last_subject_token(self) -> int:
        return self.subject_range[1] - 1

    def to_dict(self) -> dict:
        """A JSON-ready dict (scores as nested lists)."""
        return {"scores": [[None if math.isnan(x) else round(x, 6) for x in row]
                           for row in self.scores.tolist()],
                "low_score": self.low_score, "high_score": self.high_score,
                "tokens": self.tokens, "subject_range": list(self.subject_range),
                "kind": self.kind, "prompt": self.prompt, "subject": self.subject,
                "target": self.target, "target_id": self.target_id, "settings": self.settings}

    @classmethod
    def from_dict(cls, record: dict) -> TraceResult:
        scores = torch.tensor([[math.nan if x is None else x for x in row]
                               for row in record["scores"]])
        return cls(scores, record["low_score"], record["high_score"], record["tokens"],
                   tuple(record["subject_range"]), record["kind"], record["prompt"],
                   record["subject"], record["target"], record["target_id"], record["settings"])


def trace(mt, prompt: str, subject: str, *, kind: str = "hidden", noise: float = 3.0,
          samples: int = 10, window: int = 10, target: str | None = None, seed: int = 0,
          corruption: str | Corruption = "gaussian", sigma: float | None = None,
          sever: str | None = None, positions: Sequence[int] | None = None,
          engine: str = "fast") -> TraceResult:
    """Causal trace of one fact: restore each (position, layer) state of the corrupted run.

    Usage: ``trace(mt, "The Space Needle is located in the city of", "Space Needle")``.
    ``noise`` is the Gaussian (or uniform) noise's std in units of ``sigma``, the embedding
    spread measured on the reference subjects; ``corruption`` is ``"gaussian"``,
    ``"uniform"``, ``"zero"``, ``"replace"`` or a :class:`Corruption`; ``target`` defaults to
    the model's top clean prediction; ``positions`` limits the positions traced.
    """
    _check_options(kind, engine, sever, samples, window)
    if not isinstance(corruption, Corruption):
        corruption = make_corruption(mt, corruption, noise, sigma)
    ids = torch.tensor([encode(mt, prompt)], device=mt.device)
    subject_range = find_subject_range(mt, prompt, subject)
    positions = _check_positions(positions, ids.shape[1])
    embeddings = corrupt_embeddings(mt, corruption, prompt, subject, samples, seed)
    clean_probs = last_token_probs(mt, ids)
    target_id = (int(clean_probs.argmax()) if target is None
                 else target_tokens(mt, prompt, target)[1][0])
    if engine == "fast":
        scores, low = fast_scores(mt, ids, embeddings, subject_range, target_id, kind,
                                  window, sever, positions)
    else:
        scores, low = reference_scores(mt, ids, embeddings, target_id, kind, window, sever,
                                       positions)
    settings = {"noise": corruption.noise, "corruption": corruption.kind,
                "sigma": corruption.sigma, "samples": embeddings.shape[0], "window": window,
                "seed": seed, "sever": sever, "engine": engine,
                "description": corruption.describe()}
    return TraceResult(scores, low, float(clean_probs[target_id]), token_strings(mt, ids[0]),
                       subject_range, kind, prompt, subject, mt.tokenizer.decode([target_id]),
                       target_id, settings)


def _check_options(kind, engine, sever, samples, window) -> None:
    if kind not in KINDS:
        raise ValueError(f"Unknown kind {kind!r}; choose one of {KINDS}.")
    if engine not in ENGINES:
        raise ValueError(f"Unknown engine {engine!r}; choose one of {ENGINES}.")
    if sever not in (None, "mlp", "attn") or (sever and kind != "hidden"):
        raise ValueError(f"sever={sever!r}: use None, 'mlp' or 'attn', and only with kind='hidden'.")
    if samples < 1 or window < 1:
        raise ValueError(f"samples ({samples}) and window ({window}) must be at least 1.")


def _check_positions(positions, length: int) -> list[int]:
    if positions is None:
        return list(range(length))
    positions = sorted({int(p) % length for p in positions if -length <= int(p) < length})
    if not positions:
        raise ValueError(f"No valid position to trace; the prompt has {length} tokens.")
    return positions


