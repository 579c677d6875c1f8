import numpy as np
import pytest

from workbench import SimConfig, predict_output_tokens
from workbench.sim.memory import SEED_MEMORY


def test_oracle_is_truth_and_predictors_are_seeded():
    prompt = np.arange(1, 1001)
    out = np.arange(1000, 0, -1)
    assert np.array_equal(predict_output_tokens("oracle", prompt, out), out)
    for name in ("noisy", "prompt_power_law"):
        a = predict_output_tokens(name, prompt, out, seed=3)
        assert np.array_equal(a, predict_output_tokens(name, prompt, out, seed=3))
        assert not np.array_equal(a, predict_output_tokens(name, prompt, out, seed=4))
        assert a.dtype == np.int32 and a.min() >= 1


def test_prompt_power_law_matches_seed_formula_and_clip():
    prompt = np.array([1, 100, 10_000, 1_000_000])
    pred = predict_output_tokens("prompt_power_law", prompt, prompt, seed=0)
    median = 1.5 * prompt ** 0.7
    assert pred[-1] == 4096  # clipped
    assert np.all(np.abs(np.log(pred[1:3] / median[1:3])) < 0.5)


def test_noisy_sigma_zero_is_oracle():
    out = np.arange(1, 100)
    assert np.array_equal(predict_output_tokens("noisy", out, out, sigma=0.0), out)


def test_unknown_predictor():
    with pytest.raises(ValueError, match="unknown predictor"):
        predict_output_tokens("magic", [1], [1])


@pytest.mark.parametrize("field,value,message", [
    ("num_gpus", 0, "num_gpus: must be an integer >= 1"),
    ("k_bins", 0, "k_bins: must be an integer >= 1"),
    ("d_sla_s", -1.0, "d_sla_s: must be > 0"),
    ("d_sla_s", float("nan"), "d_sla_s: must be a finite number"),
    ("scheduler", "lifo", "scheduler: unknown 'lifo'; allowed: dynamic_no_bins"),
    ("predictor", "magic", "predictor: unknown 'magic'"),
    ("bin_policy", "random", "bin_policy: unknown 'random'"),
    ("batch_size", 2.5, "batch_size: must be an integer"),
    ("kv_gb_per_token", 0.0, "kv_gb_per_token: must be > 0"),
    ("spread_idle", "yes", "spread_idle: must be True or False"),
])
def test_config_errors_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=message.replace("(", "\\(")):
        SimConfig(**{field: value})


def test_config_cross_field_errors():
    with pytest.raises(ValueError, match="b_min <= b_max"):
        SimConfig(b_min=8, b_max=4)
    with pytest.raises(ValueError, match="no memory left for the KV cache"):
        SimConfig(gpu_mem_gb=2.0, model_mem_gb=2.0)


def test_config_defaults_and_capacity():
    cfg = SimConfig()
    # the suite's hardware (issue 20): OPT-13B on one A100-80GB, vLLM's 4046 blocks of 16 tokens
    assert cfg.kv_capacity_tokens == 64_742 and cfg.kv_blocks_effective == 4046
    # the seed grid's: Qwen3-1.7B on 16 GB at 0.9: (14.4 - 3.44 weights - 1 margin) GB / 114,688 bytes per token
    from workbench.sim.memory import GRID_MEMORY
    assert SimConfig(**GRID_MEMORY).kv_capacity_tokens == 86_844
    assert SimConfig(**SEED_MEMORY).kv_capacity_tokens == 1_800_000  # the seed's (12 - 2 - 1) GB / 5e-6 GB
    assert cfg.replace(num_gpus=np.int64(4)).num_gpus == 4
    assert type(cfg.replace(num_gpus=np.int64(4)).num_gpus) is int
    assert "num_gpus" in SimConfig.help()


def test_help_says_what_b_max_really_allows():
    text = SimConfig.help()
    line = next(x for x in text.splitlines() if x.startswith("b_max"))
    assert "b_max - ceil(ctrl_alpha / 2)" in line and "31 with the defaults" in line
    # and that is what the engine does: under a budget no batch reaches, the limit settles at 32 - 1 = 31
    import workbench as wb
    n = 3000
    trace = wb.Trace.from_arrays(np.zeros(n), np.zeros(n, int), np.full(n, 10))
    lat = wb.LatencyModel(base_s=0.01, per_token_s=1e-5, batch_penalty=0.0)
    limits = wb.simulate(trace, SimConfig(scheduler="dynamic_no_bins"), latency=lat).batches["size_limit"]
    assert limits.max() == 31 and limits.iloc[-2] == 31
