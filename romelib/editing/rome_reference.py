"""ROME as the authors' code computes it: the reference that the fast implementation must match.

Usage::

    change = compute_rome_reference(mt, request)          # same contract as compute_rome
    keys = reference_keys(mt, request, hparams, prefixes)
    value = reference_value(mt, request, hparams, prefixes)

This follows the algorithm of ``rome/compute_u.py`` and ``rome/compute_v.py`` in
kmeng01/rome step for step, with this library's hooks and model table:

* **keys** (``compute_u``): one batch of all prefixed prompts through the whole model,
  logits included; the input of the rewritten matrix at each prompt's fact token.
* **value** (``compute_v``): every optimisation step runs *one batch* of all rewriting
  prompts (prefix + prompt + the target's tokens but the last) and the KL prompts through
  the whole model with logits over the whole vocabulary at every position; ``delta`` is
  added to the rewritten matrix's output at each row's fact token; the KL distribution is
  read at the KL prompt's fact token (``kl_token="fact"``, as the authors' ``lookup_idxs``)
  or at its last token (``kl_token="last"``); the reference distribution is that of the
  first step (``delta = 0``); the loss is the mean over prompts of each target's mean token
  NLL, plus ``kl_factor`` times the KL, plus the weight decay; Adam steps, then the clamp.
* **the update**: ``k*`` and ``W k*`` of the plain prompt from one more forward pass;
  ``C^-1`` as an explicit float32 inverse (the authors cache it across edits, so it is
  computed once here too); ``u = C^-1 k_avg`` and ``W += u (v* - W k*)^T / (u . k*)``.

Only the padding side differs from GPT-2's tokenizer in the authors' code (left here,
with position ids, which computes the same).  ``benchmarks/bench_rome.py`` times this
against :func:`romelib.editing.rome.compute_rome`; ``tests/test_rome.py`` checks they agree.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.hooks import hooks
from ..core.tokens import pad_batch, target_tokens
from .context_prefixes import context_prefixes
from .key_statistics import key_statistics
from .request import ComputedEdit, EditRequest, as_request
from .rome import ROMEHyperParams, ValueResult, resolve_hparams, should_stop, step_and_clamp
from .value_batch import padded_positions, prompt_rows


@torch.no_grad()
def reference_keys(mt, request: EditRequest, hparams: ROMEHyperParams,
                   prefixes: list[str]) -> torch.Tensor:
    """Keys at the fact token of every prefixed prompt, one full forward pass: (prefixes, d_mlp)."""
    rows, positions = prompt_rows(mt, request, prefixes, hparams.fact_token)
    name = f"mlp_proj.{hparams.layer}"
    with hooks(mt, [name], retain_input=True, retain_output=False) as acts:
        mt.model(**pad_batch(mt, rows))
    return acts[name].input[torch.arange(len(rows)), padded_positions(rows, positions)].float()


def reference_value(mt, request: EditRequest, hparams: ROMEHyperParams,
                    prefixes: list[str]) -> ValueResult:
    """``delta`` optimised as ``compute_v`` does: one whole batch per step, full logits."""
    _, target_ids = target_tokens(mt, request.filled_prompt, request.target_new)
    rows, positions = prompt_rows(mt, request, prefixes, hparams.fact_token, target_ids[:-1])
    for template in hparams.kl_prompts:
        kl_rows, kl_positions = prompt_rows(mt, EditRequest(template, request.subject,
                                                            request.target_new),
                                            [""], hparams.fact_token)
        rows, positions = rows + kl_rows, positions + kl_positions
    inputs = pad_batch(mt, rows)
    width = inputs["input_ids"].shape[1]
    lookup = padded_positions(rows, positions)                         # fact token per row
    n_rewrite, size = len(prefixes), len(target_ids)
    kl_rows_index = list(range(n_rewrite, len(rows)))
    kl_columns = [lookup[r] if hparams.kl_token == "fact" else width - 1 for r in kl_rows_index]
    targets = torch.tensor(target_ids, device=mt.device)
    delta = torch.zeros(mt.d_model, device=mt.device, requires_grad=True)
    value_init, kl_reference, losses = None, None, []
    optimizer = torch.optim.Adam([delta], lr=hparams.v_lr)

    def add_delta(output, name):
        nonlocal value_init
        if value_init is None:
            value_init = output[0, lookup[0]].detach().float().clone()
        output = output.clone()
        output[torch.arange(len(rows)), lookup] += delta.to(output.dtype)
        return output

    for step in range(hparams.v_num_grad_steps):
        with torch.enable_grad(), hooks(mt, [f"mlp_proj.{hparams.layer}"], retain_output=False,
                                        edit_output=add_delta):
            log_probs = torch.log_softmax(mt.model(**inputs).logits.float(), dim=-1)
        predicting = log_probs[:n_rewrite, width - size:width]           # (prompts, size, vocab)
        nll = -predicting[:, torch.arange(size), targets].mean(dim=-1).mean()
        kl_now = log_probs[kl_rows_index, kl_columns]                   # (kl prompts, vocab)
        if kl_reference is None:
            kl_reference = kl_now.detach().clone()
        kl = hparams.kl_factor * F.kl_div(kl_reference, kl_now, log_target=True,
                                          reduction="batchmean")
        decay = hparams.v_weight_decay * delta.norm() / value_init.norm() ** 2
        loss = nll + kl + decay
        losses.append({name: float(value.detach()) for name, value in (
            ("loss", loss), ("nll", nll), ("kl", kl), ("weight_decay", decay),
            ("delta_norm", delta.norm()))} | {"step": step})
        if should_stop(step, loss, nll, hparams):
            break
        step_and_clamp(optimizer, loss, delta, hparams.clamp_norm_factor * value_init.norm())
    return ValueResult(delta=delta.detach(), value_init=value_init, losses=losses)


def compute_rome_reference(mt, request, hparams=None,
                           inverse_cache: dict | None = None) -> ComputedEdit:
    """ROME's change for one request, computed the way the authors' code does.

    Usage: ``change = compute_rome_reference(mt, request)``; compare ``change.deltas`` with
    ``compute_rome(mt, request).deltas``.  Pass the same ``inverse_cache`` dict to several
    calls to keep ``C^-1`` between edits, as the authors' ``get_inv_cov`` does.
    """
    request, hparams = as_request(request), resolve_hparams(mt, hparams)
    prefixes = context_prefixes(mt, hparams.context_lengths, hparams.contexts_per_length)
    keys = reference_keys(mt, request, hparams, prefixes)
    k_average = keys.mean(dim=0)
    if hparams.identity_covariance:
        u = k_average
    else:
        cache = {} if inverse_cache is None else inverse_cache
        key = (mt.name, hparams.layer, hparams.mom2_source, hparams.mom2_max_tokens)
        if key not in cache:
            cache[key] = torch.inverse(key_statistics(mt, hparams.layer, hparams.mom2_source,
                                                      hparams.mom2_max_tokens).mom2.float())
        u = cache[key] @ k_average
    u = u / u.norm()
    value = reference_value(mt, request, hparams, prefixes)
    k_star = (reference_keys(mt, request, hparams, [""])[0] if hparams.update_key == "prompt"
              else k_average)
    weight = mt.mlp_proj_weight(hparams.layer)
    with torch.no_grad():
        w_k = mt.module("mlp_proj", hparams.layer)(k_star.to(mt.dtype)).float()
    v_star = value.value_init + value.delta
    right = (v_star - w_k) / torch.dot(k_star, u)
    change = torch.outer(right, u).to(weight.dtype)                     # (d_model, d_mlp)
    if mt.arch.mlp_proj_transposed:
        change = change.T
    name = mt.module_name("mlp_proj", hparams.layer) + ".weight"
    info = {"hparams": hparams, "layer": hparams.layer, "k_star": k_star, "v_star": v_star,
            "k_average": k_average, "delta": value.delta, "value_init": value.value_init,
            "losses": value.losses, "prefixes": prefixes}
    return ComputedEdit(deltas={name: change}, info=info)
