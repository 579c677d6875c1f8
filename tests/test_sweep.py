"""Sweeps: test ids, checkpoints (kill -9, torn files, concurrent writers), executors."""

from __future__ import annotations

import csv
import io
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import sweep_tests

import workbench.study.runs.sweep as sweep
from workbench.study.runs import experiments
from workbench.sim.config import SimConfig
from workbench.sim.latency import LatencyModel
from workbench.study.runs.sweep import SweepError, TraceOptions, run_sweep
from workbench.study.store import checkpoints, files
from workbench.study.store.checkpoints import comparable, read_rows

TESTS_DIR = Path(__file__).resolve().parent


# --------------------------------------------------------------------------- ids


def test_test_id_is_stable_and_sensitive_to_every_part(small_trace_csv, tmp_path):
    options = TraceOptions(dataset=str(small_trace_csv), num_requests=100, use_real_timestamps=True)
    cfg = SimConfig(num_gpus=2)
    latency = LatencyModel(base_s=0.01, per_token_s=2e-4, batch_penalty=0.3)
    base = sweep.test_id(options, "fp", cfg, latency)
    assert base == sweep.test_id(TraceOptions(dataset=str(small_trace_csv), num_requests=100,
                                              use_real_timestamps=True), "fp", SimConfig(num_gpus=2), latency)
    assert len(base) == 16 and int(base, 16) >= 0
    # the same file under another path: same content, same fingerprint, same id
    copy = tmp_path / "copy.csv"
    copy.write_bytes(small_trace_csv.read_bytes())
    assert sweep.test_id(TraceOptions(dataset=str(copy), num_requests=100, use_real_timestamps=True),
                         "fp", cfg, latency) == base
    changed = {
        sweep.test_id(options, "other fingerprint", cfg, latency),
        sweep.test_id(TraceOptions(dataset=str(small_trace_csv), num_requests=101, use_real_timestamps=True),
                      "fp", cfg, latency),
        sweep.test_id(TraceOptions(dataset=str(small_trace_csv), num_requests=100, rps_scaling=100.0),
                      "fp", cfg, latency),
        sweep.test_id(options, "fp", cfg.replace(k_bins=8), latency),
        sweep.test_id(options, "fp", cfg.replace(seed=1), latency),
        sweep.test_id(options, "fp", cfg, LatencyModel(base_s=0.02, per_token_s=2e-4, batch_penalty=0.3)),
    }
    assert base not in changed and len(changed) == 6


def test_a_test_id_is_the_same_in_another_process(small_trace_csv, python):
    test = sweep_tests(small_trace_csv, gpus=(2,), ks=(4,))[0]
    code = (f"import sys; sys.path.insert(0, {str(TESTS_DIR)!r}); from conftest import sweep_tests; "
            f"print(sweep_tests({str(small_trace_csv)!r}, gpus=(2,), ks=(4,))[0].test_id)")
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == test.test_id


# --------------------------------------------------------------------------- rows and checkpoints


def test_rows_hold_config_metrics_trace_and_timing(small_trace_csv, tmp_path):
    tests = sweep_tests(small_trace_csv, gpus=(1,), ks=(1, 4))
    rows = run_sweep(tests, tmp_path, executor="serial", progress=False)
    assert list(rows["test_id"]) == [t.test_id for t in tests]
    for column in ("test_id", "step", "label", "scheduler", "num_gpus", "k_bins", "d_sla_s", "seed",
                   "num_requests", "rps_scaling", "use_real_timestamps", "latency_base_s", "offered",
                   "goodput_rps", "sla_violation_rate", "latency_p99_s", "k_bins_effective", "trace_label",
                   "trace_fingerprint", "synthetic", "wall_s", "finished_at"):
        assert column in rows.columns, column
    assert (rows["offered"] == 2_000).all()
    assert not rows["synthetic"].any()
    assert (tmp_path / "sweep_test.csv").is_file()
    on_disk = pd.read_csv(tmp_path / "sweep_test.csv")
    assert on_disk.columns[-1] == "finished_at" and len(on_disk) == 2


def test_a_rerun_recomputes_nothing(small_trace_csv, tmp_path, count_runs):
    tests = sweep_tests(small_trace_csv)
    first = run_sweep(tests, tmp_path, executor="serial", progress=False)
    assert len(count_runs) == 4
    second = run_sweep(tests, tmp_path, executor="serial", progress=False)
    assert len(count_runs) == 4
    pd.testing.assert_frame_equal(first, second)


def test_changing_one_parameter_reruns_only_the_tests_it_affects(small_trace_csv, tmp_path, count_runs):
    # the checkpoint is keyed by each test's full configuration. (A step's results folder holds one parameter
    # set, issue 9 item 6, so the plans go to their own folders and the tests share one checkpoint here.)
    common = dict(max_requests=2_000, dataset=str(small_trace_csv), executor="serial",
                  schedulers=("multi_bin_dynamic",))
    shared = tmp_path / "shared"

    def run(**changes):
        plan = experiments.plan_step2(results_dir=str(tmp_path / str(len(count_runs))), **common, **changes)
        run_sweep(plan.tests, shared, checkpoint="step2_gpu_scaling.csv", executor="serial", progress=False)

    run(max_gpus=2)
    assert len(count_runs) == 2
    run(max_gpus=4)  # adds 4 GPUs only
    assert len(count_runs) == 3
    run(max_gpus=4, d_sla=2.0)
    assert len(count_runs) == 6  # another SLA: every test is new
    assert len(read_rows(shared / "step2_gpu_scaling.csv")) == 6


def test_torn_last_line_and_duplicates_are_dropped_on_load(small_trace_csv, tmp_path, caplog):
    tests = sweep_tests(small_trace_csv, gpus=(1,), ks=(1, 4))
    rows = run_sweep(tests, tmp_path, executor="serial", progress=False)
    path = tmp_path / "sweep_test.csv"
    good = path.read_text()
    lines = good.rstrip("\n").split("\n")
    # a duplicate of the first row, then a row cut off in the middle
    path.write_text(good + lines[1] + "\n" + lines[2][: len(lines[2]) // 2])
    loaded = read_rows(path)
    assert sorted(loaded["test_id"]) == sorted(rows["test_id"])
    assert len(loaded) == 2
    assert "incomplete" in caplog.text or "torn" in caplog.text
    assert "duplicate" in caplog.text
    # and a sweep over the damaged file recomputes nothing and rewrites it clean
    again = run_sweep(tests, tmp_path, executor="serial", progress=False)
    assert sorted(again["test_id"]) == sorted(rows["test_id"])
    assert len(pd.read_csv(path)) == 2


def _damaged_checkpoint(small_trace_csv, tmp_path):
    tests = sweep_tests(small_trace_csv, gpus=(1,), ks=(1, 4))
    run_sweep(tests, tmp_path, executor="serial", progress=False)
    path = tmp_path / "sweep_test.csv"
    return tests, path, path.read_text().rstrip("\n").split("\n")


def test_missing_values_are_written_as_nan_not_as_empty_cells(small_trace_csv, tmp_path):
    _, path, lines = _damaged_checkpoint(small_trace_csv, tmp_path)
    header, *rows = _fields(lines)
    k1 = next(row for row in rows if row[header.index("label")] == "1 GPUs, K=1")
    assert k1[header.index("bin1_requests")] == "NaN"  # K=1 has no bin 1
    assert "" not in k1


@pytest.mark.parametrize("damage, message", [
    (lambda lines: lines + lines, "line 4 repeats the header (two files concatenated?)"),
    (lambda lines: [lines[0], lines[1] + ",extra", lines[2]], "line 2 has {wide} fields but the header has {n}"),
    (lambda lines: [lines[0], lines[1][: len(lines[1]) // 2], lines[2]], "line 2 has"),
    (lambda lines: [lines[0], lines[1], lines[0].replace("test_id", "step")], "names column(s) ['step'] twice"),
    (lambda lines: [lines[0], _blank(lines[0], lines[1], "throughput_rps"), lines[2]],
     "line 2, column 'throughput_rps': empty cell where a number is expected"),
])
def test_a_damaged_checkpoint_is_a_clear_error_naming_file_and_line(small_trace_csv, tmp_path, damage, message):
    tests, path, lines = _damaged_checkpoint(small_trace_csv, tmp_path)
    n = len(_fields(lines[:1])[0])
    damaged = damage(lines)
    if "twice" in message:
        damaged = [damaged[2]] + damaged[:2]
    path.write_text("\n".join(damaged) + "\n")
    message = message.format(wide=n + 1, n=n)
    for attempt in (lambda: read_rows(path), lambda: run_sweep(tests, tmp_path, executor="serial", progress=False)):
        with pytest.raises(checkpoints.CheckpointError, match=re.escape(message)) as excinfo:
            attempt()
        assert str(path) in str(excinfo.value) and "move it aside" in str(excinfo.value)


def _fields(lines):
    return list(csv.reader(lines))


def _joined(fields) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(fields)
    return buffer.getvalue()


def _blank(header: str, line: str, column: str) -> str:
    header, fields = _fields([header, line])
    fields[header.index(column)] = ""
    return _joined(fields)


def test_an_empty_cell_in_a_row_of_older_simulator_code_is_tolerated(small_trace_csv, tmp_path):
    _, path, lines = _damaged_checkpoint(small_trace_csv, tmp_path)
    header, old = _fields(lines[:2])
    old[header.index("simulator_version")] = "000000000000"
    path.write_text("\n".join([lines[0], _blank(lines[0], _joined(old), "throughput_rps"), lines[2]]) + "\n")
    assert len(read_rows(path)) == 2  # recomputed on the next run anyway


def test_a_failing_test_does_not_lose_the_others(small_trace_csv, tmp_path, monkeypatch):
    tests = sweep_tests(small_trace_csv)
    real = sweep.run_test

    def flaky(test):
        if test.test_id == tests[1].test_id:
            raise RuntimeError("boom")
        return real(test)

    monkeypatch.setattr(sweep, "run_test", flaky)
    with pytest.raises(SweepError, match="1 of 4 test"):
        run_sweep(tests, tmp_path, executor="serial", progress=False)
    assert len(read_rows(tmp_path / "sweep_test.csv")) == 3
    monkeypatch.setattr(sweep, "run_test", real)
    assert len(run_sweep(tests, tmp_path, executor="serial", progress=False)) == 4


def test_a_duplicate_test_in_the_list_is_refused(small_trace_csv, tmp_path):
    test = sweep_tests(small_trace_csv, gpus=(1,), ks=(1,))[0]
    with pytest.raises(ValueError, match="twice"):
        run_sweep([test, test], tmp_path, executor="serial", progress=False)


# --------------------------------------------------------------------------- executors


def test_serial_and_process_pool_give_identical_rows(small_trace_csv, tmp_path):
    tests = sweep_tests(small_trace_csv, gpus=(1, 2), ks=(1, 4))
    serial = run_sweep(tests, tmp_path / "serial", executor="serial", progress=False)
    pooled = run_sweep(tests, tmp_path / "pool", executor="process:2", progress=False)
    assert list(pooled["test_id"]) == [t.test_id for t in tests]
    pd.testing.assert_frame_equal(comparable(serial), comparable(pooled), check_exact=True)


@pytest.mark.parametrize("spec, kind", [(None, "process"), ("serial", "serial"), ("process", "process"),
                                        ("process:3", "process"), (1, "serial"), ("dask://h:1", "dask")])
def test_executor_specs(spec, kind):
    assert sweep.parse_executor(spec, queued=4)[0] == kind
    assert sweep.parse_executor(None, queued=1)[0] == "serial"
    assert sweep.parse_executor(None, queued=8) == ("process", min(2, os.cpu_count() or 1))


@pytest.mark.parametrize("spec", ["threads", "process:0", "process:x", 0, True, 2.5])
def test_bad_executor_specs_are_refused(spec):
    with pytest.raises(ValueError, match="executor"):
        sweep.parse_executor(spec, queued=4)


def test_relative_results_dir_is_taken_from_the_cwd_or_the_repo_root_in_notebooks(tmp_path, monkeypatch):
    from workbench import paths

    monkeypatch.chdir(tmp_path)
    assert files.resolve_results_dir("out") == tmp_path.resolve() / "out"
    monkeypatch.chdir(paths.NOTEBOOKS_DIR)
    assert files.resolve_results_dir("results/x") == paths.REPO_ROOT / "results" / "x"
    assert files.resolve_results_dir(tmp_path / "abs") == tmp_path / "abs"


# --------------------------------------------------------------------------- real processes

SCRIPT = """\
import sys, time
sys.path.insert(0, {tests_dir!r})
from conftest import sweep_tests
import workbench.study.runs.sweep as sweep

_run_test = sweep.run_test


def slow_run_test(test):  # makes the sweep slow enough to be interrupted part way
    time.sleep({delay})
    return _run_test(test)


sweep.run_test = slow_run_test

if __name__ == "__main__":
    tests = sweep_tests({csv!r}, gpus={gpus}, ks={ks})
    sweep.run_sweep(tests, {results!r}, executor="serial", progress=False)
"""


def _start_sweep(tmp_path, name, csv, results, *, gpus, ks, delay, python):
    script = tmp_path / f"{name}.py"
    script.write_text(SCRIPT.format(tests_dir=str(TESTS_DIR), csv=str(csv), results=str(results),
                                    gpus=gpus, ks=ks, delay=delay))
    return subprocess.Popen([python, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _strict_read(path: Path) -> pd.DataFrame:
    """What any reader sees: must always parse, with no cut-off row."""
    frame = pd.read_csv(path)
    assert frame["finished_at"].notna().all()
    assert not frame["test_id"].duplicated().any()
    return frame


def test_kill_9_mid_sweep_loses_at_most_the_running_test(small_trace_csv, tmp_path, python, count_runs):
    results = tmp_path / "results"
    checkpoint = results / "sweep_test.csv"
    tests = sweep_tests(small_trace_csv, gpus=(1, 2, 4, 8), ks=(1, 4))
    proc = _start_sweep(tmp_path, "victim", small_trace_csv, results, gpus=(1, 2, 4, 8), ks=(1, 4),
                        delay=0.4, python=python)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if checkpoint.exists() and len(_strict_read(checkpoint)) >= 2:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
    before = _strict_read(checkpoint)
    assert 2 <= len(before) < len(tests)

    rows = run_sweep(tests, results, executor="serial", progress=False)
    assert len(count_runs) == len(tests) - len(before)  # nothing finished is recomputed
    after = _strict_read(checkpoint)
    assert sorted(after["test_id"]) == sorted(t.test_id for t in tests)
    kept = after.set_index("test_id").loc[before["test_id"], "finished_at"]
    assert list(kept) == list(before["finished_at"])  # the finished rows are the same rows
    assert list(rows["test_id"]) == [t.test_id for t in tests]


def test_two_sweeps_on_one_folder_at_once_keep_every_row(small_trace_csv, tmp_path, python):
    results = tmp_path / "results"
    checkpoint = results / "sweep_test.csv"
    a = _start_sweep(tmp_path, "a", small_trace_csv, results, gpus=(1, 2), ks=(1, 4), delay=0.15, python=python)
    b = _start_sweep(tmp_path, "b", small_trace_csv, results, gpus=(2, 4), ks=(1, 4), delay=0.15, python=python)
    try:
        while a.poll() is None or b.poll() is None:
            if checkpoint.exists():
                _strict_read(checkpoint)
            time.sleep(0.01)
    finally:
        for proc in (a, b):
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    assert a.returncode == 0, a.stderr.read()
    assert b.returncode == 0, b.stderr.read()
    expected = {t.test_id for t in sweep_tests(small_trace_csv, gpus=(1, 2, 4), ks=(1, 4))}
    assert set(_strict_read(checkpoint)["test_id"]) == expected


def test_rows_of_other_simulator_code_are_recomputed_and_replaced(small_trace_csv, tmp_path, count_runs):
    tests = sweep_tests(small_trace_csv, gpus=(1,), ks=(1, 4))
    run_sweep(tests, tmp_path, executor="serial", progress=False)
    path = tmp_path / "sweep_test.csv"
    stale = pd.read_csv(path).assign(simulator_version="0ld0ld0ld0ld")
    stale.to_csv(path, index=False)
    rows = run_sweep(tests, tmp_path, executor="serial", progress=False)
    assert len(count_runs) == 4
    assert (rows["simulator_version"] == checkpoints.simulator_version()).all()
    assert len(pd.read_csv(path)) == 2


# --------------------------------------------------------------------------- steps and analysis


def test_step1_volumes_are_10x_steps_up_to_max_requests():
    assert experiments.request_volumes_for(1_000_000) == [1_000, 10_000, 100_000, 1_000_000]
    assert experiments.request_volumes_for(2_000) == [1_000, 2_000]
    assert experiments.request_volumes_for(500) == [500]
    assert experiments.request_volumes_for(10**6, [5_000, 1_000, 5_000]) == [1_000, 5_000]
    # steps 2-3 now sweep every scheduler of `schedulers` (issue 8): the seed's three give 4*5 + 3*8 + (6+1+1)
    assert experiments.total_tests(schedulers=("static_fifo", "dynamic_no_bins", "multi_bin_dynamic")) == 52
    assert experiments.total_tests(schedulers=("multi_bin_dynamic",)) == 4 * 3 + 8 + 6
    assert experiments.total_tests(replications=3) == 3 * 65


def test_step1_on_a_small_dataset_stops_at_its_size(small_trace_csv, tmp_path):
    plan = experiments.plan_step1(max_requests=100_000, max_gpus=2, dataset=str(small_trace_csv),
                                  results_dir=str(tmp_path))
    assert list(plan.batches) == [1_000, 2_000]
    assert [t.label for t in plan.batches[1_000]] == [
        "static_fifo (1 GPU)", "dynamic_no_bins (1 GPU)", "multi_bin_dynamic (1 GPU)", "multi_bin_dynamic (2 GPUs)",
        "continuous_fcfs (1 GPU)"]


def test_step_params_are_validated_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match="max_gpus"):
        experiments.StepParams(max_gpus=0)
    with pytest.raises(ValueError, match="executor"):
        experiments.StepParams(executor="threads")
    with pytest.raises(FileNotFoundError, match="dataset"):
        experiments.StepParams(dataset=str(tmp_path / "missing.csv"))
    with pytest.raises(ValueError, match="d_sla_s"):
        experiments.StepParams(d_sla=0)


def _frame(**columns):
    return pd.DataFrame(columns)


def test_column_order_does_not_depend_on_which_test_finished_first():
    k1 = {"test_id": "a", "k_bins_effective": 1, "trace_label": "t", "finished_at": "x"}
    k2 = {"test_id": "b", "k_bins_effective": 2, "bin0_requests": 1, "bin1_requests": 2, "bin0_batch_size_mean": 1.0,
          "bin1_batch_size_mean": 2.0, "trace_label": "t", "finished_at": "y"}
    one = checkpoints.canonical_columns(pd.DataFrame([k1, k2]))
    other = checkpoints.canonical_columns(pd.DataFrame([k2, k1]))
    assert list(one.columns) == list(other.columns) == [
        "test_id", "k_bins_effective", "bin0_batch_size_mean", "bin0_requests", "bin1_batch_size_mean",
        "bin1_requests", "trace_label", "finished_at"]


def test_hex_ids_that_look_like_numbers_stay_text(small_trace_csv, tmp_path, monkeypatch):
    _, path, lines = _damaged_checkpoint(small_trace_csv, tmp_path)
    header, *rows = _fields(lines)
    digits = {"test_id": ["0123456789012345", "1e34567890123456"], "simulator_version": ["012345678901"] * 2,
              "trace_fingerprint": ["0000000000000001"] * 2}
    for column, values in digits.items():
        for row, value in zip(rows, values):
            row[header.index(column)] = value
    path.write_text("\n".join(_joined(r) for r in [header, *rows]) + "\n")
    monkeypatch.setattr(checkpoints, "simulator_version", lambda: "012345678901")
    loaded = read_rows(path)
    assert list(loaded["test_id"]) == digits["test_id"]
    assert checkpoints.finished_ids(loaded) == set(digits["test_id"])
    assert set(loaded["trace_fingerprint"]) == {"0000000000000001"}


def test_a_test_another_results_folder_holds_is_reused_not_recomputed(small_trace_csv, tmp_path, monkeypatch,
                                                                      count_runs):
    """Issue 16 item 2: papermill ... -p max_gpus 32 writes to results/max_gpus=32/ and must not recompute what
    results/default already holds: the same test id (same configuration, same simulator code) is copied, with
    the folder it came from; outside results/ folders do not look at each other."""
    from workbench import paths

    monkeypatch.setattr(paths, "RESULTS_DIR", tmp_path / "results")
    tests = sweep_tests(small_trace_csv, gpus=(1, 2), ks=(4,))
    first = run_sweep(tests, tmp_path / "results" / "default", executor="serial", progress=False)
    assert len(count_runs) == 2
    count_runs.clear()
    again = run_sweep(tests[:1], tmp_path / "results" / "max_gpus=1", executor="serial", progress=False)
    assert count_runs == []
    assert again.loc[0, "reused_from"].endswith("default/sweep_test.csv")
    pd.testing.assert_frame_equal(
        checkpoints.comparable(again.drop(columns=["reused_from"])).sort_index(axis=1),
        checkpoints.comparable(first.iloc[:1].drop(columns=["reused_from"], errors="ignore")).sort_index(axis=1),
        check_dtype=False)
    # a folder outside results/ computes its own
    run_sweep(tests[:1], tmp_path / "elsewhere", executor="serial", progress=False)
    assert len(count_runs) == 1
