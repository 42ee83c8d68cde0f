"""One entry point for every editing method, and reversible edits.

Usage::

    request = EditRequest(prompt="{} plays the sport of", subject="Michael Jordan",
                          target_new="soccer")
    with romelib.edit(mt, request) as handle:       # method="rome" by default
        romelib.predict(mt, "Michael Jordan plays the sport of")
    # weights are bit-identical to before here

    handle = romelib.edit(mt, request, method="ft")
    handle.restore()

A method is a function ``apply(mt, request, hparams) -> MethodResult`` registered in
``METHODS`` by import path, so that each lives in its own module (``romelib.rome``,
``romelib.baselines``) and this file stays the contract between them.
"""
from __future__ import annotations

import importlib
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch

# method name -> "module:function"; each function is apply(mt, request, hparams) -> MethodResult
METHODS: dict[str, str] = {
    "rome": "romelib.rome:apply_rome",
    "ft": "romelib.baselines:apply_ft",
    "ft+l": "romelib.baselines:apply_ft_l",
}


@dataclass(frozen=True)
class EditRequest:
    """A counterfactual to write into the model: ``prompt.format(subject)`` -> ``target_new``.

    Usage: ``EditRequest("{} plays the sport of", "Michael Jordan", "soccer")`` or
    ``EditRequest.from_dict(record["requested_rewrite"])`` for a CounterFact record.
    """

    prompt: str                    # template with "{}" where the subject goes
    subject: str
    target_new: str
    target_true: str | None = None  # the fact being replaced, when known

    def __post_init__(self):
        if not self.subject.strip():
            raise ValueError("The subject is empty; give the entity whose fact you edit.")
        if "{}" not in self.prompt:  # a filled prompt: turn the subject's first mention into "{}"
            if self.subject.strip() not in self.prompt:
                raise ValueError(f"The subject {self.subject!r} does not occur in the prompt "
                                 f"{self.prompt!r}; write the prompt as a template with '{{}}' "
                                 "where the subject goes, like '{} plays the sport of'.")
            object.__setattr__(self, "prompt", self.prompt.replace(self.subject.strip(), "{}", 1))
        if not str(self.target_new).strip():
            raise ValueError(f"The new target for {self.subject!r} is empty; give the word(s) "
                             "the model should say instead.")

    @property
    def filled_prompt(self) -> str:
        return self.prompt.replace("{}", self.subject)

    @classmethod
    def from_dict(cls, rewrite: dict) -> "EditRequest":
        """Accept a CounterFact ``requested_rewrite`` (targets as ``{"str": ...}``) or plain strings."""
        def text(value):
            return value["str"] if isinstance(value, dict) else value
        try:
            return cls(prompt=rewrite["prompt"], subject=rewrite["subject"],
                       target_new=text(rewrite["target_new"]),
                       target_true=text(rewrite["target_true"]) if rewrite.get("target_true") else None)
        except KeyError as missing:
            raise ValueError(f"The edit request lacks {missing}; it needs 'prompt' (with '{{}}'), "
                             "'subject' and 'target_new' ({'str': ...}).") from None


def as_request(request) -> EditRequest:
    """Usage: ``as_request({"prompt": ..., "subject": ..., "target_new": {"str": ...}})``."""
    if isinstance(request, EditRequest):
        return request
    if isinstance(request, dict):
        return EditRequest.from_dict(request.get("requested_rewrite", request))
    raise TypeError(f"An edit request is an EditRequest or a CounterFact dict, not {type(request).__name__}.")


@dataclass
class MethodResult:
    """What a method returns: additive weight changes by parameter name, plus diagnostics."""

    deltas: dict[str, torch.Tensor]
    info: dict[str, Any] = field(default_factory=dict)


class EditHandle:
    """An applied edit; ``restore()`` puts the exact original weights back.

    Usage: ``with romelib.edit(mt, request): ...`` or ``handle = romelib.edit(...); handle.restore()``.
    Several edits restore in reverse order; restoring out of order raises, because the
    later edit's weights would be lost.
    """

    def __init__(self, mt, request: EditRequest, method: str, hparams, result: MethodResult):
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
    """Usage: ``apply = resolve_method("rome")``."""
    if method not in METHODS:
        raise ValueError(f"Unknown editing method {method!r}; choose one of {sorted(METHODS)}.")
    module, function = METHODS[method].split(":")
    return getattr(importlib.import_module(module), function)


def edit(mt, request, method: str = "rome", hparams=None) -> EditHandle:
    """Apply one edit and return a handle that can undo it.

    Usage: ``handle = edit(mt, {"prompt": "{} is in", "subject": "Rome", "target_new": {"str": "Spain"}})``.
    ``hparams`` defaults to the method's file for this model in data/hparams/.
    """
    apply = resolve_method(method)
    request = as_request(request)
    _check_request(mt, request)
    result = apply(mt, request, hparams)
    return EditHandle(mt, request, method, result.info.get("hparams", hparams), result)


def _check_request(mt, request: EditRequest) -> None:
    from .tokens import find_subject_range, next_token_probs, target_tokens

    find_subject_range(mt, request.filled_prompt, request.subject)  # clear error if absent
    _, new_ids = target_tokens(mt, request.filled_prompt, request.target_new)
    top = int(next_token_probs(mt, request.filled_prompt)[0].argmax())
    if top == new_ids[0]:
        warnings.warn(f"The model already continues {request.filled_prompt!r} with "
                      f"{request.target_new!r}; this edit has nothing to change.", stacklevel=3)
