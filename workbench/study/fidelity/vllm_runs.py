"""The fidelity report against measured vLLM runs: tables, the issue's targets, CDF figures.

``notebooks/fidelity_vllm.ipynb`` calls these; the logic of calibration and
comparison is in :mod:`workbench.study.fidelity.calibration`.

Targets (issue 8): the relative error of the mean E2E within 20% and of the
mean TTFT within 30% on every run below saturation, and of the saturated run's
mean E2E within 25%, when the run is *predicted* (calibrated on the others).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from workbench import checks
from workbench.study.fidelity.calibration import cross_validate, replay_table, simulate_run
from workbench.study.store.folders import NotebookParams
from workbench.study.store.files import atomic_write_bytes

NOTEBOOK = "fidelity_vllm"
# what the notebook writes into its results folder (checked before anything runs: none may be a folder)
OUTPUTS = ("fidelity_vllm.csv", "fidelity_vllm_targets.csv", "fidelity_vllm_published.png",
           "fidelity_vllm_calibrated.png")
DEFAULT_DATA_DIR = "data/groundtruth/distserve_opt13b_a100_vllm"


@dataclass(frozen=True)
class FidelityParams(NotebookParams):
    """The fidelity notebook's parameters (its ``parameters`` cell), validated; the folder they write to."""

    notebook, outputs, default_data_dir = NOTEBOOK, OUTPUTS, DEFAULT_DATA_DIR

    results_dir: str = "results/default"
    data_dir: str = DEFAULT_DATA_DIR
    runs: tuple[str, ...] = ("vllm-100-1", "vllm-200-2", "vllm-350-3.5")
    profile: str = "opt-13b-a100"
    thresholds: object = None
    max_iter: int = 8
    prior_weights: tuple[float, ...] = (0.03, 0.05, 0.15, 0.3)

    def __post_init__(self):
        from workbench.sim import profiles

        checks.path(self.results_dir, "results_dir", expected="a folder path")
        checks.path(self.data_dir, "data_dir", expected="a folder path")
        folder = self.data_path
        if not folder.is_dir():
            raise FileNotFoundError(f"data_dir: {folder} is not a folder (the measured runs' CSVs and setup.json; "
                                    f"the shipped ones are in {self.default_data_dir})")
        runs = checks.names(self.runs, "runs")
        for name in runs:
            if not (folder / f"{name}.csv").is_file():   # a wrong run name, or a wrong data_dir
                found = sorted(p.stem for p in folder.glob("*.csv"))
                raise FileNotFoundError(f"runs: {name!r} is not a run in data_dir {folder} (no {name}.csv there; "
                                        f"its runs: {', '.join(found) or 'none'}); fix runs or data_dir")
        object.__setattr__(self, "runs", runs)
        checks.choice(self.profile, "profile", profiles.profile_names())
        if self.thresholds is not None and self.thresholds != "fit":
            object.__setattr__(self, "thresholds", checks.integers(self.thresholds, "thresholds", low=1))
        object.__setattr__(self, "max_iter", checks.integer(self.max_iter, "max_iter", low=1, high=10_000))
        object.__setattr__(self, "prior_weights", checks.numbers(self.prior_weights, "prior_weights", low=0,
                                                                 empty=True))

    @property
    def data_path(self) -> Path:
        from workbench.study.store.files import resolve_user_path

        return resolve_user_path(self.data_dir)

    def run_paths(self) -> list[Path]:
        """The measured runs' CSV files."""
        return [self.data_path / f"{name}.csv" for name in self.runs]

    def identity(self) -> dict:
        """What the report depends on: every parameter but the folder (the data folder by its absolute path)."""
        from workbench.study.store.files import display_path

        identity = super().identity()
        identity["data_dir"] = display_path(self.data_path)  # inside the repository: relative to it
        return identity

TARGETS = {  # (metric, saturated run?) -> largest |relative error of the mean|
    ("e2e_s", False): 0.20,
    ("ttft_s", False): 0.30,
    ("e2e_s", True): 0.25,
}
COLUMNS = ["model", "measured_mean", "simulated_mean", "mean_rel_error", "measured_p50", "simulated_p50",
           "measured_p90", "simulated_p90", "median_abs_rel_error"]


def is_saturated(run) -> bool:
    """Whether the setup file marks the run as saturated (``runs.<name>.saturated``)."""
    return bool(((run.setup or {}).get("runs", {}).get(run.name, {})).get("saturated", False))


def check_targets(table: pd.DataFrame, runs) -> pd.DataFrame:
    """One row per target that applies: run, metric, error, limit, met."""
    saturated = {r.name: is_saturated(r) for r in runs}
    rows = []
    for (run, metric), row in table.reset_index().set_index(["run", "metric"]).iterrows():
        limit = TARGETS.get((metric, saturated.get(run, False)))
        if limit is not None:
            rows.append({"run": run, "saturated": saturated.get(run, False), "metric": metric,
                         "model": row["model"], "mean_rel_error": row["mean_rel_error"], "limit": limit,
                         "met": bool(abs(row["mean_rel_error"]) <= limit)})
    return pd.DataFrame(rows)


def fidelity_tables(step, runs, **calibrate_options) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """The published model replayed unchanged, and each run predicted by a model calibrated on the others.

    Returns (published table, cross-validated table, fitted models by held-out run).
    """
    published = replay_table(step, runs, label=f"{step.name} (published)")
    predicted, models = cross_validate(step, runs, **calibrate_options)
    return published, predicted, models


def sensitivity(step, runs, option: str, values, **calibrate_options) -> pd.DataFrame:
    """The cross-validated targets with one ``calibrate`` option set to each of ``values`` (the others as given).

    One row per value and target: the option's value, run, metric, mean relative error, limit, met.  This is
    how the notebook shows that a result does not hang on one setting.
    """
    rows = []
    for value in values:
        table, _ = cross_validate(step, runs, **{**calibrate_options, option: value})
        rows.append(check_targets(table, runs).assign(**{option: value}))
    if not rows:
        return pd.DataFrame(columns=[option, "run", "metric", "mean_rel_error", "limit", "met"])
    return pd.concat(rows, ignore_index=True)[[option, "run", "metric", "mean_rel_error", "limit", "met"]]


def summary_table(*tables: pd.DataFrame, metrics=("ttft_s", "e2e_s")) -> pd.DataFrame:
    """The rows of ``tables`` for ``metrics``, with the report's columns, as a flat frame."""
    frame = pd.concat(tables).reset_index()
    frame = frame[frame["metric"].isin(metrics)]
    extra = [c for c in ("trained_on",) if c in frame]
    return frame[["run", "metric", *COLUMNS, *extra]].reset_index(drop=True)


def plot_cdfs(runs, models: dict, results_dir=None, filename: str = "fidelity_vllm.png",
              title: str = "measured vs simulated") -> Figure:
    """CDFs of TTFT and E2E per run: measured, and simulated by each model (``models``: label -> model, or
    label -> {run name: model} for a model per run)."""
    runs = list(runs)
    fig = Figure(figsize=(4.2 * len(runs), 6.4), dpi=110, layout="constrained")
    axes = fig.subplots(2, len(runs), squeeze=False)
    for col, run in enumerate(runs):
        for row, metric in enumerate(("ttft_s", "e2e_s")):
            ax = axes[row, col]
            measured = np.sort(run.measured[metric].to_numpy())
            ax.plot(measured, np.arange(1, measured.size + 1) / measured.size, color="black", lw=2, label="measured")
            for label, model in models.items():
                model = model.get(run.name) if isinstance(model, dict) else model
                if model is None:
                    continue
                simulated = np.sort(simulate_run(run, model).requests[metric].dropna().to_numpy())
                ax.plot(simulated, np.arange(1, simulated.size + 1) / simulated.size, lw=1.4, label=label)
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels of a short log range overlap
            ax.set_xlabel(f"{metric} (log scale)")
            ax.set_ylabel("fraction of requests")
            ax.set_title(f"{run.name}: {metric.replace('_s', '')}{' (saturated)' if is_saturated(run) else ''}",
                         fontsize=10)
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"{title}: measured vLLM runs (OPT-13B, A100; DistServe)", fontsize=11)
    if results_dir is not None:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        atomic_write_bytes(Path(results_dir) / filename, buffer.getvalue())
    return fig


__all__ = ["TARGETS", "check_targets", "fidelity_tables", "is_saturated", "plot_cdfs", "sensitivity", "summary_table"]
