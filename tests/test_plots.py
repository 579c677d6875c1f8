"""Plots tell their story alone (issue 9 item 8): honest axes, every reference line in a legend, the offered
rate and the attainable floor where they matter, no panel flat by construction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workbench.study.answers import plots

K = (1, 2, 4, 8, 16, 32)


def step3_rows(violation=(0.051, 0.045, 0.040, 0.038, 0.036, 0.035)) -> pd.DataFrame:
    return pd.DataFrame({"k_bins": K, "k_bins_effective": K, "num_gpus": 8, "sla_violation_rate": violation,
                         "latency_p99_s": np.linspace(3, 1, 6), "throughput_rps": np.linspace(28, 30, 6),
                         "goodput_rps": np.linspace(26, 29, 6), "offered_rps": 30.0, "capacity_attainable": 0.97,
                         "d_sla_s": 1.0, "trace_label": "synthetic BurstGPT-like (seed 42, 1,000 req)",
                         "synthetic": True, "label": [f"K={k}" for k in K]})


def step2_rows() -> pd.DataFrame:
    gpus = (1, 2, 4, 8)
    return pd.DataFrame({"num_gpus": gpus, "k_bins": 4, "sla_violation_rate": (0.9, 0.5, 0.13, 0.12),
                         "throughput_rps": (8, 15, 28, 30), "goodput_rps": (1, 7, 24, 26.5), "offered_rps": 30.0,
                         "capacity_attainable": 0.97, "latency_p99_s": (90, 40, 3, 2), "d_sla_s": 1.0,
                         "trace_label": "t", "synthetic": True, "label": [f"{g} GPUs" for g in gpus]})


def reference_lines(ax) -> list:
    """axhline/axvline lines: they span the axes (data 0..1 in the axis coordinate)."""
    return [line for line in ax.get_lines()
            if list(line.get_xdata()) == [0, 1] or list(line.get_ydata()) == [0, 1]]


def legend_texts(ax) -> list[str]:
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend else []


@pytest.mark.parametrize("figure", [lambda: plots.plot_kbins_sensitivity(step3_rows()),
                                    lambda: plots.plot_gpu_scaling(step2_rows())])
def test_every_reference_line_is_in_its_panels_legend(figure):
    fig = figure()
    found = 0
    for ax in fig.axes:
        for line in reference_lines(ax):
            found += 1
            assert not line.get_label().startswith("_"), f"unlabelled reference line in {ax.get_ylabel()!r}"
            assert line.get_label() in legend_texts(ax), (line.get_label(), ax.get_ylabel())
    assert found >= 4


def violation_axis(fig):
    return next(ax for ax in fig.axes if ax.get_ylabel() == "SLA violation rate")


def test_violation_axes_start_at_zero_and_show_the_target_and_the_floor():
    fig = plots.plot_kbins_sensitivity(step3_rows())
    ax = violation_axis(fig)
    low, high = ax.get_ylim()
    assert low == 0.0 and high >= 0.1  # 3.5-5.1% is not stretched over the whole panel
    labels = legend_texts(ax)
    assert any("5%" in t for t in labels)
    assert any(t.startswith("floor 3.0%") for t in labels)  # 1 - attainable share 0.97
    for ax in fig.axes:
        if ax.get_ylabel() != "SLA violation rate":
            assert ax.get_ylim()[0] == 0.0, ax.get_ylabel()  # throughput 28-30 req/s is not a cliff either


def test_throughput_panels_show_the_offered_rate():
    for fig, panel in ((plots.plot_gpu_scaling(step2_rows()), "throughput (req/s)"),
                       (plots.plot_kbins_sensitivity(step3_rows()), "throughput (req/s)")):
        ax = next(a for a in fig.axes if a.get_ylabel() == panel)
        offered = [line for line in ax.get_lines() if line.get_label() == "offered rate (replayed)"]
        assert offered and set(offered[0].get_ydata()) == {30.0}


def test_no_panel_is_flat_by_construction_and_merged_bins_are_said():
    fig = plots.plot_kbins_sensitivity(step3_rows())
    assert "effective bins" not in [ax.get_ylabel() for ax in fig.axes]  # = K unless edges merge
    merged = step3_rows().assign(k_bins_effective=(1, 2, 4, 8, 16, 21))
    texts = [t.get_text() for ax in plots.plot_kbins_sensitivity(merged).axes for t in ax.texts]
    assert any("K=32 -> 21" in t for t in texts)


def test_a_best_line_says_when_it_cannot_be_trusted():
    fig = plots.plot_gpu_scaling(step2_rows())
    labels = legend_texts(fig.axes[0])
    assert any(t.startswith("best GPU count: 8") and "misses the SLA" in t and "largest tested" in t
               for t in labels), labels
    fig = plots.plot_kbins_sensitivity(step3_rows())
    assert "best K: 32 (largest tested)" in legend_texts(fig.axes[0])


def test_capacity_per_gpu_starts_at_zero_and_its_best_lines_carry_their_caveats():
    rows = step2_rows().assign(capacity_criterion="attainment", capacity_target=0.9,
                               capacity_rps=(0.25, 1.2, 3.6, 8.5))
    fig = plots.plot_gpu_capacity(rows)
    per_gpu = next(ax for ax in fig.axes if ax.get_ylabel() == "capacity per GPU (req/s)")
    assert per_gpu.get_ylim()[0] == 0.0
    labels = legend_texts(per_gpu)
    assert "best by capacity per GPU: 8 (largest tested)" in labels
    assert "best by goodput rule: 8 (misses the SLA; largest tested)" in labels
