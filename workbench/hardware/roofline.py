"""Step times from first principles: a roofline of one engine step of a model on a GPU, and the KV cache vLLM
would allocate.

A step runs every layer once over the step's tokens (prefill pieces and one token per decoding request).  On
each GPU of a ``tp``-way tensor-parallel replica, per layer:

* the linear layers (QKV, output, MLP or the touched experts) take their compute time ``c`` and memory time
  ``m`` combined as ``(c^p + m^p)^(1/p)`` (:func:`ridge`, ``p = ridge_exponent``): compute is ``2 x tokens x
  active parameters / tp`` FLOPs at ``gemm_compute x gemm_factor x`` the GPU's dense peak; memory is the
  weights read once per step (``/ tp``) plus the activations in and out, at ``memory x`` peak bandwidth.
  Far from the ridge (few tokens: memory-bound; thousands: compute-bound) this is the plain roofline's
  ``max(c, m)``; near it (a few hundred tokens, where a GEMM's weight loads and its MMAs overlap only in
  part) it is up to ``2^(1/p)`` times more: the kernel profiles' dense layers reach 55% of both peaks at
  once at 320 tokens on the RTX PRO 6000 (ridge 315), where ``max`` would put them at 78% of the compute peak;
* attention takes ``max(compute, memory)`` for the prefill pieces and again for the decodes (far from the
  ridge on either side: a decode reads 2-8 bytes per FLOP, a prefill chunk reuses each key hundreds of times):
  ``4 x heads / tp x head size`` FLOPs per query-key pair (causal prefill: a piece of ``l`` new tokens after
  ``p`` cached ones has ``l x (p + (l + 1) / 2)`` pairs) at ``attention_compute x attention_factor x`` peak,
  and the KV cache read (and written) at ``kv_memory x`` peak (paged gathers reach less of the bandwidth than
  weight streaming);
* a fixed ``layer_s`` (the small kernels between the GEMMs, and launches where they are not hidden);

then the output head over the sequences that emit a token, the tensor-parallel communication (two ring
all-reduces of ``tokens x hidden`` values per layer over the interconnect: ``allreduce_s +
2 (tp - 1) / tp x bytes / (link x interconnect bandwidth)`` each), ``step_s`` per step and ``sequence_s``
per sequence (scheduling, sampling, detokenising).  A mixture-of-experts layer computes each token through
its ``active_experts`` experts and reads the weights of the distinct experts the step's tokens touch: the
expected number under uniform routing, ``E x (1 - (1 - k / E)^tokens)`` (BLIS's rule,
inference-sim/inference-sim ``sim/latency/roofline.go`` ``calculateMemoryAccessBytes``).  With expert
parallelism over a data-parallel group of ``ep`` ranks (vLLM's ``--data-parallel-size ep
--enable-expert-parallel``: each rank serves its own requests with the attention and dense weights, and holds
``E / ep`` of the experts), a rank's step is priced as one of ``ep`` equal steps run together: its experts see
the tokens of all ``ep`` ranks, so it reads the ``E / ep x (1 - (1 - k / E)^(ep x tokens))`` local experts they
touch and computes ``tokens x k`` expert rows (the group's ``ep x tokens x k`` spread over ``ep`` ranks); the
tokens' hidden states are all-gathered before each MoE layer and reduce-scattered after it, ``(ep - 1) x tokens
x hidden`` values each way per rank over the interconnect (the naive all-gather / reduce-scatter dispatch of
vLLM's data-parallel MoE, as LLMServingSim prices it: ``serving/core/trace_generator.py`` ``_emit_moe_block``).

This follows BLIS's roofline (``rooflineStepTime``: per-request FLOPs at an MFU, weights loaded once per
step, ``max(compute, memory)``; inference-sim/inference-sim ``sim/latency/roofline.go``) with four changes:
the roofline is taken per kernel kind (GEMMs; prefill attention; decode attention) rather than once per step,
as the kernels run one after another; a GEMM near the ridge is slower than either bound; bandwidth, like
compute, runs at an achievable fraction; and the fixed costs (per layer, per step, per sequence, per
all-reduce) are modelled.  Serving engines differ in their kernels and fixed costs, so the kernels' speed
against vLLM 0.19's (``gemm_factor``, ``attention_factor``: apart, because the engines' attention kernels
differ most: FlashAttention in vLLM V1, xformers in vLLM v0.2, SwiftTransformer's own in DistServe) and the
fixed costs are per engine (:data:`ENGINES`: vLLM's V1 engine, the default; vLLM v0.2; DistServe's engine),
the GPU efficiencies shared by all three.

The constants (:data:`ENGINE_EFFICIENCIES`), fitted once across the measured data the workbench ships
(:mod:`workbench.study.fidelity.roofline_fit`: the vLLM 0.19 kernel profiles, DistServe's and BLIS's step
profiles, then each engine's measured runs whose queue kept up), never per run; ``tests/test_roofline_fit.py``
re-runs the fit and checks these are what it gives:

=====================  ===========  ===========  ===========
constant                vllm-v1      vllm-v0.2    distserve
=====================  ===========  ===========  ===========
gemm_compute            0.73 of the dense peak (all engines)
attention_compute       0.44 of the dense peak (all engines)
memory                  0.94 of the peak bandwidth, weights (all engines)
kv_memory               0.80 of the peak bandwidth, paged KV (all engines)
link                    0.18 of the interconnect (all engines)
ridge_exponent          2.0 (all engines)
gemm_factor             1            0.78         1.3
attention_factor        1            0.28         0.45
allreduce_s             0            110 us       0
layer_s                 15 us        0            190 us
step_s                  3.1 ms       11 ms        0
sequence_s              13 us        41 us        25 us
serving_step_s          0            2.5 us       5.0 ms
serving_sequence_s      0            400 us       200 us
serving_context_s       0            0.16 us      0
=====================  ===========  ===========  ===========

So vLLM v0.2's GEMMs run at 57% of the A100's peak and its prefill attention at 12%, DistServe's at 95% and
20% (the profiles' slopes: 140 and 93 us per prompt token of OPT-13B, whose FLOPs take 81 us at peak).  vLLM
V1 has no serving overheads: its two measured runs (LLMServingSim's, vLLM 0.19) were both overloaded, so
nothing was fitted to them and they are predictions.

What the constants give (``benchmarks/roofline_targets.py``): the mean E2E of the 11 measured runs within a
median 9.5% (8 of 11 within 15%; 10% median when each run is left out of its engine's serving fit), the RTX
PRO 6000 run +10% and the RTX 4090 run +15% (its GEMMs run at 100% of the spec sheet's 165 TFLOP/s, boost
clocks), the overloaded DistServe c21d12 run at 12 req/s -60%.  Step
times against the measured profiles of the same deployments (1-256 requests, 64-4,096 tokens): every step of
DistServe's two OPT-13B A100 profiles within 20% (vLLM v0.2 and DistServe's engine, prefill and decode); BLIS's
H100 entries, fitted to serving latencies rather than timed, 0-100% by entry and step kind (the reasons, with
numbers, in :mod:`workbench.study.fidelity.roofline_runs`); 71% of the 486 compared steps in all, median
error 8.2%.

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
    memory: float            # share of peak memory bandwidth streaming weights and activations
    kv_memory: float         # share of peak memory bandwidth reading the paged KV cache (attention)
    link: float              # share of the interconnect bandwidth an all-reduce reaches
    allreduce_s: float       # fixed time of one all-reduce (latency, synchronisation)
    layer_s: float           # fixed time per layer (launches, norms, activation, residual kernels)
    step_s: float            # fixed time per step (scheduler, input preparation, sampler launch)
    sequence_s: float        # time per sequence in the step (sampling, output processing)
    # an engine's kernels against vLLM 0.19's (whose kernel profiles set gemm_compute and attention_compute):
    # its GEMMs and its attention kernels apart (engines differ most in their attention kernels)
    gemm_factor: float = 1.0
    attention_factor: float = 1.0
    # how a GEMM's compute and memory time combine: the p-norm (c^p + m^p)^(1/p), the plain roofline's max as
    # p -> inf; near the ridge (tokens ~ peak FLOP/s / bandwidth) a GEMM's weight loads and MMAs overlap only
    # partly (the kernel profiles' dense layers)
    ridge_exponent: float = math.inf
    # serving overheads an isolated-step profile does not contain (the server's loop, its per-request
    # bookkeeping, streaming); fitted to the measured serving runs
    serving_step_s: float = 0.0
    serving_sequence_s: float = 0.0
    serving_context_s: float = 0.0   # per token of the decodes' context per step (block tables grow with it)

    def __post_init__(self):
        for name in ("gemm_compute", "attention_compute", "memory", "kv_memory", "link", "gemm_factor",
                     "attention_factor"):
            object.__setattr__(self, name, checks.number(getattr(self, name), f"efficiencies.{name}", low=0,
                                                         low_open=True, high=1.5))
        if not (isinstance(self.ridge_exponent, float) and math.isinf(self.ridge_exponent) and self.ridge_exponent > 0):
            object.__setattr__(self, "ridge_exponent", checks.number(
                self.ridge_exponent, "efficiencies.ridge_exponent", low=1, high=64,
                hint="1 adds compute and memory time, math.inf takes their maximum (the plain roofline)"))
        for name in ("allreduce_s", "layer_s", "step_s", "sequence_s", "serving_step_s", "serving_sequence_s",
                     "serving_context_s"):
            object.__setattr__(self, name, checks.number(getattr(self, name), f"efficiencies.{name}", low=0,
                                                         unit="s", sane_high=1.0))


# The serving engines the roofline knows: each has its own kernels' speed and fixed costs (the GPU efficiencies
# are shared).  The runs and profiles the workbench ships were measured on these three.
ENGINES = {
    "vllm-v1": "vLLM's V1 engine (0.8 and later: CUDA graphs, FlashAttention, chunked prefill); the default",
    "vllm-v0.2": "vLLM v0.2 (2023: no CUDA graphs, xformers attention, sampling per sequence in Python, Ray for TP)",
    "distserve": "DistServe's engine (SwiftTransformer's C++ kernels; prefill and decode instances apart)",
}
DEFAULT_ENGINE = "vllm-v1"
# Fitted once by workbench.study.fidelity.roofline_fit.fit_all() across the kernel profiles, step-time profiles and measured
# runs the workbench ships (never per run); tests/test_roofline_fit.py re-runs the fit and checks these are what
# it gives, and benchmarks/roofline_targets.py prints what they give.
_GPU = dict(gemm_compute=0.73, attention_compute=0.44, memory=0.94, kv_memory=0.8, link=0.18,
            ridge_exponent=2.0)   # shared
ENGINE_EFFICIENCIES = {
    "vllm-v1": Efficiencies(**_GPU, gemm_factor=1.0, attention_factor=1.0, allreduce_s=0.0, layer_s=1.5e-05,
                            step_s=0.0031, sequence_s=1.3e-05, serving_step_s=0.0, serving_sequence_s=0.0,
                            serving_context_s=0.0),
    "vllm-v0.2": Efficiencies(**_GPU, gemm_factor=0.78, attention_factor=0.28, allreduce_s=0.00011, layer_s=0.0,
                              step_s=0.011, sequence_s=4.1e-05, serving_step_s=2.5e-06, serving_sequence_s=0.0004,
                              serving_context_s=1.6e-07),
    "distserve": Efficiencies(**_GPU, gemm_factor=1.3, attention_factor=0.45, allreduce_s=0.0, layer_s=0.00019,
                              step_s=0.0, sequence_s=2.5e-05, serving_step_s=0.005, serving_sequence_s=0.0002,
                              serving_context_s=0.0),
}
EFFICIENCIES = ENGINE_EFFICIENCIES[DEFAULT_ENGINE]
# every peak reached, nothing fixed: the floor of a step's time (Roofline.at_peak)
PEAK = Efficiencies(gemm_compute=1.0, attention_compute=1.0, memory=1.0, kv_memory=1.0, link=1.0, allreduce_s=0.0,
                    layer_s=0.0, step_s=0.0, sequence_s=0.0)

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
    """The roofline of ``model`` on ``gpu`` at tensor parallelism ``tp``, and for a mixture-of-experts model
    expert parallelism ``ep`` across a data-parallel group of ``ep`` replicas (see the module docstring)."""

    model: ModelArch
    gpu: GPU
    tp: int = 1
    dtype_bytes: int = 2
    efficiencies: Efficiencies = field(default=EFFICIENCIES)
    ep: int = 1

    def __post_init__(self):
        object.__setattr__(self, "model", get_model_arch(self.model))
        object.__setattr__(self, "gpu", get_gpu(self.gpu))
        object.__setattr__(self, "tp", checks.integer(self.tp, "tp", low=1, high=64,
                                                      hint="GPUs of one tensor-parallel replica"))
        object.__setattr__(self, "ep", checks.integer(self.ep, "ep", low=1, high=1024,
                                                      hint="data-parallel replicas sharing the experts"))
        if self.ep > 1 and not self.model.is_moe:
            raise ValueError(f"ep: expert parallelism needs a mixture-of-experts model; {self.model.name} has no "
                             "experts (use ep=1)")
        if self.ep > 1 and self.model.experts % self.ep:
            raise ValueError(f"ep: {self.model.name}'s {self.model.experts} experts cannot be split evenly over "
                             f"{self.ep} ranks; choose a divisor of {self.model.experts}")
        if self.model.heads % self.tp:
            raise ValueError(f"tp: {self.model.name} has {self.model.heads} attention heads, which {self.tp} GPUs "
                             f"cannot share evenly (vLLM requires heads % tp == 0); choose a divisor of "
                             f"{self.model.heads}")

    # ---- per-GPU sizes
    @property
    def _local(self):
        m, tp = self.model, self.tp
        return m.heads / tp, max(1.0, m.kv_heads / tp)

    def isolated(self) -> "Roofline":
        """This roofline without the serving overheads (what an isolated-step profile measures)."""
        import dataclasses

        return dataclasses.replace(self, efficiencies=dataclasses.replace(
            self.efficiencies, serving_step_s=0.0, serving_sequence_s=0.0, serving_context_s=0.0))

    def at_peak(self) -> "Roofline":
        """This roofline at 100% of every peak (compute, memory, interconnect) with no fixed costs: a floor no
        step of this deployment can beat (its kernels run one after another, each at best at the larger of its
        compute and memory time)."""
        import dataclasses

        return dataclasses.replace(self, efficiencies=PEAK)

    def parts(self, stats: StepStats) -> dict[str, np.ndarray]:
        """The step time's parts, seconds per step: ``gemm``, ``prefill_attention``, ``decode_attention`` (all
        layers), ``head`` (output head), ``communication``, ``overhead`` (layer, step and sequence costs)."""
        blend = lambda name, term: (ridge(*term, self.efficiencies.ridge_exponent)  # noqa: E731
                                    if name in RIDGE_PARTS else np.maximum(*term))
        return {name: blend(name, term) if isinstance(term, tuple) else term
                for name, term in self.terms(stats).items()}

    def terms(self, stats: StepStats) -> dict:
        """The parts of :meth:`parts` before their roofline maximum: ``gemm``, ``prefill_attention``,
        ``decode_attention`` and ``head`` as ``(compute_s, memory_s)`` (an attention part takes the larger, a GEMM
        part (``RIDGE_PARTS``) their :func:`ridge` blend, so the larger says what bounds it: the GPU's arithmetic or
        its memory bandwidth); ``communication`` and ``overhead`` as seconds."""
        m, g, e, b = self.model, self.gpu, self.efficiencies, float(self.dtype_bytes)
        tp = float(self.tp)
        heads, kv_heads = self._local
        flops, bw = g.flops_per_s, g.memory_bytes_per_s
        gemm_eff, att_eff = e.gemm_compute * e.gemm_factor, e.attention_compute * e.attention_factor
        tokens = stats.prefill_tokens + stats.decode_sequences
        sequences = stats.prefill_sequences + stats.decode_sequences
        h = m.hidden_size
        # linear layers of one layer
        ep = float(self.ep)
        if m.is_moe:
            k, experts = float(m.active_experts), float(m.experts)
            # the local experts (E / ep of them) the whole group's tokens touch
            touched = experts / ep * (1.0 - (1.0 - k / experts) ** (ep * tokens))
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
        gemm = (gemm_flops / (flops * gemm_eff), gemm_bytes / (bw * e.memory))
        # attention of one layer: prefill pieces, then decodes
        pair_flops = 4.0 * heads * m.head_dim
        kv_token_bytes = 2.0 * kv_heads * m.head_dim * b
        qo_token_bytes = 2.0 * heads * m.head_dim * b
        prefill_att = (stats.prefill_pairs * pair_flops / (flops * att_eff),
                       (stats.prefill_kv_tokens * kv_token_bytes + stats.prefill_tokens * qo_token_bytes)
                       / (bw * e.kv_memory))
        decode_att = (stats.decode_context * pair_flops / (flops * att_eff),
                      (stats.decode_context * kv_token_bytes + stats.decode_sequences * qo_token_bytes)
                      / (bw * e.kv_memory))
        # output head over the sequences that emit a token (vocabulary split over the GPUs; fp32 logits)
        emits = sequences > 0
        head = (np.where(emits, 2.0 * sequences * h * m.vocab_size / tp / (flops * gemm_eff), 0.0),
                np.where(emits, (h * m.vocab_size * b / tp + sequences * m.vocab_size * 4.0 / tp) / (bw * e.memory),
                         0.0))
        # tensor parallelism: two ring all-reduces of tokens x hidden per layer, the logits gathered once
        if self.tp > 1:
            ring = 2.0 * (tp - 1.0) / tp / (g.link_bytes_per_s * e.link)
            communication = (m.layers * 2.0 * (e.allreduce_s + ring * tokens * h * b)
                             + e.allreduce_s + (tp - 1.0) / tp * sequences * m.vocab_size * b
                             / (g.link_bytes_per_s * e.link))
        else:
            communication = np.zeros_like(tokens)
        if self.ep > 1:   # the hidden states all-gathered before each MoE layer and reduce-scattered after it
            communication = communication + m.layers * 2.0 * (
                e.allreduce_s + (ep - 1.0) * tokens * h * b / (g.link_bytes_per_s * e.link))
        overhead = (m.layers * e.layer_s + e.step_s + e.serving_step_s
                    + (e.sequence_s + e.serving_sequence_s) * sequences + e.serving_context_s * stats.decode_context)
        layers = lambda pair: (m.layers * pair[0], m.layers * pair[1])  # noqa: E731
        return {"gemm": layers(gemm), "prefill_attention": layers(prefill_att),
                "decode_attention": layers(decode_att), "head": head, "communication": communication,
                "overhead": overhead + 0.0 * tokens}

    def time_s(self, stats: StepStats) -> np.ndarray:
        """Seconds per step (one value per step of ``stats``)."""
        return sum(self.parts(stats).values())

    def step_time_s(self, prompt_lengths=(), prefix_lengths=None, context_lengths=()) -> float:
        """Seconds of one step (the arguments of ``StepTimeModel.step_time_s``)."""
        return float(self.time_s(StepStats.of_step(prompt_lengths, prefix_lengths, context_lengths)))

    def describe(self) -> str:
        return f"roofline {self.model.name}@{self.gpu.key}/tp{self.tp}" + (f"/ep{self.ep}" if self.ep > 1 else "")

    # ---- the engines' representation
    def table(self, *, max_tokens: int = 2**24, max_sequences: int = 2**17, max_context: int = 2**24):
        """This roofline as a :class:`~workbench.sim.steptable.StepTable` (the engines' tabulated step form):

        * ``token_s(tokens)``: the linear layers of every layer and the all-reduces, on a grid of 8 points per
          doubling (interpolation error under 1% at the compute/memory knee);
        * ``seq_s(sequences)``: the output head, the logits' gather and ``sequence_s`` per sequence;
        * ``attention_s(pc, kp, nd, kv)``: decode attention ``layers x max(compute, memory)`` of ``nd`` decodes
          at mean context ``kv`` (bilinear in ``nd`` and ``kv``, so the two-point grids are exact), and the part
          of prefill attention not in the quadratic term: ``C pc kp / 2 + C pc / 2`` plus the excess of the
          memory time over the compute time (tiny chunks over long cached contexts), for one piece;
        * ``prefill_quad_s = C / 2`` per ``sum(l (p + l))``, ``C`` the compute time of one causal query-key pair
          in all layers: with the table's part, a piece's attention compute is ``C (l p + l^2 / 2 + l / 2)``,
          exactly the roofline's ``C l (p + (l + 1) / 2)``;
        * the fixed cost ``step_s + layers x layer_s`` for prefill and decode steps alike.

        Beyond the grids (``max_tokens``, ``max_sequences``, ``max_context``) it extrapolates linearly, where
        every part is linear."""
        from workbench.sim.steptable import StepTable

        m, e = self.model, self.efficiencies
        per_doubling = 8
        token_grid = _geometric(max_tokens, per_doubling)
        seq_grid = _geometric(max_sequences, 4)
        tokens_only = self.parts(StepStats.of(decode_sequences=token_grid, decode_context=0 * token_grid))
        token_s = tokens_only["gemm"] + tokens_only["communication"] - self._gather_s(token_grid)
        seqs_only = self.parts(StepStats.of(decode_sequences=seq_grid, decode_context=0 * seq_grid))
        seq_s = seqs_only["head"] + self._gather_s(seq_grid) + (e.sequence_s + e.serving_sequence_s) * seq_grid
        # prefill attention: pair compute C and the single-piece memory excess over it, on (pc, kp)
        pc = _geometric(max_tokens, 1)
        kp = _geometric(max_context, 1)
        heads, kv_heads = self._local
        g, b = self.gpu, float(self.dtype_bytes)
        pair_s = m.layers * 4.0 * heads * m.head_dim / (g.flops_per_s * e.attention_compute * e.attention_factor)
        kv_token_s = m.layers * 2.0 * kv_heads * m.head_dim * b / (g.memory_bytes_per_s * e.kv_memory)
        qo_token_s = m.layers * 2.0 * heads * m.head_dim * b / (g.memory_bytes_per_s * e.kv_memory)
        P, K = np.meshgrid(pc, kp, indexing="ij")
        compute = pair_s * P * (K + (P + 1) / 2)
        memory = kv_token_s * (K + P) + qo_token_s * P
        prefill_part = pair_s * (P * K / 2 + P / 2) + np.maximum(0.0, memory - compute)
        prefill_part[0, :] = 0.0   # no prefill tokens: no prefill attention
        # decode attention on (nd, kv): nd x max(Cd kv, Md kv + Q); bilinear unless compute overtakes memory
        nd = np.array([0.0, float(max_sequences)])
        kv = [0.0, float(max_context)]
        if pair_s > kv_token_s:   # the kink where decode attention turns compute-bound
            kink = qo_token_s / (pair_s - kv_token_s)
            if 0 < kink < max_context:
                kv.append(kink)
        kv = np.unique(kv)
        N, V = np.meshgrid(nd, kv, indexing="ij")
        decode_part = N * np.maximum(pair_s * V, kv_token_s * V + qo_token_s) + e.serving_context_s * N * V
        attention = prefill_part[:, :, None, None] + decode_part[None, None, :, :]
        fixed = e.step_s + e.serving_step_s + m.layers * e.layer_s
        return StepTable(token_grid=token_grid, token_s=token_s, seq_grid=seq_grid, seq_s=seq_s, pc_grid=pc,
                         kp_grid=kp, nd_grid=nd, kv_grid=kv, attention_s=attention, prefill_quad_s=pair_s / 2,
                         fixed_prefill_s=fixed, fixed_decode_s=fixed, extrapolate=True, kind="roofline",
                         source=self.source())

    def _gather_s(self, sequences: np.ndarray) -> np.ndarray:
        """The logits' gather to the first GPU (tensor parallelism), per step of ``sequences`` sequences."""
        if self.tp == 1:
            return np.zeros_like(sequences, dtype=np.float64)
        m, e, tp = self.model, self.efficiencies, float(self.tp)
        return (tp - 1.0) / tp * sequences * m.vocab_size * self.dtype_bytes / (self.gpu.link_bytes_per_s * e.link)

    def source(self) -> str:
        e = self.efficiencies
        return (f"roofline (not measured) of {self.model.hf_id or self.model.name} on {self.gpu.name} at tp={self.tp}"
                f"{f', ep={self.ep}' if self.ep > 1 else ''}: "
                f"config.json facts and spec-sheet peaks (data/hardware/), efficiencies fitted once "
                f"(workbench.study.fidelity.roofline_fit: compute {e.gemm_compute:g}/{e.attention_compute:g}, memory "
                f"{e.memory:g}/{e.kv_memory:g}, link {e.link:g})")


RIDGE_PARTS = ("gemm", "head")   # parts whose compute and memory times blend at the ridge (:func:`ridge`)


def ridge(compute_s, memory_s, exponent: float):
    """A GEMM's time from its compute and memory times: ``(c^p + m^p)^(1/p)`` (``p = exponent``; the plain
    roofline's ``max(c, m)`` when ``p`` is infinite)."""
    compute_s, memory_s = np.asarray(compute_s, dtype=np.float64), np.asarray(memory_s, dtype=np.float64)
    if math.isinf(exponent):
        return np.maximum(compute_s, memory_s)
    big = np.maximum(compute_s, memory_s)
    ratio = np.divide(np.minimum(compute_s, memory_s), big, out=np.zeros_like(big), where=big > 0)
    return big * (1.0 + ratio ** exponent) ** (1.0 / exponent)


# -------------------------------------------------------------------------------- the engines' linear form
def linear_fit(roofline: Roofline, *, max_num_seqs: int = 256, max_num_batched_tokens: int = 16384,
               max_context: int = 8192, split: bool = True) -> dict:
    """Least-squares (relative) fit of the engines' linear step form to the roofline over the batches a run
    forms, the stopgap that runs a roofline in today's compiled engines.

    Prefill ``a + b sum(l) + c sum(l (p + l))`` over steps of one to eight prompts of 16 to
    ``max_num_batched_tokens`` tokens in all, some after a cached prefix; decode ``a + b sum(ctx) + c n`` in two
    regimes split at the threshold (of 8, 16, ..., ``max_num_seqs``) that fits best (one regime with
    ``split=False``: ``decode_large`` is then None), over 1 to ``max_num_seqs`` requests of 16 to ``max_context``
    tokens.  Returns the ``StepTimeModel`` fields (``prefill``, ``decode``,
    ``decode_large``, ``decode_large_threshold``, ``pipeline_overhead_s``) and the fit's median and largest
    relative error (``fit_median_error``, ``fit_max_error``)."""
    lengths = np.unique(np.geomspace(16, max_num_batched_tokens, 24).astype(int))
    steps = []
    for pieces in (1, 2, 4, 8):
        for L in lengths:
            if pieces * L <= max_num_batched_tokens:
                steps.append(([int(L)] * pieces, [0] * pieces))
    for L in lengths[lengths <= 2048]:
        for prefix in (512, 2048, 8192):
            steps.append(([int(L)], [prefix]))
    lengths_of = [np.array(l, dtype=float) for l, _ in steps]
    prefix_of = [np.array(p, dtype=float) for _, p in steps]
    sums = {key: np.array([f(l, p) for l, p in zip(lengths_of, prefix_of)]) for key, f in (
        ("tokens", lambda l, p: l.sum()), ("quad", lambda l, p: (l * (p + l)).sum()),
        ("pairs", lambda l, p: (l * (p + (l + 1) / 2)).sum()), ("kv", lambda l, p: (p + l).sum()),
        ("pieces", lambda l, p: float(l.size)))}
    times = roofline.time_s(StepStats.of(prefill_tokens=sums["tokens"], prefill_pairs=sums["pairs"],
                                         prefill_kv_tokens=sums["kv"], prefill_sequences=sums["pieces"]))
    rows = np.column_stack([np.ones_like(sums["tokens"]), sums["tokens"], sums["quad"]])
    prefill, prefill_err = _relative_lstsq(rows, times)

    batches = np.unique(np.geomspace(1, max_num_seqs, 40).astype(int))
    contexts = np.unique(np.geomspace(16, max_context, 12).astype(int))
    n, ctx = (a.ravel().astype(float) for a in np.meshgrid(batches, contexts))
    decode_t = roofline.time_s(StepStats.of(decode_sequences=n, decode_context=n * ctx))
    design = np.column_stack([np.ones_like(n), n * ctx, n])
    whole, whole_err = _relative_lstsq(design, decode_t)
    best = (None, whole, None, whole_err)
    for threshold in [t for t in (8, 16, 32, 64, 128, 256, 512) if split and t <= max_num_seqs]:
        small, large = n < threshold, n >= threshold
        if small.sum() < 3 or large.sum() < 3:
            continue
        c_small, e_small = _relative_lstsq(design[small], decode_t[small])
        c_large, e_large = _relative_lstsq(design[large], decode_t[large])
        errors = np.concatenate([e_small, e_large])
        if best is None or np.abs(errors).mean() < np.abs(best[3]).mean():
            best = (threshold, c_small, c_large, errors)
    threshold, c_small, c_large, decode_err = best
    errors = np.abs(np.concatenate([prefill_err, decode_err]))
    e = roofline.efficiencies
    return {"prefill": tuple(prefill), "decode": tuple(c_small),
            "decode_large": None if c_large is None else tuple(c_large),
            "decode_large_threshold": 0 if threshold is None else int(threshold),
            # what every pipeline stage of a pipelined decode repeats: the step's fixed cost
            "pipeline_overhead_s": e.step_s + e.serving_step_s,
            "fit_median_error": float(np.median(errors)), "fit_max_error": float(errors.max())}


def _geometric(top: float, per_doubling: int) -> np.ndarray:
    """0, 1, 2, ..., 16, then ``per_doubling`` points per doubling up to ``top`` (ascending, unique)."""
    doublings = math.log2(top / 16)
    tail = 16.0 * 2.0 ** (np.arange(1, int(round(doublings * per_doubling)) + 1) / per_doubling)
    return np.unique(np.concatenate([np.arange(0.0, 17.0), tail, [float(top)]]))


def _relative_lstsq(design: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative coefficients minimising the squared relative error, and the relative errors."""
    from scipy.optimize import nnls

    weight = 1.0 / times
    coef, _ = nnls(design * weight[:, None], times * weight)
    return coef, design @ coef / times - 1.0


# ------------------------------------------------------------------------------------ the step-time model
DTYPES = {"bf16": 2, "bfloat16": 2, "fp16": 2, "float16": 2, "half": 2}


def step_model(model, gpu, *, tp: int = 1, dtype: str = "bf16", engine: str = DEFAULT_ENGINE, table: bool = True,
               max_num_seqs: int = 256, max_num_batched_tokens: int = 16384, name: str | None = None,
               efficiencies: Efficiencies | None = None, ep: int = 1):
    """The roofline of ``model`` on ``gpu`` at ``tp`` as a :class:`~workbench.sim.steptime.StepTimeModel`.

    ``table=True`` (default): priced by the roofline's :class:`~workbench.sim.steptable.StepTable` (every
    engine: continuous, static step mode, disaggregated; kind ``"roofline"``).  ``table=False``: the engines'
    linear form fitted to the roofline over the batches of ``max_num_seqs`` and ``max_num_batched_tokens``
    (:func:`linear_fit`), for what takes only linear models (calibration); its name says so.
    ``dtype``: the served values' type, 16-bit (``"bf16"``, ``"fp16"``); the GPU's dense 16-bit peak applies.
    ``engine``: the serving engine whose efficiencies apply (:data:`ENGINES`; ``efficiencies`` replaces them).
    ``ep``: a mixture-of-experts model's expert parallelism over a data-parallel group of ``ep`` replicas (each
    replica one step model; simulate ``ep`` replicas per group).
    A model whose weights and one request of ``max_num_batched_tokens`` tokens do not fit the ``tp`` GPUs'
    memory (vLLM's rule, :func:`kv_blocks`) is refused with the numbers (:class:`DoesNotFit`)."""
    from workbench.sim.steptime import StepTimeModel

    checks.choice(dtype, "dtype", DTYPES, hint="the roofline models 16-bit weights, activations and KV cache "
                                               "(quantised serving is not modelled)")
    checks.choice(engine, "engine", ENGINES)
    efficiencies = ENGINE_EFFICIENCIES[engine] if efficiencies is None else efficiencies
    roofline = Roofline(model, gpu, tp, DTYPES[dtype], efficiencies, ep)
    # a deployment that cannot hold its weights and one request's KV cache is refused with the numbers
    kv_blocks(roofline.model, roofline.gpu, tp=roofline.tp, ep=roofline.ep,
              max_num_batched_tokens=max_num_batched_tokens, max_num_seqs=max_num_seqs,
              dtype_bytes=roofline.dtype_bytes)
    label = name or (f"{roofline.model.name}@{roofline.gpu.key}/tp{roofline.tp}"
                     + (f"/ep{roofline.ep}" if roofline.ep > 1 else "")
                     + ("" if engine == DEFAULT_ENGINE else f" ({engine})"))
    fitted = linear_fit(roofline, max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                        split=not table)
    if table:   # the linear coefficients only summarise the table (descriptions); the table prices every step
        tab = roofline.table()
        return StepTimeModel(prefill=fitted["prefill"], decode=fitted["decode"], table=tab, name=label,
                             source=tab.source,
                             pipeline_overhead_s=efficiencies.step_s + efficiencies.serving_step_s)
    return StepTimeModel(prefill=fitted["prefill"], decode=fitted["decode"], decode_large=fitted["decode_large"],
                         decode_large_threshold=fitted["decode_large_threshold"],
                         pipeline_overhead_s=fitted["pipeline_overhead_s"], name=f"{label} (roofline, linear fit)",
                         source=f"{roofline.source()}; linear form fitted over batches of up to {max_num_seqs} "
                                f"requests and {max_num_batched_tokens} tokens (median error "
                                f"{fitted['fit_median_error']:.1%}, largest {fitted['fit_max_error']:.1%})")


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
              max_num_seqs: int = 256, dtype_bytes: int | None = None, ep: int = 1) -> dict:
    """vLLM's memory budget of one GPU of a ``tp``-way replica, in bytes: ``total``, ``usable`` (x
    gpu_memory_utilization), ``weights`` (/ tp; a mixture of experts' experts also / ``ep``, the expert-parallel
    group), ``activation_peak``, ``kv`` (what is left, may be negative) and ``kv_bytes_per_token`` (on this
    GPU)."""
    m, g = get_model_arch(model), get_gpu(gpu)
    b = dtype_bytes or m.dtype_bytes
    usable = g.total_memory_bytes * gpu_memory_utilization
    experts = m.layers * m.expert_params * m.experts * b if m.is_moe else 0.0
    weights = (m.weight_bytes(b) - experts * (1.0 - 1.0 / ep)) / tp
    peak = activation_peak_bytes(m, tp=tp, max_num_batched_tokens=max_num_batched_tokens,
                                 max_num_seqs=max_num_seqs, dtype_bytes=b)
    return {"total": g.total_memory_bytes, "usable": usable, "weights": weights, "activation_peak": peak,
            "kv": usable - weights - peak, "kv_bytes_per_token": m.kv_bytes_per_token(b, tp)}


class DoesNotFit(ValueError):
    """A model whose weights and minimum KV cache exceed the GPU's memory at that tensor parallelism."""


def kv_blocks(model, gpu, *, tp: int = 1, block_size: int = 16, gpu_memory_utilization: float = 0.9,
              max_num_batched_tokens: int = 8192, max_num_seqs: int = 256, min_tokens: int | None = None,
              dtype_bytes: int | None = None, ep: int = 1) -> int:
    """KV-cache blocks of ``block_size`` tokens one replica holds, as vLLM computes num_gpu_blocks: (total
    memory x gpu_memory_utilization - weights / tp - activation peak) // (block_size x KV bytes per token per
    GPU).  Refused with the numbers (:class:`DoesNotFit`) when the blocks would not hold ``min_tokens``
    (default: one request of ``max_num_batched_tokens`` tokens, what vLLM needs to start)."""
    tp = checks.integer(tp, "tp", low=1, high=64)
    ep = checks.integer(ep, "ep", low=1, high=1024)
    block_size = checks.integer(block_size, "block_size", low=1, high=65_536)
    gpu_memory_utilization = checks.number(gpu_memory_utilization, "gpu_memory_utilization", low=0, low_open=True,
                                           high=1)
    budget = kv_memory(model, gpu, tp=tp, gpu_memory_utilization=gpu_memory_utilization,
                       max_num_batched_tokens=max_num_batched_tokens, max_num_seqs=max_num_seqs,
                       dtype_bytes=dtype_bytes, ep=ep)
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
           "kv_blocks", "kv_memory", "linear_fit", "step_model"]
