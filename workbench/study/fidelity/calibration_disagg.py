"""Calibrating the disaggregated engine's step-time models to measured disaggregated runs, and comparing.

``wb.calibrate(latency, runs)`` with runs whose configs are disaggregated (or a
``{"prefill": ..., "decode": ...}`` latency) lands here.  It refits the pools'
models jointly to every run, each simulated with its own config, and returns
the same kind it was given: a per-pool dict (:class:`CalibratedPools`, a dict
with ``.fit_report``), one StepTimeModel (used by both pools), or, for a
profile name, the per-pool dict it resolves to.

What is fitted (the rule, not a fit to particular runs):

* prefill pool: the per-token and per-token-squared prefill terms ``b_p``,
  ``c_p`` and the per-request arrival overhead ``a0 + a1 x prompt`` (HTTP,
  tokenisation; outside the steps);
* decode pool: a per-context-token and a per-request cost added to *both*
  batch regimes of the profile (serving work the isolated-step profile does
  not contain: block tables grow with the context, detokenising and
  streaming grow with the batch), so a fit made at the batch sizes of the
  training runs carries over to larger batches with the profile's own shape;
* ``pipeline_overhead_s`` of the decode model (the fixed per-step work every
  pipeline stage repeats, rule R9), when some training run has
  ``decode_pp > 1``.

Held at the given model: the fixed step costs (what an isolated-step profile
measures best, as in :mod:`workbench.study.fidelity.calibration`), the
per-token overheads and the regime boundary.  The KV link and memory are the
runs' configs (hardware facts), never fitted.

How: each training run is replayed event by event with the current models
(:func:`workbench.sim.disagg_steplog.replay_disagg`, the engine's rules) while
every time carries its gradient with respect to the coefficients (a schedule
is additions of step times and maxima, so times are piecewise linear in them):
each request's TTFT and decode time (E2E - TTFT) and their exact local
linearisation.  A damped Gauss-Newton step then solves the non-negative least
squares of the residuals (each run and each of the two metrics weighs the
same: rows divided by the run's mean of that metric and by sqrt(requests))
plus a prior row per coefficient, ``sqrt(prior_weight) x change /
published value``, with ``prior_weight = (0.15 / 1.0)^2``: runs differ by
~15%, and what is fitted is mostly serving work the isolated-step profile
does not contain, trusted to within 100% of the profile's coefficient (the
vLLM calibration, which moves the profile's own coefficients, uses 50%).
Repeated until the step changes the simulated times by less than ``tol``
(relative) or ``max_iter`` times; the iterate with the lowest simulated error
is returned.

Runs whose prefill side did not keep up are reported but not fitted (unless
``exclude_overloaded=False``): when the median TTFT of the last third of a
run's requests (by arrival) is over :data:`DIVERGENCE_RATIO` times that of the
first third, its times are set by a queue whose length depends on how long
the run lasted, and matching them would bend the step costs (the measured
``c21d12-1200-12`` run, mean TTFT 3.9 s, would set the pipeline overhead to
~30 ms).  A decode side that falls behind within a run (TPOT growing, as at
9 and 12 req/s on one decode GPU) is fitted: the engine reproduces it.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from workbench import checks
from workbench.sim.disagg import POOLS, pool_models, settings_of
from workbench.sim.disagg_steplog import GRAD_NAMES, replay_disagg
from workbench.sim.metrics import slo_attainment
from workbench.sim.steptime import StepTimeModel

log = logging.getLogger(__name__)

# the prior's weight: runs differ by ~RUN_SPREAD at equal batch sizes, and what is fitted is mostly serving work
# the isolated-step profile does not contain, so it is trusted to within PRIOR_SPREAD = 100% of the profile's
# coefficient (the vLLM calibration, which moves the profile's own coefficients, trusts them to 50%)
RUN_SPREAD, PRIOR_SPREAD = 0.15, 1.0
PRIOR_WEIGHT = (RUN_SPREAD / PRIOR_SPREAD) ** 2
DIVERGENCE_RATIO = 4.0

# fitted parameters: name -> (pool, columns of GRAD_NAMES it moves, the published coefficient it is relative to)
PARAMETERS = {
    "prefill_b": ("prefill", (1,), 1),
    "prefill_c": ("prefill", (2,), 2),
    "arrival_overhead_a": ("prefill", (3,), None),
    "arrival_overhead_b": ("prefill", (4,), None),
    "decode_per_context_token": ("decode", (6, 9), 6),
    "decode_per_request": ("decode", (7, 10), 7),
    "pipeline_overhead_s": ("decode", (11,), 11),
    "prefill_a": ("prefill", (0,), 0),
    "decode_a": ("decode", (5, 8), 5),
}
FIXED_COSTS = ("prefill_a", "decode_a")


class CalibratedPools(dict):
    """``{"prefill": StepTimeModel, "decode": StepTimeModel}`` as calibrated, with ``.fit_report``."""

    fit_report = None


@dataclass
class DisaggFitReport:
    """What the disaggregated calibration fitted and how well (see the module docstring)."""

    runs: list[str]
    excluded: dict                  # run -> why it was not fitted
    before: dict                    # pool -> StepTimeModel
    after: dict
    parameters: pd.DataFrame        # name, pool, change (added to the published coefficients), status
    coefficients: pd.DataFrame      # pool, name, before, after
    iterations: pd.DataFrame        # iteration, weighted RSS of the simulated runs
    best_iteration: int
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        lines = [f"calibrated on {', '.join(self.runs)}"]
        if self.excluded:
            lines.append("not fitted: " + "; ".join(f"{k} ({v})" for k, v in self.excluded.items()))
        for pool in POOLS:
            lines.append(f"{pool}: {self.after[pool].describe()}")
        rss = self.iterations.simulated_rss
        lines.append(f"weighted RSS {rss.iloc[0]:.4g} (given models) -> {rss.min():.4g} "
                     f"(iteration {self.best_iteration})")
        return "\n".join(lines + self.notes)


def is_disaggregated_input(latency, runs, cfg=None) -> bool:
    """Whether ``calibrate(latency, runs, cfg)`` is a disaggregated calibration."""
    if isinstance(latency, dict):
        return True
    configs = [cfg] if cfg is not None else [getattr(r, "config", None) for r in runs]
    return any(getattr(c, "scheduler", None) == "disaggregated" for c in configs)


def diverged(run, ratio: float = DIVERGENCE_RATIO) -> bool:
    """The run's prefill side did not keep up: the median TTFT of its last third of requests (by arrival) is
    over ``ratio`` times that of its first third."""
    ttft = run.measured["ttft_s"].to_numpy()
    third = max(1, ttft.size // 3)
    return bool(np.median(ttft[-third:]) > ratio * np.median(ttft[:third]))


def _config(run, cfg):
    c = cfg if cfg is not None else run.config
    if c is None:
        raise ValueError(f"{run.name}: no config; load the run with a setup.json beside it or pass cfg=")
    if c.scheduler != "disaggregated":
        raise ValueError(f"{run.name}: its config's scheduler is {c.scheduler!r}; the disaggregated calibration "
                         "needs scheduler='disaggregated' (wb.calibrate with a StepTimeModel calibrates vLLM runs)")
    return c


def _as_pools(latency, runs, cfg) -> tuple[dict, str]:
    """The pool models the runs share, and the kind of the input ('dict', 'model' or 'name')."""
    kind = "dict" if isinstance(latency, dict) else "model" if isinstance(latency, StepTimeModel) else "name"
    if kind == "name" and not isinstance(latency, str):
        raise checks.InvalidType(f"calibrate: latency must be a {{'prefill': ..., 'decode': ...}} dict, a "
                                 f"StepTimeModel or a profile name, got {type(latency).__name__}")
    resolved = [pool_models(latency, _config(r, cfg)) for r in runs]
    pools = {}
    for k, pool in enumerate(POOLS):
        models = {m[k] for m in resolved}
        if len(models) > 1:
            tps = sorted({getattr(_config(r, cfg), f"{pool}_tp") for r in runs})
            raise ValueError(f"calibrate: the runs' {pool} instances have different TP degrees {tps}, so "
                             f"{latency!r} gives them different models; calibrate runs of one TP degree per pool, "
                             "or pass a {'prefill': model, 'decode': model} dict")
        pools[pool] = resolved[0][k]
    return pools, kind


def _vector(pools: dict) -> np.ndarray:
    """The coefficients in GRAD_NAMES order."""
    p, d = pools["prefill"], pools["decode"]
    large = d.decode_large if d.decode_large is not None else d.decode
    return np.array([*p.prefill, *p.arrival_overhead_s, *d.decode, *large, d.pipeline_overhead_s], dtype=np.float64)


def _with_vector(pools: dict, v: np.ndarray, same_model: bool, name) -> dict:
    """The pools' models with coefficients ``v``; ``name``: the models' name (one model), or pool -> name."""
    p, d = pools["prefill"], pools["decode"]
    prefill = dataclasses.replace(p, prefill=tuple(v[0:3]), arrival_overhead_s=tuple(v[3:5]), fit_report=None)
    decode = dataclasses.replace(
        d, decode=tuple(v[5:8]), decode_large=tuple(v[8:11]) if d.decode_large is not None else None,
        pipeline_overhead_s=float(v[11]), fit_report=None)
    if same_model:   # one model for both pools: its prefill part from the prefill pool, the rest from decode
        both = dataclasses.replace(decode, prefill=prefill.prefill, arrival_overhead_s=prefill.arrival_overhead_s,
                                   name=name)
        return {"prefill": both, "decode": both}
    names = name if isinstance(name, dict) else {pool: f"{name} ({pool})" for pool in POOLS}
    return {"prefill": dataclasses.replace(prefill, name=names["prefill"]),
            "decode": dataclasses.replace(decode, name=names["decode"])}


def _rows(run, cfg, pools: dict):
    """Per request: simulated TTFT and decode time with their gradients, measured values and row weights."""
    s = settings_of(cfg, pools["prefill"], pools["decode"])
    trace = run.trace
    steps = replay_disagg(trace.arrival_s, trace.prompt_tokens, trace.output_tokens, s, gradients=True)
    served = steps.reason == 0
    arrival = np.asarray(trace.arrival_s, dtype=np.float64)[served]
    out = np.asarray(trace.output_tokens, dtype=np.float64)[served]
    tok_p, tok_d = pools["prefill"].token_overhead_s, pools["decode"].token_overhead_s
    ttft = steps.first_token_s[served] - arrival + tok_p
    decode = steps.finish_s[served] - steps.first_token_s[served] + (out - 1) * tok_d
    g_ttft = steps.first_token_grad[served]
    g_decode = steps.finish_grad[served] - g_ttft
    n = int(served.sum())
    if n == 0:
        raise ValueError(f"calibrate: every request of {run.name} is rejected by its deployment (prompt over "
                         f"prefill_max_tokens={cfg.prefill_max_tokens}, or KV over an instance's blocks: prefill "
                         f"{cfg.prefill_kv_blocks_effective}, decode {cfg.decode_kv_blocks_effective}); there is "
                         "nothing to fit: check the run's config")
    measured = run.measured.iloc[np.flatnonzero(served)]
    y_ttft = measured["ttft_s"].to_numpy()
    y_decode = (measured["e2e_s"] - measured["ttft_s"]).to_numpy()
    # each run and metric weighs the same; a metric that is 0 throughout (one-token answers: no decode) weighs 0
    w = [np.full(n, 1.0 / (y.mean() * np.sqrt(n)) if y.mean() > 0 else 0.0) for y in (y_ttft, y_decode)]
    return (np.concatenate([ttft, decode]), np.vstack([g_ttft, g_decode]), np.concatenate([y_ttft, y_decode]),
            np.concatenate(w))


def calibrate_disaggregated(latency, runs, cfg=None, *, max_iter: int = 10, prior_weight: float = PRIOR_WEIGHT,
                            damping: float = 0.5, exclude_overloaded: bool = True, fit_fixed_costs: bool = False,
                            tol: float = 2e-3, name: str | None = None):
    """Refit the disaggregated pools' step-time models to measured runs jointly (module docstring)."""
    from scipy.optimize import lsq_linear

    from workbench.sim.config import SimConfig
    from workbench.study.fidelity.calibration import _as_runs

    runs = _as_runs(runs, "calibrate")
    if cfg is not None:
        checks.instance(cfg, "cfg", SimConfig, expected="a SimConfig, or None for each run's own setup")
    max_iter = checks.integer(max_iter, "max_iter", low=1, high=10_000, hint="Gauss-Newton iterations of the fit")
    prior_weight = checks.number(prior_weight, "prior_weight", low=0)
    damping = checks.number(damping, "damping", low=0, high=1, low_open=True)
    tol = checks.number(tol, "tol", low=0, low_open=True)
    exclude_overloaded = checks.boolean(exclude_overloaded, "exclude_overloaded")
    fit_fixed_costs = checks.boolean(fit_fixed_costs, "fit_fixed_costs")
    checks.instance(name, "name", (str, type(None)), expected="a text label, or None")
    configs = {r.name: _config(r, cfg) for r in runs}
    pools, kind = _as_pools(latency, runs, cfg)
    excluded = {r.name: f"overloaded: its TTFT diverged (last third's median > {DIVERGENCE_RATIO:g}x the first's)"
                for r in runs if exclude_overloaded and diverged(r)}
    train = [r for r in runs if r.name not in excluded]
    if not train:
        raise ValueError(f"calibrate: every run is overloaded ({', '.join(excluded)}); pass runs where the "
                         "deployment kept up, or exclude_overloaded=False")
    names = [r.name for r in train]
    given = " / ".join(dict.fromkeys(pools[pool].name for pool in POOLS))
    trained = "+".join(n.removeprefix("distserve-") for n in names)
    label = name or f"{given} calibrated on {trained}"
    if name is None and kind != "model":
        # each pool's model named by its own profile and TP degree (a TP-1 decode pool is never called "tp2")
        tps = {pool: getattr(configs[train[0].name], f"{pool}_tp") for pool in POOLS}
        label = {pool: f"{re.sub(r' tp[0-9]+$', '', pools[pool].name)} calibrated on {trained} ({pool} pool, TP "
                       f"{tps[pool]})" for pool in POOLS}
    free = [p for p in PARAMETERS if (p != "pipeline_overhead_s" or any(configs[r.name].decode_pp > 1 for r in train))
            and (fit_fixed_costs or p not in FIXED_COSTS)]
    notes = [] if "pipeline_overhead_s" in free else [
        "pipeline_overhead_s held at the given model's: no training run has decode_pp > 1"]
    v0 = _vector(pools)
    M = np.zeros((len(GRAD_NAMES), len(free)))
    for k, p in enumerate(free):
        M[list(PARAMETERS[p][1]), k] = 1.0
    lower = np.array([-min(v0[c] for c in PARAMETERS[p][1]) for p in free])
    ref = np.array([v0[PARAMETERS[p][2]] if PARAMETERS[p][2] is not None else 0.0 for p in free])
    same_model = kind == "model"
    v, best, history = v0.copy(), None, []
    for iteration in range(max_iter + 1):
        current = _with_vector(pools, v, False, label)
        rows = [_rows(r, configs[r.name], current) for r in train]
        sim = np.concatenate([x[0] for x in rows])
        jac = np.vstack([x[1] for x in rows])
        y = np.concatenate([x[2] for x in rows])
        w = np.concatenate([x[3] for x in rows])
        rss = float((((sim - y) * w) ** 2).sum())
        history.append({"iteration": iteration, "simulated_rss": rss})
        if best is None or rss < best[0]:
            best = (rss, v.copy(), iteration)
        if iteration == max_iter:
            break
        theta = np.linalg.lstsq(M, v - v0, rcond=None)[0]
        a = (jac @ M) * w[:, None]
        b = (y - sim + jac @ M @ theta) * w
        anchored = np.flatnonzero(ref > 0)
        if prior_weight > 0 and anchored.size:
            penalty = np.zeros((anchored.size, len(free)))
            penalty[np.arange(anchored.size), anchored] = np.sqrt(prior_weight) / ref[anchored]
            a = np.vstack([a, penalty])
            b = np.concatenate([b, np.zeros(anchored.size)])
        scale = np.linalg.norm(a, axis=0)
        scale[scale == 0] = 1.0
        solution = lsq_linear(a / scale, b, bounds=(lower * scale, np.full(len(free), np.inf)), method="bvls")
        target = v0 + M @ (solution.x / scale)
        step = target - v if iteration == 0 else damping * (target - v)
        v = v + step
        # how much the step moves the (linearised) simulated times, relative to the measured ones
        if float(np.linalg.norm((jac @ step) * w) / np.linalg.norm(y * w)) < tol:
            rows = [_rows(r, configs[r.name], _with_vector(pools, v, False, label)) for r in train]
            sim = np.concatenate([x[0] for x in rows])
            rss = float((((sim - y) * w) ** 2).sum())
            history.append({"iteration": iteration + 1, "simulated_rss": rss})
            if rss < best[0]:
                best = (rss, v.copy(), iteration + 1)
            break
    fitted = _with_vector(pools, best[1], same_model, label)
    change = np.linalg.lstsq(M, best[1] - v0, rcond=None)[0]
    param_rows = [{"name": p, "pool": PARAMETERS[p][0], "change": change[k], "status": "fitted"}
                  for k, p in enumerate(free)]
    param_rows += [{"name": p, "pool": PARAMETERS[p][0], "change": 0.0,
                    "status": "held: a fixed step cost" if p in FIXED_COSTS else "held: no pipelined training run"}
                   for p in PARAMETERS if p not in free]
    coef_rows = [{"pool": PARAMETERS_POOL[k], "name": GRAD_NAMES[k], "before": v0[k], "after": best[1][k]}
                 for k in range(len(GRAD_NAMES))]
    report = DisaggFitReport(
        runs=names, excluded=excluded, before=dict(pools), after=dict(fitted),
        parameters=pd.DataFrame(param_rows), coefficients=pd.DataFrame(coef_rows),
        iterations=pd.DataFrame(history), best_iteration=best[2], notes=notes)
    log.debug("calibrate (disaggregated): %s", report.describe().replace("\n", "; "))
    if same_model:
        return dataclasses.replace(fitted["decode"], fit_report=report)
    result = CalibratedPools({pool: dataclasses.replace(fitted[pool], fit_report=report) for pool in POOLS})
    result.fit_report = report
    return result


PARAMETERS_POOL = ("prefill",) * 5 + ("decode",) * 7


def with_fitted_changes(report: DisaggFitReport, model: StepTimeModel) -> StepTimeModel:
    """``model`` (e.g. the same profile at another TP degree) with the changes ``report`` fitted added: the arrival
    overhead, the prefill per-token terms, the decode serving costs (both regimes) and the pipeline overhead.
    What a calibration fitted is mostly serving work on the CPU (HTTP, tokenisation, block tables, detokenising),
    which does not depend on how the GPU work is split, so it carries over to other parallel degrees."""
    v = np.array([*model.prefill, *model.arrival_overhead_s, *model.decode,
                  *(model.decode_large if model.decode_large is not None else model.decode), model.pipeline_overhead_s])
    for row in report.parameters.itertuples():
        for column in PARAMETERS[row.name][1]:
            v[column] = max(0.0, v[column] + row.change)
    return dataclasses.replace(
        model, prefill=tuple(v[0:3]), arrival_overhead_s=tuple(v[3:5]), decode=tuple(v[5:8]),
        decode_large=tuple(v[8:11]) if model.decode_large is not None else None, pipeline_overhead_s=float(v[11]),
        name=f"{model.name} + fitted serving costs", fit_report=None)


def fidelity_table(latency, runs, *, label: str, cfg=None) -> pd.DataFrame:
    """Measured vs simulated per run: mean/p50/p90 of TTFT, TPOT and E2E, their mean's relative error, and SLO
    attainment at each run's own ``ttft_sla_s`` / ``tpot_sla_s`` (one row per run and metric; column ``model``)."""
    from workbench.sim.simulate import simulate

    rows = []
    for run in runs:
        c = _config(run, cfg)
        res = simulate(run.trace, c, latency=latency)
        sim = res.requests
        meas = run.measured
        att_m = slo_attainment(meas.ttft_s, meas.tpot_s, c.ttft_sla_s, c.tpot_sla_s)
        att_s = slo_attainment(sim.ttft_s, sim.tpot_s, c.ttft_sla_s, c.tpot_sla_s)
        for metric in ("ttft_s", "tpot_s", "e2e_s"):
            m = meas[metric].to_numpy(dtype=np.float64)
            s = sim[metric].to_numpy(dtype=np.float64)
            ok = np.isfinite(m) & np.isfinite(s)
            rows.append({
                "run": run.name, "metric": metric, "model": label, "ttft_diverged": diverged(run),
                "measured_mean": m[ok].mean(), "simulated_mean": s[ok].mean(),
                "mean_rel_error": s[ok].mean() / m[ok].mean() - 1,
                "measured_p50": np.percentile(m[ok], 50), "simulated_p50": np.percentile(s[ok], 50),
                "measured_p90": np.percentile(m[ok], 90), "simulated_p90": np.percentile(s[ok], 90),
                "measured_attainment": att_m, "simulated_attainment": att_s,
                "attainment_points": 100 * (att_s - att_m)})
    return pd.DataFrame(rows)


def cross_validate_disaggregated(latency, runs, cfg=None, **options) -> tuple[pd.DataFrame, dict]:
    """Calibrate on all runs but one and predict that one, each way round (``fidelity_table`` rows of every
    held-out run, column ``trained_on``), and the fitted models by held-out run."""
    runs = list(runs)
    if len(runs) < 2:
        raise ValueError("cross_validate: needs at least two runs (train on the others, predict one)")
    tables, models = [], {}
    for k, held in enumerate(runs):
        train = [r for i, r in enumerate(runs) if i != k]
        fitted = calibrate_disaggregated(latency, train, cfg, **options)
        models[held.name] = fitted
        table = fidelity_table(fitted, [held], label="predicted (calibrated on the others)", cfg=cfg)
        tables.append(table.assign(trained_on="+".join(fitted.fit_report.runs)))
    return pd.concat(tables, ignore_index=True), models


__all__ = ["CalibratedPools", "DIVERGENCE_RATIO", "DisaggFitReport", "PARAMETERS", "PRIOR_WEIGHT",
           "calibrate_disaggregated", "cross_validate_disaggregated", "diverged", "fidelity_table",
           "is_disaggregated_input", "slo_attainment", "with_fitted_changes"]
