"""The paper's fine-tuning baselines, through the same API as ROME.

Usage::

    handle = romelib.edit(mt, request, method="ft")      # fine-tune one MLP output matrix
    handle = romelib.edit(mt, request, method="ft+l")    # ... within an L-infinity ball
    handle.restore()

FT (Meng et al. 2022, Appendix E.1) minimises -log P(target_new | prompt) with Adam,
changing only the MLP output matrix (``mlp_proj``, the matrix ROME rewrites) of one
layer, and stops early once the loss falls below 0.03.  FT+L adds the constraint of
Zhu et al. (2020), ``||W' - W||_inf <= epsilon``, by clamping the weights into
``W +- epsilon`` after every step.  The paper used Adam with learning rate 5e-4 and at
most 25 steps; for GPT-2 XL a sweep chose layer 1 for FT and layer 0 with
epsilon = 5e-4 for FT+L.  The default model's values come from the same kind of sweep
(``python -m romelib.baselines``, on CounterFact records that the table does not use;
see data/results/README.md).

Unlike ROME's ``ft_main.py``, which scores every target token at the position right
after the prompt, the loss here is teacher-forced over the whole target (mean over its
tokens), so multi-token targets are learned token by token.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import asdict, dataclass

import torch

from .editing import EditRequest, MethodResult
from .hparams import hparams_path, load_hparams, save_hparams
from .tokens import pad_batch, target_tokens


@dataclass(frozen=True)
class FTHyperParams:
    """Fine-tuning one layer's MLP output matrix; ``norm_constraint`` set means FT+L."""

    layer: int                            # which block's mlp_proj is trained
    lr: float = 5e-4                      # Adam learning rate (the paper's)
    max_steps: int = 25                   # at most this many gradient steps
    early_stop_loss: float = 0.03         # stop once the mean token NLL is below this
    weight_decay: float = 0.0
    norm_constraint: float | None = None  # L-infinity radius epsilon of the change (FT+L)


def apply_ft(mt, request: EditRequest, hparams: FTHyperParams | None = None) -> MethodResult:
    """Unconstrained fine-tuning (method ``"ft"``); hyperparameters from data/hparams/ft/.

    Usage: ``romelib.edit(mt, request, method="ft", hparams=FTHyperParams(layer=1))``.
    """
    hparams = hparams or load_hparams(FTHyperParams, "ft", mt.name)
    return finetune(mt, request, hparams)


def apply_ft_l(mt, request: EditRequest, hparams: FTHyperParams | None = None) -> MethodResult:
    """Fine-tuning within ``W +- epsilon`` (method ``"ft+l"``); hparams from data/hparams/ft_plus_l/.

    Usage: ``romelib.edit(mt, request, method="ft+l", hparams=FTHyperParams(0, norm_constraint=5e-4))``.
    """
    hparams = hparams or load_hparams(FTHyperParams, "ft+l", mt.name)
    if hparams.norm_constraint is None:
        raise ValueError("FT+L needs hparams.norm_constraint (the L-infinity radius epsilon, "
                         "e.g. 5e-4); without it use method='ft'.")
    return finetune(mt, request, hparams)


def finetune(mt, request: EditRequest, hparams: FTHyperParams) -> MethodResult:
    """Train ``mlp_proj`` of ``hparams.layer`` on the request; return the change, weights untouched.

    Usage: ``finetune(mt, request, FTHyperParams(layer=1)).deltas``.
    """
    _check(mt, hparams)
    name = mt.module_name("mlp_proj", hparams.layer) + ".weight"
    weight = mt.module("mlp_proj", hparams.layer).weight
    original = weight.detach().clone()
    prompt_ids, target_ids = target_tokens(mt, request.filled_prompt, request.target_new)
    inputs = pad_batch(mt, [prompt_ids + target_ids])
    target = torch.tensor(target_ids, device=mt.device)
    optimizer = torch.optim.Adam([weight], lr=hparams.lr, weight_decay=hparams.weight_decay)
    eps = hparams.norm_constraint
    losses = []
    weight.requires_grad_(True)
    try:
        with torch.enable_grad():
            for _ in range(hparams.max_steps):
                logits = mt.model(**inputs, logits_to_keep=len(target_ids) + 1).logits[0, :-1]
                loss = -torch.log_softmax(logits.float(), -1).gather(-1, target[:, None]).mean()
                losses.append(loss.item())
                if losses[-1] < hparams.early_stop_loss:
                    break
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if eps is not None:
                    with torch.no_grad():
                        weight.copy_(torch.clamp(weight, original - eps, original + eps))
        delta = weight.detach() - original
    finally:
        weight.requires_grad_(False)
        weight.grad = None
        with torch.no_grad():
            weight.copy_(original)
    info = {"hparams": hparams, "losses": losses, "steps": len(losses),
            "final_loss": losses[-1], "max_abs_change": float(delta.abs().max())}
    return MethodResult(deltas={name: delta}, info=info)


def _check(mt, hparams: FTHyperParams) -> None:
    if not 0 <= hparams.layer < mt.num_layers:
        raise ValueError(f"FT layer {hparams.layer} is out of range: {mt.name} has layers "
                         f"0..{mt.num_layers - 1}.")
    if hparams.lr <= 0 or hparams.max_steps < 1:
        raise ValueError(f"FT needs lr > 0 and max_steps >= 1, got lr={hparams.lr}, "
                         f"max_steps={hparams.max_steps}.")
    if hparams.norm_constraint is not None and hparams.norm_constraint <= 0:
        raise ValueError(f"norm_constraint (epsilon) must be positive, got {hparams.norm_constraint}.")


def sweep_settings(layers, epsilons) -> list[tuple[str, int, float | None]]:
    """Usage: ``sweep_settings([0, 1], [5e-4])`` -> ``[("ft", 0, None), ..., ("ft+l", 1, 5e-4)]``."""
    settings = [("ft", layer, None) for layer in layers]
    return settings + [("ft+l", layer, eps) for layer, eps in itertools.product(layers, epsilons)]


def sweep(mt, records, settings, done: list[dict] = (), on_row=None,
          progress: bool = True) -> list[dict]:
    """Score FT / FT+L at each ``(method, layer, epsilon)`` setting on tuning records.

    Usage: ``rows = sweep(mt, tune_records, sweep_settings([0, 1, 2], [5e-4]))``; each row
    holds method, layer, epsilon and the table values (S, ES, PS, NS, ...).  Settings
    already in ``done`` are skipped; ``on_row(rows)`` is called after each new one.
    """
    from .evaluation import evaluate_counterfact

    rows = list(done)
    finished = {(r["method"], r["layer"], r["epsilon"]) for r in rows}
    for method, layer, eps in settings:
        if (method, layer, eps) in finished:
            continue
        hparams = FTHyperParams(layer=layer, norm_constraint=eps)
        started = time.perf_counter()
        result = evaluate_counterfact(mt, records, method=method, hparams=hparams, progress=progress)
        rows.append({"method": method, "layer": layer, "epsilon": eps, **result.table_row(2),
                     "seconds": round(time.perf_counter() - started, 1)})
        if on_row is not None:
            on_row(rows)
    return rows


def best_settings(rows: list[dict]) -> dict[str, FTHyperParams]:
    """The highest-Score row of each method as hyperparameters.

    Usage: ``best_settings(sweep(...))["ft+l"]`` -> ``FTHyperParams(layer=0, norm_constraint=5e-4)``.
    """
    best = {}
    for method in ("ft", "ft+l"):
        candidates = [r for r in rows if r["method"] == method]
        if candidates:
            top = max(candidates, key=lambda r: (r["S"], r["NS"]))
            best[method] = FTHyperParams(layer=top["layer"], norm_constraint=top["epsilon"])
    return best


def main(argv=None) -> None:
    """``python -m romelib.baselines``: sweep FT/FT+L on tuning records, write their hparams files."""
    from pathlib import Path

    from .counterfact import load_counterfact, split_records
    from .hparams import DATA_DIR
    from .models import load_model

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--model", default=None)
    parser.add_argument("--n-tune", type=int, default=20, help="tuning records (never in the table)")
    parser.add_argument("--n-sweep", type=int, default=10, help="how many tuning records to score")
    parser.add_argument("--layers", default="0,1,2,4,6,8,10,12,14,17")
    parser.add_argument("--epsilons", default="1e-4,5e-4,2e-3")
    parser.add_argument("--out", default=str(DATA_DIR / "results" / "baseline_sweep.json"))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--write-hparams", action="store_true",
                        help="save the best settings to data/hparams/ft*/<model>.json")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    mt = load_model(args.model, device="cpu")
    tune, _ = split_records(load_counterfact("shared"), n_tune=args.n_tune)
    tune = tune[:args.n_sweep]
    settings = sweep_settings([int(x) for x in args.layers.split(",")],
                              [float(x) for x in args.epsilons.split(",")])
    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.exists() else {}
    done = previous.get("rows", [])
    command = "python -m romelib.baselines " + " ".join(sys.argv[1:] if argv is None else argv)
    commands = previous.get("commands", [previous["command"]] if "command" in previous else [])
    report = {"commands": [c for c in commands if c != command] + [command],
              "model": mt.name, "tuning_case_ids": [r["case_id"] for r in tune]}

    def save(rows):
        best = {m: asdict(h) for m, h in best_settings(rows).items()}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({**report, "chosen": best, "rows": rows}, indent=1) + "\n")

    rows = sweep(mt, tune, settings, done=done, on_row=save)
    save(rows)
    if args.write_hparams:
        for method, hparams in best_settings(rows).items():
            save_hparams(hparams, hparams_path(method, mt.name))


if __name__ == "__main__":
    main()
