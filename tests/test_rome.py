"""ROME: k*, v*, the rank-one update and its properties, on tiny models of every architecture
and once on the real default model."""
import pytest
import torch

import romelib
from conftest import private_corpus
from romelib.core.hparams import load_hparams
from romelib.core.tokens import pad_batch
from romelib.editing.context_prefixes import context_prefixes
from romelib.editing.key_statistics import key_statistics
from romelib.editing.memory import update_direction
from romelib.editing.request import EditRequest
from romelib.editing.rome import ROMEHyperParams, compute_keys, compute_value
from romelib.editing.rome_reference import compute_rome_reference, reference_keys, reference_value
from romelib.editing.value_batch import prompt_rows, split_rows

REQUEST = EditRequest("{} plays the sport of", "Michael Jordan", "guitar", "basketball")


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    """A small text file for key statistics, and a private cache for tiny models."""
    with private_corpus(tmp_path_factory, "rome") as path:
        yield path


def tiny_hparams(corpus_file, **changes) -> ROMEHyperParams:
    values = dict(layer=1, v_num_grad_steps=6, context_lengths=(3,), contexts_per_length=2,
                  mom2_source=f"file:{corpus_file}", early_stop_loss=0.0,
                  unembed_dtype="model")                                 # exact (test_unembedding_precision.py)
    return ROMEHyperParams(**{**values, **changes})


def test_update_maps_k_star_to_v_star_with_a_rank_one_change(tiny_mt, corpus_file):
    hparams = tiny_hparams(corpus_file)
    before = tiny_mt.mlp_proj_weight(1).detach().clone()
    with romelib.edit(tiny_mt, REQUEST, hparams=hparams) as handle:
        k_star, v_star = handle.info["k_star"], handle.info["v_star"]
        after = tiny_mt.mlp_proj_weight(1).detach().clone()
        with torch.no_grad():
            mapped = tiny_mt.module("mlp_proj", 1)(k_star)
    assert float((mapped - v_star).norm() / v_star.norm()) < 1e-4
    change = (after - before).double()
    singular = torch.linalg.svdvals(change)
    assert singular[1] < 1e-4 * singular[0]                           # rank one (float32 rounding)
    second_moment = key_statistics(tiny_mt, 1, hparams.mom2_source).mom2
    u = update_direction(handle.info["k_average"], second_moment)      # direction C^-1 k_avg
    other = torch.randn(k_star.shape, dtype=torch.float64)
    other = other - (u @ other) / (u @ u) * u                          # (C^-1 k*)^T k = 0
    torch.testing.assert_close(change @ other, torch.zeros(change.shape[0], dtype=torch.float64),
                               atol=1e-5 * float(before.norm() * other.norm()), rtol=0)


@pytest.mark.parametrize("kl_token", ["fact", "last"])
def test_fast_value_optimisation_matches_the_authors_algorithm(tiny_mt, corpus_file, kl_token):
    hparams = tiny_hparams(corpus_file, layer=2, v_num_grad_steps=4, kl_token=kl_token,
                           kl_factor=1.0)
    request = EditRequest("The mother tongue of {} is", "Danielle Darrieux", "Seattle tower", "French")
    prefixes = context_prefixes(tiny_mt, hparams.context_lengths, hparams.contexts_per_length)
    fast = compute_value(tiny_mt, request, hparams, prefixes)
    slow = reference_value(tiny_mt, request, hparams, prefixes)
    for mine, theirs in zip(fast.losses, slow.losses, strict=True):
        assert mine["loss"] == pytest.approx(theirs["loss"], rel=1e-4, abs=1e-5)
        assert mine["kl"] == pytest.approx(theirs["kl"], rel=1e-3, abs=1e-6)
    torch.testing.assert_close(fast.delta, slow.delta, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(compute_keys(tiny_mt, request, hparams, prefixes),
                               reference_keys(tiny_mt, request, hparams, prefixes))
    torch.testing.assert_close(fast.keys, reference_keys(tiny_mt, request, hparams, prefixes),
                               rtol=1e-4, atol=1e-5)                   # read in v*'s first pass


def test_kl_token_choice_changes_the_kl_term(corpus_file):
    """The two KL positions are different measurements once delta moves (not a no-op option)."""
    from conftest import make_tiny_model

    mt = make_tiny_model("llama")
    request = EditRequest("The mother tongue of {} is", "Danielle Darrieux", "Seattle tower", "French")
    prefixes = context_prefixes(mt, (3,), 2)
    kls = {token: compute_value(mt, request, tiny_hparams(corpus_file, kl_token=token,
                                                          kl_factor=1.0), prefixes).losses[2]["kl"]
           for token in ("fact", "last")}
    assert kls["fact"] > 0 and kls["last"] > 0 and kls["fact"] != pytest.approx(kls["last"])


def test_whole_edit_matches_the_authors_algorithm(corpus_file):
    from conftest import make_tiny_model

    mt = make_tiny_model("gemma3_text")
    hparams = tiny_hparams(corpus_file, layer=2, v_num_grad_steps=5)
    fast = romelib.compute_rome(mt, REQUEST, hparams)
    slow = compute_rome_reference(mt, REQUEST, hparams)
    (name, change), = fast.deltas.items()
    torch.testing.assert_close(change.float(), slow.deltas[name].float(),
                               rtol=2e-3, atol=2e-4 * float(change.abs().max()))


@pytest.mark.parametrize("model_type", ["gpt2", "gemma3_text"])
def test_cut_prompts_with_a_cache_give_the_same_logits(model_type, corpus_file):
    from conftest import make_tiny_model

    mt = make_tiny_model(model_type)
    request = EditRequest("{} is in", "Seattle", "Paris")                # subject first: empty head
    rows, positions = prompt_rows(mt, request, ["", "Rome is the capital. ", "Bob. "], "subject_last")
    head, tail = split_rows(mt, rows, positions)
    with torch.no_grad():
        cache = mt.model(**head, use_cache=True).cache if head else None
        cut = mt.model(**tail, cache=cache, use_cache=cache is not None).logits
        whole = mt.model(**pad_batch(mt, rows)).logits
    for row, (ids, position) in enumerate(zip(rows, positions)):
        tail_len = len(ids) - position
        torch.testing.assert_close(cut[row, :tail_len], whole[row, -tail_len:], rtol=1e-4, atol=1e-4)


def test_multi_token_targets_and_identity_statistics(corpus_file):
    from conftest import make_tiny_model

    mt = make_tiny_model("llama")
    target = "Seattle and Paris, the capital"                           # several tokens
    request = EditRequest("{} plays the sport of", "Michael Jordan", target)
    hparams = tiny_hparams(corpus_file, identity_covariance=True, v_num_grad_steps=10,
                           clamp_norm_factor=1e4, v_weight_decay=0.0)
    assert len(romelib.target_probability(mt, request.filled_prompt, target).tokens) > 3
    with romelib.edit(mt, request, hparams=hparams) as handle:
        change = handle.deltas[mt.module_name("mlp_proj", 1) + ".weight"].double()
    # a random tiny model can hardly move its near-uniform predictions, but the loss falls
    # (the default-model test checks that a multi-token target really becomes likely)
    assert handle.info["losses"][-1]["nll"] < handle.info["losses"][0]["nll"]
    k_average = handle.info["k_average"].double()                      # C = I: change ~ delta k_avg^T
    expected = torch.outer(change @ k_average, k_average) / (k_average @ k_average)
    torch.testing.assert_close(change, expected, rtol=1e-3, atol=1e-6)


def test_hyperparameters_are_strict_and_checked(tiny_mt, corpus_file):
    with pytest.raises(ValueError, match="unknown key"):
        romelib.edit(tiny_mt, REQUEST, hparams={"layer": 1, "learning_rate": 3})
    with pytest.raises(ValueError, match="out of range"):
        romelib.edit(tiny_mt, REQUEST, hparams=tiny_hparams(corpus_file, layer=40))
    with pytest.raises(ValueError, match="fact_token"):
        ROMEHyperParams(layer=1, fact_token="subject_middle")
    with pytest.raises(FileNotFoundError, match="No rome hyperparameters"):
        romelib.edit(tiny_mt, REQUEST)                                  # no file for tiny models


def test_bad_requests_give_clear_errors(tiny_mt, corpus_file):
    hparams = tiny_hparams(corpus_file)
    with pytest.raises(ValueError, match="does not occur"):
        romelib.edit(tiny_mt, {"prompt": "Rome is in", "subject": "Paris", "target_new": {"str": "x"}},
                     hparams=hparams)
    with pytest.raises(ValueError, match="empty"):
        romelib.edit(tiny_mt, {"prompt": "{} is in", "subject": "Rome", "target_new": {"str": " "}})
    with pytest.raises(ValueError, match=r"method must be one of \('rome'"):
        romelib.edit(tiny_mt, REQUEST, method="mend")
    filled = EditRequest("Michael Jordan plays the sport of", "Michael Jordan", "guitar")
    assert filled.prompt == REQUEST.prompt                              # a filled prompt is accepted


def test_an_edit_of_the_default_model_rewrites_the_fact(default_mt):
    hparams = load_hparams(ROMEHyperParams, "rome", default_mt.name)
    request = EditRequest("{} is located in the city of", "The Space Needle", "Rio de Janeiro",
                          "Seattle")                                    # a multi-token target
    name = default_mt.module_name("mlp_proj", hparams.layer) + ".weight"
    before = default_mt.model.get_parameter(name).detach().clone()
    with romelib.edit(default_mt, request) as handle:
        new = romelib.target_probability(default_mt, request.filled_prompt, "Rio de Janeiro")
        true = romelib.target_probability(default_mt, request.filled_prompt, "Seattle")
        assert len(new.tokens) > 1 and new.probability > true.probability
        assert handle.info["losses"][-1]["nll"] < handle.info["losses"][0]["nll"]
    assert torch.equal(default_mt.model.get_parameter(name), before)


def test_the_average_key_variant_stores_the_mean_key(corpus_file):
    from conftest import make_tiny_model

    mt = make_tiny_model("qwen3")
    for update_key in ("prompt", "average"):
        hparams = tiny_hparams(corpus_file, update_key=update_key)
        with romelib.edit(mt, REQUEST, hparams=hparams) as handle:
            with torch.no_grad():
                mapped = mt.module("mlp_proj", 1)(handle.info["k_star"])
        stored = handle.info["k_star"]
        assert torch.equal(stored, handle.info["k_average"]) == (update_key == "average")
        assert float((mapped - handle.info["v_star"]).norm() / handle.info["v_star"].norm()) < 1e-4
