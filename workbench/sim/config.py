"""The simulation scenario as frozen, validated data."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from workbench import checks

from workbench.sim.autoscaling import AUTOSCALERS, METRICS as AUTOSCALE_METRICS, SHARE_METRICS
from workbench.sim.memory import DEFAULT_MEMORY, ModelSpec, get_model
from workbench.sim.routers import DISAGG_ROUTERS, ROUTERS
from workbench.sim.predictors import PREDICTORS
from workbench.sim.schedulers import BIN_POLICIES, SCHEDULERS


_INT32_MAX = 2**31 - 1
# Upper bounds of the integer fields (every int field but seed; 2**31 - 1 unless listed): the compiled
# engine sizes arrays by some of them (per GPU, per bin, per bin x window) and counts in fixed-width
# integers. Far above any meaningful setting.
_INT_LIMITS = {
    "num_gpus": (100_000, "the engine keeps per-GPU state; 10**9 GPUs would take minutes and gigabytes"),
    "k_bins": (10_000, "the engine keeps per-bin queues and controllers"),
    "ctrl_window": (10_000, "the engine keeps a window of this many batches per bin in memory"),
    **{name: (100_000, "the disaggregated engine keeps state per instance and pipeline stage")
       for name in ("prefill_replicas", "prefill_tp", "decode_replicas", "decode_tp", "decode_pp")},
}
_INT_LIMIT_DEFAULT = (_INT32_MAX, "the compiled engine counts in 32-bit integers")
_INT_LIMITS["block_size"] = (
    65_536, "the continuous engine keeps a histogram of block_size entries per replica; vLLM uses 8 to 32")
# Real fields: name -> (zero excluded, unit, plausibility bound, how to write it in the right unit).  A value
# above the bound is a unit mistake (bytes for GB, milliseconds for seconds), refused rather than simulated.
_GB_HINT = "the field is in GB (1e9 bytes): 16 GB is 16, not 16e9"
_REAL_FIELDS = {
    "d_sla_s": (True, "s", None, ""),
    "sla_budget_fraction": (True, "", None, ""),
    "gpu_mem_gb": (True, "GB", 10_000.0, _GB_HINT + "; a tensor-parallel replica of 8 H200s has 1,128 GB"),
    "gpu_memory_utilization": (True, "", None, ""),
    "kv_gb_per_token": (True, "GB", 0.1, "the field is in GB per token: OPT-13B's 819,200 bytes are 8.192e-4"),
    "predictor_sigma": (False, "", 10.0, "a log-normal sigma: 0.5 is a typical error of about 50%"),
    "ctrl_eps_fraction": (False, "", None, ""),
    "mem_theta": (False, "", None, ""),
    "model_mem_gb": (False, "GB", 10_000.0, _GB_HINT),
    "mem_margin_gb": (False, "GB", 10_000.0, _GB_HINT),
    # disaggregated deployments
    "kv_link_gbps": (True, "Gbit/s", 100_000.0, "the field is in Gbit/s (bits, not bytes, per second): NVLink 3's "
                                                 "300 GB/s is 2400, not 300e9 or 2.4e12"),
    "kv_link_latency_s": (False, "s", 10.0, "the field is in seconds: 50 microseconds is 5e-5"),
    "decode_waiting_block_fraction": (True, "", None, ""),
}
# Continuous-engine settings the static engine does not have (refused when changed, never ignored)
_NOT_STATIC = {
    "router": "static schedulers hand whole batches to idle GPUs as they free up (work conserving), with no "
              "per-request router",
    "chunked_prefill": "a static batch is one prefill of its prompts then lock-step decodes (no chunks, no steps "
                       "that mix prefill and decode)",
    "prefix_caching": "the static engine has no KV cache to reuse (every prompt token is computed)",
    "kv_watermark": "the static engine admits by batch size (b_max, batch_size), not by free KV blocks",
    "max_paddings": "a static batch's padding is bounded by its bins, not by vLLM's max_paddings",
    "reserve_full_isl": "a static batch is admitted whole, by its tokens against the KV capacity",
    "dp_lockstep": "a static batch runs on one GPU on its own, with no data-parallel group to keep in step",
}
# Continuous-engine settings the disaggregated engine does not have (refused when changed, never ignored)
_NOT_DISAGGREGATED = {
    "router": "the disaggregated scheduler routes arrivals with prefill_router and prefilled requests with "
              "decode_router (round_robin, least_outstanding)",
    "chunked_prefill": "the disaggregated engine follows DistServe, whose prefill instances compute whole prompts in "
                       "batches under prefill_max_tokens (no chunks, no mixed steps)",
    "prefix_caching": "the disaggregated engine has no prefix cache (DistServe's prefill instances compute every "
                      "prompt token)",
    "kv_watermark": "a decode instance admits moved KV caches under decode_waiting_block_fraction (DistServe's "
                    "rule), with no vLLM watermark",
    "max_paddings": "DistServe's prefill batches are bounded by prefill_max_batch_size and prefill_max_tokens, "
                    "not by padding",
    "reserve_full_isl": "DistServe's prefill instances admit whole prompts (no chunks)",
    "dp_lockstep": "DistServe's prefill and decode instances run their steps independently",
    "max_num_seqs": "each pool has its own limits: prefill_max_batch_size and decode_max_batch_size",
    "max_num_batched_tokens": "a prefill step's tokens are bounded by prefill_max_tokens",
    "kv_blocks": "each instance has its own KV cache: prefill_kv_blocks and decode_kv_blocks (None derives them "
                 "from the memory fields)",
}
_PRESET_FIELDS = ("kv_gb_per_token", "model_mem_gb")  # None: the model preset's value
# Shares of something (of the SLA, of the budget): 90 meant as 90% is refused, never simulated.
_SHARES = {"sla_budget_fraction": "a share of d_sla_s in (0, 1]",
           "ctrl_eps_fraction": "a share of the latency budget in [0, 1]"}


def _f(default, help: str):
    return field(default=default, metadata={"help": help})


# The memory of the hardware the default step-time profile was measured on (OPT-13B on one A100-80GB): the
# library's default, the suite's too, so a static scheduler in step mode and a continuous one share step times and
# KV cache.  The seed grid's: SimConfig(**profile_config_fields("seed-grid")).
_MEMORY = DEFAULT_MEMORY


@dataclass(frozen=True)
class SimConfig:
    """Everything that, with the trace and the latency model, determines a simulation.

    ``SimConfig.help()`` lists every field with its meaning.  Building one
    touches no disk and prints nothing; a bad value raises ``ValueError``.
    """

    scheduler: str = _f("multi_bin_dynamic", "scheduling policy, one of the registered names")
    num_gpus: int = _f(
        None, "identical GPUs in the pool (>= 1; None = 1); disaggregated: derived, prefill_replicas x prefill_tp + "
              "decode_replicas x decode_tp x decode_pp (a different value is refused)")
    k_bins: int = _f(4, "bins by predicted output length for multi-bin schedulers (>= 1)")
    batch_size: int = _f(8, "batch size of static_fifo (up to) and multi_bin_fixed (exactly)")
    d_sla_s: float = _f(1.0, "end-to-end latency SLA per request, seconds (> 0)")
    predictor: str = _f("prompt_power_law", "output-length predictor used for binning")
    predictor_sigma: float = _f(0.5, "log-normal sigma of the 'noisy' predictor")
    bin_policy: str = _f("oldest", "which bin an idle GPU serves: oldest, round_robin, longest_queue")
    edge_sample: int = _f(0, "requests (from the start of the trace) used to fit bin edges; 0 = all")
    b_min: int = _f(1, "smallest batch the dynamic controllers may choose")
    b_max: int = _f(
        32, "largest batch the dynamic controllers may choose; Algorithm 2's interval stops at b_max - alpha/2 "
            "(b_low <= b_high - ctrl_alpha), so the SLA controller's limit never exceeds "
            "b_max - ceil(ctrl_alpha / 2) (31 with the defaults); raise b_max by ceil(alpha/2) to allow b_max")
    sla_budget_fraction: float = _f(
        1.0, "share of d_sla_s that a batch's service time may use: the SLA controller's target")
    ctrl_alpha: int = _f(2, "Algorithm 2 alpha: minimum width of the [b_low, b_high] interval")
    ctrl_delta: int = _f(2, "Algorithm 2 delta: step by which the interval is widened")
    ctrl_eps_fraction: float = _f(0.05, "Algorithm 2 eps as a fraction of the latency budget (hold band)")
    ctrl_window: int = _f(8, "completed batches averaged into tau and b_bar")
    ctrl_retry_batches: int = _f(
        256, "when even the SLA controller's smallest batches miss the budget it releases the bin (limit back "
             "to the top, over-budget feedback ignored) for this many completed batches of the bin, then tries "
             "shrinking again; 0 = never")
    spread_idle: bool = _f(
        True, "dynamic schedulers: when several GPUs are idle, share the waiting requests out among them")
    mem_theta: float = _f(2.0, "Algorithm 1 theta: std-devs of batch tokens held in reserve")
    model: str = _f(_MEMORY["model"], "served model (memory preset of workbench.sim.memory.MODELS): sets the "
                                      "KV cache per token and the weights unless given below; default: the default "
                                      "profile's (opt-13b on one A100-80GB)")
    gpu_mem_gb: float = _f(_MEMORY["gpu_mem_gb"], "GPU memory, GB (1e9 bytes); default: an A100-80GB's as torch "
                                                  "reads it")
    gpu_memory_utilization: float = _f(_MEMORY["gpu_memory_utilization"],
                                       "share of gpu_mem_gb the server may use (vLLM's setting), (0, 1]")
    model_mem_gb: float | None = _f(None, "memory taken by the model weights, GB; None = the model preset's")
    kv_gb_per_token: float | None = _f(
        None, "KV-cache memory per token (prompt + output), GB; None = the model preset's "
              "(2 x layers x KV heads x head size x bytes)")
    mem_margin_gb: float = _f(_MEMORY["mem_margin_gb"], "memory kept free for activations and fragmentation, GB")
    seed: int = _f(0, "seed of every random choice in the simulation (the predictor's noise)")
    # --- continuous-batching engine (continuous_* schedulers; see workbench.sim.continuous_engine)
    max_num_seqs: int = _f(256, "continuous: most requests running on a replica at once (vLLM max_num_seqs); "
                                "also continuous_sla's B_max (b_max is for the static controllers)")
    max_num_batched_tokens: int = _f(
        16384, "continuous: token budget of one step (vLLM max_num_batched_tokens); without chunked prefill "
               "a longer prompt is rejected; with it, must be >= max_num_seqs")
    chunked_prefill: bool = _f(
        False, "continuous: False = vLLM v0.2 (a step is prefill-only or decode-only), True = v1 (decodes "
               "first, then prefill chunks under the token budget, mixed in one step)")
    block_size: int = _f(16, "continuous: tokens per KV-cache block")
    kv_blocks: int | None = _f(
        None, "continuous: KV-cache blocks per replica; None = derived: kv_capacity_tokens // block_size "
              "(kv_capacity_tokens from the memory fields above)")
    router: str = _f(
        "round_robin", "continuous: how arrivals are routed to replicas: round_robin, least_outstanding "
                       "(fewest routed and unfinished requests), least_kv (fewest KV blocks in use + waiting), "
                       "prefix_affinity (the replica caching the longest prefix of the prompt, unless it has more "
                       "than prefix_affinity_margin requests over the least loaded; needs prefix_caching)")
    prefix_caching: bool = _f(
        False, "continuous: vLLM's automatic prefix caching: full KV blocks of prompt prefixes (the trace's "
               "prefix_hashes) and of a preempted request's tokens stay cached (LRU) and are reused, so a "
               "prefill computes only the uncached tokens")
    kv_watermark: float | None = _f(
        None, "continuous: share of the KV blocks kept free when admitting a waiting request, in [0, 1); None = "
              "vLLM's own: 0.01 without chunked prefill (v0.2 BlockSpaceManager), 0 with it (v1 keeps none)")
    max_paddings: int = _f(
        256, "continuous, chunked_prefill=False (vLLM v0.2): most padding tokens a prefill step may carry (its "
             "prompts are padded to the longest); vLLM v0.2.3's default")
    reserve_full_isl: bool = _f(
        False, "continuous, chunked_prefill=True: admit a waiting request only when the KV blocks of its whole "
               "sequence (prompt + tokens generated) are free, not just its first chunk's (vLLM's "
               "scheduler_reserve_full_isl, on by default from vLLM 0.19; False = earlier v1 versions)")
    dp_lockstep: bool = _f(
        False, "continuous, chunked_prefill=True: the num_gpus replicas are the ranks of one vLLM data-parallel group "
               "(a mixture-of-experts model with expert parallelism across them): every rank runs each step with the "
               "others, an idle one a dummy step, all padded to the group's largest token count, so the group moves "
               "at its slowest rank's pace (rule 17 of workbench.sim.continuous_engine); False = independent replicas")
    prefix_affinity_margin: int = _f(
        16, "continuous, router=prefix_affinity: how many more outstanding requests than the least loaded replica "
            "the replica with the longest cached prefix may have and still be chosen")
    ttft_sla_s: float = _f(1.0, "continuous: time-to-first-token limit per request, seconds (> 0)")
    tpot_sla_s: float = _f(
        0.05, "continuous: time-per-output-token limit per request, seconds (> 0); continuous_sla's "
              "controller target is sla_budget_fraction * tpot_sla_s")
    # --- disaggregated prefill and decode (scheduler "disaggregated"; rules in workbench.sim.disagg_engine)
    prefill_replicas: int = _f(1, "disaggregated: prefill instances (>= 1)")
    prefill_tp: int = _f(1, "disaggregated: GPUs of one prefill instance (its tensor-parallel degree)")
    decode_replicas: int = _f(1, "disaggregated: decode instances (>= 1)")
    decode_tp: int = _f(1, "disaggregated: tensor-parallel degree of a decode instance")
    decode_pp: int = _f(
        1, "disaggregated: pipeline stages of a decode instance (it has decode_tp x decode_pp GPUs and up to "
           "decode_pp micro-batches in flight)")
    prefill_max_batch_size: int = _f(
        128, "disaggregated: most prompts in one prefill step (DistServe --context-max-batch-size)")
    prefill_max_tokens: int = _f(
        8192, "disaggregated: prompt tokens of one prefill step (DistServe --context-max-tokens-per-batch); a "
              "longer prompt is rejected")
    decode_max_batch_size: int = _f(
        1024, "disaggregated: most requests in one decode micro-batch (DistServe --decoding-max-batch-size)")
    prefill_kv_blocks: int | None = _f(
        None, "disaggregated: KV-cache blocks of a prefill instance; None = derived from the memory fields for "
              "prefill_tp GPUs (see instance_kv_tokens)")
    decode_kv_blocks: int | None = _f(
        None, "disaggregated: KV-cache blocks of a decode instance; None = derived from the memory fields for "
              "decode_tp x decode_pp GPUs (see instance_kv_tokens)")
    decode_waiting_block_fraction: float = _f(
        0.05, "disaggregated: a decode instance accepts a prefilled request's KV only while the blocks of the "
              "moved requests not yet decoding stay under this share of its blocks (DistServe's "
              "waiting_block_prop_threshold), in (0, 1]")
    prefill_router: str = _f(
        "least_outstanding", "disaggregated: how arrivals are routed to prefill instances: round_robin, "
                             "least_outstanding (fewest routed and not yet prefilled)")
    decode_router: str = _f(
        "least_outstanding", "disaggregated: how prefilled requests are routed to decode instances: round_robin, "
                             "least_outstanding (fewest routed and not finished)")
    kv_link_gbps: float = _f(
        2400.0, "disaggregated: bandwidth of the link that moves the KV cache from a prefill to a decode instance, "
                "Gbit/s (> 0; 2400 = NVLink 3, 300 GB/s each way, between A100s of one node)")
    kv_link_latency_s: float = _f(0.0, "disaggregated: fixed time of one KV transfer, seconds (>= 0)")
    # --- autoscaling (continuous engine; rule 16 of workbench.sim.continuous_engine, policies in sim/autoscaling)
    autoscaler: str | None = _f(
        None, "continuous: None = a fixed pool of num_gpus replicas; else the registered policy that sets the replica "
              "count during the run: 'threshold' (reactive, holds autoscale_metric at autoscale_target per replica) "
              "or 'schedule' (replica_schedule, e.g. from a provisioning plan); num_gpus is then the count at time 0")
    min_replicas: int = _f(1, "autoscaling: fewest replicas active or starting (>= 1)")
    max_replicas: int | None = _f(
        None, "autoscaling: most replicas provisioned at once, draining ones included (a GPU quota); None = the "
              "policy's own ('schedule': its largest count; 'threshold' needs it given)")
    autoscale_interval_s: float = _f(
        15.0, "autoscaling: seconds between control instants, where the policy reads the pool and sets the count "
              "(Kubernetes' HPA sync period, 15 s)")
    autoscale_metric: str = _f(
        "concurrency", "autoscaling, 'threshold': the per-replica metric held at the target: concurrency (waiting + "
                       "running requests), waiting (queue length), kv (share of the KV cache in use), busy (share "
                       "of the time running steps), rps (requests arriving per second)")
    autoscale_target: float = _f(
        8.0, "autoscaling, 'threshold': the metric's target per replica (requests for concurrency and waiting, a "
             "share in (0, 1] for kv and busy, requests/s for rps)")
    autoscale_tolerance: float = _f(
        0.1, "autoscaling, 'threshold': no change while the metric is within this share of its target (the HPA's "
             "0.1)")
    autoscale_window_s: float = _f(
        60.0, "autoscaling, 'threshold': the metric is averaged over the control instants of this many seconds "
              "(Knative's stable window, 60 s)")
    cold_start_s: float = _f(
        120.0, "autoscaling: seconds from starting a replica to its first request (provisioning, container start, "
               "loading the weights); billed")
    scale_down_after_s: float = _f(
        300.0, "autoscaling: a stabilised policy's count falls only to the highest it asked for over this many "
               "seconds (the HPA's scale-down stabilisation window, 300 s); 0 = at once")
    replica_schedule: tuple[int, ...] = _f(
        (), "autoscaling, 'schedule': replicas for each period of schedule_interval_s from time 0 (the last holds "
            "after the end)")
    schedule_interval_s: float = _f(3600.0, "autoscaling, 'schedule': seconds each entry of replica_schedule lasts")
    autoscale_until_s: float = _f(
        0.0, "autoscaling: the control loop runs at least until this time, so the pool is recorded and billed to "
             "then (e.g. 86400: the whole day) even after the last request is done; 0 = until the last is done")

    def __post_init__(self):
        static = sorted(n for n, c in SCHEDULERS.items() if c.engine == "static")
        continuous = sorted(n for n, c in SCHEDULERS.items() if c.engine == "continuous")
        disaggregated = sorted(n for n, c in SCHEDULERS.items() if c.engine == "disaggregated")
        # static batches first, then continuous batching, then prefill and decode on separate GPUs
        checks.choice(self.scheduler, "scheduler", static + continuous + disaggregated)
        checks.choice(self.predictor, "predictor", PREDICTORS)
        checks.choice(self.bin_policy, "bin_policy", BIN_POLICIES)
        ints = {"k_bins": 1, "batch_size": 1, "b_min": 1, "b_max": 1, "ctrl_alpha": 1,
                "ctrl_delta": 1, "ctrl_window": 1, "ctrl_retry_batches": 0, "edge_sample": 0, "seed": 0,
                "max_num_seqs": 1, "max_num_batched_tokens": 1, "block_size": 1, "max_paddings": 0,
                "prefix_affinity_margin": 0,
                # disaggregated deployments
                "prefill_replicas": 1, "prefill_tp": 1, "decode_replicas": 1, "decode_tp": 1, "decode_pp": 1,
                "prefill_max_batch_size": 1, "prefill_max_tokens": 1, "decode_max_batch_size": 1}
        high, why = _INT_LIMITS["num_gpus"]
        object.__setattr__(self, "num_gpus", checks.integer(
            self.num_gpus, "num_gpus", low=1, high=high, high_why=why, none=True,
            hint="None derives it (1, or a disaggregated deployment's prefill and decode GPUs)"))
        for name, low in ints.items():
            # the seed only feeds numpy's generators: any size; the others have an upper bound (_INT_LIMITS)
            high, why = (None, "") if name == "seed" else _INT_LIMITS.get(name, _INT_LIMIT_DEFAULT)
            object.__setattr__(self, name, checks.integer(getattr(self, name), name, low=low, high=high,
                                                          high_why=why))  # plain int: stable hashing and JSON
        if self.num_gpus is None:  # derived: 1, or the disaggregated deployment's GPUs (_validate_disaggregated)
            object.__setattr__(self, "num_gpus", self.disaggregated_gpus if self.scheduler == "disaggregated" else 1)
        high, why = _INT_LIMIT_DEFAULT
        object.__setattr__(self, "kv_blocks", checks.integer(
            self.kv_blocks, "kv_blocks", low=1, high=high, high_why=why, none=True,
            hint="None derives it from the memory fields (kv_capacity_tokens // block_size)"))
        for pool in ("prefill", "decode"):
            name = f"{pool}_kv_blocks"
            object.__setattr__(self, name, checks.integer(
                getattr(self, name), name, low=1, high=high, high_why=why, none=True,
                hint="None derives it from the memory fields (instance_kv_tokens // block_size)"))
        for name in ("spread_idle", "chunked_prefill", "prefix_caching", "reserve_full_isl", "dp_lockstep"):
            object.__setattr__(self, name, checks.boolean(getattr(self, name), name))
        if self.b_min > self.b_max:
            raise ValueError(f"b_min/b_max: need b_min <= b_max, got {self.b_min} > {self.b_max}")
        if not isinstance(self.model, str):
            raise checks.InvalidType(f"model: must be a model preset name, got {self.model!r}")
        get_model(self.model)  # a clear error for an unknown preset
        for name, (low_open, unit, sane_high, sane_hint) in _REAL_FIELDS.items():
            object.__setattr__(self, name, checks.number(
                getattr(self, name), name, low=0, low_open=low_open, none=name in _PRESET_FIELDS,
                high=1 if name in _SHARES else None, what=_SHARES.get(name),
                hint="0.9 is 90%" if name in _SHARES else "",
                sane_high=sane_high, sane_hint=sane_hint, unit=unit if sane_high is not None else ""))
        if self.gpu_memory_utilization > 1:
            raise ValueError(f"gpu_memory_utilization: a share of the GPU's memory, must be in (0, 1], "
                             f"got {self.gpu_memory_utilization!r}")
        self._validate_continuous()
        self._validate_autoscaling()
        self._validate_disaggregated()
        self._refuse_unused(_NOT_STATIC, "static", "choose a continuous_* scheduler")
        if self.scheduler != "disaggregated" and self.kv_capacity_tokens < 1:
            raise ValueError(
                f"gpu_mem_gb/gpu_memory_utilization/model_mem_gb/mem_margin_gb: no memory left for the KV cache "
                f"({self.gpu_mem_gb:g} GB x {self.gpu_memory_utilization:g} - {self.weights_gb:g} GB weights of "
                f"{self.model} - {self.mem_margin_gb:g} GB margin); raise gpu_mem_gb, or choose a smaller model")

    @property
    def model_spec(self) -> ModelSpec:
        """The memory preset named by ``model``."""
        return get_model(self.model)

    @property
    def weights_gb(self) -> float:
        """Memory of the weights: ``model_mem_gb`` if given, else the model preset's."""
        return self.model_spec.weights_gb if self.model_mem_gb is None else self.model_mem_gb

    @property
    def kv_gb_per_token_effective(self) -> float:
        """KV cache per token: ``kv_gb_per_token`` if given, else the model preset's."""
        return self.model_spec.kv_gb_per_token if self.kv_gb_per_token is None else self.kv_gb_per_token

    def _validate_continuous(self) -> None:
        if self.chunked_prefill and self.max_num_batched_tokens < self.max_num_seqs:
            raise ValueError(f"max_num_batched_tokens: with chunked_prefill it must be >= max_num_seqs (every "
                             f"running decode takes one token of the step's budget), got "
                             f"{self.max_num_batched_tokens} < {self.max_num_seqs}; raise it or lower max_num_seqs")
        checks.choice(self.router, "router", ROUTERS)
        if self.reserve_full_isl and not self.chunked_prefill:
            raise ValueError("reserve_full_isl: applies to chunked prefill (vLLM v1), where a request is admitted on "
                             "its first chunk; without it (v0.2) a prompt is admitted whole anyway; set "
                             "chunked_prefill=True or leave reserve_full_isl False")
        if self.dp_lockstep and SCHEDULERS[self.scheduler].engine == "continuous":
            if not self.chunked_prefill:
                raise ValueError("dp_lockstep: models the ranks of a vLLM v1 data-parallel group (DPEngineCoreProc), "
                                 "and chunked_prefill=False is vLLM v0.2, which has no data-parallel engine; set "
                                 "chunked_prefill=True or leave dp_lockstep False")
            if self.autoscaler is not None:
                raise ValueError(f"dp_lockstep/autoscaler: a data-parallel group in lock step has a fixed size "
                                 f"(num_gpus ranks), and autoscaler={self.autoscaler!r} changes the replica count "
                                 "during the run; set autoscaler=None or leave dp_lockstep False")
        if self.router == "prefix_affinity" and not self.prefix_caching and self.scheduler != "disaggregated":
            raise ValueError("router: 'prefix_affinity' routes by cached prefixes and needs prefix_caching=True; "
                             "set prefix_caching=True or choose another router")
        object.__setattr__(self, "kv_watermark", checks.number(
            self.kv_watermark, "kv_watermark", low=0, high=1, high_open=True, none=True,
            what="a share of the KV blocks in [0, 1)", hint="None keeps vLLM's own (0.01 without chunked prefill, "
                                                             "0 with it)"))
        for name in ("ttft_sla_s", "tpot_sla_s"):
            object.__setattr__(self, name, checks.number(getattr(self, name), name, low=0, low_open=True,
                                                         what="a finite number > 0 (seconds)"))

    # ------------------------------------------------------------ autoscaling
    def _validate_autoscaling(self) -> None:
        for name, low_open in (("autoscale_interval_s", True), ("autoscale_target", True), ("autoscale_until_s", False),
                               ("autoscale_tolerance", False), ("autoscale_window_s", False), ("cold_start_s", False),
                               ("scale_down_after_s", False), ("schedule_interval_s", True)):
            object.__setattr__(self, name, checks.number(getattr(self, name), name, low=0, low_open=low_open,
                                                         unit="" if name in ("autoscale_target", "autoscale_tolerance")
                                                         else "s"))
        high, why = _INT_LIMITS["num_gpus"]
        object.__setattr__(self, "min_replicas", checks.integer(self.min_replicas, "min_replicas", low=1, high=high,
                                                                high_why=why))
        object.__setattr__(self, "max_replicas", checks.integer(self.max_replicas, "max_replicas", low=1, high=high,
                                                                high_why=why, none=True))
        object.__setattr__(self, "replica_schedule", checks.integers(self.replica_schedule, "replica_schedule", low=1,
                                                                     high=high, unique=False, empty=True))
        checks.choice(self.autoscale_metric, "autoscale_metric", AUTOSCALE_METRICS)
        if self.autoscaler is None:
            changed = [n for n in _AUTOSCALING_FIELDS if getattr(self, n) != _DEFAULTS[n]]
            if changed:
                raise ValueError(f"{changed[0]}: {getattr(self, changed[0])!r} is an autoscaling setting and "
                                 "autoscaler is None (a fixed pool of num_gpus replicas); set autoscaler (e.g. "
                                 "'threshold' or 'schedule') or leave it at its default")
            return
        checks.choice(self.autoscaler, "autoscaler", sorted(AUTOSCALERS))
        engine = SCHEDULERS[self.scheduler].engine
        if engine != "continuous":
            raise ValueError(f"autoscaler: runs in the continuous engine (replicas of continuous batching), and "
                             f"scheduler={self.scheduler!r} runs the {engine} engine; choose a continuous_* scheduler "
                             "or set autoscaler=None")
        if self.autoscale_metric in SHARE_METRICS and self.autoscale_target > 1:
            raise ValueError(f"autoscale_target: the {self.autoscale_metric} metric is a share in (0, 1], got "
                             f"{self.autoscale_target:g} (0.7 is 70%)")
        policy = AUTOSCALERS[self.autoscaler]
        policy.check(self)
        maximum = self.max_replicas_effective
        if maximum is None:
            raise ValueError(f"max_replicas: the {self.autoscaler!r} autoscaler needs the most replicas it may "
                             "provision (e.g. your GPU quota); give max_replicas")
        if self.min_replicas > maximum:
            raise ValueError(f"min_replicas/max_replicas: the bounds contradict: min_replicas={self.min_replicas} > "
                             f"max_replicas={maximum}; lower min_replicas or raise max_replicas")
        if not self.min_replicas <= self.num_gpus <= maximum:
            raise ValueError(f"num_gpus: with an autoscaler it is the replicas at time 0 and must lie in "
                             f"[min_replicas, max_replicas] = [{self.min_replicas}, {maximum}], got {self.num_gpus}")
        if self.replica_schedule and max(self.replica_schedule) > maximum:
            raise ValueError(f"replica_schedule: asks for {max(self.replica_schedule)} replicas, above max_replicas="
                             f"{maximum}; raise max_replicas or lower the schedule")
        if self.replica_schedule and min(self.replica_schedule) < self.min_replicas:
            i = self.replica_schedule.index(min(self.replica_schedule))
            raise ValueError(f"replica_schedule/min_replicas: the bounds contradict the schedule: period {i} asks for "
                             f"{self.replica_schedule[i]} replica(s), below min_replicas={self.min_replicas}, which "
                             "would override it; lower min_replicas or raise the schedule's counts")

    @property
    def max_replicas_effective(self) -> int | None:
        """The pool's slots: ``max_replicas``, or the autoscaler's default (None: it must be given); without an
        autoscaler, ``num_gpus``."""
        if self.autoscaler is None:
            return self.num_gpus
        if self.max_replicas is not None:
            return self.max_replicas
        return AUTOSCALERS[self.autoscaler].default_max_replicas(self)

    # ------------------------------------------------------------ disaggregated prefill and decode
    @property
    def disaggregated_gpus(self) -> int:
        """GPUs of a disaggregated deployment: prefill_replicas x prefill_tp + decode_replicas x decode_tp x
        decode_pp."""
        return self.prefill_replicas * self.prefill_tp + self.decode_replicas * self.decode_tp * self.decode_pp

    def instance_kv_tokens(self, gpus: int) -> int:
        """Tokens of KV cache an instance of ``gpus`` GPUs holds, its weights split over them:
        floor((gpus x (gpu_mem_gb x gpu_memory_utilization - mem_margin_gb) - weights) / kv_gb_per_token)
        (``kv_capacity_tokens`` is this for one GPU).  The KV cache of a token is split over the GPUs too
        (heads over tensor-parallel ranks, layers over pipeline stages), so the bytes per token stay the model's."""
        free_gb = gpus * (self.gpu_mem_gb * self.gpu_memory_utilization - self.mem_margin_gb) - self.weights_gb
        return int(math.floor(free_gb / self.kv_gb_per_token_effective * (1 + 1e-12))) if free_gb > 0 else 0

    @property
    def prefill_kv_blocks_effective(self) -> int:
        """KV blocks of a prefill instance: prefill_kv_blocks, or instance_kv_tokens(prefill_tp) // block_size."""
        if self.prefill_kv_blocks is not None:
            return self.prefill_kv_blocks
        return self.instance_kv_tokens(self.prefill_tp) // self.block_size

    @property
    def decode_kv_blocks_effective(self) -> int:
        """KV blocks of a decode instance: decode_kv_blocks, or instance_kv_tokens(decode_tp x decode_pp) //
        block_size."""
        if self.decode_kv_blocks is not None:
            return self.decode_kv_blocks
        return self.instance_kv_tokens(self.decode_tp * self.decode_pp) // self.block_size

    @property
    def kv_link_bytes_per_s(self) -> float:
        """The KV link's bandwidth in bytes per second (kv_link_gbps x 1e9 / 8)."""
        return self.kv_link_gbps * 1e9 / 8.0

    def kv_transfer_s(self, prompt_tokens):
        """Seconds to move a prompt's KV cache from a prefill to a decode instance:
        kv_link_latency_s + prompt_tokens x KV bytes per token / (kv_link_gbps x 1e9 / 8)."""
        return self.kv_link_latency_s + np.asarray(prompt_tokens, dtype=np.float64) * (
            self.kv_gb_per_token_effective * 1e9 / self.kv_link_bytes_per_s)

    def _refuse_unused(self, unused: dict, engine: str, fix: str) -> None:
        """Refuse a changed continuous-engine setting that ``engine`` would otherwise ignore (``unused``: why)."""
        if SCHEDULERS[self.scheduler].engine != engine:
            return
        for name, why in unused.items():
            default = _DEFAULTS[name]
            if getattr(self, name) != default:
                raise ValueError(f"{name}: {getattr(self, name)!r} is a setting of the continuous engine; {why}. "
                                 f"Leave {name} at its default ({default!r}) for scheduler={self.scheduler!r}, or "
                                 f"{fix}")

    def _validate_disaggregated(self) -> None:
        for name in ("prefill_router", "decode_router"):
            checks.choice(getattr(self, name), name, DISAGG_ROUTERS)
        if self.decode_waiting_block_fraction > 1:
            raise ValueError(f"decode_waiting_block_fraction: a share of the decode instance's blocks, must be in "
                             f"(0, 1], got {self.decode_waiting_block_fraction!r}")
        if self.scheduler != "disaggregated":
            return
        self._refuse_unused(_NOT_DISAGGREGATED, "disaggregated", "choose a continuous_* scheduler")
        high, why = _INT_LIMITS["num_gpus"]
        if self.disaggregated_gpus > high:
            raise ValueError(
                f"prefill_replicas/prefill_tp/decode_replicas/decode_tp/decode_pp: the deployment has "
                f"{self.prefill_replicas} x {self.prefill_tp} + {self.decode_replicas} x {self.decode_tp} x "
                f"{self.decode_pp} = {self.disaggregated_gpus:,} GPUs, at most {high:,} allowed ({why})")
        if self.num_gpus != self.disaggregated_gpus:
            raise ValueError(
                f"num_gpus: a disaggregated deployment has prefill_replicas x prefill_tp + decode_replicas x decode_tp "
                f"x decode_pp = {self.prefill_replicas} x {self.prefill_tp} + {self.decode_replicas} x {self.decode_tp} "
                f"x {self.decode_pp} = {self.disaggregated_gpus} GPUs, got num_gpus={self.num_gpus}; leave num_gpus "
                "out (it is derived) or change the instance counts")
        for pool, gpus, blocks in (("prefill", self.prefill_tp, self.prefill_kv_blocks_effective),
                                   ("decode", self.decode_tp * self.decode_pp, self.decode_kv_blocks_effective)):
            if blocks < 1:
                raise ValueError(
                    f"{pool}_tp: a {pool} instance of {gpus} GPU(s) has no memory left for one KV block of "
                    f"{self.block_size} tokens ({gpus} x ({self.gpu_mem_gb:g} GB x {self.gpu_memory_utilization:g} "
                    f"- {self.mem_margin_gb:g} GB margin) - {self.weights_gb:g} GB weights of {self.model}); give "
                    f"it more GPUs, raise gpu_mem_gb, or set {pool}_kv_blocks")

    @property
    def kv_watermark_effective(self) -> float:
        """``kv_watermark``, or vLLM's own when None: 0.01 without chunked prefill (v0.2), 0 with it (v1)."""
        if self.kv_watermark is not None:
            return self.kv_watermark
        return 0.0 if self.chunked_prefill else 0.01

    @property
    def kv_watermark_blocks(self) -> int:
        """Blocks the watermark keeps free: ``int(kv_watermark_effective * kv_blocks_effective)`` (as vLLM)."""
        return int(self.kv_watermark_effective * self.kv_blocks_effective)

    @property
    def kv_blocks_effective(self) -> int:
        """KV-cache blocks per replica of the continuous engine: kv_blocks, or kv_capacity_tokens // block_size."""
        return self.kv_blocks if self.kv_blocks is not None else self.kv_capacity_tokens // self.block_size

    @property
    def kv_capacity_tokens(self) -> int:
        """Tokens of KV cache one GPU holds:
        floor((gpu_mem_gb * gpu_memory_utilization - weights - mem_margin_gb) / kv_gb_per_token).

        Weights and KV per token come from the model preset unless overridden.
        With the defaults (Qwen3-1.7B, 16 GB x 0.9, 3.44 GB weights, 1 GB margin):
        floor(9.96 / 1.14688e-4) = 86,844 tokens.
        """
        free_gb = self.gpu_mem_gb * self.gpu_memory_utilization - self.weights_gb - self.mem_margin_gb
        return int(math.floor(free_gb / self.kv_gb_per_token_effective * (1 + 1e-12))) if free_gb > 0 else 0

    def replace(self, **changes) -> "SimConfig":
        # a disaggregated deployment's num_gpus is derived: derive it again unless it is changed explicitly
        if changes.get("scheduler", self.scheduler) == "disaggregated" and "num_gpus" not in changes:
            changes["num_gpus"] = None
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def help(cls) -> str:
        return "\n".join(f"{f.name} (default {f.default!r}): {f.metadata['help']}" for f in dataclasses.fields(cls))


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(SimConfig)}
_AUTOSCALING_FIELDS = ("min_replicas", "max_replicas", "autoscale_interval_s", "autoscale_metric", "autoscale_target",
                       "autoscale_tolerance", "autoscale_window_s", "cold_start_s", "scale_down_after_s",
                       "replica_schedule", "schedule_interval_s", "autoscale_until_s")
