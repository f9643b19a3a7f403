"""The exercises: nbgrader's cell metadata in every notebook, checks that do not leak, and how a check reports.

The notebooks are the instructor edition; ``tools/editions.py`` makes the student edition and grades
both with nbgrader (``make test-student``). These tests need no nbgrader and run in a second: they keep
the notebooks' exercise cells in the shape that makes all of that work.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
from pathlib import Path

import pytest

from retina_edu.exercises import NotAttempted
from retina_edu.exercises._check import attempt, expect_close, run_check

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))
STUB = "# YOUR CODE HERE"  # tools/nbgrader_config.py: ClearSolutions.code_stub


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def source(cell: dict) -> str:
    return "".join(cell["source"])


def meta(cell: dict) -> dict:
    return cell["metadata"].get("nbgrader", {})


def kind(cell: dict) -> str:
    """answer (autograded answer), check (autograded test), written (manually graded answer) or ''."""
    m = meta(cell)
    if not m:
        return ""
    if m.get("solution") and not m.get("grade"):
        return "answer"
    if m.get("grade") and not m.get("solution"):
        return "check"
    if m.get("grade") and m.get("solution"):
        return "written"
    return "other"


def student_stub(code: str) -> str:
    """What nbgrader's ClearSolutions leaves of an answer cell (the region becomes the stub, indented)."""
    out, inside = [], False
    for line in code.split("\n"):
        if "BEGIN SOLUTION" in line:
            inside = True
            out.append(re.match(r"\s*", line).group(0) + STUB)
        elif "END SOLUTION" in line:
            inside = False
        elif not inside:
            out.append(line)
    return "\n".join(out)


def exercise_cells() -> list[tuple[str, int, dict]]:
    return [(p.name, i, c) for p in NOTEBOOKS for i, c in enumerate(cells(p)) if kind(c)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_exercise_cells_follow_nbgrader_conventions(path):
    number = path.name[:2]
    nb_cells = cells(path)
    ids = [meta(c)["grade_id"] for c in nb_cells if meta(c)]
    assert len(ids) == len(set(ids)), f"{path.name}: duplicate grade ids {ids}"
    for i, cell in enumerate(nb_cells):
        where, text, k = f"{path.name} cell {i}", source(cell), kind(cell)
        if k:
            m = meta(cell)
            assert m["grade_id"].startswith(f"{number}-"), f"{where}: grade id {m['grade_id']!r} should start {number}-"
            assert m["schema_version"] == 3 and k != "other", f"{where}: not a cell type nbgrader knows: {m}"
        if "BEGIN SOLUTION" in text or "END SOLUTION" in text:
            assert k == "answer" and cell["cell_type"] == "code", f"{where}: solution marks outside an answer cell"
        if "<summary>Solution" in text:
            assert k == "written", f"{where}: a solution outside an answer cell would reach the student edition"
        if k == "answer":
            assert text.count("### BEGIN SOLUTION") == 1 and text.count("### END SOLUTION") == 1, where
            ast.parse(student_stub(text))  # the student's stub must be valid Python (a body of a comment
            # alone is not: a stubbed function needs its docstring)
        if k == "check":
            assert meta(cell)["locked"] and meta(cell)["points"] > 0, where
        if k in ("answer", "written"):
            later = [kind(c) for c in nb_cells[i + 1 :] if kind(c) in ("answer", "check")]
            if k == "answer":
                assert later and later[0] == "check", f"{where}: an answer cell needs a check cell after it"


@pytest.mark.parametrize(
    "name, index, cell", [x for x in exercise_cells() if kind(x[2]) == "check"], ids=lambda x: str(x)[:20]
)
def test_checks_compute_nothing_the_student_sees(name, index, cell):
    """A check cell only imports from retina_edu.exercises and calls the check: the reference answer
    is computed in the package, so the student edition never shows it."""
    tree = ast.parse("\n".join(line for line in source(cell).split("\n") if not line.startswith("%")))
    calls = 0
    for stmt in tree.body:
        if isinstance(stmt, ast.ImportFrom):
            assert stmt.module and stmt.module.startswith("retina_edu.exercises"), f"{name} cell {index}"
        elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
            calls += 1
        else:
            raise AssertionError(f"{name} cell {index}: a check cell may only import and call checks")
    assert calls >= 1, f"{name} cell {index} checks nothing"
    assert "NBVAL_CHECK_OUTPUT" in source(cell), f"{name} cell {index}: nbval should check the check's verdict"


def test_every_check_function_exists_and_every_exercise_module_is_used():
    used = set()
    for name, index, cell in exercise_cells():
        if kind(cell) != "check":
            continue
        for stmt in ast.parse(source(cell)).body:
            if isinstance(stmt, ast.ImportFrom):
                module = importlib.import_module(stmt.module)
                used.add(stmt.module)
                for alias in stmt.names:
                    assert hasattr(module, alias.name), f"{name} cell {index}: {stmt.module}.{alias.name} missing"
    package = Path(importlib.import_module("retina_edu.exercises").__file__).parent
    modules = {f"retina_edu.exercises.{p.stem}" for p in package.glob("[a-z]*.py")}
    assert modules <= used, f"exercise modules no notebook uses: {sorted(modules - used)}"


# --- how a check reports ---------------------------------------------------------------------------------


def test_not_attempted_prints_for_a_learner_and_scores_zero_under_nbgrader(capsys, monkeypatch):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    run_check("Exercise 9", None, lambda r: "never")
    assert capsys.readouterr().out == "Exercise 9: not attempted yet\n"
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    with pytest.raises(NotAttempted, match="Exercise 9: not attempted yet"):
        run_check("Exercise 9", None, lambda r: "never")


def test_a_stub_function_counts_as_not_attempted():
    def stub(x):
        """A docstring and the stub comment only."""
        # YOUR CODE HERE

    def raises(x):
        raise NotImplementedError

    assert attempt(stub, 1) is None and attempt(raises, 1) is None
    assert attempt(lambda x: x + 1, 1) == 2 and attempt(0.5) == 0.5


def test_a_wrong_answer_says_what_is_off_without_the_answer():
    import torch

    with pytest.raises(AssertionError, match=r"Exercise 1: your answer = 2 is too small$"):
        expect_close("Exercise 1", 2, 3.0)
    with pytest.raises(AssertionError, match=r"shape \(3,\), expected \(4,\)"):
        expect_close("Exercise 1", torch.zeros(3), torch.zeros(4))
    with pytest.raises(AssertionError, match="1 of 4 values") as err:
        expect_close("Exercise 1", torch.tensor([0.0, 0.0, 5.0, 0.0]), torch.tensor([0.0, 0.0, 7.0, 0.0]))
    assert "7" not in str(err.value)
    with pytest.raises(AssertionError, match="should be a number, got str"):
        expect_close("Exercise 1", "three", 3.0)


# --- a notebook opened outside the course --------------------------------------------------------------


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_first_cell_says_how_to_install_when_the_package_is_missing(path, monkeypatch):
    """Downloaded alone or opened in a hosted Jupyter, a notebook's first cell says in one line how to
    install the package instead of raising ModuleNotFoundError."""
    first = next(source(c) for c in cells(path) if c["cell_type"] == "code")
    guard = first.split("\n\n")[0]
    assert "import retina_edu" in guard and "%matplotlib" in guard
    monkeypatch.setitem(__import__("sys").modules, "retina_edu", None)  # as if not installed
    code = "\n".join(line for line in guard.split("\n") if not line.startswith("%"))
    with pytest.raises(SystemExit) as exit_:
        exec(compile(code, path.name, "exec"), {})
    assert "make lab" in str(exit_.value) and "\n" not in str(exit_.value)
