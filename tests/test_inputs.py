"""Every input is checked: trace, edit, statistics and evaluation refuse what they cannot do,
with an error that names the parameter, and leave the weights bit-identical and no hooks.

Bad values are drawn at random (hypothesis) as well as listed: the property is that a call
either raises TypeError/ValueError naming the parameter, or is valid.
"""
import math
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import romelib
from conftest import make_tiny_model
from romelib.editing.finetune import FTHyperParams
from romelib.editing.handle import EditHandle
from romelib.editing.key_statistics import key_statistics
from romelib.editing.request import ComputedEdit, EditRequest
from romelib.tracing.corruption import Corruption

PROMPT, SUBJECT = "The Space Needle is located in the city of Seattle", "Space Needle"
REQUEST = EditRequest("{} plays the sport of", "Michael Jordan", "guitar", "basketball")
SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def mt():
    return make_tiny_model("gpt2")


def snapshot(mt):
    return {name: param.detach().clone() for name, param in mt.model.named_parameters()}


def hook_count(mt) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in mt.model.modules())


def refused(mt, call, parameter: str, errors=(TypeError, ValueError)):
    """``call()`` raises, naming ``parameter``; the weights and hooks are as they were."""
    before, hooks_before = snapshot(mt), hook_count(mt)
    with pytest.raises(errors) as error:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            call()
    assert parameter in str(error.value), (parameter, str(error.value))
    after = snapshot(mt)
    assert all(torch.equal(after[name], value) for name, value in before.items())
    assert hook_count(mt) == hooks_before
    return str(error.value)


# Values that are wrong for any count (samples, window, steps...): floats, bools, None,
# strings, and integers out of range.
NOT_A_COUNT = st.one_of(st.floats(allow_nan=True), st.booleans(), st.none(), st.text(max_size=3),
                        st.integers(max_value=0))
NOT_POSITIVE = st.one_of(st.floats(max_value=0), st.just(math.inf), st.just(-math.inf),
                         st.just(math.nan), st.booleans(), st.none(), st.text(max_size=3))


@SETTINGS
@given(value=NOT_A_COUNT)
def test_trace_refuses_bad_sample_counts(mt, value):
    refused(mt, lambda: romelib.trace(mt, PROMPT, SUBJECT, samples=value, positions=[-1]), "samples")


@SETTINGS
@given(value=NOT_A_COUNT)
def test_trace_refuses_bad_windows(mt, value):
    refused(mt, lambda: romelib.trace(mt, PROMPT, SUBJECT, kind="mlp", window=value, samples=1,
                                      positions=[-1]), "window")


@SETTINGS
@given(value=NOT_POSITIVE)
def test_trace_refuses_noise_that_is_not_positive(mt, value):
    refused(mt, lambda: romelib.trace(mt, PROMPT, SUBJECT, noise=value, sigma=0.5, samples=1,
                                      positions=[-1]), "noise")


@SETTINGS
@given(value=NOT_POSITIVE.filter(lambda v: v is not None))         # None means "measure it"
def test_sigma_zero_or_infinite_is_refused_not_replaced(mt, value):
    """sigma=0.0 once became 1.0 silently."""
    refused(mt, lambda: romelib.make_corruption(mt, "gaussian", 3.0, sigma=value), "sigma")


@SETTINGS
@given(value=st.one_of(st.none(), st.floats(), st.integers(max_value=-1), st.text(max_size=2)))
def test_trace_refuses_bad_seeds(mt, value):
    refused(mt, lambda: romelib.trace(mt, PROMPT, SUBJECT, seed=value, samples=1, positions=[-1]),
            "seed")


@pytest.mark.parametrize("arguments, parameter", [
    (dict(prompt=123), "prompt"), (dict(prompt="  "), "prompt"), (dict(subject=None), "subject"),
    (dict(subject="pace Need"), "cuts through a token"), (dict(subject="space needle"), "spells it"),
    (dict(target=""), "target"), (dict(target=5), "target"), (dict(kind="neurons"), "kind"),
    (dict(engine="gpu"), "engine"), (dict(sever="mlp", kind="attn"), "sever"),
    (dict(positions=[99]), "positions"), (dict(positions="3"), "positions"),
    (dict(positions=[1.5]), "positions"), (dict(corruption="blur"), "corruption"),
    (dict(corruption=42), "corruption")])
def test_trace_refuses_listed_bad_inputs(mt, arguments, parameter):
    call = dict(prompt=PROMPT, subject=SUBJECT, samples=1, positions=[-1])
    call.update(arguments)
    prompt = call.pop("prompt")
    refused(mt, lambda: romelib.trace(mt, prompt, **call), parameter)


def test_a_repeated_subject_is_refused_until_an_occurrence_is_chosen(mt):
    prompt = "Paris is a city, and Paris is the capital of"
    message = refused(mt, lambda: romelib.trace(mt, prompt, "Paris", samples=1), "occurrence")
    assert "occurrence=0" in message and "occurrence=1" in message
    first = romelib.trace(mt, prompt, "Paris", samples=1, occurrence=0, corruption="zero")
    second = romelib.trace(mt, prompt, "Paris", samples=1, occurrence=1, corruption="zero")
    assert first.subject_range != second.subject_range
    assert second.settings["occurrence"] == 1


def test_a_multi_token_target_is_scored_as_the_whole_answer(mt):
    """P("San Francisco") is the product over its tokens, teacher-forced, in every score."""
    prompt, subject, target = "The Space Needle is located in the city of", "Space Needle", "Seattle Paris"
    result = romelib.trace(mt, prompt, subject, target=target, samples=2, positions=[2, 3])
    assert len(result.target_ids) > 1 and result.target.strip() == target
    whole = romelib.target_probability(mt, prompt, target).probability
    assert result.high_score == pytest.approx(whole, rel=1e-4)
    assert "tokens" in result.probability_label
    reference = romelib.trace(mt, prompt, subject, target=target, samples=2, positions=[2, 3],
                              engine="reference")
    torch.testing.assert_close(result.scores, reference.scores, equal_nan=True, atol=1e-5, rtol=1e-4)
    first_only = romelib.trace(mt, prompt, subject, target=target.split()[0], samples=2, positions=[2])
    assert first_only.high_score > result.high_score           # the whole answer is less likely


def test_a_long_prompt_is_refused_with_an_estimate(mt):
    long_prompt = "The Space Needle is located in the city of " + "and then " * 30
    message = refused(mt, lambda: romelib.trace(mt, long_prompt, SUBJECT, max_seconds=1e-4),
                      "max_seconds")
    assert "GFLOP" in message and "max_seconds=None" in message
    too_long = "The Space Needle is located in " + "very " * 300
    refused(mt, lambda: romelib.trace(mt, too_long, SUBJECT, max_seconds=None), "context")


# --- editing -------------------------------------------------------------------------------

BAD_ROME = [
    ("clamp_norm_factor", -1), ("clamp_norm_factor", 0), ("v_num_grad_steps", 0),
    ("v_num_grad_steps", 2.5), ("v_lr", 0), ("v_lr", math.nan), ("kl_factor", -0.1),
    ("layer", "5"), ("layer", -1), ("layer", 99), ("layer", 1.0), ("kl_token", "middle"),
    ("kl_prompts", []), ("kl_prompts", ["no subject"]), ("context_lengths", [0]),
    ("mom2_max_tokens", 0), ("early_stop_nll", -1), ("update_key", "mean"), ("fact_token", "first"),
    ("identity_covariance", "yes"), ("unknown_key", 1)]


@pytest.mark.parametrize("name, value", BAD_ROME)
def test_edit_refuses_bad_rome_hyperparameters(mt, name, value):
    hparams = {"layer": 1, "v_num_grad_steps": 2, "identity_covariance": True, name: value}
    refused(mt, lambda: romelib.edit(mt, REQUEST, hparams=hparams), name)


@pytest.mark.parametrize("name, value", [("lr", 0), ("max_steps", 0), ("norm_constraint", 0),
                                         ("norm_constraint", -1e-3), ("layer", -2), ("layer", "1")])
def test_fine_tuning_refuses_bad_hyperparameters(mt, name, value):
    for method in ("ft", "ft+l"):
        hparams = {"layer": 1, "norm_constraint": 1e-3, name: value}
        refused(mt, lambda method=method, hparams=hparams: romelib.edit(mt, REQUEST, method=method,
                                                                        hparams=hparams), name)


def test_fine_tuning_accepts_a_dict_like_rome(mt):
    with romelib.edit(mt, REQUEST, method="ft", hparams={"layer": 1, "max_steps": 2}) as handle:
        assert handle.hparams == FTHyperParams(layer=1, max_steps=2)


@pytest.mark.parametrize("request_, parameter", [
    (None, "EditRequest"), ("Michael Jordan plays", "EditRequest"),
    ({"prompt": "{} plays", "subject": "Michael Jordan"}, "target_new"),
    ({"prompt": "{} plays", "subject": "Michael Jordan", "target_new": {"str": None}}, "target_new"),
    ({"prompt": "{} plays", "subject": "Michael Jordan", "target_new": {"text": "golf"}}, "target_new"),
    ({"prompt": "{} plays", "subject": None, "target_new": "golf"}, "subject"),
    ({"prompt": "{} {} plays", "subject": "Michael Jordan", "target_new": "golf"}, "prompt"),
    ({"prompt": "Michael Jordan plays", "subject": "Jordan Michael", "target_new": "golf"}, "subject"),
    ({"prompt": "Michael Jordan plays", "subject": "ichael Jorda", "target_new": "golf"},
     "cuts through a token"),
    ({"prompt": "{} plays", "subject": "Michael Jordan", "target_new": "golf",
      "target_true": "golf"}, "target_true")])
def test_edit_refuses_bad_requests(mt, request_, parameter):
    hparams = {"layer": 1, "v_num_grad_steps": 2, "identity_covariance": True}
    refused(mt, lambda: romelib.edit(mt, request_, hparams=hparams), parameter)


def test_edit_refuses_an_unknown_method_and_long_work(mt):
    refused(mt, lambda: romelib.edit(mt, REQUEST, method="mend"), "method")
    refused(mt, lambda: romelib.edit(mt, REQUEST, hparams={"layer": 1}, max_seconds=1e-9), "max_seconds")


def _two_matrix_change(mt):
    names = [mt.module_name("mlp_proj", layer) + ".weight" for layer in (0, 1)]
    params = dict(mt.model.named_parameters())
    return ComputedEdit(deltas={n: torch.ones_like(params[n]) for n in names})


def test_an_edit_applies_all_its_changes_or_none(mt, monkeypatch):
    """A failure (or Ctrl-C) while the second matrix is written leaves the first unchanged too."""
    change = _two_matrix_change(mt)
    calls = []

    def interrupted(param, delta):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        param.add_(delta)
    monkeypatch.setattr(EditHandle, "_apply", staticmethod(interrupted))
    refused(mt, lambda: EditHandle(mt, REQUEST, "rome", None, change), "", errors=KeyboardInterrupt)
    assert len(calls) == 2


@pytest.mark.parametrize("damage, parameter", [
    (lambda d: {**d, "not.a.parameter": torch.zeros(1)}, "not a parameter"),
    (lambda d: {k: v[:, :3] for k, v in d.items()}, "shape"),
    (lambda d: {k: v * math.nan for k, v in d.items()}, "NaN")])
def test_a_damaged_change_is_refused_before_any_weight_moves(mt, damage, parameter):
    change = _two_matrix_change(mt)
    refused(mt, lambda: EditHandle(mt, REQUEST, "rome", None, ComputedEdit(damage(change.deltas))),
            parameter)


# --- statistics, evaluation, tokens --------------------------------------------------------

@pytest.mark.parametrize("arguments, parameter", [
    (dict(layer=-1), "layer"), (dict(layer=99), "layer"), (dict(layer="2"), "layer"),
    (dict(layer=1, max_tokens=0), "max_tokens"), (dict(layer=1, max_tokens=1.5), "max_tokens"),
    (dict(layer=1, source=""), "source"), (dict(layer=1, source=5), "source"),
    (dict(layer=1, source="books"), "books")])
def test_statistics_refuse_bad_arguments(mt, arguments, parameter):
    refused(mt, lambda: key_statistics(mt, **arguments), parameter)


@pytest.mark.parametrize("call, parameter", [
    (lambda mt: romelib.evaluate_counterfact(mt, [], progress=False), "records"),
    (lambda mt: romelib.evaluate_counterfact(mt, "records.json", progress=False), "records"),
    (lambda mt: romelib.evaluate_record(mt, {"case_id": 1}), "requested_rewrite"),
    (lambda mt: romelib.predict(mt, PROMPT, k=0), "k"),
    (lambda mt: romelib.predict(mt, 123), "prompts"),
    (lambda mt: romelib.predict(mt, []), "prompts"),
    (lambda mt: romelib.target_probability(mt, PROMPT, None), "target"),
    (lambda mt: romelib.generate(mt, [PROMPT], 0), "max_new_tokens"),
    (lambda mt: romelib.generate(mt, [PROMPT], 3, top_k=0), "top_k")])
def test_evaluation_and_tokens_refuse_bad_arguments(mt, call, parameter):
    refused(mt, lambda: call(mt), parameter)


def test_an_unknown_method_in_evaluation_is_refused(mt):
    record = {"case_id": 1, "requested_rewrite": {"prompt": "{} plays the sport of",
                                                  "subject": "Michael Jordan",
                                                  "target_new": {"str": "guitar"},
                                                  "target_true": {"str": "basketball"}},
              "paraphrase_prompts": ["Michael Jordan is"], "neighborhood_prompts": ["Bob plays"],
              "attribute_prompts": ["Toko plays"], "generation_prompts": ["Michael Jordan"]}
    refused(mt, lambda: romelib.evaluate_record(mt, record, method="memo"), "method")


def test_corruptions_without_noise_ignore_it_and_say_so(mt):
    assert Corruption("zero", noise=0.0).describe() == "subject embeddings set to zero"
    zero = romelib.make_corruption(mt, "zero", noise=7.0)
    assert zero.noise == 0.0 and zero.std == 0.0


# --- found by a second reader's replay of bad inputs -----------------------------------------

@pytest.mark.parametrize("subject", [" Space Needle", "Space Needle ", "\tSpace Needle"])
def test_a_subject_with_outer_whitespace_is_refused_alike_in_trace_and_edit(mt, subject):
    """Trace used to strip it and edit to keep it (another prompt, a 51% different update)."""
    traced = refused(mt, lambda: romelib.trace(mt, PROMPT, subject, samples=1), "subject")
    request = {"prompt": "{} is located in the city of", "subject": subject, "target_new": {"str": "Paris"}}
    edited = refused(mt, lambda: romelib.edit(mt, request, hparams={"layer": 1, "identity_covariance": True}),
                     "subject")
    assert traced == edited and "'Space Needle'" in traced


def test_an_edit_request_with_an_unknown_key_is_refused(mt):
    """A misspelled target_true would silently skip the check that the new target differs."""
    request = {"prompt": "{} plays the sport of", "subject": "Michael Jordan", "target_new": {"str": "golf"},
               "target_ture": {"str": "golf"}}
    message = refused(mt, lambda: romelib.edit(mt, request, hparams={"layer": 1}), "target_ture")
    assert "target_true" in message


def test_ft_with_a_norm_bound_is_refused_not_run_as_ft_plus_l(mt):
    message = refused(mt, lambda: romelib.edit(mt, REQUEST, method="ft",
                                               hparams={"layer": 1, "norm_constraint": 1e-4}),
                      "norm_constraint")
    assert "ft+l" in message


@pytest.mark.parametrize("layers", [5, "3,4", [1, "2"], [-1, 1], [1, 1]])
def test_memit_refuses_bad_layer_lists(mt, layers):
    refused(mt, lambda: romelib.edit(mt, [REQUEST], method="memit", hparams={"layers": layers}), "layers")


def test_memit_refuses_two_answers_to_one_prompt(mt):
    other = EditRequest(REQUEST.prompt, REQUEST.subject, "tennis")
    refused(mt, lambda: romelib.edit(mt, [REQUEST, other], method="memit", hparams={"layers": [0, 1]}),
            "same prompt")


@pytest.mark.parametrize("name, value", [("layer", -1), ("layer", -13)])
def test_a_negative_layer_in_hyperparameters_names_the_setting_and_the_rule(mt, name, value):
    message = refused(mt, lambda: romelib.edit(mt, REQUEST, hparams={name: value}), "hparams.layer")
    assert "0" in message and "negative" in message


@pytest.mark.parametrize("arguments, parameter", [
    (dict(corruption="zero", noise=-1), "noise=-1"), (dict(corruption="zero", sigma=-1), "sigma=-1"),
    (dict(corruption="replace", noise=5.0), "noise=5.0"),
    (dict(max_seconds="10"), "max_seconds"), (dict(max_seconds=0), "max_seconds"),
    (dict(progress="yes"), "progress")])
def test_trace_refuses_settings_it_would_ignore_or_misread(mt, arguments, parameter):
    refused(mt, lambda: romelib.trace(mt, PROMPT, SUBJECT, samples=1, positions=[-1], **arguments), parameter)


def test_trace_refuses_noise_beside_a_corruption_that_has_its_own(mt):
    corruption = romelib.make_corruption(mt, "gaussian", 3.0, sigma=0.5)
    refused(mt, lambda: romelib.trace(mt, PROMPT, SUBJECT, samples=1, corruption=corruption, noise=5.0),
            "make_corruption")


def test_statistics_refuse_a_misread_flag_and_a_missing_file_of_text(mt):
    refused(mt, lambda: key_statistics(mt, 1, max_tokens=1000, recompute="no"), "recompute")
    message = refused(mt, lambda: key_statistics(mt, 1, source="file:/nonexistent/corpus.txt", max_tokens=1000),
                      "/nonexistent/corpus.txt", errors=(TypeError, ValueError, RuntimeError))
    assert "never replaced" in message


def test_an_edit_estimate_counts_the_key_statistics_it_must_compute(mt, tmp_path, monkeypatch):
    """C over a whole text takes minutes: the cost guard counts it when no saved file exists."""
    from romelib.editing.key_statistics import statistics_work

    monkeypatch.setenv("ROMELIB_CACHE", str(tmp_path))
    missing = statistics_work(mt, [1], "wikitext-2", 10_000)
    assert missing.flops > 0 and "[1]" in missing.description
    assert statistics_work(mt, [1], "wikitext-2", None).flops > missing.flops
    message = refused(mt, lambda: romelib.edit(mt, REQUEST, hparams={"layer": 1, "mom2_max_tokens": 10_000},
                                               max_seconds=1e-6), "max_seconds")
    assert "key statistics" in message


def test_a_long_prompt_costs_its_whole_length_even_when_the_subject_comes_last(mt):
    """The clean and corrupted runs, attention over the whole context and the key/value caches
    grow with the prompt; a trace of the last 10 positions of 2,000 tokens is not a trace of 10."""
    from romelib.tracing.trace import trace_work

    short = trace_work(mt, 12, 1, range(12), (2, 4), "hidden", 2, "fast")
    long = trace_work(mt, 2000, 1, range(2000), (1990, 1992), "hidden", 2, "fast")
    assert long.flops > 50 * short.flops and long.memory_bytes > short.memory_bytes


@pytest.mark.parametrize("call, parameter", [
    (lambda mt: romelib.load_counterfact("project", n=-1), "n"),
    (lambda mt: romelib.load_counterfact("project", n=2.5), "n"),
    (lambda mt: romelib.load_counterfact("project", n="5"), "n"),
    (lambda mt: romelib.paired_difference([{"ES": 1.0}], [{"ES": 0.0}], "ES", samples=0), "samples"),
    (lambda mt: romelib.paired_difference([{"ES": 1.0}], [{"ES": 0.0}], "ES", samples=2.5), "samples"),
    (lambda mt: romelib.paired_difference([{"ES": 1.0}], [{"ES": 0.0}], "foo"), "metric"),
    (lambda mt: romelib.evaluate_counterfact(mt, [{}], method=None, max_new_token=5), "max_new_token"),
    (lambda mt: romelib.score_record(mt, None), "record"),
    (lambda mt: romelib.record_metrics(None), "scores"),
    (lambda mt: romelib.record_metrics({}), "scores"),
    (lambda mt: romelib.ngram_entropy(None), "texts"),
    (lambda mt: romelib.ngram_entropy(5), "texts"),
    (lambda mt: romelib.ngram_entropy(["a text", 5]), "texts"),
    (lambda mt: romelib.predict(mt, PROMPT, k=10**9), "k"),
    (lambda mt: romelib.facts_known_by(mt, romelib.load_facts("project")[:2], batch_size=0), "batch_size")])
def test_evaluation_and_data_refuse_more_bad_arguments(mt, call, parameter):
    refused(mt, lambda: call(mt), parameter)
