"""What a day of changing load costs and keeps: the figures, tables and findings of ``notebooks/autoscaling.ipynb``,
read off the rows :mod:`workbench.study.runs.autoscaling` writes (``autoscaling_plan.csv``: the plan per hour;
``autoscaling_hourly.csv``: each strategy's GPU-hours, dollars and attainment per hour;
``autoscaling_timeline.csv``: load and replicas every 5 minutes; ``autoscaling_summary.csv``: the day per
strategy).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from workbench.study.present import palette
from workbench.study.present.figures import finish_figure
from workbench.study.present.text import join_and as _and

HOUR_S = 3600.0


def _strategies(frame: pd.DataFrame) -> list[str]:
    names = list(dict.fromkeys(frame["strategy"]))
    known = list(palette.STRATEGY_COLORS)
    return sorted(names, key=lambda n: (known.index(n) if n in known else len(known), n))


def plot_day(timeline: pd.DataFrame, plan: pd.DataFrame, strategies, title: str, results_dir=None,
             filename: str = "autoscaling_day.png") -> Figure:
    """Load and replicas against the time of day: the arrival rate (every 5 minutes) with the plan's capacity per
    hour above it; each strategy's replicas provisioned (solid: billed, cold starts and draining included) and
    active (dotted: serving new requests)."""
    fig = Figure(figsize=(11, 6.4), layout="constrained")
    ax_load, ax_rep = fig.subplots(2, 1, sharex=True)
    hours = timeline.time_s / HOUR_S
    ax_load.plot(hours, timeline.arrival_rps, color="black", lw=0.9, label="arrival rate (5-min mean)")
    edges = np.r_[plan.hour, 24]
    ax_load.stairs(plan.peak_rps, edges, baseline=None, **palette.reference("target"),
                   label="the hour's highest rate (profile)")
    ax_load.stairs(plan.capacity_rps, edges, baseline=None, color=palette.strategy_color("plan schedule"), lw=1.2,
                   ls="--", label="capacity of the plan's replicas at the SLA")
    ax_load.set_ylabel("requests / s")
    ax_load.set_ylim(bottom=0)
    ax_load.set_title("load")
    ax_load.grid(alpha=0.3)
    for name in strategies:
        column = name.replace(" ", "_")
        color = palette.strategy_color(name)
        ax_rep.step(hours, timeline[f"{column}_provisioned"], where="post", color=color, lw=1.4,
                    label=f"{name}: replicas provisioned")
        if name != "peak fleet":
            ax_rep.step(hours, timeline[f"{column}_active"], where="post", color=color, lw=1.0, ls=":",
                        label=f"{name}: active")
    ax_rep.set_ylabel("replicas")
    ax_rep.set_ylim(bottom=0)
    ax_rep.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax_rep.set_xlabel("time of day (h)")
    ax_rep.set_xlim(0, 24)
    ax_rep.set_xticks(range(0, 25, 2))
    ax_rep.set_title("replicas")
    ax_rep.grid(alpha=0.3)
    return finish_figure(fig, title, results_dir, filename)


def plot_hourly(hourly: pd.DataFrame, target: float, title: str, results_dir=None,
                filename: str = "autoscaling_hourly.png") -> Figure:
    """Per hour and strategy: dollars (bars) and the share of the hour's requests meeting the SLA (with the
    attainment target)."""
    fig = Figure(figsize=(11, 6.0), layout="constrained")
    ax_cost, ax_att = fig.subplots(2, 1, sharex=True)
    names = _strategies(hourly)
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        h = hourly[hourly.strategy == name].sort_values("hour")
        color = palette.strategy_color(name)
        ax_cost.bar(h.hour + (i - (len(names) - 1) / 2) * width, h.cost_usd, width=width, color=color,
                    label=name)
        ax_att.plot(h.hour, 100 * h.slo_attainment, marker="o", ms=3.5, color=color, label=name)
    ax_cost.set_ylabel("dollars in the hour")
    ax_cost.set_title("cost")
    ax_cost.grid(alpha=0.3, axis="y")
    ax_att.axhline(100 * target, **palette.reference("target"), label=f"attainment target ({target:.0%})")
    ax_att.set_ylabel("requests meeting the SLA (%)")
    ax_att.set_xlabel("hour of day")
    ax_att.set_title("SLA attainment of the hour's requests")
    low = float(np.nanmin(100 * hourly.slo_attainment)) if len(hourly) else 0.0
    ax_att.set_ylim(max(0.0, min(low, 100 * target) - 5), 100.5)
    ax_att.set_xticks(range(0, 24, 2))
    ax_att.grid(alpha=0.3)
    return finish_figure(fig, title, results_dir, filename)


def day_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The day per strategy, for reading: GPU-hours, dollars and their share of the peak fleet's, attainment,
    hours under the target, replicas, cold starts."""
    table = summary.set_index("strategy").loc[_strategies(summary)]
    return pd.DataFrame({
        "GPU-hours": table.gpu_hours.round(1), "dollars": table.cost_usd.round(2),
        "share of peak fleet's cost": (100 * table.share_of_peak_cost).round(1).astype(str) + "%",
        "SLA attainment": (100 * table.slo_attainment).round(2).astype(str) + "%",
        "hours under target": table.hours_below_target, "replicas (mean)": table.replicas_mean.round(1),
        "replicas (max)": table.replicas_max, "cold starts": table.cold_starts})


def findings(summary: pd.DataFrame, hourly: pd.DataFrame, plan: pd.DataFrame, target: float) -> list[str]:
    """One sentence per strategy and one on the plan, from the rows."""
    s = summary.set_index("strategy")
    peak = s.loc["peak fleet"]
    lines = [f"The plan needs {int(plan.replicas.min())} to {int(plan.replicas.max())} replicas over the day "
             f"({plan.replicas.sum():,} replica-hours against {24 * int(plan.replicas.max()):,} for a fleet sized "
             f"for the busiest hour, {int(plan.hour[plan.replicas.idxmax()])}h)."]
    for name in _strategies(summary):
        row = s.loc[name]
        under = hourly[(hourly.strategy == name) & (hourly.slo_attainment < target)].hour.tolist()
        when = (f"under the {target:.0%} target in hour(s) {', '.join(f'{h}h' for h in under)}" if under
                else f"at or above the {target:.0%} target every hour")
        cost = ("" if name == "peak fleet" else
                f", {row.share_of_peak_cost:.0%} of the peak fleet's ${peak.cost_usd:,.0f}")
        lines.append(f"**{name}**: {row.gpu_hours:,.1f} GPU-hours, ${row.cost_usd:,.0f}{cost}; "
                     f"{row.slo_attainment:.1%} of the day's requests meet the SLA, {when}"
                     + (f"; {int(row.cold_starts)} cold starts" if row.cold_starts else "") + ".")
    return lines


def answer(summary: pd.DataFrame, target: float) -> str:
    """The title question answered from the day's rows: what each way of serving the day costs against the peak
    fleet, which of them keep the attainment target in every hour, and the cheapest that does."""
    s = summary.set_index("strategy").loc[_strategies(summary)]
    peak = s.loc["peak fleet"]
    costs = [f"the peak fleet costs ${peak.cost_usd:,.0f}"] + [
        f"{name} ${row.cost_usd:,.0f} ({row.share_of_peak_cost:.0%} of it)"
        for name, row in s.iterrows() if name != "peak fleet"]
    kept = s[s.hours_below_target == 0]
    missed = s[s.hours_below_target > 0]
    every = f"the SLA for {target:.0%} of the requests in every hour"
    text = f"Over the day {_and(costs)}. "
    misses = _and([f"{int(row.hours_below_target)} hour{'s' if row.hours_below_target > 1 else ''} by {name}"
                   for name, row in missed.iterrows()]) if len(missed) else ""
    if len(kept):
        names = _and(list(kept.index))
        text += f"{names[0].upper()}{names[1:]} {'keeps' if len(kept) == 1 else 'keep'} {every}"
        text += (f"; the target is missed in {misses}." if misses else ".")
        text += f" The cheapest that keeps it: {kept.cost_usd.idxmin()} (${kept.cost_usd.min():,.0f})."
    else:
        fewest = missed[missed.hours_below_target == missed.hours_below_target.min()]
        text += (f"None keeps {every}: the target is missed in {misses}. Of those missing it in the fewest hours "
                 f"({int(fewest.hours_below_target.iloc[0])}), the cheapest: {fewest.cost_usd.idxmin()} "
                 f"(${fewest.cost_usd.min():,.0f}).")
    return text
