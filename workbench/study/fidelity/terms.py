"""The terms of a linear step-time model that calibration can move, their scales and their bounds.

A term is one thing a step costs (the fixed cost of a decode step, a prefill step's cost per token, ...)
and sets one or more coefficients of a :class:`~workbench.sim.steptime.StepTimeModel` together (the
fixed cost of a decode step is ``decode_a`` and, with two batch regimes, ``decode_large_a``).  A term the
start model has (a coefficient > 0) moves by a *multiplier* of the start's value, searched as its log
(``value = start * exp(z)``): a start from another GPU that is 3x slower is ``z = log 3`` on every term,
and the two regimes keep their ratio.  A term the start does not have (0, e.g. a BLIS model's per-context
decode cost) is switched on at a small share of its bound and searched the same way.

Bounds come from the run itself, not from the start: each term alone cannot cost more than the measured
times it is part of (a decode step's fixed cost is at most the fastest requests' TPOT; a prefill's cost per
token at most ``TTFT / uncached prompt tokens`` of the requests with the least of it; see
:func:`data_bounds`).  So the search never visits a model slower than the measured server at the run's own
batch sizes in any one term, which is where a model that cannot sustain the run's load lives.  The bound
is a low quantile (``BOUND_QUANTILE``) of the per-request ratios times ``BOUND_SLACK``: measured times carry
noise, and a bound must not exclude the truth.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from workbench.sim.steptime import COEF_NAMES, StepTimeModel
from workbench.study.fidelity.targets import measured_occupancy, uncached_prompt_tokens

BOUND_QUANTILE = 0.02
BOUND_SLACK = 1.25
# a request's measured decode window also counts requests preempted meanwhile (they keep their first token and
# wait): the measured batch can be up to about twice the running one, so the per-request and per-context
# decode bounds take the median ratio with this factor instead of a low quantile
BATCH_BOUND_FACTOR = 2.5
MULTIPLIER_RANGE = (1e-3, 1e3)      # how far a multiplier may move from the start at most (then the data bound)
# plausibility caps of StepTimeModel (seconds): fixed, per token, per token^2, per context token, per request
_CAPS = {"fixed": 1.0, "token": 0.01, "token2": 1e-3, "context": 1e-3, "request": 0.1}


@dataclass(frozen=True)
class Term:
    """One cost of a step (or of a request outside the steps): the coefficients it sets (``slots``, indices into
    :data:`COEF_NAMES`), what it is, and whether it is GPU step time (``step``) or a CPU overhead."""

    name: str
    slots: tuple[int, ...]
    what: str
    step: bool
    kind: str     # which bound applies: fixed_prefill, fixed_decode, token, token2, context, request, overhead_*

    @property
    def coefficients(self) -> str:
        return ", ".join(COEF_NAMES[s] for s in self.slots)


_SLOT = {name: k for k, name in enumerate(COEF_NAMES)}


def _term(name, slots, what, step, kind) -> Term:
    return Term(name, tuple(_SLOT[s] for s in slots), what, step, kind)


def model_terms(start: StepTimeModel, chunked: bool) -> list[Term]:
    """The terms of ``start``: with chunked prefill (vLLM v1, where nearly every step mixes prefill and decodes
    and pays ``max(a_p, a_d)`` once) one fixed step cost; without (v0.2, prefill-only and decode-only steps) a
    fixed cost per kind of step."""
    large = start.decode_large is not None
    decode = lambda kind: (f"decode_{kind}", f"decode_large_{kind}") if large else (f"decode_{kind}",)  # noqa: E731
    if chunked:
        fixed = [_term("step_fixed", ("prefill_a",) + decode("a"), "fixed cost of a step (prefill and decode)",
                       True, "fixed_decode")]
    else:
        fixed = [_term("prefill_fixed", ("prefill_a",), "fixed cost of a prefill step", True, "fixed_prefill"),
                 _term("decode_fixed", decode("a"), "fixed cost of a decode step", True, "fixed_decode")]
    return fixed + [
        _term("prefill_token", ("prefill_b",), "prefill cost per prompt token computed", True, "token"),
        _term("prefill_attention", ("prefill_c",), "prefill cost per token x (prefix + token)", True, "token2"),
        _term("decode_context", decode("b"), "decode cost per context token", True, "context"),
        _term("decode_request", decode("c"), "decode cost per running request", True, "request"),
        _term("arrival_fixed", ("arrival_overhead_a",), "delay before a request joins the queue", False,
              "overhead_ttft"),
        _term("arrival_token", ("arrival_overhead_b",), "delay before joining, per prompt token", False,
              "overhead_token"),
        _term("token_overhead", ("token_overhead",), "added to every output token's reported time", False,
              "overhead_output"),
    ]


def _quantile(values: np.ndarray, q: float) -> float:
    values = values[np.isfinite(values) & (values > 0)]
    return float(np.quantile(values, q)) if values.size else math.inf


def data_bounds(runs, configs) -> dict[str, float]:
    """Upper bound (seconds per unit) of each kind of term, from the measured runs alone (module docstring):
    the smallest over the runs."""
    bounds: dict[str, float] = {}
    for run, cfg in zip(runs, configs):
        scored = run.scored_mask
        ttft = run.measured["ttft_s"].to_numpy(dtype=np.float64)[scored]
        prompt = np.asarray(run.trace.prompt_tokens, dtype=np.float64)[scored]
        uncached = uncached_prompt_tokens(run.trace, cfg.block_size)[scored].astype(np.float64)
        occupancy = measured_occupancy(run)
        tpot = occupancy["tpot_s"].to_numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            own = {
                "fixed_prefill": _quantile(ttft, BOUND_QUANTILE) * BOUND_SLACK,
                "fixed_decode": _quantile(tpot, BOUND_QUANTILE) * BOUND_SLACK,
                "token": _quantile(np.where(uncached > 0, ttft / uncached, np.nan), BOUND_QUANTILE) * BOUND_SLACK,
                "token2": _quantile(np.where(uncached > 0, ttft / uncached ** 2, np.nan), BOUND_QUANTILE)
                * BOUND_SLACK,
                "context": _quantile(tpot / occupancy["context"].to_numpy(), 0.5) * BATCH_BOUND_FACTOR,
                "request": _quantile(tpot / occupancy["batch"].to_numpy(), 0.5) * BATCH_BOUND_FACTOR,
                "overhead_ttft": _quantile(ttft, BOUND_QUANTILE) * BOUND_SLACK,
                "overhead_token": _quantile(ttft / prompt, BOUND_QUANTILE) * BOUND_SLACK,
                "overhead_output": min(_quantile(ttft, BOUND_QUANTILE), _quantile(tpot, BOUND_QUANTILE)) * BOUND_SLACK,
            }
        for kind, value in own.items():
            bounds[kind] = min(bounds.get(kind, math.inf), value)
    caps = {"fixed_prefill": _CAPS["fixed"], "fixed_decode": _CAPS["fixed"], "token": _CAPS["token"],
            "token2": _CAPS["token2"], "context": _CAPS["context"], "request": _CAPS["request"],
            "overhead_ttft": _CAPS["fixed"], "overhead_token": _CAPS["token"], "overhead_output": _CAPS["fixed"]}
    return {kind: min(value, caps[kind]) for kind, value in bounds.items()}


NOMINAL_SHARE = 1 / 25      # a term the start lacks is searched from this share of its data bound


RUN_FACTOR_BOX = math.log(3.0)   # a run's step-time factor is searched within 1/3 .. 3 (then judged, calibration)


@dataclass(frozen=True)
class Parameterisation:
    """How a vector ``z`` becomes the model of the server and of each training run.

    Free term ``k`` is ``origin_k * exp(z_k)`` (every coefficient it sets, in the ratios ``origin`` has them),
    every other term keeps its ``reference`` value.  ``origin`` is the reference where it is > 0, else
    :data:`NOMINAL_SHARE` of the term's data bound (a term the start lacks, switched on), so every free term is
    searched as a log multiplier: its steps and standard errors are relative to what it is.

    Runs of one server differ (:mod:`workbench.study.fidelity.calibration`, ``run_spread``): run ``j`` is
    simulated with every GPU step-time term of the server's model times ``exp(u_j)``, its *run factor*.  With
    ``free_runs`` the run factors are the last ``free_runs`` entries of ``z`` (searched too), else they are
    ``run_log_factors`` (empty: none, every run simulated with the server's model).

    :meth:`prior` gives the MAP fit's prior rows: ``z_k / widths[k]`` for a free term with a finite prior width
    (the start's value, or a proxy's shape at the run's size, is ``z = 0``), ``u_j / run_spread`` for a free run
    factor."""

    start: StepTimeModel
    terms: tuple[Term, ...]
    free: tuple[str, ...]
    bound: dict                 # term -> upper bound of its value (seconds per unit), from the data
    reference: np.ndarray       # the coefficients (layout COEF_NAMES) of the terms that are not free
    origin: np.ndarray          # the coefficients z = 0 gives the free terms
    name: str = "calibrated"
    source: str = ""
    widths: tuple = ()          # per free term: its prior's width (log units); inf or empty: no prior
    run_log_factors: tuple = ()  # per run, when the run factors are not free: the applied log factor
    free_runs: int = 0          # number of run factors searched (the last entries of z)
    centred: bool = False       # the searched factors are all runs' but the last, whose factor makes them sum to 0
    run_spread: float = math.inf  # the run factors' prior width (log units)
    run_box: float = RUN_FACTOR_BOX  # how far a searched run factor may go (log units; at most RUN_FACTOR_BOX)

    def term(self, name: str) -> Term:
        return next(t for t in self.terms if t.name == name)

    def value(self, coef: np.ndarray, name: str) -> float:
        """The term's size in ``coef``: its largest coefficient."""
        return max(abs(coef[s]) for s in self.term(name).slots)

    @property
    def size(self) -> int:
        return len(self.free) + self.free_runs

    def limits(self) -> tuple[np.ndarray, np.ndarray]:
        """Box bounds of ``z``: from MULTIPLIER_RANGE[0] x origin up to the data bound (at most MULTIPLIER_RANGE[1]
        x origin); a run factor within +-run_box."""
        low, high = [], []
        for name in self.free:
            size = self.value(self.origin, name)
            top = math.log(MULTIPLIER_RANGE[1])
            if size > 0 and math.isfinite(self.bound[name]):
                top = min(top, math.log(self.bound[name] / size))
            low.append(min(math.log(MULTIPLIER_RANGE[0]), top - 1.0))
            high.append(top)
        box = min(RUN_FACTOR_BOX, self.run_box)
        low += [-box] * self.free_runs
        high += [box] * self.free_runs
        return np.array(low), np.array(high)

    def vector(self, z: np.ndarray) -> np.ndarray:
        """The coefficient vector (layout :data:`COEF_NAMES`) of the server's model at ``z``."""
        coef = self.reference.copy()
        for name, value in zip(self.free, z):
            factor = math.exp(value)
            for s in self.term(name).slots:
                coef[s] = self.origin[s] * factor
        return coef

    def run_map(self, runs: int) -> np.ndarray:
        """The matrix taking the searched run factors (the tail of ``z``) to every run's log factor."""
        if not self.centred:
            return np.eye(runs, self.free_runs)
        return np.vstack([np.eye(self.free_runs), -np.ones((1, self.free_runs))])

    def run_factors(self, z: np.ndarray, runs: int) -> np.ndarray:
        """The log run factor of each of ``runs`` runs at ``z`` (zeros when there are none)."""
        if self.free_runs:
            return self.run_map(runs) @ np.asarray(z[len(self.free):], dtype=np.float64)
        if self.centred and runs == 1:
            return np.zeros(1)
        if len(self.run_log_factors):
            return np.asarray(self.run_log_factors, dtype=np.float64)
        return np.zeros(runs)

    def run_vectors(self, z: np.ndarray, runs: int) -> list[np.ndarray]:
        """Per run: the coefficients it is simulated with (the server's, step-time terms x its run factor)."""
        coef = self.vector(z)
        return [scale_steps(coef, self.terms, u) for u in self.run_factors(z, runs)]

    def model(self, z: np.ndarray) -> StepTimeModel:
        return model_from_vector(self.start, self.vector(z), self.name, self.source)

    def prior(self, z: np.ndarray) -> np.ndarray:
        """The prior's residuals at ``z`` (class docstring); empty without a prior."""
        rows = [value / width for value, width in zip(z, self.widths) if math.isfinite(width)]
        if self.free_runs and math.isfinite(self.run_spread) and self.run_spread > 0:
            tail = np.asarray(z[len(self.free):], dtype=np.float64)
            rows += list(self.run_map(self.free_runs + self.centred) @ tail / self.run_spread)
        return np.asarray(rows, dtype=np.float64)

    def at(self, coef: np.ndarray, run_log_factors=None) -> np.ndarray:
        """``z`` giving the free terms their values in ``coef`` (a term at 0 there: its lowest) and the run factors
        ``run_log_factors`` (default 0), inside the box."""
        low, high = self.limits()
        z = []
        for name in self.free:
            size, here = self.value(self.origin, name), self.value(coef, name)
            z.append(math.log(here / size) if here > 0 and size > 0 else -math.inf)
        if self.free_runs:
            z += list(np.zeros(self.free_runs) if run_log_factors is None else run_log_factors[:self.free_runs])
        return np.clip(np.array(z, dtype=np.float64), low, high)


def scale_steps(coef: np.ndarray, terms, log_factor: float) -> np.ndarray:
    """``coef`` with every GPU step-time term's coefficients times ``exp(log_factor)`` (the overheads kept)."""
    if log_factor == 0:
        return coef
    out = coef.copy()
    for t in terms:
        if t.step:
            for s in t.slots:
                out[s] = coef[s] * math.exp(log_factor)
    return out


def origins(reference: np.ndarray, terms, bound: dict) -> np.ndarray:
    """Where each term's search starts (:class:`Parameterisation`): the reference, or a nominal share of the
    term's bound for a term at 0 there."""
    origin = reference.copy()
    for t in terms:
        if max(abs(reference[s]) for s in t.slots) == 0 and math.isfinite(bound[t.name]) and bound[t.name] > 0:
            for s in t.slots:
                origin[s] = bound[t.name] * NOMINAL_SHARE
    return origin


def model_from_vector(start: StepTimeModel, coef: np.ndarray, name: str, source: str) -> StepTimeModel:
    """``start`` with the coefficients of ``coef`` (layout :data:`COEF_NAMES`; the regime boundary kept)."""
    large = tuple(coef[6:9]) if start.decode_large is not None else None
    return dataclasses.replace(start, prefill=tuple(coef[0:3]), decode=tuple(coef[3:6]), decode_large=large,
                               arrival_overhead_s=tuple(coef[10:12]), token_overhead_s=float(coef[12]), name=name,
                               source=source, fit_report=None)


__all__ = ["BOUND_QUANTILE", "BOUND_SLACK", "NOMINAL_SHARE", "Parameterisation", "RUN_FACTOR_BOX", "Term",
           "data_bounds", "model_from_vector", "model_terms", "origins", "scale_steps"]
