"""The cheapest fleet for a load: the figures and sentences of ``notebooks/fleet_planning.ipynb``.

Read from the planner's tables (:func:`workbench.study.runs.fleet.plan_fleet`'s ``table``, its simulations and
the neighbour check), never computed by running anything:

* :func:`pareto`: the fleets no other beats on both cost and a measure (p99 TTFT, attainment);
* :func:`plot_frontier`: cost per hour against p99 TTFT and against SLO attainment, every simulated fleet, the
  frontier, the SLA and the answer;
* :func:`plot_per_gpu`: the cheapest fleet of each GPU type (and topology), or why it has none;
* :func:`answer_lines` / :func:`neighbour_lines`: the sentences: what each GPU type's answer is and what decides
  it, and whether the neighbours of the cheapest fleet fail the SLA or cost more.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from workbench.study.present.figures import finish_figure

MARKERS = {"colocated": "o", "disaggregated": "^"}


def pareto(points: pd.DataFrame, measure: str, lower_is_better: bool) -> pd.DataFrame:
    """The rows of ``points`` that no other row beats on both ``dollars_per_hour`` (lower) and ``measure``,
    cheapest first."""
    ordered = points.dropna(subset=["dollars_per_hour", measure]).sort_values(
        ["dollars_per_hour", measure], ascending=[True, lower_is_better])
    keep, best = [], math.inf if lower_is_better else -math.inf
    for idx, value in zip(ordered.index, ordered[measure]):
        if (value < best) if lower_is_better else (value > best):
            keep.append(idx)
            best = value
    return ordered.loc[keep]


def dollars(text: str) -> str:
    """``text`` with its dollar signs escaped: matplotlib would read the text between two of them as math."""
    return text.replace("$", r"\$")


def _colors(gpus) -> dict:
    return {g: f"C{i % 10}" for i, g in enumerate(dict.fromkeys(gpus))}


def plot_frontier(points: pd.DataFrame, table: pd.DataFrame, *, ttft_s: float, attainment: float, title: str,
                  results_dir=None, filename: str = "fleet_frontier.png") -> Figure:
    """Two panels over every simulated fleet at the load (``points``: the plan's trials and the frontier's
    extra sizes): cost per hour against p99 TTFT (log) and against SLO attainment; filled markers meet the SLA,
    hollow ones miss it; the line is the frontier (no fleet is both cheaper and better); the star is the
    cheapest fleet meeting the SLA (``table``'s first row)."""
    fig = Figure(figsize=(12, 4.8), layout="constrained")
    axes = fig.subplots(1, 2)
    colors = _colors(table.gpu)
    best = table[table.status == "meets SLA"].head(1)
    for ax, (measure, label, lower, limit) in zip(axes, (
            ("ttft_p99_s", "p99 TTFT (s)", True, ttft_s), ("slo_attainment", "SLO attainment", False, attainment))):
        for (gpu, topology), sub in points.groupby(["gpu", "topology"], sort=False):
            ok = sub.meets_sla.astype(bool)
            color = colors.get(gpu, "grey")
            ax.scatter(sub.dollars_per_hour[ok], sub[measure][ok], color=color, marker=MARKERS.get(topology, "s"),
                       s=28, label=f"{gpu} {topology}", alpha=0.85)
            ax.scatter(sub.dollars_per_hour[~ok], sub[measure][~ok], facecolors="none", edgecolors=color,
                       marker=MARKERS.get(topology, "s"), s=28, alpha=0.7)
        front = pareto(points, measure, lower)
        ax.step(front.dollars_per_hour, front[measure], where="post", color="black", lw=1,
                label="frontier (no fleet cheaper and better)" if measure == "ttft_p99_s" else None)
        ax.axhline(limit, color="red", ls="--", lw=0.8,
                   label="SLA (TTFT limit; attainment target)" if measure == "ttft_p99_s" else None)
        if len(best):
            b = best.iloc[0]
            ax.scatter([b.dollars_per_hour], [b[measure]], marker="*", s=220, color="gold", edgecolors="black",
                       zorder=5, label="the cheapest fleet meeting the SLA" if measure == "ttft_p99_s" else None)
        if lower:
            ax.set_yscale("log")
        ax.set_xlabel("cost ($ per hour)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[1].text(0.99, 0.02, "filled: meets the SLA; hollow: misses it", transform=axes[1].transAxes, ha="right",
                 fontsize=7)
    return finish_figure(fig, dollars(title), results_dir, filename)


def cheapest_per_gpu(table: pd.DataFrame) -> pd.DataFrame:
    """Per GPU type and topology: its cheapest fleet meeting the SLA, or (none) the reason of its closest
    candidate; GPU types in the table's order (cheapest first)."""
    rows = []
    for (gpu, topology), sub in table.groupby(["gpu", "topology"], sort=False):
        ok = sub[sub.status == "meets SLA"]
        if len(ok):
            rows.append(ok.iloc[0].to_dict())
        else:
            rows.append({**sub.iloc[0].to_dict(), "fleet": "", "dollars_per_hour": np.nan})
    out = pd.DataFrame(rows)
    order = {g: i for i, g in enumerate(dict.fromkeys(table.gpu))}
    return out.sort_values(["dollars_per_hour", "gpu"], key=lambda c: c.map(order) if c.name == "gpu" else c,
                           na_position="last").reset_index(drop=True)


def plot_per_gpu(table: pd.DataFrame, title: str, results_dir=None, filename: str = "fleet_per_gpu.png") -> Figure:
    """Horizontal bars: the cheapest fleet of each GPU type and topology ($/h, labelled with the fleet and what
    decides it), or the reason there is none."""
    per = cheapest_per_gpu(table)
    colors = _colors(table.gpu)
    fig = Figure(figsize=(11, 0.55 * len(per) + 1.6), layout="constrained")
    ax = fig.subplots()
    top = float(np.nanmax(per.dollars_per_hour)) if per.dollars_per_hour.notna().any() else 1.0
    for i, r in enumerate(per.itertuples()):
        y = len(per) - 1 - i
        if isinstance(r.fleet, str) and r.fleet:
            ax.barh(y, r.dollars_per_hour, color=colors.get(r.gpu, "grey"), hatch="" if r.topology == "colocated"
                    else "//", edgecolor="black", lw=0.4)
            decided = f"; {r.decided_by}" if isinstance(r.decided_by, str) and r.decided_by else ""
            ax.text(r.dollars_per_hour + top * 0.01, y, dollars(f"{r.fleet}: ${r.dollars_per_hour:,.2f}/h "
                                                                f"[{r.step_source}]{decided}"), va="center", fontsize=7)
        else:
            ax.text(top * 0.01, y, dollars(f"no fleet: {str(r.reason)[:110]}"), va="center", fontsize=7,
                    color="dimgray")
    ax.set_yticks(range(len(per)), [f"{r.gpu} {r.topology}" for r in per.itertuples()][::-1], fontsize=8)
    ax.set_xlim(0, top * 1.9)
    ax.set_xlabel("cost of the cheapest fleet meeting the SLA ($ per hour)")
    ax.grid(alpha=0.3, axis="x")
    return finish_figure(fig, dollars(title), results_dir, filename)


def answer_lines(table: pd.DataFrame) -> list[str]:
    """One sentence per GPU type: its cheapest fleet and what decides it, or why it has none."""
    lines = []
    for gpu, sub in table.groupby("gpu", sort=False):
        ok = sub[sub.status == "meets SLA"]
        if len(ok):
            r = ok.iloc[0]
            lines.append(f"**{gpu}**: {r.fleet}, ${r.dollars_per_hour:,.2f}/h "
                         f"(${r.dollars_per_million_output_tokens:,.2f} per million output tokens, headroom "
                         f"{_share(r.headroom)}) [{r.step_source} step times]. What decides it: {r.decided_by_text}.")
        else:
            closest = sub.sort_values("slo_attainment", ascending=False, na_position="last").iloc[0]
            lines.append(f"**{gpu}**: no fleet meets the SLA: {closest.reason}.")
    return lines


def _share(value) -> str:
    return f"{value:+.0%}" if isinstance(value, (int, float)) and math.isfinite(value) else "not searched"


def neighbour_lines(checks: pd.DataFrame, best_fleet: str, best_cost: float, attainment: float) -> list[str]:
    """The neighbour check in sentences: each neighbour's fleet, cost and attainment, and whether it holds (it
    misses the SLA or costs more than the answer)."""
    if checks.empty:
        return ["No fleet meets the SLA, so there is no answer to check."]
    lines = [f"The answer, {best_fleet} at ${best_cost:,.2f}/h, against its neighbours (each simulated at the "
             "load):"]
    for r in checks.itertuples():
        if not (isinstance(r.slo_attainment, float) and math.isfinite(r.slo_attainment)):
            lines.append(f"{r.neighbour}: {r.fleet if r.fleet != 'none' else 'none'}: {r.note}.")
            continue
        what = (f"{r.fleet}, ${r.dollars_per_hour:,.2f}/h, meets the SLA for {r.slo_attainment:.1%} (target "
                f"{attainment:.0%})")
        verdict = ("holds: it misses the SLA" if not r.meets_sla else "holds: it costs more") if r.holds else \
            "FAILS: it is cheaper and meets the SLA, so the answer is not the cheapest"
        lines.append(f"{r.neighbour}: {what}; {verdict}.")
    return lines


__all__ = ["answer_lines", "cheapest_per_gpu", "neighbour_lines", "pareto", "plot_frontier", "plot_per_gpu"]
