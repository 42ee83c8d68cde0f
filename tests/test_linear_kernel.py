"""The kernel behind the model's float32 products: the same numbers and gradients as PyTorch's
own, a choice that can be named and undone, bad choices refused."""
import pytest
import torch
import torch.nn.functional as F

from romelib.core import linear_kernel as lk
from romelib.core.linear_kernel import current_kernel, install, linear, linear_kernel

needs_onednn = pytest.mark.skipif(not lk.onednn_available(), reason="this PyTorch has no oneDNN")


@needs_onednn
@pytest.mark.parametrize("shape", [(7, 64), (3, 5, 64), (0, 64)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_onednn_gives_torchs_product(shape, with_bias):
    torch.manual_seed(0)
    x, weight = torch.randn(*shape), torch.randn(96, 64)
    bias = torch.randn(96) if with_bias else None
    with linear_kernel("onednn"):
        ours = linear(x, weight, bias)
    assert ours.shape == (*shape[:-1], 96)
    torch.testing.assert_close(ours, F.linear(x, weight, bias), rtol=1e-5, atol=1e-5)
    strided = torch.randn(shape[-1], *shape[:-1]).movedim(0, -1)     # a non-contiguous input
    with linear_kernel("onednn"):
        torch.testing.assert_close(linear(strided, weight), F.linear(strided, weight), rtol=1e-5, atol=1e-5)


@needs_onednn
def test_onednn_gradients_are_those_of_f_linear():
    torch.manual_seed(1)
    tensors = [torch.randn(4, 6, 32), torch.randn(48, 32), torch.randn(48)]
    upstream = torch.randn(4, 6, 48)

    def gradients(kernel):
        leaves = [t.clone().requires_grad_(True) for t in tensors]
        with linear_kernel(kernel):
            (linear(*leaves) * upstream).sum().backward()
        return [leaf.grad for leaf in leaves]

    for ours, theirs in zip(gradients("onednn"), gradients("torch")):
        assert ours is not None
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    x = tensors[0].clone().requires_grad_(True)          # only the input needs a gradient
    with linear_kernel("onednn"):
        (grad,) = torch.autograd.grad(linear(x, tensors[1]).sum(), [x])
    torch.testing.assert_close(grad, torch.ones(4, 6, 48) @ tensors[1], rtol=1e-5, atol=1e-5)


def test_the_choice_is_scoped_named_and_checked(monkeypatch):
    outside = current_kernel()
    assert outside in ("torch", "onednn")
    with linear_kernel("torch"):
        assert current_kernel() == "torch"
        with pytest.raises(RuntimeError, match="inside"), linear_kernel("auto"):
            raise RuntimeError("inside")
        assert current_kernel() == "torch"
    assert current_kernel() == outside
    with pytest.raises(ValueError, match=r"kernel must be one of \('auto', 'torch', 'onednn'\), got 'mkl'"):
        with linear_kernel("mkl"):
            pass
    monkeypatch.setenv(lk.ENVIRONMENT, "fastest")
    with pytest.raises(ValueError, match="ROMELIB_LINEAR_KERNEL must be one of .*'fastest'"):
        current_kernel()
    monkeypatch.setenv(lk.ENVIRONMENT, "torch")
    assert current_kernel() == "torch"
    monkeypatch.setattr(lk, "onednn_available", lambda: False)
    with pytest.raises(ValueError, match="no oneDNN"):
        with linear_kernel("onednn"):
            pass


def test_other_dtypes_keep_torchs_product():
    x, weight = torch.randn(3, 16, dtype=torch.float64), torch.randn(8, 16, dtype=torch.float64)
    with linear_kernel("onednn" if lk.onednn_available() else "torch"):
        assert torch.equal(linear(x, weight), F.linear(x, weight))


def test_installed_model_runs_by_either_kernel_with_hooks(tiny_mt):
    model = tiny_mt.model
    plain = [m for m in model.modules() if type(m) is torch.nn.Linear]
    assert plain and all("forward" in m.__dict__ for m in plain)       # load_model installed it
    assert install(model) == len(plain)                                # and again is harmless
    ids = tiny_mt.tokenizer("The Space Needle is in", return_tensors="pt")
    seen = []
    handle = plain[0].register_forward_hook(lambda module, args, output: seen.append(output.shape))
    try:
        with linear_kernel("torch"):
            stock = model(**ids).logits
        kernels = ["onednn"] if lk.onednn_available() else []
        for kernel in kernels:
            with linear_kernel(kernel):
                torch.testing.assert_close(model(**ids).logits, stock, rtol=1e-4, atol=1e-4)
    finally:
        handle.remove()
    assert len(seen) == 1 + len(kernels)


def test_auto_takes_onednn_only_when_clearly_faster(monkeypatch):
    lk._automatic.cache_clear()
    try:
        monkeypatch.setattr(lk, "onednn_available", lambda: True)
        monkeypatch.setattr(lk, "measured_speed_up", lambda: 1.1)
        assert lk._automatic() == "torch"
        lk._automatic.cache_clear()
        monkeypatch.setattr(lk, "measured_speed_up", lambda: 2.0)
        assert lk._automatic() == "onednn"
    finally:
        lk._automatic.cache_clear()
