"""Speed and memory of the disaggregated engine and of the placement search, printed as figures (never asserted).

    python benchmarks/bench_disagg.py [--requests 1000000] [--repeats 5] [--placement-requests 20000]

1. On the default synthetic trace (1M requests), ``scheduler="disaggregated"``
   with 2 prefill + 2 decode instances of one A100 each, OPT-13B, DistServe's
   profile (``opt-13b-a100-distserve`` at TP 1): simulated requests per
   second (``simulate()`` end to end, metrics included), median of
   ``--repeats`` runs after a warm-up, at a load where queues stay bounded
   (``--bounded-scaling``, x0.02: about 1.1 requests/s) and at overload (the
   trace's own rate, x1).
2. References measured in the same run: the same engine with every decode step
   its own event (no series of decode steps; bounded load), and the continuous
   engine (``continuous_fcfs``, 4 replicas) on the same trace.
3. Step tables (issue 22), same trace and loads: both pools priced by the
   roofline of OPT-13B on A100-80GB as a table (``opt-13b@a100-80gb``) and as
   its linear fit (``table=False``), and by LLMServingSim's kernel profiles of
   Llama-3.1-8B on an RTX PRO 6000 (a table with the skew correction, so each
   decode lane tracks its longest and shortest context; that GPU's memory,
   prefill steps of at most 2,048 tokens and micro-batches of at most 256, the
   profiles' grid, extrapolated past its 16k context).
4. Peak memory (resident set) of a fresh process running one full-size run at
   overload, and what the run adds.
5. ``wb.best_placement`` for 8 GPUs on the first ``--placement-requests`` of the
   same trace (TTFT 0.2 s, TPOT 0.1 s, 90%): wall time and what it searched.

The machine is shared: read medians and ratios; the process's CPU time is
printed beside the wall time because other processes disturb it less.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PROFILE = "opt-13b-a100-distserve"

CHILD = r"""
import json, re, sys, time
sys.path.insert(0, sys.argv[3])
from bench_disagg import config

def rss_mb(field):
    return int(re.search(field + r":\s+(\d+)", open("/proc/self/status").read()).group(1)) / 1024

import workbench as wb
n, scaling = int(sys.argv[1]), float(sys.argv[2])
trace = wb.load_trace(num_requests=n, rps_scaling=200).time_scaled(scaling)
before = rss_mb("VmRSS")
t = time.perf_counter()
res = wb.simulate(trace, config(), latency="opt-13b-a100-distserve")
wall = time.perf_counter() - t
print(json.dumps({"n": len(trace), "peak_rss_mb": rss_mb("VmHWM"), "rss_before_run_mb": before, "first_sim_s": wall}))
"""


def config():
    """2 prefill + 2 decode instances of one A100-80GB each serving OPT-13B (DistServe's memory settings)."""
    import workbench as wb
    from workbench.sim import profiles

    return wb.SimConfig(scheduler="disaggregated", prefill_replicas=2, decode_replicas=2,
                        **profiles.PROFILE_MEMORY[PROFILE])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--bounded-scaling", type=float, default=0.02)
    ap.add_argument("--overload-scaling", type=float, default=1.0)
    ap.add_argument("--placement-requests", type=int, default=20_000)
    ap.add_argument("--placement-gpus", type=int, default=8)
    args = ap.parse_args()

    import numpy as np

    import workbench as wb
    from workbench.sim import disagg, profiles

    trace = wb.load_trace(num_requests=args.requests, rps_scaling=200)
    cfg = config()
    print(f"trace: {trace.label}, {len(trace):,} requests; 2 prefill + 2 decode instances (1 GPU each), "
          f"profile {PROFILE}: prefill {profiles.get_profile(PROFILE).describe()}")
    wb.simulate(trace.head(20_000), cfg, latency=PROFILE)   # warm-up (compile or load the cache)

    def median_rps(tr, config_, latency, repeats=args.repeats):
        walls, cpus = [], []
        for _ in range(repeats):
            t, c = time.perf_counter(), time.process_time()
            res = wb.simulate(tr, config_, latency=latency)
            walls.append(time.perf_counter() - t)
            cpus.append(time.process_time() - c)
        wall, cpu = statistics.median(walls), statistics.median(cpus)
        return len(tr) / wall, wall, cpu, res

    print(f"\n== disaggregated, 2 prefill + 2 decode, median of {args.repeats} runs (simulate() end to end)")
    figures = {}
    for label, scaling in (("bounded", args.bounded_scaling), ("overload", args.overload_scaling)):
        tr = trace.time_scaled(scaling)
        rps, wall, cpu, res = median_rps(tr, cfg, PROFILE)
        s = res.summary
        figures[label] = rps
        print(f"{label:>8} (x{scaling:g}, {tr.mean_rate_rps:.3g} req/s offered): {rps:,.0f} simulated requests/s "
              f"({wall:.3f} s wall; by CPU time {len(tr) / cpu:,.0f}/s); {s['prefill_steps']:,} prefill steps, "
              f"{s['decode_steps']:,} decode steps; TTFT mean {s['ttft_mean_s']:.3g} s, TPOT mean "
              f"{s['tpot_mean_s'] * 1e3:.3g} ms, decode admission wait mean {s['decode_queue_mean_s']:.3g} s; "
              f"utilisation prefill {s['prefill_utilization_mean']:.1%}, decode {s['decode_utilization_mean']:.1%}; "
              f"KV use decode {s['decode_kv_utilization_mean']:.1%}; {s['preemptions_total']:,} swaps; "
              f"{s['rejected']:,} rejected")

    print("\n== references in the same run")
    tr = trace.time_scaled(args.bounded_scaling)
    prefill, decode = disagg.pool_models(PROFILE, cfg)
    settings = disagg.settings_of(cfg, prefill, decode)
    t = time.perf_counter()
    disagg.run_engine(tr.arrival_s, tr.prompt_tokens, tr.output_tokens, settings, jumps=False)
    slow = time.perf_counter() - t
    print(f"every decode step its own event (bounded load, engine only): {len(tr) / slow:,.0f} requests/s "
          f"({slow:.3f} s); series of decode steps are {figures['bounded'] / (len(tr) / slow):.1f}x faster")
    colo = wb.SimConfig(scheduler="continuous_fcfs", num_gpus=4, **profiles.PROFILE_MEMORY[PROFILE])
    for label, scaling in (("bounded", args.bounded_scaling), ("overload", args.overload_scaling)):
        rps, wall, _, _ = median_rps(trace.time_scaled(scaling), colo, profiles.get_profile(PROFILE), repeats=3)
        print(f"continuous engine, continuous_fcfs on 4 replicas ({label}): {rps:,.0f} requests/s ({wall:.3f} s); "
              f"disaggregated/continuous {figures[label] / rps:.2f}")

    print(f"\n== step tables, median of {args.repeats} runs (simulate() end to end; ratio: against {PROFILE} above)")
    from workbench.paths import REPO_ROOT

    roofline_linear = wb.StepTimeModel.roofline("opt-13b", "a100-80gb", table=False)
    kernel = wb.StepTimeModel.from_kernel_profiles(
        REPO_ROOT / "data" / "groundtruth" / "llmservingsim_vllm019" / "kernel_profiles" / "RTXPRO6000" / "meta-llama"
        / "Llama-3.1-8B" / "bf16", allow_extrapolation=True)
    kernel_cfg = wb.SimConfig(scheduler="disaggregated", prefill_replicas=2, decode_replicas=2,
                              prefill_max_tokens=2048, decode_max_batch_size=256,
                              **profiles.roofline_memory_fields("llama-3.1-8b", "rtx-pro-6000"))
    logging.getLogger("workbench.sim.steptable").setLevel(logging.ERROR)   # (the extrapolation notice, each run)
    for label, config_, latency in (("roofline table opt-13b@a100-80gb", cfg, "opt-13b@a100-80gb"),
                                    ("roofline linear fit", cfg, roofline_linear),
                                    ("kernel profiles, Llama-3.1-8B, RTX PRO 6000", kernel_cfg, kernel)):
        wb.simulate(trace.head(20_000), config_, latency=latency)   # warm-up
        for load, scaling in (("bounded", args.bounded_scaling), ("overload", args.overload_scaling)):
            rps, wall, cpu, res = median_rps(trace.time_scaled(scaling), config_, latency)
            s = res.summary
            print(f"{label} ({load}): {rps:,.0f} simulated requests/s ({wall:.3f} s wall; by CPU time "
                  f"{len(trace) / cpu:,.0f}/s), x{rps / figures[load]:.2f}; {s['decode_steps']:,} decode steps, "
                  f"E2E mean {s['e2e_mean_s']:.3g} s, {s['rejected']:,} rejected")

    print("\n== peak memory of a fresh process, one run at overload")
    out = subprocess.run([sys.executable, "-c", CHILD, str(args.requests), str(args.overload_scaling),
                          str(Path(__file__).resolve().parent)], cwd=REPO, capture_output=True, text=True,
                         check=True, env=dict(os.environ))
    child = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"{child['n']:,} requests: peak RSS {child['peak_rss_mb']:.0f} MB (before the run "
          f"{child['rss_before_run_mb']:.0f} MB: interpreter, libraries and trace; the run adds "
          f"{child['peak_rss_mb'] - child['rss_before_run_mb']:.0f} MB); first run {child['first_sim_s']:.2f} s")

    print(f"\n== best_placement, {args.placement_gpus} GPUs, {args.placement_requests:,} requests "
          "(TTFT 0.2 s, TPOT 0.1 s, 90%)")
    small = trace.head(args.placement_requests)
    wb.best_placement(small.head(2_000), 4)   # warm-up (compile or load the cache for every engine)
    t, c = time.perf_counter(), time.process_time()
    table = wb.best_placement(small, args.placement_gpus, ttft_s=0.2, tpot_s=0.1, attainment=0.9)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    searched = int((table.status == "searched").sum())
    print(f"{wall:.1f} s wall ({cpu:.1f} s CPU): {len(table)} placements, {searched} searched in full, "
          f"{int((table.status == 'pruned').sum())} pruned; best: {table.placement.iloc[0]} at "
          f"{table.goodput_per_gpu.iloc[0]:.3g} req/s per GPU")
    with np.printoptions(precision=3):
        print(table.head(8)[["rank", "placement", "gpus", "goodput_rps", "goodput_per_gpu", "status"]]
              .to_string(index=False))


if __name__ == "__main__":
    main()
