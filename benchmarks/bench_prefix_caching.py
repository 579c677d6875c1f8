"""Issue 14's speed targets for the continuous engine, printed as figures (never asserted).

    python benchmarks/bench_prefix_caching.py [--requests 1000000] [--repeats 5]

1. The default synthetic trace (1M requests), ``continuous_fcfs`` on 4 replicas, ``prefix_caching=False``
   (the default), the OPT-13B/A100 step-time model, at the trace's rate x0.02 (bounded queues) and x1
   (overload): target >= 1,000,000 simulated requests/s.
2. The Mooncake conversation trace (12,031 requests, one real hour) with prefix caching on, 8 replicas,
   ``router="prefix_affinity"``, chunked prefill (vLLM v1): Llama-3.1-8B on H100 (BLIS's fitted step model),
   26,000 KV blocks of 16 tokens per replica (80 GB x 0.9 less 16 GB of weights at 128 KiB per token):
   target >= 200,000 simulated requests/s after warm-up.
3. References measured in the same run: the static engine (multi_bin_dynamic, 4 GPUs) on trace 1, and trace 2
   without prefix caching (least_outstanding), so the ratios say what caching and the router cost and how this
   machine compares with other runs.

Medians of ``--repeats`` runs of ``simulate()`` end to end (metrics included) after a warm-up run; the
machine is shared, so the CPU time of the process is printed beside the wall time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

COMMAND = "python benchmarks/bench_prefix_caching.py"


def timed(simulate, trace, cfg, latency, repeats):
    walls, cpus = [], []
    res = None
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        res = simulate(trace, cfg, latency=latency)
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus), res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    import workbench as wb
    from bench_continuous import step_model

    print(f"command: {COMMAND} --requests {args.requests} --repeats {args.repeats}")
    trace = wb.load_trace(num_requests=args.requests, rps_scaling=200)
    step = step_model()
    cfg = wb.SimConfig(scheduler="continuous_fcfs", num_gpus=4)
    wb.simulate(trace.head(20_000), cfg, latency=step)   # warm-up
    print(f"\n== 1. {trace.label}: continuous_fcfs, 4 replicas, prefix_caching=False (target >= 1,000,000/s)")
    for label, scaling in (("bounded", 0.02), ("overload", 1.0)):
        tr = trace.time_scaled(scaling)
        wall, cpu, res = timed(wb.simulate, tr, cfg, step, args.repeats)
        print(f"  {label:>8} (x{scaling:g}): {len(tr) / wall:>12,.0f} simulated requests/s  ({wall:.3f} s wall; "
              f"{len(tr) / cpu:,.0f}/s by CPU time); {res.summary['preemptions_total']:,} preemptions")
    static_wall, _, _ = timed(wb.simulate, trace, wb.SimConfig(scheduler="multi_bin_dynamic", num_gpus=4), None, 3)
    print(f"  reference: static engine, multi_bin_dynamic on 4 GPUs: {len(trace) / static_wall:,.0f} requests/s")

    conv = wb.load_trace("mooncake_conv", use_real_timestamps=True)
    llama = wb.StepTimeModel.from_blis(model="meta-llama/llama-3.1-8b-instruct", gpu="H100", tp=1)
    cached = wb.SimConfig(scheduler="continuous_fcfs", num_gpus=8, chunked_prefill=True, max_num_batched_tokens=8192,
                          block_size=16, kv_blocks=26_000, prefix_caching=True, router="prefix_affinity")
    wb.simulate(conv, cached, latency=llama)               # warm-up: also builds the trace's prefix tree once
    print(f"\n== 2. {conv.label}: prefix caching, 8 replicas, prefix_affinity, chunked prefill "
          f"(target >= 200,000/s after warm-up); {llama.name}")
    wall, cpu, res = timed(wb.simulate, conv, cached, llama, args.repeats)
    s = res.summary
    print(f"  {len(conv) / wall:>12,.0f} simulated requests/s  ({wall * 1e3:.1f} ms wall; {len(conv) / cpu:,.0f}/s by "
          f"CPU time); prefix hit rate {s['prefix_hit_rate']:.1%}, TTFT mean {s['ttft_mean_s']:.3f} s, "
          f"{s['engine_steps']:,} engine steps")
    plain = cached.replace(prefix_caching=False, router="least_outstanding")
    wall_plain, _, res_plain = timed(wb.simulate, conv, plain, llama, args.repeats)
    print(f"  reference: the same without prefix caching (least_outstanding): {len(conv) / wall_plain:,.0f} "
          f"requests/s; caching + affinity cost x{wall / wall_plain:.1f} the time; TTFT mean "
          f"{res_plain.summary['ttft_mean_s']:.3f} s without the cache")


if __name__ == "__main__":
    main()
