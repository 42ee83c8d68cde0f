"""Solutions to the exercises of notebook 13 (specificity)."""
import torch


def reach(C, k_average, k_star, key):
    """Usage: ``reach(C, k_average, k_star, key)`` -> (u . key) / (u . k*) with u = C^-1 k_average."""
    u = torch.linalg.solve(C, k_average)
    return float((u @ key) / (u @ k_star))


def close_neighbour_score(before, after):
    """Usage: ``close_neighbour_score(before, after)`` -> percent of known neighbours still right."""
    kept = [a > 0 for b, a in zip(before, after) if b > 0]
    return 100 * sum(kept) / len(kept)
