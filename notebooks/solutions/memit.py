"""Solutions to the exercises of notebook 11 (MEMIT)."""
import torch


def spread_update(K, R, C, lam):
    """Usage: ``spread_update(K, R, C, lam)`` with keys K (n, d_key), residuals R (n, d_out) -> dW (d_out, d_key)."""
    return torch.linalg.solve(lam * C + K.T @ K, K.T @ R).T        # solve, never invert


def critical_layers(effects, fraction):
    """Usage: ``critical_layers(effects, 0.8)`` -> the contiguous layers around the peak above 0.8 x peak."""
    values = [float(v) for v in effects]
    peak = max(range(len(values)), key=values.__getitem__)
    low = high = peak
    while low > 0 and values[low - 1] >= fraction * values[peak]:
        low -= 1
    while high < len(values) - 1 and values[high + 1] >= fraction * values[peak]:
        high += 1
    return list(range(low, high + 1))
