"""The paper's fine-tuning baselines, through the same API as ROME.

Usage::

    handle = romelib.edit(mt, request, method="ft")      # fine-tune one MLP output matrix
    handle = romelib.edit(mt, request, method="ft+l")    # ... within an L-infinity ball
    handle.restore()

FT (Meng et al. 2022, Appendix E.1) minimises -log P(target_new | prompt) with Adam,
changing only the MLP output matrix (``mlp_proj``, the matrix ROME rewrites) of one
layer, and stops early once the loss falls below 0.03.  FT+L adds the constraint of
Zhu et al. (2020), ``||W' - W||_inf <= epsilon``, by clamping the weights into
``W +- epsilon`` after every step.  The paper used Adam with learning rate 5e-4 and at
most 25 steps; for GPT-2 XL a sweep chose layer 1 for FT and layer 0 with
epsilon = 5e-4 for FT+L.  The default model's values come from the same kind of sweep
(``python -m romelib.experiments.baseline_sweep``, on the tune split of CounterFact;
see data/results/README.md).

Unlike ROME's ``ft_main.py``, which scores every target token at the position right
after the prompt, the loss here is teacher-forced over the whole target (mean over its
tokens), so multi-token targets are learned token by token.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.checks import check_int, check_layer_index, check_number
from ..core.hparams import hparams_from_dict, load_hparams
from ..core.tokens import pad_batch, target_tokens
from .request import ComputedEdit, EditRequest


@dataclass(frozen=True)
class FTHyperParams:
    """Fine-tuning one layer's MLP output matrix; ``norm_constraint`` set means FT+L."""

    layer: int                            # which block's mlp_proj is trained
    lr: float = 5e-4                      # Adam learning rate (the paper's)
    max_steps: int = 25                   # at most this many gradient steps
    early_stop_loss: float = 0.03         # stop once the mean token NLL is below this
    weight_decay: float = 0.0
    norm_constraint: float | None = None  # L-infinity radius epsilon of the change (FT+L)

    def __post_init__(self):
        check_layer_index("hparams.layer", self.layer)
        check_number("lr", self.lr, minimum=0, exclusive_minimum=True)
        check_int("max_steps", self.max_steps, minimum=1)
        check_number("early_stop_loss", self.early_stop_loss, minimum=0)
        check_number("weight_decay", self.weight_decay, minimum=0)
        if self.norm_constraint is not None:
            check_number("norm_constraint", self.norm_constraint, minimum=0, exclusive_minimum=True)


def resolve_ft_hparams(mt, hparams, method: str = "ft") -> FTHyperParams:
    """Usage: ``resolve_ft_hparams(mt, None, "ft+l")`` -> the model's file; a dict is checked strictly."""
    if hparams is None:
        return load_hparams(FTHyperParams, method, mt.name)
    if isinstance(hparams, dict):
        return hparams_from_dict(FTHyperParams, hparams)
    if not isinstance(hparams, FTHyperParams):
        raise TypeError(f"{method} needs FTHyperParams (or a dict of them), not "
                        f"{type(hparams).__name__}.")
    return hparams


def compute_ft(mt, request: EditRequest, hparams: FTHyperParams | dict | None = None) -> ComputedEdit:
    """Unconstrained fine-tuning (method ``"ft"``); hyperparameters from data/hparams/ft/.

    Usage: ``romelib.edit(mt, request, method="ft", hparams=FTHyperParams(layer=1))``.
    """
    hparams = resolve_ft_hparams(mt, hparams, "ft")
    if hparams.norm_constraint is not None:
        raise ValueError(f"method='ft' is unconstrained fine-tuning, but hparams.norm_constraint="
                         f"{hparams.norm_constraint:g}; with a norm bound it is FT+L: use method='ft+l'.")
    return finetune(mt, request, hparams)


def compute_ft_l(mt, request: EditRequest, hparams: FTHyperParams | dict | None = None) -> ComputedEdit:
    """Fine-tuning within ``W +- epsilon`` (method ``"ft+l"``); hparams from data/hparams/ft_plus_l/.

    Usage: ``romelib.edit(mt, request, method="ft+l", hparams=FTHyperParams(0, norm_constraint=5e-4))``.
    """
    hparams = resolve_ft_hparams(mt, hparams, "ft+l")
    if hparams.norm_constraint is None:
        raise ValueError("FT+L needs hparams.norm_constraint (the L-infinity radius epsilon, "
                         "e.g. 5e-4); without it use method='ft'.")
    return finetune(mt, request, hparams)


def finetune(mt, request: EditRequest, hparams: FTHyperParams) -> ComputedEdit:
    """Train ``mlp_proj`` of ``hparams.layer`` on the request; return the change, weights untouched.

    Usage: ``finetune(mt, request, FTHyperParams(layer=1)).deltas``.
    """
    _check(mt, hparams)
    name = mt.module_name("mlp_proj", hparams.layer) + ".weight"
    weight = mt.module("mlp_proj", hparams.layer).weight
    original = weight.detach().clone()
    prompt_ids, target_ids = target_tokens(mt, request.filled_prompt, request.target_new)
    inputs = pad_batch(mt, [prompt_ids + target_ids])
    target = torch.tensor(target_ids, device=mt.device)
    optimizer = torch.optim.Adam([weight], lr=hparams.lr, weight_decay=hparams.weight_decay)
    eps = hparams.norm_constraint
    losses = []
    weight.requires_grad_(True)
    try:
        with torch.enable_grad():
            for _ in range(hparams.max_steps):
                logits = mt.model(**inputs, logits_to_keep=len(target_ids) + 1).logits[0, :-1]
                loss = -torch.log_softmax(logits.float(), -1).gather(-1, target[:, None]).mean()
                losses.append(loss.item())
                if losses[-1] < hparams.early_stop_loss:
                    break
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if eps is not None:
                    with torch.no_grad():
                        weight.copy_(torch.clamp(weight, original - eps, original + eps))
        delta = weight.detach() - original
    finally:
        weight.requires_grad_(False)
        weight.grad = None
        with torch.no_grad():
            weight.copy_(original)
    info = {"hparams": hparams, "losses": losses, "steps": len(losses),
            "final_loss": losses[-1], "max_abs_change": float(delta.abs().max())}
    return ComputedEdit(deltas={name: delta}, info=info)


def _check(mt, hparams: FTHyperParams) -> None:
    """The layer against this model (the other fields are checked when the hyperparameters are made)."""
    if not isinstance(hparams, FTHyperParams):
        raise TypeError(f"FT needs FTHyperParams, got {type(hparams).__name__}.")
    mt.check_layer(hparams.layer, "hparams.layer")
