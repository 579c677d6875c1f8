"""Static batching in step mode: static schedulers timed by a StepTimeModel and judged on TTFT/TPOT."""

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import workbench as wb
from workbench.sim.profiles import get_profile, profile_config_fields
from conftest import assert_same_results, run_script_json

REPO_ROOT = Path(__file__).resolve().parents[1]
STATIC = ("static_fifo", "multi_bin_fixed", "multi_bin_dynamic", "dynamic_no_bins")
# one regime (no large-batch coefficients) so the hand computations stay short
STEP = wb.StepTimeModel(prefill=(0.02, 1.5e-4, 1e-8), decode=(0.015, 2e-6, 4e-4))


def trace_of(arrival_s, prompt, output):
    return wb.Trace.from_arrays(np.asarray(arrival_s, float), np.asarray(prompt), np.asarray(output), source="test")


def random_trace(n, seed, rate, max_prompt=400, mean_out=30):
    rng = np.random.default_rng(seed)
    arrival = np.cumsum(rng.exponential(1 / rate, n))
    return trace_of(arrival - arrival[0], rng.integers(1, max_prompt, n), rng.geometric(1 / mean_out, n))


# ---------------------------------------------------------------- hand-computed cases
def test_a_batch_of_two_by_hand():
    # prompts 100 and 200, outputs 3 and 5, both at t=0, one batch of 2.
    # prefill: 0.02 + 1.5e-4 * 300 + 1e-8 * (100^2 + 200^2) = 0.0655 -> both first tokens at 0.0655
    # decode step k (both rows, padded): 0.015 + 2e-6 * (300 + 2k) + 4e-4 * 2 = 0.0164 + 4e-6 k
    # request 0 (3 tokens): steps 1, 2 = 0.032812 -> e2e 0.098312, tpot 0.016406
    # request 1 (5 tokens): steps 1..4 = 0.06564 -> e2e 0.13114, tpot 0.01641; the batch's GPU time
    # request 2 arrives at 0.01, waits for the GPU (batch_size 2), starts at 0.13114 alone:
    #   prefill 0.02 + 1.5e-4 * 50 + 1e-8 * 2500 = 0.027525; one decode 0.015 + 2e-6 * 51 + 4e-4 = 0.015502
    tr = trace_of([0.0, 0.0, 0.01], [100, 200, 50], [3, 5, 2])
    res = wb.simulate(tr, wb.SimConfig(scheduler="static_fifo", batch_size=2), latency=STEP)
    r = res.requests
    assert list(r.batch_id) == [0, 0, 1]
    assert r.ttft_s.tolist() == pytest.approx([0.0655, 0.0655, 0.13114 + 0.027525 - 0.01], abs=1e-12)
    assert r.e2e_s.tolist() == pytest.approx([0.098312, 0.13114, 0.13114 + 0.027525 + 0.015502 - 0.01], abs=1e-12)
    assert r.tpot_s.tolist() == pytest.approx([0.016406, 0.01641, 0.015502], abs=1e-12)
    assert r.queue_s.tolist() == pytest.approx([0.0, 0.0, 0.12114], abs=1e-12)
    assert r.finish_s.tolist() == pytest.approx((r.arrival_s + r.e2e_s).tolist(), abs=1e-15)
    assert list(r.preemptions) == [0, 0, 0]
    assert res.batches.service_s.tolist() == pytest.approx([0.13114, 0.027525 + 0.015502], abs=1e-12)
    s = res.summary
    assert s["ttft_mean_s"] == pytest.approx((0.0655 * 2 + 0.148665) / 3, abs=1e-12)
    assert s["makespan_s"] == pytest.approx(0.13114 + 0.043027, abs=1e-12)
    assert s["gpu_utilization_mean"] == pytest.approx(1.0)


def test_one_token_outputs_have_no_tpot_and_token_overhead_is_reported():
    step = wb.StepTimeModel(prefill=STEP.prefill, decode=STEP.decode, token_overhead_s=0.001)
    tr = trace_of([0.0, 0.0], [100, 200], [1, 3])
    r = wb.simulate(tr, wb.SimConfig(scheduler="static_fifo"), latency=step).requests
    # prefill 0.0655; request 1's two decode steps: 2 * (0.015 + 4e-4 * 2) + 2e-6 * (302 + 304) = 0.032812
    assert r.ttft_s.tolist() == pytest.approx([0.0665, 0.0665], abs=1e-12)
    assert r.e2e_s.tolist() == pytest.approx([0.0665, 0.0655 + 0.032812 + 0.003], abs=1e-12)
    assert np.isnan(r.tpot_s[0])
    assert r.tpot_s[1] == pytest.approx((0.032812 + 0.002) / 2, abs=1e-12)


def test_arrival_overhead_reorders_the_queue():
    # join = arrival + 1e-5 * prompt: request 0 (prompt 1000) joins at 0.01, request 1 (prompt 10) at 0.0011,
    # so one-at-a-time FIFO serves request 1 first
    step = wb.StepTimeModel(prefill=(0.01, 0.0, 0.0), decode=(0.005, 0.0, 0.0), arrival_overhead_s=(0.0, 1e-5))
    tr = trace_of([0.0, 0.001], [1000, 10], [2, 2])
    r = wb.simulate(tr, wb.SimConfig(scheduler="static_fifo", batch_size=1), latency=step).requests
    # request 1: starts 0.0011, first token 0.0111, done 0.0161; request 0 waits for the GPU until 0.0161
    assert r.start_s.tolist() == pytest.approx([0.0161, 0.0011], abs=1e-12)
    assert r.ttft_s.tolist() == pytest.approx([0.0261, 0.0101], abs=1e-12)
    assert r.e2e_s.tolist() == pytest.approx([0.0311, 0.0151], abs=1e-12)


def test_kv_rule_unchanged_and_bad_input():
    cfg = wb.SimConfig(scheduler="static_fifo", model="opt-13b", gpu_mem_gb=80.0)
    cap = cfg.kv_capacity_tokens
    tr = trace_of([0.0, 1.0], [cap - 5, 10], [6, 3])   # request 0 needs cap + 1 tokens: rejected
    res = wb.simulate(tr, cfg, latency=STEP)
    assert list(res.requests.status.cat.codes) == [1, 0]
    assert res.summary["slo_attainment"] == 0.5
    assert res.summary["sla_violation_rate"] == 0.5
    with pytest.raises(ValueError, match="output_tokens >= 1"):
        wb.simulate(trace_of([0.0], [10], [0]), cfg, latency=STEP)


# ---------------------------------------------------------------- grid mode: what it was before step mode
# Grid mode (a LatencyModel) times a whole batch by the seed formula and finishes every request with its batch; step
# mode was added beside it and must leave it alone. These cases fix, for every static scheduler, which requests batch
# together, on which GPU, when, and for how long, worked out by hand from the formula; the random-trace check below
# recomputes every batch's time from the trace's own token counts.
SEED = wb.LatencyModel(base_s=0.015, per_token_s=3e-4, batch_penalty=0.4)   # the seed grid's coefficients


def seed_time_s(b, longest):
    """t(b, L) = 0.015 + 3e-4 L (1 + 0.4 (b - 1) / b), written out again here."""
    return 0.015 + 3e-4 * longest * (1 + 0.4 * (b - 1) / b)


def grid_config(scheduler, **kw):
    # 16,000 tokens of KV cache: no batch below comes near it, so only the batch rules decide
    fields = dict(num_gpus=2, d_sla_s=0.2, predictor="oracle", gpu_mem_gb=16.0, gpu_memory_utilization=1.0,
                  model_mem_gb=0.0, mem_margin_gb=0.0, kv_gb_per_token=1e-3)
    return wb.SimConfig(scheduler=scheduler, **{**fields, **kw})


# request:        r0    r1    r2    r3    r4
GRID_ARRIVAL_S = [0.00, 0.00, 0.01, 0.02, 0.03]
GRID_PROMPT = [100, 200, 50, 10, 400]
GRID_OUTPUT = [50, 100, 50, 40, 100]      # L = prompt + output: 150, 300, 100, 50, 500
# t(1, 150) = 0.015 + 0.045 = 0.06;  t(1, 300) = 0.015 + 0.09 = 0.105;  t(1, 100) = 0.045;  t(1, 50) = 0.03
# t(1, 500) = 0.165;  t(2, L) = 0.015 + 3e-4 L 1.2: t(2, 300) = 0.123, t(2, 150) = 0.069, t(2, 100) = 0.051,
# t(2, 500) = 0.195;  t(3, 500) = 0.015 + 0.15 (1 + 0.8 / 3) = 0.205
# Both GPUs start idle; idle GPUs are taken in the order they became idle (GPU 0 first).
GRID_BY_HAND = {
    # batch_size 2 ("up to"), one queue:
    #   t=0     GPU0 takes r0, r1: t(2, 300) = 0.123 -> done 0.123
    #   t=0.01  r2 arrives, GPU1 idle: alone, t(1, 100) = 0.045 -> done 0.055
    #   t=0.02, 0.03  r3, r4 wait; t=0.055 GPU1 takes both: t(2, 500) = 0.195 -> done 0.25
    "static_fifo": dict(kw={"batch_size": 2}, gpu=[0, 0, 1, 1, 1], start_s=[0, 0, 0.01, 0.055, 0.055],
                        finish_s=[0.123, 0.123, 0.055, 0.25, 0.25]),
    # one bin, dynamic limit min(b_mem, b_sla): b_mem starts at b_max = 32, b_sla at floor((1 + 32) / 2) = 16.
    #   t=0     two GPUs idle, 2 waiting: spread, at most ceil(2 / 2) = 1 each: GPU0 r0 t(1, 150) -> 0.06,
    #           GPU1 r1 t(1, 300) -> 0.105
    #   t=0.06  GPU0 done: tau = 0.06 < budget 0.2 - eps 0.01, so b_low = min(b_bar 1, 32 - 2) = 1, b_high = 32:
    #           b_sla = 16 (b_mem needs two finished requests); r2, r3, r4 in one batch: t(3, 500) = 0.205 -> 0.265
    "dynamic_no_bins": dict(kw={}, gpu=[0, 1, 0, 0, 0], start_s=[0, 0, 0.06, 0.06, 0.06],
                            finish_s=[0.06, 0.105, 0.265, 0.265, 0.265]),
    # two bins by output length (oracle): distinct outputs 40, 50, 100 with shares below them 0, 0.2, 0.6; the
    # cut nearest 0.5 is at 100: bin 0 = {r0, r2, r3} (outputs 50, 50, 40), bin 1 = {r1, r4} (100, 100).
    # Exactly 2 per batch; a partial batch once all of its bin has arrived.
    #   t=0.01  bin 0 full (r0, r2): GPU0, t(2, 150) = 0.069 -> done 0.079
    #   t=0.02  r3 is bin 0's last request: alone on GPU1, t(1, 50) = 0.03 -> done 0.05
    #   t=0.03  bin 1 full (r1, r4), both GPUs busy; t=0.05 GPU1: t(2, 500) = 0.195 -> done 0.245
    "multi_bin_fixed": dict(kw={"batch_size": 2, "k_bins": 2}, gpu=[0, 1, 0, 1, 1],
                            start_s=[0.01, 0.05, 0.01, 0.02, 0.05], finish_s=[0.079, 0.245, 0.079, 0.05, 0.245]),
    # the same two bins, each with its own controllers (limit 16 to start), oldest head first:
    #   t=0     bin 0 (r0, oldest; a tie with r1 goes to the lower bin): 1 waiting, 2 idle GPUs: GPU0 r0 -> 0.06;
    #           then bin 1: GPU1 r1 -> 0.105
    #   t=0.06  GPU0: bin 0's head r2 (0.01) is older than bin 1's r4 (0.03): r2, r3: t(2, 100) = 0.051 -> 0.111
    #   t=0.105 GPU1: r4 alone, t(1, 500) = 0.165 -> 0.27
    "multi_bin_dynamic": dict(kw={"k_bins": 2}, gpu=[0, 1, 0, 0, 1], start_s=[0, 0, 0.06, 0.06, 0.105],
                              finish_s=[0.06, 0.105, 0.111, 0.111, 0.27]),
}


@pytest.mark.parametrize("scheduler", STATIC)
def test_grid_mode_by_hand(scheduler):
    case = GRID_BY_HAND[scheduler]
    tr = trace_of(GRID_ARRIVAL_S, GRID_PROMPT, GRID_OUTPUT)
    res = wb.simulate(tr, grid_config(scheduler, **case["kw"]), latency=SEED)
    assert res.continuous is None and "ttft_s" not in res.requests        # grid mode: no per-token times
    r = res.requests
    assert list(r.gpu) == case["gpu"]
    assert r.start_s.tolist() == pytest.approx(case["start_s"], rel=1e-9, abs=1e-12)
    assert r.finish_s.tolist() == pytest.approx(case["finish_s"], rel=1e-9)
    latency_s = np.subtract(case["finish_s"], GRID_ARRIVAL_S)
    assert r.latency_s.tolist() == pytest.approx(latency_s.tolist(), rel=1e-9)
    assert res.summary["latency_mean_s"] == pytest.approx(latency_s.mean(), rel=1e-9)
    # d_sla_s = 0.2: late are static_fifo's r3, r4 (0.23, 0.22); dynamic_no_bins' r2, r3, r4 (0.255, 0.245, 0.235);
    # multi_bin_fixed's r1, r4 (0.245, 0.215); multi_bin_dynamic's r4 (0.24)
    late = {"static_fifo": 2, "dynamic_no_bins": 3, "multi_bin_fixed": 2, "multi_bin_dynamic": 1}[scheduler]
    assert res.summary["sla_violation_rate"] == pytest.approx(late / 5, rel=1e-9)


def test_grid_mode_times_every_batch_by_the_seed_formula_on_a_random_trace():
    """300 requests, two GPUs, three bins: each batch takes t(b, L) of its own members (L read from the trace, not
    from the engine's batch record) and every member starts with it and finishes when it ends."""
    rng = np.random.default_rng(7)
    n = 300
    arr = np.cumsum(rng.exponential(1 / 30.0, n))
    tr = wb.Trace.from_arrays(arr - arr[0], rng.integers(1, 400, n), rng.integers(1, 300, n), source="test")
    length = tr.prompt_tokens.astype(np.int64) + tr.output_tokens
    for s in STATIC:
        res = wb.simulate(tr, grid_config(s, k_bins=3, d_sla_s=1.0), latency=SEED)
        assert res.continuous is None and "ttft_s" not in res.requests
        batches = res.batches
        assert (res.status == 0).all() and batches["size"].sum() == n
        for b, members in enumerate(np.split(np.argsort(res.batch_id, kind="stable"),
                                              np.cumsum(batches["size"].to_numpy())[:-1])):
            assert set(res.batch_id[members]) == {b}
            service_s = seed_time_s(len(members), length[members].max())
            assert batches["service_s"][b] == pytest.approx(service_s, rel=1e-9), (s, b)
            assert res.start_s[members].tolist() == pytest.approx([batches["start_s"][b]] * len(members), rel=1e-9)
            assert res.finish_s[members].tolist() == pytest.approx([batches["start_s"][b] + service_s] * len(members),
                                                                    rel=1e-9)
        assert res.summary["latency_mean_s"] == pytest.approx(np.mean(res.finish_s - tr.arrival_s), rel=1e-9)
        assert res.summary["sla_violation_rate"] == pytest.approx(np.mean(res.finish_s - tr.arrival_s > 1.0), rel=1e-9)


SCRIPT = """
import json, numpy as np, workbench as wb
rng = np.random.default_rng(3)
n = 400
arr = np.cumsum(rng.exponential(1/60, n)); arr -= arr[0]
tr = wb.Trace.from_arrays(arr, rng.integers(1, 500, n), rng.geometric(1/30, n), source="t")
step = wb.StepTimeModel(prefill=(0.012, 2e-5, 1e-8), decode=(0.006, 3e-7, 1e-4), decode_large=(0.01, 3e-7, 5e-5),
                        decode_large_threshold=4, arrival_overhead_s=(0.001, 1e-5), token_overhead_s=1e-4)
out = {}
for s in %r:
    r = wb.simulate(tr, wb.SimConfig(scheduler=s, num_gpus=2, k_bins=3, d_sla_s=0.5), latency=step)
    c = r.continuous
    out[s] = {"ttft_s": c["ttft_s"].tolist(), "e2e_s": c["e2e_s"].tolist(), "queue_s": c["queue_s"].tolist(),
              "batch_float": r.batch_float.tolist(), "batch_int": r.batch_int.tolist()}
print(json.dumps(out))
""" % (STATIC,)


def test_uncompiled_step_mode_gives_the_same_results():
    """Every request's times and every batch's record, compiled and as plain Python: integers equal, times to 1e-9."""
    compiled = run_script_json(SCRIPT, disable_jit=False)
    assert_same_results(compiled, run_script_json(SCRIPT, disable_jit=True))
    assert all(len(compiled[s]["ttft_s"]) == 400 for s in STATIC)


# ---------------------------------------------------------------- static vs continuous on one hardware model
def opt13b_cfg(scheduler, **kw):
    return wb.SimConfig(scheduler=scheduler, **profile_config_fields("opt-13b-a100"), **kw)


def test_requests_that_never_overlap_get_the_same_times_from_both_engines():
    # 30 s apart, each done within ~3 s: every request is alone, so a static batch of one and the continuous
    # engine run the same prefill and decode steps
    step = get_profile("opt-13b-a100")
    rng = np.random.default_rng(11)
    n = 12
    tr = trace_of(np.arange(n) * 30.0, rng.integers(1, 1500, n), rng.integers(1, 200, n))
    static = wb.simulate(tr, opt13b_cfg("static_fifo"), latency=step).requests
    cont = wb.simulate(tr, opt13b_cfg("continuous_fcfs"), latency=step).requests
    assert (static.e2e_s < 30.0).all()
    for col in ("ttft_s", "e2e_s", "queue_s"):
        np.testing.assert_allclose(static[col], cont[col], rtol=1e-9, atol=1e-12, err_msg=col)
    np.testing.assert_allclose(static.tpot_s, cont.tpot_s, rtol=1e-9, equal_nan=True)


def test_continuous_batching_has_higher_throughput_under_heavy_load():
    step = get_profile("opt-13b-a100")
    tr = random_trace(300, 5, rate=200.0, max_prompt=300, mean_out=60)
    static = wb.simulate(tr, opt13b_cfg("static_fifo", batch_size=16), latency=step).summary
    cont = wb.simulate(tr, opt13b_cfg("continuous_fcfs", max_num_seqs=16), latency=step).summary
    assert static["completed"] == cont["completed"] == 300
    # same batch cap: static rows idle as padding until the batch's longest output is done
    assert cont["throughput_tokens_per_s"] > 1.2 * static["throughput_tokens_per_s"]
    assert cont["throughput_rps"] > static["throughput_rps"]


# ---------------------------------------------------------------- capacity and the memory preset
def test_capacity_slo_works_for_a_static_scheduler_in_step_mode():
    tr = random_trace(200, 21, rate=5.0, max_prompt=200, mean_out=15)
    limits = dict(ttft_sla_s=0.3, tpot_sla_s=0.05)
    cfg = wb.SimConfig(scheduler="static_fifo", num_gpus=1, **limits)
    cap = wb.capacity(tr, cfg, criterion="slo", attainment=0.9, latency=STEP)
    assert cap.criterion == "slo" and cap.bounded
    at = wb.simulate(tr.time_scaled(cap.scaling), cfg, latency=STEP).summary
    above = wb.simulate(tr.time_scaled(cap.scaling_above), cfg, latency=STEP).summary
    assert at["slo_attainment"] >= 0.9 > above["slo_attainment"]
    with pytest.raises(ValueError, match="criterion='slo'"):
        wb.capacity(tr, cfg, criterion="attainment", latency=STEP)


def test_profile_config_fields_give_the_measured_setups_kv_cache():
    setup = json.loads((REPO_ROOT / "data/groundtruth/distserve_opt13b_a100_vllm/setup.json").read_text())
    fields = profile_config_fields(setup["profile"])
    assert fields["model"] == "opt-13b"
    cfg = wb.SimConfig(**fields)
    assert cfg.kv_blocks_effective == setup["sim_config"]["kv_blocks"] == 4046
    with pytest.raises(ValueError, match="no memory preset"):
        profile_config_fields("llama-3.1-8b-h100")
    with pytest.raises(ValueError, match="unknown step-time profile"):
        profile_config_fields("gpt-9")


def test_per_bin_violations_use_the_slo_in_step_mode():
    # d_sla_s far above every latency: only the TTFT/TPOT limits can be missed, in the summary and per bin alike
    tr = random_trace(300, 8, rate=20.0, max_prompt=300, mean_out=30)
    cfg = wb.SimConfig(scheduler="multi_bin_dynamic", k_bins=2, predictor="oracle", d_sla_s=1e4,
                       ttft_sla_s=0.5, tpot_sla_s=0.02)
    s = wb.simulate(tr, cfg, latency=STEP).summary
    assert 0 < s["sla_violation_rate"] == pytest.approx(1 - s["slo_attainment"]) and s["deadline_violation_rate"] == 0
    missed = sum(s[f"bin{j}_offered"] * s[f"bin{j}_sla_violation_rate"] for j in range(2))
    assert missed == pytest.approx(s["offered"] * s["sla_violation_rate"])


TWO_REGIMES = wb.StepTimeModel(prefill=(0.01, 1e-4, 1e-8), decode=(0.01, 1e-6, 3e-4),
                               decode_large=(0.008, 2e-6, 5e-4), decode_large_threshold=3)


@pytest.mark.filterwarnings("ignore::workbench.BinningWarning")   # tiny traces: one distinct length
@settings(max_examples=20, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 2.0), st.integers(1, 500), st.integers(1, 80)), min_size=1, max_size=40),
       st.sampled_from(STATIC), st.integers(1, 3))
def test_step_mode_invariants(rows, scheduler, num_gpus):
    rows.sort()
    tr = trace_of([a for a, _, _ in rows], [p for _, p, _ in rows], [o for _, _, o in rows])
    cfg = wb.SimConfig(scheduler=scheduler, num_gpus=num_gpus, batch_size=4, k_bins=2, predictor="oracle")
    res = wb.simulate(tr, cfg, latency=TWO_REGIMES)
    r, b = res.requests, res.batches
    assert (r.status == "completed").all() and b["size"].sum() == len(rows)
    for bid, members in r.groupby("batch_id"):
        batch = b.iloc[bid]
        prompts = members.prompt_tokens.to_numpy(float)
        # first tokens together at the end of the batch's prefill; the longest output ends the batch
        prefill = TWO_REGIMES.prefill_time_s(prompts)
        assert np.allclose(members.arrival_s + members.ttft_s, batch.start_s + prefill, rtol=0, atol=1e-12)
        assert (members.start_s == batch.start_s).all()
        assert members.finish_s.max() == pytest.approx(batch.start_s + batch.service_s, abs=1e-12)
        assert (members.queue_s >= 0).all() and (members.ttft_s <= members.e2e_s + 1e-15).all()
    # a GPU runs one batch at a time
    for _, runs in b.sort_values("start_s").groupby("gpu"):
        assert (runs.start_s.to_numpy()[1:] >= (runs.start_s + runs.service_s).to_numpy()[:-1] - 1e-12).all()
