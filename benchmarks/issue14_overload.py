"""Issue 14's overload scenario, as far as the shipped data allows; prints figures (never asserted).

    python benchmarks/issue14_overload.py

The Azure conversation trace at its own rate (19,366 requests over an hour, 5.5 req/s) and at 6x, on one
replica with vLLM v0.2 limits: 128 sequences, 4,096 batched tokens, 3,328 KV blocks of 16 tokens,
``chunked_prefill=False``.  The issue's setup is Llama-2-70B with tensor parallelism 2 on A100s; no shipped
step profile has that model (BLIS's A100 entries are other models), so DistServe's OPT-66B profile at TP 2
on A100 stands in: a model of the same size on the same GPUs.  Printed: requests completed, rejected up front,
dropped after a preemption (vLLM v0.2 ignores them), preemptions, and mean E2E / TTFT / TPOT.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import workbench as wb
    from workbench.sim.profiles import distserve_profile

    step = distserve_profile(model="facebook/opt-66b", tp=2)
    trace = wb.load_trace("azure_conv", use_real_timestamps=True)
    cfg = wb.SimConfig(scheduler="continuous_fcfs", max_num_seqs=128, max_num_batched_tokens=4096, kv_blocks=3328,
                       block_size=16, chunked_prefill=False)
    print(f"{trace.label}; {step.name}; {cfg.max_num_seqs} seqs, {cfg.max_num_batched_tokens} batched tokens, "
          f"{cfg.kv_blocks} blocks of {cfg.block_size} (watermark {cfg.kv_watermark_blocks} blocks)")
    print(f"{'rate':>6} {'completed':>10} {'rejected':>9} {'dropped':>8} {'preemptions':>12} {'preempted':>10} "
          f"{'E2E mean s':>11} {'TTFT mean s':>12} {'TPOT mean ms':>13}")
    for scale in (1.0, 6.0):
        s = wb.simulate(trace.time_scaled(scale), cfg, latency=step).summary
        print(f"{scale:>5g}x {s['completed']:>10,} {s['rejected'] - s['dropped']:>9,} {s['dropped']:>8,} "
              f"{s['preemptions_total']:>12,} {s['requests_preempted']:>10,} {s['e2e_mean_s']:>11,.1f} "
              f"{s['ttft_mean_s']:>12,.1f} {s['tpot_mean_s'] * 1e3:>13.1f}")


if __name__ == "__main__":
    main()
