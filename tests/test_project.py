"""The project's own promises: the README's example runs; the lock, pyproject.toml, environment.yml and the
Makefile agree, and the tests run on the lock's versions."""

import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import tomllib

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from workbench.paths import REPO_ROOT

LOCK = REPO_ROOT / "requirements" / "lock.txt"
PROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]


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
                                     "Fidelity against real vLLM runs", "A day of changing load, and autoscaling"])
def test_readme_engine_examples_run(section, monkeypatch, capsys):
    """The README's other examples run as written, from the repository root (they name data/ paths)."""
    text = (REPO_ROOT / "README.md").read_text()
    example = re.search(rf"## {re.escape(section)}\s+.*?```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(REPO_ROOT)
    exec(compile(example, "README.md", "exec"), {})
    assert capsys.readouterr().out.strip()


# --------------------------------------------------------------------------- the lock


def lock_pins() -> dict[str, Version]:
    """requirements/lock.txt: canonical name -> its exact version; every line must be ``name==version``."""
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s=<>!~;]+)", line.strip())
            assert match, f"lock line {line!r} is not an exact pin name==version"
            name = canonicalize_name(match.group(1))
            assert name not in pins, f"{name} is pinned twice"
            pins[name] = Version(match.group(2))
    return pins


def lock_header(label: str) -> str:
    return re.search(rf"^# {re.escape(label)} (\d+(?:\.\d+)*)", LOCK.read_text(), re.M).group(1)


def test_the_lock_pins_every_dependency_of_pyproject_and_theirs_at_versions_they_allow():
    """pyproject's dependencies and all its extras, and (for what this venv has installed) their own dependencies
    with the markers and extras they are asked for, are each pinned at a version the asking package allows."""
    pins = lock_pins()
    extras = PROJECT["optional-dependencies"]
    todo = [Requirement(r) for r in PROJECT["dependencies"] + [r for e in extras.values() for r in e]]
    walked = set()
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in the lock (make lock)"
        assert requirement.specifier.contains(pins[name], prereleases=True), \
            f"the lock pins {name}=={pins[name]}, outside {requirement}"
        if (name, frozenset(requirement.extras)) in walked:
            continue
        walked.add((name, frozenset(requirement.extras)))
        try:
            requires = importlib.metadata.distribution(name).requires or []
        except importlib.metadata.PackageNotFoundError:
            continue                      # the lab extra's packages are pinned but not installed by `make setup`
        for text in requires:
            sub = Requirement(text)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in requirement.extras | {""}):
                todo.append(sub)
    assert len(walked) > 60               # the walk went past the direct dependencies (~20)


def test_the_tests_run_on_the_locks_versions():
    """What this venv has installed is what the lock says (`make test` installs from it, and reinstalls when
    it changes): the versions these tests pass with are the ones a fresh clone gets."""
    pins = lock_pins()
    installed = {canonicalize_name(d.metadata["Name"]): Version(d.version) for d in importlib.metadata.distributions()}
    wrong = {name: (str(installed[name]), str(v)) for name, v in pins.items() if name in installed and installed[name] != v}
    assert not wrong, f"installed version != lock (installed, lock): {wrong}; run make setup"
    for name in ("numpy", "numba", "pandas", "scipy", "pytest"):
        assert name in installed and name in pins


def test_requires_python_is_what_the_locked_packages_need():
    floor = Version(lock_header("Needs Python >="))
    bounds = [Version(v) for v in re.findall(r">=\s*([\d.]+)", PROJECT["requires-python"])]
    assert bounds and max(bounds) == floor, (PROJECT["requires-python"], floor)
    assert Version(lock_header("Resolved with CPython")) in SpecifierSet(PROJECT["requires-python"])
    pins = lock_pins()
    for dist in importlib.metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"])
        needs = dist.metadata.get("Requires-Python")
        if name in pins and needs:
            assert SpecifierSet(needs).contains(floor), f"{name} needs Python {needs}, pyproject allows {floor}"
    assert f"Python {floor}" in (REPO_ROOT / "README.md").read_text()


def _refresh_lock_module():
    spec = importlib.util.spec_from_file_location("refresh_lock", REPO_ROOT / "requirements" / "refresh_lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_python_floor_by_hand():
    floor = _refresh_lock_module().python_floor
    assert floor({"a": ">=3.10", "b": ">=2.7, !=3.0.*, !=3.1.*", "c": ">=3.11.5", "d": "", "e": ">= 3.9"}) == ("3.11.5", "c")
    assert floor({"a": ">=3.9", "b": ">=3.10"}) == ("3.10", "b")      # 10 > 9 as numbers, not as text


def test_environment_yml_lists_the_same_packages_as_pyproject_at_the_locks_versions():
    wanted = {_name(r) for r in PROJECT["dependencies"] + PROJECT["optional-dependencies"]["dev"]}
    if "dask" in wanted:          # pip's dask[distributed] is conda's dask + distributed
        wanted.add("distributed")
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    specs = [d for d in env["dependencies"] if isinstance(d, str)]
    conda = {_name(d) for d in specs} - {"python", "pip"}
    assert conda == wanted
    pins = lock_pins()
    for spec in specs:
        if spec.startswith("python="):
            assert Version(lock_header("Resolved with CPython")).release[:2] == Version(spec.split("=")[1]).release
        else:
            name, version = spec.split("==")
            assert Version(version) == pins[canonicalize_name(name)], spec
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip == ["-c requirements/lock.txt", "-e .[dev]"]   # what pip adds is pinned by the lock too
    # and it is exactly what `make lock` writes
    module = _refresh_lock_module()
    python_version = lock_header("Resolved with CPython")
    assert module.environment_text(module.read_lock(LOCK), python_version) == (REPO_ROOT / "environment.yml").read_text()


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_setup_installs_from_the_lock_and_again_when_the_lock_changes(tmp_path):
    """`make -n` on a copy of the Makefile: with the stamp newer than pyproject and the lock nothing is done; a
    lock edited after it re-runs the install, each pip command constrained by the lock."""
    (tmp_path / "requirements").mkdir()
    for name in ("Makefile", "pyproject.toml", "requirements/lock.txt"):
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    (tmp_path / ".venv").mkdir()
    stamp = tmp_path / ".venv" / ".installed"
    stamp.touch()
    for name in ("pyproject.toml", "requirements/lock.txt"):
        os.utime(tmp_path / name, (1e9, 1e9))

    def dry_run():
        return subprocess.run(["make", "-n", "setup"], cwd=tmp_path, capture_output=True, text=True, check=True).stdout

    assert "pip" not in dry_run()
    os.utime(tmp_path / "requirements" / "lock.txt", (2e9, 2e9))
    installs = [line for line in dry_run().splitlines() if "pip install" in line]
    assert len(installs) == 2 and all("-c requirements/lock.txt" in line for line in installs), installs
    assert "-e \".[dev]\"" in installs[-1]
    lab = subprocess.run(["make", "-n", "lab"], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert re.search(r"pip install .*-c requirements/lock.txt.*\[lab\]", lab)
    refresh = subprocess.run(["make", "-n", "lock"], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert "requirements/refresh_lock.py" in refresh


def test_ci_runs_the_readme_test_command():
    readme = (REPO_ROOT / "README.md").read_text()
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and re.search(r"^make test\b", ci, re.M)
