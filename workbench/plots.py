"""Figures of the three steps.

Each function takes the step's result rows, returns a ``matplotlib.figure.Figure``
(built without pyplot, so a notebook shows it once, as the cell's value, and
no global figure state builds up) and, given ``results_dir``, also saves it as a
PNG there (atomically).  Titles name the trace and say "synthetic" when it is.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from . import analysis
from .sweep import atomic_write_bytes

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
            ax.axhline(analysis.BREAKING_SLA_VIOLATION, color="grey", ls=":", lw=1, label="5% (breaking point)")
            ax.set_ylim(-0.02, 1.02)
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
    for ax, (_, ylabel, values) in zip(axes, series):
        ax.plot(gpus, values.to_numpy(), marker="o")
        ax.set_xscale("log", base=2)
        ax.set_xticks(gpus, [str(int(g)) for g in gpus])
        if best is not None:
            ax.axvline(best, color="tab:green", ls="--", lw=1, label=f"best GPU count: {best}")
        ax.set_xlabel("GPUs")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    axes[2].axhline(analysis.BREAKING_SLA_VIOLATION, color="grey", ls=":", lw=1, label="5%")
    axes[2].set_ylim(-0.02, 1.02)
    axes[3].axhline(1.0, color="grey", ls=":", lw=1)
    axes[1].legend(fontsize=8)
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
    panels = (("sla_violation_rate", "SLA violation rate"), ("latency_p99_s", "p99 latency (s)"),
              ("throughput_rps", "throughput (req/s)"), ("k_bins_effective", "effective bins"))
    for ax, (column, ylabel) in zip(axes, panels):
        ax.plot(k, rows[column].to_numpy(), marker="o")
        ax.set_xscale("log", base=2)
        ax.set_xticks(k, [str(int(v)) for v in k])
        if best is not None:
            ax.axvline(best["k_bins"], color="tab:green", ls="--", lw=1, label=f"best K: {int(best['k_bins'])}")
        ax.set_xlabel("K (bins)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    axes[3].plot(k, k, color="grey", ls=":", lw=1, label="effective = K")
    axes[3].set_yscale("log", base=2)
    axes[3].set_yticks(k, [str(int(v)) for v in k])
    axes[3].legend(fontsize=8)
    gpus = sorted({int(g) for g in rows["num_gpus"]})
    heading = f"Step 3: K-bins sensitivity (multi_bin_dynamic, {', '.join(map(str, gpus))} GPUs)"
    return _finish(fig, rows, heading, results_dir, filename)
