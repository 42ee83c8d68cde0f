"""Runs scale out with an existing launcher: two processes started by torchrun share a
results folder and produce what one process produces."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_tiny_model
from romelib.experiments.launch import Worker, resolve_device
from romelib.results import read_jsonl

ROOT = Path(__file__).resolve().parents[1]
SUBJECTS = [("Michael Jordan", "basketball", "guitar"), ("Toko Yasuda", "guitar", "basketball"),
            ("Danielle Darrieux", "French", "English"), ("Steve Jobs", "Apple", "Seattle"),
            ("Bob", "New York", "Paris"), ("Rome", "Italy", "France"), ("Seattle", "Space", "Eiffel")]


def record(case_id, subject, true, new) -> dict:
    return {"case_id": case_id,
            "requested_rewrite": {"prompt": "{} plays the sport of", "subject": subject,
                                  "relation_id": "P0", "target_new": {"str": new},
                                  "target_true": {"str": true}},
            "paraphrase_prompts": [f"The city of Paris. {subject} plays"],
            "neighborhood_prompts": ["Michael Jordan is in", "The Eiffel Tower is in"],
            "attribute_prompts": [f"Apple was founded by {subject}"],
            "generation_prompts": [f"{subject} is"]}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("distributed")
    mt = make_tiny_model("gpt2")
    mt.model.save_pretrained(base / "tiny-gpt2")
    mt.tokenizer.save_pretrained(base / "tiny-gpt2")
    data = base / "data"
    for method in ("ft", "ft_plus_l"):
        (data / "hparams" / method).mkdir(parents=True)
        (data / "hparams" / method / "tiny-gpt2.json").write_text(json.dumps(
            {"layer": 1, "lr": 0.05, "max_steps": 5, "norm_constraint": 0.01 if method != "ft" else None}))
    records = base / "records.json"
    records.write_text(json.dumps([record(i, *s) for i, s in enumerate(SUBJECTS)]))
    return base, data, records


def run_table(base, data, records, name, launcher):
    env = {**os.environ, "ROMELIB_DATA": str(data), "ROMELIB_RESULTS": str(base / name),
           "OMP_NUM_THREADS": "1", "ROMELIB_CACHE": str(base / "cache")}
    arguments = ["-m", "romelib.experiments.table4", "--model", str(base / "tiny-gpt2"),
                 "--records", str(records), "--methods", "none,ft,ft+l", "--name", "demo"]
    command = [*launcher, *arguments] if launcher else [sys.executable, *arguments]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return base / name / "results" / "table4_demo"


def test_two_processes_give_what_one_gives(setup):
    if shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("torchrun is not installed beside this Python")
    base, data, records = setup
    torchrun = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node", "2"]
    one = run_table(base, data, records, "one", None)
    two = run_table(base, data, records, "two", torchrun)
    for method in ("none", "ft", "ft_plus_l"):
        a = {r["case_id"]: r["metrics"] for r in read_jsonl(one / f"{method}.jsonl", key="case_id")}
        b = {r["case_id"]: r["metrics"] for r in read_jsonl(two / f"{method}.jsonl", key="case_id")}
        assert sorted(a) == sorted(b) == list(range(len(SUBJECTS))), method
        for case in a:
            for metric, value in a[case].items():
                assert b[case][metric] == pytest.approx(value, abs=1e-6), (method, case, metric)
    summaries = [json.loads((folder / "summary.json").read_text()) for folder in (one, two)]
    assert all(s["complete"] for s in summaries)
    for method, row in summaries[0]["table"].items():
        other = summaries[1]["table"][method]
        assert row["records"] == other["records"]
        for metric, (mean, _) in ((k, v) for k, v in row.items() if isinstance(v, list)):
            assert other[metric][0] == pytest.approx(mean, abs=1e-6), (method, metric)
    assert "process" in summaries[1]["machine"] or "processes" in summaries[1]["machine"]


def test_worker_shares_cover_everything_once(monkeypatch):
    items = list(range(11))
    shares = []
    for rank in range(3):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "3")
        shares.append(Worker.from_environment("cpu").share(items))
    assert sorted(sum(shares, [])) == items and all(shares)
    monkeypatch.setenv("RANK", "3")
    with pytest.raises(ValueError, match="RANK=3"):
        Worker.from_environment("cpu")


def test_device_choice_is_checked():
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="use cpu, cuda"):
        resolve_device("tpu")
    import torch
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")


@pytest.mark.parametrize("module, argv", [
    ("memit_batch", ["--split", "tune", "--n", "2"]),          # one batch is one computation
    ("factcheck", []), ("project_corpus", ["--tokens", "10"]), ("context_prefixes", []),
    ("reproduce", ["--only", "figure1_causal_traces"]),
])
def test_single_computations_refuse_several_processes_before_loading_a_model(monkeypatch, module, argv):
    """Launched with 2 processes, a runner that cannot split says so at once (each process
    would otherwise repeat the whole job)."""
    import importlib

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    runner = importlib.import_module(f"romelib.experiments.{module}")
    monkeypatch.setattr(Worker, "load_model", lambda *a, **k: pytest.fail("loaded a model"))
    with pytest.raises(SystemExit, match="run it in one process .*WORLD_SIZE=2"):
        runner.main(argv)


def test_sequential_gives_each_process_its_own_methods(monkeypatch, tmp_path):
    """A sequential run is one chain of edits: with 2 processes each runs one --method, and a
    process left without a method says so and stops."""
    from romelib.experiments import sequential

    ran = []
    monkeypatch.setattr(sequential, "RESULTS", tmp_path)
    monkeypatch.setattr(Worker, "load_model", lambda *a, **k: object())
    monkeypatch.setattr(sequential, "load_split", lambda source: type("S", (), {"held_out": [{"case_id": 0}] * 30}))
    monkeypatch.setattr(sequential, "held_out_text", lambda mt, tokens: ([[1, 2]], "text"))
    monkeypatch.setattr(sequential, "run", lambda mt, name, *a, **k: ran.append(name))
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in ("0", "1"):
        monkeypatch.setenv("RANK", rank)
        sequential.main(["--method", "rome,rome-consistent", "--edits", "2"])
    assert ran == ["rome", "rome-consistent"]
    ran.clear()
    sequential.main(["--method", "rome", "--edits", "2"])          # rank 1 of 2, one method
    assert ran == []
