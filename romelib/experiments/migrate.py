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


def migrate_all() -> list[str]:
    """Usage: ``migrate_all()`` -> a line per change (empty when everything is current)."""
    return (migrate_sweep(results_dir("edit_layer_sweep"))
            + migrate_table4(results_dir("results", "table4_counterfact"))
            + migrate_where_to_edit(results_dir("results", "where_to_edit")))


def main(argv=None) -> None:
    """``python -m romelib.experiments.migrate``."""
    argparse.ArgumentParser(description="Bring saved results up to the current layout, in place "
                                        "and idempotently.").parse_args(argv)
    changes = migrate_all()
    print("\n".join(changes) if changes else "saved results are current")


if __name__ == "__main__":
    main()
