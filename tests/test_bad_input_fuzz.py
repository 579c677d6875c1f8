"""Property test of issue 13: random bad input never crashes, hangs or quietly gives a wrong answer.

``tests/bad_input_fuzz.py`` feeds hypothesis-generated arrays (finite and not, of every dtype), prefix hashes
and parameter values through ``Trace``, ``simulate`` (every registered scheduler and router, prefix caching on
and off; the disaggregated scheduler with its own fields, routers and per-pool latencies), ``capacity`` and
``calibrate`` (vLLM runs, chunked prefill and prefix caching too, and disaggregated runs) in a subprocess, and
each engine must have given both results and clear errors.  A segfault or a hang (a watchdog ends a call after
60 s) fails this test instead of killing pytest.  The example budget is fixed and hypothesis is derandomized,
so every run draws the same examples.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from workbench import paths
from workbench.sim.continuous_engine import ROUTERS
from workbench.sim.disagg_steplog import DISAGG_ROUTERS
from workbench.sim.schedulers import SCHEDULERS

SCRIPT = Path(__file__).with_name("bad_input_fuzz.py")
EXAMPLES = 80


def test_random_bad_input_gives_a_clear_error_or_a_result_whose_invariants_hold():
    proc = subprocess.run([sys.executable, str(SCRIPT), str(EXAMPLES)], capture_output=True, text=True,
                          timeout=600, cwd=paths.REPO_ROOT)
    assert proc.returncode == 0, (f"the fuzzing process failed (code {proc.returncode}: a negative code is a "
                                  f"signal, e.g. -11 a segfault):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["schedulers"] == sorted(SCHEDULERS) and report["routers"] == sorted(ROUTERS)
    assert report["disaggregated_routers"] == sorted(DISAGG_ROUTERS)
    outcomes = report["outcomes"]
    engines = sorted({cls.engine for cls in SCHEDULERS.values()})
    assert "disaggregated" in engines
    for target in ("Trace.from_arrays", *(f"simulate {engine}" for engine in engines), "capacity",
                   "capacity disaggregated", "calibrate", "calibrate disaggregated"):
        results = outcomes.get(f"{target}: result", 0)
        errors = sum(v for k, v in outcomes.items() if k.startswith(f"{target}: clear"))
        assert results > 0 and errors > 0, (target, outcomes)   # both paths were exercised
    # the prefix cache was really fuzzed: traces with random hashes built, simulated with caching on, with the
    # prefix_affinity router, with hits (not only refused at the door)
    exercised = report["exercised"]
    for what in ("Trace with hashes", "prefix caching, trace with hashes", "prefix_affinity router", "cache hits"):
        assert exercised.get(what, 0) > 0, (what, exercised)
