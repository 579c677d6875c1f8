"""Replication statistics: Student-t intervals, checked by hand and by their coverage of a known answer."""

import math

import numpy as np
import pandas as pd
import pytest

import workbench as wb
from workbench.study.fidelity import validation as wv
from workbench.study.store.replications import (replication_seeds, summarize_replications, t_half_width)


def test_half_width_by_hand():
    # two samples 1 and 3: mean 2, s = sqrt(2), t(0.975, 1) = 12.7062 -> 12.7062 * sqrt(2) / sqrt(2)
    assert t_half_width([1.0, 3.0]) == pytest.approx(12.7062047, rel=1e-6)
    # five samples 1..5: s = sqrt(2.5), t(0.975, 4) = 2.7764451
    assert t_half_width([1, 2, 3, 4, 5]) == pytest.approx(2.7764451 * math.sqrt(2.5) / math.sqrt(5), rel=1e-6)
    assert math.isnan(t_half_width([4.2]))                  # one run: no interval, not zero
    assert math.isnan(t_half_width([4.2, float("nan")]))    # NaNs are not samples


def test_summary_keeps_constant_columns_and_counts():
    rows = pd.DataFrame({"scheduler": ["a", "a", "a", "b", "b"], "seed": [0, 1, 2, 0, 1],
                         "num_gpus": [4] * 5, "goodput_rps": [1.0, 2.0, 3.0, 10.0, 10.0]})
    out = summarize_replications(rows, by=["scheduler"], metrics=["goodput_rps"]).set_index("scheduler")
    assert out.loc["a", "goodput_rps"] == 2.0
    half = 4.30265273 * 1.0 / math.sqrt(3)       # t(0.975, 2) * s / sqrt(3), s = 1
    assert out.loc["a", "goodput_rps_ci95_low"] == 0.0            # 2 - 2.48 < 0: a goodput is never negative
    assert out.loc["a", "goodput_rps_ci95_high"] == pytest.approx(2.0 + half, rel=1e-6)
    assert out.loc["b", "goodput_rps_ci95_low"] == out.loc["b", "goodput_rps_ci95_high"] == 10.0
    assert list(out["replications"]) == [3, 2]
    assert (out["num_gpus"] == 4).all() and "seed" not in out     # the seed varies: not a test property


def test_seeds():
    assert replication_seeds(42, 3) == [42, 43, 44]
    assert replication_seeds(7, 1) == [7]                  # one replication = the single-seed run
    with pytest.raises(ValueError, match="replications"):
        replication_seeds(0, 0)


@pytest.mark.slow
def test_interval_covers_the_md1_mean_wait_about_95_percent_of_the_time():
    """100 repetitions of a 20-replication experiment on M/D/1 (rho = 0.5): the 95% interval of the mean
    wait must contain Pollaczek-Khinchine's value in roughly 95 of them.  With a correct interval the
    count is Binomial(100, 0.95): at least 89 with probability 0.99; a standard error mistaken for a
    standard deviation (or a z where t belongs with few runs) falls far below."""
    service_s, rho, n = 1.0, 0.5, 4_000
    truth = wv.md1_wait_s(rho / service_s, service_s)
    latency = wb.LatencyModel(base_s=service_s, per_token_s=0.0, batch_penalty=0.0)
    cfg = wb.SimConfig(scheduler="static_fifo", num_gpus=1, batch_size=1)
    covered = 0
    for repetition in range(100):
        waits = []
        for replication in range(20):
            rng = wv.case_rng(2024, repetition, replication)
            trace = wv.make_trace(wv.poisson_arrivals_s(rho / service_s, n, rng), np.ones(n, np.int32),
                                  source="M/D/1 coverage")
            res = wb.simulate(trace, cfg, latency=latency)
            waits.append(float(np.mean(res.start_s - res.arrival_s)))
        half = t_half_width(waits)
        covered += abs(np.mean(waits) - truth) <= half
    print(f"covered {covered} of 100")
    assert 89 <= covered <= 100, f"the 95% interval covered the true mean wait in {covered} of 100 repetitions"


def test_intervals_respect_the_range_of_each_quantity():
    # a share near 0 and near 1, a throughput at the offered rate, a capacity near 0: the t interval alone would
    # leave the range; cut, it does not, and the mean is still inside it
    from workbench.study.store.replications import interval, metric_range

    assert metric_range("sla_violation_rate") == (0.0, 1.0) and metric_range("slo_attainment") == (0.0, 1.0)
    assert metric_range("throughput_rps") == (0.0, "offered_rps") and metric_range("capacity_rps")[1] == math.inf
    rows = pd.DataFrame({"test": "a", "sla_violation_rate": [0.001, 0.05], "slo_attainment": [0.999, 0.95],
                         "throughput_rps": [9.9, 10.0], "offered_rps": [10.0, 10.0], "capacity_rps": [0.1, 3.0]})
    out = summarize_replications(rows, by=["test"], metrics=["sla_violation_rate", "slo_attainment",
                                                            "throughput_rps", "capacity_rps"]).iloc[0]
    assert out["sla_violation_rate_ci95_low"] == 0.0 and out["slo_attainment_ci95_high"] == 1.0
    assert out["throughput_rps_ci95_high"] == 10.0 and out["capacity_rps_ci95_low"] == 0.0
    for metric in ("sla_violation_rate", "slo_attainment", "throughput_rps", "capacity_rps"):
        assert out[f"{metric}_ci95_low"] <= out[metric] <= out[f"{metric}_ci95_high"]
    # inside the range, the interval is Student's: mean +- t(0.975, 4) s / sqrt(5)
    mean, low, high = interval([1, 2, 3, 4, 5], 0.0, math.inf)
    assert (low, high) == pytest.approx((3 - 2.7764451 * math.sqrt(2.5) / math.sqrt(5),
                                         3 + 2.7764451 * math.sqrt(2.5) / math.sqrt(5)), rel=1e-6)
