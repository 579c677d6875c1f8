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
from scipy.special import stdtrit   # Student t quantiles (scipy.stats costs ~0.7 s to import in every kernel)

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
    return float(stdtrit(x.size - 1, 0.5 + confidence / 2) * x.std(ddof=1) / math.sqrt(x.size))


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
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if rows.empty:
        return pd.DataFrame(columns=[*by, *metrics, "replications"])
    rows = rows.reset_index(drop=True)
    numeric = rows[metrics].apply(pd.to_numeric, errors="coerce")
    keys = rows[by].astype(object).where(rows[by].notna(), "\0nan")   # NaN keys group together, as dropna=False
    group = keys.apply(tuple, axis=1) if len(by) > 1 else keys[by[0]]
    codes, firsts = pd.factorize(group)
    order = pd.Series(codes).drop_duplicates().index                   # first row of each group, in row order
    grouped = numeric.groupby(codes, sort=False)
    mean, std, count = grouped.mean(), grouped.std(ddof=1), grouped.count()
    n = grouped.size()
    t = pd.DataFrame(stdtrit(np.maximum(count.to_numpy() - 1, 1), 0.5 + confidence / 2), index=count.index,
                     columns=count.columns)
    half = (t * std / np.sqrt(count)).where(count >= 2)
    offered = (pd.to_numeric(rows["offered_rps"], errors="coerce").groupby(codes, sort=False).mean()
               if "offered_rps" in rows else pd.Series(math.inf, index=mean.index))
    others = [c for c in rows.columns if c not in by and c not in metrics]
    first = rows.loc[order].set_index(pd.Index(codes[order]))
    if others and n.max() > 1:
        constant = rows[others].astype(object).groupby(codes, sort=False).nunique(dropna=False) <= 1
        kept = first[others].where(constant)
        kept = kept[[c for c in others if bool(constant[c].any())]]
    else:
        kept = first[others]
    # the interval, cut to each quantity's range (one frame operation for every metric)
    ranges = [metric_range(m) for m in metrics]
    lows = pd.Series([r[0] for r in ranges], index=metrics)
    highs = pd.Series([r[1] if r[1] != "offered_rps" else math.inf for r in ranges], index=metrics)
    low_df = (mean - half).clip(lower=lows, axis=1).where(half.notna())
    high_df = (mean + half).clip(upper=highs, axis=1)
    up_to_offered = [m for m, r in zip(metrics, ranges) if r[1] == "offered_rps"]
    if up_to_offered:
        high_df[up_to_offered] = np.minimum(high_df[up_to_offered].to_numpy(), offered.to_numpy()[:, None])
    high_df = high_df.where(half.notna())
    out = pd.concat([first[by], kept, mean, low_df.add_suffix(LOW), high_df.add_suffix(HIGH),
                     n.rename("replications")], axis=1)
    order_columns = [*by, *kept.columns, *[c for m in metrics for c in (m, f"{m}{LOW}", f"{m}{HIGH}")],
                     "replications"]
    # copied: one block per dtype, not one per concatenated piece (pandas warns on adding a column to 100+ blocks)
    return out.loc[codes[order], order_columns].reset_index(drop=True).copy()


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
    from workbench import checks

    replications = checks.integer(replications, "replications", low=1)
    return [checks.integer(base_seed, "seed", low=0) + r for r in range(replications)]
