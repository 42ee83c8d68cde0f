"""A non-editable ``pip install .`` works: the installed package finds its hyperparameters,
shipped statistics, context prefixes and fact lists without the repository, and edits."""
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAVED_RUNS = ("results", "edit_layer_sweep", "tracing")   # stay in the repository, not installed

CHECK = r"""
import json, sys
from pathlib import Path
import romelib
from romelib.paths import INSTALLED_DATA, project_data_dir
assert "site-packages" in romelib.__file__, romelib.__file__
assert project_data_dir() == INSTALLED_DATA and INSTALLED_DATA.is_dir()
hparams = romelib.load_hparams(romelib.ROMEHyperParams, "rome", "gemma-3-270m")
stats = project_data_dir() / "stats" / "gemma-3-270m"
assert any(stats.glob(f"*layer{hparams.layer:02d}*.safetensors")), list(stats.iterdir())
assert (project_data_dir() / "context_prefixes" / "gemma-3-270m.json").is_file()
assert len(romelib.load_facts("project")) > 100 and len(romelib.load_counterfact("project")) > 50
assert (project_data_dir() / "close_neighbours.json").is_file()              # notebook 13's cases
assert (project_data_dir() / "corpora" / "gemma-3-270m.txt").is_file()      # C's offline text
assert not (project_data_dir() / "results").exists()           # saved runs stay in the repository
if "--edit" in sys.argv:
    mt = romelib.load_model()
    assert romelib.text_source("project-corpus", mt=mt).documents()
    prompt = "Michael Jordan plays the sport of"
    before = romelib.predict(mt, prompt, k=1)[0].token
    request = romelib.EditRequest("{} plays the sport of", "Michael Jordan", "golf")
    with romelib.edit(mt, request) as handle:
        after = romelib.predict(mt, prompt, k=1)[0].token
        source = handle.info["hparams"].mom2_source
    print(json.dumps({"before": before, "after": after, "layer": hparams.layer, "source": source}))
    assert after.strip() == "golf", after
print("ok", romelib.__file__)
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh virtual environment with romelib installed from a copy of the repository."""
    base = tmp_path_factory.mktemp("install")
    source = base / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.lock")
    shutil.copytree(ROOT / "romelib", source / "romelib", ignore=ignore)
    shutil.copytree(ROOT / "data", source / "data", ignore=ignore)
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    # torch, transformers... come from this environment's site-packages (a plain path entry:
    # its .pth files, the editable romelib among them, are not processed)
    target = subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"],
                            capture_output=True, text=True, check=True).stdout.strip()
    (Path(target) / "outer.pth").write_text(site.getsitepackages()[0] + "\n")
    result = subprocess.run([str(python), "-m", "pip", "install", "--no-deps",
                             "--quiet", str(source)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    shutil.rmtree(source)                                        # nothing left to fall back on
    return python, base


def run_check(python, cwd, *arguments):
    env = {k: v for k, v in os.environ.items() if k not in ("ROMELIB_DATA", "PYTHONPATH")}
    return subprocess.run([str(python), "-c", CHECK, *arguments], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def test_installed_package_finds_its_data(installed):
    python, base = installed
    result = run_check(python, base)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "site-packages" in result.stdout


def test_installed_package_edits_at_the_default_layer(installed):
    python, base = installed
    result = run_check(python, base, "--edit")
    assert result.returncode == 0, result.stderr[-3000:]
    assert '"after": " golf"' in result.stdout


def test_package_data_patterns_cover_every_project_data_file():
    """Every file under data/ that the library reads (all but saved runs and READMEs) is shipped."""
    tomllib = pytest.importorskip("tomllib")           # Python 3.11+
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    data = ROOT / config["package-dir"]["romelib._data"]
    shipped = {p for pattern in config["package-data"]["romelib._data"] for p in data.glob(pattern)}
    wanted = {p for p in data.rglob("*") if p.is_file() and p.suffix != ".md" and not p.name.endswith(".lock")
              and p.relative_to(data).parts[0] not in SAVED_RUNS}
    assert wanted - shipped == set(), f"add to [tool.setuptools.package-data]: {sorted(wanted - shipped)}"
    assert not any(p.relative_to(data).parts[0] in SAVED_RUNS for p in shipped)
