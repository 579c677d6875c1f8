"""Figures of the scheduler comparison (:mod:`workbench.study.answers.compare`): built without pyplot, saved as PNG.

They follow the step figures' rules (:mod:`workbench.study.answers.plots`): each scheduler in its colour of
:mod:`workbench.study.present.palette`, black or grey reference lines, one legend below the panels, two-line
titles, logarithmic axes where values span decades, TPOT fitted to its data and limit, coinciding lines named.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from workbench.study.answers.plots import (_fit_axis, _from_zero, _gpu_axis, _hline, _label_axes, _lines,
                                           _log_if_spans, _scheduler_items, _seconds, _share_axis, _values)
from workbench.study.present import palette
from workbench.study.present.figures import StepFigure, figure_legend, save_png

PANELS = (("attainment", "share of requests meeting the SLA", "share"),
          ("goodput_rps", "goodput (req/s meeting the SLA)", "rate"),
          ("latency_p99_s", "p99 end-to-end latency (s)", "time"),
          ("ttft_p99_s", "p99 time to first token (s)", "ttft"),
          ("tpot_p99_s", "p99 time per output token (s)", "tpot"),
          ("latency_p50_s", "p50 end-to-end latency (s)", "time"))


def _title(comparison, heading: str, requests: int | None = None) -> str:
    p = comparison.params
    trace = "synthetic BurstGPT-like trace" if p.dataset is None else f"trace {p.dataset}"
    reps = f"; mean of {p.replications} seeds, bars: 95% interval" if p.replications > 1 else ""
    return (f"{heading}\n{trace}, {requests or p.num_requests:,} requests; every scheduler on the {p.latency} "
            "step profile; "
            f"SLA: TTFT <= {_seconds(p.ttft_sla_s)}, TPOT <= {_seconds(p.tpot_sla_s)}{reps}")


def plot_load_latency(comparison, results_dir=None, filename: str = "compare_schedulers_load_latency.png") -> Figure:
    """Each metric against offered load on ``curve_gpus`` GPUs, one line per scheduler, with the attainment
    target, the SLA limits and the offered rate as references."""
    curves, p = comparison.curves, comparison.params
    fig = StepFigure(figsize=(13, 9.2), layout="constrained")
    axes = fig.subplots(2, 3).ravel()
    xlabel = f"offered load on {p.curve_gpus} GPUs (req/s, log)"
    for ax, (metric, label, kind) in zip(axes, PANELS):
        have = curves[curves[metric].notna()] if metric in curves else curves.iloc[0:0]
        notes = _lines(ax, _scheduler_items(have, "offered_rps"), metric) if not have.empty else []
        values = _values(have, metric)
        if kind == "share":
            _hline(ax, p.attainment, "target", f"attainment target {p.attainment:.0%}")
            _share_axis(ax, np.r_[values, 1.0])
        elif kind == "rate":
            offered = np.sort(curves["offered_rps"].dropna().unique())
            ax.plot(offered, offered, label="offered rate (upper bound of goodput)", **palette.reference("offered"))
            _log_if_spans(ax, np.r_[values, offered]) or _from_zero(ax, np.r_[values, offered])
        elif kind in ("ttft", "tpot"):
            limit = p.ttft_sla_s if kind == "ttft" else p.tpot_sla_s
            _hline(ax, limit, "target", f"{kind.upper()} limit {_seconds(limit)}")
            _fit_axis(ax, values, limit)
        else:
            _log_if_spans(ax, values) or _from_zero(ax, values)
        ax.set_xscale("log")
        _label_axes(ax, xlabel, label, notes)
    fig.suptitle(_title(comparison, "Which scheduler keeps the SLA as load rises", p.curve_requests), fontsize=9.5)
    figure_legend(fig)
    if results_dir is not None:
        save_png(fig, Path(results_dir) / filename)
    return fig


def plot_capacity(comparison, results_dir=None, filename: str = "compare_schedulers_capacity.png") -> Figure:
    """Capacity and capacity per GPU against GPU count, one line per scheduler (no point: no load met it)."""
    caps, p = comparison.capacities, comparison.params
    fig = StepFigure(figsize=(12, 5.6), layout="constrained")
    ax_total, ax_per = fig.subplots(1, 2)
    caps = caps.assign(capacity_per_gpu=caps["capacity_rps"] / caps["num_gpus"])
    for side in ("low", "high"):
        if f"capacity_rps_ci95_{side}" in caps:
            caps[f"capacity_per_gpu_ci95_{side}"] = caps[f"capacity_rps_ci95_{side}"] / caps["num_gpus"]
    missing, partly = [], []
    for name in palette.order(caps["scheduler"]):
        group = caps[caps["scheduler"] == name].sort_values("num_gpus")
        found = np.isfinite(group["capacity_rps"].to_numpy(dtype=float))
        if not found.any():
            missing.append(name)
        elif not found.all():
            partly.append(f"{name} on {', '.join(str(int(g)) for g in group.loc[~found, 'num_gpus'])} GPU(s)")
    drawn = caps[~caps["scheduler"].isin(missing)]
    notes_total = _lines(ax_total, _scheduler_items(drawn, "num_gpus"), "capacity_rps")
    notes_per = _lines(ax_per, _scheduler_items(drawn, "num_gpus"), "capacity_per_gpu")
    _log_if_spans(ax_total, _values(drawn, "capacity_rps")) or _from_zero(ax_total, _values(drawn, "capacity_rps"))
    _log_if_spans(ax_per, _values(drawn, "capacity_per_gpu")) or _from_zero(ax_per, _values(drawn, "capacity_per_gpu"))
    xlabel = "GPUs"
    if missing:
        xlabel += "\nno load met the target at any GPU count: " + ", ".join(missing)
    if partly:
        xlabel += "\nno point = no load met the target: " + "; ".join(partly)
    for ax, label, notes in ((ax_total, "capacity (req/s)", notes_total),
                             (ax_per, "capacity per GPU (req/s)", notes_per)):
        _gpu_axis(ax, p.gpu_counts)
        _label_axes(ax, xlabel if ax is ax_total else "GPUs", label, notes)
    heading = f"Capacity: the largest offered rate at which {p.attainment:.0%} of requests meet the SLA"
    fig.suptitle(_title(comparison, heading), fontsize=9.5)
    figure_legend(fig)
    if results_dir is not None:
        save_png(fig, Path(results_dir) / filename)
    return fig


def ranking_table(comparison) -> pd.DataFrame:
    """The ranking as the notebook shows it: units in the column names, three significant digits, the 95%
    interval only when there are replications, and the caveats in words."""
    table = comparison.ranking.copy()
    if table.empty:
        return table

    def number(v) -> str:
        return f"{v:.3g}" if v is not None and np.isfinite(v) else "none"

    out = pd.DataFrame({"rank": table["rank"], "scheduler": table["scheduler"],
                        "GPUs needed": table["gpus_needed"].map(lambda v: "none compared" if pd.isna(v) else str(int(v))),
                        "capacity per GPU (req/s)": table["capacity_per_gpu"].map(number),
                        "at GPUs": table["at_num_gpus"].map(lambda v: "" if pd.isna(v) else str(int(v))),
                        "headroom": table["headroom"].map(lambda v: f"{v:+.0%}" if np.isfinite(v) else "")})
    if table["capacity_per_gpu_ci95_low"].notna().any():
        out["95% interval (req/s)"] = [f"{lo:.3g} to {hi:.3g}" if np.isfinite(lo) else "" for lo, hi in
                                       zip(table["capacity_per_gpu_ci95_low"], table["capacity_per_gpu_ci95_high"])]
    order = {True: "distinct", False: "tied within resolution"}
    out["order vs next"] = ["" if i == len(table) - 1 else order.get(v, "")
                            for i, v in enumerate(table["distinguishable_from_next"])]
    out["note"] = table["note"].fillna("")
    return out
