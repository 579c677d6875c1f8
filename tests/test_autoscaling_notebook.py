"""notebooks/autoscaling.ipynb end to end at a tiny size (papermill), the day study's pieces, its parameters."""

import numpy as np
import pandas as pd
import pytest

from workbench.study.runs import autoscaling as day


def test_notebook_runs_at_a_tiny_size_and_writes_its_tables_and_figures(tmp_path):
    """Planned by wb.plan_fleet (the default); the capacity planner is run at the end, in another folder."""
    import papermill as pm

    from workbench import paths
    from workbench.study.answers import columns
    from workbench.study.orchestrate.suite import AUTOSCALING, SuiteOptions, notebook_parameters

    assert notebook_parameters(SuiteOptions(validate=True), AUTOSCALING) == {
        "results_dir": str(SuiteOptions().results_path)}
    out = tmp_path / "out"
    parameters = {"results_dir": str(out), "num_requests": 60_000, "capacity_requests": 3_000,
                  "peak_to_trough": 4.0, "price_per_gpu_hour": 2.0}   # wb.plan_fleet per hour (the default)
    pm.execute_notebook(str(paths.NOTEBOOKS_DIR / "autoscaling.ipynb"), str(tmp_path / "nb.ipynb"),
                        kernel_name="python3", cwd=str(paths.REPO_ROOT), progress_bar=False, parameters=parameters)
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
    text = (tmp_path / "nb.ipynb").read_text()
    assert "synthetic" in text and "**reactive**" in text and "of the peak fleet's" in text
    # the capacity planner: the same deployment, the plan from wb.capacity replica count by replica count
    other = tmp_path / "capacity"
    pm.execute_notebook(str(paths.NOTEBOOKS_DIR / "autoscaling.ipynb"), str(tmp_path / "nb3.ipynb"),
                        kernel_name="python3", cwd=str(paths.REPO_ROOT), progress_bar=False,
                        parameters={**parameters, "results_dir": str(other), "planner": "capacity"})
    by_capacity = pd.read_csv(other / "autoscaling_plan.csv")
    assert (by_capacity.capacity_rps >= by_capacity.peak_rps).all()
    assert (abs(by_capacity.replicas - plan.replicas) <= 2).all()   # two searches of one question agree
    # the folder records the notebook's parameters: another parameter set is refused there before computing
    with pytest.raises(Exception, match="autoscaling"):
        pm.execute_notebook(str(paths.NOTEBOOKS_DIR / "autoscaling.ipynb"), str(tmp_path / "nb2.ipynb"),
                            kernel_name="python3", cwd=str(paths.REPO_ROOT), progress_bar=False,
                            parameters={**parameters, "num_requests": 50_000})


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
