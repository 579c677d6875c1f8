"""What prefix caching and cache-aware routing buy on a real trace: the tables and figures of
``notebooks/prefix_caching.ipynb``.

* :func:`kv_sweep`: one setup at several KV-cache sizes per replica: the prefix hit rate (cached prompt tokens
  over all prompt tokens of admitted requests) and the TTFT it buys, with the cache off as the reference.
* :func:`router_table`: each router on each replica count, caching on (and off, for reference): hit rate,
  mean/p99 TTFT, mean TPOT, goodput at the trace's rate and the capacity by the TTFT/TPOT criterion (the
  largest rate at which ``attainment`` of the requests meet both limits, :func:`workbench.capacity`).

Every simulation is :func:`workbench.simulate` with the continuous engine (rules in
:mod:`workbench.sim.continuous_engine`, prefix caching in rules 13-15).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from workbench.sim.simulate import simulate
from workbench.study.answers.plots import save_png
from workbench.study.runs.capacity import CapacityError, capacity

ROUTER_ORDER = ("round_robin", "least_outstanding", "least_kv", "prefix_affinity")


def kv_sweep(trace, cfg, step, kv_blocks) -> pd.DataFrame:
    """One row per KV-cache size (blocks per replica) and caching on/off: hit rate, TTFT, TPOT, requests served."""
    rows = []
    for blocks in kv_blocks:
        for caching in (True, False):
            c = cfg.replace(kv_blocks=int(blocks), prefix_caching=caching,
                            router=cfg.router if caching or cfg.router != "prefix_affinity" else "least_outstanding")
            s = simulate(trace, c, latency=step).summary
            rows.append({"kv_blocks": int(blocks), "block_size": cfg.block_size, "num_gpus": cfg.num_gpus,
                         "prefix_caching": caching, "router": c.router, "prefix_hit_rate": s["prefix_hit_rate"],
                         "ttft_mean_s": s["ttft_mean_s"], "ttft_p99_s": s["ttft_p99_s"],
                         "tpot_mean_s": s["tpot_mean_s"], "completed": s["completed"], "rejected": s["rejected"],
                         "preemptions_total": s["preemptions_total"], "goodput_rps": s["goodput_rps"]})
    return pd.DataFrame(rows)


def router_table(trace, cfg, step, routers=ROUTER_ORDER, replicas=(4, 8), attainment: float = 0.9,
                 search_capacity: bool = True) -> pd.DataFrame:
    """One row per (replicas, router, caching): the metrics at the trace's rate and the SLO capacity."""
    rows = []
    for n in replicas:
        for router in routers:
            for caching in (True, False):
                if router == "prefix_affinity" and not caching:
                    continue
                c = cfg.replace(num_gpus=int(n), router=router, prefix_caching=caching)
                s = simulate(trace, c, latency=step).summary
                row = {"num_gpus": int(n), "router": router, "prefix_caching": caching,
                       "prefix_hit_rate": s["prefix_hit_rate"], "ttft_mean_s": s["ttft_mean_s"],
                       "ttft_p99_s": s["ttft_p99_s"], "tpot_mean_s": s["tpot_mean_s"],
                       "goodput_rps": s["goodput_rps"], "slo_attainment": s["slo_attainment"],
                       "preemptions_total": s["preemptions_total"], "offered_rps": s["offered_rps"],
                       "capacity_rps": np.nan, "capacity_bounded": np.nan, "capacity_error": ""}
                if search_capacity:
                    try:
                        cap = capacity(trace, c, criterion="slo", ttft_s=c.ttft_sla_s, tpot_s=c.tpot_sla_s,
                                       attainment=attainment, latency=step, resolution=0.02)
                        row["capacity_rps"] = cap.capacity_rps
                        row["capacity_bounded"] = cap.bounded
                    except CapacityError as exc:
                        row["capacity_error"] = str(exc)
                rows.append(row)
    return pd.DataFrame(rows)


def plot_kv_sweep(sweep: pd.DataFrame, title: str, results_dir=None,
                  filename: str = "prefix_caching_kv.png") -> Figure:
    """Hit rate and TTFT (mean, p99) against the KV cache per replica, caching on and off."""
    fig = Figure(figsize=(11, 4), layout="constrained")
    ax_hit, ax_ttft = fig.subplots(1, 2)
    on = sweep[sweep.prefix_caching].sort_values("kv_blocks")
    off = sweep[~sweep.prefix_caching].sort_values("kv_blocks")
    ktok = lambda frame: frame.kv_blocks * frame.block_size / 1e3  # noqa: E731
    ax_hit.plot(ktok(on), 100 * on.prefix_hit_rate, "o-", color="tab:green", label="prefix caching on")
    ax_hit.set_xscale("log")
    ax_hit.set_xlabel("KV cache per replica (thousand tokens, log scale)")
    ax_hit.set_ylabel("prefix hit rate (% of prompt tokens)")
    ax_hit.set_title("prompt tokens served from the cache")
    ax_hit.set_ylim(bottom=0)
    ax_hit.legend()
    ax_hit.grid(alpha=0.3)
    for frame, label, color in ((on, "caching on", "tab:green"), (off, "caching off", "tab:gray")):
        ax_ttft.plot(ktok(frame), frame.ttft_mean_s, "o-", color=color, label=f"mean TTFT, {label}")
        ax_ttft.plot(ktok(frame), frame.ttft_p99_s, "s--", color=color, alpha=0.7, label=f"p99 TTFT, {label}")
    ax_ttft.set_xscale("log")
    ax_ttft.set_yscale("log")
    ax_ttft.set_xlabel("KV cache per replica (thousand tokens, log scale)")
    ax_ttft.set_ylabel("time to first token (s, log scale)")
    ax_ttft.set_title("what the hits buy")
    ax_ttft.legend(fontsize=8)
    ax_ttft.grid(alpha=0.3)
    fig.suptitle(title, fontsize=11)
    if results_dir is not None:
        save_png(fig, Path(results_dir) / filename)
    return fig


def plot_routers(table: pd.DataFrame, title: str, results_dir=None,
                 filename: str = "prefix_caching_routers.png") -> Figure:
    """Per replica count (``num_gpus``), each router with caching on (and the best router without): hit rate, TTFT,
    capacity."""
    on = table[table.prefix_caching]
    counts = sorted(on.num_gpus.unique())
    routers = [r for r in ROUTER_ORDER if r in set(on.router)]
    metrics = [("prefix_hit_rate", "prefix hit rate (%)", 100.0), ("ttft_mean_s", "mean TTFT (s)", 1.0),
               ("ttft_p99_s", "p99 TTFT (s)", 1.0), ("capacity_rps", "capacity, TTFT+TPOT limits (req/s)", 1.0)]
    fig = Figure(figsize=(12, 3.6), layout="constrained")
    axes = fig.subplots(1, len(metrics))
    width = 0.8 / max(len(routers), 1)
    x = np.arange(len(counts))
    colors = {"round_robin": "tab:blue", "least_outstanding": "tab:orange", "least_kv": "tab:purple",
              "prefix_affinity": "tab:green"}
    for ax, (column, label, scale) in zip(axes, metrics):
        for i, router in enumerate(routers):
            values = [on[(on.num_gpus == n) & (on.router == router)][column].mean() * scale for n in counts]
            ax.bar(x + (i - (len(routers) - 1) / 2) * width, values, width, label=router,
                   color=colors.get(router, None))
        off = table[~table.prefix_caching]
        if len(off) and column != "prefix_hit_rate":
            best_off = [off[off.num_gpus == n][column].min() * scale if column.startswith("ttft")
                        else off[off.num_gpus == n][column].max() * scale for n in counts]
            ax.scatter(x, best_off, marker="_", s=900, color="black", zorder=3, label="best router, caching off")
        ax.set_xticks(x, [f"{n} replicas" for n in counts])
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    if results_dir is not None:
        save_png(fig, Path(results_dir) / filename)
    return fig


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


__all__ = ["ROUTER_ORDER", "findings", "kv_sweep", "plot_kv_sweep", "plot_routers", "router_table"]
