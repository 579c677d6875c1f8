"""The stress test on both engines (issue 8) with replications and confidence intervals (issue 10 item 1):
static and continuous schedulers side by side on one hardware model (issue 16), one checkpointed row per
(test, seed), summaries with 95% intervals cut to each quantity's range."""

from __future__ import annotations

import json
import math

import nbformat
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from workbench.sim.latency import LatencyModel
from workbench.sim.profiles import get_profile
from workbench.sim.steptime import StepTimeModel
from workbench.study.answers import analysis
from workbench.study.runs import experiments, sweep
from workbench.study.orchestrate.suite import SuiteOptions, notebook_parameters
from conftest import execute_notebook

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MIXED = "multi_bin_dynamic,continuous_fcfs"


def run_notebook(step: str, out_dir, **parameters):
    output = out_dir / f"{step}.ipynb"
    execute_notebook(step, output, parameters)
    return nbformat.read(output, as_version=4)


def outputs_text(nb) -> str:
    return "\n".join(str(v) for c in nb.cells for o in c.get("outputs", [])
                     for v in [o.get("text", ""), *[x for k, x in o.get("data", {}).items() if k.startswith("text/")]])


# --------------------------------------------------------------------------- parameters


def test_step_params_take_schedulers_latency_and_replications():
    params = experiments.StepParams(schedulers="static_fifo, continuous_sla", replications=3, seed=7)
    assert params.schedulers == ("static_fifo", "continuous_sla")
    assert params.seeds() == [7, 8, 9]
    # one hardware model: every scheduler on the profile (static ones in step mode), with its memory
    for scheduler in ("continuous_sla", "static_fifo"):
        assert params.latency_model(scheduler).name == "opt-13b-a100"
        cfg = params.base_config(scheduler=scheduler, seed=8)
        # OPT-13B on the A100-80GB of the measured runs: the 4046 KV blocks of their setup.json
        assert (cfg.model, cfg.seed, cfg.kv_blocks_effective) == ("opt-13b", 8, 4046)
        assert (cfg.ttft_sla_s, cfg.tpot_sla_s) == (1.0, 0.05)
    assert "opt-13b-a100" in params.latency_text() and "every scheduler" in params.latency_text()
    assert params.rps_scaling == experiments.PROFILE_RPS_SCALING
    # the seed study by name: its grid, its static schedulers, its load and E2E SLA
    seed = experiments.StepParams(latency="seed-grid")
    assert seed.schedulers == experiments.SEED_SCHEDULERS and seed.rps_scaling == 200.0
    assert isinstance(seed.latency_model("static_fifo"), LatencyModel)
    # the seed grid's own memory (SimConfig's defaults before issue 20 made the suite's hardware the default)
    from workbench.sim.memory import GRID_MEMORY
    assert seed.base_config(scheduler="static_fifo").model == GRID_MEMORY["model"] != experiments.SimConfig().model
    assert "formula grid" in seed.latency_text() and "end-to-end" in seed.latency_text()
    assert seed.default_folder() == "results/latency=seed-grid"


@pytest.mark.parametrize("kwargs, match", [
    ({"schedulers": "static_fifo,fcfs"}, "schedulers"),
    ({"schedulers": ()}, "schedulers"),
    ({"schedulers": "static_fifo,static_fifo"}, "twice"),
    ({"latency": "h100"}, "latency"),
    ({"latency": "seed-grid", "schedulers": "static_fifo,continuous_fcfs"}, "step-time profile"),
    ({"replications": 0}, "replications"),
    ({"replications": 1.5}, "replications"),
])
def test_bad_stress_parameters_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        experiments.StepParams(**kwargs)


def test_grid_latency_is_fine_for_static_schedulers_alone():
    params = experiments.StepParams(schedulers="static_fifo", latency="grid")   # the old name still works
    assert params.latency == "seed-grid" and params.latency_model("static_fifo") == LatencyModel.default()


def test_suite_cli_reaches_the_notebooks():
    from workbench.__main__ import build_parser, options_from_args

    args = build_parser().parse_args(["suite", "--schedulers", "static_fifo,continuous_fcfs", "--latency",
                                      "opt-13b-a100", "--replications", "3"])
    options = options_from_args(args)
    assert options.schedulers == ("static_fifo", "continuous_fcfs") and options.replications == 3
    params = notebook_parameters(options, experiments.STEP2)
    assert params["schedulers"] == ["static_fifo", "continuous_fcfs"] and params["replications"] == 3
    assert params["latency"] == "opt-13b-a100"
    assert SuiteOptions().replications == 1  # the default suite's time stays what it was


# --------------------------------------------------------------------------- ids and columns


def test_grid_test_ids_are_unchanged_and_step_models_get_their_own(small_trace_csv):
    options = sweep.TraceOptions(dataset=str(small_trace_csv), num_requests=200)
    cfg = experiments.SimConfig(scheduler="static_fifo")
    grid = sweep.make_test("s", options, cfg)
    # the id as it was computed before step-time models existed (LatencyModel.params under "latency")
    import hashlib

    payload = {"schema_version": sweep.SCHEMA_VERSION,
               "trace": {**options.identity(), "fingerprint": grid.trace_fingerprint},
               "config": cfg.to_dict(), "latency": LatencyModel.default().params()}
    old = hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
    assert grid.test_id == old
    assert grid.columns()["latency_profile"] == "seed-grid" and "latency_base_s" in grid.columns()

    ccfg = experiments.SimConfig(scheduler="continuous_fcfs", model="opt-13b", gpu_mem_gb=80)
    a = sweep.make_test("s", options, ccfg, latency=get_profile("opt-13b-a100"))
    b = sweep.make_test("s", options, ccfg, latency=get_profile("opt-13b-a100-tp2"))
    assert a.test_id != b.test_id
    columns = a.columns()
    assert columns["latency_profile"] == "opt-13b-a100"
    assert columns["step_prefill_a"] == pytest.approx(get_profile("opt-13b-a100").prefill[0])
    assert columns["step_decode_large_threshold"] == get_profile("opt-13b-a100").decode_large_threshold


# --------------------------------------------------------------------------- replications


def test_summarize_averages_the_seeds_of_each_test_by_hand():
    rows = pd.DataFrame({"step": "s", "test_id": ["a0", "a1", "b0"], "base_test_id": ["a0", "a0", "b0"],
                         "replication": [0, 1, 0], "seed": [42, 43, 42], "label": ["A", "A", "B"],
                         "num_gpus": [1, 1, 2], "throughput_rps": [10.0, 14.0, 5.0],
                         "capacity_rps": [2.0, 4.0, np.nan]})
    out = analysis.summarize(rows).set_index("test_id")
    assert out.loc["a0", "throughput_rps"] == 12.0
    # two samples: t(0.975, 1) * s / sqrt(2), s = sqrt(8): 12.706 * 2.828 / 1.414 = 25.4 either side of 12,
    # cut at 0 below (a throughput is never negative)
    half = stats.t.ppf(0.975, 1) * math.sqrt(8) / math.sqrt(2)
    assert out.loc["a0", "throughput_rps_ci95_low"] == 0.0
    assert out.loc["a0", "throughput_rps_ci95_high"] == pytest.approx(12.0 + half)
    assert out.loc["a0", "capacity_rps"] == 3.0 and out.loc["a0", "replications"] == 2
    assert out.loc["a0", "seed"] == 42 and out.loc["a0", "num_gpus"] == 1  # identity kept, not averaged
    assert np.isnan(out.loc["b0", "throughput_rps_ci95_low"]) and out.loc["b0", "replications"] == 1
    assert "replication" not in out.columns
    assert analysis.summarize(out.reset_index()) is not None  # summarizing a summary leaves it as it is


def test_a_killed_replicated_sweep_redoes_only_the_missing_test_seed(small_trace_csv, tmp_path, count_runs):
    plan = experiments.plan_step2(max_requests=400, max_gpus=2, dataset=str(small_trace_csv), executor="serial",
                                  schedulers="static_fifo", replications=2, capacity_search=False,
                                  results_dir=str(tmp_path / "r"))
    tests = plan.tests
    assert [(t.config.num_gpus, t.config.seed, t.trace.seed, t.replication) for t in tests] == [
        (1, 42, 42, 0), (2, 42, 42, 0), (1, 43, 43, 1), (2, 43, 43, 1)]
    assert [t.base_test_id for t in tests[2:]] == [t.test_id for t in tests[:2]]
    assert len({t.test_id for t in tests}) == 4
    rows = plan.run(progress=False)
    assert len(count_runs) == 4 and len(rows) == 4
    # "kill": the checkpoint lost the second seed of the 2-GPU test (as if the run died before writing it)
    path = plan.results_dir / f"{experiments.STEP2}.csv"
    kept = pd.read_csv(path)
    lost = tests[3].test_id
    kept[kept["test_id"] != lost].to_csv(path, index=False)
    count_runs.clear()
    again = plan.run(progress=False)
    assert count_runs == [lost]
    assert sorted(again["seed"]) == [42, 42, 43, 43]


# --------------------------------------------------------------------------- notebooks


def test_step2_notebook_compares_static_and_continuous_with_two_seeds(tmp_path):
    results = tmp_path / "results"
    nb = run_notebook(experiments.STEP2, tmp_path, results_dir=str(results), max_requests=300, max_gpus=2,
                      schedulers=MIXED, replications=2, executor="serial")
    rows = pd.read_csv(results / f"{experiments.STEP2}.csv")
    assert len(rows) == 2 * 2 * 2  # schedulers x GPU counts x seeds
    assert rows.groupby("base_test_id")["seed"].apply(sorted).map(tuple).unique().tolist() == [(42, 43)]
    assert rows.groupby("base_test_id")["trace_seed"].apply(sorted).map(tuple).unique().tolist() == [(42, 43)]
    continuous = rows[rows["scheduler"] == "continuous_fcfs"]
    assert (continuous["latency_profile"] == "opt-13b-a100").all() and continuous["ttft_p99_s"].notna().all()
    assert (rows["capacity_criterion"] == "slo").all()       # one SLA for all: TTFT and TPOT
    assert (rows["latency_profile"] == "opt-13b-a100").all()  # one hardware model: static ones in step mode
    assert rows["ttft_p99_s"].notna().all()

    summary = pd.read_csv(results / analysis.summary_name(experiments.STEP2))
    assert len(summary) == 4 and (summary["replications"] == 2).all()
    for metric in ("throughput_rps", "capacity_rps", "latency_p99_s"):
        assert f"{metric}_ci95_low" in summary.columns and f"{metric}_ci95_high" in summary.columns
    # the summary's mean and interval, by hand from the two rows of one test: Student t, cut to [0, offered]
    first = rows[rows["base_test_id"] == summary["test_id"].iloc[0]]
    one = first["throughput_rps"].to_numpy()
    half = stats.t.ppf(0.975, 1) * one.std(ddof=1) / math.sqrt(2)
    assert summary["throughput_rps"].iloc[0] == pytest.approx(one.mean())
    assert summary["throughput_rps_ci95_low"].iloc[0] == pytest.approx(max(one.mean() - half, 0.0))
    assert summary["throughput_rps_ci95_high"].iloc[0] == pytest.approx(
        min(one.mean() + half, first["offered_rps"].mean()))
    assert (summary["sla_violation_rate_ci95_high"].dropna() <= 1.0).all()

    found = json.loads((results / "analysis.json").read_text())["step2_gpu_scaling"]
    assert found["primary_scheduler"] == "multi_bin_dynamic" and found["replications"] == 2
    assert set(found["capacity_rps_ci95"]) == set(summary["label"])
    for png in ("step2_gpu_scaling.png", "step2_gpu_scaling_capacity.png"):
        assert (results / png).read_bytes()[:8] == PNG_MAGIC
    text = outputs_text(nb)
    assert "2 replications" in text and "opt-13b-a100" in text and "cut to the quantity's range" in text


def test_step1_notebook_with_a_continuous_scheduler_and_two_seeds(tmp_path):
    results = tmp_path / "results"
    run_notebook(experiments.STEP1, tmp_path, results_dir=str(results), max_requests=300, max_gpus=1,
                 schedulers="static_fifo,continuous_sla", replications=2, executor="serial")
    rows = pd.read_csv(results / f"{experiments.STEP1}.csv")
    assert sorted(zip(rows["label"], rows["seed"])) == [
        ("continuous_sla (1 GPU)", 42), ("continuous_sla (1 GPU)", 43), ("static_fifo (1 GPU)", 42),
        ("static_fifo (1 GPU)", 43)]
    summary = pd.read_csv(results / analysis.summary_name(experiments.STEP1))
    assert "capacity_rps_ci95_low" in summary.columns and (summary["replications"] == 2).all()
    for png in ("step1_request_scaling.png", "step1_request_scaling_capacity.png"):
        assert (results / png).read_bytes()[:8] == PNG_MAGIC
