"""Calibrating a step-time model to measured serving runs, and comparing a simulation with a measured run.

``calibrate(step, runs, cfg)`` refits a :class:`~workbench.sim.steptime.StepTimeModel`
jointly to every run (never one run at a time) by least squares on the measured
per-request timelines:

1. Replay each run with the current model (:func:`workbench.sim.steplog.replay_steps`,
   vLLM v0.2 rules) to learn which steps each request lived through: from its
   queue entry to its first token, and to its last token.
2. A step's time is linear in the coefficients (prefill ``a + b*sum(l) +
   c*sum(l^2)``, decode ``a + b*sum(ctx) + c*n`` in one or two batch regimes), so
   a request's simulated TTFT and E2E are linear too: the summed features of the
   steps in its window (the step it arrived in counted by the fraction still to
   run), plus ``a0 + a1*prompt`` (arrival overhead) and one ``token_overhead``
   per reported token (1 for TTFT, ``output_tokens`` for E2E).
3. Fit all coefficients at once, non-negative (``scipy.optimize.lsq_linear``),
   to measured TTFT and E2E; each run and each metric weighs the same (rows
   divided by the run's mean of that metric and by sqrt(requests)).
4. Repeat from 1 with the new model until the coefficients stop moving (a fixed
   point: the schedule the model implies is the one it was fitted on).

Coefficients the training runs cannot inform are held at their prior values
(and the report says which): the large-batch decode regime when fewer than
``min_steps`` training steps reach it.  The per-request overheads (arrival and
per-token) are kept only if the data says so: they must lower the residual sum
of squares by at least ``overhead_min_gain`` (default 2%), else they are fixed at
zero.  The per-token overhead (reported times only, never delaying a step) is
held at its prior value unless ``fit_token_overhead=True``: a request's count
of output tokens is nearly its count of decode steps, so it is collinear with
the decode step's fixed cost, and in vLLM v0.2 the per-token CPU work
(sampling, detokenisation) runs inside the engine loop, i.e. it *is* step
time.  The fit report (``fitted.fit_report``) holds the coefficients before and
after, the iterations, and per-request residuals.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from workbench.sim.steplog import DECODE, PREFILL, StepLog, replay_steps
from workbench.sim.steptime import COEF_NAMES, StepTimeModel

log = logging.getLogger(__name__)

STEP_COEFS = COEF_NAMES[:9]          # prefill a,b,c; decode a,b,c; decode_large a,b,c
OVERHEAD_COEFS = ("arrival_overhead_a", "arrival_overhead_b", "token_overhead")
FIT_COEFS = STEP_COEFS + OVERHEAD_COEFS


@dataclass
class FitReport:
    """What ``calibrate`` fitted and how well (see the module docstring)."""

    runs: list[str]
    before: StepTimeModel
    after: StepTimeModel
    coefficients: pd.DataFrame      # name, before, after, status (fitted / held at prior / zero: not supported)
    iterations: pd.DataFrame        # iteration, linear and simulated RSS, max relative change, overheads kept
    residuals: pd.DataFrame         # run, request, metric (ttft_s, decode_s = e2e - ttft), measured, simulated
    overheads_kept: bool
    rss_with_overheads: float
    rss_without_overheads: float
    converged: bool
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        lines = [f"calibrated on {', '.join(self.runs)}: {self.after.describe()}",
                 f"fixed point {'reached' if self.converged else 'NOT reached'} after {len(self.iterations)} "
                 f"iteration(s); weighted RSS of the simulated runs {self.iterations['simulated_rss'].min():.4g}",
                 f"per-request overheads {'kept' if self.overheads_kept else 'not used'} (weighted RSS with "
                 f"{self.rss_with_overheads:.4g}, without {self.rss_without_overheads:.4g})"]
        held = self.coefficients.loc[self.coefficients.status != "fitted", "name"].tolist()
        if held:
            lines.append("not fitted: " + ", ".join(
                f"{r.name} ({r.status})" for r in self.coefficients.itertuples() if r.status != "fitted"))
        return "\n".join(lines + self.notes)


def _settings(cfg, name: str) -> dict:
    """The replay settings of a config (the continuous engine's SimConfig fields)."""
    if cfg is None:
        raise ValueError(f"{name}: no config; pass cfg= or load the run with a setup.json beside it")
    missing = [f for f in ("max_num_seqs", "max_num_batched_tokens", "block_size", "kv_blocks") if
               not hasattr(cfg, f)]
    if missing:
        raise ValueError(f"{name}: config lacks {', '.join(missing)} (a continuous-batching SimConfig is needed)")
    if getattr(cfg, "chunked_prefill", False):
        raise ValueError(f"{name}: calibration replays vLLM v0.2 scheduling (chunked_prefill=False); "
                         "the config asks for chunked prefill")
    if getattr(cfg, "num_gpus", 1) != 1:
        raise ValueError(f"{name}: calibration replays one replica (num_gpus=1), got num_gpus={cfg.num_gpus}")
    kv_blocks = cfg.kv_blocks
    if kv_blocks is None:
        derive = getattr(cfg, "kv_blocks_per_replica", None)
        kv_blocks = derive() if callable(derive) else derive
        if kv_blocks is None:
            raise ValueError(f"{name}: kv_blocks is None and the config cannot derive it; set kv_blocks")
    return dict(max_num_seqs=int(cfg.max_num_seqs), max_num_batched_tokens=int(cfg.max_num_batched_tokens),
                block_size=int(cfg.block_size), kv_blocks=int(kv_blocks))


def replay_run(run, step: StepTimeModel, cfg=None) -> StepLog:
    """Replay a measured run with ``step`` (see :mod:`workbench.sim.steplog`)."""
    trace = run.trace
    return replay_steps(trace.arrival_s, trace.prompt_tokens, trace.output_tokens, step,
                        **_settings(cfg if cfg is not None else run.config, run.name))


def _step_features(steps: StepLog, threshold: int) -> np.ndarray:
    """One row of the 9 step coefficients' features per step: the step's time is ``row @ coefs``."""
    x = np.zeros((steps.start_s.size, 9))
    pre = steps.kind == PREFILL
    x[pre, 0], x[pre, 1], x[pre, 2] = 1.0, steps.sum_l[pre], steps.sum_l2[pre]
    dec = steps.kind == DECODE
    large = dec & (steps.n >= threshold)
    small = dec & ~large
    x[small, 3], x[small, 4], x[small, 5] = 1.0, steps.sum_ctx[small], steps.n[small]
    x[large, 6], x[large, 7], x[large, 8] = 1.0, steps.sum_ctx[large], steps.n[large]
    return x


def _window_features(steps: StepLog, x: np.ndarray, t0: np.ndarray, t1: np.ndarray) -> np.ndarray:
    """Summed step features over [t0, t1]; t1 is a step's end, the step running at t0 counts by its remaining part."""
    cumulative = np.vstack([np.zeros((1, x.shape[1])), np.cumsum(x, axis=0)])
    k0 = np.searchsorted(steps.end_s, t0, side="right")
    k1 = np.searchsorted(steps.end_s, t1, side="left")
    start, end = steps.start_s[k0], steps.end_s[k0]
    done = np.clip((t0 - start) / (end - start), 0.0, 1.0)
    return cumulative[k1 + 1] - cumulative[k0] - done[:, None] * x[k0]


PER_TOKEN = False


def _design(run, steps: StepLog, threshold: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows (TTFT, then decode time = E2E - TTFT, per served request): features, measured value, weight, request."""
    trace = run.trace
    idx = np.flatnonzero(~steps.rejected)
    x = _step_features(steps, threshold)
    prompt = trace.prompt_tokens[idx].astype(np.float64)
    out = trace.output_tokens[idx].astype(np.float64)
    ttft = _window_features(steps, x, steps.entry_s[idx], steps.first_token_s[idx])
    e2e = _window_features(steps, x, steps.entry_s[idx], steps.finish_s[idx])
    ones, zeros = np.ones_like(prompt), np.zeros_like(prompt)
    # TTFT: the arrival overhead (before queue entry) and one per-token overhead; the decode part: the steps
    # after the first token and one per-token overhead per later token
    rows = [np.column_stack([ttft, ones, prompt, ones]), np.column_stack([e2e - ttft, zeros, zeros, out - 1])]
    measured = run.measured.iloc[idx]
    targets = [measured["ttft_s"].to_numpy(), (measured["e2e_s"] - measured["ttft_s"]).to_numpy()]
    if PER_TOKEN:
        tokens = np.maximum(out - 1, 1)
        rows[1] = rows[1] / tokens[:, None]
        targets[1] = targets[1] / tokens
    weights = [np.full(idx.size, 1.0 / (t.mean() * np.sqrt(idx.size))) for t in targets]
    return np.vstack(rows), np.concatenate(targets), np.concatenate(weights), np.concatenate([idx, idx])


def _as_vector(step: StepTimeModel) -> np.ndarray:
    return step.coefficients()[[COEF_NAMES.index(n) for n in FIT_COEFS]]


def _as_model(vector: np.ndarray, prior: StepTimeModel, name: str, source: str) -> StepTimeModel:
    v = dict(zip(FIT_COEFS, vector))
    large = (v["decode_large_a"], v["decode_large_b"], v["decode_large_c"]) if prior.decode_large is not None else None
    return dataclasses.replace(
        prior, prefill=(v["prefill_a"], v["prefill_b"], v["prefill_c"]),
        decode=(v["decode_a"], v["decode_b"], v["decode_c"]), decode_large=large,
        arrival_overhead_s=(v["arrival_overhead_a"], v["arrival_overhead_b"]), token_overhead_s=v["token_overhead"],
        name=name, source=source, fit_report=None)


def _solve(a: np.ndarray, b: np.ndarray, w: np.ndarray, free: np.ndarray, fixed: np.ndarray, prior: np.ndarray,
           prior_weight: float) -> tuple[np.ndarray, float]:
    """Non-negative weighted least squares over the ``free`` columns, the others at ``fixed``.

    A free coefficient with a non-zero prior value also gets a row ``sqrt(prior_weight) * (c / prior - 1)``: the
    data must pay for moving it, so coefficients it cannot tell apart stay where the prior has them.
    Returns the coefficients and the data part of the weighted residual sum of squares.
    """
    from scipy.optimize import lsq_linear

    aw = a * w[:, None]
    rhs = b * w - aw[:, ~free] @ fixed[~free]
    sub = aw[:, free]
    anchored = np.flatnonzero(prior[free] > 0)
    if prior_weight > 0 and anchored.size:
        penalty = np.zeros((anchored.size, sub.shape[1]))
        penalty[np.arange(anchored.size), anchored] = np.sqrt(prior_weight) / prior[free][anchored]
        sub = np.vstack([sub, penalty])
        rhs = np.concatenate([rhs, np.full(anchored.size, np.sqrt(prior_weight))])
    scale = np.linalg.norm(sub, axis=0)
    scale[scale == 0] = 1.0
    solution = lsq_linear(sub / scale, rhs, bounds=(0.0, np.inf), method="bvls")
    vector = fixed.copy()
    vector[free] = solution.x / scale
    residual = aw @ vector - b * w
    return vector, float(residual @ residual)


def calibrate(step: StepTimeModel, runs, cfg=None, *, max_iter: int = 12, tol: float = 1e-3, min_steps: int = 20,
              overhead_min_gain: float = 0.02, fit_token_overhead: bool = False, prior_weight: float = 1e-2, damping: float = 0.5,
              name: str | None = None) -> StepTimeModel:
    """Refit ``step`` to measured ``runs`` (ServingLogs) jointly; returns the model with ``.fit_report``.

    ``cfg`` is the serving setup used for every run (default: each run's own ``.config``).
    """
    runs = list(runs)
    if not runs:
        raise ValueError("calibrate: no runs given; pass a list of wb.load_serving_log(...) results")
    if not isinstance(step, StepTimeModel):
        raise ValueError(f"calibrate: step must be a StepTimeModel, got {type(step).__name__}")
    names = [r.name for r in runs]
    threshold = step.decode_large_threshold if step.decode_large is not None else 2**62
    prior = _as_vector(step)
    current = step
    history, notes = [], []
    best = None                       # (simulated RSS, model, designs) of the best iterate so far
    change = np.inf
    for iteration in range(1, max_iter + 2):
        replays = [replay_run(r, current, cfg) for r in runs]
        designs = [_design(r, steps, threshold) for r, steps in zip(runs, replays)]
        a = np.vstack([d[0] for d in designs])
        b = np.concatenate([d[1] for d in designs])
        w = np.concatenate([d[2] for d in designs])
        # the design reproduces the replay exactly at the current coefficients: this is the simulated error
        simulated = a @ _as_vector(current) - b
        simulated_rss = float(((simulated * w) ** 2).sum())
        if best is None or simulated_rss < best[0]:
            best = (simulated_rss, current, designs, iteration - 1)
        if history:
            history[-1]["simulated_rss"] = simulated_rss
        if change < tol or iteration > max_iter:
            break
        free = np.ones(len(FIT_COEFS), dtype=bool)
        fixed = prior.copy()
        status = np.array(["fitted"] * len(FIT_COEFS), dtype=object)
        if step.decode_large is None:
            free[6:9] = False
            status[6:9] = "unused: the model has one decode regime"
        else:
            large_steps = sum(int(np.count_nonzero((s.kind == DECODE) & (s.n >= threshold))) for s in replays)
            if large_steps < min_steps:
                free[6:9] = False
                status[6:9] = f"held at prior: {large_steps} training steps at batch >= {threshold}"
        if not fit_token_overhead:
            free[11] = False
            status[11] = "held at prior: collinear with decode_a (see fit_token_overhead)"
        unsupported = free & (np.abs(a).sum(axis=0) == 0)
        free &= ~unsupported
        status[unsupported] = "held at prior: no data"
        with_overheads, rss_with = _solve(a, b, w, free, fixed, prior, prior_weight)
        no_overhead, fixed_no = free.copy(), fixed.copy()
        no_overhead[9:11], fixed_no[9:11] = False, 0.0
        without_overheads, rss_without = _solve(a, b, w, no_overhead, fixed_no, prior, prior_weight)
        keep = rss_without > 0 and (rss_without - rss_with) / rss_without >= overhead_min_gain
        target = with_overheads if keep else without_overheads
        if not keep:
            status[9:11] = "zero: the data does not need it"
        previous = _as_vector(current)
        # damped: a full step can overshoot when the schedule (queueing) reacts strongly to the coefficients
        vector = previous + damping * (target - previous) if iteration > 1 else target
        moved = np.abs(vector - previous) / np.maximum(np.maximum(np.abs(previous), np.abs(vector)), 1e-30)
        change = float(np.max(moved))
        current = _as_model(vector, step, name or f"{step.name} calibrated on {'+'.join(names)}",
                            f"calibrate({step.name}) on {', '.join(names)}")
        history.append({"iteration": iteration, "linear_rss": rss_with if keep else rss_without,
                        "max_rel_change": change, "overheads_kept": keep, "simulated_rss": np.nan})
        log.info("calibration iteration %d: linear RSS %.4g, max relative change %.3g", iteration,
                 history[-1]["linear_rss"], change)
    converged = change < tol
    best_rss, chosen, designs, best_iteration = best
    if not converged:
        notes.append(f"no fixed point within {max_iter} iterations (last change {change:.3g}); returned the "
                     f"iterate with the lowest simulated error (iteration {best_iteration})")
        log.info("calibrate: %s", notes[-1])
    vector = _as_vector(chosen)
    residuals = []
    for run, d in zip(runs, designs):
        n = d[1].size // 2
        fitted = d[0] @ vector
        for k, metric in enumerate(("ttft_s", "decode_s")):
            rows = slice(k * n, (k + 1) * n)
            residuals.append(pd.DataFrame({"run": run.name, "request": d[3][rows], "metric": metric,
                                           "measured": d[1][rows], "simulated": fitted[rows]}))
    table = pd.DataFrame({"name": FIT_COEFS, "before": prior, "after": vector, "status": status})
    report = FitReport(names, step, chosen, table, pd.DataFrame(history), pd.concat(residuals, ignore_index=True),
                       bool(keep), rss_with, rss_without, converged, notes)
    return dataclasses.replace(chosen, fit_report=report)
