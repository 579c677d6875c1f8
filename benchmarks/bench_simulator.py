"""Speed and memory of the simulator, printed as figures (never asserted).

    python benchmarks/bench_simulator.py [--requests 1000000] [--repeats 5]

Measures, on the embedded synthetic trace:
1. simulated requests per second of ``multi_bin_dynamic`` (K=4) on 4 and on 100
   GPUs, median of ``--repeats`` runs after a warm-up, with every scheduler on
   4 GPUs for context;
2. the reference in the same run: the same engine uncompiled
   (``NUMBA_DISABLE_JIT=1``, pure Python) on a slice, and the ratio;
3. start-up of a fresh process (import + first simulation), which shows the
   on-disk compile cache at work;
4. peak memory (resident set) of a fresh process running one full-size run
   on 4 and on 100 GPUs, and the part of it the run itself adds.
Figures go to stdout; the machine is shared, so read medians and ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CHILD = r"""
import json, re, sys, time

def rss_mb(field):   # VmRSS: resident now; VmHWM: peak resident so far
    return int(re.search(field + r":\s+(\d+)", open("/proc/self/status").read()).group(1)) / 1024

t0 = time.perf_counter()
import workbench as wb
n, gpus = int(sys.argv[1]), int(sys.argv[2])
trace = wb.load_trace(num_requests=n, rps_scaling=200)
before = rss_mb("VmRSS")
t1 = time.perf_counter()
res = wb.simulate(trace, wb.SimConfig(scheduler="multi_bin_dynamic", num_gpus=gpus, k_bins=4), latency="seed-grid")
t2 = time.perf_counter()
print(json.dumps({"import_and_load_s": t1 - t0, "first_sim_s": t2 - t1, "n": len(trace),
                  "peak_rss_mb": rss_mb("VmHWM"), "rss_before_run_mb": before, "sim_rps": len(trace) / (t2 - t1)}))
"""


def child(n: int, gpus: int, env_extra: dict | None = None) -> dict:
    env = dict(os.environ, **(env_extra or {}))
    out = subprocess.run([sys.executable, "-c", CHILD, str(n), str(gpus)], env=env, cwd=REPO,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--reference-requests", type=int, default=20_000)
    args = ap.parse_args()

    import workbench as wb

    trace = wb.load_trace(num_requests=args.requests, rps_scaling=200)
    print(f"trace: {trace.label}, {len(trace):,} requests")
    wb.simulate(trace.head(10_000), wb.SimConfig(num_gpus=4), latency="seed-grid")  # warm-up (compile or load)

    def median_rps(cfg, tr=trace, repeats=args.repeats):
        walls = []
        for _ in range(repeats):
            t = time.perf_counter()
            wb.simulate(tr, cfg, latency="seed-grid")
            walls.append(time.perf_counter() - t)
        wall = statistics.median(walls)
        return len(tr) / wall, wall

    print("\n== compiled simulator, median of", args.repeats, "runs (simulate() end to end, incl. metrics)")
    results = {}
    for name, cfg in [
        ("multi_bin_dynamic K=4, 4 GPUs", wb.SimConfig(scheduler="multi_bin_dynamic", num_gpus=4, k_bins=4)),
        ("multi_bin_dynamic K=4, 100 GPUs", wb.SimConfig(scheduler="multi_bin_dynamic", num_gpus=100, k_bins=4)),
        ("static_fifo, 4 GPUs", wb.SimConfig(scheduler="static_fifo", num_gpus=4)),
        ("dynamic_no_bins, 4 GPUs", wb.SimConfig(scheduler="dynamic_no_bins", num_gpus=4)),
        ("multi_bin_fixed K=4, 4 GPUs", wb.SimConfig(scheduler="multi_bin_fixed", num_gpus=4, k_bins=4)),
    ]:
        rps, wall = median_rps(cfg)
        results[name] = rps
        print(f"  {name:34s} {rps / 1e6:6.2f} M requests/s   ({wall:.3f} s per {len(trace):,})")

    print("\n== reference in the same run: the same engine uncompiled (NUMBA_DISABLE_JIT=1)")
    ref = child(args.reference_requests, 4, {"NUMBA_DISABLE_JIT": "1"})
    print(f"  pure Python, {ref['n']:,} requests, 4 GPUs: {ref['sim_rps']:,.0f} requests/s")
    ratio = results["multi_bin_dynamic K=4, 4 GPUs"] / ref["sim_rps"]
    print(f"  compiled / uncompiled speed-up: {ratio:,.0f}x")

    print("\n== fresh process: import + trace from the disk cache + first simulation, and its memory")
    for gpus in (4, 100):
        fresh = child(args.requests, gpus)
        print(f"  {gpus:3d} GPUs: import and load {fresh['import_and_load_s']:.2f} s; first simulate() "
              f"{fresh['first_sim_s']:.2f} s ({fresh['sim_rps'] / 1e6:.2f} M requests/s, compiled code from the "
              f"disk cache)")
        print(f"            peak RSS {fresh['peak_rss_mb']:.0f} MB = {fresh['rss_before_run_mb']:.0f} MB before the "
              f"run (Python, numpy, pandas, numba, the trace) + {fresh['peak_rss_mb'] - fresh['rss_before_run_mb']:.0f}"
              f" MB for the {fresh['n']:,}-request run")


if __name__ == "__main__":
    main()
