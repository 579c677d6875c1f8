"""``python -m workbench suite`` / ``make run``: options, and the whole suite at a tiny scale."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import papermill as pm
import pytest

from workbench import paths
from workbench.sim.schedulers import SCHEDULERS
from workbench.__main__ import build_parser, main, options_from_args
from workbench.study.answers import columns
from workbench.study.runs.experiments import STEP1, STEP2, STEP3, STEPS, total_tests

STATIC_TRIO = ("static_fifo", "dynamic_no_bins", "multi_bin_dynamic")
from workbench.study.orchestrate.suite import VALIDATION, WIDE_TABLE_CSS, SuiteOptions, notebook_parameters

# serial: at this size a pool's start-up costs more than its tests (the pool has tests of its own: test_sweep,
# test_cleanup)
TINY_ARGS = ["--max-requests", "2000", "--max-gpus", "4", "--executor", "serial"]


def parse(*argv):
    return options_from_args(build_parser().parse_args(["suite", *argv]))


def test_default_options_are_the_full_seed_scale():
    options = parse()
    assert options == SuiteOptions()
    assert options.steps == STEPS and options.max_requests == 1_000_000 and options.max_gpus == 100
    # 65 with vLLM's continuous batching beside the seed's three (steps 2-3 sweep every scheduler; it was 34)
    assert total_tests(options.max_requests, options.max_gpus) == 4 * 6 + 4 * 8 + (6 + 3)
    assert total_tests(options.max_requests, options.max_gpus, STATIC_TRIO) == 4 * 5 + 3 * 8 + (6 + 2)


def test_every_seed_option_reaches_the_notebooks(tmp_path):
    dataset = tmp_path / "trace.csv"
    dataset.write_text("arrival_s,prompt_tokens,output_tokens\n0,1,1\n")
    options = parse("--step3-only", "--best-gpu-count", "8", "--max-requests", "5000", "--max-gpus", "16",
                    "--d-sla", "2.5", "--rps-scaling", "50", "--dataset", str(dataset),
                    "--results-dir", str(tmp_path / "r"), "--executor", "serial", "--seed", "7", "--k-bins", "8",
                    "--validate", "--capacity-attainment", "0.8", "--schedulers",
                    "static_fifo,continuous_fcfs", "--latency", "opt-13b-a100", "--replications", "2",
                    "--ttft-sla", "0.5", "--tpot-sla", "0.1")
    assert options.steps == (STEP3,) and options.validate
    params = notebook_parameters(options, STEP3)
    assert params == {"max_requests": 5000, "max_gpus": 16, "use_real_timestamps": False, "rps_scaling": 50.0,
                      "d_sla": 2.5, "dataset": str(dataset.resolve()), "k_bins": 8, "seed": 7,
                      "results_dir": str(tmp_path / "r"), "executor": "serial", "best_gpu_count": 8,
                      "capacity_search": True, "capacity_attainment": 0.8,
                      "schedulers": ["static_fifo", "continuous_fcfs"], "latency": "opt-13b-a100", "replications": 2,
                      "ttft_sla": 0.5, "tpot_sla": 0.1}
    # the two switches (each turns another option off, so they go without it)
    switched = notebook_parameters(parse("--use-real-timestamps", "--no-capacity"), STEP2)
    assert switched["use_real_timestamps"] is True and switched["capacity_search"] is False
    assert parse().capacity_search and parse().capacity_attainment == 0.9
    assert "best_gpu_count" not in notebook_parameters(options, STEP2)
    assert notebook_parameters(options, VALIDATION) == {"results_dir": str(tmp_path / "r"), "seed": 7}


def test_step_flags_combine_and_keep_the_order():
    assert parse("--step3-only", "--step1-only").steps == (STEP1, STEP3)
    assert parse("--step2-only").steps == (STEP2,)


def test_relative_results_dir_is_relative_to_where_the_command_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse("--results-dir", "out").results_path == tmp_path.resolve() / "out"


@pytest.mark.parametrize("argv", [["--max-requests", "0"], ["--max-gpus", "-1"], ["--d-sla", "0"],
                                  ["--dataset", "/no/such/file.csv"], ["--bogus"], ["--capacity-attainment", "1.5"],
                                  ["--capacity-attainment", "0"]])
def test_bad_options_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["suite", *argv])
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["step2_gpu_scaling", "-p", "max_gpu", "16"], "unknown keyword argument 'max_gpu' (did you mean 'max_gpus'?)"),
    (["step2_gpu_scaling", "-p", "max_gpus", "abc"], "max_gpus: must be an integer >= 1, got 'abc'"),
    (["step3_kbins", "-p", "max_gpus", "4"], "notebook: unknown 'step3_kbins'"),
    (["compare_schedulers", "-p", "gpu_counts", "0,2"], "gpu_counts: must be an integer >= 1"),
    (["step2_gpu_scaling", "-p", "use_real_timestamps", "true", "-p", "rps_scaling", "50"],
     "rps_scaling=50 has no effect with use_real_timestamps=True"),
])
def test_the_notebook_command_refuses_bad_parameters_before_creating_anything(argv, message, tmp_path, capsys,
                                                                              monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["notebook", *argv, "-p", "results_dir", str(tmp_path / "r")])
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_the_notebook_command_runs_a_notebook_that_claims_its_own_part_of_a_new_folder(tmp_path):
    """fidelity_vllm records its parameters as its part of the folder; the command claims that part before
    papermill writes the executed notebook there (it refused its own folder before), a rerun with the same
    parameters is welcome, other parameters are refused before anything runs."""
    results = tmp_path / "fidelity"
    command = [sys.executable, "-m", "workbench", "notebook", "fidelity_vllm", "--no-progress",
               "-p", "results_dir", str(results), "-p", "runs", "vllm-100-1,vllm-200-2", "-p", "llmservingsim_runs",
               "RTX4090", "-p", "max_evaluations", "150"]
    for _ in range(2):
        done = subprocess.run(command, cwd=paths.REPO_ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "fidelity_vllm finished" in done.stdout
    manifest = json.loads((results / "parameters.json").read_text())
    assert manifest["parts"]["fidelity_vllm"]["max_evaluations"] == 150 and "parameters" not in manifest
    assert (results / "fidelity_vllm.html").is_file() and (results / "index.html").is_file()
    other = subprocess.run(command[:-1] + ["3"], cwd=paths.REPO_ROOT, capture_output=True, text=True)
    assert other.returncode == 2 and "max_evaluations" in other.stderr, other.stderr[-2000:]


def test_validation_notebook_takes_what_the_suite_passes():
    notebook = paths.NOTEBOOKS_DIR / f"{VALIDATION}.ipynb"
    assert notebook.is_file(), notebook
    assert set(notebook_parameters(SuiteOptions(), VALIDATION)) <= set(pm.inspect_notebook(str(notebook)))


def fewest_covering(rows: pd.DataFrame) -> int | None:
    """The documented rule, worked out independently of workbench.study.answers.analysis: the fewest GPUs whose
    capacity covers the rate their replay ran at."""
    ok = rows[rows["capacity_rps"] >= rows["offered_rps"]]
    return int(ok["num_gpus"].min()) if not ok.empty else None


def fewest_tied_for_most_per_gpu(rows: pd.DataFrame) -> int | None:
    """The fewest GPUs whose capacity per GPU no other count's exceeds beyond the search's resolution (a capacity c
    stands for a crossing in [c, c x w), w = 1.01 or the wider bracket the search stopped at)."""
    rows = rows.dropna(subset=["capacity_rps"])
    if rows.empty:
        return None
    low = rows["capacity_rps"] / rows["num_gpus"]
    width = (rows["capacity_scaling_above"] / rows["capacity_scaling"]).fillna(1.01).clip(lower=1.01)
    high = low * width
    return int(min(g for g, h in zip(rows["num_gpus"], high) if not (low > h * (1 + 1e-9)).any()))


def _main_command(results: Path, *args: str) -> list[str]:
    """The README's main command, ``make run ARGS=...``, on this interpreter's venv (never reinstalling)."""
    suite_args = " ".join([*TINY_ARGS, "--results-dir", str(results), "--no-progress", *args])
    if shutil.which("make"):
        venv = Path(sys.prefix)
        return ["make", "--no-print-directory", "-o", str(venv / ".installed"), "run", f"VENV={venv}",
                f"ARGS={suite_args}"]
    return [sys.executable, "-m", "workbench", "suite", *suite_args.split()]


def test_make_run_at_a_tiny_scale_then_step3_alone(tmp_path):
    results = tmp_path / "results"
    done = subprocess.run(_main_command(results), cwd=paths.REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    for step in STEPS:
        for suffix in (".ipynb", ".html", ".csv", ".png", "_capacity.png"):
            assert (results / f"{step}{suffix}").is_file(), f"{step}{suffix}"
            if suffix in (".html", ".csv", "_capacity.png"):
                assert str(results / f"{step}{suffix}") in done.stdout  # the report says where things are
        assert "synthetic" in (results / f"{step}.html").read_text()
    assert "all_results.csv" in done.stdout and "analysis.json" in done.stdout
    # the scheduler comparison ran after the steps, and one page presents the whole folder (issue 10)
    assert (results / "compare_schedulers.html").is_file()
    ranking = pd.read_csv(results / "compare_schedulers" / "compare_schedulers_ranking.csv")
    from workbench.study.runs.compare import all_schedulers

    assert set(ranking["scheduler"]) == set(all_schedulers())   # every single-pool scheduler (issue 15:
    assert set(SCHEDULERS) - set(all_schedulers()) == {"disaggregated"}   # pools are compared by best_placement)
    index = (results / "index.html").read_text()
    assert str(results / "index.html") in done.stdout
    for name in ("compare_schedulers.html", f"{STEP2}.html", f"{STEP2}.csv", "analysis.json"):
        assert f'href="{name}"' in index, name
    # shareable: no machine paths in the HTML, wide tables scroll, a quiet log (issue 9 item 9)
    for step in (*STEPS, "compare_schedulers"):
        html = (results / f"{step}.html").read_text()
        assert str(results) not in html and str(paths.REPO_ROOT) not in html, step
        assert WIDE_TABLE_CSS in html
    for noise in ("without encryption", "SetuptoolsDeprecationWarning", "Executing:", "\r"):
        assert noise not in done.stdout + done.stderr, noise
    # each thing said once, plainly: no pink stderr blocks (log lines, warnings) or raw Python warnings in the HTML
    for step in (*STEPS, "compare_schedulers"):
        html = (results / f"{step}.html").read_text()
        assert 'data-mime-type="application/vnd.jupyter.stderr"' not in html, step
        assert "warnings.warn(" not in html and not re.search(r"\.py:\d+: \w*Warning", html), step
    # compare_schedulers ran on the steps' trace, hardware and SLA: its capacities of the steps' schedulers are
    # step 2's tests, reused; index.html says which hardware model and SLA every capacity was judged on
    compared = pd.read_csv(results / "compare_schedulers" / "compare_schedulers.csv")
    shared = compared[compared["scheduler"].isin(SuiteOptions().schedulers) & compared["capacity_search"]]
    assert len(shared) and shared["reused_from"].notna().all()
    assert "opt-13b-a100 step-time profile" in index and "TTFT &lt;= 1 s, TPOT &lt;= 50 ms" in index
    # the column dictionary (docs/columns.md) explains every column and key the suite wrote
    found = json.loads((results / "analysis.json").read_text())
    rows2 = pd.read_csv(results / f"{STEP2}.csv")
    for csv in results.glob("*.csv"):
        assert columns.undocumented_columns(pd.read_csv(csv, nrows=1).columns) == [], csv.name
    assert columns.undocumented_analysis_keys(found) == []
    # step 3 recorded the step-2 row it used; the last lines say which "best" answers cannot be trusted
    gpu_count = found["step3_kbins_sensitivity"]["gpu_count"]
    primary2 = rows2[rows2["scheduler"] == "multi_bin_dynamic"]  # steps 2-3 answer for it (issue 8)
    needed = fewest_covering(primary2)
    assert found["gpus_needed"] == needed
    # step 3 at the GPUs the trace needs; when none tested covers the load, at step 2's largest
    assert gpu_count["source"] == ("step2_gpus_needed" if needed is not None else "step2_largest")
    assert gpu_count["matches_step2"] is True
    assert set(rows2["scheduler"]) == set(SuiteOptions().schedulers)  # static and continuous side by side
    used = needed if needed is not None else int(primary2["num_gpus"].max())
    assert gpu_count["step2_test_id"] == primary2.loc[primary2["num_gpus"] == used, "test_id"].item()
    # the comparison ranks at step 2's pool sizes (they contain its answer) and agrees with step 2 per scheduler
    assert set(ranking["at_num_gpus"].dropna().astype(int)) <= set(rows2["num_gpus"])
    caps = pd.read_csv(results / "compare_schedulers" / "compare_schedulers_capacity.csv")
    assert set(caps["num_gpus"]) == set(rows2["num_gpus"]) and (needed is None or needed in set(caps["num_gpus"]))
    by_scheduler = dict(zip(ranking["scheduler"], ranking["gpus_needed"]))
    for name, group in rows2.groupby("scheduler"):
        expected = fewest_covering(group)
        assert (pd.isna(by_scheduler[name]) if expected is None else by_scheduler[name] == expected), name
        assert found["step2_gpu_scaling"]["gpus_needed_by_scheduler"][name] == expected, name
    for warning in found["warnings"]:   # said once, plainly
        assert f"Warning: {warning}" in done.stdout and done.stdout.count(warning) == 1, warning
    # another parameter set in the same folder: refused, and nothing in it changes
    files = {p.name: p.read_bytes() for p in results.iterdir() if p.is_file()}
    refused = subprocess.run(_main_command(results, "--d-sla", "2"), cwd=paths.REPO_ROOT, capture_output=True,
                             text=True)
    assert refused.returncode != 0 and "d_sla: 1 there, 2 here" in refused.stderr
    assert {p.name: p.read_bytes() for p in results.iterdir() if p.is_file()} == files
    analysis = json.loads((results / "analysis.json").read_text())
    step2 = pd.read_csv(results / f"{STEP2}.csv")
    step2 = step2[step2["scheduler"] == "multi_bin_dynamic"].reset_index(drop=True)
    assert analysis["gpus_needed"] == fewest_covering(step2)
    assert analysis["best_gpu_count_by_capacity_per_gpu"] == fewest_tied_for_most_per_gpu(step2)
    assert "Answers:" in done.stdout and "None" not in done.stdout.split("Answers:")[-1]

    # step 3 only, with an explicit GPU count: reuses the folder, reruns step 3 only
    before = {step: (results / f"{step}.csv").read_text() for step in (STEP1, STEP2)}
    done = subprocess.run(_main_command(results, "--step3-only", "--best-gpu-count", "3"), cwd=paths.REPO_ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "None" not in done.stdout.split("Answers:")[-1]     # never "Best GPU count: None"
    assert "Step 3, best K" in done.stdout
    assert {step: (results / f"{step}.csv").read_text() for step in (STEP1, STEP2)} == before
    every = pd.read_csv(results / "all_results.csv")
    assert set(every.loc[every["step"] == STEP3, "num_gpus"]) == {3}
    assert set(every["step"]) == set(STEPS)


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


@pytest.mark.parametrize("argv, message", [
    (["--results-dir", "{file}/sub"], "--results-dir {file}/sub: cannot be created (Not a directory)"),
    (["--executor", "dask://127.0.0.1:{port}"], "no Dask scheduler answers at 127.0.0.1:{port} (Connection refused)"),
    (["--executor", "dask://127.0.0.1"], "expected dask://host:port"),
])
def test_unusable_results_dir_or_dask_address_fail_fast_and_clearly(tmp_path, capsys, argv, message):
    import time

    a_file = tmp_path / "a_file"
    a_file.write_text("")
    port = _closed_port()
    argv = [a.format(file=a_file, port=port) for a in argv]
    t0 = time.monotonic()
    with pytest.raises(SystemExit) as exc:
        main(["suite", "--max-requests", "100", "--no-progress", *argv])
    assert exc.value.code == 2 and time.monotonic() - t0 < 10  # was 39 s for the dask case
    assert message.format(file=a_file, port=port) in capsys.readouterr().err


def test_a_sweep_on_an_unreachable_dask_address_fails_within_seconds(small_trace_csv, tmp_path):
    import time

    from conftest import sweep_tests
    from workbench.study.runs.sweep import run_sweep

    tests = sweep_tests(small_trace_csv, gpus=(1,), ks=(1, 2))
    t0 = time.monotonic()
    with pytest.raises(ConnectionError, match="no Dask scheduler answers"):
        run_sweep(tests, tmp_path, executor=f"dask://127.0.0.1:{_closed_port()}", progress=False)
    assert time.monotonic() - t0 < 10


@pytest.mark.parametrize("argv, expected", [
    (["--max-requests", "1e5"], 100_000), (["--max-requests", "20_000"], 20_000), (["--max-requests", "5000"], 5000)])
def test_request_counts_in_scientific_notation_are_whole_numbers(argv, expected):
    assert parse(*argv).max_requests == expected


@pytest.mark.parametrize("argv, message", [
    (["--max-requests", "2.5"], "expected a whole number >= 1, got '2.5'"),
    (["--max-requests", "lots"], "expected a number, got 'lots'"),
    (["--d-sla", "inf"], "expected a finite number > 0, got 'inf'"),
])
def test_bad_numbers_say_what_is_expected(argv, message, capsys):
    with pytest.raises(SystemExit):
        main(["suite", *argv])
    assert message in capsys.readouterr().err
