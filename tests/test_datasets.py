"""Named datasets: the shipped Azure 2023 traces, the Vidur and raw Azure layouts, short names everywhere."""

import gzip
import re

import numpy as np
import pytest

import workbench as wb
from workbench.paths import DATA_DIR
from workbench.traces import datasets
from workbench.traces.trace import TraceFormatError, clear_memory_cache


@pytest.fixture(autouse=True)
def cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(tmp_path / "cache"))
    clear_memory_cache()
    yield
    clear_memory_cache()


# The figures of data/traces/README.md (and shared/data/traces/README.md)
@pytest.mark.parametrize("name, requests, minutes, rate_rps, prompt, output", [
    ("azure_conv", 19_366, 58, 5.5, 1_155, 211),
    ("azure_code", 8_819, 57, 2.6, 2_048, 28),
])
def test_shipped_azure_traces_match_their_readme(name, requests, minutes, rate_rps, prompt, output):
    trace = wb.load_trace(name, use_real_timestamps=True)
    assert len(trace) == requests and trace.meta.rows_dropped == {"failed (0 response tokens)": 0}
    assert trace.arrival_s[-1] / 60 == pytest.approx(minutes, abs=0.5)
    assert trace.mean_rate_rps == pytest.approx(rate_rps, abs=0.05)
    assert trace.prompt_tokens.mean() == pytest.approx(prompt, abs=0.5)
    assert trace.output_tokens.mean() == pytest.approx(output, abs=0.5)
    assert not trace.is_synthetic
    assert trace.label == (f"{name} (real production trace: Azure LLM inference 2023, "
                           f"{'conversation' if name == 'azure_conv' else 'code'}, {requests:,} req)")
    # the file by path is the same trace with the same label
    by_path = wb.load_trace(datasets.DATASETS[name].file, use_real_timestamps=True)
    assert by_path.fingerprint == trace.fingerprint and by_path.label == trace.label
    assert wb.load_trace(name).mean_rate_rps == pytest.approx(10 * trace.mean_rate_rps)  # the default rps_scaling
    assert wb.load_trace(name, rps_scaling=200).mean_rate_rps == pytest.approx(200 * trace.mean_rate_rps)


def test_shipped_traces_carry_their_licence_and_attribution():
    folder = DATA_DIR / "traces"
    assert "MIT License" in (folder / "LICENSE-MIT-vidur").read_text()
    readme = (folder / "README.md").read_text()
    for words in ("Splitwise", "microsoft/vidur", "LICENSE-MIT-vidur", "19,366", "8,819"):
        assert words in readme
    assert "traces/azure_llm_2023_conv.csv" in (DATA_DIR / "README.md").read_text()


def test_synthetic_by_name_is_the_default_trace():
    assert wb.load_trace("synthetic", num_requests=100) is wb.load_trace(num_requests=100)


def test_unknown_name_or_missing_file_lists_the_names(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="azure_conv, azure_code"):
        wb.load_trace("azure_convo")
    monkeypatch.setitem(datasets.DATASETS, "burstgpt",
                        datasets.Dataset("burstgpt", tmp_path / "BurstGPT_1.csv", "real", False))
    with pytest.raises(FileNotFoundError, match="place it by hand"):
        wb.load_trace("burstgpt")


def test_vidur_layout(tmp_path):
    path = tmp_path / "vidur.csv"
    path.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,100,10\n2.5,200,0\n1.25,300,30\n")
    trace = wb.load_trace(path, use_real_timestamps=True)
    np.testing.assert_array_equal(trace.arrival_s, [0.0, 1.25])
    np.testing.assert_array_equal(trace.prompt_tokens, [100, 300])
    np.testing.assert_array_equal(trace.output_tokens, [10, 30])
    assert trace.label == "vidur.csv (2 req)"


RAW_AZURE = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:15:46.6805900,374,44
2023-11-16 18:15:50.9951690,396,109
2023-11-16 18:15:46.1805900,879,0
2023-11-16 18:16:00,50,5
"""


@pytest.mark.parametrize("gzipped", [False, True])
def test_raw_azure_layout_shifts_wall_clock_to_seconds(tmp_path, gzipped):
    path = tmp_path / ("raw.csv.gz" if gzipped else "raw.csv")
    path.write_bytes(gzip.compress(RAW_AZURE.encode()) if gzipped else RAW_AZURE.encode())
    trace = wb.load_trace(path, use_real_timestamps=True, drop_failed=False)
    # hand-computed: seconds after 18:15:46.1805900
    np.testing.assert_allclose(trace.arrival_s, [0.0, 0.5, 4.814579, 13.81941], atol=1e-9)
    np.testing.assert_array_equal(trace.prompt_tokens, [879, 374, 396, 50])
    kept = wb.load_trace(path, use_real_timestamps=True)  # the 0-token row is a failure
    np.testing.assert_allclose(kept.arrival_s, [0.0, 4.314579, 13.31941], atol=1e-9)


def test_raw_azure_bad_timestamp_names_line_and_column(tmp_path):
    path = tmp_path / "raw.csv"
    path.write_text(RAW_AZURE.replace("2023-11-16 18:16:00", "yesterday"))
    with pytest.raises(TraceFormatError, match=re.escape("line 5, column 'TIMESTAMP': found 'yesterday', "
                                                         "expected a date and time")):
        wb.load_trace(path)


def test_a_dataset_name_works_in_the_notebook_parameters_and_the_suite_cli(capsys):
    from workbench.__main__ import main, options_from_args, build_parser
    from workbench.study.runs import experiments
    from workbench.study.orchestrate.suite import notebook_parameters

    assert experiments.StepParams(dataset="azure_conv").dataset == "azure_conv"
    assert experiments.StepParams(dataset="synthetic").dataset is None
    options = options_from_args(build_parser().parse_args(["suite", "--dataset", "azure_code"]))
    assert notebook_parameters(options, experiments.STEP2)["dataset"] == "azure_code"
    with pytest.raises(SystemExit):
        main(["suite", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for name in datasets.names():
        assert f"{name}:" in help_text


def test_result_rows_carry_the_dataset_name_and_origin():
    from workbench.study.runs.sweep import TraceOptions, make_test, run_test

    options = TraceOptions(dataset="azure_code", num_requests=200, use_real_timestamps=True)
    assert options.dataset == "azure_code"  # a name, not a path of this machine
    row = run_test(make_test("unit", options, wb.SimConfig(num_gpus=2)))
    assert row["dataset"] == "azure_code" and row["synthetic"] is False
    assert row["trace_label"] == "azure_code (real production trace: Azure LLM inference 2023, code, 200 req)"
