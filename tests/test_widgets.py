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
    before = explorer.image.value
    explorer.subject.value = "Eiffel Tower"       # not in the prompt
    assert "does not occur" in explorer.message.value
    assert explorer.image.value == before and "ready" in explorer.status.value
    explorer.subject.value = FACTS[1].subject
    assert explorer.message.value == ""


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
