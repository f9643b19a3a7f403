"""The course's two editions, made and graded with nbgrader.

The notebooks in ``notebooks/`` are the instructor edition: each exercise's solution sits between
``### BEGIN SOLUTION`` and ``### END SOLUTION`` in an answer cell, and a locked check cell with points
follows it (nbgrader's cell metadata). nbgrader itself writes the student edition (solutions replaced by
stubs, outputs cleared) and autogrades.

    python tools/editions.py student              # -> build/student/notebooks/ (make student)
    python tools/editions.py grade                # autograde both editions, print the marks (make test-student)
    python tools/editions.py grade 03_focal_loss  # only some notebooks

``grade`` checks what an instructor relies on: the instructor edition gets every autograded point, the
student edition none, every cell of the student edition runs (a check may only report "not attempted"),
and no answer survives in the student edition. It exits 1 and says what failed otherwise.

Both work in ``build/nbgrader/`` (an nbgrader course folder: ``source/``, ``release/``, ``submitted/``,
``autograded/``, ``gradebook.db``, and ``tools/nbgrader_config.py`` copied in). The notebooks read their
data through ``../data``; the editions get links to the course's ``data/`` and ``benchmarks/`` (and,
for grading, ``runs/``, so that notebooks 08 and 09 reuse the detector ``make test`` trained).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
COURSE = ROOT / "build" / "nbgrader"
STUDENT = ROOT / "build" / "student"
ASSIGNMENT = "notebooks"  # nbgrader's assignment folder name; keeps ../data right inside it
EDITIONS = {"instructor": "source", "student": "release"}  # student id -> the course folder it submits
SHARED_FOR_STUDENT = ("data", "benchmarks")
SHARED_FOR_GRADING = ("data", "benchmarks", "runs")


def course_notebooks(names: list[str] | None = None) -> list[Path]:
    paths = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if names:
        wanted = {n.removesuffix(".ipynb") for n in names}
        unknown = wanted - {p.stem for p in paths}
        if unknown:
            raise SystemExit(f"no such notebook: {', '.join(sorted(unknown))} (see {NOTEBOOKS})")
        paths = [p for p in paths if p.stem in wanted]
    return paths


def nbgrader(*args: str) -> None:
    """Run ``nbgrader <args>`` in the course folder; on failure show its log and stop."""
    command = [sys.executable, "-m", "nbgrader", *args]
    # nbgrader runs alembic (its database migrations) as a program: the venv's bin must be on PATH.
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    done = subprocess.run(command, cwd=COURSE, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"nbgrader {' '.join(args)} failed (exit {done.returncode}); its log is above")


def link_shared(folder: Path, names: tuple[str, ...]) -> None:
    """``folder/<name>`` -> the course's ``<name>`` (relative links, so the tree can move)."""
    for name in names:
        link = folder / name
        if link.is_symlink() or link.exists():
            if not link.is_symlink():
                continue  # a real folder someone made: leave it
            link.unlink()
        (ROOT / name).mkdir(exist_ok=True)
        link.symlink_to(os.path.relpath(ROOT / name, folder), target_is_directory=True)


def generate(names: list[str] | None = None) -> Path:
    """nbgrader generate_assignment over the instructor notebooks; returns the release folder."""
    source = COURSE / "source" / ASSIGNMENT
    shutil.rmtree(COURSE / "source", ignore_errors=True)
    source.mkdir(parents=True)
    for path in course_notebooks(names):
        shutil.copy2(path, source / path.name)
    shutil.copy2(ROOT / "tools" / "nbgrader_config.py", COURSE / "nbgrader_config.py")
    nbgrader("generate_assignment", ASSIGNMENT, "--force", "--log-level=WARN")
    return COURSE / "release" / ASSIGNMENT


def make_student_edition(names: list[str] | None = None) -> Path:
    release = generate(names)
    out = STUDENT / ASSIGNMENT
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(release, out)
    link_shared(STUDENT, SHARED_FOR_STUDENT)
    check_no_solutions(sorted(out.glob("*.ipynb")))
    count = len(list(out.glob("*.ipynb")))
    print(f"student edition: {count} notebooks in {out.relative_to(ROOT)} (solutions replaced by stubs)")
    print(f"open it with: .venv/bin/jupyter lab --notebook-dir={out.relative_to(ROOT)}")
    return out


def check_no_solutions(paths: list[Path]) -> None:
    """No solution text may survive in the student edition."""
    leaks = []
    for path in paths:
        for i, cell in enumerate(json.loads(path.read_text())["cells"]):
            source = "".join(cell["source"])
            if "### BEGIN SOLUTION" in source or "<summary>Solution" in source:
                leaks.append(f"{path.name} cell {i}")
    if leaks:
        raise SystemExit("solutions left in the student edition: " + ", ".join(leaks))


def autograde(names: list[str] | None) -> dict[str, list[tuple]]:
    """Submit the instructor and the student edition as two students, autograde both; their marks."""
    generate(names)
    for student, folder in EDITIONS.items():
        submitted = COURSE / "submitted" / student / ASSIGNMENT
        shutil.rmtree(submitted, ignore_errors=True)
        shutil.copytree(COURSE / folder / ASSIGNMENT, submitted, ignore=shutil.ignore_patterns("*.py", "*.toml"))
        autograded = COURSE / "autograded" / student
        autograded.mkdir(parents=True, exist_ok=True)
        link_shared(autograded, SHARED_FOR_GRADING)
        start = time.monotonic()
        nbgrader("autograde", ASSIGNMENT, f"--student={student}", "--force", "--log-level=WARN")
        print(f"autograded the {student} edition in {time.monotonic() - start:.0f} s")
    return marks()


def marks() -> dict[str, list[tuple]]:
    """(notebook, grade id, kind, score, max score) for every grade cell, per student, from the gradebook."""
    from nbgrader.api import Gradebook

    result: dict[str, list[tuple]] = {student: [] for student in EDITIONS}
    with Gradebook(f"sqlite:///{COURSE / 'gradebook.db'}") as gradebook:
        assignment = gradebook.find_assignment(ASSIGNMENT)
        for notebook in assignment.notebooks:
            for student in EDITIONS:
                submission = gradebook.find_submission_notebook(notebook.name, ASSIGNMENT, student)
                for grade in submission.grades:
                    kind = "auto" if grade.cell_type == "code" else "manual"
                    score = grade.auto_score if kind == "auto" else grade.manual_score
                    result[student].append((notebook.name, grade.name, kind, score, grade.max_score))
    return result


def student_edition_errors() -> list[str]:
    """Cells of the autograded student edition that raised anything but "not attempted yet"."""
    problems = []
    for path in sorted((COURSE / "autograded" / "student" / ASSIGNMENT).glob("*.ipynb")):
        for i, cell in enumerate(json.loads(path.read_text())["cells"]):
            for out in cell.get("outputs", []):
                if out.get("output_type") != "error":
                    continue
                if out.get("ename") == "NotAttempted" and cell["metadata"].get("nbgrader", {}).get("grade"):
                    continue
                problems.append(f"{path.name} cell {i}: {out.get('ename')}: {out.get('evalue', '')[:200]}")
    return problems


def report(result: dict[str, list[tuple]]) -> list[str]:
    """Print the marks per notebook; return what is wrong (instructor below full, student above zero)."""
    failures = []
    print(f"\n{'notebook':32s} {'instructor':>12s} {'student':>10s}   (autograded points; written answers)")
    by_notebook: dict[str, dict[str, list[tuple]]] = {}
    for student, rows in result.items():
        for row in rows:
            by_notebook.setdefault(row[0], {}).setdefault(student, []).append(row)
    for notebook, per_student in sorted(by_notebook.items()):
        cells = {}
        for student in EDITIONS:
            auto = [r for r in per_student.get(student, []) if r[2] == "auto"]
            got, full = sum(r[3] or 0 for r in auto), sum(r[4] for r in auto)
            cells[student] = f"{got:g}/{full:g}"
            for _, cell, _, score, max_score in auto:
                if student == "instructor" and score != max_score:
                    failures.append(f"instructor edition: {notebook} {cell} scored {score} of {max_score}")
                if student == "student" and score:
                    failures.append(f"student edition: {notebook} {cell} scored {score} without an answer")
        written = sum(1 for r in per_student.get("instructor", []) if r[2] == "manual")
        print(f"{notebook:32s} {cells['instructor']:>12s} {cells['student']:>10s}   {written} written")
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("student", "grade"))
    parser.add_argument("notebooks", nargs="*", help="notebook names (default: all), e.g. 03_focal_loss")
    args = parser.parse_args(argv)
    # A fresh course folder each time: nbgrader refuses to regenerate an assignment that has submissions.
    shutil.rmtree(COURSE, ignore_errors=True)
    COURSE.mkdir(parents=True)
    if args.action == "student":
        make_student_edition(args.notebooks)
        return 0
    failures = report(autograde(args.notebooks))
    failures += [f"student edition: {p}" for p in student_edition_errors()]
    check_no_solutions(sorted((COURSE / "release" / ASSIGNMENT).glob("*.ipynb")))
    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures))
        return 1
    print("\nboth editions graded as they should: instructor full marks, student zero, no errors")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
