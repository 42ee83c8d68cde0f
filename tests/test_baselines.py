"""FT and FT+L through romelib.edit, on tiny models of every architecture."""
import json

import pytest
import torch

import romelib
from romelib.core.hparams import hparams_path, load_hparams
from romelib.editing.finetune import FTHyperParams, finetune
from romelib.editing.finetune import compute_ft as apply_ft
from romelib.editing.finetune import compute_ft_l as apply_ft_l
from romelib.editing.request import EditRequest
from romelib.experiments.baseline_sweep import best_settings

REQUEST = EditRequest("{} is located in the city of", "The Space Needle", "Paris", "Seattle")
STRONG = dict(lr=0.05, max_steps=10, early_stop_loss=1e-3)  # tiny random models learn slowly


@pytest.fixture(scope="module")
def gpt2_tiny():
    from conftest import make_tiny_model
    return make_tiny_model("gpt2")


def log_prob_new(mt):
    return sum(romelib.target_log_probs(mt, [REQUEST.filled_prompt], [REQUEST.target_new])[0])


def test_ft_raises_the_new_target_and_restores(tiny_mt):
    before = {n: p.detach().clone() for n, p in tiny_mt.model.named_parameters()}
    start = log_prob_new(tiny_mt)
    with romelib.edit(tiny_mt, REQUEST, method="ft", hparams=FTHyperParams(layer=2, **STRONG)) as handle:
        assert log_prob_new(tiny_mt) > start + 0.1
        losses = handle.info["losses"]
        assert losses[-1] < losses[0]
        (name,) = handle.deltas
        assert name == tiny_mt.module_name("mlp_proj", 2) + ".weight"
        assert handle.deltas[name].shape == tiny_mt.module("mlp_proj", 2).weight.shape
    for name, param in tiny_mt.model.named_parameters():
        assert torch.equal(param, before[name]), name
        assert not param.requires_grad


def test_ft_l_stays_in_the_l_infinity_ball(tiny_mt):
    eps = 1e-3
    result = apply_ft_l(tiny_mt, REQUEST, FTHyperParams(layer=1, norm_constraint=eps, **STRONG))
    (delta,) = result.deltas.values()
    assert 0 < delta.abs().max() <= eps * (1 + 1e-5)
    unconstrained = apply_ft(tiny_mt, REQUEST, FTHyperParams(layer=1, **STRONG))
    assert next(iter(unconstrained.deltas.values())).abs().max() > eps


def test_finetune_leaves_the_weights_alone_on_error(tiny_mt):
    weight = tiny_mt.module("mlp_proj", 0).weight
    before = weight.detach().clone()
    bad = EditRequest("{} is in", "Space Needle", "Paris")
    result = finetune(tiny_mt, bad, FTHyperParams(layer=0, max_steps=2))
    assert torch.equal(weight, before) and result.info["steps"] >= 1


@pytest.mark.parametrize("settings, message", [
    ({"layer": 99}, "out of range"),
    ({"layer": 0, "lr": 0}, "lr must be a finite number > 0, got 0"),
    ({"layer": 0, "norm_constraint": -1.0}, "norm_constraint"),
])
def test_bad_hyperparameters_are_explained(gpt2_tiny, settings, message):
    """Range errors surface when the settings are built or, for the layer, when the model is known."""
    with pytest.raises(ValueError, match=message):
        finetune(gpt2_tiny, REQUEST, FTHyperParams(**settings))


def test_ft_l_requires_epsilon(gpt2_tiny):
    with pytest.raises(ValueError, match="norm_constraint"):
        apply_ft_l(gpt2_tiny, REQUEST, FTHyperParams(layer=0))


def test_best_settings_picks_the_highest_score():
    rows = [{"method": "ft", "layer": 0, "epsilon": None, "S": 50, "NS": 40},
            {"method": "ft", "layer": 3, "epsilon": None, "S": 60, "NS": 30},
            {"method": "ft+l", "layer": 0, "epsilon": 5e-4, "S": 55, "NS": 70},
            {"method": "ft+l", "layer": 1, "epsilon": 1e-4, "S": 55, "NS": 80}]
    best = best_settings(rows)
    assert best["ft"] == FTHyperParams(layer=3)
    assert best["ft+l"] == FTHyperParams(layer=1, norm_constraint=1e-4)


@pytest.mark.parametrize("method", ["ft", "ft+l"])
def test_shipped_hyperparameters_load_strictly(method):
    path = hparams_path(method, "gemma-3-270m")
    if not path.exists():
        pytest.skip(f"{path} not written yet (python -m romelib.experiments.baseline_sweep --write-hparams)")
    hparams = load_hparams(FTHyperParams, method, "gemma-3-270m")
    assert (hparams.norm_constraint is not None) == (method == "ft+l")
    assert json.loads(path.read_text()).keys() == FTHyperParams.__dataclass_fields__.keys()
