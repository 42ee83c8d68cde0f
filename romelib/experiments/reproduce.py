"""Regenerate every figure and table of the collection, headless, saying what each is drawn from.

Usage::

    python -m romelib.experiments.reproduce                  # all -> figures/*.png (+ table4 .md)
    python -m romelib.experiments.reproduce --only figure1_causal_traces --fast
    python -m romelib.experiments.reproduce --list           # names and the saved runs behind them
    python -m romelib.experiments.reproduce --recompute --results /tmp/fresh   # rerun, then draw

Each entry of ``FIGURES`` is a function ``figure(context) -> (Figure, what it used)``, named
after the paper's figures and tables (``figure1_causal_traces``, ``table4_counterfact``...).
Figures drawn from saved runs (``data/``) need no model; the ``context`` loads the model only
when a figure asks for ``context.model``.  ``--recompute`` first reruns the experiments
behind the saved runs (``RECOMPUTE``): into a fresh folder with ``--results``, or into
``data/``, where the runs resume.
"""
from __future__ import annotations

import logging
import os
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from ..core.hparams import load_hparams
from ..core.models import DEFAULT_MODEL, load_model
from ..editing.memit import MEMITHyperParams
from ..editing.rome import ROMEHyperParams
from ..paths import PACKAGE_DIR, results_dir
from ..plots.figures import (
    plot_average_effects,
    plot_critical_layers,
    plot_layer_curves,
    plot_severed,
    plot_traces,
)
from ..results import read_json, read_jsonl, write_text
from ..tracing.averages import POSITION_GROUPS, average_effects, averages_from_summary, critical_layers
from ..tracing.trace import KINDS, trace
from . import memit_batch, sequential, specificity
from .averages import load_summary
from .averages import run_path as averages_run_path
from .launch import Worker, runner_parser
from .table4 import LABELS, markdown, markdown_comparisons
from .table4 import METHODS as table4_methods
from .table4 import load_summary as load_table4_summary
from .where_to_edit import EDIT_KEY, layer_curves
from .where_to_edit import RESULTS as WHERE_TO_EDIT

FIGURES_DIR = PACKAGE_DIR.parent / "figures"

log = logging.getLogger(__name__)


class Context:
    """What figure functions may use: ``context.model`` (loaded once, on first use), ``context.fast``."""

    def __init__(self, model_name: str | None = None, fast: bool = False, device: str = "cpu"):
        self.model_name, self.fast, self.device, self._model = model_name, fast, device, None

    @property
    def model(self):
        if self._model is None:
            self._model = load_model(self.model_name, device=self.device)
        return self._model


SPACE_NEEDLE = ("The Space Needle is located in the city of", "Space Needle")


def figure1(context):
    """Figure 1 (e, f, g): the three traces of the Space Needle fact."""
    prompt, subject = SPACE_NEEDLE
    samples = 3 if context.fast else 10
    fig = plot_traces([trace(context.model, prompt, subject, kind=kind, samples=samples)
                       for kind in KINDS])
    return fig, f"computed now: {context.model_name or DEFAULT_MODEL}, {samples} noise samples"


def figure2(context):
    """Figure 2: average indirect effects of the saved full run."""
    summary = load_summary()
    settings = summary["settings"]
    fig = plot_average_effects(
        {kind: averages_from_summary(summary, kind) for kind in summary["kinds"]},
        title=f"{settings['model']}: average indirect effects over {settings['facts_traced']} "
              f"known facts of {settings['source']} ({settings['corruption']})")
    return fig, _tracing_used(summary)


def figure3(context):
    """Figure 3: severed MLP / attention paths, from the saved full run."""
    summary = load_summary()
    fig, ax = plt.subplots(figsize=(8, 3.2), dpi=110)
    plot_severed({k: (v["mean"], v["ci"]) for k, v in summary["severed"].items()}, ax,
                 title=f"{summary['settings']['model']}, {summary['settings']['facts_traced']} "
                       "facts: restoring the last subject token's state")
    fig.tight_layout()
    return fig, _tracing_used(summary)


def _tracing_used(summary: dict) -> str:
    settings = summary["settings"]
    return (f"saved run {averages_run_path(settings['model'], settings['source'])}: "
            f"{settings['facts_traced']} of {settings['facts_selected']} facts ({settings['command']})")


def figure5(context):
    """Figure 5: ROME at each layer, from the saved where-to-edit sweep."""
    rows = read_jsonl(WHERE_TO_EDIT / "edits.jsonl", key=EDIT_KEY)
    if not rows:
        raise FileNotFoundError(f"No saved sweep in {WHERE_TO_EDIT}; run python -m "
                                "romelib.experiments.where_to_edit.")
    facts = len({r["case_id"] for r in rows})
    kl_token = read_json(WHERE_TO_EDIT / "settings.json", {}).get("rome", {}).get("kl_token", "fact")
    fig = plot_layer_curves(layer_curves(rows), None,
                            f"ROME at each layer of {context.model_name or 'gemma-3-270m'} "
                            f"(saved sweep, {facts} facts; KL term at the {kl_token} token)")
    command = read_json(WHERE_TO_EDIT / "summary.json", {}).get("command", "?")
    return fig, f"saved sweep {WHERE_TO_EDIT}: {len(rows)} edits of {facts} facts ({command})"


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
    return fig, f"saved sweep {path}: {len(rows)} rows (python -m romelib.experiments.edit_layer_sweep)"


def table4(context):
    """Table 4 on held-out CounterFact records, as Markdown and as a bar chart, from the saved run."""
    summary = load_table4_summary("counterfact")
    table = summary["table"]
    methods = [m for m in table4_methods if m in table]
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.4), dpi=110, sharey=True)
    for ax, metric in zip(axes, ("S", "ES", "PS", "NS")):
        means = [table[m][metric][0] for m in methods]
        cis = [table[m][metric][1] for m in methods]
        ax.bar(range(len(methods)), means, yerr=cis, color="tab:blue", capsize=2)
        ax.set_xticks(range(len(methods)), [LABELS[m] for m in methods], rotation=40, ha="right",
                      fontsize=7)
        ax.set_title(metric)
    axes[0].set_ylabel("percent (95% CI)")
    fig.suptitle(f"Table 4 on {summary['model']}: {summary['records_done']} held-out CounterFact "
                 "records", fontsize=10)
    fig.tight_layout()
    text = markdown(table) + "\n\n" + markdown_comparisons(summary["comparisons"])
    used = (f"saved run data/results/table4_counterfact: {summary['records_done']} of "
            f"{summary['records_requested']} records ({summary['command']})")
    return (fig, text), used


def memit_layers(context):
    """MEMIT's layers: the critical MLP layers of the saved tracing run, beside the hparams file's."""
    records = read_jsonl(averages_run_path(DEFAULT_MODEL, "known_1000"))
    mlp = average_effects(records, "mlp")
    row = POSITION_GROUPS.index("last subject token")
    chosen = critical_layers(mlp.mean[row], MEMIT_FRACTION)
    hparams = load_hparams(MEMITHyperParams, "memit", DEFAULT_MODEL)
    fig = plot_critical_layers(mlp.mean[row], mlp.ci[row], chosen, MEMIT_FRACTION, mlp.facts)
    return fig, (f"saved tracing run {averages_run_path(DEFAULT_MODEL, 'known_1000').name}: {mlp.facts} facts; "
                 f"layers >= {MEMIT_FRACTION} x peak {chosen}, data/hparams/memit: {list(hparams.layers)}")


FIGURES = {"figure1_causal_traces": figure1,
           "figure2_average_indirect_effects": figure2,
           "figure3_severed_paths": figure3,
           "figure5_where_to_edit": figure5,
           "edit_layer_sweep": figure_edit_layer_sweep,
           "table4_counterfact": table4,
           "memit_layers": memit_layers,
           "memit_batch": lambda context: memit_batch.draw_summary(),
           "sequential_editing": lambda context: sequential.draw_runs(),
           "specificity_close_neighbours": lambda context: specificity.draw_summary()}
MEMIT_FRACTION = 0.8          # notebook 11's rule for the critical layers


# How each saved run is recomputed (--recompute): the runner and the arguments that made it.
RECOMPUTE = {
    "figure2_average_indirect_effects": ("romelib.experiments.averages",
                                         "--source known_1000 --limit 150 --samples 10"),
    "figure5_where_to_edit": ("romelib.experiments.where_to_edit",
                              "--n 16 --layers 0,4,8,12,16 --last-token-layers 0,4,8,12,16"),
    "edit_layer_sweep": ("romelib.experiments.edit_layer_sweep",
                         "--split tune --layers 1,3,5,7 --cases 12 --set clamp_norm_factor=1.0 "
                         "--set update_key=\"prompt\""),
    "table4_counterfact": ("romelib.experiments.table4",
                           "--records shared --n 100 --methods none,ft,ft+l,rome,rome-identity,"
                           "rome-kl-last,ft+l-rome-layer --generation-records 10"),
}
RECOMPUTE["figure3_severed_paths"] = RECOMPUTE["figure2_average_indirect_effects"]
RECOMPUTE["memit_layers"] = RECOMPUTE["figure2_average_indirect_effects"]
RECOMPUTE["memit_batch"] = ("romelib.experiments.memit_batch", "--split held_out --n 100")
RECOMPUTE["sequential_editing"] = ("romelib.experiments.sequential",
                                   "--method rome,rome-consistent --edits 120 --unembed-dtype model")
RECOMPUTE["specificity_close_neighbours"] = ("romelib.experiments.specificity", "--methods none,rome,memit,ft+l")


def all_figures() -> dict:
    """Usage: ``all_figures()`` -> ``{name: function}``."""
    return dict(FIGURES)


def reproduce(out_dir: str | Path = FIGURES_DIR, only=None, fast: bool = False,
              model_name: str | None = None, device: str = "cpu") -> list[Path]:
    """Write the figures as ``out_dir/<name>.png`` (Table 4 also as ``.md``); returns the paths.

    Usage: ``reproduce("figures", only=["figure2_average_indirect_effects"])``; logs what
    each one was drawn from.
    """
    plt.switch_backend("Agg")
    figures = all_figures()
    unknown = sorted(set(only or ()) - set(figures))
    if unknown:
        raise ValueError(f"Unknown figure(s) {unknown}; known: {sorted(figures)}.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    context, written = Context(model_name, fast, device), []
    for name, function in figures.items():
        if only and name not in only:
            continue
        drawn, used = function(context)
        fig, text = drawn if isinstance(drawn, tuple) else (drawn, None)
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=130, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
        if text is not None:
            write_text(out_dir / f"{name}.md", text + "\n")
            written.append(out_dir / f"{name}.md")
        log.info("%s <- %s", path, used)
    return written


def recompute(names, results: Path | None, device: str = "cpu") -> None:
    """Run again the experiments behind ``names``: into ``results`` (a fresh folder) or, when
    None, into data/ (which resumes and completes a partial run; a finished one has nothing left).

    Usage: ``recompute(["table4_counterfact"], Path("/tmp/fresh"))``; ``device`` is passed on
    to each runner (``--device``).
    """
    env = {**os.environ, **({"ROMELIB_RESULTS": str(results)} if results else {})}
    for module, arguments in dict.fromkeys(RECOMPUTE[n] for n in names if n in RECOMPUTE):
        command = [sys.executable, "-m", module, *shlex.split(arguments),
                   *(["--device", device] if device != "cpu" else [])]
        log.info("recomputing: %s%s", " ".join(command[1:]), f" (into {results})" if results else "")
        subprocess.run(command, env=env, check=True)


def main(argv=None) -> None:
    parser = runner_parser("Regenerate the collection's figures and tables.")
    parser.add_argument("--out", default=str(FIGURES_DIR))
    parser.add_argument("--only", nargs="+", default=None, help="figure names to draw")
    parser.add_argument("--fast", action="store_true", help="fewer samples where figures compute")
    parser.add_argument("--list", action="store_true", help="list figure names and exit")
    parser.add_argument("--recompute", action="store_true",
                        help="run the experiments again before drawing (hours on a CPU)")
    parser.add_argument("--results", default=None,
                        help="with --recompute: a fresh folder to recompute into (default: data/, resumed)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.list:
        for name in all_figures():
            print(f"{name}: " + (f"saved run, python -m {RECOMPUTE[name][0]} {RECOMPUTE[name][1]}"
                                 if name in RECOMPUTE else "computed when drawn"))
        return
    worker = Worker.from_environment(args.device)
    worker.require_one_process("reproduce draws the figures in one short job; to recompute at scale, "
                               "launch each experiment runner itself (README, 'Running at paper scale')")
    names = args.only or list(all_figures())
    if args.recompute:
        recompute(names, Path(args.results) if args.results else None, args.device)
        if args.results:   # draw from the fresh folder, in a process that reads it
            env = {**os.environ, "ROMELIB_RESULTS": args.results}
            subprocess.run([sys.executable, "-m", "romelib.experiments.reproduce", "--out", args.out,
                            "--only", *names, "--device", args.device, *(["--fast"] if args.fast else []),
                            *(["--model", args.model] if args.model else [])], env=env, check=True)
            return
    if args.threads:
        torch.set_num_threads(args.threads)
    reproduce(args.out, names, args.fast, args.model, worker.device)


if __name__ == "__main__":
    main()
