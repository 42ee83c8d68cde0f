"""MEMIT (Meng et al. 2023, "Mass-Editing Memory in a Transformer"): many facts at once,
the change spread over a range of MLP layers.

Usage::

    requests = [EditRequest("{} plays the sport of", "Michael Jordan", "golf"), ...]
    with romelib.edit(mt, requests, method="memit") as handle:     # one handle for all of them
        romelib.predict(mt, "Michael Jordan plays the sport of")

Where ROME inserts one (key, value) pair into one MLP matrix, MEMIT inserts n of them into
the MLP matrices of the layers ``R = hparams.layers`` (the critical path that causal
tracing finds), in three steps:

1. **Target residuals** ``z_i`` (:func:`romelib.editing.rome.compute_value` with
   ``site="block"``): for each request, the residual stream after the last layer of R at the
   subject's last token is optimised, like ROME's v*, so that the prompts continue with the
   new target (with ROME's KL and weight-decay terms); ``z_i = h_i + delta_i``.
2. **Layer by layer**, from the lowest layer of R up: the keys ``K`` (inputs of the layer's
   MLP matrix at the subject's last token, averaged over the context prefixes) and the
   residuals still missing at the last layer, ``z - h(current model)``, are read from the
   model as edited so far; the layer takes its share ``(z - h) / (layers left)`` and stores
   it (through the MLP's output norm, for Gemma 2/3: :func:`through_post_norm`) with the
   least-squares update that keeps the layer's other keys in place:
   ``dW = R K^T (lambda C + K K^T)^-1`` (C the key statistics, ``lambda`` =
   ``mom2_update_weight``: how many "text keys" C stands for).
3. The changes of all layers are returned, the weights put back: :func:`romelib.edit` applies
   them, and its handle undoes them all at once.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..core.checks import check_choice, check_int, check_layer_index, check_number, check_optional_int, check_text
from ..core.hooks import hooks
from ..core.hparams import hparams_from_dict, load_hparams
from ..core.tokens import pad_batch
from ..core.unembedding_precision import UNEMBED_DTYPES
from .context_prefixes import context_prefixes
from .key_statistics import key_statistics_for_layers
from .request import ComputedEdit, as_request
from .rome import FACT_TOKENS, KL_TOKENS, compute_value
from .value_batch import padded_positions, prompt_rows


@dataclass(frozen=True)
class MEMITHyperParams:
    """MEMIT's settings for one model; the defaults follow the authors' GPT-J values."""

    layers: tuple = (3, 4, 5, 6, 7)          # the MLP layers the change is spread over
    fact_token: str = "subject_last"
    v_num_grad_steps: int = 20
    v_lr: float = 0.5
    v_weight_decay: float = 0.5
    clamp_norm_factor: float = 0.75          # ||delta|| <= factor * ||h|| at the last layer
    kl_factor: float = 0.0625
    kl_prompts: tuple = ("{} is a",)
    kl_token: str = "fact"
    early_stop_loss: float = 0.05
    early_stop_nll: float | None = None
    context_lengths: tuple = (5, 10)
    contexts_per_length: int = 10
    mom2_source: str = "wikitext-2"
    mom2_max_tokens: int | None = 100_000
    mom2_update_weight: float = 15_000.0     # lambda: the weight of C against the new keys
    unembed_dtype: str = "auto"              # the target steps' unembedding (as ROME's)

    def __post_init__(self):
        if isinstance(self.layers, (str, bytes)) or not hasattr(self.layers, "__iter__"):
            raise TypeError(f"layers must be a list of layer indices, like (3, 4, 5), got {self.layers!r}.")
        for layer in self.layers:
            check_layer_index("hparams.layers", layer)
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "kl_prompts", tuple(self.kl_prompts))
        object.__setattr__(self, "context_lengths", tuple(self.context_lengths))
        if not self.layers or list(self.layers) != sorted(set(self.layers)):
            raise ValueError(f"layers must be increasing and distinct, like (3, 4, 5), got {self.layers}.")
        check_choice("fact_token", self.fact_token, FACT_TOKENS)
        check_choice("kl_token", self.kl_token, KL_TOKENS)
        check_choice("unembed_dtype", self.unembed_dtype, UNEMBED_DTYPES)
        check_int("v_num_grad_steps", self.v_num_grad_steps, minimum=1)
        check_int("contexts_per_length", self.contexts_per_length, minimum=0)
        for name in ("v_lr", "clamp_norm_factor", "mom2_update_weight"):
            check_number(name, getattr(self, name), minimum=0, exclusive_minimum=True)
        for name in ("v_weight_decay", "kl_factor", "early_stop_loss"):
            check_number(name, getattr(self, name), minimum=0)
        if self.early_stop_nll is not None:
            check_number("early_stop_nll", self.early_stop_nll, minimum=0)
        check_text("mom2_source", self.mom2_source)
        check_optional_int("mom2_max_tokens", self.mom2_max_tokens, minimum=1)
        if not self.kl_prompts or any(p.count("{}") != 1 for p in self.kl_prompts):
            raise ValueError(f"kl_prompts {self.kl_prompts} need one '{{}}' each, like ['{{}} is a'].")


def resolve_memit_hparams(mt, hparams) -> MEMITHyperParams:
    """Usage: ``resolve_memit_hparams(mt, None)`` -> the model's file; a dict is checked strictly."""
    if hparams is None:
        hparams = load_hparams(MEMITHyperParams, "memit", mt.name)
    elif isinstance(hparams, dict):
        hparams = hparams_from_dict(MEMITHyperParams, hparams)
    elif not isinstance(hparams, MEMITHyperParams):
        raise TypeError(f"MEMIT needs MEMITHyperParams (or a dict of them), not {type(hparams).__name__}.")
    for layer in hparams.layers:
        mt.check_layer(layer, "hparams.layers")
    return hparams


@torch.no_grad()
def mean_keys(mt, requests, prefixes: list[str], layer: int, fact_token: str,
              chunk: int = 256) -> torch.Tensor:
    """The key of each request at ``layer``, averaged over the prefixes: (requests, d_mlp).

    Usage: ``K = mean_keys(mt, requests, context_prefixes(mt), 5, "subject_last")``.
    """
    rows, positions = [], []
    for request in requests:
        r, p = prompt_rows(mt, request, prefixes, fact_token)
        rows += r
        positions += p
    name, keys = f"mlp_proj.{layer}", []
    for start in range(0, len(rows), chunk):
        part, where = rows[start:start + chunk], positions[start:start + chunk]
        with hooks(mt, [name], retain_input=True, retain_output=False, stop=True) as acts:
            mt.model(**pad_batch(mt, part), use_cache=False)
        keys.append(acts[name].input[torch.arange(len(part)), padded_positions(part, where)].double())
    return torch.cat(keys).view(len(requests), len(prefixes), -1).mean(dim=1)


@torch.no_grad()
def residuals(mt, requests, layer: int, fact_token: str) -> torch.Tensor:
    """The residual stream after block ``layer`` at each plain prompt's fact token: (requests, d_model)."""
    rows, positions = [], []
    for request in requests:
        r, p = prompt_rows(mt, request, [""], fact_token)
        rows += r
        positions += p
    name = f"block.{layer}"
    with hooks(mt, [name], stop=True) as acts:
        mt.model(**pad_batch(mt, rows), use_cache=False)
    return acts[name].output[torch.arange(len(rows)), padded_positions(rows, positions)].double()


@torch.no_grad()
def proj_outputs(mt, requests, layer: int, fact_token: str) -> torch.Tensor:
    """The rewritten matrix's output at each plain prompt's fact token: (requests, d_model)."""
    rows, positions = [], []
    for request in requests:
        r, p = prompt_rows(mt, request, [""], fact_token)
        rows += r
        positions += p
    name = f"mlp_proj.{layer}"
    with hooks(mt, [name], stop=True) as acts:
        mt.model(**pad_batch(mt, rows), use_cache=False)
    return acts[name].output[torch.arange(len(rows)), padded_positions(rows, positions)].double()


def through_post_norm(mt, layer: int, outputs: torch.Tensor, wanted: torch.Tensor) -> torch.Tensor:
    """The change of the rewritten matrix's outputs that adds ``wanted`` to the residual stream.

    Usage: ``through_post_norm(mt, 5, v, r)`` -> (requests, d_model).  In most architectures
    the matrix's output is what the MLP adds to the residual, so this is ``wanted`` itself.
    Gemma 2 and 3 normalise it first (``post_feedforward_layernorm``), which MEMIT's linear
    algebra does not know: the change is then found to first order, the least-squares
    solution of ``J dv = wanted`` with ``J`` the norm's Jacobian at each output (a norm
    cannot change the length of its output, so part of ``wanted`` may be out of reach; the
    next layers take up what is left, since each one reads the residual still missing).
    """
    if not mt.arch.mlp_proj_feeds_mlp:
        return wanted
    norm = mt.module("mlp", layer)
    exact = _invert_rms_norm(norm, outputs, wanted)
    if exact is not None:
        return exact
    changes = []
    for output, target in zip(outputs, wanted):
        jacobian = torch.func.jacrev(lambda v: norm(v.to(mt.dtype)).double())(output)   # (d, d)
        changes.append(torch.linalg.lstsq(jacobian, target[:, None]).solution[:, 0])
    return torch.stack(changes)


@torch.no_grad()
def _invert_rms_norm(norm, outputs: torch.Tensor, wanted: torch.Tensor) -> torch.Tensor | None:
    """For an RMS norm with a gain, ``norm(x) = g * x / rms(x)``: the exact change of ``x`` that
    moves ``norm(x)`` by ``wanted`` (up to the length the norm imposes), keeping ``rms(x)``.

    Returns None when ``norm`` is not of that form (checked numerically on ``outputs``).
    A first-order solve is useless here: the norm's Jacobian is nearly singular (it removes
    the radial direction and divides by rms(x)), and its least-squares inverse explodes.
    """
    x = outputs.double()
    dtype = next(norm.parameters()).dtype
    gain = norm(torch.ones(1, x.shape[1], dtype=dtype)).double()[0]          # rms(1) = 1: g itself
    rms = x.pow(2).mean(-1, keepdim=True).sqrt()
    now = norm(x.to(dtype)).double()
    if not torch.allclose(now, gain * x / rms, rtol=1e-3, atol=1e-3 * float(now.abs().max())):
        return None
    safe = torch.where(gain.abs() < 1e-3 * gain.abs().max(), torch.full_like(gain, float("inf")), gain)
    direction = (now + wanted.double()) / safe                                # x-space, up to scale
    target = direction * rms / direction.pow(2).mean(-1, keepdim=True).sqrt()
    return target - x


def spread_update(keys: torch.Tensor, missing: torch.Tensor, second_moment: torch.Tensor,
                  weight: float) -> torch.Tensor:
    """MEMIT's least-squares change of one layer: ``R K^T (lambda C + K K^T)^-1``, (d_model, d_mlp).

    Usage: ``dW = spread_update(K, R, C, 15000.0)`` with ``K`` (n, d_mlp) the keys and ``R``
    (n, d_model) the values to add; with ``lambda = 0`` and n = 1 this is ``R k^T / (k^T k)``.
    """
    keys, missing = keys.double(), missing.double()
    system = weight * second_moment.double() + keys.T @ keys           # (d_mlp, d_mlp)
    return torch.linalg.solve(system, keys.T @ missing).T              # (d_model, d_mlp)


def memit_targets(mt, requests, hparams=None) -> list:
    """Each request's target for the residual stream at MEMIT's last layer, optimised like ROME's
    v* (:func:`romelib.editing.rome.compute_value` with ``site="block"``).

    Usage: ``values = memit_targets(mt, requests, hparams)``; ``value.value_init + value.delta``
    is the target.  They depend on the layers and the v* settings, not on ``mom2_update_weight``,
    so one list serves every lambda (``compute_memit(..., targets=values)``).
    """
    requests = _requests(requests)
    hparams = resolve_memit_hparams(mt, hparams)
    prefixes = context_prefixes(mt, hparams.context_lengths, hparams.contexts_per_length)
    return [compute_value(mt, r, hparams, prefixes, site="block", layer=hparams.layers[-1])
            for r in tqdm(requests, desc="MEMIT: target of each fact", disable=len(requests) < 2)]


def _requests(requests) -> list:
    requests = [as_request(r) for r in ([requests] if not isinstance(requests, (list, tuple)) else requests)]
    if not requests:
        raise ValueError("MEMIT needs at least one request.")
    seen = {}
    for request in requests:
        other = seen.setdefault((request.prompt, request.subject), request)
        if other.target_new != request.target_new:
            raise ValueError(f"requests ask for two answers to the same prompt {request.filled_prompt!r}: "
                             f"{other.target_new!r} and {request.target_new!r}; keep one of them.")
    return requests


def compute_memit(mt, requests, hparams=None, targets: list | None = None) -> ComputedEdit:
    """MEMIT's changes for a list of requests, spread over ``hparams.layers`` (weights untouched).

    Usage: ``change = compute_memit(mt, [request_1, request_2])``; ``romelib.edit(mt, requests,
    method="memit")`` applies it.  ``targets``: the requests' :func:`memit_targets`, computed
    once for several settings of ``mom2_update_weight``.
    """
    requests = _requests(requests)
    hparams = resolve_memit_hparams(mt, hparams)
    prefixes = context_prefixes(mt, hparams.context_lengths, hparams.contexts_per_length)
    last = hparams.layers[-1]
    values = memit_targets(mt, requests, hparams) if targets is None else list(targets)
    if len(values) != len(requests):
        raise ValueError(f"targets has {len(values)} entries for {len(requests)} requests.")
    targets = torch.stack([(v.value_init + v.delta).double() for v in values])   # (n, d_model)
    params = dict(mt.model.named_parameters())
    names = [mt.module_name("mlp_proj", layer) + ".weight" for layer in hparams.layers]
    # C for every layer first, from the unedited model: a statistics file is checked against the
    # weights it was computed from, and the earlier layers are about to change
    moments = {layer: stats.mom2 for layer, stats in key_statistics_for_layers(
        mt, hparams.layers, hparams.mom2_source, hparams.mom2_max_tokens).items()}
    originals = {name: params[name].detach().clone() for name in names}
    norms = []
    try:
        for index, layer in enumerate(hparams.layers):
            keys = mean_keys(mt, requests, prefixes, layer, hparams.fact_token)
            missing = (targets - residuals(mt, requests, last, hparams.fact_token)) / (len(hparams.layers) - index)
            missing = through_post_norm(mt, layer, proj_outputs(mt, requests, layer, hparams.fact_token),
                                        missing)
            change = spread_update(keys, missing, moments[layer], hparams.mom2_update_weight)
            norms.append(float(change.norm()))
            weight = params[names[index]]
            with torch.no_grad():
                weight.add_((change.T if mt.arch.mlp_proj_transposed else change).to(weight.dtype))
        deltas = {name: params[name].detach() - originals[name] for name in names}
    finally:
        with torch.no_grad():
            for name, original in originals.items():
                params[name].copy_(original)
    info = {"hparams": hparams, "layers": hparams.layers, "requests": len(requests),
            "update_norms": norms, "losses": [v.losses for v in values],
            "steps": [len(v.losses) for v in values]}
    return ComputedEdit(deltas=deltas, info=info)
