"""The notebooks' commentary is computed from the results (issue 9 item 9): hand-built rows, known sentences."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from workbench.study.answers import analysis, sentences
from workbench.study.runs.experiments import STEP2, STEP3
from workbench.study.runs.sweep import run_sweep

from conftest import sweep_tests


def k_rows(violation) -> pd.DataFrame:
    k = (1, 2, 4, 8, 16, 32)
    return pd.DataFrame({"k_bins": k, "num_gpus": 8, "sla_violation_rate": violation,
                         "latency_p99_s": np.linspace(4.0, 1.0, 6), "label": [f"K={v}" for v in k]})


def test_step3_commentary_says_how_the_curve_moves_at_the_largest_k():
    flat = sentences.commentary(k_rows((0.20, 0.10, 0.05, 0.04, 0.039, 0.038)), STEP3)
    assert "spans 3.8%..20.0% (16.2 points)" in flat and "from 4 s (K = 1) to 1 s (K = 32)" in flat
    assert "from K = 16 to 32 the violation rate falls by 0.1 points (one seed: no noise estimate" in flat
    moving = sentences.commentary(k_rows((0.20, 0.10, 0.05, 0.04, 0.03, 0.01)), STEP3)
    assert "falls by 2.0 points" in moving
    # at a load every K keeps up with, the replay cannot tell them apart: the text sends the reader to capacity
    same = sentences.commentary(k_rows((0.012, 0.012, 0.013, 0.012, 0.012, 0.014)), STEP3)
    assert "the replay barely tells them apart; capacity does" in same
    assert "rises by 0.2 points" in same and "flattened" not in same   # an uptick is said as one


def test_step2_commentary_reads_the_offered_rate_and_the_target():
    rows = pd.DataFrame({"num_gpus": (1, 2, 4, 8), "throughput_rps": (8.0, 16.0, 29.9, 30.0),
                         "goodput_rps": (1.0, 8.0, 28.0, 29.8), "num_requests": 1_000,
                         "sla_violation_rate": (0.9, 0.5, 0.1, 0.01), "offered_rps": 30.0,
                         "label": ["a", "b", "c", "d"], "scheduler": "s"})
    text = sentences.commentary(rows, STEP2)
    assert "The replayed load is 30 req/s; the target, 90% of requests within" in text
    # no capacity search: the fewest GPUs whose replay keeps 90% within the SLA (100 of 1,000 may miss: 4 GPUs)
    assert "needs 4 GPUs: the fewest tested whose replay of the replayed 30 req/s keeps 90%" in text
    text = sentences.commentary(rows.assign(sla_violation_rate=0.5), STEP2)
    assert "No GPU count tested (up to 8) serves the replayed 30 req/s" in text
    # with capacities: the fewest whose capacity covers the load, the headroom, the count below
    caps = rows.assign(capacity_criterion="slo", capacity_target=0.9, capacity_rps=(5.0, 12.0, 33.0, 70.0),
                       capacity_resolution=0.01)
    text = sentences.commentary(caps, STEP2)
    assert "needs 4 GPUs: the fewest tested whose capacity at the target (90% of requests within the SLA), " \
           "33 req/s, covers the replayed 30 req/s, a headroom of 10%; 2 GPUs sustain 12 req/s (60% short)" in text
    assert "capacity grows faster than the pool, 5 req/s on 1 GPU to 70 on 8 (14x for 8x the GPUs)" in text


def test_step1_commentary_explains_a_goodput_that_falls_and_rises_with_the_volume():
    # each volume arrives at its own rate: goodput follows it, so it can fall and rise again (issue 16 item 13)
    rows = pd.DataFrame({"num_requests": (1_000, 10_000, 100_000), "offered_rps": (4.6, 21.5, 117.0),
                         "goodput_rps": (4.4, 7.4, 2.6), "throughput_rps": (4.6, 19.8, 69.0),
                         "sla_violation_rate": (0.045, 0.63, 0.96), "latency_p99_s": (2.7, 39.0, 575.0),
                         "label": "multi_bin_dynamic (4 GPUs)", "scheduler": "multi_bin_dynamic", "num_gpus": 4})
    text = sentences.commentary(rows, analysis.STEP_ORDER[0])
    assert "4.6, 21.5, 117 req/s for 1,000, 10,000, 100,000 requests" in text
    assert "a line can fall and rise again" in text


def test_sweep_progress_is_one_log_line_per_test(small_trace_csv, tmp_path, caplog, capsys):
    tests = sweep_tests(small_trace_csv, gpus=(1, 2), ks=(1,))
    with caplog.at_level(logging.INFO, logger="workbench.study.runs.sweep"):
        run_sweep(tests, tmp_path, executor="serial", progress=True, desc="demo")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("demo [")]
    assert [line.split("]")[0] for line in lines] == ["demo [1/2", "demo [2/2"]
    assert all(t.label in line for t, line in zip(tests, lines))
    captured = capsys.readouterr()
    assert "\r" not in captured.err + captured.out  # no redrawn bar
