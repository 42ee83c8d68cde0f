"""Causal tracing (Meng et al. 2022, section 2): corrupting the subject, restoring states
(a fast and a reference engine), and averages over many facts."""
