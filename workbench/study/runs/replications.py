"""Replications: the same test under several seeds, summarised as a mean and a 95% confidence interval.

A replication re-draws everything random in a test (the synthetic trace's
generator and the simulation's own seed), so its results are independent
samples of the metric.  With ``n`` replications of a metric with sample mean
``m`` and sample standard deviation ``s``, the interval is Student's
``m +- t(0.975, n - 1) * s / sqrt(n)`` **cut to the range the quantity can
take** (:func:`metric_range`): a share (SLA violation rate, attainment,
utilisation) to [0, 1], a replayed throughput or goodput to [0, the offered
rate], every other metric of the workbench (times, rates, capacities, counts)
to [0, inf).  The true mean lies in that range, so cutting the interval never
excludes it: the coverage is the t interval's (about 95%: a test checks it on
M/D/1), and an error bar never shows a negative capacity, a violation share
above 1 or a throughput beyond the offered load.  (A bootstrap percentile
interval would respect the range too, but with the 2-10 replications a run
affords it covers the mean far less often than it claims: with two it is the
range of the two samples, a 50% interval.)  One replication has no interval
(NaN), and the tables say so rather than showing 0.

:func:`summarize_replications` turns one row per (test, seed) into one row per
test with ``<metric>`` (the mean), ``<metric>_ci95_low`` and
``<metric>_ci95_high`` (the interval) and ``replications`` (how many seeds it
rests on).
"""

from __future__ import annotations

import math
import re
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95
LOW, HIGH = "_ci95_low", "_ci95_high"
INTERVAL_TEXT = ("95% Student-t interval of the mean over the seeds, cut to the quantity's range (shares to [0, 1], "
                 "throughput and goodput to the offered rate, everything else to >= 0)")

_SHARES = re.compile(r"(violation_rate|attainment|utilization|_share|hit_rate|efficiency_share)")
_UP_TO_OFFERED = ("throughput_rps", "goodput_rps", "deadline_goodput_rps")


def metric_range(column: str) -> tuple[float, float | str]:
    """(lowest, highest) value ``column`` can take: (0, 1) for a share, (0, "offered_rps") for a replayed
    throughput or goodput (at most the rate offered), (0, inf) for every other metric (times, rates,
    capacities, tokens, counts: none is negative)."""
    if _SHARES.search(column):
        return 0.0, 1.0
    if column in _UP_TO_OFFERED:
        return 0.0, "offered_rps"
    return 0.0, math.inf


def t_half_width(values: Sequence[float], confidence: float = CONFIDENCE) -> float:
    """Half-width of the Student-t confidence interval of the mean of ``values`` (NaNs ignored).

    NaN with fewer than two finite values: one sample says nothing about spread.
    """
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size < 2:
        return math.nan
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    return float(stats.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))


def interval(values: Sequence[float], low: float = -math.inf, high: float = math.inf,
             confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(mean, lower, upper): the Student-t interval of the mean of ``values`` cut to [``low``, ``high``]; the
    bounds are NaN with fewer than two finite values."""
    x = np.asarray(values, dtype=float)
    finite = x[np.isfinite(x)]
    mean = float(finite.mean()) if finite.size else math.nan
    half = t_half_width(finite, confidence)
    if not math.isfinite(half):
        return mean, math.nan, math.nan
    return mean, max(mean - half, low), min(mean + half, high)


def mean_and_half_width(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    x = np.asarray(values, dtype=float)
    finite = x[np.isfinite(x)]
    return (float(finite.mean()) if finite.size else math.nan), t_half_width(finite, confidence)


def summarize_replications(rows: pd.DataFrame, *, by: Iterable[str], metrics: Iterable[str],
                           confidence: float = CONFIDENCE) -> pd.DataFrame:
    """One row per group of ``by`` (a test without its seed): each metric's mean and its interval
    (``<metric>_ci95_low``, ``<metric>_ci95_high``, cut to :func:`metric_range`).

    Non-metric columns that are constant within a group are kept; the count of
    rows behind each group is ``replications``.
    """
    by, metrics = list(by), [m for m in metrics if m in rows.columns]
    missing = [c for c in by if c not in rows.columns]
    if missing:
        raise ValueError(f"summarize_replications: grouping columns {missing} are not in the rows")
    out = []
    for key, group in rows.groupby(by, sort=False, dropna=False):
        record = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        for column in group.columns:
            if column in record or column in metrics:
                continue
            values = group[column]
            if values.nunique(dropna=False) == 1:
                record[column] = values.iloc[0]
        offered = (float(pd.to_numeric(group["offered_rps"], errors="coerce").mean())
                   if "offered_rps" in group else math.inf)
        for metric in metrics:
            low, high = metric_range(metric)
            high = offered if high == "offered_rps" else high
            mean, lo, hi = interval(pd.to_numeric(group[metric], errors="coerce"), low,
                                    high if math.isfinite(high) else math.inf, confidence)
            record[metric] = mean
            record[f"{metric}{LOW}"] = lo
            record[f"{metric}{HIGH}"] = hi
        record["replications"] = len(group)
        out.append(record)
    return pd.DataFrame(out)


def error_bars(rows: pd.DataFrame, column: str, scale=1.0):
    """``yerr`` for matplotlib (2 x n: distance down, distance up) from ``<column>_ci95_low/_high``, or None
    when the rows carry no interval (one replication)."""
    lo, hi = f"{column}{LOW}", f"{column}{HIGH}"
    if lo not in rows or hi not in rows:
        return None
    y = rows[column].to_numpy(dtype=float)
    low = rows[lo].to_numpy(dtype=float)
    high = rows[hi].to_numpy(dtype=float)
    if not (np.isfinite(low).any() or np.isfinite(high).any()):
        return None
    scale = np.asarray(scale, dtype=float)
    down = np.nan_to_num((y - low) / scale, nan=0.0)
    up = np.nan_to_num((high - y) / scale, nan=0.0)
    return np.vstack([np.maximum(down, 0.0), np.maximum(up, 0.0)])


def replication_seeds(base_seed: int, replications: int) -> list[int]:
    """The seeds of ``replications`` runs: ``base_seed``, ``base_seed + 1``, ... (replication 0 is the
    single-seed run, so ``replications=1`` reproduces earlier results exactly)."""
    if isinstance(replications, bool) or int(replications) != replications or replications < 1:
        raise ValueError(f"replications must be an integer >= 1, got {replications!r}")
    return [int(base_seed) + r for r in range(int(replications))]
