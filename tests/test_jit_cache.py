"""numba's compiled code is cached once per machine, keyed by the content of every file it is built from: checkouts
with the same engine code share it, checkouts with different code never load each other's."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.paths import PACKAGE_DIR
from workbench.sim import jit_cache

# a compiled function calling one in another file: numba's own cache keys the caller by its own file only
CALLER = """from numba import njit
from workbench.sim._probe_callee import add, STEP


@njit(cache=True)
def caller(x):
    return add(x) * STEP
"""
CALLEE = """from numba import njit

STEP = {step}


@njit(cache=True)
def add(x):
    return x + {add}
"""
RUN = """import json, workbench, numba
from workbench.sim._probe_caller import caller
value = caller(1)
print(json.dumps({"file": workbench.__file__, "value": value, "hits": sum(caller.stats.cache_hits.values()),
                  "misses": sum(caller.stats.cache_misses.values()), "path": caller.stats.cache_path}))
"""


def copy_package(root: Path, *, add: int = 1, step: int = 10) -> Path:
    """A checkout of the package under ``root`` with the two probe modules (``add``, ``step`` in the callee)."""
    target = root / "workbench"
    shutil.copytree(PACKAGE_DIR, target, ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))
    (target / "sim" / "_probe_caller.py").write_text(CALLER)
    (target / "sim" / "_probe_callee.py").write_text(CALLEE.format(add=add, step=step))
    return root


def run_in(checkout: Path, cache: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    env.update(PYTHONPATH=str(checkout), WORKBENCH_NUMBA_CACHE_DIR=str(cache))
    proc = subprocess.run([sys.executable, "-c", RUN], cwd=checkout, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(out["file"]).resolve().parent == (checkout / "workbench").resolve()     # that checkout's code ran
    return out


def test_checkouts_share_compiled_code_and_never_load_code_compiled_from_other_source(tmp_path):
    cache = tmp_path / "cache"
    a = copy_package(tmp_path / "a")                     # caller(1) = (1 + 1) * 10
    b = copy_package(tmp_path / "b", add=2)              # the callee differs, the caller's file does not
    c = copy_package(tmp_path / "c")                     # the same source as a, at another path
    first = run_in(a, cache)
    assert (first["value"], first["hits"], first["misses"]) == (20, 0, 1)          # compiled, then saved
    other = run_in(b, cache)
    assert other["value"] == 30 and other["misses"] == 1    # compiled again: a's caller would say 20
    assert other["path"] != first["path"]
    same = run_in(c, cache)
    assert (same["value"], same["hits"], same["misses"]) == (20, 1, 0)             # a's compile, loaded
    assert same["path"] == first["path"] and Path(first["path"]).is_relative_to(cache)
    again = run_in(a, cache)
    assert (again["value"], again["hits"], again["misses"]) == (20, 1, 0)         # b's compile displaced nothing


def test_the_key_follows_the_content_of_what_is_compiled_not_the_path(tmp_path):
    a = copy_package(tmp_path / "a") / "workbench"
    b = copy_package(tmp_path / "b") / "workbench"
    names = {p.relative_to(a).as_posix() for p in jit_cache.compiled_modules(a)}
    # the engines, what they import (controllers, static_steps) and the probes; not the study layer
    assert {"sim/continuous_engine.py", "sim/static_engine.py", "sim/disagg_engine.py", "sim/controllers.py",
            "sim/static_steps.py", "sim/_probe_caller.py", "sim/_probe_callee.py"} <= names
    assert not any(n.startswith(("study/", "traces/")) for n in names) and "sim/jit_cache.py" not in names
    key = jit_cache.source_key(a)
    assert jit_cache.source_key(b) == key                                       # same content, another path
    (b / "study" / "answers" / "text.py").write_text("# an edit the compiled code cannot see\n", "utf-8")
    assert jit_cache.source_key(b) == key
    controllers = b / "sim" / "controllers.py"
    controllers.write_text(controllers.read_text() + "\n# a callee's file changed\n")
    assert jit_cache.source_key(b) != key


def test_relative_and_from_imports_are_followed(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "engine.py").write_text("import numba\nfrom . import helpers\nfrom ..consts import N\n")
    (package / "sub" / "helpers.py").write_text("from pkg.sub.deep import thing\n")
    (package / "sub" / "deep.py").write_text("thing = 1\n")
    (package / "consts.py").write_text("N = 3\n")
    (package / "unrelated.py").write_text("import os\n")
    found = {p.relative_to(package).as_posix() for p in jit_cache.compiled_modules(package)}
    assert found == {"sub/engine.py", "sub/helpers.py", "sub/deep.py", "consts.py"}


def test_the_cache_lives_outside_the_checkout_and_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("WORKBENCH_NUMBA_CACHE_DIR", str(tmp_path / "mine"))
    assert jit_cache.cache_root() == tmp_path / "mine"
    monkeypatch.delenv("WORKBENCH_NUMBA_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert jit_cache.cache_root() == tmp_path / "xdg" / "llm-serving-workbench" / "numba"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert jit_cache.cache_root() == Path.home() / ".cache" / "llm-serving-workbench" / "numba"
    assert PACKAGE_DIR.parent not in jit_cache.cache_root().parents


def test_folders_unused_for_a_month_are_pruned(tmp_path):
    old, recent, current = (tmp_path / n for n in ("old", "recent", "current"))
    for folder in (old, recent, current):
        folder.mkdir()
    month_ago = os.stat(tmp_path).st_mtime - (jit_cache.PRUNE_AFTER_DAYS + 1) * 86400
    os.utime(old, (month_ago, month_ago))
    os.utime(current, (month_ago, month_ago))     # in use by this process: kept however old
    jit_cache._prune(tmp_path, keep=current)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current", "recent"]


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="nothing is compiled")
def test_a_compile_is_announced_and_a_cache_load_is_not(tmp_path):
    a = copy_package(tmp_path / "a")
    script = "import logging; logging.basicConfig(level=logging.INFO, format='%(name)s: %(message)s')\n" + RUN
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    env.update(PYTHONPATH=str(a), WORKBENCH_NUMBA_CACHE_DIR=str(tmp_path / "cache"))

    def log_lines():
        proc = subprocess.run([sys.executable, "-c", script], cwd=a, env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr
        return [line for line in proc.stderr.splitlines() if line.startswith("workbench.sim.jit_cache")]

    cold = log_lines()
    assert len(cold) == 1 and "compiling workbench.sim._probe_caller.caller (once per machine" in cold[0], cold
    assert str(tmp_path / "cache") in cold[0]
    assert log_lines() == []
