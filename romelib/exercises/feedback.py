"""What every checker is made of: call the answer, compare it with romelib's, print one line.

Usage::

    @exercise("rewrite_score")
    def check_rewrite_score(rewrite_score) -> str:
        answer = number(call(rewrite_score, 0.1, 0.82), "rewrite_score(0.1, 0.82)")
        compare(answer, 0.8, {"normalise by 1 - p_before": 0.72}, what="rewrite_score(0.1, 0.82)")
        return "0.8 for 0.1 -> 0.82"          # an optional detail for the pass line

A check either returns (the answer is right) or raises :class:`Mistake`, whose message is
the hint the student sees.  :func:`exercise` turns that into one printed line and
``True``/``False``.  It never lets an error escape: the notebooks run in CI with the
unfilled stubs in place, so a stub gets a friendly "not implemented yet" instead.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import torch

PASSED, FAILED, WAITING = "✔", "✘", "…"


class Mistake(Exception):
    """A wrong answer; the message is the hint shown to the student."""


class NotDoneYet(Exception):
    """The answer is still the stub (``raise NotImplementedError`` or ``...``)."""


def exercise(name: str) -> Callable:
    """Decorator that turns a check into a checker that prints one line and returns a bool.

    Usage: ``@exercise("corrupt_with_noise")`` above ``def check_corrupt_with_noise(answer): ...``.
    """
    def decorate(check: Callable) -> Callable:
        @functools.wraps(check)
        def checker(answer, *args, **kwargs) -> bool:
            try:
                if answer is ... or answer is None:
                    raise NotDoneYet
                detail = check(answer, *args, **kwargs)
            except NotDoneYet:
                print(f"{WAITING} {name}: not implemented yet. Write it in the cell above, run that "
                      "cell, then run this one again.")
                return False
            except Mistake as mistake:
                print(f"{FAILED} {name}: {mistake}")
                return False
            except Exception as error:  # noqa: BLE001 - a checker must never raise in a notebook
                print(f"{FAILED} {name}: could not check the answer ({type(error).__name__}: {error}).")
                return False
            print(f"{PASSED} {name}: correct" + (f". {detail}" if detail else "."))
            return True
        return checker
    return decorate


def call(function: Callable, *args, **kwargs) -> Any:
    """Run the student's function; a stub becomes :class:`NotDoneYet`, an error a :class:`Mistake`.

    Usage: ``answer = call(corrupt_with_noise, clean, 2, 5, 3.0, 0.5, 8, generator)``.
    """
    if not callable(function):
        raise Mistake(f"expected a function, got {type(function).__name__}.")
    try:
        result = function(*args, **kwargs)
    except NotImplementedError:
        raise NotDoneYet from None
    except Exception as error:  # noqa: BLE001 - any error of the answer is the student's hint
        raise Mistake(f"your function raised {type(error).__name__}: {error}") from None
    if result is ...:
        raise NotDoneYet
    if result is None:
        raise Mistake("your function returned None: is the `return` missing?")
    return result


def expect(condition: bool, hint: str) -> None:
    """Usage: ``expect(answer.shape == (8, 6, 16), "return one row per sample")``."""
    if not condition:
        raise Mistake(hint)


def tensor(value: Any, what: str) -> torch.Tensor:
    """The answer as a float64 tensor (from a tensor, an array, a list or a number).

    Usage: ``answer = tensor(call(fit_memory, K, V), "W")``.
    """
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", torch.float64)
    try:
        return torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise Mistake(f"{what} should be a tensor or a number, got {type(value).__name__}.") from None


def number(value: Any, what: str) -> float:
    """The answer as one float; a vector gets the hint to return a single number.

    Usage: ``p = number(call(next_token_probability, mt, prompt, 42), "the probability")``.
    """
    value = tensor(value, what)
    expect(value.numel() == 1, f"{what} should be one number, got shape {tuple(value.shape)}.")
    return float(value.reshape(()))


def close(answer: Any, expected: Any, rtol: float = 1e-4, atol: float = 1e-6) -> bool:
    """Same shape and equal within the tolerances (NaN equals NaN).

    Usage: ``close(answer, expected, atol=1e-5)``.
    """
    answer = answer if isinstance(answer, torch.Tensor) else torch.as_tensor(answer, dtype=torch.float64)
    expected = expected if isinstance(expected, torch.Tensor) else torch.as_tensor(expected, dtype=torch.float64)
    answer, expected = answer.to(torch.float64), expected.to(torch.float64)
    return answer.shape == expected.shape and torch.allclose(answer, expected, rtol, atol, equal_nan=True)


def compare(answer: Any, expected: Any, typical: Mapping[str, Any] = (), *, what: str = "your answer",
            rtol: float = 1e-4, atol: float = 1e-6) -> None:
    """Raise a :class:`Mistake` unless ``answer`` is ``expected``, naming a typical mistake if it matches one.

    Usage: ``compare(answer, expected, {"wrong sign: ...": -expected}, what="m_l")``.  The values
    of ``typical`` are wrong answers computed the wrong way (or functions that compute them,
    called only when needed); the first one that matches the answer gives its hint.
    """
    answer, expected = tensor(answer, what), tensor(expected, "the expected answer")
    if close(answer, expected, rtol, atol):
        return
    for hint, wrong in dict(typical).items():
        try:
            wrong = wrong() if callable(wrong) else wrong
            if wrong is not None and close(answer, tensor(wrong, "a typical mistake"), rtol, atol):
                raise Mistake(hint)
        except (ValueError, RuntimeError, TypeError, IndexError, ZeroDivisionError):
            continue
    if answer.shape != expected.shape:
        raise Mistake(f"{what} has shape {tuple(answer.shape)}, expected {tuple(expected.shape)}.")
    if expected.numel() == 1:
        raise Mistake(f"{what} is {float(answer.reshape(())):.6g}, expected {float(expected.reshape(())):.6g}.")
    difference = (answer - expected).abs().nan_to_num(float("inf")).max()
    raise Mistake(f"{what} differs from the expected answer (largest difference {float(difference):.3g}).")
