"""No line, marker or limit hides another without a visible sign (issue 20): what a reader sees in the PNG.

:func:`workbench.study.present.figures.uncover_hidden` works in pixels on the figure as laid out; these tests
draw small figures by hand (two identical series, lines that meet for part of their length, lines that only
cross, stars on one point, dashed lines on top of each other) and check the artists it leaves: which is on top,
in which dash pattern, and what the panel's label says.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from matplotlib.colors import to_rgba

from workbench.study.present import palette
from workbench.study.present.figures import StepFigure, finish_figure, hidden_lines

X = np.array([1.0, 2.0, 4.0, 8.0, 16.0, 32.0])


def panel():
    fig = StepFigure(figsize=(8, 4.5), layout="constrained")
    ax = fig.subplots()
    ax.set_xscale("log", base=2)
    ax.set_xlabel("GPUs")
    return fig, ax


def line(ax, label):
    return next(artist for artist in ax.get_lines() if artist.get_label() == label)


def xlabel(ax) -> str:
    return ax.get_xlabel().replace("\n", " ")


def test_two_identical_series_both_show_and_the_panel_says_so():
    fig, ax = panel()
    for name in ("static_fifo", "dynamic_no_bins"):
        ax.plot(X, X * 0.3, color=palette.color(name), lw=2.2, marker="o", ms=4, label=name)
    finish_figure(fig, "identical\nseries")
    first, second = line(ax, "static_fifo"), line(ax, "dynamic_no_bins")
    # the one drawn first (hidden) goes over the other in dashes: both colours show along the whole line
    assert first.get_zorder() > second.get_zorder()
    assert first.get_linestyle() == "--" and second.get_linestyle() == "-"
    assert "static_fifo drawn dashed over dynamic_no_bins" in xlabel(ax)
    assert hidden_lines(ax) == []          # nothing is hidden any more


def test_three_coinciding_lines_interleave_their_dashes():
    fig, ax = panel()
    names = ("static_fifo", "dynamic_no_bins", "multi_bin_dynamic")
    for name in names:
        ax.plot(X, X, color=palette.color(name), lw=2.2, label=name)
    finish_figure(fig, "three\nlines")
    dashed = [line(ax, n) for n in names[:2]]
    patterns = [d._unscaled_dash_pattern for d in dashed]
    assert patterns[0][1] == patterns[1][1] == (4.0, 8.0)       # each on a third of the period
    assert patterns[0][0] != patterns[1][0]                     # at different places: every colour shows
    assert "static_fifo and dynamic_no_bins drawn dashed over multi_bin_dynamic" in xlabel(ax)


def test_lines_that_meet_for_part_of_their_length_are_flagged_lines_that_cross_are_not():
    fig, ax = panel()
    ax.plot(X, [0.6, 1.2, 2.3, 2.45, 2.45, 2.45], color=palette.color("static_fifo"), lw=2.2, label="static_fifo")
    ax.plot(X, [2.4, 2.45, 2.45, 2.45, 2.45, 2.45], color=palette.color("continuous_fcfs"), lw=2.2,
            label="continuous_fcfs")
    ax.plot(X, [2.5, 2.0, 1.5, 1.0, 0.5, 0.2], color=palette.color("multi_bin_dynamic"), lw=2.2,
            label="multi_bin_dynamic")
    finish_figure(fig, "partly\nhidden")
    assert "static_fifo drawn dashed over continuous_fcfs" in xlabel(ax)
    assert "multi_bin_dynamic" not in xlabel(ax)            # it only crosses the others
    assert line(ax, "multi_bin_dynamic").get_linestyle() == "-"


def test_lines_side_by_side_are_left_alone():
    fig, ax = panel()
    ax.plot(X, X, color=palette.color("static_fifo"), lw=2.2, label="static_fifo")
    ax.plot(X, X * 1.5, color=palette.color("continuous_fcfs"), lw=2.2, label="continuous_fcfs")
    finish_figure(fig, "apart\nlines")
    assert xlabel(ax) == "GPUs"
    assert {line(ax, n).get_linestyle() for n in ("static_fifo", "continuous_fcfs")} == {"-"}


def test_stars_on_one_point_are_drawn_inside_each_other():
    fig, ax = panel()
    ax.plot(X, X, color="0.5", lw=1, label="a line")
    stars = [ax.plot([32.0], [32.0], color=palette.color(n), marker="*", ms=14, ls="none")[0]
             for n in ("static_fifo", "dynamic_no_bins", "multi_bin_dynamic")]
    finish_figure(fig, "stacked\nstars")
    sizes = [s.get_markersize() for s in stars]
    assert sizes[0] == 14 and sizes[0] > sizes[1] > sizes[2] > 0    # each smaller than the one below it
    assert [s.get_zorder() for s in stars] == sorted(s.get_zorder() for s in stars)
    assert ("static_fifo's star, dynamic_no_bins's star and multi_bin_dynamic's star on one point (drawn inside "
            "each other)") in xlabel(ax)


def test_dashed_lines_with_the_same_pattern_on_each_other_are_shifted():
    fig, ax = panel()
    style = {"ls": (0, (5, 2, 1, 2)), "lw": 1.4}
    ax.axhline(0.0303, color=palette.color("static_fifo"), label="static_fifo (no bins: one run)", **style)
    ax.axhline(0.0303, color=palette.color("continuous_fcfs"), label="continuous_fcfs (no bins: one run)", **style)
    ax.set_ylim(0.02, 0.05)
    finish_figure(fig, "flat\nlines")
    under = line(ax, "static_fifo (no bins: one run)")
    over = line(ax, "continuous_fcfs (no bins: one run)")
    assert under.get_zorder() > over.get_zorder()
    assert under._unscaled_dash_pattern == (5.0, (5, 2, 1, 2))   # its own pattern, half a period on
    assert "static_fifo (no bins: one run) drawn dashed over continuous_fcfs (no bins: one run)" in xlabel(ax)


def test_a_limit_is_drawn_over_a_line_that_runs_along_it():
    fig, ax = panel()
    ax.plot(X, [30, 5, 1.2, 0.998, 0.998, 0.998], color=palette.color("continuous_fcfs"), lw=2.2,
            label="continuous_fcfs")
    limit = ax.axhline(1.0, label="TTFT limit 1 s", **palette.reference("ttft"))
    ax.set_yscale("log")
    finish_figure(fig, "limit\nunder a line")
    assert limit.get_zorder() > line(ax, "continuous_fcfs").get_zorder()
    assert hidden_lines(ax) == []
    assert "continuous_fcfs runs along the TTFT limit 1 s" in xlabel(ax)      # and the reader is told


def test_notes_never_run_past_their_panel():
    fig = StepFigure(figsize=(13, 5), layout="constrained")
    axes = fig.subplots(1, 3)
    names = ("static_fifo", "dynamic_no_bins", "multi_bin_dynamic", "continuous_fcfs", "continuous_sla",
             "continuous_multi_bin")
    for ax in axes:
        for name in names:
            ax.plot(X, X, color=palette.color(name), lw=2.2, label=name)
        ax.set_xlabel("offered load on 4 GPUs (req/s, log)")
    finish_figure(fig, "six identical lines\nin three narrow panels")
    fig.draw_without_rendering()
    for ax in axes:
        assert "drawn dashed over continuous_multi_bin" in xlabel(ax)
        label, box = ax.xaxis.label.get_window_extent(), ax.get_window_extent()
        assert label.x0 >= box.x0 - 2 and label.x1 <= box.x1 + 2, ax.get_xlabel()


LIMITS = ("ttft", "tpot", "sla_target")


def style(artist):
    return (to_rgba(artist.get_color()), artist._unscaled_dash_pattern, artist.get_linewidth())


def test_ttft_tpot_and_target_reference_lines_each_have_their_own_style():
    from matplotlib.lines import Line2D

    styles = {kind: style(Line2D([0, 1], [0, 1], **palette.reference(kind))) for kind in palette.REFERENCES}
    for a, b in itertools.combinations(LIMITS, 2):
        assert styles[a] != styles[b], (a, b)
    for kind in LIMITS:   # and none looks like another reference of the figures (the offered rate, the floor)
        for other in set(palette.REFERENCES) - {kind}:
            assert styles[kind][1:] != styles[other][1:], (kind, other)


def test_the_figures_draw_their_limits_in_those_styles():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_plots import step2_rows

    from workbench.study.answers import plots

    fig = plots.plot_gpu_scaling(step2_rows())
    drawn = {artist.get_label(): artist for ax in fig.axes for artist in ax.get_lines()}
    lines = {"sla_target": drawn["the target: at most 10% miss the SLA (90% meet it)"], "ttft": drawn["TTFT limit 1 s"],
             "tpot": drawn["TPOT limit 50 ms"]}
    for kind, artist in lines.items():
        expected = palette.reference(kind)
        assert to_rgba(artist.get_color()) == to_rgba(expected["color"]) and artist.get_linewidth() == expected["lw"]
    assert len({style(artist) for artist in lines.values()}) == 3


@pytest.mark.parametrize("kind", LIMITS)
def test_limits_are_black_or_grey(kind):
    r, g, b, _ = to_rgba(palette.reference(kind)["color"])
    assert r == g == b
