"""Capacity: the largest load a configuration sustains within its SLA.

Replaying one trace at one speed only says whether the pool keeps up at that
load; once it does, more GPUs or more bins change nothing.  ``capacity``
answers the question a researcher asks instead: by how much can the arrival
rate of this trace grow (or must it shrink) before the SLA breaks?  It
replays the *same* trace compressed or stretched in time (arrivals divided by
a scaling factor ``s``: ``s = 2`` doubles the rate, the request mix and the
burst pattern stay the same) and searches ``s``:

1. bracket: from ``start``, double ``s`` while the criterion holds (or halve
   it while it fails) until it changes, within ``scale_bounds``;
2. bisect geometrically between the last passing and the first failing
   scaling until they are within ``resolution`` (relative) of each other.

The answer is the last passing scaling; ``capacity_rps`` is the trace's mean
rate times it.  Before searching, the *attainable share* is computed: the
requests that would meet the SLA even alone on an idle GPU.  A target above
it is refused at once (no load can reach it); on the synthetic BurstGPT-like
trace with the default latency model and a 1 s SLA about 5% of requests are
too long for that, so an attainment of 0.95 is out of reach there.  Criteria:

* ``"attainment"`` (default): at least ``attainment`` of the offered requests
  finish within ``d_sla_s`` of their arrival (rejected requests count as
  missed), i.e. ``1 - sla_violation_rate >= attainment``;
* ``"p99_latency"``: the 99th percentile latency of completed requests is at
  most ``d_sla_s`` and nothing is rejected;
* ``"slo"`` (continuous schedulers): at least ``attainment`` of the offered
  requests meet both the TTFT limit ``ttft_s`` and the TPOT limit ``tpot_s``
  (default: the config's ``ttft_sla_s`` / ``tpot_sla_s``), i.e. the
  summary's ``slo_attainment``; DistServe's goodput criterion.  Its
  attainable share counts the requests that, alone on an idle replica, would
  meet both limits under the step-time model.

Attainment need not fall monotonically with load (a burst can land
differently on a batch boundary), so every probe is kept; if any probe above
the answer passed or any below it failed, ``monotone`` is False and a warning
is logged.  The search never loops: it stops after ``max_probes``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from workbench.sim.config import SimConfig
from workbench.sim.latency import LatencyModel
from workbench.sim.schedulers import get_scheduler
from workbench.sim.simulate import simulate

log = logging.getLogger(__name__)

CRITERIA = ("attainment", "p99_latency", "slo")


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
        }

    def probes_frame(self) -> pd.DataFrame:
        return pd.DataFrame([p.__dict__ for p in self.probes])


def attainable_share(trace, cfg: SimConfig, latency: LatencyModel) -> float:
    """Share of requests that meet the SLA when served alone on an idle GPU: the best any load can do."""
    seq = np.add(trace.prompt_tokens, trace.output_tokens, dtype=np.int64)
    fits = (seq <= cfg.kv_capacity_tokens) & (latency.service_time_s(1, seq) <= cfg.d_sla_s)
    return float(np.count_nonzero(fits)) / len(trace)


def slo_attainable_share(trace, cfg: SimConfig, step) -> float:
    """Share of requests meeting both the TTFT and TPOT limits when served alone on an idle replica."""
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
    fits = ((continuous_acceptance(trace, cfg) == STATUS_COMPLETED) & (ttft <= cfg.ttft_sla_s)
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


def _slo_setup(trace, cfg: SimConfig, latency, ttft_s, tpot_s):
    from workbench.sim.simulate import _default_step_model
    from workbench.sim.steptime import StepTimeModel

    if get_scheduler(cfg.scheduler).engine != "continuous":
        raise ValueError(f"criterion='slo' (TTFT and TPOT limits) needs a continuous_* scheduler, got "
                         f"{cfg.scheduler!r}; use criterion='attainment' for static batches")
    limits = {}
    for name, value in (("ttft_sla_s", ttft_s), ("tpot_sla_s", tpot_s)):
        if value is not None:
            limits[name] = value
    cfg = cfg.replace(**limits) if limits else cfg   # SimConfig validates the limits
    latency = latency if latency is not None else _default_step_model()
    if not isinstance(latency, StepTimeModel):
        raise ValueError(f"criterion='slo' needs latency=wb.StepTimeModel(...), got {type(latency).__name__}")
    return cfg, latency, slo_attainable_share(trace, cfg, latency)


def capacity(trace, config: SimConfig | None = None, *, attainment: float = 0.95,
             criterion: str = "attainment", latency=None, resolution: float = 0.01, start: float = 1.0,
             scale_bounds: tuple[float, float] = (1 / 1024, 1024.0), max_probes: int = 60,
             start_summary: dict | None = None, ttft_s: float | None = None,
             tpot_s: float | None = None) -> CapacityResult:
    """Largest arrival-rate scaling of ``trace`` at which ``config`` meets the SLA criterion.

    See the module docstring for the search and the criteria.  ``start_summary``
    is the summary of a simulation already run at ``start`` with the same
    config and latency model (a sweep's replay); it serves as the first probe
    instead of simulating that load again.  Raises
    :class:`CapacityError` when even the slowest scaling in ``scale_bounds``
    fails.  If even the fastest passes, the result has ``bounded=False``.
    """
    cfg = config or SimConfig()
    if criterion not in CRITERIA:
        raise ValueError(f"criterion: unknown {criterion!r}; allowed: {', '.join(CRITERIA)}")
    if criterion in ("attainment", "slo") and not 0 < attainment <= 1:
        raise ValueError(f"attainment must be in (0, 1], got {attainment!r}")
    if criterion != "slo" and (ttft_s is not None or tpot_s is not None):
        raise ValueError("ttft_s/tpot_s are limits of criterion='slo'; pass criterion='slo' to use them")
    if not 0 < resolution < 1:
        raise ValueError(f"resolution must be in (0, 1) (relative gap between pass and fail), got {resolution!r}")
    low, high = scale_bounds
    if not 0 < low <= start <= high:
        raise ValueError(f"need 0 < scale_bounds[0] <= start <= scale_bounds[1], got {scale_bounds}, start={start}")
    if len(trace) < 2 or trace.mean_rate_rps <= 0 or not math.isfinite(trace.mean_rate_rps):
        raise ValueError("capacity needs a trace of at least 2 requests spread over time")
    if criterion != "slo" and get_scheduler(cfg.scheduler).engine == "continuous":
        raise ValueError(f"{cfg.scheduler} is a continuous scheduler, judged on TTFT and TPOT: use "
                         "capacity(..., criterion='slo', ttft_s=..., tpot_s=..., attainment=...)")
    if criterion == "slo":
        cfg, latency, ceiling = _slo_setup(trace, cfg, latency, ttft_s, tpot_s)
        target = needed = attainment
    else:
        target = attainment if criterion == "attainment" else cfg.d_sla_s
        latency = latency or LatencyModel.default()
        ceiling = attainable_share(trace, cfg, latency)
        needed = attainment if criterion == "attainment" else 0.99
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

    scaling = start
    if probe(scaling):
        lo, hi = scaling, None
        while hi is None:
            if scaling >= high:
                break
            scaling = min(scaling * 2, high)
            if probe(scaling):
                lo = scaling
            else:
                hi = scaling
    else:
        lo, hi = None, scaling
        while lo is None:
            if scaling <= low:
                worst = probes[-1]
                raise CapacityError(
                    f"{cfg.scheduler} on {cfg.num_gpus} GPU(s) misses the target even at scaling x{low:g} "
                    f"({worst.rate_rps:.4g} requests/s): {criterion} = {worst.value:.4g}, target {target:g}. "
                    "Add GPUs, relax d_sla_s or attainment, or lower scale_bounds[0].")
            scaling = max(scaling / 2, low)
            if probe(scaling):
                lo = scaling
            else:
                hi = scaling

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
                    "bracket the search ended in", cfg.scheduler, cfg.num_gpus, criterion,
                    [(round(p.scaling, 4), p.passed) for p in probes])
    return CapacityResult(
        criterion=criterion, target=target, scaling=lo, capacity_rps=base_rate * lo, value=at.value,
        scaling_above=hi if bounded else math.inf, value_above=above.value if above else math.nan,
        attainable=ceiling, resolution=resolution, bounded=bounded, monotone=monotone, probes=tuple(probes))
