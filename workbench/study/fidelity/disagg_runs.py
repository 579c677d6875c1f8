"""The fidelity report against measured disaggregated (DistServe) runs: tables, the issue's targets, CDF figures.

``notebooks/fidelity_disagg.ipynb`` calls these; calibration and the per-run
tables are in :mod:`workbench.study.fidelity.calibration_disagg`.

Targets (issue 15), for every run below overload when it is *predicted*
(calibrated on the other runs): the mean E2E within 15% and the SLO attainment
(TTFT <= 0.2 s and TPOT <= 0.1 s, DistServe's alignment criterion) within 10
points.  A run is overloaded when its setup file says so
(``runs.<name>.overloaded``: the source's README calls the 12 req/s runs
overloaded).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from workbench import checks
from workbench.study.fidelity.calibration_disagg import cross_validate_disaggregated, fidelity_table
from workbench.study.fidelity.vllm_runs import RunsParams

NOTEBOOK = "fidelity_disagg"
# what the notebook writes into its results folder (checked before anything runs: none may be a folder)
OUTPUTS = ("fidelity_disagg.csv", "fidelity_disagg_targets.csv", "fidelity_disagg_published.png",
           "fidelity_disagg_calibrated.png")
DEFAULT_DATA_DIR = "data/groundtruth/distserve_opt13b_a100_disagg"
E2E_LIMIT = 0.15        # |relative error of the mean E2E|
ATTAINMENT_POINTS = 10  # |simulated - measured attainment|, percentage points
METRICS = ("ttft_s", "tpot_s", "e2e_s")


@dataclass(frozen=True)
class DisaggFidelityParams(RunsParams):
    """The disaggregated fidelity notebook's parameters, validated (the runs and profile as the vLLM report's,
    and the disaggregated calibration's iterations and the prior weights to compare); the folder they write to
    (its part ``fidelity_disagg``)."""

    notebook, outputs, default_data_dir = NOTEBOOK, OUTPUTS, DEFAULT_DATA_DIR
    data_dir: str = DEFAULT_DATA_DIR
    runs: tuple[str, ...] = ("distserve-c21d11-300-3", "distserve-c21d11-300-6", "distserve-c21d11-300-9",
                             "distserve-c21d11-300-12", "distserve-c21d12-600-6", "distserve-c21d12-1200-12")
    profile: str = "opt-13b-a100-distserve"
    max_iter: int = 10
    prior_weights: tuple[float, ...] = (0.01, 0.09)

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "max_iter", checks.integer(self.max_iter, "max_iter", low=1, high=10_000))
        object.__setattr__(self, "prior_weights", checks.numbers(self.prior_weights, "prior_weights", low=0,
                                                                 empty=True))


def is_overloaded(run) -> bool:
    """Whether the setup file marks the run as overloaded (``runs.<name>.overloaded``)."""
    return bool(((run.setup or {}).get("runs", {}).get(run.name, {})).get("overloaded", False))


def placement(run) -> str:
    """The run's placement code (``c21d11``...) from its setup entry, else from its config."""
    entry = ((run.setup or {}).get("runs", {}).get(run.name, {}))
    if "placement" in entry:
        return entry["placement"]
    c = run.config
    return f"c{c.prefill_tp}1d{c.decode_tp}{c.decode_pp}"


def runs_table(runs) -> pd.DataFrame:
    """One row per measured run: placement, GPUs, requests, rate, overloaded, measured means and attainment."""
    from workbench.sim.metrics import slo_attainment
    from workbench.study.fidelity.calibration_disagg import diverged

    rows = []
    for r in runs:
        c = r.config
        rows.append({"run": r.name, "placement": placement(r), "gpus": c.num_gpus, "requests": len(r.trace),
                     "rate_rps": round(r.rate_rps, 2), "overloaded": is_overloaded(r),
                     "ttft_diverged": diverged(r), "measured mean TTFT s": r.measured.ttft_s.mean(),
                     "measured mean TPOT s": r.measured.tpot_s.mean(), "measured mean E2E s": r.measured.e2e_s.mean(),
                     "measured attainment": slo_attainment(r.measured.ttft_s, r.measured.tpot_s, c.ttft_sla_s,
                                                           c.tpot_sla_s)})
    return pd.DataFrame(rows)


def setup_text(runs, profile: str) -> str:
    """The setup, said once: each placement's deployment (from setup.json), the step times, and the SLO."""
    deployments = {}
    for r in runs:
        c = r.config
        pp = f" pipelined over {c.decode_pp} GPUs" if c.decode_pp > 1 else ""
        text = (f"{c.prefill_replicas} prefill instance(s) of TP {c.prefill_tp} and {c.decode_replicas} decode "
                f"instance(s) of TP {c.decode_tp}{pp} ({c.num_gpus} GPUs; KV blocks prefill "
                f"{c.prefill_kv_blocks or 'from memory'}, decode {c.decode_kv_blocks or 'from memory'}; KV link "
                f"{c.kv_link_gbps:g} Gbit/s)")
        deployments.setdefault(placement(r), (text, []))[1].append(f"{r.rate_rps:g}")
    c = runs[0].config
    lines = [f"- `{code}`: {text}; runs at {', '.join(rates)} requests/s" for code, (text, rates) in deployments.items()]
    return ("Deployments (each run's own, from `setup.json`):\n" + "\n".join(lines) + f"\n\nStep times: "
            f"`{profile}` (DistServe's published profile) at each pool's TP degree. SLO: TTFT <= "
            f"{c.ttft_sla_s:g} s and TPOT <= {c.tpot_sla_s * 1e3:g} ms.")


RUN_COLUMNS = ("run", "placement", "gpus", "requests", "rate_rps", "overloaded", "ttft_diverged",
               "measured mean TTFT s", "measured mean TPOT s", "measured mean E2E s", "measured attainment")
SUMMARY_COLUMNS = ("model", "run", "ttft error", "tpot error", "e2e error", "measured_attainment",
                   "simulated_attainment", "attainment_points")
TARGET_COLUMNS = ("prior_weight", "run", "model", "e2e_rel_error", "attainment_points", "met")


def readable(table: pd.DataFrame, columns) -> pd.DataFrame:
    """A table of this module for reading (:func:`workbench.study.present.tables.display_table`: units,
    precision, errors as signed percentages, attainment gaps in points)."""
    from workbench.study.present.tables import display_table

    return display_table(table, columns)


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per run and model: relative error of the mean TTFT, TPOT and E2E, and the attainments."""
    errors = table.pivot_table(index=["model", "run"], columns="metric", values="mean_rel_error", sort=False)
    errors.columns = [f"{m.replace('_s', '')} error" for m in errors.columns]
    att = table[table.metric == "e2e_s"].set_index(["model", "run"])[
        ["measured_attainment", "simulated_attainment", "attainment_points"]]
    return errors.join(att).reset_index()


def check_targets(table: pd.DataFrame, runs) -> pd.DataFrame:
    """One row per run below overload: the E2E error and the attainment gap, each against its limit."""
    overloaded = {r.name: is_overloaded(r) for r in runs}
    rows = []
    for row in table[table.metric == "e2e_s"].itertuples():
        if overloaded.get(row.run, False):
            continue
        rows.append({"run": row.run, "model": row.model, "e2e_rel_error": row.mean_rel_error,
                     "e2e_limit": E2E_LIMIT, "attainment_points": row.attainment_points,
                     "attainment_limit": ATTAINMENT_POINTS,
                     "met": bool(abs(row.mean_rel_error) <= E2E_LIMIT
                                 and abs(row.attainment_points) <= ATTAINMENT_POINTS)})
    return pd.DataFrame(rows)


def sensitivity(latency, runs, option: str, values, **options) -> pd.DataFrame:
    """The cross-validated targets with one calibration option at each of ``values`` (the others as given)."""
    rows = []
    for value in values:
        table, _ = cross_validate_disaggregated(latency, runs, **{**options, option: value})
        rows.append(check_targets(table, runs).assign(**{option: value}))
    if not rows:
        return pd.DataFrame(columns=[option, "run", "e2e_rel_error", "attainment_points", "met"])
    return pd.concat(rows, ignore_index=True)[[option, "run", "e2e_rel_error", "attainment_points", "met"]]


def plot_cdfs(runs, models: dict, results_dir=None, filename: str = "fidelity_disagg.png",
              title: str = "measured vs simulated") -> Figure:
    """CDFs of TTFT, TPOT and E2E per run (one column each): measured, and simulated by each model (``models``:
    label -> latency, or label -> {run name: latency} for one per run)."""
    from workbench.sim.simulate import simulate

    from workbench.study.present import palette
    from workbench.study.present.figures import finish_figure

    runs = list(runs)
    # the model calibrated here in the disaggregated scheduler's colour, the published one as the grey baseline
    styles = {label: ({"color": palette.color("disaggregated"), "lw": 1.5} if k == len(models) - 1 else
                      palette.reference("baseline")) for k, label in enumerate(models)}
    fig = Figure(figsize=(3.4 * len(runs), 9.0), dpi=100, layout="constrained")
    axes = fig.subplots(len(METRICS), len(runs), squeeze=False)
    for col, run in enumerate(runs):
        simulated = {}
        for label, model in models.items():
            model = model.get(run.name) if isinstance(model, dict) and "prefill" not in model else model
            if model is not None:
                simulated[label] = simulate(run.trace, run.config, latency=model).requests
        for row, metric in enumerate(METRICS):
            ax = axes[row, col]
            measured = np.sort(run.measured[metric].dropna().to_numpy())
            ax.plot(measured, np.arange(1, measured.size + 1) / measured.size, color="black", lw=2, label="measured")
            for label, requests in simulated.items():
                values = np.sort(requests[metric].dropna().to_numpy())
                ax.plot(values, np.arange(1, values.size + 1) / values.size, **styles[label], label=label)
            limit = {"ttft_s": run.config.ttft_sla_s, "tpot_s": run.config.tpot_sla_s}.get(metric)
            if limit is not None:
                ax.axvline(limit, **palette.reference("target"), label="SLO limit")
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel(f"{metric.replace('_s', '').upper()} (s, log scale)")
            ax.set_ylabel("fraction of requests")
            ax.set_title(f"{run.name.replace('distserve-', '')}{' (overloaded)' if is_overloaded(run) else ''}",
                         fontsize=9)
            ax.grid(alpha=0.3)
    return finish_figure(fig, f"CDFs of TTFT, TPOT and E2E: {title}\nmeasured DistServe runs (OPT-13B on A100s) "
                         "against the disaggregated engine", results_dir, filename)


def published_and_predicted(latency, runs, **options):
    """(published table, cross-validated table, fitted models by held-out run) for the notebook."""
    names = set(latency.values()) if isinstance(latency, dict) else {latency}
    name = " / ".join(sorted(n if isinstance(n, str) else getattr(n, "name", "model") for n in names))
    published = fidelity_table(latency, runs, label=f"{name} (published, unchanged)")
    predicted, models = cross_validate_disaggregated(latency, runs, **options)
    return published, predicted, models


__all__ = ["ATTAINMENT_POINTS", "E2E_LIMIT", "RUN_COLUMNS", "SUMMARY_COLUMNS", "TARGET_COLUMNS", "check_targets",
           "is_overloaded", "placement", "plot_cdfs", "published_and_predicted", "readable", "runs_table",
           "sensitivity", "setup_text", "summary"]
