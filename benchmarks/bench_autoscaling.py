"""A day of 10 million requests with autoscaling, simulated: the time it takes (printed, never asserted).

    python benchmarks/bench_autoscaling.py [--requests 10000000] [--repeats 3]

The issue's target: a day-long trace of 10 million requests with autoscaling simulates in <= 60 s on 2 cores.

* The trace: ``synthetic.day_trace`` (the synthetic BurstGPT-like requests over BurstGPT's day, 116
  requests/s on average, 215 at the busiest hour, 14 at the quietest); its generation is timed apart (the
  synthetic rows are cached on disk after the first run).
* The run: ``continuous_fcfs`` (vLLM v1: chunked prefill, 2,048 tokens per step) on OPT-13B / A100 replicas
  (the default step-time profile and its KV cache), arrivals to the replica with the fewest outstanding
  requests (``--router round_robin``: each in turn), judged on TTFT <= 2 s and TPOT <= 100 ms; the reactive
  ``threshold`` autoscaler holding 1.5 arriving requests/s per replica (80% of what a replica sustains at that
  SLA on this trace: 1.5-1.9 requests/s), averaged over 60 s, checked every 15 s, scale-down stabilised over
  300 s, cold starts of 120 s, up to 400 replicas (``--metric concurrency --target 8`` holds the requests in
  the system instead, about what a replica holds at that load); ``simulate()`` end to end with its metrics:
  the median of ``--repeats`` runs after a warm-up, wall and CPU time of the process.
* Reference in the same run: the same trace on a fixed pool of the autoscaled run's largest replica count
  (the fleet sized for the peak; one run, no control loop): its time, replica-hours and attainment.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=10_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--metric", default="rps", help="the threshold policy's metric (rps or concurrency)")
    ap.add_argument("--target", type=float, default=1.5,
                    help="its target per replica (requests/s for rps, requests in the system for concurrency)")
    ap.add_argument("--max-replicas", type=int, default=400)
    ap.add_argument("--router", default="least_outstanding",
                    help="least_outstanding (the fleet planner's: O(replicas) a request) or round_robin (O(1))")
    args = ap.parse_args()

    import workbench as wb
    from workbench.sim import profiles
    from workbench.traces import synthetic

    t, c = time.perf_counter(), time.process_time()
    trace = synthetic.day_trace(args.requests)
    print(f"trace: {trace.label}: {len(trace):,} requests over {trace.arrival_s[-1] / 3600:.1f} h "
          f"({len(trace) / trace.arrival_s[-1]:.1f} requests/s on average); built in {time.perf_counter() - t:.1f} s "
          f"(CPU {time.process_time() - c:.1f} s)")
    step = profiles.default_step_model()
    serving = dict(scheduler="continuous_fcfs", router=args.router, chunked_prefill=True, max_num_batched_tokens=2048,
                   ttft_sla_s=2.0, tpot_sla_s=0.1, **profiles.profile_config_fields(profiles.DEFAULT_PROFILE))
    cfg = wb.SimConfig(num_gpus=8, autoscaler="threshold", autoscale_metric=args.metric,
                       autoscale_target=args.target, max_replicas=args.max_replicas, cold_start_s=120.0,
                       scale_down_after_s=300.0, autoscale_interval_s=15.0, **serving)
    print(f"step-time model: {step.describe()}")
    print(f"router: {cfg.router}; autoscaling: threshold on {cfg.autoscale_metric} = {cfg.autoscale_target:g} per "
          f"replica, every "
          f"{cfg.autoscale_interval_s:g} s, cold start {cfg.cold_start_s:g} s, scale-down after "
          f"{cfg.scale_down_after_s:g} s, replicas in [{cfg.min_replicas}, {cfg.max_replicas}]")
    wb.simulate(trace.head(20_000), cfg, latency=step)   # warm-up: compile or load the engine's cache

    walls, cpus = [], []
    for _ in range(args.repeats):
        t, c = time.perf_counter(), time.process_time()
        res = wb.simulate(trace, cfg, latency=step, step_log=0)
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    s = res.summary
    print(f"\n== a day of {len(trace):,} requests with autoscaling, median of {args.repeats} runs "
          f"(simulate() end to end, incl. metrics)")
    print(f"wall {wall:.1f} s (runs: {', '.join(f'{w:.1f}' for w in walls)}); CPU of the process {cpu:.1f} s; "
          f"{len(trace) / wall:,.0f} simulated requests/s; target <= 60 s: "
          f"{'met' if wall <= 60 else 'NOT met'}")
    print(f"{s['control_instants']:,} control instants, {s['engine_steps']:,} engine steps, "
          f"{s['cold_starts']:,} cold starts, {s['drains']:,} drains; replicas {s['replicas_min']}-"
          f"{s['replicas_max']} (mean {s['replicas_mean']:.1f}); {s['replica_hours']:,.0f} replica-hours; "
          f"SLO attainment {s['slo_attainment']:.3f} (TTFT <= {cfg.ttft_sla_s:g} s, TPOT <= "
          f"{cfg.tpot_sla_s * 1e3:g} ms)")

    print("\n== references in the same run (one run each)")
    peak = int(s["replicas_max"])
    fixed_cfg = wb.SimConfig(num_gpus=peak, **serving)
    t = time.perf_counter()
    fixed = wb.simulate(trace, fixed_cfg, latency=step, step_log=0)
    fixed_wall = time.perf_counter() - t
    f = fixed.summary
    fixed_hours = peak * f["makespan_s"] / 3600
    print(f"fixed pool of {peak} replicas (sized for the autoscaled run's peak): {fixed_wall:.1f} s "
          f"({len(trace) / fixed_wall:,.0f} requests/s); {fixed_hours:,.0f} replica-hours, SLO attainment "
          f"{f['slo_attainment']:.3f}; autoscaling used {s['replica_hours'] / fixed_hours:.0%} of its "
          "replica-hours")


if __name__ == "__main__":
    main()
