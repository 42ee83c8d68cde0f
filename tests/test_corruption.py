"""Corruptions: noise of the stated spread on the subject only, zeros, replacement subjects."""
import math

import pytest
import torch

import romelib
from romelib.tracing.corruption import Corruption, corrupt_embeddings, replacement_subjects

PROMPT = "The Space Needle is located in the city of Seattle"
SUBJECT = "Space Needle"


@pytest.fixture(scope="module")
def mt():
    from conftest import make_tiny_model
    return make_tiny_model("llama")


def _clean(mt, prompt=PROMPT):
    ids = torch.tensor([romelib.encode(mt, prompt)])
    with torch.no_grad():
        return mt.module("embed")(ids)


def test_sigma_is_the_std_of_subject_embeddings(mt):
    """Measured at the embedding module's output, over the subjects' tokens in their prompts."""
    facts = [romelib.Fact(PROMPT, SUBJECT, "Seattle"),
             romelib.Fact("Michael Jordan plays the sport of", "Michael Jordan", "basketball")]
    ids = []
    for fact in facts:
        start, end = romelib.find_subject_range(mt, fact.prompt, fact.subject)
        ids += romelib.encode(mt, fact.prompt)[start:end]
    with torch.no_grad():
        expected = mt.module("embed")(torch.tensor([ids])).double().std().item()
    assert romelib.embedding_sigma(mt, facts) == pytest.approx(expected, rel=1e-9)
    words = mt.module("embed")(torch.tensor([mt.tokenizer("Paris", add_special_tokens=False)["input_ids"]]))
    assert romelib.embedding_sigma(mt, ["Paris"]) == pytest.approx(words.double().std().item())


@pytest.mark.parametrize("kind", ["gaussian", "uniform"])
def test_noise_has_the_stated_spread_on_the_subject_only(mt, kind):
    corruption = Corruption(kind, noise=3.0, sigma=0.5)
    corrupted = corrupt_embeddings(mt, corruption, PROMPT, SUBJECT, samples=400, seed=0)
    clean = _clean(mt)
    start, end = romelib.find_subject_range(mt, PROMPT, SUBJECT)
    difference = corrupted - clean
    assert corrupted.shape == (400, clean.shape[1], clean.shape[2])
    assert torch.equal(difference[:, :start], torch.zeros_like(difference[:, :start]))
    assert torch.equal(difference[:, end:], torch.zeros_like(difference[:, end:]))
    noise = difference[:, start:end].double()
    assert noise.std().item() == pytest.approx(1.5, rel=0.02)
    assert noise.mean().item() == pytest.approx(0.0, abs=0.02)
    if kind == "uniform":
        assert noise.abs().max().item() <= math.sqrt(3) * 1.5 + 1e-5


def test_zero_corruption_is_one_deterministic_row(mt):
    corrupted = corrupt_embeddings(mt, Corruption("zero"), PROMPT, SUBJECT, samples=10)
    start, end = romelib.find_subject_range(mt, PROMPT, SUBJECT)
    assert corrupted.shape[0] == 1
    assert torch.count_nonzero(corrupted[0, start:end]) == 0
    torch.testing.assert_close(corrupted[0, end:], _clean(mt)[0, end:])


def test_same_seed_same_noise_other_seed_other_noise(mt):
    corruption = Corruption("gaussian", 3.0, 0.5)
    first = corrupt_embeddings(mt, corruption, PROMPT, SUBJECT, 4, seed=7)
    assert torch.equal(first, corrupt_embeddings(mt, corruption, PROMPT, SUBJECT, 4, seed=7))
    assert not torch.equal(first, corrupt_embeddings(mt, corruption, PROMPT, SUBJECT, 4, seed=8))


def test_replacement_keeps_every_other_token(mt):
    candidates = ["Eiffel Tower", "Empire State", "Toko Yasuda", "Space Needle", "Bob"]
    others = replacement_subjects(mt, PROMPT, SUBJECT, candidates, count=5)
    assert SUBJECT not in others and others
    ids = romelib.encode(mt, PROMPT)
    start, end = romelib.find_subject_range(mt, PROMPT, SUBJECT)
    for other in others:
        other_ids = romelib.encode(mt, PROMPT.replace(SUBJECT, other))
        assert len(other_ids) == len(ids)
        assert other_ids[:start] == ids[:start] and other_ids[end:] == ids[end:]
    corrupted = corrupt_embeddings(mt, Corruption("replace", replacements=tuple(candidates)),
                                   PROMPT, SUBJECT, samples=5)
    assert corrupted.shape[0] == len(others)
    torch.testing.assert_close(corrupted[:, end:], _clean(mt)[:, end:].expand(len(others), -1, -1))


def test_replacement_without_candidates_says_what_to_do(mt):
    with pytest.raises(ValueError, match="same number of tokens"):
        corrupt_embeddings(mt, Corruption("replace", replacements=("x",)), PROMPT, SUBJECT, 3)


def test_bad_corruptions_are_refused(mt):
    with pytest.raises(ValueError, match="corruption must be one of"):
        Corruption("blur")
    with pytest.raises(ValueError, match="noise must be a finite number > 0, got -1.0"):
        Corruption("gaussian", noise=-1.0)
    assert "3σ" in Corruption("gaussian", 3.0, 0.9).describe()


def test_traces_with_every_corruption(mt):
    """Each corruption is one argument away in romelib.trace."""
    for kind in ("gaussian", "uniform", "zero"):
        result = romelib.trace(mt, PROMPT, SUBJECT, corruption=kind, samples=2, positions=[-1])
        assert result.settings["corruption"] == kind
        assert result.settings["samples"] == (1 if kind == "zero" else 2)
    replaced = romelib.trace(mt, PROMPT, SUBJECT, samples=2, positions=[-1],
                             corruption=Corruption("replace", replacements=("Eiffel Tower", "Toko Yasuda")))
    assert replaced.settings["corruption"] == "replace"
