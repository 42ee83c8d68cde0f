"""The real embedded default model (Gemma 3 270M): knows facts, tokenises as documented."""
import torch

import romelib


def test_space_needle_is_in_seattle(default_mt):
    top = romelib.predict(default_mt, "The Space Needle is located in the city of", k=3)
    assert top[0].token == " Seattle"
    assert top[0].probability > 0.3


def test_architecture_facts(default_mt):
    assert default_mt.num_layers == 18 and default_mt.d_model == 640
    assert tuple(default_mt.mlp_proj_weight(5).shape) == (640, 2048)
    ids = romelib.encode(default_mt, "The Space Needle")
    assert ids[0] == default_mt.tokenizer.bos_token_id
    assert romelib.find_subject_range(default_mt, "The Space Needle is in", "Space Needle") == (2, 4)
    assert romelib.find_subject_range(default_mt, "Michael Jordan plays", "Michael Jordan") == (1, 3)


def test_residual_identity_and_logit_lens(default_mt):
    mt = default_mt
    names = ["block.9", "attn.9", "mlp.9", "block.17"]
    with romelib.hooks(mt, names, retain_input=True) as acts, torch.no_grad():
        logits = mt.model(**romelib.make_inputs(mt, "Michael Jordan plays the sport of"),
                          logits_to_keep=1).logits[0, -1]
    rebuilt = acts["block.9"].input + acts["attn.9"].output + acts["mlp.9"].output
    torch.testing.assert_close(acts["block.9"].output, rebuilt, rtol=1e-5, atol=1e-4)
    lens = mt.logit_lens(acts["block.17"].output[0, -1])
    torch.testing.assert_close(lens, logits, rtol=1e-4, atol=1e-3)
