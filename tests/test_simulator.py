import heapq

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import workbench as wb
from workbench.sim.memory import GRID_MEMORY
from conftest import assert_same_results, run_script_json

SCHEDULERS = ("static_fifo", "dynamic_no_bins", "multi_bin_dynamic", "multi_bin_fixed")


def make_trace(arrival_s, prompt, output, source="test"):
    return wb.Trace.from_arrays(np.asarray(arrival_s, float), np.asarray(prompt), np.asarray(output), source=source)


def random_trace(n, seed=0, rate=50.0, mean_out=150):
    rng = np.random.default_rng(seed)
    arrival = np.cumsum(rng.exponential(1 / rate, n))
    prompt = np.minimum(rng.pareto(1.5, n) * 150 + 10, 20_000).astype(int)
    output = (rng.geometric(1 / mean_out, n)).astype(int)
    return make_trace(arrival - arrival[0], prompt, output)


def check_invariants(trace, res):
    cfg = res.config
    s = res.summary
    n = len(trace)
    assert s["offered"] == n and s["completed"] + s["rejected"] == n
    seq = trace.prompt_tokens.astype(np.int64) + trace.output_tokens
    served = res.status == 0
    assert np.array_equal(served, seq <= cfg.kv_capacity_tokens)   # rejected exactly when it can never fit
    batches = res.batches
    # every served request is in exactly one batch, rejected ones in none
    assert batches["size"].sum() == served.sum()
    assert np.array_equal(np.bincount(res.batch_id[served], minlength=len(batches)), batches["size"].to_numpy())
    assert np.all(res.batch_id[~served] == -1) and np.all(np.isnan(res.finish_s[~served]))
    # causality and memory
    assert np.all(res.start_s[served] >= res.arrival_s[served])
    assert np.all(res.finish_s[served] > res.start_s[served])
    assert np.all(batches["tokens"] <= cfg.kv_capacity_tokens)
    assert np.all(batches["size"] >= 1)
    # a GPU serves one batch at a time: on each GPU batches do not overlap
    for _, per_gpu in batches.sort_values(["gpu", "start_s"]).groupby("gpu"):
        starts = per_gpu["start_s"].to_numpy()
        finishes = starts + per_gpu["service_s"].to_numpy()
        assert np.all(starts[1:] >= finishes[:-1] - 1e-9)
    # batches are dispatched in time order (time never runs backwards)
    assert np.all(np.diff(batches["start_s"].to_numpy()) >= 0)
    # service time follows the latency model of the batch's longest request
    expected = res.latency.service_time_s(batches["size"], batches["max_seq_tokens"])
    np.testing.assert_allclose(batches["service_s"], expected, rtol=1e-12)
    # FIFO inside a bin: dispatch order follows arrival order
    for j in np.unique(res.bin[served]):
        members = np.flatnonzero(served & (res.bin == j))
        assert np.all(np.diff(res.start_s[members]) >= 0)


def check_work_conserving(res):
    """No request waits while some GPU is idle (up-to and dynamic batch rules)."""
    batches = res.batches
    busy = [[] for _ in range(res.config.num_gpus)]
    for row in batches.itertuples():
        busy[row.gpu].append((row.start_s, row.start_s + row.service_s))
    served = np.flatnonzero(res.status == 0)
    waiting = [(res.arrival_s[r], res.start_s[r]) for r in served if res.start_s[r] > res.arrival_s[r] + 1e-12]
    for intervals in busy:
        intervals.sort()
        idle, t = [], 0.0
        for a, b in intervals:
            if a > t + 1e-12:
                idle.append((t, a))
            t = max(t, b)
        idle.append((t, np.inf))
        for w0, w1 in waiting:
            for i0, i1 in idle:
                assert not (max(w0, i0) < min(w1, i1) - 1e-9), f"request waited {w0}-{w1} while a GPU idled {i0}-{i1}"


@pytest.mark.parametrize("scheduler", SCHEDULERS)
@pytest.mark.parametrize("num_gpus", [1, 3])
def test_invariants_on_random_trace(scheduler, num_gpus):
    trace = random_trace(3000, seed=num_gpus)
    res = wb.simulate(trace, wb.SimConfig(scheduler=scheduler, num_gpus=num_gpus, k_bins=4, d_sla_s=1.0, **GRID_MEMORY),
                      latency="seed-grid")   # the seed grid's invariants (the default is step mode since issue 20)
    check_invariants(trace, res)
    if scheduler != "multi_bin_fixed":
        check_work_conserving(res)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 120),
    scheduler=st.sampled_from(SCHEDULERS),
    num_gpus=st.integers(1, 5),
    k=st.integers(1, 6),
    batch=st.integers(1, 6),
    capacity_tokens=st.integers(50, 3000),
    seed=st.integers(0, 10_000),
    policy=st.sampled_from(["oldest", "round_robin", "longest_queue"]),
)
def test_property_no_request_lost_or_served_twice(n, scheduler, num_gpus, k, batch, capacity_tokens, seed, policy):
    rng = np.random.default_rng(seed)
    arrival = np.sort(np.round(rng.uniform(0, n / 20, n), 2))   # many ties
    prompt = rng.integers(0, 400, n)
    output = rng.integers(1, 400, n)
    trace = make_trace(arrival, prompt, output)
    cfg = wb.SimConfig(scheduler=scheduler, num_gpus=num_gpus, k_bins=k, batch_size=batch, b_max=8,
                       predictor="oracle", bin_policy=policy, gpu_mem_gb=1.0, gpu_memory_utilization=1.0,
                       model_mem_gb=0.0,
                       mem_margin_gb=0.0, kv_gb_per_token=1.0 / capacity_tokens)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", wb.BinningWarning)
        res = wb.simulate(trace, cfg, latency=wb.LatencyModel(base_s=0.01, per_token_s=1e-4, batch_penalty=0.2))
    check_invariants(trace, res)
    if scheduler != "multi_bin_fixed":
        check_work_conserving(res)


def test_hand_computed_static_fifo():
    trace = make_trace([0, 0, 0, 0.5], [0, 0, 0, 0], [10, 10, 10, 10])
    lat = wb.LatencyModel(base_s=1.0, per_token_s=0.0, batch_penalty=0.0)
    res = wb.simulate(trace, wb.SimConfig(scheduler="static_fifo", batch_size=2), latency=lat)
    # batch 0: requests 0,1 at t=0; batch 1: requests 2,3 at t=1 (3 arrived at 0.5 while the GPU was busy)
    assert list(res.batch_id) == [0, 0, 1, 1]
    assert list(res.start_s) == [0, 0, 1, 1] and list(res.finish_s) == [1, 1, 2, 2]
    assert res.summary["latency_max_s"] == 2.0 and res.summary["makespan_s"] == 2.0
    assert res.summary["sla_violation_rate"] == pytest.approx(0.5)   # 2 of 4 finish after 1 s
    # two GPUs: request 2 takes the second GPU at once; request 3 waits for the first free GPU
    res2 = wb.simulate(trace, wb.SimConfig(scheduler="static_fifo", batch_size=2, num_gpus=2), latency=lat)
    assert list(res2.start_s) == [0, 0, 0, 1] and list(res2.gpu) == [0, 0, 1, 0]


@pytest.mark.parametrize("scheduler", ["dynamic_no_bins", "multi_bin_dynamic"])
def test_simultaneous_arrivals_are_spread_over_idle_gpus(scheduler):
    trace = make_trace([0, 0, 0, 0], [0] * 4, [10, 2000, 10, 2000])
    lat = wb.LatencyModel(base_s=0.01, per_token_s=1e-3, batch_penalty=0.0)
    cfg = wb.SimConfig(scheduler=scheduler, num_gpus=4, k_bins=1, predictor="oracle")
    spread = wb.simulate(trace, cfg, latency=lat)
    assert sorted(spread.gpu) == [0, 1, 2, 3] and spread.summary["batch_size_max"] == 1
    # the short requests no longer wait for a 2-second neighbour
    assert spread.finish_s[0] == pytest.approx(0.02)
    stacked = wb.simulate(trace, cfg.replace(spread_idle=False), latency=lat)
    assert stacked.summary["batch_size_max"] == 4 and stacked.finish_s[0] == pytest.approx(2.01)


def test_multi_bin_fixed_waits_for_full_batches_and_serves_partial_at_end():
    # bin of short (out=10) and long (out=1000) requests; batch 2
    trace = make_trace([0, 1, 2, 3, 4], [0] * 5, [10, 1000, 10, 1000, 1000])
    lat = wb.LatencyModel(base_s=0.1, per_token_s=0.0, batch_penalty=0.0)
    res = wb.simulate(trace, wb.SimConfig(scheduler="multi_bin_fixed", k_bins=2, batch_size=2, predictor="oracle"),
                      latency=lat)
    # short bin full at t=2 (requests 0, 2); long bin full at t=3 (1, 3); request 4 alone once all arrived
    assert res.start_s[0] == res.start_s[2] == 2.0
    assert res.start_s[1] == res.start_s[3] == 3.0
    assert res.start_s[4] == 4.0
    assert res.summary["completed"] == 5


def test_requests_that_can_never_fit_are_rejected_with_a_reason():
    trace = make_trace([0, 0, 0], [10, 5000, 10], [10, 5000, 10])
    cfg = wb.SimConfig(scheduler="dynamic_no_bins", gpu_mem_gb=1.0, gpu_memory_utilization=1.0, model_mem_gb=0,
                       mem_margin_gb=0,
                       kv_gb_per_token=1 / 1000)
    res = wb.simulate(trace, cfg)
    assert res.summary["rejected"] == 1 and res.summary["completed"] == 2
    status = res.requests["status"].astype(str).tolist()
    assert status[1].startswith("rejected") and "KV-cache capacity" in status[1]
    assert res.summary["sla_violation_rate"] == pytest.approx(1 / 3)


def test_memory_bound_cuts_batches():
    trace = make_trace(np.zeros(100), np.full(100, 100), np.full(100, 100))  # 200 tokens each
    cfg = wb.SimConfig(scheduler="static_fifo", batch_size=32, gpu_mem_gb=1.0, gpu_memory_utilization=1.0,
                       model_mem_gb=0, mem_margin_gb=0,
                       kv_gb_per_token=1 / 1000)  # 1000 tokens: 5 requests per batch
    res = wb.simulate(trace, cfg)
    assert res.summary["batch_size_max"] == 5 and res.summary["completed"] == 100


def test_dynamic_controller_grows_under_overload_and_shrinks_over_budget():
    n = 20_000
    rng = np.random.default_rng(0)
    trace = make_trace(np.zeros(n), np.full(n, 200), rng.integers(50, 200, n))
    cheap = wb.LatencyModel(base_s=0.01, per_token_s=1e-4, batch_penalty=0.4)  # ~0.05 s per batch: far under budget
    res = wb.simulate(trace, wb.SimConfig(scheduler="dynamic_no_bins", b_max=64), latency=cheap)
    limits = res.batches["size_limit"].to_numpy()
    assert limits[0] == (1 + 64) // 2                     # Algorithm 2 starts mid-interval
    # b_low = min(b_bar, b_high - alpha) keeps the midpoint alpha/2 below b_max (paper's rule, alpha = 2)
    assert np.all(np.diff(limits[:30]) >= 0) and np.all(limits[-100:] == 63)
    # t(b) = 0.02 + 1e-4 E[max of b uniform(1, 2000)] (1 + 0.5 (b-1)/b) rises smoothly from 0.12 s (b=1)
    # to 0.31 s (b=32): a 0.25 s budget is feasible near b=5 and the controller must hold it
    uniform = make_trace(np.zeros(n), np.zeros(n, int), rng.integers(1, 2001, n))
    lat = wb.LatencyModel(base_s=0.02, per_token_s=1e-4, batch_penalty=0.5)
    cfg = wb.SimConfig(scheduler="dynamic_no_bins", b_max=64, d_sla_s=0.5, sla_budget_fraction=0.5)
    res = wb.simulate(uniform, cfg, latency=lat)
    steady = res.batches["service_s"].to_numpy()[200:]
    assert abs(steady.mean() - 0.25) / 0.25 < 0.03
    assert 3 <= res.batches["size_limit"].to_numpy()[200:].mean() <= 8


def test_bin_policies_all_run_and_can_differ():
    trace = random_trace(5000, seed=3, rate=80)
    sums = {p: wb.simulate(trace, wb.SimConfig(num_gpus=1, bin_policy=p)).summary for p in
            ("oldest", "round_robin", "longest_queue")}
    assert len({round(s["latency_p99_s"], 9) for s in sums.values()}) > 1
    for s in sums.values():
        assert s["completed"] == 5000 and s["k_bins_effective"] == 4
        assert sum(s[f"bin{j}_requests"] for j in range(4)) == 5000


def test_summary_has_every_documented_metric():
    res = wb.simulate(random_trace(500), wb.SimConfig(num_gpus=2, **GRID_MEMORY), latency="seed-grid")
    names = ["offered", "completed", "rejected", "makespan_s", "throughput_rps", "throughput_tokens_per_s",
             "goodput_rps", "sla_violation_rate", "latency_mean_s", "latency_p50_s", "latency_p95_s",
             "latency_p99_s", "latency_max_s", "queue_delay_mean_s", "queue_delay_p99_s", "service_time_mean_s",
             "gpu_utilization_mean", "gpu_utilization_min", "gpu_utilization_max", "num_batches",
             "batch_size_mean", "batch_size_max", "k_bins_effective", "sim_wall_s", "sim_requests_per_s",
             "bin0_requests", "bin0_batch_size_mean"]
    assert set(names) <= set(res.summary)
    assert list(res.requests.columns) == ["id", "arrival_s", "prompt_tokens", "output_tokens", "start_s",
                                          "finish_s", "latency_s", "queue_s", "met_sla", "gpu", "bin", "batch_id",
                                          "status"]
    assert {"offered_rps", "bin0_latency_mean_s", "bin0_latency_p99_s", "bin0_sla_violation_rate",
            "bin0_gpu_time_share", "bin0_offered"} <= set(res.summary)
    assert 0 < res.summary["gpu_utilization_mean"] <= 1


def test_simulate_is_deterministic_and_overrides_apply():
    trace = random_trace(2000)
    a = wb.simulate(trace, wb.SimConfig(predictor="noisy", seed=5))
    b = wb.simulate(trace, predictor="noisy", seed=5)
    assert np.array_equal(a.finish_s, b.finish_s)
    c = wb.simulate(trace, predictor="noisy", seed=6)
    assert not np.array_equal(a.bin, c.bin)


SCRIPT = """
import json, numpy as np, workbench as wb
rng = np.random.default_rng(7)
n = 1500
arr = np.cumsum(rng.exponential(1/60, n)); arr -= arr[0]
tr = wb.Trace.from_arrays(arr, rng.integers(1, 900, n), rng.integers(1, 600, n), source="t")
out = {}
for s in %r:
    r = wb.simulate(tr, wb.SimConfig(scheduler=s, num_gpus=2, k_bins=3))
    out[s] = {"finish_s": r.finish_s.tolist(), "batch_id": r.batch_id.tolist(), "batch_float": r.batch_float.tolist(),
              "batch_int": r.batch_int.tolist()}
print(json.dumps(out))
""" % (SCHEDULERS,)


def test_uncompiled_path_gives_the_same_results():
    """Every request's finish time and batch, every batch's record, compiled and as plain Python: integers equal,
    times to 1e-9."""
    compiled = run_script_json(SCRIPT, disable_jit=False)
    assert_same_results(compiled, run_script_json(SCRIPT, disable_jit=True))
    assert all(len(compiled[s]["finish_s"]) == 1500 for s in SCHEDULERS)


def test_bad_inputs_to_simulate():
    with pytest.raises(TypeError, match="Trace.from_arrays"):
        wb.simulate(object(), wb.SimConfig())
    with pytest.raises(ValueError, match="unknown 'x'"):
        wb.simulate(random_trace(10), scheduler="x")


def test_per_bin_metrics_offered_rate_and_request_columns_by_hand():
    # two bins (oracle, K=2): short requests (10 tokens) and long ones (1000); one GPU, batch 1 (static_fifo
    # has one bin, so multi_bin_fixed with batch 1 serves each request alone, first formed first served)
    trace = make_trace([0, 0, 1, 4], [0, 0, 0, 0], [10, 1000, 10, 1000])
    lat = wb.LatencyModel(base_s=0.0, per_token_s=1e-3, batch_penalty=0.0)     # 0.01 s short, 1 s long
    res = wb.simulate(trace, wb.SimConfig(scheduler="multi_bin_fixed", k_bins=2, batch_size=1, predictor="oracle",
                                          d_sla_s=1.0), latency=lat)
    # t=0: both full at 0, bin 0 (lower index wins the tie) then bin 1: r0 0-0.01, r1 0.01-1.01 (latency 1.01,
    # late); r2 at 1.01-1.02 (queued 0.01 s); r3 at 4-5 (latency 1.0, on time)
    s = res.summary
    assert s["offered_rps"] == pytest.approx(4 / 4.0)
    assert s["bin0_offered"] == 2 and s["bin1_offered"] == 2
    assert s["bin0_latency_mean_s"] == pytest.approx((0.01 + 0.02) / 2)
    assert s["bin1_latency_mean_s"] == pytest.approx((1.01 + 1.0) / 2)
    assert s["bin0_sla_violation_rate"] == 0.0 and s["bin1_sla_violation_rate"] == 0.5
    assert s["bin1_gpu_time_share"] == pytest.approx(2.0 / 2.02)
    req = res.requests
    assert list(req["prompt_tokens"]) == [0, 0, 0, 0] and list(req["output_tokens"]) == [10, 1000, 10, 1000]
    np.testing.assert_allclose(req["latency_s"], [0.01, 1.01, 0.02, 1.0])
    np.testing.assert_allclose(req["queue_s"], [0.0, 0.01, 0.01, 0.0], atol=1e-12)
    assert list(req["met_sla"]) == [True, False, True, True]


def reference_number_in_system(arrival_s, service_s, num_gpus, batch_size, sample_s):
    """A separate pure-Python static_fifo (up to ``batch_size`` waiting requests per idle GPU, FIFO,
    work conserving; ``service_s(size, requests)`` gives a batch's time) that reports the number of
    requests in the system (waiting + in service) at each instant of sorted ``sample_s``."""
    queue, running = [], []          # running: heap of (finish_s, size)
    in_service, i, k = 0, 0, 0
    counts = np.empty(len(sample_s))
    n = len(arrival_s)
    while i < n or running:
        t_next = min(arrival_s[i] if i < n else np.inf, running[0][0] if running else np.inf)
        while k < len(sample_s) and sample_s[k] < t_next:
            counts[k] = len(queue) + in_service
            k += 1
        if running and running[0][0] <= t_next:
            _, size = heapq.heappop(running)
            in_service -= size
        else:
            while i < n and arrival_s[i] == t_next:
                queue.append(i)
                i += 1
        while queue and len(running) < num_gpus:
            batch, queue = queue[:batch_size], queue[batch_size:]
            heapq.heappush(running, (t_next + service_s(batch), len(batch)))
            in_service += len(batch)
    counts[k:] = 0
    return counts


@pytest.mark.parametrize("num_gpus,batch_size", [(1, 1), (3, 4)])
def test_littles_law_against_an_independently_sampled_number_in_system(num_gpus, batch_size):
    # L (time-average number in system) is estimated by sampling a separate reference implementation at
    # uniformly random instants; lambda W comes from the engine's per-request latencies.  They agree only if
    # the engine's waiting and service times are right: not an identity of one record.
    rng = np.random.default_rng(11)
    n = 4000
    trace = random_trace(n, seed=5, rate=20.0 * num_gpus, mean_out=150)
    lat = wb.LatencyModel(base_s=0.01, per_token_s=1e-4, batch_penalty=0.3)
    res = wb.simulate(trace, wb.SimConfig(scheduler="static_fifo", num_gpus=num_gpus, batch_size=batch_size),
                      latency=lat)
    horizon = float(np.nanmax(res.finish_s))
    lam_w = n * float(np.mean(res.finish_s - res.arrival_s)) / horizon
    seq = trace.prompt_tokens.astype(np.int64) + trace.output_tokens
    samples = np.sort(rng.uniform(0.0, horizon, 50_000))
    counts = reference_number_in_system(
        trace.arrival_s, lambda batch: float(lat.service_time_s(len(batch), seq[batch].max())), num_gpus,
        batch_size, samples)
    stderr = counts.std(ddof=1) / np.sqrt(counts.size)
    assert abs(counts.mean() - lam_w) <= 4 * stderr + 1e-9, (counts.mean(), lam_w, stderr)
    assert counts.mean() > 0.5                             # a loaded system, so the check has something to test
