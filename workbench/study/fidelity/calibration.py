"""Calibrating a linear step-time model to measured vLLM runs, and comparing a simulation with a measured run.

``calibrate(start, runs)`` is a maximum-a-posteriori (MAP) fit of the terms of a
:class:`~workbench.sim.steptime.StepTimeModel`, simulating the runs with the engine itself (every rule of
:mod:`workbench.sim.continuous_engine`: vLLM v0.2 or v1, preemption, prefix caching) and comparing what the
simulation gives with what was measured.  It follows BLIS's calibration (inference-sim/inference-sim,
``approach.md`` section 5 and ``docs/blog/posts/how-blis-learns-latency.md``: the simulator in the loop,
client-side mean and p90 targets of TTFT, ITL and E2E, a global search), with what one run needs on top:

1. **Targets** (:mod:`workbench.study.fidelity.targets`): per load stage (:mod:`~workbench.study.fidelity.stages`:
   where the arrival rate changes, found from the arrivals or given), the mean and p90 of TTFT, TPOT and
   E2E, compared as log(simulated / measured) over their noise: relative errors, so no metric dominates,
   and a stage or a tail measured on few requests counts less.  A target's noise floor is ``NOISE_FLOOR``
   times its *amplification* (:func:`_amplify`: how many times it multiplies a relative error of the step
   time, measured by a secant of every step-time term scaled together at the pre-fit): the queue-dominated
   TTFT of an overloaded run (amplification 10 or more) is held to what a step-time model can say about it.
2. **Terms** (:mod:`~workbench.study.fidelity.terms`): the fixed cost of a step, a prefill's cost per
   token (and per token x prefix), a decode's cost per context token and per request, the arrival and
   per-token overheads; each bounded by what the measured run allows (a term alone never costs more than
   the measured times it is part of), so the search cannot wander to a model slower than the real server at
   the run's own load.
3. **Prior and run factors.**  Where the runs cannot tell two terms apart, the start's shape decides: every
   term the start has is fitted with a log-normal prior around it (its log multiplier's standard deviation,
   the prior's *width*): ``OWN_PRIOR_WIDTH`` (50%, main's figure before issue 21) around this server's own
   profile; ``PROXY_PRIOR_WIDTH`` (a factor e) around a proxy's shape at the run's size (the pre-fit: one
   factor on every step-time term, where a start from another GPU lands first).  A term the start lacks has
   no prior (it enters only when a refit with it lowers the cost by ``ADD_MIN_GAIN``, and leaves when the
   targets do not pin it to ``MAX_STD``), and so do a proxy's CPU overheads (arrival, per token): they
   describe another server's software (BLIS fits them behind its HTTP client), not this one, so they start
   at 0 and enter only as the run asks.  This server's own fixed step costs, what an isolated-step profile
   measures best (a batch of one), are held unless the run's load stages pin them (their means).
   Runs of one server differ (DistServe's three vLLM runs of one A100 by about 15% at the same batch sizes):
   run ``j`` is simulated with the server's step times times ``exp(u_j)``, its *run factor*, with the prior
   ``u_j ~ N(0, run_spread^2)`` (``RUN_SPREAD``, 15%).  So one run is not fitted to its own noise: the part
   of its level the start's prior says is the run's goes to its factor, and the model returned (the server's,
   without factors) predicts other runs.  A proxy says nothing of the server's speed, so with a proxy only
   how the runs differ is a factor (their factors sum to 0; none for one run).  Two training runs that disagree
   are fitted to their compromise, each reproduced with its own factor; beyond ``RUNS_DISAGREE`` standard
   deviations of a difference, a :class:`RunsDisagreeWarning` says so (a researcher wants the typical server
   and to know how far the runs were apart, more than a refusal).
4. **Search** (:func:`_stepwise`, :func:`~workbench.study.fidelity.search.multistart`): the MAP fit of every
   term the start has and the run factors, by bounded Levenberg-Marquardt from the best few of the start, the
   pre-fit and a seeded Latin hypercube, local searches that end within one unit of cost of the best averaged
   (a schedule's jumps make which of them a search stops in chance); then the terms the start lacks, one at a
   time; within a budget of simulations (``max_evaluations``; ``budget_s`` as a safety), deterministic given
   ``seed``.  The report says which terms the runs pin (:func:`~workbench.study.fidelity.search.
   select_identifiable` on the targets' Jacobian at the fit, the run factors free within their prior, the terms
   the start knows least first: ``OWN_PROFILE_PRIORITY``): those are *fitted*; the others keep status *prior*
   (their values are the prior's, moved only as far as the targets ask).  A run at one steady load tells a
   step's fixed cost from its per-request cost only through its tails, two load stages through their means; a
   run whose prompts are all cache hits pins the per-token prefill cost only through the requests that
   computed theirs (a target of their own).
5. **Checks**: each training run's own model (the server's times its run factor) must reproduce the run's
   mean E2E within ``max_training_error`` (5%) of the step time: times the run's amplification of its mean E2E
   (a run whose queue doubles a step-time error is judged at 10%), as a run factor is searched only within
   ``RUN_FACTOR_LIMIT`` spreads; else :class:`CalibrationError`, carrying the report, with what to try.  A
   search stopped by its budget says so (:class:`CalibrationWarning`, ``fit_report.converged``).

``fit_report`` lists every term (fitted, prior or held, and why; its posterior standard error, widened by the
fit's residual when the residual exceeds the noise), the run factors, every target (measured, simulated by the
start and by the fit), the stages, the training error of each run's own model and of the server's, the decode
step's uncertainty at the batches the runs measured and beyond (:meth:`FitReport.decode_steps`), and the search.
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
from workbench.study.fidelity.terms import (Parameterisation, data_bounds, model_from_vector, model_terms, origins,
                                            scale_steps)

log = logging.getLogger(__name__)

MAX_TRAINING_ERROR = 0.05       # largest |relative error| of a training run's mean E2E the fit may keep
MAX_STD = 0.3                   # a term is identified when its standard error (log multiplier) is within this
IDENTIFY_STEP = 0.3             # half-width of the identifiability Jacobian's central secants (+-30%)
FIT_STEP = 0.1                  # forward step of the search's Jacobian (10%)
MAX_EVALUATIONS = 800           # simulations of the training runs one calibration may run
BUDGET_S = 60.0
SAMPLES = 12                    # Latin-hypercube starting points
LOCAL_SEARCHES = 3              # least-squares searches, from the best starting points
TRIAL_ITERATIONS = 6            # iterations of the refit that tries a term the start lacks
GOOD_ENOUGH = 0.01              # stop when the mean squared residual (noise units) is below this (0.1 sigma each)
VLLM_OPTIONS = ("stages, proxy, free, hold, run_spread, max_training_error, max_evaluations, budget_s, samples, seed, "
                "name")
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
AMPLIFY_STEP = 0.05             # half-width (log) of the secant measuring each target's amplification
ADD_MIN_GAIN = 4.0              # a term is added when a refit with it lowers the cost by this (2 noise units^2)
# The MAP fit's prior (module docstring, "Prior and run factors"); widths are standard deviations of a log multiplier.
# Runs of one server differ: a run's step times are the server's typical ones times exp(u), u ~ N(0, RUN_SPREAD^2).
# 0.15: DistServe's three vLLM runs of one A100 (data/groundtruth/distserve_opt13b_a100_vllm) differ by about 15% at
# the same batch sizes (the medium run is the slow one), the spread main's calibration assumed (RUN_SPREAD before
# issue 21); give calibrate(run_spread=...) what repeated runs of your own server show.
RUN_SPREAD = 0.15
RUN_FACTOR_LIMIT = 3.0          # a run factor is searched within +-3 spreads: a run further from the fitted server
#                                 than that is not a run of it (the training check then refuses the fit)
RUNS_DISAGREE = 2.0             # training runs whose factors differ by more than 2 sd of a difference (2 sqrt(2)
#                                 spreads) disagree beyond what runs of one server do: a RunsDisagreeWarning
OWN_PRIOR_WIDTH = 0.5           # a coefficient of this server's own profile is trusted to within 50% (main's
#                                 PRIOR_SPREAD: serving adds CPU work per token and per request the profile lacks)
PROXY_PRIOR_WIDTH = 1.0         # a proxy's shape (its terms' ratios at the run's size) to within a factor e: the BLIS
#                                 profiles of Llama-3.1-8B on A100 and H100 have one ratio of prefill per-token to
#                                 fixed cost, and per-request decode costs 40x apart relative to it
PROXY_OVERHEAD = ("a proxy's CPU overheads are another server's software (BLIS fits them behind its HTTP client), not "
                  "evidence about this one")


class CalibrationError(ValueError):
    """The fit cannot reproduce its own training runs (or found nothing to fit); ``report`` holds what it did,
    ``model`` the best model it found (not a calibrated one: do not use it as one)."""

    def __init__(self, message: str, report=None, model=None):
        super().__init__(message)
        self.report = report
        self.model = model


class CalibrationWarning(UserWarning):
    """The calibration returns a model with a caveat: the search stopped at its budget before it converged (the
    model reproduces the training runs within the bound, but a larger budget might fit them better), or
    (:class:`RunsDisagreeWarning`) the training runs disagree."""


class RunsDisagreeWarning(CalibrationWarning):
    """Training runs differ by more than runs of one server do (``run_spread``): the model is their compromise,
    each run reproduced with its own run factor (``fit_report.run_factors``)."""


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
    training_error: pd.DataFrame  # run, metric, measured_mean, simulated_mean, mean_rel_error (the run's model),
    #                               server_rel_error (the server's model, without the run's factor), amplification,
    #                               bound (the run's training bound on its mean E2E)
    search: dict                # evaluations, max_evaluations, elapsed_s, starts, local searches, message
    converged: bool
    cost_start: float
    cost: float
    max_training_error: float
    run_factors: pd.DataFrame = None  # run, log_factor, factor, spreads, std (log units)
    run_spread: float = RUN_SPREAD
    covariance: pd.DataFrame = None   # the MAP fit's posterior covariance of the free terms' log multipliers
    batches: dict = None              # the training runs' measured decode batch (p10, p50, p90) and context per request
    notes: list[str] = field(default_factory=list)

    @property
    def fitted(self) -> list[str]:
        return self.terms.loc[self.terms.status == "fitted", "term"].tolist()

    @property
    def held(self) -> list[str]:
        return self.terms.loc[self.terms.status == "held", "term"].tolist()

    @property
    def prior(self) -> list[str]:
        """Terms fitted within their prior that the runs do not pin (their values are mostly the prior's)."""
        return self.terms.loc[self.terms.status == "prior", "term"].tolist()

    def decode_steps(self, batches=None, context_tokens: float | None = None) -> pd.DataFrame:
        """The fitted decode step time at ``batches`` (default: the training runs' p10, median and p90 measured
        batch, and 2x and 4x the p90) of requests holding ``context_tokens`` each (default: the runs' median), with
        its relative standard error from the posterior covariance: small where the runs measured the step, growing
        beyond them, where the prior's shape (the start's) decides; NaN when the search's budget ended before the
        covariance was measured."""
        if self.batches is None:
            raise ValueError("decode_steps: the training runs have no request with two output tokens or more")
        p10, p50, p90 = self.batches["p10"], self.batches["p50"], self.batches["p90"]
        batches = [max(1, round(b)) for b in ((p10, p50, p90, 2 * p90, 4 * p90) if batches is None else batches)]
        context = self.batches["context"] if context_tokens is None else float(context_tokens)
        names = [] if self.covariance is None else list(self.covariance.index)
        terms = {t.name: t for t in model_terms(self.after, "step_fixed" in set(self.terms.term))}
        base = self.after.coefficients()
        rows = []
        for b in batches:
            contexts = [int(round(context))] * int(b)
            time_s = self.after.decode_time_s(contexts)
            gradient = []
            for name in names:
                up = base.copy()
                for slot in terms[name].slots:
                    up[slot] *= math.exp(1e-3)
                moved = model_from_vector(self.after, up, "", "").decode_time_s(contexts)
                gradient.append((math.log(moved) - math.log(time_s)) / 1e-3)
            g = np.array(gradient)
            std = math.sqrt(max(g @ self.covariance.to_numpy() @ g, 0.0)) if self.covariance is not None else np.nan
            rows.append({"batch": int(b), "context_tokens": int(round(context)), "step_s": time_s, "rel_std": std,
                         "trained": bool(math.floor(p10) <= b <= math.ceil(p90))})
        return pd.DataFrame(rows)

    def training_e2e_error(self) -> float:
        """The largest |relative error| of a training run's mean E2E, simulated with its own model (the server's
        times its run factor): what the training bound judges."""
        rows = self.training_error[self.training_error.metric == "e2e_s"]
        return float(rows.mean_rel_error.abs().max())

    def training_misses(self) -> pd.Series:
        """The relative errors of mean E2E of the training runs that miss their bound (by run; empty: none)."""
        rows = self.training_error[self.training_error.metric == "e2e_s"].set_index("run")
        return rows.mean_rel_error[~(rows.mean_rel_error.abs() <= rows.bound)]

    def run_model(self, run: str) -> StepTimeModel:
        """The fitted model times the run factor of training run ``run``: that run's own step times (to predict
        the rest of the same run; another run is predicted by the server's model, ``after``)."""
        factors = self.run_factors.set_index("run")
        if run not in factors.index:
            raise ValueError(f"run: {run!r} is not a training run of this fit; they are {list(factors.index)}")
        coef = scale_steps(self.after.coefficients(), model_terms(self.after, False),
                           float(factors.loc[run, "log_factor"]))
        return model_from_vector(self.after, coef, f"{self.after.name} x its factor on {run}", self.after.source)

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
        searched = self.run_factors is not None and self.run_spread > 0 and (len(self.runs) > 1 or not self.proxy)
        if searched:
            for row in self.run_factors.itertuples():
                lines.append(f"  run factor of {row.run}: its step times x{row.factor:.3g} the server's "
                             f"({row.spreads:+.2g} run spreads of {self.run_spread:.0%})")
        if self.covariance is not None and self.batches is not None and len(self.covariance):
            steps = self.decode_steps()
            text = ", ".join(f"{r.batch}: {r.step_s * 1e3:.3g} ms +-{r.rel_std:.0%}" for r in steps.itertuples())
            lines.append(f"  decode step by batch (requests of {steps.context_tokens.iloc[0]} context tokens; the "
                         f"runs measured batches {self.batches['p10']:.3g}-{self.batches['p90']:.3g}): {text}")
        for row in self.training_error.itertuples():
            server = f" (the server's model, without the run factor: {row.server_rel_error:+.1%})" \
                if searched else ""
            lines.append(f"  training error on {row.run}: mean {row.metric} {row.mean_rel_error:+.1%}{server}")
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
class _Fit:
    """One search's outcome: the server's coefficients, the runs' log factors, the MAP cost (targets and prior)."""

    coef: np.ndarray
    run_factors: np.ndarray
    cost: float
    converged: bool
    result: object
    param: Parameterisation


@dataclass
class _Problem:
    """One calibration: the runs and their targets, the terms and their bounds and priors, the evaluator, and
    what has been decided about each term."""

    start: StepTimeModel
    runs: list
    configs: list
    targets: list
    terms: list
    proxy: bool
    reference: np.ndarray          # held terms' coefficients, and the prior's centre: the start's (a proxy's: its
    #                                step-time terms scaled by the pre-fit, its CPU overheads 0)
    bound: dict
    widths: dict                   # term -> its prior's width (log units; inf: none)
    run_spread: float              # the run factors' prior width (0: no run factors)
    candidates: list               # terms the data may fit (the others are held for a stated reason)
    status: dict                   # term -> (status, reason)
    forced: tuple
    label: str
    source: str
    evaluator: object = None
    run_factors: np.ndarray = None  # the runs' log factors of the last fit kept
    notes: list = field(default_factory=list)

    def parameterisation(self, free, reference=None, *, fit=False) -> Parameterisation:
        """``free`` terms around ``reference`` (default the problem's); with ``fit``, the MAP fit's: the prior's
        rows and the run factors searched too, else the run factors of the last fit applied."""
        reference = self.reference if reference is None else reference
        searched = self.searched_runs if fit else 0
        return Parameterisation(self.start, tuple(self.terms), tuple(free), self.bound, reference,
                                origins(reference, self.terms, self.bound), self.label, self.source,
                                widths=tuple(self.widths[n] for n in free) if fit else (),
                                run_log_factors=() if searched else tuple(self.run_factors),
                                free_runs=searched, centred=self.proxy, run_spread=self.run_spread,
                                run_box=RUN_FACTOR_LIMIT * self.run_spread)

    @property
    def searched_runs(self) -> int:
        """How many run factors are searched: one per run for this server's own profile (its prior says how fast
        the server is, so a run's factor is told from the server's speed); for a proxy, which says nothing of the
        server's speed, only how the runs differ: all but one, their factors summing to 0 (none for one run)."""
        if self.run_spread <= 0:
            return 0
        return len(self.runs) - 1 if self.proxy else len(self.runs)

    @property
    def means(self) -> np.ndarray:
        """Bool per target residual: the mean targets'."""
        return np.concatenate([t.means for t in self.targets])

    @property
    def data_rows(self) -> int:
        return self.evaluator.size

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
            iterations: int = fit_search.LM_ITERATIONS) -> _Fit:
        """The MAP fit of the ``free`` terms and the runs' factors, from ``coef`` and the last run factors (and
        the start, and ``extra`` starting coefficients)."""
        param = self.parameterisation(free, fit=True)
        self.evaluator.use(param)
        low, high = param.limits()
        starting = [param.at(coef, self.run_factors), param.at(self.start.coefficients())] + \
            [param.at(c, self.run_factors) for c in extra]
        result = fit_search.multistart(self.evaluator, starting, low, high, samples=samples,
                                       local_searches=local_searches, seed=seed, h=FIT_STEP,
                                       tolerance=GOOD_ENOUGH, iterations=iterations)
        if result.z is None or result.z.size != param.size or not np.isfinite(result.cost):
            raise CalibrationError(f"calibrate: no model could be simulated within the budget "
                                   f"({self.evaluator.out_of_budget}); raise max_evaluations or budget_s")
        return _Fit(param.vector(result.z), param.run_factors(result.z, len(self.runs)), result.cost,
                    result.converged, result, param)

    def keep(self, fit: _Fit) -> _Fit:
        self.run_factors = fit.run_factors
        return fit

    def jacobian(self, names, coef: np.ndarray, *, runs: bool = False):
        """Central secants (+-IDENTIFY_STEP, log units) of the targets' residuals to each of ``names`` around
        ``coef`` (a term at 0 there: switched on at its nominal share of its bound), the run factors of the last
        fit applied; with ``runs``, to each run factor too (last columns).  Returns (Jacobian, residuals)."""
        around = self.parameterisation(names, reference=coef)
        if runs and self.searched_runs:
            around = dataclasses.replace(around, run_log_factors=(), free_runs=self.searched_runs)
        self.evaluator.use(around)
        low, high = around.limits()
        z = np.clip(np.append(np.zeros(len(names)), self.run_factors[:around.free_runs]), low, high)
        r0 = self.evaluator.residuals(z)
        jac = fit_search.jacobian(self.evaluator.residuals, z, r0, low, high, IDENTIFY_STEP, central=True)
        return jac[:self.data_rows], r0[:self.data_rows]

    def posterior_errors(self, param: Parameterisation, jac: np.ndarray, r: np.ndarray):
        """Standard errors (log units) of the MAP fit's free terms and of every run's factor (the Jacobian's last
        columns are the searched run factors): from the targets' Jacobian and the prior, widened by the residual
        where the fit misses the targets by more than their noise.  Returns (terms', runs')."""
        k = len(param.free)
        information = jac.T @ jac
        information[:k, :k] += np.diag([1 / w ** 2 if math.isfinite(w) else 0.0 for w in param.widths])
        runs = len(self.runs)
        to_runs = param.run_map(runs) if param.free_runs else np.zeros((runs, 0))
        if param.free_runs:
            information[k:, k:] += to_runs.T @ to_runs / self.run_spread ** 2
        inflation = math.sqrt(max(1.0, float(r @ r) / max(r.size - k, 1)))
        try:
            covariance = np.linalg.inv(information) * inflation ** 2
        except np.linalg.LinAlgError:
            return np.full(k, np.inf), np.full(runs, np.inf), None
        terms = np.sqrt(np.maximum(np.diag(covariance)[:k], 0.0))
        factors = np.sqrt(np.maximum(np.diag(to_runs @ covariance[k:, k:] @ to_runs.T), 0.0))
        return terms, factors, pd.DataFrame(covariance[:k, :k], index=list(param.free), columns=list(param.free))


def _prior_width(term, start: np.ndarray, proxy: bool) -> float:
    """The prior's width (log units) of a term: none for a term the start lacks or a proxy's CPU overhead (not
    evidence about this server); PROXY_PRIOR_WIDTH around a proxy's shape; OWN_PRIOR_WIDTH around this server's
    own profile."""
    if max(abs(start[s]) for s in term.slots) == 0 or (proxy and not term.step):
        return math.inf
    return PROXY_PRIOR_WIDTH if proxy else OWN_PRIOR_WIDTH


def _problem(start, runs, configs, targets, proxy, hold, forced, name, run_spread) -> _Problem:
    terms = model_terms(start, all(c.chunked_prefill for c in configs))
    bounds = data_bounds(runs, configs)
    reference = start.coefficients()
    if proxy:   # a proxy's CPU overheads are another server's software: held at 0 unless the run shows them
        for t in terms:
            if not t.step:
                reference[list(t.slots)] = 0.0
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
    if proxy:
        for t in terms:
            if not t.step and t.name not in hold and max(abs(start.coefficients()[s]) for s in t.slots) > 0:
                status[t.name] = ("held", status[t.name][1] or PROXY_OVERHEAD)
    label = name or f"{start.name} calibrated on {'+'.join(r.name for r in runs)}"
    source = f"calibrate({start.name}) on {', '.join(r.name for r in runs)}"
    widths = {t.name: _prior_width(t, start.coefficients(), proxy) for t in terms}
    return _Problem(start, runs, configs, targets, terms, proxy, reference, term_bound, widths, run_spread,
                    candidates, status, tuple(forced), label, source, run_factors=np.zeros(len(runs)))


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


def _amplify(problem: _Problem, coef: np.ndarray) -> None:
    """Each target's amplification at ``coef``: |d log target / d log step time| over every step-time term scaled
    together (a central secant over +-AMPLIFY_STEP); the targets' noise floors are multiplied by it (at least 1,
    :meth:`~workbench.study.fidelity.targets.RunTargets.amplified`) and the evaluator's cache is cleared."""
    steps = [t for t in problem.terms if t.step]
    together = dataclasses.replace(steps[0], name="all step-time terms", slots=tuple(s for t in steps for s in t.slots))
    scaled = Parameterisation(problem.start, (together,), (together.name,), {together.name: math.inf}, coef, coef)
    problem.evaluator.use(scaled)
    up, down = (problem.evaluator.residuals(np.array([g])) for g in (AMPLIFY_STEP, -AMPLIFY_STEP))
    sizes = np.cumsum([t.size for t in problem.targets])[:-1]
    amplified = []
    for target, r_up, r_down in zip(problem.targets, np.split(up[:problem.data_rows], sizes),
                                    np.split(down[:problem.data_rows], sizes)):
        n = len(target.table)
        slope = np.abs(r_up[:n] - r_down[:n]) * target.table["sigma"].to_numpy() / (2 * AMPLIFY_STEP)
        amplified.append(target.amplified(np.where(np.isfinite(slope), slope, 1.0)))
    problem.targets[:] = amplified
    problem.evaluator.targets = problem.targets
    problem.evaluator.cache.clear()


def _held(problem: _Problem, name: str, reason: str) -> tuple:
    if max(abs(problem.reference[s]) for s in problem.parameterisation([]).term(name).slots) == 0:
        where = "held at 0" + (f" ({PROXY_OVERHEAD})" if problem.status[name][1] == PROXY_OVERHEAD else "")
    elif problem.proxy:
        where = "held at the pre-fit (the proxy's value x the common factor)"
    else:
        where = "held at the start"
    return ("held", f"{where}: {reason}" if reason else where)


def _errors(jac: np.ndarray, r: np.ndarray, free: int) -> np.ndarray:
    """Standard errors (log units) of the free terms from the targets alone, widened by the residual where the
    fit misses the targets by more than their noise."""
    dof = max(r.size - free, 1)
    return fit_search.standard_errors(jac) * math.sqrt(max(1.0, float(r @ r) / dof))


def _stepwise(problem: _Problem, prefit: np.ndarray, samples: int, seed: int):
    """The MAP fit (module docstring, steps 3 and 4): returns (the last fit kept, its free terms, the Jacobian of the
    targets to the free terms and the searched run factors at the fit, or None)."""
    ev = problem.evaluator
    # A. every term the start has, free with its prior (and any term given in free=); but this server's own fixed
    # step costs only where the run's load stages pin them (their means, given the other terms)
    present = problem.present(prefit)
    free = present + [n for n in problem.forced if n in problem.candidates and n not in present]
    own_fixed = [n for n in present if problem.own_fixed_cost(n) and n not in problem.forced]
    if own_fixed:
        jac, r_prefit = problem.jacobian(present, prefit)
        errors = problem.fixed_cost_errors(present, jac, r_prefit)
        for n in own_fixed:
            error = errors[present.index(n)]
            if error > MAX_STD:
                free.remove(n)
                problem.status[n] = _held(problem, n, f"an isolated-step profile's fixed cost (what it measures best, "
                                                      f"at a batch of one); it moves only when the run's load stages "
                                                      f"pin it (their means pin it {_pinned_text(error)}, limit "
                                                      f"+-{MAX_STD:g}), and a run's own level is its run factor")
    for n in free:
        problem.status[n] = ("fitted", "forced (free)" if n in problem.forced else "")
    best = problem.keep(problem.fit(free, prefit, samples=samples, local_searches=LOCAL_SEARCHES, seed=seed))
    # B. every term the start lacks (no prior), in order: kept when a refit with it lowers the cost by ADD_MIN_GAIN
    others = sorted((n for n in problem.candidates if n not in present and n not in free),
                    key=lambda n: (problem.priority(n), problem.candidates.index(n)))
    for n in others:
        if ev.out_of_budget:
            problem.status[n] = _held(problem, n, "not tried: the evaluation budget was used up")
            continue
        # from the fit so far with the new term at its origin (switched on): at 0 a log multiplier has no slope
        switched = problem.parameterisation(free + [n])
        switched_on = switched.vector(np.append(switched.at(best.coef)[:-1], 0.0))
        try:
            trial = problem.fit(free + [n], switched_on, samples=0, local_searches=1, seed=seed, extra=(best.coef,),
                                iterations=TRIAL_ITERATIONS)
        except (fit_search.BudgetExhausted, CalibrationError):
            problem.status[n] = _held(problem, n, "not tried: the evaluation budget was used up")
            continue
        gain = best.cost - trial.cost
        if gain >= ADD_MIN_GAIN:
            free.append(n)
            best = problem.keep(trial)
            problem.status[n] = ("fitted", f"added: a refit with it lowered the cost by {gain:.3g}")
            log.debug("calibrate: %s added (cost %.4g)", n, best.cost)
        else:
            problem.status[n] = _held(problem, n, f"a refit with it lowered the cost by {max(gain, 0):.2g} only "
                                                  f"(needs {ADD_MIN_GAIN:g})")
    # C. at the fit: a term without a prior that the targets do not pin (+-MAX_STD, given the others and the run
    # factors) is dropped and the rest refitted; then which of the others the run pins, and which its prior holds
    jac_fit = None
    while free and not ev.out_of_budget:
        try:
            jac_fit, r_fit = problem.jacobian(free, best.coef, runs=True)
        except fit_search.BudgetExhausted:
            jac_fit = None
            break
        errors = _errors(jac_fit[:, :len(free)], r_fit, len(free))
        loose = [k for k in np.argsort(-errors) if errors[k] > MAX_STD and not math.isfinite(problem.widths[free[k]])
                 and free[k] not in problem.forced]
        if not loose or len(free) == 1:
            break
        k = int(loose[0])
        dropped = free[k]
        try:
            refit = problem.fit(free[:k] + free[k + 1:], best.coef, samples=0, local_searches=1, seed=seed)
        except (fit_search.BudgetExhausted, CalibrationError):
            problem.notes.append(f"{dropped} kept although the targets pin it to {fit_search.std_text(errors[k])} "
                                 "only: no budget left to refit without it")
            break
        best = problem.keep(refit)
        free.pop(k)
        jac_fit = None
        problem.status[dropped] = _held(problem, dropped, f"dropped at the fit: the targets pin it to "
                                                          f"{fit_search.std_text(errors[k])} only (limit +-{MAX_STD:g})")
        log.debug("calibrate: %s dropped at the fit (+-%.2g)", dropped, errors[k])
    if not best.converged and not ev.out_of_budget:
        # the last fit kept was a short refit (a term tried, or one dropped): finish it
        try:
            polished = problem.fit(free, best.coef, samples=0, local_searches=1, seed=seed)
            if polished.cost <= best.cost:
                best = problem.keep(polished)
                jac_fit = None
        except (fit_search.BudgetExhausted, CalibrationError):
            pass
        if jac_fit is None and not ev.out_of_budget:
            try:
                jac_fit, _ = problem.jacobian(free, best.coef, runs=True)
            except fit_search.BudgetExhausted:
                jac_fit = None
    problem.evaluator.use(best.param)
    if jac_fit is not None and jac_fit.shape[1] == best.param.size:
        _pinned(problem, best.param, jac_fit)
    else:
        jac_fit = None
    return best, free, jac_fit


def _pinned_text(error: float) -> str:
    return f"to {fit_search.std_text(error)} only" if np.isfinite(error) else "not at all"


def _pinned(problem: _Problem, param: Parameterisation, jac: np.ndarray) -> None:
    """Which free terms the run pins (:func:`~workbench.study.fidelity.search.select_identifiable` on the targets'
    Jacobian at the fit, the terms the start knows least first, the run factors free within their prior); a term
    with a prior that the run does not pin keeps status "prior": its value is the prior's (the start's, or a
    proxy's shape at the run's size), moved only as far as the targets ask."""
    free = list(param.free)
    k = len(free)
    names = free + [f"the run factor{'s' if param.free_runs > 1 else ''}"] * param.free_runs
    if param.free_runs:     # the run factors' prior: rows of their precision's square root
        to_runs = param.run_map(len(problem.runs))
        root = np.linalg.cholesky(to_runs.T @ to_runs).T / problem.run_spread
        jac = np.vstack([jac, np.hstack([np.zeros((param.free_runs, k)), root])])
    forced = tuple(range(k, k + param.free_runs)) + tuple(i for i, n in enumerate(free) if n in problem.forced)
    selection = fit_search.select_identifiable(jac, names, MAX_STD,
                                               priority=[problem.priority(n) for n in free] + [-1] * param.free_runs,
                                               forced=forced)
    for i, n in enumerate(free):
        if i in selection.chosen or not math.isfinite(problem.widths[n]):
            continue
        centre = "the pre-fit (the proxy's shape at the run's size)" if problem.proxy else "the start"
        problem.status[n] = ("prior", f"near {centre}, within its prior (+-{problem.widths[n]:g}): "
                                      f"{selection.reasons.get(i, 'the run does not pin it')}")


def calibrate(start, runs, cfg=None, *, stages=None, proxy=None, free=None, hold=None, run_spread=None,
              max_training_error: float = MAX_TRAINING_ERROR, max_evaluations: int | None = None,
              budget_s: float | None = None, samples: int | None = None, seed: int | None = None,
              name: str | None = None, max_iter=None, tol=None, prior_weight=None, damping=None):
    """Fit ``start`` to measured ``runs`` (ServingLogs; one run is taken as a list of one): the terms the runs
    identify are fitted, the others held (module docstring).  Returns the model with ``.fit_report``.

    ``cfg``: the serving setup for every run (default: each run's ``config``).  ``stages``: where each run's
    arrival rate changes (None: detected; False: one stage; a list of seconds for one run; a dict by run
    name).  ``proxy``: whether ``start`` describes another model or GPU (None: unless each run's setup names
    ``start`` as its profile).  ``free``/``hold``: term names to fit whatever the data say, or to keep at the
    start (:func:`workbench.study.fidelity.terms.model_terms`).  ``run_spread``: how much runs of one server
    differ (the standard deviation of a run's log step-time factor; default :data:`RUN_SPREAD`, 0: none, the
    model fits the training runs themselves).  ``max_training_error``: the largest |relative error| of a training
    run's mean E2E (simulated with its run factor) the fit may keep (else :class:`CalibrationError`).
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
    vllm_only = dict(stages=stages, proxy=proxy, free=free, hold=hold, run_spread=run_spread,
                     max_evaluations=max_evaluations,
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
    run_spread = checks.number(RUN_SPREAD if run_spread is None else run_spread, "run_spread", low=0, high=1,
                               hint="the standard deviation of a run's log step-time factor: 0.15 is about 15%")
    seed = checks.integer(0 if seed is None else seed, "seed", low=0)
    checks.instance(name, "name", (str, type(None)), expected="a text label, or None")
    t0 = time.monotonic()
    _check_units(start, runs)
    configs = _configs(runs, cfg)
    targets = [run_targets(run, b, seed=seed, block_size=c.block_size)
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
    problem = _problem(start, runs, configs, targets, _is_proxy(start, runs, proxy), hold, free, name, run_spread)
    problem.evaluator = fit_search.Evaluator(problem.parameterisation([]), runs, configs, targets, max_evaluations,
                                             t0 + budget_s)
    try:
        prefit = _prefit(problem)
        _amplify(problem, prefit)
        problem.evaluator.use(problem.parameterisation([], reference=start.coefficients()))
        r_start = problem.evaluator.residuals(np.zeros(0))       # the start as given (a proxy's overheads too)
        if problem.proxy:
            problem.reference = prefit          # a proxy's shape at the size the pre-fit found
        first = next(t for t in problem.terms if t.step)
        size = max(abs(start.coefficients()[s]) for s in first.slots)
        problem.notes.append(f"pre-fit: every step-time term x{max(abs(prefit[s]) for s in first.slots) / size:.3g}"
                             if size > 0 else "pre-fit: the start has no step-time term to scale")
        best, fitted, jac_fit = _stepwise(problem, prefit, samples, seed)
    except fit_search.BudgetExhausted:
        raise CalibrationError(f"calibrate: the budget ({problem.evaluator.out_of_budget}) ends before a first fit; "
                               "raise max_evaluations or budget_s") from None
    n = problem.data_rows
    report = _report(problem, best, fitted, jac_fit, float(r_start[:n] @ r_start[:n]), r_start[:n],
                     max_training_error, t0)
    model = dataclasses.replace(report.after, fit_report=report)
    report.after = model
    worst = report.training_e2e_error()
    missed = report.training_misses()
    if not missed.empty:
        row = missed
        bounds = report.training_error[report.training_error.metric == "e2e_s"].set_index("run")
        misses = ", ".join(f"{r} {e:+.1%} (bound {bounds.loc[r, 'bound']:.1%}"
                           + (f": {max_training_error:.0%} x its amplification {bounds.loc[r, 'amplification']:.2g}"
                              if bounds.loc[r, "amplification"] > 1 else "") + ")" for r, e in row.items())
        held = [t for t in report.held if t in problem.candidates]
        factors = report.run_factors.set_index("run")
        edge = [r for r in row.index if run_spread > 0 and abs(factors.loc[r, "spreads"]) >= RUN_FACTOR_LIMIT * 0.999]
        edge = "; ".join(f"{r} needed its step times x{factors.loc[r, 'factor']:.3g} the fitted server's, as far as "
                         f"runs of one server may differ ({RUN_FACTOR_LIMIT:g} run spreads of {run_spread:.0%})"
                         for r in edge)
        edge = f" ({edge})" if edge else ""
        raise CalibrationError(
            f"calibrate: the fitted model cannot reproduce its own training run(s): mean E2E off by {misses} "
            f"(max_training_error={max_training_error:.0%}){edge}; it is not returned. Try: the run's own config "
            f"(kv_blocks, max_num_seqs, max_num_batched_tokens, chunked_prefill, prefix_caching as the server had "
            f"them), freeing held terms (free={held}), a start closer to this server (a profile of this model and "
            f"GPU), or a larger budget (max_evaluations={max_evaluations}; {report.search['message']}). The "
            "report is on this error's .report", report, model)
    if len(runs) > 1 and run_spread > 0:
        logs = report.run_factors.set_index("run")["log_factor"]
        if logs.max() - logs.min() > RUNS_DISAGREE * math.sqrt(2) * run_spread:
            warnings.warn(f"calibrate: the training runs disagree: {logs.idxmax()}'s step times are "
                          f"{math.exp(logs.max() - logs.min()):.3g}x {logs.idxmin()}'s, more than runs of one server "
                          f"differ (run_spread={run_spread:g}: {RUNS_DISAGREE:g} standard deviations of a difference). "
                          "The model is their compromise (each run reproduced with its own factor: "
                          "fit_report.run_factors); check that the runs had one setup", RunsDisagreeWarning,
                          stacklevel=2)
    if not report.converged:
        warnings.warn(f"calibrate: the search stopped before it converged ({report.search['message']}); the fit "
                      f"reproduces the training runs' mean E2E within {worst:.1%}, but a larger max_evaluations or "
                      "budget_s may fit them better", CalibrationWarning, stacklevel=2)
    log.info("calibrate: %s", report.describe().replace("\n", "; "))
    return model


def _report(problem: _Problem, best: _Fit, free: list, jac_fit, cost_start: float, r_start,
            max_training_error: float, t0: float) -> FitReport:
    from workbench.sim.simulate import simulate

    evaluator = problem.evaluator
    param, result = best.param, best.result
    model = param.model(result.z)
    after = model.coefficients()
    start = problem.start.coefficients()
    r_all = evaluator.residuals(result.z)
    n = problem.data_rows
    r_fit = r_all[:n]
    runs = len(problem.runs)
    std, factor_std, covariance = (np.full(len(param.free), np.nan), np.full(runs, np.nan), None) \
        if jac_fit is None else problem.posterior_errors(param, jac_fit, r_fit)
    std_of = dict(zip(param.free, std))
    rows = []
    for t in problem.terms:
        state, reason = problem.status[t.name]
        slot = max(t.slots, key=lambda s: abs(start[s]) if start[s] else abs(after[s]))
        value = float(after[slot])
        free = state != "held"
        relative = std_of.get(t.name, np.nan) if free else np.nan
        width = problem.widths[t.name]
        rows.append({"term": t.name, "coefficients": t.coefficients, "what": t.what, "status": state,
                     "reason": reason, "start": float(start[slot]), "fitted": value, "std": relative,
                     "std_s": value * relative, "prior_width": width if free else np.nan,
                     "bound": problem.bound[t.name]})
    table = pd.DataFrame(rows)
    factors = param.run_factors(result.z, runs)
    spread = problem.run_spread
    run_factors = pd.DataFrame({"run": [r.name for r in problem.runs], "log_factor": factors,
                                "factor": np.exp(factors), "spreads": factors / spread if spread > 0 else 0.0,
                                "std": factor_std})
    target_rows, error_rows = [], []
    sizes = np.cumsum([t.size for t in problem.targets])[:-1]
    run_coefs = param.run_vectors(result.z, runs)
    for run, cfg, target, part_start, part_fit, coef in zip(problem.runs, problem.configs, problem.targets,
                                                            np.split(r_start, sizes), np.split(r_fit, sizes),
                                                            run_coefs):
        frame = target.table.copy()
        k = len(frame)
        frame["start"] = frame["measured"] * np.exp(part_start[:k] * frame["sigma"])
        frame["fitted"] = frame["measured"] * np.exp(part_fit[:k] * frame["sigma"])
        frame["error"] = frame["fitted"] / frame["measured"] - 1.0
        target_rows.append(frame)
        own = model_from_vector(problem.start, coef, problem.label, problem.source)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            simulated = simulate(run.trace, cfg, latency=own).requests
            server = simulated if coef is after or np.array_equal(coef, after) else \
                simulate(run.trace, cfg, latency=model).requests
        scored = target.scored
        for metric in METRICS:
            measured = run.measured[metric].to_numpy(dtype=np.float64)[scored]
            has = np.isfinite(measured)
            mean_measured = float(measured[has].mean()) if has.any() else np.nan
            errors = []
            for frame_of in (simulated, server):
                values = frame_of[metric].to_numpy(dtype=np.float64)[scored]
                ok = has & np.isfinite(values)
                mean_simulated = float(values[ok].mean()) if ok.any() else np.nan
                # a request the simulation did not serve: the fit does not reproduce the run
                errors.append((mean_simulated, mean_simulated / mean_measured - 1.0 if ok.sum() == has.sum()
                               else np.inf))
            amplification = max(1.0, target.amplification_of("e2e_s"))
            error_rows.append({"run": run.name, "metric": metric, "measured_mean": mean_measured,
                               "simulated_mean": errors[0][0], "mean_rel_error": errors[0][1],
                               "server_rel_error": errors[1][1], "amplification": amplification,
                               "bound": max_training_error * amplification})
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
    converged = bool(best.converged and not evaluator.out_of_budget) or \
        float(r_fit @ r_fit) <= GOOD_ENOUGH * r_fit.size
    return FitReport([r.name for r in problem.runs], problem.start, model, problem.proxy, table,
                     pd.concat(target_rows, ignore_index=True), _stage_table(problem.runs, problem.targets),
                     pd.DataFrame(error_rows), search, converged, cost_start, float(r_all @ r_all),
                     max_training_error, run_factors, spread, covariance, _batches(problem.runs), problem.notes)


def _batches(runs) -> dict:
    """The training runs' measured decode batch (p10, p50, p90) and median context per request, from their
    timelines alone (:func:`~workbench.study.fidelity.targets.measured_occupancy`)."""
    from workbench.study.fidelity.targets import measured_occupancy

    occupancy = pd.concat([measured_occupancy(r) for r in runs], ignore_index=True)
    if occupancy.empty:
        return None
    p10, p50, p90 = np.percentile(occupancy["batch"], [10, 50, 90])
    return {"p10": float(p10), "p50": float(p50), "p90": float(p90),
            "context": float(np.median(occupancy["context"] / occupancy["batch"]))}


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


__all__ = ["CalibrationError", "CalibrationWarning", "FitReport", "MAX_TRAINING_ERROR", "RUN_SPREAD",
           "RunsDisagreeWarning", "calibrate",
           "compare_to_measured", "cross_validate", "replay_run", "replay_table", "request_errors", "simulate_run"]
