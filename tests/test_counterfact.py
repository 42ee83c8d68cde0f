"""CounterFact loading and schema checks."""
import copy
import json

import pytest

from romelib.datasets import counterfact

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
    assert counterfact.counterfact_path("auto") == counterfact.project_cases_path()
    with pytest.raises(FileNotFoundError, match="'shared', 'project'"):
        counterfact.counterfact_path(tmp_path / "nothing.json")


def test_shared_sample_is_valid(shared_data, monkeypatch):
    monkeypatch.setenv("ROMELIB_SHARED_DATA", str(shared_data))
    records = counterfact.load_counterfact("shared")
    assert len(records) == 500
    assert counterfact.counterfact_path("auto").name == "counterfact_500.json"


def test_project_cases_are_valid():
    if not counterfact.project_cases_path().exists():
        pytest.skip("data/counterfact_cases.json has not been written yet")
    records = counterfact.load_counterfact("project")
    assert len(records) >= 50


def test_split_is_disjoint_covers_everything_and_is_fixed():
    records = [{**RECORD, "case_id": i} for i in range(200)]
    split = counterfact.counterfact_split(records, "shared")
    tune, held = {r["case_id"] for r in split.tune}, {r["case_id"] for r in split.held_out}
    assert not tune & held and tune | held == set(range(200))
    assert set(range(counterfact.TUNE_FIRST)) <= tune                  # the layer sweep's records
    drawn = counterfact.shuffled(records, counterfact.SPLIT_SEED)[:counterfact.TUNE_DRAWN]
    assert {r["case_id"] for r in drawn} <= tune                        # the baselines' records
    assert len(tune) <= counterfact.TUNE_FIRST + counterfact.TUNE_DRAWN
    again = counterfact.counterfact_split(list(records), "shared")
    assert [r["case_id"] for r in again.held_out] == [r["case_id"] for r in split.held_out]
    assert [r["case_id"] for r in split.tune] == sorted(tune)            # file order
    own = counterfact.counterfact_split(records, "project")              # never tuned on
    assert own.tune == [] and len(own.held_out) == 200


def test_table4_records_are_the_held_out_ones_saved_before(shared_data, monkeypatch):
    """The split gives exactly the records the saved Table 4 was computed on, in order."""
    from romelib.experiments import table4

    monkeypatch.setenv("ROMELIB_SHARED_DATA", str(shared_data))
    try:
        saved = table4.load_summary("counterfact")["case_ids"]
    except FileNotFoundError:
        pytest.skip("no saved Table 4")
    assert [r["case_id"] for r in table4.select_records("shared", len(saved))] == saved
    split = counterfact.load_split("shared")
    assert not {r["case_id"] for r in split.tune} & set(saved)


def test_the_full_set_holds_out_what_the_sample_was_tuned_on(shared_data, monkeypatch):
    """Source "full" (all 21,919 records) keeps the sample's tune records out of its held-out part."""
    monkeypatch.setenv("ROMELIB_SHARED_DATA", str(shared_data))
    records = counterfact.load_counterfact("shared")
    tune = {r["case_id"] for r in counterfact.counterfact_split(records, "shared").tune}
    assert tune == counterfact.SAMPLE_TUNE_CASE_IDS
    full = counterfact.counterfact_split(records, "full")    # the sample stands in for the full set
    assert {r["case_id"] for r in full.tune} == tune
    assert not tune & {r["case_id"] for r in full.held_out}
    assert len(full.tune) + len(full.held_out) == len(records)
    assert counterfact.resolve_source("full") == "full"
