"""Scheduler comparison: break points, ranking and sentences on hand-made curves."""

import math

import numpy as np
import pandas as pd
import pytest

from workbench.study.compare import break_point, break_points, break_sentences, capacity_ranking


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
        "capacity_rps_ci95": [0.1, 0.4, 0.2, 0.4, math.nan],
        "capacity_error": [None, None, None, None, "attainable share 0.8 < 0.9"],
    })
    table = capacity_ranking(rows)
    assert list(table["scheduler"]) == ["b", "a", "c"]
    assert table.loc[0, "capacity_per_gpu"] == 2.0 and table.loc[0, "at_num_gpus"] == 1
    assert table.loc[1, "capacity_per_gpu"] == 1.5 and table.loc[1, "capacity_per_gpu_ci95"] == pytest.approx(0.1)
    # b: 2.0 +- 0.2 = [1.8, 2.2]; a: 1.5 +- 0.1 = [1.4, 1.6] -> distinguishable
    assert table.loc[0, "distinguishable_from_next"] == True  # noqa: E712
    assert "attainable share" in table.loc[2, "note"]


def test_overlapping_intervals_are_not_an_order():
    rows = pd.DataFrame({"scheduler": ["a", "b"], "num_gpus": [2, 2], "capacity_rps": [4.0, 3.8],
                         "capacity_rps_ci95": [0.4, 0.4]})
    assert capacity_ranking(rows).loc[0, "distinguishable_from_next"] == False  # noqa: E712


def test_sentences_say_where_each_breaks():
    curves = pd.concat([curve([1, 2, 4], [0.99, 0.95, 0.5], "fifo"), curve([1, 2, 4], [1, 1, 0.99], "sla")])
    ranking = capacity_ranking(pd.DataFrame({"scheduler": ["fifo", "sla"], "num_gpus": [1, 1],
                                             "capacity_rps": [2.5, 5.0]}))
    text = break_sentences(break_points(curves, 0.9), ranking, sla_text="the 1 s SLA")
    assert text["fifo"].startswith("fifo keeps 90% of requests within the 1 s SLA up to 2 req/s and breaks by 4 req/s")
    assert "2.5 req/s per GPU" in text["fifo"]
    assert "beyond the range tested" in text["sla"]
