"""Sequential editing runner: every step measured, edits kept, and a killed run resumes to the same rows."""
import json

import pytest
import torch

from conftest import make_tiny_model, private_corpus
from romelib.editing.rome import ROMEHyperParams
from romelib.experiments import sequential

RECORDS = [
    {"case_id": i, "requested_rewrite": {"prompt": prompt, "subject": subject,
                                         "target_new": {"str": new}, "target_true": {"str": true}},
     "neighborhood_prompts": [f"{other} is located in"]}
    for i, (prompt, subject, new, true, other) in enumerate([
        ("{} is located in", "The Space Needle", "Paris", "Seattle", "The Eiffel Tower"),
        ("{} plays the sport of", "Michael Jordan", "soccer", "basketball", "Tiger Woods"),
        ("The mother tongue of {} is", "Danielle Darrieux", "English", "French", "Paris"),
    ])]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    with private_corpus(tmp_path_factory, "sequential") as path:
        yield path


def run(tmp_path, corpus, records, monkeypatch):
    monkeypatch.setattr(sequential, "RESULTS", tmp_path)
    mt = make_tiny_model("llama")
    before = {n: p.detach().clone() for n, p in mt.model.named_parameters()}
    hparams = ROMEHyperParams(layer=1, v_num_grad_steps=4, context_lengths=(3,), contexts_per_length=1,
                              mom2_source=f"file:{corpus}", early_stop_loss=0.0)
    windows = [mt.tokenizer("The tower is tall and the city is old.")["input_ids"]]
    sequential.run(mt, "rome", records, 1, RECORDS[:1], windows, "test text", hparams=hparams)
    assert all(torch.equal(p, before[n]) for n, p in mt.model.named_parameters()), "model left edited"
    return [json.loads(line) for line in (tmp_path / "rome.jsonl").read_text().splitlines()]


def test_each_step_is_measured_and_edits_accumulate(tmp_path, corpus, monkeypatch):
    rows = run(tmp_path, corpus, RECORDS, monkeypatch)
    assert [r["step"] for r in rows] == [0, 1, 2, 3] and [r["edits"] for r in rows] == [0, 1, 2, 3]
    assert rows[0]["distance"] == 0 and all(r["update_norm"] > 0 for r in rows[1:])
    distances = [r["distance"] for r in rows]
    assert distances[1] == pytest.approx(rows[1]["update_norm"], rel=1e-4)      # one edit: its own norm
    assert distances[3] > distances[1]                                          # later edits add up
    assert all(r["perplexity"] > 1 and 0 <= r["neighbourhood"] <= 1 for r in rows)


def test_a_killed_run_resumes_to_the_same_rows(tmp_path, corpus, monkeypatch):
    whole = run(tmp_path / "whole", corpus, RECORDS, monkeypatch)
    (tmp_path / "part").mkdir()
    run(tmp_path / "part", corpus, RECORDS[:2], monkeypatch)                    # stopped after two edits
    resumed = run(tmp_path / "part", corpus, RECORDS, monkeypatch)
    assert _close(resumed, whole)
    lines = (tmp_path / "part" / "rome.jsonl").read_text().splitlines()       # killed after saving weights,
    (tmp_path / "part" / "rome.jsonl").write_text("\n".join(lines[:-1]) + "\n")  # before writing the row
    again = run(tmp_path / "part", corpus, RECORDS, monkeypatch)
    assert _close(again, whole)


def test_weights_and_rows_that_disagree_are_refused(tmp_path, corpus, monkeypatch):
    (tmp_path / "a").mkdir()
    run(tmp_path / "a", corpus, RECORDS, monkeypatch)
    lines = (tmp_path / "a" / "rome.jsonl").read_text().splitlines()
    (tmp_path / "a" / "rome.jsonl").write_text("\n".join(lines[:2]) + "\n")      # two steps behind
    with pytest.raises(RuntimeError, match="holds step 3 but .* ends at step 1"):
        run(tmp_path / "a", corpus, RECORDS, monkeypatch)


def _close(rows, expected) -> bool:
    assert [r["step"] for r in rows] == [r["step"] for r in expected]
    for row, want in zip(rows, expected):
        for key, value in want.items():
            if isinstance(value, float):
                assert row[key] == pytest.approx(value, rel=1e-4, abs=1e-6), (row["step"], key)
            else:
                assert row[key] == value, (row["step"], key)
    return True


def _row(edits, perplexity, efficacy_all, norm=1.0):
    return {"edits": edits, "perplexity": perplexity, "efficacy_all": efficacy_all,
            "efficacy_latest": 1.0, "neighbourhood": 0.8, "facts_known": 0.9,
            "update_norm": norm, "distance": float(edits)}


def test_run_summary_finds_the_first_collapse_and_only_a_real_one():
    start = {**_row(0, 50.0, None, 0.0), "efficacy_latest": None}
    calm = [start] + [_row(e, 50.0 + e, 1.0) for e in range(1, 6)]
    summary = sequential.run_summary(calm)
    assert summary["collapse_at"] is None and summary["edits"] == 5
    assert summary["largest_perplexity_ratio"] == pytest.approx(55 / 50)
    perplexity_jump = calm[:3] + [_row(3, 101.0, 1.0, norm=40.0)] + calm[4:]
    summary = sequential.run_summary(perplexity_jump)
    assert summary["collapse_at"] == 3 and summary["largest_norm"] == 40.0
    forgetting = calm[:4] + [_row(4, 52.0, 0.25), _row(5, 500.0, 0.0)]
    assert sequential.run_summary(forgetting)["collapse_at"] == 4        # the first, not the worst
    assert sequential.run_summary(forgetting)["worst_efficacy_all"] == 0.0
    with pytest.raises(ValueError, match="no edit step"):
        sequential.run_summary([start])


def test_key_agreement_is_the_ratio_of_r_rome_to_rome_updates(corpus):
    """For the same delta, ROME's update (prompt key) is r-ROME's (average key) times 1 / rho."""
    from dataclasses import replace

    from romelib.editing.context_prefixes import context_prefixes
    from romelib.editing.key_statistics import key_statistics
    from romelib.editing.request import as_request
    from romelib.editing.rome import compute_value, rome_result

    mt = make_tiny_model("llama")
    hparams = ROMEHyperParams(layer=1, v_num_grad_steps=3, context_lengths=(3,), contexts_per_length=2,
                              mom2_source=f"file:{corpus}", early_stop_loss=0.0)
    rhos = sequential.key_agreement(mt, RECORDS, hparams)
    assert len(rhos) == len(RECORDS) and all(abs(r - 1) > 1e-6 for r in rhos)   # the keys really differ
    prefixes = context_prefixes(mt, hparams.context_lengths, hparams.contexts_per_length)
    second_moment = key_statistics(mt, 1, hparams.mom2_source, hparams.mom2_max_tokens).mom2
    for record, rho in zip(RECORDS, rhos):
        request = as_request(record["requested_rewrite"])
        value = compute_value(mt, request, hparams, prefixes)
        norms = [next(iter(rome_result(mt, request, replace(hparams, update_key=key), prefixes, value.keys,
                                       value, second_moment).deltas.values())).norm()
                 for key in ("prompt", "average")]
        assert float(norms[0] / norms[1]) == pytest.approx(1 / abs(rho), rel=1e-4)
