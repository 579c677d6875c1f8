"""The model and GPU catalogues: config.json facts, parameter counts against the published ones, spec sheets,
closest-name errors, a user's own config.json."""

import json

import pytest

import workbench as wb
from workbench.hardware import catalog
from workbench.hardware.catalog import GPU, ModelArch, UnknownName, get_gpu, get_model_arch, gpu_names, model_names

REQUIRED_MODELS = ("opt-13b", "opt-66b", "llama-2-7b", "llama-2-70b", "codellama-34b", "llama-3.1-8b",
                   "llama-3.1-70b", "qwen3-32b", "qwen3-30b-a3b", "mixtral-8x7b")
REQUIRED_GPUS = ("a10g", "l4", "l40s", "a100-40gb", "a100-80gb", "h100-sxm", "h100-pcie", "h200", "b200",
                 "rtx-4090", "rtx-pro-6000", "mi300x")


def test_catalogues_hold_the_required_entries():
    assert set(REQUIRED_MODELS) <= set(model_names())
    assert set(REQUIRED_GPUS) <= set(gpu_names())


@pytest.mark.parametrize("name, published_billion, tolerance", [
    # the model cards' parameter counts (norms and biases are left out: < 0.1%)
    ("opt-13b", 12.85, 0.005),            # DistServe's README: ~12.85e9
    ("llama-2-7b", 6.74, 0.005),          # Llama 2 paper: 6.74B (7B)
    ("llama-2-70b", 68.98, 0.005),        # 68.98B
    ("llama-3.1-8b", 8.03, 0.005),        # model card: 8.03B
    ("llama-3.1-70b", 70.55, 0.005),      # model card: 70.6B
    ("qwen3-32b", 32.8, 0.01),            # model card: 32.8B
    ("qwen3-30b-a3b", 30.5, 0.01),        # model card: 30.5B in total
    ("mixtral-8x7b", 46.7, 0.01),         # Mixtral paper: 46.7B in total
])
def test_parameter_counts_match_the_published_ones(name, published_billion, tolerance):
    assert get_model_arch(name).params / 1e9 == pytest.approx(published_billion, rel=tolerance)


def test_active_parameters_of_the_mixtures_of_experts():
    # Qwen3-30B-A3B: 3.3B activated (model card); Mixtral: 12.9B active per token (paper: 13B)
    assert get_model_arch("qwen3-30b-a3b").active_params_per_token / 1e9 == pytest.approx(3.3, rel=0.03)
    assert get_model_arch("mixtral-8x7b").active_params_per_token / 1e9 == pytest.approx(12.9, rel=0.02)


def test_kv_bytes_per_token_by_hand():
    # OPT-13B: 2 x 40 layers x 40 heads x 128 x 2 bytes = 819,200 (DistServe's setup.json)
    assert get_model_arch("opt-13b").kv_bytes_per_token() == 819_200
    # Llama-3.1-8B: 2 x 32 x 8 x 128 x 2 = 131,072; at TP 2 each GPU holds 4 of the 8 KV heads
    arch = get_model_arch("llama-3.1-8b")
    assert arch.kv_bytes_per_token() == 131_072
    assert arch.kv_bytes_per_token(tp=2) == 65_536
    # at TP 16 a GPU still holds one whole KV head (vLLM replicates them): 2 x 32 x 1 x 128 x 2
    assert arch.kv_bytes_per_token(tp=16) == 16_384


def test_names_aliases_and_hugging_face_ids():
    assert get_model_arch("meta-llama/Llama-3.1-8B") is get_model_arch("llama-3.1-8b")
    assert get_model_arch("Llama-3.3-70B-Instruct") is get_model_arch("llama-3.1-70b")
    assert get_gpu("H100").key == "h100-sxm"
    assert get_gpu("A100-80").key == "a100-80gb"


def test_unknown_names_list_the_closest():
    with pytest.raises(UnknownName, match=r"unknown 'h100-sxn' \(closest: h100-sxm"):
        get_gpu("h100-sxn")
    with pytest.raises(UnknownName, match=r"closest: .*llama-3.1-8b"):
        get_model_arch("llama-3.1-8")
    with pytest.raises(ValueError, match="did you mean 'llama-3.1-8b'"):
        wb.SimConfig(model="lama-3.1-8b")


def test_every_gpu_number_has_a_source():
    for name in gpu_names():
        gpu = get_gpu(name)
        for field in ("dense_tflops", "memory_gb", "memory_bandwidth_gbps", "interconnect_gbps", "price_per_hour"):
            assert gpu.sources.get(field), f"{name}: no source for {field}"
        if gpu.device_memory_bytes:
            assert gpu.sources.get("device_memory_bytes"), name
            # a reported total is below the marketed GiB and above the marketed GB x 0.9
            assert 0.9 * gpu.memory_gb * 1e9 < gpu.total_memory_bytes <= gpu.memory_gb * 2 ** 30 * 1.001, name


def test_every_model_entry_cites_its_source():
    for name in model_names():
        assert get_model_arch(name).source, name


def test_price_override():
    gpu = get_gpu("h100-sxm", price_per_hour=2.0)
    assert gpu.price_per_hour == 2.0 and gpu.sources["price_per_hour"] == "given by the user"
    assert get_gpu("h100-sxm").price_per_hour != 2.0
    with pytest.raises(ValueError, match="price_per_hour"):
        get_gpu("h100-sxm", price_per_hour=-1)


def test_a_users_config_json_loads_by_path(tmp_path):
    config = json.loads((catalog.LLMSERVINGSIM_CONFIGS / "meta-llama/Llama-3.1-8B.json").read_text())
    folder = tmp_path / "my-llama"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    arch = get_model_arch(str(folder / "config.json"))
    assert arch.params == get_model_arch("llama-3.1-8b").params
    assert get_model_arch(folder).params == arch.params        # the folder holding it works too
    assert arch.name == "my-llama"


@pytest.mark.parametrize("field", ["num_hidden_layers", "hidden_size", "num_attention_heads", "vocab_size",
                                   "intermediate_size"])
def test_a_config_json_missing_a_needed_field_names_it(tmp_path, field):
    config = json.loads((catalog.LLMSERVINGSIM_CONFIGS / "meta-llama/Llama-3.1-8B.json").read_text())
    del config[field]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=f"no '{field}'"):
        get_model_arch(path)


def test_moe_config_missing_its_experts_names_the_field():
    config = json.loads((catalog.LLMSERVINGSIM_CONFIGS / "Qwen/Qwen3-30B-A3B-Instruct-2507.json").read_text())
    del config["moe_intermediate_size"]
    with pytest.raises(ValueError, match="no 'moe_intermediate_size'"):
        ModelArch.from_config(config, name="qwen-moe")
    config = json.loads((catalog.LLMSERVINGSIM_CONFIGS / "mistralai/Mixtral-8x7B-v0.1.json").read_text())
    del config["num_local_experts"]
    with pytest.raises(ValueError, match="no 'num_local_experts'"):
        ModelArch.from_config(config, name="mixtral")


def test_unsupported_architecture_is_refused_with_the_supported_ones():
    with pytest.raises(ValueError, match="model_type 'gpt2' is not read.*llama"):
        ModelArch.from_config({"model_type": "gpt2", "n_layer": 12}, name="gpt2")


def test_catalogued_model_is_a_memory_preset():
    cfg = wb.SimConfig(scheduler="continuous_fcfs", model="llama-3.1-8b", gpu_mem_gb=80)
    assert cfg.model_spec.kv_bytes_per_token == 131_072
    assert cfg.weights_gb == pytest.approx(16.06, rel=1e-3)
    # the hand-written presets are unchanged
    assert wb.SimConfig(model="opt-13b", gpu_mem_gb=80).weights_gb == 25.7


def test_gpu_validates_its_numbers():
    with pytest.raises(ValueError, match="dense_tflops"):
        GPU(key="x", name="x", dense_tflops=0, memory_gb=1, memory_bandwidth_gbps=1, interconnect="pcie",
            interconnect_gbps=1, price_per_hour=1)
