"""The component table resolves on every architecture it lists."""
import pytest
import torch

import romelib
from romelib.core.components import COMPONENTS, component_path


def test_every_component_resolves(tiny_mt):
    for component in COMPONENTS:
        layer = 0 if component in ("block", "attn", "mlp", "mlp_proj") else None
        assert isinstance(tiny_mt.module(component, layer), torch.nn.Module)
    assert tiny_mt.num_layers == 4
    assert tiny_mt.d_model == 32


def test_mlp_proj_weight_is_out_by_in(tiny_mt):
    weight = tiny_mt.mlp_proj_weight(1)
    assert weight.shape[0] == tiny_mt.d_model
    key = torch.randn(weight.shape[1])
    module = tiny_mt.module("mlp_proj", 1)
    bias = getattr(module, "bias", None)
    expected = module(key[None])[0] - (bias if bias is not None else 0)
    torch.testing.assert_close(weight @ key, expected, rtol=1e-5, atol=1e-5)


def test_negative_and_out_of_range_layers_are_refused(tiny_mt):
    """Negative layers are refused everywhere (a layer is also used in arithmetic)."""
    assert tiny_mt.module("block", 3) is tiny_mt.module("blocks")[3]
    with pytest.raises(ValueError, match="layer=-1 is out of range.*write 3"):
        tiny_mt.module("block", -1)
    with pytest.raises(ValueError, match="out of range"):
        tiny_mt.module("block", 4)
    for bad in ("2", 2.0, True, None):
        with pytest.raises(TypeError, match="must be an int"):
            tiny_mt.check_layer(bad)


def test_unknown_architecture_names_the_table():
    with pytest.raises(ValueError, match="ARCHITECTURES in romelib/core/components.py"):
        romelib.architecture_for("mamba")


def test_component_path_errors():
    arch = romelib.architecture_for("gpt2")
    assert component_path(arch, "mlp_proj", 5) == "transformer.h.5.mlp.c_proj"
    with pytest.raises(ValueError, match="needs a layer"):
        component_path(arch, "mlp")
    with pytest.raises(ValueError, match="Unknown component"):
        component_path(arch, "ffn", 1)
