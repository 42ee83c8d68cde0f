"""Exercises of notebook 06 (associative memory): W = V K^+, and inserting one pair under C.

Usage::

    romelib.exercises.check_fit_memory(fit_memory)
    romelib.exercises.check_insert_pair(insert_pair)
"""
from __future__ import annotations

import torch

from ..editing.memory import fit_memory as reference_fit_memory
from ..editing.memory import insert_pair as reference_insert_pair
from .feedback import Mistake, call, compare, exercise, expect, tensor


def random_keys(d_key: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """Keys as columns, (d_key, n), with a few strong directions like real keys.

    Usage: ``K = random_keys(6, 20, torch.Generator().manual_seed(0))``.
    """
    spectrum = torch.logspace(1, -1, d_key, dtype=torch.float64)
    rotation, _ = torch.linalg.qr(torch.randn(d_key, d_key, generator=generator, dtype=torch.float64))
    return (rotation * spectrum.sqrt()) @ torch.randn(d_key, n, generator=generator, dtype=torch.float64)


@exercise("fit_memory")
def check_fit_memory(fit_memory, sizes=((3, 6, 20), (3, 6, 4)), seed: int = 0) -> str:
    """Check ``fit_memory(K, V) -> W``, the least-squares memory ``V K^+``, shape (d_value, d_key).

    Usage: ``romelib.exercises.check_fit_memory(fit_memory)``; ``sizes`` are (d_value, d_key, n)
    cases, by default more pairs than key dimensions and then fewer.
    """
    generator = torch.Generator().manual_seed(seed)
    for d_value, d_key, n in sizes:
        K = random_keys(d_key, n, generator)
        V = torch.randn(d_value, n, generator=generator, dtype=torch.float64)
        try:
            answer = tensor(call(fit_memory, K.clone(), V.clone()), "W")
        except Mistake as mistake:
            if n < d_key:
                raise Mistake(f"with fewer pairs ({n}) than key dimensions ({d_key}) K K^T is singular ({mistake}); "
                              "the pseudoinverse K^+ (torch.linalg.pinv) covers this case too.") from None
            if "cannot be multiplied" in str(mistake):
                raise Mistake(f"{mistake}. W = V K^+ multiplies V (d_value, n) by K^+ (n, d_key).") from None
            raise
        expected = reference_fit_memory(K, V)
        fewer = (" (fewer pairs than key dimensions: K K^T is singular, use the pseudoinverse)"
                 if n < d_key else "")
        compare(answer, expected, {
            "W maps keys to values: its shape is (d_value, d_key); you returned its transpose.": expected.T,
            "that is V K^T: the memory needs the pseudoinverse, W = V K^+ (torch.linalg.pinv(K)).": V @ K.T,
        }, what=f"W for {n} pairs of {d_key}-d keys{fewer}", rtol=1e-6, atol=1e-8)
    return "W = V K^+ recalls the stored values as well as any linear map can"


def example_memory(d_value: int = 4, d_key: int = 6, n: int = 30, seed: int = 0):
    """A memory W, key statistics C, and a new pair (k*, v*), all float64.

    Usage: ``W, C, k_star, v_star = example_memory()``.
    """
    generator = torch.Generator().manual_seed(seed)
    K = random_keys(d_key, n, generator)
    V = torch.randn(d_value, n, generator=generator, dtype=torch.float64)
    k_star = random_keys(d_key, 1, generator)[:, 0]
    v_star = torch.randn(d_value, generator=generator, dtype=torch.float64)
    return reference_fit_memory(K, V), K @ K.T / n, k_star, v_star


def typical_insertions(W, C, k_star, v_star) -> dict:
    """Wrong versions of the closed form, each with the hint that names its mistake.

    Usage: ``typical_insertions(*example_memory())``.
    """
    u = torch.linalg.solve(C, k_star)
    residual = v_star - W @ k_star
    return {
        "you used C where the formula has C^-1: solve C u = k* (torch.linalg.solve(C, k_star)).":
            W + torch.outer(residual, C @ k_star) / ((C @ k_star) @ k_star),
        "this is the update with C = I: its direction must be C^-1 k*.":
            W + torch.outer(residual, k_star) / (k_star @ k_star),
        "missing normalisation: divide by (C^-1 k*)^T k*, so that W' k* = v* exactly.":
            W + torch.outer(residual, u),
        "the denominator is (C^-1 k*)^T k*, not k*^T k*.": W + torch.outer(residual, u) / (k_star @ k_star),
        "wrong sign: the residual is v* - W k*.": W - torch.outer(residual, u) / (u @ k_star),
        "return the new matrix W' = W + change, not only the change.": torch.outer(residual, u) / (u @ k_star),
    }


@exercise("insert_pair")
def check_insert_pair(insert_pair, sizes=((4, 6, 30),), seed: int = 0) -> str:
    """Check ``insert_pair(W, C, k_star, v_star) -> W'``, ROME's closed form.

    Usage: ``romelib.exercises.check_insert_pair(insert_pair)``; compared with
    ``romelib.editing.memory.insert_pair`` on (d_value, d_key, n) cases; W' k* = v* must hold.
    """
    for d_value, d_key, n in sizes:
        W, C, k_star, v_star = example_memory(d_value, d_key, n, seed)
        answer = tensor(call(insert_pair, W.clone(), C.clone(), k_star.clone(), v_star.clone()), "W'")
        expected = reference_insert_pair(W, k_star, v_star, C)
        compare(answer, expected, typical_insertions(W, C, k_star, v_star), what="W'", rtol=1e-6, atol=1e-8)
        expect(torch.allclose(answer @ k_star, v_star), "W' k* is not v*.")
    return "W' k* = v*, with the smallest disturbance of the stored pairs"
