"""Calibrating a linear step-time model to measured vLLM runs, and comparing a simulation with a measured run.

``calibrate(start, runs)`` fits the terms of a :class:`~workbench.sim.steptime.StepTimeModel` that the
runs can identify and holds the rest, by simulating the runs with the engine itself (every rule of
:mod:`workbench.sim.continuous_engine`: vLLM v0.2 or v1, preemption, prefix caching) and comparing what
the simulation gives with what was measured.  It follows BLIS's calibration (inference-sim/inference-sim,
``approach.md`` section 5 and ``docs/blog/posts/how-blis-learns-latency.md``: the simulator in the loop,
client-side mean and p90 targets of TTFT, ITL and E2E, a global search), with what one run needs on top:

1. **Targets** (:mod:`workbench.study.fidelity.targets`): per load stage (:mod:`~workbench.study.fidelity.stages`:
   where the arrival rate changes, found from the arrivals or given), the mean and p90 of TTFT, TPOT and
   E2E, compared as log(simulated / measured) over their noise: relative errors, so no metric dominates,
   and a stage or a tail measured on few requests counts less.
2. **Terms** (:mod:`~workbench.study.fidelity.terms`): the fixed cost of a step, a prefill's cost per
   token (and per token x prefix), a decode's cost per context token and per request, the arrival and
   per-token overheads; each bounded by what the measured run allows (a term alone never costs more than
   the measured times it is part of), so the search cannot wander to a model slower than the real server at
   the run's own load.
3. **What the run identifies** (:func:`_stepwise`), in three steps.  (A) Around a pre-fit (one factor on
   every step-time term: where a start from another GPU lands first), the Jacobian of the targets to each
   term the start has says which of them the targets pin to within ``MAX_STD`` (+-30%, one standard
   error; :func:`~workbench.study.fidelity.search.select_identifiable`), taking first, of two terms that act
   alike, the one the start knows least (``OWN_PROFILE_PRIORITY``: for this server's own isolated-step
   profile, the per-token and per-request costs serving adds; for a proxy, the most influential); these are
   fitted (4).  (B) Every other term (one the start lacks, such as a per-request arrival overhead, or one
   left out in A) is added when a refit with it lowers the cost by ``ADD_MIN_GAIN``.  (C) At the fit, a
   free term the targets no longer pin is dropped and the rest refitted.  A run at one steady load tells a
   step's fixed cost from its per-request cost only through its tails (Poisson bursts spread the batch
   size: the TPOT of the requests decoding in a burst is the step time at a larger batch), two load stages
   through their means; a fixed step cost of the server's own profile (what an isolated-step profile
   measures best) moves only when the means pin it (the stages), a proxy's whenever the targets do; a run whose prompts are all cache hits pins the per-token prefill cost only through
   the requests that computed theirs (a target of their own).  A term left out is *held*: at the start when the start is this server's own profile, at
   the pre-fit (the start's shape at the run's size) when it is a proxy (another model or GPU: ``proxy``).
4. **Search** (:func:`~workbench.study.fidelity.search.multistart`): bounded least squares from the best
   few of the start, the pre-fit and a seeded Latin hypercube of the box, within a budget of simulations
   (``max_evaluations``; ``budget_s`` as a safety), deterministic given ``seed``.
5. **Checks**: the fitted model must reproduce its own training runs (mean E2E of each within
   ``max_training_error``, 5%); else :class:`CalibrationError`, carrying the report, with what to try.  A
   search stopped by its budget says so (:class:`CalibrationWarning`, ``fit_report.converged``).

``fit_report`` lists every term (fitted or held, and why; its standard error from the Jacobian at the fit,
widened by the fit's residual when the residual exceeds the noise), every target
(measured, simulated by the start and by the fit), the stages, the training error and the search.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from workbench import checks
from workbench.sim.config import SimConfig
from workbench.sim.steplog import StepLog, replay_steps
from workbench.sim.steptime import StepTimeModel
from workbench.study.fidelity import search as fit_search
from workbench.study.fidelity.stages import check_boundaries, detect_stages
from workbench.study.fidelity.targets import METRICS, run_targets
from workbench.study.fidelity.terms import Parameterisation, data_bounds, model_terms, origins

log = logging.getLogger(__name__)

MAX_TRAINING_ERROR = 0.05       # largest |relative error| of a training run's mean E2E the fit may keep
MAX_STD = 0.3                   # a term is identified when its standard error (log multiplier) is within this
IDENTIFY_STEP = 0.3             # half-width of the identifiability Jacobian's central secants (+-30%)
FIT_STEP = 0.1                  # forward step of the search's Jacobian (10%)
MAX_EVALUATIONS = 800           # simulations of the training runs one calibration may run
BUDGET_S = 60.0
SAMPLES = 12                    # Latin-hypercube starting points
LOCAL_SEARCHES = 3              # least-squares searches, from the best starting points
GOOD_ENOUGH = 0.01              # stop when the mean squared residual (noise units) is below this (0.1 sigma each)
VLLM_OPTIONS = "stages, proxy, free, hold, max_training_error, max_evaluations, budget_s, samples, seed, name"
DISAGG_OPTIONS = "max_iter, tol, prior_weight, damping, name"
# what calibrate passed to the disaggregated calibration before issue 21 (the vLLM prior's weight, (0.15/0.5)^2):
# kept so the disaggregated results do not change
DISAGG_PRIOR_WEIGHT = (0.15 / 0.5) ** 2


# which of two terms with the same effect moves first (lower first) when the start is this server's own profile:
# the costs serving adds to an isolated-step profile (per token, per request, per context token: scheduling,
# block tables, sampling grow with the batch), then the CPU overheads such a profile has not measured at all,
# and last the fixed step costs, which a batch of one measures best.  For a proxy every term is equally unknown.
OWN_PROFILE_PRIORITY = {"prefill_token": 0, "prefill_attention": 0, "decode_context": 0, "decode_request": 0,
                        "arrival_fixed": 1, "arrival_token": 1, "token_overhead": 1,
                        "prefill_fixed": 2, "decode_fixed": 2, "step_fixed": 2}
QUEUE_SIGN = 0.15               # training TTFT this far below with TPOT half as far above: a note on the setup
ADD_MIN_GAIN = 4.0              # a term is added when a refit with it lowers the cost by this (2 noise units^2)


class CalibrationError(ValueError):
    """The fit cannot reproduce its own training runs (or found nothing to fit); ``report`` holds what it did,
    ``model`` the best model it found (not a calibrated one: do not use it as one)."""

    def __init__(self, message: str, report=None, model=None):
        super().__init__(message)
        self.report = report
        self.model = model


class CalibrationWarning(UserWarning):
    """The calibration stopped at its budget before the search converged; the model reproduces the training
    runs within the bound, but a larger budget might fit them better."""


@dataclass
class FitReport:
    """What ``calibrate`` fitted and how well (see the module docstring)."""

    runs: list[str]
    start: StepTimeModel
    after: StepTimeModel
    proxy: bool
    terms: pd.DataFrame         # term, coefficients, what, status, reason, start, fitted, std (relative), std_s, bound
    targets: pd.DataFrame       # run, stage, requests_group, metric, statistic, measured, sigma, start, fitted, error
    stages: pd.DataFrame        # run, stage, start_s, requests, scored, rate_rps, overloaded
    training_error: pd.DataFrame  # run, metric, measured_mean, simulated_mean, mean_rel_error
    search: dict                # evaluations, max_evaluations, elapsed_s, starts, local searches, message
    converged: bool
    cost_start: float
    cost: float
    max_training_error: float
    notes: list[str] = field(default_factory=list)

    @property
    def fitted(self) -> list[str]:
        return self.terms.loc[self.terms.status == "fitted", "term"].tolist()

    @property
    def held(self) -> list[str]:
        return self.terms.loc[self.terms.status != "fitted", "term"].tolist()

    def training_e2e_error(self) -> float:
        """The largest |relative error| of a training run's mean E2E."""
        rows = self.training_error[self.training_error.metric == "e2e_s"]
        return float(rows.mean_rel_error.abs().max())

    def describe(self) -> str:
        lines = [f"calibrated on {', '.join(self.runs)} from {self.start.name} "
                 f"({'a proxy: another model or GPU' if self.proxy else 'this server’s own profile'})",
                 f"  {self.after.describe()}"]
        for row in self.stages.itertuples():
            lines.append(f"  stage {row.stage} of {row.run}: from {row.start_s:.1f} s, {row.requests} requests at "
                         f"{row.rate_rps:.3g} req/s{' (overloaded: its queue grew)' if row.overloaded else ''}")
        for row in self.terms.itertuples():
            value = f"{row.start:.4g} -> {row.fitted:.4g}"
            std = ""
            if row.status != "held" and np.isfinite(row.std_s):
                std = f" (+-{row.std:.0%})" if np.isfinite(row.std) and row.fitted > 0 else f" (+-{row.std_s:.2g})"
            reason = f": {row.reason}" if row.reason else ""
            lines.append(f"  {row.term} [{row.coefficients}] {value} s{std}: {row.status}{reason}")
        for row in self.training_error.itertuples():
            lines.append(f"  training error on {row.run}: mean {row.metric} {row.mean_rel_error:+.1%}")
        search = self.search
        lines.append(f"  search: {search['evaluations']} of {search['max_evaluations']} simulations in "
                     f"{search['elapsed_s']:.1f} s, {'converged' if self.converged else 'NOT converged'}; "
                     f"cost {self.cost_start:.4g} (start) -> {self.cost:.4g} ({search['targets']} targets)")
        return "\n".join(lines + [f"  note: {n}" for n in self.notes])


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


def _configs(runs, cfg) -> list:
    """Each run's setup (``cfg`` for all, else its own), checked: one vLLM server, and able to serve the run."""
    from workbench.traces.serving_log import check_config

    configs = []
    for run in runs:
        setup = _settings(cfg if cfg is not None else run.config, run.name)
        check_config(run, setup, "cfg" if cfg is not None else f"{run.name}: config")
        configs.append(setup)
    return configs


def _boundaries(stages, runs) -> list[np.ndarray]:
    """Per run, the times where a new load stage starts: detected (None), none (False), given for the one run
    (a list of seconds) or per run name (a dict)."""
    if stages is None:
        return [detect_stages(r.trace.arrival_s) for r in runs]
    if stages is False:
        return [np.zeros(0) for _ in runs]
    if isinstance(stages, dict):
        unknown = sorted(set(stages) - {r.name for r in runs}, key=str)
        if unknown:
            raise ValueError(f"stages: names no training run {unknown}; the runs are {[r.name for r in runs]}")
        return [check_boundaries(stages[r.name], f"stages[{r.name!r}]", r.trace.arrival_s) if r.name in stages
                else detect_stages(r.trace.arrival_s) for r in runs]
    if len(runs) != 1:
        raise ValueError("stages: a list of times applies to one run; with several runs give a dict {run name: "
                         "[times]} (or None to detect each run's stages, False for one stage per run)")
    return [check_boundaries(stages, "stages", runs[0].trace.arrival_s)]


def _overloaded(values: np.ndarray, ratio: float = 4.0) -> bool:
    """A stage whose queue grew without bound: the median TTFT of its last third of requests (by arrival) is over
    ``ratio`` times that of its first third (the disaggregated calibration's test, calibration_disagg.diverged)."""
    third = values.size // 3
    return bool(third >= 3 and np.median(values[-third:]) > ratio * np.median(values[:third]))


def _stage_table(runs, targets) -> pd.DataFrame:
    rows = []
    for run, target in zip(runs, targets):
        arrival = np.asarray(run.trace.arrival_s)
        ttft = run.measured["ttft_s"].to_numpy()
        starts = np.concatenate([[0.0], target.boundaries_s])
        ends = np.concatenate([target.boundaries_s, [arrival.max()]])
        for s in range(starts.size):
            members = np.flatnonzero(target.stage == s)
            scored = members[target.scored[members]]
            span = max(float(ends[s] - starts[s]), 1e-9)
            rows.append({"run": run.name, "stage": s, "start_s": float(starts[s]), "requests": int(members.size),
                         "scored": int(scored.size), "rate_rps": members.size / span,
                         "overloaded": _overloaded(ttft[scored])})
    return pd.DataFrame(rows)


def _is_proxy(start: StepTimeModel, runs, proxy) -> bool:
    """Whether ``start`` describes another model or GPU than the runs' server: given, or (None) unless every run's
    setup names ``start`` as its own profile (``setup.json``'s ``profile``)."""
    if proxy is not None:
        return checks.boolean(proxy, "proxy")
    return not all(r.profile is not None and r.profile == start.name for r in runs)


def _check_start(start) -> StepTimeModel:
    """A linear StepTimeModel (its units are checked against the runs by :func:`_check_units`)."""
    if type(start) is not StepTimeModel:
        raise checks.InvalidType(
            f"start: calibrate fits the terms of the linear step-time model (wb.StepTimeModel: prefill (a, b, c), "
            f"decode (a, b, c), overheads); a {type(start).__name__} is not one. Linearise it first: fit a "
            "StepTimeModel to its step times, or start from a published linear profile "
            "(StepTimeModel.from_profile / from_blis, workbench.sim.profiles.get_profile)")
    return start


def _check_units(start: StepTimeModel, runs) -> None:
    """The start's decode step of one request against the runs' fastest measured TPOT (a step of a batch of one
    or more): more than 20x above it, or 1000x below, is a start in another unit (StepTimeModel's own bounds
    catch only what no GPU could take)."""
    tpot = np.concatenate([r.measured["tpot_s"].to_numpy(dtype=np.float64)[r.scored_mask] for r in runs])
    tpot = tpot[np.isfinite(tpot) & (tpot > 0)]
    if tpot.size:
        checks.scale(start.decode_time_s([1]), "start", float(np.quantile(tpot, 0.05)),
                     what=f"a one-request decode step of {start.name}",
                     reference_what="the runs' fastest measured TPOT (5th percentile)",
                     hint="StepTimeModel takes seconds: divide milliseconds by 1000 (StepTimeModel.from_profile and "
                          "from_blis convert published profiles)")


def _names(value, name: str, allowed) -> tuple:
    if value is None:
        return ()
    items = (value,) if isinstance(value, str) else tuple(checks.instance(
        value, name, (list, tuple, set, frozenset), expected="a list of term names"))
    unknown = sorted({str(v) for v in items} - set(allowed))
    if unknown:
        raise ValueError(f"{name}: unknown term(s) {unknown}; the terms are {list(allowed)}")
    return tuple(items)


def _refuse_options(given: dict, kind: str, takes: str) -> None:
    named = sorted(k for k, v in given.items() if v is not None)
    if named:
        raise ValueError(f"calibrate: {', '.join(named)} apply to {kind}; {takes}")




@dataclass
class _Problem:
    """One calibration: the runs and their targets, the terms and their bounds, the evaluator, and what has
    been decided about each term."""

    start: StepTimeModel
    runs: list
    configs: list
    targets: list
    terms: list
    proxy: bool
    reference: np.ndarray          # held terms' coefficients: the start's (a proxy's: scaled by the pre-fit)
    bound: dict
    candidates: list               # terms the data may fit (the others are held for a stated reason)
    status: dict                   # term -> (status, reason)
    forced: tuple
    label: str
    source: str
    evaluator: object = None
    notes: list = field(default_factory=list)

    def parameterisation(self, free, reference=None) -> Parameterisation:
        reference = self.reference if reference is None else reference
        return Parameterisation(self.start, tuple(self.terms), tuple(free), self.bound, reference,
                                origins(reference, self.terms, self.bound), self.label, self.source)

    @property
    def means(self) -> np.ndarray:
        """Bool per residual: the mean targets'."""
        return np.concatenate([t.means for t in self.targets])

    def own_fixed_cost(self, name: str) -> bool:
        """Whether ``name`` is a fixed step cost of this server's own profile (not a proxy's)."""
        return not self.proxy and self.parameterisation([]).term(name).kind.startswith("fixed")

    def fixed_cost_errors(self, free: list, jac: np.ndarray, r: np.ndarray) -> np.ndarray:
        """Per free term: for a fixed step cost of this server's own profile, its standard error from the mean
        targets alone (a fixed cost moves only when the load stages pin it, module docstring); 0 for the others."""
        fixed = [self.own_fixed_cost(n) for n in free]
        if not any(fixed):
            return np.zeros(len(free))
        rows = self.means
        return np.where(fixed, _errors(jac[rows], r[rows], len(free)), 0.0)

    def priority(self, name: str) -> int:
        return 0 if self.proxy else OWN_PROFILE_PRIORITY.get(name, 1)

    def present(self, coef: np.ndarray) -> list:
        every = self.parameterisation([])
        return [n for n in self.candidates if every.value(coef, n) > 0]

    def fit(self, free, coef: np.ndarray, *, samples: int, local_searches: int, seed: int, extra=(),
            restarts: int = 2):
        """Fit the ``free`` terms from ``coef`` (and the start, and ``extra`` starting coefficients): returns
        (fitted coefficients, cost, converged, search result, parameterisation)."""
        param = self.parameterisation(free)
        self.evaluator.use(param)
        low, high = param.limits()
        starting = [param.at(coef), param.at(self.start.coefficients())] + [param.at(c) for c in extra]
        result = fit_search.multistart(self.evaluator, starting, low, high, samples=samples,
                                       local_searches=local_searches, seed=seed, h=FIT_STEP,
                                       tolerance=GOOD_ENOUGH, restarts=restarts)
        if result.z is None or result.z.size != len(free) or not np.isfinite(result.cost):
            raise CalibrationError(f"calibrate: no model could be simulated within the budget "
                                   f"({self.evaluator.out_of_budget}); raise max_evaluations or budget_s")
        return param.vector(result.z), result.cost, result.converged, result, param

    def jacobian(self, names, coef: np.ndarray):
        """Central secants (+-IDENTIFY_STEP, log units) of the residuals to each of ``names`` around ``coef``
        (a term at 0 there: switched on at its nominal share of its bound)."""
        around = self.parameterisation(names, reference=coef)
        self.evaluator.use(around)
        low, high = around.limits()
        z = np.clip(np.zeros(len(names)), low, high)
        r0 = self.evaluator.residuals(z)
        return fit_search.jacobian(self.evaluator.residuals, z, r0, low, high, IDENTIFY_STEP, central=True), r0


def _problem(start, runs, configs, targets, proxy, hold, forced, name) -> _Problem:
    terms = model_terms(start, all(c.chunked_prefill for c in configs))
    bounds = data_bounds(runs, configs)
    reference = start.coefficients()
    term_bound = {t.name: bounds[t.kind] for t in terms}
    status, candidates = {}, []
    for t in terms:
        present = max(abs(reference[s]) for s in t.slots) > 0
        if t.name in hold:
            status[t.name] = ("held", "held at the start (hold)")
        elif min(reference[s] for s in t.slots) < 0:
            status[t.name] = ("held", "held at the start: negative there (a fit's curvature), not refitted")
        elif not present and not (term_bound[t.name] > 0 and math.isfinite(term_bound[t.name])):
            status[t.name] = ("held", "held at 0: the run gives it no room (its data bound is 0)")
        else:
            candidates.append(t.name)
            status[t.name] = ("held", "")
    label = name or f"{start.name} calibrated on {'+'.join(r.name for r in runs)}"
    source = f"calibrate({start.name}) on {', '.join(r.name for r in runs)}"
    return _Problem(start, runs, configs, targets, terms, proxy, reference, term_bound, candidates, status,
                    tuple(forced), label, source)


def _prefit(problem: _Problem) -> np.ndarray:
    """One log factor on every step-time term the start has: a grid over the box (within a factor 30 of the
    start), then a bounded scalar search around its best point.  Returns the coefficients it gives."""
    from scipy.optimize import minimize_scalar

    steps = [t for t in problem.terms if t.step and t.name in problem.present(problem.reference)]
    if not steps:
        return problem.reference.copy()
    # one "term" made of every step-time coefficient: scaled together
    together = dataclasses.replace(steps[0], name="all step-time terms",
                                   slots=tuple(s for t in steps for s in t.slots))
    limit = min(problem.bound[t.name] / max(abs(problem.reference[s]) for s in t.slots) for t in steps)
    scaled = Parameterisation(problem.start, (together,), (together.name,), {together.name: math.inf},
                              problem.reference, problem.reference)
    problem.evaluator.use(scaled)
    lo, hi = -math.log(30.0), min(math.log(30.0), math.log(limit) if limit > 0 else -math.log(30.0))
    if hi <= lo:
        return scaled.vector(np.array([hi]))
    cost = lambda g: float(np.sum(problem.evaluator.residuals(np.array([g])) ** 2))  # noqa: E731
    grid = np.linspace(lo, hi, 9)
    values = [cost(g) for g in grid]
    best = int(np.argmin(values))
    a, b = grid[max(best - 1, 0)], grid[min(best + 1, grid.size - 1)]
    found = minimize_scalar(cost, bounds=(a, b), method="bounded", options={"xatol": 0.01, "maxiter": 12})
    g = float(found.x) if found.fun <= values[best] else float(grid[best])
    return scaled.vector(np.array([g]))


def _held(problem: _Problem, reason: str) -> tuple:
    where = "held at the pre-fit (the proxy's value x the common factor)" if problem.proxy else \
        "held at the start"
    return ("held", f"{where}: {reason}" if reason else where)


def _errors(jac: np.ndarray, r: np.ndarray, free: int) -> np.ndarray:
    """Standard errors (log units) of the free terms, widened by the residual where the fit misses the targets by
    more than their noise."""
    dof = max(r.size - free, 1)
    return fit_search.standard_errors(jac) * math.sqrt(max(1.0, float(r @ r) / dof))


def _stepwise(problem: _Problem, prefit: np.ndarray, samples: int, seed: int):
    """The terms the runs identify, fitted (module docstring, steps 3 and 4): returns (coefficients, free terms,
    converged, last search result, its parameterisation, the Jacobian of the free terms at the fit)."""
    ev = problem.evaluator
    # A. among the terms the start has: which the targets pin, around the pre-fit; fit them from several starts
    present = problem.present(prefit)
    jac, r_prefit = problem.jacobian(present, prefit)
    selection = fit_search.select_identifiable(
        jac, present, MAX_STD, priority=[problem.priority(n) for n in present],
        forced=tuple(present.index(n) for n in problem.forced if n in present))
    free = [present[k] for k in selection.chosen]
    # this server's own fixed step costs move only when the stages' means pin them (not the tails of one load)
    loose = problem.fixed_cost_errors(free, jac[:, [present.index(n) for n in free]], r_prefit) if free else []
    for n, error in zip(list(free), loose):
        if error > MAX_STD and n not in problem.forced:
            free.remove(n)
            selection.reasons[present.index(n)] = (
                f"a fixed step cost of this server's own profile moves only when the run's load stages pin it (their "
                f"means pin it to {fit_search.std_text(error)} only, limit +-{MAX_STD:g})")
    for k, n in enumerate(present):
        if n not in free:
            problem.status[n] = _held(problem, selection.reasons.get(k, ""))
    steps = [n for n in present if problem.parameterisation([]).term(n).step]
    if problem.proxy and steps and not any(n in steps for n in free):
        strongest = max(steps, key=lambda n: selection.effect[present.index(n)])
        free.append(strongest)
        problem.notes.append(f"{strongest} fitted although weakly identified: a proxy needs one fitted step cost")
    for n in free:
        problem.status[n] = ("fitted", "forced (free)" if n in problem.forced else "")
    log.debug("calibrate: at the pre-fit (effects %s) the targets identify %s",
              dict(zip(present, np.round(selection.effect, 1).tolist())), free)
    coef, cost, converged, result, param = problem.fit(free, prefit, samples=samples,
                                                       local_searches=LOCAL_SEARCHES, seed=seed)
    # B. every other term, in order: kept when a refit with it lowers the cost by ADD_MIN_GAIN
    others = sorted((n for n in problem.candidates if n not in free),
                    key=lambda n: (problem.priority(n), problem.candidates.index(n)))
    for n in others:
        if ev.out_of_budget:
            problem.status[n] = _held(problem, "not tried: the evaluation budget was used up")
            continue
        # from the fit so far with the new term at its origin (switched on, or as the reference has it): at 0 a
        # log multiplier has no slope to follow
        switched = problem.parameterisation(free + [n])
        switched_on = switched.vector(np.append(switched.at(coef)[:-1], 0.0))
        try:
            trial_coef, trial_cost, trial_converged, trial_result, trial_param = problem.fit(
                free + [n], switched_on, samples=0, local_searches=1, seed=seed, extra=(coef,), restarts=1)
        except (fit_search.BudgetExhausted, CalibrationError):
            problem.status[n] = _held(problem, "not tried: the evaluation budget was used up")
            continue
        gain = cost - trial_cost
        if gain >= ADD_MIN_GAIN or n in problem.forced:
            free.append(n)
            coef, cost, converged, result, param = trial_coef, trial_cost, trial_converged, trial_result, trial_param
            problem.status[n] = ("fitted", "forced (free)" if n in problem.forced else
                                 f"added: a refit with it lowered the cost by {gain:.3g}")
            log.debug("calibrate: %s added (cost %.4g)", n, cost)
        elif not problem.status[n][1]:
            problem.status[n] = _held(problem, f"a refit with it lowered the cost by {max(gain, 0):.2g} only "
                                               f"(needs {ADD_MIN_GAIN:g})")
    # C. at the fit: a free term the targets do not pin (+-MAX_STD) is dropped and the rest refitted
    jac_fit = None
    while free and not ev.out_of_budget:
        try:
            jac_fit, r_fit = problem.jacobian(free, coef)
        except fit_search.BudgetExhausted:
            jac_fit = None
            break
        errors = _errors(jac_fit, r_fit, len(free))
        errors = np.maximum(errors, problem.fixed_cost_errors(free, jac_fit, r_fit))
        loose = [k for k in np.argsort(-errors) if errors[k] > MAX_STD and free[k] not in problem.forced]
        if not loose or len(free) == 1:
            break
        k = int(loose[0])
        dropped = free[k]
        try:
            coef, cost, converged, result, param = problem.fit(free[:k] + free[k + 1:], coef, samples=0,
                                                               local_searches=1, seed=seed)
        except (fit_search.BudgetExhausted, CalibrationError):
            problem.notes.append(f"{dropped} kept although the targets pin it to {fit_search.std_text(errors[k])} "
                                 "only: no budget left to refit without it")
            jac_fit = None
            break
        free.pop(k)
        pinned_by = "load stages (their means)" if problem.own_fixed_cost(dropped) else "targets"
        problem.status[dropped] = _held(problem, f"dropped at the fit: the {pinned_by} pin it to "
                                                 f"{fit_search.std_text(errors[k])} only (limit +-{MAX_STD:g})")
        log.debug("calibrate: %s dropped at the fit (+-%.2g)", dropped, errors[k])
    problem.evaluator.use(param)
    if jac_fit is not None and jac_fit.shape[1] != len(free):
        jac_fit = None
    return coef, free, converged, result, param, jac_fit


def calibrate(start, runs, cfg=None, *, stages=None, proxy=None, free=None, hold=None,
              max_training_error: float = MAX_TRAINING_ERROR, max_evaluations: int | None = None,
              budget_s: float | None = None, samples: int | None = None, seed: int | None = None,
              name: str | None = None, max_iter=None, tol=None, prior_weight=None, damping=None):
    """Fit ``start`` to measured ``runs`` (ServingLogs; one run is taken as a list of one): the terms the runs
    identify are fitted, the others held (module docstring).  Returns the model with ``.fit_report``.

    ``cfg``: the serving setup for every run (default: each run's ``config``).  ``stages``: where each run's
    arrival rate changes (None: detected; False: one stage; a list of seconds for one run; a dict by run
    name).  ``proxy``: whether ``start`` describes another model or GPU (None: unless each run's setup names
    ``start`` as its profile).  ``free``/``hold``: term names to fit whatever the data say, or to keep at the
    start (:func:`workbench.study.fidelity.terms.model_terms`).  ``max_training_error``: the largest
    |relative error| of a training run's mean E2E the fit may keep (else :class:`CalibrationError`).
    ``max_evaluations``/``budget_s``: the search's budget in simulations (default 800) and seconds (60);
    ``samples``: Latin-hypercube starting points (12); ``seed``: their seed (0).

    Disaggregated runs (configs with ``scheduler="disaggregated"``), or ``start`` a ``{"prefill": ...,
    "decode": ...}`` dict, are calibrated by :mod:`workbench.study.fidelity.calibration_disagg` (options
    ``max_iter``, ``tol``, ``prior_weight``, ``damping``, ``name``).
    """
    from workbench.study.fidelity import calibration_disagg

    if not isinstance(start, (StepTimeModel, dict, str)):
        raise checks.InvalidType(f"calibrate: start must be a StepTimeModel (disaggregated runs: also a "
                                 f"{{'prefill': ..., 'decode': ...}} dict or a profile name), got "
                                 f"{type(start).__name__}")
    if getattr(start, "table", None) is not None:
        raise ValueError(f"calibrate: {start.name} is a {start.kind} step table; calibration refits linear "
                         "coefficients, which would leave the table (and so every simulated step) unchanged. "
                         "Calibrate a linear model instead (e.g. dataclasses.replace(start, table=None), the table's "
                         "least-squares summary, as the starting point)")
    runs = _as_runs(runs, "calibrate")
    if cfg is not None:
        checks.instance(cfg, "cfg", SimConfig, expected="a SimConfig, or None for each run's own setup")
    vllm_only = dict(stages=stages, proxy=proxy, free=free, hold=hold, max_evaluations=max_evaluations,
                     budget_s=budget_s, samples=samples, seed=seed,
                     max_training_error=None if max_training_error == MAX_TRAINING_ERROR else max_training_error)
    if calibration_disagg.is_disaggregated_input(start, runs, cfg):
        _refuse_options(vllm_only, "vLLM runs", f"the disaggregated calibration takes {DISAGG_OPTIONS}")
        options = {k: v for k, v in (("max_iter", max_iter), ("tol", tol)) if v is not None}  # None: its defaults
        return calibration_disagg.calibrate_disaggregated(
            start, runs, cfg, prior_weight=DISAGG_PRIOR_WEIGHT if prior_weight is None else prior_weight,
            damping=0.5 if damping is None else damping, name=name, **options)
    _refuse_options(dict(max_iter=max_iter, tol=tol, prior_weight=prior_weight, damping=damping),
                    "disaggregated runs", f"vLLM runs take {VLLM_OPTIONS}")
    if not isinstance(start, StepTimeModel):
        raise checks.InvalidType(f"calibrate: start must be a StepTimeModel for vLLM runs (their configs are not "
                                 f"disaggregated), got {type(start).__name__}")
    start = _check_start(start)
    max_training_error = checks.number(max_training_error, "max_training_error", low=0, low_open=True,
                                       hint="a share: 0.05 is 5%")
    max_evaluations = checks.integer(MAX_EVALUATIONS if max_evaluations is None else max_evaluations,
                                     "max_evaluations", low=1, high=10**7, hint="simulations of the training runs")
    budget_s = checks.number(BUDGET_S if budget_s is None else budget_s, "budget_s", low=0, low_open=True,
                             unit="s")
    samples = checks.integer(SAMPLES if samples is None else samples, "samples", low=0, high=10_000)
    seed = checks.integer(0 if seed is None else seed, "seed", low=0)
    checks.instance(name, "name", (str, type(None)), expected="a text label, or None")
    t0 = time.monotonic()
    _check_units(start, runs)
    configs = _configs(runs, cfg)
    targets = [run_targets(run, b, seed=seed, bound=max_training_error, block_size=c.block_size)
               for run, b, c in zip(runs, _boundaries(stages, runs), configs)]
    empty = [t.run for t in targets if t.table.empty]
    if empty:
        raise ValueError(f"calibrate: {', '.join(empty)} has no target (fewer than 10 scored requests with "
                         "measured times); calibrate on a run with more requests")
    names = [t.name for t in model_terms(start, all(c.chunked_prefill for c in configs))]
    free, hold = _names(free, "free", names), _names(hold, "hold", names)
    both = sorted(set(free) & set(hold))
    if both:
        raise ValueError(f"free, hold: {both} in both; a term is fitted or held, not both")
    problem = _problem(start, runs, configs, targets, _is_proxy(start, runs, proxy), hold, free, name)
    problem.evaluator = fit_search.Evaluator(problem.parameterisation([]), runs, configs, targets, max_evaluations,
                                             t0 + budget_s)
    try:
        r_start = problem.evaluator.residuals(np.zeros(0))
        prefit = _prefit(problem)
        if problem.proxy:
            problem.reference = prefit          # a proxy's shape at the size the pre-fit found
        first = next(t for t in problem.terms if t.step)
        size = max(abs(start.coefficients()[s]) for s in first.slots)
        problem.notes.append(f"pre-fit: every step-time term x{max(abs(prefit[s]) for s in first.slots) / size:.3g}"
                             if size > 0 else "pre-fit: the start has no step-time term to scale")
        coef, fitted, converged, result, param, jac_fit = _stepwise(problem, prefit, samples, seed)
    except fit_search.BudgetExhausted:
        raise CalibrationError(f"calibrate: the budget ({problem.evaluator.out_of_budget}) ends before a first fit; "
                               "raise max_evaluations or budget_s") from None
    report = _report(problem, param, result, jac_fit, float(r_start @ r_start), r_start, max_training_error, t0,
                     converged)
    model = dataclasses.replace(report.after, fit_report=report)
    report.after = model
    worst = report.training_e2e_error()
    if not worst <= max_training_error:
        row = report.training_error[report.training_error.metric == "e2e_s"].set_index("run").mean_rel_error
        misses = ", ".join(f"{r} {e:+.1%}" for r, e in row.items() if not abs(e) <= max_training_error)
        held = [t for t in report.held if t in problem.candidates]
        raise CalibrationError(
            f"calibrate: the fitted model cannot reproduce its own training run(s): mean E2E off by {misses} "
            f"(bound: max_training_error={max_training_error:.0%}); it is not returned. Try: the run's own config "
            f"(kv_blocks, max_num_seqs, max_num_batched_tokens, chunked_prefill, prefix_caching as the server had "
            f"them), freeing held terms (free={held}), a start closer to this server (a profile of this model and "
            f"GPU), or a larger budget (max_evaluations={max_evaluations}; {report.search['message']}). The "
            "report is on this error's .report", report, model)
    if not report.converged:
        warnings.warn(f"calibrate: the search stopped before it converged ({report.search['message']}); the fit "
                      f"reproduces the training runs' mean E2E within {worst:.1%}, but a larger max_evaluations or "
                      "budget_s may fit them better", CalibrationWarning, stacklevel=2)
    log.info("calibrate: %s", report.describe().replace("\n", "; "))
    return model


def _report(problem: _Problem, param: Parameterisation, result, jac_fit, cost_start: float, r_start,
            max_training_error: float, t0: float, converged: bool) -> FitReport:
    from workbench.sim.simulate import simulate

    evaluator = problem.evaluator
    model = param.model(result.z)
    after = model.coefficients()
    start = problem.start.coefficients()
    r_fit = evaluator.residuals(result.z)
    std = np.full(len(param.free), np.nan) if jac_fit is None else _errors(jac_fit, r_fit, len(param.free))
    std_of = dict(zip(param.free, std))
    rows = []
    for t in problem.terms:
        state, reason = problem.status[t.name]
        slot = max(t.slots, key=lambda s: abs(start[s]) if start[s] else abs(after[s]))
        value = float(after[slot])
        relative = std_of.get(t.name, np.nan) if state == "fitted" else np.nan
        rows.append({"term": t.name, "coefficients": t.coefficients, "what": t.what, "status": state,
                     "reason": reason, "start": float(start[slot]), "fitted": value, "std": relative,
                     "std_s": value * relative, "bound": problem.bound[t.name]})
    table = pd.DataFrame(rows)
    target_rows, error_rows = [], []
    sizes = np.cumsum([t.size for t in problem.targets])[:-1]
    for run, cfg, target, part_start, part_fit in zip(problem.runs, problem.configs, problem.targets,
                                                      np.split(r_start, sizes), np.split(r_fit, sizes)):
        frame = target.table.copy()
        n = len(frame)
        frame["start"] = frame["measured"] * np.exp(part_start[:n] * frame["sigma"])
        frame["fitted"] = frame["measured"] * np.exp(part_fit[:n] * frame["sigma"])
        frame["error"] = frame["fitted"] / frame["measured"] - 1.0
        target_rows.append(frame)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            simulated = simulate(run.trace, cfg, latency=model).requests
        scored = target.scored
        for metric in METRICS:
            measured = run.measured[metric].to_numpy(dtype=np.float64)[scored]
            values = simulated[metric].to_numpy(dtype=np.float64)[scored]
            has = np.isfinite(measured)
            ok = has & np.isfinite(values)
            mean_measured = float(measured[has].mean()) if has.any() else np.nan
            mean_simulated = float(values[ok].mean()) if ok.any() else np.nan
            # a request the simulation did not serve: the fit does not reproduce the run
            error = mean_simulated / mean_measured - 1.0 if ok.sum() == has.sum() else np.inf
            error_rows.append({"run": run.name, "metric": metric, "measured_mean": mean_measured,
                               "simulated_mean": mean_simulated, "mean_rel_error": error})
    errors = pd.DataFrame(error_rows).set_index(["run", "metric"])["mean_rel_error"]
    for run in problem.runs:
        ttft, tpot = errors.get((run.name, "ttft_s"), 0.0), errors.get((run.name, "tpot_s"), 0.0)
        if ttft < -QUEUE_SIGN and tpot > QUEUE_SIGN / 2:
            problem.notes.append(
                f"{run.name}: its requests queued longer (TTFT {ttft:+.0%}) and decoded faster (TPOT {tpot:+.0%}) "
                "than the fit makes them; no step time does both, a smaller running batch would: check kv_blocks "
                "and max_num_seqs against the server's")
    search = {"evaluations": evaluator.evaluations, "max_evaluations": evaluator.max_evaluations,
              "elapsed_s": time.monotonic() - t0, "targets": int(r_fit.size),
              "starting_points": len(result.starts), "local_searches": result.local,
              "message": evaluator.out_of_budget or result.message}
    converged = bool(converged and not evaluator.out_of_budget) or float(r_fit @ r_fit) <= GOOD_ENOUGH * r_fit.size
    return FitReport([r.name for r in problem.runs], problem.start, model, problem.proxy, table,
                     pd.concat(target_rows, ignore_index=True), _stage_table(problem.runs, problem.targets),
                     pd.DataFrame(error_rows), search, converged, cost_start, float(r_fit @ r_fit),
                     max_training_error, problem.notes)


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
    scored = run.scored_mask
    served = np.isfinite(errors["simulated_e2e_s"].to_numpy()) & scored
    if not served.any():
        reasons = ""
        if hasattr(res, "requests") and "status" in res.requests:
            reasons = f" ({res.requests['status'].astype(str).value_counts().to_dict()})"
        raise ValueError(f"compare_to_measured: the simulation served none of the {int(scored.sum())} requests of "
                         f"{run.name}{reasons}, so there is nothing to compare; check the SimConfig (kv_blocks, "
                         "max_num_batched_tokens) against the run's setup")
    rows = []
    for metric in ("ttft_s", "tpot_s", "e2e_s"):
        measured = errors[f"measured_{metric}"].to_numpy()
        simulated = errors[f"simulated_{metric}"].to_numpy()
        ok = np.isfinite(simulated) & np.isfinite(measured) & scored
        if not ok.any():  # e.g. tpot_s when every request has one output token
            rows.append({"run": run.name, "metric": metric, "requests": 0, "not_compared": int(scored.sum())})
            continue
        m, s = measured[ok], simulated[ok]
        rows.append({
            "run": run.name, "metric": metric,
            "measured_mean": m.mean(), "simulated_mean": s.mean(), "mean_rel_error": s.mean() / m.mean() - 1,
            "measured_p50": np.percentile(m, 50), "simulated_p50": np.percentile(s, 50),
            "measured_p90": np.percentile(m, 90), "simulated_p90": np.percentile(s, 90),
            "median_abs_rel_error": float(np.median(np.abs(s / m - 1))),
            "requests": int(ok.sum()), "not_compared": int((~ok & scored).sum()),
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


def cross_validate(start: StepTimeModel, runs, cfg=None, **calibrate_options) -> tuple[pd.DataFrame, dict]:
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
        fitted = calibrate(start, train, cfg, **calibrate_options)
        models[held_out.name] = fitted
        table = compare_to_measured(simulate_run(held_out, fitted, cfg), held_out)
        tables.append(table.assign(model="calibrated on the others", trained_on="+".join(r.name for r in train)))
    return pd.concat(tables), models


__all__ = ["CalibrationError", "CalibrationWarning", "FitReport", "MAX_TRAINING_ERROR", "calibrate",
           "compare_to_measured", "cross_validate", "replay_run", "replay_table", "request_errors", "simulate_run"]
