"""Figures in the paper's style and notebook widgets."""
