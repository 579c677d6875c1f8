"""Speed and memory of the continuous-batching engine, printed as figures (never asserted).

    python benchmarks/bench_continuous.py [--requests 1000000] [--repeats 5]

On the default synthetic trace (1M requests), ``continuous_fcfs`` on 4
replicas with the OPT-13B/A100 step-time model (``profiles.default_step_model()``
when that module is present, else the same coefficients written out here):

1. simulated requests per second (``simulate()`` end to end, metrics
   included), median of ``--repeats`` runs after a warm-up, at a load where
   queues stay bounded (``--bounded-scaling``: the trace's rate times 0.02,
   about 1.1 requests/s on 4 replicas of a 13B model; queue p99 under a
   second) and at overload (the trace's own rate, x1: queues grow for the
   whole run);
2. references measured in the same run: the same engine simulating every
   decode step as its own event (no runs of identical decode steps), and the
   static engine (``multi_bin_dynamic``, 4 GPUs) on the same trace; the
   ratios say how much the runs buy and how this machine compares with the
   static benchmark's figures;
3. the same two loads with a kernel-profile step model (Llama-3.1-8B on an
   RTX PRO 6000 from LLMServingSim's per-layer profiles,
   ``wb.StepTimeModel.from_kernel_profiles``: a step table, see
   ``workbench/sim/steptable.py``) under vLLM v1 settings inside the profiled
   grid (chunked prefill, 2,048 tokens per step, 256 sequences), printed
   beside the plain model's figure; the synthetic trace's longest requests
   (up to 36k tokens) go past the profile's 16,384-token context, so the model
   extrapolates there (``allow_extrapolation=True``);
4. peak memory (resident set) of a fresh process running one full-size run
   at overload, and the part of it the run adds.
The machine is shared: read medians and ratios; the CPU time of the process
(``time.process_time``) is printed beside the wall time because it is less
disturbed by other processes on the same cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# DistServe's published OPT-13B / A100 profile (seconds), as fitted by workbench.sim.profiles
OPT13B_A100 = dict(prefill=(0.022052, 1.4051e-4, 8.0766e-9), decode=(0.023475, 5.9293e-7, 6.0727e-5),
                   decode_large=(0.020206, 4.9077e-7, 1.2e-4), decode_large_threshold=95, name="opt-13b-a100")

CHILD = r"""
import json, re, sys, time
sys.path.insert(0, sys.argv[3])
from bench_continuous import step_model

def rss_mb(field):
    return int(re.search(field + r":\s+(\d+)", open("/proc/self/status").read()).group(1)) / 1024

import workbench as wb
n, scaling = int(sys.argv[1]), float(sys.argv[2])
trace = wb.load_trace(num_requests=n, rps_scaling=200).time_scaled(scaling)
step = step_model()
before = rss_mb("VmRSS")
t = time.perf_counter()
res = wb.simulate(trace, wb.SimConfig(scheduler="continuous_fcfs", num_gpus=4), latency=step)
wall = time.perf_counter() - t
print(json.dumps({"n": len(trace), "peak_rss_mb": rss_mb("VmHWM"), "rss_before_run_mb": before, "first_sim_s": wall}))
"""


KERNEL_BUNDLE = REPO / "data/groundtruth/llmservingsim_vllm019/kernel_profiles/RTXPRO6000/meta-llama/Llama-3.1-8B/bf16"


def kernel_step_model():
    import workbench as wb
    return wb.StepTimeModel.from_kernel_profiles(KERNEL_BUNDLE, allow_extrapolation=True)


def step_model():
    import workbench as wb
    try:
        from workbench.sim import profiles
        return profiles.default_step_model()
    except ImportError:
        return wb.StepTimeModel(**OPT13B_A100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--bounded-scaling", type=float, default=0.02)
    ap.add_argument("--overload-scaling", type=float, default=1.0)
    args = ap.parse_args()

    import numpy as np

    import workbench as wb
    from workbench.sim.schedulers import continuous_fcfs

    trace = wb.load_trace(num_requests=args.requests, rps_scaling=200)
    step = step_model()
    cfg = wb.SimConfig(scheduler="continuous_fcfs", num_gpus=4)
    print(f"trace: {trace.label}, {len(trace):,} requests; step-time model: {step.describe()}")
    wb.simulate(trace.head(20_000), cfg, latency=step)   # warm-up (compile or load the cache)

    cpu_walls = {}

    def median_rps(tr, config, latency, repeats=args.repeats):
        walls, cpus = [], []
        for _ in range(repeats):
            t, c = time.perf_counter(), time.process_time()
            res = wb.simulate(tr, config, latency=latency)
            walls.append(time.perf_counter() - t)
            cpus.append(time.process_time() - c)
        wall = statistics.median(walls)
        cpu_walls[id(res)] = statistics.median(cpus)
        return len(tr) / wall, wall, res

    print(f"\n== continuous_fcfs, 4 replicas, median of {args.repeats} runs (simulate() end to end, incl. metrics)")
    figures = {}
    for label, scaling in (("bounded", args.bounded_scaling), ("overload", args.overload_scaling)):
        tr = trace.time_scaled(scaling)
        rps, wall, res = median_rps(tr, cfg, step)
        s = res.summary
        queue = res.continuous["queue_s"]
        queue = queue[~np.isnan(queue)]
        figures[label] = rps
        cpu = cpu_walls[id(res)]
        print(f"{label:>8} (x{scaling:g}, {tr.mean_rate_rps:.3g} req/s offered): {rps:,.0f} simulated requests/s "
              f"({wall:.3f} s wall; by CPU time of the process {len(tr) / cpu:,.0f}/s, {cpu:.3f} s); "
              f"{s['engine_steps']:,} engine steps; queue mean {queue.mean():.3g} s, "
              f"p99 {np.percentile(queue, 99):.3g} s; TTFT mean {s['ttft_mean_s']:.3g} s, TPOT mean "
              f"{s['tpot_mean_s'] * 1e3:.3g} ms; KV use {s['kv_utilization_mean']:.1%}; "
              f"{s['preemptions_total']:,} preemptions; {s['rejected']:,} rejected")

    print(f"\n== kernel-profile step model, median of {args.repeats} runs")
    import logging
    logging.getLogger("workbench.sim.steptable").setLevel(logging.ERROR)   # the extrapolation notice, once per run
    kernel = kernel_step_model()
    # vLLM v1 settings within the profiled grid; the KV cache of an RTX PRO 6000 (96 GiB x 0.9 less 15 GiB of
    # weights, 128 KiB per token of Llama-3.1-8B)
    kcfg = wb.SimConfig(scheduler="continuous_fcfs", num_gpus=4, chunked_prefill=True, max_num_batched_tokens=2048,
                        max_num_seqs=256, kv_blocks=36_578)
    print(f"step-time model: {kernel.name}")
    wb.simulate(trace.head(20_000), kcfg, latency=kernel)   # warm-up
    for label, scaling in (("bounded", args.bounded_scaling), ("overload", args.overload_scaling)):
        tr = trace.time_scaled(scaling)
        rps, wall, res = median_rps(tr, kcfg, kernel)
        plain_rps, _, _ = median_rps(tr, kcfg, step, repeats=max(1, args.repeats // 2))
        s = res.summary
        cpu = cpu_walls[id(res)]
        print(f"{label:>8} (x{scaling:g}): kernel-profile {rps:,.0f} simulated requests/s ({wall:.3f} s wall; by CPU "
              f"time of the process {len(tr) / cpu:,.0f}/s, {cpu:.3f} s; {s['engine_steps']:,} engine steps; TTFT mean {s['ttft_mean_s']:.3g} s, TPOT mean "
              f"{s['tpot_mean_s'] * 1e3:.3g} ms); the plain model on the same settings {plain_rps:,.0f}/s, "
              f"on the default settings {figures[label]:,.0f}/s")

    print("\n== references in the same run")
    original = continuous_fcfs.ContinuousFcfs.continuous_spec
    try:
        continuous_fcfs.ContinuousFcfs.continuous_spec = lambda self, c: replace(original(self, c), jumps=False)
        tr = trace.time_scaled(args.bounded_scaling)
        slow_rps, slow_wall, _ = median_rps(tr, cfg, step, repeats=1)
    finally:
        continuous_fcfs.ContinuousFcfs.continuous_spec = original
    print(f"every decode step its own event (bounded load): {slow_rps:,.0f} requests/s ({slow_wall:.3f} s); "
          f"runs of decode steps are {figures['bounded'] / slow_rps:.1f}x faster")
    static_rps, static_wall, _ = median_rps(trace, wb.SimConfig(scheduler="multi_bin_dynamic", num_gpus=4, k_bins=4),
                                            None, repeats=3)
    print(f"static engine, multi_bin_dynamic on 4 GPUs: {static_rps:,.0f} requests/s ({static_wall:.3f} s); "
          f"continuous/static: {figures['bounded'] / static_rps:.2f} (bounded), "
          f"{figures['overload'] / static_rps:.2f} (overload)")

    print("\n== peak memory of a fresh process, one run at overload")
    out = subprocess.run([sys.executable, "-c", CHILD, str(args.requests), str(args.overload_scaling),
                          str(Path(__file__).resolve().parent)], cwd=REPO, capture_output=True, text=True,
                         check=True, env=dict(os.environ))
    child = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"{child['n']:,} requests: peak RSS {child['peak_rss_mb']:.0f} MB "
          f"(before the run {child['rss_before_run_mb']:.0f} MB: interpreter, libraries and trace; "
          f"the run adds {child['peak_rss_mb'] - child['rss_before_run_mb']:.0f} MB); first run {child['first_sim_s']:.2f} s")


if __name__ == "__main__":
    main()
