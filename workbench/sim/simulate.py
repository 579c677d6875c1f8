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

from workbench.sim import static_engine as engine
from workbench.sim.bins import EDGE_CACHE, assign_bins, equal_mass_edges
from workbench.sim.config import SimConfig
from workbench.sim.latency import LatencyModel
from workbench.sim.metrics import (STATUS_COMPLETED, STATUS_LABELS, STATUS_REJECTED_KV, offered_rate_rps,
                                   static_bin_metrics, summarize)
from workbench.sim.predictors import predict_output_tokens
from workbench.sim.schedulers import get_scheduler

log = logging.getLogger(__name__)


class SimulationError(RuntimeError):
    """An invariant of the simulation was violated (a bug, never bad input)."""


@dataclass(eq=False)
class SimResult:
    """What one run produced: the summary metrics and flat per-request / per-batch records."""

    config: SimConfig
    latency: LatencyModel
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

    @cached_property
    def gpu(self) -> np.ndarray:
        """GPU that served each request (-1 if rejected)."""
        gpus = self.batch_int[:, engine.I_GPU]
        return np.where(self.batch_id >= 0, gpus[np.maximum(self.batch_id, 0)] if gpus.size else -1, -1)

    @cached_property
    def requests(self) -> pd.DataFrame:
        """One row per request (rejected ones have NaN times and gpu/batch -1).

        ``latency_s`` = finish - arrival, ``queue_s`` = start - arrival (NaN if
        rejected); ``met_sla``: completed within ``d_sla_s`` of arrival.
        """
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


def warn_if_sla_dwarfs_service(trace, cfg: SimConfig, latency) -> None:
    """Warn (``SlaScaleWarning``) when ``d_sla_s`` exceeds every request's service time (the longest request
    in the largest batch) and is over ``SLA_SCALE_FACTOR`` times the median request's: ``d_sla_s=1000``
    meant as 1000 ms then reports 0% violations whatever the scheduler does."""
    service_time_s = getattr(latency, "service_time_s", None)
    if service_time_s is None or len(trace) == 0:
        return
    tokens = np.add(trace.prompt_tokens, trace.output_tokens, dtype=np.int64)
    largest_batch = max(cfg.b_max, cfg.batch_size)
    longest_s = float(service_time_s(largest_batch, int(tokens.max())))
    median_s = float(service_time_s(largest_batch, float(np.median(tokens))))
    if cfg.d_sla_s > longest_s and cfg.d_sla_s > SLA_SCALE_FACTOR * median_s:
        warnings.warn(
            f"d_sla_s={cfg.d_sla_s:g} s is {cfg.d_sla_s / median_s:,.0f} times the median request's service time "
            f"({median_s:.3g} s) and above the longest any request here can have ({longest_s:.3g} s: "
            f"{int(tokens.max()):,} tokens in a batch of {largest_batch}), so only queueing that long can violate "
            f"it. If it is in milliseconds, pass d_sla_s={cfg.d_sla_s / 1000:g}", SlaScaleWarning, stacklevel=3)


def _validate_trace(trace) -> None:
    for name in ("arrival_s", "prompt_tokens", "output_tokens"):
        if not hasattr(trace, name):
            raise TypeError(f"trace must be a workbench.Trace (missing {name}); build one with Trace.from_arrays")
    if len(trace.arrival_s) == 0:
        raise ValueError("trace is empty: nothing to simulate")


_ASSIGNMENTS: OrderedDict[tuple, tuple] = OrderedDict()
_ASSIGNMENT_CACHE_SIZE = 8


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


def simulate(trace, config: SimConfig | None = None, *, latency: LatencyModel | None = None,
             **overrides) -> SimResult:
    """Replay ``trace`` through a pool of GPUs under ``config``'s scheduler.

    ``latency=None`` uses the shipped calibration grid; keyword ``overrides``
    are applied to ``config`` (``simulate(trace, num_gpus=4)``).
    """
    t0 = time.perf_counter()
    cfg = SimConfig() if config is None else config
    if not isinstance(cfg, SimConfig):
        raise TypeError(f"config must be a SimConfig, got {type(cfg).__name__}")
    if overrides:
        cfg = cfg.replace(**overrides)
    _validate_trace(trace)
    latency = latency or LatencyModel.default()
    warn_if_sla_dwarfs_service(trace, cfg, latency)
    spec = get_scheduler(cfg.scheduler).engine_spec(cfg)

    arrival_s = np.ascontiguousarray(trace.arrival_s, dtype=np.float64)
    capacity = cfg.kv_capacity_tokens
    accepted = np.add(trace.prompt_tokens, trace.output_tokens, dtype=np.int64) <= capacity
    if spec.uses_bins:
        bin_id, edges = bin_assignment(trace, cfg)
        n_bins = len(edges) - 1
    else:
        bin_id, edges, n_bins = np.zeros(arrival_s.size, np.int32), None, 1

    budget = cfg.sla_budget_fraction * cfg.d_sla_s
    batch_of, start_s, finish_s, batch_float, batch_int, error = engine.run_engine(
        arrival_s, trace.prompt_tokens, trace.output_tokens, bin_id, accepted, n_bins, cfg.num_gpus,
        spec.batch_rule, cfg.batch_size, spec.bin_policy,
        latency.base_s, latency.per_token_s, latency.batch_penalty, capacity,
        cfg.b_min, cfg.b_max, budget, cfg.ctrl_eps_fraction * budget,
        float(cfg.ctrl_alpha), float(cfg.ctrl_delta), cfg.ctrl_window, cfg.mem_theta, cfg.spread_idle,
        cfg.ctrl_retry_batches)
    if error:
        raise SimulationError(f"engine invariant violated (code {error}) for {cfg}")
    served = batch_of >= 0
    if not np.array_equal(served, accepted):
        raise SimulationError("a request was dropped or a rejected request was served")
    status = np.where(served, STATUS_COMPLETED, STATUS_REJECTED_KV).astype(np.int8)
    batch_size = batch_int[:, engine.I_SIZE]
    if batch_size.sum(dtype=np.int64) != np.count_nonzero(served):
        raise SimulationError("batch sizes do not add up to the requests served")

    summary = summarize(
        arrival_s=arrival_s, start_s=start_s, finish_s=finish_s, status=status,
        output_tokens=np.asarray(trace.output_tokens), batch_gpu=batch_int[:, engine.I_GPU],
        batch_service_s=batch_float[:, engine.F_SERVICE], batch_size=batch_size,
        batch_bin=batch_int[:, engine.I_BIN], num_gpus=cfg.num_gpus,
        d_sla_s=cfg.d_sla_s, n_bins=n_bins)
    summary["offered_rps"] = offered_rate_rps(arrival_s)
    summary.update(static_bin_metrics(
        arrival_s=arrival_s, finish_s=finish_s, status=status, request_bin=bin_id,
        batch_bin=batch_int[:, engine.I_BIN], batch_service_s=batch_float[:, engine.F_SERVICE],
        d_sla_s=cfg.d_sla_s, n_bins=n_bins))
    wall = time.perf_counter() - t0
    summary["sim_wall_s"] = wall
    summary["sim_requests_per_s"] = arrival_s.size / wall if wall > 0 else float("nan")
    log.debug("simulated %d requests with %s in %.3f s", arrival_s.size, cfg.scheduler, wall)
    return SimResult(
        config=cfg, latency=latency, trace_label=getattr(trace, "label", "trace"),
        trace_fingerprint=getattr(trace, "fingerprint", ""), synthetic=bool(getattr(trace, "is_synthetic", False)),
        arrival_s=arrival_s, prompt_tokens=np.asarray(trace.prompt_tokens),
        output_tokens=np.asarray(trace.output_tokens), start_s=start_s, finish_s=finish_s, bin=bin_id,
        batch_id=batch_of,
        status=status, batch_float=batch_float, batch_int=batch_int, bin_edges=edges, summary=summary)
