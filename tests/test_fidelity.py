"""Fidelity against measured vLLM runs: serving logs, the step-log replay, calibration, comparison, the notebook."""

from __future__ import annotations

import json
import math
import shutil
from types import SimpleNamespace

import nbformat
import numpy as np
import pandas as pd
import papermill as pm
import pytest

import workbench as wb
from workbench import paths
from workbench.sim.profiles import default_step_model
from workbench.study.fidelity import vllm_runs
from workbench.study.fidelity.calibration import CalibrationError, replay_run, request_errors
from workbench.traces.serving_log import ServingLog
from conftest import execute_notebook

DATA = paths.DATA_DIR / "groundtruth" / "distserve_opt13b_a100_vllm"
RUNS = ("vllm-100-1", "vllm-200-2", "vllm-350-3.5")
HEADER = "request_id,arrival_s,prompt_tokens,output_tokens,ttft_s,tpot_s,e2e_s\n"


@pytest.fixture(scope="module")
def runs():
    return [wb.load_serving_log(DATA / f"{name}.csv") for name in RUNS]


# --- data and setup -------------------------------------------------------------------------------------------

def test_setup_kv_blocks_follow_the_written_formula():
    setup = json.loads((DATA / "setup.json").read_text())
    facts, derivation = setup["facts"], setup["kv_blocks_derivation"]
    assert facts["kv_bytes_per_token"] == 2 * 40 * 5120 * 2 == 819_200        # K and V, 40 layers, fp16
    assert facts["weights_bytes"] == pytest.approx(12.85e9 * 2)
    usable = derivation["gpu_total_bytes"] * facts["gpu_memory_utilization"] - facts["weights_bytes"] \
        - derivation["activation_peak_bytes"]
    assert setup["sim_config"]["kv_blocks"] == math.floor(usable / (16 * 819_200)) == 4046
    assert derivation["gpu_total_bytes"] == pytest.approx(79.15 * 2**30)


def test_load_serving_log_reads_the_run_and_its_setup(runs):
    light = runs[0]
    assert light.name == "vllm-100-1" and len(light.trace) == 100
    assert "measured" in light.trace.label and not light.trace.is_synthetic
    # first data line of vllm-100-1.csv: 0,0.000000,55,4,0.069563,0.026158,0.148036
    assert (light.trace.arrival_s[0], light.trace.prompt_tokens[0], light.trace.output_tokens[0]) == (0.0, 55, 4)
    assert light.measured.iloc[0][["ttft_s", "tpot_s", "e2e_s"]].tolist() == [0.069563, 0.026158, 0.148036]
    assert list(light.measured.columns) == ["request_id", "ttft_s", "tpot_s", "e2e_s"]
    assert light.config == wb.SimConfig(scheduler="continuous_fcfs", num_gpus=1, max_num_seqs=256,
                                        max_num_batched_tokens=16384, chunked_prefill=False, block_size=16,
                                        kv_blocks=4046)
    assert light.profile == "opt-13b-a100"
    assert [vllm_runs.is_saturated(r) for r in runs] == [False, False, True]
    assert [len(r.trace) for r in runs] == [100, 200, 350]


def test_serving_log_without_setup_has_no_config(tmp_path):
    shutil.copy(DATA / "vllm-100-1.csv", tmp_path)
    run = wb.load_serving_log(tmp_path / "vllm-100-1.csv")
    assert run.config is None and run.setup is None and len(run.measured) == 100


def test_serving_log_rows_out_of_order_keep_measured_aligned(tmp_path):
    (tmp_path / "run.csv").write_text(HEADER + "0,2.0,10,3,0.5,0.1,0.7\n1,1.0,20,2,0.4,0.2,0.6\n")
    run = wb.load_serving_log(tmp_path / "run.csv")
    assert run.trace.prompt_tokens.tolist() == [20, 10]          # sorted by arrival
    assert run.measured["request_id"].tolist() == [1, 0] and run.measured["ttft_s"].tolist() == [0.4, 0.5]


@pytest.mark.parametrize("body, message", [
    ("arrival_s,prompt_tokens\n0,1\n", "missing column"),
    (HEADER, "no requests"),
    (HEADER + "0,0.0,10,3,abc,0.1,0.7\n", "line 2, column ttft_s"),
    (HEADER + "0,0.0,-1,3,0.5,0.1,0.7\n", "line 2, column prompt_tokens"),
    (HEADER + "0,0.0,10.5,3,0.5,0.1,0.7\n", "whole number"),
    (HEADER + "0,0.0,10,3,0.9,0.1,0.7\n", "e2e_s < ttft_s"),
    (HEADER + "0,0.0,10,3,0.5,0.1,0.7\n0,1.0,10,3,0.5,0.1,0.7\n", "duplicate request_id"),
])
def test_bad_serving_logs_are_refused(tmp_path, body, message):
    (tmp_path / "run.csv").write_text(body)
    with pytest.raises(wb.TraceFormatError, match=message):
        wb.load_serving_log(tmp_path / "run.csv")


def test_bad_setup_files_are_refused(tmp_path):
    (tmp_path / "run.csv").write_text(HEADER + "0,0.0,10,3,0.5,0.1,0.7\n")
    with pytest.raises(FileNotFoundError, match="no such serving log"):
        wb.load_serving_log(tmp_path / "nope.csv")
    (tmp_path / "setup.json").write_text("{oops")
    with pytest.raises(ValueError, match="invalid JSON"):
        wb.load_serving_log(tmp_path / "run.csv")
    (tmp_path / "setup.json").write_text(json.dumps({"sim_config": {"scheduler": "continuous_fcfs", "gpus": 1}}))
    with pytest.raises(ValueError, match="SimConfig does not know: gpus"):
        wb.load_serving_log(tmp_path / "run.csv")
    (tmp_path / "setup.json").write_text(json.dumps({"sim_config": {"scheduler": "continuous_fcfs", "kv_blocks": 0}}))
    with pytest.raises(ValueError, match="not a valid SimConfig: kv_blocks"):
        wb.load_serving_log(tmp_path / "run.csv")
    with pytest.raises(FileNotFoundError, match="no such setup file"):
        wb.load_serving_log(tmp_path / "run.csv", setup=tmp_path / "other.json")


# --- the step-log replay ---------------------------------------------------------------------------------------

def _log_run(tmp_path, rows, **config) -> ServingLog:
    body = HEADER + "".join(f"{i},{a},{p},{o},1,0,1\n" for i, (a, p, o) in enumerate(rows))  # TPOT agrees
    (tmp_path / "run.csv").write_text(body)
    run = wb.load_serving_log(tmp_path / "run.csv")
    cfg = wb.SimConfig(scheduler="continuous_fcfs", **config)
    return run, cfg


def test_replay_one_request_by_hand(tmp_path):
    run, cfg = _log_run(tmp_path, [(0.0, 100, 3)], kv_blocks=100)
    step = wb.StepTimeModel(prefill=(0.01, 1e-4, 0.0), decode=(0.005, 1e-5, 1e-3))
    log = replay_run(run, step, cfg)
    # prefill 0.01 + 100e-4 = 0.02; decode over contexts 101 and 102: 0.00701 + 0.00702
    assert log.first_token_s[0] == pytest.approx(0.02, abs=1e-12)
    assert log.finish_s[0] == pytest.approx(0.02 + 0.00701 + 0.00702, abs=1e-12)
    assert log.kind.tolist() == [0, 1, 1] and log.sum_ctx.tolist() == [0, 101, 102]


def test_replay_preemption_by_hand(tmp_path):
    """block_size 4, 4 blocks (vLLM v0.2, watermark int(0.04) = 0); A and B: prompt 4, 6 tokens.  Prefill steps
    0.1, decode steps 0.01.

    0.00-0.10 prefill both (1 block each)         0.10-0.11 decode both (context 5: a block each, 4 used)
    0.11 none free: B (the last) preempted with 2 tokens; A decodes alone    0.12-0.22 B re-prefilled (6 tokens)
    0.22 none free: B preempted with 3; A alone   0.23-0.33 B re-prefilled (7)
    0.33 none free: B preempted with 4; A alone   0.34-0.44 B re-prefilled (8)
    0.44 none free: B preempted with 5; A takes a block for context 9: its 6th token, done at 0.45
    0.45-0.55 B re-prefilled (9 tokens, 3 blocks): its 6th token, done."""
    run, cfg = _log_run(tmp_path, [(0.0, 4, 6), (0.0, 4, 6)], kv_blocks=4, block_size=4)
    step = wb.StepTimeModel(prefill=(0.1, 0.0, 0.0), decode=(0.01, 0.0, 0.0))
    log = replay_run(run, step, cfg)
    assert log.first_token_s.tolist() == pytest.approx([0.1, 0.1])
    assert log.finish_s.tolist() == pytest.approx([0.45, 0.55])
    assert log.preemptions.tolist() == [0, 4]
    assert log.sum_l[log.kind == 0].tolist() == [8, 6, 7, 8, 9]      # each re-prefill covers prompt + generated
    assert log.n[log.kind == 1].tolist() == [2, 1, 1, 1, 1]


@pytest.mark.parametrize("chunked,caching", [(False, False), (True, False), (True, True)])
def test_step_log_features_give_every_step_its_time(runs, chunked, caching):
    """The step log's features (prefill tokens, sum of l * (p + l), decodes, context sum) times the model's
    coefficients reproduce every step's logged duration, runs of decode steps expanded; and it carries the
    engine's per-request times."""
    from workbench.sim.steplog import step_features
    slow = wb.StepTimeModel(prefill=(0.03, 1.3e-4, 7e-9), decode=(0.02, 1.5e-6, 6e-4),
                            decode_large=(0.025, 1e-6, 9e-4), decode_large_threshold=40,
                            arrival_overhead_s=(0.01, 1e-5))
    run = runs[2]
    cfg = run.config.replace(chunked_prefill=chunked, prefix_caching=caching,
                             max_num_batched_tokens=2048 if chunked else 16384)
    log = replay_run(run, slow, cfg)
    x = step_features(log, slow)
    np.testing.assert_allclose(x @ slow.coefficients()[:9], log.end_s - log.start_s, rtol=1e-9, atol=1e-12)
    assert np.all(log.start_s[1:] >= log.end_s[:-1] - 1e-12)        # one replica, steps back to back or idle
    if chunked:
        assert (log.kind == 2).any()                               # steps mixing decodes and prefill chunks
    res = wb.simulate(run.trace, cfg, latency=slow).requests
    np.testing.assert_allclose(res["ttft_s"], log.first_token_s - run.trace.arrival_s, rtol=0, atol=1e-9)
    np.testing.assert_allclose(res["e2e_s"], log.finish_s - run.trace.arrival_s, rtol=0, atol=1e-9)


# --- compare_to_measured ---------------------------------------------------------------------------------------

def test_compare_to_measured_by_hand(tmp_path):
    (tmp_path / "run.csv").write_text(HEADER + "0,0,10,2,1,1,2\n1,1,10,2,2,1,3\n2,2,10,2,3,1,4\n3,3,10,2,4,1,5\n")
    run = wb.load_serving_log(tmp_path / "run.csv")
    simulated = pd.DataFrame({"ttft_s": [1.1, 1.8, 3.3, 4.0], "tpot_s": [1.0] * 4, "e2e_s": [2.0, 3.0, 4.0, 10.0]})
    res = SimpleNamespace(requests=simulated, trace_fingerprint=run.trace.fingerprint)
    table = wb.compare_to_measured(res, run).loc["run"]
    ttft = table.loc["ttft_s"]
    assert ttft["measured_mean"] == 2.5 and ttft["simulated_mean"] == pytest.approx(2.55)
    assert ttft["mean_rel_error"] == pytest.approx(0.02)
    assert ttft["simulated_p50"] == pytest.approx(2.55) and ttft["measured_p50"] == 2.5
    assert ttft["median_abs_rel_error"] == pytest.approx(0.1)   # |errors| 0.1, 0.1, 0.1, 0
    e2e = table.loc["e2e_s"]
    assert e2e["mean_rel_error"] == pytest.approx(19 / 14 - 1)  # (2+3+4+10)/4 over (2+3+4+5)/4
    assert e2e["median_abs_rel_error"] == 0.0
    assert request_errors(res, run)["rel_error_e2e_s"].tolist() == pytest.approx([0, 0, 0, 1])
    with pytest.raises(ValueError, match="has 3 requests"):
        wb.compare_to_measured(SimpleNamespace(requests=simulated.head(3)), run)
    with pytest.raises(ValueError, match="continuous-engine result"):
        wb.compare_to_measured(SimpleNamespace(requests=simulated[["ttft_s"]]), run)


# --- calibration -----------------------------------------------------------------------------------------------

def _synthetic_runs(runs, truth: wb.StepTimeModel) -> list[ServingLog]:
    """The measured runs' requests, with "measured" times made by replaying them with ``truth``."""
    made = []
    for run in runs[:2]:
        log = replay_run(run, truth)
        ttft = log.first_token_s - run.trace.arrival_s
        e2e = log.finish_s - run.trace.arrival_s
        tpot = np.where(run.trace.output_tokens > 1, (e2e - ttft) / np.maximum(run.trace.output_tokens - 1, 1), np.nan)
        measured = pd.DataFrame({"request_id": np.arange(len(ttft)), "ttft_s": ttft, "tpot_s": tpot, "e2e_s": e2e})
        made.append(ServingLog(run.name, run.path, run.trace, measured, run.config, run.setup))
    return made


def test_calibrate_recovers_a_known_model_from_two_loads(runs):
    """Timelines made by a known model at 1 and 2 requests/s (vLLM v0.2 rules): calibrated jointly from a start
    20-90% off, the fit reproduces both runs and the decode step time at the batch sizes they reach; a queueing
    schedule is not smooth in the coefficients, so an exact recovery is not expected."""
    truth = wb.StepTimeModel(prefill=(0.03, 1.6e-4, 0.0), decode=(0.03, 1.2e-6, 8e-4))
    start = wb.StepTimeModel(prefill=(0.02, 1.2e-4, 1e-9), decode=(0.022, 6e-7, 1e-4))
    synthetic = _synthetic_runs(runs, truth)
    # one model made both runs, with no run-to-run variation: run_spread=0 (every run simulated with the server's
    # model); with run factors (the default) each run's own model reproduces it, and the factors stay within one
    # spread of 1 (they take up a little of the shape a queue-reproducing fit leaves between two loads)
    factored = wb.calibrate(start, synthetic, proxy=True).fit_report
    assert factored.training_e2e_error() <= 0.03 and (factored.run_factors.spreads.abs() <= 1).all()
    fitted = wb.calibrate(start, synthetic, proxy=True, run_spread=0)
    report = fitted.fit_report
    assert report.cost < 0.05 * report.cost_start
    for contexts in ([800] * 5, [800] * 10, [1000] * 20):     # batches the two runs reach
        assert fitted.decode_time_s(contexts) == pytest.approx(truth.decode_time_s(contexts), rel=0.06)
    for run in synthetic:
        sim = wb.simulate(run.trace, run.config, latency=fitted).requests
        assert sim["e2e_s"].mean() == pytest.approx(run.measured["e2e_s"].mean(), rel=0.03)
        assert sim["ttft_s"].mean() == pytest.approx(run.measured["ttft_s"].mean(), rel=0.05)
    assert set(report.targets["metric"]) == {"ttft_s", "tpot_s", "e2e_s"} and set(report.targets["run"]) == {
        r.name for r in synthetic}
    status = report.terms.set_index("term")["status"]
    assert set(status) <= {"fitted", "prior", "held"} and status["decode_fixed"] == "fitted"


@pytest.mark.parametrize("caching", [False, True])
def test_calibrate_fits_chunked_prefill_runs(runs, caching):
    """v1 runs (chunked prefill, 512-token budget; with prefix caching on Mooncake conversations) timed by a
    known BLIS-style model, a + b * prefill tokens + c * decodes + d * decode contexts: calibrating from a model
    30-40% off reproduces the runs' means (within 3%: the search stops when every target is within about half
    its 3% noise floor, so tighter would test the stopping rule, not the fit) and the decode step time."""
    truth = wb.StepTimeModel.blis(0.015, 1.5e-4, 4e-4, 1.0e-6, name="truth")
    start = wb.StepTimeModel.blis(0.015, 1.0e-4, 2.5e-4, 0.6e-6, name="start")
    if caching:
        conv = wb.load_trace("mooncake_conv", use_real_timestamps=True).head(120)
        cfg = wb.SimConfig(scheduler="continuous_fcfs", chunked_prefill=True, max_num_batched_tokens=2048,
                           prefix_caching=True, block_size=16, kv_blocks=40_000)
        traces = [("conv", conv.time_scaled(0.25), cfg)]
    else:
        traces = [(r.name, r.trace, r.config.replace(chunked_prefill=True, max_num_batched_tokens=512))
                  for r in runs[:2]]
    made = []
    for name, trace, cfg in traces:
        res = wb.simulate(trace, cfg, latency=truth).requests
        measured = pd.DataFrame({"request_id": np.arange(len(res)), "ttft_s": res.ttft_s, "tpot_s": res.tpot_s,
                                 "e2e_s": res.e2e_s})
        made.append(ServingLog(name, None, trace, measured, cfg, None))
    fitted = wb.calibrate(start, made, proxy=True)
    assert fitted.fit_report.cost < 0.02 * fitted.fit_report.cost_start
    # the decode step at the batches and contexts the runs have (DistServe's prompts are short, Mooncake's long)
    for contexts in (([13_000] * 20,) if caching else ([800] * 5, [1200] * 25)):
        assert fitted.decode_time_s(contexts) == pytest.approx(truth.decode_time_s(contexts), rel=0.06)
    for run in made:
        sim = wb.simulate(run.trace, run.config, latency=fitted).requests
        assert sim["e2e_s"].mean() == pytest.approx(run.measured["e2e_s"].mean(), rel=0.03)
        assert sim["ttft_s"].mean() == pytest.approx(run.measured["ttft_s"].mean(), rel=0.05)
    if caching:
        # the hour's first conversations reuse little yet (3%): enough to exercise the cached prefill pieces
        assert wb.simulate(made[0].trace, made[0].config, latency=fitted).summary["prefix_hit_rate"] > 0.02


def test_calibrate_refuses_bad_input(runs):
    step = default_step_model()
    with pytest.raises(ValueError, match="no runs"):
        wb.calibrate(step, [])
    with pytest.raises(ValueError, match="StepTimeModel"):
        wb.calibrate("opt-13b-a100", runs)
    with pytest.raises(ValueError, match="scheduler='continuous_fcfs', num_gpus=1"):
        wb.calibrate(step, runs[:1], runs[0].config.replace(scheduler="continuous_sla"))
    with pytest.raises(ValueError, match="num_gpus=1"):
        wb.calibrate(step, runs[:1], runs[0].config.replace(num_gpus=2))
    with pytest.raises(ValueError, match=r"hold: unknown term\(s\) \['decode_z'\]"):
        wb.calibrate(step, runs[:1], hold=("decode_fixed", "decode_z"))
    with pytest.raises(ValueError, match=r"free, hold: \['decode_fixed'\] in both"):
        wb.calibrate(step, runs[:1], hold=("decode_fixed",), free=["decode_fixed"])
    with pytest.raises(ValueError, match="calibrate: prior_weight apply to disaggregated runs; vLLM runs take stages"):
        wb.calibrate(step, runs[:1], prior_weight=0.1)
    for spread in (-0.1, 2.0, "wide"):
        with pytest.raises((ValueError, TypeError), match="run_spread"):
            wb.calibrate(step, runs[:1], run_spread=spread)


def test_calibrate_on_one_run_of_its_own_profile_holds_what_the_run_cannot_tell(runs):
    """The light run (batches of ~5, one load) from this server's own published profile: the fit reproduces it,
    the report says for every term whether it was fitted or held and why, and what the run cannot tell apart
    (the fixed costs of a prefill step, which its few short prefill steps barely show) stays at the profile."""
    step = default_step_model()
    fitted = wb.calibrate(step, runs[0])
    report = fitted.fit_report
    assert not report.proxy and report.runs == ["vllm-100-1"]
    assert report.training_e2e_error() <= 0.05 and report.converged
    terms = report.terms.set_index("term")
    assert set(terms.index) == {"prefill_fixed", "decode_fixed", "prefill_token", "prefill_attention", "decode_context",
                                "decode_request", "arrival_fixed", "arrival_token", "token_overhead"}
    held = terms[terms.status == "held"]
    lacks = held.start == 0                           # a term the start lacks, which the run did not ask for
    assert (held.reason.str.len() > 0).all() and held[~lacks].reason.str.startswith("held at the start").all()
    assert held[lacks].reason.str.startswith("held at 0").all()
    assert np.allclose(held.fitted, held.start)                          # held means unchanged
    assert fitted.prefill[0] == step.prefill[0]
    fitted_terms = terms[terms.status == "fitted"]
    assert len(fitted_terms) >= 1 and (fitted_terms["std"] < 0.3).all()   # each pinned to +-30%
    # the terms the run does not pin stay near the profile, within their prior's width; at one light load the
    # decode step's cost per context token acts as the run's own level does (its run factor)
    prior = terms[terms.status == "prior"]
    assert (np.abs(np.log(prior.fitted / prior.start)) <= prior.prior_width).all()
    assert "not separable from the run factor" in terms.loc["decode_context", "reason"]
    assert "decode_fixed" in report.describe() and "training error on vllm-100-1" in report.describe()
    assert "run factor of vllm-100-1" in report.describe()


@pytest.fixture(scope="module")
def one_run_predictions(runs):
    table, reports, refused = vllm_runs.one_run_workflow(default_step_model(), runs)
    return vllm_runs.check_targets(table), reports, refused


@pytest.fixture(scope="module")
def leave_one_out_predictions(runs):
    table, reports, refused = vllm_runs.leave_one_out_workflow(default_step_model(), runs)
    return vllm_runs.check_targets(table), reports, refused


@pytest.mark.slow
def test_calibrate_on_one_run_predicts_the_others(one_run_predictions):
    """Each DistServe run calibrated alone reproduces itself (its own model, the server's times its run factor,
    within its bound) and predicts the other runs that were not saturated within the issue's 30%; none is
    refused."""
    targets, reports, refused = one_run_predictions
    assert not refused and set(reports) == set(RUNS)
    judged = targets.dropna(subset=["limit"])
    assert len(judged) == 3 + 4 and judged["met"].all(), judged.to_string()
    held_out = targets[(targets.role == "held-out")]
    assert (held_out.trained_on != held_out.run).all()


MAIN_ERRORS = vllm_runs.MAIN_ERRORS      # measured figures of main's calibrate before issue 21 (see there)
TOLERANCE = 0.025
# the folds where this calibrate is worse than main's by more than TOLERANCE, and how much worse it may be: the
# saturated run's setup makes its fits queue too little and decode too slowly (TTFT -39%, TPOT +11% with its own
# run factor: a smaller KV cache than setup.json's estimate would reproduce both), which its run factor absorbs,
# and main's fits of it missed the run itself by +12.7% (alone) and +13.7% (with the light run)
WORSE_THAN_MAIN = {("vllm-350-3.5", "vllm-200-2"): 0.05, ("vllm-200-2+vllm-350-3.5", "vllm-100-1"): 0.06}


@pytest.mark.slow
def test_every_distserve_fold_keeps_the_errors_of_main(one_run_predictions, leave_one_out_predictions):
    """Calibrated on one run and predicting the other two, and on two predicting the third: each held-out mean-E2E
    error is no worse than main's (MAIN_ERRORS) plus TOLERANCE, but for the two folds of WORSE_THAN_MAIN (each
    within its own margin); none is refused (main's calibrate reproduced neither the medium run alone, -12.3%, nor
    the medium run beside the light one, -16.3%)."""
    rows = []
    for targets, _, refused in (one_run_predictions, leave_one_out_predictions):
        assert not refused
        rows.append(targets[targets.role == "held-out"])
    held_out = pd.concat(rows).set_index(["trained_on", "run"])["mean_rel_error"]
    assert set(held_out.index) == set(MAIN_ERRORS)
    worse = {fold: error for fold, error in held_out.items()
             if abs(error) > abs(MAIN_ERRORS[fold]) + WORSE_THAN_MAIN.get(fold, TOLERANCE)}
    assert not worse, (worse, held_out.round(3).to_dict())


def test_a_run_the_model_cannot_reproduce_is_refused_with_its_report(runs):
    """Every term held at a start twice as slow: the model cannot reproduce the run, and calibrate says so (no
    model comes back that looks calibrated), with the report and what to try."""
    slow = wb.StepTimeModel(prefill=(0.044, 2.8e-4, 1.6e-8), decode=(0.047, 1.2e-6, 1.2e-4), name="slow")
    every = ["prefill_fixed", "decode_fixed", "prefill_token", "prefill_attention", "decode_context",
             "decode_request", "arrival_fixed", "arrival_token", "token_overhead"]
    with pytest.raises(CalibrationError, match=r"cannot reproduce its own training run\(s\): mean E2E off by "
                                               r"vllm-100-1 \+") as caught:
        wb.calibrate(slow, runs[0], hold=every)
    report = caught.value.report
    assert report is not None and report.training_e2e_error() > 0.05 and report.fitted == []
    assert "Try: the run's own config" in str(caught.value)


# --- the notebook ---------------------------------------------------------------------------------------------

NOTEBOOK = paths.NOTEBOOKS_DIR / "fidelity_vllm.ipynb"


def test_notebook_is_committed_clean_and_paired():
    import jupytext

    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert "parameters" in code[0].metadata.get("tags", [])
    paired = jupytext.read(NOTEBOOK.with_suffix(".py"))
    assert [c.source for c in paired.cells] == [c.source for c in nb.cells]
    from workbench.study.orchestrate.suite import FIDELITY, SuiteOptions, notebook_parameters
    assert set(notebook_parameters(SuiteOptions(), FIDELITY)) <= set(pm.inspect_notebook(str(NOTEBOOK)))


def test_notebook_runs_at_a_tiny_size(tmp_path):
    out = tmp_path / "out"
    execute_notebook(NOTEBOOK, tmp_path / "fidelity.ipynb",
                     {"results_dir": str(out), "runs": "vllm-100-1,vllm-200-2", "llmservingsim_runs": "RTX4090",
                      "max_evaluations": 150})
    table = pd.read_csv(out / "fidelity_vllm.csv")
    assert set(table["run"]) == {"vllm-100-1", "vllm-200-2", "RTX4090-Llama-3.1-8B[:150]",
                                 "RTX4090-Llama-3.1-8B[150:]"}
    assert set(table["role"]) == {"published", "training", "held-out"}
    assert np.isfinite(table["simulated_mean"]).all()
    published = table[table.role == "published"].set_index(["run", "metric"])
    assert published.loc[("vllm-100-1", "e2e_s"), "measured_mean"] == pytest.approx(5.504, abs=1e-3)
    targets = pd.read_csv(out / "fidelity_vllm_targets.csv")
    training = targets[targets.role == "training"]
    assert (training["limit"] >= 0.05).all() and training["met"].all()     # 5% x each run's amplification
    terms = pd.read_csv(out / "fidelity_vllm_terms.csv")
    assert {"fitted", "held"} <= set(terms["status"]) and terms["trained_on"].nunique() == 3
    for png in ("fidelity_vllm_published.png", "fidelity_vllm_calibrated.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (tmp_path / "fidelity.ipynb").read_text()
    assert "calibrated on vllm-200-2" in text and "held at the start" in text


def test_cross_validation_predicts_each_run_from_the_others(runs):
    """Calibrate on all runs but one, predict that one, each way round: never fitted on the run it predicts."""
    from workbench.study.fidelity.calibration import cross_validate

    table, models = cross_validate(default_step_model(), runs[:2], max_evaluations=200)
    assert set(models) == {"vllm-100-1", "vllm-200-2"}
    assert models["vllm-100-1"].fit_report.runs == ["vllm-200-2"]
    assert set(table["trained_on"]) == {"vllm-100-1", "vllm-200-2"}
    assert np.isfinite(table["mean_rel_error"]).all()
