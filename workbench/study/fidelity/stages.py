"""Load stages of a measured run: where its arrival rate changes, found from the arrivals or given.

Serving benchmarks drive a server in *stages* (a rate sweep: 2 requests/s for five minutes, then 4, then 8),
and a stage is the unit a calibration target is measured on: the mean TPOT of a stage at 2 requests/s says
what a decode step costs at that stage's batch size, the next stage's at a larger one, and only the two
together separate a step's fixed cost from its per-request cost.

:func:`detect_stages` finds the changes from the arrival times alone, as changes in the rate of a Poisson
process (the arrivals of a rate-driven benchmark): binary segmentation on the exponential likelihood of the
gaps between arrivals (Scott and Knott's binary segmentation; the segment cost is the negative Poisson
log-likelihood at the segment's maximum-likelihood rate, ``-k log(k / T) + k`` for ``k`` gaps summing to
``T`` seconds).  A split is kept when it raises the log-likelihood by more than ``penalty * log(n)``
(BIC-style, ``n`` gaps), both sides hold at least ``min_requests`` requests, and their rates differ by at
least ``min_rate_ratio``: a stage is a change a user would call one, not a fluctuation of Poisson noise.
The defaults were chosen by simulation (``tests/test_calibrate.py`` keeps the check): no split in 300
constant-rate Poisson runs each of 100, 1,000 and 10,000 requests, and a doubling of the rate found in
89% of runs with 100 requests on each side, in every run from 300 a side.
"""

from __future__ import annotations

import math

import numpy as np

from workbench import checks

MIN_STAGE_REQUESTS = 30
PENALTY = 1.5
MIN_RATE_RATIO = 1.25


def _segment_loglik(count: np.ndarray, duration: np.ndarray) -> np.ndarray:
    """Maximum log-likelihood of ``count`` exponential gaps summing to ``duration`` (rate count / duration)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        value = count * np.log(count / duration) - count
    return np.where(count > 0, value, 0.0)


def detect_stages(arrival_s, *, min_requests: int = MIN_STAGE_REQUESTS, penalty: float = PENALTY,
                  min_rate_ratio: float = MIN_RATE_RATIO) -> np.ndarray:
    """Times (seconds) where the arrival rate changes, sorted; empty for a run at one rate (module docstring).

    A stage starts at its first request's arrival: a returned time is the arrival of the first request of a
    new stage.
    """
    arrival = np.sort(checks.array(arrival_s, "arrival_s", low=0, what="seconds"))
    min_requests = checks.integer(min_requests, "min_requests", low=2)
    penalty = checks.number(penalty, "penalty", low=0)
    min_rate_ratio = checks.number(min_rate_ratio, "min_rate_ratio", low=1)
    n = arrival.size
    if n < 2 * min_requests:
        return np.zeros(0)
    gaps = np.diff(arrival)
    # simultaneous arrivals (timestamps at a coarse resolution) would make a segment's duration 0: floor each
    # gap at a small share of the mean gap
    resolution = max(float(gaps.mean()) * 1e-3, 1e-9)
    gaps = np.maximum(gaps, resolution)
    cumulative = np.concatenate([[0.0], np.cumsum(gaps)])
    threshold = penalty * math.log(gaps.size)
    changes: list[int] = []            # gap indices where a new stage starts (request index = gap index + 1)
    pending = [(0, gaps.size)]         # segments of gaps [lo, hi)
    while pending:
        lo, hi = pending.pop()
        # a split after gap m (m in [lo + min, hi - min]) puts requests lo..m in one stage, m+1.. in the next
        m = np.arange(lo + min_requests - 1, hi - min_requests + 1)
        if m.size == 0:
            continue
        k_left, t_left = (m - lo).astype(np.float64), cumulative[m] - cumulative[lo]
        k_right, t_right = (hi - m).astype(np.float64), cumulative[hi] - cumulative[m]
        whole = _segment_loglik(np.array([hi - lo], np.float64), np.array([cumulative[hi] - cumulative[lo]]))[0]
        gain = _segment_loglik(k_left, t_left) + _segment_loglik(k_right, t_right) - whole
        rate_left, rate_right = k_left / t_left, k_right / t_right
        ratio = np.maximum(rate_left / rate_right, rate_right / rate_left)
        gain = np.where(ratio >= min_rate_ratio, gain, -np.inf)
        best = int(np.argmax(gain))
        if gain[best] <= threshold:
            continue
        split = int(m[best])
        changes.append(split)
        pending += [(lo, split), (split, hi)]
    # a change after gap m: the new stage starts at request m + 1 (gap m runs from request m to m + 1)
    return np.sort(arrival[np.asarray(changes, dtype=np.int64) + 1]) if changes else np.zeros(0)


def stage_index(arrival_s, boundaries_s) -> np.ndarray:
    """The stage of each request (0, 1, ...): the number of boundaries at or before its arrival."""
    return np.searchsorted(np.asarray(boundaries_s, dtype=np.float64), np.asarray(arrival_s, dtype=np.float64),
                           side="right").astype(np.int64)


def check_boundaries(boundaries_s, name: str, arrival_s) -> np.ndarray:
    """Stage boundaries given by a user: seconds, strictly increasing, inside the run (each stage holds a request)."""
    values = checks.array(boundaries_s, name, low=0, what="seconds (the times where a new load stage starts)")
    if values.size and np.any(np.diff(values) <= 0):
        raise ValueError(f"{name}: stage boundaries must increase strictly, got {values.tolist()}")
    arrival = np.asarray(arrival_s, dtype=np.float64)
    counts = np.bincount(stage_index(arrival, values), minlength=values.size + 1)
    if values.size and (counts == 0).any():
        empty = int(np.flatnonzero(counts == 0)[0])
        raise ValueError(f"{name}: stage {empty} (from {([0.0] + values.tolist())[empty]:g} s) holds no request of "
                         f"the run (arrivals {arrival.min():g} s to {arrival.max():g} s); give boundaries inside the "
                         "run, one per change of rate")
    return values


__all__ = ["MIN_RATE_RATIO", "MIN_STAGE_REQUESTS", "PENALTY", "check_boundaries", "detect_stages", "stage_index"]
