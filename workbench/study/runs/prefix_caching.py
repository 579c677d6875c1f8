"""Running the prefix-caching study (``notebooks/prefix_caching.ipynb``): what prefix caching and cache-aware
routing buy on a real trace.

* :func:`kv_sweep`: one setup at several KV-cache sizes per replica: the prefix hit rate (cached prompt tokens
  over all prompt tokens of admitted requests) and the TTFT it buys.  Three runs per size, so the cache and the
  router are compared one at a time: caching off and on with the same cache-blind router
  (``least_outstanding``: the cache's effect alone), and caching on with ``prefix_affinity`` (the router's
  effect on top).
* :func:`router_table`: each router on each replica count, caching on (and off, for reference): hit rate,
  mean/p99 TTFT, mean TPOT, goodput at the trace's rate and the capacity by the TTFT/TPOT criterion (the
  largest rate at which ``attainment`` of the requests meet both limits, :func:`workbench.capacity`).
* :func:`at_capacity`: for each router run both ways, caching on and off at the load where caching on just
  meets the target: attainment, preemptions, and the prefill work done (prompt tokens computed, recomputation
  after preemption included, over the trace's prompt tokens): why caching raises capacity.

Every simulation is :func:`workbench.simulate` with the continuous engine (rules in
:mod:`workbench.sim.continuous_engine`, prefix caching in rules 13-15); the tables, figures and findings are
:mod:`workbench.study.answers.prefix_caching`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from workbench import checks
from workbench.sim.simulate import simulate
from workbench.study.answers.prefix_caching import ROUTER_ORDER
from workbench.study.runs.capacity import CapacityError, capacity
from workbench.study.store.folders import NotebookParams

NOTEBOOK = "prefix_caching"
# what the notebook writes into its results folder (checked before anything runs: none may be a folder)
OUTPUTS = ("prefix_caching_kv.csv", "prefix_caching_routers.csv", "prefix_caching_at_capacity.csv",
           "prefix_caching_kv.png", "prefix_caching_routers.png", "prefix_caching_findings.json")
# the router every comparison of caching on and off uses: it does not read the cache, so only the cache differs
SAME_ROUTER = "least_outstanding"
# each capacity is a grid point this far (relative) below where the target fails: closer capacities are tied
CAPACITY_RESOLUTION = 0.02
# scheduling decisions logged per run of at_capacity: enough for 12,031 Mooncake requests at 8 req/s (~90,000)
STEP_LOG = 1_000_000


@dataclass(frozen=True)
class PrefixCachingParams(NotebookParams):
    """The prefix-caching notebook's parameters (its ``parameters`` cell), validated; the folder they write to
    (its part ``prefix_caching``: :class:`~workbench.study.store.folders.NotebookParams`)."""

    notebook, outputs = NOTEBOOK, OUTPUTS

    dataset: str = "mooncake_conv"    # a trace with prefix hashes: mooncake_conv or mooncake_synthetic
    num_requests: int | None = None   # None: the whole trace
    time_scale: float = 1.0           # x the trace's real rate
    profile_model: str = "meta-llama/llama-3.1-8b-instruct"   # BLIS step-time model (GPU H100, TP 1)
    kv_blocks: int = 26_000           # KV blocks of 16 tokens per replica
    kv_sweep_blocks: tuple[int, ...] = (8_000, 12_000, 16_000, 26_000, 40_000, 64_000, 128_000)
    sweep_replicas: int = 8
    replicas: tuple[int, ...] = (4, 8)
    routers: tuple[str, ...] = ROUTER_ORDER
    max_num_batched_tokens: int = 8192
    max_num_seqs: int = 256
    ttft_sla_s: float = 2.0
    tpot_sla_s: float = 0.1
    attainment: float = 0.9
    affinity_margin: int = 16
    capacity_search: bool = True
    results_dir: str = "results/default"

    def __post_init__(self):
        from workbench.sim.routers import ROUTERS
        from workbench.traces import datasets

        checks.instance(self.dataset, "dataset", str, expected="a dataset name with prefix hashes "
                        "(mooncake_conv, mooncake_synthetic) or a trace file")
        if not (datasets.is_name(self.dataset) or Path(self.dataset).expanduser().is_file()):
            raise FileNotFoundError(f"dataset: {self.dataset!r} is neither a dataset name ({', '.join(datasets.names())})"
                                    " nor a trace file; prefix caching needs a trace with prefix hashes, e.g. "
                                    "mooncake_conv")
        object.__setattr__(self, "num_requests", checks.integer(self.num_requests, "num_requests", low=2, none=True))
        object.__setattr__(self, "time_scale", checks.number(self.time_scale, "time_scale", low=0, low_open=True,
                                                             hint="x the trace's real rate, e.g. 2 for twice"))
        checks.instance(self.profile_model, "profile_model", str, expected="a BLIS model name")
        for name, low in (("kv_blocks", 1), ("sweep_replicas", 1), ("max_num_batched_tokens", 1),
                          ("max_num_seqs", 1), ("affinity_margin", 0)):
            object.__setattr__(self, name, checks.integer(getattr(self, name), name, low=low))
        object.__setattr__(self, "kv_sweep_blocks", checks.integers(self.kv_sweep_blocks, "kv_sweep_blocks", low=1))
        object.__setattr__(self, "replicas", checks.integers(self.replicas, "replicas", low=1, high=100_000))
        object.__setattr__(self, "routers", checks.names(self.routers, "routers", allowed=ROUTERS))
        self._check_sla()
        object.__setattr__(self, "capacity_search", checks.boolean(self.capacity_search, "capacity_search"))
        if not self.capacity_search and self.attainment != PrefixCachingParams.attainment:
            raise ValueError(f"attainment={self.attainment:g} has no effect with capacity_search=False (no capacity "
                             "search runs): drop one of them")
        checks.path(self.results_dir, "results_dir", expected="a folder path")

    def trace(self):
        """The trace at the asked size and rate; refused if it has no prefix hashes (nothing to cache)."""
        from workbench.traces.trace import load_trace

        trace = load_trace(self.dataset, use_real_timestamps=True)
        if getattr(trace, "prefix_hashes", None) is None:
            raise ValueError(f"dataset: {self.dataset} has no prefix hashes, so no prompt shares a cached prefix; "
                             "use mooncake_conv or mooncake_synthetic, or a trace with prefix_hashes")
        if self.num_requests:
            trace = trace.head(self.num_requests)
        return trace.time_scaled(self.time_scale) if self.time_scale != 1.0 else trace

    def step_model(self):
        from workbench.sim.steptime import StepTimeModel

        return StepTimeModel.from_blis(model=self.profile_model, gpu="H100", tp=1)

    def config(self):
        """The serving setup of section 1 (vLLM v1: chunked prefill, prefix caching, prefix_affinity routing)."""
        from workbench.sim.config import SimConfig

        return SimConfig(scheduler="continuous_fcfs", num_gpus=self.sweep_replicas, chunked_prefill=True,
                         max_num_batched_tokens=self.max_num_batched_tokens, max_num_seqs=self.max_num_seqs,
                         block_size=16, kv_blocks=self.kv_blocks, prefix_caching=True, router="prefix_affinity",
                         prefix_affinity_margin=self.affinity_margin, ttft_sla_s=self.ttft_sla_s,
                         tpot_sla_s=self.tpot_sla_s)

    def setup_text(self, trace, step) -> str:
        """One sentence: the trace, the hardware model and the SLA every run of the notebook is judged on."""
        return (f"Trace *{trace.label}* ({len(trace):,} requests, {trace.mean_rate_rps:.2f} requests/s). Hardware "
                f"model: BLIS's fitted step times of `{step.name}` (vLLM v1 rules, chunked prefill), for every run "
                f"of this notebook; SLA: TTFT <= {self.ttft_sla_s:g} s and TPOT <= {self.tpot_sla_s * 1e3:g} ms"
                + (f" for {self.attainment:.0%} of the requests (capacity)." if self.capacity_search else "."))


def kv_sweep(trace, cfg, step, kv_blocks, same_router: str = SAME_ROUTER) -> pd.DataFrame:
    """One row per KV-cache size (blocks per replica) and setup: caching off and on with ``same_router`` (the
    cache's effect alone), and caching on with ``cfg.router`` if it is another (the router's effect on top):
    hit rate, TTFT, TPOT, requests served, preemptions."""
    setups = [(same_router, False), (same_router, True)]
    if cfg.router != same_router:
        setups.append((cfg.router, True))
    rows = []
    for blocks in kv_blocks:
        for router, caching in setups:
            c = cfg.replace(kv_blocks=int(blocks), prefix_caching=caching, router=router)
            s = simulate(trace, c, latency=step).summary
            rows.append({"scheduler": cfg.scheduler, "kv_blocks": int(blocks), "block_size": cfg.block_size,
                         "kv_tokens": int(blocks) * cfg.block_size, "num_gpus": cfg.num_gpus,
                         "prefix_caching": caching, "router": router, "prefix_hit_rate": s["prefix_hit_rate"],
                         "ttft_mean_s": s["ttft_mean_s"], "ttft_p99_s": s["ttft_p99_s"],
                         "tpot_mean_s": s["tpot_mean_s"], "completed": s["completed"], "rejected": s["rejected"],
                         "preemptions_total": s["preemptions_total"], "goodput_rps": s["goodput_rps"]})
    return pd.DataFrame(rows)


def router_table(trace, cfg, step, routers=ROUTER_ORDER, replicas=(4, 8), attainment: float = 0.9,
                 search_capacity: bool = True) -> pd.DataFrame:
    """One row per (replicas, router, caching): the metrics at the trace's rate and the SLO capacity."""
    rows = []
    for n in replicas:
        for router in routers:
            for caching in (True, False):
                if router == "prefix_affinity" and not caching:
                    continue
                c = cfg.replace(num_gpus=int(n), router=router, prefix_caching=caching)
                s = simulate(trace, c, latency=step).summary
                row = {"num_gpus": int(n), "router": router, "prefix_caching": caching,
                       "prefix_hit_rate": s["prefix_hit_rate"], "ttft_mean_s": s["ttft_mean_s"],
                       "ttft_p99_s": s["ttft_p99_s"], "tpot_mean_s": s["tpot_mean_s"],
                       "goodput_rps": s["goodput_rps"], "slo_attainment": s["slo_attainment"],
                       "preemptions_total": s["preemptions_total"], "offered_rps": s["offered_rps"],
                       "capacity_rps": np.nan, "capacity_scaling": np.nan, "capacity_bounded": np.nan,
                       "capacity_error": "",
                       "capacity_criterion": "slo" if search_capacity else None}
                if search_capacity:
                    try:
                        cap = capacity(trace, c, criterion="slo", ttft_s=c.ttft_sla_s, tpot_s=c.tpot_sla_s,
                                       attainment=attainment, latency=step,
                                       resolution=CAPACITY_RESOLUTION)
                        row["capacity_rps"] = cap.capacity_rps
                        row["capacity_scaling"] = cap.scaling
                        row["capacity_bounded"] = cap.bounded
                    except CapacityError as exc:
                        row["capacity_error"] = str(exc)
                rows.append(row)
    return pd.DataFrame(rows)


def at_capacity(trace, table: pd.DataFrame, cfg, step) -> pd.DataFrame:
    """For each (replicas, router) of ``router_table``'s rows run both with caching and without, whose
    caching-on capacity was found: both runs again at that load (the trace at ``capacity_scaling`` x its rate),
    one row each: attainment, preemptions, the first-admission hit rate, and the prefill work: prompt tokens
    the replicas computed (the step log's prefill tokens, recomputation after preemption included) over the
    trace's prompt tokens.  Without preemptions that ratio is 1 - hit rate; a preempted request recomputes its
    prompt and its generated tokens unless it finds them still cached."""
    rows = []
    prompt_tokens = int(np.sum(trace.prompt_tokens, dtype=np.int64))
    for (n, router), both in table.groupby(["num_gpus", "router"], sort=False):
        on = both[both.prefix_caching]
        if len(on) != 1 or len(both) != 2 or not np.isfinite(on.capacity_scaling.iloc[0]):
            continue
        scaled = trace.time_scaled(float(on.capacity_scaling.iloc[0]))
        for caching in (True, False):
            res = simulate(scaled, cfg.replace(num_gpus=int(n), router=router, prefix_caching=caching),
                           latency=step, step_log=STEP_LOG)
            s = res.summary
            steps = res.steps
            complete = len(steps) < STEP_LOG   # a full log may have dropped decisions: the work is unknown
            computed = int(steps.prefill_tokens.sum()) if complete else np.nan
            rows.append({"num_gpus": int(n), "router": router, "prefix_caching": caching,
                         "offered_rps": s["offered_rps"], "slo_attainment": s["slo_attainment"],
                         "preemptions_total": s["preemptions_total"], "requests_preempted": s["requests_preempted"],
                         "prefix_hit_rate": s["prefix_hit_rate"], "prefill_tokens_computed": computed,
                         "prompt_tokens_total": prompt_tokens, "prefill_work_ratio": computed / prompt_tokens})
    return pd.DataFrame(rows, columns=_AT_CAPACITY_FIELDS)


_AT_CAPACITY_FIELDS = ("num_gpus", "router", "prefix_caching", "offered_rps", "slo_attainment", "preemptions_total",
                       "requests_preempted", "prefix_hit_rate", "prefill_tokens_computed", "prompt_tokens_total",
                       "prefill_work_ratio")

__all__ = ["CAPACITY_RESOLUTION", "NOTEBOOK", "OUTPUTS", "PrefixCachingParams", "SAME_ROUTER", "at_capacity",
           "kv_sweep", "router_table"]
