"""Capacity: the largest load a configuration sustains within its SLA.

Replaying one trace at one speed only says whether the pool keeps up at that
load; once it does, more GPUs or more bins change nothing.  ``capacity``
answers the question a researcher asks instead: by how much can the arrival
rate of this trace grow (or must it shrink) before the SLA breaks?  It
replays the *same* trace compressed or stretched in time (arrivals divided by
a scaling factor ``s``: ``s = 2`` doubles the rate, the request mix and the
burst pattern stay the same) and searches ``s``:

1. scan: probe a coarse geometric grid ``start x scan_factor^k`` over the
   whole of ``scale_bounds`` (both bounds included);
2. take the highest passing grid point whose next grid point fails, and
   bisect geometrically between them until they are within ``resolution``
   (relative) of each other.

The answer is the last passing scaling of that bisection; ``capacity_rps`` is
the trace's mean rate times it.  Scanning the whole range first matters
because attainment need not fall as load rises: with ``multi_bin_fixed``
(exact batches wait to fill) light load leaves requests waiting for
companions, so attainment *rises* with load before it falls, and a search
that starts at a failing light load and halves would never find the passing
region.  Before searching, the *attainable share* is computed: the requests
that would meet the SLA in the most favourable batch the scheduler can give
them on an idle GPU (alone for the up-to and dynamic rules; in a full batch
of ``batch_size`` for ``multi_bin_fixed``, which never serves a request alone
except in a bin's last partial batch, allowed for).  A target above it is
refused at once (no load can reach it); on the synthetic BurstGPT-like
trace with the default latency model and a 1 s SLA about 5% of requests are
too long to finish alone, so an attainment of 0.95 is out of reach there.
Criteria:

* ``"attainment"`` (default): at least ``attainment`` of the offered requests
  finish within ``d_sla_s`` of their arrival (rejected requests count as
  missed), i.e. ``1 - sla_violation_rate >= attainment``;
* ``"p99_latency"``: the 99th percentile latency of completed requests is at
  most ``d_sla_s`` and nothing is rejected;
* ``"slo"`` (every scheduler, timed by a :class:`StepTimeModel`: continuous
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
that contains the answer begins on the scan grid.  The search never loops:
it stops after ``max_probes``.
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
from workbench.sim.simulate import _DEFAULT_CONFIG, _validate_trace, check_time_horizon, resolve_latency, simulate

log = logging.getLogger(__name__)

CRITERIA = ("attainment", "p99_latency", "slo")
SCALE_BOUNDS = (1 / 1024, 1024.0)  # the default range of scalings searched


class CapacityError(ValueError):
    """No scaling in the allowed range meets the criterion."""


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
    if criterion == "slo":
        value = summary["slo_attainment"]
        return value, value >= target
    if criterion == "attainment":
        value = 1.0 - summary["sla_violation_rate"]
        return value, value >= target
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


def capacity(trace, config: SimConfig | None = _DEFAULT_CONFIG, *, attainment: float = 0.95,
             criterion: str = "attainment", latency=None, resolution: float = 0.01, start: float = 1.0,
             scale_bounds: tuple[float, float] = SCALE_BOUNDS, max_probes: int = 60,
             start_summary: dict | None = None, scan_factor: float = 4.0, ttft_s: float | None = None,
             tpot_s: float | None = None) -> CapacityResult:
    """Largest arrival-rate scaling of ``trace`` at which ``config`` meets the SLA criterion.

    See the module docstring for the search and the criteria.  ``start_summary``
    is the summary of a simulation already run at ``start`` with the same
    config and latency model (a sweep's replay); it serves as the first probe
    instead of simulating that load again.  ``scan_factor`` (> 1) is the ratio
    between neighbouring points of the coarse scan.  Raises
    :class:`CapacityError` when no scaling of the scan passes.  If even the
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
    criterion = checks.choice(criterion, "criterion", CRITERIA)
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
    # the coarse scan probes every grid point: refused now if it alone would take more probes than allowed
    scan_points = (math.floor(math.log(start / low) / math.log(scan_factor) + 1e-9)
                   + math.floor(math.log(high / start) / math.log(scan_factor) + 1e-9) + 1)
    if scan_points > max_probes:
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
    # the slowest load the scan replays stretches the trace by 1 / scale_bounds[0]: its times must stay usable
    check_time_horizon(float(trace.arrival_s[-1]) / low, latency,
                       f"capacity at scale_bounds[0]={low:g} (the slowest load scanned)",
                       "Or raise scale_bounds[0].", cfg=cfg)
    if ceiling < needed and criterion == "slo":
        raise CapacityError(
            f"the target cannot be met at any load: only {ceiling:.2%} of the requests could meet "
            f"ttft_s={cfg.ttft_sla_s:g} s and tpot_s={cfg.tpot_sla_s:g} s even alone on an idle replica (or they "
            f"exceed the KV cache / token budget), below the {needed:.2%} asked. Lower attainment, relax the "
            "limits, or use a faster step-time model.")
    if ceiling < needed:
        raise CapacityError(
            f"the target cannot be met at any load: only {ceiling:.2%} of the requests could finish within "
            f"d_sla_s={cfg.d_sla_s:g} s even alone on an idle GPU (the rest are too long for the latency model, "
            f"or exceed the KV cache), below the {needed:.2%} the {criterion} criterion needs. "
            "Lower attainment, relax d_sla_s, or use a faster latency model.")
    base_rate = trace.mean_rate_rps
    probes: list[Probe] = []

    def probe(scaling: float) -> bool:
        if len(probes) >= max_probes:
            raise CapacityError(f"capacity search did not converge in {max_probes} probes; "
                                f"raise max_probes or resolution (probes: {probes})")
        if scaling == start and start_summary is not None and not probes:
            summary = start_summary
        else:
            summary = simulate(trace.time_scaled(scaling), cfg, latency=latency).summary
        value, passed = _measure(summary, criterion, target)
        probes.append(Probe(scaling, base_rate * scaling, value, passed))
        log.debug("capacity probe x%.4g (%.3g rps): %s = %.4g, %s", scaling, base_rate * scaling, criterion,
                  value, "pass" if passed else "fail")
        return passed

    # 1. coarse scan of the whole range, start included (its probe may be a replay already run)
    k_low = math.floor(math.log(start / low) / math.log(scan_factor) + 1e-9)
    k_high = math.floor(math.log(high / start) / math.log(scan_factor) + 1e-9)
    grid = sorted({low, high, *(start * scan_factor ** k for k in range(-k_low, k_high + 1))})
    grid = [g for g in grid if low <= g <= high]
    probe(start)
    for scaling in grid:
        if scaling != start:
            probe(scaling)
    scanned = sorted((p for p in probes), key=lambda p: p.scaling)
    passing = [i for i, p in enumerate(scanned) if p.passed]
    if not passing:
        best = max(scanned, key=lambda p: -p.value if criterion == "p99_latency" else p.value)
        raise CapacityError(
            f"{cfg.scheduler} on {cfg.num_gpus} GPU(s) misses the target even at scaling x{low:g} "
            f"({base_rate * low:.4g} requests/s), and at every scaling scanned up to x{high:g}: best {criterion} "
            f"{best.value:.4g} at x{best.scaling:.4g}, target {target:g}. "
            "Add GPUs, relax d_sla_s or attainment, or widen scale_bounds.")
    top = passing[-1]
    lo = scanned[top].scaling
    hi = scanned[top + 1].scaling if top + 1 < len(scanned) else None
    region = top
    while region > 0 and scanned[region - 1].passed:
        region -= 1
    region_low = scanned[region].scaling

    # 2. bisect between the highest passing scan point and the failing one above it
    bounded = hi is not None
    while bounded and hi / lo - 1 > resolution:
        mid = math.sqrt(lo * hi)
        if probe(mid):
            lo = mid
        else:
            hi = mid

    at = next(p for p in reversed(probes) if p.scaling == lo)
    above = next((p for p in reversed(probes) if p.scaling == hi), None) if bounded else None
    monotone = all(p.passed == (p.scaling <= lo) for p in probes)
    if not monotone:
        log.warning("capacity of %s on %d GPU(s): %s is not monotone in load (probes %s); the answer is the "
                    "top of the highest passing region (which starts at x%.4g)", cfg.scheduler, cfg.num_gpus,
                    criterion, [(round(p.scaling, 4), p.passed) for p in probes], region_low)
    return CapacityResult(
        criterion=criterion, target=target, scaling=lo, capacity_rps=base_rate * lo, value=at.value,
        scaling_above=hi if bounded else math.inf, value_above=above.value if above else math.nan,
        attainable=ceiling, resolution=resolution, bounded=bounded, monotone=monotone, probes=tuple(probes),
        scaling_region_low=region_low)
