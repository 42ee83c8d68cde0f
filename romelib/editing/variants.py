"""Editing variants by name: the ``romelib.edit`` method and the settings behind a name such
as ``"rome-identity"`` (C = I) or ``"rome-consistent"`` (r-ROME's key).

The experiment runners name their rows and runs with these (Table 4, sequential editing);
this is their one definition.  Settings come from the model's shipped files
(``data/hparams/<method>/<model>.json``), changed only where the name says so.

Usage::

    method, hparams = method_and_hparams(mt, "rome-consistent")   # "rome", update_key="average"
    romelib.edit(mt, request, method=method, hparams=hparams)
"""
from __future__ import annotations

from dataclasses import replace

from ..core.hparams import load_hparams
from .finetune import FTHyperParams
from .memit import MEMITHyperParams
from .rome import resolve_hparams

VARIANTS = {
    "none": "the unedited model (no method, no settings)",
    "rome": "ROME with the model's shipped settings",
    "rome-identity": "ROME with C = I (no key statistics)",
    "rome-kl-last": "ROME with the KL term at the prompt's last token and no early stop",
    "rome-consistent": "r-ROME (Gupta et al., 2024): the update stores the prefix-averaged key",
    "memit": "MEMIT with the model's shipped settings",
    "ft": "fine-tuning one layer's MLP output matrix (tuned layer and epsilon)",
    "ft+l": "fine-tuning with the norm bound (tuned layer and epsilon)",
    "ft-rome-layer": "the tuned FT moved to ROME's layer",
    "ft+l-rome-layer": "the tuned FT+L moved to ROME's layer",
}


def method_and_hparams(mt, name: str):
    """The ``romelib.edit`` method and hyperparameters behind a variant name.

    Usage: ``method_and_hparams(mt, "rome-identity")`` -> ``("rome", ROMEHyperParams(...,
    identity_covariance=True))``; ``"none"`` -> ``(None, None)``.
    """
    if name not in VARIANTS:
        raise ValueError(f"name must be one of {', '.join(VARIANTS)}; got {name!r}.")
    if name == "none":
        return None, None
    if name == "memit":
        return "memit", load_hparams(MEMITHyperParams, "memit", mt.name)
    if name.startswith("ft"):
        method = name.removesuffix("-rome-layer")
        tuned = load_hparams(FTHyperParams, method, mt.name)
        return method, (replace(tuned, layer=resolve_hparams(mt, None).layer) if name.endswith("-rome-layer")
                        else tuned)
    rome = resolve_hparams(mt, None)
    changes = {"rome": {}, "rome-identity": {"identity_covariance": True},
               "rome-kl-last": {"kl_token": "last", "early_stop_nll": None},
               "rome-consistent": {"update_key": "average"}}[name]
    return "rome", replace(rome, **changes)


def method_of(name: str) -> str | None:
    """Usage: ``method_of("ft+l-rome-layer")`` -> ``"ft+l"`` (without loading any settings)."""
    if name not in VARIANTS:
        raise ValueError(f"name must be one of {', '.join(VARIANTS)}; got {name!r}.")
    if name == "none":
        return None
    return name.removesuffix("-rome-layer") if name.startswith("ft") else name.split("-")[0]
