"""Solutions to the exercises of notebook 00 (a tour of the model)."""
import torch

import romelib


def mlp_term(mt, prompt, layer):
    """Usage: ``mlp_term(mt, prompt, 9)`` -> (positions, d_model): m_l = h_l - h_(l-1) - a_l."""
    inputs = romelib.make_inputs(mt, prompt)
    with romelib.hooks(mt, [f"block.{layer}", f"attn.{layer}"], retain_input=True) as acts, torch.no_grad():
        mt.model(**inputs, logits_to_keep=1)
    h_previous = acts[f"block.{layer}"].input[0]          # the block's input is h_(l-1)
    h = acts[f"block.{layer}"].output[0]
    a = acts[f"attn.{layer}"].output[0]
    return h - h_previous - a


def next_token_probability(mt, prompt, token_id):
    """Usage: ``next_token_probability(mt, prompt, 9079)`` -> P(token | prompt) as a float."""
    inputs = romelib.make_inputs(mt, prompt)
    with torch.no_grad():
        logits = mt.model(**inputs).logits[0, -1]          # the last position predicts the next token
    return torch.softmax(logits.float(), dim=-1)[token_id].item()
