"""The linear associative memory and ROME's closed-form insertion (romelib.memory)."""
import pytest
import torch

from romelib.editing.memory import (
    constrained_least_squares,
    fit_memory,
    insert_pair,
    key_second_moment,
    rank_one_update,
    update_direction,
)


@pytest.fixture
def memory():
    generator = torch.Generator().manual_seed(0)
    d_in, d_out, n = 8, 5, 40
    mixing = torch.randn(d_in, d_in, generator=generator, dtype=torch.float64)
    keys = mixing @ torch.randn(d_in, n, generator=generator, dtype=torch.float64)  # correlated keys
    values = torch.randn(d_out, n, generator=generator, dtype=torch.float64)
    k_star = torch.randn(d_in, generator=generator, dtype=torch.float64)
    v_star = torch.randn(d_out, generator=generator, dtype=torch.float64)
    return keys, values, k_star, v_star


def test_fit_memory_is_the_least_squares_solution(memory):
    keys, values, _, _ = memory
    weight = fit_memory(keys, values)
    expected = torch.linalg.lstsq(keys.T, values.T).solution.T
    torch.testing.assert_close(weight, expected)
    exact = torch.randn(5, 8, dtype=torch.float64)               # a memory that fits exactly
    torch.testing.assert_close(fit_memory(keys, exact @ keys), exact)


def test_insert_pair_stores_the_new_pair_with_a_rank_one_change(memory):
    keys, values, k_star, v_star = memory
    weight = fit_memory(keys, values)
    new_weight = insert_pair(weight, k_star, v_star, key_second_moment(keys))
    torch.testing.assert_close(new_weight @ k_star, v_star)
    assert torch.linalg.matrix_rank(new_weight - weight) == 1


def test_closed_form_equals_the_constrained_least_squares_minimiser(memory):
    keys, values, k_star, v_star = memory
    closed = insert_pair(fit_memory(keys, values), k_star, v_star, keys @ keys.T)
    direct = constrained_least_squares(keys, values, k_star, v_star)
    torch.testing.assert_close(closed, direct)


def test_the_scale_of_C_does_not_matter(memory):
    keys, values, k_star, v_star = memory
    weight = fit_memory(keys, values)
    torch.testing.assert_close(rank_one_update(weight, k_star, v_star, keys @ keys.T),
                               rank_one_update(weight, k_star, v_star, key_second_moment(keys)))


def test_keys_orthogonal_to_the_update_direction_map_as_before(memory):
    keys, values, k_star, v_star = memory
    second_moment = key_second_moment(keys)
    weight = fit_memory(keys, values)
    u = update_direction(k_star, second_moment)
    other = torch.randn(8, dtype=torch.float64)
    other = other - (u @ other) / (u @ u) * u                   # (C^-1 k*)^T other = 0
    new_weight = insert_pair(weight, k_star, v_star, second_moment)
    torch.testing.assert_close(new_weight @ other, weight @ other)


def test_statistics_protect_stored_pairs_better_than_the_identity(memory):
    keys, values, k_star, v_star = memory
    weight = fit_memory(keys, values)
    with_c = insert_pair(weight, k_star, v_star, key_second_moment(keys))
    with_identity = insert_pair(weight, k_star, v_star, None)
    error = lambda w: float(((w @ keys - values) ** 2).sum())
    assert error(with_c) <= error(with_identity)
    # C = I gives the smallest change in Frobenius norm that stores the pair
    minimal = (v_star - weight @ k_star)[:, None] * torch.linalg.pinv(k_star[:, None])
    torch.testing.assert_close(with_identity - weight, minimal)


def test_singular_direction_and_bad_shapes_give_clear_errors(memory):
    keys, values, k_star, v_star = memory
    weight = fit_memory(keys, values)
    with pytest.raises(ValueError, match="singular"):
        rank_one_update(weight, torch.zeros(8, dtype=torch.float64), v_star, None)
    with pytest.raises(ValueError, match="C has shape"):
        rank_one_update(weight, k_star, v_star, torch.eye(3))
    with pytest.raises(ValueError, match="columns"):
        fit_memory(keys, values[:, :3])
