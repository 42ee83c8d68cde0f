"""The explorer re-renders when a control's value is set, shows when it is busy, and puts
bad input in its output area instead of raising."""
import pytest

import romelib

FACTS = [romelib.Fact("The Space Needle is located in the city of Seattle", "Space Needle", "Seattle"),
         romelib.Fact("Michael Jordan plays the sport of", "Michael Jordan", "basketball")]


@pytest.fixture(scope="module")
def explorer():
    import matplotlib
    matplotlib.use("Agg")
    from conftest import make_tiny_model
    from romelib.plots.widgets import Explorer
    return Explorer(make_tiny_model("llama"), facts=FACTS, samples=2)


def test_first_render_draws_a_figure(explorer):
    assert explorer.renders >= 1
    assert explorer.image.value[:8] == b"\x89PNG\r\n\x1a\n"
    assert explorer.message.value == "" and "ready" in explorer.status.value


def test_moving_the_layer_redraws_without_recomputing(explorer):
    before, renders, cached = explorer.image.value, explorer.renders, explorer.traces_computed
    explorer.layer.value = (explorer.layer.value + 1) % explorer.mt.num_layers
    assert explorer.renders == renders + 1
    assert explorer.image.value != before
    assert explorer.traces_computed == cached


@pytest.mark.parametrize("control,value", [("kind", "mlp"), ("samples", 1), ("noise", 5.0),
                                           ("corruption", "uniform")])
def test_each_control_recomputes(explorer, control, value):
    before, cached = explorer.image.value, explorer.traces_computed
    getattr(explorer, control).value = value
    assert explorer.traces_computed == cached + 1
    assert explorer.image.value != before and explorer.message.value == ""


def test_picking_a_fact_fills_prompt_and_subject_and_renders_once(explorer):
    renders = explorer.renders
    explorer.fact.value = explorer.fact.options[2]
    assert explorer.prompt.value == FACTS[1].prompt and explorer.subject.value == FACTS[1].subject
    assert explorer.renders == renders + 1
    assert explorer.current_trace().prompt == FACTS[1].prompt


def test_bad_input_becomes_a_message(explorer):
    explorer.subject.value = "Eiffel Tower"       # not in the prompt
    assert "does not occur" in explorer.message.value
    assert explorer.image.value == b"" and "ready" in explorer.status.value   # no stale figure
    explorer.subject.value = FACTS[1].subject
    assert explorer.message.value == "" and explorer.image.value[:4] == b"\x89PNG"


def test_busy_indicator_is_shown_while_computing(explorer, monkeypatch):
    from romelib.plots import widgets
    seen = []
    original = widgets.trace

    def spying_trace(*args, **kwargs):
        seen.append(explorer.status.value)
        return original(*args, **kwargs)
    monkeypatch.setattr(widgets, "trace", spying_trace)
    explorer.samples.value = 3
    assert seen and "computing" in seen[0]
    assert "ready" in explorer.status.value


def test_window_noise_and_target_controls(explorer):
    explorer.kind.value = "hidden"
    assert explorer.window.disabled
    explorer.kind.value = "mlp"
    assert not explorer.window.disabled
    computed = explorer.traces_computed
    explorer.window.value = 2
    assert explorer.traces_computed == computed + 1                 # a new window is a new trace
    explorer.corruption.value = "zero"
    assert explorer.noise.disabled                                  # no noise level to choose
    explorer.corruption.value = "gaussian"
    assert not explorer.noise.disabled
    explorer.noise.value = 0.0
    assert "noise 0" in explorer.message.value and "nothing to restore" in explorer.message.value
    explorer.noise.value = 3.0
    assert explorer.message.value == ""
    explorer.target_choice.value = "a typed answer"
    assert not explorer.target.disabled and "Type the answer" in explorer.message.value
    explorer.target.value = "Seattle"
    assert explorer.message.value == "" and explorer.current_trace().target.strip() == "Seattle"
    explorer.target_choice.value = "the model's prediction"
    explorer.kind.value = "hidden"


@pytest.fixture(scope="module")
def editor(tmp_path_factory):
    from conftest import make_tiny_model
    from romelib.editing.rome import ROMEHyperParams
    from romelib.plots.edit_widget import EditWidget
    case = {"case_id": 1, "requested_rewrite": {"prompt": "{} plays the sport of", "subject": "Michael Jordan",
                                                "target_new": {"str": "guitar"},
                                                "target_true": {"str": "basketball"}},
            "paraphrases": [], "paraphrase_prompts": ["Rome is the capital. Michael Jordan plays"],
            "neighborhood_prompts": ["Toko Yasuda plays the", "Bob works in the Empire State Building"],
            "attribute_prompts": ["Toko Yasuda plays"], "generation_prompts": ["Michael Jordan is"]}
    hparams = ROMEHyperParams(layer=1, v_num_grad_steps=3, context_lengths=(3,), contexts_per_length=2)
    with pytest.MonkeyPatch.context() as patch:                    # prefixes go to a private cache
        patch.setenv("ROMELIB_CACHE", str(tmp_path_factory.mktemp("edit_widget")))
        widget = EditWidget(make_tiny_model("llama"), cases=[case], generation_tokens=3, hparams=hparams)
        widget.statistics.value = "C = I"                          # no statistics for a tiny model
        yield widget


def test_the_edit_widget_edits_shows_and_undoes(editor):
    import torch
    params = {n: p.detach().clone() for n, p in editor.mt.model.named_parameters()}
    states = []
    original_apply = editor.__class__.snapshot

    def watching(self):
        states.append((self.edit_button.disabled, self.layer.disabled))
        return original_apply(self)
    editor.__class__.snapshot = watching
    try:
        editor.apply()
    finally:
        editor.__class__.snapshot = original_apply
    assert states and all(states_ == (True, True) for states_ in states)   # disabled while busy
    assert editor.handle is not None and not editor.undo_button.disabled and not editor.edit_button.disabled
    assert "edited layer 1" in editor.status.value and "generation after" in editor.output.value
    assert editor.output.value.count("<tr>") >= 1 + 3 + 2                # prompts and neighbours
    changed = [n for n, p in editor.mt.model.named_parameters() if not torch.equal(p, params[n])]
    assert changed == [editor.mt.module_name("mlp_proj", 1) + ".weight"]
    reach = editor.key_overlap()
    assert len(reach) == 2 and all(abs(c) <= 1 for _, _, c in reach)
    editor.undo()
    assert all(torch.equal(p, params[n]) for n, p in editor.mt.model.named_parameters())
    assert editor.undo_button.disabled and "bit for bit" in editor.status.value
    # the predictions made after the undo are shown, and they are those from before the edit
    import re
    column = lambda name: re.findall(f"<td class='{name}'>(.*?)</td>", editor.output.value)
    # one row per prompt: the edited prompt, its paraphrase and two neighbours
    assert "after undo" in editor.output.value and len(column("undone")) == len(column("before")) == 4
    assert column("undone") == column("before") and "those from before the edit" in editor.status.value


def test_the_edit_widget_reports_bad_input(editor):
    editor.case.value = "(type your own edit)"
    editor.subject.value = "Nobody"
    editor.prompt.value = "{} plays the sport of"
    editor.target.value = ""
    editor.apply()
    assert "Cannot edit" in editor.output.value and "target_new" in editor.output.value
    assert editor.handle is None and not editor.edit_button.disabled
