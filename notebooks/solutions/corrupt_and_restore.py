"""Solutions to the exercises of notebook 01 (corrupt and restore)."""
import torch

import romelib


def corrupt_with_noise(clean, start, end, noise, sigma, samples, generator):
    """Usage: ``corrupt_with_noise(embeddings, 2, 4, 3.0, sigma, 10, generator)`` -> (samples, tokens, d)."""
    corrupted = clean.repeat(samples, 1, 1)                                   # a copy per sample
    draws = torch.randn((samples, end - start, clean.shape[-1]), generator=generator, dtype=torch.float64)
    corrupted[:, start:end] += (draws * noise * sigma).to(clean.dtype)
    return corrupted


def restore_hidden_state(mt, ids, corrupted, target_id, layer, position):
    """Usage: ``restore_hidden_state(mt, ids, corrupted, target_id, 5, 3)`` -> mean P(target) over samples."""
    name = f"block.{layer}"
    with romelib.hooks(mt, [name]) as clean_run, torch.no_grad():
        mt.model(input_ids=ids, logits_to_keep=1)
    clean_state = clean_run[name].output[0, position]                          # (d_model,)

    def corrupt_and_restore(output, hook):
        if hook == "embed":
            return corrupted
        output = output.clone()
        output[:, position] = clean_state
        return output

    batch = ids.repeat(corrupted.shape[0], 1)
    with romelib.hooks(mt, ["embed", name], edit_output=corrupt_and_restore, retain_output=False), torch.no_grad():
        logits = mt.model(input_ids=batch, logits_to_keep=1).logits[:, -1]
    return torch.softmax(logits.float(), dim=-1)[:, target_id].mean().item()
