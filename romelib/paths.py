"""Where romelib reads and writes files: the one place that knows every folder.

Usage::

    from romelib.paths import project_data, cache_dir, shared_data_dir, results_dir
    project_data("hparams", "rome", "gemma-3-270m.json")   # shipped with romelib
    cache_dir() / "models"                                   # ~/.cache/romelib/models
    shared_data_dir() / "known" / "known_1000.json"          # a local mirror, may be absent
    results_dir("table4_counterfact")                        # where a runner writes

* **Project data** (the project's facts and edit cases, hyperparameters, context prefixes,
  shipped key statistics, saved results) lives in the repository's ``data/`` folder.  A
  non-editable ``pip install .`` copies the files the library needs into the package as
  ``romelib/_data`` (see ``pyproject.toml``); ``$ROMELIB_DATA`` overrides both.
* **The cache** (``$ROMELIB_CACHE``, else ``$XDG_CACHE_HOME/romelib``, else
  ``~/.cache/romelib``) holds what romelib builds or downloads on a machine: the
  dequantised default model, key statistics, downloaded reference data.
* **The shared data folder** (``$ROMELIB_SHARED_DATA``, else ``../shared/data`` beside the
  checkout) is an optional local mirror of the reference data sets, tried before any
  download.
* **Results** of the experiment runners go to ``$ROMELIB_RESULTS``, else the checkout's
  ``data/`` folder, else ``./romelib-results`` (an installed package never writes into
  its own folder).
"""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
CHECKOUT_DATA = PACKAGE_DIR.parent / "data"      # a source checkout's data/ folder
INSTALLED_DATA = PACKAGE_DIR / "_data"           # what `pip install .` copies from data/


def project_data_dir() -> Path:
    """Usage: ``project_data_dir() / "known_facts.json"``: ``$ROMELIB_DATA``, the installed copy, or ``data/``."""
    if os.environ.get("ROMELIB_DATA"):
        return Path(os.environ["ROMELIB_DATA"]).expanduser()
    if INSTALLED_DATA.is_dir():
        return INSTALLED_DATA
    return CHECKOUT_DATA


def project_data(*parts: str) -> Path:
    """Usage: ``project_data("hparams", "rome", "gemma-3-270m.json")`` -> the path (may not exist)."""
    return project_data_dir().joinpath(*parts)


def cache_dir() -> Path:
    """Usage: ``cache_dir()`` -> ``$ROMELIB_CACHE`` or ``~/.cache/romelib``."""
    if os.environ.get("ROMELIB_CACHE"):
        return Path(os.environ["ROMELIB_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "romelib"


def shared_data_dir() -> Path:
    """Usage: ``shared_data_dir() / "known" / "known_1000.json"`` (the folder may not exist)."""
    if os.environ.get("ROMELIB_SHARED_DATA"):
        return Path(os.environ["ROMELIB_SHARED_DATA"]).expanduser()
    return PACKAGE_DIR.parents[1] / "shared" / "data"


def results_root() -> Path:
    """Usage: ``results_root()`` -> ``$ROMELIB_RESULTS``, the checkout's ``data/``, or ``./romelib-results``."""
    if os.environ.get("ROMELIB_RESULTS"):
        return Path(os.environ["ROMELIB_RESULTS"]).expanduser()
    if CHECKOUT_DATA.is_dir() and os.access(CHECKOUT_DATA, os.W_OK):
        return CHECKOUT_DATA
    return Path.cwd() / "romelib-results"


def results_dir(*parts: str) -> Path:
    """Usage: ``results_dir("results", "table4_counterfact")``: a runner's folder under :func:`results_root`."""
    return results_root().joinpath(*parts)
