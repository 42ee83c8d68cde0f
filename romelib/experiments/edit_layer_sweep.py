"""Choose ROME's editing layer for the default model: edit at each layer, measure, pick.

Usage (resumable, one JSON line per case, layer and setting)::

    python -m romelib.experiments.edit_layer_sweep --split tune --layers 1,3,5,7 --cases 12 \\
        --set clamp_norm_factor=1.0 --variant update_key='"average"'
    torchrun --nproc_per_node 2 -m romelib.experiments.edit_layer_sweep --split tune --layers all
    python -m romelib.experiments.edit_layer_sweep --summary     # rewrite summary.md

Cases come from the one split of the shared CounterFact sample
(:func:`romelib.datasets.counterfact.counterfact_split`): ``tune`` (in file order; the only
records a choice may be made on) or ``holdout``; ``project`` = the project's own
CounterFact-style cases in data/counterfact_cases.json (never used for any choice).
Metrics as in ROME's CounterFact code (:mod:`romelib.evaluation.metrics`): efficacy = the
new target beats the true one on the edited prompt, paraphrase = the same on the
paraphrase prompts, neighbourhood = the true target beats the new one on prompts about
other subjects.  Hyperparameters: data/hparams/rome/gemma-3-270m.json with ``layer``
replaced, and, where given, the statistics' token count (``--mom2-max-tokens``) and other
settings (``--set``); every result line records what was changed.
"""
from __future__ import annotations

import dataclasses
import json
import statistics
import time

from ..core.hparams import load_hparams
from ..datasets.counterfact import load_counterfact, load_split
from ..editing.context_prefixes import context_prefixes
from ..editing.handle import EditHandle
from ..editing.key_statistics import key_statistics
from ..editing.request import as_request
from ..editing.rome import ROMEHyperParams, compute_value, rome_result
from ..evaluation.metrics import record_metrics, score_record
from ..paths import results_dir
from ..results import append_jsonl, read_jsonl, write_text
from .launch import Worker, runner_parser, setup_logging

RESULTS = results_dir("edit_layer_sweep")
EXPLICIT_SETTINGS = ("kl_token", "early_stop_nll", "unembed_dtype")

# The decision, written above the tables in summary.md (the tables are regenerated from
# the results files; this text is not, so update it when the choice changes).
CHOICE = """# Edit-layer sweep: Gemma 3 270M (the default model)

**Choice: layer 5** (of 18, counting from 0), with `update_key = "prompt"` and
`clamp_norm_factor = 1.0`; the other settings are ROME's GPT-2 XL defaults (20 Adam steps
at lr 0.5, weight decay 0.5, KL factor 0.0625 on "{} is a", 10 + 10 model-written
prefixes of 5 and 10 tokens, C from 100,000 WikiText-2 tokens).  Recorded in
`data/hparams/rome/gemma-3-270m.json`; the statistics for layer 5 ship in `data/stats/`.

Why layer 5 (tune split below, the first 12 records of the shared CounterFact sample, the
only records any choice was made on):

* with the edited prompt's own key (`update_key "prompt"`, as in ROME's code) layers 1, 3
  and 5 all reach 100% efficacy (12/12) and paraphrase success of 95.8 / 95.8 / 91.7%,
  with neighbourhood success 76.7 / 74.2 / 76.7% against 79.2% for the unedited model on
  the same cases (2.5 / 5.0 / 2.5 points below).  Layer 7 loses paraphrases (75.0%).
  (Layer 1 was also run on records 13-18, so its rows in the table cover 18 cases and
  the unedited row 24; the numbers in this paragraph are on the 12 cases every layer has.)
* with 12 cases one case is 8.3 points of efficacy and about 4 points of paraphrase
  success, so layers 1-5 are within noise of each other.  Among them layer 5 is the one
  in the middle of the band where the causal traces (`data/tracing/`, notebook 04) put the
  MLP's indirect effect at the last subject token (layers 0-8, falling after 8), i.e. an
  edit of the stored association rather than of the subject's first token embedding;
  layer 1 sits right above the embedding, layer 3 bleeds most into neighbours.
* `update_key "average"` (k* = the mean key, the paper's Eq. 2 read literally) misses
  efficacy on one case of 12 at layers 1-5 (91.7%), so the default stores the prompt's
  own key, as the authors' code does.
* `clamp_norm_factor 1.0` (instead of GPT-2 XL's 4.0) was fixed before this sweep (every
  row below uses it; other values were not compared here): it bounds ||delta|| by the
  norm of the MLP output it is added to, and 1.0 already reaches 100% efficacy.

Specificity checks, run after the held-out Table 4 (50 records) put ROME's neighbourhood
score 5.6 points below the unedited model's (tune split again; the rows are in the table):

* `clamp_norm_factor 0.75` (a smaller ||delta||) on 24 tune cases: efficacy 95.8%,
  paraphrase 75.0%, neighbourhood 1.2 points below unedited.  Paraphrase success falls
  below the 85% the issue asks for, so the bound stays at 1.0.  `0.5` missed efficacy on
  1 of 3 cases and the paraphrases of the other 2 (final NLL 2.4-6.0: the bound leaves
  too little room) and was stopped there.
* C from all 524,060 WikiText-2 tokens (`mom2_max_tokens null`) instead of 100,000:
  efficacy, paraphrase and neighbourhood results identical on each of the 7 cases run
  before the run was stopped for time (same k*, v*; only C differs), so the estimate of C is
  not what limits specificity.
  The shipped file stays the 100,000-token one.
* Where neighbourhood success is lost (held-out Table 4, per record): mostly on subjects
  whose last token is generic and shared by the neighbours ("Battambang *Province*" ->
  Tucson takes 7 of 10 other Cambodian provinces along; "Greenwich *Park*": 3 of 10).
  ROME writes at the last subject token, so neighbours with nearly the same key there
  move with the edit; no setting above avoids that without losing paraphrases.
* Where C comes from (24 tune cases, layer 5, the current defaults; same k*, v*, only C
  differs): C from WikiText-2 gives efficacy / paraphrase / neighbourhood 100 / 93.8 /
  72.9%, C from the model's own text (`mom2_source "project-corpus"`, `data/corpora/`)
  100 / 95.8 / 72.9%, C = I 100 / 95.8 / 50.8% (unedited 77.5%).  So C's source hardly
  matters; having C at all is worth 22 points of neighbourhood success.
* The unembedding's precision in v*'s optimisation (24 tune cases, layer 5, the current
  defaults otherwise): `unembed_dtype "bfloat16"` gives efficacy / paraphrase /
  neighbourhood 100 / 93.8 / 72.9%, the same as float32 (`"model"`, the rows made before the
  option existed), with the same number of optimisation steps on 23 of the 24 cases; so the
  default `"auto"` (bfloat16 where the hardware has it fast) keeps the tune results.

The target set for these settings (efficacy >= 99%, paraphrase >= 85%, neighbourhood no
more than 5 points below the unedited model) holds on the tune split at layer 5
(100 / 91.7 / -2.5 points).  On records never used for a choice (the CounterFact table of
`romelib.experiments.table4`, `data/results/table4_counterfact/`, 100 held-out shared
records): with the KL term at the prompt's last token, the setting of the sweep, efficacy
100%, paraphrase 89.0%, neighbourhood 70.4% against 74.6% unedited, 4.2 points below
(paired 95% interval 2.4-6.4); with the current defaults (KL term where the authors' code
reads it, NLL early stop) 100%, 93.0% and 69.9%, 4.7 points below (2.7-7.0).  The table
was extended from 50 to 100 records because 50 left the neighbourhood result within noise
of the limit.

Commands (from the repository root; resumable; `--summary` rewrites this file):

    python -m romelib.experiments.edit_layer_sweep --split tune --layers 1,3,5,7 --cases 12 \\
        --threads 1 --set clamp_norm_factor=1.0 --set update_key='"prompt"' \\
        --variant update_key='"average"'
    python -m romelib.experiments.edit_layer_sweep --split tune --layers 5 --cases 24 --threads 1 \\
        --set clamp_norm_factor=0.75 --set update_key='"prompt"'
    python -m romelib.experiments.edit_layer_sweep --split tune --layers 5 --cases 24 --threads 1 \\
        --set clamp_norm_factor=1.0 --set update_key='"prompt"' --variant mom2_max_tokens=null
    python -m romelib.experiments.edit_layer_sweep --split tune --layers 5 --cases 24 --threads 1 \\
        --set clamp_norm_factor=1.0 --set update_key='"prompt"' \\
        --variant mom2_source='"project-corpus"' --variant identity_covariance=true
    python -m romelib.experiments.edit_layer_sweep --split tune --layers 5 --cases 24 --threads 1 \\
        --set clamp_norm_factor=1.0 --set update_key='"prompt"' --set unembed_dtype='"bfloat16"'
    python -m romelib.experiments.edit_layer_sweep --summary

An earlier, interrupted run with more cases scored the unedited model on 24 cases and
layer 1 on 18 before it stopped; those rows are kept.  The key statistics of every layer
were computed once, from the same 100,000 tokens, with
`python -m romelib.experiments.key_statistics --layers all --max-tokens 100000` into the user cache.

Metrics as in ROME's CounterFact evaluation (a target "wins" when its mean log-probability
per token is higher): efficacy = the new target beats the true one on the edited prompt,
paraphrase = the same on the two paraphrase prompts, neighbourhood = the true target beats
the new one on the ten prompts about other subjects; Score = their harmonic mean;
"s per edit" includes scoring, on a shared 2-core machine with other jobs running.
"""


def record_scores(mt, record: dict) -> dict:
    """Efficacy (0/1), paraphrase and neighbourhood success (fractions) for one record."""
    metrics = record_metrics(score_record(mt, record))
    return {"efficacy": metrics["ES"], "paraphrase": metrics["PS"], "neighbourhood": metrics["NS"]}


def load_cases(split: str, count: int) -> list[dict]:
    """Usage: ``load_cases("tune", 12)``: the first ``count`` cases of a split."""
    if split == "project":                       # the project's own cases, never tuned on
        return load_counterfact("project")[:count]
    shared = load_split("shared")
    return (shared.tune if split == "tune" else shared.held_out)[:count]


def edit_variants(mt, record: dict, hparams: ROMEHyperParams, variants: list[dict]) -> list[dict]:
    """One optimisation of k* and v*, then each variant of the update step scored."""
    request = as_request(record["requested_rewrite"])
    prefixes = context_prefixes(mt, hparams.context_lengths, hparams.contexts_per_length)
    value = compute_value(mt, request, hparams, prefixes)
    keys = value.keys
    moments = {}                                    # C for each (text, token count) the variants use
    rows = []
    for variant in variants:
        changed = dataclasses.replace(hparams, **variant)
        key = (changed.mom2_source, changed.mom2_max_tokens)
        if key not in moments and not changed.identity_covariance:
            moments[key] = key_statistics(mt, changed.layer, *key).mom2
        result = rome_result(mt, request, changed, prefixes, keys, value,
                             None if changed.identity_covariance else moments[key])
        (change,) = result.deltas.values()
        with EditHandle(mt, request, "rome", changed, result):
            rows.append({**record_scores(mt, record), "final_nll": value.losses[-1]["nll"],
                         "steps": len(value.losses), "update_norm": float(change.double().norm())})
    return rows


def run(mt, split: str, layers: list[int], cases: list[dict], mom2_max_tokens,
        settings: dict, variants: list[dict], worker: Worker | None = None) -> None:
    """Score the unedited model, then every (layer, variant) on ``cases``; appended, resumable."""
    out = RESULTS / f"results_{split}.jsonl"
    base = load_hparams(ROMEHyperParams, "rome", mt.name)
    # settings that were once implicit defaults are always written out, so that rows made
    # under an older default keep their meaning (romelib.experiments.migrate labels old rows)
    explicit = {key: getattr(base, key) for key in EXPLICIT_SETTINGS}
    label = lambda extra: json.dumps({**explicit, **settings, **extra}, sort_keys=True)
    done = {(r["case_id"], r["layer"], json.dumps(r.get("settings", {}), sort_keys=True))
            for r in read_jsonl(out, repair=True)}
    mine = (worker or Worker()).share(cases)
    for layer in [-1] + layers:                                        # -1: the unedited model
        for record in mine:
            todo = [v for v in variants if (record["case_id"], layer,
                                            "{}" if layer < 0 else label(v)) not in done]
            if not todo or (layer < 0 and (record["case_id"], -1, "{}") in done):
                continue
            start = time.perf_counter()
            if layer < 0:
                results, todo = [record_scores(mt, record)], [{}]
            else:
                hparams = dataclasses.replace(base, layer=layer, mom2_max_tokens=mom2_max_tokens,
                                              **settings)
                results = edit_variants(mt, record, hparams, todo)
            seconds = round(time.perf_counter() - start, 2)
            for variant, scores in zip(todo, results):
                row = {"case_id": record["case_id"], "layer": layer, **scores,
                       "settings": {} if layer < 0 else json.loads(label(variant)),
                       "seconds": seconds}
                append_jsonl(out, row)
                print(json.dumps(row), flush=True)


def summary_table(split: str) -> str:
    """Markdown table: one row per (changed hyperparameters, layer), with the unedited
    model's neighbourhood score on the same cases beside it."""
    rows = read_jsonl(RESULTS / f"results_{split}.jsonl",
                      key=lambda r: (r["case_id"], r["layer"], json.dumps(r.get("settings", {}), sort_keys=True)))
    unedited = {r["case_id"]: r for r in rows if r["layer"] < 0}
    label = lambda r: json.dumps(r.get("settings", {}), sort_keys=True)
    groups = sorted({(label(r), r["layer"]) for r in rows})
    lines = [f"### {split} split", "",
             "| changed hyperparameters | layer | cases | efficacy % | paraphrase % | "
             "neighbourhood % | unedited neighbourhood % | Score | s per edit |",
             "|---|---|---|---|---|---|---|---|---|"]
    for settings, layer in groups:
        chosen = [r for r in rows if r["layer"] == layer and label(r) == settings]
        means = [100 * statistics.mean(r[k] for r in chosen)
                 for k in ("efficacy", "paraphrase", "neighbourhood")]
        base = 100 * statistics.mean(unedited[r["case_id"]]["neighbourhood"] for r in chosen)
        score = statistics.harmonic_mean(means) if min(means) > 0 else 0.0
        name = "unedited" if layer < 0 else str(layer)
        lines.append(f"| {settings if layer >= 0 else ''} | {name} | {len(chosen)} | {means[0]:.1f} "
                     f"| {means[1]:.1f} | {means[2]:.1f} | {base:.1f} | {score:.1f} "
                     f"| {statistics.mean(r['seconds'] for r in chosen):.1f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    """``python -m romelib.experiments.edit_layer_sweep --split tune --layers all --cases 12``."""
    parser = runner_parser("Edit at each layer on the tune split, measure, choose ROME's layer.")
    parser.add_argument("--split", choices=("tune", "holdout", "project"), default="tune")
    parser.add_argument("--layers", default="all", help="'all' or comma-separated")
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--mom2-max-tokens", type=int, default=None,
                        help="token count of the statistics (default: the hparams file's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="override another hyperparameter, e.g. --set clamp_norm_factor=2")
    parser.add_argument("--variant", action="append", default=[], metavar="KEY=JSON",
                        help="score this change of the update step too (same k*, v*), "
                             "e.g. --variant update_key='\"average\"'; repeatable")
    parser.add_argument("--summary", action="store_true", help="only rewrite summary.md")
    args = parser.parse_args(argv)
    setup_logging()
    if not args.summary:
        worker = Worker.from_environment(args.device)
        mt = worker.load_model(args.model, args.threads)
        layers = (list(range(mt.num_layers)) if args.layers == "all"
                  else [int(x) for x in args.layers.split(",")])
        mom2 = args.mom2_max_tokens or load_hparams(ROMEHyperParams, "rome", mt.name).mom2_max_tokens
        parse = lambda items: {k: json.loads(v) for k, v in (item.split("=", 1) for item in items)}
        variants = [{}] + [parse([item]) for item in args.variant]
        run(mt, args.split, layers, load_cases(args.split, args.cases), mom2, parse(args.set),
            variants, worker)
    tables = [summary_table(s) for s in ("tune", "holdout", "project")
              if (RESULTS / f"results_{s}.jsonl").exists()]
    write_text(RESULTS / "summary.md", CHOICE + "\n" + "\n\n".join(tables) + "\n")
    print("\n\n".join(tables))


if __name__ == "__main__":
    main()
