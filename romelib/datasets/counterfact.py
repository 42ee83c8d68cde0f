"""CounterFact records: loading them and checking their schema.

Usage::

    records = romelib.load_counterfact()              # shared CounterFact sample, else data/
    records = romelib.load_counterfact("project")     # the project's own cases
    records = romelib.load_counterfact("full")        # all 21,919 records (downloaded once)
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

Sources: ``"shared"`` (alias ``"counterfact"``) is the reference sample, 500 records of the
21,919, found in ``../shared/data/counterfact`` (or ``$ROMELIB_SHARED_DATA/counterfact``) or
in romelib's cache, never copied here; ``"full"`` is the whole set, from the same places or
downloaded once from the authors' site (``python -m romelib.datasets.download counterfact``);
``"project"`` is the project's own CounterFact-style cases, ``data/counterfact_cases.json``.
Where a reference file is, is :func:`romelib.datasets.download.reference_path`'s answer.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from ..core.checks import check_int
from ..paths import project_data
from .counterfact_schema import PROMPT_LISTS, validate_record, validate_records  # noqa: F401  (public here)
from .download import ReferenceDataMissing, reference_path

SAMPLE_FILE = "counterfact_500.json"     # the shared sample (source "shared")
FULL_FILE = "counterfact.json"           # the whole set (source "full")


def project_cases_path() -> Path:
    """Usage: ``project_cases_path()`` -> ``data/counterfact_cases.json`` (the project's own cases)."""
    return project_data("counterfact_cases.json")


def counterfact_path(source: str | Path = "auto") -> Path:
    """Where the records of ``source`` live: ``"shared"``, ``"full"``, ``"project"``, ``"auto"`` or a file.

    Usage: ``counterfact_path("auto")`` -> the shared sample when present, else data/.
    ``"full"`` downloads CounterFact once when it is neither in the mirror nor in the cache.
    """
    if source == "auto":
        return _sample_path() or project_cases_path()
    if source in ("shared", "counterfact"):
        return reference_path(SAMPLE_FILE, download=False)
    if source == "full":
        return reference_path(FULL_FILE)
    if source == "project":
        if not project_cases_path().exists():
            raise FileNotFoundError(f"The project's cases {project_cases_path()} are missing; restore "
                                    "them from git, or use source='shared'.")
        return project_cases_path()
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"No CounterFact file at {path}; pass 'shared', 'project', 'full', "
                                "'auto' or the path of a JSON list of records.")
    return path


def _sample_path() -> Path | None:
    try:
        return reference_path(SAMPLE_FILE, download=False)
    except ReferenceDataMissing:
        return None


def load_counterfact(source: str | Path = "auto", n: int | None = None,
                     validate: bool = True) -> list[dict]:
    """Load CounterFact records, checking every one of them.

    Usage: ``records = load_counterfact("shared", n=100)`` (the first ``n`` records).
    """
    if n is not None:
        n = check_int("n", n, minimum=1)
    path = counterfact_path(source)
    try:
        records = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}).") from None
    if not isinstance(records, list):
        raise ValueError(f"{path} should hold a JSON list of records, not a {type(records).__name__}.")
    if validate:
        validate_records(records, where=path.name)
    return records[:n] if n is not None else records


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
# The same tune records by case_id, so that the full set's split holds them out too
# (tests/test_counterfact.py checks them against the sample).
SAMPLE_TUNE_CASE_IDS = frozenset((
    212, 819, 869, 976, 1041, 1423, 2848, 3039, 3070, 3169, 3349, 3358, 3368, 3648, 3965, 4090, 4572,
    5094, 5231, 5854, 6515, 7055, 7164, 7223, 7314, 7623, 7962, 8024, 8666, 8667, 8679, 8703, 9012,
    9105, 9115, 9810, 10286, 10885, 11029, 11149, 11270, 11763, 11861, 12403, 12449, 13746, 13825,
    13848, 14719, 15054, 16559, 17570, 17571, 17856, 17870, 18390, 18521, 18918, 19309, 19349, 19498,
    19543, 19726, 19782, 20952, 21295, 21737))


@dataclass(frozen=True)
class CounterFactSplit:
    """Records split into ``tune`` (choices may be made on them) and ``held_out`` (never).

    Usage: ``split = counterfact_split(load_counterfact("shared"), "shared")``;
    ``split.held_out[:100]`` are the records Table 4 reports; ``split.tune_shuffled[:20]`` the
    records the baseline sweep tuned FT and FT+L on.
    """

    source: str
    tune: list[dict]        # in file order
    held_out: list[dict]    # in the fixed shuffled order of SPLIT_SEED
    tune_shuffled: list[dict] = field(default_factory=list)   # ``tune`` in that order (the drawn first)

    def is_held_out(self, case_id: int) -> bool:
        return any(r["case_id"] == case_id for r in self.held_out)


def counterfact_split(records: list[dict], source: str = "shared") -> CounterFactSplit:
    """The collection's one tune / held-out split of ``records`` from ``source``.

    Usage: ``counterfact_split(load_counterfact("shared"), "shared").held_out``.  For the
    shared CounterFact sample, ``tune`` is its first ``TUNE_FIRST`` records plus the first
    ``TUNE_DRAWN`` of a seed-0 shuffle; for the full set (``"full"``), ``tune`` is those same
    records (``SAMPLE_TUNE_CASE_IDS``) and ``held_out`` the others in a seed-0 shuffle; the
    project's own cases (and any other file) were never used for a choice, so all of them
    are held out.
    """
    if source not in ("shared", "counterfact", "full"):
        return CounterFactSplit(source, [], list(records))
    drawn = shuffled(records, SPLIT_SEED)
    if source == "full":
        tune_ids = SAMPLE_TUNE_CASE_IDS
    else:
        tune_ids = {r["case_id"] for r in records[:TUNE_FIRST]} | {r["case_id"] for r in drawn[:TUNE_DRAWN]}
    return CounterFactSplit(source, [r for r in records if r["case_id"] in tune_ids],
                            [r for r in drawn if r["case_id"] not in tune_ids],
                            [r for r in drawn if r["case_id"] in tune_ids])


def resolve_source(source: str | Path) -> str:
    """Usage: ``resolve_source("auto")`` -> ``"shared"`` when the sample is here, else ``"project"``."""
    if source == "auto":
        return "shared" if _sample_path() else "project"
    return "shared" if source == "counterfact" else str(source)


def load_split(source: str = "shared") -> CounterFactSplit:
    """Usage: ``load_split("shared").held_out[:100]``: load the records, then split them."""
    source = resolve_source(source)
    return counterfact_split(load_counterfact(source), source)
