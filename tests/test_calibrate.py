"""Calibration on one run (issue 21): load stages, targets, term bounds, identifiability, the search, and the
proof: runs made by the engine from a hidden step-time model, with noise, recovered and predicted."""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import workbench as wb
from workbench.study.fidelity import search
from workbench.study.fidelity.calibration import (CalibrationError, CalibrationWarning, RunsDisagreeWarning,
                                                  simulate_run)
from workbench.study.fidelity.stages import check_boundaries, detect_stages, stage_index
from workbench.study.fidelity.synthetic_runs import benchmark_workload, measured_run
from workbench.study.fidelity.targets import (NOISE_FLOOR, TAIL_NOISE_FACTOR, measured_occupancy, run_targets,
                                              uncached_prompt_tokens)
from workbench.study.fidelity.terms import Parameterisation, data_bounds, model_terms, origins
from workbench.traces.serving_log import ServingLog

V1 = wb.SimConfig(scheduler="continuous_fcfs", chunked_prefill=True, max_num_batched_tokens=2048, max_num_seqs=256,
                  block_size=16, kv_blocks=40_000, prefix_caching=True)
HIDDEN = wb.StepTimeModel(prefill=(0.006, 2.5e-5, 0.0), decode=(0.006, 5e-8, 1.5e-4), arrival_overhead_s=(0.003, 0.0),
                          name="hidden")
GENERIC = wb.StepTimeModel(prefill=(0.01, 5e-5, 0), decode=(0.01, 0, 1e-4), name="generic")   # the start


def _log(arrival, prompt, output, ttft, e2e, cfg=V1, **columns) -> ServingLog:
    """A run from per-request times (TPOT derived), through load_serving_log as a user would."""
    output = np.asarray(output)
    ttft, e2e = np.asarray(ttft, float), np.asarray(e2e, float)
    frame = pd.DataFrame({"request_id": np.arange(len(arrival)), "arrival_s": arrival, "prompt_tokens": prompt,
                          "output_tokens": output, "ttft_s": ttft,
                          "tpot_s": np.where(output > 1, (e2e - ttft) / np.maximum(output - 1, 1), np.nan),
                          "e2e_s": e2e, **columns})
    return wb.load_serving_log(frame, config=cfg, name="run")


# ---------------------------------------------------------------- load stages

@pytest.mark.parametrize("n", [100, 1000, 5000])
def test_a_constant_rate_has_one_stage(n):
    rng = np.random.default_rng(n)
    found = [detect_stages(np.cumsum(rng.exponential(1.0, n))).size for _ in range(30)]
    assert found == [0] * 30


def test_rate_changes_are_found_where_they_are():
    rng = np.random.default_rng(1)
    gaps = np.concatenate([rng.exponential(1 / 2, 400), rng.exponential(1 / 6, 400), rng.exponential(1 / 3, 400)])
    arrival = np.cumsum(gaps)
    found = detect_stages(arrival)
    assert found.size == 2
    # each change within 15 arrivals of where the rate changed
    assert abs(np.searchsorted(arrival, found[0]) - 400) <= 15 and abs(np.searchsorted(arrival, found[1]) - 800) <= 15
    assert found[0] == arrival[np.searchsorted(arrival, found[0])]       # a stage starts at an arrival


def test_simultaneous_arrivals_and_short_runs_do_not_break_detection():
    assert detect_stages(np.zeros(500)).size == 0                       # every gap 0 (1 s timestamps)
    assert detect_stages(np.repeat(np.arange(100.0), 5)).size == 0
    assert detect_stages([0.0, 1.0, 2.0]).size == 0                      # too few requests for two stages


def test_stage_index_and_given_boundaries():
    assert stage_index([0.0, 0.5, 1.0, 2.5], [1.0, 2.0]).tolist() == [0, 0, 1, 2]
    assert check_boundaries([1.0], "stages", [0.0, 2.0]).tolist() == [1.0]
    with pytest.raises(ValueError, match=r"stages: stage boundaries must increase strictly, got \[2.0, 1.0\]"):
        check_boundaries([2.0, 1.0], "stages", [0.0, 3.0])
    with pytest.raises(ValueError, match=r"stages: stage 1 \(from 5 s\) holds no request of the run"):
        check_boundaries([5.0], "stages", [0.0, 3.0])
    with pytest.raises(ValueError, match=r"stages\[0\]"):
        check_boundaries([math.nan], "stages", [0.0, 3.0])


# ---------------------------------------------------------------- targets

def test_targets_by_hand():
    """Two stages of 40 requests (a boundary given at 40 s): per stage the mean and p90 of each metric, numpy's
    own, each with a sigma of at least the noise floor (a p90's doubled); the same times simulated give no
    residual, a 10% slower E2E everywhere gives log(1.1) / sigma on the E2E rows."""
    n = 80
    arrival = np.arange(n, dtype=float)
    ttft = 0.1 + 0.001 * np.arange(n)
    e2e = ttft + 1.0 + 0.01 * (np.arange(n) % 7)
    run = _log(arrival, np.full(n, 100), np.full(n, 11), ttft, e2e)
    targets = run_targets(run, [40.0])
    table = targets.table
    assert len(table) == 2 * 3 * 2 and targets.size == 12
    first = np.arange(40)
    row = table[(table.stage == 0) & (table.metric == "e2e_s") & (table.statistic == "p90")].iloc[0]
    assert row.measured == pytest.approx(np.percentile(e2e[first], 90)) and row.requests == 40
    row = table[(table.stage == 1) & (table.metric == "tpot_s") & (table.statistic == "mean")].iloc[0]
    assert row.measured == pytest.approx(((e2e - ttft) / 10)[40:].mean())
    assert (table[table.statistic == "mean"].sigma >= NOISE_FLOOR).all()
    assert (table[table.statistic == "p90"].sigma >= TAIL_NOISE_FACTOR * NOISE_FLOOR).all()
    same = pd.DataFrame({"ttft_s": ttft, "tpot_s": (e2e - ttft) / 10, "e2e_s": e2e})
    assert np.allclose(targets.residuals(same), 0.0)
    slower = same.assign(e2e_s=1.1 * e2e)
    r = targets.residuals(slower)
    rows = (table.metric == "e2e_s").to_numpy()
    assert np.allclose(r[rows], np.log(1.1) / table.sigma[rows]) and np.allclose(r[~rows], 0.0)
    # a target that multiplies step-time errors by 4 (a queue) is held to 4 x the noise floor: its sigma is
    # hypot(4 x 3%, se) (doubled for a p90); an amplification below 1 counts as 1
    amplification = np.where(table.metric == "ttft_s", 4.0, 0.5)
    amplified = targets.amplified(amplification).table
    tail = np.where(table.statistic == "p90", TAIL_NOISE_FACTOR, 1.0)
    assert np.allclose(amplified.sigma, np.hypot(NOISE_FLOOR * np.maximum(amplification, 1), table.se) * tail)
    assert targets.amplified(amplification).amplification_of("ttft_s") == 4.0
    assert targets.amplification_of("ttft_s") == 1.0                     # before amplified: 1


def test_requests_that_computed_their_prompt_get_a_ttft_target_of_their_own():
    """A run whose prompts repeat (prompt_id): the first of each prompt computes it, the others hit the cache."""
    n = 60
    run = _log(np.arange(n, dtype=float), np.full(n, 800), np.full(n, 5), np.full(n, 0.05), np.full(n, 0.2),
               prompt_id=np.arange(n) % 12)
    assert uncached_prompt_tokens(run.trace, 16).tolist() == [800] * 12 + [0] * 48     # 800 = 50 whole blocks
    table = run_targets(run, []).table
    computed = table[table.requests_group == "computed prompts"]
    assert len(computed) == 1 and computed.iloc[0].requests == 12 and computed.iloc[0].metric == "ttft_s"
    assert computed.iloc[0].statistic == "mean"                           # too few for a p90


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_uncached_prompt_tokens_match_a_plain_walk(data):
    """Property: the vectorised count of tokens no earlier request had equals a walk over the prefix tree."""
    from workbench.sim.prefix_tree import prefix_tree

    n = data.draw(st.integers(1, 25))
    prompt = np.array(data.draw(st.lists(st.integers(1, 120), min_size=n, max_size=n)))
    hashes = [data.draw(st.lists(st.integers(0, 2), max_size=int(p) // 16)) for p in prompt]
    trace = wb.Trace.from_arrays(np.arange(n, dtype=float), prompt, np.ones(n, int), prefix_hashes=hashes,
                                 prefix_block_tokens=16)
    tree = prefix_tree(trace, 16)
    seen, expected = set(), []
    for r in range(n):
        nodes = tree.path_node[tree.path_off[r]:tree.path_off[r + 1]].tolist()
        k = 0
        while k < len(nodes) and nodes[k] in seen:
            k += 1
        cached = (int(tree.node_first[nodes[k - 1]]) + int(tree.node_blocks[nodes[k - 1]])) * 16 if k else 0
        expected.append(max(int(trace.prompt_tokens[r]) - cached, 0))
        seen.update(nodes)
    assert uncached_prompt_tokens(trace, 16).tolist() == expected


def test_measured_occupancy_by_hand():
    """A decodes from 1 to 3 s (prompt 10, 21 tokens), B from 2 to 3 s (prompt 30, 11 tokens): A's window has
    one request for 1 s and two for 1 s (mean 1.5); A's context grows from 11 to 30 (mean 20.5) and B's, over
    A's second second, from 31 to 40 (mean 35.5): A's mean context = 20.5 + 35.5 / 2 = 38.25; over B's window A
    grows from 20.5 to 30 (mean 25.25)."""
    run = _log([0.0, 1.0], [10, 30], [21, 11], [1.0, 1.0], [3.0, 2.0])
    occupancy = measured_occupancy(run).set_index("request")
    assert occupancy.loc[0, "batch"] == pytest.approx(1.5) and occupancy.loc[1, "batch"] == pytest.approx(2.0)
    assert occupancy.loc[0, "context"] == pytest.approx(38.25)
    assert occupancy.loc[1, "context"] == pytest.approx(35.5 + 25.25)       # B's own, and A's second second
    assert occupancy.loc[0, "tpot_s"] == pytest.approx(0.1)


# ---------------------------------------------------------------- terms and their bounds

def test_bounds_come_from_the_measured_run():
    """Each term alone cannot cost more than what it is part of: the fixed decode cost at most the fastest
    TPOTs (2nd percentile, x1.25), the prefill cost per token at most TTFT / prompt of the requests with the
    least of it."""
    n = 100
    prompt = np.linspace(100, 1000, n).astype(int)
    ttft = 0.01 + 1e-4 * prompt
    e2e = ttft + 0.02 * 9
    bounds = data_bounds([_log(np.arange(n) * 10.0, prompt, np.full(n, 10), ttft, e2e)], [V1])
    assert bounds["fixed_decode"] == pytest.approx(0.02 * 1.25)
    assert bounds["token"] == pytest.approx(np.quantile(ttft / prompt, 0.02) * 1.25)
    assert bounds["overhead_ttft"] == pytest.approx(np.quantile(ttft, 0.02) * 1.25)
    assert 1e-4 < bounds["token"] < 2e-4


def test_a_parameterisation_moves_whole_terms_and_keeps_the_others():
    terms = model_terms(HIDDEN.__class__(prefill=(0.01, 1e-4, 0.0), decode=(0.01, 1e-6, 1e-4),
                                         decode_large=(0.02, 2e-6, 3e-4), decode_large_threshold=64), chunked=False)
    names = [t.name for t in terms]
    assert names == ["prefill_fixed", "decode_fixed", "prefill_token", "prefill_attention", "decode_context",
                     "decode_request", "arrival_fixed", "arrival_token", "token_overhead"]
    start = wb.StepTimeModel(prefill=(0.01, 1e-4, 0.0), decode=(0.01, 1e-6, 1e-4),
                             decode_large=(0.02, 2e-6, 3e-4), decode_large_threshold=64)
    bound = {t.name: 1.0 for t in terms}
    reference = start.coefficients()
    param = Parameterisation(start, tuple(terms), ("decode_fixed", "arrival_fixed"), bound, reference,
                             origins(reference, terms, bound))
    coef = param.vector(np.array([np.log(2.0), 0.0]))
    assert coef[3] == pytest.approx(0.02) and coef[6] == pytest.approx(0.04)        # both regimes, one ratio
    assert coef[10] == pytest.approx(1.0 / 25)                              # switched on at its nominal share
    assert coef[0] == 0.01 and coef[4] == 1e-6                               # the others as they were
    assert np.allclose(param.at(coef), [np.log(2.0), 0.0])
    low, high = param.limits()
    assert high[0] == pytest.approx(np.log(1.0 / 0.02)) and low[0] < -6


# ---------------------------------------------------------------- identifiability and the search

def test_selection_takes_what_the_targets_pin_and_says_why_not_the_rest():
    """Columns: a strong one, one parallel to it, a weak one, an independent one."""
    rng = np.random.default_rng(0)
    base, other = rng.standard_normal(12), rng.standard_normal(12)
    jac = np.column_stack([10 * base, 8 * base + 0.01 * other, 0.5 * other, 6 * other])
    names = ["strong", "parallel", "weak", "independent"]
    chosen = search.select_identifiable(jac, names, 0.3)
    assert [names[k] for k in chosen.chosen] == ["strong", "independent"]
    assert chosen.reasons[1].startswith("not separable from strong (their effects on the targets are 100% alike)")
    assert chosen.reasons[2].startswith(f"too little effect: alone, the targets would pin it to "
                                        f"+-{1 / np.linalg.norm(jac[:, 2]):.2g} only (limit +-0.3)")
    # a priority decides which of two parallel terms moves
    first = search.select_identifiable(jac, names, 0.3, priority=[1, 0, 0, 0])
    assert sorted(names[k] for k in first.chosen) == ["independent", "parallel"]
    assert first.reasons[0].startswith("not separable from parallel")
    assert search.standard_errors(np.column_stack([base, base])).tolist() == [np.inf, np.inf]


def test_finite_differences_of_a_known_function():
    f = lambda z: np.array([2 * z[0] + z[1], z[0] * z[1], z[1] ** 2])  # noqa: E731
    z = np.array([1.0, 2.0])
    low, high = np.array([-5.0, -5.0]), np.array([5.0, 2.05])
    forward = search.jacobian(f, z, f(z), low, high, 0.1)
    assert forward[:, 0] == pytest.approx([2, 2, 0])
    assert forward[:, 1] == pytest.approx([1, 1, 2 * 2 - 0.1])                # backwards: the box ends at 2.05
    central = search.jacobian(f, z, f(z), low, np.array([5.0, 5.0]), 0.3, central=True)
    assert central[:, 1] == pytest.approx([1, 1, 4])                         # a parabola's secant is exact


def test_the_evaluator_counts_its_budget_and_does_not_rerun_a_model():
    run = measured_run(benchmark_workload((4.0,), 60, seed=1), V1, HIDDEN, name="small")
    targets = [run_targets(run, [])]
    terms = model_terms(HIDDEN, True)
    reference = HIDDEN.coefficients()
    param = Parameterisation(HIDDEN, tuple(terms), ("step_fixed",), {t.name: 1.0 for t in terms}, reference, reference)
    evaluator = search.Evaluator(param, [run], [V1], targets, max_evaluations=2, deadline=math.inf)
    r0 = evaluator.residuals(np.zeros(1))
    evaluator.residuals(np.zeros(1))
    assert evaluator.evaluations == 1 and np.abs(r0[:-1]).max() < 3     # the hidden model, within noise
    evaluator.residuals(np.array([0.1]))
    with pytest.raises(search.BudgetExhausted):
        evaluator.residuals(np.array([0.2]))
    assert "2 simulations" in evaluator.out_of_budget


# ---------------------------------------------------------------- calibrate: behaviour

@pytest.fixture(scope="module")
def staged():
    """Three load stages (3, 6, 12 requests/s), prompts drawn from 100 distinct ones, timed by the hidden model
    with 5% noise."""
    return measured_run(benchmark_workload((3.0, 6.0, 12.0), 300, distinct_prompts=100, seed=1), V1, HIDDEN,
                        seed=11, name="shared")


def test_calibrate_is_deterministic_given_a_seed(staged):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)      # a budget this small stops the search early
        one = wb.calibrate(GENERIC, staged, seed=3, max_evaluations=120, max_training_error=0.5)
        two = wb.calibrate(GENERIC, staged, seed=3, max_evaluations=120, max_training_error=0.5)
    assert one.coefficients().tolist() == two.coefficients().tolist()
    assert one.fit_report.search["evaluations"] == two.fit_report.search["evaluations"] <= 120


def test_calibrate_reports_stages_terms_targets_and_the_search(staged):
    fitted = wb.calibrate(GENERIC, staged)
    report = fitted.fit_report
    assert report.proxy                                  # a start no run's setup names: another model or GPU
    assert report.stages["stage"].tolist() == [0, 1, 2]
    assert report.stages["rate_rps"].tolist() == pytest.approx([3, 6, 12], rel=0.2)
    assert report.training_e2e_error() <= 0.05 and report.converged
    assert {"fitted", "held"} == set(report.terms.status)
    assert report.terms.loc[report.terms.status == "held", "reason"].str.len().min() > 0
    assert set(report.targets.requests_group) == {"all", "computed prompts"}
    assert report.search["evaluations"] <= report.search["max_evaluations"] == 800
    text = report.describe()
    assert "stage 2 of shared" in text and "a proxy" in text and "training error on shared: mean e2e_s" in text
    # stages given instead of found, or none (a small budget: what is tested is which targets are made)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        quick = dict(max_evaluations=60, max_training_error=0.5)
        none = wb.calibrate(GENERIC, staged, stages=False, **quick).fit_report
        given = wb.calibrate(GENERIC, staged, stages=[50.0], **quick).fit_report
    assert none.stages["stage"].tolist() == [0] and set(none.targets.stage) == {-1, 0}
    assert given.stages["start_s"].tolist() == [0.0, 50.0] and set(given.targets.stage) == {-1, 0, 1}


def test_a_search_stopped_by_its_budget_says_so(staged):
    with pytest.warns(CalibrationWarning, match="stopped before it converged"):
        fitted = wb.calibrate(GENERIC, staged, max_evaluations=70, max_training_error=0.5)
    assert not fitted.fit_report.converged and "budget" in fitted.fit_report.search["message"]
    with pytest.raises(CalibrationError, match="the budget .* ends before a first fit; raise max_evaluations"):
        wb.calibrate(GENERIC, staged, max_evaluations=5)


def test_hold_and_free_are_obeyed(staged):
    fitted = wb.calibrate(GENERIC, staged, hold=["prefill_token"], free=["token_overhead"], max_training_error=0.5)
    terms = fitted.fit_report.terms.set_index("term")
    assert terms.loc["prefill_token", "status"] == "held" and terms.loc["prefill_token", "reason"] == \
        "held at the start (hold)"
    assert fitted.prefill[1] == GENERIC.prefill[1]
    assert terms.loc["token_overhead", "status"] == "fitted"


def test_a_start_in_the_wrong_units_or_form_is_refused(staged):
    in_ms = wb.StepTimeModel(prefill=(0.6, 0.0025, 0.0), decode=(0.6, 0.0, 0.015), name="milliseconds?")
    with pytest.raises(ValueError, match=r"start: a one-request decode step of milliseconds\? is 0.615 s, .* times "
                                         r"the runs' fastest measured TPOT .* StepTimeModel takes seconds"):
        wb.calibrate(in_ms, staged)

    class TableModel(wb.StepTimeModel):   # what a table or kernel-profile model would be: not the linear form
        pass

    table = TableModel(prefill=HIDDEN.prefill, decode=HIDDEN.decode)
    with pytest.raises(TypeError, match="start: calibrate fits the terms of the linear step-time model .* a "
                                        "TableModel is not one. Linearise it first"):
        wb.calibrate(table, staged)


def test_the_run_decides_whether_the_start_is_a_proxy(staged):
    own = wb.calibrate(wb.StepTimeModel(**{k: getattr(HIDDEN, k) for k in ("prefill", "decode",
                                                                             "arrival_overhead_s")}, name="own"),
                       staged, proxy=False)
    assert not own.fit_report.proxy
    held = own.fit_report.terms[own.fit_report.terms.status == "held"]
    at_zero = held.start == 0                                  # terms the start lacks, which the run did not ask for
    assert held[~at_zero].reason.str.startswith("held at the start").all()
    assert held[at_zero].reason.str.startswith("held at 0").all() and np.allclose(held.fitted, held.start)


# ---------------------------------------------------------------- the proof

@pytest.fixture(scope="module")
def workloads():
    """Like real benchmarks: a shared-prompt workload (100 distinct prompts, each sent many times) and a
    distinct-prompt one, each in three load stages; and two held-out workloads at other rates."""
    return {
        "shared": measured_run(benchmark_workload((4.0, 8.0, 12.0), 600, distinct_prompts=100, seed=1), V1, HIDDEN,
                               seed=11, name="shared"),
        "distinct": measured_run(benchmark_workload((4.0, 8.0, 12.0), 600, seed=2), V1, HIDDEN, seed=12,
                                 name="distinct"),
        "distinct-other-rates": measured_run(benchmark_workload((6.0, 14.0), 500, seed=3), V1, HIDDEN, seed=13,
                                             name="distinct-other-rates"),
        "shared-10rps": measured_run(benchmark_workload((10.0,), 500, distinct_prompts=100, seed=4), V1, HIDDEN,
                                     seed=14, name="shared-10rps"),
    }


@pytest.mark.parametrize("train", ["shared", "distinct"])
def test_proof_calibrated_on_one_workload_predicts_the_others(workloads, train):
    """From the issue's generic start (a proxy), calibrated on one workload: the issue's two workloads (100
    shared prompts, distinct prompts) predicted within 3% on mean E2E; the held-out ones at other rates within
    4.5% (6 and 14 requests/s go past the highest trained rate, where the hidden per-context decode cost, which
    a workload of similar prompts cannot tell from a per-request cost, shows; with 2,000 requests a stage,
    benchmarks/bench_calibrate.py, they are within 3.5%); and the coefficients the workload identifies
    recovered: the fixed step cost within 10%, a typical prompt's time to its first token
    (arrival overhead and an 800-token prefill: a distinct-prompt workload cannot tell the two apart, so one
    carries the other) and the decode step of a typical batch (30 requests of 1,000 tokens) within 5%."""
    fitted = wb.calibrate(GENERIC, workloads[train])
    report = fitted.fit_report
    for name, run in workloads.items():
        table = wb.compare_to_measured(simulate_run(run, fitted), run)
        limit = 0.03 if name in ("shared", "distinct") else 0.045
        assert abs(table.loc[(name, "e2e_s"), "mean_rel_error"]) <= limit, (train, name, table.round(3))
    terms = report.terms.set_index("term")
    assert terms.loc["step_fixed", "status"] == "fitted" and terms.loc["prefill_token", "status"] == "fitted"
    assert fitted.decode[0] == pytest.approx(HIDDEN.decode[0], rel=0.1)
    first_token = lambda m: m.prefill_time_s([800]) + m.arrival_overhead_s[0]  # noqa: E731
    assert first_token(fitted) == pytest.approx(first_token(HIDDEN), rel=0.05)
    assert fitted.decode_time_s([1000] * 30) == pytest.approx(HIDDEN.decode_time_s([1000] * 30), rel=0.05)
    if train == "shared":
        # its TTFT is short (cache hits): the 3 ms arrival overhead shows, and is found
        assert terms.loc["arrival_fixed", "status"] == "fitted"
        assert fitted.arrival_overhead_s[0] == pytest.approx(0.003, rel=0.25)


def test_an_overloaded_fit_is_not_handed_back_as_a_success(workloads):
    """The run's config with a KV cache a tenth of the server's: nothing reproduces the run, and calibrate
    refuses, naming the run, the miss and what to try."""
    run = workloads["distinct"]
    small = V1.replace(kv_blocks=400)
    with pytest.raises(CalibrationError, match=r"mean E2E off by distinct [+-][0-9.]+% \(bound [0-9.]+%.*\) "
                                               r"\(max_training_error=5%\); it is not returned. Try: the run's own "
                                               r"config"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CalibrationWarning)
            wb.calibrate(GENERIC, run, small, max_evaluations=200)


def test_a_load_the_server_sustained_is_sustained_by_the_fit():
    """The issue's failure: calibrated on one run, the model could not sustain a load the real server did
    (+323% to +1,411% on mean E2E).  A server whose decode step grows with the batch faster than the generic
    start says, measured at 3 and 6 requests/s with shared prompts, predicts a heavier distinct-prompt workload
    (6 and 9 requests/s, sustained: its queue does not grow) within 5% on mean E2E and 10% on mean TTFT."""
    hidden = wb.StepTimeModel(prefill=(0.004, 2e-5, 0.0), decode=(0.004, 1e-7, 2e-4), arrival_overhead_s=(0.002, 0))
    staged = measured_run(benchmark_workload((3.0, 6.0), 600, distinct_prompts=100, seed=5), V1, hidden, seed=5,
                          name="staged")
    heavy = measured_run(benchmark_workload((6.0, 9.0), 800, seed=2), V1, hidden, seed=2, name="heavy")
    ttft = heavy.measured["ttft_s"].to_numpy()
    assert np.median(ttft[-300:]) < 2 * np.median(ttft[:300])          # sustained: no growing queue
    fitted = wb.calibrate(GENERIC, staged)
    table = wb.compare_to_measured(simulate_run(heavy, fitted), heavy).loc["heavy"]
    assert abs(table.loc["e2e_s", "mean_rel_error"]) <= 0.05 and abs(table.loc["ttft_s", "mean_rel_error"]) <= 0.1


# ---------------------------------------------------------------- the MAP fit: prior, run factors, search


class _Quadratic:
    """An evaluator whose residuals are ``A (z - z_star)`` (and counts its calls): a least-squares problem solved by
    hand."""

    def __init__(self, a, z_star):
        self.a, self.z_star, self.calls = np.asarray(a, float), np.asarray(z_star, float), 0
        self.best = self.since_mark = (math.inf, None)
        self.size = self.a.shape[0]
        self.evaluations = 0

    def residuals(self, z):
        self.calls += 1
        r = self.a @ (np.asarray(z, float) - self.z_star)
        cost = float(r @ r)
        if cost < self.best[0]:
            self.best = (cost, np.array(z, float))
        if cost < self.since_mark[0]:
            self.since_mark = (cost, np.array(z, float))
        return r

    def mark(self):
        self.since_mark = (math.inf, None)


def test_the_local_search_leaves_the_reference_and_respects_the_box():
    """From z = 0 (the reference, where scipy's trust region starts with a radius of |z0|), Levenberg-Marquardt
    reaches the minimum of a linear least-squares problem, and stops at the box's edge when the minimum lies
    outside it."""
    a = np.array([[2.0, 0.5], [0.0, 1.0], [1.0, -1.0]])
    box = (np.array([-3.0, -3.0]), np.array([3.0, 3.0]))
    z, status = search._local(_Quadratic(a, [1.2, -0.7]), np.zeros(2), *box, h=0.1)
    assert z == pytest.approx([1.2, -0.7], abs=2e-3) and status in (2, 3)
    z, _ = search._local(_Quadratic(a, [5.0, 0.0]), np.zeros(2), *box, h=0.1)
    assert z[0] == pytest.approx(3.0)                       # clipped: the box's upper edge


def test_local_ends_that_fit_equally_well_are_averaged():
    """Two local searches ending 0.4 apart on a flat valley (costs within 1 of each other): their mean is returned
    when it fits as well; two ends far apart in cost: the best one."""
    valley = _Quadratic(np.array([[0.1, 0.0], [0.0, 3.0]]), [0.0, 0.0])      # z_1 barely pinned
    ends = [(valley.residuals(p) @ valley.residuals(p), np.array(p)) for p in ([0.2, 0.0], [-0.2, 0.01])]
    z, cost = search._equally_good(valley, ends, ends[0][1], ends[0][0])
    assert z == pytest.approx([0.0, 0.005]) and cost <= ends[0][0] + search.EQUALLY_GOOD
    steep = [(0.5, np.array([0.0, 0.0])), (3.0, np.array([1.0, 1.0]))]
    assert search._equally_good(valley, steep, steep[0][1], 0.5)[0].tolist() == [0.0, 0.0]


def test_a_parameterisation_gives_the_prior_rows_and_each_runs_step_times():
    """Prior rows z_k / width_k (none for an infinite width) and u_j / spread; run j's step-time terms (not its
    overheads) times exp(u_j); with centred factors (a proxy) the last run's factor makes them sum to 0."""
    start = wb.StepTimeModel(prefill=(0.02, 1e-4, 0.0), decode=(0.02, 1e-6, 1e-4), arrival_overhead_s=(0.01, 0.0))
    terms = model_terms(start, False)
    reference = start.coefficients()
    bound = {t.name: 1.0 for t in terms}
    param = Parameterisation(start, tuple(terms), ("decode_fixed", "arrival_fixed"), bound, reference, reference,
                             widths=(0.5, math.inf), free_runs=2, run_spread=0.15)
    z = np.array([0.1, 0.2, 0.3, -0.15])
    assert param.prior(z) == pytest.approx([0.1 / 0.5, 0.3 / 0.15, -0.15 / 0.15])
    first, second = param.run_vectors(z, 2)
    server = param.vector(z)
    assert server[3] == pytest.approx(0.02 * math.exp(0.1)) and server[10] == pytest.approx(0.01 * math.exp(0.2))
    assert first[3] == pytest.approx(server[3] * math.exp(0.3)) and first[0] == pytest.approx(0.02 * math.exp(0.3))
    assert first[10] == server[10] and second[3] == pytest.approx(server[3] * math.exp(-0.15))   # overheads kept
    centred = dataclasses.replace(param, free_runs=1, centred=True)
    assert centred.run_factors(np.array([0.1, 0.2, 0.3]), 2).tolist() == pytest.approx([0.3, -0.3])
    assert centred.prior(np.array([0.1, 0.2, 0.3])) == pytest.approx([0.2, 0.3 / 0.15, -0.3 / 0.15])
    low, high = dataclasses.replace(param, run_box=0.45).limits()
    assert (low[-2:], high[-2:]) == (pytest.approx([-0.45, -0.45]), pytest.approx([0.45, 0.45]))


def test_runs_that_disagree_are_fitted_to_their_compromise_and_said_to_disagree():
    """One server's workload measured twice, the second run's steps 1.6x slower (far beyond the 15% runs of one
    server differ by): the fit returns their compromise with a RunsDisagreeWarning, each run reproduced by its own
    factor, the factors 1.6x apart (within 10%), and the server's model between the two runs."""
    work = benchmark_workload((4.0, 8.0), 300, distinct_prompts=100, seed=3)
    slow = dataclasses.replace(HIDDEN, prefill=tuple(1.6 * c for c in HIDDEN.prefill),
                               decode=tuple(1.6 * c for c in HIDDEN.decode))
    runs = [measured_run(work, V1, HIDDEN, seed=1, name="fast"), measured_run(work, V1, slow, seed=2, name="slow")]
    with pytest.warns(RunsDisagreeWarning, match=r"the training runs disagree: slow's step times are 1\.[4-8]"):
        fitted = wb.calibrate(GENERIC, runs)
    report = fitted.fit_report
    factors = report.run_factors.set_index("run").factor
    assert factors["slow"] / factors["fast"] == pytest.approx(1.6, rel=0.1)
    assert report.training_e2e_error() <= 0.05
    server = report.training_error[report.training_error.metric == "e2e_s"].set_index("run").server_rel_error
    assert server["fast"] > 0.05 and server["slow"] < -0.05                 # the server's model between them


def test_a_proxys_cpu_overheads_are_not_evidence_about_this_server():
    """A proxy whose (BLIS-fitted) overheads are 8 ms per request and 6 ms per output token, calibrated on a run
    of a server without a per-token overhead: the per-token overhead starts at 0, the run does not ask for it, and
    it stays at 0 (the reason says why); the run is reproduced within 3%."""
    run = measured_run(benchmark_workload((4.0, 8.0), 300, seed=4), V1, HIDDEN, seed=4, name="run")
    proxy = dataclasses.replace(GENERIC, arrival_overhead_s=(0.008, 0.0), token_overhead_s=0.006, name="proxy")
    fitted = wb.calibrate(proxy, run)
    terms = fitted.fit_report.terms.set_index("term")
    assert fitted.token_overhead_s == 0.0 and terms.loc["token_overhead", "status"] == "held"
    assert "a proxy's CPU overheads are another server's" in terms.loc["token_overhead", "reason"]
    assert abs(wb.compare_to_measured(simulate_run(run, fitted), run).loc[("run", "e2e_s"), "mean_rel_error"]) <= 0.03


def test_one_light_load_reports_how_little_it_says_about_heavy_ones():
    """A run at one light load cannot tell the fixed step cost from the per-request one (the start's shape, the
    prior, decides): its report gives the decode step at 4x its largest batch an uncertainty of 20% or more;
    a run with a second, heavier stage pins it to 10%."""
    hidden = wb.StepTimeModel(prefill=(0.004, 2e-5, 0.0), decode=(0.004, 1e-7, 2e-4), arrival_overhead_s=(0.002, 0))
    light = measured_run(benchmark_workload((3.0,), 800, distinct_prompts=100, seed=1), V1, hidden, seed=1)
    staged = measured_run(benchmark_workload((3.0, 6.0), 600, distinct_prompts=100, seed=5), V1, hidden, seed=5)
    light_steps = wb.calibrate(GENERIC, light).fit_report.decode_steps()
    staged_steps = wb.calibrate(GENERIC, staged).fit_report.decode_steps()
    assert light_steps.trained.any() and not light_steps.trained.iloc[-1]
    assert light_steps.rel_std.iloc[-1] >= 0.2 and staged_steps.rel_std.iloc[-1] <= 0.1
    assert light_steps.rel_std[light_steps.trained].max() <= 0.1
