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

from ..core.checks import check_choice, check_int, check_text
from ..core.cost import (
    FLOPS_PER_BYTE,
    Work,
    attention_dims,
    attention_flops,
    check_context,
    check_work,
    per_token_layer_flops,
    unembedding_flops,
)
from ..core.tokens import encode, find_subject_range, token_strings
from .corruption import CORRUPTIONS, NOISY, Corruption, corrupt_embeddings, make_corruption
from .fast import fast_scores
from .reference import answer_ids, answer_log_probs, reference_scores

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
    tokens: list[str]                  # the prompt's tokens (one per row of scores)
    subject_range: tuple[int, int]     # (start, end), end exclusive
    kind: str
    prompt: str
    subject: str
    target: str                        # the answer as text (one or several tokens)
    target_ids: list[int]              # its tokens; the probability is their product
    settings: dict = field(default_factory=dict)

    @property
    def target_id(self) -> int:
        """The answer's first token (the whole answer when it is one token)."""
        return self.target_ids[0]

    @property
    def probability_label(self) -> str:
        """Usage: ``result.probability_label`` -> ``"p(Seattle)"`` or ``"p(San Francisco), 2 tokens"``."""
        text = f"p({self.target.strip()})"
        return text if len(self.target_ids) == 1 else f"{text}, {len(self.target_ids)} tokens"

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
                "target": self.target, "target_ids": self.target_ids, "settings": self.settings}

    @classmethod
    def from_dict(cls, record: dict) -> TraceResult:
        scores = torch.tensor([[math.nan if x is None else x for x in row]
                               for row in record["scores"]])
        return cls(scores, record["low_score"], record["high_score"], record["tokens"],
                   tuple(record["subject_range"]), record["kind"], record["prompt"],
                   record["subject"], record["target"],
                   record.get("target_ids") or [record["target_id"]], record["settings"])


def trace(mt, prompt: str, subject: str, *, kind: str = "hidden", noise: float = 3.0,
          samples: int = 10, window: int = 10, target: str | None = None, seed: int = 0,
          corruption: str | Corruption = "gaussian", sigma: float | None = None,
          sever: str | None = None, positions: Sequence[int] | None = None,
          engine: str = "fast", occurrence: int | None = None, max_seconds: float | None = 600,
          progress: bool | None = None) -> TraceResult:
    """Causal trace of one fact: restore each (position, layer) state of the corrupted run.

    Usage: ``trace(mt, "The Space Needle is located in the city of", "Space Needle")``.
    ``noise`` is the Gaussian (or uniform) noise's std in units of ``sigma``, the embedding
    spread measured on the reference subjects; ``corruption`` is ``"gaussian"``,
    ``"uniform"``, ``"zero"``, ``"replace"`` or a :class:`Corruption`; ``target`` defaults to
    the model's top clean prediction, and an answer of several tokens (``"San Francisco"``)
    is scored as a whole: the product of its tokens' probabilities, each after the ones
    before it.  ``positions`` limits the positions traced; ``occurrence`` says which
    occurrence of a subject that appears twice is corrupted.  The work is estimated first:
    above ``max_seconds`` (at a nominal speed of the device) the trace is refused with the
    estimate; ``max_seconds=None`` runs it anyway, with a progress bar.
    """
    check_text("prompt", prompt)
    kind, engine, sever = _check_options(kind, engine, sever)
    samples = check_int("samples", samples, minimum=1)
    window = check_int("window", window, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"progress must be True, False or None (automatic), got {progress!r}.")
    noisy = corruption.kind in NOISY if isinstance(corruption, Corruption) else corruption in NOISY
    if not noisy and (noise != 3.0 or sigma is not None):
        given = ", ".join(f"{n}={v!r}" for n, v in (("noise", noise), ("sigma", sigma))
                          if v is not None and not (n == "noise" and v == 3.0))
        raise ValueError(f"{given} given with corruption={getattr(corruption, 'kind', corruption)!r}, which "
                         f"adds no noise; noise and sigma apply to {' and '.join(NOISY)} only: leave them out.")
    if isinstance(corruption, Corruption) and (noise != 3.0 or sigma is not None):
        raise ValueError(f"noise={noise!r}, sigma={sigma!r} given beside a Corruption, which carries its own "
                         f"(noise {corruption.noise:g}, sigma {corruption.sigma:g}); set them in make_corruption.")
    if not isinstance(corruption, Corruption):
        corruption = make_corruption(mt, check_choice("corruption", corruption, CORRUPTIONS), noise,
                                     None if sigma is None else sigma)
    prompt_ids = encode(mt, prompt)
    check_context(mt, len(prompt_ids), "The prompt")
    subject_range = find_subject_range(mt, prompt, subject, occurrence)
    positions = _check_positions(positions, len(prompt_ids))
    target_ids = answer_ids(mt, prompt, target)
    ids = torch.tensor([prompt_ids + target_ids[:-1]], device=mt.device)
    check_context(mt, ids.shape[1], "The prompt with its answer")
    work = trace_work(mt, ids.shape[1], len(target_ids), positions, subject_range, kind, samples,
                      engine)
    check_work(mt, work, max_seconds, "pass max_seconds=None")
    embeddings = corrupt_embeddings(mt, corruption, prompt, subject, samples, seed, occurrence,
                                    target_ids[:-1])
    show = work.seconds(mt.device) > 30 if progress is None else progress
    if engine == "fast":
        scores, low = fast_scores(mt, ids, embeddings, subject_range, target_ids, kind,
                                  window, sever, positions, progress=show)
    else:
        scores, low = reference_scores(mt, ids, embeddings, target_ids, kind, window, sever,
                                       positions)
    with torch.no_grad():
        logits = mt.model(input_ids=ids, logits_to_keep=len(target_ids)).logits
    high = float(answer_log_probs(mt, logits, target_ids).exp()[0])
    settings = {"noise": corruption.noise, "corruption": corruption.kind,
                "sigma": corruption.sigma, "samples": embeddings.shape[0], "window": window,
                "seed": seed, "sever": sever, "engine": engine, "occurrence": occurrence,
                "description": corruption.describe()}
    return TraceResult(scores, low, high, token_strings(mt, prompt_ids), subject_range, kind,
                       prompt, subject, mt.tokenizer.decode(target_ids), target_ids, settings)


def trace_work(mt, tokens: int, scored: int, positions, subject_range, kind: str, samples: int,
               engine: str) -> Work:
    """The work of a trace, counted before it starts (see :mod:`romelib.core.cost`).

    Usage: ``trace_work(mt, 10, 1, range(10), (2, 4), "hidden", 10, "fast")``.  Both engines
    first run the clean prompt and the corrupted samples through every layer.  The fast engine
    then runs, per traced position p at or after the subject, every layer above each
    restoration for the tokens from p on (their attention reading all ``tokens`` keys, those of
    the positions before p copied into a cache once per restoration), and unembeds one row per
    (position, layer, sample); the reference engine runs the whole prompt (samples + 1 rows)
    once per (position, layer) with logits everywhere.
    """
    layers = mt.num_layers
    block, unembed = per_token_layer_flops(mt), unembedding_flops(mt)
    vocabulary = mt.module("unembed").weight.shape[0]
    kv_width = attention_dims(mt)[1]
    whole_prompt = tokens * block + attention_flops(mt, tokens, tokens / 2)   # one layer, causal
    flops = (samples + 1) * layers * whole_prompt + (samples + 1) * scored * unembed
    if engine == "reference":
        forwards = len(positions) * layers
        flops += forwards * (samples + 1) * (layers * whole_prompt + tokens * unembed)
        memory = (samples + 1) * tokens * vocabulary * 4 * 2
    else:
        traced = [p for p in positions if p >= subject_range[0]]
        job_layers = layers * (layers + 1) / 2 * (1.4 if kind != "hidden" else 1.0)
        for p in traced:
            fed = tokens - p
            flops += job_layers * samples * (fed * block + attention_flops(mt, fed, tokens))
            flops += job_layers * samples * p * kv_width * 2 * 4 * FLOPS_PER_BYTE     # the cache copies
        flops += len(traced) * layers * samples * scored * unembed
        memory = (samples * tokens * mt.d_model * 4 * (3 * layers + 2) + 4 * 2048 * samples * layers
                  + job_layers * samples * tokens * kv_width * 2 * 4)          # the largest cache
    return Work(flops, memory, f"trace of {len(positions)} positions x {layers} layers, "
                               f"{samples} samples, {tokens} tokens ({engine} engine)")


def _check_options(kind, engine, sever):
    kind = check_choice("kind", kind, KINDS)
    engine = check_choice("engine", engine, ENGINES)
    check_choice("sever", sever, (None, "mlp", "attn"))
    if sever and kind != "hidden":
        raise ValueError(f"sever={sever!r} needs kind='hidden' (it freezes a path while a hidden "
                         f"state is restored), got kind={kind!r}.")
    return kind, engine, sever


def _check_positions(positions, length: int) -> list[int]:
    if positions is None:
        return list(range(length))
    if isinstance(positions, (str, bytes)) or not hasattr(positions, "__iter__"):
        raise TypeError(f"positions must be a list of token positions, got {positions!r}.")
    checked = sorted({check_int("positions", p, minimum=-length, maximum=length - 1) % length
                      for p in positions})
    if not checked:
        raise ValueError(f"positions is empty; give token positions of the prompt (0..{length - 1}).")
    return checked
