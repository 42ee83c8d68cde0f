"""Estimating the work of a trace or an edit before starting it, and refusing runaway jobs.

Usage::

    work = Work(flops=2.4e12, memory_bytes=3e9, description="trace of 40 positions")
    check_work(mt, work, max_seconds=600, how="pass max_seconds=None to run it anyway")
    check_context(mt, n_tokens, "prompt")

A trace of a 2,000-token prompt would run for days on a laptop; an edit with a very long
prompt can exhaust the memory.  Each entry point counts the multiply-adds it will do and
the largest tensors it will hold, converts them to an estimated time at a nominal speed for
the device (about 100 GFLOP/s for a 2-core CPU, 10 TFLOP/s for a GPU: deliberately round
figures; on the 2-core development machine, traces of 8 to 2,509 tokens took 0.3 to 1.1 times
their estimate, the estimate erring on the long side), and refuses, with the estimate and the way to
proceed anyway, when the estimate is above ``max_seconds`` or the memory above half of the
machine's.  A prompt longer than the model's context is always refused.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from .checks import check_number

NOMINAL_FLOPS = {"cpu": 100e9, "cuda": 10e12, "mps": 2e12}
# Copying memory (key/value caches) is counted as this many FLOPs per byte: a 2-core CPU moves
# about 5 GB/s while it computes about 100 GFLOP/s; a GPU's ratio is of the same order.
FLOPS_PER_BYTE = 20.0


@dataclass(frozen=True)
class Work:
    """What a job will cost: floating-point operations and the largest memory it will hold."""

    flops: float
    memory_bytes: float
    description: str

    def __add__(self, other: Work) -> Work:
        return Work(self.flops + other.flops, max(self.memory_bytes, other.memory_bytes),
                    self.description or other.description)

    def seconds(self, device) -> float:
        """Usage: ``work.seconds(mt.device)`` -> the estimate at the device's nominal speed."""
        return self.flops / NOMINAL_FLOPS.get(getattr(device, "type", str(device)), 100e9)

    def describe(self, device) -> str:
        seconds = self.seconds(device)
        when = f"{seconds:.0f} s" if seconds < 120 else (
            f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h")
        return (f"{self.description}: about {self.flops / 1e9:,.0f} GFLOP (~{when} on "
                f"{getattr(device, 'type', device)}) and {self.memory_bytes / 2**30:.1f} GiB")


def per_token_layer_flops(mt) -> float:
    """Usage: ``per_token_layer_flops(mt)`` -> multiply-adds x 2 of one block for one token."""
    block = mt.module("blocks")[0]
    return 2.0 * sum(p.numel() for p in block.parameters() if p.dim() == 2)


def attention_dims(mt) -> tuple[int, int]:
    """Usage: ``attention_dims(mt)`` -> (query width, key/value width) of one layer's attention."""
    config = getattr(mt.model.config, "text_config", None) or mt.model.config
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head", None) or 1
    head_dim = getattr(config, "head_dim", None) or mt.d_model // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    return heads * head_dim, kv_heads * head_dim


def attention_flops(mt, fed: float, context: float) -> float:
    """Usage: ``attention_flops(mt, 10, 2000)`` -> FLOPs of one layer's attention for ``fed``
    tokens reading ``context`` keys and values (scores and weighted sum, 2 multiply-adds per
    query dimension and key)."""
    return 4.0 * attention_dims(mt)[0] * fed * context


def unembedding_flops(mt) -> float:
    """Usage: ``unembedding_flops(mt)`` -> FLOPs of the logits of one position (vocabulary x d_model x 2)."""
    return 2.0 * mt.module("unembed").weight.numel()


def physical_memory() -> float:
    """Usage: ``physical_memory()`` -> bytes of RAM on this machine (inf when unknown)."""
    try:
        return float(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return float("inf")


def context_length(mt) -> int | None:
    """Usage: ``context_length(mt)`` -> the most tokens the model accepts (None if it does not say)."""
    return getattr(mt.model.config, "max_position_embeddings", None) or getattr(
        mt.model.config, "n_positions", None)


def check_context(mt, n_tokens: int, what: str) -> None:
    """Usage: ``check_context(mt, len(ids), "the prompt")``: refuse inputs longer than the context."""
    limit = context_length(mt)
    if limit is not None and n_tokens > limit:
        raise ValueError(f"{what} has {n_tokens} tokens, more than {mt.name}'s context of {limit}; "
                         "shorten it.")


def check_work(mt, work: Work, max_seconds: float | None, how: str) -> None:
    """Refuse ``work`` estimated above ``max_seconds`` (None: no limit) or above half the RAM.

    Usage: ``check_work(mt, work, 600, "pass max_seconds=None to run it anyway")``.
    """
    if max_seconds is not None:
        check_number("max_seconds", max_seconds, minimum=0, exclusive_minimum=True)
    if max_seconds is not None and work.seconds(mt.device) > max_seconds:
        raise ValueError(f"This {work.describe(mt.device)}, above the limit max_seconds={max_seconds:g}. "
                         f"To run it anyway, {how}; or make it smaller (fewer samples, positions "
                         "or tokens).")
    if mt.device.type == "cpu" and work.memory_bytes > physical_memory() / 2:
        raise ValueError(f"This {work.describe(mt.device)}, more than half of this machine's "
                         f"{physical_memory() / 2**30:.0f} GiB of memory; make it smaller (fewer "
                         "samples or tokens), or use a machine with more memory.")
