"""The coded exercises: every checker passes the solution, says "not implemented yet" for the
notebook's own stub, and names the mistake of a typical wrong answer; none of them raises.
Every checker is called from exactly one notebook, right after the stub it checks."""
import functools
import importlib.util
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import romelib
import romelib.exercises as exercises

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
CHAPTERS = {path.stem[3:]: path for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))}


@functools.cache
def solution(chapter: str):
    """The module notebooks/solutions/<chapter>.py."""
    spec = importlib.util.spec_from_file_location(f"solutions_{chapter}", NOTEBOOKS / "solutions" / f"{chapter}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def code_cells(chapter: str) -> list[str]:
    cells = json.loads(CHAPTERS[chapter].read_text())["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]


def notebook_stub(chapter: str, name: str):
    """The stub function as the notebook defines it."""
    source = next(c for c in code_cells(chapter) if f"def {name}(" in c and "NotImplementedError" in c)
    namespace = {"torch": torch, "romelib": romelib, "math": math, "np": np}
    exec(source, namespace)
    return namespace[name]


# ---- typical wrong answers (each with a piece of the hint it must get) -------------------------

def mlp_term_with_attention(mt, prompt, layer):
    with romelib.hooks(mt, [f"block.{layer}"], retain_input=True) as acts, torch.no_grad():
        mt.model(**romelib.make_inputs(mt, prompt), logits_to_keep=1)
    return acts[f"block.{layer}"].output[0] - acts[f"block.{layer}"].input[0]


def next_token_logit(mt, prompt, token_id):
    with torch.no_grad():
        return mt.model(**romelib.make_inputs(mt, prompt)).logits[0, -1, token_id].item()


def noise_not_scaled_by_sigma(clean, start, end, noise, sigma, samples, generator):
    return solution("corrupt_and_restore").corrupt_with_noise(clean, start, end, noise, 1.0, samples, generator)


def noise_in_place(clean, start, end, noise, sigma, samples, generator):
    clean[start:end] += 0.0 * clean[start:end] + 1.0
    return solution("corrupt_and_restore").corrupt_with_noise(clean, start, end, noise, sigma, samples, generator)


def restore_next_layer(mt, ids, corrupted, target_id, layer, position):
    return solution("corrupt_and_restore").restore_hidden_state(mt, ids, corrupted, target_id, layer + 1, position)


def severed_without_freezing(mt, ids, corrupted, target_id, layer, position):
    return solution("corrupt_and_restore").restore_hidden_state(mt, ids, corrupted, target_id, layer, position)


def key_at_last_token(mt, prompt, subject, layer, prefixes):
    keys = []
    for prefix in prefixes:
        with torch.no_grad(), romelib.hooks(mt, [f"mlp_proj.{layer}"], retain_input=True, stop=True) as acts:
            mt.model(**romelib.make_inputs(mt, prefix + prompt.format(subject)))
        keys.append(acts[f"mlp_proj.{layer}"].input[0, -1])
    return torch.stack(keys).mean(0)


def normal_equations(K, V):
    return V @ K.T @ torch.linalg.inv(K @ K.T)


def insert_with_c(W, C, k_star, v_star):
    u = C @ k_star
    return W + torch.outer(v_star - W @ k_star, u) / (u @ k_star)


def entropy_in_nats(text):
    from romelib.evaluation.fluency import ngram_entropy_of_text
    return ngram_entropy_of_text(text) * math.log(2)


def es_ps_ns_by_product(scores):
    from romelib.evaluation.metrics import record_metrics
    metrics = record_metrics(scores, length_normalized=False)
    return {m: metrics[m] for m in ("ES", "PS", "NS")}


def handover(result, position, last=False):
    effects = result.indirect_effects
    layers = [layer for layer in range(effects.shape[1]) if effects[-1, layer] > effects[position, layer]]
    return (layers[-1] if last else layers[0]) if layers else None


def handover_from_first_subject_token(result):
    return handover(result, result.subject_range[0])


def handover_after_subject(result):
    return handover(result, result.subject_range[1])


def handover_last_layer(result):
    return handover(result, result.subject_range[1] - 1, last=True)


# checker, notebook chapter, function name, needs the model, [(wrong answer, a piece of its hint)]
CASES = [
    ("check_mlp_term", "model_tour", "mlp_term", True, [(mlp_term_with_attention, "subtract the attention")]),
    ("check_next_token_probability", "model_tour", "next_token_probability", True,
     [(next_token_logit, "that is a logit")]),
    ("check_corrupt_with_noise", "corrupt_and_restore", "corrupt_with_noise", False,
     [(noise_not_scaled_by_sigma, "not scaled by sigma"), (noise_in_place, "in place")]),
    ("check_restore_hidden_state", "corrupt_and_restore", "restore_hidden_state", True,
     [(restore_next_layer, "you restored block")]),
    ("check_strongest_state", "trace_heatmaps", "strongest_state", False,
     [(lambda scores, low, high: (5, 2, float(scores[5, 2]) / (high - low)), "subtract the low score"),
      (lambda scores, low, high: (2, 5, 0.79), "swapped")]),
    ("check_window_layers", "trace_heatmaps", "window_layers", False,
     [(lambda layer, window, n: list(range(layer - window // 2, layer - window // 2 + window)), "clip")]),
    ("check_severed_probability", "severed_paths", "severed_probability", True,
     [(severed_without_freezing, "nothing was frozen")]),
    ("check_effect_removed", "severed_paths", "effect_removed", False,
     [(lambda plain, severed, layers: float(severed[layers].mean() / plain[layers].mean()), "remains")]),
    ("check_group_positions", "average_effects", "group_positions", False,
     [(lambda r, n: {**solution("average_effects").group_positions(r, n), "last subject token": [r[1]]},
       "exclusive")]),
    ("check_grouped_effects", "average_effects", "grouped_effects", False,
     [(lambda *args: solution("average_effects").grouped_effects(*args).nan_to_num(0.0), "use NaN")]),
    ("check_mean_and_ci95", "average_effects", "mean_and_ci95", False,
     [(lambda e: (float(e.nanmean()), 1.96 * float(e[~e.isnan()].std(correction=0)) / math.sqrt(10)),
       "sample standard deviation")]),
    ("check_strongest_token", "explorer", "strongest_token", False,
     [(lambda result, layer: (result.tokens[int(result.indirect_effects[layer].nan_to_num(-1).argmax())], 0.3),
       "column")]),
    ("check_handover_layer", "explorer", "handover_layer", False,
     [(handover_from_first_subject_token, "first subject token"), (handover_after_subject, "exclusive"),
      (handover_last_layer, "FIRST layer"), (lambda result: 3, "return None")]),
    ("check_fit_memory", "associative_memory", "fit_memory", False,
     [(lambda K, V: V @ K.T, "pseudoinverse"), (normal_equations, "singular")]),
    ("check_insert_pair", "associative_memory", "insert_pair", False, [(insert_with_c, "C^-1")]),
    ("check_average_key", "rome_step_by_step", "average_key", True,
     [(key_at_last_token, "not the prompt's last token")]),
    ("check_rank_one_update", "rome_step_by_step", "rank_one_update", False,
     [(lambda W, C, k, v, k_avg: solution("rome_step_by_step").rank_one_update(W, C, k, v, k), "direction")]),
    ("check_greedy_generate", "edit_and_generate", "greedy_generate", True,
     [(lambda mt, prompt, n: prompt + solution("edit_and_generate").greedy_generate(mt, prompt, n), "without the")]),
    ("check_sequence_probability", "edit_and_generate", "sequence_probability", True,
     [(lambda mt, prompt, target: math.exp(romelib.target_probability(mt, prompt, target).mean_log_prob),
       "geometric mean")]),
    ("check_es_ps_ns", "counterfact_table", "es_ps_ns", False, [(es_ps_ns_by_product, "per-token")]),
    ("check_ngram_entropy", "counterfact_table", "ngram_entropy", False, [(entropy_in_nats, "base 2")]),
    ("check_counterfact_score", "counterfact_table", "counterfact_score", False,
     [(lambda es, ps, ns: (es + ps + ns) / 3, "arithmetic mean"),
      (lambda es, ps, ns: 3 / (1 / es + 1 / ps + 1 / ns), "before dividing")]),
    ("check_rewrite_score", "where_to_edit", "rewrite_score", False,
     [(lambda before, after: after - before, "1 - p_before")]),
    ("check_pearson_r", "where_to_edit", "pearson_r", False,
     [(lambda x, y: float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y))), "centre both")]),
    ("check_spread_update", "memit", "spread_update", False,
     [(lambda K, R, C, lam: torch.linalg.solve(C + K.T @ K, K.T @ R).T, "lam weighs C"),
      (lambda K, R, C, lam: torch.linalg.solve(lam * C + K.T @ K, K.T @ R), "transpose")]),
    ("check_critical_layers", "memit", "critical_layers", False,
     [(lambda e, f: [i for i, v in enumerate(e) if v >= f * e.max()], "contiguous range"),
      (lambda e, f: [i for i, v in enumerate(e) if v >= f], "relative")]),
    ("check_perplexity", "sequential_editing", "perplexity", False,
     [(lambda logits, ids: math.exp(float(torch.nn.functional.cross_entropy(logits, ids))), "predict token t + 1"),
      (lambda logits, ids: float(torch.nn.functional.cross_entropy(logits[:-1], ids[1:])), "exponential")]),
    ("check_weight_distance", "sequential_editing", "weight_distance", False,
     [(lambda o, c: sum(float((c[k] - o[k]).norm()) for k in o), "square them")]),
    ("check_reach", "specificity", "reach", False,
     [(lambda C, ka, ks, k: float((C @ ka) @ k / ((C @ ka) @ ks)), "C^-1 k_average"),
      (lambda C, ka, ks, k: float(k @ ks / (k.norm() * ks.norm())), "cosine")]),
    ("check_close_neighbour_score", "specificity", "close_neighbour_score", False,
     [(lambda before, after: 100 * sum(a > 0 for a in after) / len(after), "got right")]),
]
IDS = [case[0] for case in CASES]


def run(case, answer, request, capsys) -> tuple[bool, str]:
    checker, _, name, needs_model, _ = case
    args = (request.getfixturevalue("default_mt"),) if needs_model else ()
    result = getattr(exercises, checker)(answer, *args)
    output = capsys.readouterr().out
    assert output.count("\n") == 1, output                    # one line, whatever happens
    assert output.split()[1] == f"{name}:", output
    return result, output


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_solution_passes(case, request, capsys):
    passed, output = run(case, getattr(solution(case[1]), case[2]), request, capsys)
    assert passed is True and output.startswith("✔"), output


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_notebook_stub_is_not_implemented_yet(case, request, capsys):
    passed, output = run(case, notebook_stub(case[1], case[2]), request, capsys)
    assert passed is False and "not implemented yet" in output, output


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_a_typical_mistake_gets_its_hint(case, request, capsys):
    for wrong, hint in case[4]:
        passed, output = run(case, wrong, request, capsys)
        assert passed is False and output.startswith("✘") and hint in output, output


BAD_ANSWERS = {"ellipsis": ..., "not-a-function": 42, "a-string": lambda *args: "hello",
               "an-error": lambda *args: 1 / 0, "returns-ellipsis": lambda *args: ...,
               "returns-none": lambda *args: None}


@pytest.mark.parametrize("case", [c for c in CASES if not c[3]], ids=[c[0] for c in CASES if not c[3]])
@pytest.mark.parametrize("answer", BAD_ANSWERS.values(), ids=BAD_ANSWERS.keys())
def test_a_checker_never_raises(case, answer, request, capsys):
    passed, output = run(case, answer, request, capsys)
    assert passed is False, output


@settings(max_examples=25, deadline=None)
@given(d_value=st.integers(1, 6), d_key=st.integers(2, 8), n=st.integers(1, 30), seed=st.integers(0, 99))
def test_memory_checkers_on_random_shapes(d_value, d_key, n, seed):
    memory = solution("associative_memory")
    assert exercises.check_fit_memory(memory.fit_memory, sizes=[(d_value, d_key, n)], seed=seed)
    assert not exercises.check_fit_memory(lambda K, V: V @ K.T, sizes=[(d_value, d_key, n)], seed=seed)
    sizes = [(d_value, d_key, max(n, d_key))]                 # C must be invertible to insert a pair
    assert exercises.check_insert_pair(memory.insert_pair, sizes=sizes, seed=seed)
    assert not exercises.check_insert_pair(insert_with_c, sizes=sizes, seed=seed)


@settings(max_examples=50, deadline=None)
@given(st.data())
def test_position_and_window_checkers_on_random_cases(data):
    length = data.draw(st.integers(2, 20))
    start = data.draw(st.integers(0, length - 1))
    end = data.draw(st.integers(start + 1, length))
    assert exercises.check_group_positions(solution("average_effects").group_positions, cases=[((start, end), length)])
    num_layers = data.draw(st.integers(1, 48))
    layer, window = data.draw(st.integers(0, num_layers - 1)), data.draw(st.integers(1, 12))
    assert exercises.check_window_layers(solution("trace_heatmaps").window_layers, cases=[(layer, window, num_layers)])


def test_every_checker_is_tested_and_called_once_from_the_notebooks():
    assert sorted(exercises.__all__) == sorted(IDS)
    calls = {}
    for chapter in CHAPTERS:
        cells = code_cells(chapter)
        for index, cell in enumerate(cells):
            for checker, name in re.findall(r"romelib\.exercises\.(check_\w+)\((\w+)", cell):
                calls.setdefault(checker, []).append(chapter)
                assert f"def {name}(" in cells[index - 1] and "NotImplementedError" in cells[index - 1], checker
        count = sum(1 for cell in cells if "romelib.exercises.check_" in cell)
        assert (1 if chapter == "explorer" else 2) <= count <= 4, (chapter, count)
    assert calls == {case[0]: [case[1]] for case in CASES}


def test_solutions_are_plain_modules_pytest_does_not_collect():
    names = [path.name for path in (NOTEBOOKS / "solutions").glob("*.py")]
    assert sorted(names) == sorted(["__init__.py", *(f"{c}.py" for c in CHAPTERS)])
    assert not [n for n in names if n.startswith("test_") or n.endswith("_test.py")]
