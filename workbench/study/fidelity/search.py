"""The search behind ``calibrate``: simulate under a budget, measure what each term does, fit from several starts.

* :class:`Evaluator` simulates the training runs with the model of a parameter vector and returns the
  targets' residuals (:mod:`workbench.study.fidelity.targets`), counting simulations against a budget
  (``max_evaluations``, and a wall-clock deadline as a safety); a repeated vector is not simulated again.
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
* :func:`multistart`: bounded least squares (``scipy.optimize.least_squares``, trust-region reflective,
  with the Jacobian above) from the best few of several starting points: the start model, the pre-fit and a
  Latin hypercube within a factor 8 of the pre-fit (``scipy.stats.qmc``, seeded), so a fit found from one
  starting point is checked against others; each local search stops on its step size and is restarted from
  its own result while that still lowers the cost.  Everything is deterministic given the seed while the evaluation budget, not the
  clock, is what stops it.
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

    param: object               # a Parameterisation: z -> coefficients -> StepTimeModel
    runs: list
    configs: list
    targets: list
    max_evaluations: int
    deadline: float             # time.monotonic() after which no simulation starts
    evaluations: int = 0
    cache: dict = field(default_factory=dict)
    best: tuple = (math.inf, None)
    out_of_budget: str = ""

    @property
    def size(self) -> int:
        return int(sum(t.size for t in self.targets))

    def residuals(self, z) -> np.ndarray:
        from workbench.sim.simulate import simulate

        z = np.asarray(z, dtype=np.float64)
        coef = self.param.vector(z)
        key = coef.round(15).tobytes()         # by the model, so another parameterisation of it is not rerun
        if key in self.cache:
            r = self.cache[key]
            self._remember(z, r)
            return r
        if self.evaluations >= self.max_evaluations:
            self.out_of_budget = f"the evaluation budget ({self.max_evaluations} simulations) is used up"
            raise BudgetExhausted(self.out_of_budget)
        if time.monotonic() > self.deadline:
            self.out_of_budget = "the time budget is used up"
            raise BudgetExhausted(self.out_of_budget)
        self.evaluations += 1
        try:
            model = self.param.model(z)
            parts = []
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for run, cfg, target in zip(self.runs, self.configs, self.targets):
                    parts.append(target.residuals(simulate(run.trace, cfg, latency=model).requests))
            r = np.concatenate(parts)
        except ValueError as exc:     # a model the engine refuses (e.g. a zero-time step): far from the data
            log.debug("calibration: z=%s gives no usable model (%s)", z, exc)
            r = np.full(self.size, INVALID_RESIDUAL)
        self.cache[key] = r
        self._remember(z, r)
        return r

    def _remember(self, z: np.ndarray, r: np.ndarray) -> None:
        cost = float(r @ r)
        if cost < self.best[0]:
            self.best = (cost, z.copy())

    def use(self, param) -> None:
        """Evaluate ``param``'s vectors from now on (the best so far is forgotten: it was in another's units)."""
        self.param = param
        self.best = (math.inf, None)


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


def standard_errors(jac: np.ndarray) -> np.ndarray:
    """Standard errors of the parameters of a Jacobian in noise units: sqrt(diag((J^T J)^-1)); inf where the
    information is singular."""
    information = jac.T @ jac
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
RESTART_GAIN = 0.01             # a local search is restarted from its own result while it lowers the cost this much


def _local(evaluator: Evaluator, z0: np.ndarray, low: np.ndarray, high: np.ndarray, h: float, max_restarts: int):
    """Bounded least squares from ``z0``, restarted from its own result (a fresh trust region) while that lowers
    the cost by RESTART_GAIN: a schedule's jumps can shrink the trust region until a step barely moves, which
    is not a minimum.  It stops on the step size (``xtol``), not on a small change of the cost."""
    from scipy.optimize import least_squares

    z, cost, status = np.asarray(z0, dtype=np.float64), math.inf, 0
    for _ in range(max_restarts + 1):
        fit = least_squares(evaluator.residuals, z, bounds=(low, high) if low.size else (-np.inf, np.inf),
                            jac=lambda x: jacobian(evaluator.residuals, x, evaluator.residuals(x), low, high, h),
                            method="trf", x_scale=1.0, ftol=1e-10, xtol=1e-3, gtol=1e-10, max_nfev=25)
        improved = fit.cost * 2 < cost * (1 - RESTART_GAIN)
        z, cost, status = fit.x, min(cost, fit.cost * 2), int(fit.status)
        if not improved:
            break
    return z, status


def multistart(evaluator: Evaluator, candidates: list, low: np.ndarray, high: np.ndarray, *, samples: int,
               local_searches: int, seed: int, h: float, tolerance: float, restarts: int = 2) -> SearchResult:
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
    local, converged, message = [], False, ""
    for index, (cost0, z0) in enumerate(unique[:local_searches]):
        before = evaluator.evaluations
        try:
            _, status = _local(evaluator, z0, low, high, h, max_restarts=restarts)
            done = status > 0
            message = {1: "converged (gradient)", 2: "converged (cost)", 3: "converged (step size)",
                       4: "converged (gradient and step size)", 0: "a local search used its evaluations"}.get(
                           status, f"local search status {status}")
        except BudgetExhausted as exc:
            status, done, message = -2, False, str(exc)
        local.append({"start": index, "start_cost": cost0, "cost": evaluator.best[0], "status": status,
                      "converged": done, "evaluations": evaluator.evaluations - before})
        converged = converged or done
        if status == -2 or evaluator.best[0] <= good_enough:
            break
    cost, z = evaluator.best
    return SearchResult(np.asarray(z), cost, converged, message, scored, local)


__all__ = ["BudgetExhausted", "Evaluator", "SearchResult", "Selection", "jacobian", "multistart",
           "select_identifiable", "standard_errors", "std_text"]
