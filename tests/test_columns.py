"""The column dictionary (issue 9 item 11): docs/columns.md is generated from the code and covers everything."""

from __future__ import annotations

import pandas as pd

from workbench import paths
from workbench.__main__ import main
from workbench.sim.config import SimConfig
from workbench.study.answers import analysis, columns
from workbench.study.fidelity import validation


def test_docs_columns_md_is_the_generated_dictionary(capsys):
    assert main(["columns"]) == 0
    printed = capsys.readouterr().out
    assert printed == columns.markdown()
    assert (paths.REPO_ROOT / "docs" / "columns.md").read_text() == printed, \
        "regenerate: python -m workbench columns > docs/columns.md"


def test_every_entry_has_a_meaning_and_units_where_the_name_has_one():
    for name, (unit, meaning) in {**columns.csv_columns(), **columns.ANALYSIS_KEYS}.items():
        assert meaning.strip(), name
        if name.endswith("_s") and not name.endswith("_per_s"):
            assert unit.split("/")[0] == "s", name  # s, or s/token for a per-token time
        if name.endswith("_rps"):
            assert unit == "requests/s", name
    assert columns.csv_columns()["d_sla_s"][0] == "s"
    assert columns.csv_columns()["num_gpus"][0] == "GPUs"


def test_undocumented_columns_and_keys_are_found():
    known = list(SimConfig().to_dict()) + ["goodput_rps", "bin3_requests", "bin12_batch_size_mean"]
    assert columns.undocumented_columns(known) == []
    assert columns.undocumented_columns(["goodput_rps", "queue_delay_p50_s", "binX_requests"]) == [
        "queue_delay_p50_s", "binX_requests"]
    rows = pd.DataFrame([{"step": "step2_gpu_scaling", "label": "a", "test_id": "t", "num_requests": 10,
                          "num_gpus": 1, "k_bins": 4, "throughput_rps": 1.0, "goodput_rps": 1.0,
                          "sla_violation_rate": 0.0, "scheduler": "multi_bin_dynamic"}])
    result = analysis.analyze(rows)
    assert columns.undocumented_analysis_keys(result) == []
    result["step2_gpu_scaling"]["new_answer"] = 3
    result["validity"]["gpus_needed"]["confidence"] = 0.9
    result["step2_gpu_scaling"]["gpus_needed_by_scheduler"]["other"] = 1  # a data key: covered by its entry
    assert columns.undocumented_analysis_keys(result) == ["step2_gpu_scaling.new_answer", "validity.*.confidence"]


def test_validation_csv_columns_are_documented():
    assert set(validation.COLUMNS) == set(columns.VALIDATION_COLUMNS)
