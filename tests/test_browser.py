"""Real browser checks of the widgets: JupyterLab on localhost, headless Chromium driven by
Playwright.  The explorer: notebook 05 run top to bottom, the layer slider moved, the figure
redrawn.  The editing widget (notebook 08's "Try your own edit"): a small notebook with the
widget run, "Edit" clicked, the predictions shown after the edit differ from those before it,
"Undo" clicked, the predictions made after the undo equal those before the edit.

Skips (with the reason) where no Chromium or no Playwright is found; with
``ROMELIB_REQUIRE_BROWSER=1`` (set by ``.ci/run``) it fails instead.  Screenshots are kept
in ``test-artifacts/`` (git-ignored).
"""
from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "05_explorer.ipynb"
ARTIFACTS = ROOT / "test-artifacts"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _unavailable(reason: str):
    if os.environ.get("ROMELIB_REQUIRE_BROWSER") == "1":
        pytest.fail(f"ROMELIB_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


def _browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    _unavailable("no Chromium found (on Debian/Ubuntu: apt-get install chromium); "
                 "the JupyterLab browser check needs one")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_server(url: str, process, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"jupyter lab did not answer at {url} within {timeout} s")


@contextlib.contextmanager
def _serve(tmp_path, notebook: Path):
    """JupyterLab serving a folder that holds only ``notebook``; yields the notebook's URL."""
    root = tmp_path / "lab"
    root.mkdir()
    shutil.copy(notebook, root / notebook.name)
    port, token = _free_port(), secrets.token_hex(16)
    # render every cell: JupyterLab's default windowing hides cells scrolled out of view
    settings = tmp_path / "config" / "lab" / "user-settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    (settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    env = {**os.environ, "ROMELIB_FAST": "1", "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    log = open(tmp_path / "jupyter.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}",
         "--ip=127.0.0.1", f"--ServerApp.token={token}", f"--ServerApp.root_dir={root}",
         "--ServerApp.open_browser=False", "--LabApp.news_url=", "--allow-root"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for_server(f"http://127.0.0.1:{port}/api/status?token={token}", process)
        yield f"http://127.0.0.1:{port}/lab/tree/{notebook.name}?token={token}"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


@pytest.fixture
def jupyter_lab(tmp_path):
    """JupyterLab serving a copy of notebook 05 (the repository's file is never saved over)."""
    with _serve(tmp_path, NOTEBOOK) as url:
        yield url


def _widget_notebook(folder: Path) -> Path:
    """A small notebook with the editing widget of notebook 08 and a line printed when it is shown."""
    import nbformat
    cells = [
        "import dataclasses\nimport romelib\nfrom romelib.editing.rome import resolve_hparams\n"
        "from romelib.plots.edit_widget import EditWidget",
        "mt = romelib.load_model()\n"
        "hparams = dataclasses.replace(resolve_hparams(mt, None), v_num_grad_steps=8)   # a quick edit",
        "widget = EditWidget(mt, hparams=hparams, generation_tokens=4, neighbours=2)\nwidget",
        'print("widget " + "shown")',
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = folder / "edit_widget.ipynb"
    nbformat.write(notebook, path)
    return path


@pytest.fixture
def widget_lab(tmp_path):
    """JupyterLab serving a small generated notebook that shows the editing widget."""
    with _serve(tmp_path, _widget_notebook(tmp_path)) as url:
        yield url


def _chromium_page(playwright, executable):
    browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                         args=["--no-sandbox", "--disable-gpu"])
    return browser, browser.new_page(viewport={"width": 1400, "height": 1000})


def _playwright():
    executable = _browser()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright is not installed (pip install playwright)")
    ARTIFACTS.mkdir(exist_ok=True)
    return executable, sync_playwright


def _in_chromium(steps, url: str, final_screenshot: str) -> None:
    """Run ``steps(page, url)`` in headless Chromium; screenshot the page at the end, whatever happens."""
    executable, sync_playwright = _playwright()
    with sync_playwright() as playwright:
        browser, page = _chromium_page(playwright, executable)
        try:
            steps(page, url)
        finally:
            page.screenshot(path=str(ARTIFACTS / final_screenshot), full_page=True)
            browser.close()


def test_explorer_redraws_when_the_layer_slider_moves(jupyter_lab):
    _in_chromium(_run_notebook_and_move_slider, jupyter_lab, "explorer_final.png")


def test_edit_widget_edits_and_undoes_in_the_browser(widget_lab):
    _in_chromium(_edit_and_undo, widget_lab, "edit_widget_final.png")


def _run_all(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.get_by_text(re.compile(r"\| Idle$")).first.wait_for(timeout=90_000)   # kernel started
    _dismiss_news_prompt(page)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_text("Run All Cells", exact=True).click()


def _column(page, name: str) -> list[str]:
    """The texts of the widget's prediction cells of one column ("before", "after", "undone")."""
    return [cell.inner_text() for cell in page.locator(f".widget-html td.{name}").all()]


def _edit_and_undo(page, url: str) -> None:
    _run_all(page, url)
    page.get_by_text("widget shown").wait_for(timeout=240_000)
    page.locator(".widget-html", has_text="ready").first.wait_for(timeout=60_000)
    edit = page.locator("button.widget-button", has_text=re.compile(r"^\s*Edit\s*$"))
    undo = page.locator("button.widget-button", has_text=re.compile(r"^\s*Undo\s*$"))
    assert undo.is_disabled() and edit.is_enabled()
    edit.click()
    page.locator(".widget-html", has_text="edited layer").first.wait_for(timeout=400_000)
    before, after = _column(page, "before"), _column(page, "after")
    page.screenshot(path=str(ARTIFACTS / "edit_widget_edited.png"), full_page=True)
    assert len(before) == len(after) >= 3, (before, after)
    assert after[0] != before[0], (before[0], after[0])        # the edited prompt's predictions changed
    assert _column(page, "undone") == []
    assert undo.is_enabled()
    undo.click()
    page.locator(".widget-html", has_text="undone").first.wait_for(timeout=120_000)
    page.screenshot(path=str(ARTIFACTS / "edit_widget_undone.png"), full_page=True)
    assert _column(page, "undone") == before                   # the predictions came back
    assert page.locator(".widget-html", has_text="those from before the edit").count() >= 1
    assert undo.is_disabled() and edit.is_enabled()


def _run_notebook_and_move_slider(page, url: str) -> None:
    _run_all(page, url)
    # the last code cell prints this once every cell above it has run
    page.get_by_text("message shown: True").wait_for(timeout=240_000)
    # that cell then sets a valid subject again: wait until the explorer has redrawn for it
    # (kernel idle, status "ready", message cleared) so that the figure can only change
    # below because the slider moved
    page.get_by_text(re.compile(r"\| Idle$")).first.wait_for(timeout=120_000)
    page.locator(".widget-html", has_text="ready").first.wait_for(timeout=60_000)
    assert page.locator(".widget-html", has_text="does not occur in the prompt").count() == 0
    image = page.locator(".widget-image").first
    image.scroll_into_view_if_needed(timeout=30_000)
    image.wait_for(state="visible", timeout=30_000)
    before = image.get_attribute("src")
    page.screenshot(path=str(ARTIFACTS / "explorer_before.png"), full_page=True)

    slider = page.locator(".widget-slider", has_text="layer").first
    value_before = slider.locator(".widget-readout").inner_text()
    handle = slider.locator(".noUi-handle").first
    handle.focus()
    handle.press("ArrowRight")
    page.wait_for_function(
        "([selector, old]) => { const img = document.querySelector(selector);"
        " return img && img.getAttribute('src') !== old; }",
        arg=[".widget-image", before], timeout=60_000)
    value_after = slider.locator(".widget-readout").inner_text()
    page.screenshot(path=str(ARTIFACTS / "explorer_after.png"), full_page=True)
    assert value_after != value_before, (value_before, value_after)
    assert image.get_attribute("src") != before
    assert page.get_by_text("ready").first.is_visible()


def _dismiss_news_prompt(page) -> None:
    """JupyterLab asks once whether to fetch Jupyter news; answer no (cleaner screenshots)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    try:
        page.get_by_role("button", name="No", exact=True).click(timeout=3_000)
    except PlaywrightTimeout:
        pass
