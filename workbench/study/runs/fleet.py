"""``plan_fleet``: the cheapest fleet that keeps the SLA at a load: GPU type, count, TP, colocated or split.

For a trace (its request mix and arrival pattern, at its own rate or replayed at ``rate_rps``) and an SLA
(TTFT and TPOT limits met by ``attainment`` of the requests, DistServe's SLO attainment), every *candidate*
is a GPU type and a way to run the model on it:

* **colocated**: replicas of ``tp`` GPUs each, vLLM V1's continuous batching (``continuous_fcfs`` with
  chunked prefill, ``max_num_seqs`` and ``max_num_batched_tokens``), arrivals routed to the replica with the
  fewest outstanding requests;
* **disaggregated** (DistServe): prefill instances of ``prefill_tp`` GPUs and decode instances of
  ``decode_tp`` GPUs, the KV cache moving over the GPU's own interconnect.

A candidate's answer is the fewest GPUs that meet the SLA at the load, its cost per hour (GPUs x the GPU's
price) and per million output tokens, its capacity (:func:`~workbench.study.runs.capacity.capacity`, the
largest rate it sustains) and headroom, and where its step times come from: a measured profile where the
workbench has one for that model, GPU and TP (``measured``: DistServe's OPT-13B on A100, BLIS's fits), else
the roofline (:meth:`~workbench.sim.steptime.StepTimeModel.roofline`; the disaggregated candidates take its
linear fit, whose results the planner's disaggregated bound and tests were checked against; the disaggregated
engine also takes the table itself).  The search, cheapest first:

1. **Memory** before anything runs: the weights and one request's KV cache must fit each GPU at that TP
   (vLLM's rule, :func:`workbench.hardware.roofline.kv_blocks`); a candidate that does not fit is rejected
   with the numbers.
2. **The bound** (:mod:`workbench.study.runs.fleet_bound`): the fewest replicas that could meet the SLA,
   never more than the simulator needs (an upper bound on capacity, proved there and tested against the
   simulator), and whether enough requests can meet the limits even alone on an idle replica.  Its cost is a
   lower bound on the candidate's.
3. **Simulation**, cheapest bound first, in waves: a candidate whose bound already costs more than a fleet
   confirmed by simulation is *pruned* (``prune="per_gpu"``: more than the cheapest confirmed fleet of its
   own GPU type, so the cheapest fleet of every GPU type is exact; ``"global"``: more than the cheapest
   overall; ``"none"``: nothing pruned, every candidate simulated).  A colocated candidate's replica count
   starts at its bound and grows (x1.5) until the SLA holds, then is bisected to the fewest that meet it
   (attainment rises with replicas).  A disaggregated one starts from DistServe's replication of per-pool
   goodputs (:func:`~workbench.study.runs.placement.pool_search`, the per-pool step of ``wb.best_placement``:
   ``ceil(rate / goodput of one instance)`` for each pool, at least the bound), grows the pool whose limit
   fails, then gives back instances of either pool while the SLA still holds.
4. **Capacity** of every fleet that meets the SLA (``headroom=True``): the capacity search from the
   simulation at the load.

Waves are fixed by the bounds and the fleets confirmed in earlier waves, never by which simulation
finished first, so the answer is the same serially, on a process pool or on a Dask cluster
(``executor="dask://host:port"``).  A candidate that fails says why: it does not fit in memory, misses TTFT
or TPOT (even alone, or at ``max_gpus``), needs more than ``max_gpus`` by the bound, or is pruned (with the
cost its bound already reaches).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from workbench import checks
from workbench.hardware.catalog import GPU, get_gpu, get_model_arch, parse_prices
from workbench.sim.config import SimConfig
from workbench.sim.simulate import _validate_trace, simulate
from workbench.study.runs import fleet_bound as fb
from workbench.study.store.folders import NotebookParams

log = logging.getLogger(__name__)

TOPOLOGIES = ("colocated", "disaggregated")
PRUNE = ("per_gpu", "global", "none")
STATUSES = ("meets SLA", "does not fit in memory", "misses TTFT", "misses TPOT", "above max_gpus", "pruned")
WAVE_WIDTH = 4          # candidates simulated at once when pruning against the overall cheapest (fixed: the
#                         waves, and so the answer, do not depend on the executor's workers)
GROWTH = 1.5            # a failing replica count grows by this factor (then the pass is bisected)
AMPLE = 4               # instances of the other pool behind one pool instance whose goodput is searched
ROUTER = "least_outstanding"
# what makes the KV cache the resource that decides a fleet's size: a cache this full on average, or this share
# of the requests preempted (vLLM frees a running request's cache when a step cannot grow every request's)
KV_FULL, PREEMPTED_SHARE = 0.8, 0.01
MAX_GPUS = 4096


class FleetError(ValueError):
    """An argument of :func:`plan_fleet` that cannot be planned with (the message names it and the fix)."""


# ------------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class FleetSettings:
    """What every candidate shares: the model, the SLA and vLLM's batch settings (validated by
    :func:`plan_fleet`)."""

    model: str
    ttft_s: float
    tpot_s: float
    attainment: float
    max_gpus: int
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 2048
    gpu_memory_utilization: float = 0.9
    resolution: float = 0.02
    headroom: bool = True

    def sla_text(self) -> str:
        return (f"TTFT <= {self.ttft_s:g} s and TPOT <= {self.tpot_s * 1e3:g} ms for {self.attainment:.0%} of "
                "the requests")


@dataclass(frozen=True)
class Candidate:
    """A GPU type and a way to run the model on it; ``index`` orders ties (the GPU list's order)."""

    gpu: GPU
    topology: str
    tp: int = 0             # colocated: GPUs of one replica
    prefill_tp: int = 0     # disaggregated: GPUs of one prefill / decode instance
    decode_tp: int = 0
    index: int = 0

    @property
    def price(self) -> float:
        return float(self.gpu.price_per_hour)

    @property
    def label(self) -> str:
        if self.topology == "colocated":
            return f"{self.gpu.key} colocated tp{self.tp}"
        return f"{self.gpu.key} disaggregated P tp{self.prefill_tp} / D tp{self.decode_tp}"

    def gpus(self, size: dict) -> int:
        """GPUs of the fleet of this candidate with ``size`` (``{"replicas": n}`` or ``{"prefill": n_p,
        "decode": n_d}``)."""
        if self.topology == "colocated":
            return size["replicas"] * self.tp
        return size["prefill"] * self.prefill_tp + size["decode"] * self.decode_tp

    def fleet_text(self, size: dict) -> str:
        if self.topology == "colocated":
            return f"{size['replicas']} x {self.gpu.key} (tp{self.tp})"
        return (f"{size['prefill']}xP(tp{self.prefill_tp}) + {size['decode']}xD(tp{self.decode_tp}) "
                f"on {self.gpu.key}")


# ------------------------------------------------------------------------------------------ step models
@functools.lru_cache(maxsize=128)
def measured_profile_name(model: str, gpu_key: str, tp: int, topology: str) -> str | None:
    """The registered measured profile of ``model`` on ``gpu_key`` at ``tp`` for that topology, or None: the
    profiles of :data:`workbench.study.runs.hardware.MEASURED_PAIRS` (at any of the TP degrees their source
    holds), and DistServe's engine profile for a disaggregated OPT-13B on A100-80GB."""
    from workbench.sim.profiles import DEFAULT_DISAGG_PROFILE, get_profile
    from workbench.study.runs.hardware import MEASURED_PAIRS

    if topology == "disaggregated":
        names = [DEFAULT_DISAGG_PROFILE] if (model, gpu_key) == ("opt-13b", "a100-80gb") else []
    else:
        names = [name for (m, g, _), name in MEASURED_PAIRS.items() if (m, g) == (model, gpu_key)]
    for name in names:
        try:
            get_profile(name, tp=tp)
            return name
        except ValueError:
            continue
    return None


@functools.lru_cache(maxsize=128)
def step_model(settings: FleetSettings, gpu: GPU, tp: int, topology: str):
    """``(StepTimeModel, source)`` of one replica (colocated) or one pool instance (disaggregated) of ``tp``
    GPUs: the measured profile where there is one, else the roofline (a table for the continuous engine,
    its linear fit for the disaggregated one); ``source`` is ``"measured"`` or ``"roofline"``."""
    from workbench.sim.profiles import get_profile
    from workbench.sim.steptime import StepTimeModel

    measured = measured_profile_name(settings.model, gpu.key, tp, topology)
    if measured is not None:
        return get_profile(measured, tp=tp), "measured"
    step = StepTimeModel.roofline(settings.model, gpu, tp, table=topology == "colocated",
                                  max_num_seqs=settings.max_num_seqs,
                                  max_num_batched_tokens=settings.max_num_batched_tokens)
    return step, "roofline"


def fits(settings: FleetSettings, gpu: GPU, tp: int) -> str:
    """"" when the model's weights and one request's KV cache fit ``tp`` GPUs (vLLM's rule), else why not."""
    from workbench.hardware.roofline import kv_blocks

    try:
        kv_blocks(settings.model, gpu, tp=tp, gpu_memory_utilization=settings.gpu_memory_utilization,
                  max_num_batched_tokens=settings.max_num_batched_tokens, max_num_seqs=settings.max_num_seqs)
    except ValueError as exc:   # DoesNotFit, or heads that tp GPUs cannot share
        return str(exc)
    if get_model_arch(settings.model).heads % tp:
        return (f"{settings.model} has {get_model_arch(settings.model).heads} attention heads, which {tp} GPUs "
                "cannot share evenly")
    return ""


def colocated_config(settings: FleetSettings, gpu: GPU, tp: int, replicas: int) -> SimConfig:
    """The SimConfig of ``replicas`` colocated replicas of ``tp`` GPUs (vLLM V1, the KV cache by vLLM's rule)."""
    from workbench.sim.profiles import roofline_memory_fields

    memory = roofline_memory_fields(settings.model, gpu, tp, gpu_memory_utilization=settings.gpu_memory_utilization,
                                    max_num_batched_tokens=settings.max_num_batched_tokens,
                                    max_num_seqs=settings.max_num_seqs)
    return SimConfig(scheduler="continuous_fcfs", num_gpus=replicas, chunked_prefill=True, router=ROUTER,
                     max_num_seqs=settings.max_num_seqs, max_num_batched_tokens=settings.max_num_batched_tokens,
                     ttft_sla_s=settings.ttft_s, tpot_sla_s=settings.tpot_s, **memory)


def disaggregated_base(settings: FleetSettings, gpu: GPU, longest_prompt: int) -> SimConfig:
    """The disaggregated SimConfig of ``gpu`` (one prefill and one decode instance of one GPU; the planner
    sets the counts and degrees): each GPU's memory by vLLM's rule, decode batches of at most
    ``max_num_seqs`` (as a colocated replica), prefill steps of up to the longest prompt (none rejected for
    the token budget), the KV cache moving over the GPU's interconnect."""
    from workbench.hardware.roofline import kv_memory

    budget = kv_memory(settings.model, gpu, tp=1, gpu_memory_utilization=settings.gpu_memory_utilization,
                       max_num_batched_tokens=settings.max_num_batched_tokens, max_num_seqs=settings.max_num_seqs)
    return SimConfig(scheduler="disaggregated", model=settings.model, gpu_mem_gb=budget["total"] / 1e9,
                     gpu_memory_utilization=settings.gpu_memory_utilization,
                     mem_margin_gb=budget["activation_peak"] / 1e9, kv_gb_per_token=budget["kv_bytes_per_token"] / 1e9,
                     ttft_sla_s=settings.ttft_s, tpot_sla_s=settings.tpot_s, decode_max_batch_size=settings.max_num_seqs,
                     prefill_max_tokens=max(8192, int(longest_prompt)), kv_link_gbps=8.0 * gpu.interconnect_gbps)


def fleet_setup(settings: FleetSettings, cand: Candidate, size: dict, longest_prompt: int):
    """``(SimConfig, latency)`` of ``cand`` at ``size``: what :func:`~workbench.sim.simulate.simulate` takes."""
    if cand.topology == "colocated":
        return (colocated_config(settings, cand.gpu, cand.tp, size["replicas"]),
                step_model(settings, cand.gpu, cand.tp, "colocated")[0])
    cfg = disaggregated_base(settings, cand.gpu, longest_prompt).replace(
        prefill_replicas=size["prefill"], prefill_tp=cand.prefill_tp, decode_replicas=size["decode"],
        decode_tp=cand.decode_tp, decode_pp=1)
    return cfg, {"prefill": step_model(settings, cand.gpu, cand.prefill_tp, "disaggregated")[0],
                 "decode": step_model(settings, cand.gpu, cand.decode_tp, "disaggregated")[0]}


# ------------------------------------------------------------------------------------------ the bound
class Bounds:
    """The bound (:mod:`~workbench.study.runs.fleet_bound`) of every candidate on one trace (at the load).

    Each pool's bound is computed once per GPU and TP and shared by every candidate with that pool: a
    disaggregated pool counts the requests that could meet *its* limit alone (TTFT for prefill, TPOT for
    decode) and fit its KV cache, a superset of those that could meet both, so the pool's bound stays a
    lower bound for every pairing."""

    def __init__(self, trace, settings: FleetSettings):
        self.trace, self.settings = trace, settings
        self.prompt = np.asarray(trace.prompt_tokens, dtype=np.int64)
        self.output = np.asarray(trace.output_tokens, dtype=np.int64)
        self.arrival = np.asarray(trace.arrival_s, dtype=np.float64)
        self.first_deadline = self.arrival + settings.ttft_s
        self.last_deadline = self.first_deadline + settings.tpot_s * np.maximum(self.output - 1, 0)
        self.lengths = fb._windows(float(self.last_deadline.max() - self.arrival[0]), settings.ttft_s)
        self.budget = fb.budget_of(self.prompt.size, settings.attainment)
        self.longest_prompt = int(self.prompt.max(initial=1))
        self.longest_request = int((self.prompt + self.output).max(initial=1))
        self._pools: dict = {}

    def _pool(self, demand: fb.PoolDemand, ok: np.ndarray) -> tuple[int, str]:
        budget = self.budget - int(ok.size - np.count_nonzero(ok))
        if budget < 0:
            return 0, ""
        return fb.pool_bound(demand, self.arrival, self.first_deadline, self.last_deadline, ok, budget, self.lengths)

    def _limits(self, ttft, tpot):
        return self.settings.ttft_s >= ttft, np.isnan(tpot) | (tpot <= self.settings.tpot_s)

    def colocated(self, gpu: GPU, tp: int) -> fb.Bound:
        key = ("colocated", gpu, tp)
        if key not in self._pools:
            from workbench.sim.metrics import STATUS_COMPLETED
            from workbench.sim.simulate import continuous_acceptance

            settings, prompt, output = self.settings, self.prompt, self.output
            X, B = settings.max_num_batched_tokens, settings.max_num_seqs
            step = step_model(settings, gpu, tp, "colocated")[0]
            cfg = colocated_config(settings, gpu, tp, 1)
            ttft, tpot, decode_alone = fb.alone_times(step, prompt, output, chunk_tokens=X)
            servable = continuous_acceptance(self.trace, cfg) == STATUS_COMPLETED
            ttft_ok, tpot_ok = self._limits(ttft, tpot)
            ok = servable & ttft_ok & tpot_ok
            work = fb.request_work_s(fb.work_coefficients(step, tokens_per_step=X, seqs_per_step=B), prompt, output,
                                     chunk_tokens=X)
            demand = fb.PoolDemand("replicas", _sharing(work, ("prefill", "decode")), (prompt + 1.0) * decode_alone,
                                   float(cfg.kv_blocks_effective * cfg.block_size))
            n, why = self._pool(demand, ok)
            self._pools[key] = fb.Bound(
                replicas={"replicas": n}, feasible=n > 0, binding={"replicas": why} if why else {},
                alone_share=float(ok.mean()), alone_ttft_share=float((servable & ttft_ok).mean()),
                alone_tpot_share=float((servable & tpot_ok).mean()), fits_share=float(servable.mean()),
                kv_tokens=demand.kv_tokens)
        return self._pools[key]

    def _disaggregated_pool(self, gpu: GPU, tp: int, pool: str) -> dict:
        """One pool's bound at ``tp`` and the per-request arrays the pairing needs."""
        key = (pool, gpu, tp)
        if key not in self._pools:
            settings, prompt, output = self.settings, self.prompt, self.output
            base = disaggregated_base(settings, gpu, self.longest_prompt)
            step = step_model(settings, gpu, tp, "disaggregated")[0]
            ttft, tpot, decode_alone = fb.alone_times(step, prompt, output, chunk_tokens=None)
            if pool == "prefill":
                cfg = base.replace(prefill_tp=tp)
                fits_kv = (-(-prompt // cfg.block_size) <= cfg.prefill_kv_blocks_effective) & \
                          (prompt <= cfg.prefill_max_tokens)
                limit_ok = self._limits(ttft, tpot)[0]
                work = fb.request_work_s(fb.work_coefficients(step, tokens_per_step=cfg.prefill_max_tokens,
                                                              seqs_per_step=cfg.prefill_max_batch_size),
                                         prompt, output, chunk_tokens=None)
                demand = fb.PoolDemand("prefill instances",
                                       {rule: (w, w) for rule, (w, _) in _sharing(work, ("prefill",)).items()},
                                       None, math.inf)
            else:
                cfg = base.replace(decode_tp=tp)
                # TPOT alone: the decode instance's steps plus the KV transfer spread over the output
                # (workbench.sim.disagg.slo_attainable_share)
                tpot = tpot + cfg.kv_transfer_s(prompt) / np.maximum(output - 1, 1)
                peak = -(-(prompt + output - 1) // cfg.block_size)
                fits_kv = (output <= 1) | (peak <= cfg.decode_kv_blocks_effective)
                limit_ok = self._limits(ttft, tpot)[1]
                work = fb.request_work_s(fb.work_coefficients(step, tokens_per_step=cfg.decode_max_batch_size,
                                                              seqs_per_step=cfg.decode_max_batch_size),
                                         prompt, output, chunk_tokens=None)
                demand = fb.PoolDemand("decode instances", {rule: (np.zeros_like(w), w) for rule, (_, w)
                                                            in _sharing(work, ("decode",)).items()},
                                       (prompt + 1.0) * decode_alone,
                                       float(cfg.decode_kv_blocks_effective * cfg.block_size))
            n, why = self._pool(demand, fits_kv & limit_ok)
            self._pools[key] = {"replicas": n, "binding": why, "fits": fits_kv, "limit_ok": limit_ok,
                                "kv_tokens": demand.kv_tokens}
        return self._pools[key]

    def disaggregated(self, gpu: GPU, prefill_tp: int, decode_tp: int) -> fb.Bound:
        p = self._disaggregated_pool(gpu, prefill_tp, "prefill")
        d = self._disaggregated_pool(gpu, decode_tp, "decode")
        servable = p["fits"] & d["fits"]
        ok = servable & p["limit_ok"] & d["limit_ok"]
        feasible = self.budget - int(ok.size - np.count_nonzero(ok)) >= 0 and p["replicas"] > 0 and d["replicas"] > 0
        return fb.Bound(replicas={"prefill": p["replicas"], "decode": d["replicas"]}, feasible=feasible,
                        binding={"prefill": p["binding"], "decode": d["binding"]} if feasible else {},
                        alone_share=float(ok.mean()), alone_ttft_share=float((servable & p["limit_ok"]).mean()),
                        alone_tpot_share=float((servable & d["limit_ok"]).mean()), fits_share=float(servable.mean()),
                        kv_tokens=d["kv_tokens"])

    def __call__(self, cand: Candidate) -> fb.Bound:
        if cand.topology == "colocated":
            return self.colocated(cand.gpu, cand.tp)
        return self.disaggregated(cand.gpu, cand.prefill_tp, cand.decode_tp)


def candidate_bound(trace, settings: FleetSettings, cand: Candidate) -> fb.Bound:
    """The bound of one candidate on ``trace`` (at the load); :class:`Bounds` for many."""
    return Bounds(trace, settings)(cand)


def _sharing(work: dict, phases) -> dict:
    """Per fixed-cost sharing rule: (work counted with the first deadline, with both) of the given phases."""
    out = {}
    for rule in ("tokens", "seqs"):
        prefill = work["prefill"] + work[f"fixed_prefill_{rule}"] if "prefill" in phases else 0.0
        decode = work["decode"] + work[f"fixed_decode_{rule}"] if "decode" in phases else 0.0
        first = prefill if "prefill" in phases else np.zeros_like(work["decode"])
        out[rule] = (first, first + decode)
    return out


def bound_size(cand: Candidate, bound: fb.Bound) -> dict:
    if cand.topology == "colocated":
        return {"replicas": max(1, bound.replicas["replicas"])}
    return {"prefill": max(1, bound.replicas["prefill"]), "decode": max(1, bound.replicas["decode"])}


# ------------------------------------------------------------------------------------------ verification
@dataclass
class _Trials:
    """The simulations of one candidate's search, by size."""

    trace: object
    settings: FleetSettings
    cand: Candidate
    longest_prompt: int
    rows: list = field(default_factory=list)
    summaries: dict = field(default_factory=dict)

    def key(self, size: dict) -> tuple:
        return tuple(sorted(size.items()))

    def __call__(self, size: dict) -> dict:
        key = self.key(size)
        if key not in self.summaries:
            cfg, latency = fleet_setup(self.settings, self.cand, size, self.longest_prompt)
            summary = simulate(self.trace, cfg, latency=latency).summary
            self.summaries[key] = summary
            gpus = self.cand.gpus(size)
            self.rows.append({"candidate": self.cand.label, "gpu": self.cand.gpu.key, "topology": self.cand.topology,
                              "fleet": self.cand.fleet_text(size), "gpus": gpus,
                              "dollars_per_hour": gpus * self.cand.price, **_size_columns(self.cand, size),
                              "slo_attainment": summary["slo_attainment"],
                              "ttft_attainment": summary["ttft_attainment"],
                              "tpot_attainment": summary["tpot_attainment"], "ttft_p99_s": summary["ttft_p99_s"],
                              "tpot_p99_s": summary["tpot_p99_s"],
                              "meets_sla": summary["slo_attainment"] >= self.settings.attainment})
        return self.summaries[key]

    def passes(self, size: dict) -> bool:
        return self(size)["slo_attainment"] >= self.settings.attainment


def _size_columns(cand: Candidate, size: dict) -> dict:
    if cand.topology == "colocated":
        return {"tp": cand.tp, "replicas": size["replicas"], "prefill_tp": np.nan, "decode_tp": np.nan,
                "prefill_replicas": np.nan, "decode_replicas": np.nan}
    return {"tp": np.nan, "replicas": size["prefill"] + size["decode"], "prefill_tp": cand.prefill_tp,
            "decode_tp": cand.decode_tp, "prefill_replicas": size["prefill"], "decode_replicas": size["decode"]}


def _fewest_replicas(trials: _Trials, low: int, start: int, most: int) -> int | None:
    """The fewest replicas in ``low..most`` that meet the SLA (attainment rises with replicas; below ``low`` the
    bound says none does): from ``start`` (a guess), step away towards the answer by a tenth of the guess (at
    least one replica), doubling each time, until the SLA's verdict changes, then bisect; None when ``most``
    fails."""
    fail, n = low - 1, min(max(start, low), most)
    first_step = max(1, math.ceil(0.1 * n))
    if trials.passes({"replicas": n}):
        step = first_step
        while n - step > fail:
            if not trials.passes({"replicas": n - step}):
                fail = n - step
                break
            n, step = n - step, step * 2
    else:
        fail, step = n, first_step
        while True:
            if fail >= most:
                return None
            n = min(most, fail + step)
            if trials.passes({"replicas": n}):
                break
            fail, step = n, step * 2
    while n - fail > 1:
        mid = (fail + n) // 2
        if trials.passes({"replicas": mid}):
            n = mid
        else:
            fail = mid
    return n


def _split(trials: _Trials, start: dict, low: dict, most_gpus: int) -> dict | None:
    """The disaggregated split: from ``start``, grow the pool whose limit fails until the SLA holds (within
    ``most_gpus``), bisect that growth, then give back instances of either pool (down to ``low``) while the
    SLA still holds.  None when no split within ``most_gpus`` passes."""
    cand = trials.cand
    size = dict(start)
    failed = {"prefill": low["prefill"] - 1, "decode": low["decode"] - 1}
    while not trials.passes(size):
        s = trials(size)
        pool = "prefill" if s["ttft_attainment"] <= s["tpot_attainment"] else "decode"
        grown = {**size, pool: max(size[pool] + 1, math.ceil(size[pool] * GROWTH))}
        while cand.gpus(grown) > most_gpus and grown[pool] > size[pool] + 1:
            grown[pool] -= 1
        if cand.gpus(grown) > most_gpus:
            return None
        failed[pool] = size[pool]
        size = grown
        # bisect the pool that grew, between its last failing count and now
        while size[pool] - failed[pool] > 1 and size[pool] - 1 >= low[pool]:
            mid = {**size, pool: (failed[pool] + size[pool]) // 2}
            if mid[pool] < low[pool]:
                break
            if trials.passes(mid):
                size = mid
            else:
                failed[pool] = mid[pool]
    changed = True
    while changed:   # give back an instance of either pool while the SLA holds
        changed = False
        for pool in ("decode", "prefill"):
            fewer = {**size, pool: size[pool] - 1}
            if fewer[pool] >= max(1, low[pool]) and trials.passes(fewer):
                size, changed = fewer, True
    return size


def verify(job: dict) -> dict:
    """Simulate one candidate (a wave's task; plain data in and out, so it runs on any executor): the fewest
    GPUs meeting the SLA from its bound, its capacity and what decides it.  Returns ``{"row": ..., "trials":
    [...]}``."""
    import warnings

    from workbench.sim.simulate import SlaScaleWarning

    with warnings.catch_warnings():
        # one SLA is planned over every GPU and TP: a limit that a fast deployment meets with room to spare is
        # the point of the comparison, not a unit mistake (plan_fleet refuses implausible limits itself)
        warnings.simplefilter("ignore", SlaScaleWarning)
        return _verify(job)


def _verify(job: dict) -> dict:
    from workbench.study.runs.capacity import CapacityError, capacity

    t0 = time.perf_counter()
    trace, settings, cand, bound = job["trace"], job["settings"], job["cand"], job["bound"]
    longest = int(np.max(trace.prompt_tokens))
    trials = _Trials(trace, settings, cand, longest)
    start = bound_size(cand, bound)
    rate = trace.mean_rate_rps
    extra = {}
    if cand.topology == "colocated":
        guess = max(start["replicas"], round(start["replicas"] * job.get("looseness", 1.0)))
        n = _fewest_replicas(trials, start["replicas"], guess, settings.max_gpus // cand.tp)
        size = None if n is None else {"replicas": n}
        largest = {"replicas": settings.max_gpus // cand.tp}
    else:
        base = disaggregated_base(settings, cand.gpu, longest)
        top = max(job["pool_tps"])
        goodput = {}
        for pool, tp in (("prefill", cand.prefill_tp), ("decode", cand.decode_tp)):
            res = _cached_pool_search(trace, base, settings, cand.gpu, pool, tp, top)
            goodput[pool] = res
            extra[f"{pool}_goodput_rps"] = res if res else np.nan
        first = {pool: max(start[pool], math.ceil(rate / goodput[pool] * (1 - 1e-9)) if goodput[pool] else 0)
                 for pool in ("prefill", "decode")}
        while cand.gpus(first) > settings.max_gpus and first["decode"] > start["decode"]:
            first["decode"] -= 1
        while cand.gpus(first) > settings.max_gpus and first["prefill"] > start["prefill"]:
            first["prefill"] -= 1
        size = _split(trials, first, start, settings.max_gpus) if cand.gpus(first) <= settings.max_gpus else None
        largest = max(trials.summaries, key=lambda k: dict(k)["prefill"] * cand.prefill_tp
                      + dict(k)["decode"] * cand.decode_tp) if trials.summaries else None
        largest = dict(largest) if largest else None
    row = {**_candidate_columns(cand), "bound_gpus": cand.gpus(start), "bound_binding": _binding_text(bound),
           "simulations": 0, **extra}
    if size is None:
        s = trials(largest) if largest else None
        limit = "TTFT" if s is None or s["ttft_attainment"] <= s["tpot_attainment"] else "TPOT"
        row.update(status=f"misses {limit}", **_size_columns(cand, largest or start), gpus=cand.gpus(largest or start),
                   fleet=cand.fleet_text(largest) if largest else "", reason=_miss_text(settings, cand, largest, s, limit))
        if s is not None:
            row.update(_summary_columns(s))
    else:
        s = trials(size)
        gpus = cand.gpus(size)
        row.update(status="meets SLA", **_size_columns(cand, size), gpus=gpus, fleet=cand.fleet_text(size),
                   dollars_per_hour=gpus * cand.price, **_summary_columns(s))
        row["reason"] = f"meets {settings.sla_text()} at {rate:.3g} requests/s ({s['slo_attainment']:.1%})"
        if settings.headroom:
            cfg, latency = fleet_setup(settings, cand, size, longest)
            try:
                # where the capacity probably lies: the answer passes at the load and one replica (instance of
                # its larger pool) fewer fails, so about rate x n / (n - 1/2) (only the probes depend on it)
                grown = _larger_pool_count(cand, size)
                hint = {"hint_rps": rate * grown / (grown - 0.5)} if grown > 1 else {}
                found = capacity(trace, cfg, criterion="slo", attainment=settings.attainment, latency=latency,
                                 resolution=settings.resolution, start_summary=s, **hint)
                row["capacity_rps"] = found.capacity_rps
                row["headroom"] = found.capacity_rps / rate - 1.0
            except CapacityError as exc:   # cannot happen at a passing start; said, not hidden
                row["reason"] += f"; capacity search: {exc}"
        below = _below(trials, cand, size)
        row.update(_what_decides(trace, settings, cand, size, s, below, job["smallest_tp"]))
    row["simulations"] = len(trials.rows)
    row["search_s"] = time.perf_counter() - t0
    return {"row": row, "trials": trials.rows}


def _larger_pool_count(cand: Candidate, size: dict) -> int:
    """Replicas of a colocated fleet, or instances of the pool with more GPUs of a disaggregated one."""
    if cand.topology == "colocated":
        return size["replicas"]
    return size["decode"] if size["decode"] * cand.decode_tp >= size["prefill"] * cand.prefill_tp else size["prefill"]


def _below(trials: _Trials, cand: Candidate, size: dict) -> dict | None:
    """The summary of the fleet one replica (or one instance of the larger pool) smaller, simulated if it was
    not: what fails there says which limit the count is set by."""
    if cand.topology == "colocated":
        smaller = {"replicas": size["replicas"] - 1}
        if smaller["replicas"] < 1:
            return None
    else:
        pool = "decode" if size["decode"] * cand.decode_tp >= size["prefill"] * cand.prefill_tp else "prefill"
        smaller = {**size, pool: size[pool] - 1}
        if smaller[pool] < 1:
            return None
    return trials(smaller)


@functools.lru_cache(maxsize=64)
def _pool_model(settings: FleetSettings, gpu: GPU, tp: int):
    return step_model(settings, gpu, tp, "disaggregated")[0]


_POOL_GOODPUT: dict = {}


def _cached_pool_search(trace, base, settings, gpu, pool, tp, top) -> float:
    """Goodput (requests/s) of one ``pool`` instance at ``tp`` on ``gpu`` (0: no load meets its limit), searched
    once per process for a trace and settings."""
    from workbench.study.runs.placement import pool_search

    key = (_trace_key(trace), settings, gpu, pool, tp, top)
    if key not in _POOL_GOODPUT:
        res = pool_search(trace, base, functools.partial(_pool_model, settings, gpu), pool, tp, top=top,
                          attainment=settings.attainment, resolution=max(settings.resolution, 0.02), ample=AMPLE)
        _POOL_GOODPUT[key] = res.capacity_rps if res else 0.0
    return _POOL_GOODPUT[key]


def _trace_key(trace) -> str:
    import hashlib

    h = hashlib.sha256()
    for a in (trace.arrival_s, trace.prompt_tokens, trace.output_tokens):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def _summary_columns(s: dict) -> dict:
    return {"slo_attainment": s["slo_attainment"], "ttft_attainment": s["ttft_attainment"],
            "tpot_attainment": s["tpot_attainment"], "ttft_p99_s": s["ttft_p99_s"], "tpot_p99_s": s["tpot_p99_s"],
            "kv_utilization_mean": s.get("kv_utilization_mean", np.nan)}


def _miss_text(settings, cand, largest, s, limit) -> str:
    if s is None:
        return f"misses {limit}: no fleet of {cand.label} fits within max_gpus={settings.max_gpus}"
    met = s["ttft_attainment"] if limit == "TTFT" else s["tpot_attainment"]
    return (f"misses {limit} at max_gpus={settings.max_gpus}: {cand.fleet_text(largest)} ({cand.gpus(largest)} GPUs) "
            f"meets the SLA for {s['slo_attainment']:.1%} of the requests ({limit} met by {met:.1%}, target "
            f"{settings.attainment:.0%}); raise max_gpus, or relax {limit}")


def _binding_text(bound: fb.Bound) -> str:
    return "; ".join(f"{pool}: {why}" for pool, why in bound.binding.items())


def _candidate_columns(cand: Candidate) -> dict:
    return {"gpu": cand.gpu.key, "topology": cand.topology, "candidate": cand.label,
            "price_per_gpu_hour": cand.price}


# ------------------------------------------------------------------------------------------ what decides
def _what_decides(trace, settings, cand: Candidate, size: dict, s: dict, below: dict | None,
                  smallest_tp: int) -> dict:
    """Which resource sets this fleet's size, from the roofline's terms at its operating point: the KV cache
    (memory: the cache runs full or requests are preempted, or the weights set the TP), the prefill phase or
    the decode phase (whichever takes more of the GPUs' time per request), each bound by the GPU's arithmetic
    (compute) or its memory bandwidth, whichever term of the roofline is larger; and the limit that fails one
    replica (or instance) fewer."""
    from workbench.hardware.roofline import Roofline, StepStats

    prompt = float(np.mean(trace.prompt_tokens))
    output = float(np.mean(trace.output_tokens))
    decodes = float(np.sum(np.maximum(np.asarray(trace.output_tokens) - 1, 0)))
    X = settings.max_num_batched_tokens

    def phase(tp: int, part: str, batch: float) -> tuple[float, float]:
        """(seconds per request, share of it bound by memory bandwidth) of one phase on ``tp`` GPUs."""
        roof = Roofline(settings.model, cand.gpu, tp)
        if part == "prefill":
            pieces = max(1.0, math.ceil(prompt / X)) if cand.topology == "colocated" else 1.0
            tokens = prompt / pieces
            stats = StepStats.of(prefill_tokens=tokens, prefill_pairs=tokens * (prompt / 2 + 0.5))
            per_request = pieces
        else:
            stats = StepStats.of(decode_sequences=batch, decode_context=batch * (prompt + output / 2))
            per_request = max(output - 1, 0.0) / batch
        terms = roof.terms(stats)
        total = memory = 0.0
        for value in terms.values():
            if isinstance(value, tuple):
                c, m = float(np.asarray(value[0]).sum()), float(np.asarray(value[1]).sum())
                total += max(c, m)
                memory += m if m > c else 0.0
            else:
                total += float(np.asarray(value).sum())
        return total * per_request, memory / total if total > 0 else 0.0

    steps = s.get("engine_steps") or 0
    if cand.topology == "colocated":
        batch = min(max(decodes / steps, 1.0), settings.max_num_seqs) if steps else 1.0
        prefill_s, prefill_mem = phase(cand.tp, "prefill", 1.0)
        decode_s, decode_mem = phase(cand.tp, "decode", batch)
        decode_share = decode_s / (prefill_s + decode_s) if prefill_s + decode_s > 0 else 0.0
        phase_name = "decode" if decode_share >= 0.5 else "prefill"
        where = (f"{decode_share:.0%} of the GPUs' time per request goes to decode steps (about {batch:.0f} "
                 f"requests a step) and {1 - decode_share:.0%} to prefill")
        mem_share = decode_mem if phase_name == "decode" else prefill_mem
        tp_forced = smallest_tp > 1 and cand.tp == smallest_tp
    else:
        prefill_gpus, decode_gpus = size["prefill"] * cand.prefill_tp, size["decode"] * cand.decode_tp
        phase_name = "decode" if decode_gpus >= prefill_gpus else "prefill"
        _, prefill_mem = phase(cand.prefill_tp, "prefill", 1.0)
        _, decode_mem = phase(cand.decode_tp, "decode", float(settings.max_num_seqs) / 2)
        where = (f"the decode pool has {decode_gpus} of the {prefill_gpus + decode_gpus} GPUs, the prefill pool "
                 f"{prefill_gpus}")
        mem_share = decode_mem if phase_name == "decode" else prefill_mem
        tp_forced = smallest_tp > 1 and min(cand.prefill_tp, cand.decode_tp) == smallest_tp
    kv = s.get("decode_kv_utilization_mean", s.get("kv_utilization_mean", 0.0)) or 0.0
    preempted = s.get("requests_preempted", 0) or 0
    offered = max(int(s.get("offered", 1) or 1), 1)
    bound_by = "bandwidth" if mem_share >= 0.5 else "compute"
    decided = f"{phase_name} {bound_by}"
    because = (f"{where}; that phase's roofline is {mem_share:.0%} memory traffic (weights and KV reads) and "
               f"{1 - mem_share:.0%} arithmetic")
    if kv >= KV_FULL or preempted / offered >= PREEMPTED_SHARE:
        decided = "memory"
        because = (f"the KV cache is {kv:.0%} full on average and {preempted / offered:.1%} of the requests are "
                   f"preempted (their KV cache freed for others); {because}")
    if tp_forced:
        because += f"; the weights need TP {smallest_tp} to fit (memory sets the TP)"
    if below is None:
        because += f"; one {'replica' if cand.topology == 'colocated' else 'instance a pool'} is the smallest fleet"
    else:
        limit = "TTFT" if below["ttft_attainment"] <= below["tpot_attainment"] else "TPOT"
        met = below[f"{limit.lower()}_attainment"]
        because += f"; one {'replica' if cand.topology == 'colocated' else 'instance'} fewer misses {limit} " \
                   f"({met:.1%} meet it)"
    return {"decided_by": decided, "decided_by_text": f"{decided}: {because}"}


# ------------------------------------------------------------------------------------------ the plan
@dataclass(frozen=True)
class FleetPlan:
    """What :func:`plan_fleet` found (see ``/FLEET_API.md`` of the worktrees and the module docstring):
    ``table`` (every candidate, those meeting the SLA first, cheapest first), ``trials`` (every simulation),
    ``verdict`` (the answer or why there is none), ``rate_rps``, ``search_s``."""

    table: pd.DataFrame
    trials: pd.DataFrame
    verdict: str
    rate_rps: float
    settings: FleetSettings
    gpus: dict                 # key -> GPU (with the prices used)
    mean_output_tokens: float
    longest_prompt: int
    search_s: float = 0.0

    @property
    def feasible(self) -> pd.DataFrame:
        return self.table[self.table.status == "meets SLA"].reset_index(drop=True)

    @property
    def cheapest(self) -> dict | None:
        ok = self.feasible
        return None if ok.empty else ok.iloc[0].to_dict()

    def cheapest_per_gpu(self) -> pd.DataFrame:
        """The cheapest fleet meeting the SLA of every GPU type (in the table's order: cheapest first)."""
        ok = self.feasible
        return ok.groupby("gpu", sort=False).head(1).reset_index(drop=True)

    def candidate(self, row) -> Candidate:
        row = dict(row)
        gpu = self.gpus[row["gpu"]]
        if row["topology"] == "colocated":
            return Candidate(gpu, "colocated", tp=int(row["tp"]))
        return Candidate(gpu, "disaggregated", prefill_tp=int(row["prefill_tp"]), decode_tp=int(row["decode_tp"]))

    @staticmethod
    def size(row) -> dict:
        row = dict(row)
        if row["topology"] == "colocated":
            return {"replicas": int(row["replicas"])}
        return {"prefill": int(row["prefill_replicas"]), "decode": int(row["decode_replicas"])}

    def fleet_config(self, row, size: dict | None = None):
        """``(SimConfig, latency)`` of a row's fleet (``size``: another count, e.g. one replica fewer)."""
        return fleet_setup(self.settings, self.candidate(row), size or self.size(row), self.longest_prompt)

    def trace_at_load(self, trace):
        """``trace`` replayed at the plan's load (as :func:`plan_fleet` replayed it)."""
        rate = trace.mean_rate_rps
        return trace if math.isclose(rate, self.rate_rps, rel_tol=1e-12) else trace.time_scaled(self.rate_rps / rate)

    def simulate(self, trace, cand: Candidate, size: dict) -> dict:
        """One row of a fleet simulated at the plan's load: what :attr:`trials` holds for each simulation."""
        trials = _Trials(self.trace_at_load(trace), self.settings, cand, self.longest_prompt)
        trials(size)
        return trials.rows[0]


# ------------------------------------------------------------------------------------------ checks
def neighbour_check(plan: FleetPlan, trace) -> pd.DataFrame:
    """The cheapest answer against its neighbours, each simulated at the load: one replica (or one instance of
    either pool) fewer must miss the SLA; on the next cheaper GPU type, the same shape with as many GPUs as the
    answer's dollars buy must miss it too, and that type's own cheapest fleet (the plan's) must cost more.
    One row per neighbour: the fleet, its $/h, attainment, and ``holds`` (it misses the SLA or costs more)."""
    best = plan.cheapest
    if best is None:
        return pd.DataFrame(columns=["neighbour", "fleet", "gpus", "dollars_per_hour", "slo_attainment",
                                     "meets_sla", "holds", "note"])
    cand, size = plan.candidate(best), plan.size(best)
    cost = float(best["dollars_per_hour"])
    rows = []

    def add(neighbour: str, c: Candidate, sz: dict, note: str = ""):
        row = plan.simulate(trace, c, sz)
        cheaper = row["dollars_per_hour"] < cost - 1e-9
        rows.append({"neighbour": neighbour, "fleet": row["fleet"], "gpus": row["gpus"],
                     "dollars_per_hour": row["dollars_per_hour"], "slo_attainment": row["slo_attainment"],
                     "ttft_attainment": row["ttft_attainment"], "tpot_attainment": row["tpot_attainment"],
                     "meets_sla": bool(row["meets_sla"]), "holds": (not row["meets_sla"]) or not cheaper,
                     "note": note})

    if cand.topology == "colocated":
        if size["replicas"] > 1:
            add(f"one replica fewer ({cand.tp} GPU{'s' if cand.tp > 1 else ''})", cand,
                {"replicas": size["replicas"] - 1})
    else:
        for pool in ("prefill", "decode"):
            if size[pool] > 1:
                add(f"one {pool} instance fewer", cand, {**size, pool: size[pool] - 1})
    cheaper_types = sorted((g for g in plan.gpus.values() if g.price_per_hour < cand.gpu.price_per_hour),
                           key=lambda g: -g.price_per_hour)
    if cheaper_types:
        gpu = cheaper_types[0]
        other = dataclasses.replace(cand, gpu=gpu)
        degrees = (cand.tp,) if cand.topology == "colocated" else (cand.prefill_tp, cand.decode_tp)
        why = next((w for w in (fits(plan.settings, gpu, t) for t in degrees) if w), "")
        if why:
            rows.append({"neighbour": f"the next cheaper GPU type ({gpu.key}), same shape", "fleet": other.label,
                         "gpus": np.nan, "dollars_per_hour": np.nan, "slo_attainment": np.nan, "meets_sla": False,
                         "holds": True, "note": f"does not fit in memory: {why}"})
        else:
            per = gpu.price_per_hour * (cand.tp if cand.topology == "colocated" else 1)
            if cand.topology == "colocated":
                same_money = {"replicas": max(1, int(cost // per))}
            else:   # both pools grown in proportion, within the answer's dollars
                scale = cand.price / gpu.price_per_hour
                same_money = {pool: max(1, int(size[pool] * scale)) for pool in ("prefill", "decode")}
                while other.gpus(same_money) * gpu.price_per_hour > cost + 1e-9 and same_money["decode"] > 1:
                    same_money["decode"] -= 1
            add(f"the next cheaper GPU type ({gpu.key}), as many as the same dollars buy", other, same_money)
        own = plan.feasible[plan.feasible.gpu == gpu.key]
        if len(own):
            r = own.iloc[0]
            rows.append({"neighbour": f"the cheapest {gpu.key} fleet (the plan's)", "fleet": r.fleet,
                         "gpus": r.gpus, "dollars_per_hour": r.dollars_per_hour, "slo_attainment": r.slo_attainment,
                         "ttft_attainment": r.ttft_attainment, "tpot_attainment": r.tpot_attainment,
                         "meets_sla": True, "holds": r.dollars_per_hour >= cost - 1e-9, "note": "costs more"})
        else:
            reasons = plan.table[plan.table.gpu == gpu.key].reason
            rows.append({"neighbour": f"the cheapest {gpu.key} fleet (the plan's)", "fleet": "none",
                         "gpus": np.nan, "dollars_per_hour": np.nan, "slo_attainment": np.nan, "meets_sla": False,
                         "holds": True, "note": reasons.iloc[0] if len(reasons) else ""})
    else:
        rows.append({"neighbour": "the next cheaper GPU type", "fleet": "none", "gpus": np.nan,
                     "dollars_per_hour": np.nan, "slo_attainment": np.nan, "meets_sla": False, "holds": True,
                     "note": f"{cand.gpu.key} is the cheapest GPU type listed"})
    return pd.DataFrame(rows)


def frontier(plan: FleetPlan, trace, around: int = 2) -> pd.DataFrame:
    """Every simulated fleet (the plan's trials) and, for the cheapest fleet of each GPU type and topology, the
    sizes ``around`` below and above it (the replica count, or the larger pool's instances), simulated at the
    load: the points of the cost frontier (cost per hour against p99 TTFT and attainment)."""
    rows = [dict(r) for r in plan.trials.to_dict("records")]
    seen = {(r["candidate"], r["gpus"], r.get("prefill_replicas"), r.get("decode_replicas")) for r in rows}
    best = plan.feasible.groupby(["gpu", "topology"], sort=False).head(1)
    for _, r in best.iterrows():
        cand, size = plan.candidate(r), plan.size(r)
        pool = "replicas" if cand.topology == "colocated" else (
            "decode" if size["decode"] * cand.decode_tp >= size["prefill"] * cand.prefill_tp else "prefill")
        for delta in range(-around, around + 1):
            sz = {**size, pool: size[pool] + delta}
            if sz[pool] < 1 or cand.gpus(sz) > plan.settings.max_gpus:
                continue
            key = (cand.label, cand.gpus(sz), sz.get("prefill", np.nan), sz.get("decode", np.nan))
            if any(k[0] == key[0] and k[1] == key[1] and (cand.topology == "colocated" or
                                                           (k[2] == key[2] and k[3] == key[3])) for k in seen):
                continue
            seen.add(key)
            rows.append(plan.simulate(trace, cand, sz))
    return pd.DataFrame(rows)


def _validate(trace, model, gpus, ttft_s, tpot_s, attainment, topologies, tp, prices, max_gpus, rate_rps, prune,
              max_num_seqs, max_num_batched_tokens, gpu_memory_utilization, resolution, headroom):
    trace = _validate_trace(trace)
    if len(trace) < 2 or not math.isfinite(trace.mean_rate_rps) or trace.mean_rate_rps <= 0:
        raise FleetError("trace: plan_fleet needs at least 2 requests spread over time (its rate is the load)")
    arch = get_model_arch(model)
    if isinstance(gpus, (str, GPU)):
        gpus = [gpus]
    if not isinstance(gpus, (list, tuple)) or not gpus:
        raise FleetError(f"gpus: must be a non-empty list of GPU names (e.g. ['a100-80gb', 'h100-sxm']), got "
                         f"{checks._shown(gpus)}")
    given = {}
    if prices is not None:
        if not isinstance(prices, dict):
            raise FleetError(f"prices: must be a dict {{gpu name: dollars per GPU-hour}} or None, got "
                             f"{checks._shown(prices)}")
        for name, value in prices.items():
            key = get_gpu(name).key if isinstance(name, str) else checks.instance(name, "prices key", GPU,
                                                                                   expected="a GPU name").key
            given[key] = checks.number(value, f"prices[{key!r}]", low=0, low_open=True, unit="USD/h",
                                       sane_high=1000, sane_hint="a price per GPU-hour in dollars")
    resolved = {}
    for g in gpus:
        gpu = get_gpu(g)
        if gpu.key in resolved:
            raise FleetError(f"gpus: {gpu.key!r} is listed twice")
        price = given.get(gpu.key, gpu.price_per_hour)
        if price is None:
            raise FleetError(f"prices: {gpu.key!r} has no price (the catalogue lists none) and none was given; pass "
                             f"prices={{'{gpu.key}': dollars per GPU-hour}}, the fleet's cost is what it is ranked by")
        resolved[gpu.key] = get_gpu(gpu, price_per_hour=price)
    unused = sorted(set(given) - set(resolved))
    if unused:
        raise FleetError(f"prices: {', '.join(unused)} not in gpus ({', '.join(resolved)}); a price applies to a "
                         "GPU that is planned with")
    topologies = checks.names(topologies, "topologies", allowed=TOPOLOGIES)
    tps = checks.integers(tp, "tp", low=1, high=64)
    settings = FleetSettings(
        model=arch.name if not isinstance(model, str) or not model.endswith(".json") else model,
        ttft_s=checks.number(ttft_s, "ttft_s", low=0, low_open=True, unit="s", sane_high=3600,
                             sane_hint="a time to first token in seconds"),
        tpot_s=checks.number(tpot_s, "tpot_s", low=0, low_open=True, unit="s", sane_high=10,
                             sane_hint="a time per output token in seconds (50 ms = 0.05)"),
        attainment=checks.number(attainment, "attainment", low=0, low_open=True, high=1,
                                 hint="the share of requests that must meet both limits, e.g. 0.9"),
        max_gpus=checks.integer(max_gpus, "max_gpus", low=1, high=MAX_GPUS, hint="the largest fleet considered"),
        max_num_seqs=checks.integer(max_num_seqs, "max_num_seqs", low=1, high=65_536),
        max_num_batched_tokens=checks.integer(max_num_batched_tokens, "max_num_batched_tokens", low=1, high=2**22),
        gpu_memory_utilization=checks.number(gpu_memory_utilization, "gpu_memory_utilization", low=0, low_open=True,
                                             high=1),
        resolution=checks.number(resolution, "resolution", low=0, low_open=True, high=1, high_open=True),
        headroom=checks.boolean(headroom, "headroom"))
    if settings.max_num_batched_tokens < settings.max_num_seqs:
        raise FleetError(f"max_num_batched_tokens: with chunked prefill (vLLM V1) it must be >= max_num_seqs, got "
                         f"{settings.max_num_batched_tokens} < {settings.max_num_seqs}")
    rate_rps = checks.number(rate_rps, "rate_rps", low=0, low_open=True, none=True, unit="requests/s")
    prune = checks.choice(prune, "prune", PRUNE)
    if rate_rps is not None:
        trace = trace.time_scaled(rate_rps / trace.mean_rate_rps)
    return trace, settings, resolved, topologies, tps, prune


def plan_fleet(trace, *, model: str, gpus, ttft_s: float, tpot_s: float, attainment: float = 0.9,
               topologies=TOPOLOGIES, tp=(1, 2, 4, 8), prices: dict | None = None, max_gpus: int = 64,
               rate_rps: float | None = None, headroom: bool = True, prune: str = "per_gpu", executor=None,
               max_num_seqs: int = 256, max_num_batched_tokens: int = 2048, gpu_memory_utilization: float = 0.9,
               resolution: float = 0.02) -> FleetPlan:
    """Every way to serve ``trace`` within the SLA on ``gpus``, cheapest first (see the module docstring).

    ``model``: a catalogued model or a config.json path; ``gpus``: catalogued GPU names (or GPU objects);
    ``ttft_s``/``tpot_s``/``attainment``: the SLA; ``topologies``: ``"colocated"``, ``"disaggregated"``;
    ``tp``: the tensor-parallel degrees tried (each pool's too); ``prices``: ``{gpu: dollars per GPU-hour}``
    replacing the catalogue's list prices (a GPU with no price must be given one); ``max_gpus``: the largest
    fleet; ``rate_rps``: replay the trace at this rate instead of its own (arrivals scaled in time);
    ``headroom``: search each feasible fleet's capacity; ``prune``: ``"per_gpu"``, ``"global"`` or
    ``"none"``; ``executor``: where the simulations run (None or ``"serial"``, ``"process[:N]"``,
    ``"dask://host:port"`` or a ``distributed.Client``): the same answer on any.  vLLM V1 settings:
    ``max_num_seqs``, ``max_num_batched_tokens``, ``gpu_memory_utilization``.  ``resolution``: of the capacity
    searches.  Returns a :class:`FleetPlan`; a model that fits nowhere, an SLA nothing meets or a
    ``max_gpus`` too small is said in its ``verdict`` and rows, not raised."""
    t0 = time.perf_counter()
    trace, settings, gpu_map, topologies, tps, prune = _validate(
        trace, model, gpus, ttft_s, tpot_s, attainment, topologies, tp, prices, max_gpus, rate_rps, prune,
        max_num_seqs, max_num_batched_tokens, gpu_memory_utilization, resolution, headroom)
    rate = trace.mean_rate_rps
    rows, bounds, pending = [], {}, []
    bound_of = Bounds(trace, settings)
    fit_of = {(key, t): fits(settings, gpu, t) for key, gpu in gpu_map.items() for t in tps}
    index = 0
    for key, gpu in gpu_map.items():
        usable = [t for t in tps if not fit_of[(key, t)]]
        smallest = min(usable) if usable else 0
        cands = []
        if "colocated" in topologies:
            cands += [Candidate(gpu, "colocated", tp=t) for t in tps]
        if "disaggregated" in topologies:
            cands += [Candidate(gpu, "disaggregated", prefill_tp=a, decode_tp=b) for a in tps for b in tps]
        for cand in cands:
            cand = dataclasses.replace(cand, index=index)
            index += 1
            degrees = (cand.tp,) if cand.topology == "colocated" else (cand.prefill_tp, cand.decode_tp)
            why = next((fit_of[(key, t)] for t in degrees if fit_of[(key, t)]), "")
            if why:
                rows.append({**_candidate_columns(cand), **_degree_columns(cand), "status": "does not fit in memory",
                             "reason": f"does not fit in memory: {why}"})
                continue
            bound = bound_of(cand)
            if not bound.feasible:
                # too few requests fit one replica's KV cache at all: a memory failure, whatever the load
                status = "does not fit in memory" if bound.limit == "memory" else f"misses {bound.limit}"
                rows.append({**_candidate_columns(cand), **_degree_columns(cand), "status": status,
                             "reason": _alone_text(settings, bound, bound_of.longest_request),
                             "alone_share": bound.alone_share})
                continue
            size = bound_size(cand, bound)
            gpus_needed = cand.gpus(size)
            if gpus_needed > settings.max_gpus:
                rows.append({**_candidate_columns(cand), **_size_columns(cand, size), "gpus": gpus_needed,
                             "bound_gpus": gpus_needed, "bound_binding": _binding_text(bound),
                             "status": "above max_gpus",
                             "reason": f"above max_gpus: the bound needs at least {gpus_needed} GPUs "
                                       f"({cand.fleet_text(size)}; {_binding_text(bound)}), more than "
                                       f"max_gpus={settings.max_gpus}"})
                continue
            bounds[cand] = (bound, gpus_needed * cand.price, usable, smallest)
            pending.append(cand)
    pending.sort(key=lambda c: (bounds[c][1], c.index))
    trial_rows = []
    best: dict[str, float] = {}
    ratios: list[float] = []
    wave_number = 0
    group = (lambda c: c.gpu.key) if prune == "per_gpu" else (lambda c: "")
    while pending:
        wave = []
        if prune == "none":
            wave, pending = pending, []
        else:
            keep = []
            for cand in pending:
                cost = bounds[cand][1]
                limit = best.get(group(cand), math.inf)
                if cost > limit:
                    rows.append(_pruned_row(cand, bounds[cand][0], cost, limit, prune))
                else:
                    keep.append(cand)
            pending = keep
            if prune == "per_gpu":
                taken = set()
                for cand in pending:
                    if group(cand) not in taken:
                        taken.add(group(cand))
                        wave.append(cand)
            else:
                wave = pending[:WAVE_WIDTH]
            pending = [c for c in pending if c not in wave]
        if not wave:
            break
        wave_number += 1
        log.info("plan_fleet wave %d: %s", wave_number, ", ".join(c.label for c in wave))
        # where a colocated search starts: its bound times how far above their bounds the fleets confirmed in
        # earlier waves came out (the median ratio; only the number of simulations depends on it)
        looseness = float(np.median(ratios)) if ratios else 1.0
        jobs = [{"trace": trace, "settings": settings, "cand": c, "bound": bounds[c][0], "pool_tps": tuple(bounds[c][2]),
                 "smallest_tp": bounds[c][3], "looseness": looseness} for c in wave]
        from workbench.study.runs.sweep import map_calls

        for cand, result in zip(wave, map_calls(verify, jobs, "serial" if executor is None else executor)):
            row = result["row"]
            row.update(_degree_columns(cand))
            rows.append(row)
            trial_rows += result["trials"]
            if row["status"] == "meets SLA":
                if cand.topology == "colocated":
                    ratios.append(row["gpus"] / row["bound_gpus"])
                g = group(cand)
                best[g] = min(best.get(g, math.inf), row["dollars_per_hour"])
    table = _finish_table(rows, settings, rate, float(np.mean(trace.output_tokens)))
    trials = pd.DataFrame(trial_rows)
    plan = FleetPlan(table=table, trials=trials, verdict="", rate_rps=rate, settings=settings, gpus=gpu_map,
                     mean_output_tokens=float(np.mean(trace.output_tokens)),
                     longest_prompt=int(np.max(trace.prompt_tokens)), search_s=time.perf_counter() - t0)
    plan = dataclasses.replace(plan, verdict=verdict(plan))
    log.info("plan_fleet: %s (%.1f s, %d simulations)", plan.verdict, plan.search_s, len(trials))
    return plan


def _degree_columns(cand: Candidate) -> dict:
    if cand.topology == "colocated":
        return {"tp": cand.tp, "prefill_tp": np.nan, "decode_tp": np.nan}
    return {"tp": np.nan, "prefill_tp": cand.prefill_tp, "decode_tp": cand.decode_tp}


def _pruned_row(cand: Candidate, bound: fb.Bound, cost: float, limit: float, prune: str) -> dict:
    size = bound_size(cand, bound)
    whose = f"the cheapest {cand.gpu.key} fleet" if prune == "per_gpu" else "the cheapest fleet"
    return {**_candidate_columns(cand), **_size_columns(cand, size), "gpus": cand.gpus(size),
            "bound_gpus": cand.gpus(size), "bound_binding": _binding_text(bound), "status": "pruned",
            "reason": f"pruned: its bound alone needs {cand.gpus(size)} GPUs (${cost:,.2f}/h), more than {whose} "
                      f"found by simulation (${limit:,.2f}/h)"}


def _alone_text(settings: FleetSettings, bound: fb.Bound, longest_request: int) -> str:
    """Why a candidate fails at any fleet size: too few requests fit one replica's KV cache, or meet the
    binding limit even alone on an idle replica."""
    limit = bound.limit
    if limit == "memory":
        whose = "one decode instance's" if "decode" in bound.replicas else "one replica's"
        held = (f"{whose} KV cache ({bound.kv_tokens:,.0f} tokens)" if math.isfinite(bound.kv_tokens)
                else f"{whose} KV cache")
        return (f"does not fit in memory: only {bound.fits_share:.1%} of the requests fit {held} at all (the longest "
                f"needs {longest_request:,} tokens of prompt and output), below the {settings.attainment:.0%} asked, "
                f"so no fleet size helps; a GPU with more memory, a higher TP or a higher gpu_memory_utilization "
                f"could.")
    share = {"memory": bound.fits_share, "TTFT": bound.alone_ttft_share, "TPOT": bound.alone_tpot_share}[limit]
    what = {"memory": "fit its KV cache at all",
            "TTFT": f"get their first token within {settings.ttft_s:g} s",
            "TPOT": f"keep {settings.tpot_s * 1e3:g} ms per output token"}[limit]
    return (f"misses {limit} even alone: only {share:.1%} of the requests {what} on an idle replica "
            f"({bound.alone_share:.1%} meet the whole SLA), below the {settings.attainment:.0%} asked, so no fleet "
            f"size helps; a faster GPU, a higher TP, or a relaxed {limit} limit could")


COLUMNS = ["rank", "gpu", "topology", "fleet", "gpus", "tp", "replicas", "prefill_tp", "prefill_replicas",
           "decode_tp", "decode_replicas", "price_per_gpu_hour", "dollars_per_hour",
           "dollars_per_million_output_tokens", "rate_rps", "capacity_rps", "headroom", "slo_attainment",
           "ttft_attainment", "tpot_attainment", "ttft_p99_s", "tpot_p99_s", "step_source", "step_model",
           "bound_gpus", "bound_binding", "status", "reason", "decided_by", "decided_by_text", "candidate",
           "simulations", "kv_utilization_mean", "alone_share", "prefill_goodput_rps", "decode_goodput_rps",
           "search_s"]


def _finish_table(rows: list, settings: FleetSettings, rate: float, mean_output: float) -> pd.DataFrame:
    table = pd.DataFrame(rows)
    for column in COLUMNS:
        if column not in table:
            table[column] = np.nan
    table["rate_rps"] = rate
    per_hour_tokens = rate * mean_output * 3600.0
    table["dollars_per_million_output_tokens"] = table["dollars_per_hour"] / per_hour_tokens * 1e6
    table["step_source"], table["step_model"] = zip(*(_source_of(settings, r) for r in table.itertuples()))
    table["_status"] = table.status.map(lambda s: 0 if s == "meets SLA" else 1)
    table = table.sort_values(["_status", "dollars_per_hour", "gpus", "candidate"], na_position="last",
                              kind="stable").reset_index(drop=True)
    table["rank"] = np.where(table.status == "meets SLA", np.arange(1, len(table) + 1), np.nan)
    return table[COLUMNS]


def _source_of(settings: FleetSettings, r) -> tuple[str, str]:
    """(step_source, step_model) of a table row: "measured" or "roofline" and the profile's name."""
    model, gpu = settings.model, r.gpu
    if r.topology == "colocated":
        if not isinstance(r.tp, (int, float)) or not math.isfinite(r.tp):
            return "", ""
        tp = int(r.tp)
        name = measured_profile_name(model, gpu, tp, "colocated")
        return ("measured", f"{name}" + (f" tp{tp}" if tp != 1 else "")) if name else \
            ("roofline", f"{model}@{gpu}/tp{tp}")
    kinds, names = [], []
    for tp in (int(r.prefill_tp), int(r.decode_tp)):
        name = measured_profile_name(model, gpu, tp, "disaggregated")
        kinds.append("measured" if name else "roofline")
        names.append((name + (f" tp{tp}" if tp != 1 else "")) if name else f"{model}@{gpu}/tp{tp} (linear fit)")
    return ("measured" if set(kinds) == {"measured"} else "roofline" if set(kinds) == {"roofline"}
            else "measured + roofline"), f"P {names[0]}; D {names[1]}"


def verdict(plan: FleetPlan) -> str:
    """One sentence: the cheapest fleet, or why there is none (which limit binds, the closest candidate)."""
    table, settings = plan.table, plan.settings
    load = f"{plan.rate_rps:.3g} requests/s"
    best = plan.cheapest
    if best is not None:
        source = f"[{best['step_source']} step times]"
        return (f"The cheapest fleet for {load} within {settings.sla_text()}: {best['fleet']}, "
                f"${best['dollars_per_hour']:,.2f}/h (${best['dollars_per_million_output_tokens']:,.2f} per million "
                f"output tokens) {source}.")
    if (table.status == "does not fit in memory").all():
        # rows with an alone share: the weights fit, but too few of the trace's requests fit the KV cache
        requests = table[table.alone_share.notna()]
        example = (requests if len(requests) else table).iloc[0]["reason"] if len(table) else ""
        return (f"No fleet: {settings.model} fits on none of {', '.join(plan.gpus)} at TP up to "
                f"{int(np.nanmax(table[['tp', 'prefill_tp', 'decode_tp']].to_numpy(dtype=float)))}"
                f"{' with these requests' if len(requests) else ''}: e.g. "
                f"{example.removeprefix('does not fit in memory: ').rstrip('.')}.")
    above = table[table.status == "above max_gpus"]
    missed = table[table.status.isin(["misses TTFT", "misses TPOT"])]
    at_most = missed[missed.slo_attainment.notna()]       # simulated at max_gpus: more GPUs might meet it
    alone = missed[missed.slo_attainment.isna()]          # even alone: no fleet size helps
    if len(above) or len(at_most):
        need = int(above.bound_gpus.min()) if len(above) else settings.max_gpus + 1
        text = f"No fleet within max_gpus={settings.max_gpus} meets {settings.sla_text()} at {load}"
        if len(at_most):
            closest = at_most.sort_values("slo_attainment", ascending=False).iloc[0]
            limit = closest.status.removeprefix("misses ")
            text += (f": the closest, {closest.fleet}, meets it for {closest.slo_attainment:.1%} (the limit that "
                     f"binds is {limit})")
        if len(above):
            first = above.sort_values("bound_gpus").iloc[0]
            text += (f"{'; ' if len(at_most) else ': '}by the bound the smallest fleet that could meet it needs at "
                     f"least {int(first.bound_gpus)} GPUs ({first.candidate})")
        return text + f"; max_gpus is below the smallest fleet that meets it: raise max_gpus to at least {need}."
    if len(alone):
        closest = alone.sort_values("alone_share", ascending=False).iloc[0]
        limits = alone.status.str.removeprefix("misses ").value_counts()
        limit = limits.index[0]
        return (f"No candidate meets {settings.sla_text()} at {load}: the limit that binds is {limit} ({limits.get(limit)} "
                f"of {len(alone)} candidates miss it even alone on an idle replica); the closest is {closest.candidate}, "
                f"where {closest.alone_share:.1%} of the requests meet the SLA alone.")
    return "No candidate was simulated (every one pruned or rejected): see the table's reasons."


# ------------------------------------------------------------------------------------------ the notebook
NOTEBOOK = "fleet_planning"
OUTPUTS = ("fleet_plan.csv", "fleet_trials.csv", "fleet_frontier.csv", "fleet_neighbours.csv", "fleet_frontier.png",
           "fleet_per_gpu.png")


@dataclass(frozen=True)
class FleetParams(NotebookParams):
    """The fleet-planning notebook's parameters (its ``parameters`` cell), validated; the folder they write to."""

    notebook, outputs = NOTEBOOK, OUTPUTS

    dataset: str = "synthetic"     # the trace: a dataset name or a CSV
    num_requests: int = 20_000     # its first requests
    rps_scaling: float = 200.0     # arrivals divided by this (the synthetic trace's and BurstGPT's timestamps)
    rate_rps: float = 0.0          # > 0: replay the trace at this rate instead (arrivals scaled in time)
    model: str = "llama-3.1-8b"
    gpus: tuple[str, ...] = ("a100-80gb", "h100-sxm", "l40s", "l4")
    tp: tuple[int, ...] = (1, 2, 4, 8)
    topologies: tuple[str, ...] = TOPOLOGIES
    ttft_sla_s: float = 2.0
    tpot_sla_s: float = 0.1
    attainment: float = 0.9
    prices: str = ""               # "h100-sxm=2.5,l4=0.5": dollars per GPU-hour replacing the list prices
    max_gpus: int = 64
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 2048
    gpu_memory_utilization: float = 0.9
    results_dir: str = "results/default"

    def __post_init__(self):
        from workbench.traces import datasets

        datasets.check_name_or_file(self.dataset)
        object.__setattr__(self, "num_requests", checks.integer(self.num_requests, "num_requests", low=2))
        object.__setattr__(self, "rps_scaling", checks.number(self.rps_scaling, "rps_scaling", low=0, low_open=True))
        object.__setattr__(self, "rate_rps", checks.number(self.rate_rps, "rate_rps", low=0, unit="requests/s",
                                                           hint="0 replays the trace at its own rate"))
        object.__setattr__(self, "model", get_model_arch(self.model).name)
        object.__setattr__(self, "gpus", tuple(get_gpu(g).key for g in checks.names(self.gpus, "gpus")))
        object.__setattr__(self, "tp", checks.integers(self.tp, "tp", low=1, high=64))
        object.__setattr__(self, "topologies", checks.names(self.topologies, "topologies", allowed=TOPOLOGIES))
        self._check_sla()
        object.__setattr__(self, "max_gpus", checks.integer(self.max_gpus, "max_gpus", low=1, high=MAX_GPUS))
        for name in ("max_num_seqs", "max_num_batched_tokens"):
            object.__setattr__(self, name, checks.integer(getattr(self, name), name, low=1))
        object.__setattr__(self, "gpu_memory_utilization", checks.number(
            self.gpu_memory_utilization, "gpu_memory_utilization", low=0, low_open=True, high=1))
        self.price_overrides()   # validates prices
        checks.path(self.results_dir, "results_dir", expected="a folder path")

    def price_overrides(self) -> dict[str, float]:
        """GPU -> $/GPU-hour given in ``prices`` (the catalogue's list price for the others)."""
        given = parse_prices(self.prices)
        for key in given:
            if key not in self.gpus:
                raise ValueError(f"prices: {key!r} is not in gpus ({', '.join(self.gpus)})")
        return given

    def trace(self):
        from workbench.traces.trace import load_trace

        return load_trace(self.dataset, num_requests=self.num_requests, rps_scaling=self.rps_scaling)

    def plan(self, trace, executor=None) -> FleetPlan:
        return plan_fleet(trace, model=self.model, gpus=list(self.gpus), ttft_s=self.ttft_sla_s,
                          tpot_s=self.tpot_sla_s, attainment=self.attainment, topologies=self.topologies,
                          tp=self.tp, prices=self.price_overrides() or None, max_gpus=self.max_gpus,
                          rate_rps=self.rate_rps or None, executor=executor, max_num_seqs=self.max_num_seqs,
                          max_num_batched_tokens=self.max_num_batched_tokens,
                          gpu_memory_utilization=self.gpu_memory_utilization)

    def setup_text(self, trace) -> str:
        rate = self.rate_rps or trace.mean_rate_rps
        return (f"Trace *{trace.label}* ({len(trace):,} requests, mean prompt {np.mean(trace.prompt_tokens):.0f} and "
                f"output {np.mean(trace.output_tokens):.0f} tokens) at **{rate:.3g} requests/s**. Model "
                f"**{self.model}** on {', '.join(self.gpus)} at TP {', '.join(map(str, self.tp))}, "
                f"{' and '.join(self.topologies)}, up to {self.max_gpus} GPUs; every replica runs vLLM V1's rules "
                f"(chunked prefill, up to {self.max_num_seqs} requests and {self.max_num_batched_tokens:,} tokens a "
                f"step, gpu_memory_utilization {self.gpu_memory_utilization:g}). SLA: TTFT <= {self.ttft_sla_s:g} s "
                f"and TPOT <= {self.tpot_sla_s * 1e3:g} ms for {self.attainment:.0%} of the requests. Step times: a "
                "measured profile where the workbench has one for the model, GPU and TP, else the roofline "
                "(estimated from config.json and the spec sheet); every row says which.")


__all__ = ["Bounds", "Candidate", "FleetError", "FleetParams", "NOTEBOOK", "OUTPUTS", "frontier", "neighbour_check", "FleetPlan", "FleetSettings", "PRUNE", "STATUSES", "TOPOLOGIES",
           "candidate_bound", "fits", "fleet_setup", "plan_fleet", "step_model", "verdict", "verify"]
