"""An editing widget for notebooks: write a fact into the model, look around, undo.

Usage::

    from romelib.plots.edit_widget import EditWidget
    widget = EditWidget(mt)                  # cases from data/counterfact_cases.json
    widget                                   # the controls, then "Edit" and "Undo"

Pick one of the project's edit cases or type your own: the subject, the prompt template
(``{}`` where the subject goes), the new target, the layer, whether C comes from text or is
the identity, and the KL factor.  **Edit** runs ROME and shows, before and after the edit:
the top predictions on the prompt, on each paraphrase and on each neighbour prompt, a short
greedy generation, and for each neighbour prompt how strongly the rank-one update reaches
it: ``(u . k) / (u . k*)`` at the neighbour's token where it is largest, with ``u = C^-1 k_avg``
the update's direction (1 means the neighbour's key is changed as much as the subject's; 0,
not at all) and the cosine of that key with the subject's ``k*``.  **Undo** puts the weights
back bit for bit and adds a column with the predictions made after it, which equal those
from before the edit.  The controls are disabled, with a status line, while an edit runs.
"""
from __future__ import annotations

import html
import time
from dataclasses import replace

import ipywidgets as widgets
import torch
from IPython.display import display

from ..core.generation import generate
from ..core.hooks import hooks
from ..core.tokens import make_inputs, predict
from ..datasets.counterfact import load_counterfact, rewrite_prompt, targets
from ..editing.handle import edit
from ..editing.key_statistics import key_statistics
from ..editing.memory import update_direction
from ..editing.request import EditRequest
from ..editing.rome import resolve_hparams

OWN = "(type your own edit)"


class EditWidget:
    """Widgets around :func:`romelib.edit` with ROME; ``widget.panel`` is the whole panel.

    Usage: ``EditWidget(mt, cases=romelib.load_counterfact("project")[:20])``; in code,
    ``widget.apply()`` and ``widget.undo()`` do what the buttons do.
    """

    def __init__(self, mt, cases=None, generation_tokens: int = 12, neighbours: int = 4, hparams=None):
        self.mt, self.handle, self.seconds, self.shown = mt, None, None, None
        self.cases = list(load_counterfact("project")[:30] if cases is None else cases)
        self.generation_tokens, self.neighbours = generation_tokens, neighbours
        self.hparams = resolve_hparams(mt, hparams)          # the model's file unless given
        style, wide = {"description_width": "110px"}, widgets.Layout(width="640px")
        options = [OWN] + [f"{rewrite_prompt(c)} → {targets(c)[0]}" for c in self.cases]
        self.case = widgets.Dropdown(options=options, description="edit case", style=style, layout=wide)
        self.subject = widgets.Text(description="subject", style=style, layout=wide)
        self.prompt = widgets.Text(description="prompt ({})", style=style, layout=wide)
        self.target = widgets.Text(description="new target", style=style, layout=wide)
        self.paraphrases = widgets.Textarea(description="paraphrases", style=style, layout=wide,
                                            placeholder="one prompt per line")
        self.neighbourhood = widgets.Textarea(description="neighbours", style=style, layout=wide,
                                              placeholder="prompts about other subjects, one per line")
        self.layer = widgets.IntSlider(value=self.hparams.layer, min=0, max=mt.num_layers - 1,
                                       description="layer", style=style)
        self.statistics = widgets.ToggleButtons(options=["C from text", "C = I"], description="C",
                                                style=style)
        self.kl_factor = widgets.FloatSlider(value=self.hparams.kl_factor, min=0.0, max=1.0, step=0.0625,
                                             description="KL factor", style=style, readout_format=".4f")
        self.edit_button = widgets.Button(description="Edit", button_style="primary", icon="pencil")
        self.undo_button = widgets.Button(description="Undo", icon="undo", disabled=True)
        self.status = widgets.HTML("ready")
        self.output = widgets.HTML()
        self.controls = [self.case, self.subject, self.prompt, self.target, self.paraphrases,
                         self.neighbourhood, self.layer, self.statistics, self.kl_factor, self.edit_button]
        self.panel = widgets.VBox([*self.controls[:-1], widgets.HBox([self.edit_button, self.undo_button]),
                                   self.status, self.output])
        self.case.observe(self._on_case, names="value")
        self.edit_button.on_click(lambda _: self.apply())
        self.undo_button.on_click(lambda _: self.undo())
        if self.cases:
            self.case.value = options[1]

    def _ipython_display_(self):
        display(self.panel)

    def _on_case(self, change) -> None:
        if change["new"] == OWN:
            return
        case = self.cases[self.case.options.index(change["new"]) - 1]
        rewrite = case["requested_rewrite"]
        self.subject.value, self.prompt.value = rewrite["subject"], rewrite["prompt"]
        self.target.value = targets(case)[0]
        self.paraphrases.value = "\n".join(case["paraphrase_prompts"])
        self.neighbourhood.value = "\n".join(case["neighborhood_prompts"][:self.neighbours])

    def request(self) -> EditRequest:
        """The edit the controls describe (errors name the field)."""
        return EditRequest(self.prompt.value, self.subject.value, self.target.value)

    def settings(self):
        """ROME's hyperparameters with the layer, C and KL factor of the controls."""
        return replace(self.hparams, layer=self.layer.value, kl_factor=self.kl_factor.value,
                       identity_covariance=self.statistics.value == "C = I")

    def _lines(self, widget) -> list[str]:
        return [line.strip() for line in widget.value.splitlines() if line.strip()]

    def snapshot(self, prompts: list[str] | None = None) -> dict:
        """Top predictions, a greedy generation (of the first prompt) and the prompts they were
        made on: the edited prompt, the paraphrases and the neighbours unless ``prompts`` are given."""
        if prompts is None:
            prompts = [self.request().filled_prompt, *self._lines(self.paraphrases),
                       *self._lines(self.neighbourhood)]
        top = predict(self.mt, prompts, k=3)
        text = generate(self.mt, prompts[:1], self.generation_tokens)[0]
        return {"prompts": prompts, "top": top, "generation": text}

    def apply(self) -> None:
        """Run the edit (the "Edit" button): before, edit, after, key overlap; controls disabled meanwhile."""
        self._restore()
        self._busy("editing… (computing k*, v* and the update)")
        try:
            before = self.snapshot()
            started = time.perf_counter()
            self.handle = edit(self.mt, self.request(), hparams=self.settings())
            self.seconds = time.perf_counter() - started
            after = self.snapshot()
            overlap = self.key_overlap()
            self.shown = (before, after, overlap)
            self.output.value = self._render(before, after, overlap)
            self.status.value = f"edited layer {self.layer.value} in {self.seconds:.1f} s"
        except (ValueError, TypeError) as error:
            self.handle, self.shown = None, None
            self.output.value = (f"<div style='color:#b00020'><b>Cannot edit:</b> "
                                 f"{html.escape(str(error))}</div>")
            self.status.value = "ready"
        finally:
            self._idle()

    def undo(self) -> None:
        """Restore the weights as they were (the "Undo" button) and show the predictions made
        after it beside those from before the edit."""
        if self.handle is None:
            self.undo_button.disabled = True
            return
        self._busy("undoing… (restoring the weights, predicting again)")
        try:
            self._restore()
            message = "undone: the weights are back, bit for bit"
            if self.shown is not None:
                before, after, overlap = self.shown
                undone = self.snapshot(before["prompts"])                 # the same prompts again
                self.output.value = self._render(before, after, overlap, undone)
                tokens = lambda shot: [[p.token for p in row] for row in shot["top"]]
                message += ("; the predictions are those from before the edit"
                            if tokens(undone) == tokens(before) else "; the predictions differ from before the edit")
            self.status.value = message
        finally:
            self._idle()

    def _restore(self) -> None:
        if self.handle is not None:
            self.handle.restore()
            self.handle = None

    def key_overlap(self) -> list[tuple[str, float, float]]:
        """For each neighbour prompt: the update's reach ``(u . k) / (u . k*)`` and ``cos(k, k*)``
        at the neighbour's token where the reach is largest."""
        info = self.handle.info
        layer, k_star = info["layer"], info["k_star"].double()
        second = None if self.settings().identity_covariance else key_statistics(
            self.mt, layer, self.hparams.mom2_source, self.hparams.mom2_max_tokens).mom2
        u = update_direction(info["k_average"], second)
        rows = []
        for prompt in self._lines(self.neighbourhood):
            name = f"mlp_proj.{layer}"
            with torch.no_grad(), hooks(self.mt, [name], retain_input=True, retain_output=False,
                                        stop=True) as acts:
                self.mt.model(**make_inputs(self.mt, prompt), use_cache=False)
            keys = acts[name].input[0].double()                        # (tokens, d_mlp)
            reach = (keys @ u) / (k_star @ u)
            best = int(reach.abs().argmax())
            cosine = float(torch.nn.functional.cosine_similarity(keys[best], k_star, dim=0))
            rows.append((prompt, float(reach[best]), cosine))
        return rows

    def _busy(self, message: str) -> None:
        for control in (*self.controls, self.undo_button):
            control.disabled = True
        self.status.value = f"<b>⏳ {html.escape(message)}</b>"

    def _idle(self) -> None:
        for control in self.controls:
            control.disabled = False
        self.undo_button.disabled = self.handle is None

    def _render(self, before: dict, after: dict, overlap, undone: dict | None = None) -> str:
        def cell(predictions, column):
            text = ", ".join(f"{html.escape(p.token)!s} {p.probability:.2f}" for p in predictions)
            return f"<td class='{column}'>{text}</td>"
        n_para = len(self._lines(self.paraphrases))
        kinds = ["edited prompt"] + ["paraphrase"] * n_para + ["neighbour"] * (len(before["prompts"]) - 1 - n_para)
        last = undone["top"] if undone else [None] * len(kinds)
        rows = "".join(f"<tr><td>{kind}</td><td>{html.escape(prompt)}</td>{cell(b, 'before')}{cell(a, 'after')}"
                       f"{cell(u, 'undone') if u is not None else ''}</tr>"
                       for kind, prompt, b, a, u in zip(kinds, before["prompts"], before["top"], after["top"], last))
        reach = "".join(f"<tr><td>{html.escape(p)}</td><td>{r:+.2f}</td><td>{c:+.2f}</td></tr>"
                        for p, r, c in overlap)
        header = "<th>after undo: top 3</th>" if undone else ""
        generation = (f"<br><b>generation after undo:</b> {html.escape(undone['generation'])}" if undone else "")
        return (f"<table><tr><th></th><th>prompt</th><th>before: top 3</th><th>after: top 3</th>{header}</tr>"
                f"{rows}</table>"
                f"<p><b>generation before:</b> {html.escape(before['generation'])}<br>"
                f"<b>generation after:</b> {html.escape(after['generation'])}{generation}</p>"
                f"<table><tr><th>neighbour prompt</th><th>update's reach (u·k)/(u·k*)</th>"
                f"<th>cos(k, k*)</th></tr>{reach}</table>")
