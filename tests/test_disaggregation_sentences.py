"""The disaggregation notebook's sentences, computed from tables made by hand: who wins per kernel set and where
they cross, whether disaggregation gains where the TTFT and TPOT limits pull apart, the estimate's error against
the pruning margin, the answer to the notebook's question."""

import pandas as pd
import pytest

from workbench.study.answers import disaggregation as d

SAME, VLLM = "colocated, same kernels", "colocated, vLLM kernels"


def sweep_of(rows) -> pd.DataFrame:
    """(slo_scale, kind, goodput per GPU, prefill GPUs, GPUs) rows as slo_sweep writes them."""
    return pd.DataFrame([{"slo_scale": s, "kind": k, "goodput_per_gpu": g, "goodput_rps": g * n, "gpus": n,
                          "prefill_gpus": p} for s, k, g, p, n in rows])


@pytest.fixture
def sweeps():
    a = sweep_of([
        (2.0, "disaggregated", 1.0, 4, 8), (2.0, SAME, 2.0, None, 8), (2.0, VLLM, 1.25, None, 8),
        (1.0, "disaggregated", 2.0, 2, 4), (1.0, SAME, 2.5, None, 8), (1.0, VLLM, 1.0, None, 8),
        (0.5, "disaggregated", 1.0, 3, 4), (0.5, SAME, 1.01, None, 8), (0.5, VLLM, 0.0, None, 8),
    ])
    b = sweep_of([
        (2.0, "disaggregated", 1.0, 6, 8), (2.0, SAME, 0.5, None, 8), (2.0, VLLM, 0.4, None, 8),
        (1.0, "disaggregated", 0.0, None, 8), (1.0, SAME, 0.0, None, 8), (1.0, VLLM, 0.0, None, 8),
    ])
    return {"sample": a, "long trace": b}


def test_who_wins_per_kernel_set_and_where_they_cross(sweeps):
    lines = d.winner_lines(sweeps)
    head = "sample, against colocated replicas on {} (disaggregated / colocated goodput per GPU): "
    # 1/2, 2/2.5; at x0.5 1/1.01 = 0.99 is within the 2% resolution: tied, not a win
    assert lines[0] == head.format("the same kernels") + ("colocated wins from x2 to x1 (0.50, 0.80); tied within "
                                                          "the search's 2% resolution at x0.5 (0.99).")
    # 1/1.25, 2/1; at x0.5 only disaggregated meets the SLO: the winner changes between x2 and x1
    assert lines[1] == head.format("vLLM's kernels") + ("colocated wins at x2 (0.80); disaggregated wins from x1 to "
                                                        "x0.5 (2.00, only disaggregated meets the SLO); they cross "
                                                        "between x2 and x1.")
    assert lines[2] == ("long trace, against colocated replicas on the same kernels (disaggregated / colocated "
                        "goodput per GPU): disaggregated wins at x2 (2.00); neither meets the SLO at x1.")
    one_winner = {"sample": sweeps["sample"][sweeps["sample"].slo_scale > 0.5]}
    assert d.winner_lines(one_winner)[0].endswith("colocated wins at every SLO scale, x2 to x1 (0.50, 0.80).")


def test_the_answer_names_the_winner_at_the_base_slo_per_kernel_set(sweeps):
    text = d.answer(sweeps)
    assert text == ("Against colocated replicas on the same kernels, on the sample colocated wins at x1 (0.80); over "
                    "the 3 SLO scales, colocated wins at 2, tied at 1; on the long trace neither meets the SLO at x1; "
                    "over the 2 SLO scales, disaggregated wins at 1, neither meets the SLO at 1. Against colocated "
                    "replicas on vLLM's kernels, on the sample disaggregated wins at x1 (2.00); over the 3 SLO "
                    "scales, disaggregated wins at 2, colocated wins at 1; on the long trace neither meets the SLO "
                    "at x1; over the 2 SLO scales, disaggregated wins at 1, neither meets the SLO at 1.")


def test_the_prefill_share_is_averaged_where_a_placement_meets_the_slo(sweeps):
    # sample: 4/8, 2/4, 3/4 -> 58%; long trace: 6/8 at x2 only (x1: none meets the SLO) -> 75%
    assert d.prefill_share_line(sweeps, {"sample": 756.0}) == (
        "Prefill gets 58% on the sample (mean prompt 756 tokens) and 75% on the long trace of the best "
        "disaggregated placement's GPUs, on average over the SLO scales where one meets the SLO.")


def grid_of(ratios: dict) -> pd.DataFrame:
    """limits_sweep rows with colocated at 1 request/s per GPU and disaggregated at the given ratio."""
    rows = []
    for (a, b), r in ratios.items():
        rows += [{"ttft_scale": a, "tpot_scale": b, "ttft_s": 0.2 * a, "tpot_s": 0.1 * b, "kind": "disaggregated",
                  "goodput_per_gpu": r},
                 {"ttft_scale": a, "tpot_scale": b, "ttft_s": 0.2 * a, "tpot_s": 0.1 * b, "kind": SAME,
                  "goodput_per_gpu": 1.0}]
    return pd.DataFrame(rows)


def test_the_pull_apart_claim_is_tested_against_the_equal_scalings_around_each_pair():
    # together 0.5 (x1) and 0.6 (x2); apart: (1, 2) 0.7 beats both, (2, 1) 0.55 does not
    line, = d.limits_lines(grid_of({(1, 1): 0.5, (2, 2): 0.6, (1, 2): 0.7, (2, 1): 0.55}))
    assert line == ("Against colocated replicas on the same kernels, disaggregated / colocated goodput per GPU with "
                    "both limits scaled together is x1: 0.50, x2: 0.60; with them pulled apart, TTFT x1, TPOT x2: "
                    "0.70; TTFT x2, TPOT x1: 0.55. Of the 2 pairs where the limits differ, it is higher than at both "
                    "equal scalings around it (by more than the search's 2% resolution) at 1 (TTFT x1 with TPOT x2): "
                    "the claim that disaggregation gains where the limits pull apart holds there only.")
    line, = d.limits_lines(grid_of({(1, 1): 0.5, (2, 2): 0.6, (1, 2): 0.7, (2, 1): 0.8}))
    assert line.endswith("at 2: here disaggregation does gain where the limits pull apart.")
    # 0.61 is above 0.6 by less than the resolution: not counted
    line, = d.limits_lines(grid_of({(1, 1): 0.5, (2, 2): 0.6, (1, 2): 0.61, (2, 1): 0.3}))
    assert line.endswith("at 0: the claim that disaggregation gains where the limits pull apart does not hold here.")
    # where only one kind meets the SLO there is no ratio to compare
    grid = grid_of({(1, 1): 0.5, (2, 2): 0.6, (1, 2): 0.7, (2, 1): 0.55})
    grid.loc[(grid.ttft_scale == 1) & (grid.tpot_scale == 1) & (grid.kind == SAME), "goodput_per_gpu"] = 0.0
    line, = d.limits_lines(grid)
    assert "2 of the 2 pairs where the limits differ cannot be compared" in line and "Of the" not in line


def test_the_estimate_is_checked_against_what_pruning_allows():
    ranking = pd.DataFrame([
        {"kind": "colocated", "status": "searched", "goodput_rps": 26.5, "estimate_rps": float("nan")},
        {"kind": "disaggregated", "status": "searched", "goodput_rps": 16.8, "estimate_rps": 15.4},
        {"kind": "disaggregated", "status": "searched", "goodput_rps": 10.0, "estimate_rps": 10.0},
        {"kind": "disaggregated", "status": "pruned", "goodput_rps": float("nan"), "estimate_rps": 17.1},
    ])
    text = d.estimate_line(ranking, 1.1)
    assert text.startswith("3 placements were searched and 1 pruned (estimate per GPU below the best verified "
                           "goodput per GPU / 1.1;")
    assert text.endswith("the 2 disaggregated placements verified had 1.00 to 1.09 times their estimates, within "
                         "the 10% pruning allows.")
    ranking.loc[2, "goodput_rps"] = 12.0   # 20% above its estimate: more than the margin
    assert d.estimate_line(ranking, 1.1).endswith("1.09 to 1.20 times their estimates, more than the 10% pruning "
                                                  "allows: a pruned placement may beat the best found; search again "
                                                  "with a larger prune_margin.")
