"""Sweeps: tests keyed by a hash of their configuration, checkpointed one row at a time.

A :class:`SweepTest` is one full configuration: the trace options (and the
fingerprint of the trace they produce), the :class:`~workbench.sim.config.SimConfig`,
the latency model and, optionally, a :class:`CapacitySpec`.  Its ``test_id`` is
the first 16 hex digits of a sha256 over a canonical JSON of these plus
:data:`SCHEMA_VERSION` (the capacity spec only when there is one, so the ids of
replay-only tests did not change when it was added), so a rerun recognises
what is already done and changing one parameter reruns only the tests it
affects.

Every test replays its trace once at the trace's own rate.  A test with a
``capacity`` spec also searches the largest rate the configuration sustains
within the SLA (:func:`workbench.study.runs.capacity.capacity`, the same trace compressed
or stretched in time) and adds the ``capacity_*`` columns of
:meth:`~workbench.study.runs.capacity.CapacityResult.to_row` to its row.  When no load
meets the target (:class:`~workbench.study.runs.capacity.CapacityError`) the test still
succeeds: ``capacity_rps`` is NaN and ``capacity_error`` holds the reason.

:func:`run_sweep` runs the tests that are not in the checkpoint yet and returns
one row per test (configuration columns, every summary metric, with a
capacity spec the ``capacity_*`` columns, the trace's label and fingerprint,
``synthetic``, ``simulator_version``, ``wall_s``, ``finished_at``), in the
order of the test list.  A checkpointed row whose
``simulator_version`` (a hash of the simulator's source) differs from the
running code's is recomputed and replaced, so a fix to the engine never hides
behind an old result.

Checkpoint format (one CSV per step, e.g. ``step2_gpu_scaling.csv``; see :mod:`workbench.study.store.checkpoints`)
    After every finished test the whole file is rewritten: a temp file in the
    same folder, flushed and fsynced, then ``os.replace`` (and an fsync of the
    folder).  A reader opening the file at any moment sees a complete, valid
    CSV; ``kill -9`` loses at most the tests that were running (one when
    serial, one per worker with a pool).  A rewrite is
    chosen over appending because rows differ in columns (``bin{j}_*`` exist
    for j < K), which a fixed header cannot hold; at tens of rows it costs
    nothing.  The file is keyed by ``test_id`` and keeps every test ever
    finished for that step in this folder (also those of earlier runs with
    other parameters: every row carries its full configuration); the latest
    run of each step is what ``all_results.csv`` holds.  A missing value is
    written as ``NaN``, never as an empty cell.  Reading drops a torn last
    line and refuses (:class:`CheckpointError`, naming file, line and column,
    and saying to move the file aside) what no writer here produces: a
    repeated header, a row wider than the header or cut short mid-file, an
    empty cell in a metric column of a row of the current simulator code.

Concurrency
    Every read-merge-write holds an exclusive ``fcntl.flock`` on
    ``<results_dir>/.workbench.lock``, and each writer merges its row into the
    file as it is at that moment (deduplicated by ``test_id``, last wins).  Two
    sweeps on the same folder therefore wait for each other's writes, never
    overwrite each other's rows and never corrupt a file; at worst they both
    compute a test that neither had finished when it started.

Executors
    ``None`` (serial for one queued test, else a local process pool of
    ``min(2, cores, queued)`` workers), ``"serial"``, ``"process"`` or
    ``"process:N"`` (or an int N), ``"dask://host:port"`` / ``"tcp://host:port"``
    or a ``distributed.Client``.  Workers receive the trace *options* and call
    ``load_trace`` themselves, which reads the on-disk cache the parent
    filled (never re-parsing a CSV); every test's randomness comes from its own
    seed, so all executors give the same rows bit for bit.
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import math
import multiprocessing
import os
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd

from workbench import checks
from workbench.study.runs.capacity import CRITERIA as CAPACITY_CRITERIA
from workbench.study.runs.capacity import DEFAULT_ATTAINMENT, SCALE_BOUNDS
from workbench.study.runs.capacity import CapacityError, attainable_share, slo_attainable_share
from workbench.study.runs.capacity import capacity as search_capacity
from workbench.sim.config import SimConfig
from workbench.sim.latency import LatencyModel
from workbench.sim.steptime import COEF_NAMES, StepTimeModel
from workbench.traces.trace import DEFAULT_RPS_SCALING
from workbench.study.store.checkpoints import (GRID_PROFILE, CheckpointError, current_rows_near, finished_ids,
                                               load_and_repair, merge_rows, read_rows, select_rows, simulator_version)
from workbench.study.store.files import display_source, resolve_results_dir, resolve_user_path, results_lock

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1


class SweepError(RuntimeError):
    """One or more tests of a sweep failed (the others are checkpointed); ``failures``: (test, exception)."""

    def __init__(self, message: str, failures=()):
        super().__init__(message)
        self.failures = list(failures)


# --------------------------------------------------------------------------- tests


_SAID_SIZE: set = set()   # (dataset, num_requests) already said to be larger than the trace, in this process


@dataclass(frozen=True)
class TraceOptions:
    """The arguments of :func:`workbench.load_trace` that produce a test's trace.

    ``dataset=None`` (or ``"synthetic"``) is the embedded synthetic trace; a dataset name
    (``"azure_conv"``, see ``workbench.traces.datasets``) is kept as it is; a path is
    stored absolute so a worker in another folder or process finds the same file.
    """

    dataset: str | None = None
    num_requests: int | None = None
    rps_scaling: float = DEFAULT_RPS_SCALING   # load_trace's default
    use_real_timestamps: bool = False
    seed: int = 0
    drop_failed: bool = True
    models: tuple[str, ...] | None = None
    log_types: tuple[str, ...] | None = None

    def __post_init__(self):
        if self.dataset is not None and not isinstance(self.dataset, (str, os.PathLike)):
            raise checks.InvalidType(f"dataset: must be None, a dataset name or a CSV path, got {self.dataset!r}")
        object.__setattr__(self, "dataset", normalize_dataset(self.dataset))
        object.__setattr__(self, "num_requests", checks.integer(self.num_requests, "num_requests", low=1, none=True))
        object.__setattr__(self, "rps_scaling", checks.number(self.rps_scaling, "rps_scaling", low=0, low_open=True))
        for name in ("use_real_timestamps", "drop_failed"):
            object.__setattr__(self, name, checks.boolean(getattr(self, name), name))
        object.__setattr__(self, "seed", checks.integer(self.seed, "seed", low=0))
        for name in ("models", "log_types"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(sorted(value)) if not isinstance(value, str) else (value,))

    def load(self, *, quiet: bool = False):
        """The trace (from the in-process or on-disk cache after the first call).

        A dataset smaller than ``num_requests`` is said once per process, as one plain log line (the whole
        trace is used), not as a Python warning with source lines at every load; ``quiet`` (a sweep's workers:
        the plan has said it) says nothing."""
        from workbench.traces.trace import TraceSizeWarning, load_trace

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", TraceSizeWarning)
            trace = load_trace(self.dataset, num_requests=self.num_requests, rps_scaling=self.rps_scaling,
                               use_real_timestamps=self.use_real_timestamps, drop_failed=self.drop_failed,
                               models=list(self.models) if self.models else None,
                               log_types=list(self.log_types) if self.log_types else None, seed=self.seed)
        for warning in caught:
            if not issubclass(warning.category, TraceSizeWarning):
                warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
            elif not quiet and (self.dataset, self.num_requests) not in _SAID_SIZE:
                _SAID_SIZE.add((self.dataset, self.num_requests))
                log.warning("the trace %s holds %d requests, fewer than the %d asked for: every test uses all %d",
                            self.dataset or "synthetic", len(trace), self.num_requests, len(trace))
        return trace

    def identity(self) -> dict:
        """What of these options enters a test id (the path does not: the fingerprint covers the content)."""
        d = dataclasses.asdict(self)
        d.pop("dataset")
        d["models"] = list(self.models) if self.models else None
        d["log_types"] = list(self.log_types) if self.log_types else None
        return d


def _help(default, text: str):
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class CapacitySpec:
    """What a test's capacity search looks for (see :func:`workbench.study.runs.capacity.capacity`)."""

    attainment: float = _help(DEFAULT_ATTAINMENT, "share of the offered requests that must finish within d_sla_s "
                                   "(criterion 'attainment'), in (0, 1]")
    criterion: str = _help("attainment", "'attainment', 'p99_latency' (p99 of completed requests <= d_sla_s, "
                                         "nothing rejected) or 'slo' (TTFT and TPOT limits; continuous schedulers, "
                                         "which make_test switches to it)")
    resolution: float = _help(0.01, "relative gap between the last passing and the first failing rate at "
                                    "which the search stops, in (0, 1)")

    def __post_init__(self):
        checks.choice(self.criterion, "capacity criterion", CAPACITY_CRITERIA)
        for name, closed_top in (("attainment", True), ("resolution", False)):
            object.__setattr__(self, name, checks.number(getattr(self, name), f"capacity {name}", low=0,
                                                         low_open=True, high=1, high_open=not closed_top))

    @classmethod
    def help(cls) -> str:
        return "\n".join(f"{f.name} (default {f.default!r}): {f.metadata['help']}" for f in dataclasses.fields(cls))


@dataclass(frozen=True)
class SweepTest:
    """One test of a sweep: a full configuration, identified by :attr:`test_id`."""

    step: str
    trace: TraceOptions
    trace_fingerprint: str
    config: SimConfig
    latency: LatencyModel | StepTimeModel = field(default_factory=LatencyModel.default)
    trace_label: str = ""
    synthetic: bool = False
    label: str = ""
    capacity: CapacitySpec | None = None
    replication: int = 0  # index of the seed among the test's replications (0: the plan's own seed)
    base_test_id: str = ""  # the test id of replication 0: what the replications of one test share
    # capacity search: (test id, scale) of the tests whose capacity, times the scale, is where this one's search
    # starts: the first that found one (see with_capacity_hint); part of the id, so a result never depends on
    # which tests happened to finish first
    hints: tuple[tuple[str, float], ...] = ()
    capacity_hint: tuple | None = field(default=None, compare=False)  # (rps, slope): filled in by run_sweep

    @property
    def hint_from(self) -> tuple[str, ...]:
        """The ids of the tests this one's capacity search starts from (they run first)."""
        return tuple(source for source, _ in self.hints)

    @property
    def test_id(self) -> str:
        hint = [{"from": source, "scale": float(scale)} for source, scale in self.hints] or None
        if hint is not None and len(hint) == 1:
            hint = hint[0]
        return test_id(self.trace, self.trace_fingerprint, self.config, self.latency, self.capacity, hint)

    def columns(self) -> dict:
        """The configuration columns of this test's result row."""
        row = {"test_id": self.test_id, "step": self.step, "label": self.label or self.config.scheduler}
        row.update(self.config.to_dict())
        row.update(memory_columns(self.config))
        row.update({"dataset": self.trace.dataset or "", "num_requests": self.trace.num_requests,
                    "rps_scaling": self.trace.rps_scaling, "use_real_timestamps": self.trace.use_real_timestamps,
                    "trace_seed": self.trace.seed})
        row.update(latency_columns(self.latency))
        row["capacity_search"] = self.capacity is not None
        if self.capacity is not None:
            row["capacity_hint_from"] = " ".join(self.hint_from) or None
        row["replication"] = self.replication
        row["base_test_id"] = self.base_test_id or self.test_id
        return row



def memory_columns(config: SimConfig) -> dict:
    """The memory a test's engine actually used, in the configuration's own columns where they say "None = derived"
    (weights and KV cache per token from the model preset, KV blocks and the watermark from the memory fields),
    and ``kv_capacity_tokens``: the KV cache of one GPU in tokens (the static engine's batch limit; the continuous
    engine's blocks hold ``kv_blocks x block_size`` of them).  A field that the test's engine does not have stays
    NaN (KV blocks for static batches, a disaggregated instance's blocks elsewhere).  The test id is computed from
    the configuration as given, so these columns change no id."""
    from workbench.sim.schedulers import get_scheduler

    engine = get_scheduler(config.scheduler).engine
    out = {"model_mem_gb": config.weights_gb, "kv_gb_per_token": config.kv_gb_per_token_effective,
           "kv_capacity_tokens": config.kv_capacity_tokens}
    if engine == "continuous":
        out.update(kv_blocks=config.kv_blocks_effective, kv_watermark=config.kv_watermark_effective)
    elif engine == "disaggregated":
        out.update(prefill_kv_blocks=config.prefill_kv_blocks_effective,
                   decode_kv_blocks=config.decode_kv_blocks_effective)
    return out


def latency_identity(latency: LatencyModel | StepTimeModel) -> dict:
    """What of a latency model enters a test id: a LatencyModel's three coefficients (as before step-time
    models existed, so those ids did not change), a StepTimeModel's name and coefficient vector."""
    if isinstance(latency, StepTimeModel):
        table = {"table": latency.table.fingerprint} if latency.table is not None else {}   # a tabulated model
        return {"profile": latency.name, **dict(zip(COEF_NAMES, map(float, latency.coefficients()))), **table}
    if isinstance(latency, LatencyModel):
        return latency.params()
    raise ValueError(f"latency: expected a LatencyModel or a StepTimeModel, got {type(latency).__name__}")


def latency_columns(latency: LatencyModel | StepTimeModel) -> dict:
    """The latency columns of a result row: ``latency_profile`` and the model's coefficients.

    A LatencyModel gives ``latency_profile = "grid"`` and ``latency_base_s`` ...; a StepTimeModel its
    profile name and ``step_<coefficient>`` (seconds; see :data:`workbench.sim.steptime.COEF_NAMES`).
    """
    if isinstance(latency, StepTimeModel):
        coefficients = latency.coefficients()
        if latency.decode_large is None:  # the engine's "never" threshold is 2**62: say none instead
            coefficients[COEF_NAMES.index("decode_large_threshold")] = math.nan
        from workbench.sim.profiles import step_model_kind

        return {"latency_profile": latency.name, "latency_kind": step_model_kind(latency),
                **{f"step_{name}": float(v) for name, v in zip(COEF_NAMES, coefficients)}}
    return {"latency_profile": GRID_PROFILE, "latency_kind": "formula grid",
            **{f"latency_{k}": v for k, v in latency_identity(latency).items()}}


def test_id(trace: TraceOptions, fingerprint: str, config: SimConfig, latency: LatencyModel,
            capacity: CapacitySpec | None = None, capacity_hint: dict | None = None) -> str:
    """16 hex digits of sha256 over the canonical JSON of everything that determines a result (a capacity
    search's starting point included: where the answer is rough at the grid's scale, it can matter)."""
    payload = {"schema_version": SCHEMA_VERSION, "trace": {**trace.identity(), "fingerprint": fingerprint},
               "config": config.to_dict(), "latency": latency_identity(latency)}
    if capacity is not None:  # absent, not null: replay-only ids stay what they were before capacity existed
        payload["capacity"] = dataclasses.asdict(capacity)
        if capacity_hint is not None:
            payload["capacity_hint"] = capacity_hint
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


test_id.__test__ = False  # a pytest collecting `from workbench.study.runs.sweep import test_id` must not call it



def is_continuous(scheduler: str) -> bool:
    """Whether ``scheduler`` runs on an iteration-level engine (continuous batching, or disaggregated prefill
    and decode): timed by a step-time profile, judged on TTFT and TPOT."""
    from workbench.sim.schedulers import get_scheduler

    return get_scheduler(scheduler).engine != "static"


def check_replay_times(trace, latency, label: str, capacity: bool) -> None:
    """The replay of ``trace``, and the slowest load a capacity search scans, must give the engine usable
    times (see :func:`workbench.sim.simulate.check_time_horizon`)."""
    from workbench.sim.simulate import check_time_horizon

    stretch = 1.0 / SCALE_BOUNDS[0] if capacity else 1.0
    check_time_horizon(float(trace.arrival_s[-1]) * stretch if len(trace) else 0.0, latency,
                       f"{label} on {trace.label}"
                       + (f" (its capacity search replays it up to {stretch:g}x slower)" if capacity else ""),
                       "Or turn the capacity search off." if capacity else "")


def make_test(step: str, trace_options: TraceOptions, config: SimConfig, *, trace=None,
              latency: LatencyModel | StepTimeModel | None = None, label: str = "",
              capacity: CapacitySpec | None = None, replication: int = 0, base_test_id: str = "") -> SweepTest:
    """Build a :class:`SweepTest`; ``trace`` (already loaded) saves a load for its fingerprint.

    A test timed by a step-time model (continuous schedulers, and static ones in step mode) has its capacity
    searched with criterion ``'slo'`` (TTFT and TPOT limits of its config, DistServe's goodput) at the spec's
    attainment, whatever the spec's criterion.
    """
    trace = trace if trace is not None else trace_options.load()
    if latency is None:
        latency = LatencyModel.default()
    latency_identity(latency)  # ValueError for anything else
    step_timed = is_continuous(config.scheduler) or isinstance(latency, StepTimeModel)
    # checked now, when the plan is made, not when the test runs
    check_replay_times(trace, latency, label or config.scheduler, capacity is not None)
    if capacity is not None and step_timed and capacity.criterion != "slo":
        capacity = dataclasses.replace(capacity, criterion="slo")
    return SweepTest(step=step, trace=trace_options, trace_fingerprint=trace.fingerprint, config=config,
                     latency=latency, trace_label=trace.label, synthetic=bool(trace.is_synthetic), label=label,
                     capacity=capacity, replication=int(replication), base_test_id=base_test_id)


def with_capacity_hint(test: SweepTest, *sources: tuple[SweepTest | None, float] | SweepTest | None) -> SweepTest:
    """``test`` whose capacity search starts from a source's capacity times its scale: the first source, in
    the order given, that found a capacity (e.g. the previous GPU count's, times the ratio of GPU counts, since
    capacity grows about linearly with GPUs; else another scheduler's on the same GPUs).  A source is a
    ``(SweepTest, scale)`` pair or a test (scale 1).  The search's answer is the same from any start where
    attainment falls monotonically with load; the hint saves probes (3-5 instead of ~10 from the trace's own
    rate).  It enters the test id, so the sources run first (the sweep orders it so) and every run of the test
    starts from the same place.  Replaces any hint ``test`` had."""
    hints = []
    for source in sources:
        source, scale = source if isinstance(source, tuple) else (source, 1.0)
        if source is not None and source.capacity is not None:
            hints.append((source.test_id, float(scale)))
    if test.capacity is None:
        return test
    return dataclasses.replace(test, hints=tuple(hints))


def capacity_hint_from_row(row, scale: float) -> tuple | None:
    """(hint in requests/s, the criterion's slope per unit of log rate) from the hint source's result row,
    None when the source found no capacity.

    The hint is the source's capacity times ``scale``, corrected by half (in log) of how far the source's own
    hint was from its answer: along a chain of GPU counts capacity per GPU keeps growing (statistical
    multiplexing), so the last step's surprise is the best guess of the next one's.
    """
    try:
        cap = float(row.get("capacity_rps", math.nan))
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(cap) and cap > 0):
        return None
    try:
        previous = float(row.get("capacity_hint_rps", math.nan))
    except (TypeError, ValueError):
        previous = math.nan
    trend = math.sqrt(cap / previous) if math.isfinite(previous) and previous > 0 else 1.0
    slope = math.nan
    try:
        lo, hi = float(row["capacity_scaling"]), float(row["capacity_scaling_above"])
        va, vb = float(row["capacity_attainment"]), float(row["capacity_attainment_above"])
        if all(map(math.isfinite, (lo, hi, va, vb))) and hi > lo:
            slope = (vb - va) / math.log(hi / lo)
    except (KeyError, TypeError, ValueError):
        pass
    return cap * scale * min(max(trend, 0.5), 2.0), slope


def capacity_columns(trace, test: SweepTest, replay_summary: dict | None = None) -> dict:
    """The ``capacity_*`` columns of a test with a capacity spec (``capacity_error`` is None on success).

    ``replay_summary`` (the test's replay at the trace's own rate) is the search's first probe;
    ``test.capacity_hint`` (filled in by :func:`run_sweep` from the hint source's row) where it goes next.
    """
    spec = test.capacity
    hint_rps, hint_slope = test.capacity_hint if test.capacity_hint else (None, None)
    try:
        found = search_capacity(trace, test.config, latency=test.latency, attainment=spec.attainment,
                                criterion=spec.criterion, resolution=spec.resolution, start=1.0,
                                start_summary=replay_summary, hint_rps=hint_rps, hint_slope=hint_slope)
    except CapacityError as exc:
        # no load meets the target: a result, not a failure (the message says why)
        log.info("%s: no capacity: %s", test.label or test.test_id, exc)
        attainable = (slo_attainable_share(trace, test.config, test.latency) if spec.criterion == "slo"
                      else attainable_share(trace, test.config, test.latency))
        return {"capacity_rps": math.nan, "capacity_scaling": math.nan, "capacity_attainment": math.nan,
                "capacity_probes": math.nan,
                "capacity_attainable": attainable,
                "capacity_criterion": spec.criterion,
                "capacity_target": spec.attainment if spec.criterion in ("attainment", "slo") else test.config.d_sla_s,
                "capacity_resolution": spec.resolution, "capacity_error": str(exc),
                "capacity_hint_rps": hint_rps if hint_rps is not None else math.nan}
    return {**found.to_row(), "capacity_resolution": spec.resolution, "capacity_error": None,
            "capacity_hint_rps": hint_rps if hint_rps is not None else math.nan}


def run_test(test: SweepTest) -> dict:
    """Simulate one test (and search its capacity, if asked) and return its result row.

    Runs in whichever process executes it.
    """
    from workbench.sim.simulate import simulate

    if test.hints and test.capacity_hint is None:
        raise ValueError(f"test {test.test_id} starts its capacity search from the answer of test(s) "
                         f"{', '.join(test.hint_from)}: run it with run_sweep, which runs them first and passes it on")
    t0 = time.perf_counter()
    trace = test.trace.load(quiet=True)
    if trace.fingerprint != test.trace_fingerprint:
        raise RuntimeError(
            f"test {test.test_id}: the trace loaded from {test.trace} has fingerprint {trace.fingerprint}, "
            f"the test was planned with {test.trace_fingerprint}; the dataset or the trace cache changed "
            "since the test list was built: rebuild it")
    result = simulate(trace, test.config, latency=test.latency)
    row = test.columns()
    row.update(result.summary)
    if test.capacity is not None:
        row.update(capacity_columns(trace, test, result.summary))
    row.update({"trace_label": trace.label, "trace_fingerprint": trace.fingerprint,
                "synthetic": bool(trace.is_synthetic), "simulator_version": simulator_version(),
                "wall_s": time.perf_counter() - t0,
                "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")})
    return {k: _plain(v) for k, v in row.items()}


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    return value


# --------------------------------------------------------------------------- trace options


def normalize_dataset(dataset) -> str | None:
    """None for the synthetic trace (None, "", "None", "synthetic"), a dataset name as it is, else an absolute path."""
    from workbench.traces import datasets

    if dataset is None or dataset in ("", "None", datasets.SYNTHETIC):
        return None
    if datasets.is_name(dataset):
        return dataset
    return str(resolve_user_path(dataset))




# --------------------------------------------------------------------------- executors

_POOLS: dict[int, cf.ProcessPoolExecutor] = {}


def default_workers(queued: int) -> int:
    return max(1, min(2, os.cpu_count() or 1, queued))


def _process_pool(workers: int) -> cf.ProcessPoolExecutor:
    """A spawn-context pool, kept for the life of the process (a notebook reuses it cell after cell)."""
    pool = _POOLS.get(workers)
    if pool is None:
        # spawn, not fork: forking a process that has run numba (or holds threads) is fragile
        pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                      initializer=_worker_init, initargs=(os.getpid(),))
        _POOLS[workers] = pool
    return pool


# How often a pool worker checks that the process that started it is still alive.
ORPHAN_POLL_S = 0.5


def _worker_init(parent_pid: int) -> None:
    # Ctrl-C / a notebook interrupt reaches the whole process group: let the parent
    # handle it (it cancels what is queued) instead of every worker printing a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _watch_parent(parent_pid)
    from workbench.study.present.console import plain_warnings

    plain_warnings()   # a warning in a worker: one plain line, once, not a source line with the machine's path


def _watch_parent(parent_pid: int, poll_s: float = ORPHAN_POLL_S) -> threading.Thread:
    """Exit this worker as soon as ``parent_pid`` is no longer its parent.

    A ``kill -9`` of the suite (or of the papermill kernel, which ipykernel's
    own parent poller ends when the suite dies) leaves the pool's workers
    reparented to init: without this they would live on, ~190 MB each.  A
    thread polling ``os.getppid()`` works on every POSIX system and whatever
    the chain of parents; prctl(PR_SET_PDEATHSIG) would fire when the
    *thread* that spawned the worker exits, which a pool submitting from a
    short-lived thread would mistake for the parent's death.  The compiled
    engine holds the GIL during one simulation, so the exit may wait for the
    running simulation to return (well under a second at the suite's sizes).
    """
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        log.warning("pool worker %d: parent %d is gone; exiting", os.getpid(), parent_pid)
        os._exit(1)  # no cleanup to wait for: results go to the parent, which is dead

    thread = threading.Thread(target=watch, name="workbench-parent-watch", daemon=True)
    thread.start()
    return thread


def shutdown_pools() -> None:
    while _POOLS:
        _, pool = _POOLS.popitem()
        pool.shutdown(wait=True, cancel_futures=True)


atexit.register(shutdown_pools)


DASK_CONNECT_TIMEOUT_S = 3.0


def check_dask_reachable(executor: str, timeout_s: float = DASK_CONNECT_TIMEOUT_S) -> None:
    """``ConnectionError`` within ``timeout_s`` when nothing listens at a ``dask://host:port`` address
    (``distributed.Client`` would retry for its whole timeout before saying so)."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(executor.strip())
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host or port is None:
        raise ValueError(f"executor: {executor!r}: expected dask://host:port (e.g. dask://127.0.0.1:8786)")
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        raise ConnectionError(
            f"executor {executor}: no Dask scheduler answers at {host}:{port} ({exc.strerror or exc}); start one "
            f"(`dask scheduler --port {port}` and `dask worker tcp://{host}:{port}`), or use executor='process' "
            "(--executor process) to run on this machine") from None


def _dask_client(executor):
    """(client, owned) for a ``distributed.Client`` or a ``dask://``/``tcp://`` address."""
    from distributed import Client

    if isinstance(executor, Client):
        return executor, False
    check_dask_reachable(executor)
    address = executor.replace("dask://", "tcp://", 1) if executor.startswith("dask://") else executor
    return Client(address, timeout="30s", set_as_default=False), True


def describe_executor(executor, queued: int) -> str:
    kind, arg = parse_executor(executor, queued)
    return {"serial": "serial", "process": f"process pool ({arg} workers)"}.get(kind, f"dask ({arg})")


def _worker_count(n: int, spec) -> int:
    """A process count the machine can hold: each worker loads its own engine (~300 MB), and a pool spawns
    one per queued test up to N, so process:1000 over a 78-test suite would start 78 of them."""
    from workbench import checks

    most = 4 * (os.cpu_count() or 1)
    return checks.integer(n, f"executor ({spec!r})", low=1, high=most,
                          high_why=f"4 worker processes per CPU; this machine has {os.cpu_count() or 1}")


def parse_executor(executor, queued: int) -> tuple[str, Any]:
    """(kind, argument) of an executor spec for ``queued`` tests; ``ValueError`` names the accepted specs."""
    if executor is None or executor == "auto":
        return ("serial", None) if queued <= 1 else ("process", default_workers(queued))
    if isinstance(executor, bool):
        raise ValueError(f"executor: {executor!r} is not an executor")
    if isinstance(executor, int):
        executor = _worker_count(executor, executor)
        return ("serial", None) if executor == 1 else ("process", executor)
    if isinstance(executor, str):
        text = executor.strip()
        if text == "serial":
            return "serial", None
        if text == "process":
            return "process", default_workers(queued)
        if text.startswith("process:"):
            n = text.split(":", 1)[1]
            if not n.isdigit() or int(n) < 1:
                raise ValueError(f"executor: {executor!r}: expected process:N with N >= 1")
            return "process", _worker_count(int(n), executor)
        if text.startswith(("dask://", "tcp://", "tls://")):
            return "dask", text
        raise ValueError(f"executor: unknown {executor!r}; use None, 'serial', 'process', 'process:N', "
                         "'dask://host:port' or a distributed.Client")
    if type(executor).__name__ == "Client" and type(executor).__module__.startswith("distributed"):
        return "dask", executor
    raise ValueError(f"executor: unsupported {type(executor).__name__}; use None, 'serial', 'process', "
                     "'process:N', 'dask://host:port' or a distributed.Client")


def _spawn_safe() -> bool:
    """Whether spawned workers can start: they re-import ``__main__`` from its file, which must exist."""
    import sys

    main = sys.modules.get("__main__")
    main_file = getattr(main, "__file__", None)
    return getattr(main, "__spec__", None) is not None or main_file is None or Path(main_file).is_file()


class _DoneFuture:
    """What a serial run returns where a pool returns a future: the outcome, already there."""

    def __init__(self, fn, test):
        try:
            self._result, self._exc = fn(test), None
        except Exception as exc:  # noqa: BLE001 - reported with the test, the sweep goes on
            self._result, self._exc = None, exc

    def exception(self):
        return self._exc

    def result(self):
        return self._result


class _Backend:
    """Submit tests to an executor and wait for the next to finish: serial, a process pool or Dask."""

    def __init__(self, kind: str, arg):
        self.kind, self.arg, self.client, self.owned = kind, arg, None, False
        if kind == "process":
            self.pool = _process_pool(arg)
            self.limit = arg
        elif kind == "dask":
            self.client, self.owned = _dask_client(arg)
            self.limit = 10 ** 9        # the cluster's own scheduler spreads what is ready
        else:
            self.limit = 1

    def submit(self, test: SweepTest):
        if self.kind == "process":
            from concurrent.futures.process import BrokenProcessPool

            try:
                return self.pool.submit(run_test, test)
            except BrokenProcessPool:   # a worker died (its test is reported failed): carry on with a new pool
                _POOLS.pop(self.arg, None)
                self.pool = _process_pool(self.arg)
                return self.pool.submit(run_test, test)
        if self.kind == "dask":
            # pure=False: never reuse a result the cluster holds from another session
            return self.client.submit(run_test, test, pure=False,
                                      key=f"workbench-{test.test_id}-{os.urandom(4).hex()}")
        return _DoneFuture(run_test, test)

    def wait_any(self, futures) -> list:
        if self.kind == "process":
            return list(cf.wait(futures, return_when=cf.FIRST_COMPLETED).done)
        if self.kind == "dask":   # the client is not the process's default one: poll its futures
            while True:
                done = [f for f in futures if f.done()]
                if done:
                    return done
                time.sleep(0.02)
        return list(futures)

    def outcome(self, future):
        if self.kind == "dask" and future.status != "error":
            return future.result()
        exc = future.exception()
        if self.kind == "process":
            from concurrent.futures.process import BrokenProcessPool

            if isinstance(exc, BrokenProcessPool):
                _POOLS.pop(self.arg, None)
        return exc if exc is not None else future.result()

    def close(self, futures) -> None:
        for fut in futures:
            with contextlib.suppress(Exception):
                fut.cancel()
        if self.owned:
            self.client.close()


def map_calls(fn, items: Sequence, executor=None) -> list:
    """``[fn(item) for item in items]`` on an executor (the specs :func:`parse_executor` takes: serial, a
    process pool, a Dask cluster), results in the order of ``items`` whatever order they finish in; an
    exception raised by a call is raised here.  ``fn`` and the items must pickle for a pool or a cluster
    (a module-level function, plain data)."""
    items = list(items)
    kind, arg = parse_executor(executor, len(items))
    if kind == "process" and not _spawn_safe():
        log.warning("the main script was read from stdin, where a process pool cannot start: running serially")
        kind = "serial"
    if kind == "serial" or len(items) <= 1 and kind != "dask":
        return [fn(item) for item in items]
    backend = _Backend(kind, arg)
    futures = []
    try:
        if kind == "process":
            futures = [backend.pool.submit(fn, item) for item in items]
            return [future.result() for future in futures]
        name = getattr(fn, "__name__", "call")
        futures = [backend.client.submit(fn, item, pure=False, key=f"workbench-{name}-{i}-{os.urandom(4).hex()}")
                   for i, item in enumerate(items)]
        return backend.client.gather(futures)
    finally:
        backend.close(futures)


# Seconds a test is expected to take before any test of its scheduler has finished (the static engine's
# schedulers are a few times faster than the continuous engine's).
PRIOR_TEST_S = {"static": 2.0, "continuous": 6.0}


def _expected_seconds(queue: Sequence[SweepTest], known: dict[str, dict]) -> dict[str, float]:
    """test id -> seconds it is expected to take: the mean of its scheduler's finished tests (rows in
    ``known``), else :data:`PRIOR_TEST_S` by engine."""
    from workbench.sim.schedulers import get_scheduler

    seen: dict[str, list[float]] = {}
    for row in known.values():
        wall = row.get("wall_s")
        if isinstance(wall, (int, float)) and math.isfinite(wall) and not row.get("reused_from"):
            seen.setdefault(str(row.get("scheduler")), []).append(float(wall))
    out = {}
    for t in queue:
        walls = seen.get(t.config.scheduler)
        out[t.test_id] = (sum(walls) / len(walls) if walls
                          else PRIOR_TEST_S.get(get_scheduler(t.config.scheduler).engine, 4.0))
    return out


def _critical_paths(queue: Sequence[SweepTest], seconds: dict[str, float]) -> dict[str, float]:
    """test id -> expected seconds of the longest chain of tests that starts with it (it and the tests whose
    capacity search waits for it, and so on): start the longest first, so no chain waits for a free worker
    at the end."""
    children: dict[str, list[str]] = {}
    for t in queue:
        for source in t.hint_from:
            children.setdefault(source, []).append(t.test_id)
    path: dict[str, float] = {}

    def of(test_id: str) -> float:
        if test_id not in path:
            path[test_id] = seconds.get(test_id, 0.0) + max((of(c) for c in children.get(test_id, ())), default=0.0)
        return path[test_id]

    return {t.test_id: of(t.test_id) for t in queue}


def _execute(queue: Sequence[SweepTest], kind: str, arg,
             known: dict[str, dict]) -> Iterator[tuple[SweepTest, dict | BaseException]]:
    """Run ``queue`` on the executor, a test only once its capacity-hint source has a row (in ``known``, which
    grows as tests finish), chains first; yields (test, row or exception) as each finishes."""
    ids = {t.test_id for t in queue}
    lost = sorted({source for t in queue for source in t.hint_from if source not in ids and source not in known})
    if lost:
        raise ValueError(f"capacity hint source(s) {lost} are neither in this sweep nor finished: a test whose "
                         "search starts from another's capacity must be run with it (with_capacity_hint)")
    order = {t.test_id: i for i, t in enumerate(queue)}
    pending = list(queue)
    failed: set[str] = set()
    backend = _Backend(kind, arg)
    in_flight: dict = {}
    try:
        while pending or in_flight:
            for test in [t for t in pending if set(t.hint_from) & failed]:
                pending.remove(test)
                failed.add(test.test_id)
                yield test, RuntimeError(f"not run: a test its capacity search starts from "
                                         f"({', '.join(sorted(set(test.hint_from) & failed))}) failed")
            ready = [t for t in pending if all(source in known for source in t.hint_from)]
            if ready and len(in_flight) < backend.limit:
                paths = _critical_paths(pending, _expected_seconds(pending, known))
                ready.sort(key=lambda t: (-paths[t.test_id], order[t.test_id]))
            for test in ready[:max(0, backend.limit - len(in_flight))]:
                pending.remove(test)
                if test.hints:
                    hint = next((found for found in (capacity_hint_from_row(known[source], scale)
                                                     for source, scale in test.hints) if found), (None, None))
                    test = dataclasses.replace(test, capacity_hint=hint)
                in_flight[backend.submit(test)] = test
            if not in_flight:
                break
            for fut in backend.wait_any(in_flight):
                test = in_flight.pop(fut)
                outcome = backend.outcome(fut)
                if isinstance(outcome, BaseException):
                    failed.add(test.test_id)
                else:
                    known[test.test_id] = outcome
                yield test, outcome
    finally:
        backend.close(in_flight)


# --------------------------------------------------------------------------- reuse across folders


def finished_elsewhere(tests: Sequence[SweepTest], results_dir: Path, checkpoint: Path | None) -> dict[str, dict]:
    """Rows of ``tests`` that other checkpoints near ``results_dir`` (any but ``checkpoint``) already hold,
    computed by the current simulator code: the same test id is the same configuration (trace, scheduler,
    hardware, SLA, capacity search and its start), so its row is this test's result.  Each row's own columns
    (step, label, replication) are replaced by this test's."""
    wanted = {t.test_id: t for t in tests}
    found: dict[str, dict] = {}
    for test_id, (record, path) in current_rows_near(results_dir, wanted, checkpoint).items():
        record.update(wanted[test_id].columns())
        record["reused_from"] = display_source(path)
        found[test_id] = record
    return found



class _Progress:
    """One log line per finished test ("step2 [3/8] multi_bin_dynamic (4 GPUs): 2.1 s"), never a redrawn bar:
    it reads the same in a terminal, a log file, a notebook and its HTML rendering (a widget bar shows
    "0%" there once the kernel is gone)."""

    def __init__(self, total: int, desc: str, enabled: bool):
        self.total, self.desc, self.level, self.done = total, desc, logging.INFO if enabled else logging.DEBUG, 0

    def __enter__(self) -> "_Progress":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def update(self, test: SweepTest, outcome) -> None:
        self.done += 1
        width = len(str(self.total))
        from workbench.study.present.tables import seconds

        what = (f"failed: {type(outcome).__name__}" if isinstance(outcome, BaseException)
                else seconds(outcome.get("wall_s", math.nan)))
        log.log(self.level, "%s [%*d/%d] %s: %s", self.desc, width, self.done, self.total,
                test.label or test.test_id, what)


def _progress(total: int, desc: str, enabled: bool) -> _Progress:
    return _Progress(total, desc, enabled)


# --------------------------------------------------------------------------- the sweep


def run_sweep(tests: Sequence[SweepTest], results_dir: str | os.PathLike, *, checkpoint: str | None = None,
              executor=None, progress: bool = True, desc: str | None = None, reuse: bool = True) -> pd.DataFrame:
    """Run what is not yet in the checkpoint and return one row per test, in the order of ``tests``.

    ``checkpoint`` is the CSV's file name (default: ``<step>.csv`` of the
    first test).  With ``reuse``, a test that another checkpoint near
    ``results_dir`` already holds (another step of the same folder, a folder
    of other parameters next to it; :func:`finished_elsewhere`) is copied, not
    recomputed.  A test whose capacity search starts from another's answer
    (``hints``) runs once those have finished; the longest chains (in
    expected seconds) start first.  Each finished row is made durable before
    the sweep moves on (see the module docstring); failed tests are logged,
    the others finish and are checkpointed, and then :class:`SweepError` is
    raised.
    """
    tests = list(tests)
    if not tests:
        return pd.DataFrame()
    return run_sweeps([SweepPart(tests, results_dir, checkpoint, desc)], executor=executor, progress=progress,
                      reuse=reuse)[0]


@dataclass
class SweepPart:
    """Tests that go to one checkpoint (``<results_dir>/<checkpoint>``, default ``<step>.csv``)."""

    tests: Sequence[SweepTest]
    results_dir: str | os.PathLike
    checkpoint: str | None = None
    desc: str | None = None

    def path(self) -> Path:
        return resolve_results_dir(self.results_dir) / (self.checkpoint or f"{self.tests[0].step}.csv")


def run_sweeps(parts: Sequence[SweepPart], *, executor=None, progress: bool = True,
               reuse: bool = True, desc: str | None = None) -> list[pd.DataFrame]:
    """Run the tests of several checkpoints as one sweep (each test once, however many parts hold it: step 1's
    searches are step 2's tests) and return each part's rows, in the order of its tests.

    One sweep keeps every worker busy across what would otherwise be separate sweeps waiting for each other
    (the suite runs all its steps' tests so, before the notebooks draw them).  A finished row goes to the
    checkpoint of every part that holds its test, with that part's own columns (step, label)."""
    reuse = checks.boolean(reuse, "reuse")
    parts = list(parts)
    for part in parts:
        checks.instance(part, "parts", SweepPart, expected="SweepPart(tests, results_dir, checkpoint, desc) items")
    parts = [p for p in parts if len(p.tests)]
    for part in parts:   # every checkpoint checked before any test runs
        path = part.path()
        if path.is_dir():  # refused now: found after the first test, every result of the run would be lost
            raise CheckpointError(f"{path} is a folder, where the sweep keeps its checkpoint file; move it away or "
                                  "choose another results_dir (nothing was run)")
        checks.writable_folder(path.parent, "results_dir")
    targets: dict[str, list[tuple[SweepPart, SweepTest]]] = {}
    done_in: dict[Path, set[str]] = {}
    known: dict[str, dict] = {}
    source: dict[str, Path] = {}     # test id -> the checkpoint its known row came from
    for part in parts:
        ids = [t.test_id for t in part.tests]
        if len(set(ids)) != len(ids):
            raise ValueError("the test list holds the same configuration twice")
        path = part.path()
        with results_lock(path.parent):
            rows = load_and_repair(path)
            done = finished_ids(rows)
        done_in[path] = done
        if done:
            for record in rows[rows["test_id"].isin(done)].to_dict("records"):
                known[record["test_id"]] = record
                source.setdefault(record["test_id"], path)
        waiting = [t for t in part.tests if t.test_id not in done]
        if not waiting:
            log.info("%s: all %d tests already in %s", part.desc or path.stem, len(part.tests), path.name)
        elif len(waiting) < len(part.tests):
            log.info("%s: %d of %d tests already in %s; running the other %d", part.desc or path.stem,
                     len(part.tests) - len(waiting), len(part.tests), path.name, len(waiting))
        for test in waiting:
            targets.setdefault(test.test_id, []).append((part, test))
    # a test one part has done and another needs: copy its row (same id, same configuration)
    for test_id, wanted in list(targets.items()):
        if test_id in known:
            for part, test in wanted:
                _copy_row(part, test, known[test_id], source[test_id])
            del targets[test_id]
    if targets and reuse:
        merged: set[tuple[int, str]] = set()        # (part, test id) rows already written to the part's file
        for i, part in enumerate(parts):
            path = part.path()
            mine = [test for test_id, wanted in targets.items() for p, test in wanted if p is part]
            reused = finished_elsewhere(mine, path.parent, path) if mine else {}
            if reused:
                with results_lock(path.parent):
                    merge_rows(path, list(reused.values()))
                known.update(reused)
                merged.update((i, test_id) for test_id in reused)
                sources = sorted({r["reused_from"] for r in reused.values()})
                log.info("%s: %d test(s) already computed in %s (same configuration); reused", part.desc or path.stem,
                         len(reused), ", ".join(sources))
        index = {id(part): i for i, part in enumerate(parts)}
        for test_id in [t for t in targets if t in known]:
            for part, test in targets[test_id]:
                if (index[id(part)], test_id) not in merged:
                    _copy_row(part, test, known[test_id], None)   # its row says where it came from
            del targets[test_id]
    queue = [wanted[0][1] for wanted in targets.values()]
    label = desc or (parts[0].desc or parts[0].path().stem if len(parts) == 1 else "sweep")
    kind, arg = parse_executor(executor, len(queue))
    if kind == "process" and not _spawn_safe():
        if executor is not None:
            raise ValueError("executor: a process pool cannot start from a script read on stdin; "
                             "save it to a file, or use executor='serial'")
        log.warning("the main script was read from stdin, where a process pool cannot start: running serially")
        kind, executor = "serial", "serial"
    failures: list[tuple[SweepTest, BaseException]] = []
    if queue:
        log.info("%s: running %d test(s) on %s", label, len(queue), describe_executor(executor, len(queue)))
        with _progress(len(queue), label, progress) as bar:
            for test, outcome in _execute(queue, kind, arg, known):
                if isinstance(outcome, BaseException):
                    log.error("test %s (%s) failed: %r", test.test_id, test.label, outcome)
                    failures.append((test, outcome))
                else:
                    first = targets[test.test_id][0][0].path()
                    for i, (part, target) in enumerate(targets[test.test_id]):
                        # one computation, in the first part's checkpoint; another part holding the same test
                        # has it as reused from there
                        _copy_row(part, target, outcome, first if i > 0 else None)
                bar.update(test, outcome)
    if failures:
        test, exc = failures[0]
        where = ", ".join(sorted({str(p.path()) for p in parts}))
        raise SweepError(f"{len(failures)} of {len(queue)} test(s) failed (the others are saved in {where}; "
                         f"rerun to retry); first: {test.label} [{test.test_id}]: {exc!r}", failures) from exc
    out = []
    for part in parts:
        path = part.path()
        with results_lock(path.parent):
            rows = read_rows(path)
        out.append(select_rows(rows, [t.test_id for t in part.tests]))
    return out


def _copy_row(part: SweepPart, test: SweepTest, row: dict, source: Path | None) -> None:
    """``row`` (a result of ``test``'s configuration) into ``part``'s checkpoint, with ``test``'s own columns;
    ``source``: the checkpoint it was computed for (``reused_from``), None to keep the row's own."""
    record = dict(row)
    record.update(test.columns())
    if source is not None and pd.isna(record.get("reused_from")):
        record["reused_from"] = display_source(source)
    path = part.path()
    with results_lock(path.parent):
        merge_rows(path, [record])


