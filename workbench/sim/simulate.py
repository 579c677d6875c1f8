"""``simulate(trace, config)``: the public entry point of the simulator."""

from __future__ import annotations

import logging
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from workbench.sim import continuous_engine as ceng
from workbench.sim import static_engine as engine
from workbench.sim.bins import EDGE_CACHE, assign_bins, equal_mass_edges
from workbench.sim.config import SimConfig
from workbench.sim.latency import LatencyModel
from workbench.sim.metrics import (STATUS_COMPLETED, STATUS_LABELS, STATUS_REJECTED_BUDGET, STATUS_REJECTED_KV,
                                   meets_slo, offered_rate_rps, static_bin_metrics, summarize,
                                   summarize_continuous, summarize_static_steps)
from workbench.sim.predictors import predict_output_tokens
from workbench.sim.schedulers import get_scheduler
from workbench.sim.steptime import StepTimeModel

log = logging.getLogger(__name__)


class SimulationError(RuntimeError):
    """An invariant of the simulation was violated (a bug, never bad input)."""


@dataclass(eq=False)
class SimResult:
    """What one run produced: the summary metrics and flat per-request / per-batch records."""

    config: SimConfig
    latency: LatencyModel | StepTimeModel   # StepTimeModel: continuous engine, or static step mode
    trace_label: str
    trace_fingerprint: str
    synthetic: bool
    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    start_s: np.ndarray
    finish_s: np.ndarray
    bin: np.ndarray
    batch_id: np.ndarray
    status: np.ndarray
    batch_float: np.ndarray = field(repr=False)   # engine.F_* columns
    batch_int: np.ndarray = field(repr=False)     # engine.I_* columns
    bin_edges: np.ndarray | None
    summary: dict
    engine: str = "static"
    continuous: dict | None = field(default=None, repr=False)   # per-request arrays and step log

    @cached_property
    def gpu(self) -> np.ndarray:
        """GPU (replica) that served each request (-1 if rejected)."""
        if self.engine == "continuous":
            return self.continuous["replica"]
        gpus = self.batch_int[:, engine.I_GPU]
        return np.where(self.batch_id >= 0, gpus[np.maximum(self.batch_id, 0)] if gpus.size else -1, -1)

    @cached_property
    def requests(self) -> pd.DataFrame:
        """One row per request (rejected ones have NaN times and gpu/batch -1).

        ``latency_s`` = finish - arrival, ``queue_s`` = start - arrival (NaN if
        rejected); ``met_sla``: completed within ``d_sla_s`` of arrival (continuous
        engine, and static schedulers in step mode: TTFT and TPOT within
        ``ttft_sla_s`` and ``tpot_sla_s``).  The continuous engine and step mode
        add ``ttft_s``, ``tpot_s``, ``e2e_s`` and ``preemptions`` (0 for static
        batches); step mode keeps ``batch_id``.
        """
        if self.continuous is not None:
            return self._continuous_requests()
        latency_s = self.finish_s - self.arrival_s
        return pd.DataFrame({
            "id": np.arange(self.arrival_s.size),
            "arrival_s": self.arrival_s,
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "start_s": self.start_s,
            "finish_s": self.finish_s,
            "latency_s": latency_s,
            "queue_s": self.start_s - self.arrival_s,
            "met_sla": (self.status == STATUS_COMPLETED)
                       & (np.nan_to_num(latency_s, nan=np.inf) <= self.config.d_sla_s),
            "gpu": self.gpu,
            "bin": self.bin,
            "batch_id": self.batch_id,
            "status": pd.Categorical.from_codes(self.status, categories=list(STATUS_LABELS)),
        })

    def _continuous_requests(self) -> pd.DataFrame:
        c = self.continuous
        latency_s = self.finish_s - self.arrival_s
        met = meets_slo(self.status, c["ttft_s"], c["tpot_s"], self.config.ttft_sla_s, self.config.tpot_sla_s)
        frame = pd.DataFrame({
            "id": np.arange(self.arrival_s.size),
            "arrival_s": self.arrival_s,
            "start_s": self.start_s,
            "finish_s": self.finish_s,
            "gpu": self.gpu,
            "bin": self.bin,
            "status": pd.Categorical.from_codes(self.status, categories=list(STATUS_LABELS)),
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "ttft_s": c["ttft_s"],
            "tpot_s": c["tpot_s"],
            "e2e_s": c["e2e_s"],
            "queue_s": c["queue_s"],
            "preemptions": c["preemptions"],
            "latency_s": latency_s,
            "met_sla": met,
        })
        if self.engine == "static":
            frame.insert(6, "batch_id", self.batch_id)
        return frame

    @cached_property
    def steps(self) -> pd.DataFrame:
        """Continuous engine: one row per scheduling decision (one step, or a run of ``steps`` identical-shape
        decode steps): replica, start/end, prefill tokens and requests, decodes, KV blocks in use at its
        last step, requests preempted before it.  Only the first ``step_log`` decisions are kept."""
        if self.engine != "continuous":
            raise AttributeError("steps: only the continuous engine records steps; see .batches for static runs")
        f, i = self.continuous["log_f"], self.continuous["log_i"]
        return pd.DataFrame({
            "replica": i[:, ceng.S_REPLICA], "start_s": f[:, 0], "end_s": f[:, 1], "steps": i[:, ceng.S_K],
            "prefill_tokens": i[:, ceng.S_PREFILL_TOKENS], "prefill_requests": i[:, ceng.S_PREFILL_REQS],
            "decodes": i[:, ceng.S_DECODES], "kv_blocks_used": i[:, ceng.S_BLOCKS],
            "preempted": i[:, ceng.S_PREEMPTED],
        })

    @cached_property
    def batches(self) -> pd.DataFrame:
        """One row per batch: start, service time, GPU, bin, size, tokens, longest, size limit."""
        f, i = self.batch_float, self.batch_int
        return pd.DataFrame({
            "batch_id": np.arange(f.shape[0]),
            "start_s": f[:, engine.F_START],
            "service_s": f[:, engine.F_SERVICE],
            "gpu": i[:, engine.I_GPU],
            "bin": i[:, engine.I_BIN],
            "size": i[:, engine.I_SIZE],
            "tokens": f[:, engine.F_TOKENS].astype(np.int64),
            "max_seq_tokens": i[:, engine.I_MAXLEN],
            "size_limit": i[:, engine.I_LIMIT],
        })


class SlaScaleWarning(UserWarning):
    """``d_sla_s`` dwarfs every request's service time: probably milliseconds given as seconds."""


SLA_SCALE_FACTOR = 300.0


# per-token-arrays caches (bin assignments, token extents), least recently used dropped first
_ASSIGNMENTS: OrderedDict[tuple, tuple] = OrderedDict()
_TOKEN_EXTENTS: OrderedDict[tuple, tuple] = OrderedDict()
_ASSIGNMENT_CACHE_SIZE = 8


def _token_extent(trace) -> tuple[int, float]:
    """Longest and median prompt+output tokens, cached per token arrays like :func:`bin_assignment` (a capacity
    search replays one trace at many speeds: its tokens, and so these, do not change)."""
    key = (id(trace.prompt_tokens), id(trace.output_tokens), len(trace))
    if key in _TOKEN_EXTENTS:
        _TOKEN_EXTENTS.move_to_end(key)
        return _TOKEN_EXTENTS[key][2:]
    tokens = np.add(trace.prompt_tokens, trace.output_tokens, dtype=np.int64)
    extent = (int(tokens.max()), float(np.median(tokens)))
    # the arrays are held so their ids are never reused while the entry lives
    _TOKEN_EXTENTS[key] = (trace.prompt_tokens, trace.output_tokens, *extent)
    if len(_TOKEN_EXTENTS) > _ASSIGNMENT_CACHE_SIZE:
        _TOKEN_EXTENTS.popitem(last=False)
    return extent


def warn_if_sla_dwarfs_service(trace, cfg: SimConfig, latency) -> None:
    """Warn (``SlaScaleWarning``) when ``d_sla_s`` exceeds every request's service time (the longest request
    in the largest batch) and is over ``SLA_SCALE_FACTOR`` times the median request's: ``d_sla_s=1000``
    meant as 1000 ms then reports 0% violations whatever the scheduler does."""
    service_time_s = getattr(latency, "service_time_s", None)
    if service_time_s is None or len(trace) == 0:
        return
    longest_tokens, median_tokens = _token_extent(trace)
    largest_batch = max(cfg.b_max, cfg.batch_size)
    longest_s = float(service_time_s(largest_batch, longest_tokens))
    median_s = float(service_time_s(largest_batch, median_tokens))
    if cfg.d_sla_s > longest_s and cfg.d_sla_s > SLA_SCALE_FACTOR * median_s:
        warnings.warn(
            f"d_sla_s={cfg.d_sla_s:g} s is {cfg.d_sla_s / median_s:,.0f} times the median request's service time "
            f"({median_s:.3g} s) and above the longest any request here can have ({longest_s:.3g} s: "
            f"{longest_tokens:,} tokens in a batch of {largest_batch}), so only queueing that long can violate "
            f"it. If it is in milliseconds, pass d_sla_s={cfg.d_sla_s / 1000:g}", SlaScaleWarning, stacklevel=3)


def _validate_trace(trace) -> None:
    for name in ("arrival_s", "prompt_tokens", "output_tokens"):
        if not hasattr(trace, name):
            raise TypeError(f"trace must be a workbench.Trace (missing {name}); build one with Trace.from_arrays")
    if len(trace.arrival_s) == 0:
        raise ValueError("trace is empty: nothing to simulate")


def _no_bins(n: int) -> np.ndarray:
    """Every request in bin 0, read-only like :func:`bin_assignment`'s arrays: the compiled engines then see one
    array type whether a scheduler bins or not, and compile once instead of twice (numba types read-only
    arrays apart)."""
    bins = np.zeros(n, np.int32)
    bins.flags.writeable = False
    return bins


def bin_assignment(trace, cfg: SimConfig) -> tuple[np.ndarray, np.ndarray]:
    """Per-request bin and the equal-mass edges over predicted output lengths.

    Predictions depend on the token arrays only, not on arrival times, so the
    assignment is cached per token arrays (by identity: a time-scaled trace
    shares them, and the cache holds a reference so an id is never reused) and
    predictor settings; the edges are cached per (trace fingerprint,
    predictor, K, edge sample).  A sweep over GPU counts or a capacity search
    therefore predicts and bins once.
    """
    settings = (cfg.predictor, cfg.predictor_sigma if cfg.predictor == "noisy" else None,
                cfg.seed if cfg.predictor != "oracle" else None, cfg.k_bins, cfg.edge_sample or len(trace))
    key = (id(trace.prompt_tokens), id(trace.output_tokens), len(trace)) + settings
    if key in _ASSIGNMENTS:
        _ASSIGNMENTS.move_to_end(key)
        return _ASSIGNMENTS[key][2:]
    predicted = predict_output_tokens(cfg.predictor, trace.prompt_tokens, trace.output_tokens,
                                      sigma=cfg.predictor_sigma, seed=cfg.seed)
    edges = EDGE_CACHE.get((trace.fingerprint,) + settings,
                           lambda: equal_mass_edges(predicted[:settings[-1]], cfg.k_bins))
    bin_id = assign_bins(predicted, edges)
    bin_id.flags.writeable = False
    _ASSIGNMENTS[key] = (trace.prompt_tokens, trace.output_tokens, bin_id, edges)
    if len(_ASSIGNMENTS) > _ASSIGNMENT_CACHE_SIZE:
        _ASSIGNMENTS.popitem(last=False)
    return bin_id, edges


def simulate(trace, config: SimConfig | None = None, *, latency: LatencyModel | StepTimeModel | None = None,
             step_log: int = 100_000, **overrides) -> SimResult:
    """Replay ``trace`` through a pool of GPUs under ``config``'s scheduler.

    Static schedulers take a :class:`LatencyModel` (``latency=None``: the
    shipped calibration grid; "grid mode") or a :class:`StepTimeModel`
    ("step mode"); continuous ones (``continuous_*``) a :class:`StepTimeModel`
    (``latency=None``: the default profile of :mod:`workbench.sim.profiles`).

    Step mode times static batches on the same hardware model as the
    continuous engine and judges them alike (streaming static batching, see
    :mod:`workbench.sim.static_engine`): a batch starting at ``t`` prefills all
    its prompts, so each member's first token is at ``t + prefill``; a member
    with ``o`` output tokens has its last token after ``o - 1`` lock-step
    decodes of the padded batch, and the GPU stays busy until the longest
    output is done.  Per request ``ttft_s = t + prefill - arrival`` (plus the
    model's ``token_overhead_s``), ``e2e_s = last token - arrival`` (plus
    ``output * token_overhead_s``), ``tpot_s = (e2e - ttft) / (output - 1)``
    (NaN for one token), ``queue_s = t - arrival``, ``preemptions = 0``;
    ``finish_s = arrival + e2e_s``.  A request joins the queue after the
    model's ``arrival_overhead_s``.  The KV rule is the grid mode's (prompt +
    output tokens of a batch within ``cfg.kv_capacity_tokens``, from the
    memory fields; see :func:`workbench.sim.profiles.profile_config_fields`).
    The summary adds the continuous engine's SLO metrics (TTFT/TPOT limits
    ``cfg.ttft_sla_s`` / ``cfg.tpot_sla_s``) and its ``sla_violation_rate`` is
    ``1 - slo_attainment`` (see :func:`workbench.sim.metrics.summarize_static_steps`).
    The dynamic schedulers' SLA controller keeps its service-time budget
    ``sla_budget_fraction * d_sla_s`` (the batch's GPU time is what its size
    controls), so ``d_sla_s`` still matters for them in step mode.  ``step_log``: how many scheduling
    decisions of the continuous engine ``res.steps`` keeps.  Keyword
    ``overrides`` are applied to ``config`` (``simulate(trace, num_gpus=4)``).
    """
    t0 = time.perf_counter()
    cfg = SimConfig() if config is None else config
    if not isinstance(cfg, SimConfig):
        raise TypeError(f"config must be a SimConfig, got {type(cfg).__name__}")
    if overrides:
        cfg = cfg.replace(**overrides)
    _validate_trace(trace)
    scheduler = get_scheduler(cfg.scheduler)
    if scheduler.engine == "continuous":
        return _simulate_continuous(trace, cfg, scheduler, latency, step_log, t0)
    if isinstance(latency, StepTimeModel):
        return _simulate_static(trace, cfg, latency, t0)
    latency = latency or LatencyModel.default()
    warn_if_sla_dwarfs_service(trace, cfg, latency)
    return _simulate_static(trace, cfg, latency, t0)


def _simulate_static(trace, cfg: SimConfig, latency, t0: float) -> SimResult:
    """The static engine, in grid mode (a LatencyModel) or step mode (a StepTimeModel; see ``simulate``)."""
    step_mode = isinstance(latency, StepTimeModel)
    spec = get_scheduler(cfg.scheduler).engine_spec(cfg)

    arrival_s = np.ascontiguousarray(trace.arrival_s, dtype=np.float64)
    prompt = np.asarray(trace.prompt_tokens)
    output = np.asarray(trace.output_tokens)
    if step_mode and output.size and output.min() < 1:
        raise ValueError("step mode needs output_tokens >= 1 for every request (the first token comes from "
                         f"the prefill); {int(np.count_nonzero(output < 1))} request(s) have 0")
    capacity = cfg.kv_capacity_tokens
    accepted = np.add(prompt, output, dtype=np.int64) <= capacity
    if spec.uses_bins:
        bin_id, edges = bin_assignment(trace, cfg)
        n_bins = len(edges) - 1
    else:
        bin_id, edges, n_bins = _no_bins(arrival_s.size), None, 1

    # step mode: requests join the queue after the model's arrival overhead (as in the continuous engine);
    # the engine reads arrivals in order, so it runs on the requests sorted by joining time
    perm = None
    join_s, e_prompt, e_output, e_bin, e_accepted = arrival_s, prompt, output, bin_id, accepted
    if step_mode:
        a0, a1 = latency.arrival_overhead_s
        if a0 or a1:
            join_s = arrival_s + a0 + a1 * prompt
            if a1:
                perm = np.argsort(join_s, kind="stable")
                join_s, e_prompt, e_output = join_s[perm], prompt[perm], output[perm]
                e_bin, e_accepted = bin_id[perm], accepted[perm]
        coef = latency.coefficients()
        grid = (0.0, 0.0, 0.0)
    else:
        coef = np.zeros(0)
        grid = (latency.base_s, latency.per_token_s, latency.batch_penalty)

    budget = cfg.sla_budget_fraction * cfg.d_sla_s
    batch_of, start_s, finish_s, first_s, batch_float, batch_int, error = engine.run_engine(
        np.ascontiguousarray(join_s), e_prompt, e_output, e_bin, e_accepted, n_bins, cfg.num_gpus,
        spec.batch_rule, cfg.batch_size, spec.bin_policy,
        *grid, capacity,
        cfg.b_min, cfg.b_max, budget, cfg.ctrl_eps_fraction * budget,
        float(cfg.ctrl_alpha), float(cfg.ctrl_delta), cfg.ctrl_window, cfg.mem_theta, cfg.spread_idle,
        cfg.ctrl_retry_batches, step_mode, coef)
    if error:
        raise SimulationError(f"engine invariant violated (code {error}) for {cfg}")
    if perm is not None:
        inverse = np.empty_like(perm)
        inverse[perm] = np.arange(perm.size)
        batch_of, start_s, finish_s, first_s = batch_of[inverse], start_s[inverse], finish_s[inverse], first_s[inverse]
    served = batch_of >= 0
    if not np.array_equal(served, accepted):
        raise SimulationError("a request was dropped or a rejected request was served")
    status = np.where(served, STATUS_COMPLETED, STATUS_REJECTED_KV).astype(np.int8)
    batch_size = batch_int[:, engine.I_SIZE]
    if batch_size.sum(dtype=np.int64) != np.count_nonzero(served):
        raise SimulationError("batch sizes do not add up to the requests served")

    streams = None
    if step_mode:
        streams = _static_streams(arrival_s, start_s, first_s, finish_s, output, latency.token_overhead_s)
        finish_s = arrival_s + streams["e2e_s"]
    summary = summarize(
        arrival_s=arrival_s, start_s=start_s, finish_s=finish_s, status=status,
        output_tokens=output, batch_gpu=batch_int[:, engine.I_GPU],
        batch_service_s=batch_float[:, engine.F_SERVICE], batch_size=batch_size,
        batch_bin=batch_int[:, engine.I_BIN], num_gpus=cfg.num_gpus,
        d_sla_s=cfg.d_sla_s, n_bins=n_bins)
    summary["offered_rps"] = offered_rate_rps(arrival_s)
    met = None
    if step_mode:
        summary = summarize_static_steps(
            summary, arrival_s=arrival_s, status=status, output_tokens=output, streams=streams,
            batch_gpu=batch_int[:, engine.I_GPU], batch_service_s=batch_float[:, engine.F_SERVICE],
            batch_tokens=batch_float[:, engine.F_TOKENS], kv_capacity_tokens=capacity, num_gpus=cfg.num_gpus,
            ttft_sla_s=cfg.ttft_sla_s, tpot_sla_s=cfg.tpot_sla_s)
        met = meets_slo(status, streams["ttft_s"], streams["tpot_s"], cfg.ttft_sla_s, cfg.tpot_sla_s)
    summary.update(static_bin_metrics(
        arrival_s=arrival_s, finish_s=finish_s, status=status, request_bin=bin_id,
        batch_bin=batch_int[:, engine.I_BIN], batch_service_s=batch_float[:, engine.F_SERVICE],
        d_sla_s=cfg.d_sla_s, n_bins=n_bins, met=met))
    wall = time.perf_counter() - t0
    summary["sim_wall_s"] = wall
    summary["sim_requests_per_s"] = arrival_s.size / wall if wall > 0 else float("nan")
    log.debug("simulated %d requests with %s (%s mode) in %.3f s", arrival_s.size, cfg.scheduler,
              "step" if step_mode else "grid", wall)
    return SimResult(
        config=cfg, latency=latency, trace_label=getattr(trace, "label", "trace"),
        trace_fingerprint=getattr(trace, "fingerprint", ""), synthetic=bool(getattr(trace, "is_synthetic", False)),
        arrival_s=arrival_s, prompt_tokens=prompt, output_tokens=output, start_s=start_s, finish_s=finish_s,
        bin=bin_id, batch_id=batch_of,
        status=status, batch_float=batch_float, batch_int=batch_int, bin_edges=edges, summary=summary,
        continuous=streams)


def _static_streams(arrival_s, start_s, first_s, last_s, output, token_overhead_s: float) -> dict:
    """Per-request TTFT/TPOT/E2E/queue of a static run in step mode (streaming: see ``simulate``)."""
    ttft_s = first_s - arrival_s + token_overhead_s
    e2e_s = last_s - arrival_s + output * token_overhead_s
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot_s = np.where(output > 1, (e2e_s - ttft_s) / np.maximum(output - 1, 1), np.nan)
    return {"ttft_s": ttft_s, "tpot_s": tpot_s, "e2e_s": e2e_s, "queue_s": start_s - arrival_s,
            "preemptions": np.zeros(arrival_s.size, np.int32), "first_token_s": first_s, "last_token_s": last_s}


def _default_step_model() -> StepTimeModel:
    try:
        from workbench.sim import profiles
    except ImportError:
        raise ValueError("continuous schedulers need a step-time model: pass latency=wb.StepTimeModel(prefill=(a, b, c), "
                         "decode=(a, b, c)) (seconds)") from None
    return profiles.default_step_model()


def continuous_acceptance(trace, cfg: SimConfig) -> np.ndarray:
    """Status each request starts with in the continuous engine: completed (to be served) or why it is rejected."""
    bs, blocks = cfg.block_size, cfg.kv_blocks_effective
    prompt = np.asarray(trace.prompt_tokens, dtype=np.int64)
    peak_blocks = (prompt + np.maximum(np.asarray(trace.output_tokens, dtype=np.int64), 1) - 1 + bs - 1) // bs
    status = np.full(prompt.size, STATUS_COMPLETED, np.int8)
    if not cfg.chunked_prefill:
        status[prompt > cfg.max_num_batched_tokens] = STATUS_REJECTED_BUDGET
    status[peak_blocks > blocks] = STATUS_REJECTED_KV
    return status


def _simulate_continuous(trace, cfg: SimConfig, scheduler, latency, step_log: int, t0: float) -> SimResult:
    if latency is None:
        latency = _default_step_model()
    if not isinstance(latency, StepTimeModel):
        raise ValueError(f"{cfg.scheduler} runs the continuous engine: pass latency=wb.StepTimeModel(...) "
                         f"(or None for the default profile), not a {type(latency).__name__}")
    if cfg.kv_blocks_effective < 1:
        raise ValueError(f"kv_blocks: the KV cache holds no block of block_size={cfg.block_size} tokens "
                         f"(kv_capacity_tokens={cfg.kv_capacity_tokens}); set kv_blocks or the memory fields")
    if step_log < 0:
        raise ValueError(f"step_log: must be >= 0 (decisions kept in res.steps), got {step_log!r}")
    output = np.asarray(trace.output_tokens)
    if output.size and output.min() < 1:
        raise ValueError("the continuous engine needs output_tokens >= 1 for every request (the first token "
                         f"comes from the prefill); {int(np.count_nonzero(output < 1))} request(s) have 0")
    spec = scheduler.continuous_spec(cfg)
    arrival_s = np.ascontiguousarray(trace.arrival_s, dtype=np.float64)
    prompt = np.asarray(trace.prompt_tokens)
    status = continuous_acceptance(trace, cfg)
    if spec.uses_bins:
        bin_id, edges = bin_assignment(trace, cfg)
        n_bins = len(edges) - 1
    else:
        bin_id, edges, n_bins = _no_bins(arrival_s.size), None, 1
    coef = latency.coefficients()
    a0, a1 = latency.arrival_overhead_s
    join_s = arrival_s + a0 + a1 * prompt if (a0 or a1) else arrival_s
    accepted = np.flatnonzero(status == STATUS_COMPLETED)
    join_order = accepted[np.argsort(join_s[accepted], kind="stable")] if a1 else accepted
    budget = cfg.sla_budget_fraction * cfg.tpot_sla_s
    (replica, sched_s, first_s, end_s, preemptions, busy_s, block_s, steps, log_f, log_i, error) = \
        ceng.run_continuous(
            np.asarray(join_order, dtype=np.int64), join_s, prompt, output, bin_id, n_bins, cfg.num_gpus,
            ceng.ROUTERS[cfg.router], spec.policy, spec.jumps, cfg.chunked_prefill, cfg.max_num_seqs,
            cfg.max_num_batched_tokens, cfg.block_size, cfg.kv_blocks_effective, coef,
            min(cfg.b_min, cfg.max_num_seqs), cfg.max_num_seqs, budget, cfg.ctrl_eps_fraction * budget,
            float(cfg.ctrl_alpha),
            float(cfg.ctrl_delta), cfg.ctrl_window, cfg.mem_theta, int(step_log))
    if error:
        raise SimulationError(f"continuous engine invariant violated (code {error}) for {cfg}")
    served = ~np.isnan(end_s)
    if not np.array_equal(served, status == STATUS_COMPLETED):
        raise SimulationError("a request was dropped or a rejected request was served")
    token_o = latency.token_overhead_s
    ttft_s = first_s - arrival_s + token_o
    e2e_s = end_s - arrival_s + output * token_o
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot_s = np.where(output > 1, (e2e_s - ttft_s) / np.maximum(output - 1, 1), np.nan)
    queue_s = sched_s - arrival_s
    summary = summarize_continuous(
        arrival_s=arrival_s, ttft_s=ttft_s, tpot_s=tpot_s, e2e_s=e2e_s, queue_s=queue_s, preemptions=preemptions,
        status=status, output_tokens=output, busy_s=busy_s, block_seconds=block_s,
        kv_blocks=cfg.kv_blocks_effective, num_replicas=cfg.num_gpus,
        ttft_sla_s=cfg.ttft_sla_s, tpot_sla_s=cfg.tpot_sla_s)
    summary["offered_rps"] = offered_rate_rps(arrival_s)
    summary["engine_steps"] = int(steps.sum())
    summary["k_bins_effective"] = int(n_bins)
    wall = time.perf_counter() - t0
    summary["sim_wall_s"] = wall
    summary["sim_requests_per_s"] = arrival_s.size / wall if wall > 0 else float("nan")
    log.debug("simulated %d requests with %s in %.3f s", arrival_s.size, cfg.scheduler, wall)
    empty_f = np.empty((0, 3))
    empty_i = np.empty((0, 6), np.int32)
    return SimResult(
        config=cfg, latency=latency, trace_label=getattr(trace, "label", "trace"),
        trace_fingerprint=getattr(trace, "fingerprint", ""), synthetic=bool(getattr(trace, "is_synthetic", False)),
        arrival_s=arrival_s, prompt_tokens=prompt, output_tokens=output, start_s=sched_s,
        finish_s=arrival_s + e2e_s, bin=bin_id,
        batch_id=np.full(arrival_s.size, -1, np.int32), status=status, batch_float=empty_f, batch_int=empty_i,
        bin_edges=edges, summary=summary, engine="continuous",
        continuous={"replica": replica, "ttft_s": ttft_s, "tpot_s": tpot_s, "e2e_s": e2e_s, "queue_s": queue_s,
                    "preemptions": preemptions, "prompt_tokens": prompt, "output_tokens": output,
                    "first_token_step_end_s": first_s, "last_step_end_s": end_s, "busy_s": busy_s,
                    "block_seconds": block_s, "log_f": log_f, "log_i": log_i})
