"""CounterFact metrics, their confidence intervals, generation fluency and consistency."""
import json
import math

import numpy as np
import pytest
import torch
from test_counterfact import RECORD

import romelib
from romelib import intervals, results
from romelib.editing.finetune import FTHyperParams
from romelib.evaluation import fluency, scoring
from romelib.evaluation import metrics as evaluation


def test_score_targets_matches_target_log_probs(tiny_mt):
    prompts = ["The Space Needle is in", "The Space Needle is in", "Rome is the capital of",
               "Rome is the capital of", "Bob works in the Empire State Building, which is in"]
    targets = ["Seattle", "Paris, the capital", "Italy", "Italy and France", "New York"]
    expected = romelib.target_log_probs(tiny_mt, prompts, targets)
    # a tiny batch budget forces several batches; shared prompts reuse one forward pass
    for budget in (4096, 16):
        got = scoring.score_targets(tiny_mt, prompts, targets, max_batch_tokens=budget)
        assert [len(g) for g in got] == [len(e) for e in expected]
        for g, e in zip(got, expected):
            torch.testing.assert_close(torch.tensor(g), torch.tensor(e), atol=1e-4, rtol=1e-4)


def test_sequences_are_shared_only_when_valid():
    pairs = [([1, 2], [5]), ([1, 2], [6, 7]), ([1, 2], [6, 8]), ([1, 2], [6]), ([3], [5])]
    sequences, owner = scoring.plan_sequences(pairs)
    # [6, 8] cannot reuse [1, 2, 6, 7]'s pass for its last token? It can: only target[:-1]
    # (= [6]) must be a prefix of the other continuation.
    assert sequences == [[1, 2, 6, 7], [3, 5]]
    assert owner == [0, 0, 0, 0, 1]
    sequences, owner = scoring.plan_sequences([([1], [5, 6]), ([1], [7, 8])])
    assert sequences == [[1, 5, 6], [1, 7, 8]] and owner == [0, 1]


def fake_scores(rewrite, paraphrase, neighborhood):
    """Scores from (log P(new), log P(true)) pairs of one-token targets."""
    def group(pairs):
        return {"new": [[n] for n, _ in pairs], "true": [[t] for _, t in pairs]}
    return {"rewrite": group(rewrite), "paraphrase": group(paraphrase),
            "neighborhood": group(neighborhood), "attribute": group([])}


def test_record_metrics_follow_the_paper():
    half, tenth = math.log(0.5), math.log(0.1)
    scores = fake_scores(rewrite=[(half, tenth)], paraphrase=[(half, tenth), (tenth, half)],
                         neighborhood=[(tenth, half), (tenth, half), (half, tenth), (half, half)])
    metrics = evaluation.record_metrics(scores)
    assert metrics["ES"] == 1.0 and metrics["EM"] == pytest.approx(0.4)
    assert metrics["PS"] == 0.5 and metrics["PM"] == pytest.approx(0.0)
    # neighbourhood success means the TRUE answer stays more likely; ties are failures
    assert metrics["NS"] == 0.5 and metrics["NM"] == pytest.approx((0.4 + 0.4 - 0.4 + 0) / 4)


def test_length_normalisation_changes_multi_token_comparisons():
    # new: two tokens of p=0.5 each (product .25, per-token .5); true: one token p=.3
    scores = fake_scores(rewrite=[(0, 0)], paraphrase=[(0, 0)], neighborhood=[(0, 0)])
    scores["rewrite"] = {"new": [[math.log(0.5), math.log(0.5)]], "true": [[math.log(0.3)]]}
    assert evaluation.record_metrics(scores, length_normalized=True)["ES"] == 1.0
    assert evaluation.record_metrics(scores, length_normalized=False)["ES"] == 0.0


def test_harmonic_mean_reproduces_the_papers_scores():
    assert evaluation.harmonic_mean([22.2, 24.7, 78.1]) == pytest.approx(30.5, abs=0.05)  # GPT-2 XL
    assert evaluation.harmonic_mean([100.0, 96.4, 75.4]) == pytest.approx(89.2, abs=0.05)  # ROME
    assert evaluation.harmonic_mean([99.1, 48.7, 70.3]) == pytest.approx(66.9, abs=0.05)   # FT+L
    assert evaluation.harmonic_mean([100.0, 0.0, 50.0]) == 0.0
    with pytest.raises(ValueError, match="non-negative"):
        evaluation.harmonic_mean([1.0, -1.0])


def test_confidence_intervals():
    mean, half = intervals.mean_and_ci([1, 0, 1, 1])
    assert mean == 75.0 and half == pytest.approx(1.96 * 0.5 / 2 * 100)
    records = [{"ES": 1.0, "PS": p, "NS": n} for p, n in [(1, .8), (0, .9), (1, .7), (.5, 1.)] * 5]
    score, half = evaluation.score_and_ci(records, samples=200)
    assert score == pytest.approx(evaluation.harmonic_mean([100, 62.5, 85]))
    assert 0 < half < 30
    constant = evaluation.score_and_ci([{"ES": 1, "PS": 1, "NS": 1}] * 5, samples=50)
    assert constant == (100.0, 0.0)


def test_paired_difference_cancels_record_difficulty():
    rng = np.random.default_rng(1)
    hard = rng.random(40)                                   # per-record difficulty, shared
    first = [{"ES": 1.0, "PS": float(h > .3), "NS": float(h > .2)} for h in hard]
    second = [{"ES": 1.0, "PS": float(h > .5), "NS": float(h > .2)} for h in hard]
    value, low, high = evaluation.paired_difference(first, second, "S", samples=300)
    scores = [evaluation.score_and_ci(x, samples=10)[0] for x in (first, second)]
    assert value == pytest.approx(scores[0] - scores[1]) and 0 < low <= value <= high
    assert evaluation.paired_difference(first, second, "NS", samples=50) == (0.0, 0.0, 0.0)
    swapped = evaluation.paired_difference(second, first, "S", samples=300)
    assert swapped[0] == pytest.approx(-value) and swapped[2] == pytest.approx(-low)
    with pytest.raises(ValueError, match="same records"):
        evaluation.paired_difference(first, second[:-1], "S")


def test_ngram_entropy_matches_a_hand_computation():
    # "a b c d": 3 distinct bigrams (log2 3 bits), 2 distinct trigrams (1 bit)
    expected = (2 / 3 * math.log2(3) + 4 / 3 * 1.0) / 2
    assert fluency.ngram_entropy_of_text("a b c d") == pytest.approx(expected)
    varied = "The tower stands in Paris, near the river, and millions visit it every year."
    repetitive = "the the the the the the the the the the the the the the"
    assert fluency.ngram_entropy([varied]) > fluency.ngram_entropy([repetitive]) == 0.0
    with pytest.raises(ValueError, match="at least one text"):
        fluency.ngram_entropy([])


def test_tfidf_similarity():
    tfidf = fluency.Tfidf.fit(["Paris is in France", "Rome is in Italy", "the cat"])
    assert tfidf.idf["is"] == pytest.approx(math.log(4 / 3) + 1)
    assert tfidf.similarity("Paris is lovely", "Paris is lovely") == pytest.approx(1.0)
    assert tfidf.similarity("Paris France", "Rome Italy") == 0.0
    assert tfidf.similarity("zebra", "zebra") == 0.0  # unknown words are ignored
    assert 0 < tfidf.similarity("Paris is in Italy", "Rome is in Italy") < 1


def test_greedy_generation_with_cache_matches_recomputation(tiny_mt):
    prompts = ["The Space Needle is", "Michael Jordan plays the sport of"]
    texts = romelib.generate(tiny_mt, prompts, max_new_tokens=4)            # greedy
    for prompt, text in zip(prompts, texts):
        ids = romelib.encode(tiny_mt, prompt)
        new = []
        with torch.no_grad():
            for _ in range(4):
                logits = tiny_mt.model(torch.tensor([ids + new])).logits[0, -1]
                new.append(int(logits.argmax()))
        eos = tiny_mt.tokenizer.eos_token_id
        new = new[:new.index(eos)] if eos in new else new
        assert text == prompt + tiny_mt.tokenizer.decode(new, skip_special_tokens=True)


@pytest.fixture(scope="module")
def gpt2_tiny():
    from conftest import make_tiny_model
    return make_tiny_model("gpt2")


def test_sampling_is_reproducible(gpt2_tiny):
    a = romelib.generate(gpt2_tiny, ["Rome is"] * 3, max_new_tokens=5, top_k=5, seed=4)
    b = romelib.generate(gpt2_tiny, ["Rome is"] * 3, max_new_tokens=5, top_k=5, seed=4)
    assert a == b and all(t.startswith("Rome is") for t in a)
    state = torch.random.get_rng_state()
    romelib.generate(gpt2_tiny, ["Rome is"], max_new_tokens=3, top_k=5, seed=1)
    assert torch.equal(state, torch.random.get_rng_state())          # the caller's state is kept
    with pytest.raises(ValueError, match="top_k"):
        romelib.generate(gpt2_tiny, ["Rome is"], top_k=0)


def test_evaluate_counterfact_restores_the_model(gpt2_tiny):
    before = {n: p.detach().clone() for n, p in gpt2_tiny.model.named_parameters()}
    hparams = FTHyperParams(layer=1, lr=0.05, max_steps=15)
    result = romelib.evaluate_counterfact(gpt2_tiny, [RECORD, {**RECORD, "case_id": 8}],
                                          method="ft", hparams=hparams, progress=False)
    for name, param in gpt2_tiny.model.named_parameters():
        assert torch.equal(param, before[name]), name
    unedited = romelib.evaluate_counterfact(gpt2_tiny, [RECORD], method=None, progress=False)
    assert result.method == "ft" and unedited.method == "none"
    assert result.records[0]["edit_info"]["steps"] >= 1
    # fine-tuning on the rewrite prompt raises P(new) - P(true) there
    assert result.records[0]["metrics"]["EM"] > unedited.records[0]["metrics"]["EM"]
    assert set(result.table_row()) == {"S", "ES", "EM", "PS", "PM", "NS", "NM"}


def test_generation_metrics(gpt2_tiny):
    tfidf = fluency.Tfidf.fit(["The Space Needle is in Seattle", "Paris is in France"])
    row = evaluation.evaluate_record(gpt2_tiny, RECORD, method=None, generation=True, tfidf=tfidf,
                                     generation_settings={"max_new_tokens": 8, "reference_tokens": 6})
    assert len(row["generations"]) == 1 and row["generations"][0].startswith("The Space Needle is")
    assert row["metrics"]["GE"] >= 0 and 0 <= row["metrics"]["RS"] <= 1 + 1e-9


def test_table_run_resumes_and_refuses_mixed_settings(gpt2_tiny, tmp_path, monkeypatch):
    from romelib.experiments import table4

    def settings(lr):
        return lambda mt, name: {"none": (None, None),
                                 "ft": ("ft", FTHyperParams(layer=1, lr=lr, max_steps=3))}[name]

    monkeypatch.setattr(table4, "method_and_hparams", settings(0.05))
    records = [RECORD, {**RECORD, "case_id": 8}, {**RECORD, "case_id": 9}]
    table4.run(gpt2_tiny, records[:1], tmp_path, methods=("none", "ft"), progress=False)
    table4.run(gpt2_tiny, records, tmp_path, methods=("none", "ft"), progress=False, from_end=True)
    assert [r["case_id"] for r in results.read_jsonl(tmp_path / "ft.jsonl")] == [7, 9, 8]
    table = table4.summarize_folder(tmp_path, ("none", "ft"))
    assert table["ft"]["records"] == table["none"]["records"] == 3
    text = table4.markdown(table)
    assert text.count("\n") == 3 and "| unedited |" in text and "| FT |" in text
    monkeypatch.setattr(table4, "method_and_hparams", settings(0.01))
    with pytest.raises(ValueError, match="other settings"):
        table4.run(gpt2_tiny, records, tmp_path, methods=("none", "ft"), progress=False)


def test_table_comparisons_pair_records_by_case_id(tmp_path):
    from romelib.experiments import table4

    ns = {"none": {1: .8, 2: .6, 3: 1.0}, "rome": {3: .9, 1: .6, 2: .6, 4: 0.0}}  # 4: unfinished
    for method, values in ns.items():
        for case, value in values.items():
            results.append_jsonl(tmp_path / f"{method}.jsonl", {
                "case_id": case, "method": method, "seconds": {"total": 1.0},
                "metrics": {"ES": 1.0, "PS": 1.0, "NS": value}})
    results.append_jsonl(tmp_path / "none.jsonl", {"case_id": 1, "method": "none", "seconds": {"total": 1.0},
                                              "metrics": {"ES": 1.0, "PS": 1.0, "NS": .8}})  # saved twice
    assert table4.summarize_folder(tmp_path, ("none", "rome"))["none"]["records"] == 3
    [found] = table4.compare_folder(tmp_path, ("none", "rome"))
    assert (found["first"], found["second"], found["metric"], found["records"]) == \
        ("rome", "none", "NS", 3)
    assert found["difference"] == pytest.approx(-10.0) and found["low"] <= -10 <= found["high"]
    assert "NS: ROME - unedited | 3 | -10.0" in table4.markdown_comparisons([found])


def synthetic_sweep(score_of):
    """Edit rows and traces for 6 facts x 4 layers with a chosen edit-success rule."""
    rng = np.random.default_rng(0)
    traces, rows = [], []
    for fact in range(6):
        effects = rng.random(4).tolist()
        traces.append({"case_id": fact, "kind": "mlp", "effects": effects})
        for layer in range(4):
            value = score_of(effects[layer], layer, rng)
            rows.append({"case_id": fact, "layer": layer, "fact_token": "subject_last",
                         "rewrite_score": value,
                         "metrics": {"ES": 1.0, "PS": value > 0.5, "NS": 1.0, "PM": value, "NM": 0.0}})
    return rows, traces


def test_tracing_vs_editing_statistics():
    from romelib.experiments import where_to_edit

    rows, traces = synthetic_sweep(lambda effect, layer, rng: effect)
    exact = where_to_edit.tracing_vs_editing(rows, traces, samples=50, normalize=False)
    assert exact["r"] == pytest.approx(1.0) and exact["r2_gain"] > 0.5
    # per-fact scaling: a fact whose effects are 1000x smaller counts like the others
    scaled = [{**t, "effects": [e / 1000 for e in t["effects"]]} if t["case_id"] == 0 else t
              for t in traces]
    assert where_to_edit.tracing_vs_editing(rows, scaled, samples=20)["r"] == pytest.approx(
        where_to_edit.tracing_vs_editing(rows, traces, samples=20)["r"])
    assert exact["facts"] == 6 and exact["pairs"] == 24
    rows, traces = synthetic_sweep(lambda effect, layer, rng: layer / 4 + 0.01 * rng.random())
    layer_only = where_to_edit.tracing_vs_editing(rows, traces, "PM", samples=50)
    assert abs(layer_only["r2_gain"]) < 0.01
    assert layer_only["r_ci"][0] <= layer_only["r"] <= layer_only["r_ci"][1]
    curves = where_to_edit.layer_curves(rows)["subject_last"]
    assert curves["ES"]["layers"] == [0, 1, 2, 3] and curves["ES"]["mean"] == [100.0] * 4
    with pytest.raises(ValueError, match="at least 3 facts"):
        where_to_edit.tracing_vs_editing(rows[:8], traces)


def test_rewrite_score():
    from romelib.evaluation.metrics import rewrite_score
    assert rewrite_score(0.1, 0.82) == pytest.approx(0.8)
    assert rewrite_score(0.2, 0.2) == 0.0 and rewrite_score(0.5, 1.0) == 1.0


def test_partial_sweeps_are_summarised(tmp_path):
    from romelib.experiments import where_to_edit
    from romelib.results import append_jsonl

    rows, traces = synthetic_sweep(lambda effect, layer, rng: effect)
    two_facts = [r for r in rows if r["case_id"] < 2]
    pairs = where_to_edit.tracing_vs_editing(two_facts, traces, samples=50, resample="pairs",
                                             normalize=False)
    assert pairs["facts"] == 2 and pairs["resample"] == "pairs" and pairs["r"] == pytest.approx(1.0)
    for row in two_facts:
        append_jsonl(tmp_path / "edits.jsonl", {**row, "seconds": 1.0})
    for trace in traces:
        append_jsonl(tmp_path / "traces.jsonl", trace)
    summary = where_to_edit.summarize_results(tmp_path)
    assert summary["facts"] == [0, 1] and summary["edits"] == 8
    assert summary["correlations"][0]["resample"] == "pairs"
    assert summary["curves"]["subject_last"]["PS"]["layers"] == [0, 1, 2, 3]
    with pytest.raises(FileNotFoundError, match="where_to_edit"):
        where_to_edit.summarize_results(tmp_path / "empty")


def test_table_summary_of_a_stopped_run(gpt2_tiny, tmp_path, monkeypatch):
    from romelib.experiments import table4

    monkeypatch.setattr(table4, "method_and_hparams", lambda mt, name: (None, None))
    monkeypatch.setattr(table4, "results_folder", lambda name: tmp_path / f"table4_{name}")
    monkeypatch.setattr(table4, "select_records", lambda source, n: [RECORD, {**RECORD, "case_id": 8}])
    folder = tmp_path / "table4_demo"
    with pytest.raises(FileNotFoundError, match="romelib.experiments.table4"):
        table4.summarize_folder(folder, ("none",))
    table4.run(gpt2_tiny, [RECORD], folder, methods=("none",), progress=False)  # stopped after 1 of 2
    (folder / "settings.json").write_text('{"model": "tiny"}')
    table4.main(["--records", "demo.json", "--methods", "none", "--summarize-only"])
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["records_done"] == 1 and summary["records_requested"] == 2
    assert not summary["complete"] and summary["summarized_only"] and summary["model"] == "tiny"
    assert "--summarize-only" not in summary["command"] and (folder / "table.md").exists()
