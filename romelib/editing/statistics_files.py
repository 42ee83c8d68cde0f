"""Key statistics files: the format of a saved C and the checks before one is trusted.

Usage::

    path = statistics_paths(mt, 5, "wikitext-2", 100_000)[0]     # shipped folder, then the cache
    stats = load_statistics(path, expected_metadata(mt, 5, "wikitext-2", 100_000), weights_probe(mt, 5))

A file is safetensors with one matrix ``mom2`` and a JSON header (format, model, layer,
component, source, token cap, token count, a probe of the weights the keys depend on, and
the SHA-256 of the matrix).  :func:`load_statistics` raises ``ValueError`` for a file whose
header does not match, whose weights probe differs from the model's, or whose matrix does
not hash to its header; :mod:`romelib.editing.key_statistics` decides what to do then.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..paths import cache_dir, project_data

STATS_FORMAT = 1


@dataclass
class KeyStatistics:
    """``mom2`` = E[k k^T] over ``count`` text tokens, keys taken at the input of mlp_proj."""

    mom2: torch.Tensor      # (d_mlp, d_mlp), float32
    count: int
    metadata: dict

    def __repr__(self) -> str:
        return (f"KeyStatistics(layer={self.metadata.get('layer')}, {self.count:,} tokens of "
                f"{self.metadata.get('source')!r}, d={self.mom2.shape[0]})")



def weights_probe(mt, layer: int) -> list[float]:
    """Norms of every weight the keys at ``layer`` depend on (embedding, blocks 0..layer).

    Usage: ``weights_probe(mt, 6)``; compared with a tolerance, so that the same model
    dequantised on another machine still matches while a different model does not.
    The rewritten matrix itself is left out: edits at this layer do not change its keys.
    """
    rewritten = mt.module_name("mlp_proj", layer) + ".weight"
    blocks = [f"{mt.arch.blocks}.{i}." for i in range(layer + 1)]
    probe = [float(mt.module("embed").weight.float().norm())]
    for name, param in mt.model.named_parameters():
        if name != rewritten and any(name.startswith(b) for b in blocks):
            probe.append(float(param.float().norm()))
    return probe


def _file_name(mt, layer: int, source: str, max_tokens: int | None) -> str:
    safe_source = re.sub(r"[^A-Za-z0-9_.-]+", "_", source)
    return f"mlp_proj_in.layer{layer:02d}.{safe_source}.{max_tokens or 'all'}.safetensors"


def statistics_paths(mt, layer: int, source: str, max_tokens: int | None) -> list[Path]:
    """Where statistics are looked for: the shipped data folder, then the user cache.

    Usage: ``statistics_paths(mt, 6, "wikitext-2", None)``.
    """
    name = _file_name(mt, layer, source, max_tokens)
    model = Path(mt.name).name
    return [project_data("stats", model, name), cache_dir() / "stats" / model / name]


def expected_metadata(mt, layer: int, source: str, max_tokens: int | None) -> dict:
    """The header a statistics file for this model, layer and source must carry."""
    return {"format": STATS_FORMAT, "model": Path(mt.name).name, "layer": layer,
            "component": "mlp_proj input", "source": source, "max_tokens": max_tokens,
            "d_mlp": mt.mlp_proj_weight(layer).shape[1]}


def save_statistics(path: Path, stats: KeyStatistics) -> None:
    """Usage: ``save_statistics(path, stats)``; written to a temporary name, then renamed."""
    mom2 = stats.mom2.detach().to(torch.float32).cpu().contiguous()
    metadata = {**stats.metadata, "count": stats.count,
                "sha256": hashlib.sha256(mom2.numpy().tobytes()).hexdigest()}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    save_file({"mom2": mom2}, str(partial), metadata={"romelib": json.dumps(metadata)})
    partial.chmod(0o644)
    partial.replace(path)


def load_statistics(path: Path, expected: dict, probe: list[float] | None = None) -> KeyStatistics:
    """Load a statistics file, raising ``ValueError`` if it is stale or damaged.

    Usage: ``load_statistics(path, expected_metadata(mt, 6, "wikitext-2", None), weights_probe(mt, 6))``.
    """
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = json.loads(handle.metadata()["romelib"])
            mom2 = handle.get_tensor("mom2")
    except Exception as error:  # safetensors raises several types for a damaged file
        raise ValueError(f"{path} cannot be read ({error})") from None
    for key, value in expected.items():
        if metadata.get(key) != value:
            raise ValueError(f"{path}: {key} is {metadata.get(key)!r}, expected {value!r}")
    if hashlib.sha256(mom2.numpy().tobytes()).hexdigest() != metadata.get("sha256"):
        raise ValueError(f"{path}: the matrix does not match its checksum (damaged file)")
    d = expected["d_mlp"]
    if mom2.shape != (d, d) or not int(metadata.get("count", 0)) > 0:
        raise ValueError(f"{path}: shape {tuple(mom2.shape)} or token count is wrong")
    if probe is not None:
        saved = metadata.get("weights_probe", [])
        close = len(saved) == len(probe) and all(
            abs(a - b) <= 1e-4 * max(abs(a), abs(b), 1e-8) for a, b in zip(saved, probe))
        if not close:
            raise ValueError(f"{path}: computed for different weights than this model's")
    return KeyStatistics(mom2=mom2, count=int(metadata["count"]), metadata=metadata)
