"""The packaging files agree with each other (conda users get what pip users get)."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_mirrors_pyproject_requirements():
    project = pyproject()["project"]
    expected = set(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        expected |= set(extra)
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {r for r in pip_section if not r.startswith("-e")}
    assert listed == expected, f"only in environment.yml: {listed - expected}; only in pyproject: {expected - listed}"


def test_environment_yml_python_is_within_requires_python():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    major_minor = tuple(int(x) for x in python.split("=")[1].split("."))
    low = tuple(int(x) for x in re.search(r">=([\d.]+)", pyproject()["project"]["requires-python"]).group(1).split("."))
    assert major_minor >= low


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make book" in readme
    assert re.search(r"^exec make test$", ci, re.M)


def test_make_unit_selects_by_declared_markers_only():
    """`-m` does not check marker names (--strict-markers covers decorators only): a misspelt name
    in the Makefile would silently let engine tests into the fast loop."""
    declared = {marker.split(":")[0] for marker in pyproject()["tool"]["pytest"]["ini_options"]["markers"]}
    expression = re.search(r"^UNIT_MARKERS := (.+)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    used = set(re.findall(r"\w+", expression)) - {"not", "and", "or"}
    assert used and used <= declared, f"undeclared markers in UNIT_MARKERS: {used - declared}"
    assert {"engine", "model", "book", "browser"} <= used, "the fast loop excludes every slow kind of test"
