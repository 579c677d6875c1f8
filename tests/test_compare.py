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


def test_ranking_orders_by_gpus_needed_and_flags_overlaps():
    rows = pd.DataFrame({
        "scheduler": ["a", "a", "b", "b", "c"],
        "num_gpus": [1, 4, 1, 4, 1],
        "capacity_rps": [1.0, 6.0, 2.0, 7.6, math.nan],          # per GPU: a 1.0/1.5, b 2.0/1.9, c none
        "capacity_rps_ci95_low": [0.9, 5.6, 1.8, 7.2, math.nan],
        "capacity_rps_ci95_high": [1.1, 6.4, 2.2, 8.0, math.nan],
        "capacity_error": [None, None, None, None, "attainable share 0.8 < 0.9"],
        "offered_rps": 1.7,                                        # b covers it on 1 GPU, a needs 4, c never
    })
    table = capacity_ranking(rows)
    assert list(table["scheduler"]) == ["b", "a", "c"]
    assert list(table["gpus_needed"].astype(object).where(table["gpus_needed"].notna(), None)) == [1, 4, None]
    assert table.loc[0, "capacity_per_gpu"] == 2.0 and table.loc[0, "at_num_gpus"] == 1
    assert table.loc[0, "headroom"] == pytest.approx(2.0 / 1.7 - 1)
    assert table.loc[1, "capacity_per_gpu"] == 1.5
    assert (table.loc[1, "capacity_per_gpu_ci95_low"], table.loc[1, "capacity_per_gpu_ci95_high"]) == \
        pytest.approx((1.4, 1.6))
    assert list(table["rank"]) == [1, 2, 3]
    # the second answer: b has the most per GPU on 1 GPU; a on 4, the largest compared: flagged
    assert list(table["most_capacity_per_gpu_at"].astype(object).where(table["most_capacity_per_gpu_at"].notna(),
                                                                       None)) == [1, 4, None]
    assert list(table["at_largest_gpus"]) == [False, True, False] and "largest count compared" in table.loc[1, "note"]
    # on 1 GPU b: 2.0 in [1.8, 2.2 x 1.01]; a: 1.0 in [0.9, 1.1 x 1.01] -> distinguishable
    assert table.loc[0, "distinguishable_from_next"] == True  # noqa: E712
    assert "attainable share" in table.loc[2, "note"]


def test_overlapping_intervals_are_not_an_order():
    rows = pd.DataFrame({"scheduler": ["a", "b"], "num_gpus": [2, 2], "capacity_rps": [4.0, 3.8],
                         "capacity_rps_ci95_low": [3.6, 3.4], "capacity_rps_ci95_high": [4.4, 4.2],
                         "offered_rps": 3.0})
    table = capacity_ranking(rows)
    assert table.loc[0, "distinguishable_from_next"] == False  # noqa: E712
    assert list(table["rank"]) == [1, 1] and "seeds' 95% intervals with b" in table.loc[0, "note"]


def test_exact_ties_share_a_rank():
    rows = pd.DataFrame({"scheduler": ["a", "b", "c", "d"], "num_gpus": [2, 2, 2, 2],
                         "capacity_rps": [4.0, 4.0, 4.0, 3.0], "offered_rps": 2.0})
    table = capacity_ranking(rows)
    assert list(table["rank"]) == [1, 1, 1, 4]
    assert list(table["distinguishable_from_next"]) == [False, False, True, None]


def test_sentences_say_where_each_breaks():
    curves = pd.concat([curve([1, 2, 4], [0.99, 0.95, 0.5], "fifo"), curve([1, 2, 4], [1, 1, 0.99], "sla")])
    ranking = capacity_ranking(pd.DataFrame({"scheduler": ["fifo", "sla"], "num_gpus": [1, 1],
                                             "capacity_rps": [2.5, 5.0], "offered_rps": 2.0}))
    text = break_sentences(break_points(curves, 0.9), ranking, sla_text="the 1 s SLA")
    assert text["fifo"].startswith("fifo keeps 90% of requests within the 1 s SLA up to 2 req/s and misses it at "
                                   "4 req/s")
    assert "need 1 GPU of it" in text["fifo"] and "2.5 req/s per GPU" in text["fifo"]
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


def test_the_comparison_ranks_at_step2s_gpu_counts_on_step2s_tests(tmp_path):
    """The suite's comparison compares step 2's GPU counts (so its ranking's pool sizes contain step 2's answer),
    and each of its capacity tests of a step-2 scheduler is step 2's test (same id: reused), even when it compares
    only some of the counts (the chain of searches it starts from comes along)."""
    from workbench.study.orchestrate.suite import SuiteOptions, compare_parameters
    from workbench.study.runs import experiments

    options = SuiteOptions(max_requests=1500, max_gpus=8, executor="serial", results_dir=str(tmp_path / "r"),
                           schedulers="static_fifo,continuous_fcfs")
    step2 = {(t.config.scheduler, t.config.num_gpus): t.test_id
             for t in experiments.plan_step2(experiments.StepParams(**{
                 f.name: getattr(options, f.name) for f in dataclasses.fields(experiments.StepParams)})).tests}
    params = cmp.CompareParams(**{**compare_parameters(options), "schedulers": "static_fifo,continuous_fcfs,"
                                                                                "continuous_sla"})
    assert params.gpu_counts == (1, 2, 4, 8) == tuple(sorted({g for _, g in step2}))
    tests = cmp.capacity_tests(params)
    assert {(t.config.scheduler, t.config.num_gpus): t.test_id for t in tests
            if t.config.scheduler != "continuous_sla"} == step2
    some = cmp.capacity_tests(dataclasses.replace(params, gpu_counts=(4, 8)))
    compared = [(t.config.scheduler, t.config.num_gpus) for t in some][:6]
    assert compared == [(s, g) for s in params.schedulers for g in (4, 8)]
    assert all(t.test_id == step2[(t.config.scheduler, t.config.num_gpus)] for t in some
               if t.config.scheduler != "continuous_sla")
    # continuous_sla's searches start from continuous_fcfs's on the same GPUs: those come along, nothing else
    assert {(t.config.scheduler, t.config.num_gpus) for t in some[6:]} == {
        ("static_fifo", 1), ("static_fifo", 2), ("continuous_fcfs", 1), ("continuous_fcfs", 2)}


def _cap_rows(scheduler: str, capacity_by_gpus: dict[int, float], offered: float = 10.0) -> pd.DataFrame:
    return pd.DataFrame({"scheduler": scheduler, "num_gpus": list(capacity_by_gpus),
                         "capacity_rps": list(capacity_by_gpus.values()), "offered_rps": offered})


def test_an_added_scheduler_is_searched_only_where_its_answer_lies():
    """continuous_sla (reference continuous_fcfs) waits for its reference, starts at the count the reference needs
    (here 8: the first whose capacity covers the 10 req/s replayed), the count below and the curves' GPUs, then
    walks down while its fewest covering count has no failing count below it, and up while none covers."""
    params = cmp.CompareParams(schedulers="continuous_fcfs,continuous_sla", gpu_counts=(1, 2, 4, 8, 16, 32),
                               curve_gpus=2)
    assert cmp.search_counts(params) == {"continuous_fcfs": params.gpu_counts, "continuous_sla": ()}
    fcfs = _cap_rows("continuous_fcfs", {1: 1.5, 2: 3.0, 4: 6.0, 8: 12.0, 16: 24.0, 32: float("nan")})
    assert cmp.search_counts(params, fcfs)["continuous_sla"] == (2, 4, 8)
    # it covers at 4 already: 2 is known to fall short (the curves' count), so 4 is its answer; nothing more
    sla = _cap_rows("continuous_sla", {2: 3.0, 4: 10.5, 8: 12.0})
    assert cmp.search_counts(params, pd.concat([fcfs, sla]))["continuous_sla"] == (2, 4, 8)
    # it covers nowhere up to 8: one count up at a time, to the largest
    sla = _cap_rows("continuous_sla", {2: 1.0, 4: 2.0, 8: 4.0})
    assert cmp.search_counts(params, pd.concat([fcfs, sla]))["continuous_sla"] == (2, 4, 8, 16)
    sla = pd.concat([sla, _cap_rows("continuous_sla", {16: 8.0, 32: float("nan")})])
    assert cmp.search_counts(params, pd.concat([fcfs, sla]))["continuous_sla"] == (2, 4, 8, 16, 32)
    # covering at the curves' 2 GPUs: down to 1, which is the smallest count
    sla = _cap_rows("continuous_sla", {2: 11.0, 4: 22.0, 8: 44.0})
    assert cmp.search_counts(params, pd.concat([fcfs, sla]))["continuous_sla"] == (1, 2, 4, 8)
    # needed_only=False, or its reference not compared: every count
    assert cmp.search_counts(dataclasses.replace(params, needed_only=False), fcfs)["continuous_sla"] == params.gpu_counts
    alone = cmp.CompareParams(schedulers="continuous_sla", gpu_counts=(1, 2))
    assert cmp.search_counts(alone) == {"continuous_sla": (1, 2)}
    # which tests run, not what a test is: not part of the folder's parameter set (a folder made before it is reused)
    assert "needed_only" not in params.identity()


def test_capacity_rounds_stop_when_nothing_new_is_asked():
    params = cmp.CompareParams(num_requests=200, schedulers="continuous_fcfs,continuous_sla", gpu_counts=(1, 2, 4),
                               curve_gpus=1)
    fcfs = _cap_rows("continuous_fcfs", {1: 1.0, 2: 2.0, 4: 4.0}, offered=1.5)
    asked = []

    def run(tests):   # fake results: continuous_sla covers from 2 GPUs, as continuous_fcfs
        asked.append(sorted((t.config.scheduler, t.config.num_gpus) for t in tests))
        rows = [_cap_rows(t.config.scheduler, {t.config.num_gpus: {1: 1.0, 2: 2.0, 4: 4.0}[t.config.num_gpus]},
                          offered=1.5).assign(test_id=t.test_id) for t in tests]
        return pd.concat(rows)

    rows = cmp.capacity_rounds(params, run, fcfs.assign(test_id=["a", "b", "c"]))
    assert asked[0] == sorted([("continuous_fcfs", 1), ("continuous_fcfs", 2), ("continuous_fcfs", 4),
                               ("continuous_sla", 1), ("continuous_sla", 2)])
    assert len(asked) == 1
    assert cmp.search_counts(params, rows)["continuous_sla"] == (1, 2)
