"""Where to edit: ROME at every layer and two token positions (the paper's Figure 5), and
whether causal tracing tells where an edit works (Hase et al. 2023, "Does Localization
Inform Editing?").

Usage::

    python -m romelib.experiments.where_to_edit --n 16 --layers 0,4,8,12,16
    torchrun --nproc_per_node 2 -m romelib.experiments.where_to_edit --n 16   # shared folder
    rows = read_jsonl(RESULTS / "edits.jsonl", key=EDIT_KEY)
    curves = layer_curves(rows)                        # ES/PS/NS/S by layer, per token
    tracing_vs_editing(rows, read_jsonl(RESULTS / "traces.jsonl"), metric="rewrite_score")

For each fact and layer ROME is applied with k* read (and v* inserted) at the subject's
last token or at the prompt's last token.  Edit success per (fact, layer) is compared
with the causal-tracing effect of the MLP outputs at the last subject token in that
layer (``romelib.trace(kind="mlp")`` of the true target), as a correlation over all
(fact, layer) pairs and as the variance it explains beyond the layer alone (Hase et
al.'s question: once you know the layer, does tracing say anything more?), each with a
bootstrap 95% interval over facts.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..core.tokens import find_subject_range
from ..datasets.counterfact import rewrite_prompt, targets
from ..editing.rome import resolve_hparams
from ..evaluation.metrics import evaluate_record, rewrite_score, score_and_ci
from ..intervals import bootstrap_draws, mean_and_ci, percentile_interval
from ..paths import results_dir
from ..results import append_jsonl, check_settings, read_jsonl, write_json
from ..tracing.trace import trace
from .launch import Worker, command_line, runner_parser, setup_logging
from .table4 import select_records

MODULE = "romelib.experiments.where_to_edit"
RESULTS = results_dir("results", "where_to_edit")
SWEPT_FACT_TOKENS = ("subject_last", "last")     # where k* is read: last subject token, last token
EDIT_KEY = ("case_id", "layer", "fact_token")
TRACE_KEY = ("case_id", "kind")


def _p_new(log_probs: dict) -> float:
    tokens = log_probs["rewrite"]["new"][0]
    return math.exp(sum(tokens) / len(tokens))


def edit_sweep(mt, records, layers, fact_tokens=SWEPT_FACT_TOKENS, base_hparams=None,
               out: Path | None = None, progress: bool = True) -> list[dict]:
    """ROME at every ``layer`` x ``fact_token`` for each record; rows of metrics, resumable via ``out``.

    Usage: ``rows = edit_sweep(mt, records[:2], layers=[2, 6], fact_tokens=["subject_last"])``;
    ``layers`` may also map each fact token to its own list of layers.
    """
    if not isinstance(layers, dict):
        layers = {token: layers for token in fact_tokens}
    base = resolve_hparams(mt, base_hparams)
    rows = read_jsonl(out, key=EDIT_KEY, repair=True) if out else []
    done = {(r["case_id"], r["layer"], r["fact_token"]) for r in rows}
    bar = tqdm(total=len(records) * sum(len(layers[t]) for t in fact_tokens), desc="edits",
               disable=not progress)
    for record in records:
        before = None
        for fact_token in fact_tokens:
            for layer in layers[fact_token]:
                bar.update()
                if (record["case_id"], layer, fact_token) in done:
                    continue
                if before is None:
                    before = _p_new(evaluate_record(mt, record, method=None)["log_probs"])
                hparams = replace(base, layer=layer, fact_token=fact_token)
                result = evaluate_record(mt, record, "rome", hparams)
                row = {"case_id": record["case_id"], "layer": layer, "fact_token": fact_token,
                       "metrics": result["metrics"], "p_new_before": before,
                       "rewrite_score": rewrite_score(before, _p_new(result["log_probs"])),
                       "seconds": result["seconds"]["total"]}
                rows.append(row)
                if out:
                    append_jsonl(out, row)
    bar.close()
    return rows


def trace_records(mt, records, kind: str = "mlp", samples: int = 10, out: Path | None = None,
                  progress: bool = True) -> list[dict]:
    """Causal-tracing effect of each layer at the last subject token, for the true target.

    Usage: ``trace_records(mt, records[:2])[0]["effects"]`` -> one value per layer.
    """
    rows = read_jsonl(out, key=TRACE_KEY, repair=True) if out else []
    done = {(r["case_id"], r["kind"]) for r in rows}
    for record in tqdm(records, desc=f"trace {kind}", disable=not progress):
        if (record["case_id"], kind) in done:
            continue
        prompt, subject = rewrite_prompt(record), record["requested_rewrite"]["subject"]
        last = find_subject_range(mt, prompt, subject)[1] - 1
        result = trace(mt, prompt, subject, kind=kind, samples=samples, target=targets(record)[1],
                       positions=[last], seed=record["case_id"])
        row = {"case_id": record["case_id"], "kind": kind, "position": last,
               "effects": result.indirect_effects[last].tolist(),
               "low_score": result.low_score, "high_score": result.high_score}
        rows.append(row)
        if out:
            append_jsonl(out, row)
    return rows


def layer_curves(rows: list[dict]) -> dict:
    """Mean and 95% CI of ES, PS, NS (and S) by layer, for each fact token, in percent.

    Usage: ``layer_curves(rows)["subject_last"]["PS"]["mean"]`` -> one value per layer
    (also ``"layers"`` and ``"ci"``).
    """
    curves = {}
    for token in sorted({r["fact_token"] for r in rows}):
        mine = [r for r in rows if r["fact_token"] == token]
        layers = sorted({r["layer"] for r in mine})
        curves[token] = {}
        for metric in ("ES", "PS", "NS", "S", "rewrite_score"):
            means, cis = [], []
            for layer in layers:
                at = [r for r in mine if r["layer"] == layer]
                if metric == "S":
                    value = score_and_ci([r["metrics"] for r in at], samples=300)
                elif metric == "rewrite_score":
                    value = mean_and_ci([r["rewrite_score"] for r in at])
                else:
                    value = mean_and_ci([r["metrics"][metric] for r in at])
                means.append(value[0])
                cis.append(value[1])
            curves[token][metric] = {"layers": layers, "mean": means, "ci": cis}
    return curves


def edit_tracing_pairs(rows, traces, metric, fact_token, normalize: bool = True):
    """(fact, layer, tracing effect, edit success) for every edit with a trace of its fact.

    Usage: ``edit_tracing_pairs(rows, traces, "rewrite_score", "subject_last")``.

    With ``normalize`` each fact's effects are divided by their largest absolute value, so
    facts the model knows weakly (tiny probabilities, tiny effects) weigh like the others.
    """
    effects = {}
    for t in traces:
        values = np.asarray(t["effects"], dtype=float)
        peak = np.abs(values).max() if normalize else 1.0
        effects[t["case_id"]] = values / peak if peak > 0 else values
    table = []
    for r in rows:
        if r["fact_token"] == fact_token and r["case_id"] in effects:
            value = r["rewrite_score"] if metric == "rewrite_score" else r["metrics"][metric]
            table.append((r["case_id"], r["layer"], float(effects[r["case_id"]][r["layer"]]), value))
    return table


def _r2(design: np.ndarray, y: np.ndarray) -> float:
    total = ((y - y.mean()) ** 2).sum()
    if total == 0:
        return float("nan")
    fitted = design @ np.linalg.lstsq(design, y, rcond=None)[0]
    return 1.0 - ((y - fitted) ** 2).sum() / total


def _statistics(table) -> tuple[float, float]:
    """Pearson r of effect and success, and the R^2 the effect adds to per-layer means (NaN when constant)."""
    _, layer, effect, value = (np.array(c, dtype=float) for c in zip(*table))
    if effect.std() == 0 or value.std() == 0:
        return float("nan"), float("nan")
    r = float(np.corrcoef(effect, value)[0, 1])
    dummies = (layer[:, None] == np.unique(layer)[None, :]).astype(float)
    gain = _r2(np.column_stack([dummies, effect]), value) - _r2(dummies, value)
    return r, float(gain)


def tracing_vs_editing(rows, traces, metric: str = "rewrite_score", fact_token: str = "subject_last",
                       samples: int = 1000, seed: int = 0, resample: str = "facts",
                       normalize: bool = True) -> dict:
    """Correlation of tracing effect with edit success over (fact, layer) pairs, with bootstrap CIs.

    Usage: ``tracing_vs_editing(rows, traces)`` -> ``{"r": 0.1, "r_ci": [..], "r2_gain": .., ...}``;
    ``r2_gain`` is how much R^2 the tracing effect adds to a model with one term per layer.
    ``resample="facts"`` (needs >= 3 facts) draws whole facts, the honest unit; ``"pairs"``
    draws (fact, layer) pairs, which understates the uncertainty (for tiny partial runs).
    ``normalize`` scales each fact's effects to a maximum of 1 (see :func:`edit_tracing_pairs`).
    """
    if resample not in ("facts", "pairs"):
        raise ValueError(f"resample must be 'facts' or 'pairs', got {resample!r}.")
    table = edit_tracing_pairs(rows, traces, metric, fact_token, normalize)
    facts = sorted({t[0] for t in table})
    if resample == "facts" and len(facts) < 3:
        raise ValueError(f"Need edits and traces of at least 3 facts to resample facts, got "
                         f"{len(facts)}; run more of the sweep or pass resample='pairs'.")
    if len(table) < 4:
        raise ValueError(f"Need at least 4 (fact, layer) pairs with a trace, got {len(table)}.")
    units = ([[t for t in table if t[0] == f] for f in facts] if resample == "facts"
             else [[t] for t in table])
    r, gain = _statistics(table)
    draws = bootstrap_draws(len(units), lambda idx: _statistics([t for k in idx for t in units[k]]),
                            samples, seed)
    return {"metric": metric, "fact_token": fact_token, "facts": len(facts), "pairs": len(table),
            "resample": resample, "normalized": normalize, "r": r,
            "r_ci": list(percentile_interval(draws[:, 0])), "r2_gain": gain,
            "r2_gain_ci": list(percentile_interval(draws[:, 1]))}


def summarize_results(folder: Path = RESULTS) -> dict:
    """Curves and correlations from whatever ``edits.jsonl`` / ``traces.jsonl`` hold (partial runs too).

    Usage: ``summarize_results()["correlations"][0]["r"]``.
    """
    rows = read_jsonl(folder / "edits.jsonl", key=EDIT_KEY)
    traces = read_jsonl(folder / "traces.jsonl", key=TRACE_KEY)
    if not rows:
        raise FileNotFoundError(f"No edits saved in {folder}; run python -m {MODULE}.")
    traced = {t["case_id"] for t in traces}
    facts = {r["case_id"] for r in rows if r["fact_token"] == "subject_last"} & traced
    resample = "facts" if len(facts) >= 3 else "pairs"
    correlations = []
    for metric in ("rewrite_score", "PS", "NS"):
        try:
            correlations.append(tracing_vs_editing(rows, traces, metric, resample=resample))
        except ValueError as error:
            correlations.append({"metric": metric, "error": str(error)})
    return {"facts": sorted({r["case_id"] for r in rows}), "edits": len(rows),
            "edit_seconds_total": round(sum(r["seconds"] for r in rows), 1),
            "curves": layer_curves(rows), "correlations": correlations}


def main(argv=None) -> None:
    """``python -m romelib.experiments.where_to_edit --n 16``: the layer sweep, the traces, their correlation."""
    parser = runner_parser("ROME at every layer (Figure 5) and tracing vs editing (Hase et al.).")
    parser.add_argument("--records", default="shared")
    parser.add_argument("--n", type=int, default=12)
    parser.add_argument("--layers", default="all", help="layers for the last subject token")
    parser.add_argument("--last-token-layers", default="even",
                        help="layers for the last token: 'all', 'even' or a comma-separated list")
    parser.add_argument("--mom2-max-tokens", type=int, default=100000,
                        help="key statistics per layer from this many WikiText-2 tokens")
    parser.add_argument("--samples", type=int, default=10, help="noise samples per trace")
    parser.add_argument("--summarize-only", action="store_true",
                        help="write summary.json from what is saved (a partial run too), run nothing")
    args = parser.parse_args(argv)
    setup_logging()
    command = command_line(MODULE, argv, drop=("--summarize-only",))
    if args.summarize_only:
        summary = {"command": command, **summarize_results(RESULTS)}
        write_json(RESULTS / "summary.json", summary)
        print(json.dumps(summary["correlations"], indent=1))
        return
    worker = Worker.from_environment(args.device)
    mt = worker.load_model(args.model, args.threads)
    records = select_records(args.records, args.n)

    def parse(spec):
        if spec in ("all", "even"):
            return list(range(0, mt.num_layers, 1 if spec == "all" else 2))
        return [int(x) for x in spec.split(",")]
    layers = {"subject_last": parse(args.layers), "last": parse(args.last_token_layers)}
    base = replace(resolve_hparams(mt, None), mom2_max_tokens=args.mom2_max_tokens)
    # the layers are not a setting: rows are keyed by (fact, layer, token), so a rerun with
    # other layers adds to (and resumes) the same sweep
    check_settings(RESULTS, {"model": mt.name, "rome": asdict(base),
                             "trace": {"kind": "mlp", "samples": args.samples}})
    started = time.perf_counter()
    mine = worker.share(records)
    trace_records(mt, mine, "mlp", args.samples, out=RESULTS / "traces.jsonl")
    edit_sweep(mt, mine, layers, SWEPT_FACT_TOKENS, base, out=RESULTS / "edits.jsonl")
    summary = {"command": command, "model": mt.name,
               "this_session_seconds": round(time.perf_counter() - started, 1),
               **summarize_results(RESULTS)}
    write_json(RESULTS / "summary.json", summary)
    print(json.dumps(summary["correlations"], indent=1))


if __name__ == "__main__":
    main()
