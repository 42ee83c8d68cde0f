"""The unembedding in bfloat16 while an edit optimises: the same loss, a cheaper matrix product.

Usage::

    dtype = unembed_dtype(mt, "auto")          # torch.bfloat16 where the hardware has it, else mt.dtype
    with unembedding_in(mt, dtype):
        logits = mt.model(**inputs).logits     # float32 logits from a bfloat16 product

Every step of ROME's (and MEMIT's) optimisation of v* scores about twenty positions over the
whole vocabulary, forwards and backwards. For Gemma 3's 262,144 x 640 unembedding that
product was about 0.2 s of a 0.5 s step on the 2-core development machine; with AVX512-BF16
(or AMX, or a GPU) it runs about 5x faster in bfloat16. The logits come back in float32 and
the softmax, the loss and the optimiser stay in float32; what changes is the rounding of the
product: log-probabilities move by up to about 0.1, and an edit's weight change by 1-2%
(``benchmarks/bench_rome.py`` prints it for each edit; on 24 tune records the two precisions
give the same efficacy, paraphrase and neighbourhood success). ``"model"`` keeps the
model's own precision (the authors' computation, to float32 rounding); ``"auto"`` picks
bfloat16 only where it is fast, so a machine without bfloat16 instructions computes exactly
what it computed before.
"""
from __future__ import annotations

import functools
from contextlib import contextmanager

import torch

UNEMBED_DTYPES = ("auto", "model", "bfloat16")


@functools.lru_cache(maxsize=1)
def cpu_has_bfloat16() -> bool:
    """Usage: ``cpu_has_bfloat16()`` -> True on x86 CPUs with AVX512-BF16 or AMX, as PyTorch's
    own CPU detection (``torch.cpu``) reports them.

    Elsewhere (ARM, older x86) it says False: bfloat16 products may be emulated there and
    slower than float32, so ``"auto"`` keeps float32.
    """
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def unembed_dtype(mt, choice: str) -> torch.dtype:
    """The dtype the unembedding's product runs in for ``choice`` (one of ``UNEMBED_DTYPES``).

    Usage: ``unembed_dtype(mt, "auto")``. A model already below float32 keeps its dtype.
    """
    if choice not in UNEMBED_DTYPES:
        raise ValueError(f"unembed_dtype must be one of {UNEMBED_DTYPES}, got {choice!r}.")
    if choice == "model" or mt.dtype != torch.float32:
        return mt.dtype
    if choice == "bfloat16":
        return torch.bfloat16
    fast = torch.cuda.is_bf16_supported() if mt.device.type == "cuda" else (
        mt.device.type == "cpu" and cpu_has_bfloat16())
    return torch.bfloat16 if fast else mt.dtype


class _LinearIn(torch.autograd.Function):
    """``x @ W.T`` with ``x`` rounded to ``W``'s dtype; the gradient for ``x`` the same way."""

    @staticmethod
    def forward(ctx, x, weight):
        ctx.save_for_backward(weight)
        ctx.out_dtype = x.dtype
        return (x.to(weight.dtype) @ weight.T).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        return (grad.to(weight.dtype) @ weight).to(ctx.out_dtype), None


def low_precision_weight(module: torch.nn.Module, dtype: torch.dtype) -> torch.Tensor:
    """A copy of ``module.weight`` in ``dtype``, kept on the module until the weight changes.

    Usage: ``low_precision_weight(mt.module("unembed"), torch.bfloat16)``.
    """
    weight = module.weight
    key = (dtype, weight.data_ptr(), weight._version)
    cached = module.__dict__.get("_romelib_low_precision")
    if cached is None or cached[0] != key:
        cached = (key, weight.detach().to(dtype))
        module.__dict__["_romelib_low_precision"] = cached
    return cached[1]


@contextmanager
def unembedding_in(mt, dtype: torch.dtype):
    """Inside the block, the unembedding's product runs in ``dtype`` (nothing changes when it
    is the model's own); the weights themselves are never touched.

    Usage: ``with unembedding_in(mt, torch.bfloat16): logits = mt.model(**inputs).logits``.
    """
    if dtype == mt.dtype:
        yield
        return
    module = mt.module("unembed")
    weight, bias = low_precision_weight(module, dtype), module.bias
    previous = module.__dict__.get("forward")    # the linear kernel's forward, if installed
    module.forward = (lambda x: _LinearIn.apply(x, weight)) if bias is None else (
        lambda x: _LinearIn.apply(x, weight) + bias)
    try:
        yield
    finally:
        if previous is None:
            module.__dict__.pop("forward", None)
        else:
            module.forward = previous
