"""Predictions match a plain forward pass; subject ranges come from character offsets."""
import math

import pytest
import torch

import romelib
from romelib.core.tokens import continuation_text


def test_predict_matches_plain_forward(tiny_mt):
    prompt = "Michael Jordan plays the sport of"
    ids = torch.tensor([romelib.encode(tiny_mt, prompt)])
    with torch.no_grad():
        probs = tiny_mt.model(input_ids=ids).logits[0, -1].softmax(-1)
    top = romelib.predict(tiny_mt, prompt, k=3)
    values, indices = probs.topk(3)
    assert [p.token for p in top] == [tiny_mt.tokenizer.decode([int(i)]) for i in indices]
    assert [p.probability for p in top] == pytest.approx(values.tolist(), rel=1e-4)


def test_left_padding_does_not_change_predictions(tiny_mt):
    prompts = ["Rome is the capital of", "The Eiffel Tower is in Paris, the capital of"]
    batched = romelib.next_token_probs(tiny_mt, prompts)
    for row, prompt in enumerate(prompts):
        torch.testing.assert_close(batched[row], romelib.next_token_probs(tiny_mt, prompt)[0],
                                   rtol=1e-4, atol=1e-6)


def test_target_log_probs_equal_teacher_forcing(tiny_mt):
    prompt, target = "Bob works in the", "Empire State Building"
    prompt_ids, target_ids = romelib.target_tokens(tiny_mt, prompt, target)
    ids = torch.tensor([prompt_ids + target_ids])
    with torch.no_grad():
        log_probs = tiny_mt.model(input_ids=ids).logits[0].log_softmax(-1)
    expected = [float(log_probs[len(prompt_ids) - 1 + i, t]) for i, t in enumerate(target_ids)]
    batched = romelib.target_log_probs(tiny_mt, [prompt, "Rome is the capital of"],
                                       [target, "Italy"])
    assert batched[0] == pytest.approx(expected, abs=1e-4)
    score = romelib.target_probability(tiny_mt, prompt, target)
    assert score.probability == pytest.approx(math.exp(sum(expected)), rel=1e-3)
    assert len(score.tokens) == len(target_ids) > 1


def test_continuation_text():
    assert continuation_text("in the city of", "Seattle") == " Seattle"
    assert continuation_text("in the city of", " Seattle") == " Seattle"
    assert continuation_text("The answer: ", "Paris") == "Paris"
    with pytest.raises(ValueError, match="empty"):
        continuation_text("in", "  ")


@pytest.mark.parametrize("prompt, subject, text", [
    ("The Space Needle is located in the city of", "Space Needle", "Space Needle"),
    ("Michael Jordan plays the sport of", "Michael Jordan", "Michael Jordan"),
    ("Bob works in the Empire State Building", "Empire State Building", "Empire State Building"),
])
def test_subject_range_covers_exactly_the_subject(tiny_mt, prompt, subject, text):
    start, end = romelib.find_subject_range(tiny_mt, prompt, subject)
    ids = romelib.encode(tiny_mt, prompt)
    assert tiny_mt.tokenizer.decode(ids[start:end]).strip() == text
    assert 0 < end <= len(ids)


def test_subject_not_in_prompt(tiny_mt):
    with pytest.raises(ValueError) as error:
        romelib.find_subject_range(tiny_mt, "The Space Needle is in", "Big Ben")
    message = str(error.value)
    assert "'Big Ben'" in message and "The Space Needle is in" in message


def test_subject_is_matched_exactly_as_in_edits(tiny_mt):
    with pytest.raises(ValueError, match="spells it 'Empire State Building'"):
        romelib.find_subject_range(tiny_mt, "Bob works in the Empire State Building",
                                   "empire state building")


def test_a_repeated_subject_needs_an_occurrence(tiny_mt):
    prompt = "Paris is in France and Paris is big"
    with pytest.raises(ValueError, match=r"occurs 2 times.*occurrence=0 at characters 0-5.*occurrence=1"):
        romelib.find_subject_range(tiny_mt, prompt, "Paris")
    first = romelib.find_subject_range(tiny_mt, prompt, "Paris", occurrence=0)
    second = romelib.find_subject_range(tiny_mt, prompt, "Paris", occurrence=1)
    assert second[0] > first[0]
    with pytest.raises(ValueError, match="occurrence must be an int >= 0 and <= 1, got 2"):
        romelib.find_subject_range(tiny_mt, prompt, "Paris", occurrence=2)


def test_a_subject_must_cover_whole_tokens(default_mt):
    prompt = "The Space Needle is located in the city of"
    with pytest.raises(ValueError, match=r"cuts through a token.*\[' Space', ' Needle'\].*'Space Needle'"):
        romelib.find_subject_range(default_mt, prompt, "pace Need")
    with pytest.raises(ValueError, match="write it as 'Needle'"):
        romelib.find_subject_range(default_mt, prompt, "Needl")
