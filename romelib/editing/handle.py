"""One entry point for every editing method, and reversible edits.

Usage::

    request = EditRequest(prompt="{} plays the sport of", subject="Michael Jordan",
                          target_new="soccer")
    with romelib.edit(mt, request) as handle:       # method="rome" by default
        romelib.predict(mt, "Michael Jordan plays the sport of")
    # weights are bit-identical to before here

    handle = romelib.edit(mt, request, method="ft")
    handle.restore()

A method is a function ``compute(mt, request, hparams) -> ComputedEdit`` (see
:mod:`romelib.editing.request`) that computes the weight change without applying it;
``METHODS`` maps each method's name to it.
"""
from __future__ import annotations

import warnings

import torch

from ..core.tokens import find_subject_range, next_token_probs, target_tokens
from .finetune import compute_ft, compute_ft_l
from .request import ComputedEdit, EditRequest, as_request
from .rome import compute_rome

METHODS = {"rome": compute_rome, "ft": compute_ft, "ft+l": compute_ft_l}


class EditHandle:
    """An applied edit; ``restore()`` puts the exact original weights back.

    Usage: ``with romelib.edit(mt, request): ...`` or ``handle = romelib.edit(...); handle.restore()``.
    Several edits restore in reverse order; restoring out of order raises, because the
    later edit's weights would be lost.
    """

    def __init__(self, mt, request: EditRequest, method: str, hparams, result: ComputedEdit):
        self.mt, self.request, self.method, self.hparams = mt, request, method, hparams
        self.info = result.info
        self._originals: dict[str, torch.Tensor] = {}
        self._written: dict[str, torch.Tensor] = {}
        params = dict(mt.model.named_parameters())
        with torch.no_grad():
            for name, delta in result.deltas.items():
                param = params[name]
                self._originals[name] = param.detach().clone()
                param.add_(delta.to(device=param.device, dtype=param.dtype))
                self._written[name] = param.detach().clone()
        self.active = True

    @property
    def deltas(self) -> dict[str, torch.Tensor]:
        """The weight change actually applied, per parameter (in the parameter's dtype)."""
        return {n: self._written[n] - self._originals[n] for n in self._originals}

    def restore(self) -> None:
        """Put back the weights as they were before this edit, bit for bit."""
        if not self.active:
            return
        params = dict(self.mt.model.named_parameters())
        for name, written in self._written.items():
            if not torch.equal(params[name].detach(), written):
                raise RuntimeError(
                    f"{name} changed after this edit was applied (another edit?). Restore the "
                    "later edits first: edits undo in reverse order.")
        with torch.no_grad():
            for name, original in self._originals.items():
                params[name].copy_(original)
        self.active = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.restore()
        return False

    def __repr__(self) -> str:
        state = "applied" if self.active else "restored"
        return (f"EditHandle({self.method}: {self.request.subject!r} -> "
                f"{self.request.target_new!r}, {state})")


def resolve_method(method: str):
    """Usage: ``compute = resolve_method("rome")``."""
    if method not in METHODS:
        raise ValueError(f"Unknown editing method {method!r}; choose one of {sorted(METHODS)}.")
    return METHODS[method]


def edit(mt, request, method: str = "rome", hparams=None) -> EditHandle:
    """Apply one edit and return a handle that can undo it.

    Usage: ``handle = edit(mt, {"prompt": "{} is in", "subject": "Rome", "target_new": {"str": "Spain"}})``.
    ``hparams`` defaults to the method's file for this model in data/hparams/.
    """
    compute = resolve_method(method)
    request = as_request(request)
    _check_request(mt, request)
    result = compute(mt, request, hparams)
    return EditHandle(mt, request, method, result.info.get("hparams", hparams), result)


def _check_request(mt, request: EditRequest) -> None:
    find_subject_range(mt, request.filled_prompt, request.subject)  # clear error if absent
    _, new_ids = target_tokens(mt, request.filled_prompt, request.target_new)
    top = int(next_token_probs(mt, request.filled_prompt)[0].argmax())
    if top == new_ids[0]:
        warnings.warn(f"The model already continues {request.filled_prompt!r} with "
                      f"{request.target_new!r}; this edit has nothing to change.", stacklevel=3)
