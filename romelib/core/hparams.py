"""Hyperparameters as dataclasses, loaded strictly from JSON files in data/hparams/.

Usage::

    @dataclass(frozen=True)
    class ROMEHyperParams:
        layer: int
        lr: float = 0.5

    hp = load_hparams(ROMEHyperParams, "rome", "gemma-3-270m")   # data/hparams/rome/gemma-3-270m.json

Unknown keys and missing required keys are errors, so a typo in a JSON file can never be
silently ignored.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TypeVar

from ..paths import project_data
from ..results import write_json

T = TypeVar("T")


def hparams_from_dict(cls: type[T], values: dict, source: str = "hyperparameters") -> T:
    """Build a dataclass from a dict, refusing unknown keys and missing required ones.

    Usage: ``hparams_from_dict(ROMEHyperParams, {"layer": 5})``.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {unknown} for {cls.__name__}; "
                         f"valid keys are {sorted(fields)}.")
    missing = [name for name, f in fields.items() if name not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ValueError(f"{source}: missing required key(s) {missing} for {cls.__name__}.")
    return cls(**values)


def hparams_path(method: str, model_name: str) -> Path:
    """Usage: ``hparams_path("rome", "gemma-3-270m")`` -> ``data/hparams/rome/gemma-3-270m.json``."""
    return project_data("hparams", method.replace("+", "_plus_"), f"{Path(model_name).name}.json")


def load_hparams(cls: type[T], method: str, model_name: str) -> T:
    """Load the hyperparameters of ``method`` for ``model_name`` from data/hparams/.

    Usage: ``load_hparams(ROMEHyperParams, "rome", mt.name)``.
    """
    path = hparams_path(method, model_name)
    if not path.exists():
        raise FileNotFoundError(
            f"No {method} hyperparameters for model {model_name!r} at {path}. Pass "
            f"hparams={cls.__name__}(...) explicitly, or write that JSON file (see the other "
            "files in that folder for the keys).")
    return hparams_from_dict(cls, json.loads(path.read_text()), source=str(path))


def save_hparams(hparams, path: Path) -> None:
    """Usage: ``save_hparams(hp, hparams_path("rome", mt.name))``; written atomically."""
    write_json(path, dataclasses.asdict(hparams), indent=2)
