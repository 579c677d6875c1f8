"""GPU memory of a served model: the KV cache per token and the weights.

``ModelSpec`` is the small part of a model's architecture that sets its
memory: K and V (2) x layers x KV heads x head size x bytes per value is the
KV cache one token holds, and the weights take a fixed share of the GPU.
``MODELS`` registers named presets; ``SimConfig(model=...)`` picks one, or any
model of the catalogue (``workbench.hardware``: ``data/hardware/models.yaml``,
e.g. ``"llama-3.1-8b"``), whose KV bytes per token and weights follow from its
config.json facts in its checkpoint's dtype (:meth:`ModelArch.memory_spec`).

Presets (GB = 1e9 bytes):

* ``qwen3-1.7b`` (default; the model of the shipped latency grid): 28 layers,
  8 KV heads of 128 in fp16/bf16: 2 x 28 x 8 x 128 x 2 = 114,688 bytes =
  1.147e-4 GB per token.  Weights 3.44 GB: the bf16 ``model.safetensors`` of
  Qwen3-1.7B (about 1.7e9 parameters x 2 bytes, input and output embeddings
  tied).
* ``opt-13b``: 40 layers, 40 KV heads of 128 in fp16: 819,200 bytes = 800 KiB
  per token; weights 12.85e9 parameters x 2 bytes = 25.7 GB (needs a GPU
  larger than the default 16 GB).
* ``seed``: the seed project's values, kept for comparison: 5e-6 GB per token
  (about 23 times too small for Qwen3-1.7B, so the memory bound never binds)
  and 2 GB of weights; the seed assumed a 12 GB GPU used in full, so
  ``SimConfig(**SEED_MEMORY)`` reproduces its KV capacity of 1.8 M tokens.
  Its architecture fields are a placeholder that yields 5,000 bytes per
  token, not a real model.
"""

from __future__ import annotations

from dataclasses import dataclass

from workbench import checks

BYTES_PER_GB = 1e9


@dataclass(frozen=True)
class ModelSpec:
    """Memory-relevant architecture of a decoder-only transformer."""

    layers: int
    kv_heads: int
    head_dim: int
    dtype_bytes: int
    weights_gb: float
    description: str = ""

    def __post_init__(self):
        for name in ("layers", "kv_heads", "head_dim", "dtype_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ModelSpec.{name}: must be an integer >= 1, got {value!r}")
        if not (isinstance(self.weights_gb, (int, float)) and self.weights_gb >= 0):
            raise ValueError(f"ModelSpec.weights_gb: must be a number >= 0, got {self.weights_gb!r}")

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V of every layer and KV head for one token: 2 x layers x kv_heads x head_dim x dtype_bytes."""
        return 2 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes

    @property
    def kv_gb_per_token(self) -> float:
        return self.kv_bytes_per_token / BYTES_PER_GB


MODELS: dict[str, ModelSpec] = {
    "qwen3-1.7b": ModelSpec(28, 8, 128, 2, 3.44, "Qwen3-1.7B, bf16 (the shipped latency grid's model)"),
    "opt-13b": ModelSpec(40, 40, 128, 2, 25.7, "OPT-13B, fp16"),
    "seed": ModelSpec(1, 1, 1250, 2, 2.0, "the seed project's values (5e-6 GB/token, 2 GB weights); not a real model"),
}
# A100-80GB as torch (and vLLM v0.2) reads its total memory: 79.15 GiB, in GB of 1e9 bytes
A100_80GB_TOTAL_GB = 84.9866653696
# The memory of one replica of the default hardware model (profile "opt-13b-a100": OPT-13B on one A100-80GB), from
# the setup of the measured runs (data/groundtruth/distserve_opt13b_a100_vllm/setup.json): vLLM's
# gpu_memory_utilization 0.95 and about 2 GB of activation peak kept free, which gives the setup's 4046 KV blocks
# of 16 tokens.  SimConfig's defaults, the suite's too (workbench.sim.profiles.PROFILE_MEMORY holds it by name).
DEFAULT_MEMORY = {"model": "opt-13b", "gpu_mem_gb": A100_80GB_TOTAL_GB, "gpu_memory_utilization": 0.95,
                  "mem_margin_gb": 2.0}
# the memory the seed study's formula grid runs with (latency="seed-grid"): the Qwen3-1.7B of the grid's labels on
# a 16 GB GPU at vLLM's default utilisation (SimConfig's defaults until the suite's hardware model became the
# library's; workbench.sim.profiles.profile_config_fields("seed-grid") returns it)
GRID_MEMORY = {"model": "qwen3-1.7b", "gpu_mem_gb": 16.0, "gpu_memory_utilization": 0.9, "mem_margin_gb": 1.0}

# the seed project's whole memory setup: its model values on a 12 GB GPU used in full
SEED_MEMORY = {"model": "seed", "gpu_mem_gb": 12.0, "gpu_memory_utilization": 1.0, "mem_margin_gb": 1.0}


def get_model(name: str) -> ModelSpec:
    """The memory preset ``name``, else the catalogued model of that name (its checkpoint's dtype)."""
    if name in MODELS:
        return MODELS[name]
    from workbench.hardware.catalog import UnknownName, get_model_arch, model_names

    try:
        return get_model_arch(name).memory_spec()
    except UnknownName:
        raise checks.choice(name, "model", list(dict.fromkeys([*MODELS, *model_names()])),
                            hint="a memory preset or a catalogued model (or set kv_gb_per_token and "
                                 "model_mem_gb yourself)") from None
