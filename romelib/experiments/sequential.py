"""Sequential editing: many edits one after another, and what happens to the model.

Usage::

    python -m romelib.experiments.sequential --method rome --edits 100
    python -m romelib.experiments.sequential --method rome-consistent --edits 100   # r-ROME's key
    python -m romelib.experiments.sequential --method memit --batch 10 --edits 100
    python -m romelib.experiments.sequential --method ft+l --edits 100
    python -m romelib.experiments.sequential --method rome,rome-consistent,memit --batch 10   # in turn
    python -m romelib.experiments.sequential --summarize-only

Held-out CounterFact records are edited into one model, one after another (MEMIT: a batch
at a time), and after every step the runner measures (Gupta et al. 2024, "Model editing at
scale leads to gradual and catastrophic forgetting"):

* **efficacy** of every edit made so far (the new target beats the true one on its prompt)
  and of the latest one;
* **neighbourhood**: the true object still wins on the neighbourhood prompts of 20 fixed
  records that are never edited;
* **general ability**: perplexity on 1,024 tokens (``--text-tokens``) of held-out text (WikiText-2 test, or the
  project's corpus when WikiText is not on the machine, named in the settings), and the share
  of the project's first 50 known facts whose answer is still the model's top prediction;
* **the update's norm** (Frobenius, all changed matrices) and the distance of the edited
  matrices from the original ones.

``rome`` stores each edit's own prompt key, as the authors' code does; ``rome-consistent``
uses the prefix-averaged key both to compute v* and in the update (``update_key="average"``),
the fix Gupta et al. (2024, r-ROME) propose for the "disabling edits" that make ROME
collapse.  Every step is appended to ``data/results/sequential/<method>.jsonl`` and the
edited weights are saved (atomically) beside it, so a stopped run resumes where it stopped.
"""
from __future__ import annotations

import math
import os
import statistics
from dataclasses import asdict, replace

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..core.tokens import next_token_probs, pad_batch, target_tokens
from ..core.unembedding_precision import UNEMBED_DTYPES
from ..datasets.corpora import SourceUnavailable, text_source
from ..datasets.counterfact import load_split, rewrite_prompt, targets
from ..datasets.facts import load_facts
from ..editing.context_prefixes import context_prefixes
from ..editing.handle import EditHandle, edit
from ..editing.key_statistics import key_statistics
from ..editing.memory import update_direction
from ..editing.request import as_request
from ..editing.rome import compute_keys, resolve_hparams
from ..editing.variants import method_and_hparams, method_of
from ..paths import results_dir
from ..plots.figures import plot_sequential_runs
from ..results import append_jsonl, check_settings, read_jsonl, write_json
from .launch import Worker, command_line, runner_parser, setup_logging
from .specificity import wins

MODULE = "romelib.experiments.sequential"
RESULTS = results_dir("results", "sequential")
SEQUENTIAL_METHODS = ("rome", "rome-consistent", "memit", "ft+l")
PROBE_RECORDS = 20          # never edited: their neighbourhood prompts measure specificity
FACTS = 50                  # the project's known facts whose top prediction is checked after each step
LABELS = {"rome": "ROME (prompt key)", "rome-consistent": "r-ROME (consistent key)",   # by results file name
          "memit": "MEMIT, batches of 10", "ft_plus_l": "FT+L"}


def held_out_text(mt, tokens: int = 1024) -> tuple[list[list[int]], str]:
    """Windows of 256 tokens of held-out text for perplexity, and the text's name."""
    try:
        source = text_source("wikitext-2")
        documents = source.documents()
    except SourceUnavailable:
        source = text_source("project-corpus", mt=mt)
        documents = source.documents()
    ids: list[int] = []
    for document in documents:
        ids += mt.tokenizer(document, add_special_tokens=False)["input_ids"]
        if len(ids) >= tokens:
            break
    ids = ids[:tokens]
    return [ids[i:i + 256] for i in range(0, len(ids), 256)], source.name


@torch.no_grad()
def perplexity(mt, windows: list[list[int]]) -> float:
    """Usage: ``perplexity(mt, windows)``: exp of the mean next-token NLL over the windows."""
    total, count = 0.0, 0
    for window in windows:
        inputs = pad_batch(mt, [window])
        logits = mt.model(**inputs).logits[0, :-1].float()
        total += float(torch.nn.functional.cross_entropy(logits, inputs["input_ids"][0, 1:], reduction="sum"))
        count += len(window) - 1
    return math.exp(total / count)


def measure(mt, edited: list[dict], probes: list[dict], windows, facts) -> dict:
    """Efficacy of every edit so far, neighbourhood of the probe records, perplexity, known facts."""
    margins = [wins(mt, [rewrite_prompt(r)], *targets(r))[0] for r in edited]
    neighbourhood = [m > 0 for r in probes for m in wins(mt, r["neighborhood_prompts"], *reversed(targets(r)))]
    top = next_token_probs(mt, [f.prompt for f in facts]).argmax(-1).tolist()
    known = [t == target_tokens(mt, f.prompt, f.attribute)[1][0] for t, f in zip(top, facts)]
    return {"efficacy_all": statistics.mean(m > 0 for m in margins) if margins else None,
            "efficacy_latest": float(margins[-1] > 0) if margins else None,
            "neighbourhood": statistics.mean(neighbourhood), "perplexity": perplexity(mt, windows),
            "facts_known": statistics.mean(known)}


def _checkpoint(method: str):
    return RESULTS / f"{method.replace('+', '_plus_')}.safetensors"


def _save_checkpoint(method: str, weights: dict, step: int, norm: float) -> None:
    """The edited matrices after ``step``, written whole or not at all."""
    path = _checkpoint(method)
    scratch = path.with_suffix(".partial")
    save_file({k: w.detach().contiguous() for k, w in weights.items()}, str(scratch),
              metadata={"step": str(step), "update_norm": repr(norm)})
    os.replace(scratch, path)


def _append_step(mt, path, step, edited, norm, distance, text_name, probes, windows, facts) -> None:
    append_jsonl(path, {"step": step, "edits": len(edited), "update_norm": norm, "distance": distance,
                        "text": text_name, **measure(mt, edited, probes, windows, facts)})


def run(mt, name: str, records: list[dict], batch: int, probes, windows, text_name, hparams=None) -> None:
    """Edit ``records`` one step at a time into ``mt``, measuring after each step; resumable.
    ``hparams`` replaces the method's shipped settings (for models without them)."""
    method, shipped = method_and_hparams(mt, name) if hparams is None else (method_of(name), hparams)
    hparams = shipped
    path = RESULTS / f"{name.replace('+', '_plus_')}.jsonl"
    facts = load_facts("project")[:FACTS]
    check_settings(RESULTS, {name: {                # a resumed run must measure what it measured before
        "hparams": asdict(hparams), "batch": batch, "first_record": records[0]["case_id"],
        "probes": [r["case_id"] for r in probes], "text": text_name, "text_tokens": sum(map(len, windows)),
        "facts": len(facts)}})
    rows = read_jsonl(path, key="step", repair=True)
    params = dict(mt.model.named_parameters())
    originals: dict[str, torch.Tensor] = {}
    if not rows:
        _append_step(mt, path, 0, [], 0.0, 0.0, text_name, probes, windows, facts)
    elif rows[-1]["step"] > 0:                 # resume: the weights as they were after the last saved step
        with safe_open(str(_checkpoint(name)), "pt") as checkpoint:
            saved_step, norm = int(checkpoint.metadata()["step"]), float(checkpoint.metadata()["update_norm"])
        saved = load_file(str(_checkpoint(name)))
        with torch.no_grad():
            for key, value in saved.items():
                originals[key] = params[key].detach().clone()
                params[key].copy_(value)
        if saved_step == rows[-1]["step"] + 1:   # killed between saving the weights and the row
            distance = math.sqrt(sum(float((params[k].detach() - o).double().norm()) ** 2
                                     for k, o in originals.items()))
            _append_step(mt, path, saved_step, records[:saved_step * batch], norm, distance, text_name,
                         probes, windows, facts)
        elif saved_step != rows[-1]["step"]:
            raise RuntimeError(f"{_checkpoint(name)} holds step {saved_step} but {path} ends at step "
                               f"{rows[-1]['step']}; delete both to start again.")
    steps = range(read_jsonl(path, key="step")[-1]["step"], math.ceil(len(records) / batch))
    for step in tqdm(steps, desc=f"sequential {name}"):
        chunk = records[step * batch:(step + 1) * batch]
        requests = [as_request(r["requested_rewrite"]) for r in chunk]
        handle: EditHandle = edit(mt, requests if method == "memit" else requests[0], method=method,
                                  hparams=hparams, max_seconds=None)
        norm = math.sqrt(sum(float(d.double().norm()) ** 2 for d in handle.deltas.values()))
        for key, original in handle.keep().items():   # the edit stays: the next one builds on it
            originals.setdefault(key, original)
        distance = math.sqrt(sum(float((params[k].detach() - o).double().norm()) ** 2
                                 for k, o in originals.items()))
        _save_checkpoint(name, {k: params[k] for k in originals}, step + 1, norm)
        _append_step(mt, path, step + 1, records[:(step + 1) * batch], norm, distance, text_name,
                     probes, windows, facts)
    with torch.no_grad():                      # leave the model as it was
        for key, original in originals.items():
            params[key].copy_(original)


def key_agreement(mt, records: list[dict], hparams=None) -> list[float]:
    """For each record, ``rho = u . k_prompt / u . k_avg`` with ``u = C^-1 k_avg``: how far
    ROME's denominator (the bare prompt's key, as the authors' code stores it) is from
    r-ROME's (the prefix-averaged key).  For the same delta, ROME's update is ``1 / rho``
    times r-ROME's; a disabling edit needs ``rho`` near 0 (or below it).

    Usage: ``key_agreement(mt, held_out[:100])`` -> one float per record (no edit is made).
    """
    hparams = resolve_hparams(mt, hparams)
    prefixes = context_prefixes(mt, hparams.context_lengths, hparams.contexts_per_length)
    second_moment = None if hparams.identity_covariance else key_statistics(
        mt, hparams.layer, hparams.mom2_source, hparams.mom2_max_tokens).mom2
    ratios = []
    for record in records:
        request = as_request(record["requested_rewrite"])
        keys = compute_keys(mt, request, hparams, prefixes).double()      # as compute_rome has them
        average = keys.mean(dim=0)
        prompt = (keys[prefixes.index("")] if "" in prefixes
                  else compute_keys(mt, request, hparams, [""])[0].double())
        direction = update_direction(average, second_moment)
        ratios.append(float(direction @ prompt / (direction @ average)))
    return ratios


COLLAPSE_PERPLEXITY = 2.0     # a step whose perplexity is this many times the unedited model's ...
COLLAPSE_EFFICACY = 0.5       # ... or after which fewer than this share of the edits so far still hold


def run_summary(rows: list[dict]) -> dict:
    """What a sequential run did, in numbers: the first and last measurements, the worst
    efficacy of all edits so far, the largest perplexity ratio, the step norms, and the first
    step that counts as a collapse (``None`` if none did).

    Usage: ``run_summary(read_jsonl(RESULTS / "rome.jsonl", key="step"))``.
    """
    first, steps = rows[0], rows[1:]
    if not steps:
        raise ValueError("the run has no edit step yet")
    norms = [r["update_norm"] for r in steps]
    ratio = lambda r: r["perplexity"] / first["perplexity"]
    collapse = next((r["edits"] for r in steps if ratio(r) > COLLAPSE_PERPLEXITY
                     or r["efficacy_all"] < COLLAPSE_EFFICACY), None)
    return {"edits": steps[-1]["edits"], "efficacy_all": steps[-1]["efficacy_all"],
            "worst_efficacy_all": min(r["efficacy_all"] for r in steps),
            "efficacy_latest": statistics.mean(r["efficacy_latest"] for r in steps),
            "neighbourhood": (first["neighbourhood"], steps[-1]["neighbourhood"]),
            "perplexity": (first["perplexity"], steps[-1]["perplexity"]),
            "largest_perplexity_ratio": max(map(ratio, steps)),
            "facts_known": (first["facts_known"], steps[-1]["facts_known"]),
            "median_norm": statistics.median(norms), "largest_norm": max(norms),
            "distance": steps[-1]["distance"], "collapse_at": collapse}


def draw_runs():
    """Sequential editing curves of every saved run: figure, what it used.

    Usage: ``fig, used = draw_runs()`` (``python -m romelib.experiments.reproduce``).
    """
    runs = {path.stem: read_jsonl(path, key="step") for path in sorted(RESULTS.glob("*.jsonl"))}
    if not runs:
        raise FileNotFoundError(f"No sequential runs in {RESULTS}: python -m {MODULE}")
    fig = plot_sequential_runs(runs, LABELS, "Sequential editing: every step measured")
    return fig, "saved runs " + ", ".join(f"{name} ({rows[-1]['edits']} edits)" for name, rows in runs.items())


def main(argv=None) -> None:
    """``python -m romelib.experiments.sequential --method rome --edits 100``."""
    parser = runner_parser("Sequential editing: edits one after another, with the model measured after each.")
    parser.add_argument("--method", default="rome",
                        help=f"one or more of {', '.join(SEQUENTIAL_METHODS)}, comma-separated, run in turn")
    parser.add_argument("--edits", type=int, default=100)
    parser.add_argument("--batch", type=int, default=1, help="edits per step (MEMIT)")
    parser.add_argument("--text-tokens", type=int, default=1024, help="held-out text for perplexity "
                        "(each step unembeds it over the whole vocabulary: the main cost of a step)")
    parser.add_argument("--unembed-dtype", choices=UNEMBED_DTYPES, default=None,
                        help="ROME's and MEMIT's unembed_dtype (default: the shipped settings'); runs saved "
                             "before that option existed resume with 'model'")
    parser.add_argument("--summarize-only", action="store_true")
    args = parser.parse_args(argv)
    setup_logging()
    methods = args.method.split(",")
    unknown = [m for m in methods if m not in SEQUENTIAL_METHODS]
    if unknown:
        parser.error(f"--method must be among {', '.join(SEQUENTIAL_METHODS)}; got {', '.join(unknown)}")
    if args.unembed_dtype and "ft+l" in methods:
        parser.error("--unembed-dtype applies to rome, rome-consistent and memit, not ft+l; run ft+l without it")
    if args.edits < 1 or args.batch < 1:
        parser.error(f"--edits and --batch must be at least 1; got {args.edits} and {args.batch}")
    if not args.summarize_only:
        worker = Worker.from_environment(args.device)
        methods = worker.share(methods)           # a run is one chain of edits: one method per process
        if not methods:
            print(f"{worker.describe()}: no method left for this process (--method names fewer)")
            return
        mt = worker.load_model(args.model, args.threads)
        held_out = load_split("shared").held_out
        probes, records = held_out[:PROBE_RECORDS], held_out[PROBE_RECORDS:PROBE_RECORDS + args.edits]
        windows, text_name = held_out_text(mt, args.text_tokens)
        for method in methods:
            hparams = None
            if args.unembed_dtype:
                hparams = replace(method_and_hparams(mt, method)[1], unembed_dtype=args.unembed_dtype)
            run(mt, method, records, args.batch if method == "memit" else 1, probes, windows, text_name,
                hparams)
    summary = {"command": command_line(MODULE, argv, drop=("--summarize-only",)),
               "runs": {p.stem: read_jsonl(p, key="step") for p in sorted(RESULTS.glob("*.jsonl"))}}
    write_json(RESULTS / "summary.json", summary)
    for name, rows in summary["runs"].items():
        last = rows[-1]
        print(name, {k: last[k] for k in ("edits", "efficacy_all", "neighbourhood", "perplexity", "facts_known")})


if __name__ == "__main__":
    main()
