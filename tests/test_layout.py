"""The layout shows the pipeline: no import cycles, the library never imports the experiments,
every runner starts, the public API is what the notebooks use, and nothing private is
reached from a notebook."""
import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import romelib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "romelib"
RUNNERS = sorted(p.stem for p in (PACKAGE / "experiments").glob("*.py")
                 if p.stem not in ("__init__", "launch"))


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the romelib modules it imports (anywhere in the file), from the source."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
                stem = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    full = f"{stem}.{alias.name}"
                    targets.add(full if full in modules else stem)
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
        graph[name] = {t for t in targets if t in modules and t != name
                       and not t.startswith(name + ".")}     # a package importing its children
    return graph


def test_the_import_graph_has_no_cycles():
    graph, state, cycles = import_graph(), {}, []

    def visit(node, stack):
        state[node] = "open"
        for other in graph[node]:
            if state.get(other) == "open":
                cycles.append(stack[stack.index(other):] + [other])
            elif other not in state:
                visit(other, stack + [other])
        state[node] = "done"
    for node in graph:
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles


def test_the_library_never_imports_the_experiments():
    upward = [(a, b) for a, targets in import_graph().items() for b in targets
              if b.startswith("romelib.experiments") and not a.startswith("romelib.experiments")
              and a != "romelib"]
    assert not upward, upward


def test_library_modules_do_not_print_or_exit():
    """The experiments are programs, and the exercises' checkers talk to the student: they print."""
    for path in PACKAGE.rglob("*.py"):
        if "experiments" in path.parts or "exercises" in path.parts:
            continue
        tree = ast.parse(path.read_text())
        command_line = {id(node) for function in ast.walk(tree)      # a module's `main()` may print
                        if isinstance(function, ast.FunctionDef) and function.name == "main"
                        for node in ast.walk(function)}
        calls = [node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call)
                 and isinstance(node.func, ast.Name) and node.func.id in ("print", "exit")
                 and not (node.func.id == "print" and id(node) in command_line)]
        raises = [node for node in ast.walk(tree) if isinstance(node, ast.Raise) and node.exc is not None
                  and "SystemExit" in ast.unparse(node.exc)]
        assert not calls and not raises, path


def test_modules_stay_readable_in_one_sitting():
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 330}
    assert not long, long


@pytest.mark.parametrize("runner", RUNNERS)
def test_every_runner_starts(runner):
    result = subprocess.run([sys.executable, "-m", f"romelib.experiments.{runner}", "--help"],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage" in result.stdout.lower()


def test_public_api_is_complete_and_grouped():
    assert len(romelib.__all__) == len(set(romelib.__all__))
    missing = [name for name in romelib.__all__ if not hasattr(romelib, name)]
    assert not missing, missing
    exported = {name for name in dir(romelib) if not name.startswith("_")}
    subpackages = {"core", "datasets", "tracing", "editing", "evaluation", "plots", "experiments",
                   "exercises", "paths", "results", "intervals", "notices", "os"}
    assert exported - set(romelib.__all__) - subpackages == set()


def notebook_code(path: Path) -> str:
    cells = json.loads(path.read_text())["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


@pytest.mark.parametrize("notebook", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.stem)
def test_notebooks_use_only_public_names(notebook):
    code = notebook_code(notebook)
    private = re.findall(r"\b(?:romelib|rome|memory|evaluation|table4|wte|fluency|explorer)"
                         r"(?:\.\w+)*\._\w+", code)
    assert not private, private
    imported = re.findall(r"from (romelib[\w.]*) import ([^\n]+(?:\n\s+[^\n]+)*)", code)
    for module, names in imported:
        for name in re.findall(r"\w+", names.split("#")[0]):
            if name != "as":
                assert not name.startswith("_"), (module, name)
