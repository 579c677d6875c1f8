"""A sweep through a real Dask cluster: a `dask scheduler` and a `dask worker` on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import sweep_tests

from workbench.study.runs.sweep import run_sweep
from workbench.study.store.checkpoints import comparable

distributed = pytest.importorskip("distributed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dask_cli() -> list[str]:
    exe = Path(sys.executable).with_name("dask")
    return [str(exe)] if exe.is_file() else [shutil.which("dask") or "dask"]


def _wait_for_workers(address: str, n: int, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    last_error = None
    while time.monotonic() < deadline:
        try:
            with distributed.Client(address, timeout="5s") as client:
                client.wait_for_workers(n, timeout=max(1.0, deadline - time.monotonic()))
                return
        except (OSError, TimeoutError) as exc:
            last_error = exc
            time.sleep(0.5)
    raise TimeoutError(f"no Dask worker at {address} after {timeout_s} s: {last_error}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def dask_cluster(tmp_path):
    port = _free_port()
    address = f"127.0.0.1:{port}"
    env = dict(os.environ)  # WORKBENCH_CACHE_DIR: the workers read the trace cache the test filled
    log_dir = tmp_path / "dask-logs"
    log_dir.mkdir()
    procs = []
    try:
        procs.append(subprocess.Popen(
            _dask_cli() + ["scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            stdout=open(log_dir / "scheduler.log", "w"), stderr=subprocess.STDOUT, env=env, cwd=tmp_path))
        procs.append(subprocess.Popen(
            _dask_cli() + ["worker", f"tcp://{address}", "--nworkers", "1", "--nthreads", "2", "--no-dashboard",
                           "--local-directory", str(tmp_path / "dask-worker")],
            stdout=open(log_dir / "worker.log", "w"), stderr=subprocess.STDOUT, env=env, cwd=tmp_path))
        _wait_for_workers(f"tcp://{address}", 1)
        yield address
    finally:
        for proc in reversed(procs):
            _stop(proc)


def test_sweep_through_a_dask_cluster_matches_serial(small_trace_csv, tmp_path, dask_cluster):
    tests = sweep_tests(small_trace_csv, gpus=(1, 2), ks=(1, 4))
    serial = run_sweep(tests, tmp_path / "serial", executor="serial", progress=False)
    on_dask = run_sweep(tests, tmp_path / "dask", executor=f"dask://{dask_cluster}", progress=False)
    assert list(on_dask["test_id"]) == [t.test_id for t in tests]
    pd.testing.assert_frame_equal(comparable(serial), comparable(on_dask), check_exact=True)
    # a rerun through a Client object finds everything checkpointed
    with distributed.Client(f"tcp://{dask_cluster}") as client:
        again = run_sweep(tests, tmp_path / "dask", executor=client, progress=False)
    pd.testing.assert_frame_equal(on_dask, again)
    assert len(pd.read_csv(tmp_path / "dask" / "sweep_test.csv")) == len(tests)
