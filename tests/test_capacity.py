import math
import sys

import numpy as np
import pytest

import workbench as wb
from workbench.sim.memory import GRID_MEMORY
from workbench.study.runs.capacity import CapacityError, capacity


def poisson_trace(n, rate, seed, output):
    rng = np.random.default_rng(seed)
    arrival = np.cumsum(rng.exponential(1 / rate, n))
    return wb.Trace.from_arrays(arrival - arrival[0], np.zeros(n, int), output(rng, n), source="poisson")


def test_deterministic_queue_capacity_is_the_service_rate():
    # D/D/1: evenly spaced arrivals, service exactly 0.1 s. Nobody waits while lambda <= 10/s; above it the
    # queue grows without bound, so with an SLA of 0.15 s and attainment 1 the capacity is exactly 10/s.
    n = 20_000
    trace = wb.Trace.from_arrays(np.arange(n, dtype=float), np.zeros(n, int), np.ones(n, int))
    lat = wb.LatencyModel(base_s=0.1, per_token_s=0.0, batch_penalty=0.0)
    cfg = wb.SimConfig(scheduler="static_fifo", batch_size=1, d_sla_s=0.15)
    res = capacity(trace, cfg, attainment=1.0, latency=lat, resolution=0.005)
    rate = n / (n - 1)                      # the trace's mean rate (span n - 1 seconds)
    assert res.capacity_rps == pytest.approx(10.0, rel=0.006)
    assert res.capacity_rps <= 10.0 + 1e-9 and res.scaling_above * rate > 10.0
    assert res.bounded and res.monotone and res.value == 1.0
    assert res.scaling_above / res.scaling - 1 <= 0.005 + 1e-12


def test_mm1_sojourn_quantile_matches_closed_form():
    # M/M/1 FCFS: the time in system is Exp(mu - lambda), so P(T <= d) >= 0.95 holds up to
    # lambda* = mu - ln(20) / d.  Service = 1 ms x geometric tokens (mean 100): mu = 10/s, lambda* = 7.0/s.
    trace = poisson_trace(300_000, 1.0, 1, lambda rng, n: rng.geometric(1 / 100, n))
    lat = wb.LatencyModel(base_s=0.0, per_token_s=1e-3, batch_penalty=0.0)
    cfg = wb.SimConfig(scheduler="static_fifo", batch_size=1, d_sla_s=1.0)
    res = capacity(trace, cfg, attainment=0.95, latency=lat, resolution=0.005)
    mu = 1 / (1e-3 * 100)
    theory = mu - math.log(20) / 1.0
    assert res.capacity_rps == pytest.approx(theory, rel=0.03)
    assert res.value >= 0.95 > res.value_above


def test_more_gpus_never_give_less_capacity():
    # on the seed grid (its load, memory and end-to-end SLA): multi_bin_dynamic meets the target on 1 GPU there
    trace = wb.load_trace(num_requests=20_000, seed=3, rps_scaling=200)
    caps = [capacity(trace, wb.SimConfig(num_gpus=g, **GRID_MEMORY), attainment=0.9, resolution=0.02,
                     latency="seed-grid").capacity_rps
            for g in (1, 2, 4, 8)]
    assert all(b >= a for a, b in zip(caps, caps[1:])), caps
    assert caps[-1] > 2 * caps[0]


def test_capacity_is_deterministic_and_reports_probes():
    trace = wb.load_trace(num_requests=5_000)
    a = capacity(trace, wb.SimConfig(num_gpus=2), attainment=0.9, resolution=0.02)
    b = capacity(trace, wb.SimConfig(num_gpus=2), attainment=0.9, resolution=0.02)
    assert a == b
    frame = a.probes_frame()
    assert list(frame.columns) == ["scaling", "rate_rps", "value", "passed"] and len(frame) == len(a.probes)
    row = a.to_row()
    assert row["capacity_probes"] == len(a.probes) and row["capacity_rps"] == a.capacity_rps


def test_p99_criterion():
    trace = poisson_trace(50_000, 1.0, 2, lambda rng, n: rng.geometric(1 / 100, n))
    lat = wb.LatencyModel(base_s=0.0, per_token_s=1e-3, batch_penalty=0.0)
    cfg = wb.SimConfig(scheduler="static_fifo", batch_size=1, d_sla_s=1.0)
    res = capacity(trace, cfg, criterion="p99_latency", latency=lat, resolution=0.01)
    # M/M/1: p99 of Exp(mu - lambda) <= 1 s  <=>  lambda <= mu - ln(100) = 5.39/s
    assert res.capacity_rps == pytest.approx(10 - math.log(100), rel=0.06)
    assert res.value <= 1.0


def test_target_above_the_attainable_share_is_refused_at_once():
    trace = wb.load_trace(num_requests=5_000, rps_scaling=200)
    with pytest.raises(CapacityError, match="could meet an end-to-end latency <= 1 s even alone"):
        capacity(trace, wb.SimConfig(num_gpus=100, **GRID_MEMORY), attainment=0.999, latency="seed-grid")
    with pytest.raises(CapacityError, match="could meet TTFT <= 1 s and TPOT <= 50 ms even alone"):
        capacity(trace, wb.SimConfig(num_gpus=100), attainment=0.999)   # the default: the suite's profile and SLA


def test_unreachable_target_is_refused_with_a_clear_message():
    trace = wb.Trace.from_arrays(np.arange(100, dtype=float), np.zeros(100, int), np.ones(100, int))
    lat = wb.LatencyModel(base_s=0.6, per_token_s=0.0, batch_penalty=0.0)   # alone 0.6 s; a batch of 2: 0.6 s
    # requests arrive 1 s apart in a burst-free trace; even stretched 1024x the pool of 1 GPU keeps up, so
    # the only way to miss is an SLA below one service time: refused before any search
    with pytest.raises(CapacityError, match="even alone"):
        capacity(trace, wb.SimConfig(scheduler="static_fifo", d_sla_s=0.5), latency=lat)
    # reachable alone but not under load: a search that fails down to the lowest scaling
    # 99 requests at once, 1 GPU, batch size 1: most wait far beyond 1 s at any scaling
    burst = wb.Trace.from_arrays(np.r_[np.zeros(99), 1.0], np.zeros(100, int), np.ones(100, int))
    with pytest.raises(CapacityError, match="no load meets the target. Even at 0.0977 requests/s"):
        capacity(burst, wb.SimConfig(scheduler="static_fifo", batch_size=1, d_sla_s=1.0), latency=lat)


@pytest.mark.filterwarnings("ignore::workbench.SlaScaleWarning")
def test_unbounded_capacity_is_flagged():
    trace = wb.Trace.from_arrays(np.arange(50, dtype=float), np.zeros(50, int), np.ones(50, int))
    lat = wb.LatencyModel(base_s=0.001, per_token_s=0.0, batch_penalty=0.0)
    res = capacity(trace, wb.SimConfig(scheduler="static_fifo", num_gpus=64), latency=lat, scale_bounds=(1, 8))
    assert not res.bounded and res.scaling == 8 and math.isinf(res.scaling_above)


@pytest.mark.parametrize("kwargs,match", [
    (dict(criterion="mean"), "criterion: unknown"),
    (dict(attainment=1.5), "attainment: must be in"),
    (dict(resolution=0), "resolution: must be in"),
    (dict(start=0.0), "scale_bounds"),
])
def test_bad_arguments(kwargs, match):
    trace = wb.Trace.from_arrays(np.arange(10, dtype=float), np.zeros(10, int), np.ones(10, int))
    with pytest.raises(ValueError, match=match):
        capacity(trace, wb.SimConfig(), **kwargs)


def test_a_replay_already_run_serves_as_the_first_probe(monkeypatch):
    cap_mod = sys.modules["workbench.study.runs.capacity"]   # the package exports a function of the same name

    trace = wb.load_trace(num_requests=5_000)
    cfg = wb.SimConfig(num_gpus=2)
    fresh = capacity(trace, cfg, attainment=0.9, resolution=0.02)
    replay = wb.simulate(trace, cfg).summary
    calls = []
    real = cap_mod.simulate
    monkeypatch.setattr(cap_mod, "simulate", lambda *a, **k: calls.append(1) or real(*a, **k))
    reused = capacity(trace, cfg, attainment=0.9, resolution=0.02, start_summary=replay)
    assert reused == fresh
    assert len(calls) == len(fresh.probes) - 1


def test_multi_bin_fixed_capacity_is_found_above_a_failing_light_load():
    # Evenly spaced arrivals at rate lam, exact batches of 4, 0.1 s per batch, SLA 1 s, attainment 1. The first
    # request of a batch waits 3 / lam for it to fill, so light load fails below lam = 3 / 0.9 = 3.33/s; the GPU
    # keeps up while 4 / lam >= 0.1 s, i.e. up to lam = 40/s: the passing region is [3.33, 40] req/s.
    # At the trace's own rate (1/s) the criterion fails, and a search that only halves from there never finds
    # the region (the old search raised "misses the target even at scaling x0.000977").
    n = 20_000
    trace = wb.Trace.from_arrays(np.arange(n, dtype=float), np.zeros(n, int), np.ones(n, int))
    lat = wb.LatencyModel(base_s=0.1, per_token_s=0.0, batch_penalty=0.0)
    cfg = wb.SimConfig(scheduler="multi_bin_fixed", k_bins=1, batch_size=4, d_sla_s=1.0)
    res = capacity(trace, cfg, attainment=1.0, latency=lat, resolution=0.005)
    rate = n / (n - 1)
    # above 40/s the backlog grows by 0.1 - 4 / lam per batch over 5,000 batches: at 40.1/s that is 1.25 s
    assert 39.7 <= res.capacity_rps <= 40.1
    assert not res.monotone                                    # light loads below the answer failed
    assert 3.33 / 4 <= res.scaling_region_low * rate <= 3.34 * 4   # the scan point where the passing region starts
    light = [p for p in res.probes if p.rate_rps < 3.3]
    assert light and not any(p.passed for p in light)
    assert res.attainable == 1.0                               # a full batch takes 0.1 s <= 1 s


def test_attainable_share_accounts_for_exact_batches():
    # one long request per ten: alone it takes 0.2 + 0.8 = 1.0 s (meets 1 s), in a batch of 8 with penalty 1
    # it takes 0.2 + 0.8 (1 + 7/8) = 1.7 s (misses); short ones 0.2 + 0.08 (1 + 7/8) = 0.35 s either way
    from workbench.study.runs.capacity import attainable_share
    n = 1000
    output = np.where(np.arange(n) % 10 == 0, 800, 80)
    trace = wb.Trace.from_arrays(np.arange(n, dtype=float), np.zeros(n, int), output)
    lat = wb.LatencyModel(base_s=0.2, per_token_s=1e-3, batch_penalty=1.0)
    alone = attainable_share(trace, wb.SimConfig(scheduler="static_fifo", batch_size=8), lat)
    exact = attainable_share(trace, wb.SimConfig(scheduler="multi_bin_fixed", batch_size=8, k_bins=2), lat)
    assert alone == 1.0
    assert exact == pytest.approx((900 + 2 * 7) / n)           # + the two bins' last partial batches


# --------------------------------------------------------------------------- the bracket search vs the exhaustive scan


@pytest.mark.parametrize("method", ["bracket", "scan"])
def test_both_searches_find_the_deterministic_queue_service_rate(method):
    # D/D/1 as above: the capacity is exactly 10/s; each search must land within its resolution below it
    n = 20_000
    trace = wb.Trace.from_arrays(np.arange(n, dtype=float), np.zeros(n, int), np.ones(n, int))
    lat = wb.LatencyModel(base_s=0.1, per_token_s=0.0, batch_penalty=0.0)
    cfg = wb.SimConfig(scheduler="static_fifo", batch_size=1, d_sla_s=0.15)
    res = capacity(trace, cfg, attainment=1.0, latency=lat, resolution=0.005, method=method)
    assert 10.0 / 1.005 - 1e-9 <= res.capacity_rps <= 10.0 + 1e-9
    assert res.monotone and res.bounded


@pytest.mark.parametrize("method", ["bracket", "scan"])
def test_both_searches_match_the_mm1_closed_form(method):
    # M/M/1 sojourn quantile as above: lambda* = mu - ln(20) / d = 7.0/s
    trace = poisson_trace(300_000, 1.0, 1, lambda rng, n: rng.geometric(1 / 100, n))
    lat = wb.LatencyModel(base_s=0.0, per_token_s=1e-3, batch_penalty=0.0)
    cfg = wb.SimConfig(scheduler="static_fifo", batch_size=1, d_sla_s=1.0)
    res = capacity(trace, cfg, attainment=0.95, latency=lat, resolution=0.005, method=method)
    assert res.capacity_rps == pytest.approx(10 - math.log(20), rel=0.03)


def test_md1_mean_wait_criterion_by_both_searches():
    # M/D/1 (Poisson arrivals, service exactly 0.1 s): P(no wait) = 1 - rho, so "at least 60% of requests
    # finish within 0.1 s + epsilon" (only those that find the server idle) holds up to rho = 0.4, lambda = 4/s
    trace = poisson_trace(200_000, 1.0, 5, lambda rng, n: np.ones(n, int))
    lat = wb.LatencyModel(base_s=0.1, per_token_s=0.0, batch_penalty=0.0)
    cfg = wb.SimConfig(scheduler="static_fifo", batch_size=1, d_sla_s=0.1 + 1e-9)
    found = {m: capacity(trace, cfg, attainment=0.6, latency=lat, resolution=0.005, method=m) for m in
             ("bracket", "scan")}
    for res in found.values():
        assert res.capacity_rps == pytest.approx(4.0, rel=0.02)
    assert abs(found["bracket"].capacity_rps / found["scan"].capacity_rps - 1) <= 0.0101


@pytest.mark.parametrize("scheduler,gpus,grid_too", [("static_fifo", 8, False), ("dynamic_no_bins", 4, True),
                                                     ("multi_bin_dynamic", 4, True), ("continuous_fcfs", 2, False)])
def test_bracket_agrees_with_the_scan_on_the_synthetic_trace(scheduler, gpus, grid_too):
    # in step mode (TTFT/TPOT, every scheduler) and on the seed grid (end-to-end, static ones) the grid search
    # lands within two resolution steps of the exhaustive search: on 20,000 requests attainment still wobbles by
    # about 0.1 point from one load to the next, so the two may stop at neighbouring crossings (the theory cases
    # above, where it falls smoothly, agree to one step)
    from workbench.sim import profiles

    trace = wb.load_trace(num_requests=20_000, seed=7)
    step = profiles.get_profile("opt-13b-a100")
    memory = profiles.profile_config_fields("opt-13b-a100")
    cases = [(wb.SimConfig(scheduler=scheduler, num_gpus=gpus, **memory), dict(criterion="slo", latency=step))]
    if grid_too:
        cases.append((wb.SimConfig(scheduler=scheduler, num_gpus=gpus, **GRID_MEMORY),
                      dict(criterion="attainment", latency="seed-grid")))
    for cfg, kwargs in cases:
        scan = capacity(trace, cfg, attainment=0.9, resolution=0.02, method="scan", **kwargs)
        grid = capacity(trace, cfg, attainment=0.9, resolution=0.02, method="bracket", **kwargs)
        assert abs(grid.capacity_rps / scan.capacity_rps - 1) <= 2 * 0.0201, (cfg.scheduler, kwargs["criterion"])
        assert grid.value >= 0.9 > grid.value_above
        assert len(grid.probes) < len(scan.probes)


def test_the_bracket_answer_does_not_depend_on_the_hint_where_attainment_is_monotone():
    # M/D/1 as above: attainment falls smoothly and monotonically with load, so every start finds the same grid
    # point; a hint near the answer (with the slope a neighbouring search measured) saves probes
    trace = poisson_trace(200_000, 1.0, 5, lambda rng, n: np.ones(n, int))
    lat = wb.LatencyModel(base_s=0.1, per_token_s=0.0, batch_penalty=0.0)
    cfg = wb.SimConfig(scheduler="static_fifo", batch_size=1, d_sla_s=0.1 + 1e-9)
    plain = capacity(trace, cfg, attainment=0.6, latency=lat, method="bracket")
    assert plain.monotone
    for hint in (plain.capacity_rps, plain.capacity_rps * 1.04, plain.capacity_rps / 3, plain.capacity_rps * 50):
        hinted = capacity(trace, cfg, attainment=0.6, latency=lat, method="bracket", hint_rps=hint)
        assert hinted.capacity_rps == plain.capacity_rps and hinted.scaling_above == plain.scaling_above
    slope = (plain.value_above - plain.value) / math.log(plain.scaling_above / plain.scaling)
    good = capacity(trace, cfg, attainment=0.6, latency=lat, method="bracket", hint_rps=plain.capacity_rps * 1.02,
                    hint_slope=slope)
    assert good.capacity_rps == plain.capacity_rps
    assert len(good.probes) <= 4 < len(plain.probes)
    # the answer is a point of the fixed grid start x 1.01^k, the next point fails
    k = math.log(plain.scaling) / math.log(1.01)
    assert k == pytest.approx(round(k), abs=1e-6)
    assert plain.scaling_above == pytest.approx(plain.scaling * 1.01)


def test_on_a_rough_curve_each_start_lands_on_a_real_crossing():
    # 5,000 requests: attainment wobbles by a few tenths of a percent from one load to the next, so it crosses
    # the target more than once within a few percent; each search ends on a crossing it measured (pass at s,
    # fail at s x 1.01), and where it started is part of a sweep test's id (SweepTest.hint_from)
    trace = wb.load_trace(num_requests=5_000, seed=3)
    cfg = wb.SimConfig(scheduler="multi_bin_dynamic", num_gpus=4)
    plain = capacity(trace, cfg, attainment=0.9, method="bracket")
    for hint in (plain.capacity_rps * 1.04, plain.capacity_rps / 3):
        res = capacity(trace, cfg, attainment=0.9, method="bracket", hint_rps=hint)
        assert res.value >= 0.9 > res.value_above
        assert res.scaling_above == pytest.approx(res.scaling * 1.01)
        assert abs(res.capacity_rps / plain.capacity_rps - 1) < 0.1


def test_auto_uses_the_scan_for_batches_that_wait_to_fill():
    from workbench.study.runs.capacity import attainment_may_rise_with_load

    assert attainment_may_rise_with_load(wb.SimConfig(scheduler="multi_bin_fixed"))
    assert not any(attainment_may_rise_with_load(wb.SimConfig(scheduler=s))
                   for s in ("static_fifo", "dynamic_no_bins", "multi_bin_dynamic", "continuous_fcfs"))
    with pytest.raises(ValueError, match="method: unknown"):
        capacity(wb.load_trace(num_requests=100), wb.SimConfig(), method="fast")


def test_the_search_stops_where_the_attainment_target_cannot_resolve_the_bracket():
    # M/D/1 on 2,000 requests, a 0.1% grid: the share meeting the SLA has a sampling error of
    # sqrt(0.6 x 0.4 / 2000) = 1.1 points, far more than one 0.1% step of load changes it; the search stops once
    # the two ends of its bracket differ by less than that, a few steps wide, rather than walk the grid to the end
    trace = poisson_trace(2_000, 1.0, 5, lambda rng, n: np.ones(n, int))
    lat = wb.LatencyModel(base_s=0.1, per_token_s=0.0, batch_penalty=0.0)
    cfg = wb.SimConfig(scheduler="static_fifo", batch_size=1, d_sla_s=0.1 + 1e-9)
    res = capacity(trace, cfg, attainment=0.6, latency=lat, resolution=0.001, method="bracket")
    error = math.sqrt(0.6 * 0.4 / 2_000)
    assert res.value >= 0.6 > res.value_above
    assert res.value - res.value_above < error + 1e-12 < 2 * error
    assert res.scaling_above / res.scaling > 1.001 + 1e-9          # wider than one grid step
    assert len(res.probes) < 15
    assert res.capacity_rps == pytest.approx(4.0, rel=0.1)         # rho = 0.4 in theory (P(no wait) = 1 - rho)
