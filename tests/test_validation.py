"""The fidelity checks of ``workbench.study.fidelity.validation``: each case at a small size, and the notebook.

Every case must pass, with tolerances small enough to matter (asserted), and
two mutation tests show that a real modelling error makes the checks fail.
"""

import dataclasses
import math

import nbformat
import numpy as np
import pandas as pd
import papermill
import pytest

from workbench.study.fidelity import validation as wv
from workbench.paths import NOTEBOOKS_DIR, REPO_ROOT


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(tmp_path / "cache"))


def assert_all_passed(rows: pd.DataFrame) -> None:
    failed = rows[~rows["passed"]]
    assert failed.empty, "\n" + wv.brief(failed).to_string()
    assert list(rows.columns) == list(wv.COLUMNS)


# ---------------------------------------------------------------- closed forms

def test_erlang_c_reduces_to_m_m_1_and_matches_a_table_value():
    assert wv.erlang_c(1, 0.7) == pytest.approx(0.7)                      # M/M/1: P(wait) = rho
    assert wv.mmc_wait_s(0.7, 1.0, 1) == pytest.approx(0.7 / (1.0 - 0.7))  # rho / (mu - lambda)
    # c = 2, a = 1: P0 = 1/3, C = a^2 / (2! (1 - 1/2)) P0 = 1/3
    assert wv.erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert wv.erlang_c(100, 90.0) < wv.erlang_c(10, 9.0)                   # pooling: same load, less waiting
    with pytest.raises(ValueError):
        wv.erlang_c(2, 2.0)


def test_md1_is_half_the_m_m_1_wait():
    assert wv.md1_wait_s(0.9, 1.0) == pytest.approx(0.5 * wv.mmc_wait_s(0.9, 1.0, 1))
    with pytest.raises(ValueError):
        wv.md1_wait_s(1.0, 1.0)


def test_multi_bin_closed_form_is_theorem_4_2():
    l_min, l_max, b = 100.0, 1123.0, 16
    for k in (1, 2, 4, 8, 16):
        edges = l_min + np.arange(k + 1) * (l_max - l_min) / k
        paper = np.mean(b / (b + 1) * edges[1:] + 1 / (b + 1) * edges[:-1])    # PAPERS.md, Theorem 4.2
        assert wv.mbb_expected_batch_tokens(l_min, l_max, b, k) == pytest.approx(paper)
    assert wv.mbb_expected_batch_tokens(l_min, l_max, b, math.inf) == pytest.approx((l_min + l_max) / 2)
    assert wv.mbb_throughput_rps(l_min, l_max, b, 1, 1e-3) == pytest.approx(
        b / (1e-3 * (b / (b + 1) * l_max + l_min / (b + 1))))


def test_discrete_expected_max_matches_brute_force_and_the_closed_form():
    low, high, b = 3, 9, 4
    values = np.arange(low, high + 1)
    grid = np.stack(np.meshgrid(*[values] * b, indexing="ij"), -1).reshape(-1, b)
    assert wv.discrete_uniform_expected_max(low, high, b) == pytest.approx(grid.max(axis=1).mean())
    for k in (1, 4, 16):
        exact = wv.mbb_expected_batch_tokens_discrete(100, 1123, 16, k)
        assert exact == pytest.approx(wv.mbb_expected_batch_tokens(100, 1123, 16, k), rel=5e-4)


def test_algorithm_2_fixed_points():
    assert wv.sla_controller_ceiling(32, 2) == 31
    assert wv.sla_controller_ceiling(32, 3) == 30
    assert wv.sla_controller_floor(1, 2) == 2
    assert wv.sla_controller_floor(1, 3) == 2


def test_stratified_lengths_are_exactly_uniform():
    lengths = wv.stratified_uniform_tokens(10, 13, 10, np.random.default_rng(0))
    assert sorted(lengths) == [10, 10, 10, 11, 11, 11, 12, 12, 12, 13, 13, 13]


def test_batch_means_standard_error_matches_iid_theory():
    rng = np.random.default_rng(1)
    _, se = wv.batch_means_estimate([rng.normal(size=50_000) for _ in range(4)])
    assert se == pytest.approx(1 / math.sqrt(200_000), rel=0.35)


# ---------------------------------------------------------------- the cases

def test_case_1_md1():
    result = wv.check_md1(n_requests=300_000, seeds=2, seed=1)
    rows = result.rows
    assert_all_passed(rows)
    waits = rows[rows["case"] == wv.CASE_MD1]
    assert len(waits) == 3 and (waits["tolerance"] <= 0.10).all()


def test_case_2_mmc():
    result = wv.check_mmc(n_requests=400_000, seeds=2, seed=1)
    rows = result.rows
    assert_all_passed(rows)
    mmc = rows[rows["case"] == wv.CASE_MMC]
    assert len(mmc) == 6 and (mmc["tolerance"] <= 0.15).all()


def test_case_3_littles_law_rows_cover_every_simulated_case():
    rows = pd.concat([wv.check_md1(20_000, 1, loads=(0.5,)).rows,
                      wv.check_multi_bin(4_096, 1, k_values=(1, 2)).rows,
                      wv.check_mechanics(10_000).rows])
    little = rows[rows["case"] == wv.CASE_LITTLE]
    assert_all_passed(little)
    assert little["quantity"].str.startswith("L = lambda W").sum() == 4   # M/D/1, multi-bin, memory, controller


def test_case_4_multi_bin_batching():
    result = wv.check_multi_bin(n_requests=16_384, seeds=2, seed=1)
    rows = result.rows
    assert_all_passed(rows)
    mbb = rows[rows["case"] == wv.CASE_MBB]
    assert len(mbb) == 6 and (mbb["tolerance"] <= 0.01).all()
    points = result.data["points"]
    assert points["simulated_rps"].is_monotonic_increasing                   # more bins, more throughput


def test_case_5_memory_and_rejection():
    result = wv.check_memory(n_requests=30_000, seed=1)
    rows = result.rows
    assert_all_passed(rows)
    rejected = rows[rows["quantity"].str.startswith("rejected")]
    assert rejected["theory"].iloc[0] > 0                     # the trace does have requests that never fit
    bounds = rows[rows["tolerance_kind"] == "upper bound"]
    assert len(bounds) == len(wv.MECHANICS_SCHEDULERS)
    assert (bounds["simulated"] == bounds["theory"]).any()                   # the cache is filled, so the bound binds


def test_case_5_sla_controller():
    result = wv.check_controller(n_requests=40_000, seed=1)
    assert_all_passed(result.rows)
    runs = result.data["runs"]
    assert runs["generous"]["size_limit"].iloc[0] == 16                     # starts mid-interval, then rises
    # an infeasible budget no longer sinks the limit to Algorithm 2's floor of 2: the controller releases the bin
    assert runs["tight"]["size_limit"].iloc[-1] == 31
    assert "releases" in " ".join(result.rows["quantity"])


def test_case_6_synthetic_trace():
    result = wv.check_synthetic_trace()
    rows = result.rows
    assert_all_passed(rows)
    for quantity in ("mean_rate_rps", "failure_share", "chatgpt_share", "api_share", "mean_request_tokens",
                     "max_response_tokens", "requests_per_hour_14h", "requests_per_day_cv"):
        assert quantity in set(rows["quantity"])


# ---------------------------------------------------------------- the checks catch real errors

def test_a_five_percent_service_time_error_fails_the_queueing_checks(monkeypatch):
    real = wv.simulate

    def slow_gpu(trace, cfg, latency):
        return real(trace, cfg, latency=dataclasses.replace(latency, base_s=latency.base_s * 1.05))

    monkeypatch.setattr(wv, "simulate", slow_gpu)
    rows = wv.check_md1(n_requests=100_000, seeds=2, loads=(0.8,)).rows
    failed = set(rows.loc[~rows["passed"], "quantity"])
    assert "mean wait in queue, rho=0.8" in failed
    assert any(q.startswith("GPU utilisation") for q in failed)


def test_binning_that_ignores_k_fails_the_multi_bin_check(monkeypatch):
    real = wv.simulate
    monkeypatch.setattr(wv, "simulate", lambda trace, cfg, latency: real(trace, cfg.replace(k_bins=1), latency=latency))
    rows = wv.check_multi_bin(n_requests=8_192, seeds=1, k_values=(1, 4)).rows
    assert rows.set_index("quantity").loc["throughput (req/s), k=1", "passed"]
    assert not rows.set_index("quantity").loc["throughput (req/s), k=4", "passed"]


# ---------------------------------------------------------------- table and notebook

def test_table_helpers(tmp_path):
    table = wv.collect([wv.check_multi_bin(4_096, 1, k_values=(1, 2)), wv.check_md1(20_000, 1, loads=(0.5,))])
    assert list(table["case"].unique()) == [wv.CASE_MD1, wv.CASE_LITTLE, wv.CASE_MBB]
    summary = wv.summary_by_case(table)
    assert summary["checks"].sum() == len(table)
    note = wv.closing_note(table)
    assert all(case in note for case in table["case"].unique())
    path = wv.write_table(table, tmp_path / "v.csv")
    assert len(pd.read_csv(path)) == len(table)


def test_committed_notebook_is_without_outputs_and_takes_its_parameters():
    # the .py/.ipynb pair staying in sync is checked in tests/test_notebooks.py
    committed = nbformat.read(NOTEBOOKS_DIR / "validation.ipynb", as_version=4)
    nbformat.validate(committed)
    assert committed.metadata.kernelspec.name == "python3"
    tagged = [c for c in committed.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    assert {"n_requests", "seeds", "seed", "results_dir", "include_trace"} <= set(
        papermill.inspect_notebook(str(NOTEBOOKS_DIR / "validation.ipynb")))
    assert all(not c.get("outputs") and c.get("execution_count") is None
               for c in committed.cells if c.cell_type == "code")


@pytest.mark.slow
def test_validation_notebook_runs_at_small_size(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    out = tmp_path / "results"
    papermill.execute_notebook(str(NOTEBOOKS_DIR / "validation.ipynb"), str(tmp_path / "validation.ipynb"),
                               parameters=dict(n_requests=20_000, seeds=2, results_dir=str(out)),
                               kernel_name="python3", cwd=str(REPO_ROOT), progress_bar=False)
    table = pd.read_csv(out / "validation.csv")
    assert table["passed"].all()
    assert set(table["case"]) == set(wv.CASES)
    for png in ("validation_md1.png", "validation_multi_bin.png", "validation_controller.png",
                "validation_synthetic_trace.png"):
        assert (out / png).stat().st_size > 0


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="n_requests"):
        wv.check_md1(n_requests=10)
    with pytest.raises(ValueError, match="seeds"):
        wv.check_mmc(n_requests=10_000, seeds=0)
