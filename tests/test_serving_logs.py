"""Loading a user's run (issue 21): from a DataFrame, from vLLM's per-request log (requests.jsonl with
meta.json), with shared prompts (prompt_id, prefix_group), and the setup checked against the run."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

import workbench as wb
from workbench import paths

LLMSERVINGSIM = paths.DATA_DIR / "groundtruth" / "llmservingsim_vllm019" / "runs"
V1 = wb.SimConfig(scheduler="continuous_fcfs", chunked_prefill=True, max_num_batched_tokens=2048, block_size=16,
                  kv_blocks=1000, prefix_caching=True)


def _frame(n=4, **columns) -> pd.DataFrame:
    frame = pd.DataFrame({"request_id": np.arange(n), "arrival_s": np.arange(n) * 0.5,
                          "prompt_tokens": np.full(n, 100), "output_tokens": np.full(n, 3),
                          "ttft_s": np.full(n, 0.1), "tpot_s": np.full(n, 0.05), "e2e_s": np.full(n, 0.2)})
    for name, values in columns.items():
        frame[name] = values
    return frame


# ---------------------------------------------------------------- DataFrames and shared prompts

def test_a_run_from_a_dataframe_with_its_setup_in_code():
    run = wb.load_serving_log(_frame(), config=V1, name="mine")
    assert run.name == "mine" and run.path is None and run.config == V1 and len(run.trace) == 4
    assert run.trace.prefix_hashes is None and run.measured["e2e_s"].tolist() == [0.2] * 4


def test_prompt_ids_become_prefix_hashes_the_engine_shares():
    """Requests 0 and 2 send prompt "a" (40 tokens: two whole 16-token blocks and 8 of their own), 1 and 3
    prompt "b": the later of each hits the first's two blocks, 32 tokens, in the engine's prefix cache."""
    frame = _frame(prompt_id=["a", "b", "a", "b"]).assign(prompt_tokens=[40, 50, 40, 50])
    run = wb.load_serving_log(frame, config=V1)
    hashes = run.trace.prefix_hashes
    assert [list(h) for h in hashes] == [[0, 0], [1, 1, 1], [0, 0], [1, 1, 1]]
    assert run.trace.prefix_block_tokens == V1.block_size
    res = wb.simulate(run.trace, V1, latency=wb.StepTimeModel.blis(0.01, 1e-4, 1e-4))
    assert res.requests["cached_tokens"].tolist() == [0, 0, 32, 48]
    # a prompt sent once shares nothing: no hash at all (the tree holds only prompts that repeat)
    alone = wb.load_serving_log(_frame(prompt_id=["a", "b", "c", "a"]), config=V1)
    assert [len(h) for h in alone.trace.prefix_hashes] == [6, 0, 0, 6]


def test_prefix_groups_share_their_beginning():
    """Group 7 shares 35 tokens (prefix_tokens): two whole blocks; an empty group is a prompt of its own."""
    frame = _frame(prefix_group=[7, 7, None, 7], prefix_tokens=[35, 35, None, 35]).assign(
        prompt_tokens=[100, 60, 100, 80])
    run = wb.load_serving_log(frame, config=V1)
    assert [list(h) for h in run.trace.prefix_hashes] == [[0, 0], [0, 0], [], [0, 0]]
    # without prefix_tokens, a group shares its shortest prompt (60 tokens: three blocks)
    shortest = wb.load_serving_log(frame.drop(columns="prefix_tokens"), config=V1)
    assert [len(h) for h in shortest.trace.prefix_hashes] == [3, 3, 0, 3]


@pytest.mark.parametrize("columns, message", [
    (dict(prompt_id=["a", 7, "b", "a"]), "prompt_id: a column of mixed types: 'a' (str) (text) at DataFrame: row 0, "
                                          "7 (number) at DataFrame: row 1; use one kind of label for every row"),
    (dict(prompt_id=[1, 1, 2, 2], prefix_group=[1, 1, 2, 2]), "prompt_id, prefix_group: give one of the two columns"),
    (dict(prompt_id=[[1], [1], [2], [2]]), "prompt_id is a list ([1] (list)); expected a number or a text label"),
    (dict(prefix_tokens=[10] * 4), "prefix_tokens: a column without prefix_group"),
    (dict(prefix_group=[1] * 4, prefix_tokens=[10, 10, 10, 200]), "DataFrame: row 3: prefix_tokens = 200 is more "
                                                                  "than the prompt's 100 tokens"),
    (dict(prefix_group=[1] * 4, prefix_tokens=[10, 10, 10, 20]), "prefix_tokens: the requests of prefix_group 1 give "
                                                                 "different prefix lengths"),
])
def test_shared_prompt_columns_are_checked(columns, message):
    with pytest.raises(wb.TraceFormatError, match=re.escape(message)):
        wb.load_serving_log(_frame(**columns), config=V1)


def test_a_prompt_id_names_one_prompt():
    frame = _frame(prompt_id=["a", "a", "b", "b"]).assign(prompt_tokens=[100, 90, 5, 5])
    with pytest.raises(wb.TraceFormatError, match=re.escape("prompt_id: DataFrame: row 0 and DataFrame: row 1 have the "
                                                            "same prompt_id 'a' but 100 and 90 prompt tokens")):
        wb.load_serving_log(frame, config=V1)


def test_a_csv_prompt_id_column_of_mixed_types_names_its_lines(tmp_path):
    frame = _frame(prompt_id=["7", "p7", "7", "p7"])
    frame.to_csv(tmp_path / "run.csv", index=False)
    with pytest.raises(wb.TraceFormatError, match=re.escape(f"prompt_id: a column of mixed types: '7' (str) (number "
                                                            f"written as text) at {tmp_path / 'run.csv'}: line 2, 'p7'")):
        wb.load_serving_log(tmp_path / "run.csv", config=V1)


@pytest.mark.parametrize("changes, message", [
    (dict(ttft_s=[0.1, 0.3, 0.1, 0.1]), "DataFrame: row 1: e2e_s < ttft_s (0.2 < 0.3)"),
    (dict(tpot_s=[0.05, 0.05, 50.0, 0.05]), "DataFrame: row 2: tpot_s = 50 s, but (e2e_s - ttft_s) / (output_tokens "
                                            "- 1)"),
    (dict(e2e_s=[0.2, np.nan, 0.2, 0.2]), "DataFrame: row 1, column e2e_s"),
])
def test_times_that_contradict_each_other_are_refused(changes, message):
    with pytest.raises(wb.TraceFormatError, match=re.escape(message)):
        wb.load_serving_log(_frame().assign(**changes), config=V1)


def test_a_dataframe_missing_a_column():
    with pytest.raises(wb.TraceFormatError, match=re.escape("DataFrame 'mine': missing column(s) tpot_s; a serving log "
                                                            "has request_id, arrival_s")):
        wb.load_serving_log(_frame().drop(columns="tpot_s"), config=V1, name="mine")


# ---------------------------------------------------------------- the setup against the run

def test_a_setup_that_could_not_have_served_the_run_is_refused():
    frame = _frame().assign(prompt_tokens=[100, 300, 100, 100])
    with pytest.raises(ValueError, match=re.escape("config: contradicts the run run: request 1 (300 prompt + 3 output "
                                                   "tokens) was served, but this setup would reject it: it needs 19 KV "
                                                   "blocks of 16 tokens, more than kv_blocks = 10")):
        wb.load_serving_log(frame, config=V1.replace(kv_blocks=10))
    v02 = wb.SimConfig(scheduler="continuous_fcfs", max_num_batched_tokens=256, kv_blocks=1000)
    with pytest.raises(ValueError, match=re.escape("without chunked prefill a prompt must fit max_num_batched_tokens "
                                                   "= 256")):
        wb.load_serving_log(frame, config=v02)
    with pytest.raises(ValueError, match=re.escape("max_model_len: run: request 1 has a prompt of 300 tokens, longer "
                                                   "than max_model_len = 200, which vLLM refuses")):
        wb.load_serving_log(frame, config=V1, max_model_len=200)
    with pytest.raises(ValueError, match=re.escape("max_model_len: run: request 1 has 300 prompt + 3 output tokens, "
                                                   "more than max_model_len = 301")):
        wb.load_serving_log(frame, config=V1, max_model_len=301)
    assert wb.load_serving_log(frame, config=V1, max_model_len=303).max_model_len == 303
    with pytest.raises(ValueError, match="config, setup: give the serving setup one way"):
        wb.load_serving_log(frame, config=V1, setup="setup.json")


def test_calibrate_checks_a_config_given_to_it_against_each_run():
    run = wb.load_serving_log(_frame(n=20), config=V1)
    with pytest.raises(ValueError, match=re.escape("cfg: contradicts the run run: request 0 (100 prompt + 3 output "
                                                   "tokens) was served, but this setup would reject it")):
        wb.calibrate(wb.StepTimeModel.blis(0.01, 1e-4, 1e-4), run, V1.replace(kv_blocks=3))


def test_a_run_split_into_what_is_fitted_and_what_is_predicted():
    run = wb.load_serving_log(_frame(n=10), config=V1)
    first, rest = run.split(4)
    assert (first.name, rest.name) == ("run[:4]", "run[4:]")
    assert first.scored_mask.tolist() == [True] * 4 + [False] * 6 and rest.scored_mask.sum() == 6
    assert first.trace is run.trace                     # the server was loaded by every request
    res = wb.simulate(run.trace, V1, latency=wb.StepTimeModel.blis(0.01, 1e-4, 1e-4))
    assert wb.compare_to_measured(res, rest).loc[("run[4:]", "e2e_s"), "requests"] == 6
    with pytest.raises(ValueError, match=re.escape("n: must be at most 9, got 10; the run has 10 requests: split it")):
        run.split(10)


# ---------------------------------------------------------------- vLLM's per-request log

def _jsonl(folder, rows, meta=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "requests.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    if meta is not None:
        (folder / "meta.json").write_text(json.dumps(meta))
    return folder / "requests.jsonl"


ROW = {"request_id": "bench-0", "input_toks": 100, "output_toks": 11, "arrival_time": 1.7e9, "queued_ts": 500.0,
       "scheduled_ts": 500.001, "first_token_ts": 500.2, "last_token_ts": 501.2}
META = {"vllm_version": "0.19.0", "engine_kwargs": {"max_num_seqs": 64, "max_num_batched_tokens": 1024,
                                                    "max_model_len": 4096, "tensor_parallel_size": 1},
        "kv_cache": {"num_gpu_blocks": 501, "block_size": 16, "enable_prefix_caching": False}}


def test_a_vllm_request_log_by_hand(tmp_path):
    second = {**ROW, "request_id": "bench-1", "queued_ts": 500.5, "first_token_ts": 500.9, "last_token_ts": 501.9}
    run = wb.load_serving_log(_jsonl(tmp_path / "H100" / "Llama" / "vllm", [ROW, second], META))
    assert run.name == "H100-Llama"                     # requests.jsonl is named by the folders above it
    assert run.trace.arrival_s.tolist() == [0.0, 0.5]   # queued_ts, from the first
    assert run.measured["ttft_s"].tolist() == pytest.approx([0.2, 0.4])
    assert run.measured["e2e_s"].tolist() == pytest.approx([1.2, 1.4])
    assert run.measured["tpot_s"].tolist() == pytest.approx([0.1, 0.1])
    assert run.config == wb.SimConfig(scheduler="continuous_fcfs", num_gpus=1, chunked_prefill=True, max_num_seqs=64,
                                      max_num_batched_tokens=1024, block_size=16, kv_blocks=500,
                                      prefix_caching=False)   # v1 keeps one block as its null block
    assert run.max_model_len == 4096


def test_the_shipped_llmservingsim_runs():
    """Their setup.json states what meta.json says (the RTX 4090's is derived from it field by field)."""
    for gpu, seqs, blocks in (("RTX4090", 256, 2587), ("RTXPRO6000", 128, 35799)):
        run = wb.load_serving_log(LLMSERVINGSIM / gpu / "Llama-3.1-8B" / "vllm" / "requests.jsonl")
        assert len(run.trace) == 300 and run.config.chunked_prefill and run.config.max_num_seqs == seqs
        assert run.config.kv_blocks == blocks and run.config.max_num_batched_tokens == 2048
        # first line: queued 27536.660701067, first token 27537.350135653, last 27554.231018618 (RTX 4090)
        if gpu == "RTX4090":
            assert run.measured["ttft_s"].iloc[0] == pytest.approx(27537.350135653 - 27536.660701067)
            assert run.measured["e2e_s"].iloc[0] == pytest.approx(27554.231018618 - 27536.660701067)
            assert run.max_model_len == 32768
    meta = json.loads((LLMSERVINGSIM / "RTX4090" / "Llama-3.1-8B" / "vllm" / "meta.json").read_text())
    from workbench.traces.vllm_log import config_from_meta

    derived, _, _ = config_from_meta(meta, "meta.json")
    shipped = wb.load_serving_log(LLMSERVINGSIM / "RTX4090" / "Llama-3.1-8B" / "vllm" / "requests.jsonl").config
    assert derived == shipped


@pytest.mark.parametrize("change, message", [
    (dict(last_token_ts=None), "line 1 (request 'bench-0'): last_token_ts is null: the request never finished"),
    (dict(first_token_ts=None), "first_token_ts is null: the request never finished"),
    ("drop:last_token_ts", "last_token_ts is missing: the request never finished"),
    (dict(first_token_ts=499.0), "first_token_ts 499.000000 is before queued_ts 500.000000; the times contradict"),
    (dict(last_token_ts=500.1), "last_token_ts 500.100000 is before first_token_ts 500.200000"),
    (dict(output_toks=1), "one output token, but last_token_ts - first_token_ts = 1.000000 s"),
    (dict(input_toks="many"), "input_toks = 'many', expected a finite number"),
])
def test_bad_vllm_request_logs_are_refused_with_their_line(tmp_path, change, message):
    row = {k: v for k, v in ROW.items() if k != change.split(":")[1]} if isinstance(change, str) else {**ROW, **change}
    with pytest.raises(wb.TraceFormatError, match=re.escape(message)):
        wb.load_serving_log(_jsonl(tmp_path / "vllm", [row], META))


def test_a_vllm_log_whose_meta_cannot_say_the_setup(tmp_path, caplog):
    old = {**META, "vllm_version": "0.6.3"}
    run = wb.load_serving_log(_jsonl(tmp_path / "a", [ROW], old))
    assert run.config is None and "is not the v1 engine" in caplog.text
    no_blocks = {k: v for k, v in META.items() if k != "kv_cache"}
    assert wb.load_serving_log(_jsonl(tmp_path / "b", [ROW], no_blocks)).config is None
    given = wb.load_serving_log(_jsonl(tmp_path / "c", [ROW], no_blocks), config=V1)
    assert given.config == V1 and given.max_model_len == 4096
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "requests.jsonl").write_text("not json\n")
    with pytest.raises(wb.TraceFormatError, match="line 1: not JSON"):
        wb.load_serving_log(tmp_path / "d" / "requests.jsonl")
