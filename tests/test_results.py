"""Resumable result files survive crashes: torn lines, duplicated records, half-written
summaries, and several processes appending at once."""
import json
import multiprocessing
import os

import pytest

from romelib import results


def test_torn_last_line_is_skipped_then_cut_off_with_a_message(tmp_path, caplog):
    path = tmp_path / "rome.jsonl"
    path.write_text('{"case_id": 1}\n{"case_id": 2}\n{"case_id": 3, "metr')   # killed mid-write
    with caplog.at_level("WARNING"):
        assert [r["case_id"] for r in results.read_jsonl(path)] == [1, 2]
    assert "torn last line" in caplog.text
    assert path.read_text().endswith('"metr')                  # reading alone changes nothing
    caplog.clear()
    with caplog.at_level("WARNING"):
        results.read_jsonl(path, repair=True)
    assert "cutting it off" in caplog.text
    assert path.read_text() == '{"case_id": 1}\n{"case_id": 2}\n'
    results.append_jsonl(path, {"case_id": 3})
    assert [r["case_id"] for r in results.read_jsonl(path)] == [1, 2, 3]


def test_append_repairs_a_torn_tail_itself(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n{"a": ')
    results.append_jsonl(path, {"a": 2})
    assert path.read_text() == '{"a": 1}\n{"a": 2}\n'


def test_a_complete_last_record_without_newline_is_kept(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}')
    assert results.read_jsonl(path) == [{"a": 1}, {"a": 2}]
    results.append_jsonl(path, {"a": 3})
    assert path.read_text() == '{"a": 1}\n{"a": 2}\n{"a": 3}\n'


def test_damage_in_the_middle_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n{"a": \n{"a": 3}\n')
    with pytest.raises(ValueError, match=r"rows.jsonl, line 2, is damaged"):
        results.read_jsonl(path, repair=True)


def test_a_record_saved_twice_counts_once(tmp_path):
    path = tmp_path / "rows.jsonl"
    for row in ({"case_id": 1, "v": "first"}, {"case_id": 2, "v": "x"}, {"case_id": 1, "v": "again"}):
        results.append_jsonl(path, row)
    rows = results.read_jsonl(path, key="case_id")
    assert [(r["case_id"], r["v"]) for r in rows] == [(1, "first"), (2, "x")]
    by_pair = results.read_jsonl(path, key=("case_id", "v"))
    assert len(by_pair) == 3


def test_atomic_writes_leave_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "summary.json"
    results.write_json(path, {"facts": 1})

    class Unserialisable:
        def __str__(self):
            raise RuntimeError("disk full")
    with pytest.raises(RuntimeError, match="disk full"):
        results.write_json(path, {"facts": Unserialisable()})
    assert json.loads(path.read_text()) == {"facts": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]     # no temporary left


def test_settings_refuse_to_mix_and_accept_new_keys(tmp_path):
    results.check_settings(tmp_path, {"model": "m", "rome": {"layer": 5}})
    results.check_settings(tmp_path, {"model": "m", "ft": {"layer": 1}})     # a method added
    assert json.loads((tmp_path / "settings.json").read_text()) == {
        "model": "m", "rome": {"layer": 5}, "ft": {"layer": 1}}
    with pytest.raises(ValueError, match=r"other settings for \['rome'\]"):
        results.check_settings(tmp_path, {"rome": {"layer": 6}})


def _append_many(path, worker, count):
    for i in range(count):
        results.append_jsonl(path, {"worker": worker, "i": i, "pad": "x" * 5000})


def test_processes_appending_at_once_write_whole_lines(tmp_path):
    path = tmp_path / "shared.jsonl"
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_append_many, args=(path, w, 40)) for w in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
        assert worker.exitcode == 0
    rows = results.read_jsonl(path)
    assert len(rows) == 120 and {(r["worker"], r["i"]) for r in rows} == {
        (w, i) for w in range(3) for i in range(40)}


def test_a_killed_writer_leaves_a_torn_line_that_the_next_run_repairs(tmp_path):
    """A real kill: a child writes half a line and dies; the next append repairs the file."""
    path = tmp_path / "run.jsonl"
    results.append_jsonl(path, {"case_id": 1})
    pid = os.fork()
    if pid == 0:                                               # the child: half a line, then death
        with open(path, "a") as handle:
            handle.write('{"case_id": 2, "metrics": {"ES": 1')
            handle.flush()
        os._exit(9)
    os.waitpid(pid, 0)
    results.append_jsonl(path, {"case_id": 2})
    assert [r["case_id"] for r in results.read_jsonl(path)] == [1, 2]


def test_migration_labels_saved_rome_and_memit_settings_once(tmp_path):
    """Settings saved before ``unembed_dtype`` existed are labelled float32 ("model"), never
    anything else, and a second migration changes nothing."""
    from romelib.experiments.migrate import migrate_unembed_dtype
    from romelib.results import read_json, read_jsonl, write_json

    results, sweep = tmp_path / "results", tmp_path / "sweep"
    (results / "memit" / "run").mkdir(parents=True)
    sweep.mkdir()
    write_json(results / "settings.json", {"model": "m", "rome": ["rome", {"v_num_grad_steps": 20}],
                                           "ft": ["ft", {"lr": 1e-3}],
                                           "new": {"v_num_grad_steps": 5, "unembed_dtype": "auto"}})
    write_json(results / "memit" / "run" / "settings.json", {"memit": {"v_num_grad_steps": 20}})
    rows = [{"case_id": 1, "layer": -1, "settings": {}}, {"case_id": 1, "layer": 5, "settings": {"kl_token": "fact"}}]
    (sweep / "results_tune.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    changes = migrate_unembed_dtype(results, sweep)
    assert len(changes) == 3
    top = read_json(results / "settings.json")
    assert top["rome"][1]["unembed_dtype"] == "model" and "unembed_dtype" not in top["ft"][1]
    assert top["new"]["unembed_dtype"] == "auto"                       # made with the option: kept
    assert read_json(results / "memit" / "run" / "settings.json")["memit"]["unembed_dtype"] == "model"
    saved = read_jsonl(sweep / "results_tune.jsonl")
    assert saved[0]["settings"] == {} and saved[1]["settings"]["unembed_dtype"] == "model"
    assert migrate_unembed_dtype(results, sweep) == []
