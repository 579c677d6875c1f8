"""plan_fleet (workbench.study.runs.fleet) and its bound (fleet_bound): the bound against the simulator, pruning
against an exhaustive search, the same answer on Dask, the neighbour check, and bad input."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import workbench as wb
from workbench.hardware.catalog import get_gpu
from workbench.sim.profiles import get_profile, roofline_memory_fields
from workbench.study.runs import fleet
from workbench.study.runs import fleet_bound as fb

X, B = 2048, 256


@pytest.fixture(scope="module")
def trace():
    return wb.synthetic_trace(1500)


def _settings(**kw) -> fleet.FleetSettings:
    return fleet.FleetSettings(**{"model": "llama-3.1-8b", "ttft_s": 2.0, "tpot_s": 0.1, "attainment": 0.9,
                                  "max_gpus": 64, **kw})


# ------------------------------------------------------------------------------------------ alone times
@pytest.mark.parametrize("model, gpu, step", [
    ("llama-3.1-8b", "l40s", lambda: wb.StepTimeModel.roofline("llama-3.1-8b", "l40s", 1, max_num_batched_tokens=X)),
    ("llama-3.1-8b", "h100-sxm", lambda: get_profile("llama-3.1-8b-h100")),     # BLIS: arrival and token overheads
    ("opt-13b", "a100-80gb", lambda: get_profile("opt-13b-a100")),             # DistServe: two decode regimes
])
def test_alone_times_are_what_the_engine_gives_a_request_alone(model, gpu, step):
    """TTFT (prompt chunks of max_num_batched_tokens, overheads) and TPOT of requests far apart, each alone on
    the replica: the simulator's, to rounding."""
    step = step()
    prompt = np.array([100, 2048, 3000, 5000, 1, 4100])
    output = np.array([1, 2, 50, 7, 300, 64])
    trace = wb.Trace.from_arrays(np.arange(prompt.size) * 1000.0, prompt, output)
    cfg = wb.SimConfig(scheduler="continuous_fcfs", num_gpus=1, chunked_prefill=True, max_num_batched_tokens=X,
                       **roofline_memory_fields(model, gpu, 1, max_num_batched_tokens=X))
    done = wb.simulate(trace, cfg, latency=step).requests
    ttft, tpot, decode = fb.alone_times(step, prompt, output, chunk_tokens=X)
    np.testing.assert_allclose(ttft, done.ttft_s.to_numpy(), rtol=1e-9)
    np.testing.assert_allclose(tpot, done.tpot_s.to_numpy(), rtol=1e-9)
    assert np.isnan(tpot[0]) and decode[0] == 0.0


def test_alone_times_of_a_disaggregated_deployment():
    """Prefill alone in one piece on the prefill instance; decode alone plus the KV transfer spread over the
    output: the disaggregated engine's TTFT and TPOT for requests far apart."""
    settings = _settings()
    gpu = get_gpu("h100-sxm")
    cand = fleet.Candidate(gpu, "disaggregated", prefill_tp=1, decode_tp=2)
    prompt = np.array([100, 3000, 700])
    output = np.array([5, 40, 300])
    trace = wb.Trace.from_arrays(np.arange(3) * 1000.0, prompt, output)
    cfg, latency = fleet.fleet_setup(settings, cand, {"prefill": 1, "decode": 1}, 3000)
    done = wb.simulate(trace, cfg, latency=latency).requests
    ttft, _, _ = fb.alone_times(latency["prefill"], prompt, output, chunk_tokens=None)
    _, tpot, _ = fb.alone_times(latency["decode"], prompt, output, chunk_tokens=None)
    tpot = tpot + cfg.kv_transfer_s(prompt) / (output - 1)
    np.testing.assert_allclose(ttft, done.ttft_s.to_numpy(), rtol=1e-9)
    np.testing.assert_allclose(tpot, done.tpot_s.to_numpy(), rtol=1e-6)


# ------------------------------------------------------------------------------------------ per-step bound
STEP_MODELS = {
    "roofline llama-3.1-8b l40s tp1": lambda: wb.StepTimeModel.roofline("llama-3.1-8b", "l40s", 1,
                                                                         max_num_batched_tokens=X),
    "roofline llama-3.1-70b h100 tp4": lambda: wb.StepTimeModel.roofline("llama-3.1-70b", "h100-sxm", 4,
                                                                          max_num_batched_tokens=X),
    "roofline qwen3-30b-a3b (MoE) h100 tp1": lambda: wb.StepTimeModel.roofline("qwen3-30b-a3b", "h100-sxm", 1,
                                                                                max_num_batched_tokens=X),
    "roofline linear fit l4 tp2": lambda: wb.StepTimeModel.roofline("llama-3.1-8b", "l4", 2, table=False,
                                                                     max_num_batched_tokens=X),
    "measured opt-13b-a100": lambda: get_profile("opt-13b-a100"),
    "measured llama-3.1-8b-h100 (BLIS)": lambda: get_profile("llama-3.1-8b-h100"),
}
_COEFS = {}


def _model(name):
    if name not in _COEFS:
        step = STEP_MODELS[name]()
        _COEFS[name] = (step, fb.work_coefficients(step, tokens_per_step=X, seqs_per_step=B))
    return _COEFS[name]


@st.composite
def steps(draw):
    """A step vLLM V1 could run: prefill pieces (tokens after a cached prefix) and decodes (contexts), at most X
    tokens and B sequences in all."""
    decodes = draw(st.lists(st.integers(1, 20_000), max_size=60))
    room = X - len(decodes)
    pieces = []
    for _ in range(draw(st.integers(0, 3))):
        if room < 1 or len(pieces) + len(decodes) >= B:
            break
        length = draw(st.integers(1, room))
        pieces.append((length, draw(st.integers(0, 16_000))))
        room -= length
    if not pieces and not decodes:
        decodes = [draw(st.integers(1, 20_000))]
    return pieces, decodes


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(STEP_MODELS)), step_contents=steps())
def test_a_step_takes_at_least_the_shares_the_bound_gives_its_requests(name, step_contents):
    """The bound's first fact (fleet_bound's docstring): every step takes at least its requests' shares (the fixed
    cost split by tokens or by sequences, the prompt pieces' and the decodes' lower bounds), for rooflines (dense,
    MoE, TP, their linear fits) and measured linear profiles, over random steps within the batch limits."""
    step, c = _model(name)
    pieces, decodes = step_contents
    l = np.array([p[0] for p in pieces], dtype=float)
    p = np.array([p[1] for p in pieces], dtype=float)
    ctx = np.array(decodes, dtype=float)
    took = step.step_time_s(l.astype(int), p.astype(int), ctx.astype(int)) if l.size else step.decode_time_s(ctx)
    tokens, seqs = l.sum() + ctx.size, l.size + ctx.size
    pairs = (l * (p + l)).sum()
    variable = (c.per_prompt_token_s * l.sum() + (c.per_pair_s * pairs if c.per_pair_s >= 0 else 0.0)
                + c.per_piece_s * l.size + c.per_decode_s * ctx.size + c.per_context_s * ctx.sum())
    fixed = c.fixed_s * max(tokens / X, seqs / B)
    assert took >= (fixed + variable) * (1 - 1e-9)


def test_work_coefficients_of_a_linear_model_by_hand():
    step = wb.StepTimeModel(prefill=(0.01, 1e-4, 1e-8), decode=(0.02, 2e-7, 1e-4), decode_large=(0.015, 3e-7, 5e-5),
                            decode_large_threshold=64)
    c = fb.work_coefficients(step, tokens_per_step=X, seqs_per_step=B)
    assert (c.fixed_s, c.per_prompt_token_s, c.per_pair_s, c.per_piece_s) == (0.01, 1e-4, 1e-8, 0.0)
    assert (c.per_decode_s, c.per_context_s) == (5e-5, 2e-7)   # the smaller of each regime's coefficient
    work = fb.request_work_s(c, [3000], [11], chunk_tokens=X)
    # prompt 3000 in chunks 2048 + 952: b P + c P (P + 1) / 2; 10 decodes at contexts 3001..3010
    assert work["prefill"][0] == pytest.approx(1e-4 * 3000 + 1e-8 * 3000 * 3001 / 2)
    assert work["decode"][0] == pytest.approx(10 * 5e-5 + 2e-7 * sum(range(3001, 3011)))
    assert work["fixed_prefill_tokens"][0] == pytest.approx(0.01 * 3000 / X)
    assert work["fixed_decode_seqs"][0] == pytest.approx(0.01 * 10 / B)
    assert work["fixed_prefill_seqs"][0] == pytest.approx(0.01 * 2 / B)


def test_fewest_replicas_by_hand():
    """Four requests arriving together, each 1 s of work due within 2 s: one replica does 2 of them, so with one
    miss allowed two replicas are needed, with two misses one."""
    arrival = np.zeros(4)
    deadline = np.full(4, 2.0)
    work = np.ones(4)
    kwargs = dict(capacity_per_replica_per_s=1.0, lengths=[2.0 + 1e-9])
    assert fb.fewest_replicas(arrival, deadline, deadline, work, work, budget=0, **kwargs)[0] == 2
    assert fb.fewest_replicas(arrival, deadline, deadline, work, work, budget=1, **kwargs)[0] == 2   # 3 s of work
    assert fb.fewest_replicas(arrival, deadline, deadline, work, work, budget=2, **kwargs)[0] == 1
    assert fb.fewest_replicas(arrival, deadline, deadline, work, work, budget=4, **kwargs)[0] == 0
    # work due after the window's end (second deadline outside) counts only its first part
    late = np.full(4, 5.0)
    assert fb.fewest_replicas(arrival, deadline, late, 0.5 * work, work, budget=0, **kwargs)[0] == 1


# ------------------------------------------------------------------------------------------ bound vs simulator
COLOCATED_CASES = [("llama-3.1-8b", "l40s", 1), ("llama-3.1-8b", "h100-sxm", 1), ("llama-3.1-8b", "a100-80gb", 2),
                   ("opt-13b", "a100-80gb", 1)]


@pytest.mark.parametrize("model, gpu, tp", COLOCATED_CASES)
def test_the_bound_is_an_upper_bound_on_capacity(trace, model, gpu, tp):
    """At the capacity the simulator finds for n replicas (wb.capacity: the largest rate at which they keep the
    SLA), the bound asks for at most n: it never removes a fleet the simulator would accept.  Also not vacuous:
    at 30x the one-replica capacity it asks for more than one (it is 6-13x optimistic on these: it counts every
    token at the cost of the fullest step, and bursts only as far as its windows catch them)."""
    settings = _settings(model=model)
    g = get_gpu(gpu)
    step = fleet.step_model(settings, g, tp, "colocated")[0]
    for n in (1, 3):
        cfg = fleet.colocated_config(settings, g, tp, n)
        cap = wb.capacity(trace, cfg, criterion="slo", ttft_s=2.0, tpot_s=0.1, attainment=0.9, latency=step,
                          resolution=0.02).capacity_rps
        at = trace.time_scaled(cap / trace.mean_rate_rps)
        bound = fleet.Bounds(at, settings).colocated(g, tp)
        assert 1 <= bound.replicas["replicas"] <= n, (n, cap, bound)
        if n == 1:
            busy = fleet.Bounds(trace.time_scaled(30 * cap / trace.mean_rate_rps), settings).colocated(g, tp)
            assert busy.replicas["replicas"] >= 2


def test_the_bound_of_each_disaggregated_pool_is_below_the_simulator(trace):
    settings = _settings()
    g = get_gpu("l40s")
    cand = fleet.Candidate(g, "disaggregated", prefill_tp=1, decode_tp=1)
    for size in ({"prefill": 1, "decode": 1}, {"prefill": 2, "decode": 3}):
        cfg, latency = fleet.fleet_setup(settings, cand, size, int(trace.prompt_tokens.max()))
        cap = wb.capacity(trace, cfg, criterion="slo", attainment=0.9, latency=latency, resolution=0.02).capacity_rps
        bound = fleet.Bounds(trace.time_scaled(cap / trace.mean_rate_rps), settings).disaggregated(g, 1, 1)
        assert bound.feasible
        assert bound.replicas["prefill"] <= size["prefill"] and bound.replicas["decode"] <= size["decode"]


# ------------------------------------------------------------------------------------------ the plan
@pytest.fixture(scope="module")
def plans(trace):
    """One small case searched three ways: pruned per GPU type, pruned against the overall cheapest, and
    exhaustively (every candidate simulated)."""
    kw = dict(model="llama-3.1-8b", gpus=["l40s", "a100-80gb", "h100-sxm"], ttft_s=2.0, tpot_s=0.1, tp=(1, 2),
              max_gpus=24, rate_rps=12.0, headroom=False)
    return {prune: wb.plan_fleet(trace, prune=prune, **kw) for prune in ("none", "per_gpu", "global")}


def test_pruning_never_removes_the_cheapest(plans):
    full, per_gpu, overall = plans["none"], plans["per_gpu"], plans["global"]
    assert (full.table.status != "pruned").all() and (per_gpu.table.status == "pruned").any()
    assert overall.cheapest["fleet"] == full.cheapest["fleet"]
    assert overall.cheapest["dollars_per_hour"] == full.cheapest["dollars_per_hour"]
    exhaustive = full.cheapest_per_gpu().set_index("gpu")
    pruned = per_gpu.cheapest_per_gpu().set_index("gpu")
    assert set(exhaustive.index) == set(pruned.index)
    for gpu in exhaustive.index:
        assert pruned.loc[gpu, "dollars_per_hour"] == exhaustive.loc[gpu, "dollars_per_hour"], gpu
    # a candidate found by both searches has the same answer; the pruned ones say what their bound costs
    both = full.table.merge(per_gpu.table, on="candidate", suffixes=("", "_pruned"))
    found = both[(both.status == "meets SLA") & (both.status_pruned == "meets SLA")]
    assert len(found) and (found.gpus == found.gpus_pruned).all()
    assert per_gpu.table[per_gpu.table.status == "pruned"].reason.str.contains(r"\(\$[\d.,]+/h\), more than the cheapest").all()


def test_every_fleet_meeting_the_sla_needs_no_fewer_gpus_than_its_bound(plans):
    table = plans["none"].table
    ok = table[table.status == "meets SLA"]
    assert len(ok) >= 6 and (ok.bound_gpus <= ok.gpus).all()
    # and one replica (instance) fewer fails: the answer is the fewest
    trials = plans["none"].trials
    for row in ok[ok.topology == "colocated"].itertuples():
        if row.replicas > 1:
            fewer = trials[(trials.candidate == row.candidate) & (trials.replicas == row.replicas - 1)]
            assert len(fewer) == 1 and not fewer.meets_sla.iloc[0], row.candidate


def test_the_table_reads_cheapest_first_with_costs_and_sources(plans):
    plan = plans["per_gpu"]
    table, rate = plan.table, plan.rate_rps
    ok = table[table.status == "meets SLA"]
    assert list(ok.index) == list(range(len(ok))) and ok.dollars_per_hour.is_monotonic_increasing
    assert (ok["rank"] == np.arange(1, len(ok) + 1)).all() and table["rank"].iloc[len(ok):].isna().all()
    assert rate == pytest.approx(12.0)
    for r in ok.itertuples():
        assert r.dollars_per_hour == pytest.approx(r.gpus * r.price_per_gpu_hour)
        mean_output = plan.mean_output_tokens
        assert r.dollars_per_million_output_tokens == pytest.approx(r.dollars_per_hour / (rate * mean_output * 3600) * 1e6)
        assert r.slo_attainment >= 0.9 and r.decided_by in {"memory", "prefill compute", "prefill bandwidth",
                                                             "decode compute", "decode bandwidth"}
    sources = dict(zip(table.candidate, table.step_source))
    assert sources["h100-sxm colocated tp1"] == "measured" and sources["l40s colocated tp1"] == "roofline"
    assert (table.status.isin(fleet.STATUSES)).all() and table.reason.str.len().gt(10).all()
    assert plan.verdict.startswith("The cheapest fleet for 12 requests/s")


def test_headroom_is_the_capacity_search_from_the_answer(trace):
    plan = wb.plan_fleet(trace, model="llama-3.1-8b", gpus=["l40s"], ttft_s=2.0, tpot_s=0.1, tp=(1,),
                         topologies=("colocated",), rate_rps=12.0, max_gpus=16)
    best = plan.cheapest
    assert best["capacity_rps"] >= plan.rate_rps and best["headroom"] == pytest.approx(
        best["capacity_rps"] / plan.rate_rps - 1)
    cfg, latency = plan.fleet_config(best)
    assert cfg.num_gpus == best["replicas"] and latency.kind == "roofline"
    found = wb.capacity(plan.trace_at_load(trace), cfg, criterion="slo", attainment=0.9, latency=latency,
                        resolution=0.02)
    assert found.capacity_rps == pytest.approx(best["capacity_rps"])


def test_neighbours_of_the_cheapest_fail_the_sla_or_cost_more(trace, plans):
    plan = plans["per_gpu"]
    checks = fleet.neighbour_check(plan, trace)
    assert checks.holds.all()
    best = plan.cheapest
    fewer = checks[checks.neighbour.str.startswith("one ")]
    assert len(fewer) and not fewer.meets_sla.any() and (fewer.dollars_per_hour < best["dollars_per_hour"]).all()
    assert checks.neighbour.str.contains("next cheaper GPU type|cheapest .* fleet").any()


def test_the_same_answer_on_a_dask_cluster(trace):
    """executor="dask://host:port" (a dask.distributed LocalCluster): the same waves, the same table."""
    distributed = pytest.importorskip("distributed")
    kw = dict(model="llama-3.1-8b", gpus=["l40s", "h100-sxm"], ttft_s=2.0, tpot_s=0.1, tp=(1, 2),
              topologies=("colocated",), max_gpus=16, rate_rps=12.0, headroom=False)
    serial = wb.plan_fleet(trace, **kw)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        address = cluster.scheduler_address.replace("tcp://", "dask://")
        on_dask = wb.plan_fleet(trace, executor=address, **kw)
    columns = ["candidate", "status", "gpus", "dollars_per_hour", "slo_attainment", "bound_gpus"]
    pd.testing.assert_frame_equal(serial.table[columns], on_dask.table[columns])
    assert on_dask.verdict == serial.verdict


# ------------------------------------------------------------------------------------------ bad input
def test_a_gpu_with_no_price_is_refused_unless_given_one(trace):
    mine = dataclasses.replace(get_gpu("l40s"), key="my-l40s", price_per_hour=None)
    kw = dict(model="llama-3.1-8b", ttft_s=2.0, tpot_s=0.1, tp=(1,), topologies=("colocated",), max_gpus=4,
              headroom=False)
    with pytest.raises(ValueError, match=r"prices: 'my-l40s' has no price .* prices=\{'my-l40s'"):
        wb.plan_fleet(trace, gpus=[mine], **kw)
    plan = wb.plan_fleet(trace, gpus=[mine], prices={mine: 0.5}, **kw)
    assert plan.cheapest["price_per_gpu_hour"] == 0.5


def test_a_model_that_fits_no_gpu_says_so_with_the_numbers(trace):
    plan = wb.plan_fleet(trace, model="llama-3.1-70b", gpus=["l4", "a10g"], ttft_s=2.0, tpot_s=0.1, tp=(1, 2))
    assert plan.cheapest is None and (plan.table.status == "does not fit in memory").all()
    assert plan.verdict.startswith("No fleet: llama-3.1-70b fits on none of l4, a10g at TP up to 2")
    assert plan.table.reason.str.contains(r"GB usable").all()
    assert plan.verdict.endswith("raise tp, or choose a GPU with more memory.")


def test_requests_that_fit_no_replicas_kv_cache_are_a_memory_failure_with_the_share():
    """The weights fit but 40% of the requests are longer than one replica's whole KV cache: at attainment 0.9
    no fleet size helps (said as a memory failure, the share that fits and the cache's size, in every row and
    the verdict); at attainment 0.5 the same GPU is planned."""
    memory = roofline_memory_fields("llama-3.1-8b", get_gpu("l4"), 1, gpu_memory_utilization=0.75,
                                    max_num_batched_tokens=X, max_num_seqs=B)
    cfg = wb.SimConfig(scheduler="continuous_fcfs", num_gpus=1, **memory)
    kv_tokens = cfg.kv_blocks_effective * cfg.block_size          # what the simulator's replica holds
    base = wb.synthetic_trace(200, seed=3)
    long = np.arange(len(base)) % 5 < 2                           # 2 requests in 5: 40%
    prompt = np.where(long, 2 * kv_tokens, np.minimum(base.prompt_tokens, 1000)).astype(base.prompt_tokens.dtype)
    output = np.minimum(base.output_tokens, 200).astype(base.output_tokens.dtype)
    trace = dataclasses.replace(base, prompt_tokens=prompt, output_tokens=output)
    kw = dict(model="llama-3.1-8b", gpus=["l4"], ttft_s=30.0, tpot_s=0.1, tp=(1,), max_gpus=8, headroom=False,
              gpu_memory_utilization=0.75)
    plan = wb.plan_fleet(trace, attainment=0.9, **kw)
    assert plan.cheapest is None and len(plan.table) == 2         # colocated and disaggregated (TP 1 each)
    assert (plan.table.status == "does not fit in memory").all() and plan.trials.empty
    colocated = plan.table[plan.table.topology == "colocated"].iloc[0]
    assert (f"only 60.0% of the requests fit one replica's KV cache ({kv_tokens:,} tokens) at all (the longest "
            f"needs {2 * kv_tokens + int(output[long].max()):,} tokens") in colocated.reason
    disaggregated = plan.table[plan.table.topology == "disaggregated"].iloc[0]
    assert "only 60.0% of the requests fit one decode instance's KV cache" in disaggregated.reason
    assert plan.verdict.startswith("No fleet: llama-3.1-8b fits on none of l4 at TP up to 1 with these requests: "
                                   "e.g. only 60.0% of the requests fit")
    assert plan.verdict.endswith("or a higher gpu_memory_utilization could.")
    plan = wb.plan_fleet(trace, attainment=0.5, **kw)
    assert not (plan.table.status == "does not fit in memory").any()


def test_an_sla_no_candidate_meets_names_the_binding_limit_and_the_closest(trace):
    plan = wb.plan_fleet(trace, model="llama-3.1-8b", gpus=["l40s", "h100-sxm"], ttft_s=2.0, tpot_s=0.004,
                         tp=(1, 2), max_gpus=8, headroom=False)
    assert plan.cheapest is None and plan.table.status.eq("misses TPOT").all()
    assert "the limit that binds is TPOT" in plan.verdict and "the closest is" in plan.verdict
    assert plan.table.reason.str.contains("even alone").all()


def test_max_gpus_below_the_smallest_fleet_says_how_many(trace):
    """Below what the bound allows: not simulated, the verdict says how many GPUs at least; above it but below
    what the simulator needs: simulated up to max_gpus, the verdict says how close that came and which limit."""
    kw = dict(model="llama-3.1-8b", gpus=["l40s"], ttft_s=2.0, tpot_s=0.1, tp=(1,), topologies=("colocated",))
    plan = wb.plan_fleet(trace, max_gpus=2, rate_rps=600.0, **kw)
    assert plan.cheapest is None and plan.table.status.iloc[0] == "above max_gpus" and plan.trials.empty
    need = int(plan.table.bound_gpus.iloc[0])
    assert need > 2 and f"raise max_gpus to at least {need}" in plan.verdict
    plan = wb.plan_fleet(trace, max_gpus=2, rate_rps=60.0, **kw)
    assert plan.cheapest is None and plan.table.status.iloc[0] in ("misses TTFT", "misses TPOT")
    assert "at max_gpus=2" in plan.table.reason.iloc[0] and len(plan.trials) >= 1
    assert plan.verdict.startswith("No fleet within max_gpus=2") and "the closest, 2 x l40s (tp1)" in plan.verdict
    assert "raise max_gpus to at least 3" in plan.verdict


@pytest.mark.parametrize("kwargs, error", [
    (dict(gpus=["h100-sxn"]), r"gpu: unknown 'h100-sxn' \(closest: h100-sxm"),
    (dict(gpus=[]), "gpus: must be a non-empty list"),
    (dict(gpus=["l4", "l4"]), "listed twice"),
    (dict(model="lama-3-8b"), r"model: unknown 'lama-3-8b'"),
    (dict(topologies=("colocated", "split")), r"topologies: unknown 'split'"),
    (dict(tp=(1, 0)), "tp: must be an integer >= 1"),
    (dict(attainment=1.5), "attainment"),
    (dict(tpot_s=50), "tpot_s: 50 s is implausibly large"),
    (dict(prices={"h100-sxm": 2.0}), r"prices: h100-sxm not in gpus"),
    (dict(prices={"l4": -1}), r"prices\['l4'\]: must be > 0"),
    (dict(max_gpus=0), "max_gpus: must be an integer >= 1"),
    (dict(rate_rps=-3), "rate_rps"),
    (dict(prune="some"), "prune: unknown 'some'"),
    (dict(executor="dask:/nowhere"), "executor: unknown"),
])
def test_bad_arguments_are_named(trace, kwargs, error):
    kw = dict(model="llama-3.1-8b", gpus=["l4"], ttft_s=2.0, tpot_s=0.1, tp=(1,), topologies=("colocated",),
              max_gpus=2, headroom=False)
    with pytest.raises(ValueError, match=error):
        wb.plan_fleet(trace, **{**kw, **kwargs})


def test_a_rate_replays_the_trace_scaled_in_time(trace):
    plan = wb.plan_fleet(trace, model="llama-3.1-8b", gpus=["h100-sxm"], ttft_s=2.0, tpot_s=0.1, tp=(1,),
                         topologies=("colocated",), rate_rps=3 * trace.mean_rate_rps, headroom=False)
    assert plan.rate_rps == pytest.approx(3 * trace.mean_rate_rps)
    at = plan.trace_at_load(trace)
    assert at.mean_rate_rps == pytest.approx(plan.rate_rps) and np.array_equal(at.output_tokens, trace.output_tokens)
    assert math.isfinite(plan.cheapest["slo_attainment"])
