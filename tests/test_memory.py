"""Model memory presets, the KV capacity formula, and Algorithm 1's b_mem (issue 9, item 2)."""

import numpy as np
import pytest

import workbench as wb
from workbench.sim.memory import GRID_MEMORY, MODELS, SEED_MEMORY, ModelSpec


def test_kv_bytes_per_token_of_the_presets_by_hand():
    assert MODELS["qwen3-1.7b"].kv_bytes_per_token == 2 * 28 * 8 * 128 * 2 == 114_688      # 1.15e-4 GB
    assert MODELS["opt-13b"].kv_bytes_per_token == 800 * 1024                              # 800 KiB
    assert MODELS["seed"].kv_gb_per_token == pytest.approx(5e-6)
    assert MODELS["qwen3-1.7b"].kv_gb_per_token / MODELS["seed"].kv_gb_per_token == pytest.approx(22.94, rel=1e-3)
    with pytest.raises(ValueError, match="ModelSpec.kv_heads"):
        ModelSpec(28, 0, 128, 2, 3.4)


def test_kv_capacity_formula():
    # the default (changed by issue 20 to the suite's hardware): OPT-13B on an A100-80GB (84.99 GB as torch reads
    # it) at 95%, 25.7 GB of weights, 2 GB kept free, 2 x 40 layers x 40 heads x 128 x 2 bytes = 819,200 B/token
    default = wb.SimConfig()
    assert default.model == "opt-13b" and default.gpu_memory_utilization == 0.95 and default.mem_margin_gb == 2.0
    assert default.kv_capacity_tokens == int((84.9866653696 * 0.95 - 25.7 - 2.0) * 1e9 // 819_200) == 64_742
    # the seed grid's memory (SimConfig's defaults before issue 20): Qwen3-1.7B on 16 GB at 90%
    cfg = wb.SimConfig(**GRID_MEMORY)
    assert cfg.model == "qwen3-1.7b" and cfg.gpu_mem_gb == 16.0 and cfg.gpu_memory_utilization == 0.9
    assert cfg.kv_capacity_tokens == int((16 * 0.9 - 3.44 - 1.0) * 1e9 // 114_688)
    # overrides win over the preset; the preset is looked up again after replace()
    own = cfg.replace(gpu_mem_gb=10.0, gpu_memory_utilization=0.5, model_mem_gb=1.0, mem_margin_gb=0.0,
                      kv_gb_per_token=1e-3)
    assert own.kv_capacity_tokens == 4000                     # (5 - 1 - 0) GB / 1 MB
    assert cfg.replace(model="opt-13b", gpu_mem_gb=80.0).kv_capacity_tokens == int(
        (72 - 25.7 - 1) * 1e9 // 819_200)
    assert wb.SimConfig(**SEED_MEMORY).kv_capacity_tokens == 1_800_000


@pytest.mark.parametrize("kwargs,match", [
    (dict(model="llama-9000"), "model: unknown 'llama-9000'; allowed: qwen3-1.7b"),
    (dict(gpu_memory_utilization=1.5), "gpu_memory_utilization: a share"),
    (dict(gpu_memory_utilization=0.0), "gpu_memory_utilization: must be > 0"),
    (dict(model="opt-13b", gpu_mem_gb=16.0), "no memory left for the KV cache .* weights of opt-13b"),
])
def test_bad_memory_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        wb.SimConfig(**kwargs)


CHEAP = wb.LatencyModel(base_s=0.01, per_token_s=1e-6, batch_penalty=0.0)   # every batch far under budget


def test_b_mem_updates_on_one_gpu():
    # 40 requests at t=0 of 500 and 1500 tokens alternately, KV capacity 10,000 tokens, theta = 2.
    # Batch 0: no statistics yet, limit = b_sla = floor((1 + 32) / 2) = 16; the KV cut stops it at 10
    # requests (5 x 500 + 5 x 1500 = 10,000).  After it: mu = 1000, sigma = sqrt(10 x 500^2 / 9) = 527.0;
    # b mu + 2 sqrt(b) sigma <= 10,000 holds for b = 7 (9,789) and not for b = 8 (10,981): b_mem = 7.
    n = 40
    trace = wb.Trace.from_arrays(np.zeros(n), np.zeros(n, int), np.tile([500, 1500], n // 2))
    cfg = wb.SimConfig(scheduler="dynamic_no_bins", num_gpus=1, gpu_mem_gb=1.0, gpu_memory_utilization=1.0,
                       model_mem_gb=0.0, mem_margin_gb=0.0, kv_gb_per_token=1e-4)
    assert cfg.kv_capacity_tokens == 10_000
    batches = wb.simulate(trace, cfg, latency=CHEAP).batches
    assert batches["size_limit"].iloc[0] == 16 and batches["size"].iloc[0] == 10
    assert batches["size_limit"].iloc[1] == 7 and batches["size"].iloc[1] == 7


def test_b_mem_binds_with_the_real_kv_size():
    # 4,000-token requests: Qwen3-1.7B's 86,844-token cache holds 21 of them (sigma = 0: b_mem = C / mu);
    # the seed's 1.8 M-token cache never binds (limit = Algorithm 2's ceiling 31)
    n = 1200
    trace = wb.Trace.from_arrays(np.zeros(n), np.full(n, 1000), np.full(n, 3000))
    real = wb.simulate(trace, wb.SimConfig(scheduler="dynamic_no_bins", **GRID_MEMORY), latency=CHEAP).batches
    assert real["size_limit"].iloc[1:].max() == 21 == real["size"].iloc[1:-1].min()
    seed = wb.simulate(trace, wb.SimConfig(scheduler="dynamic_no_bins", **SEED_MEMORY), latency=CHEAP).batches
    assert seed["size_limit"].max() == 31 and seed["size"].max() == 31
