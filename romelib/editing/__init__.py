"""Model editing: the associative-memory view, key statistics, context prefixes, ROME (fast
and reference), the fine-tuning baselines, and reversible edits."""
