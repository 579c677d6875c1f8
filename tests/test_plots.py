"""Plots tell their story alone (issue 9 item 8, issue 16 item 13): one colour per scheduler in every figure,
reference lines that never look like a scheduler's, one legend outside the data, titles of at most two lines,
log axes where values span decades, TPOT fitted to its data, coinciding lines said to coincide."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex, to_rgba

from workbench.study.answers import plots
from workbench.study.present import palette

K = (1, 2, 4, 8, 16, 32)
GPUS = (1, 2, 4, 8)
SCHEDULERS = ("static_fifo", "multi_bin_dynamic", "continuous_fcfs", "continuous_sla")


def step2_rows() -> pd.DataFrame:
    rows = []
    for i, s in enumerate(SCHEDULERS):
        for g, violation, thr, good, p99 in zip(GPUS, (0.9, 0.5, 0.13, 0.012), (8, 15, 28, 30), (1, 7, 24, 29.6),
                                                (900, 40, 3, 2)):
            same = s == "continuous_sla"     # continuous_sla coincides with continuous_fcfs in every panel
            j = SCHEDULERS.index("continuous_fcfs") if same else i
            rows.append({"scheduler": s, "num_gpus": g, "k_bins": 4, "label": f"{s} ({g} GPUs)",
                         "sla_violation_rate": violation / (1 + j), "throughput_rps": thr * (1 + 0.01 * j),
                         "goodput_rps": good * (1 - 0.05 * j), "latency_p99_s": p99 * (1 + j), "offered_rps": 30.0,
                         "capacity_attainable": 0.97, "d_sla_s": 1.0, "ttft_sla_s": 1.0, "tpot_sla_s": 0.05,
                         "ttft_p99_s": 0.5 * p99, "tpot_p99_s": 0.027 + 0.002 * j + 0.001 * g,
                         "latency_profile": "opt-13b-a100", "capacity_criterion": "slo", "capacity_target": 0.9,
                         "capacity_rps": (0.3 * g * (1 + j)) if not (s == "multi_bin_dynamic" and g == 1) else np.nan,
                         "trace_label": "synthetic BurstGPT-like (seed 42, 1,000 req)", "synthetic": True})
    return pd.DataFrame(rows)


def step3_rows(violation=(0.051, 0.045, 0.040, 0.038, 0.036, 0.035)) -> pd.DataFrame:
    swept = pd.DataFrame({"scheduler": "multi_bin_dynamic", "k_bins": K, "k_bins_effective": K, "num_gpus": 8,
                          "sla_violation_rate": violation, "latency_p99_s": np.linspace(3, 1, 6),
                          "throughput_rps": np.linspace(28, 30, 6), "goodput_rps": np.linspace(26, 29, 6),
                          "capacity_rps": (5.9, 6.2, 6.4, 6.3, 5.7, 4.9), "label": [f"K={k}" for k in K]})
    flat = pd.DataFrame({"scheduler": ["dynamic_no_bins", "continuous_fcfs"], "k_bins": 4, "k_bins_effective": 1,
                         "num_gpus": 8, "sla_violation_rate": (0.05, 0.01), "latency_p99_s": (2.0, 1.0),
                         "throughput_rps": 30.0, "goodput_rps": (28.0, 29.5), "capacity_rps": (5.9, 25.6),
                         "label": ["dynamic_no_bins (8 GPUs)", "continuous_fcfs (8 GPUs)"]})
    rows = pd.concat([swept, flat], ignore_index=True)
    return rows.assign(offered_rps=30.0, capacity_attainable=0.97, d_sla_s=1.0, capacity_criterion="slo",
                       capacity_target=0.9, latency_profile="opt-13b-a100", ttft_sla_s=1.0, tpot_sla_s=0.05,
                       trace_label="synthetic BurstGPT-like (seed 42, 1,000 req)", synthetic=True)


FIGURES = {
    "step2": lambda: plots.plot_gpu_scaling(step2_rows()),
    "step2 capacity": lambda: plots.plot_gpu_capacity(step2_rows()),
    "step3": lambda: plots.plot_kbins_sensitivity(step3_rows()),
    "step3 capacity": lambda: plots.plot_kbins_capacity(step3_rows()),
}


def scheduler_lines(fig):
    """(scheduler, colour) of every drawn line whose label is a scheduler's name."""
    return [(line.get_label(), to_hex(line.get_color())) for ax in fig.axes for line in ax.get_lines()
            if line.get_label() in palette.PINNED]


def reference_lines(fig):
    """axhline/axvline lines (they span the axes: data 0..1 in the axis coordinate)."""
    return [line for ax in fig.axes for line in ax.get_lines()
            if list(line.get_xdata()) == [0, 1] or list(line.get_ydata()) == [0, 1]]


def test_one_colour_per_scheduler_in_every_figure():
    seen: dict[str, set] = {}
    for make in FIGURES.values():
        for name, colour in scheduler_lines(make()):
            seen.setdefault(name, set()).add(colour)
    assert set(seen) >= {"static_fifo", "multi_bin_dynamic", "continuous_fcfs"}
    for name, colours in seen.items():
        assert colours == {palette.color(name)}, (name, colours)
    assert len({palette.color(s) for s in palette.PINNED}) == len(palette.PINNED)
    # a scheduler registered later gets a colour of its own, stable, not a pinned one or black/grey
    assert palette.color("a_new_policy") not in palette.PINNED.values()
    assert palette.color("a_new_policy") == palette.color("a_new_policy")


@pytest.mark.parametrize("name", FIGURES)
def test_reference_lines_are_black_or_grey_and_never_a_schedulers_colour(name):
    fig = FIGURES[name]()
    scheduler_colours = set(palette.PINNED.values())
    for line in reference_lines(fig):
        if line.get_label().endswith("(no bins: one run)"):
            continue  # a scheduler run once, drawn across the K axis in its own colour
        assert to_hex(line.get_color()) not in scheduler_colours, line.get_label()
        r, g, b, _ = to_rgba(line.get_color())
        assert r == g == b, line.get_label()    # black or grey


@pytest.mark.parametrize("name", FIGURES)
def test_one_legend_below_the_panels_and_titles_of_two_lines(name):
    fig = FIGURES[name]()
    assert all(ax.get_legend() is None for ax in fig.axes)
    assert len(fig.legends) == 1
    fig.draw_without_rendering()   # runs the constrained layout
    legend_top = fig.legends[0].get_window_extent().y1
    assert legend_top <= min(ax.get_tightbbox().y0 for ax in fig.axes) + 1   # below every panel and its labels
    assert fig._suptitle.get_text().count("\n") == 1


def test_every_reference_line_is_in_the_legend():
    fig = plots.plot_gpu_scaling(step2_rows())
    labels = [t.get_text().replace("\n", " ") for t in fig.legends[0].get_texts()]
    for line in reference_lines(fig):
        assert any(line.get_label() in label or label in line.get_label() for label in labels), line.get_label()
    joined = " ".join(labels)
    assert "the target: at most 10% miss the SLA" in joined and "floor 3.0%: miss the SLA even alone on an idle GPU" in joined
    assert "offered rate" in joined and "TPOT limit 50 ms" in joined


def axis(fig, ylabel: str):
    return next(ax for ax in fig.axes if ax.get_ylabel() == ylabel)


def test_axes_fit_their_values():
    fig = plots.plot_gpu_scaling(step2_rows())
    assert axis(fig, "p99 end-to-end latency (s)").get_yscale() == "log"     # 2..3600 s spans decades
    assert axis(fig, "p99 TTFT (s)").get_yscale() == "log"
    tpot = axis(fig, "p99 TPOT (s)")
    low, high = tpot.get_ylim()
    assert tpot.get_yscale() == "linear" and 0.02 < low < 0.028 and 0.05 <= high < 0.06   # data 0.028-0.039, limit
    violation = axis(fig, "SLA violation rate")
    assert violation.get_ylim()[0] == 0.0 and violation.get_ylim()[1] <= 1.02
    assert axis(fig, "throughput (req/s)").get_ylim()[0] == 0.0


def test_coinciding_lines_are_drawn_both_and_named():
    fig = plots.plot_gpu_scaling(step2_rows())
    ax = axis(fig, "throughput (req/s)")
    fcfs = [line for line in ax.get_lines() if line.get_label() == "continuous_fcfs"][0]
    sla = [line for line in ax.get_lines() if line.get_label() == "continuous_sla"][0]
    assert np.allclose(fcfs.get_ydata(), sla.get_ydata())
    assert sla.get_linestyle() != fcfs.get_linestyle() and sla.get_zorder() > fcfs.get_zorder()
    assert "continuous_fcfs = continuous_sla" in ax.get_xlabel().replace("\n", " ")


def test_the_gpus_needed_are_a_star_and_one_at_the_largest_count_is_flagged():
    rows = step2_rows().assign(offered_rps=2.0)   # static_fifo covers it from 8 GPUs (2.4), the others from 4
    fig = plots.plot_gpu_scaling(rows)
    ax = axis(fig, "goodput (req/s)")
    stars = {to_hex(line.get_color()): line.get_xdata()[0] for line in ax.get_lines()
             if line.get_marker() == "*" and len(line.get_xdata())}
    assert stars[palette.color("static_fifo")] == 8 and stars[palette.color("multi_bin_dynamic")] == 4
    labels = " ".join(t.get_text().replace("\n", " ") for t in fig.legends[0].get_texts())
    assert "GPUs each scheduler needs" in labels and "at the largest tested: static_fifo" in labels
    cap = plots.plot_gpu_capacity(rows)          # the same stars on the capacity panel, the replayed rate beside
    stars = {to_hex(line.get_color()): line.get_xdata()[0] for line in cap.axes[0].get_lines()
             if line.get_marker() == "*" and len(line.get_xdata())}
    assert stars[palette.color("static_fifo")] == 8 and stars[palette.color("continuous_fcfs")] == 4
    assert any(list(line.get_ydata()) == [2.0, 2.0] for line in cap.axes[0].get_lines())


def test_proportional_scaling_starts_at_the_smallest_pool_with_a_capacity():
    fig = plots.plot_gpu_capacity(step2_rows())     # multi_bin_dynamic reaches the target from 2 GPUs (1.2 req/s)
    colour = palette.color("multi_bin_dynamic")
    dotted = [line for line in fig.axes[0].get_lines() if to_hex(line.get_color()) == colour
              and line.get_linestyle() not in ("-", "None") and len(line.get_xdata()) > 1]
    assert len(dotted) == 1
    assert list(dotted[0].get_xdata()) == [2, 4, 8] and np.allclose(dotted[0].get_ydata(), [1.2, 2.4, 4.8])
    labels = " ".join(t.get_text().replace("\n", " ") for t in fig.legends[0].get_texts())
    assert "proportional to the GPUs" in labels and "ideal" not in labels


def test_step3_references_merged_bins_and_a_reference_far_above():
    fig = plots.plot_kbins_sensitivity(step3_rows().assign(k_bins_effective=lambda r: np.where(
        (r["scheduler"] == "multi_bin_dynamic") & (r["k_bins"] == 32), 21, r["k_bins_effective"])))
    assert any("K=32 -> 21" in ax.get_xlabel() for ax in fig.axes)
    cap = plots.plot_kbins_capacity(step3_rows())
    labels = " ".join(t.get_text().replace("\n", " ") for t in cap.legends[0].get_texts())
    assert "continuous_fcfs (no bins): 25.6, above this panel" in labels   # 4x the K curve: not drawn on it
    assert cap.axes[0].get_ylim()[1] < 10
    # multi_bin_dynamic at K=1 equals dynamic_no_bins: the coincidence is not named unless the whole line does
    assert "coincide" not in cap.axes[0].get_xlabel()


def test_unreachable_configurations_are_named_under_the_capacity_panel():
    fig = plots.plot_gpu_capacity(step2_rows())
    assert "no load reaches the target: multi_bin_dynamic on 1 GPU(s)" in fig.axes[0].get_xlabel()


def test_step1_draws_the_offered_rate_of_each_volume():
    rows = pd.DataFrame({"scheduler": "multi_bin_dynamic", "num_gpus": 4, "label": "multi_bin_dynamic (4 GPUs)",
                         "num_requests": (1_000, 10_000, 100_000), "offered_rps": (4.6, 21.5, 117.0),
                         "goodput_rps": (4.4, 7.4, 2.6), "throughput_rps": (4.6, 19.8, 69.0),
                         "sla_violation_rate": (0.045, 0.63, 0.96), "latency_p99_s": (2.7, 39.0, 575.0),
                         "d_sla_s": 1.0, "latency_profile": "seed-grid", "trace_label": "t", "synthetic": True})
    fig = plots.plot_request_scaling(rows)
    ax = axis(fig, "goodput (req/s)")
    offered = [line for line in ax.get_lines() if line.get_label().startswith("offered rate of each volume")]
    assert offered and list(offered[0].get_ydata()) == [4.6, 21.5, 117.0]
