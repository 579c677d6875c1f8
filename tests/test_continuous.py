"""The continuous-batching engine: hand-computed cases, an independent reference, invariants."""

import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import workbench as wb
from workbench.sim.metrics import STATUS_REJECTED_BUDGET, STATUS_REJECTED_KV

sys.path.insert(0, os.path.dirname(__file__))
from continuous_reference import reference  # noqa: E402
from conftest import run_script_json

CONTINUOUS = ("continuous_fcfs", "continuous_sla", "continuous_multi_bin")


def trace_of(arrival_s, prompt, output):
    return wb.Trace.from_arrays(np.asarray(arrival_s, float), np.asarray(prompt), np.asarray(output), source="test")


def cfg_of(**kw):
    return wb.SimConfig(scheduler=kw.pop("scheduler", "continuous_fcfs"), **kw)


def random_trace(n, seed, rate=40.0, max_prompt=300, mean_out=20):
    rng = np.random.default_rng(seed)
    arrival = np.cumsum(rng.exponential(1 / rate, n))
    prompt = rng.integers(1, max_prompt, n)
    output = rng.geometric(1 / mean_out, n)
    return trace_of(arrival - arrival[0], prompt, output)


# ---------------------------------------------------------------- hand-computed cases
def test_one_request_alone():
    step = wb.StepTimeModel(prefill=(0.01, 1e-4, 1e-7), decode=(0.005, 1e-6, 2e-4))
    res = wb.simulate(trace_of([0.0], [100], [5]), cfg_of(), latency=step)
    row = res.requests.iloc[0]
    prefill = 0.01 + 1e-4 * 100 + 1e-7 * 100 ** 2
    decodes = [0.005 + 1e-6 * ctx + 2e-4 for ctx in (101, 102, 103, 104)]
    assert row.ttft_s == pytest.approx(prefill, rel=1e-12)
    assert row.e2e_s == pytest.approx(prefill + sum(decodes), rel=1e-12)
    assert row.tpot_s == pytest.approx(sum(decodes) / 4, rel=1e-12)
    assert row.queue_s == 0 and row.preemptions == 0 and row.met_sla
    assert row.latency_s == pytest.approx(row.e2e_s, rel=1e-12)
    # one prefill step and four decode steps, the decodes in one run
    assert res.summary["engine_steps"] == 5
    assert list(res.steps["steps"]) == [1, 4]


def test_one_token_output_finishes_at_its_prefill_and_has_no_tpot():
    step = wb.StepTimeModel(prefill=(0.01, 1e-3, 0), decode=(0.005, 0, 0))
    row = wb.simulate(trace_of([0.0], [10], [1]), cfg_of(), latency=step).requests.iloc[0]
    assert row.ttft_s == pytest.approx(0.02) and row.e2e_s == pytest.approx(0.02) and np.isnan(row.tpot_s)


STEP2 = wb.StepTimeModel(prefill=(0.01, 0.001, 0.0), decode=(0.002, 0.0, 0.001))


def test_two_requests_share_decode_steps_unchunked():
    # A: prompt 10, 3 tokens at t=0; B: prompt 20, 2 tokens at t=0.001.
    # 0-0.02 prefill A | 0.02-0.05 prefill B (prefills first) | 0.05-0.054 decode A,B (B done)
    # | 0.054-0.057 decode A (done)
    res = wb.simulate(trace_of([0.0, 0.001], [10, 20], [3, 2]), cfg_of(), latency=STEP2)
    r = res.requests
    np.testing.assert_allclose(r.ttft_s, [0.02, 0.049], rtol=1e-12)
    np.testing.assert_allclose(r.e2e_s, [0.057, 0.053], rtol=1e-12)
    np.testing.assert_allclose(r.queue_s, [0.0, 0.019], rtol=1e-12)
    np.testing.assert_allclose(r.tpot_s, [(0.057 - 0.02) / 2, 0.004], rtol=1e-12)


def test_chunked_prefill_mixes_decodes_and_prompt_in_one_step():
    # same input, v1: 0-0.02 prefill A | 0.02-0.051 decode A + prefill B, fixed cost max(0.01, 0.002)
    # | 0.051-0.055 decode A, B (both done)
    res = wb.simulate(trace_of([0.0, 0.001], [10, 20], [3, 2]), cfg_of(chunked_prefill=True), latency=STEP2)
    r = res.requests
    np.testing.assert_allclose(r.ttft_s, [0.02, 0.050], rtol=1e-12)
    np.testing.assert_allclose(r.e2e_s, [0.055, 0.054], rtol=1e-12)
    assert list(res.steps["decodes"]) == [0, 1, 2] and list(res.steps["prefill_tokens"]) == [10, 20, 0]


def test_chunked_prefill_splits_a_long_prompt_under_the_token_budget():
    step = wb.StepTimeModel(prefill=(0.01, 0.001, 1e-5), decode=(0.002, 1e-5, 0.0))
    cfg = cfg_of(chunked_prefill=True, max_num_batched_tokens=16, max_num_seqs=4)
    row = wb.simulate(trace_of([0.0], [40], [2]), cfg, latency=step).requests.iloc[0]
    chunks = [(16, 0), (16, 16), (8, 32)]   # (tokens, prefix)
    ttft = sum(0.01 + 0.001 * l + 1e-5 * l * (p + l) for l, p in chunks)
    assert row.ttft_s == pytest.approx(ttft, rel=1e-12)
    assert row.e2e_s == pytest.approx(ttft + 0.002 + 1e-5 * 41, rel=1e-12)
    # without chunking the prompt is longer than the budget: rejected with that reason
    res = wb.simulate(trace_of([0.0], [40], [2]), cfg.replace(chunked_prefill=False), latency=step)
    assert res.status[0] == STATUS_REJECTED_BUDGET and "max_num_batched_tokens" in str(res.requests.status[0])


def test_preemption_sequence():
    # 3 blocks of 4 tokens.  A (prompt 4, 6 tokens) and B (prompt 4, 3 tokens) arrive together.
    # Every time both need a new block for the same decode step, B (admitted last) is preempted,
    # recomputes its prompt in a prefill-only step, and is preempted again: 5 times, until A is done.
    step = wb.StepTimeModel(prefill=(0.01, 0.001, 0.0), decode=(0.002, 0.0, 0.001))
    cfg = cfg_of(block_size=4, kv_blocks=3)
    res = wb.simulate(trace_of([0.0, 0.0], [4, 4], [6, 3]), cfg, latency=step)
    r = res.requests
    assert list(r.preemptions) == [0, 5]
    # A: prefill 0.018, then 5 decode steps alone of 0.003 each, interleaved with B's 4 re-prefills
    # (0.014 each) = 0.018 + 5 * 0.003 + 4 * 0.014 = 0.089; B: re-prefill 0.089-0.103, decodes to 0.109
    np.testing.assert_allclose(r.e2e_s, [0.089, 0.109], rtol=1e-12)
    np.testing.assert_allclose(r.ttft_s, [0.018, 0.018], rtol=1e-12)   # B's first token was already seen
    assert res.summary["preemptions_total"] == 5 and res.summary["requests_preempted"] == 1
    assert res.steps["kv_blocks_used"].max() <= 3


def test_prompt_that_never_fits_is_rejected_with_a_reason():
    step = wb.StepTimeModel(prefill=(0.01, 0.001, 0.0), decode=(0.002, 0.0, 0.001))
    cfg = cfg_of(block_size=4, kv_blocks=3)
    # peak blocks: ceil((13 + 1 - 1) / 4) = 4 > 3; ceil((4 + 9 - 1) / 4) = 3 fits; ceil((4 + 10 - 1) / 4) = 4
    res = wb.simulate(trace_of([0.0, 0.1, 0.2], [13, 4, 4], [1, 9, 10]), cfg, latency=step)
    assert list(res.status) == [STATUS_REJECTED_KV, 0, STATUS_REJECTED_KV]
    assert "KV-cache" in str(res.requests.status[0])
    assert res.summary["rejected"] == 2 and res.summary["completed"] == 1
    assert np.isnan(res.requests.ttft_s[0]) and res.requests.gpu[0] == -1 and not res.requests.met_sla[0]


def test_overheads_delay_joins_and_reported_tokens_not_steps():
    step = wb.StepTimeModel(prefill=(0.01, 0.0, 0.0), decode=(0.002, 0.0, 0.0),
                            arrival_overhead_s=(0.005, 0.001), token_overhead_s=0.0005)
    row = wb.simulate(trace_of([0.0], [10], [3]), cfg_of(), latency=step).requests.iloc[0]
    join = 0.005 + 0.001 * 10
    assert row.queue_s == pytest.approx(join)
    assert row.ttft_s == pytest.approx(join + 0.01 + 0.0005)
    assert row.e2e_s == pytest.approx(join + 0.01 + 2 * 0.002 + 3 * 0.0005)


def test_routers_spread_simultaneous_arrivals():
    step = wb.StepTimeModel(prefill=(0.01, 0.0, 0.0), decode=(0.002, 0.0, 0.0))
    tr = trace_of([0.0] * 4, [10] * 4, [3] * 4)
    for router in ("round_robin", "least_outstanding", "least_kv"):
        res = wb.simulate(tr, cfg_of(num_gpus=2, router=router), latency=step)
        assert sorted(res.requests.gpu) == [0, 0, 1, 1], router


def test_wrong_latency_model_for_the_engine():
    tr = trace_of([0.0], [10], [3])
    with pytest.raises(ValueError, match="StepTimeModel"):
        wb.simulate(tr, cfg_of(), latency=wb.LatencyModel.default())
    # a static scheduler given a StepTimeModel runs in step mode (issue: static and continuous judged alike)
    assert "ttft_s" in wb.simulate(tr, wb.SimConfig(scheduler="static_fifo"), latency=STEP2).requests
    try:
        from workbench.sim import profiles  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match=r"latency=wb.StepTimeModel"):
            wb.simulate(tr, cfg_of())


@pytest.mark.parametrize("field,value,message", [
    ("max_num_seqs", 0, "max_num_seqs: must be an integer >= 1"),
    ("block_size", 2.5, "block_size: must be an integer"),
    ("kv_blocks", 0, "kv_blocks: must be an integer >= 1, or None"),
    ("router", "random", "router: unknown 'random'"),
    ("chunked_prefill", "yes", "chunked_prefill: must be True or False"),
    ("tpot_sla_s", 0.0, "tpot_sla_s: must be a finite number > 0"),
    ("ttft_sla_s", float("inf"), "ttft_sla_s: must be a finite number > 0"),
])
def test_config_errors_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        wb.SimConfig(**{field: value})
    with pytest.raises(ValueError, match="must be >= max_num_seqs"):
        wb.SimConfig(chunked_prefill=True, max_num_batched_tokens=8, max_num_seqs=16)
    help_text = wb.SimConfig.help()
    for name in ("max_num_seqs", "max_num_batched_tokens", "chunked_prefill", "block_size", "kv_blocks",
                 "router", "ttft_sla_s", "tpot_sla_s"):
        assert f"\n{name} (default" in help_text
    assert wb.SimConfig(block_size=16).kv_blocks_effective == wb.SimConfig().kv_capacity_tokens // 16


# ---------------------------------------------------------------- the independent reference
REF_STEP = dict(prefill=(0.012, 2e-5, 1e-8), decode=(0.006, 3e-7, 1e-4))


@pytest.mark.parametrize("chunked,replicas,router,kv_blocks,seed", [
    (False, 1, "round_robin", 60, 0),
    (True, 1, "round_robin", 60, 1),
    (False, 3, "least_outstanding", 50, 2),
    (True, 2, "least_kv", 45, 3),
    (False, 2, "least_kv", 45, 6),
    (False, 2, "least_kv", 1000, 4),
    (True, 3, "round_robin", 1000, 5),
])
def test_engine_matches_the_step_by_step_reference(chunked, replicas, router, kv_blocks, seed):
    tr = random_trace(300, seed, rate=60.0 * replicas)
    block_size = 8 if seed % 2 == 0 else 12   # a power of two and not
    kw = dict(replicas=replicas, router=router, chunked=chunked, max_num_seqs=12, max_num_batched_tokens=400,
              block_size=block_size, kv_blocks=kv_blocks)
    ref = reference(tr.arrival_s, tr.prompt_tokens, tr.output_tokens, **kw, **REF_STEP)
    cfg = cfg_of(num_gpus=replicas, router=router, chunked_prefill=chunked, max_num_seqs=12,
                 max_num_batched_tokens=400, block_size=block_size, kv_blocks=kv_blocks)
    res = wb.simulate(tr, cfg, latency=wb.StepTimeModel(**REF_STEP))
    c = res.continuous
    as_float = lambda xs: np.array([np.nan if x is None else x for x in xs])  # noqa: E731
    np.testing.assert_array_equal(c["replica"], ref["replica"])
    np.testing.assert_array_equal(c["preemptions"], ref["preemptions"])
    np.testing.assert_allclose(res.start_s, as_float(ref["sched"]), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(c["first_token_step_end_s"], as_float(ref["first"]), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(c["last_step_end_s"], as_float(ref["end"]), rtol=1e-9, atol=1e-12)
    if kv_blocks < 100:
        assert res.summary["preemptions_total"] > 0   # the case exercises preemption


# ---------------------------------------------------------------- invariants
@pytest.mark.filterwarnings("ignore::workbench.BinningWarning")
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n=st.integers(1, 120), scheduler=st.sampled_from(CONTINUOUS),
       chunked=st.booleans(), replicas=st.integers(1, 3),
       router=st.sampled_from(("round_robin", "least_outstanding", "least_kv")),
       block_size=st.sampled_from((1, 4, 12, 16)), kv_tokens=st.integers(64, 4000), max_num_seqs=st.integers(1, 20))
def test_invariants(seed, n, scheduler, chunked, replicas, router, block_size, kv_tokens, max_num_seqs):
    tr = random_trace(n, seed, rate=100.0)
    kv_blocks = max(1, kv_tokens // block_size)
    cfg = cfg_of(scheduler=scheduler, num_gpus=replicas, router=router, chunked_prefill=chunked,
                 block_size=block_size, kv_blocks=kv_blocks, max_num_seqs=max_num_seqs,
                 max_num_batched_tokens=max(max_num_seqs, 200), k_bins=3, b_max=16)
    res = wb.simulate(tr, cfg, latency=wb.StepTimeModel(**REF_STEP))
    r, s = res.requests, res.summary
    done = r.status == "completed"
    # conservation: every request is completed or rejected with a reason, never both, never lost
    assert s["completed"] + s["rejected"] == n == len(r)
    peak = -(-(tr.prompt_tokens.astype(np.int64) + tr.output_tokens - 1) // block_size)
    budget_ok = chunked | (tr.prompt_tokens <= cfg.max_num_batched_tokens)
    np.testing.assert_array_equal(done, (peak <= kv_blocks) & budget_ok)
    # causality per request
    assert np.all(r.queue_s[done] >= 0)
    assert np.all(r.ttft_s[done] > r.queue_s[done])
    assert np.all(r.ttft_s[done] <= r.e2e_s[done] + 1e-12)
    assert np.all(np.isnan(r.tpot_s[done]) == (r.output_tokens[done] == 1))
    assert np.all(r.gpu[done].between(0, replicas - 1))
    # memory and time, step by step, per replica
    steps = res.steps
    assert len(steps) > 0 or s["completed"] == 0
    assert np.all(steps["kv_blocks_used"] <= kv_blocks)
    assert np.all(steps["end_s"] > steps["start_s"])
    for _, per in steps.groupby("replica"):
        assert np.all(per["start_s"].to_numpy()[1:] >= per["end_s"].to_numpy()[:-1] - 1e-12)
        assert np.all(np.diff(per["start_s"].to_numpy()) >= 0)
    assert np.all(steps["decodes"] + steps["prefill_requests"] <= max_num_seqs)
    if s["makespan_s"] > 0:
        assert 0 <= s["kv_utilization_mean"] <= 1 and 0 <= s["gpu_utilization_mean"] <= 1 + 1e-9
    assert s["preemptions_total"] == r.preemptions.sum()


@pytest.mark.parametrize("scheduler", CONTINUOUS)
def test_runs_of_decode_steps_equal_single_steps(scheduler):
    """The event-saving runs of identical decode steps change nothing but the event count."""
    from dataclasses import replace

    from workbench.sim.schedulers import SCHEDULERS
    tr = random_trace(400, 11, rate=120.0)
    cfg = cfg_of(scheduler=scheduler, num_gpus=2, router="least_kv", block_size=8, kv_blocks=200, max_num_seqs=24,
                 b_max=24, tpot_sla_s=0.01, k_bins=3)
    step = wb.StepTimeModel(**REF_STEP)
    fast = wb.simulate(tr, cfg, latency=step)
    cls = SCHEDULERS[scheduler]
    original = cls.continuous_spec
    try:
        cls.continuous_spec = lambda self, c: replace(original(self, c), jumps=False)
        slow = wb.simulate(tr, cfg, latency=step)
    finally:
        cls.continuous_spec = original
    assert len(slow.steps) > len(fast.steps)
    assert fast.summary["engine_steps"] == slow.summary["engine_steps"]
    for key in ("ttft_s", "e2e_s", "queue_s"):
        np.testing.assert_allclose(fast.continuous[key], slow.continuous[key], rtol=1e-9)
    np.testing.assert_array_equal(fast.continuous["preemptions"], slow.continuous["preemptions"])
    np.testing.assert_array_equal(fast.continuous["replica"], slow.continuous["replica"])


def test_summary_metrics_by_hand():
    res = wb.simulate(trace_of([0.0, 0.001], [10, 20], [3, 2]), cfg_of(ttft_sla_s=0.03, tpot_sla_s=0.01),
                      latency=STEP2)
    s = res.summary
    # makespan 0 -> 0.057; A: ttft 0.02 tpot 0.0185 (misses TPOT); B: ttft 0.049 (misses TTFT), tpot 0.004
    assert s["makespan_s"] == pytest.approx(0.057)
    assert s["throughput_tokens_per_s"] == pytest.approx(5 / 0.057)
    assert s["ttft_attainment"] == 0.5 and s["tpot_attainment"] == 0.5 and s["slo_attainment"] == 0.0
    assert s["goodput_rps"] == 0.0 and s["sla_violation_rate"] == 1.0
    assert s["ttft_mean_s"] == pytest.approx((0.02 + 0.049) / 2)
    assert s["e2e_p50_s"] == pytest.approx((0.057 + 0.053) / 2)
    # busy the whole makespan; KV: A holds 1 block from 0, B 2 blocks from 0.02 (block_size 16)
    assert s["gpu_utilization_mean"] == pytest.approx(1.0)
    blocks = cfg_of().kv_blocks_effective
    block_seconds = 1 * 0.02 + 3 * 0.03 + 3 * 0.004 + 1 * 0.003
    assert s["kv_utilization_mean"] == pytest.approx(block_seconds / (blocks * 0.057))


SCRIPT = """
import hashlib, json, numpy as np, workbench as wb
rng = np.random.default_rng(3)
n = 800
arr = np.cumsum(rng.exponential(1/80, n)); arr -= arr[0]
tr = wb.Trace.from_arrays(arr, rng.integers(1, 500, n), rng.geometric(1/30, n), source="t")
step = wb.StepTimeModel(prefill=(0.012, 2e-5, 1e-8), decode=(0.006, 3e-7, 1e-4), decode_large=(0.01, 3e-7, 5e-5),
                        decode_large_threshold=8)
out = {}
for s in %r:
    for chunked in (False, True):
        r = wb.simulate(tr, wb.SimConfig(scheduler=s, num_gpus=2, k_bins=3, router="least_kv", block_size=8,
                                         kv_blocks=300, max_num_seqs=32, chunked_prefill=chunked), latency=step)
        c = r.continuous
        h = hashlib.sha256(b"".join(np.ascontiguousarray(c[k]).tobytes() for k in
                                    ("ttft_s", "e2e_s", "queue_s", "preemptions", "replica", "log_f", "log_i")))
        out[f"{s}/{chunked}"] = [h.hexdigest(), int(c["preemptions"].sum())]
print(json.dumps(out))
""" % (CONTINUOUS,)


def test_uncompiled_path_gives_identical_results():
    def run(disable_jit):
        return run_script_json(SCRIPT, disable_jit=disable_jit)

    compiled = run(False)
    assert any(p for _, p in compiled.values())   # preemption is exercised
    assert run(True) == compiled


# ---------------------------------------------------------------- capacity under TTFT and TPOT limits
def test_capacity_slo_finds_the_largest_rate_meeting_both_limits():
    tr = random_trace(400, 21, rate=20.0, max_prompt=200, mean_out=15)
    step = wb.StepTimeModel(prefill=(0.01, 5e-5, 0.0), decode=(0.01, 1e-6, 2e-4))
    cfg = cfg_of(num_gpus=2)
    cap = wb.capacity(tr, cfg, criterion="slo", ttft_s=0.2, tpot_s=0.03, attainment=0.9, latency=step)
    assert cap.criterion == "slo" and cap.bounded
    at = wb.simulate(tr.time_scaled(cap.scaling), cfg.replace(ttft_sla_s=0.2, tpot_sla_s=0.03), latency=step)
    assert at.summary["slo_attainment"] >= 0.9 == cap.target
    above = wb.simulate(tr.time_scaled(cap.scaling_above), cfg.replace(ttft_sla_s=0.2, tpot_sla_s=0.03),
                        latency=step)
    assert above.summary["slo_attainment"] < 0.9
    assert cap.scaling_above / cap.scaling - 1 <= 0.01 + 1e-12


def test_capacity_slo_attainable_share_and_errors():
    # alone: ttft = 0.01 + 1e-3 * prompt, tpot = 0.01 + 1e-4 * (prompt + out / 2)
    step = wb.StepTimeModel(prefill=(0.01, 1e-3, 0.0), decode=(0.01, 1e-4, 0.0))
    tr = trace_of([0.0, 1.0, 2.0, 3.0], [10, 100, 10, 10], [2, 2, 300, 1])
    cfg = cfg_of(ttft_sla_s=0.05, tpot_sla_s=0.02)
    from workbench.study.runs.capacity import slo_attainable_share
    # request 1: ttft 0.11 > 0.05; request 2: tpot 0.01 + 1e-4 * 160 = 0.026 > 0.02; 0 and 3 meet both
    assert slo_attainable_share(tr, cfg, step) == 0.5
    with pytest.raises(wb.CapacityError, match="alone on an idle replica"):
        wb.capacity(tr, cfg, criterion="slo", attainment=0.9, latency=step)
    with pytest.raises(ValueError, match="needs latency=wb.StepTimeModel"):
        wb.capacity(tr, wb.SimConfig(), criterion="slo", latency=wb.LatencyModel.default())
    with pytest.raises(ValueError, match="criterion='slo'"):
        wb.capacity(tr, cfg, ttft_s=1.0, latency=step)


# ---------------------------------------------------------------- policies
def test_multi_bin_rounds_group_similar_lengths():
    # predicted (oracle) lengths: 0 and 2 long, 1 and 3 short; two sequences at a time.
    # FCFS runs {0, 1} then {2, 3}; multi-bin's first round is the bin of request 0: {0, 2}, then {1, 3}
    tr = trace_of([0.0, 0.0, 0.0, 0.0], [10, 10, 10, 10], [50, 3, 50, 3])
    step = wb.StepTimeModel(prefill=(0.01, 0.0, 0.0), decode=(0.002, 0.0, 0.0))
    kw = dict(max_num_seqs=2, predictor="oracle", k_bins=2)
    fcfs = wb.simulate(tr, cfg_of(**kw), latency=step).requests
    mb = wb.simulate(tr, cfg_of(scheduler="continuous_multi_bin", **kw), latency=step).requests
    assert list(fcfs.queue_s == 0) == [True, True, False, False]
    assert list(mb.queue_s == 0) == [True, False, True, False]
    assert list(mb.bin) == [1, 0, 1, 0]


def test_sla_controller_holds_the_decode_time_per_token():
    # decode step time 1 ms + 1 ms per request: the 11 ms target allows about 10 running requests
    rng = np.random.default_rng(5)
    n = 600
    tr = trace_of(np.sort(rng.uniform(0, 2.0, n)), np.full(n, 8), rng.integers(20, 60, n))
    step = wb.StepTimeModel(prefill=(0.001, 1e-5, 0.0), decode=(0.001, 0.0, 0.001))
    kw = dict(tpot_sla_s=0.011, b_min=1, b_max=64, max_num_seqs=64, ctrl_window=4)
    fcfs = wb.simulate(tr, cfg_of(**kw), latency=step)
    sla = wb.simulate(tr, cfg_of(scheduler="continuous_sla", **kw), latency=step)
    dec = sla.steps.query("decodes > 0 and prefill_requests == 0")
    settled = dec.iloc[len(dec) // 4:]
    step_s = (settled.end_s - settled.start_s) / settled.steps
    assert 0.008 <= step_s.mean() <= 0.014
    assert 7 <= settled.decodes.median() <= 13
    assert fcfs.steps.decodes.max() == 64   # without the controller the batch fills up
    assert sla.summary["tpot_mean_s"] < fcfs.summary["tpot_mean_s"]


def test_capacity_of_a_continuous_scheduler_needs_the_slo_criterion():
    with pytest.raises(ValueError, match="criterion='slo'"):
        wb.capacity(random_trace(20, 1), cfg_of(), latency=STEP2)


def test_one_sequence_at_a_time_is_an_m_d_1_queue():
    """max_num_seqs=1 on one replica serves requests one by one: with Poisson arrivals and a constant
    service time S (prefill + (out - 1) decode steps), the mean wait is Pollaczek-Khinchine's
    rho S / (2 (1 - rho))."""
    rng = np.random.default_rng(12)
    n, rho = 20_000, 0.7
    step = wb.StepTimeModel(prefill=(0.01, 1e-4, 0.0), decode=(0.004, 0.0, 0.001))
    service_s = 0.01 + 1e-4 * 100 + 9 * 0.005
    arrival = np.cumsum(rng.exponential(service_s / rho, n))
    tr = trace_of(arrival - arrival[0], np.full(n, 100), np.full(n, 10))
    res = wb.simulate(tr, cfg_of(max_num_seqs=1), latency=step)
    np.testing.assert_allclose(res.requests.e2e_s - res.requests.queue_s, service_s, rtol=1e-9)
    theory = rho * service_s / (2 * (1 - rho))
    assert res.requests.queue_s.mean() == pytest.approx(theory, rel=0.08)
