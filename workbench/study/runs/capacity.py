"""Capacity: the largest load a configuration sustains within its SLA.

Replaying one trace at one speed only says whether the pool keeps up at that
load; once it does, more GPUs or more bins change nothing.  ``capacity``
answers the question a researcher asks instead: by how much can the arrival
rate of this trace grow (or must it shrink) before the SLA breaks?  It
replays the *same* trace compressed or stretched in time (arrivals divided by
a scaling factor ``s``: ``s = 2`` doubles the rate, the request mix and the
burst pattern stay the same) and searches ``s``.

**The answer is a point of a fixed grid.**  Scalings are taken on the
geometric grid ``s_k = start x (1 + resolution)^k`` (k an integer; ``start``,
normally 1, is the replay at the trace's own rate): the capacity is the grid
point ``s_k`` at which the criterion holds while at ``s_{k+1}`` it fails, both
probed.  Where attainment falls monotonically with load there is exactly one
such ``k``, so the answer does not depend on where the search started, on a
hint, or on the order in which a sweep ran its tests: two searches of the
same configuration give the same number, and the true crossing lies within
``resolution`` above it.  (On a short trace the search may stop one or a few
steps wide, where the attainment target cannot resolve the difference; see
below.  A sweep test's id includes where its search starts, so even then a
result never depends on the order tests ran.)

Two ways to find ``k`` (``method``):

* ``"bracket"`` (the default for every scheduler whose attainment can only
  fall as load rises): start at the replay (``start_summary``, free when a
  sweep already ran it) and at ``hint_rps`` when the caller knows roughly
  where the answer is (a sweep passes the previous GPU count's capacity
  scaled by the GPU ratio: capacity grows about linearly with GPUs), step
  outwards with doubling steps until one probe passes and one fails, then
  narrow by interpolating the criterion's value between the two (regula
  falsi with the Illinois safeguard: a side that moves twice in a row is
  followed by a bisection) until the two are neighbouring grid points, or
  until the share meeting the SLA at the two differs by less than its
  sampling error on this many requests, ``sqrt(t (1 - t) / n)``: the precision
  the attainment target can resolve (then ``scaling_above / scaling`` says how
  wide the bracket was; on 1M requests that error, 0.0003 at 0.9, is below
  what one grid step changes, so the grid decides).  With a hint within a few
  percent this takes 3-5 simulations instead of ~20.
* ``"scan"``: the exhaustive search: probe a coarse geometric grid
  ``start x scan_factor^j`` over the whole of ``scale_bounds``, take the
  highest passing point whose next point fails and bisect between them until
  they are within ``resolution``.  It is the default (``"auto"``) for
  schedulers whose batches wait to fill (``multi_bin_fixed``: light load leaves
  requests waiting for companions, so attainment *rises* with load before it
  falls, and a search that starts at a failing light load and only steps down
  would never find the passing region).  Its answer is the last passing
  bisection point (within ``resolution`` of the grid answer; the tests check
  the two agree).

Before searching, the *attainable share* is computed: the requests that
would meet the SLA in the most favourable batch the scheduler can give them
on an idle GPU (alone for the up-to and dynamic rules; in a full batch of
``batch_size`` for ``multi_bin_fixed``, which never serves a request alone
except in a bin's last partial batch, allowed for).  A target above it is
refused at once (no load can reach it).
Criteria:

* ``"attainment"`` (the default on a latency grid, ``latency="seed-grid"``):
  at least ``attainment`` of the offered requests
  finish within ``d_sla_s`` of their arrival (rejected requests count as
  missed), i.e. ``1 - sla_violation_rate >= attainment``;
* ``"p99_latency"``: the 99th percentile latency of completed requests is at
  most ``d_sla_s`` and nothing is rejected;
* ``"slo"`` (the default with a :class:`StepTimeModel`, ``latency=None``'s
  default profile included; every scheduler timed by one: continuous
  ones, and static ones in step mode): at least ``attainment`` of the offered
  requests meet both the TTFT limit ``ttft_s`` and the TPOT limit ``tpot_s``
  (default: the config's ``ttft_sla_s`` / ``tpot_sla_s``), i.e. the
  summary's ``slo_attainment``; DistServe's goodput criterion.  Its
  attainable share counts the requests that, alone on an idle replica, would
  meet both limits under the step-time model (for ``multi_bin_fixed``, which
  serves full batches, this is an optimistic ceiling: alone is fastest).
  Continuous schedulers take only this criterion; static ones given a
  StepTimeModel too (their step-mode ``sla_violation_rate`` is already
  ``1 - slo_attainment``).

Every probe is kept.  The result is ``monotone`` when the probes pass exactly
at the scalings up to the answer and fail above it; otherwise (a failing
light load below the answer, or a pass above it) ``monotone`` is False, a
warning is logged, and ``scaling_region_low`` says where the passing region
that contains the answer begins among the probes.  The search never loops:
it stops after ``max_probes``.  When no load meets the target,
:class:`CapacityError` says so in the researcher's terms: the lightest load
tried in requests/s, the share that met the SLA there, which limit binds and
what to change.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from workbench import checks
from workbench.sim.config import SimConfig
from workbench.sim.latency import LatencyModel
from workbench.sim.schedulers import BATCH_EXACT, get_scheduler
from workbench.sim.simulate import (_DEFAULT_CONFIG, _default_step_model, _validate_trace, check_time_horizon,
                                    resolve_latency, simulate)

log = logging.getLogger(__name__)

CRITERIA = ("attainment", "p99_latency", "slo")
# The share of requests that must meet the SLA: the library's default target and the suite's
# (--capacity-attainment, the notebooks' capacity_attainment / attainment)
DEFAULT_ATTAINMENT = 0.9
SCALE_BOUNDS = (1 / 1024, 1024.0)  # the default range of scalings searched


class CapacityError(ValueError):
    """No scaling in the allowed range meets the criterion."""


class CeilingError(CapacityError):
    """No load at all meets the criterion: too few requests meet it even alone on an idle GPU, so more GPUs
    do not help either (the limits, the attainment target or the step-time model must change)."""


@dataclass(frozen=True)
class Probe:
    scaling: float
    rate_rps: float
    value: float
    passed: bool


@dataclass(frozen=True)
class CapacityResult:
    """The answer of :func:`capacity` and how it was found."""

    criterion: str
    target: float
    scaling: float
    capacity_rps: float
    value: float
    scaling_above: float
    value_above: float
    attainable: float
    resolution: float
    bounded: bool
    monotone: bool
    probes: tuple[Probe, ...]
    scaling_region_low: float = math.nan

    def to_row(self) -> dict:
        """Flat columns for a sweep result row."""
        return {
            "capacity_rps": self.capacity_rps,
            "capacity_scaling": self.scaling,
            "capacity_attainment": self.value,
            "capacity_attainment_above": self.value_above,
            "capacity_scaling_above": self.scaling_above,
            "capacity_probes": len(self.probes),
            "capacity_attainable": self.attainable,
            "capacity_criterion": self.criterion,
            "capacity_target": self.target,
            "capacity_bounded": self.bounded,
            "capacity_monotone": self.monotone,
            "capacity_scaling_region_low": self.scaling_region_low,
        }

    def probes_frame(self) -> pd.DataFrame:
        return pd.DataFrame([p.__dict__ for p in self.probes])


def attainable_share(trace, cfg: SimConfig, latency: LatencyModel) -> float:
    """Share of requests that meet the SLA in the most favourable batch on an idle GPU: the best any load can do.

    The most favourable batch holds the request as its longest member: alone
    under the up-to and dynamic batch rules; under the exact rule
    (``multi_bin_fixed``) a full batch of ``batch_size``, since a partial batch
    is served only as a bin's last one, so up to ``k_bins x (batch_size - 1)``
    requests are counted as attainable on top.  (A batch cut short because its
    next request would overflow the KV cache is not allowed for.)
    """
    seq = np.add(trace.prompt_tokens, trace.output_tokens, dtype=np.int64)
    spec = get_scheduler(cfg.scheduler).engine_spec(cfg)
    batch = cfg.batch_size if spec.batch_rule == BATCH_EXACT else 1
    fits = (seq <= cfg.kv_capacity_tokens) & (latency.service_time_s(batch, seq) <= cfg.d_sla_s)
    attainable = int(np.count_nonzero(fits))
    if batch > 1:
        bins = cfg.k_bins if spec.uses_bins else 1
        attainable = min(len(trace), attainable + bins * (batch - 1))
    return attainable / len(trace)


def slo_attainable_share(trace, cfg: SimConfig, step) -> float:
    """Share of requests meeting both the TTFT and TPOT limits when served alone on an idle replica.

    Alone, a static batch in step mode and the continuous engine run the same steps (one prefill, then
    decodes of one request); only what is admitted differs: KV blocks and the token budget for the
    continuous engine, prompt + output within ``kv_capacity_tokens`` for static batches.
    """
    from workbench.sim.metrics import STATUS_COMPLETED
    from workbench.sim.simulate import continuous_acceptance

    prompt = np.asarray(trace.prompt_tokens, dtype=np.float64)
    output = np.asarray(trace.output_tokens, dtype=np.float64)
    (pa, pb, pc), (da, db, dc) = step.prefill, step.decode
    if step.decode_large is not None and step.decode_large_threshold <= 1:
        da, db, dc = step.decode_large
    a0, a1 = step.arrival_overhead_s
    ttft = a0 + a1 * prompt + pa + pb * prompt + pc * prompt * prompt + step.token_overhead_s
    tpot = da + db * (prompt + output / 2.0) + dc + step.token_overhead_s   # mean context P + out/2
    if get_scheduler(cfg.scheduler).engine == "continuous":
        admitted = continuous_acceptance(trace, cfg) == STATUS_COMPLETED
    else:
        admitted = np.add(trace.prompt_tokens, trace.output_tokens, dtype=np.int64) <= cfg.kv_capacity_tokens
    fits = (admitted & (ttft <= cfg.ttft_sla_s)
            & ((tpot <= cfg.tpot_sla_s) | (output <= 1)))
    return float(np.count_nonzero(fits)) / len(trace)


def _measure(summary: dict, criterion: str, target: float) -> tuple[float, bool]:
    """(the criterion's value, whether it passes); shares are compared as counts of requests
    (:mod:`workbench.study.answers.targets`: 1 - 0.95 is not 0.05 in floats)."""
    from workbench.study.answers import targets

    if criterion in ("slo", "attainment"):
        missed = (1.0 - summary["slo_attainment"]) if criterion == "slo" else summary["sla_violation_rate"]
        value = summary["slo_attainment"] if criterion == "slo" else 1.0 - missed
        requests = summary.get("offered")
        if requests is None or not math.isfinite(float(missed)):
            return value, value >= target
        return value, bool(targets.meets_target(missed, requests, target))
    value = summary["latency_p99_s"]
    return value, bool(value <= target and summary["rejected"] == 0)


# what each criterion reads from a summary (a start_summary must have it): key -> its range (None: a time)
_SUMMARY_KEYS = {"slo": {"slo_attainment": 1}, "attainment": {"sla_violation_rate": 1},
                 "p99_latency": {"latency_p99_s": None, "rejected": None}}


def _check_start_summary(summary: dict | None, criterion: str) -> None:
    """A summary given for the first probe must hold what ``criterion`` reads, as numbers in range."""
    for key, high in _SUMMARY_KEYS[criterion].items() if summary is not None else ():
        if key not in summary:
            raise ValueError(f"start_summary: has no {key!r} (the {criterion} criterion reads it); pass the summary "
                             "of simulate(...) at scaling start with the same config and latency, or None")
        value = summary[key]
        if key == "latency_p99_s" and isinstance(value, float) and math.isnan(value):
            continue   # no request completed: a valid summary, which fails the criterion
        checks.number(value, f"start_summary[{key!r}]", low=0, high=high)


def _is_step_model(latency) -> bool:
    from workbench.sim.steptime import StepTimeModel

    return isinstance(latency, StepTimeModel)


def _slo_setup(trace, cfg: SimConfig, latency, ttft_s, tpot_s):
    from workbench.sim.simulate import _default_step_model
    from workbench.sim.steptime import StepTimeModel

    limits = {}
    for name, value in (("ttft_sla_s", ttft_s), ("tpot_sla_s", tpot_s)):
        if value is not None:
            limits[name] = value
    cfg = cfg.replace(**limits) if limits else cfg   # SimConfig validates the limits
    if get_scheduler(cfg.scheduler).engine == "disaggregated":
        # a disaggregated deployment: a step-time model per pool (workbench.sim.disagg)
        from workbench.sim.disagg import pool_models, slo_attainable_share as disagg_share

        prefill, decode = pool_models(latency, cfg)
        return cfg, {"prefill": prefill, "decode": decode}, disagg_share(trace, cfg, prefill, decode)
    latency = latency if latency is not None else _default_step_model()
    if not isinstance(latency, StepTimeModel):
        raise ValueError(f"criterion='slo' (TTFT and TPOT limits) needs latency=wb.StepTimeModel(...) (or None for "
                         f"the default profile), got a {type(latency).__name__}: a latency grid gives static batches "
                         "no per-token times; use criterion='attainment' with it")
    return cfg, latency, slo_attainable_share(trace, cfg, latency)


def capacity(trace, config: SimConfig | None = _DEFAULT_CONFIG, *, attainment: float = DEFAULT_ATTAINMENT,
             criterion: str | None = None, latency=None, resolution: float = 0.01, start: float = 1.0,
             scale_bounds: tuple[float, float] = SCALE_BOUNDS, max_probes: int = 60,
             start_summary: dict | None = None, scan_factor: float = 4.0, ttft_s: float | None = None,
             tpot_s: float | None = None, hint_rps: float | None = None, hint_slope: float | None = None,
             method: str = "auto") -> CapacityResult:
    """Largest arrival-rate scaling of ``trace`` at which ``config`` meets the SLA criterion.

    See the module docstring for the search and the criteria.  The defaults are the suite's: ``latency=None``
    is the default step-time profile, ``criterion=None`` is ``"slo"`` (TTFT and TPOT limits) with a step-time
    model and ``"attainment"`` (end-to-end within ``d_sla_s``) on a latency grid (``latency="seed-grid"``), and
    ``attainment`` is :data:`DEFAULT_ATTAINMENT` (90%).  ``start_summary``
    is the summary of a simulation already run at ``start`` with the same
    config and latency model (a sweep's replay); it serves as the first probe
    instead of simulating that load again.  ``hint_rps`` (requests/s) is where
    the answer probably lies and ``hint_slope`` how fast the criterion's value
    changes with the log of the rate there (e.g. from a neighbouring search);
    they change how many probes the bracket search takes, not its answer
    (where the criterion is monotone in load).  ``method``: ``"auto"`` (``"scan"`` for schedulers
    whose batches wait to fill, else ``"bracket"``), ``"bracket"`` or ``"scan"``;
    ``scan_factor`` (> 1) is the ratio between neighbouring points of the scan.
    Raises :class:`CapacityError` when no scaling tried passes.  If even the
    fastest passes, the result has ``bounded=False``.
    """
    if config is None:
        raise checks.InvalidType(
            "config: None (a measured run loaded without its setup.json has run.config None); pass the serving "
            "setup, e.g. wb.SimConfig(scheduler='continuous_fcfs', ...), or leave config out for the defaults")
    cfg = SimConfig() if config is _DEFAULT_CONFIG else checks.instance(config, "config", SimConfig,
                                                                         expected="a SimConfig")
    trace = _validate_trace(trace)
    disaggregated = get_scheduler(cfg.scheduler).engine == "disaggregated"
    if not disaggregated:  # a disaggregated deployment's pools are resolved by _slo_setup (per TP degree)
        latency = resolve_latency(latency)
    if not disaggregated and latency is None:
        latency = _default_step_model()
    if criterion is None:
        criterion = "attainment" if isinstance(latency, LatencyModel) else "slo"
    criterion = checks.choice(criterion, "criterion", CRITERIA, hint="or None: 'slo' with a step-time model, "
                                                                      "'attainment' on a latency grid")
    method = checks.choice(method, "method", METHODS,
                           hint="'auto' picks 'scan' for schedulers whose batches wait to fill, else 'bracket'")
    attainment = checks.number(attainment, "attainment", low=0, low_open=True, high=1,
                               hint="the share of requests that must meet the SLA")
    ttft_s = checks.number(ttft_s, "ttft_s", low=0, low_open=True, unit="s", none=True)
    tpot_s = checks.number(tpot_s, "tpot_s", low=0, low_open=True, unit="s", none=True)
    if criterion != "slo" and (ttft_s is not None or tpot_s is not None):
        raise ValueError("ttft_s/tpot_s are limits of criterion='slo'; pass criterion='slo' to use them")
    resolution = checks.number(resolution, "resolution", low=0, high=1, low_open=True, high_open=True,
                               hint="the relative gap between pass and fail at which the search stops")
    scan_factor = checks.number(scan_factor, "scan_factor", low=1, low_open=True,
                                hint="the ratio of the coarse scan's steps")
    max_probes = checks.integer(max_probes, "max_probes", low=1, high=100_000)
    hint_rps = checks.number(hint_rps, "hint_rps", low=0, low_open=True, unit="requests/s", none=True,
                             hint="where the capacity probably lies, e.g. a neighbouring search's answer")
    hint_slope = checks.number(hint_slope, "hint_slope", none=True,
                               hint="how fast the criterion changes with the log of the rate near the hint")
    if isinstance(scale_bounds, (str, bytes)) or not hasattr(scale_bounds, "__len__") or len(scale_bounds) != 2:
        raise checks.InvalidType(f"scale_bounds: must be two numbers (lowest, highest scaling), got {scale_bounds!r}")
    low, high = (checks.number(v, f"scale_bounds[{i}]", low=0, low_open=True) for i, v in enumerate(scale_bounds))
    start = checks.number(start, "start")
    if not low <= start <= high:
        raise ValueError(f"need 0 < scale_bounds[0] <= start <= scale_bounds[1], got {scale_bounds}, start={start}")
    if start_summary is not None and not isinstance(start_summary, dict):
        raise checks.InvalidType(f"start_summary: must be a simulation summary (a dict) or None, got "
                                 f"{type(start_summary).__name__}")
    _check_start_summary(start_summary, criterion)
    if method == "auto":
        method = "scan" if attainment_may_rise_with_load(cfg) else "bracket"
    # the coarse scan probes every grid point: refused now if it alone would take more probes than allowed
    scan_points = (math.floor(math.log(start / low) / math.log(scan_factor) + 1e-9)
                   + math.floor(math.log(high / start) / math.log(scan_factor) + 1e-9) + 1)
    if method == "scan" and scan_points > max_probes:
        raise ValueError(f"the coarse scan from scale_bounds[0]={low:g} to scale_bounds[1]={high:g} in steps of "
                         f"scan_factor={scan_factor:.15g} would take {scan_points:,} probes, more than "
                         f"max_probes={max_probes}: raise scan_factor or max_probes, or narrow scale_bounds")
    if len(trace) < 2 or trace.mean_rate_rps <= 0 or not math.isfinite(trace.mean_rate_rps):
        raise ValueError("capacity needs a trace of at least 2 requests spread over time")
    if criterion != "slo" and get_scheduler(cfg.scheduler).engine != "static":
        kind = "a disaggregated" if disaggregated else "a continuous"
        raise ValueError(f"{cfg.scheduler} is {kind} scheduler, judged on TTFT and TPOT: use "
                         "capacity(..., criterion='slo', ttft_s=..., tpot_s=..., attainment=...)")
    if criterion != "slo" and _is_step_model(latency):
        raise ValueError(f"criterion={criterion!r} judges end-to-end latency against d_sla_s on a latency grid; "
                         f"with a StepTimeModel {cfg.scheduler} runs in step mode, judged on TTFT and TPOT: use "
                         "capacity(..., criterion='slo', ttft_s=..., tpot_s=..., attainment=...)")
    if criterion == "slo":
        cfg, latency, ceiling = _slo_setup(trace, cfg, latency, ttft_s, tpot_s)
        target = needed = attainment
    else:
        target = attainment if criterion == "attainment" else cfg.d_sla_s
        latency = latency or LatencyModel.default()
        ceiling = attainable_share(trace, cfg, latency)
        needed = attainment if criterion == "attainment" else 0.99
    # the slowest load a search may replay stretches the trace by 1 / scale_bounds[0]: its times must stay usable
    check_time_horizon(float(trace.arrival_s[-1]) / low, latency,
                       f"capacity at scale_bounds[0]={low:g} (the slowest load searched)",
                       "Or raise scale_bounds[0].", cfg=cfg)
    sla = sla_text(cfg, criterion)
    if ceiling < needed:
        why = ("even alone on an idle replica (or they exceed the KV cache / token budget)" if criterion == "slo"
               else "even alone on an idle GPU (the rest are too long for the latency model, or exceed the KV cache)")
        fix = ("lower the attainment target, relax the limits, or use a faster step-time model" if criterion == "slo"
               else "lower the attainment target, relax d_sla_s, or use a faster latency model")
        raise CeilingError(
            f"the target cannot be met at any load: only {ceiling:.1%} of the requests could meet {sla} {why}, "
            f"below the {needed:.0%} asked. To reach it: {fix}.")
    search = _Search(trace, cfg, latency, criterion, target, start, start_summary, max_probes)
    if method == "scan":
        lo, hi = _scan(search, low, high, scan_factor, resolution)
    else:
        lo, hi = _bracket(search, low, high, resolution, hint_rps, hint_slope)
    probes = search.probes
    bounded = hi is not None
    at = next(p for p in reversed(probes) if p.scaling == lo)
    above = next((p for p in reversed(probes) if p.scaling == hi), None) if bounded else None
    monotone = all(p.passed == (p.scaling <= lo) for p in probes)
    ordered = sorted(probes, key=lambda p: p.scaling)
    region = next(i for i, p in enumerate(ordered) if p.scaling == lo)
    while region > 0 and ordered[region - 1].passed:
        region -= 1
    region_low = ordered[region].scaling
    if not monotone:
        log.warning("capacity of %s on %d GPU(s): %s is not monotone in load (probes %s); the answer is the "
                    "top of the highest passing region (which starts at x%.4g)", cfg.scheduler, cfg.num_gpus,
                    criterion, [(round(p.scaling, 4), p.passed) for p in probes], region_low)
    return CapacityResult(
        criterion=criterion, target=target, scaling=lo, capacity_rps=search.base_rate * lo, value=at.value,
        scaling_above=hi if bounded else math.inf, value_above=above.value if above else math.nan,
        attainable=ceiling, resolution=resolution, bounded=bounded, monotone=monotone, probes=tuple(probes),
        scaling_region_low=region_low)


METHODS = ("auto", "bracket", "scan")


def attainment_may_rise_with_load(cfg: SimConfig) -> bool:
    """Whether ``cfg``'s scheduler makes batches wait to fill (``multi_bin_fixed``), so light load can fail
    where heavier load passes: its capacity needs the exhaustive scan."""
    policy = get_scheduler(cfg.scheduler)
    if getattr(policy, "attainment_may_rise_with_load", False):
        return True
    return policy.engine == "static" and policy.engine_spec(cfg).batch_rule == BATCH_EXACT


def sla_text(cfg: SimConfig, criterion: str) -> str:
    """The SLA of ``criterion`` in words, e.g. "TTFT <= 1 s and TPOT <= 50 ms"."""
    if criterion == "slo":
        return f"TTFT <= {cfg.ttft_sla_s:g} s and TPOT <= {cfg.tpot_sla_s * 1e3:g} ms"
    return f"an end-to-end latency <= {cfg.d_sla_s:g} s"


class _Search:
    """The probes of one capacity search: each a replay of the trace at one scaling."""

    def __init__(self, trace, cfg, latency, criterion, target, start, start_summary, max_probes):
        self.trace, self.cfg, self.latency = trace, cfg, latency
        self.criterion, self.target, self.start = criterion, target, start
        self.start_summary, self.max_probes = start_summary, max_probes
        self.base_rate = trace.mean_rate_rps
        self.probes: list[Probe] = []
        self.summaries: dict[float, dict] = {}

    def __call__(self, scaling: float) -> bool:
        for p in self.probes:
            if p.scaling == scaling:
                return p.passed
        if len(self.probes) >= self.max_probes:
            raise CapacityError(f"capacity search did not converge in {self.max_probes} probes; "
                                f"raise max_probes or resolution (probes: {self.probes})")
        if scaling == self.start and self.start_summary is not None:
            summary = self.start_summary
        else:
            summary = simulate(self.trace.time_scaled(scaling), self.cfg, latency=self.latency).summary
        value, passed = _measure(summary, self.criterion, self.target)
        self.probes.append(Probe(scaling, self.base_rate * scaling, value, passed))
        self.summaries[scaling] = summary
        log.debug("capacity probe x%.4g (%.3g rps): %s = %.4g, %s", scaling, self.base_rate * scaling,
                  self.criterion, value, "pass" if passed else "fail")
        return passed

    def value(self, scaling: float) -> float:
        return next(p.value for p in self.probes if p.scaling == scaling)

    def unreachable(self, low: float, high: float) -> CapacityError:
        """No probe passed: say at which load, how close the best came, which limit binds, what to change."""
        cfg, criterion = self.cfg, self.criterion
        best = max(self.probes, key=lambda p: -p.value if criterion == "p99_latency" else p.value)
        lightest = min(self.probes, key=lambda p: p.scaling)
        summary = self.summaries.get(lightest.scaling, {})
        where = (f"{cfg.scheduler} on {cfg.num_gpus} GPU{'s' if cfg.num_gpus != 1 else ''}: no load meets the "
                 f"target. Even at {lightest.rate_rps:.3g} requests/s (the lightest load tried, 1/{1 / lightest.scaling:.4g} "
                 f"of the trace's rate)")
        if criterion == "p99_latency":
            text = (f"{where} the p99 latency is {lightest.value:.3g} s (limit {cfg.d_sla_s:g} s, best "
                    f"{best.value:.3g} s at {best.rate_rps:.3g} requests/s).")
        else:
            text = (f"{where} only {lightest.value:.1%} of the requests meet {sla_text(cfg, criterion)} "
                    f"(target {self.target:.0%}; best {best.value:.1%} at {best.rate_rps:.3g} requests/s).")
        binding = _binding_limit(summary, cfg, criterion)
        if binding:
            text += " " + binding
        fix = ("add GPUs, relax the TTFT/TPOT limits or lower the attainment target" if criterion == "slo"
               else "add GPUs, relax d_sla_s or lower the attainment target")
        return CapacityError(f"{text} To reach it: {fix}.")


def _why_wait(summary: dict, cfg: SimConfig) -> str:
    """Why requests wait before their batch starts, from the run's GPU utilisation: a busy GPU only when the GPUs
    are mostly busy; a scheduler whose batches wait to fill (``multi_bin_fixed``) or bursts otherwise."""
    util = summary.get("gpu_utilization_mean", math.nan)
    share = (f"{util:.0%}" if util >= 0.01 else "under 1%") if util is not None and math.isfinite(util) else ""
    busy = f"the GPUs are busy {share} of the time" if share else ""
    if attainment_may_rise_with_load(cfg):
        return "requests wait for their batch to fill (a batch starts only when full" + (f"; {busy})" if busy else ")")
    if busy and util < 0.5:
        return f"requests that arrive together wait for each other's batches ({busy}: they do not wait for a busy GPU)"
    return "requests wait for a busy GPU" + (f" ({busy})" if busy else "")


def _binding_limit(summary: dict, cfg: SimConfig, criterion: str) -> str:
    """Which limit binds at a failing load, in one sentence ("" when the summary cannot say)."""
    if criterion == "slo" and "ttft_attainment" in summary:
        ttft, tpot = summary["ttft_attainment"], summary["tpot_attainment"]
        if ttft <= tpot:
            p90 = summary.get("ttft_p90_s")
            tail = f" (p90 TTFT {p90:.3g} s)" if p90 is not None and math.isfinite(p90) else ""
            return (f"The limit that binds is TTFT: {ttft:.1%} of requests get their first token within "
                    f"{cfg.ttft_sla_s:g} s{tail}, {tpot:.1%} meet TPOT: {_why_wait(summary, cfg)}.")
        return (f"The limit that binds is TPOT: {tpot:.1%} of requests keep {cfg.tpot_sla_s * 1e3:g} ms per "
                f"output token, {ttft:.1%} meet TTFT.")
    if criterion == "attainment" and "queue_delay_mean_s" in summary:
        wait, p99 = summary["queue_delay_mean_s"], summary.get("latency_p99_s", math.nan)
        why = (_why_wait(summary, cfg) if wait > 0.1 * cfg.d_sla_s else
               "requests hardly wait: they miss because a batch lasts as long as its longest member")
        return (f"There requests wait {wait:.3g} s on average before their batch starts and the p99 latency is "
                f"{p99:.3g} s: {why}.")
    return ""


def _attainment_error(search: _Search) -> float:
    """Standard error of a share near the target measured on the trace's requests, sqrt(t (1 - t) / n): two
    loads whose attainments differ by less cannot be told apart by the target (0.0003 on 1M requests at 0.9,
    0.007 on 2,000)."""
    t = min(max(float(search.target), 0.0), 1.0)
    return math.sqrt(t * (1 - t) / max(len(search.trace), 1))


def _guess_from_replay(search: _Search) -> tuple[float | None, float]:
    """(a first guess of the capacity in requests/s, the ratio of the first step out from it), from the replay
    at ``start`` alone.  Overloaded (throughput below the offered rate), the pool's throughput is the most it
    serves and capacity lies somewhat below it; with room to spare, the load can grow until the GPUs are busy.
    Only the number of probes depends on it, never the answer."""
    summary = search.summaries.get(search.start)
    if not summary:
        return None, 2.0
    offered, done = summary.get("offered_rps", math.nan), summary.get("throughput_rps", math.nan)
    busy = summary.get("gpu_utilization_mean", math.nan)
    if not (math.isfinite(offered) and math.isfinite(done) and offered > 0 and done > 0):
        return None, 2.0
    if done < 0.95 * offered:
        return 0.3 * done, 1.5
    if math.isfinite(busy) and 0 < busy < 0.9:
        return 0.8 * offered / busy, 1.25
    return None, 1.25


def _scan(search: _Search, low: float, high: float, scan_factor: float,
          resolution: float) -> tuple[float, float | None]:
    """The exhaustive search: a coarse scan of the whole range, then bisection below the highest failing
    neighbour of the highest pass.  Returns (last pass, first fail above it or None)."""
    start = search.start
    k_low = math.floor(math.log(start / low) / math.log(scan_factor) + 1e-9)
    k_high = math.floor(math.log(high / start) / math.log(scan_factor) + 1e-9)
    grid = sorted({low, high, *(start * scan_factor ** k for k in range(-k_low, k_high + 1))})
    grid = [g for g in grid if low <= g <= high]
    search(start)
    for scaling in grid:
        search(scaling)
    scanned = sorted(search.probes, key=lambda p: p.scaling)
    passing = [i for i, p in enumerate(scanned) if p.passed]
    if not passing:
        raise search.unreachable(low, high)
    top = passing[-1]
    lo = scanned[top].scaling
    hi = scanned[top + 1].scaling if top + 1 < len(scanned) else None
    while hi is not None and hi / lo - 1 > resolution:
        mid = math.sqrt(lo * hi)
        if search(mid):
            lo = mid
        else:
            hi = mid
    return lo, hi


def _bracket(search: _Search, low: float, high: float, resolution: float,
             hint_rps: float | None, hint_slope: float | None = None) -> tuple[float, float | None]:
    """The grid search (see the module docstring).  Returns (s_k, s_{k+1}) or (s_k, None) at the top bound."""
    g = math.log1p(resolution)
    start = search.start
    k_min = math.ceil(math.log(low / start) / g - 1e-9)
    k_max = math.floor(math.log(high / start) / g + 1e-9)
    # the bounds themselves are probed as the outermost points, one (partial) step beyond the grid's
    low_extra = start * math.exp(k_min * g) > low * (1 + 1e-12)
    high_extra = start * math.exp(k_max * g) < high * (1 - 1e-12)
    k_min, k_max = k_min - low_extra, k_max + high_extra

    def scaling(k: int) -> float:
        if k == k_min and low_extra:
            return low
        if k == k_max and high_extra:
            return high
        return start * math.exp(k * g)

    results: dict[int, float] = {}   # grid index -> signed distance to the target (> 0: passes)

    def probe(k: int) -> float:
        k = min(max(k, k_min), k_max)
        if k not in results:
            passed = search(scaling(k))
            value = search.value(scaling(k))
            size = max(abs(value - search.target), 1e-12) if math.isfinite(value) else 1.0
            results[k] = size if passed else -size
        return results[k]

    probe(0)
    guess_rps, ratio = (hint_rps, 1.03) if hint_rps is not None else _guess_from_replay(search)
    if guess_rps is not None:
        k0 = min(max(round(math.log(guess_rps / (search.base_rate * start)) / g), k_min), k_max)
        f0 = probe(k0)
        # a Newton step with the slope the hint came with: land on the pair of grid points around the crossing
        per_index = -abs(hint_slope) * g if hint_slope is not None and math.isfinite(hint_slope) else 0.0
        if per_index < 0 and abs(f0) < 0.2:
            crossing = k0 - f0 / per_index
            below = math.floor(crossing)
            if abs(below - k0) <= round(math.log(1.5) / g):
                for k in (below, below + 1):
                    if k != k0:
                        probe(k)
    step = max(1, round(math.log(ratio) / g))

    # 1. bracket: a passing index with a failing one above it (or the top bound).  Step out from the outermost
    # probe on the side the answer lies, by the secant through the two outermost probes when their values say
    # where the target is (attainment changes smoothly with load), else by a step that doubles each time.
    while True:
        passing = [k for k, f in results.items() if f > 0]
        if passing and (any(f < 0 and k > max(passing) for k, f in results.items()) or max(passing) == k_max):
            break
        if not passing and min(results) == k_min:
            raise search.unreachable(low, high)
        up = bool(passing)
        side = sorted((k for k in results if (k >= max(passing) if up else True)), reverse=up)
        k1 = side[0]
        move = step
        if len(side) >= 2 and results[side[1]] != results[k1]:
            k2 = side[1]
            secant = -results[k1] * (k1 - k2) / (results[k1] - results[k2])
            if not up and (secant >= 0 or k1 + secant < k_min):
                # lighter load barely helps (or hurts): the target is far below or out of reach; the lightest
                # load allowed decides which, in one probe
                move = k1 - k_min
            elif max(abs(results[k1]), abs(results[k2])) < 0.4 and secant * (1 if up else -1) > 0:
                move = int(min(abs(secant) + 1, 4 * step))
        probe(k1 + move if up else k1 - move)
        step *= 2

    # 2. narrow to neighbouring grid indices: regula falsi on the signed distance, with the Illinois rule (an
    # endpoint kept twice in a row has its distance halved) so that a curved stretch cannot stall one side;
    # stop early where the attainment target cannot tell the two ends apart (see the module docstring)
    resolvable = _attainment_error(search) if search.criterion != "p99_latency" else 0.0
    kept, scale = None, {"a": 1.0, "b": 1.0}
    while True:
        a = max(k for k, f in results.items() if f > 0)
        above = [k for k, f in results.items() if f < 0 and k > a]
        if not above:
            return scaling(a), None                      # passes at the top bound: a lower bound
        b = min(above)
        if b == a + 1:
            return scaling(a), scaling(b)
        if results[a] - results[b] < resolvable:
            # the share meeting the SLA at a and at b differs by less than its own sampling error on this many
            # requests: a point between them would pass or fail by noise, not by load
            return scaling(a), scaling(b)
        fa, fb = results[a] * scale["a"], results[b] * scale["b"]
        c = min(max(round(a + fa / (fa - fb) * (b - a)), a + 1), b - 1)
        moved = "a" if probe(c) > 0 else "b"
        other = "b" if moved == "a" else "a"
        scale[moved] = 1.0
        if kept == other:
            scale[other] *= 0.5
        kept = other
