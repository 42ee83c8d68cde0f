"""Model loading: the cache is verified, a damaged one is rebuilt, bad names explain themselves."""
import json

import pytest

import romelib
from romelib import models


def _fake_cache(folder, payload=b"weights"):
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(payload)
    files = {"model.safetensors": {"size": len(payload), "sha256": models._sha256(folder / "model.safetensors")}}
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
    assert models.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("ROMELIB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert models.cache_dir() == tmp_path / "x" / "romelib"
