"""The fast causal-tracing engine: exactly the reference numbers, a fraction of the work.

Usage::

    scores, low = fast_scores(mt, ids, corrupted_embeddings, subject_range, [target_id],
                              kind="hidden", window=10, sever=None, positions=range(10))

(:func:`romelib.trace` calls it; use that.)  Where the speed comes from, none of it an
approximation:

1. Positions before the subject are identical in the clean and corrupted runs, so
   restoring them changes nothing: their score is the corrupted score.
2. Logits only at the last position, all unembeddings batched at the end, the vocabulary
   taken in cache-sized slices (:mod:`romelib.core.vocab_softmax`).
3. One run per position: a restoration of layer ``l`` joins the batch at the first layer
   it can change (``l + 1`` for a block output, the window's first layer for MLP or
   attention), so no layer below that is recomputed and the batch is large.
4. Only positions ``>= p`` are fed; the attention reads the corrupted run's keys and
   values of earlier positions from a prefilled cache (:mod:`romelib.core.partial_forward`).
5. Two smaller ones: windows clipped at layer 0 (``[0, 5)``, ``[0, 6)``, ...) are
   identical until the shorter one ends, so the longer one copies its rows there; and a
   block output restored in the last layer at an earlier position never reaches the
   prediction (its score is the corrupted score).
6. An MLP window skips its first block: there only the restored position changes, and the
   MLP term is added to the residual, so that block's output is the corrupted run's with
   the MLP term swapped (the same numbers to float32 rounding).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from ..core.hooks import hooks
from ..core.partial_forward import (
    BlockCalls,
    cache_keywords,
    call_block,
    capture_block_calls,
    keys_values,
    prefix_cache,
    returned_cache,
)
from ..core.vocab_softmax import token_log_probs
from .reference import answer_log_probs, window_layers


@dataclass
class Runs:
    """States of the clean run (batch 1) and of the corrupted run (one row per sample)."""

    clean_blocks: list[torch.Tensor]        # block outputs, each (1, tokens, d)
    clean_parts: dict[str, torch.Tensor]    # "mlp.3" -> (1, tokens, d)
    inputs: list[torch.Tensor]              # corrupted block inputs x_0..x_L, (samples, tokens, d)
    parts: dict[str, torch.Tensor]          # corrupted component outputs (for severing)
    kv: list                                # corrupted keys/values per layer
    low_probs: torch.Tensor                 # (samples,) corrupted P(target)
    calls: BlockCalls


@dataclass
class Job:
    """One restoration: the batch rows it owns join the run at layer ``start``.

    A job either brings its ``initial`` states (samples, tokens - position, d), or, when it
    matches an earlier job up to layer ``start`` (windows clipped at layer 0 share their
    first layers), copies that ``parent`` job's rows there.
    """

    position: int
    layer: int
    start: int
    initial: torch.Tensor | None                    # (samples, tokens - position, d)
    patches: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (1|samples, d)
    parent: int | None = None                       # layer of the job whose rows it copies


@torch.no_grad()
def record_runs(mt, ids, embeddings, target_ids, components) -> Runs:
    """Run the clean prompt and the corrupted batch once, keeping what restorations need.

    Usage: ``runs = record_runs(mt, ids, corrupted, [target_id], ["mlp"])``; ``ids`` end with
    all the answer's tokens but the last, so that the last ``len(target_ids)`` positions
    predict it.
    """
    num_layers = mt.num_layers
    blocks = [f"block.{layer}" for layer in range(num_layers)]
    parts = [f"{c}.{layer}" for c in components for layer in range(num_layers)]
    with hooks(mt, blocks + parts, clone=True) as clean:
        calls = capture_block_calls(mt, ids)       # the clean forward, recording block calls

    def corrupt(output, name):
        return embeddings if name == "embed" else output
    with hooks(mt, ["embed", *blocks, *parts], edit_output=corrupt, retain_input=True,
               clone=True) as acts:
        output = mt.model(input_ids=ids.repeat(embeddings.shape[0], 1),
                          logits_to_keep=len(target_ids), **cache_keywords(mt))
    low_probs = answer_log_probs(mt, output.logits, target_ids).exp()
    return Runs(clean_blocks=[clean[name].output for name in blocks],
                clean_parts={name: clean[name].output for name in parts},
                inputs=[acts[name].input for name in blocks] + [acts[blocks[-1]].output],
                parts={name: acts[name].output for name in parts},
                kv=keys_values(returned_cache(output), num_layers), low_probs=low_probs,
                calls=calls)


def make_jobs(runs: Runs, position: int, kind: str, window: int, sever: str | None) -> list[Job]:
    """The restorations of one position, one per layer, sorted by the layer they join at.

    Usage: ``make_jobs(runs, 3, "mlp", 10, None)``.
    """
    num_layers = len(runs.clean_blocks)
    jobs, previous = [], None
    for layer in range(num_layers):
        if kind == "hidden":
            initial = runs.inputs[layer + 1][:, position:].clone()
            initial[:, 0] = runs.clean_blocks[layer][0, position]
            patches = {f"{sever}.{m}": runs.parts[f"{sever}.{m}"][:, position]
                       for m in range(layer + 1, num_layers)} if sever else {}
            jobs.append(Job(position, layer, layer + 1, initial, patches))
            continue
        layers = window_layers(layer, window, num_layers)
        patches = {f"{kind}.{m}": runs.clean_parts[f"{kind}.{m}"][:, position] for m in layers}
        if previous is not None and previous.start == layers.start:
            # Same first layer as the previous window, which patches a prefix of these
            # layers: identical rows until that window ends, so fork from it there.
            jobs.append(Job(position, layer, previous.stop, None, patches, parent=layer - 1))
        elif kind == "mlp":
            jobs.append(_mlp_job_after_first_layer(runs, position, layer, layers, patches))
        else:
            jobs.append(Job(position, layer, layers.start,
                            runs.inputs[layers.start][:, position:], patches))
        previous = layers
    return sorted(jobs, key=lambda job: job.start)


def _mlp_job_after_first_layer(runs: Runs, position: int, layer: int, layers: range,
                               patches: dict) -> Job:
    """A window of MLP restorations that skips the window's first block (point 6 above).

    In that block nothing but position ``position`` changes (the attention there reads the
    block's input, which is the corrupted run's), and the MLP term enters the residual
    additively, so the block's output is the corrupted output with the MLP term swapped.
    """
    first = layers.start
    initial = runs.inputs[first + 1][:, position:].clone()        # corrupted outputs of block `first`
    name = f"mlp.{first}"
    initial[:, 0] += runs.clean_parts[name][0, position] - runs.parts[name][:, position]
    rest = {n: value for n, value in patches.items() if n != name}
    return Job(position, layer, first + 1, initial, rest)


@torch.no_grad()
def run_jobs(mt, runs: Runs, jobs: list[Job], position: int, use_prefix: bool = True,
             scored: int = 1) -> torch.Tensor:
    """Run the restorations of one position together; the last ``scored`` positions' final
    states, (jobs * samples, scored, d).

    Usage: ``final = run_jobs(mt, runs, make_jobs(runs, 3, "hidden", 10, None), 3)``.
    With ``use_prefix=False`` every position is fed (no key/value cache), for comparison.
    """
    num_layers = len(runs.clean_blocks)
    samples = runs.inputs[0].shape[0]
    start = jobs[0].start
    feed_from = position if use_prefix and runs.calls.supports_prefix else 0
    if feed_from != position:   # feed earlier positions too: their corrupted states
        jobs = [_extend(job, runs, feed_from) for job in jobs]
    repeats = {s: sum(job.start <= s for job in jobs) for s in range(start, num_layers)}
    cache = prefix_cache(runs.kv, feed_from, repeats)
    blocks = mt.module("blocks")
    rows = {job.layer: index * samples for index, job in enumerate(jobs)}  # first row
    hidden = None
    for layer in range(start, num_layers + 1):
        for job in jobs:   # in order, so that a parent's rows exist before its children copy them
            if job.start == layer:
                rows_in = (job.initial if job.parent is None
                           else hidden[rows[job.parent]:rows[job.parent] + samples])
                hidden = rows_in if hidden is None else torch.cat([hidden, rows_in])
        if layer == num_layers:
            break
        edit = _patcher(jobs, layer, samples, position - feed_from)
        arguments = runs.calls.arguments(layer, feed_from, cache)
        if edit is None:
            hidden = call_block(blocks[layer], hidden, arguments)
        else:
            with hooks(mt, edit.names, edit_output=edit, retain_output=False):
                hidden = call_block(blocks[layer], hidden, arguments)
    return hidden[:, -scored:]


def _extend(job: Job, runs: Runs, feed_from: int) -> Job:
    if job.initial is None:
        return job
    earlier = runs.inputs[job.start][:, feed_from:job.position]
    return Job(job.position, job.layer, job.start, torch.cat([earlier, job.initial], 1),
               job.patches, job.parent)


class _Patcher:
    """Output edit that sets, for each job's rows, the restored position to given values."""

    def __init__(self, table: dict[str, tuple[torch.Tensor, torch.Tensor]], offset: int):
        self.table, self.offset, self.names = table, offset, list(table)

    def __call__(self, output, name):
        rows, values = self.table[name]
        output = output.clone()
        output[rows.to(output.device), self.offset] = values
        return output


def _patcher(jobs: list[Job], layer: int, samples: int, offset: int) -> _Patcher | None:
    table: dict[str, list] = {}
    for index, job in enumerate(jobs):
        if job.start > layer:
            continue
        for name, value in job.patches.items():
            if name.endswith(f".{layer}"):
                rows = torch.arange(index * samples, (index + 1) * samples)
                table.setdefault(name, []).append((rows, value.expand(samples, -1)))
    if not table:
        return None
    return _Patcher({name: (torch.cat([r for r, _ in parts]), torch.cat([v for _, v in parts]))
                     for name, parts in table.items()}, offset)


@torch.no_grad()
def target_probs(mt, final: torch.Tensor, target_ids: list[int]) -> torch.Tensor:
    """P(answer) from the final states of the positions that predict it, (rows, k, d) -> (rows,).

    Usage: ``target_probs(mt, final_states, [target_id])``; the vocabulary is taken in
    slices (:mod:`romelib.core.vocab_softmax`), and the answer's tokens multiply.
    """
    rows, k, d = final.shape
    ids = torch.tensor(target_ids, device=final.device).repeat(rows)
    normed = mt.module("final_norm")(final.reshape(rows * k, d))
    return token_log_probs(mt, normed, ids).view(rows, k).sum(-1).exp()


def fast_scores(mt, ids, embeddings, subject_range, target_ids, kind, window, sever, positions,
                use_prefix: bool = True, progress: bool = False):
    """The fast engine behind :func:`romelib.trace`; returns ``(scores, low_score)``.

    Usage: ``scores, low = fast_scores(mt, ids, corrupted, (2, 4), [target_id], "hidden",
    10, None, range(10))``; ``scores`` has a row per position of ``ids`` but the answer's
    appended tokens (``len(target_ids) - 1`` of them).
    """
    components = [kind] if kind != "hidden" else ([sever] if sever else [])
    runs = record_runs(mt, ids, embeddings, target_ids, components)
    low = float(runs.low_probs.mean())
    scored = len(target_ids)
    scores = torch.full((ids.shape[1] - scored + 1, mt.num_layers), math.nan)
    samples = embeddings.shape[0]
    finals, owners = [], []
    for position in tqdm(positions, desc="positions", disable=not progress, leave=False):
        if position < subject_range[0]:       # identical in clean and corrupted runs
            scores[position] = low
            continue
        jobs = make_jobs(runs, position, kind, window, sever)
        if kind == "hidden" and position < ids.shape[1] - scored:
            # the last block's output at a position that predicts nothing never reaches it
            scores[position, -1] = low
            jobs = [job for job in jobs if job.layer < mt.num_layers - 1]
        finals.append(run_jobs(mt, runs, jobs, position, use_prefix, scored))
        owners += [(job.position, job.layer) for job in jobs]
    if owners:
        probs = target_probs(mt, torch.cat(finals), target_ids).view(len(owners), samples)
        for (position, layer), value in zip(owners, probs.mean(dim=1).tolist()):
            scores[position, layer] = value
    return scores, low
