"""Issue 9 items 1-2 figures: per-bin GPU share and mean batch, req/s of three schedulers, b_mem with the real KV size.

Usage: python benchmarks/issue9_figures.py [num_requests] [--cap] [--seedmem]; printed, never asserted."""
import sys, time, logging
import numpy as np
import workbench as wb
from workbench.study.runs.capacity import capacity

n = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
trace = wb.load_trace(num_requests=n, rps_scaling=200)
print(f"trace: {len(trace)} requests, mean rate {trace.mean_rate_rps:.3f} rps")
def per_bin(res):
    b = res.batches
    busy = b.groupby("bin")["service_s"].sum()
    share = busy / busy.sum()
    mean_b = b.groupby("bin")["size"].mean()
    return ", ".join(f"bin{j}: {share[j]:.0%} GPU, mean batch {mean_b[j]:.1f}" for j in share.index)
for name, kw in [("multi_bin_dynamic", {}), ("static_fifo", dict(batch_size=32)),
                 ("multi_bin_fixed", dict(batch_size=32))]:
    cfg = wb.SimConfig(scheduler=name, num_gpus=1, k_bins=4, d_sla_s=1.0, **kw)
    t = time.time(); res = wb.simulate(trace, cfg, latency="seed-grid"); s = res.summary
    print(f"{name:18s} thr {s['throughput_rps']:.2f} rps, viol {s['sla_violation_rate']:.3f}, "
          f"mean batch {s['batch_size_mean']:.2f}  [{per_bin(res)}]  ({time.time()-t:.1f}s)")
    print(f"   kv_capacity_tokens {cfg.kv_capacity_tokens}, max batch tokens {res.batches['tokens'].max()}")
# b_mem with the real KV size (1.15e-4 GB/token on 16 GB, 4 GB weights)
for label, extra in []:
    try:
        cfg = wb.SimConfig(scheduler="multi_bin_dynamic", num_gpus=1, k_bins=4, **extra)
    except Exception as e:
        print(label, "error", e); continue
    res = wb.simulate(trace, cfg, latency="seed-grid"); b = res.batches
    print(f"{label}: capacity {cfg.kv_capacity_tokens} tokens, thr {res.summary['throughput_rps']:.2f}, "
          f"max batch tokens {b['tokens'].max()}, limits by bin {b.groupby('bin')['size_limit'].mean().round(1).to_dict()}")
if "--cap" in sys.argv:
    logging.basicConfig(level=logging.WARNING)
    cfg = wb.SimConfig(scheduler="multi_bin_fixed", num_gpus=1, k_bins=4, batch_size=8, d_sla_s=1.0)
    try:
        r = capacity(trace, cfg, attainment=0.9, resolution=0.02)
        print(f"capacity multi_bin_fixed B=8: {r.capacity_rps:.3f} rps (x{r.scaling:.3f}), value {r.value:.3f}, "
              f"monotone {r.monotone}, attainable {r.attainable:.3f}, probes {[(round(p.scaling,3), round(p.value,3)) for p in r.probes]}")
    except Exception as e:
        print("capacity error:", e)
if "--seedmem" in sys.argv:
    from workbench.sim.memory import SEED_MEMORY
    for name, kw in [("multi_bin_dynamic", {}), ("static_fifo", dict(batch_size=32))]:
        res = wb.simulate(trace, wb.SimConfig(scheduler=name, num_gpus=1, k_bins=4, d_sla_s=1.0, **SEED_MEMORY, **kw), latency="seed-grid")
        s = res.summary
        print(f"seed memory: {name:18s} thr {s['throughput_rps']:.2f} rps, mean batch {s['batch_size_mean']:.2f} [{per_bin(res)}]")
    res = wb.simulate(trace, wb.SimConfig(scheduler="multi_bin_dynamic", num_gpus=1, k_bins=4), latency="seed-grid")
    b = res.batches
    print("default memory: size_limit < 31 in", f"{(b['size_limit'] < 31).mean():.1%}", "of batches; mean limit by bin",
          b.groupby("bin")["size_limit"].mean().round(1).to_dict())
    print({k: round(v, 3) for k, v in res.summary.items() if k.startswith("bin3_") or k == "offered_rps"})
