"""Position groups, average indirect effects with confidence intervals, the resumable run,
the fact loaders and the figure registry."""
import json
import math
import urllib.request

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import romelib
from romelib.datasets import facts as data
from romelib.experiments import averages as runner
from romelib.paths import project_data
from romelib.results import read_jsonl
from romelib.tracing import averages
from romelib.tracing.averages import POSITION_GROUPS as GROUPS
from romelib.tracing.averages import average_effects, group_effects, position_groups

PROMPT = "The Space Needle is located in the city of Seattle"


def test_position_groups_follow_the_paper():
    groups = position_groups((2, 5), 10)   # <bos> The [A B C] is ... of
    assert groups == {"first subject token": [2], "middle subject tokens": [3],
                      "last subject token": [4], "first subsequent token": [5],
                      "further tokens": [6, 7, 8], "last token": [9]}
    one_token = position_groups((1, 2), 4)
    assert one_token["first subject token"] == one_token["last subject token"] == [1]
    assert one_token["middle subject tokens"] == [] and one_token["further tokens"] == []
    assert one_token["first subsequent token"] == [2]


def test_group_effects_average_within_groups():
    scores = torch.arange(40, dtype=torch.float64).view(10, 4) / 100
    effects = group_effects(scores, 0.05, (2, 5), 10)
    assert effects.shape == (len(GROUPS), 4)
    torch.testing.assert_close(effects[GROUPS.index("further tokens")],
                               scores[6:9].mean(0) - 0.05)
    middle = group_effects(scores, 0.0, (2, 3), 10)[GROUPS.index("middle subject tokens")]
    assert torch.isnan(middle).all()


def _record(scores, low, high, subject_range):
    return {"hidden": {"scores": scores}, "low_score": low, "high_score": high,
            "subject_range": list(subject_range), "length": len(scores)}


def test_average_effects_mean_and_confidence_interval_by_hand():
    rng = np.random.default_rng(0)
    records = [_record(rng.random((6, 3)).round(4).tolist(), 0.1 * i, 0.5, (1, 3))
               for i in range(5)]
    result = average_effects(records, "hidden")
    per_fact = np.array([np.array(r["hidden"]["scores"])[2] - r["low_score"] for r in records])
    index = GROUPS.index("last subject token")
    np.testing.assert_allclose(result.mean[index], per_fact.mean(0), rtol=1e-5)
    np.testing.assert_allclose(result.ci[index],
                               1.96 * per_fact.std(0, ddof=1) / math.sqrt(5), rtol=1e-5)
    assert result.counts[GROUPS.index("middle subject tokens")] == 0
    assert torch.isnan(result.mean[GROUPS.index("middle subject tokens")]).all()
    assert result.low_score == pytest.approx(0.2) and result.facts == 5
    best, layer = result.headline()["last subject token"]
    assert best == pytest.approx(per_fact.mean(0).max(), rel=1e-5)
    assert layer == int(per_fact.mean(0).argmax())


def test_trace_facts_resumes_and_summarizes(tmp_path, monkeypatch):
    from conftest import make_tiny_model
    mt = make_tiny_model("gpt2")
    facts = [romelib.Fact(PROMPT, "Space Needle", "Seattle"),
             romelib.Fact("Michael Jordan plays the sport of", "Michael Jordan", "basketball"),
             romelib.Fact("The Eiffel Tower is in Paris", "Eiffel Tower", "Paris")]
    corruption = romelib.Corruption("gaussian", 3.0, 0.05)
    path = tmp_path / "run.jsonl"
    options = dict(corruption=corruption, samples=2, window=2, path=path, progress=False)
    first = averages.trace_facts(mt, facts[:2], **options)
    calls = []
    original = averages.trace_fact
    monkeypatch.setattr(averages, "trace_fact", lambda *a, **k: calls.append(a[1]) or original(*a, **k))
    records = averages.trace_facts(mt, facts, **options)
    assert [fact.subject for fact in calls] == ["Eiffel Tower"]
    assert len(records) == 3 and len(path.read_text().splitlines()) == 3
    assert records[:2] == first
    assert set(records[0]["severed"]) == {"none", "mlp", "attn"}
    summary = averages.summarize(records, {"model": mt.name})
    json.dumps(summary)
    assert set(summary["kinds"]) == {"hidden", "mlp", "attn"}
    assert len(summary["severed"]["mlp"]["mean"]) == mt.num_layers
    hidden = averages.averages_from_summary(summary, "hidden")
    assert hidden.mean.shape == (len(GROUPS), mt.num_layers)


def test_full_run_refuses_to_mix_settings(tmp_path):
    out = tmp_path / "run.jsonl"
    settings = {"model": "m", "source": "known_1000", "samples": 10, "noise": 3.0, "window": 10,
                "seed": 0, "facts_selected": 5, "sigma": 1.0}
    runner.check_resumable(out, settings)                    # nothing traced yet
    out.write_text('{"fact": {}}\n')
    runner.check_resumable(out, dict(settings))              # same settings: resume
    with pytest.raises(ValueError, match="samples"):
        runner.check_resumable(out, {**settings, "samples": 3})
    with pytest.raises(ValueError, match="sigma"):
        runner.check_resumable(out, {**settings, "sigma": 1.1})


def test_fact_records_and_loaders(tmp_path, monkeypatch):
    fact = data.Fact.from_dict({"subject": "Rome", "attribute": "Italy",
                                "template": "{} is the capital of", "known_id": 4})
    assert fact.prompt == "Rome is the capital of" and fact.known_id == 4
    with pytest.raises(ValueError, match="'attribute'"):
        data.Fact.from_dict({"subject": "Rome", "prompt": "Rome is"})
    path = tmp_path / "facts.json"
    path.write_text(json.dumps([fact.to_dict()]))
    assert data.load_facts(path) == [fact]
    with pytest.raises(FileNotFoundError, match="known_1000"):
        data.load_facts(tmp_path / "missing.json")


def test_known_1000_offline_error_is_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("ROMELIB_SHARED_DATA", str(tmp_path / "absent"))
    monkeypatch.setenv("ROMELIB_CACHE", str(tmp_path / "cache"))

    monkeypatch.delenv("ROMELIB_DATA_MIRROR", raising=False)

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(FileNotFoundError, match="known_1000 is not on this machine") as error:
        data.load_facts("known_1000")
    message = str(error.value)          # one line: what to run, where to put the file, why
    assert "\n" not in message and "network is unreachable" in message
    assert '"python -m romelib.datasets.download known_1000"' in message


def test_known_1000_from_shared_data(shared_data):
    facts = data.load_facts("known_1000")
    assert len(facts) > 1000 and all(f.subject.lower() in f.prompt.lower() for f in facts)


def test_project_facts_are_in_known_1000_format():
    if not project_data("known_facts.json").is_file():
        pytest.skip("data/known_facts.json is not written yet")
    facts = data.load_facts("project")
    assert len(facts) >= 150
    assert all(f.subject.lower() in f.prompt.lower() and f.attribute for f in facts)


def test_figure_registry():
    from romelib.experiments import reproduce
    figures = reproduce.all_figures()
    assert {"figure1_causal_traces", "figure2_average_indirect_effects",
            "figure3_severed_paths"} <= set(figures)
    with pytest.raises(ValueError, match="Unknown figure"):
        reproduce.reproduce(only=["figure99"])


def _saved_run():
    try:
        summary = runner.load_summary()
    except FileNotFoundError:
        pytest.skip("no saved full run in data/tracing yet")
    records = read_jsonl(runner.run_path("gemma-3-270m", "known_1000"), key=averages.fact_key)
    return summary, records


def test_saved_summary_matches_its_records():
    """The saved summary is what ``--summarize-only`` computes from the facts it counts.

    The full run may still be appending to the .jsonl (a partial run is fine): the summary
    covers its first ``facts_traced`` records.
    """
    summary, records = _saved_run()
    settings = summary["settings"]
    traced = settings["facts_traced"]
    assert 1 <= traced <= len(records) <= settings["facts_selected"]
    keys = [(r["fact"]["prompt"], r["fact"]["subject"]) for r in records]
    assert len(set(keys)) == len(keys), "a fact was traced twice"
    # corrupting the subject lowers the answer's probability for almost every fact (it can
    # raise it: for "Palau" the noise makes the answer likelier, 0.106 -> 0.164)
    assert sum(r["high_score"] > r["low_score"] for r in records) >= 0.95 * len(records)
    again = averages.summarize(records[:traced], summary["settings"])
    for kind in ("hidden", "mlp", "attn"):
        saved, recomputed = summary["kinds"][kind], again["kinds"][kind]
        assert saved["facts"] == traced and saved["counts"] == recomputed["counts"]
        np.testing.assert_allclose(np.array(saved["mean"], dtype=float),
                                   np.array(recomputed["mean"], dtype=float), atol=1e-6)
        np.testing.assert_allclose(np.array(saved["ci"], dtype=float),
                                   np.array(recomputed["ci"], dtype=float), atol=1e-6)
    for sever in averages.SEVERED:
        np.testing.assert_allclose(summary["severed"][sever]["mean"],
                                   again["severed"][sever]["mean"], atol=1e-6)


def test_saved_results_show_the_paper_pattern_and_draw(tmp_path):
    """The saved run shows the paper's pattern, and figures 2 and 3 are drawn from it."""
    from romelib.experiments import reproduce
    summary, _ = _saved_run()
    traced = summary["settings"]["facts_traced"]
    if traced < 10:
        pytest.skip(f"the saved run summarizes only {traced} facts; the pattern is checked on "
                    ">= 10 (python -m romelib.experiments.averages --source known_1000 --summarize-only)")
    hidden, mlp, attn = (averages.averages_from_summary(summary, k) for k in ("hidden", "mlp", "attn"))
    layers = hidden.mean.shape[1]
    last_subject, last = GROUPS.index("last subject token"), GROUPS.index("last token")
    late = slice(2 * layers // 3, layers)
    assert int(hidden.mean[last_subject].argmax()) < 2 * layers // 3        # the paper's pattern
    assert hidden.mean[last, late].mean() > hidden.mean[last_subject, late].mean()
    assert mlp.mean[last_subject].max() > attn.mean[last_subject].max()
    severed = {k: torch.tensor(v["mean"]) for k, v in summary["severed"].items()}
    lower = slice(0, layers // 2)                                           # Figure 3
    assert severed["mlp"][lower].mean() < severed["attn"][lower].mean() < severed["none"][lower].mean()
    written = reproduce.reproduce(tmp_path, only=["figure2_average_indirect_effects",
                                                  "figure3_severed_paths"])
    assert [p.name for p in written] == ["figure2_average_indirect_effects.png",
                                         "figure3_severed_paths.png"]
    assert all(p.stat().st_size > 10_000 for p in written)


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=30), fraction=st.floats(0.05, 1.0))
def test_critical_layers_are_the_contiguous_run_around_the_peak(values, fraction):
    from romelib.tracing.averages import critical_layers
    if max(values) <= 0:
        with pytest.raises(ValueError, match="no positive peak"):
            critical_layers(torch.tensor(values), fraction)
        return
    layers = critical_layers(torch.tensor(values, dtype=torch.float64), fraction)
    peak = max(values)
    assert layers == list(range(layers[0], layers[-1] + 1))                  # contiguous
    assert any(values[i] == peak for i in layers)                            # holds a peak
    assert all(values[i] >= fraction * peak for i in layers)                 # all strong enough
    for edge in (layers[0] - 1, layers[-1] + 1):                             # and it cannot grow
        if 0 <= edge < len(values):
            assert values[edge] < fraction * peak
