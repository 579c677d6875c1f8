"""The roofline's constants are what the fit gives (re-run here), and what they give on the measured data: the
issue's targets, with the figures benchmarks/roofline_targets.py prints."""

import dataclasses

import numpy as np
import pytest

from workbench.study.fidelity import roofline_fit as fit, roofline_runs as validation
from workbench.hardware.roofline import ENGINE_EFFICIENCIES, ENGINES

SERVING = ("serving_step_s", "serving_sequence_s", "serving_context_s")


def _same(fitted, stated, names):
    for name in names:
        assert getattr(fitted, name) == pytest.approx(getattr(stated, name), rel=0.05, abs=1e-9), name


def test_every_engine_has_stated_constants():
    assert set(ENGINE_EFFICIENCIES) == set(ENGINES) == set(fit.ENGINE_CAMPAIGNS)
    shared = {name: {getattr(e, name) for e in ENGINE_EFFICIENCIES.values()} for name in fit.SHARED}
    assert all(len(values) == 1 for values in shared.values()), "the GPU efficiencies are shared by every engine"


def test_the_stated_constants_are_what_the_step_data_fit_gives():
    fitted = fit.fit_isolated()
    for engine, stated in ENGINE_EFFICIENCIES.items():
        own = [f.name for f in dataclasses.fields(stated) if f.name not in SERVING]
        _same(fitted[engine], stated, own)


@pytest.mark.slow
def test_the_stated_serving_overheads_are_what_the_runs_fit_gives():
    for engine, stated in ENGINE_EFFICIENCIES.items():
        _same(fit.fit_serving_overheads(engine, stated), stated, SERVING)


def test_serving_overheads_are_fitted_only_to_runs_that_kept_up():
    # every shipped vLLM 0.19 run was overloaded (its TTFT grew 4x over the run): vLLM V1's runs are predictions
    assert fit.serving_runs("vllm-v1") == []
    assert all(getattr(ENGINE_EFFICIENCIES["vllm-v1"], name) == 0 for name in SERVING)
    assert "distserve-c21d12-1200-12" not in fit.serving_runs("distserve")
    assert "vllm-350-3.5" not in fit.serving_runs("vllm-v0.2")


def test_the_fit_groups_cover_the_shipped_data():
    names = [g.name for g in fit.fit_groups()]
    assert any("kernels RTX4090" in n for n in names) and any("kernels RTXPRO6000" in n for n in names)
    assert sum("DistServe profile" in n for n in names) == 13
    assert sum(n.startswith("BLIS") for n in names) >= 10
    # quantised BLIS entries and physically impossible ones are left out: a one-request decode step of 48 us for
    # Llama-3.1-8B on four H100s (reading its 4 GB per GPU takes 1.2 ms at peak), and Llama-3.3-70B on eight H100s
    # at 10 us per prompt token (its 17.6 GFLOP per GPU take 18 us at peak)
    assert not any("fp8" in n or "w4a16" in n for n in names)
    assert "BLIS meta-llama/llama-3.1-8b-instruct H100 tp4" not in names
    assert "BLIS meta-llama/llama-3.3-70b-instruct H100 tp8" not in names
    assert "BLIS meta-llama/llama-3.3-70b-instruct H100 tp4" in names
    # the fit sees the steps the roofline is judged on, without decode steps the KV cache cannot hold
    opt66 = next(g for g in fit.fit_groups() if g.name.startswith("DistServe profile facebook/opt-66b A100-80GB tp2"))
    decode = opt66.stats.decode_sequences > 0
    assert opt66.stats.prefill_tokens.max() == 16384 and 0 < decode.sum() < 63


def test_kernel_groups_are_close():
    errors = fit.group_errors()
    kernels = errors[errors.group.str.startswith("kernels")]
    # every kernel kind of the RTX PRO 6000 within 20% at the median; the RTX 4090 beats its spec sheet (its
    # GEMMs reach 100% of 165 TFLOP/s at boost clocks), so its dense layers come out ~26% slow
    pro = kernels[kernels.gpu == "rtx-pro-6000"]
    assert (pro.median_abs_error < 0.20).all(), pro
    assert kernels.median_abs_error.median() < 0.12


def test_roofline_replays_every_measured_run_within_the_target():
    table = validation.replay_runs()
    e2e = table[table.metric == "e2e_s"]
    assert len(e2e) >= 11           # 3 vLLM v0.2 runs, 6 DistServe runs, 2 vLLM 0.19 runs (and any measured since)
    assert set(e2e.campaign.str.split(",").str[0]) == {"vLLM v0.2", "DistServe (disaggregated)",
                                                       "vLLM 0.19 (LLMServingSim)"}
    assert e2e.error.abs().median() <= validation.E2E_TARGET
    # the two vLLM 0.19 runs are pure predictions (nothing fitted to them): the RTX PRO 6000 within 10%, the RTX
    # 4090 (whose GEMMs beat the spec sheet) within 30%
    llmservingsim = e2e.set_index("run").error
    assert abs(llmservingsim["RTXPRO6000/Llama-3.1-8B"]) < 0.10
    assert abs(llmservingsim["RTX4090/Llama-3.1-8B"]) < 0.30


def test_step_times_against_the_measured_profiles():
    comparisons = validation.profile_comparisons()
    summary = validation.profile_summary(comparisons).set_index(["profile", "kind"])
    # DistServe's profiles time isolated steps of the two engines: every step of both, prefill and decode, within 20%
    for profile in ("opt-13b-a100", "opt-13b-a100-distserve"):
        for kind in ("prefill", "decode"):
            assert summary.loc[(profile, kind), "within_target"] == 1.0, (profile, kind)
    # BLIS's betas, fitted to serving latencies: what a roofline consistent with the other data reaches (the
    # reasons in workbench.study.fidelity.roofline_runs)
    reached = {("llama-3.1-8b-h100", "prefill"): 1.0, ("llama-3.1-8b-h100", "decode"): 0.40,
               ("qwen3-14b-h100", "prefill"): 0.78, ("qwen3-14b-h100", "decode"): 0.85,
               ("llama-3.3-70b-h100-tp4", "prefill"): 0.35}
    for key, share in reached.items():
        assert summary.loc[key, "within_target"] >= share - 1e-9, key
    # a step BLIS times below what the GPUs need at their peaks is out of any roofline's reach: Qwen3-14B's decode
    # of 64 requests at 4,096 tokens (BLIS has no context term: 15.3 ms, where reading the KV cache and the weights
    # takes 21.4 ms at peak bandwidth)
    below = comparisons[comparisons.below_floor.astype(bool)]
    assert set(below.profile) == {"qwen3-14b-h100"} and (below.error > validation.STEP_TARGET).all()
    assert (comparisons.error.abs() <= validation.STEP_TARGET).mean() >= 0.70
    assert comparisons.error.abs().median() < 0.09   # 8.2%


def test_comparison_steps_cover_the_issue_range():
    steps = validation.comparison_steps()
    assert set(steps.batch) == {1, 2, 4, 8, 16, 32, 64, 128, 256}
    assert steps.tokens.min() == 64 and steps.tokens.max() == 4096
    assert (steps[steps.kind == "prefill"].eval("batch * tokens") <= 16384).all()
    capped = validation.comparison_steps(max_kv_tokens=100_000)
    assert (capped[capped.kind == "decode"].eval("batch * tokens") <= 100_000).all()
    assert np.isin(["prefill", "decode"], steps.kind).all()
