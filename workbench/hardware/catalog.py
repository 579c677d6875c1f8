"""The model and GPU catalogues: architecture facts from config.json, spec-sheet facts of GPUs, each with its source.

Models (``data/hardware/models.yaml``): each entry holds the fields of the
model's Hugging Face ``config.json`` (or the path of a copied config.json); :func:`get_model_arch` reads an entry by name
(case-insensitive, aliases and Hugging Face ids accepted) or a user's own
``config.json`` by path, through the same parser (:meth:`ModelArch.from_config`).
Architectures read: ``llama``, ``mistral``, ``qwen2``, ``qwen3`` (gated MLP),
``qwen3_moe``, ``mixtral`` (mixture of experts), ``opt`` (two-matrix MLP,
learned positions).

GPUs (``data/hardware/gpus.yaml``): dense bf16/fp16 tensor TFLOP/s, memory size
and bandwidth, the interconnect a tensor-parallel all-reduce uses, and a default
hourly price, each number with the source it was read from
(:attr:`GPU.sources`).  ``get_gpu(name, price_per_hour=...)`` overrides the
price.

An unknown name is refused with the closest names (``difflib``); a config.json
missing a field the roofline needs is refused naming the field.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from workbench import checks
from workbench.paths import DATA_DIR

HARDWARE_DIR = DATA_DIR / "hardware"
MODELS_FILE = HARDWARE_DIR / "models.yaml"
GPUS_FILE = HARDWARE_DIR / "gpus.yaml"
# LLMServingSim's config.json copies (MIT), read by five catalogue entries
LLMSERVINGSIM_CONFIGS = DATA_DIR / "groundtruth" / "llmservingsim_vllm019" / "model_configs"

DTYPE_BYTES = {"float16": 2, "fp16": 2, "half": 2, "bfloat16": 2, "bf16": 2, "float32": 4, "fp32": 4,
               "float": 4, "fp8": 1, "float8": 1, "int8": 1}
# model_type -> MLP kind; a llama-like config.json (attention + SwiGLU MLP) of another family reads as these do
GATED = ("llama", "mistral", "qwen2", "qwen3")
MOE = ("qwen3_moe", "mixtral")
ARCHITECTURES = (*GATED, *MOE, "opt")


class UnknownName(ValueError):
    """A model or GPU name that is in no catalogue (the message lists the closest names)."""


def _closest(name: str, known, what: str, how: str) -> UnknownName:
    known = sorted(set(known))
    close = difflib.get_close_matches(name.lower(), known, n=3, cutoff=0.4)
    hint = f" (closest: {', '.join(close)})" if close else ""
    return UnknownName(f"{what}: unknown {name!r}{hint}; known: {', '.join(known)}. {how}")


# ------------------------------------------------------------------------------------------------ models
@dataclass(frozen=True)
class ModelArch:
    """The architecture facts of a decoder-only transformer that set its step time and its memory.

    ``intermediate_size`` is the width of a dense MLP, or of one expert in a mixture-of-experts layer
    (``experts`` routed experts, ``active_experts`` of them per token).  ``gated_mlp``: SwiGLU (gate, up and
    down matrices) rather than OPT's two.  ``dtype``: the checkpoint's ``torch_dtype`` (what vLLM serves with
    ``dtype="auto"``).
    """

    name: str
    model_type: str
    layers: int
    hidden_size: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    experts: int = 0
    active_experts: int = 0
    gated_mlp: bool = True
    tie_word_embeddings: bool = False
    position_embeddings: int = 0
    dtype: str = "bfloat16"
    hf_id: str = ""
    source: str = field(default="", compare=False)

    def __post_init__(self):
        for name in ("layers", "hidden_size", "heads", "kv_heads", "head_dim", "intermediate_size", "vocab_size"):
            object.__setattr__(self, name, checks.integer(getattr(self, name), f"{self.name}: {name}", low=1))
        for name in ("experts", "active_experts", "position_embeddings"):
            object.__setattr__(self, name, checks.integer(getattr(self, name), f"{self.name}: {name}", low=0))
        if self.experts and not 1 <= self.active_experts <= self.experts:
            raise ValueError(f"{self.name}: active_experts (num_experts_per_tok) must be in 1..{self.experts} for a "
                             f"mixture of {self.experts} experts, got {self.active_experts}")
        if self.heads % self.kv_heads:
            raise ValueError(f"{self.name}: num_attention_heads ({self.heads}) must be a multiple of "
                             f"num_key_value_heads ({self.kv_heads})")
        checks.choice(self.dtype, f"{self.name}: dtype", DTYPE_BYTES)

    # ---- reading a config.json
    @classmethod
    def from_config(cls, config: dict, *, name: str, source: str = "", hf_id: str = "") -> "ModelArch":
        """A ModelArch from the fields of a Hugging Face ``config.json`` (a dict); ``name`` labels errors."""
        if not isinstance(config, dict):
            raise ValueError(f"{name}: a config.json holds an object of fields, got {checks._shown(config)}")
        model_type = config.get("model_type")
        if model_type is None:
            raise ValueError(f"{name}: config.json has no 'model_type' (one of {', '.join(ARCHITECTURES)}); the "
                             "roofline needs it to know the MLP's shape")
        if model_type not in ARCHITECTURES:
            raise ValueError(f"{name}: model_type {model_type!r} is not read by the roofline; it reads "
                             f"{', '.join(ARCHITECTURES)} (a llama-like model: set model_type to 'llama')")

        def need(key: str, why: str):
            if config.get(key) is None:
                raise ValueError(f"{name}: config.json has no '{key}' ({why}), which the roofline needs; add it "
                                 f"from the model's published config.json")
            return config[key]

        heads = need("num_attention_heads", "attention heads")
        hidden = need("hidden_size", "hidden size")
        kv_heads = config.get("num_key_value_heads") or heads
        head_dim = config.get("head_dim") or (hidden // heads if isinstance(hidden, int) and isinstance(heads, int)
                                              and heads else hidden)
        fields_ = {"layers": need("num_hidden_layers", "layers"), "hidden_size": hidden, "heads": heads,
                   "kv_heads": kv_heads, "head_dim": head_dim, "vocab_size": need("vocab_size", "vocabulary")}
        if model_type == "opt":
            fields_.update(intermediate_size=need("ffn_dim", "MLP width"), gated_mlp=False,
                           position_embeddings=(config.get("max_position_embeddings") or 2048) + 2)
            word_dim = config.get("word_embed_proj_dim")
            if word_dim not in (None, hidden):
                raise ValueError(f"{name}: OPT with word_embed_proj_dim {word_dim} != hidden_size {hidden} (only the "
                                 "350m model) is not read by the roofline")
        elif model_type == "qwen3_moe":
            if config.get("mlp_only_layers") or (config.get("decoder_sparse_step") or 1) != 1:
                raise ValueError(f"{name}: a qwen3_moe model with dense layers between the MoE ones (mlp_only_layers, "
                                 "decoder_sparse_step != 1) is not read by the roofline")
            fields_.update(intermediate_size=need("moe_intermediate_size", "width of one expert"),
                           experts=need("num_experts", "routed experts per layer"),
                           active_experts=need("num_experts_per_tok", "experts per token"))
        elif model_type == "mixtral":
            fields_.update(intermediate_size=need("intermediate_size", "width of one expert"),
                           experts=need("num_local_experts", "experts per layer"),
                           active_experts=need("num_experts_per_tok", "experts per token"))
        else:
            fields_["intermediate_size"] = need("intermediate_size", "MLP width")
        tied = config.get("tie_word_embeddings")
        dtype = str(config.get("torch_dtype") or "bfloat16").replace("torch.", "")
        try:
            return cls(name=name, model_type=model_type, tie_word_embeddings=(model_type == "opt") if tied is None
                       else bool(tied), dtype=dtype, hf_id=hf_id or str(config.get("_name_or_path") or ""),
                       source=source, **fields_)
        except ValueError as exc:
            raise type(exc)(f"{exc} (in {source or name})") from None

    @classmethod
    def from_file(cls, path) -> "ModelArch":
        """A user's own ``config.json`` (or a folder holding one)."""
        file = Path(checks.path(path, "model", expected="a model name or a config.json path")).expanduser()
        if file.is_dir():
            file = file / "config.json"
        file = checks.existing_file(file, "model", what="config.json")
        try:
            config = json.loads(checks.read_text(file, what="config.json"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{file}: not a config.json (invalid JSON: {exc})") from None
        return cls.from_config(config, name=file.parent.name if file.name == "config.json" else file.stem,
                               source=str(file))

    # ---- sizes
    @property
    def is_moe(self) -> bool:
        return self.experts > 0

    @property
    def q_size(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def attention_params_per_layer(self) -> int:
        """Q, K, V and output projections."""
        return self.hidden_size * (self.q_size + 2 * self.kv_size) + self.q_size * self.hidden_size

    @property
    def expert_params(self) -> int:
        """One MLP (dense) or one expert: 3 matrices (gated) or 2 of hidden x intermediate."""
        return (3 if self.gated_mlp else 2) * self.hidden_size * self.intermediate_size

    @property
    def mlp_params_per_layer(self) -> int:
        """Every expert and the router (MoE), or the one MLP."""
        return self.expert_params * self.experts + self.hidden_size * self.experts if self.is_moe \
            else self.expert_params

    @property
    def embedding_params(self) -> int:
        """Token (and learned position) embeddings, plus the output head unless tied."""
        head = 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size
        return (self.vocab_size + self.position_embeddings) * self.hidden_size + head

    @property
    def params(self) -> int:
        """Parameters (norms and biases left out: under 0.1% of any catalogued model)."""
        return self.layers * (self.attention_params_per_layer + self.mlp_params_per_layer) + self.embedding_params

    @property
    def active_params_per_token(self) -> int:
        """Parameters one token uses (MoE: its ``active_experts`` experts and the router), embeddings included
        (the "activated parameters" of a model card)."""
        mlp = (self.expert_params * self.active_experts + self.hidden_size * self.experts) if self.is_moe \
            else self.expert_params
        return self.layers * (self.attention_params_per_layer + mlp) + self.embedding_params

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    def weight_bytes(self, dtype_bytes: int | None = None) -> float:
        """Bytes of all weights at ``dtype_bytes`` per value (default: the checkpoint's dtype)."""
        return float(self.params * (dtype_bytes or self.dtype_bytes))

    def kv_bytes_per_token(self, dtype_bytes: int | None = None, tp: int = 1) -> int:
        """K and V of one token on one GPU of a ``tp``-way tensor-parallel replica: 2 x layers x KV heads per
        GPU x head size x bytes; KV heads are split over the GPUs and replicated when fewer than ``tp``
        (vLLM: ``max(1, num_key_value_heads // tp)``)."""
        return 2 * self.layers * max(1, self.kv_heads // tp) * self.head_dim * (dtype_bytes or self.dtype_bytes)

    def memory_spec(self, dtype_bytes: int | None = None):
        """The :class:`workbench.sim.memory.ModelSpec` of this model (KV per token, weights in GB)."""
        from workbench.sim.memory import BYTES_PER_GB, ModelSpec

        b = dtype_bytes or self.dtype_bytes
        return ModelSpec(self.layers, self.kv_heads, self.head_dim, b, self.weight_bytes(b) / BYTES_PER_GB,
                         f"{self.hf_id or self.name} ({self.params / 1e9:.2f}e9 parameters), catalogue")

    def describe(self) -> str:
        moe = f", {self.experts} experts ({self.active_experts} per token) of {self.intermediate_size}" \
            if self.is_moe else f", MLP {self.intermediate_size}"
        return (f"{self.name}: {self.layers} layers, hidden {self.hidden_size}, {self.heads} heads "
                f"({self.kv_heads} KV) of {self.head_dim}{moe}, vocabulary {self.vocab_size}, "
                f"{self.params / 1e9:.2f}e9 parameters, {self.dtype}")


@lru_cache(maxsize=1)
def _model_entries() -> dict:
    import yaml

    document = yaml.safe_load(checks.read_text(MODELS_FILE, what="model catalogue"))
    return document["models"]


@lru_cache(maxsize=None)
def _catalogue_model(key: str) -> ModelArch:
    entry = _model_entries()[key]
    if "config_file" in entry:
        file = HARDWARE_DIR / entry["config_file"]
        config = json.loads(checks.read_text(file, what="config.json"))
    else:
        config = entry["config"]
    return ModelArch.from_config(config, name=key, source=entry.get("source", ""), hf_id=entry.get("hf_id", ""))


def _model_keys() -> dict[str, str]:
    """Every spelling that names a catalogued model (lower case) -> its key."""
    keys = {}
    for key, entry in _model_entries().items():
        for spelling in (key, *entry.get("aliases", ()), entry.get("hf_id", ""),
                         str(entry.get("hf_id", "")).rsplit("/", 1)[-1]):
            if spelling:
                keys[str(spelling).lower()] = key
    return keys


def model_names() -> list[str]:
    """The catalogued model names (:func:`get_model_arch` also takes aliases and Hugging Face ids)."""
    return list(_model_entries())


def get_model_arch(model) -> ModelArch:
    """A catalogued model by name (``"llama-3.1-8b"``, ``"meta-llama/Llama-3.1-8B"``), a path to a user's own
    ``config.json`` (or its folder), or a :class:`ModelArch` (returned as is)."""
    if isinstance(model, ModelArch):
        return model
    if isinstance(model, os.PathLike) or (isinstance(model, str) and (model.endswith(".json") or os.sep in model
                                                                      and Path(model).expanduser().exists())):
        return ModelArch.from_file(model)
    checks.instance(model, "model", str, expected="a model name, a config.json path, or a ModelArch")
    key = _model_keys().get(model.strip().lower())
    if key is None:
        raise _closest(model, model_names(), "model",
                       "Pass the path of the model's config.json to use a model that is not catalogued")
    return _catalogue_model(key)


# ------------------------------------------------------------------------------------------------ GPUs
@dataclass(frozen=True)
class GPU:
    """Spec-sheet facts of one GPU (see ``data/hardware/gpus.yaml`` for the units and :attr:`sources`)."""

    key: str
    name: str
    dense_tflops: float
    memory_gb: float
    memory_bandwidth_gbps: float
    interconnect: str
    interconnect_gbps: float
    price_per_hour: float | None
    device_memory_bytes: float | None = None
    sources: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        for name in ("dense_tflops", "memory_gb", "memory_bandwidth_gbps", "interconnect_gbps"):
            object.__setattr__(self, name, checks.number(getattr(self, name), f"{self.key}: {name}", low=0,
                                                         low_open=True))
        object.__setattr__(self, "price_per_hour", checks.number(
            self.price_per_hour, f"{self.key}: price_per_hour", low=0, none=True, unit="USD/h", sane_high=1000,
            sane_hint="a price per GPU-hour in dollars"))

    @property
    def flops_per_s(self) -> float:
        return self.dense_tflops * 1e12

    @property
    def memory_bytes_per_s(self) -> float:
        return self.memory_bandwidth_gbps * 1e9

    @property
    def link_bytes_per_s(self) -> float:
        return self.interconnect_gbps * 1e9

    @property
    def total_memory_bytes(self) -> float:
        """What the device reports as its memory (vLLM's ``total_gpu_memory``): the recorded report, else
        ``memory_gb x 2^30`` (nominal)."""
        return float(self.device_memory_bytes) if self.device_memory_bytes else self.memory_gb * 2.0 ** 30

    def describe(self) -> str:
        price = f"${self.price_per_hour:.2f}/h" if self.price_per_hour is not None else "no price"
        return (f"{self.name}: {self.dense_tflops:g} dense bf16 TFLOP/s, {self.memory_gb:g} GB at "
                f"{self.memory_bandwidth_gbps:g} GB/s, {self.interconnect} {self.interconnect_gbps:g} GB/s, {price}")


@lru_cache(maxsize=1)
def _gpu_entries() -> dict:
    import yaml

    return yaml.safe_load(checks.read_text(GPUS_FILE, what="GPU catalogue"))["gpus"]


def gpu_names() -> list[str]:
    """The catalogued GPU names (:func:`get_gpu` also takes the aliases listed in the catalogue)."""
    return list(_gpu_entries())


def _gpu_keys() -> dict[str, str]:
    keys = {}
    for key, entry in _gpu_entries().items():
        for spelling in (key, *entry.get("aliases", ())):
            keys[str(spelling).lower()] = key
    return keys


@lru_cache(maxsize=None)
def _catalogue_gpu(key: str) -> GPU:
    entry = dict(_gpu_entries()[key])
    entry.pop("aliases", None)
    return GPU(key=key, **entry)


def get_gpu(gpu, *, price_per_hour: float | None = None) -> GPU:
    """A catalogued GPU by name (``"h100-sxm"``, aliases such as ``"h100"``), or a :class:`GPU` as is;
    ``price_per_hour`` replaces the catalogue's default price."""
    if not isinstance(gpu, GPU):
        checks.instance(gpu, "gpu", str, expected="a GPU name such as 'h100-sxm', or a GPU")
        key = _gpu_keys().get(gpu.strip().lower())
        if key is None:
            raise _closest(gpu, gpu_names(), "gpu", "Build a wb.hardware.GPU(...) with its spec-sheet numbers "
                                                    "to use a GPU that is not catalogued")
        gpu = _catalogue_gpu(key)
    if price_per_hour is not None:
        gpu = dataclasses.replace(gpu, price_per_hour=price_per_hour,
                                  sources={**gpu.sources, "price_per_hour": "given by the user"})
    return gpu


def parse_prices(text, name: str = "prices") -> dict[str, float]:
    """GPU key -> dollars per GPU-hour from a notebook parameter such as ``"h100-sxm=2.5,l4=0.5"`` (empty: none),
    each GPU named as :func:`get_gpu` reads it and each price checked."""
    given = {}
    for item in filter(None, (part.strip() for part in str(text or "").split(","))):
        gpu, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"{name}: {item!r} is not 'gpu=dollars per hour' (e.g. 'h100-sxm=2.5,l4=0.5')")
        key = get_gpu(gpu.strip()).key
        given[key] = checks.number(value, f"{name}[{key}]", low=0, low_open=True, unit="USD/h")
    return given


__all__ = ["ARCHITECTURES", "GPU", "GPUS_FILE", "MODELS_FILE", "ModelArch", "UnknownName", "get_gpu",
           "get_model_arch", "gpu_names", "model_names", "parse_prices"]
