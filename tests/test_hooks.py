"""Hooks read, replace, stop, and always clean up; the residual identity holds."""
import pytest
import torch

import romelib

PROMPT = "The Space Needle is located in the city of"


def _logits(mt, prompt=PROMPT):
    with torch.no_grad():
        return mt.model(**romelib.make_inputs(mt, prompt)).logits


def _hook_count(mt):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in mt.model.modules())


def test_residual_identity_every_layer(tiny_mt):
    """h_l = h_{l-1} + a_l + m_l, with a_l and m_l read through the component table."""
    names = [f"{c}.{layer}" for layer in range(tiny_mt.num_layers) for c in ("block", "attn", "mlp")]
    with romelib.hooks(tiny_mt, names, retain_input=True) as acts, torch.no_grad():
        tiny_mt.model(**romelib.make_inputs(tiny_mt, PROMPT))
    for layer in range(tiny_mt.num_layers):
        block = acts[f"block.{layer}"]
        rebuilt = block.input + acts[f"attn.{layer}"].output + acts[f"mlp.{layer}"].output
        torch.testing.assert_close(block.output, rebuilt, rtol=1e-5, atol=1e-5)


def test_reading_does_not_change_the_output(tiny_mt):
    plain = _logits(tiny_mt)
    with romelib.hooks(tiny_mt, ["block.1", "mlp.2", "embed"]) as acts:
        hooked = _logits(tiny_mt)
    torch.testing.assert_close(plain, hooked)
    assert acts["embed"].output.shape[-1] == tiny_mt.d_model


def test_edit_output_replaces_a_component(tiny_mt):
    """Zeroing the MLP term equals recomputing the block output without it."""
    def zero(output, name):
        return torch.zeros_like(output)

    plain = _logits(tiny_mt)
    with romelib.hooks(tiny_mt, ["mlp.1"], edit_output=zero):
        edited = _logits(tiny_mt)
    assert not torch.allclose(plain, edited)
    with romelib.hooks(tiny_mt, ["block.1", "mlp.1"], retain_input=True) as acts, torch.no_grad():
        tiny_mt.model(**romelib.make_inputs(tiny_mt, PROMPT))
    without_mlp = acts["block.1"].output - acts["mlp.1"].output
    with romelib.hooks(tiny_mt, ["block.1"], edit_output=lambda out, name: without_mlp):
        patched = _logits(tiny_mt)
    torch.testing.assert_close(edited, patched, rtol=1e-4, atol=1e-5)


def test_edit_input_and_retain_input(tiny_mt):
    def double(hidden, name):
        return hidden * 2

    with romelib.hooks(tiny_mt, ["block.2"], retain_input=True, edit_input=double) as acts:
        _logits(tiny_mt)
    with romelib.hooks(tiny_mt, ["block.1"]) as before:
        _logits(tiny_mt)
    torch.testing.assert_close(acts["block.2"].input, 2 * before["block.1"].output)


def test_stop_ends_the_forward_pass(tiny_mt):
    with romelib.hooks(tiny_mt, ["block.1"], stop=True) as acts, \
            romelib.hooks(tiny_mt, ["block.3"]) as later:
        tiny_mt.model(**romelib.make_inputs(tiny_mt, PROMPT))
    assert acts["block.1"].output is not None
    assert later["block.3"].output is None


def test_hooks_removed_after_exception(tiny_mt):
    before = _hook_count(tiny_mt)

    def broken(output, name):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        with romelib.hooks(tiny_mt, ["mlp.0", "block.1"], edit_output=broken, retain_input=True):
            _logits(tiny_mt)
    assert _hook_count(tiny_mt) == before
    with pytest.raises(ValueError):
        with romelib.hooks(tiny_mt, ["block.0"]):
            raise ValueError("user error inside the block")
    assert _hook_count(tiny_mt) == before


def test_bad_hook_names(tiny_mt):
    with pytest.raises(ValueError, match="'mlp.5' or 'embed'"):
        romelib.hooks(tiny_mt, ["mlp.x"])
    with pytest.raises(ValueError, match="out of range"):
        romelib.hooks(tiny_mt, ["mlp.9"])
