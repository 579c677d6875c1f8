"""Calibrating a step-time model to measured serving runs, and comparing a simulation with a measured run.

``calibrate(step, runs, cfg)`` refits a :class:`~workbench.sim.steptime.StepTimeModel`
jointly to every run (never one run at a time) by least squares on the measured
per-request timelines:

1. Replay each run with the current model (:func:`workbench.sim.steplog.replay_steps`:
   the continuous engine itself under the run's setup, vLLM v0.2 rules for
   ``chunked_prefill=False``, v1 for ``True``, with prefix caching if the setup
   has it; every step logged) to learn which steps each request lived through:
   from its queue entry to its first token, and from there to its last token.
2. A step's time is linear in the coefficients (prefill ``a + b*sum(l) +
   c*sum(l*(p+l))``, decode ``a + b*sum(ctx) + c*n`` in two batch-size regimes;
   a chunked-prefill step holding both pays both variable parts and the larger
   fixed cost, which the linear model attributes to the kind whose fixed cost is
   larger under the current coefficients), so for that schedule a request's TTFT
   and decode time (E2E - TTFT) are linear too: the summed features of the steps
   in its window (the step running when it arrived counted by the part still to
   run), plus ``a0 + a1*prompt`` for TTFT (arrival overhead) and the per-token
   overhead once per reported token.  BLIS-style v1 coefficients
   (:meth:`~workbench.sim.steptime.StepTimeModel.blis`: one fixed cost, per
   prefill token, per decode, per decode-context token) are the case
   ``prefill_c = 0``; hold it (``hold=FIXED_STEP_COSTS + ("prefill_c",)``) to fit
   exactly those four.
3. Fit the coefficients at once, non-negative (``scipy.optimize.lsq_linear``),
   to measured TTFT and decode time; each run and each of the two metrics weighs
   the same (rows divided by the run's mean of that metric and by
   sqrt(requests)), so a 350-request run does not outweigh a 100-request one.
   Every coefficient the published model has also gets a prior row
   ``sqrt(prior_weight) * (c / c_prior - 1)``: coefficients the data cannot tell
   apart (per context token vs. per request, when every request holds ~900
   tokens of context) stay near where the published profile put them.  The
   weight is ``PRIOR_WEIGHT = (RUN_SPREAD / PRIOR_SPREAD)^2 = (0.15 / 0.5)^2``:
   real runs differ from each other by about 15% at the same batch sizes, a
   published per-token coefficient is trusted to within 50%, so moving it by 50%
   costs as much as a systematic 15% error on one run and metric.
4. Move half way to the new coefficients (damped) and repeat from 1, at most
   ``max_iter`` times or until the linear model's times move by less than
   ``tol``.  A queueing schedule is not smooth in the coefficients (a tiny change
   reorders admissions), so the iteration may wander near its fixed point
   rather than settle; the iterate whose *simulated* error is lowest is
   returned, and the report says whether it settled.

What is held, by default (``hold=FIXED_STEP_COSTS``): the fixed cost of a
prefill and of a decode step (``prefill_a``, ``decode_a``, ``decode_large_a``)
stay at the published profile.  That is what an isolated-step profile measures
best (a batch of one), and the serving runs cannot pin it: over the batch sizes
of two training runs it trades off against the per-request term, and a fixed
cost fitted to runs at batch 15-70 extrapolates to a light run's batches of ~5
too slow (+23% on the light run's mean E2E, with it fitted).  Serving adds
per-request CPU work (scheduling, block tables, sampling, detokenisation) that
grows with the batch; the per-context and per-request terms carry it.
``hold=()`` fits every coefficient.

The boundary between the two decode regimes (``decode_large_threshold``) is
kept at the model's own (the published 95) by default (``thresholds=None``):
the measured runs barely reach it, and choosing it by the training error made
the saturated-run prediction swing between +8% and +44%.  With
``thresholds="fit"`` (16, 32, 48 and the model's own) or a list, the whole fit
is run for each candidate batch size and the one with the lowest simulated
error wins, among the published boundary and the candidates where the training
runs reach far enough to fit both regimes (a fitted small-batch regime next to
a large-batch one held at the published values extrapolates badly).  The
large-batch regime is held at its prior values when fewer than ``min_steps``
training steps reach it.

The per-request overheads (arrival ``a0``, ``a1``) are kept only if the data
says so: they must lower the simulated error by at least ``overhead_min_gain`` (2%), else
they are fixed at zero.  The per-token overhead (added to reported times, never
delaying a step) is held at its prior value unless ``fit_token_overhead=True``:
a request's output tokens are nearly its count of decode steps, so it is
collinear with the decode step's fixed cost, and in vLLM v0.2 the per-token CPU
work (sampling, detokenisation) runs inside the engine loop, i.e. it *is* step
time.  The fit report (``fitted.fit_report``) holds the coefficients before
and after with what was fitted or held, the iterations, and the per-request
residuals of the engine's simulation.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from workbench import checks
from workbench.sim.config import SimConfig
from workbench.sim.steplog import DECODE, MIXED, PREFILL, StepLog, replay_steps
from workbench.sim.steptime import COEF_NAMES, StepTimeModel

log = logging.getLogger(__name__)

STEP_COEFS = COEF_NAMES[:9]          # prefill a,b,c; decode a,b,c; decode_large a,b,c
OVERHEAD_COEFS = ("arrival_overhead_a", "arrival_overhead_b", "token_overhead")
FIT_COEFS = STEP_COEFS + OVERHEAD_COEFS
# held at the published profile by default: the fixed cost of a step is what an isolated-step profile measures
# best (a batch of one), and the serving runs cannot tell it from the per-token and per-request terms
FIXED_STEP_COSTS = ("prefill_a", "decode_a", "decode_large_a")
# the prior's weight: real runs differ from each other by about RUN_SPREAD at the same batch sizes, and a
# published per-token or per-request coefficient is trusted to within PRIOR_SPREAD (relative); moving a
# coefficient by PRIOR_SPREAD then costs as much as a systematic RUN_SPREAD error on one run and metric
RUN_SPREAD, PRIOR_SPREAD = 0.15, 0.5
PRIOR_WEIGHT = (RUN_SPREAD / PRIOR_SPREAD) ** 2


@dataclass
class FitReport:
    """What ``calibrate`` fitted and how well (see the module docstring)."""

    runs: list[str]
    before: StepTimeModel
    after: StepTimeModel
    coefficients: pd.DataFrame      # name, before, after, status (fitted / held at prior / zero: not supported)
    iterations: pd.DataFrame        # iteration, linear and simulated RSS, max relative change, overheads kept
    residuals: pd.DataFrame         # run, request_id, metric (ttft_s, e2e_s), measured, simulated (engine)
    overheads_kept: bool
    rss_with_overheads: float
    rss_without_overheads: float
    converged: bool
    rss_before: float
    notes: list[str] = field(default_factory=list)

    @property
    def final_rss(self) -> float:
        return self.rss_with_overheads if self.overheads_kept else self.rss_without_overheads

    def describe(self) -> str:
        lines = [f"calibrated on {', '.join(self.runs)}: {self.after.describe()}",
                 f"weighted RSS of the simulated runs: {self.final_rss:.4g}"
                 f" (published model: {self.rss_before:.4g})",
                 f"per-request overheads {'kept' if self.overheads_kept else 'not used'} (weighted RSS with "
                 f"{self.rss_with_overheads:.4g}, without {self.rss_without_overheads:.4g})"]
        table = self.coefficients
        fitted = table.status.str.startswith("fitted")
        lines.append("fitted: " + ", ".join(table.loc[fitted, "name"]))
        if (~fitted).any():
            lines.append("not fitted: " + ", ".join(f"{r.name} ({r.status})" for r in table[~fitted].itertuples()))
        return "\n".join(lines + self.notes)


def _as_runs(runs, where: str) -> list:
    """A list of measured runs (one run is taken as a list of one), each checked: finite measured times."""
    from workbench.traces.serving_log import ServingLog

    if isinstance(runs, ServingLog):
        runs = [runs]
    if isinstance(runs, (str, bytes)) or not hasattr(runs, "__iter__"):
        raise checks.InvalidType(f"{where}: runs must be a list of wb.load_serving_log(...) results, got "
                                 f"{type(runs).__name__}")
    runs = list(runs)
    if not runs:
        raise ValueError(f"{where}: no runs given; pass a list of wb.load_serving_log(...) results")
    for run in runs:
        if not isinstance(run, ServingLog):
            raise checks.InvalidType(f"{where}: runs must be wb.load_serving_log(...) results, got "
                                     f"{type(run).__name__}")
        _check_measured(run)
    return runs


def _shown(value) -> str:
    return repr(value) if value is None or isinstance(value, (str, bytes, os.PathLike)) else f"a {type(value).__name__}"


def _check_measured(run, name: str = "run") -> None:
    """``run`` is a measured run whose TTFT and E2E are finite numbers >= 0, one per request of its trace (a
    ServingLog built by hand skips load_serving_log's checks; a NaN or inf would give a NaN fit, not an error)."""
    from workbench.traces.serving_log import MEASURED, ServingLog
    from workbench.traces.trace import Trace

    if not isinstance(run, ServingLog):
        raise checks.InvalidType(f"{name}: must be a measured run (wb.load_serving_log(...)), got {_shown(run)}")
    if not isinstance(run.trace, Trace):
        raise ValueError(f"{run.name}: trace must be a wb.Trace (what the server was sent), got {_shown(run.trace)}")
    measured = run.measured
    if not isinstance(measured, pd.DataFrame):
        raise ValueError(f"{run.name}: measured must be a DataFrame with columns request_id, "
                         f"{', '.join(MEASURED)}, got {_shown(measured)}")
    missing = [c for c in ("request_id", *MEASURED) if c not in measured.columns]
    if missing:
        raise ValueError(f"{run.name}: measured has no column {', '.join(missing)} (it needs request_id, "
                         f"{', '.join(MEASURED)})")
    if len(measured) != len(run.trace):
        raise ValueError(f"{run.name}: {len(measured)} measured rows for {len(run.trace)} requests")
    for metric in ("ttft_s", "e2e_s"):
        values = pd.to_numeric(measured[metric], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values) | (values < 0)
        if bad.any():
            i = int(np.argmax(bad))
            request = measured["request_id"].iloc[i] if "request_id" in measured else i
            found = measured[metric].iloc[i]
            found = float(found) if isinstance(found, (int, float, np.number)) else found
            raise ValueError(f"{run.name}: request {request}: measured {metric} = {found!r}, "
                             "expected a finite number of seconds >= 0")


def _admitted(run, cfg) -> np.ndarray:
    """Requests the replay can serve (the continuous engine's acceptance rule, rule 2 of its docstring)."""
    from workbench.sim.metrics import STATUS_COMPLETED
    from workbench.sim.simulate import continuous_acceptance

    return continuous_acceptance(run.trace, cfg) == STATUS_COMPLETED


def _settings(cfg, name: str):
    """The run's setup, checked: vLLM's policy (continuous_fcfs) on one server (one replica)."""
    if cfg is None:
        raise ValueError(f"{name}: no config; pass cfg= or load the run with a setup.json beside it")
    checks.instance(cfg, f"{name}: cfg", SimConfig, expected="a SimConfig")
    if cfg.scheduler != "continuous_fcfs" or cfg.num_gpus != 1:
        raise ValueError(f"{name}: calibration replays one vLLM server (scheduler='continuous_fcfs', num_gpus=1; "
                         f"chunked_prefill and prefix_caching as the run had them); got scheduler={cfg.scheduler!r}, "
                         f"num_gpus={cfg.num_gpus}")
    return cfg


def replay_run(run, step: StepTimeModel, cfg=None) -> StepLog:
    """Replay a measured run with ``step`` under its setup (or ``cfg``), every step logged
    (see :mod:`workbench.sim.steplog`)."""
    return replay_steps(run.trace, step, _settings(cfg if cfg is not None else run.config, run.name))


def _step_features(steps: StepLog, threshold: int, model: StepTimeModel) -> np.ndarray:
    """One row of the 9 step coefficients' features per step: the step's time is ``row @ coefs``.

    A mixed step (chunked prefill) has both variable parts and one fixed cost, ``max(a_p, a_d)``: its feature
    goes to the kind whose fixed cost ``model`` makes larger (exact at ``model``'s coefficients)."""
    x = np.zeros((steps.start_s.size, 9))
    has_prefill = steps.kind != DECODE
    has_decode = steps.kind != PREFILL
    mixed = steps.kind == MIXED
    x[has_prefill, 1], x[has_prefill, 2] = steps.sum_l[has_prefill], steps.sum_l2[has_prefill]
    large = has_decode & (steps.n >= threshold)
    small = has_decode & ~large
    x[small, 4], x[small, 5] = steps.sum_ctx[small], steps.n[small]
    x[large, 7], x[large, 8] = steps.sum_ctx[large], steps.n[large]
    a_p = model.prefill[0]
    a_small = model.decode[0]
    a_large = model.decode_large[0] if model.decode_large is not None else a_small
    prefill_fixed = has_prefill & ~(mixed & ((small & (a_small > a_p)) | (large & (a_large > a_p))))
    x[prefill_fixed, 0] = 1.0
    x[small & ~prefill_fixed, 3] = 1.0
    x[large & ~prefill_fixed, 6] = 1.0
    return x


def _window_features(steps: StepLog, x: np.ndarray, t0: np.ndarray, t1: np.ndarray) -> np.ndarray:
    """Summed step features over [t0, t1]; t1 is a step's end, the step running at t0 counts by its remaining part."""
    cumulative = np.vstack([np.zeros((1, x.shape[1])), np.cumsum(x, axis=0)])
    k0 = np.searchsorted(steps.end_s, t0, side="right")
    k1 = np.searchsorted(steps.end_s, t1, side="left")
    start, end = steps.start_s[k0], steps.end_s[k0]
    done = np.clip((t0 - start) / (end - start), 0.0, 1.0)
    return cumulative[k1 + 1] - cumulative[k0] - done[:, None] * x[k0]


def _design(run, steps: StepLog, threshold: int, model: StepTimeModel
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows (TTFT, then decode time = E2E - TTFT, per served request): features, measured value, weight, request."""
    trace = run.trace
    idx = np.flatnonzero(~steps.rejected)
    x = _step_features(steps, threshold, model)
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


@dataclass
class _Pass:
    """One fixed-point pass at a given threshold and overhead choice."""

    model: StepTimeModel
    simulated_rss: float
    designs: list
    history: list
    status: np.ndarray
    converged: bool
    best_iteration: int
    free: np.ndarray


def _fixed_point(step: StepTimeModel, runs, cfg, *, overheads: bool, fit_token_overhead: bool, max_iter: int,
                 tol: float, min_steps: int, prior_weight: float, damping: float, name: str, source: str,
                 hold: tuple) -> _Pass:
    threshold = step.decode_large_threshold if step.decode_large is not None else 2**62
    prior = _as_vector(step)
    current, history, best, change = step, [], None, np.inf
    status = np.array(["fitted"] * len(FIT_COEFS), dtype=object)
    for iteration in range(1, max_iter + 2):
        replays = [replay_run(r, current, cfg) for r in runs]
        designs = [_design(r, steps, threshold, current) for r, steps in zip(runs, replays)]
        a = np.vstack([d[0] for d in designs])
        b = np.concatenate([d[1] for d in designs])
        w = np.concatenate([d[2] for d in designs])
        # the design reproduces the replay exactly at the current coefficients: this is the simulated error
        simulated_rss = float((((a @ _as_vector(current) - b) * w) ** 2).sum())
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
            large_steps = sum(int(np.count_nonzero((s.kind != PREFILL) & (s.n >= threshold))) for s in replays)
            if large_steps < min_steps:
                free[6:9] = False
                status[6:9] = f"held at prior: {large_steps} training steps at batch >= {threshold}"
        if not overheads:
            free[9:11], fixed[9:11] = False, 0.0
            status[9:11] = "zero: the data does not need it"
        if not fit_token_overhead:
            free[11] = False
            status[11] = "held at prior: collinear with decode_a (see fit_token_overhead)"
        for coef in hold:
            k = FIT_COEFS.index(coef)
            if free[k]:
                free[k] = False
                status[k] = ("held at prior: a fixed step cost (see hold)" if coef in FIXED_STEP_COSTS
                             else "held at prior (see hold)")
        unsupported = free & (np.abs(a).sum(axis=0) == 0)
        free &= ~unsupported
        status[unsupported] = "held at prior: no data"
        target, _ = _solve(a, b, w, free, fixed, prior, prior_weight)
        previous = _as_vector(current)
        # damped: a full step can overshoot when the schedule (queueing) reacts strongly to the coefficients
        vector = previous + damping * (target - previous) if iteration > 1 else target
        # how much the step changes the linear model's times, relative to the measured times
        change = float(np.linalg.norm((a @ (vector - previous)) * w) / np.linalg.norm(b * w))
        try:
            current = _as_model(vector, step, name, source)
        except ValueError:       # a step kind fitted to zero time: the data cannot pin it; stop here
            log.info("calibration: iteration %d fitted a zero-time step; keeping the best iterate so far", iteration)
            change = np.inf
            break
        history.append({"threshold": step.decode_large_threshold if step.decode_large is not None else None,
                        "overheads": overheads, "iteration": iteration, "max_rel_change": change,
                        "simulated_rss": np.nan})
    return _Pass(best[1], best[0], best[2], history, status, change < tol, best[3], free)


def _rss_of(step: StepTimeModel, runs, cfg) -> float:
    """Weighted residual sum of squares of ``step``'s simulation of the runs (the objective calibrate lowers)."""
    threshold = step.decode_large_threshold if step.decode_large is not None else 2**62
    total = 0.0
    for run in runs:
        a, b, w, _ = _design(run, replay_run(run, step, cfg), threshold, step)
        total += float((((a @ _as_vector(step) - b) * w) ** 2).sum())
    return total


def _is_default(value, default) -> bool:
    try:
        return bool(value is default or value == default)
    except (TypeError, ValueError):   # e.g. an array compared element-wise
        return False


def calibrate(step: StepTimeModel, runs, cfg=None, *, thresholds=None, max_iter: int | None = None,
              tol: float | None = None, min_steps: int = 20, overhead_min_gain: float = 0.02,
              fit_token_overhead: bool = False,
              prior_weight: float = PRIOR_WEIGHT, hold=FIXED_STEP_COSTS, damping: float = 0.5,
              name: str | None = None) -> StepTimeModel:
    """Refit ``step`` to measured ``runs`` (ServingLogs; one run is taken as a list of one) jointly; returns the
    model with ``.fit_report``.

    Disaggregated runs (configs with ``scheduler="disaggregated"``), or ``step`` a ``{"prefill": ...,
    "decode": ...}`` dict, are calibrated by :mod:`workbench.study.fidelity.calibration_disagg` (each run with
    its own config; the same kind as given is returned).

    ``cfg`` is the serving setup used for every run (default: each run's own ``.config``): vLLM's FCFS policy
    on one server, with or without chunked prefill (v0.2 or v1 rules) and prefix caching.  ``thresholds``:
    the batch sizes tried as the decode regimes' boundary (``decode_large_threshold``, chosen by the lowest
    simulated error; ``"fit"`` = 16, 32, 48 and the model's own; None, the default = keep the model's).
    ``hold``: coefficients (names in ``FIT_COEFS``) kept at ``step``'s values (default: the fixed step costs);
    ``prior_weight``: how much moving a coefficient away from ``step``'s value costs (module docstring).
    ``max_iter`` / ``tol``: iterations and stopping tolerance of the fit; None = 8 and 1e-3 for vLLM runs, the
    defaults of :func:`~workbench.study.fidelity.calibration_disagg.calibrate_disaggregated` for disaggregated ones.
    """
    from workbench.study.fidelity import calibration_disagg

    if not isinstance(step, (StepTimeModel, dict, str)):
        raise checks.InvalidType(f"calibrate: step must be a StepTimeModel (disaggregated runs: also a "
                                 f"{{'prefill': ..., 'decode': ...}} dict or a profile name), got {type(step).__name__}")
    if getattr(step, "table", None) is not None:
        raise ValueError(f"calibrate: {step.name} is a {step.kind} step table; calibration refits linear "
                         "coefficients, which would leave the table (and so every simulated step) unchanged. "
                         "Calibrate a linear model instead (e.g. dataclasses.replace(step, table=None), the table's "
                         "least-squares summary, as the starting point)")
    runs = _as_runs(runs, "calibrate")
    if cfg is not None:
        checks.instance(cfg, "cfg", SimConfig, expected="a SimConfig, or None for each run's own setup")
    if calibration_disagg.is_disaggregated_input(step, runs, cfg):
        # disaggregated runs (or a {"prefill": ..., "decode": ...} latency): workbench.study.fidelity.calibration_disagg
        vllm_only = {"thresholds": (thresholds, None), "min_steps": (min_steps, 20),
                     "overhead_min_gain": (overhead_min_gain, 0.02), "fit_token_overhead": (fit_token_overhead, False),
                     "hold": (hold, FIXED_STEP_COSTS)}
        given = sorted(k for k, (value, default) in vllm_only.items() if not _is_default(value, default))
        if given:
            raise ValueError(f"calibrate: {', '.join(given)} apply to vLLM runs; the disaggregated calibration "
                             "takes max_iter, tol, prior_weight, damping, name (see calibration_disagg)")
        options = {k: v for k, v in (("max_iter", max_iter), ("tol", tol)) if v is not None}  # None: its defaults
        return calibration_disagg.calibrate_disaggregated(step, runs, cfg, prior_weight=prior_weight,
                                                          damping=damping, name=name, **options)
    if not isinstance(step, StepTimeModel):
        raise checks.InvalidType(f"calibrate: step must be a StepTimeModel for vLLM runs (their configs are not "
                                 f"disaggregated), got {type(step).__name__}")
    max_iter = checks.integer(8 if max_iter is None else max_iter, "max_iter", low=1, high=10_000,
                              hint="fixed-point iterations of the fit")
    tol = checks.number(1e-3 if tol is None else tol, "tol", low=0, low_open=True)
    prior_weight = checks.number(prior_weight, "prior_weight", low=0)
    damping = checks.number(damping, "damping", low=0, high=1, low_open=True)
    checks.instance(name, "name", (str, type(None)), expected="a text label, or None")
    if thresholds is not None and thresholds != "fit":
        thresholds = checks.integers(thresholds, "thresholds", low=1, high=2**31 - 1)
    min_steps = checks.integer(min_steps, "min_steps", low=0)
    overhead_min_gain = checks.number(overhead_min_gain, "overhead_min_gain", low=0)
    fit_token_overhead = checks.boolean(fit_token_overhead, "fit_token_overhead")
    hold = (hold,) if isinstance(hold, str) else tuple(checks.instance(hold, "hold", (list, tuple, set, frozenset),
                                                                       expected="a list of coefficient names"))
    unknown = sorted(set(hold) - set(FIT_COEFS), key=str)
    if unknown:
        raise ValueError(f"calibrate: hold names unknown coefficients {unknown}; choose among {list(FIT_COEFS)}")
    for run in runs:
        setup = _settings(cfg if cfg is not None else run.config, run.name)
        if not np.any(_admitted(run, setup)):
            raise ValueError(f"calibrate: every request of {run.name} is rejected by the replay's setup "
                             f"(kv_blocks={setup.kv_blocks_effective}, block_size={setup.block_size}, "
                             f"max_num_batched_tokens={setup.max_num_batched_tokens}, "
                             f"chunked_prefill={setup.chunked_prefill}): there is nothing to fit; check cfg "
                             "(kv_blocks, max_num_batched_tokens)")
    names = [r.name for r in runs]
    name = name or f"{step.name} calibrated on {'+'.join(names)}"
    source = f"calibrate({step.name}) on {', '.join(names)}"
    options = dict(fit_token_overhead=fit_token_overhead, max_iter=max_iter, tol=tol, min_steps=min_steps,
                   prior_weight=prior_weight, damping=damping, name=name, source=source, hold=tuple(hold))
    if step.decode_large is None or thresholds is None:
        candidates = [step]
    else:
        values = (16, 32, 48, step.decode_large_threshold) if thresholds == "fit" else tuple(thresholds)
        candidates = [dataclasses.replace(step, decode_large_threshold=int(t)) for t in sorted(set(values))]
    passes = [_fixed_point(c, runs, cfg, overheads=True, **options) for c in candidates]
    # a boundary moves only to where the training runs fit both regimes: a candidate whose large-batch regime
    # would be held at the published values mixes a fitted and an unfitted regime, which extrapolates badly
    eligible = [k for k, (c, p) in enumerate(zip(candidates, passes))
                if c.decode_large_threshold == step.decode_large_threshold or p.status[6] == "fitted"]
    chosen = min(eligible, key=lambda k: passes[k].simulated_rss)
    with_overheads = passes[chosen]
    without = _fixed_point(candidates[chosen], runs, cfg, overheads=False, **options)
    with_model, with_rss = with_overheads.model, with_overheads.simulated_rss
    without_model, without_rss = without.model, without.simulated_rss
    gain = (without_rss - with_rss) / without_rss if without_rss > 0 else 0.0
    keep = gain >= overhead_min_gain
    final, final_model = (with_overheads, with_model) if keep else (without, without_model)
    notes = []
    if len(candidates) > 1:
        tried = ", ".join(f"{c.decode_large_threshold}: {p.simulated_rss:.4g}{'' if k in eligible else ' (large regime not fitted: not eligible)'}"
                          for k, (c, p) in enumerate(zip(candidates, passes)))
        notes.append(f"decode regime boundary (batch size) chosen by the simulated error, per candidate: {tried}")
    if not final.converged:
        notes.append(f"no fixed point within {max_iter} iterations; returned the iterate with the lowest simulated "
                     f"error (iteration {final.best_iteration})")
    vector = _as_vector(final_model)
    residuals = []
    for run in runs:
        errors = request_errors(simulate_run(run, final_model, cfg), run)
        for metric in ("ttft_s", "e2e_s"):
            residuals.append(pd.DataFrame({"run": run.name, "request_id": errors["request_id"], "metric": metric,
                                           "measured": errors[f"measured_{metric}"],
                                           "simulated": errors[f"simulated_{metric}"]}))
    prior = _as_vector(step)
    names_all = list(FIT_COEFS) + ["decode_large_threshold"]
    before = list(prior) + [float(step.decode_large_threshold)]
    after = list(vector) + [float(final_model.decode_large_threshold)]
    status = list(final.status) + ["fitted (grid)" if len(candidates) > 1 else "kept"]
    table = pd.DataFrame({"name": names_all, "before": before, "after": after, "status": status})
    history = pd.DataFrame([h for p in passes + [without] for h in p.history])
    report = FitReport(names, step, final_model, table, history, pd.concat(residuals, ignore_index=True), keep,
                       with_rss, without_rss, final.converged,
                       _rss_of(step, runs, cfg), notes)
    log.info("calibrate: %s", report.describe().replace("\n", "; "))
    return dataclasses.replace(final_model, fit_report=report)


def request_errors(res, run) -> pd.DataFrame:
    """Per request: measured and simulated ttft_s, tpot_s, e2e_s and relative errors (simulated / measured - 1)."""
    sim = _simulated_frame(res, run)
    frame = pd.DataFrame({"request_id": run.measured["request_id"].to_numpy()})
    for metric in ("ttft_s", "tpot_s", "e2e_s"):
        measured = run.measured[metric].to_numpy(dtype=np.float64)
        simulated = sim[metric].to_numpy(dtype=np.float64)
        frame[f"measured_{metric}"] = measured
        frame[f"simulated_{metric}"] = simulated
        with np.errstate(divide="ignore", invalid="ignore"):
            frame[f"rel_error_{metric}"] = simulated / measured - 1.0
    return frame


def _simulated_frame(res, run) -> pd.DataFrame:
    from workbench.traces.serving_log import ServingLog

    if isinstance(res, ServingLog):
        raise checks.InvalidType("res: must be a simulation result (wb.simulate(...)), got a measured run; the "
                                 "order is compare_to_measured(res, run)")
    _check_measured(run)
    if getattr(res, "engine", "continuous") not in ("continuous", "disaggregated"):
        raise ValueError("compare_to_measured: res must be a continuous-engine result (a measured vLLM run is "
                         f"continuous batching), got a {res.config.scheduler} result of the static engine; simulate "
                         "run.trace with the run's setup (a continuous_* scheduler, or disaggregated for a DistServe "
                         "run)")
    requests = getattr(res, "requests", None)
    if requests is None or not {"ttft_s", "tpot_s", "e2e_s"} <= set(requests.columns):
        raise ValueError("compare_to_measured: res must be a continuous-engine result (res.requests with ttft_s, "
                         "tpot_s, e2e_s): simulate with a continuous_* scheduler")
    if len(requests) != len(run.measured):
        raise ValueError(f"compare_to_measured: the simulation has {len(requests)} requests, the run {run.name!r} "
                         f"{len(run.measured)}; simulate run.trace")
    fingerprint = getattr(res, "trace_fingerprint", None)
    if fingerprint and fingerprint != run.trace.fingerprint:
        raise ValueError(f"compare_to_measured: res was simulated on another trace than {run.name!r}'s; "
                         "simulate run.trace")
    return requests


def compare_to_measured(res, run) -> pd.DataFrame:
    """Measured vs simulated, one row per metric (ttft_s, tpot_s, e2e_s): mean, p50, p90, the relative error of
    the mean, and the per-request median absolute relative error.  Rejected requests count as errors (NaN
    simulated times are left out of the simulated statistics and the row says how many)."""
    errors = request_errors(res, run)
    served = np.isfinite(errors["simulated_e2e_s"].to_numpy())
    if not served.any():
        reasons = ""
        if hasattr(res, "requests") and "status" in res.requests:
            reasons = f" ({res.requests['status'].astype(str).value_counts().to_dict()})"
        raise ValueError(f"compare_to_measured: the simulation served none of the {len(served)} requests of "
                         f"{run.name}{reasons}, so there is nothing to compare; check the SimConfig (kv_blocks, "
                         "max_num_batched_tokens) against the run's setup")
    rows = []
    for metric in ("ttft_s", "tpot_s", "e2e_s"):
        measured = errors[f"measured_{metric}"].to_numpy()
        simulated = errors[f"simulated_{metric}"].to_numpy()
        ok = np.isfinite(simulated) & np.isfinite(measured)
        if not ok.any():  # e.g. tpot_s when every request has one output token
            rows.append({"run": run.name, "metric": metric, "requests": 0, "not_compared": int(ok.size)})
            continue
        m, s = measured[ok], simulated[ok]
        rows.append({
            "run": run.name, "metric": metric,
            "measured_mean": m.mean(), "simulated_mean": s.mean(), "mean_rel_error": s.mean() / m.mean() - 1,
            "measured_p50": np.percentile(m, 50), "simulated_p50": np.percentile(s, 50),
            "measured_p90": np.percentile(m, 90), "simulated_p90": np.percentile(s, 90),
            "median_abs_rel_error": float(np.median(np.abs(s / m - 1))),
            "requests": int(ok.sum()), "not_compared": int((~ok).sum()),
        })
    return pd.DataFrame(rows).set_index(["run", "metric"])


def simulate_run(run, step: StepTimeModel, cfg=None):
    """``wb.simulate`` of a measured run's trace with its own setup (or ``cfg``) and ``step``."""
    from workbench.sim.simulate import simulate

    cfg = cfg if cfg is not None else run.config
    if cfg is None:
        raise ValueError(f"{run.name}: no config; pass cfg= or load the run with a setup.json beside it")
    return simulate(run.trace, cfg, latency=step)


def replay_table(step: StepTimeModel, runs, cfg=None, *, label: str | None = None) -> pd.DataFrame:
    """``compare_to_measured`` of every run simulated with ``step`` unchanged, one table (column ``model``)."""
    runs = _as_runs(runs, "replay_table")
    tables = [compare_to_measured(simulate_run(run, step, cfg), run) for run in runs]
    return pd.concat(tables).assign(model=label or step.name)


def cross_validate(step: StepTimeModel, runs, cfg=None, **calibrate_options) -> tuple[pd.DataFrame, dict]:
    """Calibrate on all runs but one and predict that one, each way round.

    Returns the ``compare_to_measured`` rows of every held-out run (column ``trained_on``) and the fitted models
    by held-out run name.
    """
    runs = _as_runs(runs, "cross_validate")
    if len(runs) < 2:
        raise ValueError("cross_validate: needs at least two runs (train on the others, predict one)")
    tables, models = [], {}
    for k, held_out in enumerate(runs):
        train = [r for i, r in enumerate(runs) if i != k]
        fitted = calibrate(step, train, cfg, **calibrate_options)
        models[held_out.name] = fitted
        table = compare_to_measured(simulate_run(held_out, fitted, cfg), held_out)
        tables.append(table.assign(model="calibrated on the others", trained_on="+".join(r.name for r in train)))
    return pd.concat(tables), models


__all__ = ["FIXED_STEP_COSTS", "FitReport", "PRIOR_WEIGHT", "calibrate", "compare_to_measured", "cross_validate", "replay_run", "replay_table",
           "request_errors", "simulate_run"]
