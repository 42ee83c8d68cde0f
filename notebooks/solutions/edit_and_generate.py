"""Solutions to the exercises of notebook 08 (edit and generate)."""
import math

import torch

import romelib


def greedy_generate(mt, prompt, new_tokens):
    """Usage: ``greedy_generate(mt, "The Eiffel Tower is in", 5)`` -> the 5 new tokens as text."""
    ids = romelib.encode(mt, prompt)
    new = []
    for _ in range(new_tokens):
        with torch.no_grad():
            logits = mt.model(input_ids=torch.tensor([ids + new], device=mt.device), logits_to_keep=1).logits[0, -1]
        token = int(logits.argmax())
        if token == mt.tokenizer.eos_token_id:
            break
        new.append(token)
    return mt.tokenizer.decode(new, skip_special_tokens=True)


def sequence_probability(mt, prompt, target):
    """Usage: ``sequence_probability(mt, "The Eiffel Tower is in", "Paris, France")`` -> P(whole target)."""
    prompt_ids, target_ids = romelib.target_tokens(mt, prompt, target)
    with torch.no_grad():
        logits = mt.model(input_ids=torch.tensor([prompt_ids + target_ids], device=mt.device)).logits[0]
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    first = len(prompt_ids) - 1                          # this position predicts the first target token
    return math.exp(sum(log_probs[first + i, token].item() for i, token in enumerate(target_ids)))
