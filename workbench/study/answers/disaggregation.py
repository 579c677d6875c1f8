"""Disaggregated vs colocated serving as the SLO tightens: the tables and the figure of ``notebooks/disaggregation``.

The sweeps are run by :mod:`workbench.study.runs.disaggregation` (``slo_sweep``: the best disaggregated and
colocated placement at each SLO scale; ``simulated_goodput``: the measured deployments simulated);
``measured_goodput`` reads the same quantity off measured runs (the highest measured rate whose attainment
meets the target, per GPU), and ``plot_goodput_vs_slo`` draws them together.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

RANKING_COLUMNS = ("rank", "kind", "placement", "gpus", "goodput_rps", "goodput_per_gpu", "estimate_rps", "status")
SWEEP_COLUMNS = ("trace", "slo_scale", "ttft_s", "tpot_s", "kind", "placement", "gpus", "goodput_rps",
                 "goodput_per_gpu")
POINT_COLUMNS = ("deployment", "slo_scale", "gpus", "measured_goodput_per_gpu", "simulated_goodput_per_gpu")


def readable(table: pd.DataFrame, columns) -> pd.DataFrame:
    """A table of this module for reading (:func:`workbench.study.present.tables.display_table`: units and
    precision; "0" goodput where no placement meets the SLO)."""
    from workbench.study.present.tables import display_table

    return display_table(table, columns)


def measured_goodput(runs, scales, *, ttft_s: float = 0.2, tpot_s: float = 0.1, attainment: float = 0.9,
                     group=None) -> pd.DataFrame:
    """Per deployment (``group(run)``, default: the config's GPU layout) and SLO scale: the highest measured
    rate whose attainment meets ``attainment`` (0 if none), per GPU.  The runs only sample a few rates, so it
    is a lower bound of the deployment's goodput."""
    from workbench.sim.metrics import slo_attainment

    group = group or (lambda r: _layout(r.config))
    rows = []
    for scale in scales:
        best = {}
        for run in runs:
            key = group(run)
            att = slo_attainment(run.measured.ttft_s, run.measured.tpot_s, ttft_s * scale, tpot_s * scale)
            rate = run.rate_rps if att >= attainment else 0.0
            gpus = run.config.num_gpus
            best[key] = max(best.get(key, (0.0, gpus)), (rate, gpus))
        for key, (rate, gpus) in best.items():
            rows.append({"slo_scale": scale, "deployment": key, "gpus": gpus, "measured_goodput_rps": rate,
                         "measured_goodput_per_gpu": rate / gpus})
    return pd.DataFrame(rows)


def _layout(cfg) -> str:
    if cfg.scheduler != "disaggregated":
        return f"colocated ({cfg.num_gpus} GPU{'s' if cfg.num_gpus > 1 else ''})"
    pp = f",pp{cfg.decode_pp}" if cfg.decode_pp > 1 else ""
    return f"{cfg.prefill_replicas}xP(tp{cfg.prefill_tp}) + {cfg.decode_replicas}xD(tp{cfg.decode_tp}{pp})"


def plot_goodput_vs_slo(sweeps: dict, measured: pd.DataFrame | None = None, simulated: pd.DataFrame | None = None,
                        *, gpus: int, attainment: float = 0.9, results_dir=None,
                        filename: str = "disaggregation.png") -> Figure:
    """Goodput per GPU of the best disaggregated and best colocated placement against the SLO scale, one panel per
    trace (``sweeps``: trace label -> slo_sweep table); on the panel of the first trace, the measured deployments
    (filled markers) and the same deployments simulated (open markers); a two-line title, one legend below
    the panels."""
    from workbench.study.present import palette
    from workbench.study.present.figures import finish_figure

    fig = Figure(figsize=(5.6 * len(sweeps), 5.0), dpi=110, layout="constrained")
    axes = fig.subplots(1, len(sweeps), squeeze=False)[0]
    # each kind in its scheduler's colour (colocated replicas run continuous_fcfs); the colocated ones on other
    # kernels dashed
    for k, (label, sweep) in enumerate(sweeps.items()):
        ax = axes[k]
        for j, (kind, part) in enumerate(sweep.groupby("kind", sort=False)):
            part = part.sort_values("slo_scale")
            scheduler = "disaggregated" if kind == "disaggregated" else "continuous_fcfs"
            dash = "-" if kind == "disaggregated" or kind.endswith("same kernels") else "--"
            ax.plot(part.slo_scale, part.goodput_per_gpu, marker="o", ls=dash, color=palette.color(scheduler), lw=2,
                    label=f"best {kind} (simulated)")
        if k == 0 and measured is not None:
            markers = iter("sD^vP*X")
            for name, part in measured.groupby("deployment"):
                marker = next(markers, "o")
                ax.plot(part.slo_scale, part.measured_goodput_per_gpu, marker, color="black", ms=7, ls="none",
                        label=f"{name}: measured")
                if simulated is not None:
                    sim = simulated[simulated.deployment == name]
                    ax.plot(sim.slo_scale, sim.simulated_goodput_per_gpu, marker, color="black", ms=7,
                            mfc="none", ls="none", label=f"{name}: simulated")
        scales = sorted(sweep.slo_scale.unique())
        ax.set_xscale("log")
        ax.set_xticks(scales)
        ax.set_xticklabels([f"{v:g}" for v in scales])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.invert_xaxis()
        ax.set_xlabel("SLO scale (x TTFT 0.2 s and TPOT 0.1 s; tighter to the right)")
        ax.set_ylabel("goodput per GPU (requests/s meeting the SLO)")
        ax.set_title(f"{label}: best placement on {gpus} GPUs", fontsize=9)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    return finish_figure(fig, f"Disaggregated vs colocated serving as the SLO tightens\n{attainment:.0%} of the requests "
                         "within both limits; measured deployments as black points (filled), simulated (open)",
                         results_dir, filename)


__all__ = ["POINT_COLUMNS", "RANKING_COLUMNS", "SWEEP_COLUMNS", "measured_goodput", "plot_goodput_vs_slo",
           "readable"]
