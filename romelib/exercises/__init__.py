"""Exercises with automatic feedback: one checker per exercise of the notebooks.

Usage::

    import romelib.exercises
    romelib.exercises.check_corrupt_with_noise(corrupt_with_noise)      # prints a pass or a hint
    romelib.exercises.check_restore_hidden_state(restore_hidden_state, mt)

Each notebook ends with exercises: a statement, a stub to fill in, and a cell that calls the
checker.  A checker runs the answer on small cases against romelib's own implementation and
prints one line: a pass, a hint naming the likely mistake (found by computing the typical
wrong answers and comparing), or "not implemented yet" for an unfilled stub.  It returns
True or False and never raises, so the notebooks run top to bottom with the stubs in place.
This package is the one place in romelib that prints: it talks to the student.  One module
per notebook; the solutions are in ``notebooks/solutions/``, named like these modules.
"""
from .associative_memory import check_fit_memory, check_insert_pair
from .average_effects import check_group_positions, check_grouped_effects, check_mean_and_ci95
from .corrupt_and_restore import check_corrupt_with_noise, check_restore_hidden_state
from .counterfact_table import check_counterfact_score, check_es_ps_ns, check_ngram_entropy
from .edit_and_generate import check_greedy_generate, check_sequence_probability
from .explorer import check_handover_layer, check_strongest_token
from .memit import check_critical_layers, check_spread_update
from .model_tour import check_mlp_term, check_next_token_probability
from .rome_step_by_step import check_average_key, check_rank_one_update
from .sequential_editing import check_perplexity, check_weight_distance
from .severed_paths import check_effect_removed, check_severed_probability
from .specificity import check_close_neighbour_score, check_reach
from .trace_heatmaps import check_strongest_state, check_window_layers
from .where_to_edit import check_pearson_r, check_rewrite_score

__all__ = [
    # 00 model tour
    "check_mlp_term", "check_next_token_probability",
    # 01 corrupt and restore
    "check_corrupt_with_noise", "check_restore_hidden_state",
    # 02 trace heatmaps
    "check_strongest_state", "check_window_layers",
    # 03 severed paths
    "check_severed_probability", "check_effect_removed",
    # 04 average effects
    "check_group_positions", "check_grouped_effects", "check_mean_and_ci95",
    # 05 explorer
    "check_handover_layer",
    "check_strongest_token",
    # 06 associative memory
    "check_fit_memory", "check_insert_pair",
    # 07 ROME step by step
    "check_average_key", "check_rank_one_update",
    # 08 edit and generate
    "check_greedy_generate", "check_sequence_probability",
    # 09 CounterFact table
    "check_es_ps_ns", "check_ngram_entropy", "check_counterfact_score",
    # 10 where to edit
    "check_rewrite_score", "check_pearson_r",
    # 11 MEMIT
    "check_spread_update", "check_critical_layers",
    # 12 sequential editing
    "check_perplexity", "check_weight_distance",
    # 13 specificity
    "check_reach", "check_close_neighbour_score",
]
