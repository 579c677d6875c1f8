"""The step notebooks: committed clean, parameters in line with the suite, and they run (tiny sizes)."""

from __future__ import annotations

import ast
import dataclasses
import json
import subprocess
import tomllib

import jupytext
import nbformat
import numpy as np
import pandas as pd
import papermill as pm
import pytest

from workbench import paths
from workbench.study.runs.experiments import STEP1, STEP2, STEP3, STEPS, StepParams
from workbench.study.orchestrate.suite import SuiteOptions, notebook_parameters
from conftest import execute_notebook

TINY = {"max_requests": 2_000, "max_gpus": 4, "executor": "serial"}   # a pool's start-up would cost more
STATIC_TRIO = "static_fifo,dynamic_no_bins,multi_bin_dynamic"  # the seed's schedulers (steps 2-3 now sweep each)
REQUIRED = {"max_requests", "max_gpus", "use_real_timestamps", "rps_scaling", "d_sla", "dataset", "k_bins",
            "seed", "results_dir", "executor", "capacity_search", "capacity_attainment", "schedulers", "latency",
            "replications", "ttft_sla", "tpot_sla"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def notebook_path(step: str):
    return paths.NOTEBOOKS_DIR / f"{step}.ipynb"


def run(step: str, out_dir, **parameters):
    """Execute a step notebook the way the suite does (kernel python3, from the repo root)."""
    output = out_dir / f"{step}.ipynb"
    execute_notebook(notebook_path(step), output, parameters)
    return nbformat.read(output, as_version=4)


def outputs_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts.extend(str(v) for k, v in out.get("data", {}).items() if k.startswith("text/"))
    return "\n".join(parts)


def has_image(nb) -> bool:
    return any("image/png" in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", []))


# every notebook of the repository, including ones added later (each must be a jupytext pair)
ALL_NOTEBOOKS = tuple(sorted({*STEPS, "validation", *(p.stem for p in paths.NOTEBOOKS_DIR.glob("*.ipynb"))}))


def cell_essence(nb) -> list[tuple[str, str, tuple[str, ...]]]:
    """What a notebook pair must agree on: each cell's type, source and tags."""
    return [(c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", []))) for c in nb.cells]


def pair_drift(py_path, ipynb_path) -> list[str]:
    """The cells where a jupytext ``.py`` and its ``.ipynb`` disagree (empty: in sync)."""
    py_cells = cell_essence(jupytext.read(py_path))
    nb_cells = cell_essence(nbformat.read(ipynb_path, as_version=4))
    drift = []
    for i, (a, b) in enumerate(zip(py_cells, nb_cells)):
        if a != b:
            lines = [(x, y) for x, y in zip(a[1].splitlines() + [""], b[1].splitlines() + [""]) if x != y]
            drift.append(f"cell {i}: .py {a[0]} {a[2]} {lines[0][0] if lines else ''!r} != "
                         f".ipynb {b[0]} {b[2]} {lines[0][1] if lines else ''!r}")
    if len(py_cells) != len(nb_cells):
        drift.append(f"{len(py_cells)} cells in the .py, {len(nb_cells)} in the .ipynb")
    return drift


@pytest.mark.parametrize("name", ALL_NOTEBOOKS)
def test_every_notebook_is_a_jupytext_pair_in_sync(name):
    py, ipynb = paths.NOTEBOOKS_DIR / f"{name}.py", paths.NOTEBOOKS_DIR / f"{name}.ipynb"
    assert py.is_file() and ipynb.is_file()
    assert pair_drift(py, ipynb) == [], f"run `.venv/bin/jupytext --sync notebooks/{name}.py`"
    assert "# %% tags=[\"parameters\"]" in py.read_text()  # papermill's tag lives in the .py too


def test_pair_drift_is_detected(tmp_path):
    py = tmp_path / "nb.py"
    py.write_text((paths.NOTEBOOKS_DIR / f"{STEP2}.py").read_text().replace("max_gpus = 100", "max_gpus = 99", 1))
    assert any("max_gpus = 99" in d for d in pair_drift(py, notebook_path(STEP2)))
    py.write_text((paths.NOTEBOOKS_DIR / f"{STEP2}.py").read_text() + "\n# %%\nprint('new cell')\n")
    assert pair_drift(py, notebook_path(STEP2)) == ["%d cells in the .py, %d in the .ipynb" % (
        len(nbformat.read(notebook_path(STEP2), as_version=4).cells) + 1,
        len(nbformat.read(notebook_path(STEP2), as_version=4).cells))]


def test_jupytext_config_pairs_the_notebooks():
    config = tomllib.loads((paths.REPO_ROOT / "jupytext.toml").read_text())
    assert config["formats"] == "ipynb,py:percent"
    assert not list(paths.NOTEBOOKS_DIR.glob("_build*.py"))  # no generator scripts: the pairs are the source


@pytest.mark.parametrize("name", ALL_NOTEBOOKS)
def test_papermill_reads_every_parameter_of_the_parameters_cell(name):
    """papermill skips an assignment it cannot parse (e.g. a comment with ';' after it) without an error, and
    `-p` on that name is then refused as unknown: every name the cell assigns must be one papermill declares."""
    nb = nbformat.read(paths.NOTEBOOKS_DIR / f"{name}.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assigned = [t.id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign)
                for t in node.targets if isinstance(t, ast.Name)]
    assert assigned and list(pm.inspect_notebook(str(paths.NOTEBOOKS_DIR / f"{name}.ipynb"))) == assigned


@pytest.mark.parametrize("name", ALL_NOTEBOOKS)
def test_every_notebook_is_committed_without_outputs(name):
    nb = nbformat.read(paths.NOTEBOOKS_DIR / f"{name}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code), f"{name}.ipynb has outputs"


@pytest.mark.parametrize("step", STEPS)
def test_notebooks_are_committed_without_outputs(step):
    nb = nbformat.read(notebook_path(step), as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0] is code[0]
    markdown = "".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "synthetic" in markdown
    # why capacity is not replayed throughput; the floor said one way; one hardware model and SLA for all
    assert "Capacity is not replayed throughput" in markdown and "the *floor*" in markdown
    assert "One hardware model, one SLA" in markdown and "seed-grid" in markdown


@pytest.mark.parametrize("step", STEPS)
def test_parameters_match_what_the_suite_passes(step):
    declared = pm.inspect_notebook(str(notebook_path(step)))
    assert REQUIRED <= set(declared)
    assert set(notebook_parameters(SuiteOptions(), step)) <= set(declared)
    if step == STEP3:
        assert "best_gpu_count" in declared and declared["best_gpu_count"]["default"] == "None"
    # the notebook's defaults are the package's defaults (StepParams, and so the CLI's); None where the default
    # follows the latency model (rps_scaling, schedulers), resolved the same way
    defaults = {f.name: f.default for f in dataclasses.fields(StepParams)}
    for name in REQUIRED:
        default = ast.literal_eval(declared[name]["default"])
        assert default == defaults[name], name
        assert StepParams(**{name: default}) == StepParams() == StepParams.from_namespace({}), name


def fewest_tied_with_most(rows: pd.DataFrame, key: str, per_gpu: bool = False) -> int | None:
    """The documented rule, by hand: the smallest ``key`` whose capacity (per GPU) no other row's exceeds beyond the
    search's resolution: a capacity c stands for a crossing in [c, c x w), w = 1.01 or the wider bracket the search
    stopped at (capacity_scaling_above / capacity_scaling)."""
    rows = rows.dropna(subset=["capacity_rps"])
    if rows.empty:
        return None
    scale = rows["num_gpus"] if per_gpu else 1.0
    low = rows["capacity_rps"] / scale
    width = np.maximum(1.01, (rows["capacity_scaling_above"] / rows["capacity_scaling"]).fillna(1.01))
    high = low * width
    tied = [k for k, h in zip(rows[key], high) if not (low > h * (1 + 1e-9)).any()]
    return int(min(tied))


def test_the_three_steps_run_in_order_and_write_their_outputs(tmp_path, python):
    results = tmp_path / "results"
    nb1 = run(STEP1, tmp_path, results_dir=str(results), schedulers=STATIC_TRIO, **TINY)
    # step 2 exactly as a user types it, from the repository root
    out2 = tmp_path / "out.ipynb"
    cli = [python, "-m", "papermill", f"notebooks/{STEP2}.ipynb", str(out2), "-p", "max_gpus", "4",
           "-p", "max_requests", "2000", "-p", "results_dir", str(results), "-p", "schedulers", STATIC_TRIO,
           "-p", "executor", "serial", "--no-progress-bar"]
    done = subprocess.run(cli, cwd=paths.REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    # papermill on the command line: the notebook says where its results went, and leaves an index.html there
    assert f"{STEP2}: results go to" in done.stderr and "index.html lists" in done.stderr
    assert (results / "index.html").is_file()
    nb2 = nbformat.read(out2, as_version=4)
    nb3 = run(STEP3, tmp_path, results_dir=str(results), schedulers=STATIC_TRIO, **TINY)

    step1 = pd.read_csv(results / f"{STEP1}.csv")
    assert sorted(step1["num_requests"].unique()) == [1_000, 2_000]
    assert len(step1) == 2 * 5 and not step1["test_id"].duplicated().any()
    step2_all = pd.read_csv(results / f"{STEP2}.csv")
    assert len(step2_all) == 3 * 3
    step2 = step2_all[step2_all["scheduler"] == "multi_bin_dynamic"]  # the scheduler the answers are about
    assert sorted(step2["num_gpus"]) == [1, 2, 4]
    analysis = json.loads((results / "analysis.json").read_text())
    covering = step2[step2["capacity_rps"] >= step2["offered_rps"]]    # the documented rule, by hand
    needed = int(covering["num_gpus"].min()) if not covering.empty else None
    assert analysis["gpus_needed"] == analysis["step2_gpu_scaling"]["gpus_needed"] == needed
    best = needed if needed is not None else int(step2["num_gpus"].max())   # step 3's pool
    step3_all = pd.read_csv(results / f"{STEP3}.csv")
    assert sorted(step3_all.loc[step3_all["scheduler"] != "multi_bin_dynamic", "label"]) == [
        f"dynamic_no_bins ({best} GPU{'s' if best > 1 else ''})", f"static_fifo ({best} GPU{'s' if best > 1 else ''})"]
    step3 = step3_all[step3_all["scheduler"] == "multi_bin_dynamic"]
    assert sorted(step3["k_bins"]) == [1, 2, 4, 8, 16, 32] and set(step3["num_gpus"]) == {best}
    assert set(analysis["step1_request_scaling"]["breaking_points"]) == set(step1["label"])
    assert analysis["step1_request_scaling"]["best_config"]["num_requests"] == 2_000

    every = pd.read_csv(results / "all_results.csv")
    assert every.groupby("step").size().to_dict() == {STEP1: 10, STEP2: 9, STEP3: 8}
    assert every["synthetic"].all() and every["trace_label"].str.contains("synthetic").all()
    for step in STEPS:
        for png in (results / f"{step}.png", results / f"{step}_capacity.png"):
            assert png.read_bytes()[:8] == PNG_MAGIC, png
    # step 1's searches on 1, 2 and 4 GPUs are step 2's tests: reused, not run again; one log line per test run,
    # no progress bar frozen at 0% in the saved notebook
    text2 = outputs_text(nb2)
    assert "5 test(s) already computed" in text2
    assert [line.split("] ")[0].split("[")[-1] for line in text2.splitlines() if "step2_gpu_scaling [" in line] \
        == [f"{i}/4" for i in range(1, 5)]
    assert "%|" not in text2
    # the commentary is computed from this run's rows
    assert "marks the GPUs it needs" in text2 and "loaded synthetic rows" not in text2
    for nb in (nb1, nb2, nb3):
        assert has_image(nb)
        assert "synthetic" in outputs_text(nb)
        assert "Floor:" in outputs_text(nb)  # the capacity cell ran and printed it from the rows
    gpu_count = analysis["step3_kbins_sensitivity"]["gpu_count"]
    assert gpu_count["source"] == ("step2_gpus_needed" if needed is not None else "step2_largest")
    assert ("the GPUs step 2 found the trace needs" if needed is not None else
            "No GPU count step 2 tested covers the replayed load") in outputs_text(nb3)
    assert gpu_count["matches_step2"] is True
    assert gpu_count["step2_test_id"] == step2.loc[step2["num_gpus"] == best, "test_id"].item()
    assert set(analysis["validity"]) == {"best_config_step1", "gpus_needed", "best_gpu_count_by_capacity_per_gpu",
                                         "best_k"}
    for check, nb in (("best_config_step1", nb1), ("gpus_needed", nb2), ("best_k", nb3)):
        assert analysis["validity"][check]["sentence"] in outputs_text(nb)  # the notebooks say it too

    # capacity: every configuration of the largest volume in step 1, every GPU count, every K
    searched = step1[step1["capacity_criterion"].notna()]
    assert sorted(searched["label"]) == ["dynamic_no_bins (1 GPU)", "multi_bin_dynamic (1 GPU)",
                                         "multi_bin_dynamic (2 GPUs)", "multi_bin_dynamic (4 GPUs)",
                                         "static_fifo (1 GPU)"]
    assert (searched["num_requests"] == 2_000).all()
    for frame in (step2_all, step3_all):
        assert frame["capacity_criterion"].notna().all() and (frame["capacity_target"] == 0.9).all()
        for column in ("capacity_rps", "capacity_scaling", "capacity_attainment", "capacity_probes"):
            assert column in frame.columns
    step2_part, step3_part = analysis["step2_gpu_scaling"], analysis["step3_kbins_sensitivity"]
    assert set(step2_part["capacity_rps"]) == set(step2_all["label"])
    assert set(step2_part["capacity_per_gpu"]) == set(step2_part["capacity_scaling_efficiency"]) == {"1", "2", "4"}
    assert step2_part["capacity_monotone_in_gpus"] is (not step2_part["capacity_monotone_exceptions"])
    assert analysis["best_gpu_count_by_capacity_per_gpu"] == step2_part["best_gpu_count_by_capacity_per_gpu"]
    assert analysis["best_gpu_count_by_capacity_per_gpu"] == fewest_tied_with_most(step2, "num_gpus", per_gpu=True)
    assert set(step3_part["capacity_rps"]) == set(step3_all["label"])
    assert analysis["best_k"] == step3_part["best_k"] == fewest_tied_with_most(step3, "k_bins")
    assert set(analysis["step1_request_scaling"]["capacity_rps"]) == set(searched["label"])
    for part in (analysis["step1_request_scaling"], step2_part, step3_part):
        assert part["capacity_search"]["target"] == 0.9 and 0 < part["capacity_search"]["attainable_share"] <= 1

    # rerunning a notebook recomputes nothing and duplicates nothing
    run(STEP2, tmp_path, results_dir=str(results), schedulers=STATIC_TRIO, **TINY)
    again = pd.read_csv(results / f"{STEP2}.csv")
    pd.testing.assert_frame_equal(again, step2_all)


def test_step3_without_step2_results_says_so_and_uses_the_default(tmp_path):
    results = tmp_path / "results"
    nb = run(STEP3, tmp_path, results_dir=str(results), executor="serial", max_requests=2_000, max_gpus=2,
             capacity_search=False)
    assert "No step 2 results" in outputs_text(nb)
    rows = pd.read_csv(results / f"{STEP3}.csv")
    assert set(rows["num_gpus"]) == {2}  # min(64, max_gpus)
    # without capacity search: replays only, and the capacity cells say so instead of failing
    assert not rows["capacity_search"].any() and "capacity_rps" not in rows.columns
    assert "No capacity search" in outputs_text(nb)
    assert json.loads((results / "analysis.json").read_text())["step3_kbins_sensitivity"]["best_k_basis"] == "replay"
