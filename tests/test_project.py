"""The project's own promises: the README's example runs, the two environment files agree."""

import re
import tomllib

import pytest
import yaml

from workbench.paths import REPO_ROOT


def _name(requirement: str) -> str:
    return re.split(r"[<>=!\[ ]", requirement.strip(), maxsplit=1)[0].lower()


def test_readme_first_example_runs(monkeypatch, tmp_path, capsys):
    text = (REPO_ROOT / "README.md").read_text()
    example = re.search(r"## First example\s+```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "synthetic" in out and "requests/s" in out


@pytest.mark.parametrize("section", ["Continuous batching", "Static and continuous batching on one hardware model",
                                     "A day of changing load, and autoscaling"])
def test_readme_engine_examples_run(section, monkeypatch, capsys):
    """The README's other examples run as written, from the repository root (they name data/ paths)."""
    text = (REPO_ROOT / "README.md").read_text()
    example = re.search(rf"## {re.escape(section)}\s+.*?```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(REPO_ROOT)
    exec(compile(example, "README.md", "exec"), {})
    assert capsys.readouterr().out.strip()


def test_environment_yml_lists_the_same_packages_as_pyproject():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    if "dask" in wanted:          # pip's dask[distributed] is conda's dask + distributed
        wanted.add("distributed")
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    conda = {_name(d) for d in env["dependencies"] if isinstance(d, str)} - {"python", "pip"}
    assert conda == wanted


def test_ci_runs_the_readme_test_command():
    readme = (REPO_ROOT / "README.md").read_text()
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and re.search(r"^make test\b", ci, re.M)
