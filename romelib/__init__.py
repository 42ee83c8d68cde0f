"""romelib: causal tracing and rank-one model editing (ROME), small enough to read.

Usage::

    import romelib
    mt = romelib.load_model()
    romelib.predict(mt, "The Space Needle is located in the city of", k=3)
"""
import os

from .components import ARCHITECTURES, Architecture, architecture_for
from .hooks import StopForward, Trace, TraceDict, hook_name, hooks
from .models import DEFAULT_MODEL, ModelAndTokenizer, load_model, wrap_model
from .tokens import (Prediction, TargetScore, encode, find_subject_range, make_inputs,
                     next_token_probs, predict, target_log_probs, target_probability,
                     token_strings)

from .editing import EditHandle, EditRequest, edit
from .hparams import load_hparams

__version__ = "0.1.0"


def fast_mode() -> bool:
    """Usage: ``FAST = romelib.fast_mode()``: True when ``ROMELIB_FAST=1`` (CI sets it)."""
    return os.environ.get("ROMELIB_FAST", "0") not in ("", "0", "false", "False")

# --- tracing (issue 3) exports below ---
from .corruption import Corruption, embedding_sigma, make_corruption
from .data import Fact, facts_known_by, load_facts
from .tracing import TraceResult, trace
from .plotting import plot_average_effects, plot_severed, plot_trace, plot_traces

# --- editing (issue 4) exports below ---
from .rome import ROMEHyperParams, apply_rome, compute_key, compute_value
from .texts import context_prefixes, text_source

# --- evaluation (issue 5) exports below ---
from .baselines import FTHyperParams
from .counterfact import load_counterfact, validate_record
from .evaluation import EvaluationResult, evaluate_counterfact
from .fluency import generate_texts, ngram_entropy


def __getattr__(name: str):
    """``romelib.key_statistics`` and ``romelib.KeyStatistics`` load ``romelib.stats`` on first
    use (PEP 562), so ``python -m romelib.stats`` runs a module not yet imported (no runpy warning)."""
    if name in ("KeyStatistics", "key_statistics", "stats"):
        import importlib
        stats = importlib.import_module(".stats", __name__)
        return stats if name == "stats" else getattr(stats, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
