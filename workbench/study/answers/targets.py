"""The comparisons every answer makes: a share against its target, and one measured value against another.

**Shares are compared as counts.**  A violation rate is a count of requests
divided by the requests offered, and a float can land on either side of a
threshold it equals (``1 - 0.95`` is ``0.050000000000000044``).  So every
threshold is compared on counts: :func:`count_of` recovers the count behind a
share measured on ``requests`` requests (the mean of integer counts over
``replications`` seeds: a multiple of ``1 / replications``), and the allowed
count is the target written as the decimal it was given as (:func:`exact`:
``0.9`` is ``9/10``) times the requests, an exact fraction.

**A difference is called only beyond the resolution and the noise.**  A
capacity is a point ``c`` of the search's grid ``x (1 + resolution)^k``: the
true crossing lies in ``[c, c x (1 + resolution))`` (wider when the search
stopped before neighbouring grid points: ``capacity_scaling_above``).  With
replications the mean has a 95% interval over the seeds.  A value is above
another only when its lower bound (the interval's low end, or ``c``) lies
above the other's upper bound (the interval's high end, or ``c``, times the
grid width): two capacities one grid step apart are *tied within resolution*.
One seed gives no noise estimate: then only the resolution separates values,
and the answers say so.
"""

from __future__ import annotations

import math
from fractions import Fraction

import pandas as pd

DEFAULT_TARGET = 0.9          # share of requests that must meet the SLA (the capacity search's target)
DEFAULT_RESOLUTION = 0.01     # the capacity search's grid step


def exact(value: float) -> Fraction:
    """The decimal a float was written as, exactly: ``exact(0.05) == Fraction(1, 20)``."""
    return Fraction(repr(float(value)))


def count_of(share: float, requests: int, replications: int = 1) -> Fraction:
    """The count behind ``share`` measured on ``requests`` requests: ``share x requests`` rounded to the nearest
    multiple of ``1 / replications`` (a mean over seeds of integer counts)."""
    reps = max(int(replications), 1)
    return Fraction(round(Fraction(float(share)) * int(requests) * reps), reps)


def allowed_violations(requests: int, target: float) -> Fraction:
    """How many of ``requests`` may miss the SLA when ``target`` of them must meet it: ``(1 - target) x requests``,
    exactly."""
    return (1 - exact(target)) * int(requests)


def meets_target(violation_rate: float, requests: int, target: float, replications: int = 1) -> bool | None:
    """Whether at least ``target`` of ``requests`` met the SLA, compared as counts (None when unknown)."""
    if violation_rate is None or requests is None or _missing(violation_rate) or _missing(requests):
        return None
    return count_of(violation_rate, requests, replications) <= allowed_violations(requests, target)


def _missing(value) -> bool:
    try:
        return not math.isfinite(float(value))
    except (TypeError, ValueError):
        return True


def row_target(rows: pd.DataFrame | pd.Series | dict | None, default: float = DEFAULT_TARGET) -> float:
    """The SLA target of result rows: their ``capacity_target`` (the share the capacity search required), else
    ``default``."""
    if rows is None:
        return default
    value = rows.get("capacity_target") if hasattr(rows, "get") else None
    if isinstance(value, pd.Series):
        value = pd.to_numeric(value, errors="coerce").dropna()
        return float(value.iloc[0]) if not value.empty else default
    return default if value is None or _missing(value) else float(value)


def replications_of(row) -> int:
    """How many seeds a (summarised) row averages: its ``replications``, else 1."""
    value = row.get("replications") if hasattr(row, "get") else None
    return 1 if value is None or _missing(value) else int(value)


def meets_row(row, target: float | None = None) -> bool | None:
    """:func:`meets_target` of one result row (``sla_violation_rate`` of its ``offered`` requests, else
    ``num_requests``)."""
    requests = row.get("offered") if "offered" in row and not _missing(row.get("offered")) else row.get("num_requests")
    target = row_target(row) if target is None else target
    return meets_target(row.get("sla_violation_rate"), requests, target, replications_of(row))


def meets_column(rows: pd.DataFrame, target: float | None = None) -> pd.Series:
    """:func:`meets_row` of every row (a boolean Series; False where unknown)."""
    return pd.Series([bool(meets_row(r, target)) for _, r in rows.iterrows()], index=rows.index, dtype=bool)


# --------------------------------------------------------------------------- measured values with their bounds


def bounds(value: float, *, low: float = math.nan, high: float = math.nan, width: float = 1 + DEFAULT_RESOLUTION,
           scale: float = 1.0) -> tuple[float, float]:
    """(lower, upper) bound of a capacity-like value: the 95% interval over seeds when there is one, else the
    value; the upper end widened by the grid ``width`` (the true crossing lies up to one grid step above).
    ``scale`` divides everything (capacity per GPU: the GPU count)."""
    lower = low if not _missing(low) else value
    upper = high if not _missing(high) else value
    return float(lower) / scale, float(upper) * float(width) / scale


def row_bounds(row, column: str = "capacity_rps", scale: float = 1.0) -> tuple[float, float]:
    """:func:`bounds` of a result row's ``column`` (its ``_ci95_low`` / ``_ci95_high`` and its search's grid
    width: ``capacity_scaling_above / capacity_scaling`` when wider than one step)."""
    def get(name):
        value = row.get(name) if hasattr(row, "get") else None
        return math.nan if value is None or _missing(value) else float(value)

    resolution = get("capacity_resolution")
    width = 1 + (resolution if math.isfinite(resolution) else DEFAULT_RESOLUTION)
    lo, hi = get("capacity_scaling"), get("capacity_scaling_above")
    if math.isfinite(lo) and math.isfinite(hi) and lo > 0 and hi / lo > width:
        width = hi / lo
    return bounds(get(column), low=get(f"{column}_ci95_low"), high=get(f"{column}_ci95_high"), width=width,
                  scale=scale)


# a relative slack for float noise in grid points (1.01^k computed two ways): far below one grid step
_SLACK = 1e-9


def above(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether the value with bounds ``a`` is above the one with bounds ``b`` beyond resolution and noise."""
    return a[0] > b[1] * (1 + _SLACK)


def tied_with_best(values: dict, value_bounds: dict) -> list:
    """The keys of ``values`` no other key lies :func:`above` (tied with the highest within resolution and
    noise), in the order of ``values``; keys whose value is missing are left out."""
    keys = [k for k, v in values.items() if not _missing(v)]
    return [k for k in keys if not any(above(value_bounds[o], value_bounds[k]) for o in keys if o != k)]


def resolution_text(replications: int) -> str:
    """What separates two values, in words: the grid (one seed) or the grid and the seeds' 95% intervals."""
    return ("the search's resolution (one seed: no noise estimate)" if replications <= 1
            else f"the search's resolution and the 95% intervals over {replications} seeds")


__all__ = ["DEFAULT_RESOLUTION", "DEFAULT_TARGET", "above", "allowed_violations", "bounds", "count_of", "exact",
           "meets_column", "meets_row", "meets_target", "resolution_text", "row_bounds", "row_target",
           "tied_with_best"]
