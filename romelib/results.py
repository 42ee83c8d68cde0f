"""Resumable results: one JSON line per finished unit of work, written so that runs survive.

Usage::

    check_settings(folder, {"model": mt.name, "rome": asdict(hparams)})   # refuse to mix
    rows = read_jsonl(folder / "rome.jsonl", key="case_id", repair=True)  # resume
    append_jsonl(folder / "rome.jsonl", {"case_id": 7, ...})             # after each record
    write_json(folder / "summary.json", summary)                          # atomically

What a crash, a full disk or two processes sharing a folder can do, and what happens:

* **A torn last line** (the process died mid-write): reading skips it with a warning;
  ``repair=True`` (a run about to append) also cuts it off the file, under the lock.
  A damaged line anywhere else is an error naming the file and the line.
* **A record saved twice** (two processes finished it at once): with ``key``, the first
  line of each key is kept, so it counts once.
* **Settings and summaries** are written to a temporary file in the same folder and renamed
  over the old one, so a reader never sees half a file.
* **Several processes** (``torchrun``, ``accelerate launch``) append to the same files:
  every append takes an exclusive ``flock`` and writes one whole line.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Callable, Hashable
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

Key = str | tuple[str, ...] | Callable[[dict], Hashable] | None


@contextmanager
def locked(path: Path):
    """Usage: ``with locked(folder / "rome.jsonl"): ...``: an exclusive lock on ``path.lock``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _key_function(key: Key) -> Callable[[dict], Hashable] | None:
    if key is None or callable(key):
        return key
    if isinstance(key, str):
        return lambda row: row.get(key)
    return lambda row: tuple(json.dumps(row.get(k), sort_keys=True) for k in key)


def _parse(path: Path, text: str) -> tuple[list[dict], int]:
    """Rows of a JSONL text and the byte length of its complete part (a torn tail excluded)."""
    lines = text.split("\n")
    tail = lines.pop()                         # "" when the text ends with a newline
    rows, good = [], 0
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                if number == len(lines) and not tail:   # a last line cut short, newline kept
                    return rows, good
                raise ValueError(f"{path}, line {number}, is damaged ({error}); only a torn "
                                 "last line can be repaired. Fix or delete that line.") from None
        good += len(line.encode()) + 1
    if tail.strip():
        try:                                   # a complete record that only lacks its newline
            rows.append(json.loads(tail))
            good += len(tail.encode())
        except json.JSONDecodeError:
            pass
    return rows, good


def read_jsonl(path: str | Path, key: Key = None, repair: bool = False) -> list[dict]:
    """The rows saved in ``path`` ([] if it does not exist), each key once, a torn last line left out.

    Usage: ``read_jsonl(folder / "rome.jsonl", key="case_id")``; ``key`` is a field, a
    tuple of fields or a function; ``repair=True`` also cuts a torn last line off the file.
    """
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    rows, good = _parse(path, data.decode("utf-8", errors="replace"))
    if good < len(data):
        log.warning("%s: ignoring a torn last line (%d bytes) left by an interrupted run%s.",
                    path, len(data) - good, "; cutting it off" if repair else "")
        if repair:
            with locked(path):
                _repair(path)
    function = _key_function(key)
    if function is None:
        return rows
    first: dict[Hashable, dict] = {}
    for row in rows:
        first.setdefault(function(row), row)
    return list(first.values())


def _repair(path: Path) -> None:
    """Cut a torn tail off ``path`` (call with the lock held; the tail is re-checked under it)."""
    data = path.read_bytes()
    _, good = _parse(path, data.decode("utf-8", errors="replace"))
    if good < len(data):
        with open(path, "r+b") as handle:
            handle.truncate(good)
    if good and not path.read_bytes().endswith(b"\n"):
        with open(path, "ab") as handle:           # a last record without its newline
            handle.write(b"\n")


def append_jsonl(path: str | Path, row: dict) -> None:
    """Append one row as one whole line, under an exclusive lock, flushed to disk.

    Usage: ``append_jsonl(folder / "rome.jsonl", {"case_id": 7, "metrics": {...}})``.
    """
    path = Path(path)
    line = (json.dumps(row) + "\n").encode()
    with locked(path):
        if path.exists() and path.stat().st_size:
            _repair(path)
        with open(path, "ab") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())


def write_text(path: str | Path, text: str) -> None:
    """Usage: ``write_text(folder / "table.md", text)``: a temporary file, then a rename."""
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path: str | Path, data: bytes) -> None:
    """Usage: ``write_bytes(folder / "wiki.test.raw", data)``: a temporary file in the same folder, then a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile("wb", dir=path.parent, prefix=f".{path.name}.",
                                         suffix=".tmp", delete=False)
    try:
        with handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(handle.name, 0o644)
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, value, indent: int = 1) -> None:
    """Usage: ``write_json(folder / "summary.json", summary)``: atomic, like :func:`write_text`."""
    write_text(path, json.dumps(value, indent=indent, default=str) + "\n")


def read_json(path: str | Path, default=None):
    """Usage: ``read_json(folder / "settings.json", {})``: the value, or ``default`` when absent."""
    path = Path(path)
    if not path.exists():
        if default is None:
            raise FileNotFoundError(f"{path} does not exist.")
        return default
    return json.loads(path.read_text(encoding="utf-8"))


def check_settings(folder: str | Path, settings: dict, name: str = "settings.json") -> dict:
    """Record a results folder's settings, or refuse to mix results made with others.

    Usage: ``check_settings(folder, {"rome": asdict(hparams)})``; raises ``ValueError``
    naming the keys whose saved value differs; new keys (a method added later) are added.
    Returns the merged settings.
    """
    folder = Path(folder)
    path = folder / name
    settings = json.loads(json.dumps(settings, default=str))
    with locked(path):
        saved = read_json(path, {})
        changed = sorted(k for k in set(saved) & set(settings) if saved[k] != settings[k])
        if changed:
            raise ValueError(f"{folder} holds results made with other settings for {changed}; "
                             "delete the folder or choose another name to start afresh.")
        merged = {**saved, **settings}
        if merged != saved:
            write_json(path, merged)
    return merged
