"""Shared fixtures.

``WORKBENCH_CACHE_DIR`` points to one session-wide temporary folder, set before
any test runs so subprocesses (papermill kernels, pool and Dask workers)
inherit it: the first test that loads the synthetic trace generates it, every
later one (in any process) reads the cache.  A test module may still point
it elsewhere with ``monkeypatch.setenv``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SMALL_TRACE_REQUESTS = 2_000

_session_cache: list[str] = []


def pytest_configure(config):
    path = tempfile.mkdtemp(prefix="workbench-test-cache-")
    _session_cache.append(path)
    os.environ["WORKBENCH_CACHE_DIR"] = path


def pytest_unconfigure(config):
    for path in _session_cache:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def session_cache_dir() -> Path:
    return Path(_session_cache[0])


def execute_notebook(notebook, output, parameters: dict | None = None):
    """Run a notebook through papermill from the repository root, as the suite does: ``notebook`` is a name in
    notebooks/ ("hardware") or a path; the executed copy is written to ``output``."""
    import papermill as pm

    from workbench import paths

    source = paths.NOTEBOOKS_DIR / f"{notebook}.ipynb" if isinstance(notebook, str) else notebook
    return pm.execute_notebook(str(source), str(output), parameters=parameters or {}, kernel_name="python3",
                               cwd=str(paths.REPO_ROOT), progress_bar=False)


def shown_figures(executed) -> int:
    """How many figures an executed notebook (its path) shows a reader: its image outputs.  A figure the
    notebook only saves (a plot call that is not its cell's last expression and is not display()ed) is not
    among them."""
    import nbformat

    notebook = nbformat.read(str(executed), as_version=4)
    return sum("image/png" in output.get("data", {}) for cell in notebook.cells if cell.cell_type == "code"
               for output in cell.get("outputs", []))


@pytest.fixture(scope="session")
def python() -> str:
    """The interpreter running the tests (the project's venv)."""
    return sys.executable


def run_script_json(script: str, *, disable_jit: bool) -> dict:
    """Run ``script`` in a fresh interpreter (compiled, or with ``NUMBA_DISABLE_JIT=1``) and parse the JSON it
    prints last: how the JIT-equivalence tests compare the compiled engines with plain Python."""
    import json
    import subprocess

    from workbench.paths import REPO_ROOT

    env = dict(os.environ, NUMBA_DISABLE_JIT="1" if disable_jit else "0")
    proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def assert_same_results(compiled: dict, python: dict, *, rel: float = 1e-9, path: str = "") -> None:
    """Two runs' results (nested dicts of name -> number lists, as :func:`run_script_json` returns them) agree:
    the same keys and shapes, integers exactly, floats to ``rel`` (the compiled engine and plain Python follow
    the same arithmetic; the tolerance leaves room for how a compiler may order it), NaN where the other has NaN."""
    assert compiled.keys() == python.keys(), path
    for key, a in compiled.items():
        where = f"{path}/{key}"
        if isinstance(a, dict):
            assert_same_results(a, python[key], rel=rel, path=where)
            continue
        x, y = np.asarray(a), np.asarray(python[key])      # JSON integers stay integers, floats floats
        assert x.shape == y.shape and x.dtype.kind == y.dtype.kind, where
        if x.dtype.kind in "iub":
            np.testing.assert_array_equal(x, y, err_msg=where)
        else:
            np.testing.assert_allclose(x, y, rtol=rel, atol=0, equal_nan=True, err_msg=where)


def small_trace_arrays(n: int = SMALL_TRACE_REQUESTS, seed: int = 7) -> dict[str, np.ndarray]:
    """Poisson arrivals at 20 req/s and long-tailed prompt/output lengths, from ``seed``."""
    rng = np.random.default_rng(seed)
    return {
        "arrival_s": np.cumsum(rng.exponential(1 / 20.0, n)),
        "prompt_tokens": np.clip(rng.lognormal(5.5, 1.0, n), 1, 8_000).astype(int),
        "output_tokens": np.clip(rng.lognormal(4.5, 1.0, n), 1, 2_000).astype(int),
    }


@pytest.fixture(scope="session")
def small_trace():
    """A 2,000-request ``Trace`` built in memory (not synthetic-labelled)."""
    from workbench.traces.trace import Trace

    return Trace.from_arrays(**small_trace_arrays(), source="small test trace")


@pytest.fixture(scope="session")
def small_trace_csv(tmp_path_factory, small_trace) -> Path:
    """``small_trace`` as a minimal ``arrival_s,prompt_tokens,output_tokens`` CSV (load it with
    ``use_real_timestamps=True`` to get ``small_trace``'s arrivals back)."""
    path = tmp_path_factory.mktemp("traces") / "small_trace.csv"
    small_trace.to_frame().to_csv(path, index=False)
    return path


def sweep_tests(csv_path, *, step: str = "sweep_test", gpus=(1, 2), ks=(1, 4),
                num_requests: int = SMALL_TRACE_REQUESTS, d_sla: float = 1.0, capacity=None):
    """A small list of ``SweepTest`` on the CSV trace (importable by subprocesses: ``from conftest import``);
    ``capacity``: a ``CapacitySpec`` every test also searches."""
    from workbench.sim.config import SimConfig
    from workbench.study.runs.sweep import TraceOptions, make_test

    options = TraceOptions(dataset=str(csv_path), num_requests=num_requests, use_real_timestamps=True, seed=0)
    trace = options.load()
    return [make_test(step, options, SimConfig(scheduler="multi_bin_dynamic", num_gpus=g, k_bins=k,
                                               d_sla_s=d_sla, seed=3), trace=trace, label=f"{g} GPUs, K={k}",
                      capacity=capacity)
            for g in gpus for k in ks]


@pytest.fixture
def count_runs(monkeypatch):
    """Counts the tests a serial sweep actually simulates."""
    from workbench.study.runs import sweep

    calls = []
    real = sweep.run_test

    def counting(test):
        calls.append(test.test_id)
        return real(test)

    monkeypatch.setattr(sweep, "run_test", counting)
    return calls
