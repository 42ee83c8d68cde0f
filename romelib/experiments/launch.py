"""What every runner shares: its command line, its model, and its share of the work.

Usage (inside a runner)::

    parser = runner_parser("Table 4 on CounterFact")
    args = parser.parse_args(argv)
    worker = Worker.from_environment(args.device)        # rank and world size, if launched
    mt = worker.load_model(args.model, args.threads)
    for record in worker.share(records): ...             # records[rank::world_size]

Runs scale out with an existing launcher, never one of ours::

    torchrun --nproc_per_node 2 -m romelib.experiments.table4 --n 100
    accelerate launch --num_processes 4 -m romelib.experiments.averages --device cuda

Both launchers set ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; each process takes every
``WORLD_SIZE``-th unit of work starting at its ``RANK`` and appends its results to the
same resumable folder (``romelib.results`` writes whole lines under a lock).  No process
waits for another: each writes the summary of what is saved when it finishes (atomically),
so the last one to finish leaves the complete summary; rerunning the command resumes
whatever is missing.  ``--device cuda`` puts process ``LOCAL_RANK`` on GPU ``LOCAL_RANK``.
"""
from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..core.models import default_device, load_model

log = logging.getLogger(__name__)


def runner_parser(description: str) -> argparse.ArgumentParser:
    """Usage: ``parser = runner_parser("...")``: an argument parser with ``--model``, ``--device``, ``--threads``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", default=None,
                        help="model alias, Hugging Face id or folder (default: the embedded Gemma 3 270M)")
    parser.add_argument("--device", default="cpu",
                        help="cpu (default), cuda (one GPU per process), or auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    return parser


def command_line(module: str, argv: Sequence[str] | None, drop: Sequence[str] = ()) -> str:
    """Usage: ``command_line("romelib.experiments.table4", argv)`` -> the command that reruns this run."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    return " ".join(["python -m", module, *(shlex.quote(a) for a in arguments if a not in drop)])


@dataclass(frozen=True)
class Worker:
    """This process's place in a launched run: ``rank`` of ``world_size``, and its device.

    Usage: ``worker = Worker.from_environment("cuda"); worker.share(items)``.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @classmethod
    def from_environment(cls, device: str = "cpu") -> Worker:
        """Read ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` as set by torchrun or accelerate."""
        try:
            rank = int(os.environ.get("RANK", 0))
            world_size = int(os.environ.get("WORLD_SIZE", 1))
            local_rank = int(os.environ.get("LOCAL_RANK", rank))
        except ValueError as error:
            raise ValueError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers ({error}).") from None
        if not 0 <= rank < world_size:
            raise ValueError(f"RANK={rank} must lie in 0..WORLD_SIZE-1 (WORLD_SIZE={world_size}).")
        return cls(rank, world_size, local_rank, resolve_device(device, local_rank))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, items: Sequence) -> list:
        """Usage: ``worker.share(records)`` -> every ``world_size``-th item from ``rank`` on."""
        return list(items)[self.rank::self.world_size]

    def require_one_process(self, what: str) -> None:
        """Refuse to run ``what`` in a launched run of several processes (each would repeat it).

        Usage: ``worker.require_one_process("A batch edit is one computation")``.
        """
        if self.world_size > 1:
            raise SystemExit(f"{what}: run it in one process (this run was launched with "
                             f"{self.world_size}; WORLD_SIZE={self.world_size}).")

    def load_model(self, name: str | None = None, threads: int | None = None):
        """Usage: ``mt = worker.load_model(args.model, args.threads)``: on this process's device."""
        if threads:
            torch.set_num_threads(threads)
        return load_model(name, device=self.device)

    def describe(self) -> str:
        return (f"process {self.rank + 1} of {self.world_size} on {self.device}"
                if self.world_size > 1 else f"one process on {self.device}")


def resolve_device(device: str, local_rank: int = 0) -> str:
    """Usage: ``resolve_device("cuda", 1)`` -> ``"cuda:1"``; ``"auto"`` takes a GPU when present."""
    if device == "auto":
        device = str(default_device())
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: no CUDA GPU is visible to this process; "
                             "use --device cpu.")
        if device == "cuda":
            return f"cuda:{local_rank % torch.cuda.device_count()}"
        return device
    if device not in ("cpu", "mps"):
        raise ValueError(f"--device {device!r}: use cpu, cuda, cuda:N, mps or auto.")
    return device


def setup_logging() -> None:
    """Usage: ``setup_logging()`` at the start of a runner's ``main``: INFO messages, plain."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
