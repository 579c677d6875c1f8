"""Kernel-profile step models: the bundle reader by hand, against LLMServingSim, bad input, and the replays."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest

import workbench as wb
from workbench.paths import REPO_ROOT

DATA = REPO_ROOT / "data" / "groundtruth" / "llmservingsim_vllm019"
PRO6000_LLAMA = DATA / "kernel_profiles" / "RTXPRO6000" / "meta-llama" / "Llama-3.1-8B" / "bf16"

# A tiny bundle written by hand: two layers, hidden size 8, times in microseconds.
DENSE = {  # layer: (time at 1 token, time at 4 tokens)
    "embedding": (1.0, 2.5), "layernorm": (2.0, 2.0), "qkv_proj": (10.0, 13.0), "qk_norm": (3.0, 3.0),
    "rotary_emb": (1.0, 1.0), "o_proj": (5.0, 8.0), "gate_up_proj": (20.0, 26.0), "act_fn": (1.0, 4.0),
    "down_proj": (10.0, 13.0), "final_layernorm": (2.0, 2.0)}
PER_SEQUENCE = {"lm_head": (100.0, 103.0), "sampler": (10.0, 13.0)}
ATTENTION = [  # prefill_chunk, kv_prefill, n_decode, kv_decode, time_us (no (0, 0) slice, as in real bundles)
    (0, 0, 1, 16, 4.0), (0, 0, 1, 32, 6.0), (0, 0, 2, 16, 5.0), (0, 0, 2, 32, 9.0),
    (16, 0, 0, 0, 7.0), (16, 0, 1, 16, 10.0), (16, 0, 1, 32, 12.0), (16, 0, 2, 16, 11.0), (16, 0, 2, 32, 15.0)]
SKEW_AXES = {"n_bins": [0, 2, 4, 1000000], "n_labels": ["n<=2", "n<=4", "n>4"],
             "skew_rate_bins": [-0.01, 0.5, 1.01], "skew_rate_labels": ["sr<=50%", "sr>50%"],
             "kv_big_bins": [0, 1024, 1000000000], "kv_big_labels": ["kvB<=1k", "kvB>1k"],
             "kp_bins": [-1, 0, 1000000000], "kp_labels": ["kp=0", "kp>0"]}


def write_bundle(root, *, model_type="llama", skew=False, tps=(1,), moe_rows=None, experts=0, top_k=1):
    """A bundle folder and a model config in ``root``; returns (bundle folder, config path)."""
    folder = root / "bundle"
    for tp in tps:
        d = folder / f"tp{tp}"
        d.mkdir(parents=True)
        (d / "dense.csv").write_text("layer,tokens,time_us\n" + "".join(
            f"{name},{t},{v}\n" for name, (a, b) in DENSE.items() for t, v in ((1, a), (4, b))))
        (d / "per_sequence.csv").write_text("layer,sequences,time_us\n" + "".join(
            f"{name},{s},{v}\n" for name, (a, b) in PER_SEQUENCE.items() for s, v in ((1, a), (4, b))))
        (d / "attention.csv").write_text("prefill_chunk,kv_prefill,n_decode,kv_decode,time_us\n" + "".join(
            ",".join(map(str, row)) + "\n" for row in ATTENTION))
        if skew:
            (d / "skew_fit.csv").write_text("pc,n_label,skew_rate_label,kv_big_label,kp_label,alpha,n_samples\n"
                                            "0,n<=2,sr<=50%,kvB<=1k,kp=0,0.5,4\n")
        if moe_rows is not None:
            (d / "moe.csv").write_text("tokens,activated_experts,time_us\n" + "".join(
                f"{t},{a},{v}\n" for t, a, v in moe_rows))
    meta = ["model: test/Tiny", "hardware: TESTGPU", "variant: bf16", f"architecture: {model_type}"]
    if skew:
        meta.append("skew_fit:\n  enabled: true\n  bucket_axes: " + json.dumps(SKEW_AXES)
                    + "\n  per_tp:\n    1:\n      alpha_default: 0.1\n      bucket_table: tp1/skew_fit.csv")
    (folder / "meta.yaml").write_text("\n".join(meta) + "\n")
    config = {"model_type": model_type, "num_hidden_layers": 2, "hidden_size": 8, "num_attention_heads": 2,
              "num_key_value_heads": 1, "vocab_size": 100, "intermediate_size": 16}
    if experts:
        config.update(num_experts=experts, num_experts_per_tok=top_k, moe_intermediate_size=4)
    path = root / "config.json"
    path.write_text(json.dumps(config))
    return folder, path


def us(step_s):
    return step_s * 1e6


def test_decode_step_by_hand(tmp_path):
    folder, cfg = write_bundle(tmp_path)
    m = wb.StepTimeModel.from_kernel_profiles(folder, model_config=cfg)
    # 2 decodes of context 16 and 32: 2 tokens, 2 sequences, attention at (pc 0, nd 2, mean kv 24).
    # dense at 2 tokens, one third of the way from 1 to 4: per layer layernorm x2 4 + qkv 11 + rotary 1 + o_proj 6
    # + gate_up 22 + act 2 + down 11 = 57, x2 layers = 114; once: embedding 1.5 + final norm 2 = 3.5;
    # per sequence at 2: lm_head 101 + sampler 11 = 112; attention: slice (0, 2) at kv 24: 5 + 0.5 x 4 = 7, x2 = 14
    assert us(m.decode_time_s([16, 32])) == pytest.approx(114 + 3.5 + 112 + 14, rel=1e-12)


def test_mixed_step_by_hand(tmp_path):
    folder, cfg = write_bundle(tmp_path)
    m = wb.StepTimeModel.from_kernel_profiles(folder, model_config=cfg)
    # a 2-token prefill piece and one decode at 16: 3 tokens (dense two thirds from 1 to 4: per layer
    # 4 + 12 + 1 + 7 + 24 + 3 + 12 = 63, x2 = 126; once 2 + 2 = 4), 2 sequences (112), attention pc 2 of 16
    # (t = 0.125) between slices (0, 1) and (16, 1) at kv 16: 4 + 0.125 x (10 - 4) = 4.75, x2 = 9.5
    assert us(m.step_time_s([2], [0], [16])) == pytest.approx(126 + 4 + 112 + 9.5, rel=1e-12)
    # a lone 8-token prefill: the (0, 0) slice is missing, so LLMServingSim takes the closest profiled pair,
    # (0, 1) (its kv clamped to its first value, 4); halfway to (16, 0) = 7: 5.5 per layer
    dense_8 = sum(v + 7 / 3 * (w - v) for v, w in (DENSE[n] for n in ("layernorm", "layernorm", "qkv_proj",
                                                                        "rotary_emb", "o_proj", "gate_up_proj",
                                                                        "act_fn", "down_proj")))
    once_8 = sum(v + 7 / 3 * (w - v) for v, w in (DENSE["embedding"], DENSE["final_layernorm"]))
    assert us(m.prefill_time_s([8])) == pytest.approx(2 * dense_8 + once_8 + 110 + 2 * 5.5, rel=1e-12)


def test_skew_correction_by_hand(tmp_path):
    folder, cfg = write_bundle(tmp_path, skew=True)
    m = wb.StepTimeModel.from_kernel_profiles(folder, model_config=cfg)
    # decodes 16 and 32: n 2 (n<=2), rate (24 - 16) / (32 - 16) = 0.5 (sr<=50%), longest 32 (kvB<=1k), kp 0:
    # alpha 0.5; t_max (kv 32) 9 vs t_mean 7 per layer: + 0.5 x 2 x 2 layers = 2
    assert us(m.decode_time_s([16, 32])) == pytest.approx(243.5 + 2, rel=1e-12)
    # equal contexts: no correction
    assert us(m.decode_time_s([24, 24])) == pytest.approx(243.5, rel=1e-12)
    # a mixed step whose prefill chunk (2) is not a profiled pc: alpha_default 0.1. 4 tokens: per layer
    # 4 + 13 + 1 + 8 + 26 + 4 + 13 = 69 (x2 = 138), once 2.5 + 2; 3 sequences: 102 + 12; attention at pc 2:
    # (0, 2, 24) = 7 and (16, 2, 24) = 13 -> 7.75, x2 = 15.5; at kv 32: 9 and 15 -> 9.75, x2 = 19.5: + 0.1 x 4
    assert us(m.step_time_s([2], [0], [16, 32])) == pytest.approx(138 + 4.5 + 114 + 15.5 + 0.4, rel=1e-12)


def test_skew_only_when_meta_enables_it(tmp_path):
    folder, cfg = write_bundle(tmp_path, skew=True)
    meta = (folder / "meta.yaml").read_text().replace("enabled: true", "enabled: false")
    (folder / "meta.yaml").write_text(meta)   # as the RTX 4090 bundle ships: a skew_fit.csv, disabled in meta
    m = wb.StepTimeModel.from_kernel_profiles(folder, model_config=cfg)
    assert m.table.skew is None
    assert us(m.decode_time_s([16, 32])) == pytest.approx(243.5, rel=1e-12)


def test_moe_by_active_experts(tmp_path):
    rows = [(1, 2, 30.0), (4, 2, 33.0), (1, 8, 50.0), (4, 8, 62.0)]
    folder, cfg = write_bundle(tmp_path, model_type="qwen3_moe", moe_rows=rows, experts=8, top_k=2)
    m = wb.StepTimeModel.from_kernel_profiles(folder, model_config=cfg)
    # 2 decodes: 2 tokens route 4 expert slots over 8 experts: 4 active; rows 2 and 8 at 2 tokens are
    # 31 and 54; a third of the way from 2 to 8 experts: 38.667 per layer.  qwen3_moe per layer: layernorm x2 4,
    # qkv 11, qk_norm 3, rotary 1, o_proj 6 (= 25), no dense MLP; once 1.5 + 2; per sequence 112; attention 14
    moe = 31 + (54 - 31) / 3
    assert us(m.decode_time_s([16, 32])) == pytest.approx(2 * (25 + moe) + 3.5 + 112 + 14, rel=1e-12)


def test_tensor_parallel_all_reduces(tmp_path):
    folder, cfg = write_bundle(tmp_path, tps=(1, 2))
    one = wb.StepTimeModel.from_kernel_profiles(folder, model_config=cfg, tp=1)
    two = wb.StepTimeModel.from_kernel_profiles(folder, model_config=cfg, tp=2, link_bw_gbs=10.0,
                                                link_latency_s=1e-6)
    # (same CSVs in tp2) 2 tokens x hidden 8 x 2 bytes = 32 bytes per all-reduce, ring over 2 ranks:
    # 2 (2 - 1) (1e-6 + 32 / (2 x 10e9)) s; after o_proj and down_proj in each of 2 layers: 4 of them
    extra = 4 * 2 * (1e-6 + 32 / (2 * 10e9))
    assert two.decode_time_s([16, 32]) - one.decode_time_s([16, 32]) == pytest.approx(extra, rel=1e-9)
    with pytest.raises(ValueError, match="link_bw_gbs"):
        wb.StepTimeModel.from_kernel_profiles(folder, model_config=cfg, tp=2)


def test_matches_llmservingsim_on_a_real_decode():
    # LLMServingSim's own prediction of the RTX PRO 6000 run: request 0 (prompt 2,358) decoding alone, its
    # first inter-token latency 11,506,465 ns (bench/examples/RTXPRO6000/Llama-3.1-8B/outputs/sim.csv at
    # 5daddb21, the ITL column; LLMServingSim rounds every layer to whole nanoseconds)
    m = wb.StepTimeModel.from_kernel_profiles(PRO6000_LLAMA)
    assert m.decode_time_s([2358]) == pytest.approx(11_506_465e-9, rel=2e-6)


def test_real_bundle_grows_with_work():
    m = wb.StepTimeModel.from_kernel_profiles(PRO6000_LLAMA)
    # measured kernels are noisy at small sizes; across doublings a step grows
    decodes = [m.decode_time_s([kv] * 64) for kv in (256, 512, 1024, 2048, 4096, 8192, 16384)]
    assert np.all(np.diff(decodes) > 0)
    prefills = [m.prefill_time_s([n]) for n in (64, 128, 256, 512, 1024, 2048)]
    assert np.all(np.diff(prefills) > 0)
    assert m.kind == "kernel-profile" and "kernel-profile" in m.name


# ---------------------------------------------------------------- bad input
def test_missing_file_is_named(tmp_path):
    folder, cfg = write_bundle(tmp_path)
    (folder / "tp1" / "attention.csv").unlink()
    with pytest.raises(FileNotFoundError, match="attention.csv is missing"):
        wb.StepTimeModel.from_kernel_profiles(folder, model_config=cfg)


def test_missing_meta_and_tp_folder(tmp_path):
    folder, cfg = write_bundle(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no tp4 folder \(profiled: tp1\)"):
        wb.StepTimeModel.from_kernel_profiles(folder, model_config=cfg, tp=4)
    (folder / "meta.yaml").unlink()
    with pytest.raises(FileNotFoundError, match="no meta.yaml"):
        wb.StepTimeModel.from_kernel_profiles(folder, model_config=cfg)


def test_missing_layer_column_and_bad_time(tmp_path):
    folder, cfg = write_bundle(tmp_path)
    dense = folder / "tp1" / "dense.csv"
    good = dense.read_text()
    dense.write_text("\n".join(line for line in good.splitlines() if not line.startswith("rotary_emb")) + "\n")
    with pytest.raises(ValueError, match="no rows for layer 'rotary_emb'"):
        wb.StepTimeModel.from_kernel_profiles(folder, model_config=cfg)
    dense.write_text(good.replace("time_us", "time_ms"))
    with pytest.raises(ValueError, match="missing column"):
        wb.StepTimeModel.from_kernel_profiles(folder, model_config=cfg)
    dense.write_text(good.replace("qkv_proj,4,13.0", "qkv_proj,4,-13.0"))
    with pytest.raises(ValueError, match="negative"):
        wb.StepTimeModel.from_kernel_profiles(folder, model_config=cfg)


def test_model_config_missing_field(tmp_path):
    folder, cfg = write_bundle(tmp_path)
    config = json.loads(cfg.read_text())
    del config["num_hidden_layers"]
    cfg.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="num_hidden_layers"):
        wb.StepTimeModel.from_kernel_profiles(folder, model_config=cfg)


def test_run_outside_the_grid_is_refused_with_how_far(tmp_path):
    folder, cfg = write_bundle(tmp_path)
    m = wb.StepTimeModel.from_kernel_profiles(folder, model_config=cfg)
    trace = wb.Trace.from_arrays([0.0, 0.001], [10, 12], [30, 40])
    config = wb.SimConfig(scheduler="continuous_fcfs", chunked_prefill=True, max_num_batched_tokens=16,
                          max_num_seqs=2, kv_blocks=100, ttft_sla_s=100, tpot_sla_s=100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=r"decode context \(tokens\) up to 51, the grid ends at 32 \(\+59%\)"):
            wb.simulate(trace, config, latency=m)
        ok = wb.StepTimeModel.from_kernel_profiles(folder, model_config=cfg, allow_extrapolation=True)
        res = wb.simulate(trace, config, latency=ok)
    assert np.isfinite(res.continuous["e2e_s"]).all()


def test_calibration_refuses_a_table():
    m = wb.StepTimeModel.from_kernel_profiles(PRO6000_LLAMA)
    with pytest.raises(ValueError, match="calibration refits linear coefficients"):
        wb.calibrate(m, [])


def test_the_disaggregated_engine_prices_steps_from_the_kernel_profiles():
    # (issue 22: it refused tables; tests/test_disagg_tables.py tests it on a table written by hand)
    m = wb.StepTimeModel.from_kernel_profiles(PRO6000_LLAMA)
    assert m.table.skew is not None
    trace = wb.Trace.from_arrays([0.0, 0.0, 0.5], [100, 900, 200], [10, 4, 20])
    cfg = wb.SimConfig(scheduler="disaggregated", kv_gb_per_token=1.3e-4, model_mem_gb=16.0, gpu_mem_gb=96.0,
                       ttft_sla_s=1.0, tpot_sla_s=0.1)
    req = wb.simulate(trace, cfg, latency=m).requests
    # the first two share a prefill step of two pieces, then a decode lane whose contexts differ (skew-corrected)
    first = m.step_time_s([100, 900]) + m.token_overhead_s
    np.testing.assert_allclose(req.ttft_s[:2], [first, first], rtol=1e-9)
    moved = first - m.token_overhead_s + cfg.kv_transfer_s(100) + cfg.kv_transfer_s(900)
    steps = sum(m.step_time_s(context_lengths=[101 + i, 901 + i]) for i in range(3))   # together until 900 ends
    assert m.step_time_s(context_lengths=[101, 901]) > m.step_time_s(context_lengths=[501, 501])
    assert req.e2e_s[1] == pytest.approx(moved + steps + m.token_overhead_s * 4, rel=1e-9)


# ---------------------------------------------------------------- vLLM 0.19's full-sequence admission gate
def test_reserve_full_isl_by_hand():
    # 6 blocks of 16 tokens, 32 tokens per step. R1 (prompt 32, 33 outputs) is prefilled in step 1; in step 2
    # it decodes (3 blocks) and R2 (prompt 64) could start a 31-token chunk (2 of the 3 free blocks). Without
    # the gate it does, and in step 3 its next chunk needs 2 more blocks with 1 free: it preempts itself.
    # With the gate its whole prompt (4 blocks) must be free, so it waits for R1 to finish (R1 holds 4 blocks
    # at its end, leaving 2) and is never preempted.
    trace = wb.Trace.from_arrays([0.0, 0.0], [32, 64], [33, 1])
    step = wb.StepTimeModel(prefill=(0.01, 1e-5, 0.0), decode=(0.01, 0.0, 0.0))
    results = {}
    for gate in (False, True):
        cfg = wb.SimConfig(scheduler="continuous_fcfs", chunked_prefill=True, max_num_batched_tokens=32,
                           max_num_seqs=2, kv_blocks=6, block_size=16, reserve_full_isl=gate)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            results[gate] = wb.simulate(trace, cfg, latency=step)
    assert results[False].continuous["preemptions"][1] >= 1
    assert results[True].continuous["preemptions"].sum() == 0
    r1_end = results[True].continuous["last_step_end_s"][0]
    assert results[True].start_s[1] >= r1_end - 1e-12
    with pytest.raises(ValueError, match="reserve_full_isl: applies to chunked prefill"):
        wb.SimConfig(scheduler="continuous_fcfs", reserve_full_isl=True)


# ---------------------------------------------------------------- the replays (issue 22's targets)
def test_reader_agrees_with_llmservingsims_own_summary():
    from workbench.study.fidelity.kernel_runs import read_llmservingsim_output, read_vllm_requests

    # LLMServingSim's validation/summary.txt of the RTX 4090 run: Latency Mean vLLM 86578.3 ms, Sim 86980.1 ms;
    # TTFT Mean 65456.6 / 65820.2 ms
    run = DATA / "runs" / "RTX4090" / "Llama-3.1-8B"
    measured = read_vllm_requests(run / "vllm" / "requests.jsonl")
    theirs = read_llmservingsim_output(run / "outputs" / "sim.csv")
    assert measured["e2e_s"].mean() == pytest.approx(86.5783, abs=5e-5)
    assert measured["ttft_s"].mean() == pytest.approx(65.4566, abs=5e-5)
    assert theirs["e2e_s"].mean() == pytest.approx(86.9801, abs=5e-5)
    assert len(measured) == len(theirs) == 300


def test_replay_of_the_shipped_runs_within_five_percent():
    from workbench.study.fidelity.kernel_runs import SHIPPED_RUNS, fidelity_table

    table = fidelity_table(SHIPPED_RUNS)
    e2e = table[(table.metric == "e2e_s") & (table.statistic == "mean")].set_index("run")
    assert set(e2e.index) == {"RTX4090/Llama-3.1-8B", "RTXPRO6000/Llama-3.1-8B"}
    # the target: mean E2E within 5% of measured on each, with nothing tuned to the runs
    assert (e2e["workbench_error"].abs() < 0.05).all(), e2e[["measured", "workbench", "workbench_error"]]
    assert (table["workbench_model"] == "kernel-profile").all()
    tpot = table[(table.metric == "tpot_s") & (table.statistic == "mean")]
    assert (tpot["workbench_error"].abs() < 0.05).all()


def test_unshipped_runs_are_predicted_plausibly():
    from workbench.study.fidelity.kernel_runs import measured_run_names, prediction_table, run_setup

    table = prediction_table()
    means = table[table.statistic == "mean"].pivot(index="run", columns="metric", values="workbench")
    assert len(means) == 2 and np.isfinite(means.to_numpy()).all()
    # a 32B dense model on two GPUs decodes slower than a 3B-active MoE model on one
    assert means.loc["RTXPRO6000/Qwen3-32B", "tpot_s"] > means.loc["RTXPRO6000/Qwen3-30B-A3B-Instruct-2507",
                                                                    "tpot_s"]
    assert ((means["tpot_s"] > 0.005) & (means["tpot_s"] < 1.0)).all()
    name = "RTXPRO6000/Qwen3-30B-A3B-Instruct-2507"
    setup = run_setup(name)
    assert setup.config.num_gpus == 2 and "ep2" in setup.step.name and (setup.tp, setup.ep) == (1, 2)
    # predicted from its config until its measurements are added to a campaign folder
    assert (setup.measured is None) == (name not in measured_run_names())


def _add_measured_run(root, run="RTXPRO6000/Qwen3-32B"):
    """A campaign folder holding measurements of ``run`` in LLMServingSim's layout: its config.json, a
    meta.json with engine settings of its own, and requests.jsonl of 40 requests with round-numbered times
    (TTFT 1 s, 0.05 s per further token), as the held-back runs' measurements would be added."""
    import pandas as pd

    folder = root / "runs" / run
    (folder / "vllm").mkdir(parents=True)
    shutil.copy(DATA / "configs_of_unshipped_runs" / run / "config.json", folder / "config.json")
    (folder / "vllm" / "meta.json").write_text(json.dumps({
        "engine_kwargs": {"tensor_parallel_size": 2, "max_num_seqs": 64, "max_num_batched_tokens": 1024},
        "kv_cache": {"num_gpu_blocks": 5000, "block_size": 16, "enable_prefix_caching": True}}))
    work = pd.read_csv(DATA / "workloads" / "sharegpt-qwen3-300-sps10.csv").head(40)
    lines = []
    for row in work.itertuples():
        queued = 100.0 + row.arrival_time_ns * 1e-9
        first = queued + 1.0
        lines.append(json.dumps({"input_toks": int(row.input_toks), "output_toks": int(row.output_toks),
                                 "queued_ts": queued, "first_token_ts": first,
                                 "last_token_ts": first + 0.05 * (int(row.output_toks) - 1)}))
    (folder / "vllm" / "requests.jsonl").write_text("\n".join(lines) + "\n")
    return work


def test_added_measurements_are_found_and_replayed_from_their_own_files(tmp_path):
    from workbench.study.fidelity import kernel_runs as kr

    work = _add_measured_run(tmp_path)
    run = "RTXPRO6000/Qwen3-32B"
    assert run in kr.measured_run_names(tmp_path) and run not in kr.predicted_run_names(tmp_path)
    assert set(kr.SHIPPED_RUNS) <= set(kr.measured_run_names(tmp_path))   # the project's runs are still there
    setup = kr.run_setup(run, tmp_path)
    # the engine settings and KV cache are the run's own (meta.json), not the campaign README's
    assert setup.config.max_num_seqs == 64 and setup.config.max_num_batched_tokens == 1024
    assert setup.config.kv_blocks == 4999 and setup.tp == 2 and "tp2" in setup.step.name
    assert setup.measured is not None and setup.llmservingsim is None and len(setup.trace) == 40
    table = kr.fidelity_table([run], tmp_path)
    e2e = table[(table.metric == "e2e_s") & (table.statistic == "mean")].iloc[0]
    # measured E2E by hand: 1 s + 0.05 s per token after the first
    assert e2e["measured"] == pytest.approx(1.0 + 0.05 * (work.output_toks - 1).mean())
    assert np.isnan(e2e["llmservingsim"]) and np.isfinite(e2e["workbench"])


def test_campaign_folders_from_the_environment(tmp_path, monkeypatch):
    from workbench.study.fidelity import kernel_runs as kr
    from workbench.study.fidelity import roofline_runs

    _add_measured_run(tmp_path)
    monkeypatch.setenv(kr.DIRS_ENV, str(tmp_path))
    roofline_runs._load.cache_clear()
    try:
        assert "RTXPRO6000/Qwen3-32B" in kr.measured_run_names()
        (item,) = roofline_runs.measured_runs(("llmservingsim",), llmservingsim_runs=["RTXPRO6000/Qwen3-32B"])
        # scored with the roofline of its own model, GPU and TP
        assert item.campaign.endswith("Qwen3-32B") and item.latency.name.startswith("qwen3-32b@rtx-pro-6000/tp2")
        assert item.latency.kind == "roofline"
    finally:
        roofline_runs._load.cache_clear()


def test_unknown_runs_and_folders_are_named(tmp_path):
    from workbench.study.fidelity import kernel_runs as kr

    with pytest.raises(ValueError, match="RTX4090/Llama-3.1-8B"):
        kr.run_setup("RTX4090/Llama-3.1-8")
    with pytest.raises(FileNotFoundError, match="no such LLMServingSim campaign folder"):
        kr.measured_run_names(tmp_path / "nowhere")
