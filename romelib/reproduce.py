"""Regenerate every figure of the collection as PNG, headless.

Usage::

    python -m romelib.reproduce                  # all figures -> figures/*.png
    python -m romelib.reproduce --only figure1_causal_traces --fast
    python -m romelib.reproduce --list

Each module in ``FIGURE_MODULES`` exposes ``FIGURES = {name: function(context) -> Figure}``;
names follow the paper's figures (``figure1_causal_traces``...).  To add figures from a
new module, append its import path to ``FIGURE_MODULES``.  Figures computed from saved
results (``data/``) need no model; the ``context`` loads the model only when a figure
asks for ``context.model``.
"""
from __future__ import annotations

import argparse
import importlib
import logging
from pathlib import Path

FIGURE_MODULES = [
    "romelib.plotting",
    "romelib.rome",            # issue 4: edit_layer_sweep
    "romelib.where_to_edit",   # issue 5: figure5_where_to_edit (data/results/where_to_edit/)
]
FIGURES_DIR = Path(__file__).resolve().parents[1] / "figures"

log = logging.getLogger(__name__)


class Context:
    """What figure functions may use: ``context.model`` (loaded once, on first use), ``context.fast``."""

    def __init__(self, model_name: str | None = None, fast: bool = False):
        self.model_name, self.fast, self._model = model_name, fast, None

    @property
    def model(self):
        if self._model is None:
            from .models import load_model
            self._model = load_model(self.model_name)
        return self._model


def all_figures() -> dict:
    """Usage: ``all_figures()`` -> ``{name: function}`` over every module in ``FIGURE_MODULES``."""
    figures = {}
    for module_name in FIGURE_MODULES:
        module = importlib.import_module(module_name)
        for name, function in getattr(module, "FIGURES", {}).items():
            if name in figures:
                raise ValueError(f"Figure name {name!r} is defined twice ({module_name}).")
            figures[name] = function
    return figures


def reproduce(out_dir: str | Path = FIGURES_DIR, only=None, fast: bool = False,
              model_name: str | None = None) -> list[Path]:
    """Write the figures as ``out_dir/<name>.png``; returns the paths written.

    Usage: ``reproduce("figures", only=["figure2_average_indirect_effects"])``.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = all_figures()
    unknown = sorted(set(only or ()) - set(figures))
    if unknown:
        raise ValueError(f"Unknown figure(s) {unknown}; known: {sorted(figures)}.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    context, written = Context(model_name, fast), []
    for name, function in figures.items():
        if only and name not in only:
            continue
        log.info("drawing %s", name)
        fig = function(context)
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=130, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
        log.info("wrote %s", path)
    return written


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Regenerate the collection's figures as PNG.")
    parser.add_argument("--out", default=str(FIGURES_DIR))
    parser.add_argument("--only", nargs="+", default=None, help="figure names to draw")
    parser.add_argument("--fast", action="store_true", help="fewer samples where figures compute")
    parser.add_argument("--model", default=None)
    parser.add_argument("--list", action="store_true", help="list figure names and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.list:
        for name in all_figures():
            print(name)
        return
    reproduce(args.out, args.only, args.fast, args.model)


if __name__ == "__main__":
    main()
