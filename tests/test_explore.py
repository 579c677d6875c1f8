"""The live explorer, driven headlessly: moving a widget re-simulates and changes the figure."""

import numpy as np
import pytest

pytest.importorskip("ipywidgets")

from workbench.study.explore import Explorer  # noqa: E402


@pytest.fixture
def explorer():
    ex = Explorer(("synthetic",), num_requests=3_000)
    ex.show()                       # builds the widgets, runs once, draws into the Output widget
    return ex


def test_moving_a_slider_resimulates_and_redraws(explorer):
    first_image, first_result = explorer.last_image, explorer.result
    assert first_image.startswith(b"\x89PNG")
    explorer.widgets()["num_gpus"].value = 2           # what dragging the slider does
    assert explorer.config.num_gpus == 2
    assert explorer.result is not first_result
    assert explorer.result.config.num_gpus == 2
    assert explorer.last_image != first_image                 # the figure was drawn again, differently
    assert len(explorer.history) == 2
    # fewer GPUs on the same load: the tail of the time to first token grows
    assert explorer.history[1].latency_p99_s > explorer.history[0].latency_p99_s


def test_load_scaling_moves_the_offered_rate(explorer):
    before = explorer.history[-1].offered_rps
    explorer.widgets()["load_scaling"].value = 2.0
    after = explorer.history[-1].offered_rps
    assert after == pytest.approx(2 * before, rel=1e-9)


def test_every_widget_maps_to_a_knob(explorer):
    changes = {"scheduler": "static_fifo", "k_bins": 2, "d_sla_s": 2.0, "b_max": 16, "batch_size": 4}
    for name, value in changes.items():
        explorer.widgets()[name].value = value
    cfg = explorer.result.config
    assert (cfg.scheduler, cfg.k_bins, cfg.d_sla_s, cfg.b_max, cfg.batch_size) == ("static_fifo", 2, 2.0, 16, 4)


def test_invalid_combination_is_reported_not_raised(explorer):
    explorer.config = explorer.config.replace(b_min=4)
    before = len(explorer.history)
    explorer.widgets()["b_max"].value = 2               # below b_min: the widget must not raise
    assert len(explorer.history) == before              # not simulated
    shown = "".join(o.get("text", "") for o in explorer._output.outputs)
    assert "Not simulated" in shown and "b_min" in shown


def test_panels_follow_the_result(explorer):
    fig = explorer.figure()
    cdf, bins, gpus, load = fig.axes
    assert len(gpus.patches) == explorer.config.num_gpus
    assert len(bins.patches) == explorer.config.k_bins
    util = np.array([p.get_height() for p in gpus.patches])
    assert np.all((util > 0) & (util <= 1.0 + 1e-9))


def test_every_scheduler_runs_on_the_one_hardware_model(explorer):
    # static batches in step mode on the same profile and memory as the continuous ones (issue 16)
    res = explorer.result
    assert res.config.scheduler == "multi_bin_dynamic" and res.config.model == "opt-13b"
    assert "ttft_s" in res.requests and "opt-13b-a100" in explorer.figure()._suptitle.get_text()


def test_a_continuous_scheduler_runs_on_its_measured_profile(explorer):
    explorer.widgets()["scheduler"].value = "continuous_fcfs"
    res = explorer.result
    assert res.config.model == "opt-13b" and res.config.kv_blocks_effective == 4046   # the A100 of the profile
    assert "ttft_s" in res.requests
    fig = explorer.figure()
    assert "opt-13b-a100" in fig._suptitle.get_text()
    assert any("first token" in line.get_label() for line in fig.axes[0].get_lines())
    util = [p.get_height() for p in fig.axes[2].patches]
    assert len(util) == explorer.config.num_gpus and all(0 < u <= 1 + 1e-9 for u in util)
