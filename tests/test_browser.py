"""A real browser check of the explorer: JupyterLab on localhost, headless Chromium driven by
Playwright, notebook 05 run top to bottom, the layer slider moved, the figure redrawn.

Skips (with the reason) where no Chromium or no Playwright is found; with
``ROMELIB_REQUIRE_BROWSER=1`` (set by ``.ci/run``) it fails instead.  Screenshots are kept
in ``test-artifacts/`` (git-ignored).
"""
from __future__ import annotations

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


@pytest.fixture
def jupyter_lab(tmp_path):
    """JupyterLab serving a copy of notebook 05 (the repository's file is never saved over)."""
    root = tmp_path / "lab"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    port, token = _free_port(), secrets.token_hex(16)
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
        yield f"http://127.0.0.1:{port}/lab/tree/{NOTEBOOK.name}?token={token}"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


def test_explorer_redraws_when_the_layer_slider_moves(jupyter_lab):
    executable = _browser()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright is not installed (pip install playwright)")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            _run_notebook_and_move_slider(page, jupyter_lab)
        finally:
            page.screenshot(path=str(ARTIFACTS / "explorer_final.png"), full_page=True)
            browser.close()


def _run_notebook_and_move_slider(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.get_by_text(re.compile(r"\| Idle$")).first.wait_for(timeout=90_000)   # kernel started
    _dismiss_news_prompt(page)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_text("Run All Cells", exact=True).click()
    # the last code cell prints this once every cell above it has run
    page.get_by_text("message shown: True").wait_for(timeout=240_000)
    # that cell then sets a valid subject again: wait until the explorer has redrawn for it
    # (kernel idle, status "ready", message cleared) so that the figure can only change
    # below because the slider moved
    page.get_by_text(re.compile(r"\| Idle$")).first.wait_for(timeout=120_000)
    page.locator(".widget-html", has_text="ready").first.wait_for(timeout=60_000)
    assert page.locator(".widget-html", has_text="does not occur in the prompt").count() == 0
    image = page.locator(".widget-image").first
    image.wait_for(state="visible", timeout=30_000)
    image.scroll_into_view_if_needed()
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
