"""Resuming a forward pass in the middle of the network, for any architecture in the table.

Usage::

    calls = capture_block_calls(mt, input_ids)          # one ordinary forward, batch 1
    cache = prefix_cache(corrupted_keys_values, position=3, repeats={6: 2, 7: 2})
    hidden = calls.run(mt, hidden, start_layer=6, position=3, cache=cache)

Causal tracing restores one state at (position ``p``, layer ``l``) and asks what the model
then predicts.  Nothing below layer ``l`` and nothing at positions before ``p`` can change,
so the run can start at layer ``l + 1`` and feed only positions ``p, p+1, ...``; the keys
and values the attention needs for positions ``< p`` are those of the corrupted run,
supplied as a key/value cache (exactly what text generation does with earlier tokens).

Instead of re-implementing each model family's forward, we watch one real forward and
record the arguments the model passes to every block (rotary ``position_embeddings``,
``attention_mask``, ``position_ids``...).  To resume, :meth:`BlockCalls.run` calls the
blocks itself with those arguments, cut to the positions ``p:``.  A test checks, for a tiny
model of every architecture, that a resumed run equals the full run.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import nn

# Names under which blocks accept a key/value cache (transformers 5.x, by family).
CACHE_ARGUMENTS = ("cache", "layer_past", "past_key_values", "past_key_value")
# Arguments that depend on the position axis, and how to cut them to positions p:.
POSITION_ARGUMENTS = ("attention_mask", "position_ids", "cache_position", "position_embeddings")


@dataclass
class BlockCall:
    """The keyword arguments one block received in a recorded forward (hidden states removed)."""

    arguments: dict
    cache_argument: str | None   # the block's name for its key/value cache, if it takes one


class BlockCalls(list):
    """One :class:`BlockCall` per block, recorded from a real forward of ``length`` tokens.

    Usage: ``calls = capture_block_calls(mt, input_ids); calls.run(mt, h, 4, 2, cache)``.
    """

    def __init__(self, calls: list[BlockCall], length: int):
        super().__init__(calls)
        self.length = length

    @property
    def supports_prefix(self) -> bool:
        """True when every block takes a key/value cache (needed to skip earlier positions)."""
        return all(call.cache_argument is not None for call in self)

    def arguments(self, layer: int, position: int, cache) -> dict:
        """The block's arguments for inputs that start at ``position``, with ``cache``."""
        call = self[layer]
        arguments = {name: _cut(name, value, position, self.length)
                     for name, value in call.arguments.items()}
        if call.cache_argument is not None:
            arguments[call.cache_argument] = cache
        if position > 0 and arguments.get("attention_mask") is None and "attention_mask" in call.arguments:
            arguments["attention_mask"] = causal_mask(position, self.length, _device(call))
        return arguments

    def run(self, mt, hidden: torch.Tensor, start_layer: int, position: int, cache=None,
            stop_layer: int | None = None) -> torch.Tensor:
        """Run blocks ``start_layer .. stop_layer-1`` on ``hidden`` (rows, length - position, d).

        Usage: ``calls.run(mt, h, start_layer=5, position=2, cache=prefix)``; the cache must
        hold the keys/values of positions ``< position`` for layers ``>= start_layer``.
        """
        blocks = mt.module("blocks")
        for layer in range(start_layer, len(blocks) if stop_layer is None else stop_layer):
            hidden = call_block(blocks[layer], hidden, self.arguments(layer, position, cache))
        return hidden


def call_block(block: nn.Module, hidden: torch.Tensor, arguments: dict) -> torch.Tensor:
    """Usage: ``h = call_block(block, h, arguments)``; blocks return a tensor or a tuple."""
    output = block(hidden, **arguments)
    return output[0] if isinstance(output, tuple) else output


def causal_mask(position: int, length: int, device) -> torch.Tensor:
    """Boolean mask (1, 1, length - position, length): query ``position + i`` sees keys ``<= position + i``.

    Usage: ``causal_mask(3, 10, "cpu")``.
    """
    return torch.ones(length - position, length, dtype=torch.bool, device=device).tril(
        diagonal=position)[None, None]


def _device(call: BlockCall):
    for value in call.arguments.values():
        if torch.is_tensor(value):
            return value.device
        if isinstance(value, tuple) and value and torch.is_tensor(value[0]):
            return value[0].device
    return "cpu"


def _cut(name: str, value, position: int, length: int):
    """Cut a position-dependent argument to the positions ``position:``."""
    if position == 0 or name not in POSITION_ARGUMENTS or value is None:
        return value
    if name == "position_embeddings":  # (cos, sin), each (batch, length, dim)
        return tuple(part[:, position:] for part in value)
    if name == "attention_mask":
        if not torch.is_tensor(value) or value.shape[-1] != length:
            raise NotImplementedError(
                f"This model passes its blocks an attention mask of type {type(value).__name__} "
                "that romelib cannot cut to later positions; load the model with "
                "attn_implementation='sdpa' or 'eager', or trace with engine='reference'.")
        return value[..., position:, :]
    return value[..., position:]   # position_ids (batch, length), cache_position (length,)


def capture_block_calls(mt, input_ids: torch.Tensor) -> BlockCalls:
    """Record the arguments the model passes to each block in one forward (batch 1).

    Usage: ``calls = capture_block_calls(mt, torch.tensor([ids]))``.
    """
    if input_ids.shape[0] != 1:
        raise ValueError("Record block calls on a single prompt (batch 1).")
    blocks = list(mt.module("blocks"))
    recorded: dict[int, BlockCall] = {}

    def record(layer):
        def hook(module, args, kwargs):
            recorded[layer] = _bind(module, args, kwargs)
        return hook

    handles = [block.register_forward_pre_hook(record(i), with_kwargs=True)
               for i, block in enumerate(blocks)]
    try:
        with torch.no_grad():
            mt.model(input_ids=input_ids, logits_to_keep=1, **cache_keywords(mt))
    finally:
        for handle in handles:
            handle.remove()
    return BlockCalls([recorded[i] for i in range(len(blocks))], input_ids.shape[1])


def _bind(block: nn.Module, args: tuple, kwargs: dict) -> BlockCall:
    signature = inspect.signature(block.forward)
    bound = signature.bind(*args, **kwargs)
    parameters = list(signature.parameters.values())
    arguments = {}
    for name, value in bound.arguments.items():
        if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            arguments.update(value)
        elif signature.parameters[name].kind is not inspect.Parameter.VAR_POSITIONAL:
            arguments[name] = value
    arguments.pop(parameters[0].name, None)           # the hidden states
    cache_argument = next((name for name in CACHE_ARGUMENTS
                           if name in signature.parameters or name in arguments), None)
    for name, value in arguments.items():
        if name in POSITION_ARGUMENTS or name == cache_argument:
            continue
        if torch.is_tensor(value) and value.dim() > 0:
            raise NotImplementedError(
                f"{type(block).__name__} receives a tensor argument {name!r} that romelib does "
                "not know how to cut to later positions; trace with engine='reference'.")
    return BlockCall(arguments, cache_argument)


def cache_keywords(mt) -> dict:
    """Keyword arguments that make ``mt.model`` return a fresh key/value cache.

    Usage: ``out = mt.model(**inputs, **cache_keywords(mt)); cache = returned_cache(out)``.
    """
    from transformers import DynamicCache

    parameters = inspect.signature(mt.model.forward).parameters
    name = "cache" if "cache" in parameters else "past_key_values"
    return {name: DynamicCache(), "use_cache": True}


def returned_cache(output):
    """The key/value cache a model forward returned (``cache`` or ``past_key_values``)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)


def keys_values(cache, num_layers: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer ``(keys, values)``, each (rows, kv_heads, length, head_dim), from a cache.

    Usage: ``kv = keys_values(returned_cache(output), mt.num_layers)``.
    """
    layers = getattr(cache, "self_attention_cache", cache).layers
    return [(layers[i].keys, layers[i].values) for i in range(num_layers)]


def prefix_cache(kv: list[tuple[torch.Tensor, torch.Tensor]], position: int,
                 repeats: dict[int, int]):
    """A DynamicCache holding positions ``< position`` of ``kv``, rows repeated per layer.

    Usage: ``cache = prefix_cache(kv, position=3, repeats={5: 4, 6: 4})`` fills layers 5
    and 6 with the keys/values of positions 0..2, each row repeated 4 times (the batch
    that reaches that layer is 4 copies of the recorded rows).  ``None`` when
    ``position == 0``: nothing comes before.
    """
    from transformers import DynamicCache

    if position == 0:
        return None
    cache = DynamicCache()
    for layer, repeat in sorted(repeats.items()):
        keys, values = kv[layer]
        cache.update(keys[:, :, :position].repeat(repeat, 1, 1, 1),
                     values[:, :, :position].repeat(repeat, 1, 1, 1), layer)
    return cache
