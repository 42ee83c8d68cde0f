"""Bring saved results up to the current layout and settings names, in place and idempotently.

Usage::

    python -m romelib.experiments.migrate            # prints what it changed (nothing twice)

Each step rewrites files atomically and only where they still have the old form:

* **kl_token** (2026-12): ROME's KL term now reads the KL prompt at its fact token, as the
  authors' code does (``kl_token="fact"``).  Results made before then read it at the
  prompt's last token; their settings are labelled ``"kl_token": "last"`` and
  ``"early_stop_nll": null`` so that they are never mixed with, nor taken for, results of
  the new default.  In Table 4 those ROME rows become the method ``rome-kl-last`` (the
  old ``rome-identity`` rows, a variant not worth keeping twice, are removed and
  recomputed).
* **unembed_dtype** (2026-12-03): the optimisation of v* may run the unembedding's product in
  bfloat16 (``unembed_dtype="auto"``, the new default, on hardware with fast bfloat16).
  Every saved ROME or MEMIT setting made before then computed it in float32; it is labelled
  ``"unembed_dtype": "model"`` so that a rerun with the new default refuses to mix with it.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..paths import results_dir
from ..results import read_json, read_jsonl, write_json, write_text

OLD_ROME = {"kl_token": "last", "early_stop_nll": None}


def _label_rome(hparams: dict) -> dict:
    return {**hparams, **{k: v for k, v in OLD_ROME.items() if k not in hparams}}


def migrate_sweep(folder: Path) -> list[str]:
    """Label the edit-layer sweep's ROME rows made before ``kl_token`` existed."""
    done = []
    for path in sorted(folder.glob("results_*.jsonl")):
        rows = read_jsonl(path)
        changed = [r for r in rows if r["layer"] >= 0 and "kl_token" not in r.get("settings", {})]
        for row in changed:
            row["settings"] = {**row.get("settings", {}), **OLD_ROME}
        if changed:
            write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
            done.append(f"{path}: {len(changed)} rows labelled kl_token 'last'")
    return done


def migrate_table4(folder: Path) -> list[str]:
    """Turn the old ROME rows into ``rome-kl-last``; drop the old ``rome-identity`` rows."""
    settings_path, done = folder / "settings.json", []
    settings = read_json(settings_path, {})
    rome = settings.get("rome")
    if not rome or "kl_token" in rome[1]:
        return done
    settings["rome-kl-last"] = [rome[0], _label_rome(rome[1])]
    del settings["rome"]
    old_rows = folder / "rome.jsonl"
    if old_rows.exists():
        old_rows.rename(folder / "rome-kl-last.jsonl")
        done.append(f"{old_rows} -> rome-kl-last.jsonl")
    if "rome-identity" in settings and "kl_token" not in settings["rome-identity"][1]:
        del settings["rome-identity"]
        identity = folder / "rome-identity.jsonl"
        if identity.exists():
            identity.unlink()
            done.append(f"{identity} removed (recomputed with the new default)")
    write_json(settings_path, settings)
    return done + [f"{settings_path}: ROME settings labelled kl_token 'last'"]


def migrate_where_to_edit(folder: Path) -> list[str]:
    """Label the where-to-edit sweep's ROME settings."""
    settings_path = folder / "settings.json"
    settings = read_json(settings_path, {})
    if "rome" not in settings or "kl_token" in settings["rome"]:
        return []
    settings["rome"] = _label_rome(settings["rome"])
    write_json(settings_path, settings)
    return [f"{settings_path}: ROME settings labelled kl_token 'last'"]


def _label_unembed_dtype(value) -> int:
    """Add ``"unembed_dtype": "model"`` to every v*-optimising setting (a dict with
    ``v_num_grad_steps``) inside ``value`` that lacks it; returns how many were labelled."""
    if isinstance(value, list):
        return sum(_label_unembed_dtype(item) for item in value)
    if not isinstance(value, dict):
        return 0
    count = sum(_label_unembed_dtype(item) for item in value.values())
    if "v_num_grad_steps" in value and "unembed_dtype" not in value:
        value["unembed_dtype"] = "model"
        count += 1
    return count


def migrate_unembed_dtype(results: Path, sweep: Path) -> list[str]:
    """Label the settings of every saved ROME/MEMIT run, and the sweep's ROME rows, as made
    with the unembedding in the model's own precision (float32)."""
    done = []
    for path in sorted(results.rglob("settings.json")):
        settings = read_json(path, {})
        if count := _label_unembed_dtype(settings):
            write_json(path, settings)
            done.append(f"{path}: {count} settings labelled unembed_dtype 'model'")
    for path in sorted(sweep.glob("results_*.jsonl")):
        rows = read_jsonl(path)
        changed = [r for r in rows if r["layer"] >= 0 and "unembed_dtype" not in r.get("settings", {})]
        for row in changed:
            row["settings"] = {**row.get("settings", {}), "unembed_dtype": "model"}
        if changed:
            write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
            done.append(f"{path}: {len(changed)} rows labelled unembed_dtype 'model'")
    return done


def migrate_all() -> list[str]:
    """Usage: ``migrate_all()`` -> a line per change (empty when everything is current)."""
    return (migrate_sweep(results_dir("edit_layer_sweep"))
            + migrate_table4(results_dir("results", "table4_counterfact"))
            + migrate_where_to_edit(results_dir("results", "where_to_edit"))
            + migrate_unembed_dtype(results_dir("results"), results_dir("edit_layer_sweep")))


def main(argv=None) -> None:
    """``python -m romelib.experiments.migrate``."""
    argparse.ArgumentParser(description="Bring saved results up to the current layout, in place "
                                        "and idempotently.").parse_args(argv)
    changes = migrate_all()
    print("\n".join(changes) if changes else "saved results are current")


if __name__ == "__main__":
    main()
