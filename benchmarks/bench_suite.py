"""How long the main job takes: the suite's notebooks one by one, printed (never asserted).

    python benchmarks/bench_suite.py                      # the default suite (= make run) into a fresh folder
    python benchmarks/bench_suite.py --max-requests 100000 --max-gpus 16
    python benchmarks/bench_suite.py --results-dir results/default   # time a rerun (everything checkpointed)
    python benchmarks/bench_suite.py --install                # make run on a fresh clone: make setup, then the suite

Runs the notebooks ``make run`` runs (:data:`workbench.study.orchestrate.suite.SUITE_NOTEBOOKS`, selected by the
suite's own options, which this script takes as ``python -m workbench suite`` does) into a fresh temporary
results folder outside ``results/`` (so nothing is reused from earlier runs there), and prints the two
sweeps that run every test first (:func:`workbench.study.orchestrate.suite.precompute`), then each notebook:

* wall time (what a user waits), and CPU time of the suite, its kernel and the kernel's pool workers (user +
  system: less disturbed by other load on the machine than wall time; CPU / wall near 2 means both cores
  were busy; a worker that exits before the count loses its time, so read it as a lower bound);
* per notebook, the tests computed and the tests reused (the same test in another step: step 1 -> step 2 ->
  step 3 -> comparison), and the simulations they ran (one replay each, plus the capacity search's probes);
* how long the suite's own process spent compiling the engines (numba), and whether their cache
  (:mod:`workbench.sim.jit_cache`: once per machine) was cold: a first run on this machine, or with an empty
  ``WORKBENCH_NUMBA_CACHE_DIR``, compiles; every later one, in any clone with the same engine code, loads.

``--install`` first clones this checkout's ``HEAD`` into a temporary folder and times ``make setup`` there (what
``make run`` does first on a fresh clone: a venv and the locked packages, from pip's cache on a machine that has
installed them before), then the suite; the last line adds the two: ``make run`` on a fresh clone.

The target (issue 20): ``make run`` on a fresh clone, install included, within 3 minutes of wall time on the
2-core machine.  The machine is shared with other work: compare the CPU column across runs rather than the wall
column, and read the load average printed first.
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _own_cpu_s() -> float:
    """CPU time of this process and of its pool workers (children, running or finished)."""
    import psutil

    total = 0.0
    for p in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:
            times = p.cpu_times()
            total += times.user + times.system + getattr(times, "children_user", 0) + getattr(times, "children_system", 0)
        except psutil.Error:
            pass
    return total


def _cpu_s(kernel) -> float:
    """CPU time (user + system) so far of this process, the kernel and the kernel's pool workers."""
    import psutil

    own = resource.getrusage(resource.RUSAGE_SELF)
    total = own.ru_utime + own.ru_stime
    try:
        proc = psutil.Process(kernel.km.provisioner.pid if kernel.km.provisioner else kernel.km.kernel.pid)
        for p in [proc, *proc.children(recursive=True)]:
            with __import__("contextlib").suppress(psutil.Error):
                times = p.cpu_times()
                total += times.user + times.system
    except (psutil.Error, AttributeError):
        pass
    return total


def _tests(folder: Path, name: str) -> tuple[int, int, int]:
    """(tests computed in this run, tests reused, simulations run) of notebook ``name``'s checkpoint."""
    import pandas as pd

    from workbench.study.store.checkpoints import read_rows

    path = folder / f"{name}.csv"
    rows = read_rows(path) if path.is_file() else pd.DataFrame()
    if rows.empty:
        return 0, 0, 0
    reused = rows["reused_from"].notna() if "reused_from" in rows else pd.Series(False, index=rows.index)
    computed = rows[~reused]
    probes = pd.to_numeric(computed.get("capacity_probes", pd.Series(0, index=computed.index)), errors="coerce")
    # the replay is the search's first probe: a searched test ran `probes` simulations, a replay-only test one
    sims = int(probes.fillna(1).clip(lower=1).sum())
    return len(computed), int(reused.sum()), sims


def _fresh_install() -> tuple[float, float]:
    """Wall and CPU seconds of ``make setup`` in a fresh clone of this checkout's HEAD (removed afterwards)."""
    import shutil
    import subprocess

    folder = Path(tempfile.mkdtemp(prefix="bench-clone-"))
    try:
        subprocess.run(["git", "clone", "--quiet", str(REPO), str(folder / "clone")], check=True)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        done = subprocess.run(["make", "-C", str(folder / "clone"), "setup"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        if done.returncode:   # pip's warnings only when the install failed
            sys.exit(f"make setup failed in the fresh clone (code {done.returncode}):\n{done.stderr[-3000:]}")
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    from workbench.__main__ import build_parser, options_from_args
    from workbench.study.orchestrate.suite import COMPARE, SUITE_NOTEBOOKS, SharedKernel, precompute, run_notebook

    argv = list(sys.argv[1:] if argv is None else argv)
    install = "--install" in argv
    argv = [a for a in argv if a != "--install"]
    if "--results-dir" not in argv:
        argv += ["--results-dir", tempfile.mkdtemp(prefix="bench-suite-")]
    args = build_parser().parse_args(["suite", *argv, "--no-progress"])
    options = options_from_args(args)
    folder = options.claim_results_dir()
    print(f"bench_suite: {' '.join(argv)}; load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} "
          f"on {os.cpu_count()} cores")
    print(f"{'notebook':<34} {'wall s':>8} {'CPU s':>8} {'CPU/wall':>8} {'computed':>9} {'reused':>7} "
          f"{'sims':>6}")
    install_wall = install_cpu = 0.0
    if install:
        install_wall, install_cpu = _fresh_install()
        print(f"{'install (fresh clone: make setup)':<34} {install_wall:8.1f} {install_cpu:8.1f} "
              f"{install_cpu / install_wall if install_wall else 0:8.2f}", flush=True)
    from workbench.sim import jit_cache

    cold = jit_cache.cache_is_cold()
    t_start = time.perf_counter()
    cpu0 = _own_cpu_s()
    precompute(options, progress=False)    # as run_suite: every test first, in a few sweeps
    wall, cpu = time.perf_counter() - t_start, _own_cpu_s() - cpu0
    total_wall, total_cpu = wall, cpu
    print(f"{'tests (the sweeps)':<34} {wall:8.1f} {cpu:8.1f} {cpu / wall if wall else 0:8.2f}", flush=True)
    print(f"  {'of which compiling the engines':<32} {jit_cache.compile_seconds():8.1f}   "
          f"(numba cache {'cold' if cold else 'warm'}: {jit_cache.cache_folder()})")
    for notebook in SUITE_NOTEBOOKS:
        if notebook.selected(options):
            where = folder / COMPARE if notebook.name == COMPARE else folder
            computed, reused, sims = _tests(where, notebook.name)
            print(f"  {notebook.name:<32} {'':8} {'':8} {'':8} {computed:9d} {reused:7d} {sims:6d}")
    t0 = time.perf_counter()
    kernel = SharedKernel()          # as run_suite: one kernel for every notebook
    print(f"{'kernel start':<34} {time.perf_counter() - t0:8.1f}")
    for notebook in SUITE_NOTEBOOKS:
        if not notebook.selected(options):
            continue
        cpu0, t0 = _cpu_s(kernel), time.perf_counter()
        run_notebook(notebook.name, notebook.parameters(options, notebook.name), folder, progress=False,
                     kernel=kernel)
        wall, cpu = time.perf_counter() - t0, _cpu_s(kernel) - cpu0
        total_wall += wall
        total_cpu += cpu
        print(f"{notebook.name + ' notebook':<34} {wall:8.1f} {cpu:8.1f} {cpu / wall if wall else 0:8.2f}",
              flush=True)
    kernel.close()
    from workbench.study.answers import report
    from workbench.study.orchestrate.suite import notebook_titles

    t0 = time.perf_counter()
    report.write_index(folder, notebook_titles())
    print(f"{'index.html':<34} {time.perf_counter() - t0:8.1f}")
    suite_wall = time.perf_counter() - t_start
    print(f"{'suite total':<34} {suite_wall:8.1f} {total_cpu:8.1f} "
          f"{total_cpu / total_wall if total_wall else 0:8.2f}")
    if install:
        print(f"{'make run on a fresh clone':<34} {suite_wall + install_wall:8.1f} {total_cpu + install_cpu:8.1f} "
              f"{'':8}   (target: <= 180 s wall on 2 cores, install included)")
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"results in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
