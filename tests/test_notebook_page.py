"""A study notebook's own index.html (``python -m workbench notebook <name>``): what it asked and found, the traces
it replayed, its parameters as a table, its figures with captions; never "Trace: not recorded" or "No
analysis.json" (issue 20)."""

import json
import subprocess
import sys

import pandas as pd

from workbench import paths
from workbench.study.answers import report
from workbench.study.answers.findings import read_findings, write_findings

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


def study_folder(tmp_path):
    folder = tmp_path / "study"
    folder.mkdir()
    (folder / "parameters.json").write_text(json.dumps({"parts": {"disaggregation": {
        "gpus": 8, "azure_requests": None, "slo_scales": [2, 1.5, 0.5], "calibrate_serving_costs": True}}}))
    (folder / "disaggregation.png").write_bytes(PNG)
    write_findings(folder, "disaggregation", question="Who should serve?", answer="Colocated, on the same kernels.",
                   findings=["Colocated wins at every SLO scale.", "Prefill gets 56% of the GPUs."],
                   traces=[{"label": "azure_conv (real production trace)", "requests": 19366, "rate_rps": 5.53042,
                            "synthetic": False, "replayed": "at its recorded rate"}],
                   figures={"disaggregation.png": "Goodput per GPU as the SLO tightens",
                            "missing.png": "a figure not written"})
    return folder


def test_the_page_shows_the_notebooks_findings_traces_and_parameters(tmp_path):
    folder = study_folder(tmp_path)
    page = report.render_notebook_index(folder)
    assert "Trace: not recorded" not in page and "analysis.json" not in page
    assert "<title>Disaggregated prefill/decode vs colocated serving as the SLO tightens</title>" in page
    assert "Who should serve?" in page and "Colocated, on the same kernels." in page
    assert "<li>Colocated wins at every SLO scale.</li>" in page and "<li>Prefill gets 56% of the GPUs.</li>" in page
    # the trace with its size, rate (3 significant digits) and kind
    assert "azure_conv (real production trace)" in page and "19,366" in page and "<td>5.53</td>" in page
    assert 'class="badge real"' in page
    # parameters as a table of plain values, not raw JSON
    assert "<td><code>slo_scales</code></td><td>2, 1.5, 0.5</td>" in page
    assert "<td><code>calibrate_serving_costs</code></td><td>yes</td>" in page and "[2" not in page
    # a figure with its caption; a caption whose file is missing is left out
    assert "<figcaption>Goodput per GPU as the SLO tightens" in page and "a figure not written" not in page


def test_a_notebook_without_findings_says_where_its_answers_are(tmp_path):
    folder = tmp_path / "v"
    folder.mkdir()
    (folder / "parameters.json").write_text(json.dumps({"parts": {"validation": {"seed": 0}}}))
    (folder / "validation_findings.json").write_text("{not json")          # unreadable: left out, said in the log
    assert read_findings(folder, "validation") is None
    page = report.render_notebook_index(folder)
    assert "records no findings file" in page and "<td><code>seed</code></td><td>0</td>" in page


def test_a_steps_folder_keeps_the_suite_page(tmp_path):
    steps = tmp_path / "steps"
    steps.mkdir()
    (steps / "parameters.json").write_text(json.dumps({"parameters": {"max_gpus": 4}, "parts": {}}))
    study = study_folder(tmp_path)
    assert report.is_steps_folder(steps) and not report.is_steps_folder(study)


def test_the_notebook_command_writes_the_study_page(tmp_path):
    results = tmp_path / "pc"
    command = [sys.executable, "-m", "workbench", "notebook", "prefix_caching", "--no-progress",
               "-p", "results_dir", str(results), "-p", "num_requests", "120", "-p", "replicas", "[2]",
               "-p", "sweep_replicas", "2", "-p", "kv_sweep_blocks", "[8000, 30000]",
               "-p", "routers", "[round_robin, prefix_affinity]", "-p", "capacity_search", "False"]
    done = subprocess.run(command, cwd=paths.REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    page = (results / "index.html").read_text()
    assert "What do prefix caching and cache-aware routing buy?" in page
    assert "Trace: not recorded" not in page and "No <code>analysis.json</code>" not in page
    assert "mooncake_conv" in page and 'class="badge real"' in page
    assert "<td><code>kv_sweep_blocks</code></td><td>8000, 30000</td>" in page
    found = pd.read_csv(results / "prefix_caching_kv.csv")
    assert f"{int(found.kv_tokens.max()):,} tokens" in page     # the findings, in tokens as the table
    rendered = (results / "prefix_caching.html").read_text()
    assert "Warning" not in rendered
