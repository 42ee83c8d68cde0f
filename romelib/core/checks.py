"""Checking arguments at the public entry points: a clear error instead of a silent surprise.

Usage::

    samples = check_int("samples", samples, minimum=1)
    noise = check_number("noise", noise, minimum=0, exclusive_minimum=True)
    prompt = check_text("prompt", prompt)
    kind = check_choice("kind", kind, ("hidden", "mlp", "attn"))

Each check returns the value (converted where that is lossless: an ``int`` stays an int, a
whole float is NOT turned into an int) or raises ``TypeError`` / ``ValueError`` whose message
names the parameter, repeats the value it got and says what is allowed, e.g.
``samples must be an int >= 1, got 2.5 (float)``.  ``bool`` is never accepted as a number.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Sequence


def _describe(value) -> str:
    return f"{value!r} ({type(value).__name__})"


def _bounds(minimum, maximum, exclusive_minimum=False) -> str:
    parts = []
    if minimum is not None:
        parts.append(f"{'>' if exclusive_minimum else '>='} {minimum:g}")
    if maximum is not None:
        parts.append(f"<= {maximum:g}")
    return " and ".join(parts)


def check_int(name: str, value, minimum: int | None = None, maximum: int | None = None) -> int:
    """Usage: ``check_int("samples", 10, minimum=1)`` -> 10; refuses floats, bools, None and strings."""
    allowed = " ".join(filter(None, ["an int", _bounds(minimum, maximum)]))
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be {allowed}, got {_describe(value)}.")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be {allowed}, got {value}.")
    return value


def check_number(name: str, value, minimum: float | None = None, maximum: float | None = None,
                 exclusive_minimum: bool = False) -> float:
    """Usage: ``check_number("noise", 3, minimum=0)`` -> 3.0; refuses NaN, infinity, bools and strings."""
    allowed = " ".join(filter(None, ["a finite number", _bounds(minimum, maximum, exclusive_minimum)]))
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be {allowed}, got {_describe(value)}.")
    value = float(value)
    too_low = minimum is not None and (value <= minimum if exclusive_minimum else value < minimum)
    if not math.isfinite(value) or too_low or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be {allowed}, got {value!r}.")
    return value


def check_text(name: str, value, allow_empty: bool = False) -> str:
    """Usage: ``check_text("prompt", "The Space Needle is in")``; refuses non-strings and blank text."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {_describe(value)}.")
    if not allow_empty and not value.strip():
        raise ValueError(f"{name} is empty ({value!r}); give some text.")
    return value


def check_layer_index(name: str, value) -> int:
    """A layer given before the model is known (in hyperparameters): an int >= 0; the model
    checks the upper end (``mt.check_layer``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a layer index, an int >= 0, got {_describe(value)}.")
    if value < 0:
        raise ValueError(f"{name} must be a layer index from 0 to the model's last layer, got {value}; "
                         "negative layers are refused (they would mean something else in a window or "
                         "'the layer below'): for the last layer write num_layers - 1.")
    return int(value)


def check_subject(value) -> str:
    """A subject is matched exactly as written (in traces and edits alike), so it may not start
    or end with whitespace, which would silently change the prompt or the tokens matched."""
    subject = check_text("subject", value)
    if subject != subject.strip():
        raise ValueError(f"subject {subject!r} starts or ends with whitespace; write it as "
                         f"{subject.strip()!r} (subjects are matched exactly as written, in traces and "
                         "edits alike, and the prompt supplies the space before it).")
    return subject


def check_choice(name: str, value, choices: Sequence):
    """Usage: ``check_choice("kind", "mlp", ("hidden", "mlp", "attn"))``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}.")
    return value


def check_optional_int(name: str, value, minimum: int | None = None) -> int | None:
    """Usage: ``check_optional_int("max_tokens", None, minimum=1)`` -> None (an int or None)."""
    return None if value is None else check_int(name, value, minimum=minimum)
