"""The CounterFact record schema: what a record must hold, and what a file of records must be.

Usage::

    validate_record(record)                      # ValueError naming the bad field
    validate_records(records, where="cf.json")   # a list of valid records with unique case_ids

Kept apart from :mod:`romelib.datasets.counterfact` so that the downloader
(:mod:`romelib.datasets.download`), which that module reads its files through, can check a
downloaded file with the same rules; ``romelib.datasets.counterfact.validate_record`` is
this function.
"""
from __future__ import annotations

PROMPT_LISTS = ("paraphrase_prompts", "neighborhood_prompts", "attribute_prompts",
                "generation_prompts")


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



def validate_records(records, where: str = "records") -> list[dict]:
    """Check a whole file's worth of records: a list, every record valid, case_ids unique.

    Usage: ``validate_records(json.loads(path.read_text()), where=path.name)``; raises
    ``ValueError`` naming the first bad record (``where[index]``) or the repeated case_ids.
    """
    if not isinstance(records, list):
        raise ValueError(f"{where} should hold a JSON list of records, not a {type(records).__name__}.")
    for index, record in enumerate(records):
        validate_record(record, where=f"{where}[{index}]")
    ids = [r["case_id"] for r in records]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{where}: case_id values are not unique.")
    return records
