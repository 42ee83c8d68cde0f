"""ROME: Rank-One Model Editing (Meng et al. 2022, section 3) in four readable steps.

Usage::

    request = EditRequest("{} plays the sport of", "Michael Jordan", "soccer")
    with romelib.edit(mt, request, method="rome") as handle:
        romelib.predict(mt, "Michael Jordan plays the sport of")   # ' soccer'
    handle.info["losses"]                                           # the v* optimisation

1. **k\\*** (:func:`compute_keys`): the input of the rewritten matrix (``mlp_proj``) at the
   subject's last token, for the prompt seen after each of a few short model-written
   prefixes; their mean ``k_avg`` gives the update its direction.
2. **v\\*** (:func:`compute_value`): a vector ``delta`` added to that matrix's output at the
   subject's last token is optimised so that the prompts continue with the new target,
   while a KL term keeps what the model says after ``"{subject} is a"``, with weight decay
   and a norm clamp.  ``v* = W k* + delta``.
3. **C** (:func:`romelib.editing.key_statistics.key_statistics`): the second moment of keys over text.
4. **The update** (:func:`romelib.editing.memory.rank_one_update`), solved in float64:
   ``W' = W + (v* - W k*) (C^-1 k_avg)^T / ((C^-1 k_avg)^T k*)``, so ``W' k* = v*`` exactly.
   As in the authors' code, ``k*`` is the edited prompt's own key (``update_key="prompt"``);
   ``update_key="average"`` uses ``k* = k_avg``, the paper's Eq. 2 read literally.

The optimisation of v\\* is where the time goes, so it computes only what it needs: all
prompts run in one batch; the unembedding sees only the positions that predict a target
token; the part of each prompt before the subject's last token runs once (its attention
keys and values are cached); the layers below the edit run once and are then replayed;
and the first step, with delta still zero, also yields the keys of step 1 and the KL
term's reference distribution (see :mod:`romelib.editing.value_batch`).  Where the
hardware has fast bfloat16, the unembedding's product in those steps runs in bfloat16
(``unembed_dtype="auto"``; ``"model"`` keeps float32, as the authors' code;
:mod:`romelib.core.unembedding_precision` says what that changes).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..core.checks import check_choice, check_int, check_layer_index, check_number, check_optional_int, check_text
from ..core.hooks import hooks
from ..core.hparams import hparams_from_dict, load_hparams
from ..core.tokens import pad_batch
from ..core.unembedding_precision import UNEMBED_DTYPES, unembed_dtype, unembedding_in
from .context_prefixes import context_prefixes
from .key_statistics import key_statistics
from .memory import rank_one_update
from .request import ComputedEdit, EditRequest, as_request
from .value_batch import (
    ValueBatch,
    head_cache,
    padded_positions,
    prompt_rows,
    replay_blocks_below,
    replayed_layers,
    saving_block_output,
    scored_logits,
    value_batch,
)

log = logging.getLogger(__name__)

FACT_TOKENS = ("subject_last", "subject_first", "last")
# Where the KL term reads the KL prompt's next-token distribution: at its fact token, where
# delta is added (the authors' compute_v), or at its last token (this library before 2026-12).
KL_TOKENS = ("fact", "last")


@dataclass(frozen=True)
class ROMEHyperParams:
    """ROME's settings for one model; the defaults are the paper's GPT-2 XL values."""

    layer: int                               # which MLP to rewrite
    fact_token: str = "subject_last"         # where k* is read and delta added: see FACT_TOKENS
    v_num_grad_steps: int = 20               # Adam steps on delta
    v_lr: float = 0.5
    v_weight_decay: float = 0.5              # times ||delta|| / ||v_init||^2
    clamp_norm_factor: float = 4.0           # ||delta|| <= factor * ||v_init||
    kl_factor: float = 0.0625                # weight of KL("{} is a") to the unedited model
    kl_prompts: tuple = ("{} is a",)
    kl_token: str = "fact"                   # where KL is read: see KL_TOKENS
    early_stop_loss: float = 0.05            # stop once the total loss is this small (authors')
    early_stop_nll: float | None = None      # ... or once the target NLL alone is (None: never)
    context_lengths: tuple = (5, 10)         # token lengths of the model-written prefixes
    contexts_per_length: int = 10
    mom2_source: str = "wikitext-2"          # text for C (romelib.texts.text_source)
    mom2_max_tokens: int | None = None       # None: all of it
    identity_covariance: bool = False        # ablation: C = I
    update_key: str = "prompt"               # stored exactly: "prompt" (ROME's code) or "average"
    unembed_dtype: str = "auto"              # the v* steps' unembedding: see UNEMBED_DTYPES

    def __post_init__(self):
        """Every field is checked: a value outside its range would silently compute another
        edit (``clamp_norm_factor=-1`` flips it, ``0`` or ``v_num_grad_steps=0`` undo it)."""
        check_layer_index("hparams.layer", self.layer)
        check_choice("fact_token", self.fact_token, FACT_TOKENS)
        check_int("v_num_grad_steps", self.v_num_grad_steps, minimum=1)
        check_number("v_lr", self.v_lr, minimum=0, exclusive_minimum=True)
        check_number("v_weight_decay", self.v_weight_decay, minimum=0)
        check_number("clamp_norm_factor", self.clamp_norm_factor, minimum=0, exclusive_minimum=True)
        check_number("kl_factor", self.kl_factor, minimum=0)
        check_choice("kl_token", self.kl_token, KL_TOKENS)
        check_number("early_stop_loss", self.early_stop_loss, minimum=0)
        if self.early_stop_nll is not None:
            check_number("early_stop_nll", self.early_stop_nll, minimum=0)
        check_int("contexts_per_length", self.contexts_per_length, minimum=0)
        check_text("mom2_source", self.mom2_source)
        check_optional_int("mom2_max_tokens", self.mom2_max_tokens, minimum=1)
        check_choice("update_key", self.update_key, ("prompt", "average"))
        check_choice("unembed_dtype", self.unembed_dtype, UNEMBED_DTYPES)
        if not isinstance(self.identity_covariance, bool):
            raise TypeError(f"identity_covariance must be True or False, got {self.identity_covariance!r}.")
        for name in ("kl_prompts", "context_lengths"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                raise TypeError(f"{name} must be a list, got {value!r}.")
            object.__setattr__(self, name, tuple(value))
        for length in self.context_lengths:
            check_int("context_lengths", length, minimum=1)
        if not self.kl_prompts:
            raise ValueError("kl_prompts is empty; give at least one, like ['{} is a'] (kl_factor=0 "
                             "turns the KL term off).")
        bad = [p for p in self.kl_prompts if not isinstance(p, str) or p.count("{}") != 1]
        if bad:
            raise ValueError(f"kl_prompts {bad} need one '{{}}' for the subject, like '{{}} is a'.")


@dataclass
class ValueResult:
    """The optimised ``delta`` (v* = W k* + delta), the value it started from, the loss log."""

    delta: torch.Tensor            # (d_model,)
    value_init: torch.Tensor       # mlp_proj output at the fact token of the plain prompt
    losses: list[dict] = field(default_factory=list)
    keys: torch.Tensor | None = None   # (prompts, d_mlp): compute_keys's result, from the first pass


@torch.no_grad()
def compute_keys(mt, request: EditRequest, hparams: ROMEHyperParams,
                 prefixes: list[str]) -> torch.Tensor:
    """The input of ``mlp_proj`` at the fact token of each prefixed prompt: (prefixes, d_mlp).

    Usage: ``keys = compute_keys(mt, request, hp, context_prefixes(mt))``; one batched
    forward pass that stops at the edited layer.
    """
    rows, positions = prompt_rows(mt, request, prefixes, hparams.fact_token)
    name = f"mlp_proj.{hparams.layer}"
    with hooks(mt, [name], retain_input=True, retain_output=False, stop=True) as acts:
        mt.model(**pad_batch(mt, rows), use_cache=False)
    return acts[name].input[torch.arange(len(rows)), padded_positions(rows, positions)].float()


def compute_key(mt, request: EditRequest, hparams: ROMEHyperParams,
                prefixes: list[str]) -> torch.Tensor:
    """k*: the key averaged over the prefixed prompts (the direction of the update).

    Usage: ``k_star = compute_key(mt, request, hp, context_prefixes(mt))`` -> (d_mlp,).
    """
    return compute_keys(mt, request, hparams, prefixes).mean(dim=0)


def value_loss(log_probs, batch: ValueBatch, kl_reference, delta, value_init, hparams):
    """ROME's three loss terms: target NLL (mean over prompts), KL, weight decay.

    Usage: ``nll, kl, decay = value_loss(...)``; ``log_probs`` is (scored positions, vocab).
    """
    size = len(batch.target_ids)
    rewrite = log_probs[:batch.n_rewrite * size].view(batch.n_rewrite, size, -1)
    targets = torch.tensor(batch.target_ids, device=log_probs.device)
    token_log_probs = rewrite[:, torch.arange(size), targets]          # (prompts, len(target))
    nll = -token_log_probs.mean(dim=-1).mean()
    kl_now = log_probs[batch.n_rewrite * size:]                       # (kl prompts, vocab)
    kl = F.kl_div(kl_reference, kl_now, log_target=True, reduction="batchmean")
    decay = hparams.v_weight_decay * delta.norm() / value_init.norm() ** 2
    return nll, hparams.kl_factor * kl, decay


def compute_value(mt, request: EditRequest, hparams: ROMEHyperParams,
                  prefixes: list[str], site: str = "mlp_proj", layer: int | None = None) -> ValueResult:
    """Optimise ``delta`` so that ``mlp_proj``'s output + delta makes the new target likely.

    Usage: ``value = compute_value(mt, request, hp, context_prefixes(mt))``; then
    ``value.delta`` (d_model,), ``value.losses`` (one dict per step) and ``value.keys`` (the
    keys of step 1, read in the first pass).  MEMIT optimises the residual stream instead:
    ``site="block"`` at ``layer`` (its last edited layer); ``value.keys`` is then None.
    """
    layer = hparams.layer if layer is None else layer
    batch = value_batch(mt, request, prefixes, hparams.fact_token, hparams.kl_prompts,
                        hparams.kl_token)
    cache = head_cache(mt, batch)
    name, replayed, first = f"{site}.{layer}", replayed_layers(layer, site), {}
    delta = torch.zeros(mt.d_model, device=mt.device, requires_grad=True)
    optimizer = torch.optim.Adam([delta], lr=hparams.v_lr)
    at_fact = torch.zeros(1, batch.tail["input_ids"].shape[1], 1, device=mt.device, dtype=mt.dtype)
    at_fact[0, 0] = 1.0                                                # tail column 0

    def add_delta(output, _name):
        first.setdefault("value_init", output[0, 0].detach().float())  # plain prompt, delta = 0
        return output + at_fact * delta.to(output.dtype)

    losses = []
    with torch.enable_grad(), unembedding_in(mt, unembed_dtype(mt, hparams.unembed_dtype)), hooks(
            mt, [name], retain_input=site == "mlp_proj", retain_output=False, edit_output=add_delta) as acts:
        for step in range(hparams.v_num_grad_steps):
            if step == 0:                                              # delta = 0: the unedited model
                with saving_block_output(mt, replayed, first):
                    log_probs = torch.log_softmax(scored_logits(mt, batch, cache), dim=-1)
                kl_reference = log_probs[batch.n_rewrite * len(batch.target_ids):].detach()
                value_init = first["value_init"]
                max_norm = hparams.clamp_norm_factor * value_init.norm()
                keys = acts[name].input[:batch.n_rewrite, 0].detach().float() if site == "mlp_proj" else None
            else:
                with replay_blocks_below(mt, replayed, first.get("output")):
                    log_probs = torch.log_softmax(scored_logits(mt, batch, cache), dim=-1)
            terms = value_loss(log_probs, batch, kl_reference, delta, value_init, hparams)
            loss = sum(terms)
            losses.append(_loss_record(step, terms, delta))
            if should_stop(step, loss, terms[0], hparams):
                break
            step_and_clamp(optimizer, loss, delta, max_norm)
    return ValueResult(delta=delta.detach(), value_init=value_init, losses=losses, keys=keys)


def should_stop(step: int, loss, nll, hparams: ROMEHyperParams) -> bool:
    """The optimisation of delta ends after its last step, once the total loss is below
    ``early_stop_loss`` (the authors' rule), or once the target NLL alone is below
    ``early_stop_nll`` when that is set.

    Usage: ``if should_stop(step, loss, nll, hparams): break``.
    """
    if step == hparams.v_num_grad_steps - 1 or loss.item() < hparams.early_stop_loss:
        return True
    return hparams.early_stop_nll is not None and nll.item() < hparams.early_stop_nll


def step_and_clamp(optimizer, loss, delta: torch.Tensor, max_norm) -> None:
    """One optimiser step on ``loss``, then ``delta`` scaled back onto the ball ``|delta| <= max_norm``."""
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        if delta.norm() > max_norm:
            delta.mul_(max_norm / delta.norm())


def _loss_record(step: int, terms, delta) -> dict:
    nll, kl, decay = (float(t.detach()) for t in terms)
    return {"step": step, "loss": nll + kl + decay, "nll": nll, "kl": kl, "weight_decay": decay,
            "delta_norm": float(delta.detach().norm())}


def rome_update(mt, layer: int, k_star: torch.Tensor, delta: torch.Tensor,
                second_moment: torch.Tensor | None, direction_key: torch.Tensor | None = None
                ) -> tuple[str, torch.Tensor, torch.Tensor]:
    """The weight change that maps k* to v* = W k* + delta, in the parameter's own layout.

    Usage: ``name, change, v_star = rome_update(mt, 6, k_star, value.delta, C)``;
    ``v_star`` is mlp_proj's output for k* after the change (its bias included).  The
    update's direction is ``C^-1 direction_key`` (default ``C^-1 k*``).
    """
    weight = mt.mlp_proj_weight(layer)                                 # (d_model, d_mlp)
    v_star_no_bias = weight.double() @ k_star.double() + delta.double()
    change = rank_one_update(weight, k_star, v_star_no_bias, second_moment, direction_key)
    if mt.arch.mlp_proj_transposed:
        change = change.T
    with torch.no_grad():
        v_star = mt.module("mlp_proj", layer)(k_star.to(mt.dtype)).float() + delta.float()
    return mt.module_name("mlp_proj", layer) + ".weight", change, v_star


def rome_result(mt, request: EditRequest, hparams: ROMEHyperParams, prefixes: list[str],
                keys: torch.Tensor, value: ValueResult, second_moment) -> ComputedEdit:
    """Step 4 from the pieces: the update's direction is C^-1 (mean key); it stores exactly
    the edited prompt's own key (``update_key="prompt"``, as ROME's code) or the mean key.

    Usage: ``result = rome_result(mt, request, hp, prefixes, keys, value, C)``.
    """
    k_average = keys.mean(dim=0)
    k_star = k_average
    if hparams.update_key == "prompt":
        k_star = (keys[prefixes.index("")] if "" in prefixes
                  else compute_keys(mt, request, hparams, [""])[0])
    name, change, v_star = rome_update(mt, hparams.layer, k_star, value.delta, second_moment,
                                       direction_key=k_average)
    info = {"hparams": hparams, "layer": hparams.layer, "k_star": k_star, "v_star": v_star,
            "k_average": k_average, "delta": value.delta, "value_init": value.value_init,
            "losses": value.losses, "prefixes": prefixes}
    return ComputedEdit(deltas={name: change}, info=info)


def resolve_hparams(mt, hparams) -> ROMEHyperParams:
    """Usage: ``resolve_hparams(mt, None)`` -> the model's file; a dict is checked strictly."""
    if hparams is None:
        hparams = load_hparams(ROMEHyperParams, "rome", mt.name)
    elif isinstance(hparams, dict):
        hparams = hparams_from_dict(ROMEHyperParams, hparams)
    elif not isinstance(hparams, ROMEHyperParams):
        raise TypeError(f"ROME needs ROMEHyperParams (or a dict of them), not {type(hparams).__name__}.")
    mt.check_layer(hparams.layer, "hparams.layer")
    return hparams


def compute_rome(mt, request, hparams=None) -> ComputedEdit:
    """Compute ROME's rank-one change for one request (the weights are not touched).

    Usage: ``change = compute_rome(mt, request)``; ``romelib.edit(mt, request)`` applies it.
    """
    request, hparams = as_request(request), resolve_hparams(mt, hparams)
    prefixes = context_prefixes(mt, hparams.context_lengths, hparams.contexts_per_length)
    value = compute_value(mt, request, hparams, prefixes)               # step 2 (and step 1's keys)
    keys = value.keys                                                  # = compute_keys(...)
    second_moment = None if hparams.identity_covariance else key_statistics(
        mt, hparams.layer, hparams.mom2_source, hparams.mom2_max_tokens).mom2   # step 3
    return rome_result(mt, request, hparams, prefixes, keys, value, second_moment)  # step 4
