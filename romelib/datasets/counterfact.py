"""CounterFact records: loading them and checking their schema.

Usage::

    records = romelib.load_counterfact()              # shared CounterFact sample, else data/
    records = romelib.load_counterfact("project")     # the project's own cases
    romelib.validate_record(records[0])               # ValueError saying what is wrong
    split = load_split("shared")                      # the one tune / held-out split

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
from dataclasses import dataclass
from pathlib import Path

from ..paths import project_data, shared_data_dir

SHARED_FILE = Path("counterfact") / "counterfact_500.json"
PROMPT_LISTS = ("paraphrase_prompts", "neighborhood_prompts", "attribute_prompts",
                "generation_prompts")


def project_cases_path() -> Path:
    """Usage: ``project_cases_path()`` -> ``data/counterfact_cases.json`` (the project's own cases)."""
    return project_data("counterfact_cases.json")


def counterfact_path(source: str | Path = "auto") -> Path:
    """Where the records of ``source`` live: ``"shared"``, ``"project"``, ``"auto"`` or a file.

    Usage: ``counterfact_path("auto")`` -> the shared sample when present, else data/.
    """
    shared = shared_data_dir() / SHARED_FILE
    if source == "auto":
        return shared if shared.exists() else project_cases_path()
    if source in ("shared", "counterfact"):
        if not shared.exists():
            raise FileNotFoundError(
                f"The CounterFact sample {shared} is absent. Set ROMELIB_SHARED_DATA to the "
                "folder holding counterfact/counterfact_500.json, or use source='project' "
                "for the project's own cases in data/counterfact_cases.json.")
        return shared
    if source == "project":
        if not project_cases_path().exists():
            raise FileNotFoundError(f"The project's cases {project_cases_path()} are missing; restore "
                                    "them from git, or use source='shared'.")
        return project_cases_path()
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


def shuffled(records: list[dict], seed: int = 0) -> list[dict]:
    """Usage: ``shuffled(records, 0)``: a copy in one fixed pseudo-random order."""
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    return [records[i] for i in order]


# The one split of the shared CounterFact sample.  Every choice the collection made was
# made on these records: ROME's layer and settings on (some of) the first 50 records of
# the file (romelib.experiments.edit_layer_sweep), FT and FT+L's layer and epsilon on 20
# records drawn with seed 0 (romelib.experiments.baseline_sweep).  Everything else is
# held out, and only held-out records are reported as such.
TUNE_FIRST = 50
TUNE_DRAWN = 20
SPLIT_SEED = 0


@dataclass(frozen=True)
class CounterFactSplit:
    """Records split into ``tune`` (choices may be made on them) and ``held_out`` (never).

    Usage: ``split = counterfact_split(load_counterfact("shared"), "shared")``;
    ``split.held_out[:100]`` are the records Table 4 reports.
    """

    source: str
    tune: list[dict]        # in file order
    held_out: list[dict]    # in the fixed shuffled order of SPLIT_SEED

    def is_held_out(self, case_id: int) -> bool:
        return any(r["case_id"] == case_id for r in self.held_out)


def counterfact_split(records: list[dict], source: str = "shared") -> CounterFactSplit:
    """The collection's one tune / held-out split of ``records`` from ``source``.

    Usage: ``counterfact_split(load_counterfact("shared"), "shared").held_out``.  For the
    shared CounterFact sample, ``tune`` is its first ``TUNE_FIRST`` records plus the first
    ``TUNE_DRAWN`` of a seed-0 shuffle; the project's own cases (and any other file) were
    never used for a choice, so all of them are held out.
    """
    if source not in ("shared", "counterfact"):
        return CounterFactSplit(source, [], list(records))
    drawn = shuffled(records, SPLIT_SEED)
    tune_ids = {r["case_id"] for r in records[:TUNE_FIRST]} | {r["case_id"] for r in drawn[:TUNE_DRAWN]}
    return CounterFactSplit(source, [r for r in records if r["case_id"] in tune_ids],
                            [r for r in drawn if r["case_id"] not in tune_ids])


def resolve_source(source: str | Path) -> str:
    """Usage: ``resolve_source("auto")`` -> ``"shared"`` when the sample is here, else ``"project"``."""
    if source == "auto":
        return "shared" if (shared_data_dir() / SHARED_FILE).exists() else "project"
    return "shared" if source == "counterfact" else str(source)


def load_split(source: str = "shared") -> CounterFactSplit:
    """Usage: ``load_split("shared").held_out[:100]``: load the records, then split them."""
    source = resolve_source(source)
    return counterfact_split(load_counterfact(source), source)
