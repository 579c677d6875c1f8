"""Scheduler comparison: break points, ranking and sentences on hand-made curves."""

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from workbench.study.answers.compare import break_point, break_points, break_sentences, capacity_ranking


def curve(rates, attainment, scheduler="s"):
    return pd.DataFrame({"scheduler": scheduler, "offered_rps": rates, "attainment": attainment})


def test_break_point_interpolates_the_crossing():
    # 0.95 at 2 req/s, 0.85 at 4 req/s: 0.9 is crossed half way, at 3 req/s
    bp = break_point(curve([1, 2, 4, 8], [1.0, 0.95, 0.85, 0.2]), 0.9)
    assert (bp["last_ok_rps"], bp["first_bad_rps"]) == (2, 4)
    assert bp["crossing_rps"] == pytest.approx(3.0)
    assert bp["status"] == "breaks"


def test_break_point_edges_and_non_monotone():
    assert break_point(curve([1, 2], [0.99, 0.95]), 0.9)["status"] == "meets the target at every load tested"
    assert break_point(curve([1, 2], [0.5, 0.4]), 0.9)["status"].startswith("below target")
    # a fixed-size batcher: fails light (batches wait to fill), passes mid, fails heavy -> first failure after OK
    bp = break_point(curve([1, 2, 4, 8], [0.95, 0.8, 0.93, 0.1]), 0.9)
    assert bp["first_bad_rps"] == 2 and "not monotone" in bp["status"]
    # unsorted input is sorted by rate first
    assert break_point(curve([4, 1, 2], [0.5, 1.0, 0.95]), 0.9)["last_ok_rps"] == 2


def test_ranking_orders_by_capacity_per_gpu_and_flags_overlaps():
    rows = pd.DataFrame({
        "scheduler": ["a", "a", "b", "b", "c"],
        "num_gpus": [1, 4, 1, 4, 1],
        "capacity_rps": [1.0, 6.0, 2.0, 7.6, math.nan],          # per GPU: a 1.0/1.5, b 2.0/1.9, c none
        "capacity_rps_ci95_low": [0.9, 5.6, 1.8, 7.2, math.nan],
        "capacity_rps_ci95_high": [1.1, 6.4, 2.2, 8.0, math.nan],
        "capacity_error": [None, None, None, None, "attainable share 0.8 < 0.9"],
    })
    table = capacity_ranking(rows)
    assert list(table["scheduler"]) == ["b", "a", "c"]
    assert table.loc[0, "capacity_per_gpu"] == 2.0 and table.loc[0, "at_num_gpus"] == 1
    assert table.loc[1, "capacity_per_gpu"] == 1.5
    assert (table.loc[1, "capacity_per_gpu_ci95_low"], table.loc[1, "capacity_per_gpu_ci95_high"]) == \
        pytest.approx((1.4, 1.6))
    assert list(table["rank"]) == [1, 2, 3]
    # b's best per GPU is on 1 GPU; a's on 4, the largest tested: flagged
    assert list(table["at_largest_gpus"]) == [False, True, False] and "largest GPU count" in table.loc[1, "note"]
    # b: 2.0 +- 0.2 = [1.8, 2.2]; a: 1.5 +- 0.1 = [1.4, 1.6] -> distinguishable
    assert table.loc[0, "distinguishable_from_next"] == True  # noqa: E712
    assert "attainable share" in table.loc[2, "note"]


def test_overlapping_intervals_are_not_an_order():
    rows = pd.DataFrame({"scheduler": ["a", "b"], "num_gpus": [2, 2], "capacity_rps": [4.0, 3.8],
                         "capacity_rps_ci95_low": [3.6, 3.4], "capacity_rps_ci95_high": [4.4, 4.2]})
    assert capacity_ranking(rows).loc[0, "distinguishable_from_next"] == False  # noqa: E712


def test_exact_ties_share_a_rank():
    rows = pd.DataFrame({"scheduler": ["a", "b", "c", "d"], "num_gpus": [2, 2, 2, 2],
                         "capacity_rps": [4.0, 4.0, 4.0, 3.0]})
    table = capacity_ranking(rows)
    assert list(table["rank"]) == [1, 1, 1, 4]
    assert list(table["distinguishable_from_next"])[:2] == [False, False]


def test_sentences_say_where_each_breaks():
    curves = pd.concat([curve([1, 2, 4], [0.99, 0.95, 0.5], "fifo"), curve([1, 2, 4], [1, 1, 0.99], "sla")])
    ranking = capacity_ranking(pd.DataFrame({"scheduler": ["fifo", "sla"], "num_gpus": [1, 1],
                                             "capacity_rps": [2.5, 5.0]}))
    text = break_sentences(break_points(curves, 0.9), ranking, sla_text="the 1 s SLA")
    assert text["fifo"].startswith("fifo keeps 90% of requests within the 1 s SLA up to 2 req/s and breaks by 4 req/s")
    assert "2.5 req/s per GPU" in text["fifo"]
    assert "beyond the range tested" in text["sla"]


# ------------------------------------------------------------------ running a comparison

from workbench.study.runs import compare as cmp  # noqa: E402


@pytest.fixture(scope="module")
def small_comparison(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare")
    params = cmp.CompareParams(num_requests=1500, schedulers="continuous_fcfs,continuous_multi_bin",
                               gpu_counts=(1, 2), curve_gpus=2, load_points=3, results_dir=str(folder),
                               executor="serial")
    return cmp.run_comparison(params, progress=False)


def test_comparison_writes_its_tables(small_comparison):
    folder = small_comparison.results_dir
    for name in ("compare_schedulers.csv", "compare_schedulers_capacity.csv", "compare_schedulers_curves.csv",
                 "compare_schedulers_ranking.csv", "parameters.json"):
        assert (folder / name).is_file(), name
    caps = small_comparison.capacities
    assert set(caps["scheduler"]) == {"continuous_fcfs", "continuous_multi_bin"}
    assert len(small_comparison.curves) == 2 * 3
    assert set(small_comparison.sentences) == {"continuous_fcfs", "continuous_multi_bin"}


def test_more_gpus_never_less_capacity(small_comparison):
    caps = small_comparison.capacities.set_index(["scheduler", "num_gpus"])["capacity_rps"]
    for scheduler in ("continuous_fcfs", "continuous_multi_bin"):
        # two replicas fed by a router sustain at least what one does (search resolution 2%)
        assert caps[(scheduler, 2)] >= caps[(scheduler, 1)] * 0.98


def test_curves_span_light_load_to_past_saturation(small_comparison):
    curves = small_comparison.curves
    target = small_comparison.params.attainment
    for _, group in curves.groupby("scheduler"):
        group = group.sort_values("offered_rps")
        assert group["attainment"].iloc[0] >= target      # light load: the SLA holds
        assert group["attainment"].iloc[-1] < target      # twice the best capacity: it does not


def test_light_load_attainment_matches_requests_served_alone(small_comparison):
    """At the lightest load almost no request overlaps another, so the share meeting the SLA is the share
    that meets it alone on an idle replica (computed request by request by capacity's attainable share)."""
    from workbench.study.runs.capacity import slo_attainable_share

    p = small_comparison.params
    trace = p.trace(p.seed)
    alone = slo_attainable_share(trace, p.config("continuous_fcfs", p.curve_gpus), p.step_model())
    lightest = small_comparison.curves.query("scheduler == 'continuous_fcfs'").sort_values("offered_rps").iloc[0]
    assert lightest["attainment"] <= alone + 1e-12
    assert lightest["attainment"] >= alone - 0.05


def test_rerun_skips_finished_cases(small_comparison, monkeypatch):
    from workbench.study.runs import sweep

    def boom(*args, **kwargs):
        raise AssertionError("a finished case was run again")

    monkeypatch.setattr(sweep, "run_test", boom)
    again = cmp.run_comparison(dataclasses.replace(small_comparison.params, executor="serial"), progress=False)
    assert again.curves[["scheduler", "offered_rps"]].equals(small_comparison.curves[["scheduler", "offered_rps"]])


def test_bad_parameters_say_what_is_allowed():
    with pytest.raises(ValueError, match="unknown"):
        cmp.CompareParams(schedulers="fifo_typo")
    with pytest.raises(ValueError, match="profile"):
        cmp.CompareParams(latency="no-such-gpu")
    with pytest.raises(ValueError, match="gpu_counts"):
        cmp.CompareParams(gpu_counts="1,two")
