"""MEMIT: the spread update's algebra, the target residual reached, many facts at once, undo."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import romelib
from conftest import make_tiny_model, private_corpus
from romelib.editing.memit import MEMITHyperParams, residuals, spread_update
from romelib.editing.request import EditRequest

REQUESTS = [EditRequest("{} plays the sport of", "Michael Jordan", "guitar", "basketball"),
            EditRequest("The mother tongue of {} is", "Danielle Darrieux", "Seattle", "French"),
            EditRequest("{} is located in the city of", "The Space Needle", "Paris", "Seattle")]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    with private_corpus(tmp_path_factory, "memit") as path:
        yield path


def tiny_hparams(corpus, **changes) -> MEMITHyperParams:
    values = dict(layers=(1, 2), v_num_grad_steps=8, context_lengths=(3,), contexts_per_length=2,
                  mom2_source=f"file:{corpus}", mom2_max_tokens=400, early_stop_loss=0.0,
                  mom2_update_weight=1.0)
    return MEMITHyperParams(**{**values, **changes})


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 4), d_in=st.integers(5, 9), d_out=st.integers(2, 6), seed=st.integers(0, 10**6))
def test_spread_update_stores_every_pair_when_lambda_is_small(n, d_in, d_out, seed):
    generator = torch.Generator().manual_seed(seed)
    keys = torch.randn(n, d_in, generator=generator, dtype=torch.float64)
    values = torch.randn(n, d_out, generator=generator, dtype=torch.float64)
    text = torch.randn(50, d_in, generator=generator, dtype=torch.float64)
    second_moment = text.T @ text / 50
    change = spread_update(keys, values, second_moment, 1e-9)
    torch.testing.assert_close(change @ keys.T, values.T, atol=1e-5, rtol=1e-5)
    strong = spread_update(keys, values, second_moment, 1e9)        # C dominates: almost no change
    assert strong.norm() < 1e-6 * change.norm() + 1e-12
    moderate = spread_update(keys, values, second_moment, 1.0)
    assert torch.linalg.matrix_rank(moderate, rtol=1e-8) <= n        # one direction per stored pair


def test_one_layer_one_fact_reaches_its_target_residual(corpus):
    mt = make_tiny_model("llama")
    hparams = tiny_hparams(corpus, layers=(2,), contexts_per_length=0, mom2_update_weight=1e-6)
    change = romelib.editing.memit.compute_memit(mt, [REQUESTS[0]], hparams)
    value = romelib.compute_value(mt, REQUESTS[0], hparams, [""], site="block", layer=2)
    with romelib.edit(mt, [REQUESTS[0]], method="memit", hparams=hparams):
        after = residuals(mt, [REQUESTS[0]], 2, "subject_last")[0]
    torch.testing.assert_close(after.float(), (value.value_init + value.delta).float(),
                               rtol=1e-3, atol=1e-3 * float(value.value_init.norm()))
    assert list(change.deltas) == [mt.module_name("mlp_proj", 2) + ".weight"]


@pytest.mark.parametrize("model_type", ["gpt2", "gemma3_text"])
def test_many_facts_at_once_raise_each_target_and_undo_exactly(corpus, model_type):
    mt = make_tiny_model(model_type)
    hparams = tiny_hparams(corpus)
    before = {n: p.detach().clone() for n, p in mt.model.named_parameters()}
    prefixes = romelib.context_prefixes(mt, hparams.context_lengths, hparams.contexts_per_length)
    targets = torch.stack([(v.value_init + v.delta).double() for v in (
        romelib.compute_value(mt, r, hparams, prefixes, site="block", layer=2) for r in REQUESTS)])
    distance_before = (residuals(mt, REQUESTS, 2, "subject_last") - targets).norm(dim=-1)
    with romelib.edit(mt, REQUESTS, method="memit", hparams=hparams) as handle:
        distance_after = (residuals(mt, REQUESTS, 2, "subject_last") - targets).norm(dim=-1)
        changed = {n for n, p in mt.model.named_parameters() if not torch.equal(p, before[n])}
        assert changed == {mt.module_name("mlp_proj", layer) + ".weight" for layer in (1, 2)}
        assert len(handle.requests) == 3 and "and 2 more" in repr(handle)
        assert len(handle.info["update_norms"]) == 2
    assert (distance_after < 0.7 * distance_before).all(), (distance_before, distance_after)
    assert all(torch.equal(p, before[n]) for n, p in mt.model.named_parameters())


def test_memit_inputs_are_checked(corpus):
    mt = make_tiny_model("gpt2")
    with pytest.raises(ValueError, match="increasing"):
        MEMITHyperParams(layers=(3, 2))
    with pytest.raises(ValueError, match="hparams.layers=9 is out of range"):
        romelib.edit(mt, REQUESTS, method="memit", hparams=tiny_hparams(corpus, layers=(1, 9)))
    with pytest.raises(TypeError, match="one fact at a time"):
        romelib.edit(mt, REQUESTS, method="rome")
    with pytest.raises(ValueError, match="empty list"):
        romelib.edit(mt, [], method="memit", hparams=tiny_hparams(corpus))


def test_statistics_of_every_layer_come_from_the_unedited_model(corpus):
    """C of a later layer is read before the earlier layers change (a statistics file is checked
    against the weights below its layer, so reading it mid-edit would throw it away and rebuild
    it from edited weights)."""
    import warnings

    from romelib.editing.key_statistics import key_statistics
    from romelib.notices import SubstituteWarning

    mt = make_tiny_model("llama")
    hparams = tiny_hparams(corpus, layers=(1, 2, 3), v_num_grad_steps=3)
    for layer in hparams.layers:
        key_statistics(mt, layer, hparams.mom2_source, hparams.mom2_max_tokens)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SubstituteWarning)
        romelib.editing.memit.compute_memit(mt, REQUESTS[:2], hparams)


def test_statistics_for_several_layers_in_one_pass_equal_each_layer_alone(corpus):
    from romelib.editing.key_statistics import key_statistics, key_statistics_for_layers

    mt = make_tiny_model("gpt2", seed=3)
    source = f"file:{corpus}"
    together = key_statistics_for_layers(mt, [0, 2, 3], source, 300)
    for layer, stats in together.items():
        alone = key_statistics(mt, layer, source, 300, recompute=True)
        torch.testing.assert_close(stats.mom2, alone.mom2)
        assert stats.count == alone.count
    again = key_statistics_for_layers(mt, [3, 0], source, 300)            # now read from the cache
    assert list(again) == [3, 0] and torch.equal(again[3].mom2, together[3].mom2)


def test_targets_computed_once_give_the_same_edit(corpus):
    from romelib.editing.memit import compute_memit, memit_targets

    mt = make_tiny_model("llama")
    hparams = tiny_hparams(corpus, v_num_grad_steps=3)
    targets = memit_targets(mt, REQUESTS[:2], hparams)
    for weight in (0.5, 5.0):
        changed = MEMITHyperParams(**{**hparams.__dict__, "mom2_update_weight": weight})
        direct = compute_memit(mt, REQUESTS[:2], changed)
        shared = compute_memit(mt, REQUESTS[:2], changed, targets=targets)
        for name in direct.deltas:
            torch.testing.assert_close(shared.deltas[name], direct.deltas[name])
    with pytest.raises(ValueError, match="targets has 2 entries for 3 requests"):
        compute_memit(mt, REQUESTS, hparams, targets=targets)


@settings(max_examples=25, deadline=None)
@given(d=st.integers(4, 12), seed=st.integers(0, 10**6), size=st.floats(0.01, 0.5))
def test_a_change_through_an_rms_norm_lands_where_it_is_wanted(d, seed, size):
    """Gemma's post-MLP norm, g * x / rms(x): the change found moves the norm's output to the
    wanted point, up to the length the norm imposes, and keeps rms(x)."""
    from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm

    from romelib.editing.memit import _invert_rms_norm

    generator = torch.Generator().manual_seed(seed)
    norm = Gemma3RMSNorm(d).double()
    with torch.no_grad():
        norm.weight.copy_(torch.rand(d, generator=generator, dtype=torch.float64))
    x = torch.randn(3, d, generator=generator, dtype=torch.float64) * 5
    now = norm(x)
    noise = torch.randn(3, d, generator=generator, dtype=torch.float64)
    wanted = size * now.norm(dim=1, keepdim=True) * noise / d ** 0.5
    change = _invert_rms_norm(norm, x, wanted)
    after = norm(x + change)
    cosine = torch.nn.functional.cosine_similarity(after, now + wanted, dim=1)
    assert torch.all(cosine > 1 - 1e-9)
    torch.testing.assert_close((x + change).pow(2).mean(1), x.pow(2).mean(1))
    layer_norm = torch.nn.LayerNorm(d).double()                      # not of that form: no answer
    assert _invert_rms_norm(layer_norm, x, wanted) is None
