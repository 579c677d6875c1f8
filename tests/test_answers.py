"""One answer per question (issue 20): one target, counted thresholds, differences beyond resolution, and
sentences true of the rows beside them.  Hand-made rows; every expected value worked out here."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.study.answers import analysis, compare, sentences, targets
from workbench.study.runs.experiments import STEP2, STEP3

STEP1 = analysis.STEP_ORDER[0]


# --------------------------------------------------------------------------- thresholds compare counts


def test_a_share_at_the_boundary_is_compared_as_a_count():
    # 1 - 0.95 is 0.050000000000000044 in floats: 50 of 1,000 requests, exactly the 5% a 95% target allows
    rate = 1 - 0.95
    assert rate > 0.05                                       # the float comparison gets it wrong
    assert targets.count_of(rate, 1_000) == 50
    assert targets.allowed_violations(1_000, 0.95) == 50
    assert targets.meets_target(rate, 1_000, 0.95) is True
    assert targets.meets_target(51 / 1_000, 1_000, 0.95) is False
    # the same at the default 90% target: 100 of 1,000 allowed, 101 not
    assert targets.meets_target(1 - 0.9, 1_000, 0.9) is True
    assert targets.meets_target(0.101, 1_000, 0.9) is False
    # a mean over two seeds of 50 and 51 violations: 50.5 > 50
    assert targets.count_of((0.05 + 0.051) / 2, 1_000, replications=2) == Fraction(101, 2)
    assert targets.meets_target((0.05 + 0.051) / 2, 1_000, 0.95, replications=2) is False
    assert targets.exact(0.9) == Fraction(9, 10)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 10**7), st.data())
def test_count_of_recovers_the_integer_count_behind_any_share(requests, data):
    violations = data.draw(st.integers(0, requests))
    met = requests - violations
    rate = 1.0 - met / requests                 # what the engines compute (1 - slo_attainment)
    assert targets.count_of(rate, requests) == violations
    allowed = data.draw(st.integers(0, requests))
    target = float(Fraction(requests - allowed, requests))
    # exactly "violations <= (1 - target) * requests" in rationals (target as the decimal it prints as)
    assert targets.meets_target(rate, requests, target) is (violations <= (1 - targets.exact(target)) * requests)


def test_breaking_point_is_the_first_volume_that_misses_the_target_counted():
    rows = pd.DataFrame({"label": ["a"] * 3 + ["b"] * 3, "num_requests": [1_000, 10_000, 100_000] * 2,
                         "sla_violation_rate": [1 - 0.9, 0.1001, 0.5, 0.0, 1 - 0.9, 0.04],
                         "capacity_target": 0.9})
    points = analysis.breaking_points(rows)
    assert points["a"]["num_requests"] == 10_000         # 100 of 1,000 is within the 10% allowed; 1,001 of 10,000 not
    assert points["b"]["num_requests"] is None


# --------------------------------------------------------------------------- GPUs needed


def capacity_rows(gpus, caps, offered=2.45, scheduler="s", **extra):
    return pd.DataFrame({"label": [f"{scheduler} ({g} GPUs)" for g in gpus], "scheduler": scheduler,
                         "num_gpus": list(gpus), "capacity_rps": list(caps), "offered_rps": offered,
                         "capacity_criterion": "slo", "capacity_target": 0.9, "capacity_resolution": 0.01,
                         "sla_violation_rate": 0.5, "num_requests": 1_000, "capacity_attainable": 0.99, **extra})


def test_gpus_needed_is_the_smallest_pool_whose_capacity_covers_the_replayed_rate():
    # the case: 32 GPUs sustain 2.96 req/s above the replayed 2.45; 16 sustain 1.9
    rows = capacity_rows((1, 2, 4, 8, 16, 32, 64, 100), (np.nan, np.nan, 0.25, 0.8, 1.9, 2.96, 6.3, 10.1))
    assert analysis.gpus_needed(rows) == 32
    record = analysis.gpus_needed_record(rows)
    assert record["headroom"] == pytest.approx(2.96 / 2.45 - 1)
    assert record["short"] == {"num_gpus": 16, "capacity_rps": 1.9, "shortfall": pytest.approx(1 - 1.9 / 2.45)}
    # exactly the replayed rate covers it; a hair below does not
    assert analysis.gpus_needed(capacity_rows((8, 16), (2.45, 5.0))) == 8
    assert analysis.gpus_needed(capacity_rows((8, 16), (np.nextafter(2.45, 0), 5.0))) == 16
    # no pool covers: None, and the answer says by how much the largest falls short
    none = capacity_rows((1, 2), (0.5, 1.0))
    part = analysis.analyze_step2(none)
    assert part["gpus_needed"] is None
    check = analysis._step2_validity(part)["gpus_needed"]
    assert check["valid"] is False and "more than 2 GPUs" in check["sentence"] and "59% short" in check["sentence"]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.none(), st.floats(0.01, 50)), min_size=1, max_size=8), st.floats(0.1, 20))
def test_gpus_needed_property(caps, offered):
    gpus = [1, 2, 4, 8, 16, 32, 64, 100][:len(caps)]
    rows = capacity_rows(gpus, [np.nan if c is None else c for c in caps], offered=offered)
    covering = [g for g, c in zip(gpus, caps) if c is not None and c >= offered]
    assert analysis.gpus_needed(rows) == (min(covering) if covering else None)


def test_the_step2_answer_is_the_gpus_needed_with_its_headroom_everywhere():
    rows = pd.concat([capacity_rows((8, 16, 32, 64), (0.8, 1.9, 2.96, 6.3), scheduler="multi_bin_dynamic"),
                      capacity_rows((8, 16, 32, 64), (2.93, 6.0, 12.0, 24.5), scheduler="continuous_fcfs")])
    part = analysis.analyze_step2(rows)
    assert part["gpus_needed"] == 32 and part["primary_scheduler"] == "multi_bin_dynamic"
    assert part["gpus_needed_by_scheduler"] == {"multi_bin_dynamic": 32, "continuous_fcfs": 8}
    assert part["headroom_by_scheduler"]["continuous_fcfs"] == pytest.approx(2.93 / 2.45 - 1)
    sentence = analysis.gpus_needed_sentence(part)
    assert sentence.startswith("multi_bin_dynamic needs 32 GPUs") and "2.96 req/s" in sentence
    assert "headroom of 21%" in sentence and "16 GPUs sustain 1.9 req/s (22% short)" in sentence
    assert "between 17 and 32" in sentence
    check = analysis._step2_validity(part)["gpus_needed"]
    assert check["valid"] and check["value"] == 32 and check["sentence"] == sentence


# --------------------------------------------------------------------------- differences beyond resolution


def test_capacities_one_grid_step_apart_are_tied_two_steps_apart_are_not():
    one, two = 1.01, 1.01 ** 2
    assert not targets.above(targets.bounds(10 * one), targets.bounds(10.0))
    assert targets.above(targets.bounds(10 * two), targets.bounds(10.0))
    # with replications the 95% intervals decide: overlapping intervals are a tie however far the means are
    assert not targets.above(targets.bounds(12.0, low=9.0, high=15.0), targets.bounds(10.0, low=9.5, high=10.5))
    assert targets.above(targets.bounds(12.0, low=11.0, high=13.0), targets.bounds(10.0, low=9.5, high=10.5))


def test_most_capacity_per_gpu_and_best_k_give_ties_to_the_smaller_value():
    # per GPU 0.366 and 0.366 x 1.01 (the ranks 1 and 2, 0.366 and 0.370): one grid step apart, tied: the
    # fewer GPUs; two steps apart they are not
    rows = capacity_rows((32, 64, 100), (0.340 * 32, 0.366 * 64, 0.366 * 1.01 * 100))
    assert analysis.gpu_counts_tied_for_capacity_per_gpu(rows) == [64, 100]
    assert analysis.best_gpu_count_by_capacity_per_gpu(rows) == 64
    rows = capacity_rows((32, 64, 100), (0.340 * 32, 0.366 * 64, 0.366 * 1.01 ** 2 * 100))
    assert analysis.best_gpu_count_by_capacity_per_gpu(rows) == 100
    k_rows = pd.DataFrame({"label": list("abcd"), "k_bins": [1, 2, 4, 8], "capacity_criterion": "slo",
                           "capacity_rps": [np.nan, 9.95, 10.0, 8.0], "num_gpus": 8})
    assert analysis.k_tied_for_capacity(k_rows) == [2, 4] and analysis.best_k_by_capacity(k_rows) == 2
    assert analysis.best_k_by_capacity(k_rows.assign(capacity_rps=[np.nan, 9.8, 10.0, 8.0])) == 4
    assert analysis.best_k_by_capacity(k_rows.assign(capacity_rps=np.nan)) is None


def test_best_k_without_capacity_does_not_rank_violation_rates_of_one_seed():
    # 1.17% vs 1.20% from one seed: no noise estimate, so every K that meets the target is tied
    rows = pd.DataFrame({"k_bins": [1, 2, 4], "sla_violation_rate": [0.0120, 0.0117, 0.15], "num_requests": 1_000,
                         "num_gpus": 8})
    answer = analysis.best_k_answer(rows)
    assert answer == {"best_k": 1, "tied": [1, 2], "basis": "replay"}
    # with replications whose intervals do not overlap, the lower violation rate wins
    rows = rows.assign(replications=5, sla_violation_rate_ci95_low=[0.0118, 0.0100, 0.14],
                       sla_violation_rate_ci95_high=[0.0122, 0.0110, 0.16])
    assert analysis.best_k_answer(rows)["best_k"] == 2


# --------------------------------------------------------------------------- step 1: valid means meets the target


def test_step1_best_configuration_that_misses_the_target_is_not_valid():
    rows = pd.DataFrame({"label": ["static_fifo (1 GPU)", "multi_bin_dynamic (4 GPUs)"], "num_requests": 1_000_000,
                         "num_gpus": [1, 4], "scheduler": ["static_fifo", "multi_bin_dynamic"],
                         "sla_violation_rate": [0.97, 0.91], "offered_rps": 2.45, "capacity_criterion": "slo",
                         "capacity_target": 0.9, "capacity_rps": [0.05, 0.25], "goodput_rps": [0.07, 0.22],
                         "capacity_attainable": 0.99})
    part = analysis.analyze_step1(rows)
    assert part["best_config"]["label"] == "multi_bin_dynamic (4 GPUs)" and part["best_config_meets_target"] is False
    check = analysis._step1_validity(part)
    assert check["valid"] is False and check["meets_sla"] is False
    assert "no configuration of step 1 (1, 4 GPUs) keeps 90% of requests within the SLA" in check["sentence"]
    assert "sustains 0.25 req/s" in check["sentence"] and "10% of the replayed rate" in check["sentence"]
    # one that meets the target on fewer GPUs is the answer, and valid
    rows.loc[0, "sla_violation_rate"] = 0.08
    part = analysis.analyze_step1(rows)
    assert part["best_config"]["label"] == "static_fifo (1 GPU)"
    assert analysis._step1_validity(part)["valid"] is True


# --------------------------------------------------------------------------- the comparison ranks what the trace needs


def test_ranking_is_by_gpus_needed_then_capacity_per_gpu_with_ties_within_resolution():
    caps = pd.concat([
        capacity_rows((8, 16, 32), (2.0, 4.4, 9.0), scheduler="static_fifo"),            # needs 16
        capacity_rows((8, 16, 32), (2.5, 5.1, 10.5), scheduler="continuous_fcfs"),       # needs 8
        capacity_rows((8, 16, 32), (2.51, 5.1, 10.6), scheduler="continuous_sla"),       # needs 8, tied with fcfs
        capacity_rows((8, 16, 32), (np.nan, np.nan, 1.0), scheduler="multi_bin_fixed"),  # never covers
    ])[["scheduler", "num_gpus", "capacity_rps", "offered_rps"]]
    ranking = compare.capacity_ranking(caps)
    assert list(ranking["scheduler"]) == ["continuous_sla", "continuous_fcfs", "static_fifo", "multi_bin_fixed"]
    assert list(ranking["rank"]) == [1, 1, 3, 4]
    assert list(ranking["gpus_needed"].astype(object).where(ranking["gpus_needed"].notna(), None)) == [8, 8, 16, None]
    assert list(ranking["distinguishable_from_next"]) == [False, True, True, None]
    assert "tied within the search's resolution (one seed: no noise estimate) with continuous_fcfs" in \
        ranking.loc[0, "note"]
    assert ranking.loc[1, "headroom"] == pytest.approx(2.5 / 2.45 - 1)


def test_break_sentences_say_on_how_many_gpus_and_requests():
    curves = pd.DataFrame({"scheduler": "s", "offered_rps": [0.5, 1.0, 2.0], "attainment": [0.99, 0.95, 0.5]})
    breaks = compare.break_points(curves, 0.9)
    caps = capacity_rows((4, 8), (1.4, 2.6))[["scheduler", "num_gpus", "capacity_rps", "offered_rps"]]
    ranking = compare.capacity_ranking(caps)
    text = compare.break_sentences(breaks, ranking, sla_text="TTFT <= 1 s", curve_gpus=4, curve_requests=20_000,
                                   num_requests=1_000_000, capacities=caps)["s"]
    assert text.startswith("On 4 GPUs, replaying the first 20,000 requests faster or slower, s keeps 90%")
    assert "misses it at 2 req/s" in text and "the same 4 GPUs sustain 1.4 req/s" in text
    assert "all 1,000,000 requests need 8 GPUs of it" in text


# --------------------------------------------------------------------------- sentences true of their rows


def test_an_uptick_is_not_called_flat():
    k = (1, 2, 4, 8, 16, 32)
    rows = pd.DataFrame({"k_bins": k, "num_gpus": 8, "sla_violation_rate": (0.012, 0.012, 0.013, 0.012, 0.012, 0.014),
                         "latency_p99_s": np.linspace(4.0, 1.0, 6), "label": [f"K={v}" for v in k]})
    text = sentences.commentary(rows, STEP3)
    assert "from K = 16 to 32 the violation rate rises by 0.2 points" in text and "flattened" not in text
    assert "one seed: no noise estimate" in text
    assert sentences.change_text(0.012, 0.012) == "does not change"
    assert sentences.change_text(0.02, 0.01) == "falls by 1.0 points"
    assert sentences.change_text(0.010, 0.012, bounds_before=(0.009, 0.011), bounds_after=(0.0105, 0.013)) == \
        "rises by 0.2 points (within the seeds' 95% intervals)"


def test_capacity_scaling_is_said_from_the_smallest_pool_with_a_capacity():
    rows = capacity_rows((1, 2, 4, 8), (np.nan, np.nan, 0.25, 0.8), scheduler="multi_bin_dynamic")
    part = analysis.analyze_step2(rows)
    assert part["capacity_scaling_base_gpus"] == 4
    assert part["capacity_scaling_efficiency"][8] == pytest.approx(0.8 / (2 * 0.25))
    text = "\n".join(sentences._capacity_lines(part, STEP2))
    assert "proportional scaling from 4 GPUs" in text and "from 1 GPU" not in text


def test_step1_offered_rates_are_this_runs():
    rows = pd.DataFrame({"num_requests": (1_000, 10_000), "offered_rps": (1.23, 4.56), "label": "x",
                         "scheduler": "s", "goodput_rps": 1.0, "sla_violation_rate": 0.0, "latency_p99_s": 1.0,
                         "num_gpus": 1})
    text = sentences.offered_rates_sentence(rows)
    assert "1.23, 4.56 req/s for 1,000, 10,000 requests" in text and "21.5" not in text


def test_rules_name_the_runs_sla():
    rules = analysis.rules("TTFT <= 1 s, TPOT <= 50 ms", 0.9)
    assert "TTFT <= 1 s, TPOT <= 50 ms" in rules["capacity"] and "d_sla" not in rules["capacity"]
    rows = capacity_rows((1,), (1.0,)).assign(latency_profile="opt-13b-a100", ttft_sla_s=1.0, tpot_sla_s=0.05,
                                              step=STEP2, k_bins=4, k_bins_effective=4)
    out = analysis.analyze(rows)
    assert out["sla"] == "TTFT <= 1 s, TPOT <= 50 ms" and "within d_sla_s" not in out["rules"]["capacity"]


def test_a_wait_is_said_from_the_utilisation():
    from workbench.sim.config import SimConfig
    from workbench.study.runs.capacity import _why_wait

    fixed = SimConfig(scheduler="multi_bin_fixed")
    assert "wait for their batch to fill" in _why_wait({"gpu_utilization_mean": 0.05}, fixed)
    idle = SimConfig(scheduler="static_fifo")
    assert "not wait for a busy GPU" in _why_wait({"gpu_utilization_mean": 0.2}, idle)
    assert _why_wait({"gpu_utilization_mean": 0.95}, idle).startswith("requests wait for a busy GPU")


def test_the_capacity_search_counts_too():
    from workbench.study.runs.capacity import _measure

    # 50 of 1,000 requests miss at a 95% target: exactly the allowed count, whatever 1 - 0.95 rounds to
    assert _measure({"sla_violation_rate": 1 - 0.95, "offered": 1_000}, "attainment", 0.95)[1] is True
    assert _measure({"sla_violation_rate": 0.051, "offered": 1_000}, "attainment", 0.95)[1] is False
    assert _measure({"slo_attainment": 0.9, "offered": 1_000}, "slo", 0.9) == (0.9, True)
    assert _measure({"slo_attainment": 0.899, "offered": 1_000}, "slo", 0.9)[1] is False
