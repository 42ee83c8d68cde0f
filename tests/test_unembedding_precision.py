"""The unembedding in bfloat16 during v*'s optimisation: which precision is chosen, that the
product and its gradient stay close to float32, that nothing is left behind, and that an
edit of the default model made this way is the float32 edit to within a few percent."""
from dataclasses import replace

import pytest
import torch

import romelib
from romelib.core import unembedding_precision as precision
from romelib.core.hparams import load_hparams
from romelib.core.unembedding_precision import low_precision_weight, unembed_dtype, unembedding_in
from romelib.editing.memit import MEMITHyperParams
from romelib.editing.request import EditRequest
from romelib.editing.rome import ROMEHyperParams


def test_the_choice_of_precision(tiny_mt, monkeypatch):
    assert unembed_dtype(tiny_mt, "model") == torch.float32
    assert unembed_dtype(tiny_mt, "bfloat16") == torch.bfloat16
    monkeypatch.setattr(precision, "cpu_has_bfloat16", lambda: True)
    assert unembed_dtype(tiny_mt, "auto") == torch.bfloat16
    monkeypatch.setattr(precision, "cpu_has_bfloat16", lambda: False)
    assert unembed_dtype(tiny_mt, "auto") == torch.float32        # no fast bfloat16: exact
    with pytest.raises(ValueError, match=r"unembed_dtype must be one of .*'float16'"):
        unembed_dtype(tiny_mt, "float16")
    with pytest.raises(ValueError, match="unembed_dtype"):
        ROMEHyperParams(layer=1, unembed_dtype="fp16")
    with pytest.raises(ValueError, match="unembed_dtype"):
        MEMITHyperParams(layers=(1, 2), unembed_dtype="half")


def test_the_product_and_its_gradient_stay_close_and_nothing_is_left_behind(tiny_mt):
    module = tiny_mt.module("unembed")
    weight = module.weight.detach().clone()
    installed = module.__dict__.get("forward")         # the linear kernel's (linear_kernel.py)
    assert installed is not None
    ids = tiny_mt.tokenizer("Michael Jordan plays the sport of", return_tensors="pt")
    hidden = tiny_mt.model.base_model(**ids).last_hidden_state.detach()

    def logits_and_grad():
        x = hidden.clone().requires_grad_(True)
        logits = module(x)
        torch.log_softmax(logits, -1)[..., 3].sum().backward()
        return logits.detach(), x.grad

    exact, exact_grad = logits_and_grad()
    with unembedding_in(tiny_mt, torch.bfloat16):
        low, low_grad = logits_and_grad()
    assert low.dtype == torch.float32 and not torch.equal(low, exact)   # really another product
    scale = float(exact.abs().max())
    torch.testing.assert_close(low, exact, rtol=0, atol=2e-2 * scale)
    assert torch.nn.functional.cosine_similarity(low_grad.flatten(), exact_grad.flatten(), dim=0) > 0.99
    assert module.__dict__.get("forward") == installed and torch.equal(module.weight, weight)
    with pytest.raises(RuntimeError, match="inside"), unembedding_in(tiny_mt, torch.bfloat16):
        raise RuntimeError("inside")
    assert module.__dict__.get("forward") == installed
    torch.testing.assert_close(module(hidden), exact)
    with unembedding_in(tiny_mt, torch.float32):                        # the model's own: untouched
        assert module.__dict__.get("forward") == installed


def test_the_low_precision_copy_follows_the_weight(tiny_mt):
    module = tiny_mt.module("unembed")
    first = low_precision_weight(module, torch.bfloat16)
    assert low_precision_weight(module, torch.bfloat16) is first
    with torch.no_grad():
        module.weight[0] += 1.0
    try:
        second = low_precision_weight(module, torch.bfloat16)
        assert second is not first and torch.equal(second[0], module.weight[0].to(torch.bfloat16))
    finally:
        with torch.no_grad():
            module.weight[0] -= 1.0


def test_a_bfloat16_edit_of_the_default_model_is_the_float32_edit_within_percent(default_mt):
    """The edit's weight change moves by a few percent, the edited fact comes out the same."""
    hparams = load_hparams(ROMEHyperParams, "rome", default_mt.name)
    request = EditRequest("{} plays the sport of", "Michael Jordan", "soccer", "basketball")
    results = {}
    for dtype in ("model", "bfloat16"):
        with romelib.edit(default_mt, request, hparams=replace(hparams, unembed_dtype=dtype)) as handle:
            (change,) = handle.deltas.values()
            new = romelib.target_probability(default_mt, request.filled_prompt, "soccer").probability
            true = romelib.target_probability(default_mt, request.filled_prompt, "basketball").probability
        results[dtype] = change.double(), new, true
    (exact, new_exact, true_exact), (low, new_low, true_low) = results["model"], results["bfloat16"]
    assert new_exact > true_exact and new_low > true_low
    assert float((low - exact).norm() / exact.norm()) < 0.1
    assert abs(new_low - new_exact) < 0.1
