"""What prefix caching and cache-aware routing buy on a real trace: the tables, figures and findings of
``notebooks/prefix_caching.ipynb``, read off the rows :mod:`workbench.study.runs.prefix_caching` computes
(``kv_sweep``: one setup at several KV-cache sizes per replica, caching on and off; ``router_table``: each
router on each replica count).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from workbench.study.present import palette
from workbench.study.present.figures import finish_figure

ROUTER_ORDER = ("round_robin", "least_outstanding", "least_kv", "prefix_affinity")   # as tables and figures list them


def plot_kv_sweep(sweep: pd.DataFrame, title: str, results_dir=None,
                  filename: str = "prefix_caching_kv.png") -> Figure:
    """Hit rate and TTFT (mean, p99) against the KV cache per replica, caching on (in the scheduler's colour) and
    off (grey: the same setup without the feature); ``title``: at most two lines; one legend below the panels."""
    fig = Figure(figsize=(11, 4.6), layout="constrained")
    ax_hit, ax_ttft = fig.subplots(1, 2)
    on = sweep[sweep.prefix_caching].sort_values("kv_blocks")
    off = sweep[~sweep.prefix_caching].sort_values("kv_blocks")
    scheduler = str(sweep["scheduler"].iloc[0]) if "scheduler" in sweep and len(sweep) else "continuous_fcfs"
    on_style = {"color": palette.color(scheduler), "lw": 1.5}
    off_style = palette.reference("baseline")
    ktok = lambda frame: frame.kv_blocks * frame.block_size / 1e3  # noqa: E731
    ax_hit.plot(ktok(on), 100 * on.prefix_hit_rate, marker="o", **on_style, label="prefix hit rate, caching on")
    ax_hit.set_xlabel("KV cache per replica (thousand tokens, log scale)")
    ax_hit.set_ylabel("prefix hit rate (% of prompt tokens)")
    ax_hit.set_title("prompt tokens served from the cache")
    ax_hit.set_ylim(bottom=0)
    ax_hit.grid(alpha=0.3)
    for frame, label, style in ((on, "caching on", on_style), (off, "caching off", off_style)):
        ax_ttft.plot(ktok(frame), frame.ttft_mean_s, marker="o", **{**style, "ls": "-"}, label=f"mean TTFT, {label}")
        ax_ttft.plot(ktok(frame), frame.ttft_p99_s, marker="s", **{**style, "ls": "--"}, alpha=0.8,
                     label=f"p99 TTFT, {label}")
    ax_ttft.set_yscale("log")
    sizes = sorted(set(ktok(sweep)))
    for ax in (ax_hit, ax_ttft):   # one tick per size swept, plainly labelled (no overlapping 3x10^2 minor labels)
        ax.set_xscale("log")
        ax.set_xticks(sizes, [f"{size:,.0f}" for size in sizes], rotation=45)
        ax.xaxis.set_minor_locator(NullLocator())
    ax_ttft.set_xlabel("KV cache per replica (thousand tokens, log scale)")
    ax_ttft.set_ylabel("time to first token (s, log scale)")
    ax_ttft.set_title("what the hits buy")
    ax_ttft.grid(alpha=0.3)
    return finish_figure(fig, title, results_dir, filename)


def plot_routers(table: pd.DataFrame, title: str, results_dir=None,
                 filename: str = "prefix_caching_routers.png") -> Figure:
    """Per replica count (``num_gpus``), each router with caching on (and the best router without): hit rate, TTFT,
    capacity; each router in its own colour (:func:`workbench.study.present.palette.router_color`)."""
    on = table[table.prefix_caching]
    counts = sorted(on.num_gpus.unique())
    routers = [r for r in ROUTER_ORDER if r in set(on.router)] + sorted(set(on.router) - set(ROUTER_ORDER))
    metrics = [("prefix_hit_rate", "prefix hit rate (%)", 100.0), ("ttft_mean_s", "mean TTFT (s)", 1.0),
               ("ttft_p99_s", "p99 TTFT (s)", 1.0), ("capacity_rps", "capacity, TTFT+TPOT limits (req/s)", 1.0)]
    if table["capacity_rps"].isna().all():   # no capacity searched: no empty panel
        metrics = metrics[:-1]
    fig = Figure(figsize=(12, 4.2), layout="constrained")
    axes = fig.subplots(1, len(metrics))
    width = 0.8 / max(len(routers), 1)
    x = np.arange(len(counts))
    off = table[~table.prefix_caching]
    for ax, (column, label, scale) in zip(axes, metrics):
        for i, router in enumerate(routers):
            values = [on[(on.num_gpus == n) & (on.router == router)][column].mean() * scale for n in counts]
            at = x + (i - (len(routers) - 1) / 2) * width
            ax.bar(at, values, width, label=router, color=palette.router_color(router))
            for where, value in zip(at, values):
                if column == "capacity_rps" and not np.isfinite(value):   # searched, no load meets the target
                    ax.text(where, 0, "unreachable", rotation=90, ha="center", va="bottom", fontsize=7)
        if len(off) and column != "prefix_hit_rate":
            best_off = [off[off.num_gpus == n][column].min() * scale if column.startswith("ttft")
                        else off[off.num_gpus == n][column].max() * scale for n in counts]
            ax.scatter(x, best_off, marker="_", s=900, color="black", zorder=3)
            ax.plot([], [], color="black", lw=2, label="best router, caching off")   # legend: a line, not the wide bar
        ax.set_xticks(x, [f"{n} replicas" for n in counts])
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, axis="y")
    return finish_figure(fig, title, results_dir, filename)


def findings(sweep: pd.DataFrame, table: pd.DataFrame) -> list[str]:
    """Sentences computed from the results (the notebook's commentary)."""
    lines = []
    on = sweep[sweep.prefix_caching].sort_values("kv_blocks")
    off = sweep[~sweep.prefix_caching].set_index("kv_blocks")
    if len(on):
        small, large = on.iloc[0], on.iloc[-1]
        tokens = lambda row: f"{int(row.kv_blocks * row.block_size):,}"  # noqa: E731
        lines.append(f"With {tokens(small)} KV tokens per replica {small.prefix_hit_rate:.0%} of the prompt tokens "
                     f"come from the cache; with {tokens(large)}, {large.prefix_hit_rate:.0%}.")
        preempted_on, preempted_off = small.preemptions_total, off.loc[small.kv_blocks, "preemptions_total"]
        if preempted_off > preempted_on:
            lines.append(f"At the smallest cache requests are preempted {preempted_off:,} times without caching and "
                         f"{preempted_on:,} times with it: a preempted request's computed blocks stay cached and are "
                         "found again when it is readmitted, instead of being computed anew.")
        base = off.loc[large.kv_blocks, "ttft_mean_s"]
        lines.append(f"At the largest cache, caching changes the mean TTFT by {large.ttft_mean_s / base - 1:+.0%} "
                     f"({base:.3g} s -> {large.ttft_mean_s:.3g} s).")
    for n in sorted(table.num_gpus.unique()):
        sub = table[(table.num_gpus == n) & table.prefix_caching].set_index("router")
        if {"round_robin", "prefix_affinity"} <= set(sub.index):
            rr, pa = sub.loc["round_robin"], sub.loc["prefix_affinity"]
            text = (f"On {n} replicas prefix_affinity serves {pa.prefix_hit_rate:.0%} of the prompt tokens from "
                    f"the cache against {rr.prefix_hit_rate:.0%} with round_robin; mean TTFT "
                    f"{pa.ttft_mean_s:.3g} s against {rr.ttft_mean_s:.3g} s")
            if np.isfinite(pa.capacity_rps) and np.isfinite(rr.capacity_rps):
                text += f"; capacity {pa.capacity_rps:.3g} against {rr.capacity_rps:.3g} req/s"
            lines.append(text + ".")
    return lines


KV_COLUMNS = ("kv_blocks", "prefix_caching", "router", "prefix_hit_rate", "ttft_mean_s", "ttft_p99_s", "tpot_mean_s",
              "completed", "rejected", "preemptions_total", "goodput_rps")
ROUTER_COLUMNS = ("num_gpus", "router", "prefix_caching", "prefix_hit_rate", "ttft_mean_s", "ttft_p99_s",
                  "tpot_mean_s", "goodput_rps", "slo_attainment", "preemptions_total", "capacity_rps",
                  "capacity_error")


def kv_table(sweep: pd.DataFrame) -> pd.DataFrame:
    """:func:`~workbench.study.runs.prefix_caching.kv_sweep`'s rows for reading (units, precision, the columns that apply)."""
    from workbench.study.present.tables import display_table

    return display_table(sweep.drop(columns="scheduler", errors="ignore"), KV_COLUMNS)


def routers_table(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`~workbench.study.runs.prefix_caching.router_table`'s rows for reading."""
    from workbench.study.present.tables import display_table

    return display_table(table, ROUTER_COLUMNS)


__all__ = ["KV_COLUMNS", "ROUTER_COLUMNS", "ROUTER_ORDER", "findings", "kv_table", "plot_kv_sweep", "plot_routers",
           "routers_table"]
