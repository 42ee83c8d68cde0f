"""Known facts: ROME's ``known_1000`` and the project's own list, and which ones a model knows.

Usage::

    facts = romelib.load_facts("project")          # data/known_facts.json, always here
    facts = romelib.load_facts("known_1000")       # ROME's 1209 facts (shared data or download)
    known = romelib.facts_known_by(mt, facts)       # those the model predicts correctly

Both files use ROME's format: ``{"known_id", "subject", "attribute", "template", "prompt",
"relation_id", ...}`` with ``prompt == template.format(subject)``.  ``known_1000`` is read
from the reference data folder (``$ROMELIB_SHARED_DATA`` or ``../shared/data``), else from
romelib's cache folder, else downloaded once from the ROME authors' site
(:func:`romelib.datasets.download.reference_path`).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..core.checks import check_int
from ..core.tokens import next_token_probs, target_tokens
from ..paths import project_data
from .download import reference_path


@dataclass(frozen=True)
class Fact:
    """A factual prompt whose next word is ``attribute``: ``prompt`` contains ``subject``.

    Usage: ``Fact.from_dict(record)``; ``fact.prompt``, ``fact.subject``, ``fact.attribute``.
    """

    prompt: str
    subject: str
    attribute: str
    relation_id: str = ""
    known_id: int = -1

    @classmethod
    def from_dict(cls, record: dict) -> Fact:
        try:
            prompt = record.get("prompt") or record["template"].format(record["subject"])
            return cls(prompt, record["subject"], record["attribute"],
                       record.get("relation_id", ""), int(record.get("known_id", -1)))
        except KeyError as missing:
            raise ValueError(f"A fact record needs 'subject', 'attribute' and 'prompt' (or "
                             f"'template'); {missing} is missing in {record!r}.") from None

    def to_dict(self) -> dict:
        return asdict(self)


def known_1000_path(download: bool = True) -> Path:
    """Where ``known_1000.json`` is: shared data, romelib's cache, or downloaded now.

    Usage: ``json.loads(known_1000_path().read_text())``; raises
    :class:`romelib.datasets.download.ReferenceDataMissing` (a ``FileNotFoundError`` whose
    message is one line saying what to run) when it is nowhere and cannot be downloaded.
    """
    return reference_path("known_1000.json", download=download)


def load_fact_records(source: str | Path = "project") -> list[dict]:
    """The raw records of a fact list (all their fields, ``prediction`` included).

    Usage: ``records = load_fact_records("project")``; :func:`load_facts` makes them ``Fact``s.
    """
    if source == "project":
        path = project_data("known_facts.json")
        if not path.is_file():
            raise FileNotFoundError(f"The project's fact list {path} is missing; it ships with "
                                    "the repository (restore it with git), or use 'known_1000'.")
    elif source == "known_1000":
        path = known_1000_path()
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"No fact file at {path}; pass 'project', 'known_1000' or "
                                    "the path of a JSON list in known_1000's format.")
    records = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ValueError(f"{path} must hold a JSON list of fact records (objects).")
    return records


def load_facts(source: str | Path = "project") -> list[Fact]:
    """Load facts: ``"project"`` (data/known_facts.json), ``"known_1000"`` or a JSON file path.

    Usage: ``facts = load_facts("known_1000")``.
    """
    return [Fact.from_dict(record) for record in load_fact_records(source)]


def reference_facts() -> list[Fact]:
    """Facts whose subjects define the embedding spread sigma: the project's list, else known_1000.

    Usage: ``subjects = [f.subject for f in reference_facts()]``.
    """
    if project_data("known_facts.json").is_file():
        return load_facts("project")
    return load_facts("known_1000")


@torch.no_grad()
def facts_known_by(mt, facts: list[Fact], batch_size: int = 32) -> list[Fact]:
    """The facts whose attribute's first token is the model's top next-token prediction.

    Usage: ``known = facts_known_by(mt, load_facts("known_1000"))``.
    """
    batch_size = check_int("batch_size", batch_size, minimum=1)
    known = []
    for start in range(0, len(facts), batch_size):
        chunk = facts[start:start + batch_size]
        top = next_token_probs(mt, [f.prompt for f in chunk], batch_size=batch_size).argmax(-1)
        for fact, token in zip(chunk, top.tolist()):
            if target_tokens(mt, fact.prompt, fact.attribute)[1][0] == token:
                known.append(fact)
    return known
