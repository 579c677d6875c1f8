"""Figures of the three steps.

Each function takes the step's result rows, returns a ``matplotlib.figure.Figure``
(built without pyplot, so a notebook shows it once, as the cell's value, and
no global figure state builds up) and, given ``results_dir``, also saves it as a
PNG there (atomically).  Titles name the trace and say "synthetic" when it is.
Each step has its replay figure (``<step>.png``) and, for the tests that
searched their capacity, a capacity figure (``<step>_capacity.png``).
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from workbench.study import analysis
from workbench.study.sweep import atomic_write_bytes

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


def _finish(fig: Figure, rows: pd.DataFrame, heading: str, results_dir, filename: str) -> Figure:
    sla = rows["d_sla_s"].dropna().unique() if "d_sla_s" in rows else []
    sla_text = f", SLA {sla[0]:g} s" if len(sla) == 1 else ""
    fig.suptitle(f"{heading}\ntrace: {trace_title(rows)}{sla_text}", fontsize=11)
    if results_dir is not None:
        save_png(fig, Path(results_dir) / filename)
    return fig


def save_png(fig: Figure, path: str | Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def _grid() -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(11, 7.5), layout="constrained")
    axes = fig.subplots(2, 2)
    return fig, axes.ravel()


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
    fig, axes = _grid()
    if rows.empty:
        return _empty(fig, "no results")
    panels = (("latency_p99_s", "p99 latency (s)", True), ("sla_violation_rate", "SLA violation rate", False),
              ("throughput_rps", "throughput (req/s)", False), ("goodput_rps", "goodput (req/s)", False))
    for ax, (column, ylabel, logy) in zip(axes, panels):
        for label, group in rows.sort_values("num_requests").groupby("label", sort=False):
            ax.plot(group["num_requests"], group[column], marker="o", label=label)
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


def plot_gpu_scaling(rows: pd.DataFrame, results_dir=None, filename: str = "step2_gpu_scaling.png") -> Figure:
    """Step 2: throughput, goodput, SLA violation and scaling efficiency against the GPU count."""
    fig, axes = _grid()
    if rows.empty:
        return _empty(fig, "no results")
    rows = rows.sort_values("num_gpus")
    best = analysis.best_gpu_count(rows)
    efficiency = analysis.scaling_efficiency(rows)
    gpus = rows["num_gpus"].to_numpy()
    series = (("throughput_rps", "throughput (req/s)", rows["throughput_rps"]),
              ("goodput_rps", "goodput (req/s)", rows["goodput_rps"]),
              ("sla_violation_rate", "SLA violation rate", rows["sla_violation_rate"]),
              ("scaling_efficiency", "scaling efficiency (per-GPU throughput / 1 GPU)",
               pd.Series([efficiency.get(int(g), np.nan) for g in gpus])))
    for ax, (column, ylabel, values) in zip(axes, series):
        ax.plot(gpus, values.to_numpy(), marker="o", label=ylabel.split(" (")[0])
        ax.set_xscale("log", base=2)
        ax.set_xticks(gpus, [str(int(g)) for g in gpus])
        if best is not None:
            violation = float(rows.loc[rows["num_gpus"] == best, "sla_violation_rate"].iloc[0])
            ax.axvline(best, color="tab:green", ls="--", lw=1,
                       label=_best_label("best GPU count", best, gpus, violation))
        ax.set_xlabel("GPUs")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        if column != "sla_violation_rate":
            ax.set_ylim(bottom=0)
    _offered_reference(axes[0], rows, "num_gpus")
    _offered_reference(axes[1], rows, "num_gpus")
    _share_axis(axes[2], rows["sla_violation_rate"].to_numpy(dtype=float))
    _violation_references(axes[2], rows)
    axes[3].axhline(1.0, color="grey", ls=":", lw=1, label="ideal (linear scaling)")
    for ax in axes:
        ax.legend(fontsize=7)
    return _finish(fig, rows, "Step 2: GPU scaling (multi_bin_dynamic)", results_dir, filename)


def plot_kbins_sensitivity(rows: pd.DataFrame, results_dir=None,
                           filename: str = "step3_kbins_sensitivity.png") -> Figure:
    """Step 3: SLA violation, p99 latency, throughput and the effective number of bins against K."""
    fig, axes = _grid()
    if rows.empty:
        return _empty(fig, "no results")
    rows = rows.sort_values("k_bins")
    k = rows["k_bins"].to_numpy()
    best = analysis.best_k_row(rows)
    # K against effective bins is the identity unless equal-mass edges merge: no panel of its own, a note
    # where they differ
    panels = (("sla_violation_rate", "SLA violation rate"), ("latency_p99_s", "p99 latency (s)"),
              ("throughput_rps", "throughput (req/s)"), ("goodput_rps", "goodput (req/s)"))
    for ax, (column, ylabel) in zip(axes, panels):
        ax.plot(k, rows[column].to_numpy(), marker="o", label=ylabel.split(" (")[0])
        ax.set_xscale("log", base=2)
        ax.set_xticks(k, [str(int(v)) for v in k])
        if best is not None:
            ax.axvline(best["k_bins"], color="tab:green", ls="--", lw=1,
                       label=_best_label("best K", int(best["k_bins"]), k, float(best["sla_violation_rate"])))
        ax.set_xlabel("K (bins)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        if column == "sla_violation_rate":
            _share_axis(ax, rows[column].to_numpy(dtype=float))
            _violation_references(ax, rows)
        else:
            ax.set_ylim(bottom=0)
    _offered_reference(axes[2], rows, "k_bins")
    merged = rows[rows["k_bins_effective"] != rows["k_bins"]] if "k_bins_effective" in rows else rows.iloc[0:0]
    if not merged.empty:
        axes[2].text(0.02, 0.02, "bins merged (equal-mass edges): " + ", ".join(
            f"K={int(r.k_bins)} -> {int(r.k_bins_effective)}" for r in merged.itertuples()),
            transform=axes[2].transAxes, fontsize=8, va="bottom")
    for ax in axes:
        ax.legend(fontsize=7)
    gpus = sorted({int(g) for g in rows["num_gpus"]})
    heading = f"Step 3: K-bins sensitivity (multi_bin_dynamic, {', '.join(map(str, gpus))} GPUs)"
    return _finish(fig, rows, heading, results_dir, filename)


# --------------------------------------------------------------------------- capacity


def _capacity_heading(rows: pd.DataFrame) -> str:
    """e.g. "capacity: >= 90% of requests within the SLA" (from the rows' capacity target)."""
    first = rows.iloc[0]
    if first["capacity_criterion"] == "attainment":
        return f"capacity: largest rate with >= {first['capacity_target']:.0%} of requests within the SLA"
    return "capacity: largest rate with p99 latency within the SLA"


def _unreachable_note(ax, labels: list[str]) -> None:
    if labels:
        ax.text(0.02, 0.02, "no load reaches the target:\n" + "\n".join(labels), transform=ax.transAxes,
                fontsize=8, va="bottom", color="tab:red")


def plot_step1_capacity(rows: pd.DataFrame, results_dir=None,
                        filename: str = "step1_request_scaling_capacity.png") -> Figure:
    """Step 1: each scheduler's capacity on 1 GPU, one bar per configuration (unreachable targets marked)."""
    rows = analysis.capacity_rows(rows)
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.subplots()
    if rows.empty:
        return _empty(fig, "no capacity results (capacity_search=False)")
    caps = rows["capacity_rps"].astype(float)
    x = np.arange(len(rows))
    ax.bar(x, caps.fillna(0.0), color=["tab:blue" if np.isfinite(c) else "lightgrey" for c in caps])
    for i, c in enumerate(caps):
        ax.text(i, c if np.isfinite(c) else 0.0, f"{c:.3g} req/s" if np.isfinite(c) else "unreachable",
                ha="center", va="bottom", fontsize=9, color="black" if np.isfinite(c) else "tab:red")
    ax.set_xticks(x, [str(v) for v in rows["label"]])
    ax.set_ylabel("capacity (req/s)")
    ax.grid(True, axis="y", alpha=0.3)
    volume = int(rows["num_requests"].max())
    return _finish(fig, rows, f"Step 1: {_capacity_heading(rows)}\n1 GPU, {volume:,} requests",
                   results_dir, filename)


def plot_gpu_capacity(rows: pd.DataFrame, results_dir=None, filename: str = "step2_gpu_scaling_capacity.png") -> Figure:
    """Step 2: capacity against GPU count (log-log, with ideal linear scaling and the replayed throughput),
    and capacity per GPU with its scaling efficiency (capacity / ideal) on the right axis."""
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    ax_cap, ax_eff = fig.subplots(1, 2)
    rows = analysis.capacity_rows(rows)
    if rows.empty:
        return _empty(fig, "no capacity results (capacity_search=False)")
    rows = rows.sort_values("num_gpus")
    gpus = rows["num_gpus"].to_numpy()
    caps = rows["capacity_rps"].to_numpy(dtype=float)
    ax_cap.plot(gpus, caps, marker="o", label="capacity")
    base = rows.iloc[0]
    per_gpu0 = float(base["capacity_rps"]) / int(base["num_gpus"])
    if np.isfinite(per_gpu0) and per_gpu0 > 0:
        ax_cap.plot(gpus, per_gpu0 * gpus, color="grey", ls=":", lw=1,
                    label=f"ideal linear scaling from {int(base['num_gpus'])} GPU")
    ax_cap.plot(gpus, rows["throughput_rps"].to_numpy(dtype=float), color="tab:orange", ls="--", lw=1, marker=".",
                label="replayed throughput (one load)")
    _offered_reference(ax_cap, rows, "num_gpus")
    ax_cap.set_xscale("log", base=2)
    ax_cap.set_yscale("log")
    ax_cap.set_ylabel("requests/s")
    ax_cap.legend(fontsize=8)
    _unreachable_note(ax_cap, [str(v) for v in rows.loc[rows["capacity_rps"].isna(), "label"]])

    ax_eff.plot(gpus, caps / gpus, marker="o")
    ax_eff.set_xscale("log", base=2)
    ax_eff.set_ylabel("capacity per GPU (req/s)")
    if np.isfinite(per_gpu0) and per_gpu0 > 0:
        ax_eff.axhline(per_gpu0, color="grey", ls=":", lw=1, label="ideal (efficiency 1)")
        ax_eff.secondary_yaxis("right", functions=(lambda y: y / per_gpu0, lambda e: e * per_gpu0)).set_ylabel(
            "capacity scaling efficiency")
    best = analysis.best_gpu_count_by_capacity_per_gpu(rows)
    if best is not None:
        ax_eff.axvline(best, color="tab:green", ls="--", lw=1,
                       label=_best_label("best by capacity per GPU", best, gpus, None))
    by_goodput = analysis.best_gpu_count(rows)
    if by_goodput is not None:
        violation = float(rows.loc[rows["num_gpus"] == by_goodput, "sla_violation_rate"].iloc[0])
        ax_eff.axvline(by_goodput, color="tab:purple", ls="-.", lw=1,
                       label=_best_label("best by goodput rule", by_goodput, gpus, violation))
    ax_eff.set_ylim(bottom=0)
    ax_eff.legend(fontsize=8)
    for ax in (ax_cap, ax_eff):
        ax.set_xticks(gpus, [str(int(g)) for g in gpus])
        ax.set_xlabel("GPUs")
        ax.grid(True, which="both", alpha=0.3)
    return _finish(fig, rows, f"Step 2: GPU scaling (multi_bin_dynamic), {_capacity_heading(rows)}",
                   results_dir, filename)


def plot_kbins_capacity(rows: pd.DataFrame, results_dir=None,
                        filename: str = "step3_kbins_sensitivity_capacity.png") -> Figure:
    """Step 3: capacity against K at the step's GPU count, with the replayed throughput for reference."""
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.subplots()
    rows = analysis.capacity_rows(rows)
    if rows.empty:
        return _empty(fig, "no capacity results (capacity_search=False)")
    rows = rows.sort_values("k_bins")
    k = rows["k_bins"].to_numpy()
    ax.plot(k, rows["capacity_rps"].to_numpy(dtype=float), marker="o", label="capacity")
    ax.plot(k, rows["throughput_rps"].to_numpy(dtype=float), color="tab:orange", ls="--", lw=1, marker=".",
            label="replayed throughput (one load)")
    best = analysis.best_k_by_capacity(rows)
    if best is not None:
        ax.axvline(best, color="tab:green", ls="--", lw=1, label=f"best K by capacity: {best}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(k, [str(int(v)) for v in k])
    ax.set_xlabel("K (bins)")
    ax.set_ylabel("requests/s")
    ax.set_ylim(bottom=0)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    _unreachable_note(ax, [f"K={int(v)}" for v in rows.loc[rows["capacity_rps"].isna(), "k_bins"]])
    gpus = ", ".join(str(int(g)) for g in sorted(rows["num_gpus"].unique()))
    return _finish(fig, rows, f"Step 3: K-bins sensitivity ({gpus} GPUs), {_capacity_heading(rows)}",
                   results_dir, filename)
