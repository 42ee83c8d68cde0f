"""Figures in the paper's style: trace heatmaps, average effects, severed paths.

Usage::

    romelib.plot_trace(romelib.trace(mt, prompt, subject))      # one heatmap
    romelib.plot_traces([hidden, mlp, attn])                   # Figure 1 (e, f, g)
    romelib.plot_average_effects({"hidden": a, "mlp": b, "attn": c})   # Figure 2
    romelib.plot_severed(severed_effects(records))      # Figure 3 (romelib.tracing.averages)
    plot_layer_curves(layer_curves(rows))               # Figure 5 (romelib.experiments.where_to_edit)

As in the paper: layers across, tokens down, subject tokens marked with ``*``; purples
for hidden states, greens for MLP, reds for attention; the colour scale starts at the
corrupted probability.  ``python -m romelib.experiments.reproduce`` draws the collection's
figures with these functions.
"""
from __future__ import annotations

import io

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from ..tracing.averages import POSITION_GROUPS, SEVERED

CMAPS = {"hidden": "Purples", "mlp": "Greens", "attn": "Reds"}
COLORS = {"hidden": "#6a51a3", "mlp": "#238b45", "attn": "#cb181d",
          "none": "#6a51a3"}
NAMES = {"hidden": "single hidden state", "mlp": "MLP", "attn": "attention"}
GROUP_COLORS = ["#9ecae1", "#4292c6", "#08306b", "#fdae6b", "#f16913", "#7f2704"]


def token_labels(result) -> list[str]:
    """Tokens as heatmap row labels, subject tokens marked with ``*``.

    Usage: ``token_labels(result)`` -> ``['<bos>', 'The', ' Space*', ' Needle*', ...]``.
    """
    labels = [token.replace("\n", "\\n") for token in result.tokens]
    for position in range(*result.subject_range):
        labels[position] += "*"
    return labels


def plot_trace(result, ax=None, title: str | None = None, colorbar: bool = True,
               highlight_layer: int | None = None):
    """Heatmap of one trace: ``scores[position, layer]``; returns the Axes.

    Usage: ``romelib.plot_trace(result)``; ``highlight_layer=8`` outlines one column.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(5.2, 0.28 * len(result.tokens) + 1.6), dpi=110)
    scores = result.scores.numpy()
    image = ax.pcolormesh(np.ma.masked_invalid(scores), cmap=CMAPS[result.kind],
                          vmin=result.low_score, vmax=max(np.nanmax(scores), result.low_score + 1e-6))
    ax.invert_yaxis()
    ax.set_yticks(np.arange(len(result.tokens)) + 0.5, token_labels(result), fontsize=8)
    layers = scores.shape[1]
    step = 5 if layers > 24 else 2
    ax.set_xticks(np.arange(0, layers, step) + 0.5, [str(x) for x in range(0, layers, step)],
                  fontsize=8)
    if result.kind == "hidden":
        ax.set_xlabel("single restored layer")
    else:
        ax.set_xlabel(f"centre of {result.settings.get('window', '?')} restored "
                      f"{NAMES[result.kind]} layers")
    if highlight_layer is not None:
        ax.add_patch(plt.Rectangle((highlight_layer, 0), 1, len(result.tokens), fill=False,
                                   edgecolor="black", linewidth=1.5))
    if title is None:
        restored = {"hidden": "state", "mlp": "MLP", "attn": "attention"}[result.kind]
        severed = result.settings.get("sever")
        title = (f"Restoring {restored}" + (f", {severed} severed" if severed else "")
                 + f"\n{result.prompt!r} → {result.target.strip()!r}\n"
                 + f"{result.settings.get('description', '')}, "
                 + f"{result.settings.get('samples', '?')} samples")
    ax.set_title(title, fontsize=9)
    if colorbar:
        bar = plt.colorbar(image, ax=ax)
        bar.ax.set_title(result.probability_label, fontsize=8)
        bar.ax.tick_params(labelsize=7)
    return ax


def plot_traces(results, title: str | None = None):
    """Several traces side by side (Figure 1 e, f, g); returns the Figure.

    Usage: ``plot_traces([trace(mt, p, s, k) for k in ("hidden", "mlp", "attn")])``.
    """
    height = 0.28 * len(results[0].tokens) + 1.9
    fig, axes = plt.subplots(1, len(results), figsize=(5.0 * len(results), height), dpi=110,
                             squeeze=False)
    for ax, result in zip(axes[0], results):
        restored = {"hidden": "hidden state", "mlp": "MLP", "attn": "attention"}[result.kind]
        plot_trace(result, ax, title=f"restoring {restored}")
    first = results[0]
    fig.suptitle(title or (f"{first.prompt!r} → {first.target.strip()!r}  "
                           f"(clean p={first.high_score:.2f}, corrupted p={first.low_score:.3f}; "
                           f"{first.settings.get('description', '')}, "
                           f"{first.settings.get('samples')} samples)"), fontsize=10)
    fig.tight_layout()
    return fig


def plot_average_heatmap(averages, ax=None, colorbar: bool = True):
    """Heatmap of average indirect effects, position groups down, layers across.

    Usage: ``plot_average_heatmap(average_effects(records, "mlp"))`` (romelib.tracing.averages).
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 2.6), dpi=110)
    mean = averages.mean.numpy()
    image = ax.pcolormesh(np.ma.masked_invalid(mean), cmap=CMAPS[averages.kind], vmin=0,
                          vmax=max(float(np.nanmax(mean)), 1e-6))
    ax.invert_yaxis()
    ax.set_yticks(np.arange(len(POSITION_GROUPS)) + 0.5, POSITION_GROUPS, fontsize=8)
    layers = mean.shape[1]
    step = 5 if layers > 24 else 2
    ax.set_xticks(np.arange(0, layers, step) + 0.5, [str(x) for x in range(0, layers, step)],
                  fontsize=8)
    ax.set_xlabel("layer" if averages.kind == "hidden" else "centre of restored window")
    ax.set_title(f"Average indirect effect: {NAMES[averages.kind]}", fontsize=9)
    if colorbar:
        bar = plt.colorbar(image, ax=ax)
        bar.ax.tick_params(labelsize=7)
    return ax


def plot_average_lines(averages, ax=None, groups=None, legend: bool = True):
    """Average indirect effect per layer for position groups, with 95% confidence bands.

    Usage: ``plot_average_lines(averages, groups=["last subject token", "last token"])``.
    """
    groups = POSITION_GROUPS if groups is None else groups
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 2.8), dpi=110)
    layers = np.arange(averages.mean.shape[1])
    for group in groups:
        index = POSITION_GROUPS.index(group)
        mean, ci = averages.mean[index].numpy(), averages.ci[index].numpy()
        ax.plot(layers, mean, color=GROUP_COLORS[index], label=group, linewidth=1.8)
        ax.fill_between(layers, mean - ci, mean + ci, color=GROUP_COLORS[index], alpha=0.2)
    ax.axhline(0, color="grey", linewidth=0.6)
    ax.set_xticks(range(0, len(layers), 5 if len(layers) > 24 else 2))
    ax.set_xlabel("layer" if averages.kind == "hidden" else "centre of restored window")
    ax.set_ylabel("average indirect effect")
    ax.set_title(f"{NAMES[averages.kind]}, {averages.facts} facts (95% CI)", fontsize=9)
    if legend:
        ax.legend(fontsize=7, loc="upper left")
    return ax


def plot_average_effects(averages_by_kind: dict, title: str | None = None):
    """Figure 2: per kind, a heatmap of average effects over a line plot with CI bands.

    Usage: ``plot_average_effects({k: average_effects(records, k) for k in KINDS})``.
    """
    kinds = list(averages_by_kind)
    fig, axes = plt.subplots(2, len(kinds), figsize=(5.2 * len(kinds), 6.4), dpi=110,
                             squeeze=False)
    for column, kind in enumerate(kinds):
        plot_average_heatmap(averages_by_kind[kind], axes[0][column])
        plot_average_lines(averages_by_kind[kind], axes[1][column], legend=column == 0)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_severed(severed: dict, ax=None, title: str | None = None):
    """Figure 3: AIE of restoring the last subject token's state, with paths severed or not.

    Usage: ``plot_severed(severed_effects(records))`` (from romelib.tracing.averages).
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3), dpi=110)
    labels = {"none": "no severing", "mlp": "MLP severed", "attn": "attention severed"}
    layers = np.arange(len(severed["none"][0]))
    width = 0.27
    for offset, sever in zip((-width, 0, width), SEVERED):
        mean, ci = (np.asarray(x, dtype=float) for x in severed[sever])
        ax.bar(layers + offset, mean, width, yerr=ci, color=COLORS[sever if sever != "none" else "hidden"],
               alpha=0.85 if sever == "none" else 0.75, label=labels[sever],
               error_kw={"elinewidth": 0.6, "capsize": 1.5})
    ax.set_xticks(layers)
    ax.set_xlabel("layer of the restored hidden state (last subject token)")
    ax.set_ylabel("average indirect effect")
    ax.set_title(title or "Severing the MLP or attention paths at the last subject token", fontsize=9)
    ax.legend(fontsize=8)
    return ax


def figure_png(fig, dpi: int = 110) -> bytes:
    """Usage: ``png = figure_png(fig)``: the figure as PNG bytes (for widgets, files)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def plot_layer_curves(curves: dict, baseline: dict | None = None, title: str = ""):
    """The paper's Figure 5 style: ES, PS, NS by edited layer, one line per token, 95% CI bands.

    Usage: ``fig = plot_layer_curves(layer_curves(rows), {"NS": 80.0})``.
    """
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), sharey=True)
    styles = {"subject_last": ("tab:blue", "last subject token"), "last": ("tab:red", "last token")}
    for ax, metric in zip(axes, ("ES", "PS", "NS")):
        for token, (colour, label) in styles.items():
            if token in curves:
                c = curves[token][metric]
                mean, ci = np.array(c["mean"]), np.nan_to_num(np.array(c["ci"]))
                ax.plot(c["layers"], mean, "o-", color=colour, label=label)
                ax.fill_between(c["layers"], mean - ci, mean + ci, color=colour, alpha=0.15)
        if baseline and metric in baseline:
            ax.axhline(baseline[metric], color="gray", ls="--", lw=1, label="unedited")
        ax.set_title({"ES": "efficacy ES", "PS": "paraphrase PS", "NS": "neighbourhood NS"}[metric])
        ax.set_xlabel("edited layer")
        ax.set_ylim(-5, 105)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_ylabel("percent (95% CI)")
    axes[0].legend(fontsize=8, loc="lower left")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_critical_layers(effects, ci, chosen: list[int], fraction: float, facts: int, ax=None):
    """MEMIT's layers: the MLP effect at the last subject token per layer, its 95% CI, and the
    chosen contiguous range above ``fraction`` x the peak.

    Usage: ``plot_critical_layers(curve, ci, [2, 3, 4, 5, 6], 0.8, facts=150)``.
    """
    effects, ci = np.asarray(effects, dtype=float), np.asarray(ci, dtype=float)
    layers = np.arange(len(effects))
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.4))
    ax.fill_between(layers, effects - ci, effects + ci, color="tab:green", alpha=0.2, label="95% CI")
    ax.plot(layers, effects, "o-", color="tab:green", label="MLP (window 10), last subject token")
    ax.axvspan(chosen[0] - 0.4, chosen[-1] + 0.4, color="tab:orange", alpha=0.15,
               label=f"edited layers {chosen[0]}-{chosen[-1]} (>= {fraction:g} x peak)")
    ax.axhline(fraction * effects.max(), color="tab:orange", lw=0.8, ls="--")
    ax.set(xlabel="layer (centre of the window)", ylabel="average indirect effect", xticks=layers,
           title=f"MEMIT's layers: the critical MLP layers ({facts} facts)")
    ax.legend(fontsize=8, loc="upper right")
    ax.figure.tight_layout()
    return ax.figure


SEQUENTIAL_PANELS = (("efficacy_all", "efficacy of all edits so far", False),
                     ("neighbourhood", "neighbourhood (probe records)", False),
                     ("perplexity", "perplexity, held-out text", True),
                     ("facts_known", "known facts still answered", False),
                     ("update_norm", "norm of each step's update", True),
                     ("distance", "distance from the original weights", True))


def plot_sequential_runs(runs: dict, labels: dict | None = None, title: str = ""):
    """Sequential editing: one panel per measure, one line per run, against the edits made.

    Usage: ``plot_sequential_runs({"rome": rows, ...})`` with rows as saved by
    ``romelib.experiments.sequential`` (dicts with ``edits`` and each measure).
    """
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
    for ax, (column, panel_title, log_scale) in zip(axes.flat, SEQUENTIAL_PANELS):
        for name, rows in runs.items():
            points = [(r["edits"], r[column]) for r in rows if r.get(column) is not None
                      and not (log_scale and r[column] <= 0)]
            if points:
                ax.plot(*zip(*points), marker=".", label=(labels or {}).get(name, name))
        ax.set(title=panel_title, xlabel="edits made")
        if log_scale:
            ax.set_yscale("log")
    axes[0, 0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_reach_vs_drop(reach, drop, fit: dict, ax=None):
    """Each close neighbour's |reach| against the drop of its margin, with Pearson's r and its CI.

    Usage: ``plot_reach_vs_drop(x, y, summary["reach_vs_drop"])``.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(reach, drop, s=12, alpha=0.6)
    ax.axhline(0, color="black", lw=0.6)
    ax.set(xlabel="|reach| of the neighbour's key", ylabel="drop of its margin (before - after)",
           title=f"ROME: reach vs bleed, {fit['pairs']} neighbours, r = {fit['pearson_r']:.2f} "
                 f"[{fit['r_95'][0]:.2f}, {fit['r_95'][1]:.2f}]")
    ax.figure.tight_layout()
    return ax.figure
