"""romelib: causal tracing and rank-one model editing (ROME), small enough to read.

Usage::

    import romelib
    mt = romelib.load_model()
    romelib.predict(mt, "The Space Needle is located in the city of", k=3)
    result = romelib.trace(mt, "The Space Needle is located in the city of", "Space Needle")
    with romelib.edit(mt, {"prompt": "{} is located in the city of", "subject": "Space Needle",
                           "target_new": {"str": "Paris"}}):
        romelib.predict(mt, "The Space Needle is located in the city of")

The package follows the pipeline (each folder one stage, each module one idea):

* ``romelib.core``: the model and its component table, hooks, tokens, the partial forward
  pass, text generation, hyperparameter files;
* ``romelib.datasets``: known facts, CounterFact records and their one tune/held-out split,
  text corpora;
* ``romelib.tracing``: corrupting the subject, the trace (fast and reference engines),
  averages over many facts;
* ``romelib.editing``: the associative memory, key statistics, context prefixes, ROME (fast
  and reference), MEMIT, the fine-tuning baselines, variants by name, reversible edits;
* ``romelib.evaluation``: scoring targets, CounterFact metrics, fluency, fact checks;
* ``romelib.plots``: figures and notebook widgets;
* ``romelib.experiments``: the programs that produce the saved results (Table 4, where to
  edit, the averages, the sweeps, reproduce); they import the library, never the reverse.
* ``romelib.exercises``: the checkers of the notebooks' coded exercises (``import
  romelib.exercises``), the one part of romelib that prints: it talks to the student.

Beside them: ``romelib.paths`` (every folder), ``romelib.results`` (resumable result
files) and ``romelib.intervals`` (confidence intervals).  The names below are the public
API, grouped by stage.
"""
import os

from .core.components import ARCHITECTURES, Architecture, architecture_for
from .core.generation import generate
from .core.hooks import StopForward, Trace, TraceDict, hook_name, hooks
from .core.hparams import load_hparams
from .core.models import DEFAULT_MODEL, ModelAndTokenizer, load_model, wrap_model
from .core.tokens import (
    Prediction,
    TargetScore,
    encode,
    find_subject_range,
    make_inputs,
    next_token_probs,
    predict,
    target_log_probs,
    target_probability,
    target_tokens,
    token_strings,
)
from .datasets.corpora import text_source
from .datasets.counterfact import (
    CounterFactSplit,
    counterfact_split,
    load_counterfact,
    load_split,
    rewrite_prompt,
    targets,
    validate_record,
)
from .datasets.facts import Fact, facts_known_by, load_facts
from .editing.context_prefixes import context_prefixes
from .editing.finetune import FTHyperParams, compute_ft, compute_ft_l
from .editing.handle import EditHandle, edit
from .editing.key_statistics import KeyStatistics, key_statistics
from .editing.memit import MEMITHyperParams, compute_memit
from .editing.request import ComputedEdit, EditRequest
from .editing.rome import ROMEHyperParams, compute_key, compute_keys, compute_rome, compute_value, rome_update
from .editing.variants import method_and_hparams
from .evaluation.fluency import ngram_entropy
from .evaluation.metrics import (
    EvaluationResult,
    evaluate_counterfact,
    evaluate_record,
    paired_difference,
    record_metrics,
    score_record,
)
from .plots.figures import plot_average_effects, plot_layer_curves, plot_severed, plot_trace, plot_traces
from .tracing.averages import average_effects, severed_effects, trace_facts
from .tracing.corruption import Corruption, corrupt_embeddings, embedding_sigma, make_corruption
from .tracing.reference import restored_probability
from .tracing.trace import KINDS, TraceResult, trace

__version__ = "0.2.0"


def fast_mode() -> bool:
    """Usage: ``FAST = romelib.fast_mode()``: True when ``ROMELIB_FAST=1`` (CI sets it)."""
    return os.environ.get("ROMELIB_FAST", "0") not in ("", "0", "false", "False")


__all__ = [
    # core: the model, hooks, tokens, generation
    "DEFAULT_MODEL", "ModelAndTokenizer", "load_model", "wrap_model", "ARCHITECTURES",
    "Architecture", "architecture_for", "hooks", "hook_name", "Trace", "TraceDict",
    "StopForward", "encode", "token_strings", "make_inputs", "next_token_probs", "predict",
    "Prediction", "target_tokens", "target_log_probs", "target_probability", "TargetScore",
    "find_subject_range", "generate", "load_hparams", "fast_mode",
    # datasets: facts, CounterFact and its split, corpora
    "Fact", "load_facts", "facts_known_by", "load_counterfact", "validate_record",
    "load_split", "counterfact_split", "CounterFactSplit", "rewrite_prompt", "targets",
    "text_source",
    # tracing: corruption, the trace, averages
    "Corruption", "make_corruption", "embedding_sigma", "corrupt_embeddings", "trace",
    "TraceResult", "KINDS", "restored_probability", "trace_facts", "average_effects",
    "severed_effects",
    # editing: requests, methods, reversible edits, statistics
    "EditRequest", "ComputedEdit", "edit", "EditHandle", "ROMEHyperParams", "compute_rome",
    "compute_keys", "compute_key", "compute_value", "rome_update", "FTHyperParams",
    "compute_ft", "compute_ft_l", "MEMITHyperParams", "compute_memit", "method_and_hparams",
    "context_prefixes", "key_statistics", "KeyStatistics",
    # evaluation: CounterFact metrics, fluency
    "evaluate_counterfact", "evaluate_record", "EvaluationResult", "score_record",
    "record_metrics", "paired_difference", "ngram_entropy",
    # plots
    "plot_trace", "plot_traces", "plot_average_effects", "plot_severed", "plot_layer_curves",
]
