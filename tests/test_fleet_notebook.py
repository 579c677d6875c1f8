"""notebooks/fleet_planning.ipynb end to end at a tiny size (papermill), and its parameters' validation."""

import json

import pandas as pd
import pytest

from workbench.study.runs.fleet import FleetParams
from conftest import execute_notebook, shown_figures


def test_notebook_runs_at_a_tiny_size_and_writes_its_tables_and_figures(tmp_path):

    from workbench.study.answers import columns
    from workbench.study.orchestrate.suite import FLEET, SuiteOptions, notebook_parameters

    assert notebook_parameters(SuiteOptions(validate=True), FLEET) == {"results_dir": str(SuiteOptions().results_path)}
    out = tmp_path / "out"
    execute_notebook("fleet_planning", tmp_path / "nb.ipynb",
                     {"results_dir": str(out), "num_requests": 800, "rate_rps": 10.0, "gpus": ["l40s", "h100-sxm"],
                      "tp": [1, 2], "max_gpus": 12, "prices": "h100-sxm=3.0"})
    plan = pd.read_csv(out / "fleet_plan.csv")
    # 2 GPU types x (2 colocated TPs + 4 disaggregated TP pairs), each with a status and a reason
    assert len(plan) == 12 and plan.reason.notna().all()
    ok = plan[plan.status == "meets SLA"]
    assert len(ok) and ok.dollars_per_hour.is_monotonic_increasing and (ok.rate_rps == 10.0).all()
    assert (plan[plan.gpu == "h100-sxm"].price_per_gpu_hour == 3.0).all()           # the given price
    assert set(plan.step_source.dropna()) <= {"measured", "roofline", "measured + roofline"}
    trials = pd.read_csv(out / "fleet_trials.csv")
    frontier = pd.read_csv(out / "fleet_frontier.csv")
    assert len(frontier) >= len(trials) >= len(ok)
    neighbours = pd.read_csv(out / "fleet_neighbours.csv")
    assert len(neighbours) and neighbours.holds.all()
    for csv in ("fleet_plan.csv", "fleet_trials.csv", "fleet_frontier.csv", "fleet_neighbours.csv"):
        assert columns.undocumented_columns(pd.read_csv(out / csv, nrows=1).columns) == [], csv
    for png in ("fleet_frontier.png", "fleet_per_gpu.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shown_figures(tmp_path / "nb.ipynb") == 2   # every figure it writes is shown in the notebook too
    text = json.dumps(json.loads((tmp_path / "nb.ipynb").read_text()))
    assert "The cheapest fleet for 10 requests/s" in text and "What decides it:" in text
    assert "against its neighbours" in text and "holds:" in text
    # the folder records the notebook's parameters: another parameter set is refused there before computing
    with pytest.raises(Exception, match="fleet_planning"):
        execute_notebook("fleet_planning", tmp_path / "nb2.ipynb", {"results_dir": str(out), "num_requests": 400})


@pytest.mark.parametrize("kwargs, message", [
    (dict(gpus="l40s,h100-sxn"), r"gpu: unknown 'h100-sxn' \(closest: h100-sxm"),
    (dict(model="lama-8b"), r"model: unknown 'lama-8b'"),
    (dict(prices="l40s:2"), "prices: 'l40s:2' is not 'gpu=dollars per hour'"),
    (dict(prices="b200=5"), r"prices: 'b200' is not in gpus"),
    (dict(topologies="colocated,split"), r"topologies: unknown 'split'"),
    (dict(rate_rps=-1), "rate_rps"),
    (dict(max_gpus=0), "max_gpus: must be an integer >= 1"),
    (dict(attainment=0), "attainment"),
])
def test_bad_parameters_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FleetParams(**kwargs)
