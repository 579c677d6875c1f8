"""Roofline profile names ('<model>@<gpu>[/tp<N>][/ep<M>]') wherever a profile name is taken, their kind and memory."""

import pytest

import workbench as wb
from workbench.sim import profiles
from workbench.study.runs.experiments import StepParams


def test_roofline_names_resolve_with_their_kind():
    model = profiles.get_profile("llama-3.1-8b@h100-sxm/tp2")
    assert model.kind == "roofline" and model.name == "llama-3.1-8b@h100-sxm/tp2"
    assert profiles.profile_kind("llama-3.1-8b@h100") == "roofline"
    assert profiles.profile_kind("opt-13b-a100") == "measured"
    assert "[roofline" in profiles.describe_profile("qwen3-32b@rtx-pro-6000/tp2")
    assert "[measured]" in profiles.describe_profile("opt-13b-a100")
    # aliases and Hugging Face ids of the catalogues
    assert profiles.parse_roofline_name("meta-llama/Llama-3.1-8B@H100/tp4") == ("llama-3.1-8b", "h100-sxm", 4)
    # at another TP degree (a disaggregated pool), and in its linear form (what calibration refits)
    assert profiles.get_profile("opt-13b@a100-80gb", tp=2).name == "opt-13b@a100-80gb/tp2"
    assert profiles.get_profile("opt-13b@a100-80gb", tp=2, linear=True).kind == "linear"


def test_bad_roofline_names_list_the_closest():
    with pytest.raises(ValueError, match=r"gpu: unknown 'h100-sxn' \(closest: h100-sxm"):
        profiles.check_profile("llama-3.1-8b@h100-sxn")
    with pytest.raises(ValueError, match=r"model: unknown 'qwen3-33b' \(closest: qwen3-32b"):
        wb.simulate(wb.Trace.from_arrays([0.0], [10], [10]), wb.SimConfig(scheduler="continuous_fcfs"),
                    latency="qwen3-33b@h100")
    with pytest.raises(ValueError, match="'tpx' is not a tensor-parallel degree"):
        profiles.check_profile("llama-3.1-8b@h100/tpx")
    with pytest.raises(ValueError, match="or a roofline '<model>@<gpu>"):
        profiles.check_profile("llama-3.1-8b-h10")


def test_roofline_memory_is_vllms():
    from workbench.hardware.roofline import kv_blocks

    fields = profiles.profile_config_fields("llama-3.1-70b@h100-sxm/tp4")
    cfg = wb.SimConfig(scheduler="continuous_fcfs", **fields)
    # the SimConfig derives vLLM's blocks (16 tokens each) from the fields
    assert cfg.kv_blocks_effective == pytest.approx(kv_blocks("llama-3.1-70b", "h100-sxm", tp=4,
                                                               max_num_batched_tokens=16384), abs=1)
    with pytest.raises(ValueError, match="does not fit on h100-sxm at tp=1"):
        profiles.profile_config_fields("llama-3.1-70b@h100-sxm")


def test_expert_parallel_roofline_names():
    from workbench.hardware.roofline import kv_blocks

    assert profiles.roofline_name_parts("qwen3-30b-a3b@rtx-pro-6000/ep2") == ("qwen3-30b-a3b", "rtx-pro-6000", 1, 2)
    assert profiles.roofline_name_parts("qwen3-30b-a3b@h100/tp2/ep4") == ("qwen3-30b-a3b", "h100-sxm", 2, 4)
    assert profiles.parse_roofline_name("qwen3-30b-a3b@h100/ep4/tp2") == ("qwen3-30b-a3b", "h100-sxm", 2)
    model = profiles.get_profile("qwen3-30b-a3b@rtx-pro-6000/ep2")
    assert model.name.endswith("/ep2") and "data-parallel group of 2" in profiles.describe_profile(
        "qwen3-30b-a3b@rtx-pro-6000/ep2")
    # each GPU holds half the experts: more KV cache than one GPU holding all of them, as vLLM would size it
    fields = profiles.profile_config_fields("qwen3-30b-a3b@rtx-pro-6000/ep2")
    cfg = wb.SimConfig(scheduler="continuous_fcfs", num_gpus=2, **fields)
    assert cfg.kv_blocks_effective == pytest.approx(kv_blocks("qwen3-30b-a3b", "rtx-pro-6000", ep=2,
                                                               max_num_batched_tokens=16384), abs=1)
    assert cfg.kv_blocks_effective > kv_blocks("qwen3-30b-a3b", "rtx-pro-6000", max_num_batched_tokens=16384)
    with pytest.raises(ValueError, match="'epx' is not an expert-parallel degree"):
        profiles.check_profile("qwen3-30b-a3b@h100/epx")
    with pytest.raises(ValueError, match="no experts"):
        profiles.get_profile("llama-3.1-8b@h100/ep2")


def test_a_roofline_runs_in_the_engines_and_the_step_notebooks():
    trace = wb.Trace.from_arrays([0.0, 0.1, 0.2, 0.3], [100, 2000, 50, 800], [20, 5, 40, 10])
    for name in ("llama-3.1-8b@l40s", "qwen3-30b-a3b@rtx-pro-6000"):
        cfg = wb.SimConfig(scheduler="continuous_fcfs", **profiles.profile_config_fields(name))
        res = wb.simulate(trace, cfg, latency=name)
        assert res.requests.e2e_s.notna().all()
    disagg = wb.SimConfig(scheduler="disaggregated", prefill_tp=2, decode_tp=1, model="opt-13b", gpu_mem_gb=80)
    assert wb.simulate(trace, disagg, latency="opt-13b@a100-80gb").requests.e2e_s.notna().all()
    params = StepParams(latency="llama-3.1-8b@h100-sxm", max_requests=100, max_gpus=2)
    assert "roofline" in params.latency_text()
    assert params.base_config().model == "llama-3.1-8b"
