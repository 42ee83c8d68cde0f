"""Visible notices: when romelib uses a substitute or starts something long, it says so.

Usage::

    announce("WikiText-2 is not on this machine; C is computed from the project's corpus.")

A notice is a ``warnings.warn`` with the category :class:`SubstituteWarning`, which Jupyter
shows under the cell and a terminal prints, so a fallback is never only in a log file.
Python shows each distinct message once per place in the code (its default filter), so a
loop does not repeat it.  ``warnings.simplefilter("error", romelib.notices.SubstituteWarning)``
turns every substitution into an error.
"""
from __future__ import annotations

import warnings


class SubstituteWarning(UserWarning):
    """romelib used something other than what was asked for (another corpus, fewer records...),
    or starts a long computation; the message names it."""


def announce(message: str, stacklevel: int = 3) -> None:
    """Usage: ``announce("... computed from the project's corpus instead of WikiText-2")``."""
    warnings.warn(message, SubstituteWarning, stacklevel=stacklevel)
