"""A killed run leaves nothing behind (issue 9 item 10): the suite's process tree is gone within seconds."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from workbench import paths


def _children_of() -> dict[int, list[int]]:
    """Every live process's children, from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if fields[0] != "Z":  # a zombie has exited already
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def _descendants(pid: int) -> set[int]:
    children, found, todo = _children_of(), set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pids: set[int]) -> set[int]:
    children = _children_of()
    return {p for p in pids if any(p in kids for kids in children.values())}


def _pool_workers(pids: set[int]) -> set[int]:
    workers = set()
    for pid in pids:
        try:
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                workers.add(pid)
        except OSError:
            pass
    return workers


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads the process tree from /proc (Linux)")
def test_kill_9_of_the_suite_mid_step_leaves_no_process_behind(tmp_path):
    """The suite -> papermill kernel -> pool workers chain: all gone within seconds of a kill -9 of the suite."""
    cmd = [sys.executable, "-m", "workbench", "suite", "--max-requests", "20000", "--max-gpus", "4",
           "--step2-only", "--executor", "process:2", "--results-dir", str(tmp_path / "r"), "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=paths.REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    tree: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and len(_pool_workers(tree)) < 2:
            tree |= _descendants(proc.pid)
            time.sleep(0.1)
        assert proc.poll() is None, f"the suite ended before its pool started: {proc.stderr.read()[-2000:]}"
        assert len(_pool_workers(tree)) == 2, "the pool's workers never appeared"
        time.sleep(0.5)  # mid-step: the workers are simulating
        tree |= _descendants(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 30      # generous: a loaded machine takes a while to reap a pool
        while _alive(tree) and time.monotonic() < deadline:
            time.sleep(0.2)
        survivors = _alive(tree)
        assert not survivors, {p: Path(f"/proc/{p}/cmdline").read_bytes()[:200] for p in survivors}
    finally:
        for pid in _alive(tree):  # never leave them behind, even when the test fails
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
