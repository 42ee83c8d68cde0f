"""Which kernel multiplies the model's float32 matrices on the CPU: PyTorch's default or oneDNN.

Usage::

    mt = romelib.load_model()            # its linear layers follow the chosen kernel
    current_kernel()                     # "onednn" or "torch" on this machine
    with linear_kernel("torch"):         # PyTorch's default kernel inside the block
        mt.model(**inputs)
    linear(x, weight, bias)              # one product by the chosen kernel

Almost all of a transformer's time on a CPU goes into matrix products.  PyTorch hands a
float32 product to MKL; on AMD processors MKL takes a code path narrower than the
processor can run (on the 2-core AMD EPYC this project is developed on, about 45 GMAC/s per
core where the processor's AVX-512 units allow twice that).  oneDNN, which is also inside
PyTorch, chooses its code by the instructions the processor reports and runs every product
of Gemma 3 270M's blocks and of its unembedding about 2.1x faster there, in float32 like
MKL: the two differ only in the order they add terms up (relative differences of a few
1e-6).

``"auto"`` (the default) times both kernels once per process on a product of the default
model's shape and takes oneDNN only when it is at least 1.25x faster, so a processor where
MKL already runs at full width keeps PyTorch's default.  The environment variable
``ROMELIB_LINEAR_KERNEL`` (``auto``, ``torch`` or ``onednn``) or :func:`linear_kernel`
choose by hand.  Only float32 products on the CPU are affected; GPUs, other dtypes and
layers that are not plain ``nn.Linear`` (GPT-2's ``Conv1D``) run as PyTorch has them.
"""
from __future__ import annotations

import functools
import os
import time
import types
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

KERNELS = ("auto", "torch", "onednn")
ENVIRONMENT = "ROMELIB_LINEAR_KERNEL"
SPEED_UP_NEEDED = 1.25
_chosen: ContextVar[str | None] = ContextVar("romelib_linear_kernel", default=None)


def onednn_available() -> bool:
    """Usage: ``onednn_available()`` -> whether this PyTorch has oneDNN's linear product."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _check(kernel, parameter: str) -> str:
    if kernel not in KERNELS:
        raise ValueError(f"{parameter} must be one of {KERNELS}, got {kernel!r}.")
    if kernel == "onednn" and not onednn_available():
        raise ValueError(f"{parameter}={kernel!r}, but this PyTorch build has no oneDNN "
                         "(torch.backends.mkldnn.is_available() is False); use 'torch' or 'auto'.")
    return kernel


def _onednn_product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def measured_speed_up(rows: int = 256, d_in: int = 640, d_out: int = 2048, repeats: int = 5) -> float:
    """How many times faster oneDNN multiplies a (rows, d_in) by (d_in, d_out) float32 product
    than PyTorch's default kernel here (medians of alternating runs).

    Usage: ``measured_speed_up()`` -> e.g. 2.1 on an AMD EPYC, about 1 on many others.
    """
    x, weight = torch.randn(rows, d_in), torch.randn(d_out, d_in)
    times = {"torch": [], "onednn": []}
    for index in range(repeats + 2):
        for kernel, run in (("torch", F.linear), ("onednn", _onednn_product)):
            start = time.perf_counter()
            run(x, weight, None)
            if index >= 2:   # the first two are warm-up (oneDNN builds its kernel there)
                times[kernel].append(time.perf_counter() - start)
    median = {kernel: sorted(values)[len(values) // 2] for kernel, values in times.items()}
    return median["torch"] / median["onednn"]


@functools.cache
def _automatic() -> str:
    if not onednn_available():
        return "torch"
    return "onednn" if measured_speed_up() >= SPEED_UP_NEEDED else "torch"


@functools.cache
def _from_environment(value: str) -> str:
    kernel = _check(value, ENVIRONMENT)
    return _automatic() if kernel == "auto" else kernel


def current_kernel() -> str:
    """The kernel float32 CPU products use here and now: ``"onednn"`` or ``"torch"``.

    Usage: ``current_kernel()``; set by :func:`linear_kernel`, else by ``ROMELIB_LINEAR_KERNEL``,
    else ``"auto"`` (measured once per process).
    """
    chosen = _chosen.get()
    if chosen is not None:
        return chosen
    return _from_environment(os.environ.get(ENVIRONMENT, "auto").strip().lower())


@contextmanager
def linear_kernel(kernel: str):
    """Inside the block, float32 CPU products use ``kernel`` (one of ``KERNELS``).

    Usage: ``with linear_kernel("torch"): romelib.trace(mt, prompt, subject)``.
    """
    _check(kernel, "kernel")
    token = _chosen.set(_automatic() if kernel == "auto" else kernel)
    try:
        yield
    finally:
        _chosen.reset(token)


class _OneDNNLinear(torch.autograd.Function):
    """``x @ W.T + b`` by oneDNN, with the gradients of ``F.linear``."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x if weight.requires_grad else None, weight)
        ctx.has_bias = bias is not None
        return _onednn_product(x, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = _onednn_product(grad.contiguous(), weight.t(), None)
        if ctx.needs_input_grad[1]:
            grad_weight = grad.reshape(-1, grad.shape[-1]).T @ x.reshape(-1, x.shape[-1])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.reshape(-1, grad.shape[-1]).sum(0)
        return grad_x, grad_weight, grad_bias


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` by the current kernel (oneDNN only for float32 on the CPU).

    Usage: ``linear(hidden, mt.module("unembed").weight[:2048])``.
    """
    if (x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32
            or x.shape[-1] == 0 or current_kernel() != "onednn"):
        return F.linear(x, weight, bias)
    tracked = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, weight, bias))
    return _OneDNNLinear.apply(x, weight, bias) if tracked else _onednn_product(x, weight, bias)


def _linear_forward(self, x):
    return linear(x, self.weight, self.bias)


def install(model: torch.nn.Module) -> int:
    """Route every plain ``nn.Linear`` of ``model`` through :func:`linear`; how many there are.

    Usage: ``install(mt.model)`` (``load_model`` and ``wrap_model`` do it).  Hooks on the
    layers still run; the weights are not touched, so edits show in the next product.
    """
    layers = [m for m in model.modules() if type(m) is torch.nn.Linear]
    for layer in layers:
        layer.forward = types.MethodType(_linear_forward, layer)
    return len(layers)
