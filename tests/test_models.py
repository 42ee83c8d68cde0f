"""Model loading: the cache is verified, a damaged one is rebuilt, bad names explain themselves."""
import json
import os
import subprocess
import sys

import pytest

import romelib
from romelib.core import model_cache as models
from romelib.paths import cache_dir


def _fake_cache(folder, payload=b"weights"):
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(payload)
    files = {"model.safetensors": {"size": len(payload),
                                   "sha256": models._sha256(folder / "model.safetensors")}}
    (folder / models.MANIFEST).write_text(json.dumps({"format": models.CACHE_FORMAT, "files": files}))


def test_verify_cache_detects_damage(tmp_path):
    folder = tmp_path / "m"
    _fake_cache(folder)
    assert models.verify_cache(folder)
    (folder / "model.safetensors").write_bytes(b"weightz")      # same size, other bytes
    assert not models.verify_cache(folder)
    (folder / "model.safetensors").write_bytes(b"weigh")        # truncated
    assert not models.verify_cache(folder)
    (folder / models.MANIFEST).unlink()                           # partial: no manifest yet
    assert not models.verify_cache(folder)
    assert not models.verify_cache(tmp_path / "absent")


def test_damaged_cache_is_rebuilt_not_half_loaded(tmp_path, monkeypatch):
    monkeypatch.setenv("ROMELIB_CACHE", str(tmp_path))
    builds = []

    def fake_build(package, gguf_name, folder):
        builds.append(folder)
        if folder.exists():
            import shutil
            shutil.rmtree(folder)
        _fake_cache(folder, payload=b"fresh weights")

    monkeypatch.setattr(models, "_build_cache", fake_build)
    folder = models.ensure_embedded_cache("gemma-3-270m")
    assert folder == tmp_path / "models" / "gemma-3-270m" and len(builds) == 1
    models.ensure_embedded_cache("gemma-3-270m")
    assert len(builds) == 1                                      # valid cache is reused
    (folder / "model.safetensors").write_bytes(b"fresh weighXX")  # damage it
    models.ensure_embedded_cache("gemma-3-270m")
    assert len(builds) == 2 and models.verify_cache(folder)


def test_unknown_model_name_explains(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="embedded models"):
        romelib.load_model("no-such-org/no-such-model-xyz")


def test_default_cache_dir_respects_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ROMELIB_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("ROMELIB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "x" / "romelib"


def _age(path, seconds=60):
    status = path.stat()
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns - int(seconds * 1e9)))


def test_hash_is_skipped_only_for_unchanged_files(tmp_path, monkeypatch):
    folder = tmp_path / "m"
    _fake_cache(folder)
    _age(folder / "model.safetensors")
    assert models.verify_cache(folder)                            # full hash, stamp recorded
    hashed = []
    original = models._sha256
    monkeypatch.setattr(models, "_sha256", lambda path: hashed.append(path) or original(path))
    assert models.verify_cache(folder) and hashed == []           # unchanged: no hash
    (folder / "model.safetensors").write_bytes(b"weightz")         # same size, new content
    assert not models.verify_cache(folder) and hashed              # changed mtime: hashed, refused
    _age(folder / "model.safetensors")                             # even with an old timestamp
    assert not models.verify_cache(folder)


def test_a_killed_build_leaves_nothing_behind_for_good(tmp_path, monkeypatch):
    monkeypatch.setenv("ROMELIB_CACHE", str(tmp_path))
    models_dir = tmp_path / "models"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()                                                    # a pid that no longer runs
    stale = models_dir / f".gemma-3-270m-build-{dead.pid}-abc123"
    live = models_dir / f".gemma-3-270m-build-{os.getpid()}-def456"
    old_style = models_dir / ".gemma-3-270m-xyz"                   # before pids were recorded
    for folder in (stale, live, old_style):
        (folder / "model").mkdir(parents=True)
        (folder / "model" / "model.safetensors").write_bytes(b"x" * 1000)
    _age(old_style, seconds=7 * 3600)
    removed = models.remove_stale_builds(models_dir / "gemma-3-270m")
    assert sorted(removed) == sorted([stale, old_style])
    assert live.exists() and not stale.exists() and not old_style.exists()


def test_a_build_killed_for_real_is_cleaned_by_the_next_load(tmp_path):
    """Start a real build in a child process, kill it mid-way, then load: the scratch is gone."""
    env = {**os.environ, "ROMELIB_CACHE": str(tmp_path)}
    script = ("import time, romelib.core.model_cache as m\n"
              "def build(package, gguf, folder):\n"
              "    (m.new_scratch(folder) / 'model.safetensors').write_bytes(b'x' * 10**6)\n"
              "    print('started', flush=True)\n"
              "    time.sleep(60)\n"
              "m._build_cache = build\n"
              "m.ensure_embedded_cache('gemma-3-270m')\n")
    child = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "started"
    child.kill()
    child.wait()
    scratch = list((tmp_path / "models").glob(".gemma-3-270m-build-*"))
    assert len(scratch) == 1                                       # what the kill left behind
    models.remove_stale_builds(tmp_path / "models" / "gemma-3-270m")  # the first step of a load
    assert not scratch[0].exists()
