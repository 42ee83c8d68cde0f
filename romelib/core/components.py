"""The component table: the one place that knows where each architecture keeps its modules.

Usage::

    arch = architecture_for(model.config.model_type)
    arch.blocks          # "model.layers"
    arch.mlp_proj        # "mlp.down_proj", relative to one block

Everything else in romelib speaks in abstract component names and asks this table
for the module path, the way pyvene maps ``mlp_output`` to a real module per
architecture.  To support a new architecture, add one row to ``ARCHITECTURES``.

Abstract component names (what :func:`component_path` accepts):

``embed``       token embedding module (its output is what causal tracing corrupts)
``block``       one transformer block; its output is the residual stream h_l
``attn``        the module whose output is the attention term a_l added to the residual
``mlp``         the module whose output is the MLP term m_l added to the residual
``mlp_proj``    the MLP's output matrix that ROME rewrites; its input is the key k,
                its output the value v
``final_norm``  the norm applied before the unembedding
``unembed``     the unembedding (``lm_head``)

The residual identity the paper rests on is then, for every architecture in the table,
``block_l(h) == h + attn_l(h) + mlp_l(h)`` (``attn`` and ``mlp`` read through whatever
norms the architecture puts around them).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Architecture:
    """Module paths of one model family; block-level paths are relative to one block."""

    embed: str                # absolute: token embedding
    blocks: str               # absolute: the ModuleList of blocks
    attn: str                 # per block: output = attention term added to the residual
    mlp: str                  # per block: output = MLP term added to the residual
    mlp_proj: str             # per block: the matrix ROME rewrites
    final_norm: str           # absolute
    unembed: str              # absolute
    mlp_proj_transposed: bool = False  # True for GPT-2's Conv1D: weight is (in, out)
    parallel: bool = False    # attention and MLP both read the block input (GPT-J, NeoX)
    mlp_proj_feeds_mlp: bool = False  # the `mlp` component normalises mlp_proj's output (Gemma 2/3)


_LLAMA_LIKE = Architecture(
    embed="model.embed_tokens",
    blocks="model.layers",
    attn="self_attn",
    mlp="mlp",
    mlp_proj="mlp.down_proj",
    final_norm="model.norm",
    unembed="lm_head",
)

# Gemma 2/3 normalise each sub-layer's output before adding it to the residual, so the
# term added to the residual is the output of the post-norm, not of the MLP itself.
_GEMMA_SANDWICH = Architecture(
    embed="model.embed_tokens",
    blocks="model.layers",
    attn="post_attention_layernorm",
    mlp="post_feedforward_layernorm",
    mlp_proj="mlp.down_proj",
    final_norm="model.norm",
    unembed="lm_head",
    mlp_proj_feeds_mlp=True,
)

ARCHITECTURES: dict[str, Architecture] = {
    "gemma3_text": _GEMMA_SANDWICH,
    "gemma2": _GEMMA_SANDWICH,
    "gemma": _LLAMA_LIKE,
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "gpt2": Architecture(
        embed="transformer.wte",
        blocks="transformer.h",
        attn="attn",
        mlp="mlp",
        mlp_proj="mlp.c_proj",
        final_norm="transformer.ln_f",
        unembed="lm_head",
        mlp_proj_transposed=True,
    ),
    "gptj": Architecture(
        embed="transformer.wte",
        blocks="transformer.h",
        attn="attn",
        mlp="mlp",
        mlp_proj="mlp.fc_out",
        final_norm="transformer.ln_f",
        unembed="lm_head",
        parallel=True,
    ),
    "gpt_neox": Architecture(
        embed="gpt_neox.embed_in",
        blocks="gpt_neox.layers",
        attn="post_attention_dropout",
        mlp="post_mlp_dropout",
        mlp_proj="mlp.dense_4h_to_h",
        final_norm="gpt_neox.final_layer_norm",
        unembed="lm_head",
        parallel=True,  # with use_parallel_residual=True, the Pythia default
    ),
}

COMPONENTS = ("embed", "block", "attn", "mlp", "mlp_proj", "final_norm", "unembed")
PER_LAYER = ("block", "attn", "mlp", "mlp_proj")


def architecture_for(model_type: str) -> Architecture:
    """Usage: ``architecture_for("gpt2").mlp_proj`` -> ``"mlp.c_proj"``."""
    try:
        return ARCHITECTURES[model_type]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ValueError(
            f"romelib does not know where the modules of model type {model_type!r} live. "
            f"Known types: {known}. To add it, print the model (print(model)) to see its "
            "module names, then add a row to ARCHITECTURES in romelib/core/components.py giving "
            "the paths of embed, blocks, attn, mlp, mlp_proj, final_norm and unembed."
        ) from None


def component_path(arch: Architecture, component: str, layer: int | None = None) -> str:
    """Usage: ``component_path(arch, "mlp_proj", 5)`` -> ``"model.layers.5.mlp.down_proj"``."""
    if component not in COMPONENTS:
        raise ValueError(f"Unknown component {component!r}; choose one of {COMPONENTS}.")
    if component in PER_LAYER:
        if layer is None:
            raise ValueError(f"Component {component!r} needs a layer number.")
        block = f"{arch.blocks}.{layer}"
        return block if component == "block" else f"{block}.{getattr(arch, component)}"
    if layer is not None:
        raise ValueError(f"Component {component!r} is not per layer; do not pass a layer.")
    return getattr(arch, component)
