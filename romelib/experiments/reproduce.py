"""Regenerate every figure of the collection as PNG, headless.

Usage::

    python -m romelib.experiments.reproduce                  # all figures -> figures/*.png
    python -m romelib.experiments.reproduce --only figure1_causal_traces --fast
    python -m romelib.experiments.reproduce --list

Each figure is a function ``figure(context) -> Figure`` in ``FIGURES``, named after the
paper's figures (``figure1_causal_traces``...).  Figures computed from saved results
(``data/``) need no model; the ``context`` loads the model only when a figure asks for
``context.model``.
"""
from __future__ import annotations

import argparse
import logging
import statistics
from pathlib import Path

import matplotlib.pyplot as plt

from ..core.hparams import load_hparams
from ..core.models import load_model
from ..editing.rome import ROMEHyperParams
from ..paths import PACKAGE_DIR, results_dir
from ..plots.figures import plot_average_effects, plot_layer_curves, plot_severed, plot_traces
from ..results import read_jsonl
from ..tracing.averages import averages_from_summary
from ..tracing.trace import KINDS, trace
from .averages import load_summary
from .where_to_edit import EDIT_KEY, layer_curves
from .where_to_edit import RESULTS as WHERE_TO_EDIT

FIGURES_DIR = PACKAGE_DIR.parent / "figures"

log = logging.getLogger(__name__)


class Context:
    """What figure functions may use: ``context.model`` (loaded once, on first use), ``context.fast``."""

    def __init__(self, model_name: str | None = None, fast: bool = False):
        self.model_name, self.fast, self._model = model_name, fast, None

    @property
    def model(self):
        if self._model is None:
            self._model = load_model(self.model_name)
        return self._model


SPACE_NEEDLE = ("The Space Needle is located in the city of", "Space Needle")


def figure1(context):
    """Figure 1 (e, f, g): the three traces of the Space Needle fact."""
    prompt, subject = SPACE_NEEDLE
    samples = 3 if context.fast else 10
    return plot_traces([trace(context.model, prompt, subject, kind=kind, samples=samples)
                        for kind in KINDS])


def figure2(context):
    """Figure 2: average indirect effects of the saved full run."""
    summary = load_summary()
    settings = summary["settings"]
    return plot_average_effects(
        {kind: averages_from_summary(summary, kind) for kind in summary["kinds"]},
        title=f"{settings['model']}: average indirect effects over {settings['facts_traced']} "
              f"known facts of {settings['source']} ({settings['corruption']})")


def figure3(context):
    """Figure 3: severed MLP / attention paths, from the saved full run."""
    summary = load_summary()
    fig, ax = plt.subplots(figsize=(8, 3.2), dpi=110)
    plot_severed({k: (v["mean"], v["ci"]) for k, v in summary["severed"].items()}, ax,
                 title=f"{summary['settings']['model']}, {summary['settings']['facts_traced']} "
                       "facts: restoring the last subject token's state")
    fig.tight_layout()
    return fig


def figure5(context):
    """Figure 5: ROME at each layer, from the saved where-to-edit sweep."""
    rows = read_jsonl(WHERE_TO_EDIT / "edits.jsonl", key=EDIT_KEY)
    if not rows:
        raise FileNotFoundError(f"No saved sweep in {WHERE_TO_EDIT}; run python -m "
                                "romelib.experiments.where_to_edit.")
    facts = len({r["case_id"] for r in rows})
    return plot_layer_curves(layer_curves(rows), None,
                             f"ROME at each layer of {context.model_name or 'gemma-3-270m'} "
                             f"(saved sweep, {facts} facts)")


def figure_edit_layer_sweep(context):
    """The edit-layer sweep that chose the default layer (saved results, no model needed).

    Usage: ``python -m romelib.experiments.reproduce --only edit_layer_sweep``; reads
    ``data/edit_layer_sweep/results_tune.jsonl`` (whatever it holds when it runs).
    """
    path = results_dir("edit_layer_sweep", "results_tune.jsonl")
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; run python -m "
                                "romelib.experiments.edit_layer_sweep first.")
    rows = read_jsonl(path)
    unedited = {r["case_id"]: r for r in rows if r["layer"] < 0}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), dpi=110, sharey=True)
    for ax, key in zip(axes, ("prompt", "average")):
        chosen = [r for r in rows if r["layer"] >= 0 and r["settings"].get("update_key", "prompt") == key
                  and r["case_id"] in unedited]
        layers = sorted({r["layer"] for r in chosen})
        common = set.intersection(*({r["case_id"] for r in chosen if r["layer"] == layer}
                                    for layer in layers))                 # cases every layer has
        chosen = [r for r in chosen if r["case_id"] in common]
        for metric, colour in (("efficacy", "tab:green"), ("paraphrase", "tab:blue"),
                               ("neighbourhood", "tab:orange")):
            means = [100 * statistics.mean(r[metric] for r in chosen if r["layer"] == layer)
                     for layer in layers]
            ax.plot(layers, means, marker="o", color=colour, label=metric)
        base = [100 * statistics.mean(unedited[r["case_id"]]["neighbourhood"]
                                      for r in chosen if r["layer"] == layer) for layer in layers]
        ax.plot(layers, base, ls="--", color="tab:orange", alpha=0.6,
                label="neighbourhood, unedited")
        default = load_hparams(ROMEHyperParams, "rome", "gemma-3-270m")
        if default.update_key == key:
            ax.axvline(default.layer, color="grey", lw=0.8, ls=":", label="default layer")
        ax.set(xlabel="edited layer", xticks=layers, ylim=(0, 102),
               title=f'update_key "{key}", the same {len(common)} cases at every layer')
        ax.title.set_fontsize(9)
    axes[0].set_ylabel("success %")
    axes[0].legend(fontsize=8, loc="lower left")
    fig.suptitle("ROME on Gemma 3 270M: where to edit (tune split of the shared CounterFact sample)",
                 fontsize=10)
    fig.tight_layout()
    return fig


FIGURES = {"figure1_causal_traces": figure1,
           "figure2_average_indirect_effects": figure2,
           "figure3_severed_paths": figure3,
           "figure5_where_to_edit": figure5,
           "edit_layer_sweep": figure_edit_layer_sweep}


def all_figures() -> dict:
    """Usage: ``all_figures()`` -> ``{name: function}``."""
    return dict(FIGURES)


def reproduce(out_dir: str | Path = FIGURES_DIR, only=None, fast: bool = False,
              model_name: str | None = None) -> list[Path]:
    """Write the figures as ``out_dir/<name>.png``; returns the paths written.

    Usage: ``reproduce("figures", only=["figure2_average_indirect_effects"])``.
    """
    plt.switch_backend("Agg")
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
