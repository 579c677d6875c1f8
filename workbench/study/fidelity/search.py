"""The search behind ``calibrate``: simulate under a budget, measure what each term does, fit from several starts.

* :class:`Evaluator` simulates the training runs with the model of a parameter vector (each run with its own
  run factor) and returns the targets' residuals (:mod:`workbench.study.fidelity.targets`), then the prior's
  rows, counting simulations against a budget (``max_evaluations``, and a wall-clock deadline as a safety); a
  repeated model is not simulated again.
* :func:`jacobian`: finite differences of the residuals, with a step of ``h`` in the search's units (a log
  multiplier: ``h = 0.1`` is 10%), large on purpose: a queueing schedule is piecewise in the coefficients
  (a small change reorders admissions), so a tiny step measures a jump, not a slope.  What a term can be
  told apart from is measured by central secants over +-30% (the identifiability limit itself): with 10%
  steps the schedule's jumps make two terms that act alike look different.
* :func:`select_identifiable`: which terms the targets can pin.  With residuals in units of their noise, the
  Gauss-Newton covariance of the free terms is ``(J^T J)^-1``; terms are taken in order of a priority (which
  of two terms with the same effect should move: the one the start knows least) and then of their effect
  (the norm of their Jacobian column), each kept if, with it and those kept before free together, every
  kept term's standard error stays within ``max_std`` (a log multiplier's 0.3 is +-30%).  A term dropped
  this way has too little effect on what was measured, or the same effect as a term kept before it (two
  columns nearly parallel: a fixed cost and a per-request cost at one batch size).  This is the
  practical-identifiability test of the Fisher information (the profile likelihood's quadratic
  approximation), applied greedily like a column-pivoted QR.
* :func:`multistart`: bounded least squares by Levenberg-Marquardt (:func:`_local`: forward-difference
  Jacobians with the step above, each step clipped to the box and kept only if it lowers the cost; scipy's
  trust-region method sizes its first step by ``|z0|`` and barely leaves a start at the reference, ``z = 0``)
  from the best few of several starting points: the start model, the pre-fit and a Latin hypercube within a
  factor 8 of the pre-fit (``scipy.stats.qmc``, seeded), so a fit found from one starting point is checked
  against others.  The local searches that end within ``EQUALLY_GOOD`` (1) of the best cost fit the data
  equally well (a difference of 1 in a chi-square is one standard deviation of one parameter): their mean is
  returned when it fits as well, so where a schedule's jumps leave local minima along a direction the data
  barely pin, the answer does not depend on which one a search stopped in.  Everything is deterministic given
  the seed while the evaluation budget, not the clock, is what stops it.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)

INVALID_RESIDUAL = 1e3      # a parameter vector whose model cannot be built or simulated


class BudgetExhausted(Exception):
    """The evaluation budget (or the wall-clock deadline) is used up."""


@dataclass
class Evaluator:
    """Residuals of the training runs simulated with the model of ``z`` (see the module docstring)."""

    param: object               # a Parameterisation: z -> each run's coefficients, and the prior
    runs: list
    configs: list
    targets: list
    max_evaluations: int
    deadline: float             # time.monotonic() after which no simulation starts
    evaluations: int = 0
    cache: dict = field(default_factory=dict)
    best: tuple = (math.inf, None)
    since_mark: tuple = (math.inf, None)    # the best since the last mark(): one local search's
    out_of_budget: str = ""

    @property
    def size(self) -> int:
        """Residuals of the targets (the prior's rows follow them)."""
        return int(sum(t.size for t in self.targets))

    def residuals(self, z) -> np.ndarray:
        """The targets' residuals of every run (each simulated with its own model: the server's times its run
        factor, :class:`~workbench.study.fidelity.terms.Parameterisation`), then the prior's rows."""
        from workbench.sim.simulate import simulate
        from workbench.study.fidelity.terms import model_from_vector

        z = np.asarray(z, dtype=np.float64)
        coefs = self.param.run_vectors(z, len(self.runs))
        key = np.concatenate(coefs).round(15).tobytes()   # by the models, so another parameterisation is not rerun
        if key in self.cache:
            r = self.cache[key]
        else:
            if self.evaluations >= self.max_evaluations:
                self.out_of_budget = f"the evaluation budget ({self.max_evaluations} simulations) is used up"
                raise BudgetExhausted(self.out_of_budget)
            if time.monotonic() > self.deadline:
                self.out_of_budget = "the time budget is used up"
                raise BudgetExhausted(self.out_of_budget)
            self.evaluations += 1
            try:
                parts = []
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    for run, cfg, target, coef in zip(self.runs, self.configs, self.targets, coefs):
                        model = model_from_vector(self.param.start, coef, self.param.name, self.param.source)
                        parts.append(target.residuals(simulate(run.trace, cfg, latency=model).requests))
                r = np.concatenate(parts)
            except ValueError as exc:     # a model the engine refuses (e.g. a zero-time step): far from the data
                log.debug("calibration: z=%s gives no usable model (%s)", z, exc)
                r = np.full(self.size, INVALID_RESIDUAL)
            self.cache[key] = r
        r = np.concatenate([r, self.param.prior(z)])
        self._remember(z, r)
        return r

    def _remember(self, z: np.ndarray, r: np.ndarray) -> None:
        cost = float(r @ r)
        if cost < self.best[0]:
            self.best = (cost, z.copy())
        if cost < self.since_mark[0]:
            self.since_mark = (cost, z.copy())

    def mark(self) -> None:
        """Start tracking the best point anew (:attr:`since_mark`)."""
        self.since_mark = (math.inf, None)

    def use(self, param) -> None:
        """Evaluate ``param``'s vectors from now on (the best so far is forgotten: it was in another's units)."""
        self.param = param
        self.best = (math.inf, None)
        self.since_mark = (math.inf, None)


def jacobian(evaluate, z: np.ndarray, r0: np.ndarray, low: np.ndarray, high: np.ndarray, h: float, *,
             central: bool = False) -> np.ndarray:
    """Finite differences of ``evaluate`` at ``z``: forward steps of ``h`` (backwards where the box ends), or
    ``central`` secants over ``[z - h, z + h]`` cut to the box."""
    out = np.empty((r0.size, z.size))
    for k in range(z.size):
        if central:
            up, down = min(z[k] + h, high[k]), max(z[k] - h, low[k])
        else:
            up, down = (z[k] + h, z[k]) if z[k] + h <= high[k] else (z[k], max(z[k] - h, low[k]))
        if up <= down:
            out[:, k] = 0.0
            continue
        values = []
        for point in (up, down):
            if point == z[k]:
                values.append(r0)
            else:
                moved = z.copy()
                moved[k] = point
                values.append(evaluate(moved))
        out[:, k] = (values[0] - values[1]) / (up - down)
    return out


def standard_errors(jac: np.ndarray, prior_precision=None) -> np.ndarray:
    """Standard errors of the parameters of a Jacobian in noise units: sqrt(diag((J^T J + P)^-1)), ``P`` the
    diagonal of a prior's precisions (1 / width^2; default none); inf where the information is singular."""
    information = jac.T @ jac
    if prior_precision is not None:
        information = information + np.diag(np.asarray(prior_precision, dtype=np.float64))
    try:
        covariance = np.linalg.inv(information)
    except np.linalg.LinAlgError:
        return np.full(jac.shape[1], np.inf)
    diagonal = np.diag(covariance)
    if not np.all(np.isfinite(diagonal)) or np.any(diagonal < 0):
        return np.full(jac.shape[1], np.inf)
    return np.sqrt(diagonal)


@dataclass(frozen=True)
class Selection:
    chosen: list            # indices of the identifiable terms, in the order they were taken
    reasons: dict           # index -> why not chosen
    partner: dict           # index -> index of the chosen term it is most alike (by Jacobian column), or None
    effect: np.ndarray      # per term: the norm of its Jacobian column (noise units per unit of z)


def select_identifiable(jac: np.ndarray, names: list, max_std: float, *, priority=None, forced: tuple = (),
                        exclude: tuple = ()) -> Selection:
    """Greedy selection of identifiable terms (module docstring): ``forced`` indices first, then by ``priority``
    (lower first: which of two terms with the same effect should move), then by effect; ``exclude``: indices
    not to take (dropped at an earlier fit)."""
    effect = np.linalg.norm(jac, axis=0)
    priority = np.zeros(len(names)) if priority is None else np.asarray(priority, dtype=np.float64)
    order = list(forced) + [int(k) for k in np.lexsort((-effect, priority)) if k not in forced]
    chosen, reasons, partner = [], {}, {}
    unit = lambda k: jac[:, k] / effect[k] if effect[k] > 0 else jac[:, k]  # noqa: E731
    for k in order:
        if k in forced:
            chosen.append(k)
            continue
        if k in exclude:
            reasons[k] = "fitted in an earlier round, it came out at too little to be pinned: dropped"
            partner[k] = None
            continue
        alone = 1.0 / effect[k] if effect[k] > 0 else math.inf
        if alone > max_std:
            reasons[k] = (f"too little effect: alone, the targets would pin it to {std_text(alone)} only "
                          f"(limit +-{max_std:g})")
            partner[k] = None
            continue
        trial = chosen + [k]
        errors = standard_errors(jac[:, trial])
        if np.all(errors <= max_std):
            chosen.append(k)
            continue
        similarity = [abs(float(unit(k) @ unit(j))) for j in chosen]
        closest = chosen[int(np.argmax(similarity))]
        worst = int(np.argmax(errors))
        reasons[k] = (f"not separable from {names[closest]} (their effects on the targets are "
                      f"{max(similarity):.0%} alike): with both free, {names[trial[worst]]} would be pinned to "
                      f"{std_text(errors[worst])} only (limit +-{max_std:g})")
        partner[k] = closest
    return Selection(chosen, reasons, partner, effect)


def std_text(value: float) -> str:
    """A standard error (log units) as text: +-0.42, or nothing when the information is singular."""
    return "nothing" if not np.isfinite(value) else f"+-{value:.2g}"


@dataclass
class SearchResult:
    z: np.ndarray
    cost: float
    converged: bool
    message: str
    starts: list            # (z0, cost0) of every starting point evaluated, best first
    local: list             # per local search: start index, cost, status, evaluations


SAMPLE_SPAN = math.log(8.0)    # starting points are sampled within a factor 8 of the first candidate, each way


LM_ITERATIONS = 15          # Jacobians a local search computes at most
LM_DAMPING = (1e-2, 1e-6, 1e4)   # Levenberg-Marquardt damping: first, smallest, largest before it gives up
LM_MIN_GAIN = 1e-3          # a local search stops when an iteration lowers the cost by less than this (relative)
LM_MIN_STEP = 1e-3          # ... or when its step is this small (log units: 0.1%)


def _local(evaluator: Evaluator, z0: np.ndarray, low: np.ndarray, high: np.ndarray, h: float,
           max_iterations: int = LM_ITERATIONS):
    """Bounded Levenberg-Marquardt from ``z0`` (steps clipped to the box, each accepted only if it lowers the
    cost): the damping, not the size of ``z0``, sets the first step, so a search from the reference (``z = 0``)
    moves as freely as one from elsewhere (a trust region sized by ``|z0|``, scipy's TRF, barely leaves it).
    Returns (z, status): 2 when an iteration gains less than LM_MIN_GAIN, 3 when the step is below LM_MIN_STEP
    or no damping finds a lower cost, 0 when it used its iterations."""
    z = np.clip(np.asarray(z0, dtype=np.float64), low, high)
    if z.size == 0:                 # every term held: nothing to search
        return z, 2
    r = evaluator.residuals(z)
    cost = float(r @ r)
    damping, smallest, largest = LM_DAMPING
    for _ in range(max_iterations):
        jac = jacobian(evaluator.residuals, z, r, low, high, h)
        gradient, normal = jac.T @ r, jac.T @ jac
        scale = np.diag(normal) + 1e-12
        while True:
            try:
                step = np.linalg.solve(normal + damping * np.diag(scale), -gradient)
            except np.linalg.LinAlgError:
                step = -gradient / (damping * scale)
            trial = np.clip(z + step, low, high)
            if np.max(np.abs(trial - z)) < LM_MIN_STEP:
                return z, 3
            r_trial = evaluator.residuals(trial)
            trial_cost = float(r_trial @ r_trial)
            if trial_cost < cost:
                break
            damping *= 10
            if damping > largest:
                return z, 3
        gain = cost - trial_cost
        z, r, cost = trial, r_trial, trial_cost
        damping = max(damping / 10, smallest)
        if gain < LM_MIN_GAIN * max(cost, 1.0):
            return z, 2
    return z, 0


def multistart(evaluator: Evaluator, candidates: list, low: np.ndarray, high: np.ndarray, *, samples: int,
               local_searches: int, seed: int, h: float, tolerance: float,
               iterations: int = LM_ITERATIONS) -> SearchResult:
    """Bounded least squares from the ``local_searches`` best of ``candidates`` and ``samples`` Latin-hypercube
    points within a factor 8 of the first candidate (module docstring).  Stops early when a fit is within
    ``tolerance`` of the noise (cost below the number of targets times tolerance)."""
    from scipy.stats import qmc

    points = [np.clip(np.asarray(c, dtype=np.float64), low, high) for c in candidates]
    if samples > 0 and low.size:
        centre = points[0]
        near_low, near_high = np.maximum(low, centre - SAMPLE_SPAN), np.minimum(high, centre + SAMPLE_SPAN)
        if np.all(near_high > near_low):
            sampler = qmc.LatinHypercube(d=low.size, seed=np.random.default_rng(seed))
            points += list(qmc.scale(sampler.random(samples), near_low, near_high))
    scored = []
    for p in points:
        try:
            r = evaluator.residuals(p)
        except BudgetExhausted:
            break
        scored.append((float(r @ r), p))
    scored.sort(key=lambda item: item[0])
    unique = []
    for cost, p in scored:
        if not any(np.allclose(p, q, atol=1e-6) for _, q in unique):
            unique.append((cost, p))
    good_enough = evaluator.size * tolerance
    local, converged, message, ends = [], False, "", []
    for index, (cost0, z0) in enumerate(unique[:local_searches]):
        before = evaluator.evaluations
        evaluator.mark()
        try:
            _, status = _local(evaluator, z0, low, high, h, iterations)
            done = status > 0
            message = {2: "converged (cost)", 3: "converged (step size)",
                       0: "a local search used its iterations"}.get(status, f"local search status {status}")
        except BudgetExhausted as exc:
            status, done, message = -2, False, str(exc)
        if evaluator.since_mark[1] is not None:
            ends.append(evaluator.since_mark)
        local.append({"start": index, "start_cost": cost0, "cost": evaluator.since_mark[0], "status": status,
                      "converged": done, "evaluations": evaluator.evaluations - before})
        converged = converged or done
        if status == -2 or evaluator.best[0] <= good_enough:
            break
    cost, z = evaluator.best
    z, cost = _equally_good(evaluator, ends, z, cost)
    return SearchResult(np.asarray(z), cost, converged, message, scored, local)


EQUALLY_GOOD = 1.0      # local searches ending within this much cost of the best fit the data equally well


def _equally_good(evaluator: Evaluator, ends: list, z: np.ndarray, cost: float) -> tuple:
    """The mean of the local searches' ends whose cost is within EQUALLY_GOOD of the best (a difference of 1 in
    the cost, chi-square, is one standard deviation of one parameter), when it fits as well; else the best.  A
    schedule's jumps leave local minima along a direction the data barely pin, and which of them a search stops in
    is chance: their mean does not depend on it."""
    near = [e for c, e in ends if c <= cost + EQUALLY_GOOD]
    if len(near) < 2 or all(np.allclose(e, near[0], atol=1e-3) for e in near):
        return z, cost
    mean = np.mean(near, axis=0)
    try:
        r = evaluator.residuals(mean)
    except BudgetExhausted:
        return z, cost
    mean_cost = float(r @ r)
    return (mean, mean_cost) if mean_cost <= cost + EQUALLY_GOOD else (z, cost)


__all__ = ["BudgetExhausted", "Evaluator", "SearchResult", "Selection", "jacobian", "multistart",
           "select_identifiable", "standard_errors", "std_text"]
