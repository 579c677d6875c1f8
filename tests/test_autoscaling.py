"""Autoscaling in the continuous engine (rule 16), its control loop and its policies."""

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import workbench as wb
from workbench.sim.autoscale import Stabilizer
from workbench.sim.autoscaling import AUTOSCALERS, Observation, register, Autoscaler
from workbench.sim.metrics import attainment_per_interval, count_at, replica_lives, seconds_per_interval

from conftest import run_script_json

STEP = wb.StepTimeModel(prefill=(0.01, 1e-4, 1e-7), decode=(0.005, 1e-6, 2e-4))


def trace_of(arrival_s, prompt, output):
    return wb.Trace.from_arrays(np.asarray(arrival_s, float), np.asarray(prompt), np.asarray(output), source="test")


def random_trace(n, seed, rate=40.0, max_prompt=300, mean_out=20):
    rng = np.random.default_rng(seed)
    arrival = np.cumsum(rng.exponential(1 / rate, n))
    return trace_of(arrival - arrival[0], rng.integers(1, max_prompt, n), rng.geometric(1 / mean_out, n))


def cfg_of(**kw):
    return wb.SimConfig(scheduler=kw.pop("scheduler", "continuous_fcfs"), **kw)


def same_requests(a, b):
    ra, rb = a.requests, b.requests
    for column in ("gpu", "ttft_s", "tpot_s", "e2e_s", "queue_s", "preemptions", "status"):
        pd.testing.assert_series_equal(ra[column], rb[column], check_names=False)


# ---------------------------------------------------------------- a policy that never changes the pool changes nothing
@pytest.mark.parametrize("kw", [
    dict(),
    dict(router="least_outstanding", chunked_prefill=True),
    dict(scheduler="continuous_sla", router="least_kv"),
    dict(scheduler="continuous_multi_bin", k_bins=3),
])
def test_a_constant_schedule_gives_the_fixed_pools_results(kw):
    """The engine stopped and resumed at every control instant (here every 0.05 s) gives, bit for bit, what one
    uninterrupted run gives: the control loop itself changes nothing."""
    tr = random_trace(600, 3, rate=60.0)
    fixed = wb.simulate(tr, cfg_of(num_gpus=3, **kw), latency=STEP)
    scaled = wb.simulate(tr, cfg_of(num_gpus=3, autoscaler="schedule", replica_schedule=(3,),
                                    autoscale_interval_s=0.05, **kw), latency=STEP)
    same_requests(fixed, scaled)
    assert scaled.summary["control_instants"] > 100 and scaled.summary["cold_starts"] == 0
    lives = scaled.replica_lives
    assert len(lives) == 3 and lives["at_end"].all() and (lives["provisioned_s"] == 0).all()
    assert scaled.summary["replica_hours"] * 3600 == pytest.approx(3 * scaled.autoscaling["end_s"])


def test_a_constant_schedule_with_a_step_table_and_prefix_caching():
    """The table path (kernel-profile / roofline step models) and the prefix cache under the control loop."""
    tr = random_trace(300, 5, rate=50.0, max_prompt=200)
    # full blocks share a chain (a common first block, then one of five branches); a partial last block is its own
    hashes = [([7] + [1000 * (r % 5) + j for j in range(p // 64)])[:p // 64] + ([10**6 + r] if p % 64 else [])
              for r, p in enumerate(tr.prompt_tokens.tolist())]
    cached = wb.Trace.from_arrays(tr.arrival_s, tr.prompt_tokens, tr.output_tokens, prefix_hashes=hashes,
                                  prefix_block_tokens=64)
    roofline = "opt-13b@a100-80gb"
    for trace, kw, latency in ((tr, dict(chunked_prefill=True, max_num_batched_tokens=2048), roofline),
                               (cached, dict(prefix_caching=True, router="prefix_affinity"), STEP)):
        fixed = wb.simulate(trace, cfg_of(num_gpus=2, **kw), latency=latency)
        scaled = wb.simulate(trace, cfg_of(num_gpus=2, autoscaler="schedule", replica_schedule=(2,),
                                           autoscale_interval_s=0.1, **kw), latency=latency)
        same_requests(fixed, scaled)


# ---------------------------------------------------------------- a cold start, by hand
def test_cold_start_and_drain_by_hand():
    """One replica, then two from t = 10 s (a schedule of 10-s periods, a 4-s cold start started 4 s ahead by
    the schedule's look-ahead: control instants every 2 s, so at t = 6 s, ready at 10 s), one from t = 20 s."""
    arrival = np.arange(0.0, 30.0, 0.5)
    tr = trace_of(arrival, np.full(arrival.size, 10), np.full(arrival.size, 2))
    cfg = cfg_of(num_gpus=1, autoscaler="schedule", replica_schedule=(1, 2, 1), schedule_interval_s=10.0,
                 cold_start_s=4.0, autoscale_interval_s=2.0)
    res = wb.simulate(tr, cfg, latency=STEP)
    lives = res.replica_lives.sort_values(["replica", "provisioned_s"])
    assert len(lives) == 2
    second = lives[lives.replica == 1].iloc[0]
    assert second.provisioned_s == 6.0 and second.ready_s == 10.0 and second.drain_s == 20.0
    # requests are light (one short step each): replica 1 is empty when it drains, so it leaves at once
    assert second.left_s == 20.0 and not second.at_end
    gpu = res.requests.gpu.to_numpy()
    assert (gpu[arrival < 10] == 0).all() and (gpu[arrival >= 20] == 0).all()
    # round robin over the two active replicas between 10 s and 20 s
    assert set(gpu[(arrival >= 10) & (arrival < 20)]) == {0, 1}
    assert res.summary["replica_hours"] * 3600 == pytest.approx(res.autoscaling["end_s"] + 14.0)
    assert res.summary["cold_starts"] == 1 and res.summary["drains"] == 1


def test_a_draining_replica_finishes_its_requests_then_leaves():
    """Two replicas with long requests; the pool drops to one at t = 1 s: the drained replica takes nothing new,
    finishes what it has (waiting ones included), and leaves at the end of its last step."""
    arrival = np.linspace(0.0, 3.0, 40)
    tr = trace_of(arrival, np.full(arrival.size, 100), np.full(arrival.size, 200))
    cfg = cfg_of(num_gpus=2, autoscaler="schedule", replica_schedule=(2, 1), schedule_interval_s=1.0,
                 cold_start_s=0.0, autoscale_interval_s=0.5, max_num_seqs=4)
    res = wb.simulate(tr, cfg, latency=STEP)
    r = res.requests
    assert (r.status == "completed").all()
    lives = res.replica_lives
    drained = lives[lives.drain_s.notna()].iloc[0]
    assert drained.drain_s == 1.0
    mine = r[r.gpu == drained.replica]
    assert (mine.arrival_s < 1.0).all() and len(mine) > 0
    assert (mine.arrival_s + mine.e2e_s).max() == pytest.approx(drained.left_s)
    assert drained.left_s > 1.5   # it had work to finish


# ---------------------------------------------------------------- invariants under aggressive scaling
def check_invariants(res, cfg, trace):
    r = res.requests
    s = res.summary
    # conservation: every request completed or rejected with a reason; none lost, none served twice
    assert s["completed"] + s["rejected"] == len(trace) == len(r)
    done = r.status == "completed"
    assert r.finish_s[done].notna().all() and (r.gpu[done] >= 0).all()
    events = res.replica_events
    lives = res.replica_lives
    maximum = cfg.max_replicas_effective
    # replicas within bounds at every control instant; every provisioned replica (draining too) within the slots
    control = res.replica_timeline
    assert (control.replicas >= cfg.min_replicas).all() and (control.replicas <= maximum).all()
    times = np.unique(np.r_[events.time_s, control.time_s])
    assert count_at(times, events).max() <= maximum
    assert count_at(times, events, ("active",)).min() >= 1
    # time never runs backwards: each replica's phase changes in order, each life in order
    for _, per in events.groupby("replica"):
        assert np.all(np.diff(per.time_s.to_numpy()) >= 0)
        assert (per.phase_from.to_numpy()[1:] == per.phase_to.to_numpy()[:-1]).all()
    assert (lives.provisioned_s <= lives.ready_s.fillna(np.inf)).all()
    assert (lives.ready_s.fillna(-np.inf) <= lives.left_s).all() and (lives.provisioned_s <= lives.left_s).all()
    # a replica serves only while it lives: routed while active (not starting, not draining), finished before
    # it leaves, so a removed replica serves nothing after it left
    join_s = r.arrival_s + STEP.arrival_overhead_s[0] + STEP.arrival_overhead_s[1] * r.prompt_tokens
    finish = r.arrival_s + r.e2e_s - r.output_tokens * STEP.token_overhead_s
    for i in np.flatnonzero(done.to_numpy()):
        g, t = r.gpu.iat[i], join_s.iat[i]
        life = lives[(lives.replica == g) & (lives.ready_s <= t) & (lives.left_s >= t)]
        assert len(life) == 1, (i, g, t)
        life = life.iloc[0]
        drained = events[(events.replica == g) & (events.phase_to == "draining") & (events.time_s <= t)
                         & (events.time_s >= life.provisioned_s)]
        undrained = events[(events.replica == g) & (events.phase_from == "draining") & (events.phase_to == "active")
                           & (events.time_s <= t) & (events.time_s >= life.provisioned_s)]
        assert len(drained) == len(undrained), f"request {i} routed to draining replica {g} at {t}"
        assert finish.iat[i] <= life.left_s + 1e-9
        assert r.start_s.iat[i] >= life.ready_s
    # billing adds up: the lives' seconds, hour by hour or in one sum
    per_hour = seconds_per_interval(lives.provisioned_s, lives.left_s, 3600.0, res.autoscaling["end_s"])
    assert per_hour.sum() == pytest.approx(lives.seconds.sum())
    assert s["replica_hours"] == pytest.approx(lives.seconds.sum() / 3600)


@pytest.mark.filterwarnings("ignore::workbench.BinningWarning")
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n=st.integers(1, 150), replicas=st.integers(1, 4), extra=st.integers(0, 4),
       min_replicas=st.integers(1, 3), cold_start=st.sampled_from((0.0, 0.05, 0.3)),
       interval=st.sampled_from((0.02, 0.1, 0.4)), scale_down=st.sampled_from((0.0, 0.2)),
       policy=st.sampled_from(("threshold", "schedule")), metric=st.sampled_from(("concurrency", "waiting", "kv")),
       target=st.sampled_from((0.5, 2.0, 6.0)), router=st.sampled_from(("round_robin", "least_outstanding", "least_kv")),
       chunked=st.booleans(), scheduler=st.sampled_from(("continuous_fcfs", "continuous_sla", "continuous_multi_bin")),
       kv_tokens=st.integers(200, 3000), data=st.data())
def test_invariants_under_aggressive_scaling(seed, n, replicas, extra, min_replicas, cold_start, interval, scale_down,
                                             policy, metric, target, router, chunked, scheduler, kv_tokens, data):
    tr = random_trace(n, seed, rate=80.0)
    maximum = max(replicas, min_replicas) + extra
    initial = min(max(replicas, min_replicas), maximum)
    kw = dict(scheduler=scheduler, num_gpus=initial, autoscaler=policy, min_replicas=min_replicas,
              max_replicas=maximum, cold_start_s=cold_start, autoscale_interval_s=interval, router=router,
              chunked_prefill=chunked, block_size=8, kv_blocks=max(1, kv_tokens // 8), max_num_seqs=8,
              max_num_batched_tokens=400, k_bins=2, b_max=8)
    if policy == "threshold":
        kw.update(autoscale_metric=metric, autoscale_target=min(target, 1.0) if metric == "kv" else target,
                  scale_down_after_s=scale_down, autoscale_window_s=interval * data.draw(st.sampled_from((0, 1, 3))))
    else:
        kw.update(replica_schedule=tuple(data.draw(st.lists(st.integers(min_replicas, maximum), min_size=1,
                                                            max_size=8))),
                  schedule_interval_s=data.draw(st.sampled_from((0.05, 0.3, 1.0))))
    cfg = cfg_of(**kw)
    res = wb.simulate(tr, cfg, latency=STEP)
    check_invariants(res, cfg, tr)


def test_conservation_under_aggressive_scaling():
    """A pool swinging between 1 and 6 replicas every 0.3 s under a burst, cold starts of 0.2 s: every request is
    served exactly once, by a replica that was active when it was routed and had not left when it finished."""
    tr = random_trace(3000, 9, rate=300.0, mean_out=40)
    cfg = cfg_of(num_gpus=1, autoscaler="schedule", replica_schedule=(1, 6, 1, 6, 1, 1, 1) * 12, schedule_interval_s=0.3,
                 cold_start_s=0.2, autoscale_interval_s=0.05, min_replicas=1, max_replicas=6, router="least_kv",
                 kv_blocks=400, block_size=8, max_num_seqs=16)
    res = wb.simulate(tr, cfg, latency=STEP)
    check_invariants(res, cfg, tr)
    s = res.summary
    assert s["completed"] == len(tr) and s["cold_starts"] >= 10 and s["drains"] >= 20
    # replicas drained with work to finish, and draining ones taken back before they left
    events = res.replica_events
    assert ((events.phase_from == "draining") & (events.phase_to == "active")).sum() >= 5
    # requests finished by draining replicas (between a drain and the replica's next phase change)
    r = res.requests
    finish = r.arrival_s + r.e2e_s - r.output_tokens * STEP.token_overhead_s
    finished_draining = 0
    for g, per in events.sort_values("time_s", kind="stable").groupby("replica"):
        times, after = per.time_s.to_numpy(), per.phase_to.to_numpy()
        for j in np.flatnonzero(after[:-1] == "draining"):
            finished_draining += int(((r.gpu == g) & (finish > times[j]) & (finish <= times[j + 1])).sum())
    assert finished_draining > 50


# ---------------------------------------------------------------- the threshold policy reacts as the HPA does
def observation(**kw):
    base = dict(time_s=15.0, interval_s=15.0, replicas=4, active=4, starting=0, draining=0, outstanding=32.0,
                waiting=0.0, kv_used_fraction=0.5, busy_fraction=0.9, arrival_rps=10.0)
    return Observation(**{**base, **kw})


def test_threshold_policy_by_hand():
    cfg = cfg_of(num_gpus=4, autoscaler="threshold", max_replicas=20, autoscale_target=8.0, autoscale_window_s=0)
    policy = AUTOSCALERS["threshold"](cfg)
    assert policy.desired(observation(outstanding=32.0)) == 4          # at the target
    assert policy.desired(observation(outstanding=34.0)) == 4          # within 10%: kept
    assert policy.desired(observation(outstanding=40.0)) == 5          # ceil(40 / 8)
    assert policy.desired(observation(outstanding=41.0)) == 6          # ceil(5.125)
    assert policy.desired(observation(outstanding=4.0)) == 1
    kv = AUTOSCALERS["threshold"](cfg.replace(autoscale_metric="kv", autoscale_target=0.6))
    assert kv.desired(observation(kv_used_fraction=0.9)) == 6          # ceil(4 x 0.9 / 0.6)
    rps = AUTOSCALERS["threshold"](cfg.replace(autoscale_metric="rps", autoscale_target=1.5))
    assert rps.desired(observation(arrival_rps=10.0)) == 7              # ceil(10 / 1.5)
    waiting = AUTOSCALERS["threshold"](cfg.replace(autoscale_metric="waiting", autoscale_target=2.0))
    assert waiting.desired(observation(waiting=13.0)) == 7
    assert waiting.desired(observation(waiting=0.0)) == 0              # the loop's min_replicas bounds it


def test_threshold_policy_averages_over_its_window():
    cfg = cfg_of(num_gpus=4, autoscaler="threshold", max_replicas=20, autoscale_target=8.0, autoscale_window_s=30)
    policy = AUTOSCALERS["threshold"](cfg)
    assert policy.desired(observation(time_s=15.0, outstanding=80.0)) == 10
    assert policy.desired(observation(time_s=30.0, outstanding=0.0)) == 5     # mean of 80 and 0
    assert policy.desired(observation(time_s=45.0, outstanding=16.0)) == 1    # the 80 has left the window
    assert policy.desired(observation(time_s=60.0, outstanding=16.0, replicas=2, active=2)) == 2


def test_stabilizer_by_hand():
    """Kubernetes' scale-down stabilisation: up at once, down only to the highest recommendation in the window."""
    s = Stabilizer(60.0)
    assert s.target(0.0, 10, current=4) == 10
    assert s.target(15.0, 3, current=10) == 10      # 10 was recommended 15 s ago
    assert s.target(45.0, 5, current=10) == 10
    assert s.target(61.0, 4, current=10) == 5       # the 10 (t = 0) left the window; 5 (t = 45) did not
    assert s.target(106.0, 4, current=5) == 4       # 5 left too
    assert s.target(107.0, 2, current=3) == 3       # never above the current count
    assert Stabilizer(0.0).target(200.0, 1, current=9) == 1


def test_schedule_policy_looks_a_cold_start_ahead():
    cfg = cfg_of(num_gpus=2, autoscaler="schedule", replica_schedule=(2, 5, 3), schedule_interval_s=100.0,
                 cold_start_s=30.0)
    policy = AUTOSCALERS["schedule"](cfg)
    t = [0.0, 69.0, 70.0, 100.0, 170.0, 199.0, 200.0, 500.0]
    assert [policy.desired(observation(time_s=x)) for x in t] == [2, 2, 5, 5, 5, 5, 3, 3]
    assert cfg.max_replicas_effective == 5 and not policy.stabilized


def test_a_new_policy_is_one_class():
    @register("test_always_three")
    class AlwaysThree(Autoscaler):
        def desired(self, obs):
            return 3
    try:
        tr = random_trace(200, 1)
        res = wb.simulate(tr, cfg_of(num_gpus=1, autoscaler="test_always_three", max_replicas=4,
                                     cold_start_s=0.1, autoscale_interval_s=0.1), latency=STEP)
        assert res.replica_timeline.replicas.iloc[-1] == 3 and res.summary["cold_starts"] == 2
    finally:
        del AUTOSCALERS["test_always_three"]
    with pytest.raises(TypeError, match="desired"):
        register("test_broken")(type("Broken", (Autoscaler,), {}))


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("kw, match", [
    (dict(autoscaler="threshold", min_replicas=5, max_replicas=3, num_gpus=3), "bounds contradict: min_replicas=5 > max_replicas=3"),
    (dict(autoscaler="threshold", num_gpus=2), "max_replicas: the 'threshold' autoscaler needs"),
    (dict(autoscaler="threshold", max_replicas=4, num_gpus=6), "num_gpus: with an autoscaler"),
    (dict(autoscaler="schedule"), "replica_schedule: the schedule autoscaler needs"),
    (dict(autoscaler="schedule", replica_schedule=(1, 0)), "replica_schedule"),
    (dict(autoscaler="schedule", replica_schedule=(2, 9), max_replicas=4, num_gpus=2), "above max_replicas"),
    (dict(autoscaler="schedule", replica_schedule=(3, 1, 4), min_replicas=2, num_gpus=3),
     r"replica_schedule/min_replicas: the bounds contradict the schedule: period 1 asks for 1 replica\(s\), below "
     "min_replicas=2, which would override it; lower min_replicas or raise the schedule's counts"),
    (dict(autoscaler="threshold", min_replicas=5, max_replicas=3, num_gpus=5), "lower min_replicas or raise "
                                                                               "max_replicas"),
    (dict(autoscaler="threshold", min_replicas=0, max_replicas=3), "min_replicas: must be an integer >= 1"),
    (dict(autoscaler="threshold", max_replicas=0), "max_replicas: must be an integer >= 1"),
    (dict(autoscaler="threshold", max_replicas=4, autoscale_metric="kv", autoscale_target=70), "share in"),
    (dict(autoscaler="threshold", max_replicas=4, autoscale_metric="latency"), "autoscale_metric"),
    (dict(autoscaler="hpa"), "autoscaler"),
    (dict(autoscaler="threshold", max_replicas=4, cold_start_s=-1), "cold_start_s"),
    (dict(autoscaler="threshold", max_replicas=4, autoscale_interval_s=0), "autoscale_interval_s"),
    (dict(min_replicas=2), "autoscaler is None"),
    (dict(cold_start_s=30), "autoscaler is None"),
    (dict(scheduler="multi_bin_dynamic", autoscaler="threshold", max_replicas=4), "continuous engine"),
    (dict(scheduler="disaggregated", autoscaler="threshold", max_replicas=4), "continuous engine"),
])
def test_contradictory_or_meaningless_autoscaling_is_refused(kw, match):
    kw = {"scheduler": "continuous_fcfs", **kw}
    with pytest.raises(ValueError, match=match):
        wb.SimConfig(**kw)


def test_fixed_pool_results_say_they_have_no_replica_timeline():
    res = wb.simulate(random_trace(50, 0), cfg_of(num_gpus=2), latency=STEP)
    with pytest.raises(AttributeError, match="autoscaled run"):
        res.replica_timeline
    assert "replica_hours" not in res.summary


# ---------------------------------------------------------------- records, by hand
def test_replica_lives_and_hourly_seconds_by_hand():
    events = pd.DataFrame({"time_s": [0.0, 100.0, 220.0, 3000.0, 3700.0, 4000.0, 4100.0],
                           "replica": [0, 1, 1, 1, 1, 2, 2],
                           "phase_from": ["off", "off", "starting", "active", "draining", "off", "starting"],
                           "phase_to": ["active", "starting", "active", "draining", "off", "starting", "off"]})
    lives = replica_lives(events, end_s=5000.0)
    assert list(lives.replica) == [0, 1, 2] and list(lives.provisioned_s) == [0.0, 100.0, 4000.0]
    assert lives.ready_s[0] == 0.0 and lives.ready_s[1] == 220.0 and math.isnan(lives.ready_s[2])   # cancelled
    assert math.isnan(lives.drain_s[0]) and lives.drain_s[1] == 3000.0 and math.isnan(lives.drain_s[2])
    assert list(lives.left_s) == [5000.0, 3700.0, 4100.0] and list(lives.at_end) == [True, False, False]
    assert list(lives.seconds) == [5000.0, 3600.0, 100.0]
    per_hour = seconds_per_interval(lives.provisioned_s, lives.left_s, 3600.0, 5000.0)
    assert per_hour == pytest.approx([3600 + 3500, 1400 + 100 + 100])
    assert list(count_at([0.0, 150.0, 3650.0, 4050.0, 4200.0], events)) == [1, 2, 2, 2, 1]
    table = attainment_per_interval([10.0, 20.0, 4000.0], [True, False, True], 3600.0, num_intervals=3)
    assert list(table.offered) == [2, 1, 0] and table.attainment[0] == 0.5 and math.isnan(table.attainment[2])


# ---------------------------------------------------------------- compiled = plain Python
SCRIPT = r"""
import hashlib, json
import numpy as np
import workbench as wb
rng = np.random.default_rng(4)
n = 400
arr = np.cumsum(np.r_[rng.exponential(1 / 150, 300), rng.exponential(1 / 10, n - 300)])   # a burst, then a lull
tr = wb.Trace.from_arrays(arr - arr[0], rng.integers(1, 300, n), rng.geometric(1 / 30, n))
step = wb.StepTimeModel(prefill=(0.01, 1e-4, 1e-7), decode=(0.005, 1e-6, 2e-4))
out = {}
for policy, kw in (("threshold", dict(autoscale_target=3.0, max_replicas=5, scale_down_after_s=0.2,
                                      autoscale_window_s=0.2)),
                   ("schedule", dict(replica_schedule=(1, 4, 2, 5, 1), schedule_interval_s=0.4))):
    r = wb.simulate(tr, wb.SimConfig(scheduler="continuous_fcfs", num_gpus=1, autoscaler=policy, cold_start_s=0.1,
                                     autoscale_interval_s=0.05, kv_blocks=300, block_size=8, max_num_seqs=16,
                                     router="least_outstanding", **kw), latency=step)
    c = r.continuous
    h = hashlib.sha256(b"".join(np.ascontiguousarray(c[k]).tobytes() for k in
                                ("ttft_s", "e2e_s", "queue_s", "preemptions", "replica", "log_f", "log_i")))
    h.update(r.replica_events.to_csv().encode())
    out[policy] = [h.hexdigest(), r.summary["cold_starts"], r.summary["drains"]]
print(json.dumps(out))
"""


def test_uncompiled_autoscaled_run_gives_identical_results():
    compiled = run_script_json(SCRIPT, disable_jit=False)
    assert all(v[1] > 0 and v[2] > 0 for v in compiled.values())   # replicas do start and drain
    assert run_script_json(SCRIPT, disable_jit=True) == compiled
