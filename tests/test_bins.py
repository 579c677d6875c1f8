import re
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.sim.bins import EDGE_CACHE, BinningWarning, assign_bins, equal_mass_edges


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=400), st.integers(1, 40))
def test_edges_monotone_cover_and_every_bin_has_mass(lengths, k):
    values = np.array(lengths)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BinningWarning)
        edges = equal_mass_edges(values, k)
    assert np.all(np.diff(edges) > 0)
    assert edges[0] <= values.min() and edges[-1] > values.max()
    n_bins = len(edges) - 1
    assert n_bins == min(k, np.unique(values).size)
    counts = np.bincount(assign_bins(values, edges), minlength=n_bins)
    assert counts.size == n_bins and np.all(counts > 0)


def test_fewer_distinct_values_than_k_warns_and_returns_fewer_bins():
    values = np.array([5, 5, 5, 7, 7, 9] * 100)
    with pytest.warns(BinningWarning, match="only 3 distinct lengths"):
        edges = equal_mass_edges(values, 8)
    assert list(edges) == [5, 7, 9, 10]


def test_uniform_lengths_give_paper_edges():
    # Lemma 4.1: for the uniform law the edges are l_min + i/k (l_max - l_min)
    values = np.random.default_rng(0).integers(100, 1100, 400_000)
    edges = equal_mass_edges(values, 4)
    np.testing.assert_allclose(edges, [100, 350, 600, 850, 1100], atol=6)
    shares = np.bincount(assign_bins(values, edges)) / values.size
    np.testing.assert_allclose(shares, 0.25, atol=0.005)


def test_heavy_repeats_still_give_k_bins_with_near_equal_mass():
    rng = np.random.default_rng(1)
    values = np.concatenate([np.full(5000, 1), rng.integers(2, 400, 5000)])  # half the mass on one value
    edges = equal_mass_edges(values, 8)
    assert len(edges) == 9
    counts = np.bincount(assign_bins(values, edges))
    assert counts[0] == 5000 and np.all(counts[1:] > 0)


@pytest.mark.parametrize("k", [0, -1, 2.5, True])
def test_bad_k_is_refused(k):
    with pytest.raises(ValueError, match="k \\(number of bins\\)"):
        equal_mass_edges([1, 2, 3], k)


def test_bad_lengths_are_refused():
    with pytest.raises(ValueError, match="non-empty"):
        equal_mass_edges([], 2)
    with pytest.raises(ValueError, match=re.escape("lengths[1] = nan is not finite")):
        equal_mass_edges([1.0, np.nan], 2)


def test_edge_cache_computes_each_key_once():
    EDGE_CACHE.clear()
    calls = []

    def compute():
        calls.append(1)
        return np.array([0.0, 1.0])

    a = EDGE_CACHE.get(("fp", "oracle", 1), compute)
    b = EDGE_CACHE.get(("fp", "oracle", 1), compute)
    assert a is b and len(calls) == 1 and EDGE_CACHE.hits == 1
    assert not a.flags.writeable
