"""Replications: the same test under several seeds, summarised as a mean and a 95% confidence interval.

A replication re-draws everything random in a test (the synthetic trace's
generator and the simulation's own seed), so its results are independent
samples of the metric.  With ``n`` replications of a metric with sample mean
``m`` and sample standard deviation ``s``, the two-sided 95% interval is
``m +- t(0.975, n - 1) * s / sqrt(n)`` (Student t): exact for normal samples,
close for averages over many requests, and honest about small ``n`` (with
``n = 2`` the factor is 12.7, not 1.96).  One replication has no interval
(half-width NaN), and the tables say so rather than showing 0.

:func:`summarize_replications` turns one row per (test, seed) into one row per
test with ``<metric>`` (the mean), ``<metric>_ci95`` (the half-width) and
``replications`` (how many seeds it rests on).
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95


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


def mean_and_half_width(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    x = np.asarray(values, dtype=float)
    finite = x[np.isfinite(x)]
    return (float(finite.mean()) if finite.size else math.nan), t_half_width(finite, confidence)


def summarize_replications(rows: pd.DataFrame, *, by: Iterable[str], metrics: Iterable[str],
                           confidence: float = CONFIDENCE) -> pd.DataFrame:
    """One row per group of ``by`` (a test without its seed): each metric's mean and ``_ci95`` half-width.

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
        for metric in metrics:
            mean, half = mean_and_half_width(pd.to_numeric(group[metric], errors="coerce"), confidence)
            record[metric] = mean
            record[f"{metric}_ci95"] = half
        record["replications"] = len(group)
        out.append(record)
    return pd.DataFrame(out)


def replication_seeds(base_seed: int, replications: int) -> list[int]:
    """The seeds of ``replications`` runs: ``base_seed``, ``base_seed + 1``, ... (replication 0 is the
    single-seed run, so ``replications=1`` reproduces earlier results exactly)."""
    from workbench import checks

    replications = checks.integer(replications, "replications", low=1)
    return [checks.integer(base_seed, "seed", low=0) + r for r in range(replications)]
