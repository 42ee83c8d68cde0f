"""The model and how to reach inside it: loading, the component table, hooks, tokens, the
partial forward pass, text generation and hyperparameter files."""
