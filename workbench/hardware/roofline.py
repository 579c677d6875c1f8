"""Step times from first principles: a roofline of one engine step of a model on a GPU, and the KV cache vLLM
would allocate.

A step runs every layer once over the step's tokens (prefill pieces and one token per decoding request).  On
each GPU of a ``tp``-way tensor-parallel replica, per layer:

* the linear layers (QKV, output, MLP or the touched experts) take ``max(compute, memory)``: compute is
  ``2 x tokens x active parameters / tp`` FLOPs at ``gemm_compute x`` the GPU's dense peak; memory is the
  weights read once per step (``/ tp``) plus the activations in and out, at ``memory x`` peak bandwidth;
* attention takes ``max(compute, memory)`` for the prefill pieces and again for the decodes: ``4 x heads /
  tp x head size`` FLOPs per query-key pair (causal prefill: a piece of ``l`` new tokens after ``p`` cached
  ones has ``l x (p + (l + 1) / 2)`` pairs) at ``attention_compute x`` peak, and the KV cache read (and
  written) at ``memory x`` peak;
* a fixed ``layer_s`` (kernel launches and the small kernels between the GEMMs);

then the output head over the sequences that emit a token, the tensor-parallel communication (two ring
all-reduces of ``tokens x hidden`` values per layer over the interconnect: ``allreduce_s +
2 (tp - 1) / tp x bytes / (link x interconnect bandwidth)`` each), ``step_s`` per step and ``sequence_s``
per sequence (scheduling, sampling, detokenising).  A mixture-of-experts layer computes each token through
its ``active_experts`` experts and reads the weights of the distinct experts the step's tokens touch: the
expected number under uniform routing, ``E x (1 - (1 - k / E)^tokens)`` (BLIS's rule,
inference-sim/inference-sim ``sim/latency/roofline.go`` ``calculateMemoryAccessBytes``).

This follows BLIS's roofline (``rooflineStepTime``: per-request FLOPs at an MFU, weights loaded once per
step, ``max(compute, memory)``; inference-sim/inference-sim ``sim/latency/roofline.go``) with three changes:
the maximum is taken per kernel kind (GEMMs; prefill attention; decode attention) rather than once per step,
as the kernels run one after another; bandwidth, like compute, runs at an achievable fraction; and the
fixed costs (per layer, per step, per sequence, per all-reduce) are modelled.  The constants
(:data:`EFFICIENCIES`) are fitted once across the measured data the workbench ships
(:mod:`workbench.hardware.fit`), never per run.

The KV cache (:func:`kv_blocks`) follows vLLM's rule (``vllm/v1/worker/gpu_worker.py``
``Worker.determine_available_memory``: ``total_gpu_memory x gpu_memory_utilization - peak_memory``, the peak
being the weights, the activation peak of a profiling forward pass over ``max_num_batched_tokens`` tokens
and the non-torch allocations; ``vllm/v1/core/kv_cache_utils.py`` ``get_num_blocks``: ``available //
page_size // num_layers`` with ``page_size = 2 x block_size x kv_heads x head_size x dtype``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from workbench import checks
from workbench.hardware.catalog import GPU, ModelArch, get_gpu, get_model_arch


@dataclass(frozen=True)
class Efficiencies:
    """What a GPU achieves of its spec sheet, and the fixed costs of a step (see the module docstring)."""

    gemm_compute: float      # share of dense peak FLOP/s reached by the linear layers
    attention_compute: float  # share of dense peak FLOP/s reached by attention
    memory: float            # share of peak memory bandwidth
    link: float              # share of the interconnect bandwidth an all-reduce reaches
    allreduce_s: float       # fixed time of one all-reduce (latency, synchronisation)
    layer_s: float           # fixed time per layer (launches, norms, activation, residual kernels)
    step_s: float            # fixed time per step (scheduler, input preparation, sampler launch)
    sequence_s: float        # time per sequence in the step (sampling, output processing)

    def __post_init__(self):
        for name in ("gemm_compute", "attention_compute", "memory", "link"):
            object.__setattr__(self, name, checks.number(getattr(self, name), f"efficiencies.{name}", low=0,
                                                         low_open=True, high=1.2))
        for name in ("allreduce_s", "layer_s", "step_s", "sequence_s"):
            object.__setattr__(self, name, checks.number(getattr(self, name), f"efficiencies.{name}", low=0,
                                                         unit="s", sane_high=1.0))


# Fitted once by workbench.hardware.fit.fit_efficiencies() across the kernel profiles, step-time profiles and
# measured runs the workbench ships; tests/test_roofline_fit.py re-runs the fit and checks these are what it
# gives.  Never fitted per run.
EFFICIENCIES = Efficiencies(gemm_compute=0.70, attention_compute=0.40, memory=0.85, link=0.70,
                            allreduce_s=20e-6, layer_s=30e-6, step_s=3e-3, sequence_s=20e-6)

# activations of a layer beyond the GEMM inputs and outputs: norms (read + write), residual adds, rotary,
# in passes over tokens x hidden values
ELEMENTWISE_PASSES = 8


@dataclass(frozen=True)
class StepStats:
    """What a step contains, as the sums the roofline prices (each an array: one value per step).

    ``prefill_tokens`` = sum of the prefill pieces' new tokens ``l``; ``prefill_pairs`` = sum of ``l x (p +
    (l + 1) / 2)`` (causal query-key pairs, ``p`` the piece's tokens already cached); ``prefill_kv_tokens`` =
    sum of ``p + l`` (KV tokens the prefill attention reads or writes); ``prefill_sequences``: pieces;
    ``decode_sequences``: decoding requests; ``decode_context``: the sum of their contexts.
    """

    prefill_tokens: np.ndarray
    prefill_pairs: np.ndarray
    prefill_kv_tokens: np.ndarray
    prefill_sequences: np.ndarray
    decode_sequences: np.ndarray
    decode_context: np.ndarray

    @classmethod
    def of(cls, *, prefill_tokens=0, prefill_pairs=None, prefill_kv_tokens=None, prefill_sequences=None,
           decode_sequences=0, decode_context=0) -> "StepStats":
        """Arrays of step sums (scalars broadcast); without pairs/kv/sequences, each prefill step is taken as
        one piece with nothing cached (``pairs = l (l + 1) / 2``)."""
        l = np.asarray(prefill_tokens, dtype=np.float64)
        pieces = (l > 0).astype(np.float64) if prefill_sequences is None else np.asarray(prefill_sequences,
                                                                                            dtype=np.float64)
        pairs = l * (l + 1) / 2 if prefill_pairs is None else np.asarray(prefill_pairs, dtype=np.float64)
        kv = l if prefill_kv_tokens is None else np.asarray(prefill_kv_tokens, dtype=np.float64)
        arrays = np.broadcast_arrays(l, pairs, kv, pieces, np.asarray(decode_sequences, dtype=np.float64),
                                     np.asarray(decode_context, dtype=np.float64))
        return cls(*(np.array(a, dtype=np.float64) for a in arrays))

    @classmethod
    def of_step(cls, prompt_lengths=(), prefix_lengths=None, context_lengths=()) -> "StepStats":
        """The sums of one step: prompt pieces of ``prompt_lengths`` new tokens after ``prefix_lengths`` cached
        ones, and decodes of ``context_lengths`` (the arguments of ``StepTimeModel.step_time_s``)."""
        l = np.asarray(prompt_lengths, dtype=np.float64).ravel()
        p = np.zeros_like(l) if prefix_lengths is None else np.asarray(prefix_lengths, dtype=np.float64).ravel()
        ctx = np.asarray(context_lengths, dtype=np.float64).ravel()
        return cls.of(prefill_tokens=l.sum(), prefill_pairs=(l * (p + (l + 1) / 2)).sum(),
                      prefill_kv_tokens=(p + l).sum(), prefill_sequences=float(l.size),
                      decode_sequences=float(ctx.size), decode_context=ctx.sum())


@dataclass(frozen=True)
class Roofline:
    """The roofline of ``model`` on ``gpu`` at tensor parallelism ``tp`` (see the module docstring)."""

    model: ModelArch
    gpu: GPU
    tp: int = 1
    dtype_bytes: int = 2
    efficiencies: Efficiencies = field(default=EFFICIENCIES)

    def __post_init__(self):
        object.__setattr__(self, "model", get_model_arch(self.model))
        object.__setattr__(self, "gpu", get_gpu(self.gpu))
        object.__setattr__(self, "tp", checks.integer(self.tp, "tp", low=1, high=64,
                                                      hint="GPUs of one tensor-parallel replica"))
        if self.model.heads % self.tp:
            raise ValueError(f"tp: {self.model.name} has {self.model.heads} attention heads, which {self.tp} GPUs "
                             f"cannot share evenly (vLLM requires heads % tp == 0); choose a divisor of "
                             f"{self.model.heads}")

    # ---- per-GPU sizes
    @property
    def _local(self):
        m, tp = self.model, self.tp
        return m.heads / tp, max(1.0, m.kv_heads / tp)

    def parts(self, stats: StepStats) -> dict[str, np.ndarray]:
        """The step time's parts, seconds per step: ``gemm``, ``prefill_attention``, ``decode_attention`` (all
        layers), ``head`` (output head), ``communication``, ``overhead`` (layer, step and sequence costs)."""
        m, g, e, b = self.model, self.gpu, self.efficiencies, float(self.dtype_bytes)
        tp = float(self.tp)
        heads, kv_heads = self._local
        flops, bw = g.flops_per_s, g.memory_bytes_per_s
        tokens = stats.prefill_tokens + stats.decode_sequences
        sequences = stats.prefill_sequences + stats.decode_sequences
        h = m.hidden_size
        # linear layers of one layer
        if m.is_moe:
            k, experts = float(m.active_experts), float(m.experts)
            touched = experts * (1.0 - (1.0 - k / experts) ** tokens)
            mlp_flops = 2.0 * tokens * (k * m.expert_params + h * experts)
            mlp_weights = touched * m.expert_params + h * experts
            mlp_width = k * m.intermediate_size
        else:
            mlp_flops = 2.0 * tokens * m.expert_params
            mlp_weights = np.full_like(tokens, float(m.expert_params))
            mlp_width = float(m.intermediate_size)
        attn_params = float(m.attention_params_per_layer)
        gemm_flops = (2.0 * tokens * attn_params + mlp_flops) / tp
        act_values = tokens * ((ELEMENTWISE_PASSES + 4) * h
                               + (2 * m.q_size + 2 * m.kv_size + (3 if m.gated_mlp else 2) * mlp_width) / tp)
        gemm_bytes = (attn_params + mlp_weights) * b / tp + act_values * b
        gemm = np.maximum(gemm_flops / (flops * e.gemm_compute), gemm_bytes / (bw * e.memory))
        # attention of one layer: prefill pieces, then decodes
        pair_flops = 4.0 * heads * m.head_dim
        kv_token_bytes = 2.0 * kv_heads * m.head_dim * b
        qo_token_bytes = 2.0 * heads * m.head_dim * b
        prefill_att = np.maximum(stats.prefill_pairs * pair_flops / (flops * e.attention_compute),
                                 (stats.prefill_kv_tokens * kv_token_bytes + stats.prefill_tokens * qo_token_bytes)
                                 / (bw * e.memory))
        decode_att = np.maximum(stats.decode_context * pair_flops / (flops * e.attention_compute),
                                (stats.decode_context * kv_token_bytes + stats.decode_sequences * qo_token_bytes)
                                / (bw * e.memory))
        # output head over the sequences that emit a token (vocabulary split over the GPUs; fp32 logits)
        head = np.where(sequences > 0, np.maximum(
            2.0 * sequences * h * m.vocab_size / tp / (flops * e.gemm_compute),
            (h * m.vocab_size * b / tp + sequences * m.vocab_size * 4.0 / tp) / (bw * e.memory)), 0.0)
        # tensor parallelism: two ring all-reduces of tokens x hidden per layer, the logits gathered once
        if self.tp > 1:
            ring = 2.0 * (tp - 1.0) / tp / (g.link_bytes_per_s * e.link)
            communication = (m.layers * 2.0 * (e.allreduce_s + ring * tokens * h * b)
                             + e.allreduce_s + (tp - 1.0) / tp * sequences * m.vocab_size * b
                             / (g.link_bytes_per_s * e.link))
        else:
            communication = np.zeros_like(tokens)
        overhead = m.layers * e.layer_s + e.step_s + e.sequence_s * sequences
        return {"gemm": m.layers * gemm, "prefill_attention": m.layers * prefill_att,
                "decode_attention": m.layers * decode_att, "head": head, "communication": communication,
                "overhead": overhead + 0.0 * tokens}

    def time_s(self, stats: StepStats) -> np.ndarray:
        """Seconds per step (one value per step of ``stats``)."""
        return sum(self.parts(stats).values())

    def step_time_s(self, prompt_lengths=(), prefix_lengths=None, context_lengths=()) -> float:
        """Seconds of one step (the arguments of ``StepTimeModel.step_time_s``)."""
        return float(self.time_s(StepStats.of_step(prompt_lengths, prefix_lengths, context_lengths)))

    def describe(self) -> str:
        return f"roofline {self.model.name}@{self.gpu.key}/tp{self.tp}"


# -------------------------------------------------------------------------------------------- KV cache
# vLLM's profiling forward pass keeps more than the per-token tensors alive: CUDA graphs, the cuBLAS workspace,
# torch.compile's buffers, NCCL's.  One measured vLLM 0.19 startup sets it: Llama-3.1-8B on an RTX 4090 at
# gpu_memory_utilization 0.9, max_num_batched_tokens 2048, max_num_seqs 256 got num_gpu_blocks = 2588
# (LLMServingSim's runs/RTX4090/Llama-3.1-8B/vllm/meta.json), which leaves 1.238e9 bytes beside the weights and
# the KV cache; the per-token tensors below account for 0.473e9 of it.
NON_TORCH_RESERVE_BYTES = 0.765e9


def activation_peak_bytes(model, *, tp: int = 1, max_num_batched_tokens: int = 8192, max_num_seqs: int = 256,
                          dtype_bytes: int = 2) -> float:
    """The activation memory vLLM's profiling run peaks at (one GPU): the largest layer's live tensors over
    ``max_num_batched_tokens`` tokens (residual, normed input, and the MLP's up and activation outputs) plus
    the sampler's fp32 logits and probabilities over ``max_num_seqs`` sequences, plus
    :data:`NON_TORCH_RESERVE_BYTES`."""
    m = get_model_arch(model)
    width = (3 if m.gated_mlp else 2) * m.intermediate_size * (m.active_experts if m.is_moe else 1) / tp
    per_token = (2 * m.hidden_size + width) * dtype_bytes
    sampler = 2 * max_num_seqs * m.vocab_size * 4.0
    return max_num_batched_tokens * per_token + sampler + NON_TORCH_RESERVE_BYTES


def kv_memory(model, gpu, *, tp: int = 1, gpu_memory_utilization: float = 0.9, max_num_batched_tokens: int = 8192,
              max_num_seqs: int = 256, dtype_bytes: int | None = None) -> dict:
    """vLLM's memory budget of one GPU of a ``tp``-way replica, in bytes: ``total``, ``usable`` (x
    gpu_memory_utilization), ``weights`` (/ tp), ``activation_peak``, ``kv`` (what is left, may be negative)
    and ``kv_bytes_per_token`` (on this GPU)."""
    m, g = get_model_arch(model), get_gpu(gpu)
    b = dtype_bytes or m.dtype_bytes
    usable = g.total_memory_bytes * gpu_memory_utilization
    weights = m.weight_bytes(b) / tp
    peak = activation_peak_bytes(m, tp=tp, max_num_batched_tokens=max_num_batched_tokens,
                                 max_num_seqs=max_num_seqs, dtype_bytes=b)
    return {"total": g.total_memory_bytes, "usable": usable, "weights": weights, "activation_peak": peak,
            "kv": usable - weights - peak, "kv_bytes_per_token": m.kv_bytes_per_token(b, tp)}


class DoesNotFit(ValueError):
    """A model whose weights and minimum KV cache exceed the GPU's memory at that tensor parallelism."""


def kv_blocks(model, gpu, *, tp: int = 1, block_size: int = 16, gpu_memory_utilization: float = 0.9,
              max_num_batched_tokens: int = 8192, max_num_seqs: int = 256, min_tokens: int | None = None,
              dtype_bytes: int | None = None) -> int:
    """KV-cache blocks of ``block_size`` tokens one replica holds, as vLLM computes num_gpu_blocks: (total
    memory x gpu_memory_utilization - weights / tp - activation peak) // (block_size x KV bytes per token per
    GPU).  Refused with the numbers (:class:`DoesNotFit`) when the blocks would not hold ``min_tokens``
    (default: one request of ``max_num_batched_tokens`` tokens, what vLLM needs to start)."""
    tp = checks.integer(tp, "tp", low=1, high=64)
    block_size = checks.integer(block_size, "block_size", low=1, high=65_536)
    gpu_memory_utilization = checks.number(gpu_memory_utilization, "gpu_memory_utilization", low=0, low_open=True,
                                           high=1)
    budget = kv_memory(model, gpu, tp=tp, gpu_memory_utilization=gpu_memory_utilization,
                       max_num_batched_tokens=max_num_batched_tokens, max_num_seqs=max_num_seqs,
                       dtype_bytes=dtype_bytes)
    blocks = max(0, math.floor(budget["kv"] / (block_size * budget["kv_bytes_per_token"])))
    need = max_num_batched_tokens if min_tokens is None else min_tokens
    if blocks * block_size < need:
        m, g = get_model_arch(model), get_gpu(gpu)
        gb = lambda v: f"{v / 1e9:.1f} GB"  # noqa: E731
        raise DoesNotFit(
            f"{m.name} does not fit on {g.key} at tp={tp}: each GPU has {gb(budget['usable'])} usable "
            f"({gb(budget['total'])} x {gpu_memory_utilization:g}), the weights take {gb(budget['weights'])} "
            f"and the activation peak {gb(budget['activation_peak'])}, leaving {gb(max(budget['kv'], 0))} for the "
            f"KV cache: {blocks * block_size:,} tokens, fewer than the {need:,} one request needs "
            f"({budget['kv_bytes_per_token']:,} bytes per token per GPU); raise tp, or choose a GPU with more memory")
    return blocks


__all__ = ["DoesNotFit", "EFFICIENCIES", "Efficiencies", "Roofline", "StepStats", "activation_peak_bytes",
           "kv_blocks", "kv_memory"]
