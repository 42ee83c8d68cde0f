"""Reversible edits: EditHandle restores the weights bit for bit, in reverse order."""

import pytest
import torch

import romelib
from conftest import make_tiny_model, private_corpus
from romelib.editing.handle import EditHandle
from romelib.editing.request import ComputedEdit as MethodResult
from romelib.editing.request import EditRequest
from romelib.editing.rome import ROMEHyperParams


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny GPT-2 (transposed Conv1D, with bias), a corpus and a private cache for it."""
    with private_corpus(tmp_path_factory, "edit_handle") as corpus:
        hparams = ROMEHyperParams(layer=1, v_num_grad_steps=3, context_lengths=(3,),
                                  contexts_per_length=2, mom2_source=f"file:{corpus}")
        yield make_tiny_model("gpt2"), hparams


def snapshot(mt):
    return {name: p.detach().clone() for name, p in mt.model.named_parameters()}


def assert_identical(mt, saved):
    for name, param in mt.model.named_parameters():
        assert torch.equal(param.detach(), saved[name]), name


REQUESTS = [EditRequest("{} plays the sport of", "Michael Jordan", "guitar"),
            {"prompt": "{} is in", "subject": "The Eiffel Tower", "target_new": {"str": "Seattle"},
             "target_true": {"str": "Paris"}}]


def test_restore_is_bit_identical(setup):
    mt, hparams = setup
    saved = snapshot(mt)
    handle = romelib.edit(mt, REQUESTS[0], hparams=hparams)
    name = mt.module_name("mlp_proj", 1) + ".weight"
    assert not torch.equal(mt.model.get_parameter(name), saved[name])
    torch.testing.assert_close(handle.deltas[name] + saved[name], mt.model.get_parameter(name))
    handle.restore()
    assert_identical(mt, saved)
    handle.restore()                                                   # a second restore is a no-op
    assert_identical(mt, saved)
    assert "restored" in repr(handle)


def test_context_manager_restores_even_after_an_exception(setup):
    mt, hparams = setup
    saved = snapshot(mt)
    with pytest.raises(KeyError):
        with romelib.edit(mt, REQUESTS[1], hparams=hparams):
            raise KeyError("inside the edit")
    assert_identical(mt, saved)


def test_several_edits_restore_in_reverse_order(setup):
    mt, hparams = setup
    saved = snapshot(mt)
    first = romelib.edit(mt, REQUESTS[0], hparams=hparams)
    after_first = snapshot(mt)
    second = romelib.edit(mt, REQUESTS[1], hparams=hparams)
    with pytest.raises(RuntimeError, match="reverse order"):
        first.restore()                                                # out of order: refused
    second.restore()
    assert_identical(mt, after_first)
    first.restore()
    assert_identical(mt, saved)


def test_rounding_cannot_leak_through_restore(setup):
    mt, _ = setup
    saved = snapshot(mt)
    name = mt.module_name("mlp_proj", 1) + ".weight"
    tiny = torch.full_like(saved[name], 1e-12)                        # lost in float32 addition
    handle = EditHandle(mt, EditRequest("{} is", "Rome", "x"), "test", None,
                        MethodResult({name: tiny + 0.1}))
    handle.restore()
    assert_identical(mt, saved)


def test_a_target_the_model_already_predicts_warns(setup):
    mt, hparams = setup
    prompt = "Michael Jordan plays the sport of"
    predicted = romelib.predict(mt, prompt, k=1)[0].token
    if not predicted.strip():
        pytest.skip("the tiny model predicts whitespace here")
    with pytest.warns(UserWarning, match="already continues"):
        romelib.edit(mt, EditRequest(prompt, "Michael Jordan", predicted.strip()), hparams=hparams).restore()
