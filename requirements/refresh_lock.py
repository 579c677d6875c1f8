"""Refresh requirements/lock.txt and environment.yml's pins (``make lock``).

A fresh virtual environment in a temporary folder, an unpinned install of every dependency pyproject.toml
declares (the package's own, and its ``dev`` and ``lab`` extras), ``pip freeze --all`` of the result into
requirements/lock.txt, and environment.yml rewritten with the same versions. pip installs from wherever its
configuration points (this machine: a local package mirror), as ``make setup`` does.

    python3 requirements/refresh_lock.py        # = make lock; run it with the Python the lock is for

Then run ``make test`` (the stamp depends on the lock, so it reinstalls) and commit both files if it passes.
"""

from __future__ import annotations

import datetime
import json
import platform
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "lock.txt"
ENVIRONMENT = ROOT / "environment.yml"
PROJECT = "llm-serving-workbench"
EXTRAS = ("dev", "lab")
# pip name -> conda-forge names (where they differ; dask's "distributed" extra is its own conda package)
CONDA_NAMES = {"dask[distributed]": ("dask", "distributed")}


def normalize(name: str) -> str:
    """PEP 503 name: how pip compares package names (PyYAML == pyyaml, jupyter_client == jupyter-client)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def project_requirements() -> tuple[list[str], dict[str, list[str]], str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project["dependencies"], project["optional-dependencies"], project["requires-python"]


def requirement_name(requirement: str) -> str:
    """``"dask[distributed]>=2024.8"`` -> ``"dask[distributed]"`` (the extras kept: they name conda packages)."""
    return re.match(r"\s*([A-Za-z0-9_.\-]+(\[[^\]]*\])?)", requirement).group(1)


def read_lock(path: Path = LOCK) -> dict[str, str]:
    """Normalized name -> exact version, from ``name==version`` lines (comments and blanks skipped)."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[normalize(name)] = version
    return pins


def freeze(python: str) -> tuple[str, dict]:
    """(``pip freeze --all`` of a fresh venv holding every declared dependency, :data:`FACTS` about that venv)."""
    dependencies, extras, _ = project_requirements()
    wanted = dependencies + [r for name in EXTRAS for r in extras[name]]
    with tempfile.TemporaryDirectory(prefix="workbench-lock-") as folder:
        venv = Path(folder) / "venv"
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip"]
        subprocess.run(pip + ["install", "--quiet", "--upgrade", "pip"], check=True)
        subprocess.run(pip + ["install", "--quiet", *wanted], check=True)
        frozen = subprocess.run(pip + ["freeze", "--all", "--exclude", PROJECT], check=True, capture_output=True,
                                text=True).stdout
        facts = json.loads(subprocess.run([str(venv / "bin" / "python"), "-c", FACTS], check=True,
                                          capture_output=True, text=True).stdout)
    return frozen, facts


# run inside the fresh venv: its Python version and each package's Requires-Python
FACTS = """import json, platform, importlib.metadata as m
print(json.dumps({"python": platform.python_version(),
                  "requires_python": {d.metadata["Name"]: d.metadata.get("Requires-Python") or "" for d in m.distributions()}}))
"""


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text))


def python_floor(requires_python: dict[str, str]) -> tuple[str, str]:
    """(the lowest Python every package accepts, the package that sets it): the largest ``>=`` bound."""
    bounds = [(bound, name) for name, spec in requires_python.items() for bound in re.findall(r">=\s*([\d.]+)", spec)]
    bound, name = max(bounds, key=lambda b: _version(b[0]))
    return bound, name


def lock_text(frozen: str, facts: dict) -> str:
    lines = sorted((line for line in frozen.splitlines() if line.strip()), key=lambda l: normalize(l.split("==")[0]))
    bad = [line for line in lines if "==" not in line or line.startswith("-e")]
    if bad:
        raise SystemExit(f"pip freeze gave lines that are not exact pins: {bad}")
    header = [
        "# Exact versions of every package `make setup` / `make lab` install (pip constraints: `pip install -c`).",
        f"# Made by `make lock` (requirements/refresh_lock.py) on {datetime.date.today().isoformat()}: a fresh venv, an "
        "unpinned install of",
        "# pyproject.toml's dependencies and its dev and lab extras, then `pip freeze --all`.",
        f"# Resolved with CPython {facts['python']} on {platform.system()} {platform.machine()}.",
        "# Needs Python >= {} (the highest Requires-Python among them: {}).".format(
            *python_floor({n: r for n, r in facts["requires_python"].items() if normalize(n) != PROJECT})),
    ]
    return "\n".join(header + lines) + "\n"


def environment_text(pins: dict[str, str], python_version: str) -> str:
    dependencies, extras, _ = project_requirements()
    conda = []
    for requirement in dependencies + extras["dev"]:
        name = requirement_name(requirement)
        for conda_name in CONDA_NAMES.get(name, (name,)):
            conda.append(f"  - {conda_name.lower()}=={pins[normalize(conda_name)]}")
    minor = ".".join(python_version.split(".")[:2])
    return "\n".join([
        "# conda users: `conda env create -f environment.yml && conda activate llm-serving-workbench`",
        "# Written by `make lock` (requirements/refresh_lock.py) from pyproject.toml and requirements/lock.txt: the",
        "# project's dependencies (and dev extras) at the lock's versions; the pip step installs the project with the",
        "# lock as constraints, so what pip adds is pinned too. tests/test_project.py checks the three agree.",
        "name: llm-serving-workbench",
        "channels:",
        "  - conda-forge",
        "dependencies:",
        f"  - python={minor}",
        *conda,
        f"  - pip=={pins['pip']}",
        "  - pip:",
        "      - -c requirements/lock.txt",
        "      - -e .[dev]",
    ]) + "\n"


def main(argv: list[str]) -> int:
    python = argv[1] if len(argv) > 1 else sys.executable
    frozen, facts = freeze(python)
    python_version = facts["python"]
    LOCK.write_text(lock_text(frozen, facts))
    ENVIRONMENT.write_text(environment_text(read_lock(), python_version))
    print(f"wrote {LOCK.relative_to(ROOT)} ({len(read_lock())} packages, CPython {python_version}) and "
          f"{ENVIRONMENT.relative_to(ROOT)}; now run `make test` and commit both if it passes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
