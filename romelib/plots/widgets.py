"""An interactive causal-tracing explorer for notebooks.

Usage::

    from romelib.plots.widgets import Explorer
    explorer = Explorer(mt)          # facts from data/known_facts.json
    explorer                         # shows the controls, the heatmap and the effect plot

Pick a fact or type a prompt and its subject; choose the corruption and its level (disabled
for the corruptions that have none), the kind of state restored and, for MLP or attention,
the window; the target (the model's prediction or an answer you type); the number of noise
samples and a layer.  Every change re-renders
(the status line says when it is busy).  Traces are cached, so moving the layer slider
only redraws.  Bad input, such as a subject that is not in the prompt, is shown as a
message in the output area.
"""
from __future__ import annotations

import html

import ipywidgets as widgets
import matplotlib.pyplot as plt
from IPython.display import display

from ..datasets.facts import load_facts
from ..paths import project_data
from ..tracing.corruption import CORRUPTIONS, NOISY, embedding_sigma, make_corruption
from ..tracing.trace import KINDS, trace
from .figures import COLORS, figure_png, plot_trace, token_labels

OWN = "(type your own prompt and subject)"
PREDICTION, TYPED = "the model's prediction", "a typed answer"


class Explorer:
    """Widgets around :func:`romelib.trace`; ``explorer.widget`` is the whole panel.

    Usage: ``Explorer(mt, facts=romelib.load_facts("project")[:50], samples=3)``.
    """

    def __init__(self, mt, facts=None, samples: int = 3, noise: float = 3.0, window: int = 10):
        if facts is None:
            facts = load_facts("project") if _project_facts_exist() else load_facts("known_1000")[:100]
        self.mt, self.facts = mt, list(facts)
        self.sigma = embedding_sigma(mt)
        self._cache: dict = {}
        self.renders = 0
        style = {"description_width": "90px"}
        wide = widgets.Layout(width="620px")
        options = [OWN] + [f"{f.prompt} → {f.attribute}" for f in self.facts]
        self.fact = widgets.Dropdown(options=options, value=options[1] if self.facts else OWN,
                                     description="fact", style=style, layout=wide)
        first = self.facts[0] if self.facts else None
        self.prompt = widgets.Text(first.prompt if first else "", description="prompt",
                                   style=style, layout=wide, continuous_update=False)
        self.subject = widgets.Text(first.subject if first else "", description="subject",
                                    style=style, continuous_update=False)
        self.corruption = widgets.Dropdown(options=list(CORRUPTIONS), value="gaussian",
                                           description="corruption", style=style)
        self.noise = widgets.FloatSlider(value=noise, min=0.0, max=10.0, step=0.5,
                                         description="noise (σ)", style=style,
                                         continuous_update=False)
        self.kind = widgets.ToggleButtons(options=list(KINDS), value="hidden",
                                          description="restore", style=style)
        self.window = widgets.IntSlider(value=window, min=1, max=mt.num_layers, description="window",
                                        style=style, continuous_update=False, disabled=True)
        self.target_choice = widgets.ToggleButtons(options=[PREDICTION, TYPED], value=PREDICTION,
                                                   description="target", style=style)
        self.target = widgets.Text("", description="answer", style=style, disabled=True,
                                   continuous_update=False, placeholder="e.g. Seattle")
        self.samples = widgets.IntSlider(value=samples, min=1, max=20, description="samples",
                                         style=style, continuous_update=False)
        self.layer = widgets.IntSlider(value=mt.num_layers // 2, min=0, max=mt.num_layers - 1,
                                       description="layer", style=style, continuous_update=False)
        self.status = widgets.HTML()
        self.message = widgets.HTML()
        self.image = widgets.Image(format="png", layout=widgets.Layout(max_width="1000px"))
        self.widget = widgets.VBox([
            self.fact, self.prompt, self.subject,
            widgets.HBox([self.corruption, self.noise]), self.kind, self.window,
            widgets.HBox([self.target_choice, self.target]),
            widgets.HBox([self.samples, self.layer]), self.status, self.message, self.image])
        self.fact.observe(self._on_fact, names="value")
        for control in (self.prompt, self.subject, self.corruption, self.noise, self.kind,
                        self.samples, self.layer, self.window, self.target_choice, self.target):
            control.observe(self._on_change, names="value")
        self.render()

    def _ipython_display_(self):
        display(self.widget)

    def _on_fact(self, change):
        if change["new"] == OWN:
            return
        fact = self.facts[self.fact.options.index(change["new"]) - 1]
        with self.hold():
            self.prompt.value, self.subject.value = fact.prompt, fact.subject
        self.render()

    def _on_change(self, change):
        self.noise.disabled = self.corruption.value not in NOISY      # zero / replace: no level
        self.window.disabled = self.kind.value == "hidden"            # one state, no window
        self.target.disabled = self.target_choice.value != TYPED
        if not getattr(self, "_holding", False):
            self.render()

    def hold(self):
        """Context manager: change several controls, render once afterwards."""
        explorer = self

        class _Hold:
            def __enter__(self):
                explorer._holding = True

            def __exit__(self, *exc):
                explorer._holding = False
        return _Hold()

    @property
    def traces_computed(self) -> int:
        """How many distinct traces this explorer has computed (moving the layer computes none)."""
        return len(self._cache)

    def current_trace(self):
        """The trace for the current controls (computed once per setting, then cached)."""
        target = self.target.value.strip() if self.target_choice.value == TYPED else None
        if self.target_choice.value == TYPED and not target:
            raise ValueError("Type the answer to trace, or choose the model's prediction as target.")
        key = (self.prompt.value, self.subject.value, self.corruption.value, self.noise.value,
               self.kind.value, self.samples.value, self.window.value, target)
        if key not in self._cache:
            if self.corruption.value in NOISY and self.noise.value == 0:
                raise ValueError("With noise 0 the subject is not corrupted: the corrupted run is the "
                                 "clean run, and there is nothing to restore. Move the noise above 0.")
            corruption = make_corruption(self.mt, self.corruption.value, self.noise.value,
                                         sigma=self.sigma)
            self._cache[key] = trace(self.mt, key[0], key[1], kind=key[4], samples=key[5],
                                     window=key[6], corruption=corruption, target=target)
        return self._cache[key]

    def render(self) -> None:
        """Recompute if needed and redraw; errors in the input become a message."""
        self.status.value = "<b>⏳ computing…</b>"
        try:
            if not self.prompt.value.strip() or not self.subject.value.strip():
                raise ValueError("Type a prompt and the subject it mentions.")
            result = self.current_trace()
            self.image.value = self.draw(result, self.layer.value)
            self.message.value = ""
        except ValueError as error:
            self.image.value = b""                         # a message instead of a stale figure
            self.message.value = (f"<div style='color:#b00020'><b>Cannot trace this input:</b> "
                                  f"{html.escape(str(error))}</div>")
        finally:
            self.renders += 1
            self.status.value = "✓ ready"

    @staticmethod
    def draw(result, layer: int) -> bytes:
        """The heatmap with ``layer`` outlined, beside the effect at that layer, as PNG."""
        height = 0.3 * len(result.tokens) + 1.8
        fig, (left, right) = plt.subplots(1, 2, figsize=(10.5, height), dpi=90,
                                          gridspec_kw={"width_ratios": [3, 2]})
        plot_trace(result, left, highlight_layer=layer)
        effects = (result.scores[:, layer] - result.low_score).numpy()
        positions = range(len(result.tokens))
        right.barh(list(positions), effects, color=COLORS[result.kind])
        right.set_yticks(list(positions), token_labels(result), fontsize=8)
        right.invert_yaxis()
        right.axvline(result.total_effect, color="grey", linestyle="--", linewidth=0.8,
                      label=f"total effect {result.total_effect:.3f}")
        right.set_xlabel(f"indirect effect on {result.probability_label}")
        right.set_title(f"restoring at layer {layer}", fontsize=9)
        right.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        png = figure_png(fig, dpi=90)
        plt.close(fig)
        return png


def _project_facts_exist() -> bool:
    return project_data("known_facts.json").is_file()
