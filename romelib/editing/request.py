"""What an edit asks for, and what an editing method returns.

Usage::

    request = EditRequest("{} plays the sport of", "Michael Jordan", "soccer")
    request = as_request(record["requested_rewrite"])       # a CounterFact rewrite
    change = ComputedEdit(deltas={"model.layers.5.mlp.down_proj.weight": delta})

Every method (``romelib.editing.rome``, ``romelib.editing.finetune``) is a function
``compute(mt, request, hparams) -> ComputedEdit`` that leaves the weights untouched;
:func:`romelib.edit` applies the change and returns a handle that undoes it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..core.checks import check_subject, check_text

REWRITE_KEYS = ("prompt", "subject", "target_new", "target_true", "relation_id")   # CounterFact's


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
        check_text("prompt", self.prompt)
        subject = check_subject(self.subject)
        check_text("target_new", self.target_new)
        if self.target_true is not None:
            check_text("target_true", self.target_true)
            if self.target_true.strip() == self.target_new.strip():
                raise ValueError(f"target_new and target_true are both {self.target_new!r}; an edit "
                                 "needs a new answer.")
        if self.prompt.count("{}") > 1:
            raise ValueError(f"prompt {self.prompt!r} has {self.prompt.count('{}')} '{{}}'; a template "
                             "has exactly one, where the subject goes.")
        if "{}" not in self.prompt:  # a filled prompt: the subject becomes "{}"
            count = self.prompt.count(subject)
            if count != 1:
                problem = ("does not occur in" if count == 0 else f"occurs {count} times in")
                raise ValueError(f"The subject {subject!r} {problem} the prompt {self.prompt!r}; write "
                                 "the prompt as a template with '{}' where the subject goes, like "
                                 "'{} plays the sport of'.")
            object.__setattr__(self, "prompt", self.prompt.replace(subject, "{}", 1))

    @property
    def filled_prompt(self) -> str:
        return self.prompt.replace("{}", self.subject)

    @classmethod
    def from_dict(cls, rewrite: dict) -> EditRequest:
        """Accept a CounterFact ``requested_rewrite`` (targets as ``{"str": ...}``) or plain strings."""
        if not isinstance(rewrite, dict):
            raise TypeError(f"An edit request dict is needed, got {type(rewrite).__name__}.")
        unknown = sorted(set(rewrite) - set(REWRITE_KEYS))
        if unknown:
            raise ValueError(f"The edit request has unknown keys {unknown}; allowed: {', '.join(REWRITE_KEYS)} "
                             "(a misspelled key would be ignored, so it is refused).")
        def text(key):
            value = rewrite[key]
            if isinstance(value, dict):
                if "str" not in value:
                    raise ValueError(f"{key} must look like {{'str': 'Paris'}}, got {value!r}.")
                value = value["str"]
            return value
        try:
            return cls(prompt=rewrite["prompt"], subject=rewrite["subject"],
                       target_new=text("target_new"),
                       target_true=text("target_true") if rewrite.get("target_true") else None)
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
class ComputedEdit:
    """What an editing method computes: additive weight changes by parameter name, plus diagnostics.

    Usage: ``change = compute_rome(mt, request); change.deltas``; ``romelib.edit`` applies it.
    """

    deltas: dict[str, torch.Tensor]
    info: dict[str, Any] = field(default_factory=dict)
