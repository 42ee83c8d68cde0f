"""CounterFact records: loading them and checking their schema.

Usage::

    records = romelib.load_counterfact()              # shared CounterFact sample, else data/
    records = romelib.load_counterfact("project")     # the project's own cases
    romelib.validate_record(records[0])               # ValueError saying what is wrong

A record (Meng et al. 2022, Appendix D) holds one requested rewrite and the prompts
that test it::

    {"case_id": 0,
     "requested_rewrite": {"prompt": "{} is located in", "subject": "Angola",
                           "relation_id": "P30", "target_new": {"str": "Antarctica"},
                           "target_true": {"str": "Africa"}},
     "paraphrase_prompts":   [...],   # the same fact said differently      -> PS
     "neighborhood_prompts": [...],   # other subjects with target_true     -> NS
     "attribute_prompts":    [...],   # other subjects with target_new      -> reference text
     "generation_prompts":   [...]}   # open prompts about the subject      -> GE, RS

The reference sample (500 records of the 21,919) lives in ``../shared/data/counterfact``
(or ``$ROMELIB_SHARED_DATA/counterfact``) and is never copied here; the project's own
CounterFact-style cases are ``data/counterfact_cases.json``.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from .hparams import DATA_DIR
from .data import shared_data_dir

PROJECT_CASES = DATA_DIR / "counterfact_cases.json"
SHARED_FILE = Path("counterfact") / "counterfact_500.json"
PROMPT_LISTS = ("paraphrase_prompts", "neighborhood_prompts", "attribute_prompts",
                "generation_prompts")


def counterfact_path(source: str | Path = "auto") -> Path:
    """Where the records of ``source`` live: ``"shared"``, ``"project"``, ``"auto"`` or a file.

    Usage: ``counterfact_path("auto")`` -> the shared sample when present, else data/.
    """
    shared = shared_data_dir() / SHARED_FILE
    if source == "auto":
        return shared if shared.exists() else PROJECT_CASES
    if source in ("shared", "counterfact"):
        if not shared.exists():
            raise FileNotFoundError(
                f"The CounterFact sample {shared} is absent. Set ROMELIB_SHARED_DATA to the "
                "folder holding counterfact/counterfact_500.json, or use source='project' "
                "for the project's own cases in data/counterfact_cases.json.")
        return shared
    if source == "project":
        if not PROJECT_CASES.exists():
            raise FileNotFoundError(f"The project's cases {PROJECT_CASES} are missing; restore "
                                    "them from git, or use source='shared'.")
        return PROJECT_CASES
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"No CounterFact file at {path}; pass 'shared', 'project', "
                                "'auto' or the path of a JSON list of records.")
    return path


def load_counterfact(source: str | Path = "auto", n: int | None = None,
                     validate: bool = True) -> list[dict]:
    """Load CounterFact records, checking every one of them.

    Usage: ``records = load_counterfact("shared", n=100)`` (the first ``n`` records).
    """
    path = counterfact_path(source)
    try:
        records = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}).") from None
    if not isinstance(records, list):
        raise ValueError(f"{path} should hold a JSON list of records, not a {type(records).__name__}.")
    if validate:
        for index, record in enumerate(records):
            validate_record(record, where=f"{path.name}[{index}]")
        ids = [r["case_id"] for r in records]
        if len(set(ids)) != len(ids):
            raise ValueError(f"{path}: case_id values are not unique.")
    return records[:n] if n is not None else records


def validate_record(record: dict, where: str = "record") -> dict:
    """Check one record against the CounterFact schema; returns it unchanged.

    Usage: ``validate_record(record)``; raises ``ValueError`` naming the bad field.
    """
    def fail(message):
        raise ValueError(f"{where}: {message}")

    if not isinstance(record, dict):
        fail(f"a record is a dict, not {type(record).__name__}.")
    for key in ("case_id", "requested_rewrite", *PROMPT_LISTS):
        if key not in record:
            fail(f"missing field {key!r}; a CounterFact record has case_id, requested_rewrite, "
                 + ", ".join(PROMPT_LISTS) + ".")
    rewrite = record["requested_rewrite"]
    if not isinstance(rewrite, dict):
        fail("requested_rewrite must be a dict with prompt, subject, target_new, target_true.")
    for key in ("prompt", "subject", "target_new", "target_true"):
        if key not in rewrite:
            fail(f"requested_rewrite lacks {key!r}.")
    if not isinstance(rewrite["prompt"], str) or "{}" not in rewrite["prompt"]:
        fail(f"requested_rewrite.prompt {rewrite['prompt']!r} needs '{{}}' where the subject goes.")
    if not isinstance(rewrite["subject"], str) or not rewrite["subject"].strip():
        fail("requested_rewrite.subject is empty.")
    for key in ("target_new", "target_true"):
        target = rewrite[key]
        text = target.get("str") if isinstance(target, dict) else None
        if not (isinstance(text, str) and text.strip()):
            fail(f"requested_rewrite.{key} must look like {{'str': 'Paris'}}, got {target!r}.")
    if rewrite["target_new"]["str"].strip() == rewrite["target_true"]["str"].strip():
        fail(f"target_new and target_true are both {rewrite['target_new']['str']!r}.")
    for key in PROMPT_LISTS:
        prompts = record[key]
        if not isinstance(prompts, list) or not prompts:
            fail(f"{key} must be a non-empty list of prompt strings.")
        if not all(isinstance(p, str) and p.strip() for p in prompts):
            fail(f"{key} holds an empty or non-string prompt.")
    return record


def rewrite_prompt(record: dict) -> str:
    """Usage: ``rewrite_prompt(record)`` -> ``"Angola is located in"``."""
    rewrite = record["requested_rewrite"]
    return rewrite["prompt"].format(rewrite["subject"])


def targets(record: dict) -> tuple[str, str]:
    """Usage: ``new, true = targets(record)`` -> ``("Antarctica", "Africa")``."""
    rewrite = record["requested_rewrite"]
    return rewrite["target_new"]["str"], rewrite["target_true"]["str"]


def split_records(records: list[dict], n_tune: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Shuffle once with ``seed`` and split into (tuning, held-out) records.

    Usage: ``tune, test = split_records(load_counterfact(), n_tune=20)``: the baselines'
    hyperparameters are chosen on ``tune`` only, the table is computed on ``test``.
    """
    if not 0 <= n_tune <= len(records):
        raise ValueError(f"n_tune={n_tune} must lie between 0 and the {len(records)} records.")
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    shuffled = [records[i] for i in order]
    return shuffled[:n_tune], shuffled[n_tune:]
