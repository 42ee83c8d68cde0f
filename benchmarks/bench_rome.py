"""One ROME edit on the default model: romelib's implementation beside the straightforward one.

Usage::

    python benchmarks/bench_rome.py                 # 2 CounterFact cases, torch's default threads
    python benchmarks/bench_rome.py --cases 4 --threads 2

The straightforward implementation below is ROME's algorithm written the obvious way,
as in the authors' ``compute_v``/``compute_u`` but with the prompts one at a time:
every forward pass runs the whole model on one prompt and computes logits over the full
vocabulary (262,144 tokens) at every position, the KL reference comes from the first
step, and k* is read from full forward passes.  romelib's ``apply_rome`` computes the same
loss (same hyperparameters, same prefixes, same statistics C, same update) but batches the
prompts, computes logits only where a target token is predicted, runs the part of each
prompt before the subject's last token once (cached keys/values) and replays the layers
below the edit.  Both edits run in the same process, alternately, so the ratio is fair on
a busy machine; the script prints both times, the ratio and both edits' success.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

import romelib
from romelib.editing import EditHandle, EditRequest, MethodResult, as_request
from romelib.rome import (ValueResult, apply_rome, prompt_rows, resolve_hparams, rome_result,
                          step_and_clamp)
from romelib.stats import key_statistics
from romelib.data import shared_data_dir
from romelib.texts import context_prefixes
from romelib.tokens import target_tokens

FALLBACK_CASES = [EditRequest("{} plays the sport of", "Michael Jordan", "soccer", "basketball"),
                  EditRequest("The mother tongue of {} is", "Danielle Darrieux", "English", "French")]


def straightforward_keys(mt, request, hparams, prefixes) -> torch.Tensor:
    """The key of each prefixed prompt, one full forward pass (full logits) each: (prefixes, d_mlp)."""
    keys = []
    for prefix in prefixes:
        rows, positions = prompt_rows(mt, request, [prefix], hparams.fact_token)
        name = f"mlp_proj.{hparams.layer}"
        with torch.no_grad(), romelib.hooks(mt, [name], retain_input=True) as acts:
            mt.model(input_ids=torch.tensor(rows, device=mt.device))
        keys.append(acts[name].input[0, positions[0]].float())
    return torch.stack(keys)


def _forward_one(mt, ids, position, layer, delta):
    """Full-vocabulary log-probabilities at every position, delta added at ``position``."""
    def add_delta(output, name):
        output = output.clone()
        output[0, position] += delta.to(output.dtype)
        return output
    with romelib.hooks(mt, [f"mlp_proj.{layer}"], retain_output=True, edit_output=add_delta) as acts:
        logits = mt.model(input_ids=torch.tensor([ids], device=mt.device)).logits
    return torch.log_softmax(logits.float(), dim=-1)[0], acts[f"mlp_proj.{layer}"].output


def straightforward_value(mt, request, hparams, prefixes):
    """delta and the loss log, prompts one at a time with full logits at every step."""
    _, target_ids = target_tokens(mt, request.filled_prompt, request.target_new)
    rows, positions = prompt_rows(mt, request, prefixes, hparams.fact_token, target_ids[:-1])
    kl_rows = [prompt_rows(mt, EditRequest(t, request.subject, request.target_new), [""],
                           hparams.fact_token) for t in hparams.kl_prompts]
    delta = torch.zeros(mt.d_model, device=mt.device, requires_grad=True)
    optimizer = torch.optim.Adam([delta], lr=hparams.v_lr)
    kl_reference, value_init, losses = None, None, []
    for step in range(hparams.v_num_grad_steps):
        nlls = []
        for ids, position in zip(rows, positions):
            log_probs, values = _forward_one(mt, ids, position, hparams.layer, delta)
            if value_init is None:
                value_init = (values[0, position] - delta).detach().float()
            predicted = log_probs[len(ids) - len(target_ids):]        # rows predicting the target
            nlls.append(-predicted[torch.arange(len(target_ids)), target_ids].mean())
        kl_now = torch.stack([_forward_one(mt, r[0], p[0], hparams.layer, delta)[0][-1]
                              for r, p in kl_rows])
        if kl_reference is None:
            kl_reference = kl_now.detach()
        nll = torch.stack(nlls).mean()
        kl = hparams.kl_factor * torch.nn.functional.kl_div(kl_reference, kl_now, log_target=True,
                                                            reduction="batchmean")
        decay = hparams.v_weight_decay * delta.norm() / value_init.norm() ** 2
        loss = nll + kl + decay
        losses.append({"step": step, "loss": loss.item(), "nll": nll.item()})
        if loss.item() < hparams.early_stop_loss or step == hparams.v_num_grad_steps - 1:
            break
        step_and_clamp(optimizer, loss, delta, hparams.clamp_norm_factor * value_init.norm())
    return delta.detach(), losses


def straightforward_apply_rome(mt, request, hparams=None) -> MethodResult:
    """ROME, the obvious way; same contract as ``romelib.rome.apply_rome``."""
    request, hparams = as_request(request), resolve_hparams(mt, hparams)
    prefixes = context_prefixes(mt, hparams.context_lengths, hparams.contexts_per_length)
    keys = straightforward_keys(mt, request, hparams, prefixes)
    delta, losses = straightforward_value(mt, request, hparams, prefixes)
    second_moment = None if hparams.identity_covariance else key_statistics(
        mt, hparams.layer, hparams.mom2_source, hparams.mom2_max_tokens).mom2
    value = ValueResult(delta=delta, value_init=None, losses=losses)
    return rome_result(mt, request, hparams, prefixes, keys, value, second_moment)


def success(mt, request, result) -> dict:
    """P(new) and P(true) on the prompt after the edit, undone afterwards."""
    with EditHandle(mt, request, "rome", None, result):
        new = romelib.target_probability(mt, request.filled_prompt, request.target_new).probability
        true = romelib.target_probability(mt, request.filled_prompt, request.target_true).probability
    return {"p_new": new, "p_true": true, "success": new > true}


def load_cases(count: int) -> list[EditRequest]:
    """The last ``count`` records of the shared CounterFact sample (never tuned on), or fallbacks."""
    path = shared_data_dir() / "counterfact" / "counterfact_500.json"
    if not path.is_file():
        return FALLBACK_CASES[:count]
    records = json.loads(path.read_text())
    return [as_request(r["requested_rewrite"]) for r in records[-count:]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    mt = romelib.load_model()
    hparams = resolve_hparams(mt, None)
    key_statistics(mt, hparams.layer, hparams.mom2_source, hparams.mom2_max_tokens)  # cached
    context_prefixes(mt, hparams.context_lengths, hparams.contexts_per_length)
    romelib.predict(mt, "Warm-up: the capital of France is")
    rows = []
    for request in load_cases(args.cases):
        timings, cpu, results = {}, {}, {}
        for label, apply in (("romelib", apply_rome), ("straightforward", straightforward_apply_rome)):
            start, start_cpu = time.perf_counter(), time.process_time()
            results[label] = apply(mt, request, hparams)
            timings[label] = time.perf_counter() - start
            cpu[label] = time.process_time() - start_cpu      # fairer on a busy machine
        checks = {label: success(mt, request, result) for label, result in results.items()}
        rows.append((request, timings, checks, cpu))
        print(f"{request.filled_prompt!r} -> {request.target_new!r}: romelib "
              f"{timings['romelib']:.1f} s wall / {cpu['romelib']:.1f} s CPU (P(new) "
              f"{checks['romelib']['p_new']:.3f}, success {checks['romelib']['success']}), "
              f"straightforward {timings['straightforward']:.1f} s wall / "
              f"{cpu['straightforward']:.1f} s CPU (P(new) {checks['straightforward']['p_new']:.3f}, "
              f"success {checks['straightforward']['success']}), ratio wall "
              f"{timings['straightforward'] / timings['romelib']:.2f}x, CPU "
              f"{cpu['straightforward'] / cpu['romelib']:.2f}x", flush=True)
    fast, slow = (sum(t[label] for _, t, _, _ in rows) for label in ("romelib", "straightforward"))
    fast_cpu, slow_cpu = (sum(c[label] for *_, c in rows) for label in ("romelib", "straightforward"))
    print(f"\n{len(rows)} edits, layer {hparams.layer}, {torch.get_num_threads()} threads: "
          f"romelib {fast / len(rows):.1f} s wall ({fast_cpu / len(rows):.1f} s CPU) per edit, "
          f"straightforward {slow / len(rows):.1f} s wall ({slow_cpu / len(rows):.1f} s CPU) per "
          f"edit, speed-up {slow / fast:.2f}x wall, {slow_cpu / fast_cpu:.2f}x CPU; success romelib "
          f"{sum(c['romelib']['success'] for _, _, c, _ in rows)}/{len(rows)}, straightforward "
          f"{sum(c['straightforward']['success'] for _, _, c, _ in rows)}/{len(rows)}")


if __name__ == "__main__":
    main()
