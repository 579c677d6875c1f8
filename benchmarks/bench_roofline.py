"""Speed of the continuous engine with roofline and kernel-profile step models, beside the plain model (never asserted).

    python benchmarks/bench_roofline.py [--requests 1000000] [--repeats 3]

The default synthetic trace (1M requests), ``continuous_fcfs`` on 4 replicas under vLLM v1 settings (chunked
prefill, 2,048 tokens and 256 sequences a step), at a bounded load and at overload as
``bench_continuous.py`` runs them: simulated requests per second (``simulate()`` end to end, median of
``--repeats`` runs after a warm-up) with the roofline of Llama-3.1-8B on an RTX PRO 6000
(``wb.StepTimeModel.roofline``: its step table, ``Roofline.table``), with LLMServingSim's kernel profiles of
the same pair (``wb.StepTimeModel.from_kernel_profiles``, extrapolating past the profiled grid: the bench
measures speed, not fidelity) and with the plain linear model (the default profile's coefficients) on the
same settings; the issue's target is >= 1M simulated requests/s.  Each rate is given by wall time and by the
process's CPU time (``time.process_time``; the engine is single-threaded): the machine is shared, so read
the CPU-time rates and the ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

import workbench as wb
from workbench.paths import REPO_ROOT
from workbench.sim import profiles

KERNEL_PROFILES = (REPO_ROOT / "data" / "groundtruth" / "llmservingsim_vllm019" / "kernel_profiles" / "RTXPRO6000"
                   / "meta-llama" / "Llama-3.1-8B" / "bf16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bounded-scaling", type=float, default=0.02)
    parser.add_argument("--overload-scaling", type=float, default=1.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("workbench.sim.steptable").setLevel(logging.ERROR)   # "extrapolated linearly" per run

    trace = wb.load_trace(num_requests=args.requests, rps_scaling=200)
    roofline = wb.StepTimeModel.roofline("llama-3.1-8b", "rtx-pro-6000", max_num_batched_tokens=2048)
    kernel = wb.StepTimeModel.from_kernel_profiles(KERNEL_PROFILES, allow_extrapolation=True)
    plain = profiles.default_step_model()
    cfg = wb.SimConfig(scheduler="continuous_fcfs", num_gpus=4, chunked_prefill=True, max_num_batched_tokens=2048,
                       max_num_seqs=256, **profiles.roofline_memory_fields("llama-3.1-8b", "rtx-pro-6000", 1,
                                                                            max_num_batched_tokens=2048))
    print(f"trace: {trace.label}, {len(trace):,} requests; roofline: {roofline.name} [{roofline.kind}]; "
          f"kernel: {kernel.name}; plain: {plain.name}; KV blocks per replica {cfg.kv_blocks_effective:,}")
    wb.simulate(trace.head(20_000), cfg, latency=roofline)   # warm-up (compilation)
    wb.simulate(trace.head(20_000), cfg, latency=kernel)
    wb.simulate(trace.head(20_000), cfg, latency=plain)

    def median_rps(tr, latency):
        """Median simulated requests/s over the repeats: (by wall time, by CPU time)."""
        wall, cpu = [], []
        for _ in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            wb.simulate(tr, cfg, latency=latency)
            wall.append(len(tr) / (time.perf_counter() - t0))
            cpu.append(len(tr) / (time.process_time() - c0))
        return statistics.median(wall), statistics.median(cpu)

    for label, scaling in (("bounded", args.bounded_scaling), ("overload", args.overload_scaling)):
        tr = trace.time_scaled(scaling)
        rates = {name: median_rps(tr, m) for name, m in (("roofline", roofline), ("kernel-profile", kernel),
                                                          ("plain", plain))}
        base_wall, base_cpu = rates["plain"]
        parts = [f"{name} {cpu:,.0f}/s CPU ({wall:,.0f}/s wall; ratio {cpu / base_cpu:.2f} CPU, "
                 f"{wall / base_wall:.2f} wall)" for name, (wall, cpu) in rates.items() if name != "plain"]
        print(f"{label:>8} (x{scaling:g}) simulated requests/s: plain linear model {base_cpu:,.0f}/s CPU "
              f"({base_wall:,.0f}/s wall); " + "; ".join(parts))


if __name__ == "__main__":
    main()
