"""Issue 14's overload scenario: Azure conversation trace, vLLM v0.2 limits (128 seqs, 4096 batched tokens,
3328 blocks of 16), OPT-66B TP2 A100 (DistServe profile; stand-in for Llama-2-70B TP2, absent from the data)."""
import json, sys
import workbench as wb
from workbench.sim.profiles import distserve_profile
step = distserve_profile(model="facebook/opt-66b", tp=2)
tr = wb.load_trace("azure_conv", use_real_timestamps=True)
out = {}
for scale in (1.0, 6.0):
    t = tr.time_scaled(scale)
    cfg = wb.SimConfig(scheduler="continuous_fcfs", max_num_seqs=128, max_num_batched_tokens=4096, kv_blocks=3328,
                       block_size=16, chunked_prefill=False)
    r = wb.simulate(t, cfg, latency=step)
    s = r.summary
    out[f"x{scale:g}"] = {k: s[k] for k in ("completed", "rejected", "dropped", "preemptions_total", "requests_preempted",
                                              "e2e_mean_s", "ttft_mean_s", "tpot_mean_s")}
print(json.dumps(out, indent=1))
