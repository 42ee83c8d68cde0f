"""CounterFact loading and schema checks."""
import copy
import json

import pytest

from romelib import counterfact

RECORD = {
    "case_id": 7,
    "requested_rewrite": {"prompt": "{} is located in the city of", "subject": "The Space Needle",
                          "relation_id": "P131", "target_new": {"str": "Paris"},
                          "target_true": {"str": "Seattle"}},
    "paraphrase_prompts": ["Bob works there. The Space Needle is in"],
    "neighborhood_prompts": ["The Eiffel Tower is in", "Bob works in the city of"],
    "attribute_prompts": ["The Eiffel Tower is in the city of"],
    "generation_prompts": ["The Space Needle is"],
}


def broken(path, value):
    record = copy.deepcopy(RECORD)
    *parents, last = path
    target = record
    for key in parents:
        target = target[key]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value
    return record


def test_a_good_record_passes():
    assert counterfact.validate_record(copy.deepcopy(RECORD)) == RECORD
    assert counterfact.rewrite_prompt(RECORD) == "The Space Needle is located in the city of"
    assert counterfact.targets(RECORD) == ("Paris", "Seattle")


@pytest.mark.parametrize("path, value, message", [
    (("paraphrase_prompts",), KeyError, "paraphrase_prompts"),
    (("requested_rewrite", "prompt"), "The Space Needle is in", "'{}'"),
    (("requested_rewrite", "subject"), "  ", "subject is empty"),
    (("requested_rewrite", "target_new"), "Paris", "{'str': 'Paris'}"),
    (("requested_rewrite", "target_new"), {"str": "Seattle"}, "both 'Seattle'"),
    (("neighborhood_prompts",), [], "neighborhood_prompts must be a non-empty list"),
    (("generation_prompts",), ["ok", ""], "generation_prompts holds an empty"),
])
def test_bad_records_name_the_problem(path, value, message):
    with pytest.raises(ValueError, match=None) as error:
        counterfact.validate_record(broken(path, value), where="case 7")
    assert message in str(error.value) and "case 7" in str(error.value)


def test_load_from_a_file_checks_every_record(tmp_path):
    path = tmp_path / "cases.json"
    path.write_text(json.dumps([RECORD, {**RECORD, "case_id": 8}]))
    assert [r["case_id"] for r in counterfact.load_counterfact(path)] == [7, 8]
    assert len(counterfact.load_counterfact(path, n=1)) == 1
    path.write_text(json.dumps([RECORD, broken(("attribute_prompts",), KeyError)]))
    with pytest.raises(ValueError, match=r"cases.json\[1\].*attribute_prompts"):
        counterfact.load_counterfact(path)
    path.write_text(json.dumps([RECORD, RECORD]))
    with pytest.raises(ValueError, match="not unique"):
        counterfact.load_counterfact(path)
    path.write_text(json.dumps({"records": []}))
    with pytest.raises(ValueError, match="JSON list"):
        counterfact.load_counterfact(path)


def test_missing_shared_data_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("ROMELIB_SHARED_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="ROMELIB_SHARED_DATA"):
        counterfact.counterfact_path("shared")
    assert counterfact.counterfact_path("auto") == counterfact.PROJECT_CASES
    with pytest.raises(FileNotFoundError, match="'shared', 'project'"):
        counterfact.counterfact_path(tmp_path / "nothing.json")


def test_shared_sample_is_valid(shared_data, monkeypatch):
    monkeypatch.setenv("ROMELIB_SHARED_DATA", str(shared_data))
    records = counterfact.load_counterfact("shared")
    assert len(records) == 500
    assert counterfact.counterfact_path("auto").name == "counterfact_500.json"


def test_project_cases_are_valid():
    if not counterfact.PROJECT_CASES.exists():
        pytest.skip("data/counterfact_cases.json has not been written yet")
    records = counterfact.load_counterfact("project")
    assert len(records) >= 50


def test_split_is_disjoint_and_reproducible():
    records = [{**RECORD, "case_id": i} for i in range(30)]
    tune, test = counterfact.split_records(records, n_tune=10, seed=3)
    again, _ = counterfact.split_records(records, n_tune=10, seed=3)
    assert [r["case_id"] for r in tune] == [r["case_id"] for r in again]
    assert len(tune) == 10 and len(test) == 20
    assert not {r["case_id"] for r in tune} & {r["case_id"] for r in test}
    with pytest.raises(ValueError, match="n_tune=31"):
        counterfact.split_records(records, n_tune=31)
