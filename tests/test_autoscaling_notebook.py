"""notebooks/autoscaling.ipynb end to end at a tiny size (papermill), the day study's pieces, its parameters."""

import json

import numpy as np
import pandas as pd
import pytest

from workbench.study.runs import autoscaling as day
from conftest import execute_notebook, shown_figures


def test_notebook_runs_at_a_tiny_size_and_writes_its_tables_and_figures(tmp_path):
    """Planned by wb.plan_fleet (the default); the capacity planner is run at the end, in another folder."""

    from workbench.study.answers import autoscaling as answers
    from workbench.study.answers import columns
    from workbench.study.orchestrate.suite import AUTOSCALING, SuiteOptions, notebook_parameters

    assert notebook_parameters(SuiteOptions(validate=True), AUTOSCALING) == {
        "results_dir": str(SuiteOptions().results_path)}
    out = tmp_path / "out"
    parameters = {"results_dir": str(out), "num_requests": 60_000, "capacity_requests": 3_000,
                  "peak_to_trough": 4.0, "price_per_gpu_hour": 2.0}   # wb.plan_fleet per hour (the default)
    execute_notebook("autoscaling", tmp_path / "nb.ipynb", parameters)
    plan = pd.read_csv(out / "autoscaling_plan.csv")
    assert list(plan.hour) == list(range(24)) and plan.requests.sum() == 60_000
    assert (plan.capacity_rps >= plan.peak_rps).all() and (plan.replicas >= 1).all()
    assert (plan.slo_attainment_at_peak >= 0.9).all()      # the planner's own simulation at the hour's peak
    assert plan.dollars_per_hour.to_numpy() == pytest.approx(2.0 * plan.replicas.to_numpy())
    hourly = pd.read_csv(out / "autoscaling_hourly.csv")
    assert set(hourly.strategy) == set(day.STRATEGIES) and len(hourly) == 3 * 24
    peak = hourly[hourly.strategy == "peak fleet"]
    assert (peak.replicas_mean == plan.replicas.max()).all()                  # the whole hour, every hour
    assert peak.cost_usd.to_numpy() == pytest.approx(plan.replicas.max() * 2.0 * np.ones(24))
    for name in day.STRATEGIES:   # every request of the day judged once per strategy
        assert hourly[hourly.strategy == name].requests.sum() == 60_000
    summary = pd.read_csv(out / "autoscaling_summary.csv").set_index("strategy")
    assert summary.loc["peak fleet", "share_of_peak_cost"] == 1.0
    assert summary.loc["plan schedule", "gpu_hours"] <= summary.loc["peak fleet", "gpu_hours"] + 1e-9
    timeline = pd.read_csv(out / "autoscaling_timeline.csv")
    assert len(timeline) == 288 and (timeline.peak_fleet_provisioned == plan.replicas.max()).all()
    for csv in ("autoscaling_plan.csv", "autoscaling_hourly.csv", "autoscaling_timeline.csv", "autoscaling_summary.csv"):
        assert columns.undocumented_columns(pd.read_csv(out / csv, nrows=1).columns) == [], csv
    for png in ("autoscaling_day.png", "autoscaling_hourly.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shown_figures(tmp_path / "nb.ipynb") == 2   # every figure it writes is shown in the notebook too
    found = json.loads((out / "autoscaling_findings.json").read_text())
    assert found["notebook"] == "autoscaling" and found["answer"].startswith("Over the day the peak fleet costs $")
    assert found["answer"] == answers.answer(summary.reset_index(), 0.9)      # the sentence of the rows written
    assert any(line.startswith("**reactive**") for line in found["findings"])
    assert found["traces"][0]["synthetic"] and found["traces"][0]["requests"] == 60_000
    assert set(found["figures"]) == {"autoscaling_day.png", "autoscaling_hourly.png"}
    text = (tmp_path / "nb.ipynb").read_text()
    assert "synthetic" in text and "**reactive**" in text and "of the peak fleet's" in text
    # the capacity planner: the same deployment, the plan from wb.capacity replica count by replica count
    other = tmp_path / "capacity"
    execute_notebook("autoscaling", tmp_path / "nb3.ipynb",
                     {**parameters, "results_dir": str(other), "planner": "capacity"})
    by_capacity = pd.read_csv(other / "autoscaling_plan.csv")
    assert (by_capacity.capacity_rps >= by_capacity.peak_rps).all()
    assert (abs(by_capacity.replicas - plan.replicas) <= 2).all()   # two searches of one question agree
    # the folder records the notebook's parameters: another parameter set is refused there before computing
    with pytest.raises(Exception, match="autoscaling"):
        execute_notebook("autoscaling", tmp_path / "nb2.ipynb", {**parameters, "num_requests": 50_000})


def _day_tables(hours_below: list[int]):
    """A day summary and its hours by hand: the peak fleet 4 replicas at $5 for 24 h ($480), the plan $300, the
    reactive policy $250; ``hours_below[i]`` hours under the target for strategy i (hours 0, 1, 2... fail)."""
    names = ["peak fleet", "plan schedule", "reactive"]
    cost = [480.0, 300.0, 250.0]
    summary = pd.DataFrame({"strategy": names, "gpu_hours": [96.0, 60.0, 50.0], "cost_usd": cost,
                            "slo_attainment": [0.99, 0.97, 0.95], "hours_below_target": hours_below,
                            "cold_starts": [0, 12, 30], "share_of_peak_cost": [1.0, 300 / 480, 250 / 480]})
    hourly = pd.DataFrame([{"strategy": name, "hour": h, "slo_attainment": 0.5 if h < below else 0.95}
                           for name, below in zip(names, hours_below) for h in range(24)])
    return summary, hourly


@pytest.mark.parametrize("hours_below, kept, missed, cheapest", [
    ([0, 0, 2], "Peak fleet and plan schedule keep", "2 hours by reactive", "The cheapest that keeps it: plan schedule "
                                                                            "($300)."),
    ([0, 0, 0], "Peak fleet, plan schedule and reactive keep", None, "The cheapest that keeps it: reactive ($250)."),
    ([0, 1, 2], "Peak fleet keeps", "1 hour by plan schedule and 2 hours by reactive",
     "The cheapest that keeps it: peak fleet ($480)."),
    ([3, 1, 1], "None keeps", "3 hours by peak fleet, 1 hour by plan schedule and 1 hour by reactive",
     "in the fewest hours (1), the cheapest: reactive ($250)."),
])
def test_the_answer_says_what_each_costs_and_which_keep_the_target_by_hand(hours_below, kept, missed, cheapest):
    from workbench.study.answers import autoscaling as answers

    summary, hourly = _day_tables(hours_below)
    text = answers.answer(summary, 0.9)
    assert text.startswith("Over the day the peak fleet costs $480, plan schedule $300 (62% of it) and reactive $250 "
                           "(52% of it). ")
    assert f"{kept} the SLA for 90% of the requests in every hour" in text
    assert (f"the target is missed in {missed}." in text) if missed else "missed" not in text
    assert text.endswith(cheapest)
    plan = pd.DataFrame({"hour": np.arange(24), "replicas": np.r_[np.full(12, 2), np.full(12, 4)]})
    plan.loc[15, "replicas"] = 5
    lines = answers.findings(summary, hourly, plan, 0.9)
    assert lines[0] == ("The plan needs 2 to 5 replicas over the day (73 replica-hours against 120 for a fleet sized "
                        "for the busiest hour, 15h).")
    assert lines[3] == ("**reactive**: 50.0 GPU-hours, $250, 52% of the peak fleet's $480; 95.0% of the day's requests "
                        "meet the SLA, " + ("under the 90% target in hour(s) 0h, 1h" if hours_below[2] == 2 else
                                           "under the 90% target in hour(s) 0h" if hours_below[2] == 1 else
                                           "at or above the 90% target every hour") + "; 30 cold starts.")


def test_the_plan_is_the_fewest_replicas_covering_each_hour():
    """The plan's count for a load against a capacity curve given by hand (no simulation), from any guess."""
    class Curve(day.CapacityCurve):
        def __init__(self):
            self._found = {}

        def __call__(self, n):
            self._found[n] = {1: 0.5, 2: 1.6, 3: 2.5}.get(n, 0.9 * n)
            return self._found[n]

    for guess in (None, 0.1, 0.9, 5.0):
        counts = [day.cheapest_replicas(rate, Curve(), guess) for rate in (0.4, 1.6, 2.51, 7.2)]
        assert counts == [1, 2, 4, 8], guess
    curve = Curve()
    assert day.cheapest_replicas(2.5, curve) == 3 and curve.per_replica() == pytest.approx(2.5 / 3)   # 3 ran


def test_hourly_billing_and_attainment_by_hand():
    """A fixed pool bills every hour whole; an autoscaled one its replicas' lives, hour by hour."""
    import workbench as wb

    params = day.AutoscalingParams(num_requests=1_000, price_per_gpu_hour=3.0, tp=2, results_dir="unused")
    arrival = np.r_[np.linspace(0, 3000, 30), np.linspace(3700, 7000, 30)]
    trace = wb.Trace.from_arrays(arrival, np.full(60, 20), np.full(60, 3))
    step = wb.StepTimeModel(prefill=(0.01, 1e-4, 0.0), decode=(0.005, 1e-6, 0.0))
    runs = {"peak fleet": wb.simulate(trace, wb.SimConfig(scheduler="continuous_fcfs", num_gpus=2), latency=step),
            "plan schedule": wb.simulate(trace, wb.SimConfig(scheduler="continuous_fcfs", num_gpus=1,
                                                             autoscaler="schedule", replica_schedule=(1, 3, 1),
                                                             cold_start_s=600.0, autoscale_interval_s=60.0,
                                                             autoscale_until_s=86_400.0),
                                         latency=step)}
    load = pd.DataFrame({"hour": np.arange(24), "mean_rps": np.zeros(24)})
    hourly = day.hourly_table(runs, params, load)
    fixed = hourly[hourly.strategy == "peak fleet"]
    assert fixed.gpu_hours.to_numpy() == pytest.approx(np.full(24, 2 * 2.0))
    assert fixed.cost_usd.sum() == pytest.approx(24 * 2 * 2 * 3.0)
    plan = hourly[hourly.strategy == "plan schedule"].set_index("hour")
    # two more replicas from 3000 s (a 600-s cold start ahead of hour 1) to 7200 s; one replica all day
    assert plan.replicas_mean[0] == pytest.approx(1 + 2 * 600 / 3600)
    assert plan.replicas_mean[1] == pytest.approx(3.0)
    assert plan.replicas_mean[5] == pytest.approx(1.0)
    assert plan.gpu_hours[1] == pytest.approx(6.0) and plan.cost_usd[1] == pytest.approx(18.0)
    assert list(plan.requests[:3]) == [30, 30, 0] and plan.slo_attainment[0] == 1.0
    assert np.isnan(plan.slo_attainment[3])


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_requests=10), "num_requests"),
    (dict(peak_to_trough=0.5), "peak_to_trough"),
    (dict(model="opt-13bb"), "model"),
    (dict(gpu="a100-80gbb"), "gpu"),
    (dict(model="llama-3.1-70b", gpu="l4", tp=1), "does not fit"),
    (dict(attainment=90), "attainment"),
    (dict(target_load=0), "target_load"),
    (dict(reactive_metric="latency"), "reactive_metric"),
    (dict(planner="guess"), "planner"),
    (dict(cold_start_s=-1), "cold_start_s"),
    (dict(max_num_seqs=512, max_num_batched_tokens=256), "max_num_batched_tokens"),
])
def test_bad_parameters_are_refused_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        day.AutoscalingParams(**kwargs)


@pytest.mark.parametrize("planner, reason", [
    ("capacity", "the target cannot be met at any load: only 0.0% of the requests could meet TTFT <= 0.01 s"),
    ("plan_fleet", "no fleet serves the hour: No candidate meets TTFT <= 0.01 s .* the limit that binds is TTFT"),
])
def test_an_sla_no_fleet_meets_names_the_hour_and_the_binding_limit(planner, reason):
    """A TTFT limit the requests miss even alone: refused at the first hour with what binds, at once (the capacity
    planner used to add replicas one by one up to 100,000, each finding no load that meets it)."""
    params = day.AutoscalingParams(num_requests=20_000, ttft_sla_s=0.01, planner=planner, results_dir="unused")
    trace = params.trace()
    with pytest.raises(ValueError, match=rf"^hour 0 \([0-9.]+ requests/s at its busiest, planner='{planner}'\): "
                                         + reason):
        day.provisioning_plan(trace, day.hourly_load(trace, params.profile()), params)


def test_the_deployment_is_the_fleet_planners():
    """The study's replicas are the fleet planner's colocated replicas: measured step times for OPT-13B on an
    A100 (DistServe's profile), the roofline elsewhere; its price; vLLM's KV cache."""
    from workbench.study.runs import fleet

    params = day.AutoscalingParams()
    assert params.step_source() == "measured" and params.step_model().name == "opt-13b-a100"
    assert params.config(num_gpus=3) == fleet.colocated_config(params.settings(), params.gpu_spec(), 1, 3)
    assert params.config(num_gpus=3).router == "least_outstanding"
    other = day.AutoscalingParams(model="llama-3.1-70b", gpu="h100-sxm", tp=4, price_per_gpu_hour=1.5)
    assert other.step_source() in ("measured", "roofline") and other.price == 1.5 and other.gpus_per_replica == 4
