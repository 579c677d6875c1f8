"""The fidelity report against measured vLLM runs: calibrate on one run, predict the others.

``notebooks/fidelity_vllm.ipynb`` calls these; calibration and comparison are in
:mod:`workbench.study.fidelity.calibration`.  The workflow a user follows with one measured run of their
server, on the shipped runs:

* the three DistServe vLLM v0.2 runs of OPT-13B on an A100 (1, 2 and 3.5 requests/s; the last saturates):
  :func:`one_run_workflow` calibrates on each run alone, from the published profile of this GPU and
  model, and predicts the other two; :func:`leave_one_out_workflow` calibrates on two and predicts the third
  (:func:`against_main` sets both beside main's figures before issue 21);
* the two LLMServingSim vLLM 0.19 runs of Llama-3.1-8B (RTX 4090, RTX PRO 6000; 300 ShareGPT requests at
  about 10/s, both overloaded): :func:`split_workflow` calibrates on the first 150 requests of each, from a
  proxy (the same model's BLIS profile on another GPU), and predicts the last 150.

Targets (issue 21): the fit reproduces its own training run's mean E2E within its bound (each run's own model,
the server's times its run factor; calibrate refuses otherwise), and no held-out run where the server was not
overloaded is off by more than :data:`HELD_OUT_LIMIT` on mean E2E.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from workbench import checks
from workbench.study.fidelity.calibration import (CalibrationError, RunsDisagreeWarning, calibrate,
                                                  compare_to_measured, simulate_run)
from workbench.study.store.folders import NotebookParams
from workbench.study.store.files import atomic_write_bytes

NOTEBOOK = "fidelity_vllm"
# what the notebook writes into its results folder (checked before anything runs: none may be a folder)
OUTPUTS = ("fidelity_vllm.csv", "fidelity_vllm_terms.csv", "fidelity_vllm_targets.csv",
           "fidelity_vllm_published.png", "fidelity_vllm_calibrated.png")
DEFAULT_DATA_DIR = "data/groundtruth/distserve_opt13b_a100_vllm"
LLMSERVINGSIM_DIR = "data/groundtruth/llmservingsim_vllm019/runs"
LLMSERVINGSIM_MODEL = "Llama-3.1-8B"
HELD_OUT_LIMIT = 0.30     # issue 21: no held-out run off by more than this on mean E2E, where not overloaded
METRICS = ("ttft_s", "tpot_s", "e2e_s")
# Held-out mean-E2E errors of main's calibrate before issue 21 on DistServe's runs (f377978's calibration.py run on
# this engine: fixed step costs held at the profile, the other coefficients pulled toward it with weight
# (0.15/0.5)^2, one fixed-point least-squares fit), by (training runs joined by '+', predicted run).  Its fits
# missed their own training runs by up to 16% (the medium run alone -12.3%, beside the light run -16.3%).
MAIN_ERRORS = {("vllm-100-1", "vllm-200-2"): -0.291, ("vllm-100-1", "vllm-350-3.5"): -0.239,
               ("vllm-200-2", "vllm-100-1"): 0.050, ("vllm-200-2", "vllm-350-3.5"): 0.163,
               ("vllm-350-3.5", "vllm-100-1"): 0.038, ("vllm-350-3.5", "vllm-200-2"): -0.154,
               ("vllm-200-2+vllm-350-3.5", "vllm-100-1"): 0.044, ("vllm-100-1+vllm-350-3.5", "vllm-200-2"): -0.160,
               ("vllm-100-1+vllm-200-2", "vllm-350-3.5"): 0.065}


@dataclass(frozen=True)
class RunsParams(NotebookParams):
    """Parameters of a report over measured runs in one folder: where results go, the runs' folder, which runs,
    the published profile (validated); the folder the report writes to."""

    results_dir: str = "results/default"
    data_dir: str = DEFAULT_DATA_DIR
    runs: tuple[str, ...] = ("vllm-100-1", "vllm-200-2", "vllm-350-3.5")
    profile: str = "opt-13b-a100"

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


@dataclass(frozen=True)
class FidelityParams(RunsParams):
    """The vLLM fidelity notebook's parameters (its ``parameters`` cell), validated; the folder they write to."""

    notebook, outputs, default_data_dir = NOTEBOOK, OUTPUTS, DEFAULT_DATA_DIR

    llmservingsim_dir: str = LLMSERVINGSIM_DIR
    llmservingsim_runs: tuple[str, ...] = ("RTX4090", "RTXPRO6000")
    llmservingsim_start: str = "llama-3.1-8b-h100"
    split: int = 150
    max_evaluations: int = 800
    seed: int = 0

    def __post_init__(self):
        from workbench.sim import profiles

        super().__post_init__()
        checks.path(self.llmservingsim_dir, "llmservingsim_dir", expected="a folder path")
        gpus = checks.names(self.llmservingsim_runs, "llmservingsim_runs")
        for gpu in gpus:
            if not self.llmservingsim_path(gpu).is_file():
                found = sorted(p.name for p in self.llmservingsim_root.iterdir()) if self.llmservingsim_root.is_dir() \
                    else []
                raise FileNotFoundError(f"llmservingsim_runs: no {self.llmservingsim_path(gpu)} (the GPU folders in "
                                        f"llmservingsim_dir: {', '.join(found) or 'none'}); fix llmservingsim_runs or "
                                        "llmservingsim_dir")
        object.__setattr__(self, "llmservingsim_runs", gpus)
        checks.choice(self.llmservingsim_start, "llmservingsim_start", profiles.profile_names())
        object.__setattr__(self, "split", checks.integer(self.split, "split", low=1,
                                                         hint="requests calibrated on; the rest are predicted"))
        object.__setattr__(self, "max_evaluations", checks.integer(self.max_evaluations, "max_evaluations", low=1,
                                                                   high=10**7))
        object.__setattr__(self, "seed", checks.integer(self.seed, "seed", low=0))

    @property
    def llmservingsim_root(self) -> Path:
        from workbench.study.store.files import resolve_user_path

        return resolve_user_path(self.llmservingsim_dir)

    def llmservingsim_path(self, gpu: str) -> Path:
        """The vLLM request log of the LLMServingSim run on ``gpu``."""
        return self.llmservingsim_root / gpu / LLMSERVINGSIM_MODEL / "vllm" / "requests.jsonl"

    def identity(self) -> dict:
        from workbench.study.store.files import display_path

        identity = super().identity()
        identity["llmservingsim_dir"] = display_path(self.llmservingsim_root)
        return identity


def is_saturated(run) -> bool:
    """Whether the setup file marks the run as saturated or overloaded (``runs.<name>.saturated``, or a top-level
    ``overloaded`` entry of a one-run setup)."""
    setup = run.setup or {}
    entry = setup.get("runs", {}).get(run.name, {})
    return bool(entry.get("saturated", False) or setup.get("overloaded"))


def _rows(table: pd.DataFrame, run, trained_on: str, role: str, model: str, report=None) -> list[dict]:
    """The workflow table's rows of one run: per metric, measured and simulated (by the server's model); for a
    training run, also what the calibration judged: the error of the run's own model (the server's times its run
    factor) and the run's bound."""
    rows = []
    own = None
    if report is not None and role == "training":
        own = report.training_error.set_index(["run", "metric"])
    for metric in METRICS:
        row = table.loc[(run.name, metric)]
        judged = own.loc[(run.name, metric)] if own is not None else None
        rows.append({"run": run.name, "trained_on": trained_on, "role": role, "model": model, "metric": metric,
                     "measured_mean": row["measured_mean"], "simulated_mean": row["simulated_mean"],
                     "mean_rel_error": row["mean_rel_error"], "measured_p90": row["measured_p90"],
                     "simulated_p90": row["simulated_p90"], "saturated": is_saturated(run),
                     "run_model_rel_error": judged["mean_rel_error"] if judged is not None else np.nan,
                     "bound": judged["bound"] if judged is not None else np.nan})
    return rows


def _calibrated(start, train, **options):
    """(model or None, fit report, why it was refused or "")."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RunsDisagreeWarning)    # the report says so (its run factors, notes)
            model = calibrate(start, train, **options)
        return model, model.fit_report, ""
    except CalibrationError as exc:
        return None, exc.report, str(exc)


def _predictions(model, report, train_name: str, runs, trained_scored: set, label: str) -> list[dict]:
    rows = []
    for run in runs:
        role = "training" if run.name in trained_scored else "held-out"
        rows += _rows(compare_to_measured(simulate_run(run, model), run), run, train_name, role, label, report)
    return rows


def fold_workflow(start, runs, folds, label: str, **calibrate_options) -> tuple[pd.DataFrame, dict, dict]:
    """Calibrate on each fold's training runs (``folds``: lists of run indices) and predict every run.  Returns
    (table: one row per fold, run and metric, ``role`` training / held-out, ``trained_on`` the training runs
    joined by '+'; fit reports by fold; refusals by fold)."""
    rows, reports, refused = [], {}, {}
    for fold in folds:
        train = [runs[i] for i in fold]
        name = "+".join(r.name for r in train)
        model, report, why = _calibrated(start, train, **calibrate_options)
        reports[name] = report
        if model is None:
            refused[name] = why
            continue
        rows += _predictions(model, report, name, runs, {r.name for r in train}, label)
    return pd.DataFrame(rows), reports, refused


def one_run_workflow(start, runs, **calibrate_options) -> tuple[pd.DataFrame, dict, dict]:
    """Calibrate on each run alone and predict every run (:func:`fold_workflow`)."""
    return fold_workflow(start, runs, [[k] for k in range(len(runs))], "calibrated on one run", **calibrate_options)


def leave_one_out_workflow(start, runs, **calibrate_options) -> tuple[pd.DataFrame, dict, dict]:
    """Calibrate on every run but one and predict that one (and the training runs) (:func:`fold_workflow`)."""
    folds = [[i for i in range(len(runs)) if i != k] for k in range(len(runs))]
    return fold_workflow(start, runs, folds, "calibrated on the others", **calibrate_options)


def split_workflow(start, run, n: int, **calibrate_options) -> tuple[pd.DataFrame, object, str]:
    """Calibrate on the first ``n`` requests of ``run`` and predict the rest (both simulated with every request:
    :meth:`~workbench.traces.serving_log.ServingLog.split`).  Returns (table as :func:`one_run_workflow`'s, the
    fit report, why it was refused or "")."""
    first, rest = run.split(n)
    model, report, why = _calibrated(start, first, **calibrate_options)
    if model is None:
        return pd.DataFrame(), report, why
    return pd.DataFrame(_predictions(model, report, first.name, [first, rest], {first.name},
                                     "calibrated on the first part")), report, ""


def published_table(start, runs, label: str) -> pd.DataFrame:
    """Every run simulated with ``start`` unchanged, in the workflow table's layout (role ``published``)."""
    rows = []
    for run in runs:
        rows += _rows(compare_to_measured(simulate_run(run, start), run), run, "", "published", label)
    return pd.DataFrame(rows)


def check_targets(table: pd.DataFrame) -> pd.DataFrame:
    """One row per calibrated prediction of mean E2E: a training run's own model (the server's times its run
    factor) against the run's training bound, as calibrate judged it; a held-out run that was not saturated, the
    server's model against :data:`HELD_OUT_LIMIT` (a saturated run's limit is empty: its queue grows with any error
    of the step time, and the issue judges only the others)."""
    rows = []
    for row in table[(table.metric == "e2e_s") & table.role.isin(["training", "held-out"])].itertuples():
        training = row.role == "training"
        error = row.run_model_rel_error if training else row.mean_rel_error
        limit = row.bound if training else (np.nan if row.saturated else HELD_OUT_LIMIT)
        rows.append({"trained_on": row.trained_on, "run": row.run, "role": row.role, "saturated": row.saturated,
                     "mean_rel_error": error, "server_rel_error": row.mean_rel_error, "limit": limit,
                     "met": bool(abs(error) <= limit) if np.isfinite(limit) else None})
    return pd.DataFrame(rows, columns=["trained_on", "run", "role", "saturated", "mean_rel_error",
                                       "server_rel_error", "limit", "met"])


def against_main(*tables: pd.DataFrame) -> pd.DataFrame:
    """Held-out mean-E2E errors of the workflow tables beside main's before issue 21 (:data:`MAIN_ERRORS`), one row
    per fold and predicted run; ``better`` when this calibrate's |error| is not larger."""
    rows = []
    for table in tables:
        for row in table[(table.metric == "e2e_s") & (table.role == "held-out")].itertuples():
            main = MAIN_ERRORS.get((row.trained_on, row.run), np.nan)
            rows.append({"trained_on": row.trained_on, "run": row.run, "saturated": row.saturated,
                         "mean_rel_error": row.mean_rel_error, "main_before_issue_21": main,
                         "better": bool(abs(row.mean_rel_error) <= abs(main)) if np.isfinite(main) else None})
    return pd.DataFrame(rows, columns=["trained_on", "run", "saturated", "mean_rel_error", "main_before_issue_21",
                                       "better"])


def terms_table(reports: dict) -> pd.DataFrame:
    """What each calibration identified: per training run and term, its status, start and fitted value,
    standard error and why it was held."""
    frames = [r.terms.assign(trained_on=name) for name, r in reports.items() if r is not None]
    if not frames:
        return pd.DataFrame(columns=["trained_on", "term", "status", "start", "fitted", "std", "prior_width",
                                     "reason"])
    return pd.concat(frames, ignore_index=True)[["trained_on", "term", "coefficients", "status", "start", "fitted",
                                                 "std", "prior_width", "reason"]]


def run_factors_table(reports: dict) -> pd.DataFrame:
    """Each calibration's run factors: per training run, how much slower (> 1) or faster its step times were than
    the fitted server's."""
    frames = [r.run_factors.assign(trained_on=name) for name, r in reports.items() if r is not None]
    if not frames:
        return pd.DataFrame(columns=["trained_on", "run", "factor", "spreads", "std"])
    return pd.concat(frames, ignore_index=True)[["trained_on", "run", "factor", "spreads", "std"]]


def error_matrix(table: pd.DataFrame, metric: str = "e2e_s") -> pd.DataFrame:
    """Relative error of the mean ``metric``: one row per training run, one column per predicted run."""
    rows = table[table.metric == metric]
    return rows.pivot_table(index="trained_on", columns="run", values="mean_rel_error", sort=False)


def plot_cdfs(runs, models: dict, results_dir=None, filename: str = "fidelity_vllm.png",
              title: str = "measured vs simulated") -> Figure:
    """CDFs of TTFT and E2E per run (its scored requests): measured, and simulated by each model (``models``:
    label -> model, or label -> {run name: model} for a model per run)."""
    runs = list(runs)
    fig = Figure(figsize=(4.2 * len(runs), 6.4), dpi=110, layout="constrained")
    axes = fig.subplots(2, len(runs), squeeze=False)
    for col, run in enumerate(runs):
        scored = run.scored_mask
        for row, metric in enumerate(("ttft_s", "e2e_s")):
            ax = axes[row, col]
            measured = np.sort(run.measured[metric].to_numpy()[scored])
            ax.plot(measured, np.arange(1, measured.size + 1) / measured.size, color="black", lw=2, label="measured")
            for label, model in models.items():
                model = model.get(run.name) if isinstance(model, dict) else model
                if model is None:
                    continue
                values = simulate_run(run, model).requests[metric].to_numpy()[scored]
                simulated = np.sort(values[np.isfinite(values)])
                ax.plot(simulated, np.arange(1, simulated.size + 1) / simulated.size, lw=1.4, label=label)
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels of a short log range overlap
            ax.set_xlabel(f"{metric} (log scale)")
            ax.set_ylabel("fraction of requests")
            ax.set_title(f"{run.name}: {metric.replace('_s', '')}{' (saturated)' if is_saturated(run) else ''}",
                         fontsize=10)
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"{title}: measured vLLM runs", fontsize=11)
    if results_dir is not None:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        atomic_write_bytes(Path(results_dir) / filename, buffer.getvalue())
    return fig


__all__ = ["FidelityParams", "HELD_OUT_LIMIT", "MAIN_ERRORS", "RunsParams", "against_main", "check_targets",
           "error_matrix", "fold_workflow", "is_saturated", "leave_one_out_workflow", "one_run_workflow", "plot_cdfs",
           "published_table", "run_factors_table", "split_workflow", "terms_table"]
