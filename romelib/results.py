"""Resumable results folders: one JSON line per finished unit of work, and the settings.

Usage::

    check_settings(folder, {"model": mt.name, "rome": asdict(hparams)})   # refuse to mix
    append_jsonl(folder / "rome.jsonl", {"case_id": 7, ...})             # after each record
    done = {r["case_id"] for r in read_jsonl(folder / "rome.jsonl")}      # resume

Used by ``romelib.table4`` and ``romelib.where_to_edit``: a stopped run is rerun with the
same command and continues; the saved lines can be summarised at any time.
"""
from __future__ import annotations

import json
from pathlib import Path


def read_jsonl(path: Path) -> list[dict]:
    """Usage: ``read_jsonl(folder / "rome.jsonl")`` -> the records saved so far ([] if none)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def check_settings(folder: Path, settings: dict) -> None:
    """Record the settings of a results folder, or refuse to mix results made with others.

    Usage: ``check_settings(folder, {"rome": asdict(hparams)})``; raises ``ValueError`` when
    ``folder/settings.json`` holds a different value for any of the keys; new keys (a
    method added later) are recorded.
    """
    path = folder / "settings.json"
    settings = json.loads(json.dumps(settings, default=str))
    saved = json.loads(path.read_text()) if path.exists() else {}
    changed = sorted(k for k in set(saved) & set(settings) if saved[k] != settings[k])
    if changed:
        raise ValueError(f"{folder} holds results made with other settings for {changed}; "
                         "delete the folder or choose another --name to start afresh.")
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**saved, **settings}, indent=1) + "\n")


def append_jsonl(path: Path, row: dict) -> None:
    """Usage: ``append_jsonl(folder / "rome.jsonl", row)``: one JSON line, appended (resumable runs)."""
    with open(path, "a") as handle:
        handle.write(json.dumps(row) + "\n")
