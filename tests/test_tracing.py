"""Causal tracing: properties of restorations, the fast engine against the reference one,
and the resumed forward against the full forward on every architecture."""
import math

import pytest
import torch

import romelib
from romelib.core.hooks import hooks
from romelib.tracing.corruption import Corruption, corrupt_embeddings
from romelib.tracing.fast import make_jobs, record_runs, run_jobs
from romelib.tracing.reference import restored_probability, window_layers

PROMPT = "The Space Needle is located in the city of Seattle"
SUBJECT = "Space Needle"
SHORT = "The Space Needle is in Seattle"


def _corruption(mt, noise=3.0):
    return Corruption("gaussian", noise, romelib.embedding_sigma(mt, ["Space Needle", "Eiffel Tower"]))


@pytest.mark.parametrize("kind,sever", [("hidden", None), ("attn", None), ("hidden", "mlp")])
def test_fast_engine_equals_reference(tiny_mt, kind, sever):
    if sever and tiny_mt.name not in ("tiny-gpt2", "tiny-gemma3_text"):
        pytest.skip("severing is architecture-independent; checked on two architectures")
    options = dict(kind=kind, sever=sever, samples=2, window=3, corruption=_corruption(tiny_mt))
    fast = romelib.trace(tiny_mt, SHORT, SUBJECT, **options)
    reference = romelib.trace(tiny_mt, SHORT, SUBJECT, engine="reference", **options)
    assert fast.scores.shape == reference.scores.shape == (len(fast.tokens), tiny_mt.num_layers)
    torch.testing.assert_close(fast.scores, reference.scores, rtol=0, atol=1e-6)
    assert fast.low_score == pytest.approx(reference.low_score, abs=1e-6)
    assert fast.target_id == reference.target_id


@pytest.mark.parametrize("window", [1, 2, 5, 10])
def test_fast_engine_equals_reference_for_every_window(window):
    """Windows clipped at layer 0 share their first layers in the fast engine (and a window
    wider than the model is clipped at both ends): the numbers must not change."""
    from conftest import make_tiny_model
    mt = make_tiny_model("mistral")
    options = dict(kind="mlp", samples=2, window=window, corruption=_corruption(mt))
    fast = romelib.trace(mt, SHORT, SUBJECT, **options)
    reference = romelib.trace(mt, SHORT, SUBJECT, engine="reference", **options)
    torch.testing.assert_close(fast.scores, reference.scores, rtol=0, atol=1e-6)


def test_resumed_run_equals_full_run(tiny_mt):
    """run_jobs (blocks called directly, earlier positions from a cache) reproduces the
    model's own forward with the same state restored, for every architecture."""
    ids = torch.tensor([romelib.encode(tiny_mt, PROMPT)])
    embeddings = corrupt_embeddings(tiny_mt, _corruption(tiny_mt), PROMPT, SUBJECT, 2, seed=1)
    runs = record_runs(tiny_mt, ids, embeddings, [0], ["mlp"])
    start = romelib.find_subject_range(tiny_mt, PROMPT, SUBJECT)[0]
    for kind in ("hidden", "mlp"):
        for position in (start, ids.shape[1] - 2):
            jobs = make_jobs(runs, position, kind, 3, None)
            resumed = run_jobs(tiny_mt, runs, jobs, position).view(len(jobs), 2, -1)
            for index, job in enumerate(jobs):
                full = _full_run_last_state(tiny_mt, ids, embeddings, runs, kind, position, job.layer)
                torch.testing.assert_close(resumed[index], full, rtol=1e-4, atol=1e-5)


def _full_run_last_state(mt, ids, embeddings, runs, kind, position, layer):
    names = ([f"block.{layer}"] if kind == "hidden"
             else [f"{kind}.{m}" for m in window_layers(layer, 3, mt.num_layers)])
    last = f"block.{mt.num_layers - 1}"

    def edit(output, name):
        if name == "embed":
            return embeddings
        if name in names:
            output = output.clone()
            clean = runs.clean_blocks[layer] if kind == "hidden" else runs.clean_parts[name]
            output[:, position] = clean[0, position]
        return output
    with hooks(mt, ["embed", *names, last], edit_output=edit) as acts, torch.no_grad():
        mt.model(input_ids=ids.repeat(embeddings.shape[0], 1))
    return acts[last].output[:, -1]


def test_restoring_everything_or_nothing(tiny_mt):
    corruption = _corruption(tiny_mt)
    length = len(romelib.encode(tiny_mt, PROMPT))
    clean = romelib.next_token_probs(tiny_mt, PROMPT)[0]
    target = int(clean.argmax())
    everything = restored_probability(tiny_mt, PROMPT, SUBJECT,
                                      [(p, "block.0") for p in range(length)], corruption, 3)
    nothing = restored_probability(tiny_mt, PROMPT, SUBJECT, [], corruption, 3)
    result = romelib.trace(tiny_mt, PROMPT, SUBJECT, samples=3, corruption=corruption)
    assert everything == pytest.approx(float(clean[target]), abs=1e-6)
    assert nothing == pytest.approx(result.low_score, abs=1e-6)
    assert result.high_score == pytest.approx(float(clean[target]), abs=1e-6)
    # the last position's final state is the clean one: the clean probability comes back
    assert result.scores[-1, -1].item() == pytest.approx(result.high_score, abs=1e-6)
    # positions before the subject are the same in both runs: restoring them does nothing
    start = result.subject_range[0]
    assert torch.allclose(result.scores[:start], torch.tensor(result.low_score), atol=1e-6)
    one = restored_probability(tiny_mt, PROMPT, SUBJECT, [(start + 1, "block.2")], corruption, 3)
    assert one == pytest.approx(result.scores[start + 1, 2].item(), abs=1e-6)


@pytest.mark.parametrize("arch", ["gpt2", "gemma3_text"])
def test_frozen_states_sever_like_the_trace(arch):
    """restored_probability with later MLP (attention) outputs frozen is trace(..., sever=...)."""
    from conftest import make_tiny_model
    mt = make_tiny_model(arch)
    with torch.no_grad():        # larger weights than at initialisation: freezing then changes the answer
        for parameter in mt.model.parameters():
            if parameter.ndim == 2:
                parameter.mul_(10)
    corruption = _corruption(mt)
    position, layer = romelib.find_subject_range(mt, SHORT, SUBJECT)[1] - 1, 1
    for sever in ("mlp", "attn"):
        result = romelib.trace(mt, SHORT, SUBJECT, sever=sever, samples=2, corruption=corruption,
                               positions=[position])
        frozen = [(position, f"{sever}.{k}") for k in range(layer + 1, mt.num_layers)]
        severed = restored_probability(mt, SHORT, SUBJECT, [(position, f"block.{layer}")], corruption, 2,
                                       frozen=frozen)
        assert severed == pytest.approx(result.scores[position, layer].item(), abs=1e-7)
        plain = restored_probability(mt, SHORT, SUBJECT, [(position, f"block.{layer}")], corruption, 2)
        assert abs(severed - plain) > 1e-5


def test_fixed_seed_gives_identical_results(tiny_mt):
    corruption = _corruption(tiny_mt)
    first = romelib.trace(tiny_mt, PROMPT, SUBJECT, samples=2, corruption=corruption, seed=3)
    again = romelib.trace(tiny_mt, PROMPT, SUBJECT, samples=2, corruption=corruption, seed=3)
    other = romelib.trace(tiny_mt, PROMPT, SUBJECT, samples=2, corruption=corruption, seed=4)
    assert torch.equal(first.scores, again.scores) and first.low_score == again.low_score
    assert not torch.equal(first.scores, other.scores)


@pytest.mark.parametrize("arch", ["llama"])
def test_result_fields_and_settings(arch):
    from conftest import make_tiny_model
    mt = make_tiny_model(arch)
    result = romelib.trace(mt, PROMPT, SUBJECT, kind="mlp", samples=2, window=2, target="Seattle",
                           corruption="uniform", noise=2.0, positions=[-1, -2])
    assert result.kind == "mlp" and result.settings["corruption"] == "uniform"
    assert result.settings["window"] == 2 and result.settings["samples"] == 2
    assert result.target_id == romelib.target_tokens(mt, PROMPT, "Seattle")[1][0]
    assert torch.isnan(result.scores[0]).all() and not torch.isnan(result.scores[-1]).any()
    restored = romelib.TraceResult.from_dict(result.to_dict())
    assert torch.allclose(restored.scores, result.scores, equal_nan=True, atol=1e-6)
    assert math.isclose(result.total_effect, result.high_score - result.low_score)


@pytest.mark.parametrize("bad,message", [
    (dict(kind="neurons"), "kind must be one of"), (dict(engine="turbo"), "engine must be one of"),
    (dict(sever="mlp", kind="mlp"), "sever"), (dict(samples=0), "samples must be an int >= 1, got 0"),
    (dict(corruption="blur"), "corruption must be one of"), (dict(subject="Eiffel Tower"), "does not occur")])
def test_bad_input_says_what_to_do(bad, message):
    from conftest import make_tiny_model
    mt = make_tiny_model("gpt2")
    arguments = dict(subject=SUBJECT, samples=1, corruption=Corruption("gaussian", 3.0, 0.1))
    arguments.update(bad)
    with pytest.raises(ValueError, match=message):
        romelib.trace(mt, PROMPT, **arguments)


def test_window_layers_clip_at_both_ends():
    assert window_layers(0, 10, 18) == range(0, 5)
    assert window_layers(7, 10, 18) == range(2, 12)
    assert window_layers(17, 10, 18) == range(12, 18)
    assert window_layers(3, 1, 18) == range(3, 4)


def test_plot_trace_marks_the_subject(tiny_mt):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    if tiny_mt.name != "tiny-llama":
        pytest.skip("plotting does not depend on the architecture")
    result = romelib.trace(tiny_mt, PROMPT, SUBJECT, samples=1, corruption=_corruption(tiny_mt))
    ax = romelib.plot_trace(result)
    labels = [tick.get_text() for tick in ax.get_yticklabels()]
    start, end = result.subject_range
    assert len(labels) == len(result.tokens)
    assert all(label.endswith("*") for label in labels[start:end]) and not labels[0].endswith("*")
    plt.close("all")


def test_default_model_shows_the_paper_pattern(default_mt):
    """Space Needle on Gemma 3 270M: early site at the last subject token (MLP, not
    attention), late site at the last token."""
    prompt, subject = "The Space Needle is located in the city of", "Space Needle"
    last_subject = romelib.find_subject_range(default_mt, prompt, subject)[1] - 1
    options = dict(samples=3, positions=[last_subject, -1])
    hidden = romelib.trace(default_mt, prompt, subject, kind="hidden", **options).indirect_effects
    mlp = romelib.trace(default_mt, prompt, subject, kind="mlp", **options).indirect_effects
    attn = romelib.trace(default_mt, prompt, subject, kind="attn", **options).indirect_effects
    layers = default_mt.num_layers
    assert hidden[last_subject].argmax() < 2 * layers // 3
    late = slice(2 * layers // 3, layers)
    assert hidden[-1, late].mean() > hidden[last_subject, late].mean()
    assert mlp[last_subject].max() > attn[last_subject].max()
