"""Solutions to the exercises of notebook 03 (severed paths)."""
import torch

import romelib


def severed_probability(mt, ids, corrupted, target_id, layer, position):
    """Usage: ``severed_probability(mt, ids, corrupted, target_id, 3, 3)`` -> mean P(target), MLPs above frozen."""
    above = [f"mlp.{k}" for k in range(layer + 1, mt.num_layers)]
    batch = ids.repeat(corrupted.shape[0], 1)
    with romelib.hooks(mt, [f"block.{layer}"]) as clean, torch.no_grad():
        mt.model(input_ids=ids, logits_to_keep=1)
    with romelib.hooks(mt, ["embed", *above], edit_output=lambda out, name: corrupted if name == "embed" else out,
                       clone=True) as corrupted_run, torch.no_grad():
        mt.model(input_ids=batch, logits_to_keep=1)

    def restore_and_freeze(output, name):
        if name == "embed":
            return corrupted
        output = output.clone()
        if name == f"block.{layer}":
            output[:, position] = clean[name].output[0, position]
        else:
            output[:, position] = corrupted_run[name].output[:, position]
        return output

    with romelib.hooks(mt, ["embed", f"block.{layer}", *above], edit_output=restore_and_freeze,
                       retain_output=False), torch.no_grad():
        logits = mt.model(input_ids=batch, logits_to_keep=1).logits[:, -1]
    return torch.softmax(logits.float(), dim=-1)[:, target_id].mean().item()


def effect_removed(plain, severed, layers):
    """Usage: ``effect_removed(plain_effects, severed_effects, slice(0, 9))`` -> 0.6."""
    return 1 - (severed[layers].mean() / plain[layers].mean()).item()
