"""Static batching in step mode: static schedulers timed by a StepTimeModel and judged on TTFT/TPOT."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import workbench as wb
from workbench.sim.profiles import get_profile, profile_config_fields
from conftest import run_script_json

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


# ---------------------------------------------------------------- grid mode stays bit-identical
# digests of the grid path recorded on the commit before step mode was added (fc8bc01)
GRID_DIGESTS = {"static_fifo": "727b5178f2b5fdea", "multi_bin_fixed": "6389fe83af7f8a90",
                "multi_bin_dynamic": "87e5a45614de1207", "dynamic_no_bins": "86339d04d3baabb5"}


def grid_digest(res):
    h = hashlib.sha256()
    for a in (res.start_s, res.finish_s, res.batch_id, res.status, res.batch_float, res.batch_int):
        h.update(np.ascontiguousarray(a).tobytes())
    for k in sorted(res.summary):
        if not k.startswith("sim_"):
            h.update(f"{k}={res.summary[k]!r}".encode())
    return h.hexdigest()[:16]


def test_grid_mode_results_are_unchanged():
    rng = np.random.default_rng(7)
    n = 300
    arr = np.cumsum(rng.exponential(1 / 30.0, n))
    tr = wb.Trace.from_arrays(arr - arr[0], rng.integers(1, 400, n), rng.integers(1, 300, n), source="test")
    for s in STATIC:
        res = wb.simulate(tr, wb.SimConfig(scheduler=s, num_gpus=2, k_bins=3, predictor="oracle"))
        assert res.continuous is None and "ttft_s" not in res.requests
        assert grid_digest(res) == GRID_DIGESTS[s], s


SCRIPT = """
import hashlib, json, numpy as np, workbench as wb
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
    h = hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in
                                (c["ttft_s"], c["e2e_s"], c["queue_s"], r.batch_float, r.batch_int)))
    out[s] = h.hexdigest()
print(json.dumps(out))
""" % (STATIC,)


def test_uncompiled_step_mode_gives_identical_results():
    def run(disable_jit):
        return run_script_json(SCRIPT, disable_jit=disable_jit)

    assert run(True) == run(False)


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
