"""The disaggregated engine (workbench/sim/disagg_engine.py): hand-computed cases, the step-by-step replay as an
independent reference (exact decisions), invariants, the config and latency arguments, JIT equivalence."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import workbench as wb
from workbench.sim import disagg
from workbench.sim.disagg_steplog import DisaggSettings, replay_disagg

# seconds: prefill 0.01 + 0.001 x tokens; decode 0.02 + 1e-4 x context + 1e-3 x requests (one regime)
PREFILL = (0.01, 0.001, 0.0)
DECODE = (0.02, 1e-4, 1e-3)
STEP = wb.StepTimeModel(prefill=PREFILL, decode=DECODE)
# 1000 bytes of KV per token over 8 Gbit/s (1e9 bytes/s) after a 1 ms latency: 100 tokens move in 1.1 ms
HAND = dict(scheduler="disaggregated", model_mem_gb=1.0, kv_gb_per_token=1e-6, gpu_mem_gb=10.0,
            gpu_memory_utilization=1.0, mem_margin_gb=0.0, kv_link_gbps=8.0, kv_link_latency_s=0.001,
            ttft_sla_s=1.0, tpot_sla_s=0.5)


def decode_s(n, ctx):
    return DECODE[0] + DECODE[1] * ctx + DECODE[2] * n


def xfer_s(prompt):
    return 0.001 + prompt * 1000 / 1e9


def sim(arrival, prompt, output, **fields):
    trace = wb.Trace.from_arrays(np.asarray(arrival, float), np.asarray(prompt), np.asarray(output))
    return wb.simulate(trace, wb.SimConfig(**{**HAND, **fields}), latency=STEP)


# ------------------------------------------------------------------ hand-computed cases
def test_one_request_prefill_transfer_decode_by_hand():
    res = sim([0.0], [100], [3])
    r = res.requests.iloc[0]
    prefill = 0.01 + 0.001 * 100                 # 0.11 s: the first token
    launch = prefill + xfer_s(100)               # the KV moves, then the decode instance launches
    end = launch + decode_s(1, 101) + decode_s(1, 102)   # tokens 2 and 3, contexts prompt + generated
    assert r.ttft_s == pytest.approx(prefill, rel=1e-12)
    assert r.kv_transfer_s == pytest.approx(xfer_s(100), rel=1e-12)
    assert r.decode_queue_s == pytest.approx(0.0, abs=1e-12)
    assert r.e2e_s == pytest.approx(end, rel=1e-12)
    assert r.tpot_s == pytest.approx((end - prefill) / 2, rel=1e-12)
    assert r.queue_s == 0 and r.preemptions == 0 and r.prefill_instance == 0 and r.decode_instance == 0


def test_two_requests_share_a_prefill_step_and_queue_for_the_link():
    res = sim([0.0, 0.0], [100, 50], [2, 2])
    a, b = res.requests.iloc[0], res.requests.iloc[1]
    first = 0.01 + 0.001 * 150                   # one prefill step of both prompts
    assert a.ttft_s == pytest.approx(first) and b.ttft_s == pytest.approx(first)
    moved = first + xfer_s(100) + xfer_s(50)     # transfers one at a time (R6), the launch waits for both
    end = moved + decode_s(2, 101 + 51)          # one decode step of both: their second and last token
    assert a.e2e_s == pytest.approx(end, rel=1e-12) and b.e2e_s == pytest.approx(end, rel=1e-12)
    assert a.decode_queue_s == pytest.approx(xfer_s(50), rel=1e-9)    # waited for B's transfer
    assert b.decode_queue_s == pytest.approx(xfer_s(100), rel=1e-9)   # waited for A's
    assert res.summary["prefill_steps"] == 1 and res.summary["decode_steps"] == 1


def test_a_decode_instance_out_of_blocks_swaps_out_the_latest_and_brings_it_back():
    # blocks of 4 tokens, 6 blocks; A and B (prompt 8, 9 tokens out) each need 4 blocks at their last step
    res = sim([0.0, 0.0], [8, 8], [9, 9], block_size=4, decode_kv_blocks=6, decode_waiting_block_fraction=1.0)
    a, b = res.requests.iloc[0], res.requests.iloc[1]
    launch = (0.01 + 0.001 * 16) + xfer_s(8) + xfer_s(8)
    # together for 4 steps (contexts 9..12 each); the 5th needs a block each, 8 > 6: B (admitted last) is
    # swapped out with 5 tokens; A runs alone for steps 5..8 (contexts 13..16) and finishes
    a_end = launch + sum(decode_s(2, 2 * c) for c in range(9, 13)) + sum(decode_s(1, c) for c in range(13, 17))
    # B comes back when A's blocks are freed (4 blocks fit) and runs its last 4 steps (contexts 13..16)
    b_end = a_end + sum(decode_s(1, c) for c in range(13, 17))
    assert a.e2e_s == pytest.approx(a_end, rel=1e-12)
    assert b.e2e_s == pytest.approx(b_end, rel=1e-12)
    assert (a.preemptions, b.preemptions) == (0, 1)
    assert res.summary["preemptions_total"] == 1


def test_pipelined_decode_two_micro_batches_by_hand():
    o = 0.004   # the part of a step every stage repeats
    step = wb.StepTimeModel(prefill=PREFILL, decode=DECODE, pipeline_overhead_s=o)
    trace = wb.Trace.from_arrays(np.zeros(2), np.array([100, 100]), np.array([3, 3]))
    res = wb.simulate(trace, wb.SimConfig(**HAND, decode_pp=2), latency=step)
    a, b = res.requests.iloc[0], res.requests.iloc[1]

    def tau(ctx):   # a stage: (step - o) / 2 + o
        return (decode_s(1, ctx) - o) / 2 + o

    t0 = (0.01 + 0.001 * 200) + 2 * xfer_s(100)
    t1, t2 = tau(101), tau(102)
    # A in micro-batch 0, B in micro-batch 1 (balanced); each passes stage 0 then stage 1, stages in launch order
    assert a.e2e_s == pytest.approx(t0 + 2 * t1 + 2 * t2, rel=1e-12)   # A's 2nd step follows its first
    assert b.e2e_s == pytest.approx(t0 + 2 * t1 + 3 * t2, rel=1e-12)   # B's waits for A's on stage 0
    assert res.config.num_gpus == 1 + 2    # a prefill GPU and a 2-stage decode instance
    assert res.summary["decode_steps"] == 4


def test_unmoved_kv_fills_the_prefill_instance_and_holds_back_new_prompts():
    # the prefill instance holds 8 blocks of 16 tokens: A's prompt (100 tokens, 7 blocks) stays until moved,
    # so B (40 tokens, 3 blocks) waits although it arrived while the prefill instance was idle
    res = sim([0.0, 0.2], [100, 40], [2, 2], prefill_kv_blocks=8, kv_link_gbps=8e-3, kv_link_latency_s=0.0)
    a, b = res.requests.iloc[0], res.requests.iloc[1]
    moved = 0.11 + 100 * 1000 / 1e6              # 0.1 s on a 1 MB/s link
    assert a.kv_transfer_s == pytest.approx(0.1)
    assert b.queue_s == pytest.approx(moved - 0.2, rel=1e-9)        # B's prefill starts when A's KV has left
    assert b.ttft_s == pytest.approx(moved + 0.01 + 0.04 - 0.2, rel=1e-9)


def test_rejections_name_their_reason_and_nothing_is_lost():
    # the 9000-token prompt never reaches decode (one output token): only the prefill budget rejects it
    res = sim([0.0, 0.1, 0.2], [10, 9000, 60], [5, 1, 40], block_size=16, decode_kv_blocks=5)
    status = list(res.requests.status.astype(str))
    assert status[0] == "completed"
    assert status[1].startswith("rejected: prompt exceeds")          # over prefill_max_tokens (8192)
    assert status[2].startswith("rejected: prompt+output")           # 99 tokens > 5 blocks of 16
    assert res.summary["completed"] == 1 and res.summary["rejected"] == 2


def test_routers_round_robin_and_least_outstanding():
    arrival = [0.0, 0.001, 0.002, 0.003]
    rr = sim(arrival, [50] * 4, [2] * 4, prefill_replicas=2, decode_replicas=2, prefill_router="round_robin",
             decode_router="round_robin").requests
    assert list(rr.prefill_instance) == [0, 1, 0, 1]
    # a long prompt keeps instance 0 busy (0.51 s); the short one on instance 1 is prefilled at 0.03 s, so at
    # 0.05 s instance 1 has nothing outstanding: least_outstanding sends the third there, round robin to 0
    args = ([0.0, 0.0, 0.05], [500, 20, 20], [2, 2, 2])
    lo = sim(*args, prefill_replicas=2, prefill_router="least_outstanding").requests
    assert list(lo.prefill_instance) == [0, 1, 1]
    assert list(sim(*args, prefill_replicas=2, prefill_router="round_robin").requests.prefill_instance) == [0, 1, 0]


# ------------------------------------------------------------------ the engine against the step-by-step replay
def random_settings(rng):
    bs = int(rng.choice([1, 2, 3, 4, 8, 16]))
    return DisaggSettings(
        prefill_replicas=int(rng.integers(1, 3)), decode_replicas=int(rng.integers(1, 3)),
        decode_pp=int(rng.choice([1, 1, 2, 3])), block_size=bs,
        prefill_kv_blocks=int(rng.integers(200 // bs + 1, 2000 // bs + 2)),
        decode_kv_blocks=int(rng.integers(300 // bs + 1, 3000 // bs + 2)),
        prefill_max_batch_size=int(rng.integers(1, 8)), prefill_max_tokens=int(rng.integers(200, 800)),
        decode_max_batch_size=int(rng.integers(1, 20)), decode_waiting_block_fraction=float(rng.uniform(0.01, 1)),
        prefill_router=int(rng.integers(0, 2)), decode_router=int(rng.integers(0, 2)),
        kv_link_latency_s=float(rng.uniform(0, 0.002)), kv_link_bytes_per_s=float(rng.uniform(1e8, 1e10)),
        kv_bytes_per_token=1e5, pipeline_overhead_s=float(rng.uniform(0, 0.005)),
        prefill_coef=(0.01, 1e-4 * rng.uniform(0.5, 2), 1e-7),
        decode_coef=(0.005, 1e-6 * rng.uniform(0.5, 2), 1e-4, 0.004, 2e-6, 2e-4, int(rng.integers(1, 10))),
        arrival_overhead_s=(0.001, float(rng.choice([0.0, 1e-5]))))


def assert_engine_matches_replay(arrival, prompt, output, s: DisaggSettings):
    """The compiled engine, with and without series of decode steps, takes the replay's decisions at its times;
    returns the replay's log."""
    ref = replay_disagg(arrival, prompt, output, s)
    for jumps in (True, False):
        rec = disagg.run_engine(arrival, prompt, output, s, jumps=jumps)
        for key in ("prefill_start_s", "first_token_s", "transfer_end_s", "decode_start_s", "finish_s"):
            got, want = rec[key], getattr(ref, key)
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=key)
            np.testing.assert_allclose(got[~np.isnan(got)], want[~np.isnan(want)], rtol=1e-9, atol=1e-12, err_msg=key)
        np.testing.assert_array_equal(rec["swaps"], ref.swaps)
        np.testing.assert_array_equal(rec["prefill_instance"], ref.prefill_instance)
        np.testing.assert_array_equal(rec["decode_instance"], ref.decode_instance)
        np.testing.assert_allclose(rec["decode_busy_s"], ref.decode_busy_s, rtol=1e-9)
        np.testing.assert_allclose(rec["prefill_busy_s"], ref.prefill_busy_s, rtol=1e-12)
    return ref


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 120), span=st.floats(0.05, 3.0))
def test_engine_matches_the_replay_exactly(seed, n, span):
    rng = np.random.default_rng(seed)
    arrival = np.sort(rng.uniform(0, span, n))
    prompt, output = rng.integers(1, 200, n), rng.integers(1, 80, n)
    assert_engine_matches_replay(arrival, prompt, output, random_settings(rng))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 150))
def test_invariants(seed, n):
    rng = np.random.default_rng(seed)
    arrival = np.sort(rng.uniform(0, rng.uniform(0.1, 5), n))
    prompt, output = rng.integers(1, 300, n), rng.integers(1, 120, n)
    s = random_settings(rng)
    rec = disagg.run_engine(arrival, prompt, output, s)
    served = rec["reason"] == 0
    # conservation: every accepted request finishes once, a rejected one never starts
    assert np.all(~np.isnan(rec["finish_s"][served])) and np.all(np.isnan(rec["prefill_start_s"][~served]))
    entry = rec["entry_s"][served]
    # time never runs backwards along a request's life
    chain = [entry, rec["prefill_start_s"][served], rec["first_token_s"][served]]
    for early, late in zip(chain, chain[1:]):
        assert np.all(late >= early - 1e-12)
    moved = served & (output > 1)
    assert np.all(rec["transfer_end_s"][moved] > rec["first_token_s"][moved])
    assert np.all(rec["decode_start_s"][moved] >= rec["transfer_end_s"][moved] - 1e-12)
    assert np.all(rec["finish_s"][moved] > rec["decode_start_s"][moved])
    one = served & (output == 1)
    assert np.all(rec["finish_s"][one] == rec["first_token_s"][one]) and np.all(np.isnan(rec["transfer_end_s"][one]))
    # a transfer lasts latency + bytes / bandwidth
    np.testing.assert_allclose(rec["transfer_end_s"][moved] - rec["transfer_end_s"][moved]
                               + [s.transfer_s(p) for p in prompt[moved]], [s.transfer_s(p) for p in prompt[moved]])
    # the stages are never busier than the run is long; KV integrals are within capacity
    end = np.nanmax(rec["finish_s"]) if served.any() else 0.0
    assert np.all(rec["decode_busy_s"] <= end + 1e-9) and np.all(rec["prefill_busy_s"] <= end + 1e-9)
    assert np.all(rec["decode_block_seconds"] <= s.decode_kv_blocks * end + 1e-6)
    assert np.all(rec["prefill_block_seconds"] <= s.prefill_kv_blocks * end + 1e-6)
    assert np.all(rec["swaps"] >= 0)


# ------------------------------------------------------------------ simulate(): results, metrics, latency argument
def test_simulate_reports_pools_and_keeps_the_published_columns(small_trace):
    cfg = wb.SimConfig(scheduler="disaggregated", prefill_replicas=2, decode_replicas=2, model="opt-13b",
                       gpu_mem_gb=85.0, gpu_memory_utilization=0.95, mem_margin_gb=0.85)
    res = wb.simulate(small_trace, cfg, latency="opt-13b-a100-distserve")
    req = res.requests
    for column in ("ttft_s", "tpot_s", "e2e_s", "queue_s", "preemptions", "kv_transfer_s", "decode_queue_s",
                   "prefill_instance", "decode_instance"):
        assert column in req
    s = res.summary
    for key in ("prefill_utilization_mean", "decode_utilization_mean", "gpu_utilization_mean",
                "prefill_kv_utilization_mean", "decode_kv_utilization_mean", "kv_utilization_mean"):
        assert 0 <= s[key] <= 1, key
    assert s["completed"] + s["rejected"] == len(small_trace)
    assert s["kv_transfer_mean_s"] == pytest.approx(np.nanmean(req.kv_transfer_s))
    np.testing.assert_allclose(req.kv_transfer_s[req.output_tokens > 1].dropna(),
                               cfg.kv_transfer_s(req.prompt_tokens[req.output_tokens > 1].dropna()), rtol=1e-12)
    assert res.config.num_gpus == 4 and s["num_gpus"] == 4
    # more decode instances: decode waits no longer (same arrivals, same prefill)
    more = wb.simulate(small_trace, cfg.replace(decode_replicas=4), latency="opt-13b-a100-distserve")
    assert more.summary["decode_queue_mean_s"] <= s["decode_queue_mean_s"] + 1e-9


def test_latency_forms_agree():
    from workbench.sim import profiles

    cfg = wb.SimConfig(**HAND, prefill_tp=2)
    by_name = disagg.pool_models("opt-13b-a100-distserve", cfg)
    assert by_name[0] == profiles.get_profile("opt-13b-a100-distserve", tp=2)
    assert by_name[1] == profiles.get_profile("opt-13b-a100-distserve", tp=1)
    assert disagg.pool_models({"prefill": "opt-13b-a100-distserve", "decode": STEP}, cfg) == (by_name[0], STEP)
    assert disagg.pool_models(STEP, cfg) == (STEP, STEP)
    assert disagg.pool_models(None, cfg) == by_name
    with pytest.raises(ValueError, match="unknown key"):
        disagg.pool_models({"prefill": STEP, "decode": STEP, "link": 1}, cfg)
    with pytest.raises(ValueError, match="missing"):
        disagg.pool_models({"prefill": STEP}, cfg)
    with pytest.raises(ValueError, match="no entry at tp=8"):
        disagg.pool_models("opt-13b-a100-distserve", cfg.replace(prefill_tp=8))


def test_pipeline_overhead_of_the_distserve_profile_is_the_fixed_cost_that_does_not_shrink_with_tp():
    from workbench.sim import profiles

    m = profiles.get_profile("opt-13b-a100-distserve")
    a = {tp: profiles.get_profile("opt-13b-a100-distserve", tp=tp).decode[0] for tp in (1, 2, 4)}
    # by hand: least squares of a(tp) = o + k / tp over tp 1, 2, 4
    x = np.array([1, 0.5, 0.25])
    y = np.array([a[1], a[2], a[4]])
    k = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
    assert m.pipeline_overhead_s == pytest.approx(y.mean() - k * x.mean(), rel=1e-12)
    assert 0.006 < m.pipeline_overhead_s < 0.008 and 0.012 < k < 0.014   # ~7 ms; 25.7 GB at ~2 TB/s
    assert profiles.get_profile("opt-13b-a100").pipeline_overhead_s == 0.0   # vLLM's: a grows with TP


# ------------------------------------------------------------------ the config
def test_num_gpus_is_derived_and_a_conflicting_value_refused():
    cfg = wb.SimConfig(scheduler="disaggregated", prefill_replicas=2, prefill_tp=2, decode_replicas=3, decode_tp=1,
                       decode_pp=2, model="opt-13b", gpu_mem_gb=85.0, gpu_memory_utilization=0.95, mem_margin_gb=0.85)
    assert cfg.num_gpus == 2 * 2 + 3 * 1 * 2
    assert wb.SimConfig(**{**cfg.to_dict(), "num_gpus": 10}).num_gpus == 10   # the same value is fine
    with pytest.raises(ValueError, match="num_gpus: a disaggregated deployment has .* = 10 GPUs, got num_gpus=4"):
        cfg.replace(num_gpus=4)
    assert cfg.replace(decode_pp=1).num_gpus == 7          # replace derives it again
    assert wb.SimConfig().num_gpus == 1 and wb.SimConfig(num_gpus=3).replace(k_bins=2).num_gpus == 3


@pytest.mark.parametrize("field, value, message", [
    ("prefill_tp", 0, "prefill_tp: must be an integer >= 1"),
    ("decode_pp", 1.5, "decode_pp: must be an integer >= 1"),
    ("prefill_router", "least_kv", "prefill_router: unknown 'least_kv'; allowed: round_robin, least_outstanding"),
    ("decode_router", "random", "decode_router: unknown"),
    ("kv_link_gbps", 0.0, "kv_link_gbps: must be > 0 Gbit/s, got 0.0"),
    ("kv_link_latency_s", -1.0, "kv_link_latency_s: must be >= 0 s, got -1.0"),
    ("decode_waiting_block_fraction", 1.5, "decode_waiting_block_fraction: a share"),
    ("decode_kv_blocks", 0, "decode_kv_blocks: must be an integer >= 1, or None"),
    ("prefill_max_tokens", 0, "prefill_max_tokens: must be an integer >= 1"),
])
def test_bad_fields_are_named(field, value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        wb.SimConfig(**{**HAND, field: value})


@pytest.mark.parametrize("field, value, fix", [
    ("prefix_caching", True, "no prefix cache"),
    ("chunked_prefill", True, "no chunks, no mixed steps"),
    ("kv_watermark", 0.01, "decode_waiting_block_fraction"),
    ("max_paddings", 0, "prefill_max_batch_size and prefill_max_tokens"),
    ("router", "least_kv", "prefill_router and prefilled requests with decode_router"),
    ("router", "prefix_affinity", "prefill_router and prefilled requests with decode_router"),
])
def test_continuous_engine_settings_are_refused_never_ignored(field, value, fix):
    # issue 14's prefix cache, vLLM watermark and padding limit, the v1 switch and the colocated routers have no
    # meaning for DistServe's engine: refused by name with the fix, never run as if they were not there
    pattern = (re.escape(f"{field}: {value!r} is a setting of the continuous engine; ") + ".*" + re.escape(fix)
               + ".*" + re.escape(f"Leave {field} at its default (") + ".*"
               + re.escape(") for scheduler='disaggregated', or choose a continuous_* scheduler"))
    with pytest.raises(ValueError, match="^" + pattern):
        wb.SimConfig(**{**HAND, field: value})
    # the defaults, given explicitly (as a setup file or papermill text may), are fine
    defaults = dict(prefix_caching="false", chunked_prefill=False, kv_watermark=None, max_paddings=256,
                    router="round_robin")
    assert wb.SimConfig(**HAND, **defaults) == wb.SimConfig(**HAND)


def test_best_placement_refuses_a_base_config_the_disaggregated_engine_cannot_honour():
    trace = wb.Trace.from_arrays([0.0, 0.5], [100, 100], [4, 4])
    base = wb.SimConfig(**{k: v for k, v in HAND.items() if k != "scheduler"}, scheduler="continuous_fcfs",
                        prefix_caching=True)
    with pytest.raises(ValueError, match=r"^base_config: prefix_caching: True is a setting of the continuous engine"):
        wb.best_placement(trace, 2, profile=STEP, base_config=base)


def test_an_instance_without_memory_for_the_model_is_refused():
    with pytest.raises(ValueError, match=r"prefill_tp: a prefill instance of 1 GPU.* no memory left"):
        wb.SimConfig(scheduler="disaggregated", model="opt-13b", gpu_mem_gb=16.0)
    with pytest.raises(ValueError, match=r"decode_tp: a decode instance of 1 GPU.* no memory left"):
        wb.SimConfig(scheduler="disaggregated", model="opt-13b", gpu_mem_gb=16.0, prefill_tp=4)
    cfg = wb.SimConfig(scheduler="disaggregated", model="opt-13b", gpu_mem_gb=16.0, prefill_tp=4, decode_tp=2,
                       decode_pp=2, gpu_memory_utilization=0.9, mem_margin_gb=1.0)  # weights over more GPUs leave room
    # instance KV by hand: 4 x (16 x 0.9 - 1) - 25.7 GB over 819,200 bytes per token
    assert cfg.prefill_kv_blocks_effective == math.floor((4 * (16 * 0.9 - 1) - 25.7) / 8.192e-4 * (1 + 1e-12)) // 16
    assert cfg.decode_kv_blocks_effective == cfg.prefill_kv_blocks_effective


# ------------------------------------------------------------------ NUMBA_DISABLE_JIT gives the same results
JIT_SCRIPT = r"""
import json, numpy as np
import workbench as wb
trace = wb.load_trace(num_requests=3000)
cfg = wb.SimConfig(scheduler="disaggregated", prefill_replicas=2, decode_replicas=2, decode_pp=2, model="opt-13b",
                   gpu_mem_gb=40.0, gpu_memory_utilization=0.95, mem_margin_gb=0.85)
out = {}
for name, c in (("pp2", cfg), ("pp1", cfg.replace(decode_pp=1, decode_replicas=1, decode_kv_blocks=300))):
    res = wb.simulate(trace.time_scaled(0.5), c, latency="opt-13b-a100-distserve")
    req = res.requests
    out[name] = {k: [None if v != v else v for v in req[k].tolist()] for k in ("ttft_s", "e2e_s", "preemptions",
                                                                              "decode_instance")}
print(json.dumps(out))
"""


def test_jit_and_python_agree():
    from conftest import run_script_json

    fast = run_script_json(JIT_SCRIPT, disable_jit=False)
    slow = run_script_json(JIT_SCRIPT, disable_jit=True)
    for name in fast:
        for key in fast[name]:
            a = np.array(fast[name][key], dtype=float)
            b = np.array(slow[name][key], dtype=float)
            np.testing.assert_allclose(a, b, rtol=1e-12, equal_nan=True, err_msg=f"{name} {key}")
    assert max(fast["pp1"]["preemptions"]) > 0        # the memory-bound case does swap


@pytest.mark.parametrize("field, value", [("max_num_seqs", 8), ("max_num_batched_tokens", 4096), ("kv_blocks", 100)])
def test_the_continuous_engines_limits_are_refused_for_the_pools_which_have_their_own(field, value):
    with pytest.raises(ValueError, match=rf"^{field}: .*continuous engine.*(prefill_|decode_)"):
        wb.SimConfig(scheduler="disaggregated", **{field: value})
