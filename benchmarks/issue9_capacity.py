"""Issue 9 item 3: capacity of multi_bin_fixed (K=4, SLA 1 s, 1 GPU) on the default trace.

Usage: python benchmarks/issue9_capacity.py NUM_REQUESTS ATTAINMENT BATCH_SIZE; printed, never asserted."""
import sys, logging, time
import workbench as wb
from workbench.study.runs.capacity import capacity
n = int(sys.argv[1]); target = float(sys.argv[2])
trace = wb.load_trace(num_requests=n, rps_scaling=200)
cfg = wb.SimConfig(scheduler="multi_bin_fixed", num_gpus=1, k_bins=4, batch_size=int(sys.argv[3]), d_sla_s=1.0)
t = time.time()
try:
    r = capacity(trace, cfg, attainment=target, resolution=0.02)
    print(f"capacity multi_bin_fixed B={cfg.batch_size} target {target}: {r.capacity_rps:.3f} rps (x{r.scaling:.4f}), "
          f"attainment there {r.value:.3f}, monotone {r.monotone}, attainable {r.attainable:.3f}, "
          f"region_low {getattr(r, 'scaling_region_low', 'n/a')}, {len(r.probes)} probes, {time.time()-t:.1f}s")
    print("  probes:", sorted((round(p.scaling, 4), round(p.value, 3)) for p in r.probes))
except Exception as e:
    print("capacity error:", e)
