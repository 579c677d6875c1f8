"""Results lost or mixed, and bad parameters of the command line and the notebooks (issue 13).

A folder holds one parameter set (per notebook part), a folder the workbench did not make is refused, and
every refusal comes before anything is computed or created: the original files stay byte for byte.
"""

from __future__ import annotations

import json
import re
import socket

import nbformat
import papermill as pm
import pytest

from workbench.__main__ import main
from workbench.study.explore import Explorer
from workbench.study.store import checkpoints
from workbench.study.runs.experiments import (PROFILE_RPS_SCALING, SEED_RPS_SCALING, STEP2, StepParams, plan_step1,
                                              plan_step2, plan_step3)
from workbench.study.store.folders import MANIFEST, ResultsFolderConflict
from workbench.study.orchestrate.suite import SuiteOptions
from conftest import execute_notebook

SMALL = dict(max_requests=300, max_gpus=2, capacity_search=False, executor="serial",
             schedulers="static_fifo,dynamic_no_bins")


def snapshot(folder) -> dict:
    """Every file under ``folder`` and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_folder_the_workbench_did_not_make_is_refused_and_left_as_it_was(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.csv").write_bytes(b"test_id,value\nabc,1\n")
    (folder / "draft.txt").write_bytes("caf\u00e9".encode("latin-1"))
    before = snapshot(folder)
    with pytest.raises(ResultsFolderConflict, match=r"results folder .*mine was not made by the workbench: it holds "
                                                    r"draft.txt, notes.csv and no parameters.json"):
        plan_step2(StepParams(**SMALL, results_dir=str(folder)))
    assert snapshot(folder) == before and not (folder / ".workbench.lock").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert StepParams(**SMALL, results_dir=str(empty)).claim_results_dir() == empty   # an empty folder is fine


def test_rows_of_an_unrecorded_run_are_never_mixed_with_a_run_of_other_parameters(tmp_path):
    """The issue's case: a folder with a checkpoint but no parameters.json, rerun with other parameters."""
    folder = tmp_path / "r"
    plan_step2(StepParams(**SMALL, results_dir=str(folder))).run(progress=False)
    (folder / MANIFEST).unlink()                     # as an older workbench, or a hand copy, left it
    before = snapshot(folder)
    assert f"{STEP2}.csv" in before
    with pytest.raises(ResultsFolderConflict, match="was not made by the workbench"):
        plan_step2(StepParams(**{**SMALL, "max_gpus": 1}, results_dir=str(folder)))
    assert snapshot(folder) == before                # the original rows, byte for byte
    (folder / MANIFEST).write_text(json.dumps({"parts": {"validation": {"seed": 1}}}))
    with pytest.raises(ResultsFolderConflict, match=f"holds {STEP2}.csv of the steps without a record of their "
                                                    "parameters"):
        plan_step2(StepParams(**{**SMALL, "max_gpus": 1}, results_dir=str(folder)))


def test_a_rerun_with_other_parameters_leaves_the_checkpoint_byte_for_byte(tmp_path):
    folder = tmp_path / "r"
    plan_step2(StepParams(**SMALL, results_dir=str(folder))).run(progress=False)
    before = snapshot(folder)
    with pytest.raises(ResultsFolderConflict, match="max_gpus: 2 there, 1 here"):
        plan_step2(StepParams(**{**SMALL, "max_gpus": 1}, results_dir=str(folder)))
    with pytest.raises(ResultsFolderConflict, match="max_gpus: 2 there, 1 here"):
        StepParams(**{**SMALL, "max_gpus": 1}, results_dir=str(folder)).check_results_dir()
    assert snapshot(folder) == before


def test_a_checkpoint_path_that_is_a_folder_fails_before_any_test_runs(tmp_path, count_runs):
    folder = tmp_path / "r"
    params = StepParams(**SMALL, results_dir=str(folder))
    plan = plan_step2(params)
    (folder / f"{STEP2}.csv").mkdir()
    with pytest.raises(checkpoints.CheckpointError, match=f"{STEP2}.csv is a folder, where the sweep keeps its "
                                                    "checkpoint file.*nothing was run"):
        plan.run(progress=False)
    assert count_runs == []
    with pytest.raises(ValueError, match=f"{STEP2}.csv is a folder, where this run writes its {STEP2}.csv file"):
        plan_step2(params)
    (folder / f"{STEP2}.csv").rmdir()
    (folder / "all_results.csv").mkdir()
    with pytest.raises(ValueError, match="all_results.csv is a folder"):   # written at the end: checked first
        plan_step2(params)


def test_a_file_as_results_dir_is_a_clear_error_and_the_file_is_untouched(tmp_path):
    a_file = tmp_path / "results.txt"
    a_file.write_bytes(b"keep me\n")
    with pytest.raises(ValueError, match=f"results_dir {a_file}: is a file, not a folder"):
        plan_step2(StepParams(**SMALL, results_dir=str(a_file)))
    with pytest.raises(ValueError, match=f"results_dir {a_file / 'sub'}: cannot be created \\(Not a directory\\)"):
        StepParams(**SMALL, results_dir=str(a_file / "sub")).claim_results_dir()
    assert a_file.read_bytes() == b"keep me\n" and sorted(p.name for p in tmp_path.iterdir()) == ["results.txt"]


def test_validation_in_another_runs_folder_checks_its_parameters(tmp_path):
    from workbench.study.fidelity.validation import ValidationParams

    folder = tmp_path / "r"
    StepParams(**SMALL, results_dir=str(folder)).claim_results_dir()     # the steps' folder
    ValidationParams(n_requests=1000, seeds=1, results_dir=str(folder)).claim_results_dir()
    (folder / "validation.csv").write_bytes(b"case,quantity\nmd1,wait\n")
    before = snapshot(folder)
    with pytest.raises(ResultsFolderConflict, match=r"holds results of other parameters \(validation: n_requests: "
                                                    r"1000 there, 2000 here"):
        ValidationParams(n_requests=2000, seeds=1, results_dir=str(folder)).claim_results_dir()
    assert snapshot(folder) == before
    recorded = json.loads((folder / MANIFEST).read_text())
    assert recorded["parts"]["validation"] == {"n_requests": 1000, "seeds": 1, "seed": 42, "include_trace": True}
    assert recorded["parameters"]["max_gpus"] == 2       # the steps' record is kept beside it
    ValidationParams(n_requests="1000", seeds=1, results_dir=str(folder)).claim_results_dir()   # the same: fine
    other = tmp_path / "legacy"
    StepParams(**SMALL, results_dir=str(other)).claim_results_dir()
    (other / "validation.csv").write_bytes(b"from an older run\n")
    with pytest.raises(ResultsFolderConflict, match="holds validation.csv of validation without a record"):
        ValidationParams(n_requests=1000, results_dir=str(other)).claim_results_dir()


def test_the_validation_notebook_refuses_another_runs_folder_before_computing(tmp_path):
    from workbench.study.fidelity.validation import ValidationParams

    folder = tmp_path / "r"
    ValidationParams(n_requests=5000, seeds=2, results_dir=str(folder)).claim_results_dir()
    (folder / "validation.csv").write_bytes(b"case,quantity\nmd1,wait\n")
    before = snapshot(folder)
    with pytest.raises(pm.PapermillExecutionError, match="validation: n_requests: 5000 there, 1000 here"):
        execute_notebook("validation", tmp_path / "out.ipynb",
                         {"n_requests": 1000, "seeds": 1, "results_dir": str(folder), "include_trace": "false"})
    assert snapshot(folder) == before
    executed = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    ran = [c for c in executed.cells if c.cell_type == "code" and c.get("execution_count")]
    assert len(ran) <= 3   # the parameters, the injected parameters, the set-up cell that refused


def test_fidelity_parameters_are_validated_and_recorded_as_their_part(tmp_path):
    from workbench.study.fidelity.vllm_runs import FidelityParams

    folder = tmp_path / "r"
    FidelityParams(results_dir=str(folder), max_evaluations=800).claim_results_dir()
    with pytest.raises(ResultsFolderConflict, match="fidelity_vllm: max_evaluations: 800 there, 200 here"):
        FidelityParams(results_dir=str(folder), max_evaluations="200").claim_results_dir()
    with pytest.raises(ValueError, match="max_evaluations: must be an integer >= 1, got 0"):
        FidelityParams(max_evaluations=0)
    with pytest.raises(FileNotFoundError, match=r"runs: 'vllm-999' is not a run in data_dir .* \(no vllm-999.csv "
                                                r"there; its runs: vllm-100-1, vllm-200-2, vllm-350-3.5\)"):
        FidelityParams(runs="vllm-100-1,vllm-999")
    with pytest.raises(FileNotFoundError, match=r"llmservingsim_runs: no .*H100/Llama-3.1-8B/vllm/requests.jsonl \(the "
                                                r"GPU folders in llmservingsim_dir: RTX4090, RTXPRO6000\)"):
        FidelityParams(llmservingsim_runs="RTX4090,H100")
    with pytest.raises(ValueError, match="llmservingsim_start: "):
        FidelityParams(llmservingsim_start="llama-3.1-8b-b200")
    params = FidelityParams(runs="vllm-100-1, vllm-200-2", llmservingsim_runs="RTX4090", split="100")
    assert (params.runs, params.llmservingsim_runs, params.split) == (("vllm-100-1", "vllm-200-2"), ("RTX4090",), 100)


def test_the_disaggregated_notebooks_validate_their_parameters_and_claim_their_part(tmp_path):
    from workbench.study.runs.disaggregation import DisaggregationParams
    from workbench.study.fidelity.disagg_runs import DisaggFidelityParams
    from workbench.study.fidelity.vllm_runs import FidelityParams

    folder = tmp_path / "r"
    FidelityParams(results_dir=str(folder)).claim_results_dir()   # the vLLM report's part ...
    DisaggFidelityParams(results_dir=str(folder), max_iter="3").claim_results_dir()   # ... and its own, beside it
    with pytest.raises(ResultsFolderConflict, match="fidelity_disagg: max_iter: 3 there, 10 here"):
        DisaggFidelityParams(results_dir=str(folder)).claim_results_dir()
    parts = json.loads((folder / MANIFEST).read_text())["parts"]
    assert parts["fidelity_disagg"]["max_iter"] == 3 and parts["fidelity_vllm"]["max_evaluations"] == 800
    with pytest.raises(TypeError, match="thresholds"):   # a vLLM calibration option the disaggregated one lacks
        DisaggFidelityParams(thresholds="fit")
    with pytest.raises(FileNotFoundError, match=r"runs: 'distserve-c21d11-300-4' is not a run in data_dir .* \(no "
                                                r"distserve-c21d11-300-4.csv there; its runs: distserve-c21d11-300-12, "):
        DisaggFidelityParams(runs="distserve-c21d11-300-3,distserve-c21d11-300-4")

    params = DisaggregationParams(gpus="4", slo_scales="1, 0.5", calibrate_serving_costs="false", vllm_profile="",
                                  results_dir=str(folder))
    assert (params.gpus, params.slo_scales, params.calibrate_serving_costs) == (4, (1.0, 0.5), False)
    assert len(params.run_files("disagg_dir")) == 6
    params.claim_results_dir()
    with pytest.raises(ResultsFolderConflict, match="disaggregation: gpus: 4 there, 8 here"):
        DisaggregationParams(results_dir=str(folder), slo_scales="1, 0.5", calibrate_serving_costs=False,
                             vllm_profile="").claim_results_dir()
    for kwargs, exception, message in [
            (dict(calibrate_serving_costs="no"), TypeError, "calibrate_serving_costs: must be True or False"),
            (dict(slo_scales=[1.0, 0]), ValueError, "slo_scales: each scale multiplies the TTFT and TPOT limits"),
            (dict(gpus=1), ValueError, "gpus: must be an integer >= 2, got 1"),
            (dict(attainment="90%"), TypeError, "attainment: must be a finite number in (0, 1]"),
            (dict(vllm_profile="vllm"), ValueError, "vllm_profile: unknown 'vllm'"),
            (dict(disagg_dir=str(tmp_path)), FileNotFoundError, "disagg_dir: ")]:
        with pytest.raises(exception, match=re.escape(message)):
            DisaggregationParams(**kwargs)


def test_a_papermill_false_is_false_and_recorded_as_false(tmp_path):
    # papermill -p use_real_timestamps false passes the text "false" (only "True"/"False" become booleans)
    namespace = {**SMALL, "use_real_timestamps": "false", "capacity_search": "False", "rps_scaling": "100",
                 "results_dir": str(tmp_path / "r")}
    params = StepParams.from_namespace(namespace)
    assert params.use_real_timestamps is False and params.capacity_search is False and params.rps_scaling == 100.0
    assert params.trace_options(300).use_real_timestamps is False
    params.claim_results_dir()
    recorded = json.loads((tmp_path / "r" / MANIFEST).read_text())["parameters"]
    assert recorded["use_real_timestamps"] is False and recorded["rps_scaling"] == 100
    with pytest.raises(TypeError, match="use_real_timestamps: must be True or False, got 'no'"):
        StepParams.from_namespace({**namespace, "use_real_timestamps": "no"})
    with pytest.raises(ValueError, match="max_gpus: must be an integer >= 1 \\(a whole number"):
        StepParams(max_gpus=2.5)


def test_step3_gpu_count_must_fit_the_parameters(tmp_path):
    with pytest.raises(ValueError, match="best_gpu_count: 1000 GPUs is more than max_gpus=2"):
        plan_step3(StepParams(**SMALL, results_dir=str(tmp_path / "r")), best_gpu_count=1000)
    with pytest.raises(ValueError, match="best_gpu_count: 1000 GPUs is more than max_gpus=2"):
        SuiteOptions(steps=("step3_kbins_sensitivity",), best_gpu_count=1000, max_gpus=2)
    with pytest.raises(ValueError, match="best_gpu_count .* is step 3's GPU count, and step 3 is not selected"):
        SuiteOptions(steps=("step1_request_scaling",), best_gpu_count=4)


def test_an_rps_scaling_that_overflows_time_fails_when_the_plan_is_made(tmp_path):
    params = StepParams(max_requests=1000, max_gpus=1, rps_scaling=1e-302, executor="serial",
                        schedulers="static_fifo", results_dir=str(tmp_path / "r"))
    with pytest.raises(ValueError, match="capacity search replays it up to 1024x slower.*not a finite time"):
        plan_step1(params, request_volumes=[1000])
    with pytest.raises(ValueError, match="rps_scaling=1e-306 turns arrival .* not a finite time"):
        plan_step1(StepParams(**{**SMALL, "rps_scaling": 1e-306}, results_dir=str(tmp_path / "s")),
                   request_volumes=[300])


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("argv, message", [
    (["--step3-only", "--best-gpu-count", "1000", "--max-gpus", "2"], "best_gpu_count: 1000 GPUs is more than "
                                                                       "max_gpus=2"),
    (["--step1-only", "--best-gpu-count", "4"], "step 3 is not selected"),
    (["--executor", "dask://127.0.0.1:{port}"], "no Dask scheduler answers"),
    (["--seed", "-1"], "expected a whole number >= 0, got '-1'"),
    (["--schedulers", "static_fifo,fifo"], "schedulers: unknown 'fifo'"),
])
def test_a_refused_command_line_creates_no_folder(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    argv = [a.format(port=_closed_port()) for a in argv]
    with pytest.raises(SystemExit) as exc:
        main(["suite", "--max-requests", "100", "--no-progress", *argv])
    assert exc.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["suite", "--max-requests", "100", "--no-progress", "--results-dir", str(tmp_path / "new"), *argv])
    assert list(tmp_path.iterdir()) == []   # neither results/<name> nor the named folder was created


def test_the_command_line_refuses_a_foreign_folder_before_starting(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    code = main(["suite", "--max-requests", "100", "--no-progress", "--results-dir", str(tmp_path)])
    assert code == 2 and "was not made by the workbench" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_explore_takes_one_trace_name_as_one_trace():
    explorer = Explorer("azure_conv", num_requests=50)   # papermill -p traces azure_conv
    assert explorer.trace_names == ("azure_conv",) and explorer.trace_name == "azure_conv"
    assert Explorer("synthetic, azure_code", num_requests=50).trace_names == ("synthetic", "azure_code")
    with pytest.raises(FileNotFoundError, match="traces: 'a' is not 'synthetic', a dataset name"):
        Explorer(["a"], num_requests=50)
    with pytest.raises(ValueError, match="num_requests: must be an integer >= 1, got 0"):
        Explorer(num_requests=0)
    with pytest.raises(ValueError, match="load_scaling: must be > 0"):
        Explorer(num_requests=50).set(load_scaling=-1)


# ---------------------------------------------------------------- second audit (issue 13, the same classes again)

@pytest.mark.parametrize("argv, message", [
    (["--use-real-timestamps", "--rps-scaling", "50"], "rps_scaling=50 has no effect with use_real_timestamps=True"),
    (["--no-capacity", "--capacity-attainment", "0.5"], "capacity_attainment=0.5 has no effect with "
                                                        "capacity_search=False"),
    (["--results-dir", ""], "results_dir: must be a folder path, or None for the default folder, got ''"),
    (["--executor", "process:100000"], "executor ('process:100000'): must be at most"),
    (["--rps-scaling", "1e-302"], "rps_scaling (or a time scaling) not tiny? Or turn the capacity search off"),
    (["--dataset", "azure-conv"], "did you mean the dataset 'azure_conv'?"),
])
def test_conflicting_or_impossible_command_lines_are_refused_before_any_folder_is_recorded(tmp_path, monkeypatch,
                                                                                           capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    folder = ["--results-dir", str(tmp_path / "r")] if "--results-dir" not in argv else []
    with pytest.raises(SystemExit) as exc:
        main(["suite", "--step1-only", "--max-requests", "100", "--max-gpus", "1", "--no-progress", *folder, *argv])
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []   # no folder, no parameters.json: a corrected rerun is not refused


def test_the_same_conflicts_are_refused_in_notebook_parameters():
    with pytest.raises(ValueError, match="rps_scaling=50 has no effect with use_real_timestamps=True"):
        StepParams(**SMALL, use_real_timestamps="true", rps_scaling="50")
    with pytest.raises(ValueError, match="capacity_attainment=0.5 has no effect with capacity_search=False"):
        StepParams(**{**SMALL, "capacity_search": "false"}, capacity_attainment=0.5)
    # the defaults (each latency model's own load) are no conflict
    assert StepParams(**SMALL, use_real_timestamps=True).rps_scaling == PROFILE_RPS_SCALING
    assert StepParams(**SMALL, use_real_timestamps=True, latency="seed-grid").rps_scaling == SEED_RPS_SCALING
    # the TTFT/TPOT limits judge nothing on the seed grid (it judges end-to-end latency within d_sla)
    with pytest.raises(ValueError, match="ttft_sla=0.5 has no effect with latency='seed-grid'"):
        StepParams(**SMALL, latency="grid", ttft_sla=0.5)


def test_a_plan_that_fails_records_nothing_so_the_corrected_plan_is_accepted(tmp_path):
    folder = tmp_path / "r"
    bad = StepParams(**{**SMALL, "rps_scaling": 1e-306}, results_dir=str(folder))
    with pytest.raises(ValueError, match="rps_scaling=1e-306 turns arrival"):
        plan_step1(bad, request_volumes=[300])
    assert not (folder / MANIFEST).exists()
    plan_step1(StepParams(**SMALL, results_dir=str(folder)), request_volumes=[300])   # not refused as "other"
    assert json.loads((folder / MANIFEST).read_text())["parameters"]["rps_scaling"] == PROFILE_RPS_SCALING


def test_request_volumes_above_max_requests_are_refused(tmp_path):
    with pytest.raises(ValueError, match="request_volumes: 100,000 is more than max_requests=300"):
        plan_step1(StepParams(**SMALL, results_dir=str(tmp_path / "r")), request_volumes=[100_000])
