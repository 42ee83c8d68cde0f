"""Specificity runner: close-neighbour scores, the update's reach, CounterFact+ prompts."""
import json

import pytest
import torch

import romelib
from conftest import make_tiny_model, private_corpus
from romelib.core.hooks import hooks
from romelib.core.tokens import encode, find_subject_range
from romelib.editing.memit import MEMITHyperParams
from romelib.editing.rome import ROMEHyperParams
from romelib.experiments import specificity
from romelib.experiments.launch import Worker

CASES = [
    {"case_id": 1, "requested_rewrite": {"prompt": "{} is located in the city of", "subject": "The Space Needle",
                                         "target_new": {"str": "Paris"}, "target_true": {"str": "Seattle"}},
     "paraphrase_prompts": ["The Space Needle stands in the city of"],
     "close_neighbours": [{"subject": s, "prompt": f"{s} is located in the city of"}
                          for s in ("Pike Place Market", "The Seattle Center", "Lake Union")]},
    {"case_id": 2, "requested_rewrite": {"prompt": "{} plays the sport of", "subject": "Serena Williams",
                                         "target_new": {"str": "golf"}, "target_true": {"str": "tennis"}},
     "paraphrase_prompts": ["Serena Williams is a professional", "Serena Williams is famous for"],
     "close_neighbours": [{"subject": s, "prompt": f"{s} plays the sport of"}
                          for s in ("Venus Williams", "Roger Federer", "Rafael Nadal")]},
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    with private_corpus(tmp_path_factory, "specificity") as corpus:
        mt = make_tiny_model("llama")
        # the tiny model's residual stream is small: let v* move far enough to win
        loose = dict(clamp_norm_factor=100.0, v_weight_decay=1e-4)
        rome = ROMEHyperParams(**loose, layer=1, v_num_grad_steps=25, context_lengths=(3,), contexts_per_length=1,
                               mom2_source=f"file:{corpus}", early_stop_loss=0.0)
        memit = MEMITHyperParams(**loose, layers=(1, 2), v_num_grad_steps=25, context_lengths=(3,),
                                 contexts_per_length=1,
                                 mom2_source=f"file:{corpus}", mom2_max_tokens=400, early_stop_loss=0.0,
                                 mom2_update_weight=1.0)
        yield mt, {"rome": rome, "memit": memit}


def test_known_facts_are_measured_on_the_unedited_model(setup):
    mt, _ = setup
    for case in CASES:
        marked = specificity.mark_known(mt, case)
        rewrite = case["requested_rewrite"]
        new, true = rewrite["target_new"]["str"], rewrite["target_true"]["str"]
        margin = specificity.wins(mt, [rewrite["prompt"].format(rewrite["subject"])], true, new)[0]
        assert marked["known"]["edited"] == (margin > 0)
        assert [n["true_preferred"] for n in marked["close_neighbours"]] == marked["known"]["neighbours"]
        assert len(marked["known"]["paraphrases"]) == len(case["paraphrase_prompts"])


def test_unedited_model_keeps_every_known_neighbour_and_edits_are_undone(setup, tmp_path):
    mt, hparams = setup
    cases = [specificity.mark_known(mt, c) for c in CASES]
    for case in cases:                               # every neighbour counted, whatever the tiny model knows
        for neighbour in case["close_neighbours"]:
            neighbour["true_preferred"] = True
    before = {n: p.detach().clone() for n, p in mt.model.named_parameters()}
    specificity.run_close_neighbours(mt, cases, ["none", "rome", "memit"], Worker.from_environment(), tmp_path, hparams)
    assert all(torch.equal(p, before[n]) for n, p in mt.model.named_parameters())
    rows = {m: [json.loads(x) for x in (tmp_path / f"close_{m}.jsonl").read_text().splitlines()]
            for m in ("none", "rome", "memit")}
    for row, case in zip(rows["none"], cases):
        assert row["ES"] == float(not case["known"]["edited"])
        unedited = specificity.wins(mt, [n["prompt"] for n in case["close_neighbours"]],
                                    case["requested_rewrite"]["target_true"]["str"],
                                    case["requested_rewrite"]["target_new"]["str"])
        assert row["margins"] == pytest.approx(unedited)
    # (whether an edit succeeds is the real model's business; a random tiny model barely responds)
    assert all({"ES", "PS", "CN", "margins"} <= set(r) for r in rows["rome"] + rows["memit"])
    assert all(len(r["reach"]) == 3 for r in rows["rome"]) and all("reach" not in r for r in rows["memit"])
    summary = specificity.summarize(tmp_path)
    assert set(summary["close"]) == {"none", "rome", "memit"} and summary["close"]["rome"]["cases"] == 2
    assert summary["reach_vs_drop"]["pairs"] == 6


def test_reach_is_the_share_of_the_edit_a_neighbour_receives(setup):
    """ROME changes W k by (v* - W k*) (u.k)/(u.k*): the output change at a neighbour's key is
    its reach times the change at k*."""
    mt, hparams = setup
    case = {**CASES[1], "close_neighbours": [{**n, "true_preferred": True} for n in CASES[1]["close_neighbours"]]}
    request = romelib.EditRequest.from_dict(case["requested_rewrite"])
    layer = hparams["rome"].layer
    with romelib.edit(mt, request, hparams=hparams["rome"]) as handle:
        values = specificity.reach(mt, handle, case)
        change = next(iter(handle.deltas.values())).double()
        if mt.arch.mlp_proj_transposed:
            change = change.T
        at_star = change @ handle.info["k_star"].double()
        for neighbour, value in zip(case["close_neighbours"], values):
            position = find_subject_range(mt, neighbour["prompt"], neighbour["subject"])[1] - 1
            with hooks(mt, [f"mlp_proj.{layer}"], retain_input=True, retain_output=False, stop=True) as acts:
                mt.model(input_ids=torch.tensor([encode(mt, neighbour["prompt"])]), use_cache=False)
            key = acts[f"mlp_proj.{layer}"].input[0, position].double()
            torch.testing.assert_close(change @ key, value * at_star, rtol=1e-3, atol=1e-5 * float(at_star.norm()))


def test_counterfact_plus_prompts_start_with_the_edited_sentence():
    record = {"requested_rewrite": {"prompt": "The mother tongue of {} is", "subject": "Danielle Darrieux",
                                    "target_new": {"str": "English"}, "target_true": {"str": "French"}},
              "neighborhood_prompts": ["The mother tongue of Michel Rocard is"]}
    assert specificity.plus_prompts(record) == [
        "The mother tongue of Danielle Darrieux is English. The mother tongue of Michel Rocard is"]
