"""Figures of the three steps.

Each function takes the step's result rows, returns a ``matplotlib.figure.Figure``
(built without pyplot, so a notebook shows it once, as the cell's value, and
no global figure state builds up) and, given ``results_dir``, also saves it as a
PNG there (atomically).  Titles name the trace and say "synthetic" when it is.
Each step has its replay figure (``<step>.png``) and, for the tests that
searched their capacity, a capacity figure (``<step>_capacity.png``).

Rows of several seeds (``replications`` > 1) are averaged first
(:func:`workbench.study.answers.analysis.summarize`) and every line gets error bars:
the 95% Student-t half-width over the seeds.  Several schedulers get a line
each (legend per scheduler); the continuous ones add TTFT/TPOT panels, and
the subtitle says which latency model each scheduler ran on.
"""

from __future__ import annotations

import io
import re
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from workbench.study.answers import analysis
from workbench.study.runs.sweep import atomic_write_bytes

DPI = 110


def trace_title(rows: pd.DataFrame) -> str:
    """The trace's label without its size (which varies in step 1), with "synthetic" when it is."""
    labels = [str(v) for v in rows.get("trace_label", pd.Series(dtype=str)).dropna().unique()]
    stripped = sorted({re.sub(r",?\s*[\d,]+ req\)$", ")", lbl).replace(" ()", "") for lbl in labels})
    title = "; ".join(stripped) or "trace"
    synthetic = "synthetic" in rows and rows["synthetic"].astype(bool).any()
    if synthetic and "synthetic" not in title.lower():
        title = f"synthetic {title}"
    return title


def latency_title(rows: pd.DataFrame) -> str:
    """Which latency model the rows' schedulers ran on, e.g. "static: formula grid (...); continuous: opt-13b-a100"."""
    if "latency_profile" not in rows or "scheduler" not in rows:
        return ""
    parts = []
    for profile, group in rows.groupby(rows["latency_profile"].astype(str), sort=False):
        names = ", ".join(dict.fromkeys(group["scheduler"].astype(str)))
        if profile == "grid":
            what = "formula grid (Qwen3-1.7B/RTX 4080, not measured), SLA = end-to-end latency <= d_sla"
        else:
            what = f"step profile {profile} (measured), SLA = TTFT and TPOT limits"
            limits = [f"{name} {rows[col].dropna().iloc[0]:g} s" for name, col in
                      (("TTFT", "ttft_sla_s"), ("TPOT", "tpot_sla_s")) if col in rows and rows[col].notna().any()]
            what += f" ({', '.join(limits)})" if limits else ""
        parts.append(f"{names}: {what}")
    return "\n".join(parts)


def _replication_text(rows: pd.DataFrame) -> str:
    n = int(rows["replications"].max()) if "replications" in rows and rows["replications"].notna().any() else 1
    return f"; mean of {n} seeds, bars: 95% CI" if n > 1 else ""


def _finish(fig: Figure, rows: pd.DataFrame, heading: str, results_dir, filename: str) -> Figure:
    sla = rows["d_sla_s"].dropna().unique() if "d_sla_s" in rows else []
    sla_text = f", SLA {sla[0]:g} s" if len(sla) == 1 else ""
    latency = latency_title(rows)
    latency_text = f"\n{latency}" if latency else ""
    title = f"{heading}\ntrace: {trace_title(rows)}{sla_text}{_replication_text(rows)}{latency_text}"
    width = max(80, int(fig.get_figwidth() * 12))   # characters that fit across the figure at this font size
    fig.suptitle("\n".join(textwrap.fill(line, width) for line in title.split("\n")), fontsize=10)
    if results_dir is not None:
        save_png(fig, Path(results_dir) / filename)
    return fig


def save_png(fig: Figure, path: str | Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def _grid(nrows: int = 2) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(11, 3.75 * nrows), layout="constrained")
    axes = fig.subplots(nrows, 2)
    return fig, axes.ravel()


def _line(ax, x, rows: pd.DataFrame, column: str, **kwargs):
    """``column`` against ``x``, with error bars when the rows carry a finite ``<column>_ci95``."""
    y = rows[column].to_numpy(dtype=float)
    ci = f"{column}_ci95"
    if ci in rows and np.isfinite(rows[ci].to_numpy(dtype=float)).any():
        return ax.errorbar(x, y, yerr=rows[ci].to_numpy(dtype=float), marker="o", capsize=3, **kwargs)
    return ax.plot(x, y, marker="o", **kwargs)


def _has_step_metrics(rows: pd.DataFrame) -> bool:
    """Whether some rows carry TTFT/TPOT (the continuous engine's schedulers)."""
    return "ttft_p99_s" in rows and rows["ttft_p99_s"].notna().any()


def colors_by(rows: pd.DataFrame, by: str = "scheduler") -> dict:
    """One colour per value of ``by`` (in order of appearance), the same in every panel of a figure."""
    return {key: f"C{i % 10}" for i, key in enumerate(dict.fromkeys(rows[by]))}


def _step_metric_panels(axes, rows: pd.DataFrame, x: str, by: str = "scheduler") -> None:
    """p50/p99 TTFT and TPOT against ``x`` for the rows that have them, a line per ``by``."""
    colors = colors_by(rows, by)
    have = rows[rows["ttft_p99_s"].notna()].sort_values(x)
    for ax, metric, name in ((axes[0], "ttft", "TTFT"), (axes[1], "tpot", "TPOT")):
        for key, group in have.groupby(by, sort=False):
            _line(ax, group[x].to_numpy(), group, f"{metric}_p99_s", label=f"{key} p99", color=colors[key])
            _line(ax, group[x].to_numpy(), group, f"{metric}_p50_s", label=f"{key} p50", color=colors[key], ls="--")
        limit = "ttft_sla_s" if metric == "ttft" else "tpot_sla_s"
        if limit in have and have[limit].notna().any():
            ax.axhline(float(have[limit].iloc[0]), color="grey", ls=":", lw=1, label=f"{name} limit")
        ax.set_ylabel(f"{name} (s)")
        if (have[f"{metric}_p99_s"] > 0).any():
            ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)


def _share_axis(ax, values) -> None:
    """A share (violation rate) axis from 0, never zoomed into a sliver: at least 0..10%, at most 0..100%."""
    top = float(np.nanmax(values)) if len(values) and np.isfinite(np.nanmax(values)) else 1.0
    ax.set_ylim(0.0, min(1.02, max(0.1, 1.15 * top)))


def _violation_references(ax, rows: pd.DataFrame) -> list:
    """The 5% breaking line and, where known, the floor no load can go below (requests too long for the SLA)."""
    lines = [ax.axhline(analysis.BREAKING_SLA_VIOLATION, color="grey", ls=":", lw=1,
                        label=f"{analysis.BREAKING_SLA_VIOLATION:.0%}: SLA target (breaking point)")]
    if "capacity_attainable" in rows and rows["capacity_attainable"].notna().any():
        floor = 1.0 - float(rows["capacity_attainable"].max())
        lines.append(ax.axhline(floor, color="tab:red", ls="-.", lw=1,
                                label=f"floor {floor:.1%}: miss the SLA even alone on an idle GPU"))
    return lines


def _offered_reference(ax, rows: pd.DataFrame, x: str) -> None:
    """The arrival rate replayed, where the rows carry it: throughput cannot exceed it."""
    if "offered_rps" in rows and rows["offered_rps"].notna().any():
        ordered = rows.sort_values(x)
        ax.plot(ordered[x], ordered["offered_rps"], color="black", ls="--", lw=1, label="offered rate (replayed)")


def _best_label(what: str, value: int, tested, violation: float | None) -> str:
    """e.g. "best GPU count: 8 (misses the SLA; largest tested)": a best line says when it cannot be trusted."""
    caveats = []
    if violation is not None and np.isfinite(violation) and violation > analysis.BREAKING_SLA_VIOLATION:
        caveats.append("misses the SLA")
    if len(tested) > 1 and value == max(tested):
        caveats.append("largest tested")
    return f"{what}: {value}" + (f" ({'; '.join(caveats)})" if caveats else "")


def _empty(fig: Figure, message: str) -> Figure:
    fig.text(0.5, 0.5, message, ha="center", va="center")
    return fig


def plot_request_scaling(rows: pd.DataFrame, results_dir=None, filename: str = "step1_request_scaling.png") -> Figure:
    """Step 1: p99 latency, SLA violation, throughput and goodput against request volume, a line per configuration."""
    rows = _prepared(rows)
    fig, axes = _grid(3 if _has_step_metrics(rows) else 2)
    if rows.empty:
        return _empty(fig, "no results")
    if _has_step_metrics(rows):
        _step_metric_panels(axes[4:], rows, "num_requests", by="label")
        for ax in axes[4:]:
            ax.set_xscale("log")
            ax.set_xlabel("requests")
    panels = (("latency_p99_s", "p99 latency (s)", True), ("sla_violation_rate", "SLA violation rate", False),
              ("throughput_rps", "throughput (req/s)", False), ("goodput_rps", "goodput (req/s)", False))
    for ax, (column, ylabel, logy) in zip(axes, panels):
        for label, group in rows.sort_values("num_requests").groupby("label", sort=False):
            _line(ax, group["num_requests"].to_numpy(), group, column, label=label,
                  color=colors_by(rows, "label")[label])
        ax.set_xscale("log")
        if logy and (rows[column] > 0).any():
            ax.set_yscale("log")
        if column == "sla_violation_rate":
            _share_axis(ax, rows[column].to_numpy(dtype=float))
            ax.legend(handles=_violation_references(ax, rows[rows["num_requests"] == rows["num_requests"].max()]),
                      fontsize=8)
        elif logy is False:
            ax.set_ylim(bottom=0)
        ax.set_xlabel("requests")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    return _finish(fig, rows, "Step 1: request scaling", results_dir, filename)


def _prepared(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows a plot draws: replications averaged; rows without a scheduler column are one group."""
    rows = analysis.summarize(rows)
    return rows if "scheduler" in rows or rows.empty else rows.assign(scheduler="all rows")


def _whose(rows: pd.DataFrame) -> str:
    """" (multi_bin_dynamic)" after a best line's name when several schedulers share the plot, else ""."""
    return f" ({analysis.primary_scheduler(rows)})" if rows["scheduler"].nunique() > 1 else ""


def _schedulers_heading(rows: pd.DataFrame) -> str:
    names = list(dict.fromkeys(rows["scheduler"].astype(str))) if "scheduler" in rows else []
    return ", ".join(names)


def plot_gpu_scaling(rows: pd.DataFrame, results_dir=None, filename: str = "step2_gpu_scaling.png") -> Figure:
    """Step 2: throughput, goodput, SLA violation and scaling efficiency against the GPU count, a line per
    scheduler (and p50/p99 TTFT and TPOT for the continuous ones); the best GPU count is the primary
    scheduler's (:func:`workbench.study.answers.analysis.primary_scheduler`)."""
    rows = _prepared(rows)
    fig, axes = _grid(3 if _has_step_metrics(rows) else 2)
    if rows.empty:
        return _empty(fig, "no results")
    rows = rows.sort_values("num_gpus")
    primary = analysis.primary_rows(rows)
    best = analysis.best_gpu_count(primary)
    gpus = np.array(sorted({int(g) for g in rows["num_gpus"]}))
    panels = (("throughput_rps", "throughput (req/s)"), ("goodput_rps", "goodput (req/s)"),
              ("sla_violation_rate", "SLA violation rate"),
              ("scaling_efficiency", "scaling efficiency (per-GPU throughput / 1 GPU)"))
    for scheduler, group in rows.groupby("scheduler", sort=False):
        group = group.copy()
        efficiency = analysis.scaling_efficiency(group)
        group["scaling_efficiency"] = [efficiency.get(int(g), np.nan) for g in group["num_gpus"]]
        for ax, (column, _) in zip(axes, panels):
            _line(ax, group["num_gpus"].to_numpy(), group, column, label=str(scheduler),
                  color=colors_by(rows)[scheduler])
    for ax, (column, ylabel) in zip(axes, panels):
        ax.set_xscale("log", base=2)
        ax.set_xticks(gpus, [str(int(g)) for g in gpus])
        if best is not None:
            violation = float(primary.loc[primary["num_gpus"] == best, "sla_violation_rate"].iloc[0])
            ax.axvline(best, color="tab:green", ls="--", lw=1,
                       label=_best_label(f"best GPU count{_whose(rows)}", best, gpus,
                                         violation))
        ax.set_xlabel("GPUs")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        if column != "sla_violation_rate":
            ax.set_ylim(bottom=0)
    offered = rows.drop_duplicates("num_gpus")
    _offered_reference(axes[0], offered, "num_gpus")
    _offered_reference(axes[1], offered, "num_gpus")
    _share_axis(axes[2], rows["sla_violation_rate"].to_numpy(dtype=float))
    _violation_references(axes[2], rows)
    axes[3].axhline(1.0, color="grey", ls=":", lw=1, label="ideal (linear scaling)")
    if _has_step_metrics(rows):
        _step_metric_panels(axes[4:], rows, "num_gpus")
        for ax in axes[4:]:
            ax.set_xscale("log", base=2)
            ax.set_xticks(gpus, [str(int(g)) for g in gpus])
            ax.set_xlabel("GPUs")
    for ax in axes[:4]:
        ax.legend(fontsize=7)
    return _finish(fig, rows, f"Step 2: GPU scaling ({_schedulers_heading(rows)})", results_dir, filename)


def plot_kbins_sensitivity(rows: pd.DataFrame, results_dir=None,
                           filename: str = "step3_kbins_sensitivity.png") -> Figure:
    """Step 3: SLA violation, p99 latency, throughput and goodput against K, a line per binning scheduler;
    schedulers without bins (one test each) are horizontal reference lines."""
    rows = _prepared(rows)
    fig, axes = _grid(3 if _has_step_metrics(rows) else 2)
    if rows.empty:
        return _empty(fig, "no results")
    rows = rows.sort_values("k_bins")
    per_k = rows.groupby("scheduler", sort=False)["k_bins"].transform("nunique") > 1
    swept, flat = rows[per_k], rows[~per_k]
    k = np.array(sorted({int(v) for v in (swept if not swept.empty else rows)["k_bins"]}))
    primary = analysis.primary_rows(rows)
    best = analysis.best_k_row(primary) if primary["k_bins"].nunique() > 1 else None
    # K against effective bins is the identity unless equal-mass edges merge: no panel of its own, a note
    # where they differ
    panels = (("sla_violation_rate", "SLA violation rate"), ("latency_p99_s", "p99 latency (s)"),
              ("throughput_rps", "throughput (req/s)"), ("goodput_rps", "goodput (req/s)"))
    for ax, (column, ylabel) in zip(axes, panels):
        for scheduler, group in swept.groupby("scheduler", sort=False):
            _line(ax, group["k_bins"].to_numpy(), group, column, label=str(scheduler),
                  color=colors_by(rows)[scheduler])
        for r in flat.itertuples():
            ax.axhline(getattr(r, column), ls="-.", lw=1, color=colors_by(rows)[r.scheduler],
                       label=f"{r.scheduler} (no bins)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(k, [str(int(v)) for v in k])
        if best is not None:
            ax.axvline(best["k_bins"], color="tab:green", ls="--", lw=1,
                       label=_best_label(f"best K{_whose(rows)}", int(best["k_bins"]), k,
                                         float(best["sla_violation_rate"])))
        ax.set_xlabel("K (bins)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        if column == "sla_violation_rate":
            _share_axis(ax, rows[column].to_numpy(dtype=float))
            _violation_references(ax, rows)
        else:
            ax.set_ylim(bottom=0)
    _offered_reference(axes[2], rows.drop_duplicates("k_bins"), "k_bins")
    merged = swept[swept["k_bins_effective"] != swept["k_bins"]] if "k_bins_effective" in swept else swept.iloc[0:0]
    if not merged.empty:
        axes[2].text(0.02, 0.02, "bins merged (equal-mass edges): " + ", ".join(
            f"K={int(r.k_bins)} -> {int(r.k_bins_effective)}" for r in merged.itertuples()),
            transform=axes[2].transAxes, fontsize=8, va="bottom")
    if _has_step_metrics(rows):
        _step_metric_panels(axes[4:], rows[rows["ttft_p99_s"].notna() & per_k], "k_bins") \
            if (rows["ttft_p99_s"].notna() & per_k).any() else None
        for ax, metric in zip(axes[4:], ("ttft", "tpot")):
            for r in flat[flat["ttft_p99_s"].notna()].itertuples():
                ax.axhline(getattr(r, f"{metric}_p99_s"), ls="-.", lw=1, label=f"{r.scheduler} p99 (no bins)")
                ax.axhline(getattr(r, f"{metric}_p50_s"), ls=":", lw=1, label=f"{r.scheduler} p50 (no bins)")
            ax.set_xscale("log", base=2)
            ax.set_xticks(k, [str(int(v)) for v in k])
            ax.set_xlabel("K (bins)")
            ax.set_ylabel(f"{metric.upper()} (s)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
    for ax in axes[:4]:
        ax.legend(fontsize=7)
    gpus = sorted({int(g) for g in rows["num_gpus"]})
    heading = f"Step 3: K-bins sensitivity ({_schedulers_heading(rows)}; {', '.join(map(str, gpus))} GPUs)"
    return _finish(fig, rows, heading, results_dir, filename)


# --------------------------------------------------------------------------- capacity


def _capacity_heading(rows: pd.DataFrame) -> str:
    """e.g. "capacity: >= 90% of requests within the SLA" (from the rows' capacity target)."""
    parts = []
    for criterion, group in rows.groupby("capacity_criterion", sort=False):
        first = group.iloc[0]
        if criterion == "attainment":
            parts.append(f">= {first['capacity_target']:.0%} of requests within the SLA")
        elif criterion == "slo":
            parts.append(f">= {first['capacity_target']:.0%} within TTFT {first['ttft_sla_s']:g} s and TPOT "
                         f"{first['tpot_sla_s']:g} s (continuous)")
        else:
            parts.append("p99 latency within the SLA")
    return "capacity: largest rate with " + "; ".join(parts)


def _unreachable_note(ax, labels: list[str]) -> None:
    """Say under the panel which configurations no load brings to the target (they have no point)."""
    if not labels:
        return
    # "static_fifo (1 GPU)", "static_fifo (2 GPUs)", ... -> "static_fifo (1, 2 GPUs)": one entry per scheduler
    grouped: dict[str, list[str]] = {}
    for label in labels:
        m = re.match(r"^(.*?) \((\d+) GPUs?(.*)\)$", label)
        name, detail = (m.group(1) + (m.group(3) and f" {m.group(3).strip(', ')}"), m.group(2)) if m else (label, "")
        grouped.setdefault(name, []).append(detail)
    parts = [f"{name} ({', '.join(d for d in details if d)} GPUs)" if any(details) else name
             for name, details in grouped.items()]
    text = textwrap.fill("no load reaches the target: " + "; ".join(parts), 90)
    ax.annotate(text, xy=(0, 0), xycoords="axes fraction", xytext=(0, -32), textcoords="offset points",
                va="top", ha="left", fontsize=8, color="tab:red")


def plot_step1_capacity(rows: pd.DataFrame, results_dir=None,
                        filename: str = "step1_request_scaling_capacity.png") -> Figure:
    """Step 1: each scheduler's capacity on 1 GPU, one bar per configuration (unreachable targets marked)."""
    rows = analysis.capacity_rows(_prepared(rows))
    fig = Figure(figsize=(max(9, 2.0 * len(rows)), 5.0), layout="constrained")
    ax = fig.subplots()
    if rows.empty:
        return _empty(fig, "no capacity results (capacity_search=False)")
    caps = rows["capacity_rps"].astype(float)
    x = np.arange(len(rows))
    ci = rows["capacity_rps_ci95"].to_numpy(dtype=float) if "capacity_rps_ci95" in rows else None
    ax.bar(x, caps.fillna(0.0), color=["tab:blue" if np.isfinite(c) else "lightgrey" for c in caps],
           yerr=ci if ci is not None and np.isfinite(ci).any() else None, capsize=4)
    for i, c in enumerate(caps):
        ax.text(i, c if np.isfinite(c) else 0.0, f"{c:.3g} req/s" if np.isfinite(c) else "unreachable",
                ha="center", va="bottom", fontsize=9, color="black" if np.isfinite(c) else "tab:red")
    ax.set_xticks(x, [str(v).replace(" (", "\n(") for v in rows["label"]])
    ax.set_ylabel("capacity (req/s)")
    ax.grid(True, axis="y", alpha=0.3)
    volume = int(rows["num_requests"].max())
    return _finish(fig, rows, f"Step 1: {_capacity_heading(rows)}\n1 GPU, {volume:,} requests",
                   results_dir, filename)


def plot_gpu_capacity(rows: pd.DataFrame, results_dir=None, filename: str = "step2_gpu_scaling_capacity.png") -> Figure:
    """Step 2: capacity against GPU count per scheduler (log-log, ideal linear scaling of each from its 1-GPU
    capacity dotted), and capacity per GPU; the best GPU counts marked are the primary scheduler's."""
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    ax_cap, ax_eff = fig.subplots(1, 2)
    rows = analysis.capacity_rows(_prepared(rows))
    if rows.empty:
        return _empty(fig, "no capacity results (capacity_search=False)")
    rows = rows.sort_values("num_gpus")
    gpus = np.array(sorted({int(g) for g in rows["num_gpus"]}))
    for scheduler, group in rows.groupby("scheduler", sort=False):
        g = group["num_gpus"].to_numpy()
        color = colors_by(rows)[scheduler]
        _line(ax_cap, g, group, "capacity_rps", label=f"{scheduler}", color=color)
        base = group.iloc[0]
        per_gpu0 = float(base["capacity_rps"]) / int(base["num_gpus"])
        if np.isfinite(per_gpu0) and per_gpu0 > 0:
            ax_cap.plot(g, per_gpu0 * g, color=color, ls=":", lw=1)
        per_gpu = group.assign(capacity_rps=group["capacity_rps"] / group["num_gpus"])
        if "capacity_rps_ci95" in group:
            per_gpu["capacity_rps_ci95"] = group["capacity_rps_ci95"] / group["num_gpus"]
        _line(ax_eff, g, per_gpu, "capacity_rps", label=f"{scheduler}", color=color)
    ax_cap.plot([], [], color="grey", ls=":", lw=1, label="ideal linear scaling (each from its smallest pool)")
    ax_cap.set_xscale("log", base=2)
    if (rows["capacity_rps"] > 0).any():
        ax_cap.set_yscale("log")
    ax_cap.set_ylabel("capacity (req/s)")
    ax_cap.legend(fontsize=7)
    _unreachable_note(ax_cap, [str(v) for v in rows.loc[rows["capacity_rps"].isna(), "label"]])
    ax_eff.set_xscale("log", base=2)
    ax_eff.set_ylabel("capacity per GPU (req/s)")
    primary = analysis.primary_rows(rows)
    best = analysis.best_gpu_count_by_capacity_per_gpu(primary)
    if best is not None:
        ax_eff.axvline(best, color="tab:green", ls="--", lw=1,
                       label=_best_label(f"best by capacity per GPU{_whose(rows)}", best, gpus, None))
    by_goodput = analysis.best_gpu_count(primary)
    if by_goodput is not None:
        violation = float(primary.loc[primary["num_gpus"] == by_goodput, "sla_violation_rate"].iloc[0])
        ax_eff.axvline(by_goodput, color="tab:purple", ls="-.", lw=1,
                       label=_best_label(f"best by goodput rule{_whose(rows)}", by_goodput, gpus, violation))
    ax_eff.set_ylim(bottom=0)
    ax_eff.legend(fontsize=7)
    for ax in (ax_cap, ax_eff):
        ax.set_xticks(gpus, [str(int(g)) for g in gpus])
        ax.set_xlabel("GPUs")
        ax.grid(True, which="both", alpha=0.3)
    return _finish(fig, rows, f"Step 2: GPU scaling ({_schedulers_heading(rows)}), {_capacity_heading(rows)}",
                   results_dir, filename)


def plot_kbins_capacity(rows: pd.DataFrame, results_dir=None,
                        filename: str = "step3_kbins_sensitivity_capacity.png") -> Figure:
    """Step 3: capacity against K at the step's GPU count, a line per binning scheduler (with its replayed
    throughput dashed), schedulers without bins as horizontal reference lines."""
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.subplots()
    rows = analysis.capacity_rows(_prepared(rows))
    if rows.empty:
        return _empty(fig, "no capacity results (capacity_search=False)")
    rows = rows.sort_values("k_bins")
    per_k = rows.groupby("scheduler", sort=False)["k_bins"].transform("nunique") > 1
    swept, flat = rows[per_k], rows[~per_k]
    k = np.array(sorted({int(v) for v in (swept if not swept.empty else rows)["k_bins"]}))
    for scheduler, group in swept.groupby("scheduler", sort=False):
        color = colors_by(rows)[scheduler]
        _line(ax, group["k_bins"].to_numpy(), group, "capacity_rps", label=f"{scheduler} capacity", color=color)
        ax.plot(group["k_bins"], group["throughput_rps"].to_numpy(dtype=float), color=color, ls="--", lw=1,
                marker=".", label=f"{scheduler} replayed throughput (one load)")
    for r in flat.itertuples():
        if np.isfinite(r.capacity_rps):
            ax.axhline(r.capacity_rps, color=colors_by(rows)[r.scheduler], ls="-.", lw=1,
                       label=f"{r.scheduler} capacity (no bins)")
    primary = analysis.primary_rows(rows)
    best = analysis.best_k_by_capacity(primary) if primary["k_bins"].nunique() > 1 else None
    if best is not None:
        ax.axvline(best, color="tab:green", ls="--", lw=1,
                   label=f"best K by capacity{_whose(rows)}: {best}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(k, [str(int(v)) for v in k])
    ax.set_xlabel("K (bins)")
    ax.set_ylabel("requests/s")
    ax.set_ylim(bottom=0)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    _unreachable_note(ax, [str(v) for v in rows.loc[rows["capacity_rps"].isna(), "label"]])
    gpus = ", ".join(str(int(g)) for g in sorted(rows["num_gpus"].unique()))
    return _finish(fig, rows, f"Step 3: K-bins sensitivity ({gpus} GPUs), {_capacity_heading(rows)}",
                   results_dir, filename)
