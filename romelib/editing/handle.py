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
from dataclasses import replace

import torch

from ..core.checks import check_choice
from ..core.cost import Work, check_context, check_work, per_token_layer_flops, unembedding_flops
from ..core.tokens import next_token_probs, target_tokens, whole_token_range
from .finetune import compute_ft, compute_ft_l, resolve_ft_hparams
from .key_statistics import statistics_work
from .memit import compute_memit, resolve_memit_hparams
from .request import ComputedEdit, EditRequest, as_request
from .rome import compute_rome, resolve_hparams

METHODS = {"rome": compute_rome, "ft": compute_ft, "ft+l": compute_ft_l, "memit": compute_memit}
BATCHED = ("memit",)                  # methods that take a list of requests at once


class EditHandle:
    """An applied edit; ``restore()`` puts the exact original weights back.

    Usage: ``with romelib.edit(mt, request): ...`` or ``handle = romelib.edit(...); handle.restore()``.
    Several edits restore in reverse order; restoring out of order raises, because the
    later edit's weights would be lost.
    """

    def __init__(self, mt, request, method: str, hparams, result: ComputedEdit):
        self.requests = list(request) if isinstance(request, (list, tuple)) else [request]
        self.request = self.requests[0]
        self.mt, self.method, self.hparams = mt, method, hparams
        self.info = result.info
        self._originals: dict[str, torch.Tensor] = {}
        self._written: dict[str, torch.Tensor] = {}
        params = dict(mt.model.named_parameters())
        _check_deltas(result.deltas, params)                 # before any weight is touched
        try:                                                 # all changes or none
            with torch.no_grad():
                for name, delta in result.deltas.items():
                    self._originals[name] = params[name].detach().clone()
                    self._apply(params[name], delta)
                    self._written[name] = params[name].detach().clone()
        except BaseException:                                # KeyboardInterrupt included
            with torch.no_grad():
                for name, original in self._originals.items():
                    params[name].copy_(original)
            raise
        self.active = True

    @staticmethod
    def _apply(param: torch.Tensor, delta: torch.Tensor) -> None:
        param.add_(delta.to(device=param.device, dtype=param.dtype))

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

    def keep(self) -> dict[str, torch.Tensor]:
        """Make the edit permanent: the handle lets go and returns the weights it would have
        restored (sequential editing keeps every edit and the very first originals)."""
        if not self.active:
            raise RuntimeError("This edit was already restored or kept.")
        self.active = False
        originals, self._originals, self._written = self._originals, {}, {}
        return originals

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.restore()
        return False

    def __repr__(self) -> str:
        state = "applied" if self.active else "restored"
        more = f" and {len(self.requests) - 1} more" if len(self.requests) > 1 else ""
        return (f"EditHandle({self.method}: {self.request.subject!r} -> "
                f"{self.request.target_new!r}{more}, {state})")


def _check_deltas(deltas: dict, params: dict) -> None:
    """Every change names a parameter of the model, has its shape and finite values."""
    if not deltas:
        raise ValueError("The edit changes no weight (empty deltas).")
    for name, delta in deltas.items():
        if name not in params:
            raise ValueError(f"The edit changes {name!r}, which is not a parameter of this model.")
        if not torch.is_tensor(delta) or tuple(delta.shape) != tuple(params[name].shape):
            shape = tuple(delta.shape) if torch.is_tensor(delta) else type(delta).__name__
            raise ValueError(f"The change of {name} has shape {shape}, the parameter "
                             f"{tuple(params[name].shape)}.")
        if not torch.isfinite(delta).all():
            raise ValueError(f"The change of {name} holds NaN or infinite values; nothing was applied.")


def resolve_method(method: str):
    """Usage: ``compute = resolve_method("rome")``."""
    if method not in METHODS:
        raise ValueError(f"Unknown editing method {method!r}; choose one of {sorted(METHODS)}.")
    return METHODS[method]


def edit(mt, request, method: str = "rome", hparams=None, *,
         max_seconds: float | None = 600) -> EditHandle:
    """Apply one edit and return a handle that can undo it.

    Usage: ``handle = edit(mt, {"prompt": "{} is in", "subject": "Rome", "target_new": {"str": "Spain"}})``.
    ``hparams`` defaults to the method's file for this model in data/hparams/ (a dict is
    checked strictly).  The work is estimated first and refused above ``max_seconds``
    (``None``: no limit).  The weights change all at once or not at all, also when the
    edit is interrupted.
    """
    compute = resolve_method(check_choice("method", method, tuple(METHODS)))
    if method in BATCHED:
        requests = request if isinstance(request, (list, tuple)) else [request]
        if not requests:
            raise ValueError(f"request is an empty list; {method} needs at least one edit request.")
        request = [as_request(r) for r in requests]
    elif isinstance(request, (list, tuple)):
        raise TypeError(f"method={method!r} edits one fact at a time; pass one request, or use "
                        "method='memit' for a list.")
    else:
        request = as_request(request)
    hparams = {"rome": resolve_hparams, "memit": resolve_memit_hparams}.get(
        method, lambda mt, h: resolve_ft_hparams(mt, h, method))(mt, hparams)
    for one in (request if isinstance(request, list) else [request]):
        _check_request(mt, one)
    work = sum((edit_work(mt, one, method, hparams) for one in
                (request if isinstance(request, list) else [request])), Work(0, 0, ""))
    description = f"{method} edit of {len(request) if isinstance(request, list) else 1} fact(s)"
    if method in ("rome", "memit") and not getattr(hparams, "identity_covariance", False):
        layers = [hparams.layer] if method == "rome" else list(hparams.layers)
        statistics = statistics_work(mt, layers, hparams.mom2_source, hparams.mom2_max_tokens)
        if statistics.flops:
            work, description = work + statistics, f"{description}, with its {statistics.description}"
    check_work(mt, replace(work, description=description), max_seconds, "pass max_seconds=None")
    result = compute(mt, request, hparams)
    return EditHandle(mt, request, method, result.info.get("hparams", hparams), result)


def edit_work(mt, request: EditRequest, method: str, hparams) -> Work:
    """The work of an edit, counted before it starts (see :mod:`romelib.core.cost`).

    Usage: ``edit_work(mt, request, "rome", hparams)``.  ROME runs, every step, the prompt
    after each context prefix (and the KL prompt) through the layers from the edited one up,
    forward and backward; fine-tuning runs the prompt through every layer.
    """
    prompt_ids, target_ids = target_tokens(mt, request.filled_prompt, request.target_new)
    tokens = len(prompt_ids) + len(target_ids)
    block, unembed = per_token_layer_flops(mt), unembedding_flops(mt)
    if method in ("rome", "memit"):
        rows = 2 + len(hparams.context_lengths) * hparams.contexts_per_length
        tokens += max(hparams.context_lengths, default=0)
        layers = mt.num_layers - (hparams.layer if method == "rome" else hparams.layers[-1])
        per_step = rows * (tokens * layers * block + len(target_ids) * unembed)
        flops = 3 * hparams.v_num_grad_steps * per_step
    else:
        flops = 3 * hparams.max_steps * (tokens * mt.num_layers * block + tokens * unembed)
        rows = 1
    check_context(mt, tokens, f"The edit prompt {request.filled_prompt!r} with its context and target")
    memory = 4 * rows * tokens * mt.num_layers * mt.d_model * 12
    return Work(flops, memory, f"{method} edit of {request.subject!r}")


def _check_request(mt, request: EditRequest) -> None:
    start = request.prompt.index("{}") + len(request.subject) - len(request.subject.lstrip())
    whole_token_range(mt, request.filled_prompt, start, start + len(request.subject.strip()))
    _, new_ids = target_tokens(mt, request.filled_prompt, request.target_new)
    top = int(next_token_probs(mt, request.filled_prompt)[0].argmax())
    if top == new_ids[0]:
        warnings.warn(f"The model already continues {request.filled_prompt!r} with "
                      f"{request.target_new!r}; this edit has nothing to change.", stacklevel=3)
