"""notebooks/hardware.ipynb end to end at a tiny size (papermill), and its parameters' validation."""

import pandas as pd
import pytest

from workbench.study.runs.hardware import HardwareParams
from conftest import execute_notebook, shown_figures


def test_notebook_runs_at_a_tiny_size_and_writes_its_tables_and_figures(tmp_path):

    from workbench.study.answers import columns
    from workbench.study.orchestrate.suite import HARDWARE, SuiteOptions, notebook_parameters

    assert notebook_parameters(SuiteOptions(validate=True), HARDWARE) == {
        "results_dir": str(SuiteOptions().results_path)}
    out = tmp_path / "out"
    execute_notebook("hardware", tmp_path / "nb.ipynb",
                     {"results_dir": str(out), "num_requests": 120, "models": ["llama-3.1-8b", "llama-3.1-70b"],
                      "gpus": ["rtx-4090", "h100-sxm"], "tp": [1, 2], "prices": "h100-sxm=2.0"})
    fits = pd.read_csv(out / "hardware_fit.csv")
    assert len(fits) == 2 * 2 * 2
    # Llama-3.1-70B (141 GB of weights) fits neither GPU at TP 1 or 2 except 2 x H100
    seventy = fits[fits.model == "llama-3.1-70b"].set_index(["gpu", "tp"]).fits
    assert not seventy[("rtx-4090", 2)] and not seventy[("h100-sxm", 1)] and seventy[("h100-sxm", 2)]
    table = pd.read_csv(out / "hardware_capacity.csv")
    # roofline rows for every fitting pair at its smallest TP, a kernel-profile row on the RTX 4090 (LLMServingSim's
    # bundle) and a measured row on the H100 (BLIS's Llama-3.1-8B fit)
    kinds = set(zip(table.model, table.gpu, table.kind))
    assert {("llama-3.1-8b", "rtx-4090", "roofline"), ("llama-3.1-8b", "rtx-4090", "kernel-profile"),
            ("llama-3.1-8b", "h100-sxm", "roofline"), ("llama-3.1-8b", "h100-sxm", "measured"),
            ("llama-3.1-70b", "h100-sxm", "roofline")} <= kinds
    assert (table[table.gpu == "h100-sxm"].price_per_gpu_hour == 2.0).all()      # the given price
    row = table[(table.gpu == "h100-sxm") & (table.model == "llama-3.1-70b")].iloc[0]
    assert row.tp == 2 and row.requests_per_dollar == pytest.approx(row.capacity_rps * 3600 / (2 * 2.0))
    assert (table[table.kind == "roofline"].validated_error > 0).all()
    steps = pd.read_csv(out / "hardware_steps.csv")
    assert {"opt-13b-a100", "llama-3.1-8b-h100"} <= set(steps.profile)
    errors = pd.read_csv(out / "hardware_errors.csv")
    assert (errors.kind == "roofline").sum() == 11 and (errors.kind == "kernel-profile").sum() == 2
    for csv in ("hardware_fit.csv", "hardware_capacity.csv", "hardware_steps.csv", "hardware_errors.csv"):
        assert columns.undocumented_columns(pd.read_csv(out / csv, nrows=1).columns) == [], csv
    for png in ("hardware_fit.png", "hardware_capacity.png", "hardware_steps.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shown_figures(tmp_path / "nb.ipynb") == 3   # every figure it writes is shown in the notebook too
    text = (tmp_path / "nb.ipynb").read_text()
    assert "[roofline]" in text and "roofline step times: median error of the mean E2E" in text
    assert "llama-3.1-70b fits on none of rtx-4090" in text
    # the folder records the notebook's parameters: another parameter set is refused there before computing
    with pytest.raises(Exception, match="hardware"):
        execute_notebook("hardware", tmp_path / "nb2.ipynb", {"results_dir": str(out), "num_requests": 60})


@pytest.mark.parametrize("kwargs, message", [
    (dict(models="llama-3.1-8b,lama-70b"), r"model: unknown 'lama-70b' \(closest: "),
    (dict(gpus="h100-sxm,h100-sxn"), r"gpu: unknown 'h100-sxn' \(closest: h100-sxm"),
    (dict(prices="h100-sxm:2"), "prices: 'h100-sxm:2' is not 'gpu=dollars per hour'"),
    (dict(prices="h100-sxm=-1"), r"prices\[h100-sxm\]: must be > 0"),
    (dict(tp="1,0"), "tp: must be an integer >= 1"),
    (dict(attainment=1.5), "attainment"),
    (dict(num_requests=1), "num_requests: must be an integer >= 2"),
])
def test_bad_parameters_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HardwareParams(**kwargs)
