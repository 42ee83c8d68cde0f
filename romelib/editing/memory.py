"""A linear associative memory ``W k ~ v`` and ROME's closed-form insertion of one new pair.

Usage::

    W = fit_memory(keys, values)                         # least squares: W = V K^+
    W_new = insert_pair(W, k_star, v_star, key_second_moment(keys))
    torch.allclose(W_new @ k_star, v_star)               # True

The paper (Meng et al. 2022, section 3.1) treats an MLP's output matrix as a memory that
maps keys ``k`` (one per column of ``K``) to values ``v`` (columns of ``V``).  The best
memory in the least-squares sense is ``W = V K^+`` (Moore-Penrose pseudoinverse).  To add
one pair ``(k*, v*)`` while changing what the stored keys retrieve as little as possible,
minimise ``||W' K - V||`` subject to ``W' k* = v*``; with ``C = K K^T`` the solution is
the rank-one update (the paper's Eq. 2)

    W' = W + (v* - W k*) (C^-1 k*)^T / ((C^-1 k*)^T k*)

Every function computes in float64 and returns float64 tensors: the update divides by a
number that can be small, and a teaching library should not hide rounding behind it.
"""
from __future__ import annotations

import torch


def _f64(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to(torch.float64)


def fit_memory(keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Least-squares memory ``W = V K^+`` for keys and values stored as columns.

    Usage: ``W = fit_memory(K, V)`` with ``K`` (d_in, n) and ``V`` (d_out, n) -> (d_out, d_in).
    """
    if keys.shape[1] != values.shape[1]:
        raise ValueError(f"keys have {keys.shape[1]} columns but values have {values.shape[1]}; "
                         "store one key and one value per column.")
    return _f64(values) @ torch.linalg.pinv(_f64(keys))


def key_second_moment(keys: torch.Tensor) -> torch.Tensor:
    """Uncentred second moment ``C = K K^T / n`` of keys stored as columns.

    Usage: ``C = key_second_moment(K)`` -> (d_in, d_in).  The scale of ``C`` does not
    matter to :func:`rank_one_update`; ROME estimates it as a mean over text tokens.
    """
    keys = _f64(keys)
    return keys @ keys.T / keys.shape[1]


def update_direction(k_star: torch.Tensor, second_moment: torch.Tensor | None) -> torch.Tensor:
    """The left vector ``u = C^-1 k*`` of the update (``k*`` itself when ``C`` is the identity).

    Usage: ``u = update_direction(k_star, C)``; solved in float64, never by an explicit inverse.
    """
    k_star = _f64(k_star)
    if second_moment is None:
        return k_star
    if second_moment.shape != (k_star.numel(), k_star.numel()):
        raise ValueError(f"C has shape {tuple(second_moment.shape)} but k* has {k_star.numel()} "
                         "entries; C must be the second moment of keys like k*.")
    return torch.linalg.solve(_f64(second_moment), k_star)


def rank_one_update(weight: torch.Tensor, k_star: torch.Tensor, v_star: torch.Tensor,
                    second_moment: torch.Tensor | None = None,
                    direction_key: torch.Tensor | None = None) -> torch.Tensor:
    """The change ``W' - W = (v* - W k*) (C^-1 k*)^T / ((C^-1 k*)^T k*)``, shape of ``W``.

    Usage: ``delta = rank_one_update(W, k_star, v_star, C)``; ``(W + delta) @ k_star == v_star``.
    ``second_moment=None`` means ``C = I`` (the ablation that shows why the statistics matter).
    ``direction_key`` (default ``k_star``) sets the direction ``C^-1 k`` of the update while
    ``k_star`` is still stored exactly: ROME's code takes the direction from the key averaged
    over contexts and stores the edited prompt's own key.
    """
    weight, k_star, v_star = _f64(weight), _f64(k_star), _f64(v_star)
    u = update_direction(k_star if direction_key is None else direction_key, second_moment)
    denominator = u @ k_star
    if not torch.isfinite(denominator) or denominator.abs() <= 1e-12 * u.norm() * k_star.norm():
        raise ValueError("(C^-1 k)^T k* is zero or not finite: C is singular along k*, or the "
                         "direction key is orthogonal to k*. Use statistics from more text.")
    residual = v_star - weight @ k_star                            # (d_out,)
    return torch.outer(residual, u) / denominator


def insert_pair(weight: torch.Tensor, k_star: torch.Tensor, v_star: torch.Tensor,
                second_moment: torch.Tensor | None = None) -> torch.Tensor:
    """Usage: ``W_new = insert_pair(W, k_star, v_star, C)`` = ``W + rank_one_update(...)``."""
    return _f64(weight) + rank_one_update(weight, k_star, v_star, second_moment)


def constrained_least_squares(keys: torch.Tensor, values: torch.Tensor, k_star: torch.Tensor,
                              v_star: torch.Tensor) -> torch.Tensor:
    """Solve ``min ||W K - V||_F`` subject to ``W k* = v*`` directly (Lagrange multipliers).

    Usage: ``W_new = constrained_least_squares(K, V, k_star, v_star)``.  This is the slow,
    obviously-correct route (one linear system of size d_in + 1 per output row) that the
    closed form of :func:`insert_pair` must agree with; ``K K^T`` must be invertible.
    """
    keys, values, k_star, v_star = _f64(keys), _f64(values), _f64(k_star), _f64(v_star)
    d_in = keys.shape[0]
    # Stationarity: W K K^T - V K^T + lambda k*^T = 0 and W k* = v*, for all rows at once.
    system = torch.zeros(d_in + 1, d_in + 1, dtype=torch.float64)
    system[:d_in, :d_in] = keys @ keys.T
    system[:d_in, d_in] = k_star
    system[d_in, :d_in] = k_star
    right = torch.cat([keys @ values.T, v_star[None]], dim=0)      # (d_in + 1, d_out)
    solution = torch.linalg.solve(system, right)                  # rows: W^T, then lambda
    return solution[:d_in].T
