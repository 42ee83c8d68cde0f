"""Solutions to the exercises of notebook 07 (ROME step by step)."""
import torch

import romelib


def average_key(mt, prompt, subject, layer, prefixes):
    """Usage: ``average_key(mt, "{} is located in", "The Eiffel Tower", 5, ["", "Hi. "])`` -> (d_mlp,)."""
    keys = []
    for prefix in prefixes:
        text = prefix + prompt.format(subject)
        _, end = romelib.find_subject_range(mt, text, subject, occurrence=prefix.count(subject))
        with torch.no_grad(), romelib.hooks(mt, [f"mlp_proj.{layer}"], retain_input=True, stop=True) as acts:
            mt.model(**romelib.make_inputs(mt, text))
        keys.append(acts[f"mlp_proj.{layer}"].input[0, end - 1])     # the subject's last token
    return torch.stack(keys).mean(dim=0)


def rank_one_update(W, C, k_star, v_star, k_average):
    """Usage: ``rank_one_update(W, C, k_star, v_star, k_average)`` -> the change W' - W."""
    u = torch.linalg.solve(C, k_average)                # the direction C^-1 k_average
    return torch.outer(v_star - W @ k_star, u) / (u @ k_star)
