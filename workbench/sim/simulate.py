"""``simulate(trace, config)``: the public entry point of the simulator."""

from __future__ import annotations

import logging
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field, fields
from functools import cached_property

import numpy as np
import pandas as pd

from workbench import checks
from workbench.sim import continuous_engine as ceng
from workbench.sim import static_engine as engine
from workbench.sim.bins import EDGE_CACHE, assign_bins, equal_mass_edges
from workbench.sim.config import SimConfig
from workbench.sim.latency import LatencyModel
from workbench.sim.autoscale import run_autoscaled
from workbench.sim.metrics import (STATUS_COMPLETED, STATUS_DROPPED, STATUS_LABELS, STATUS_REJECTED_BUDGET,
                                   STATUS_REJECTED_KV, meets_slo, offered_rate_rps, replica_lives,
                                   static_bin_metrics, summarize, summarize_continuous, summarize_static_steps)
from workbench.sim.predictors import predict_output_tokens
from workbench.sim.prefix_tree import empty_tree, prefix_tree
from workbench.sim.profiles import SEED_GRID_NAMES
from workbench.sim.schedulers import get_scheduler
from workbench.sim.steptable import TF_HEAD, TI_N
from workbench.sim.steptime import StepTimeModel
from workbench.traces.trace import Trace

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
    pool_latency: dict | None = field(default=None, repr=False)  # disaggregated: the prefill and decode models
    autoscaling: dict | None = field(default=None, repr=False)   # autoscaled: control rows, phase events, lives

    @property
    def replica_timeline(self) -> pd.DataFrame:
        """Autoscaled runs: one row per control instant (:data:`workbench.sim.autoscale.CONTROL_COLUMNS`): the
        policy's wish (``desired``), the count applied (``target``), the replicas by phase after it, and what the
        policy saw (outstanding and waiting requests, KV and busy shares, the arrival rate, its metric)."""
        return self._autoscaling("control")

    @property
    def replica_events(self) -> pd.DataFrame:
        """Autoscaled runs: one row per phase change of a replica slot (``time_s``, ``replica``, ``phase_from``,
        ``phase_to``; phases ``off``, ``starting``, ``active``, ``draining``)."""
        return self._autoscaling("events")

    @property
    def replica_lives(self) -> pd.DataFrame:
        """Autoscaled runs: one row per life of a replica (:func:`workbench.sim.metrics.replica_lives`)."""
        return self._autoscaling("lives")

    def _autoscaling(self, key: str) -> pd.DataFrame:
        if self.autoscaling is None:
            raise AttributeError(f"{key}: only an autoscaled run (SimConfig.autoscaler) records its replicas over "
                                 "time; this one had a fixed pool")
        return self.autoscaling[key]

    @cached_property
    def gpu(self) -> np.ndarray:
        """GPU (replica) that served each request (-1 if rejected); disaggregated: its decode instance
        (``requests`` also has ``prefill_instance``)."""
        if self.engine in ("continuous", "disaggregated"):
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
        batches); step mode keeps ``batch_id``; the continuous engine adds
        ``cached_tokens`` (prompt tokens served from the prefix cache at the
        request's first admission; 0 without ``prefix_caching``).
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
        if "cached_tokens" in c:
            frame.insert(frame.columns.get_loc("preemptions") + 1, "cached_tokens", c["cached_tokens"])
        if self.engine == "static":
            frame.insert(6, "batch_id", self.batch_id)
        if self.engine == "disaggregated":
            # rule R6/R7 of workbench.sim.disagg_engine: KV transfer and the wait for a decode batch
            for column in ("kv_transfer_s", "decode_queue_s", "prefill_instance", "decode_instance"):
                frame[column] = c[column]
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


def _token_stats(trace) -> tuple:
    """Token statistics the SLA-scale warnings need, cached per token arrays like :func:`bin_assignment` (a
    capacity search replays one trace at many speeds: its tokens, and so these, do not change): the longest
    and median prompt + output, the longest and median prompt, and the median of prompt + output / 2."""
    key = (id(trace.prompt_tokens), id(trace.output_tokens), len(trace))
    if key in _TOKEN_EXTENTS:
        _TOKEN_EXTENTS.move_to_end(key)
        return _TOKEN_EXTENTS[key][2:]
    prompt, output = trace.prompt_tokens, trace.output_tokens
    tokens = np.add(prompt, output, dtype=np.int64)
    stats = (int(tokens.max()), float(np.median(tokens)), int(prompt.max()), float(np.median(prompt)),
             float(np.median(prompt + 0.5 * output)))
    # the arrays are held so their ids are never reused while the entry lives
    _TOKEN_EXTENTS[key] = (prompt, output, *stats)
    if len(_TOKEN_EXTENTS) > _ASSIGNMENT_CACHE_SIZE:
        _TOKEN_EXTENTS.popitem(last=False)
    return stats


def _token_extent(trace) -> tuple[int, float]:
    """Longest and median prompt+output tokens (see :func:`_token_stats`)."""
    return _token_stats(trace)[:2]


def _warn_if_dwarfs(field: str, limit_s: float, median_s: float, longest_s: float, quantity: str,
                    longest_text: str, stacklevel: int) -> None:
    # a model faster than any GPU is refused by the time checks (or is abstract): no unit advice for the SLA
    if median_s >= _SHORTEST_PLAUSIBLE_STEP_S and limit_s > longest_s and limit_s > SLA_SCALE_FACTOR * median_s:
        warnings.warn(
            f"{field}={limit_s:g} s is {limit_s / median_s:,.0f} times the median request's {quantity} "
            f"({median_s:.3g} s) and above the longest any request here can have ({longest_s:.3g} s: "
            f"{longest_text}), so only queueing that long can violate it. If it is in milliseconds, pass "
            f"{field}={limit_s / 1000:g}", SlaScaleWarning, stacklevel=stacklevel)


def warn_if_sla_dwarfs_service(trace, cfg: SimConfig, latency, stacklevel: int = 3) -> None:
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
    _warn_if_dwarfs("d_sla_s", cfg.d_sla_s, median_s, longest_s, "service time",
                    f"{longest_tokens:,} tokens in a batch of {largest_batch}", stacklevel + 1)


def warn_if_slo_dwarfs_service(trace, cfg: SimConfig, step: StepTimeModel, stacklevel: int = 4, *,
                               decode_step: StepTimeModel | None = None, prefill_tokens: int | None = None,
                               decode_batch: int | None = None) -> None:
    """The same warning for the TTFT and TPOT limits of a step-time model (continuous engine, static step mode).

    ``ttft_sla_s`` is compared with a request's time to first token on an idle replica (arrival overhead,
    its prefill, the token overhead): the median prompt's, and the longest any prefill step can take (the
    longest prompt, or a full ``max_num_batched_tokens`` budget); ``tpot_sla_s`` with a decode step of one
    request at the median context, and of ``max_num_seqs`` requests at the longest context.  A disaggregated
    deployment passes its decode pool's model as ``decode_step`` and its ``prefill_max_tokens`` /
    ``decode_max_batch_size`` as ``prefill_tokens`` / ``decode_batch``.
    """
    if len(trace) == 0:
        return
    longest_context, _, longest_prompt, median_prompt, median_context = _token_stats(trace)
    a0, a1 = step.arrival_overhead_s
    tok = step.token_overhead_s
    widest = max(longest_prompt, cfg.max_num_batched_tokens if prefill_tokens is None else prefill_tokens)
    ttft_long = a0 + a1 * longest_prompt + step.prefill_time_s([widest]) + tok
    ttft_median = a0 + a1 * median_prompt + step.prefill_time_s([int(round(median_prompt))]) + tok
    _warn_if_dwarfs("ttft_sla_s", cfg.ttft_sla_s, ttft_median, ttft_long, "time to first token alone",
                    f"a prefill of {widest:,} tokens", stacklevel + 1)
    step = step if decode_step is None else decode_step
    tok = step.token_overhead_s
    batch = cfg.max_num_seqs if decode_batch is None else decode_batch
    if step.table is not None:
        tpot_long = step.decode_time_s(np.full(batch, longest_context)) + tok
    else:
        a, b, c = step.decode_large if (step.decode_large is not None and batch >= step.decode_large_threshold) \
            else step.decode
        tpot_long = a + b * batch * longest_context + c * batch + tok
    tpot_median = step.decode_time_s([int(round(median_context))]) + tok   # a table takes whole tokens
    _warn_if_dwarfs("tpot_sla_s", cfg.tpot_sla_s, tpot_median, tpot_long, "decode step alone",
                    f"{batch} requests of {longest_context:,} tokens decoding together", stacklevel + 1)


def _validate_trace(trace, name: str = "trace") -> Trace:
    """``trace`` if it is a non-empty :class:`Trace` (which validated its arrays when it was built)."""
    if not isinstance(trace, Trace):
        if isinstance(trace, pd.DataFrame):
            raise checks.InvalidType(
                f"{name}: must be a workbench.Trace, got a DataFrame; build one with wb.Trace.from_arrays("
                "df.arrival_s, df.prompt_tokens, df.output_tokens), or load a file with wb.load_trace")
        raise checks.InvalidType(f"{name}: must be a workbench.Trace, got {type(trace).__name__}; build one with "
                                 "wb.Trace.from_arrays(arrival_s, prompt_tokens, output_tokens) or wb.load_trace")
    if len(trace.arrival_s) == 0:
        raise ValueError(f"{name} is empty: nothing to simulate")
    return trace


def resolve_latency(latency, name: str = "latency"):
    """A latency model from what a user may pass: a LatencyModel, a StepTimeModel, None (the default profile,
    :data:`workbench.sim.profiles.DEFAULT_PROFILE`; a disaggregated deployment resolves its own), ``"seed-grid"``
    (alias ``"grid"``: the static engine's formula grid, the seed study's) or a registered step-time profile
    name."""
    if latency is None or isinstance(latency, (LatencyModel, StepTimeModel)):
        return latency
    if isinstance(latency, str):
        from workbench.sim import profiles

        if latency in SEED_GRID_NAMES:
            return LatencyModel.default()
        profiles.check_profile(latency, name, extra=SEED_GRID_NAMES, hint="or pass a wb.LatencyModel / wb.StepTimeModel")
        return profiles.get_profile(latency)
    raise checks.InvalidType(f"{name}: must be a wb.LatencyModel, a wb.StepTimeModel, None, 'seed-grid' or a "
                             f"step-time profile name, got {type(latency).__name__}")



# ------------------------------------------------------------------ what the compiled engines may be given
# Memory the engines allocate by the configuration (not by the trace): per GPU/replica, per bin, per window.
ENGINE_TABLES_LIMIT_BYTES = 2 * 10**9
# An event time must resolve the shortest step to 0.1%: float64 has 52 mantissa bits.
_TIME_RESOLUTION = 2.0 ** -52 * 1000
_SHORTEST_PLAUSIBLE_STEP_S = 1e-6   # no GPU runs a batch or an engine step in under a microsecond


def check_time_horizon(last_s: float, latency, what: str, fix: str = "", cfg: SimConfig | None = None) -> None:
    """Arrival (queue-entry) times up to ``last_s`` must be finite and fine enough for ``latency``'s shortest
    step (see :func:`_check_times`); ``capacity`` calls it for the slowest load it will scan.  A disaggregated
    deployment passes ``{"prefill": model, "decode": model}`` and its ``cfg`` (a pipelined decode step's
    stages are shorter than the step)."""
    _check_times(last_s, _shortest_step_s(latency, cfg), what, fix)


def _check_times(last_s: float, shortest_step_s: float, what: str, fix: str = "") -> None:
    """Every event time the engine computes starts from these; they must be finite and fine enough."""
    advice = ("Are the timestamps in the right unit (seconds, not ms or ns), and rps_scaling (or a time scaling) "
              "not tiny?" + (f" {fix}" if fix else ""))
    if not np.isfinite(last_s):
        raise ValueError(f"{what}: the last arrival would be at {last_s} s, not a finite time. {advice}")
    if 0 < shortest_step_s < _SHORTEST_PLAUSIBLE_STEP_S and last_s * _TIME_RESOLUTION > shortest_step_s:
        raise ValueError(f"latency: the shortest batch or step takes {shortest_step_s:.3g} s, shorter than any GPU's "
                         f"and too short for float64 event times over {what} (its last arrival at {last_s:.4g} s): "
                         "are the latency model's coefficients in seconds?")
    if shortest_step_s > 0 and last_s * _TIME_RESOLUTION > shortest_step_s:
        horizon = shortest_step_s / _TIME_RESOLUTION
        raise ValueError(
            f"{what}: the last arrival is at {last_s:.4g} s, beyond {horizon:.3g} s, where float64 times can no "
            f"longer resolve the shortest step ({shortest_step_s:.3g} s) to 0.1%: every latency would come out "
            f"wrong. {advice}")


def _check_tables(bytes_needed: float, what: str) -> None:
    if bytes_needed > ENGINE_TABLES_LIMIT_BYTES:
        raise ValueError(f"{what}: the engine's tables would take {bytes_needed / 1e9:.3g} GB (more than "
                         f"{ENGINE_TABLES_LIMIT_BYTES / 1e9:g} GB); lower them")


def _check_engine_arrays(join_s, prompt, output, bin_id, n_bins: int) -> None:
    """The arrays a compiled engine reads: right dtype, same length, finite and sorted times, bins in range."""
    n = join_s.size
    if join_s.dtype != np.float64 or prompt.dtype != np.int32 or output.dtype != np.int32 or bin_id.dtype != np.int32:
        raise SimulationError(f"engine inputs of the wrong dtype: {join_s.dtype}, {prompt.dtype}, {output.dtype}, "
                              f"{bin_id.dtype}")
    if not (prompt.size == output.size == bin_id.size == n):
        raise SimulationError("engine inputs of different lengths")
    if n and (not np.isfinite(join_s).all() or join_s.min() < 0):
        i = int(np.argmax(~np.isfinite(join_s) | (join_s < 0)))
        raise ValueError(f"request {i}: joins the queue at {join_s[i]} s, not a finite time >= 0 (its arrival plus "
                         "the step-time model's arrival overhead)")
    if n and (prompt.min() < 0 or output.min() < 0):
        raise ValueError("token counts must be >= 0")
    if n and (bin_id.min() < 0 or bin_id.max() >= n_bins):
        raise SimulationError(f"bin ids outside [0, {n_bins})")


def _check_prefill_curvature(step: StepTimeModel, prompt, served) -> None:
    """A negative quadratic prefill term is valid only up to ``step.max_prefill_tokens`` prompt tokens."""
    limit = step.max_prefill_tokens
    if np.isfinite(limit) and np.any(served):
        longest = int(np.max(np.asarray(prompt)[served]))
        if longest >= limit:
            raise ValueError(
                f"latency: {step.name}'s prefill time has a negative per-token-squared term (c = {step.prefill[2]:g} "
                f"s), so it grows with the prompt only up to {limit:,.0f} tokens and then shrinks (and turns "
                f"negative); the trace has a served prompt of {longest:,} tokens. Cut longer prompts from the "
                "trace, or use a model fitted over prompts that long")


def _shortest_step_s(latency, cfg: SimConfig | None = None) -> float:
    if isinstance(latency, dict):  # a disaggregated deployment's pools
        from workbench.sim import disagg

        return disagg.shortest_step_s(disagg.settings_of(cfg, latency["prefill"], latency["decode"]))
    if isinstance(latency, StepTimeModel):
        return min(latency.prefill_time_s([1]), latency.decode_time_s([1]))
    return float(latency.service_time_s(1, 1))


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


_DEFAULT_CONFIG = object()  # ``config`` left out: the defaults (an explicit None is refused, see simulate)


def simulate(trace, config: SimConfig | None = _DEFAULT_CONFIG, *,
             latency: LatencyModel | StepTimeModel | str | None = None, step_log: int = 100_000,
             **overrides) -> SimResult:
    """Replay ``trace`` through a pool of GPUs under ``config``'s scheduler.

    ``scheduler="disaggregated"`` (prefill and decode instances on separate GPUs,
    :mod:`workbench.sim.disagg_engine`) takes ``latency={"prefill": ..., "decode": ...}``
    (StepTimeModels or profile names), one StepTimeModel, a profile name (resolved at
    each pool's TP degree) or None (:mod:`workbench.sim.disagg`); ``res.requests``
    adds ``kv_transfer_s``, ``decode_queue_s`` and the instances.

    ``latency=None`` is the default step-time profile
    (:data:`workbench.sim.profiles.DEFAULT_PROFILE`, OPT-13B on one A100-80GB,
    the suite's), judged on the TTFT and TPOT limits.  Static schedulers take
    it or another :class:`StepTimeModel` ("step mode"), or a
    :class:`LatencyModel` ("grid mode": ``latency="seed-grid"`` is the seed
    study's formula grid, judged on end-to-end latency within ``d_sla_s``);
    continuous ones (``continuous_*``) a :class:`StepTimeModel`.

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

    A continuous scheduler with ``config.autoscaler`` set runs a pool whose replica count a policy changes
    during the run (:mod:`workbench.sim.autoscale`, rule 16 of :mod:`workbench.sim.continuous_engine`):
    ``res.replica_timeline``, ``res.replica_events`` and ``res.replica_lives`` record it, and the summary adds
    ``replica_hours``, ``cold_starts`` and ``drains``.

    ``latency`` may also be ``"seed-grid"`` (or ``"grid"``) or a registered step-time profile name
    (:func:`workbench.sim.profiles.profile_names`).  Leaving ``config`` out
    simulates the default :class:`SimConfig`; passing ``config=None`` is
    refused (it is what a measured run without a setup file has as
    ``run.config``, and would silently run the default static scheduler).
    Every array and derived quantity is checked before a compiled engine runs
    (finite and resolvable times, sizes of the engine's tables): bad input
    raises ``ValueError``/``TypeError``, never reaches the engine.
    """
    t0 = time.perf_counter()
    if config is None:
        raise checks.InvalidType(
            "config: None (a measured run loaded without its setup.json has run.config None); pass the serving "
            "setup, e.g. wb.SimConfig(scheduler='continuous_fcfs', ...), or leave config out for the defaults")
    cfg = SimConfig() if config is _DEFAULT_CONFIG else config
    if not isinstance(cfg, SimConfig):
        raise checks.InvalidType(f"config: must be a SimConfig, got {type(cfg).__name__}")
    if overrides:
        # a misspelt keyword of simulate lands here: named as simulate's, not as SimConfig.__init__'s
        checks.keywords(overrides, "simulate", ["latency", "step_log", *(f.name for f in fields(SimConfig))])
        cfg = cfg.replace(**overrides)
    trace = _validate_trace(trace)
    step_log = checks.integer(step_log, "step_log", low=0, high=10**9)
    scheduler = get_scheduler(cfg.scheduler)
    if scheduler.engine == "disaggregated":
        # a model per pool: a {"prefill", "decode"} dict, or a profile name resolved at each pool's TP degree
        from workbench.sim.disagg import simulate_disaggregated

        return simulate_disaggregated(trace, cfg, latency, t0)
    latency = resolve_latency(latency)
    if latency is None:
        latency = _default_step_model()
    if scheduler.engine == "continuous":
        return _simulate_continuous(trace, cfg, scheduler, latency, step_log, t0)
    if isinstance(latency, StepTimeModel):
        return _simulate_static(trace, cfg, latency, t0)
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
        warn_if_slo_dwarfs_service(trace, cfg, latency)
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
    tf, ti = step_table_arrays(latency if step_mode else None, max(cfg.b_max, cfg.batch_size))

    if step_mode:
        _check_prefill_curvature(latency, prompt, accepted)
    _check_times(float(join_s[-1]) if join_s.size else 0.0, _shortest_step_s(latency), "trace")
    _check_tables(16.0 * n_bins * cfg.ctrl_window + 96.0 * n_bins + 48.0 * cfg.num_gpus,
                  f"k_bins={n_bins} x ctrl_window={cfg.ctrl_window}, num_gpus={cfg.num_gpus}")
    join_s = np.ascontiguousarray(join_s, dtype=np.float64)
    _check_engine_arrays(join_s, np.asarray(e_prompt), np.asarray(e_output), np.asarray(e_bin), n_bins)
    budget = cfg.sla_budget_fraction * cfg.d_sla_s
    batch_of, start_s, finish_s, first_s, batch_float, batch_int, error = engine.run_engine(
        np.ascontiguousarray(join_s), e_prompt, e_output, e_bin, e_accepted, n_bins, cfg.num_gpus,
        spec.batch_rule, cfg.batch_size, spec.bin_policy,
        *grid, capacity,
        cfg.b_min, cfg.b_max, budget, cfg.ctrl_eps_fraction * budget,
        float(cfg.ctrl_alpha), float(cfg.ctrl_delta), cfg.ctrl_window, cfg.mem_theta, cfg.spread_idle,
        cfg.ctrl_retry_batches, step_mode, coef, tf, ti)
    if error:
        raise SimulationError(f"engine invariant violated (code {error}) for {cfg}")
    if step_mode and latency.table is not None:
        latency.table.check_seen(tf, f"{cfg.scheduler} on this trace")
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


def step_table_arrays(model: StepTimeModel | None, max_decodes: int,
                      max_tokens: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The ``(tf, ti)`` arrays an engine takes: a tabulated model's packed table (decode runs of up to
    ``max_decodes`` decodes; dense lookups for steps of up to ``max_tokens`` prefill tokens), or the empty table
    that tells the engine to use the linear coefficients."""
    if model is not None and model.table is not None:
        return model.table.pack(max_decodes, max_tokens)
    return np.zeros(TF_HEAD), np.zeros(TI_N, np.int64)


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
    """Status each request starts with in the continuous engine: completed (to be served) or why it is rejected
    (rule 2 of :mod:`workbench.sim.continuous_engine`)."""
    bs, blocks = cfg.block_size, cfg.kv_blocks_effective
    prompt = np.asarray(trace.prompt_tokens, dtype=np.int64)
    peak_blocks = (prompt + np.maximum(np.asarray(trace.output_tokens, dtype=np.int64), 1) - 1 + bs - 1) // bs
    status = np.full(prompt.size, STATUS_COMPLETED, np.int8)
    if not cfg.chunked_prefill:
        status[prompt > cfg.max_num_batched_tokens] = STATUS_REJECTED_BUDGET
        # vLLM v0.2's can_allocate: AllocStatus.NEVER when the prompt leaves less than the watermark free
        status[(prompt + bs - 1) // bs > blocks - cfg.kv_watermark_blocks] = STATUS_REJECTED_KV
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
    output = np.asarray(trace.output_tokens)
    if output.size and output.min() < 1:
        raise ValueError("the continuous engine needs output_tokens >= 1 for every request (the first token "
                         f"comes from the prefill); {int(np.count_nonzero(output < 1))} request(s) have 0")
    spec = scheduler.continuous_spec(cfg)
    arrival_s = np.ascontiguousarray(trace.arrival_s, dtype=np.float64)
    prompt = np.asarray(trace.prompt_tokens)
    n = arrival_s.size
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
    _check_prefill_curvature(latency, prompt, status == STATUS_COMPLETED)
    warn_if_slo_dwarfs_service(trace, cfg, latency)
    joins = join_s[join_order] if join_order.size else join_s[:0]
    _check_times(float(joins.max()) if joins.size else 0.0, _shortest_step_s(latency), "trace")
    tree = prefix_tree(trace, cfg.block_size) if cfg.prefix_caching else empty_tree(0, cfg.block_size)
    blocks = cfg.kv_blocks_effective
    heap = ceng.finish_heap_capacity(cfg.max_num_seqs, blocks, n, cfg.prefix_caching)
    cache = (f" + prefix cache of {tree.num_nodes:,} prefix-tree nodes and up to "
             f"{ceng.lru_records(blocks, tree.num_nodes, n):,} LRU records" if cfg.prefix_caching else "")
    slots = cfg.max_replicas_effective
    pool = f"max_replicas={slots}" if cfg.autoscaler else f"num_gpus={cfg.num_gpus}"
    _check_tables(ceng.table_bytes(num_requests=n, num_replicas=slots, n_bins=n_bins,
                                   block_size=cfg.block_size, max_num_seqs=cfg.max_num_seqs, kv_blocks=blocks,
                                   window=cfg.ctrl_window, caching=cfg.prefix_caching, n_nodes=tree.num_nodes,
                                   log_capacity=step_log),
                  f"{pool} replicas x (block_size={cfg.block_size} + k_bins={n_bins} + ctrl_window="
                  f"{cfg.ctrl_window} + a finish heap of {heap:,}{cache}), and step_log={step_log}")
    # read-only whether or not an arrival overhead made a new array: one compiled signature, not two (the
    # continuous engine takes tens of seconds to compile)
    join_s = np.ascontiguousarray(join_s, dtype=np.float64).view()
    join_s.flags.writeable = False
    _check_engine_arrays(join_s, prompt, output, np.asarray(bin_id), n_bins)
    tf, ti = step_table_arrays(latency, cfg.max_num_seqs, cfg.max_num_batched_tokens)
    budget = cfg.sla_budget_fraction * cfg.tpot_sla_s
    engine_args = (
        np.asarray(join_order, dtype=np.int64), join_s, prompt, output, bin_id, n_bins, cfg.num_gpus,
        ceng.ROUTERS[cfg.router], spec.policy, spec.jumps, cfg.chunked_prefill, cfg.prefix_caching,
        cfg.max_num_seqs, cfg.max_num_batched_tokens, cfg.max_paddings, cfg.kv_watermark_blocks, cfg.block_size,
        cfg.kv_blocks_effective, coef, min(cfg.b_min, cfg.max_num_seqs), cfg.max_num_seqs, budget,
        cfg.ctrl_eps_fraction * budget, float(cfg.ctrl_alpha), float(cfg.ctrl_delta), cfg.ctrl_window,
        cfg.mem_theta, cfg.prefix_affinity_margin, tree.path_off, tree.path_node, tree.node_first,
        tree.node_blocks, tree.path_blocks, int(step_log), tf, ti, cfg.reserve_full_isl, cfg.dp_lockstep)
    scaling = None
    if cfg.autoscaler is None:
        (rq, tq, busy_s, block_s, steps, log_f, log_i, error) = ceng.run_continuous(*engine_args)
    else:
        (rq, tq, busy_s, block_s, steps, log_f, log_i, error, control, events, end_s) = run_autoscaled(
            cfg, engine_args)
        scaling = {"control": pd.DataFrame(control), "events": pd.DataFrame(events), "end_s": end_s}
        scaling["lives"] = replica_lives(scaling["events"], end_s)
    if error:
        raise SimulationError(f"continuous engine invariant violated (code {error}) for {cfg}")
    if latency.table is not None:
        latency.table.check_seen(tf, f"{cfg.scheduler} on this trace")
    replica, preemptions = (np.ascontiguousarray(rq[:, c]) for c in (ceng.RQ_REPLICA, ceng.RQ_PREEMPT))
    sched_s, first_s, end_s = tq[ceng.T_SCHED], tq[ceng.T_FIRST], tq[ceng.T_FINISH]
    dropped = rq[:, ceng.RQ_STATE] == ceng.ST_DROPPED
    served = ~np.isnan(end_s)
    if not np.array_equal(served | dropped, status == STATUS_COMPLETED) or np.any(served & dropped):
        raise SimulationError("a request was lost or a rejected request was served")
    if dropped.any():
        status = status.copy()
        status[dropped] = STATUS_DROPPED
        log.info("%d request(s) dropped after preemption (vLLM v0.2 ignores them)", int(dropped.sum()))
    cached = np.ascontiguousarray(rq[:, ceng.RQ_CACHED])
    token_o = latency.token_overhead_s
    ttft_s = first_s - arrival_s + token_o
    e2e_s = end_s - arrival_s + output * token_o
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot_s = np.where(output > 1, (e2e_s - ttft_s) / np.maximum(output - 1, 1), np.nan)
    queue_s = sched_s - arrival_s
    replica_seconds = None if scaling is None else float(scaling["lives"]["seconds"].sum())
    summary = summarize_continuous(
        arrival_s=arrival_s, ttft_s=ttft_s, tpot_s=tpot_s, e2e_s=e2e_s, queue_s=queue_s, preemptions=preemptions,
        status=status, output_tokens=output, busy_s=busy_s, block_seconds=block_s,
        kv_blocks=cfg.kv_blocks_effective, num_replicas=cfg.num_gpus,
        ttft_sla_s=cfg.ttft_sla_s, tpot_sla_s=cfg.tpot_sla_s, replica_seconds=replica_seconds)
    if scaling is not None:
        summary.update(autoscaling_summary(scaling, cfg))
    summary["offered_rps"] = offered_rate_rps(arrival_s)
    summary["engine_steps"] = int(steps.sum())
    summary["k_bins_effective"] = int(n_bins)
    admitted = served | dropped
    prompt_admitted = float(prompt[admitted].sum(dtype=np.int64))
    summary["prefix_hit_rate"] = float(cached[admitted].sum(dtype=np.int64)) / prompt_admitted \
        if prompt_admitted > 0 else float("nan")
    summary["dropped"] = int(dropped.sum())
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
                    "preemptions": preemptions, "cached_tokens": cached, "prompt_tokens": prompt,
                    "output_tokens": output,
                    "first_token_step_end_s": first_s, "last_step_end_s": end_s, "busy_s": busy_s,
                    "block_seconds": block_s, "log_f": log_f, "log_i": log_i},
        autoscaling=scaling)


def autoscaling_summary(scaling: dict, cfg: SimConfig) -> dict:
    """The summary keys of an autoscaled run: replica-hours provisioned (billed from a start to leaving), the
    time-average and extremes of the replicas provisioned and active, and how many starts, cancellations and
    drains the policy caused (see :mod:`workbench.sim.autoscale`)."""
    lives, events, end_s = scaling["lives"], scaling["events"], scaling["end_s"]
    seconds = float(lives["seconds"].sum())
    control = scaling["control"]
    started = events["phase_from"].eq("off") & events["time_s"].gt(0)
    return {"replica_hours": seconds / 3600.0,
            "replicas_mean": seconds / end_s if end_s > 0 else float("nan"),
            "replicas_max": int(max(control["replicas"].max(), cfg.num_gpus)) if len(control) else cfg.num_gpus,
            "replicas_min": int(min(control["replicas"].min(), cfg.num_gpus)) if len(control) else cfg.num_gpus,
            "cold_starts": int(started.sum()),
            "cold_starts_cancelled": int((events["phase_from"].eq("starting") & events["phase_to"].eq("off")).sum()),
            "drains": int(events["phase_to"].eq("draining").sum()),
            "control_instants": int(len(control))}
