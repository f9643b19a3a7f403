"""The project's own files agree with each other: pyproject.toml, environment.yml, the Makefile."""

import re
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"torch": "pytorch"}  # PyPI name -> conda-forge name where they differ


def requirement(spec: str) -> tuple[str, str]:
    name = re.split(r"[<>=!~ \[]", spec, maxsplit=1)[0].strip().lower()
    return name, spec[len(name) :].strip()


def pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] + project["optional-dependencies"]["test"]
    return dict(requirement(s) for s in specs)


def environment_requirements() -> dict[str, str]:
    deps, in_deps = {}, False
    for line in (ROOT / "environment.yml").read_text().splitlines():
        if line.startswith("dependencies:"):
            in_deps = True
            continue
        m = re.match(r"^  - ([A-Za-z0-9_.\-]+)(.*)$", line)
        if in_deps and m and m.group(1) not in ("pip", "python"):
            deps[m.group(1).lower()] = m.group(2).strip()
    return deps


def test_environment_yml_names_the_same_dependencies_as_pyproject():
    conda = environment_requirements()
    pypi = {CONDA_NAMES.get(name, name): version for name, version in pyproject_requirements().items()}
    assert conda == pypi


def test_environment_yml_installs_the_package_itself():
    assert "- -e ." in (ROOT / "environment.yml").read_text()


def test_ci_runs_lint_then_make_test_then_the_editions_and_the_site():
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [line.strip() for line in ci.splitlines() if line.strip().startswith("make ")]
    assert commands[:2] == ["make lint", "make test"], commands
    assert {"make test-student", "make test-site"} <= set(commands), commands


def test_readme_shows_the_two_commands_first():
    readme = (ROOT / "README.md").read_text()
    first_code = readme.split("```")[1]
    assert "make lab" in first_code and "make test" in first_code
