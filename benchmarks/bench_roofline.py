"""Speed of the continuous engine with a roofline step model, printed beside the plain model (never asserted).

    python benchmarks/bench_roofline.py [--requests 1000000] [--repeats 3]

The default synthetic trace (1M requests), ``continuous_fcfs`` on 4 replicas under vLLM v1 settings (chunked
prefill, 2,048 tokens and 256 sequences a step), at a bounded load and at overload as
``bench_continuous.py`` runs them: simulated requests per second (``simulate()`` end to end, median of
``--repeats`` runs after a warm-up) with the roofline of Llama-3.1-8B on an RTX PRO 6000
(``wb.StepTimeModel.roofline``: its step table, ``Roofline.table``) and with the plain linear model (the
default profile's coefficients) on the same settings; the issue's target is >= 1M simulated requests/s.
The machine is shared: read medians and the ratio measured in the same run.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

import workbench as wb
from workbench.sim import profiles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bounded-scaling", type=float, default=0.02)
    parser.add_argument("--overload-scaling", type=float, default=1.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    trace = wb.load_trace(num_requests=args.requests)
    roofline = wb.StepTimeModel.roofline("llama-3.1-8b", "rtx-pro-6000", max_num_batched_tokens=2048)
    plain = profiles.default_step_model()
    cfg = wb.SimConfig(scheduler="continuous_fcfs", num_gpus=4, chunked_prefill=True, max_num_batched_tokens=2048,
                       max_num_seqs=256, **profiles.roofline_memory_fields("llama-3.1-8b", "rtx-pro-6000", 1,
                                                                            max_num_batched_tokens=2048))
    print(f"trace: {trace.label}, {len(trace):,} requests; roofline: {roofline.name} [{roofline.kind}]; "
          f"plain: {plain.name}; KV blocks per replica {cfg.kv_blocks_effective:,}")
    wb.simulate(trace.head(20_000), cfg, latency=roofline)   # warm-up (compilation)
    wb.simulate(trace.head(20_000), cfg, latency=plain)

    def median_rps(tr, latency):
        rates = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            wb.simulate(tr, cfg, latency=latency)
            rates.append(len(tr) / (time.perf_counter() - t0))
        return statistics.median(rates)

    for label, scaling in (("bounded", args.bounded_scaling), ("overload", args.overload_scaling)):
        tr = trace.time_scaled(scaling)
        fast, base = median_rps(tr, roofline), median_rps(tr, plain)
        print(f"{label:>8} (x{scaling:g}): roofline {fast:,.0f} simulated requests/s, plain linear model "
              f"{base:,.0f}/s (ratio {fast / base:.2f})")


if __name__ == "__main__":
    main()
