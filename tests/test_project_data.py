"""The project's own data: data/known_facts.json and data/counterfact_cases.json.

Schema checks (fields, templates, subjects found by the real tokenizer, sizes, unique
ids, no overlap with the reference data sets) and the model checks that the files were
built to pass (the default model knows most facts and prefers the true targets).
The helpers of romelib.experiments.factcheck are tested on tiny random models.
"""
from __future__ import annotations

import json
import re

import pytest
import torch

import romelib
from romelib.datasets.counterfact import load_counterfact
from romelib.datasets.facts import load_fact_records
from romelib.editing.request import EditRequest
from romelib.evaluation.factcheck import (
    KnownFactsReport,
    check_counterfact_cases,
    check_known_facts,
    format_report,
    greedy_continuations,
    prefers_first,
    top1_matches,
)
from romelib.experiments.factcheck import write_predictions


def load_known_facts(path="project"):
    return load_fact_records(path)


def load_counterfact_cases(path="project"):
    return load_counterfact(path)

KNOWN_FIELDS = {"known_id", "subject", "attribute", "template", "prediction", "prompt", "relation_id"}
CASE_FIELDS = {"case_id", "requested_rewrite", "paraphrase_prompts", "neighborhood_prompts",
               "attribute_prompts", "generation_prompts"}
REWRITE_FIELDS = {"prompt", "relation_id", "target_new", "target_true", "subject"}


@pytest.fixture(scope="module")
def facts():
    return load_known_facts()


@pytest.fixture(scope="module")
def cases():
    return load_counterfact_cases()


def normalized(subject: str) -> str:
    subject = subject.strip().lower()
    return subject[4:] if subject.startswith("the ") else subject


# --- known_facts.json -------------------------------------------------------------------

def test_known_facts_have_known_1000_fields(facts):
    assert len(facts) >= 150
    for fact in facts:
        assert set(fact) == KNOWN_FIELDS, fact
        assert isinstance(fact["known_id"], int)
        assert all(isinstance(fact[k], str) and fact[k].strip() for k in KNOWN_FIELDS - {"known_id", "prediction"})
        assert isinstance(fact["prediction"], str) and fact["prediction"], fact
        assert re.fullmatch(r"P\d+", fact["relation_id"]), fact


def test_known_fact_prompts_are_filled_templates(facts):
    for fact in facts:
        assert fact["template"].count("{}") == 1, fact
        assert fact["prompt"] == fact["template"].format(fact["subject"]), fact
        assert not fact["prompt"][-1].isspace(), "the prompt must end right before the attribute"
        assert not fact["attribute"][0].isspace(), fact


def test_known_facts_ids_unique_and_coverage_broad(facts):
    ids = [f["known_id"] for f in facts]
    assert len(ids) == len(set(ids))
    pairs = [(f["subject"], f["relation_id"]) for f in facts]
    assert len(pairs) == len(set(pairs)), "a subject should appear once per relation"
    assert len({f["relation_id"] for f in facts}) >= 20
    assert len({f["subject"] for f in facts}) >= 0.9 * len(facts)


def test_known_fact_subjects_found_by_tokenizer(default_mt, facts):
    for fact in facts:
        start, end = romelib.find_subject_range(default_mt, fact["prompt"], fact["subject"])
        assert 0 <= start < end <= len(romelib.encode(default_mt, fact["prompt"]))


def test_default_model_knows_most_facts(default_mt, facts):
    sample = facts[::2]  # half keeps the test fast; `python -m romelib.experiments.factcheck` checks all
    known = top1_matches(default_mt, [f["prompt"] for f in sample], [f["attribute"] for f in sample])
    assert sum(known) / len(known) >= 0.7
    assert not all(known), "keep some facts the model gets wrong"


def test_stored_predictions_start_like_the_models_top1(default_mt, facts):
    sample = facts[::20]
    top1 = romelib.predict(default_mt, [f["prompt"] for f in sample], k=1)
    for fact, (best,) in zip(sample, top1):
        assert fact["prediction"].startswith(best.token), (fact["prediction"], best.token)


# --- counterfact_cases.json ---------------------------------------------------------------

def test_cases_have_counterfact_schema(cases):
    assert len(cases) >= 50
    ids = [c["case_id"] for c in cases]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids)
    for case in cases:
        assert set(case) == CASE_FIELDS, case
        rewrite = case["requested_rewrite"]
        assert set(rewrite) == REWRITE_FIELDS, rewrite
        assert rewrite["prompt"].count("{}") == 1 and re.fullmatch(r"P\d+", rewrite["relation_id"])
        assert rewrite["target_new"]["str"] and rewrite["target_true"]["str"]
        assert rewrite["target_new"]["str"] != rewrite["target_true"]["str"]
        assert len(case["paraphrase_prompts"]) == 2
        assert len(case["neighborhood_prompts"]) == 10 and len(case["attribute_prompts"]) == 10
        assert len(case["generation_prompts"]) >= 5
        EditRequest.from_dict(rewrite)  # the editing contract accepts it


def test_case_prompts_mention_the_right_subjects(cases):
    for case in cases:
        subject = case["requested_rewrite"]["subject"].lower()  # "Origami" starts a sentence
        for paraphrase in case["paraphrase_prompts"]:
            prefix, _, rest = paraphrase.partition(". ")
            assert prefix and subject in rest.lower(), f"{paraphrase!r}: unrelated sentence, then the fact"
        for prompt in case["generation_prompts"]:
            assert subject in prompt.lower(), prompt
        for prompt in case["neighborhood_prompts"] + case["attribute_prompts"]:
            assert subject not in prompt.lower(), f"{prompt!r} is about {subject!r}, not another subject"
        for group in ("neighborhood_prompts", "attribute_prompts"):
            assert len(set(case[group])) == len(case[group]), f"repeated prompt in {group}"
        every = [case["requested_rewrite"]["prompt"]] + sum((case[k] for k in CASE_FIELDS - {
            "case_id", "requested_rewrite"}), [])
        assert all(p == p.strip() for p in every)


def test_case_subjects_found_by_tokenizer(default_mt, cases):
    for case in cases:
        rewrite = case["requested_rewrite"]
        for prompt in [rewrite["prompt"].format(rewrite["subject"])] + case["paraphrase_prompts"]:
            romelib.find_subject_range(default_mt, prompt, rewrite["subject"])


def test_default_model_prefers_true_targets(default_mt, cases):
    rewrites = [c["requested_rewrite"] for c in cases[::2]]
    preferred = prefers_first(default_mt, [r["prompt"].format(r["subject"]) for r in rewrites],
                              [r["target_true"]["str"] for r in rewrites],
                              [r["target_new"]["str"] for r in rewrites])
    assert sum(preferred) / len(preferred) >= 0.9


def test_default_model_gets_neighbourhoods_mostly_right(default_mt, cases):
    sample = cases[::16]  # a sample keeps the test fast; `python -m romelib.experiments.factcheck` checks all
    prompts = sum((c["neighborhood_prompts"] for c in sample), [])
    true = sum(([c["requested_rewrite"]["target_true"]["str"]] * 10 for c in sample), [])
    new = sum(([c["requested_rewrite"]["target_new"]["str"]] * 10 for c in sample), [])
    right = prefers_first(default_mt, prompts, true, new)
    assert sum(right) / len(right) >= 0.8


def test_check_counterfact_cases_reports_every_group(tiny_gemma, cases):
    report = check_counterfact_cases(tiny_gemma, cases[:2])
    assert len(report.true_preferred) == 2 and set(report.summary()) == {
        "true_preferred", "paraphrase", "neighborhood", "attribute"}
    for fractions, size in ((report.paraphrase_fraction, 2), (report.neighborhood_fraction, 10),
                            (report.attribute_fraction, 10)):
        assert all(0 <= f <= 1 and abs(f * size - round(f * size)) < 1e-9 for f in fractions)
    facts_report = KnownFactsReport([True, False, True], ["", "", ""], 0, {"P17": (2, 3)})
    text = format_report(facts_report, report, "tiny")
    assert "2/3 known (66.7%)" in text and "P17 2/3" in text and f"/{len(cases[:2])} cases" in text


# --- no overlap with the reference data ----------------------------------------------------

def test_no_subject_overlap_with_reference_data(shared_data, facts, cases):
    reference = {normalized(r["subject"]) for r in json.loads((shared_data / "known/known_1000.json").read_text())}
    reference |= {normalized(r["requested_rewrite"]["subject"])
                  for r in json.loads((shared_data / "counterfact/counterfact_500.json").read_text())}
    zsre = shared_data / "zsre/zsre_eval_1037.json"
    if zsre.is_file():
        reference |= {normalized(r["subject"]) for r in json.loads(zsre.read_text())}
    ours = {normalized(f["subject"]) for f in facts} | {normalized(c["requested_rewrite"]["subject"]) for c in cases}
    assert not ours & reference, sorted(ours & reference)


# --- romelib.experiments.factcheck on tiny models --------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_gemma():
    from conftest import make_tiny_model
    return make_tiny_model("gemma3_text")


def test_greedy_continuation_matches_a_manual_loop_and_ignores_batch(tiny_gemma):
    prompts = ["The Space Needle is in", "Rome is the capital of", "Apple was founded by"]
    texts = greedy_continuations(tiny_gemma, prompts, max_new_tokens=4)
    alone = [greedy_continuations(tiny_gemma, [p], max_new_tokens=4)[0] for p in prompts]
    assert texts == alone
    ids = romelib.encode(tiny_gemma, prompts[0])
    with torch.no_grad():
        for _ in range(4):
            logits = tiny_gemma.model(input_ids=torch.tensor([ids])).logits[0, -1]
            ids.append(int(logits.argmax()))
    assert texts[0] == tiny_gemma.tokenizer.decode(ids[-4:], skip_special_tokens=True)


def word_prediction(mt) -> tuple[str, str]:
    """A prompt whose top-1 next token is a whole word (" word"), and that word."""
    for prompt in ["Michael Jordan plays the sport of", "The Eiffel Tower is in", "Rome is the capital of",
                   "Bob works in the", "Apple was founded by", "Danielle Darrieux's mother tongue is"]:
        first = romelib.predict(mt, prompt, k=1)[0]
        if first.token.startswith(" ") and first.token[1:].isalpha():
            return prompt, first.token[1:]
    pytest.skip("the tiny model predicts no whole word after any test prompt")


def test_top1_matches_the_models_own_prediction(tiny_gemma):
    prompt, word = word_prediction(tiny_gemma)
    assert top1_matches(tiny_gemma, [prompt], [word]) == [True]
    assert top1_matches(tiny_gemma, [prompt], ["zzzz" + word]) == [False]
    with pytest.raises(ValueError, match="prompts but"):
        top1_matches(tiny_gemma, [prompt], [])


def test_prefers_first_is_antisymmetric(tiny_gemma):
    prompts = ["The Eiffel Tower is in", "Toko Yasuda plays the"]
    forward = prefers_first(tiny_gemma, prompts, ["Paris", "guitar"], ["Rome", "piano"])
    backward = prefers_first(tiny_gemma, prompts, ["Rome", "piano"], ["Paris", "guitar"])
    same = prefers_first(tiny_gemma, prompts, ["Paris", "guitar"], ["Paris", "guitar"])
    assert [a != b for a, b in zip(forward, backward)] == [True, True] and same == [False, False]


def test_check_known_facts_counts_and_writes(tiny_gemma, tmp_path):
    prompt, word = word_prediction(tiny_gemma)
    facts = [{"known_id": 0, "subject": "X", "attribute": word, "template": prompt + " {}",
              "prediction": "", "prompt": prompt, "relation_id": "P103"},
             {"known_id": 1, "subject": "X", "attribute": "zzzz" + word, "template": prompt + " {}",
              "prediction": "", "prompt": prompt, "relation_id": "P1412"}]
    report = check_known_facts(tiny_gemma, facts, max_new_tokens=3)
    assert report.known == [True, False] and report.known_fraction == 0.5
    assert report.by_relation == {"P103": (1, 1), "P1412": (0, 1)} and report.changed_predictions == 2
    write_predictions(facts, report.predictions, tmp_path / "facts.json")
    stored = load_known_facts(tmp_path / "facts.json")
    assert [f["prediction"] for f in stored] == report.predictions
    assert check_known_facts(tiny_gemma, stored, max_new_tokens=3).changed_predictions == 0


def test_bad_records_say_what_is_missing(tiny_gemma):
    with pytest.raises(ValueError, match="lacks \\['attribute'\\]"):
        check_known_facts(tiny_gemma, [{"prompt": "Rome is the capital of", "relation_id": "P36"}])
    with pytest.raises(ValueError, match="lacks"):
        check_counterfact_cases(tiny_gemma, [{"requested_rewrite": {}}])
    with pytest.raises(ValueError, match="one of each"):
        prefers_first(tiny_gemma, ["Rome is the capital of"], ["Italy"], [])


def test_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="No fact file"):
        load_known_facts(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text('{"a": 1}')
    with pytest.raises(ValueError, match="JSON list"):
        load_counterfact_cases(tmp_path / "bad.json")
