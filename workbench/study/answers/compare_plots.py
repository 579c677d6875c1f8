"""Figures of the scheduler comparison (:mod:`workbench.study.answers.compare`): built without pyplot, saved as PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from workbench.study.answers.plots import save_png

PANELS = (("attainment", "share of requests meeting the SLA", False),
          ("latency_p50_s", "p50 end-to-end latency, s", True),
          ("latency_p99_s", "p99 end-to-end latency, s", True),
          ("ttft_p99_s", "p99 time to first token, s", True),
          ("tpot_p99_s", "p99 time per output token, s", True),
          ("goodput_rps", "goodput (requests/s meeting the SLA)", False))


def _title(comparison) -> str:
    p = comparison.params
    trace = "synthetic BurstGPT-like trace" if p.dataset is None else f"trace {p.dataset} (real)"
    reps = f", mean of {p.replications} replications (bars: 95% CI)" if p.replications > 1 else ", one replication"
    return (f"{trace}, {p.num_requests:,} requests; every scheduler timed by the {p.latency} step-time profile{reps}\n"
            f"SLA: {comparison.sla_text}")


def plot_load_latency(comparison, results_dir=None, filename: str = "compare_schedulers_load_latency.png") -> Figure:
    """Each metric against offered load, one line per scheduler, with the attainment target and SLA limits."""
    curves, p = comparison.curves, comparison.params
    fig = Figure(figsize=(13, 7.5), layout="constrained")
    axes = fig.subplots(2, 3).ravel()
    limits = {"ttft_p99_s": (p.ttft_sla_s, "TTFT limit"), "tpot_p99_s": (p.tpot_sla_s, "TPOT limit")}
    for ax, (metric, label, log_y) in zip(axes, PANELS):
        for name, group in curves.groupby("scheduler", sort=True):
            group = group.sort_values("offered_rps")
            y = group[metric].to_numpy(float)
            if not np.isfinite(y).any():
                continue
            err = group.get(f"{metric}_ci95")
            ax.errorbar(group["offered_rps"], y, yerr=None if err is None or err.isna().all() else err,
                        marker="o", ms=3, capsize=2, label=name)
        if metric == "attainment":
            ax.axhline(p.attainment, color="k", ls="--", lw=1, label=f"target {p.attainment:.0%}")
            ax.set_ylim(0, 1.02)
        if metric in limits:
            ax.axhline(limits[metric][0], color="k", ls="--", lw=1, label=limits[metric][1])
        if metric == "goodput_rps":
            offered = np.sort(curves["offered_rps"].dropna().unique())
            ax.plot(offered, offered, color="0.6", ls=":", lw=1, label="offered rate (upper bound)")
        ax.set_xscale("log")
        if log_y:
            ax.set_yscale("log")
        ax.set(xlabel=f"offered load, requests/s ({p.curve_gpus} GPUs, log)", ylabel=label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Which scheduler keeps the SLA as load rises\n" + _title(comparison), fontsize=10)
    if results_dir is not None:
        save_png(fig, Path(results_dir) / filename)
    return fig


def plot_capacity(comparison, results_dir=None, filename: str = "compare_schedulers_capacity.png") -> Figure:
    """Capacity and capacity per GPU against GPU count, one line per scheduler (missing: no load met it)."""
    caps, p = comparison.capacities, comparison.params
    fig = Figure(figsize=(12, 4.8), layout="constrained")
    ax_total, ax_per = fig.subplots(1, 2)
    missing, partly = [], []
    for name, group in caps.groupby("scheduler", sort=True):
        group = group.sort_values("num_gpus")
        found = np.isfinite(group["capacity_rps"])
        if not found.any():
            missing.append(name)
            continue
        if not found.all():
            gpus = ", ".join(str(int(g)) for g in group.loc[~found, "num_gpus"])
            partly.append(f"{name} on {gpus} GPU(s)")
        err = group.get("capacity_rps_ci95")
        err = None if err is None or err.isna().all() else err
        ax_total.errorbar(group["num_gpus"], group["capacity_rps"], yerr=err, marker="o", capsize=3, label=name)
        ax_per.errorbar(group["num_gpus"], group["capacity_rps"] / group["num_gpus"],
                        yerr=None if err is None else err / group["num_gpus"], marker="o", capsize=3, label=name)
    for ax, label in ((ax_total, "capacity, requests/s"), (ax_per, "capacity per GPU, requests/s")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(p.gpu_counts), [str(g) for g in p.gpu_counts])
        ax.set(xlabel="GPUs", ylabel=label)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    notes = ([f"no load met the target at any GPU count: {', '.join(missing)}"] if missing else []) + \
        ([f"no point = no load met the target: {'; '.join(partly)}"] if partly else [])
    if notes:
        fig.supxlabel("\n".join(notes), fontsize=8)
    fig.suptitle(f"Capacity: the largest offered rate at which {p.attainment:.0%} of requests meet the SLA\n"
                 + _title(comparison), fontsize=10)
    if results_dir is not None:
        save_png(fig, Path(results_dir) / filename)
    return fig


def ranking_table(comparison) -> pd.DataFrame:
    """The ranking as the notebook shows it (rounded, readable column names)."""
    table = comparison.ranking.copy()
    if table.empty:
        return table
    table["capacity per GPU (req/s)"] = table["capacity_per_gpu"].map(lambda v: f"{v:.3g}" if np.isfinite(v) else "none")
    table["95% CI"] = table["capacity_per_gpu_ci95"].map(lambda v: f"+- {v:.2g}" if np.isfinite(v) else "n/a (1 run)")
    table["at GPUs"] = table["at_num_gpus"].map(lambda v: "" if pd.isna(v) else str(int(v)))
    order = {True: "distinct", False: "overlaps"}
    table["order vs next"] = ["" if i == len(table) - 1 else order.get(v, "not tested (1 run)")
                              for i, v in enumerate(table["distinguishable_from_next"])]
    return table[["rank", "scheduler", "capacity per GPU (req/s)", "95% CI", "at GPUs", "order vs next", "note"]]
