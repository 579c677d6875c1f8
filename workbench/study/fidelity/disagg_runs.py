"""The fidelity report against measured disaggregated (DistServe) runs: tables, targets, CDF figures, sentences.

``notebooks/fidelity_disagg.ipynb`` calls these; calibration and the per-run
tables are in :mod:`workbench.study.fidelity.calibration_disagg`.

Targets, for every run below overload when it is *predicted* (by models
calibrated on the other runs, leaving it out): the mean E2E within 15% and the
SLO attainment (TTFT <= 0.2 s and TPOT <= 0.1 s, DistServe's alignment
criterion) within 10 points.  A run is overloaded when its setup file says so
(``runs.<name>.overloaded``: the source's README calls the 12 req/s runs
overloaded).  The calibration leaves out of its fit any training run whose TTFT
diverged (:func:`~workbench.study.fidelity.calibration_disagg.diverged`), so a
prediction is trained on fewer runs than "all the others":
:func:`scheme_line` says how many, from the fit reports.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from workbench import checks
from workbench.study.fidelity.calibration_disagg import (DIVERGENCE_RATIO, cross_validate_disaggregated,
                                                        fidelity_table)
from workbench.study.fidelity.vllm_runs import RunsParams

NOTEBOOK = "fidelity_disagg"
# what the notebook writes into its results folder (checked before anything runs: none may be a folder)
OUTPUTS = ("fidelity_disagg.csv", "fidelity_disagg_targets.csv", "fidelity_disagg_published.png",
           "fidelity_disagg_calibrated.png", "fidelity_disagg_findings.json")
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
        deployments.setdefault(placement(r), (text, []))[1].append(f"{r.rate_rps:.3g}")   # 2.99997 -> 3
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
    """CDFs of TTFT, TPOT and E2E per run (one column each): measured (black), and simulated by each model
    (``models``: label -> latency, or label -> {run name: latency} for one per run): the first model (the published
    profile) in grey, the others (calibrated) in the disaggregated scheduler's colour."""
    from workbench.sim.simulate import simulate

    from workbench.study.present import palette
    from workbench.study.present.figures import finish_figure

    runs = list(runs)
    # one meaning per colour in every figure: the first model (the published profile) is the grey baseline, a
    # model calibrated here is in the disaggregated scheduler's colour
    styles = {label: (palette.reference("baseline") if k == 0 else
                      {"color": palette.color("disaggregated"), "lw": 1.5}) for k, label in enumerate(models)}
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


def scheme_line(models: dict) -> str:
    """How each run was predicted, from the fit reports of ``models`` (held-out run -> calibrated model): how many
    runs each calibration fitted, and which runs were never fitted (their TTFT diverged)."""
    reports = {held: model.fit_report for held, model in models.items()}
    never = sorted(set.intersection(*(set(r.excluded) for r in reports.values()))) if reports else []
    counts = {}
    for held, report in reports.items():
        counts.setdefault(len(report.runs), []).append(held)
    short = lambda name: name.removeprefix("distserve-")  # noqa: E731
    parts = [f"{', '.join(short(h) for h in held)} from {n} run{'s' if n != 1 else ''}"
             for n, held in sorted(counts.items())]
    text = (f"Each of the {len(reports)} runs is held out in turn and predicted by models calibrated on the other "
            "runs whose TTFT did not diverge: " + "; ".join(parts) + ".")
    if never:
        text += (f" {', '.join(short(n) for n in never)} {'is' if len(never) == 1 else 'are'} never fitted (TTFT "
                 "diverged: the last third's median over "
                 f"{DIVERGENCE_RATIO:g} times the first's), only predicted.")
    return text


def collapse_line(run, model) -> str:
    """For a run whose TTFT diverged: how far its measured TTFT grew (median of its first and last third of
    requests by arrival, maximum) against the same run simulated with ``model``."""
    from workbench.sim.simulate import simulate

    measured = run.measured["ttft_s"].to_numpy()
    simulated = simulate(run.trace, run.config, latency=model).requests["ttft_s"].to_numpy()
    third = max(1, measured.size // 3)
    return (f"{run.name.removeprefix('distserve-')} collapsed in reality: its measured TTFT grew from a median of "
            f"{np.median(measured[:third]):.2g} s over its first third of requests to {np.median(measured[-third:]):.2g} s "
            f"over its last, {np.nanmax(measured):.3g} s at most; simulated by the models calibrated on the other runs, "
            f"the same deployment keeps up (median {np.nanmedian(simulated[-third:]):.2g} s over the last third, "
            f"{np.nanmax(simulated):.3g} s at most). Its TTFT diverged, so calibration does not fit to it.")


def pipeline_line(profile: str) -> str:
    """The pipeline overhead a stage repeats, as the profile gives it: the fixed decode cost at each TP degree."""
    from workbench.sim import profiles

    fixed = {}
    for tp in (1, 2, 4, 8):
        try:
            fixed[tp] = profiles.get_profile(profile, tp=tp).decode[0]
        except ValueError:
            continue
    overhead = profiles.get_profile(profile, tp=1).pipeline_overhead_s
    return (f"Pipeline parallelism: a stage of a pipelined decode takes the step divided by the stages plus the "
            f"per-step overhead every stage repeats; `{profile}` gives that overhead from how its fixed decode cost "
            f"falls with TP ({', '.join(f'{v * 1e3:.3g}' for v in fixed.values())} ms at TP "
            f"{', '.join(map(str, fixed))}): {overhead * 1e3:.3g} ms that does not shrink with TP.")


def findings(published: pd.DataFrame, predicted: pd.DataFrame, targets: pd.DataFrame, runs) -> list[str]:
    """The report's sentences, computed from its tables: the published profile's error, the predictions' errors
    and targets met, and each overloaded run's errors."""
    pub, pred = summary(published).set_index("run"), summary(predicted).set_index("run")
    below = [r.name for r in runs if not is_overloaded(r) and r.name in pub.index]
    lines = []
    if below:
        lines.append(f"Published profile, unchanged: mean E2E off by {pub.loc[below, 'e2e error'].min():+.0%} to "
                     f"{pub.loc[below, 'e2e error'].max():+.0%} on the runs below overload (it has no serving "
                     f"overheads: mean TTFT {pub.loc[below, 'ttft error'].min():+.0%} to "
                     f"{pub.loc[below, 'ttft error'].max():+.0%}).")
        lines.append(f"Predicted from the other runs: mean E2E {pred.loc[below, 'e2e error'].min():+.1%} to "
                     f"{pred.loc[below, 'e2e error'].max():+.1%}, attainment "
                     f"{pred.loc[below, 'attainment_points'].min():+.1f} to "
                     f"{pred.loc[below, 'attainment_points'].max():+.1f} points; {int(targets.met.sum())} of "
                     f"{len(targets)} runs below overload meet both targets (mean E2E within {E2E_LIMIT:.0%}, "
                     f"attainment within {ATTAINMENT_POINTS} points).")
    if len(targets):
        use = targets.assign(share=np.maximum(targets.e2e_rel_error.abs() / E2E_LIMIT,
                                              targets.attainment_points.abs() / ATTAINMENT_POINTS))
        tight = use.sort_values("share").iloc[-1]
        which = ("attainment" if abs(tight.attainment_points) / ATTAINMENT_POINTS >= abs(tight.e2e_rel_error) / E2E_LIMIT
                 else "mean E2E")
        value = (f"{tight.attainment_points:+.1f} points of the {ATTAINMENT_POINTS} allowed" if which == "attainment"
                 else f"{tight.e2e_rel_error:+.1%} of the {E2E_LIMIT:.0%} allowed")
        lines.append(f"The tightest target: the {which} of {tight.run.removeprefix('distserve-')}, {value}.")
    for r in runs:
        if is_overloaded(r) and r.name in pred.index:
            row = pred.loc[r.name]
            lines.append(f"{r.name.removeprefix('distserve-')} (overloaded, no target): mean E2E "
                         f"{row['e2e error']:+.0%}, TTFT {row['ttft error']:+.0%}, attainment "
                         f"{row.measured_attainment:.0%} measured vs {row.simulated_attainment:.0%} predicted.")
    return lines


QUESTION = "Does the disaggregated engine reproduce measured DistServe runs?"


def answer(published: pd.DataFrame, targets: pd.DataFrame) -> str:
    """The report's question answered from its tables: the targets met by the predictions, and which way the
    published profile alone misses."""
    met = int(targets.met.sum()) if len(targets) else 0
    text = (f"Calibrated on the other runs, it predicts {met} of the {len(targets)} runs below overload within both "
            f"targets (mean E2E within {E2E_LIMIT:.0%}, attainment within {ATTAINMENT_POINTS} points).")
    errors = summary(published)["e2e error"]
    if len(errors) and (errors < 0).all():
        text += (f" The published profile alone predicts every run faster than measured (mean E2E {errors.min():+.0%} to "
                 f"{errors.max():+.0%}): it has no serving overheads.")
    elif len(errors) and (errors > 0).all():
        text += f" The published profile alone predicts every run slower than measured (mean E2E {errors.min():+.0%} to {errors.max():+.0%})."
    elif len(errors):
        text += f" The published profile alone is off by {errors.min():+.0%} to {errors.max():+.0%} in mean E2E."
    return text


def published_and_predicted(latency, runs, **options):
    """(published table, cross-validated table, fitted models by held-out run) for the notebook."""
    names = set(latency.values()) if isinstance(latency, dict) else {latency}
    name = " / ".join(sorted(n if isinstance(n, str) else getattr(n, "name", "model") for n in names))
    published = fidelity_table(latency, runs, label=f"{name} (published, unchanged)")
    predicted, models = cross_validate_disaggregated(latency, runs, **options)
    return published, predicted, models


__all__ = ["ATTAINMENT_POINTS", "E2E_LIMIT", "RUN_COLUMNS", "SUMMARY_COLUMNS", "TARGET_COLUMNS", "check_targets",
           "QUESTION", "answer", "collapse_line", "findings", "is_overloaded", "pipeline_line", "placement", "plot_cdfs",
           "published_and_predicted", "readable", "runs_table", "scheme_line", "sensitivity", "setup_text", "summary"]
