"""Equal-mass (quantile) bin edges over predicted output lengths.

Lemma 4.1 of Multi-Bin Batching (arXiv 2412.04504): for a fixed number of
bins, throughput is maximised when every bin holds the same probability mass.
Bin ``i`` is the half-open interval ``[edges[i], edges[i + 1])``.

Integer lengths repeat a lot, so exact quantiles often coincide.  Cuts are
therefore only placed *between distinct values*: each cut is the distinct
value whose empirical CDF is nearest to ``i / k``, subject to the cuts being
strictly increasing.  Every bin is then non-empty, and when fewer than ``k``
distinct values exist each value gets its own bin and a ``BinningWarning``
says how many bins there really are.
"""

from __future__ import annotations

import logging
import warnings
from collections import OrderedDict

import numpy as np

log = logging.getLogger(__name__)


class BinningWarning(UserWarning):
    """Fewer bins than asked for could be formed."""


def equal_mass_edges(lengths, k: int) -> np.ndarray:
    """Strictly increasing edges ``e_0 < ... < e_m`` (``m <= k`` bins) covering every length.

    ``e_0 = min(lengths)`` and ``e_m = max(lengths) + 1``, so ``np.searchsorted(edges,
    x, side="right") - 1`` maps every sample to a bin in ``0..m-1``.
    """
    from workbench import checks

    k = checks.integer(k, "k (number of bins)", low=1)
    integral = np.issubdtype(np.asarray(lengths).dtype, np.integer)
    values = checks.array(lengths, "lengths")
    if values.size == 0:
        raise ValueError("lengths: must be a non-empty 1-D array, got none")
    uniq, counts = np.unique(values, return_counts=True)
    # the upper edge in float64 (an int32 maximum + 1 would wrap round to a negative edge)
    upper = uniq[-1] + 1.0 if integral else np.nextafter(uniq[-1], np.inf)
    m = uniq.size
    if m < k:
        warnings.warn(f"only {m} distinct lengths: returning {m} bins instead of k={k}", BinningWarning,
                      stacklevel=2)
        return np.append(uniq, upper).astype(np.float64)
    # cdf_before[j] = share of samples strictly below uniq[j]; a cut at uniq[j] splits there.
    cdf_before = np.concatenate(([0.0], np.cumsum(counts)[:-1])) / values.size
    cuts = np.empty(k - 1, dtype=np.int64)
    prev = 0
    for i in range(1, k):
        lo = prev + 1                 # strictly after the previous cut (non-empty bin)
        hi = m - (k - i)              # leave one distinct value for each later bin
        j = lo + int(np.argmin(np.abs(cdf_before[lo:hi + 1] - i / k)))
        cuts[i - 1] = j
        prev = j
    return np.concatenate(([uniq[0]], uniq[cuts], [upper])).astype(np.float64)


def assign_bins(values, edges: np.ndarray) -> np.ndarray:
    """Bin index of each value (values outside the edges go to the first / last bin)."""
    idx = np.searchsorted(edges, np.asarray(values), side="right") - 1
    return np.clip(idx, 0, len(edges) - 2).astype(np.int32)


class EdgeCache:
    """Bounded in-process cache of edges keyed by (trace fingerprint, predictor, k, sample)."""

    def __init__(self, maxsize: int = 256):
        self._store: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple, compute) -> np.ndarray:
        if key in self._store:
            self.hits += 1
            self._store.move_to_end(key)
            return self._store[key]
        self.misses += 1
        edges = compute()
        edges.flags.writeable = False
        self._store[key] = edges
        if len(self._store) > self.maxsize:
            self._store.popitem(last=False)
        return edges

    def clear(self) -> None:
        self._store.clear()
        self.hits = self.misses = 0


EDGE_CACHE = EdgeCache()
