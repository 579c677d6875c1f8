"""Request traces: the immutable ``Trace`` and ``load_trace`` (BurstGPT files, minimal CSVs, synthetic default).

``load_trace`` parses a file once per machine (an on-disk cache of the parsed
rows, keyed by a hash of the file's bytes), then applies its options to the
cached rows; identical calls in one process return the same ``Trace`` object.
"""

from __future__ import annotations

import csv
import datetime as _dt
import gzip
import hashlib
import io
import logging
import math
import os
import tempfile
import time
import warnings
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from workbench import checks, paths
from workbench.traces import datasets, synthetic

# The load every run replays by default, the suite's and the library's: the trace's timestamps divided by 10
# (about 2.4 requests/s for the synthetic trace), a load whose answers on the default hardware model (OPT-13B on
# one A100, workbench.sim.profiles.DEFAULT_PROFILE) lie inside the GPU counts the suite tests.  The seed study
# replayed its trace 200x faster on its formula grid: ``rps_scaling=SEED_RPS_SCALING``.
DEFAULT_RPS_SCALING = 10.0
SEED_RPS_SCALING = 200.0

logger = logging.getLogger(__name__)

PARSER_VERSION = 2  # bump whenever parsing changes (invalidates the on-disk cache)
KNOWN_MODELS = synthetic.MODEL_NAMES
KNOWN_LOG_TYPES = synthetic.LOG_TYPE_NAMES
FAILED = "failed (0 response tokens)"
_INT32_MAX = np.iinfo(np.int32).max
_MAX_CACHED_TRACES = 8
# Parsed rows are not kept in memory: the on-disk cache reloads 1.4M rows in ~0.2 s, while holding
# them would cost ~26 MB for the life of the process (a 1M-request simulation itself needs ~100 MB).
_MAX_CACHED_ROWS = 0


class TraceFormatError(ValueError):
    """A trace file that cannot be read: unknown header, bad or missing values."""


class TraceSizeWarning(UserWarning):
    """``num_requests`` asked for more requests than the trace has; the whole trace is used."""


class TraceUnitWarning(UserWarning):
    """Arrival times too large to be seconds: probably milliseconds, microseconds or nanoseconds since an epoch."""


# An arrival time in seconds beyond this (3,170 years after 1970) is a timestamp in a finer unit
EPOCH_LIMIT_S = 1e11


@dataclass(frozen=True)
class _Schema:
    name: str
    columns: tuple[str, ...]
    timestamp: str
    request: str
    response: str
    model: str | None = None
    log_type: str | None = None
    wall_clock: bool = False  # timestamps are dates and times ("2023-11-16 18:15:46.6805900"), not seconds


_BURSTGPT_COLUMNS = dict(timestamp="Timestamp", request="Request tokens", response="Response tokens",
                         model="Model", log_type="Log Type")
SCHEMAS = (
    _Schema("BurstGPT files 1/2 and without_fails",
            ("Timestamp", "Model", "Request tokens", "Response tokens", "Total tokens", "Log Type"),
            **_BURSTGPT_COLUMNS),
    _Schema("BurstGPT file 3",
            ("Timestamp", "Session ID", "Elapsed time", "Model", "Request tokens", "Response tokens",
             "Total tokens", "Log Type"), **_BURSTGPT_COLUMNS),
    _Schema("minimal", ("arrival_s", "prompt_tokens", "output_tokens"),
            timestamp="arrival_s", request="prompt_tokens", response="output_tokens"),
    _Schema("Vidur (e.g. the shipped Azure 2023 traces)", ("arrived_at", "num_prefill_tokens", "num_decode_tokens"),
            timestamp="arrived_at", request="num_prefill_tokens", response="num_decode_tokens"),
    _Schema("Azure LLM inference trace, raw", ("TIMESTAMP", "ContextTokens", "GeneratedTokens"),
            timestamp="TIMESTAMP", request="ContextTokens", response="GeneratedTokens", wall_clock=True),
)


@dataclass(frozen=True)
class TraceMeta:
    """Where a trace came from and what was done to it (plain data)."""

    source: str
    synthetic: bool
    fingerprint: str
    rows_read: int
    rows_dropped: dict[str, int] = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    generator: dict | None = None
    dataset: str | None = None  # the registered name (workbench.traces.datasets), if loaded as one
    origin: str | None = None  # what the trace is, e.g. "real production trace: ..." (shown in the label)


@dataclass(frozen=True, eq=False)
class PrefixHashes:
    """Per request, the hashes of its prompt's consecutive blocks (a ragged array, read-only).

    ``hashes[i]`` is request ``i``'s array of block hashes: two requests whose
    arrays start with the same ``k`` values share the first ``k`` blocks of their
    prompts (each block ``Trace.prefix_block_tokens`` tokens; the last one may
    be partial), so a prefix cache can serve those tokens.  Stored as
    ``offsets`` (``n + 1`` int64, request ``i`` owns ``ids[offsets[i]:offsets[i+1]]``)
    and ``ids`` (int64).
    """

    offsets: np.ndarray
    ids: np.ndarray

    def __post_init__(self) -> None:
        for name in ("offsets", "ids"):
            checks.instance(getattr(self, name), f"PrefixHashes.{name}", np.ndarray,
                            expected="an int64 numpy array (build one with PrefixHashes.from_lists)")
        if self.ids.dtype != np.int64 or self.ids.ndim != 1:
            raise ValueError("PrefixHashes.ids: must be a 1-D int64 array (build one with PrefixHashes.from_lists)")
        if self.offsets.dtype != np.int64 or self.offsets.ndim != 1 or self.offsets.size < 1 \
                or self.offsets[0] != 0 or np.any(np.diff(self.offsets) < 0) or self.offsets[-1] != self.ids.size:
            raise ValueError("PrefixHashes.offsets: must be non-decreasing int64 from 0 to len(ids) (build one with "
                             "PrefixHashes.from_lists)")
        self.offsets.flags.writeable = False
        self.ids.flags.writeable = False

    @classmethod
    def from_lists(cls, lists, name: str = "prefix_hashes", *, length: int | None = None,
                   where=None) -> PrefixHashes:
        """From one list of integers per request, e.g. ``[[1, 2, 3], [1, 2, 7]]`` (``length``: how many requests
        there must be; ``where(i)`` names request ``i``'s place in a file).  Any 64-bit integers are hashes,
        negative ones too (Python's ``hash()`` gives them); checked by :func:`workbench.checks.integer_lists`."""
        if isinstance(lists, PrefixHashes):
            if length is not None and len(lists) != length:
                raise ValueError(f"{name}: must have one list per request, {length:,} in all, got {len(lists):,}")
            return lists
        offsets, ids = checks.integer_lists(lists, name, length=length, per="request", what="block hashes",
                                            example="[[1, 2, 3], [1, 2, 7]]", where=where)
        return cls(offsets, ids)

    @property
    def counts(self) -> np.ndarray:
        """Number of block hashes of each request."""
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return self.offsets.size - 1

    def __getitem__(self, i: int) -> np.ndarray:
        n = len(self)
        if not isinstance(i, (int, np.integer)) or not -n <= i < n:
            raise IndexError(f"request index {i!r} out of range for {n} requests")
        i = int(i) % n if n else 0
        return self.ids[self.offsets[i]:self.offsets[i + 1]]

    def __iter__(self):
        for i in range(len(self)):
            yield self.ids[self.offsets[i]:self.offsets[i + 1]]

    def take(self, index: np.ndarray) -> PrefixHashes:
        """The hashes of requests ``index`` (an integer array), in that order."""
        index = np.asarray(index, dtype=np.int64)
        counts = self.counts[index]
        offsets = np.zeros(index.size + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])
        starts = self.offsets[index]
        # positions of every kept hash: start of its request + its rank within the request
        rank = np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1], counts)
        return PrefixHashes(offsets, self.ids[np.repeat(starts, counts) + rank])


@dataclass(frozen=True, eq=False)
class Trace:
    """Requests sorted by arrival: ``arrival_s`` (float64, from 0), ``prompt_tokens``, ``output_tokens`` (int32).

    Optionally the prompts' prefix structure: ``prefix_hashes`` (a :class:`PrefixHashes`: per request the
    hashes of its prompt's consecutive blocks of ``prefix_block_tokens`` tokens), used by prefix caching
    (``SimConfig.prefix_caching``); ``None`` when the trace has none.
    The arrays are read-only; build one with ``Trace.from_arrays`` or ``load_trace``.
    """

    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    meta: TraceMeta
    prefix_hashes: PrefixHashes | None = None
    prefix_block_tokens: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.meta, TraceMeta):
            raise checks.InvalidType(f"meta: must be a TraceMeta, got {type(self.meta).__name__} "
                                     "(build a trace with Trace.from_arrays)")
        for name in ("arrival_s", "prompt_tokens", "output_tokens"):
            if not isinstance(getattr(self, name), np.ndarray):
                raise checks.InvalidType(f"{name}: must be a numpy array, got {type(getattr(self, name)).__name__} "
                                         "(build a trace with Trace.from_arrays)")
        n = self.arrival_s.shape
        if self.arrival_s.dtype != np.float64 or self.arrival_s.ndim != 1:
            raise ValueError("arrival_s must be a 1-D float64 array")
        for name in ("prompt_tokens", "output_tokens"):
            array = getattr(self, name)
            if array.dtype != np.int32 or array.shape != n:
                raise ValueError(f"{name} must be an int32 array of the same length as arrival_s")
            if n[0] and array.min() < 0:
                i = int(np.argmax(array < 0))
                raise ValueError(f"{name}[{i}] = {array[i]} is negative (a count of tokens)")
        if n[0]:
            finite = np.isfinite(self.arrival_s)
            if not finite.all():
                i = int(np.argmax(~finite))
                raise ValueError(f"arrival_s[{i}] = {self.arrival_s[i]} is not finite (arrival times are seconds)")
            if self.arrival_s[0] != 0.0 or np.any(np.diff(self.arrival_s) < 0):
                raise ValueError("arrival_s must be sorted and start at 0.0 (use Trace.from_arrays)")
        for array in (self.arrival_s, self.prompt_tokens, self.output_tokens):
            array.flags.writeable = False
        if (self.prefix_hashes is None) != (self.prefix_block_tokens is None):
            raise ValueError("prefix_hashes and prefix_block_tokens go together: give both or neither")
        if self.prefix_hashes is not None:
            _check_prefix_hashes(self.prefix_hashes, self.prefix_block_tokens, self.prompt_tokens)

    def __len__(self) -> int:
        return self.arrival_s.size

    def __repr__(self) -> str:
        return f"Trace({self.label}, fingerprint={self.fingerprint})"

    @property
    def fingerprint(self) -> str:
        return self.meta.fingerprint

    @property
    def is_synthetic(self) -> bool:
        return self.meta.synthetic

    @property
    def label(self) -> str:
        """Human label for plots and CSVs: says "synthetic" for synthetic traces, the name and origin of a
        registered dataset (``azure_conv (real production trace: ..., 19,366 req)``), else the file name."""
        size = f"{len(self):,} req"
        if self.meta.options.get("rate_profile"):   # replayed over a rate profile (traces.rate_profile)
            size += f", over {self.meta.options['rate_profile']}"
        if self.meta.origin and not self.is_synthetic:
            return f"{self.meta.dataset} ({self.meta.origin}, {size})"
        if not self.is_synthetic:
            return f"{self.meta.source} ({size})"
        if self.meta.generator is not None:
            return f"synthetic BurstGPT-like (seed {self.meta.generator['seed']}, {size})"
        return f"synthetic {self.meta.source} ({size})"

    @property
    def mean_rate_rps(self) -> float:
        """Requests per second over the span from first to last arrival (inf if the span is 0)."""
        if len(self) == 0:
            return 0.0
        span_s = float(self.arrival_s[-1])
        return len(self) / span_s if span_s > 0 else math.inf

    @property
    def has_prefixes(self) -> bool:
        """Whether the trace carries prompt prefix hashes (``prefix_hashes``)."""
        return self.prefix_hashes is not None

    @classmethod
    def from_arrays(cls, arrival_s, prompt_tokens, output_tokens, *, source: str = "custom",
                    synthetic: bool = False, prefix_hashes=None, prefix_block_tokens: int | None = None) -> Trace:
        """Validate, sort by arrival (stable) and shift so the first arrival is 0.

        ``arrival_s`` is in seconds; datetime64 / timedelta64 arrays (or pandas timestamps) are converted
        to seconds, never taken as raw integers.  ``prefix_hashes``: per request, the hashes (integers) of
        its prompt's consecutive blocks of ``prefix_block_tokens`` tokens, e.g. ``[[1, 2, 3], [1, 2, 7]]``
        (two prompts sharing their first two blocks); any 64-bit integers, negative ones too, read exactly; a
        request may list fewer blocks than its prompt has (the rest is its own), never more than
        ``ceil(prompt_tokens / prefix_block_tokens)``.
        """
        source = checks.instance(source, "source", str, expected="a text label")
        synthetic = checks.boolean(synthetic, "synthetic")
        arrays = {}
        for name, values in (("arrival_s", arrival_s), ("prompt_tokens", prompt_tokens),
                             ("output_tokens", output_tokens)):
            if isinstance(values, (str, bytes)) or np.ndim(values) == 0:
                raise checks.InvalidType(f"{name}: must be an array (or list) of numbers, got {values!r}")
            if name == "arrival_s":
                arrays[name] = checks.array(_seconds(values), name, low=0, what="seconds")
                _warn_if_not_seconds(arrays[name])
            else:
                arrays[name] = checks.array(values, name, integral=True, low=0, high=_INT32_MAX,
                                            high_why="tokens (the simulator counts in int32)", what="tokens")
        lengths = {name: a.size for name, a in arrays.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"arrays must have equal lengths, got {lengths}")
        hashes = None
        if prefix_hashes is not None or prefix_block_tokens is not None:
            if prefix_hashes is None or prefix_block_tokens is None:
                raise ValueError("prefix_hashes and prefix_block_tokens go together: give both (the hashes of each "
                                 "prompt's blocks and the tokens one hash covers, e.g. 512) or neither")
            prefix_block_tokens = _block_tokens(prefix_block_tokens)
            hashes = PrefixHashes.from_lists(prefix_hashes, length=arrays["arrival_s"].size)
        order = np.argsort(arrays["arrival_s"], kind="stable")
        arrival = arrays["arrival_s"][order]
        if arrival.size:
            arrival -= arrival[0]
        if hashes is not None:
            hashes = hashes.take(order) if np.any(order != np.arange(order.size)) else hashes
        return _make_trace(arrival, arrays["prompt_tokens"][order].astype(np.int32),
                           arrays["output_tokens"][order].astype(np.int32), source=source,
                           synthetic=synthetic, rows_read=arrival.size, prefix_hashes=hashes,
                           prefix_block_tokens=prefix_block_tokens)

    def head(self, n: int) -> Trace:
        """The first ``n`` requests (the trace itself if it has no more than ``n``)."""
        n = checks.integer(n, "n", low=1)
        if n >= len(self):
            return self
        dropped = dict(self.meta.rows_dropped)
        dropped["head cut"] = dropped.get("head cut", 0) + len(self) - n
        hashes = self.prefix_hashes.take(np.arange(n)) if self.prefix_hashes is not None else None
        return _make_trace(self.arrival_s[:n], self.prompt_tokens[:n], self.output_tokens[:n],
                           like=self.meta, rows_dropped=dropped, options={**self.meta.options, "head": n},
                           prefix_hashes=hashes, prefix_block_tokens=self.prefix_block_tokens)

    def time_scaled(self, factor: float) -> Trace:
        """Arrivals divided by ``factor`` (> 1 compresses time, i.e. more load)."""
        factor = checks.number(factor, "factor", low=0, low_open=True)
        scale = self.meta.options.get("time_scale", 1.0) * factor
        with np.errstate(over="ignore", under="ignore"):
            arrival_s = self.arrival_s / factor
        _check_scaled_arrivals(arrival_s, self.arrival_s, f"factor={factor:g}", "use a larger factor")
        return _make_trace(arrival_s, self.prompt_tokens, self.output_tokens,
                           like=self.meta, options={**self.meta.options, "time_scale": scale},
                           prefix_hashes=self.prefix_hashes, prefix_block_tokens=self.prefix_block_tokens)

    def retimed(self, arrival_s, **options) -> Trace:
        """The same requests, in the same order, at new arrival times ``arrival_s`` (seconds, non-decreasing, the
        first at 0): what a replay over a rate profile makes (:func:`workbench.traces.rate_profile.replay_over_profile`).
        ``options`` are recorded in ``meta.options`` (how the times were made)."""
        arrival_s = checks.array(arrival_s, "arrival_s", low=0, length=len(self), what="seconds")
        if arrival_s.size and (arrival_s[0] != 0.0 or np.any(np.diff(arrival_s) < 0)):
            raise ValueError("arrival_s: new arrival times must be non-decreasing and start at 0.0 (the requests keep "
                             "their order)")
        return _make_trace(arrival_s, self.prompt_tokens, self.output_tokens, like=self.meta,
                           options={**self.meta.options, **options}, prefix_hashes=self.prefix_hashes,
                           prefix_block_tokens=self.prefix_block_tokens)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"arrival_s": self.arrival_s, "prompt_tokens": self.prompt_tokens,
                             "output_tokens": self.output_tokens})


def _check_scaled_arrivals(scaled: np.ndarray, original: np.ndarray, cause: str, fix: str) -> None:
    """Arrival times derived by scaling must stay finite (an overflow to inf would reach the engines)."""
    if scaled.size and not np.isfinite(scaled[-1]):
        i = int(np.argmax(~np.isfinite(scaled)))
        raise ValueError(f"{cause} turns arrival {original[i]:g} s (request {i}) into {scaled[i]:g} s, not a finite "
                         f"time (the trace spans {original[-1]:g} s); {fix}")


def _seconds(values) -> np.ndarray:
    """Arrival times as float seconds: datetimes become seconds from the earliest, durations seconds."""
    array = np.asarray(values)
    if array.dtype == object and array.size and all(isinstance(v, (pd.Timestamp, np.datetime64, _dt.datetime))
                                                    for v in array.ravel()):
        array = pd.to_datetime(array.ravel(), utc=True).to_numpy(dtype="datetime64[ns]").reshape(array.shape)
    elif array.dtype == object and array.size and all(isinstance(v, (pd.Timedelta, np.timedelta64, _dt.timedelta))
                                                      for v in array.ravel()):
        array = pd.to_timedelta(array.ravel()).to_numpy(dtype="timedelta64[ns]").reshape(array.shape)
    if array.dtype.kind in "mM":
        if np.isnat(array).any():
            i = int(np.argmax(np.isnat(array).ravel()))
            raise ValueError(f"arrival_s[{i}] is NaT (a missing time)")
        if array.dtype.kind == "M":
            return (array - array.min()) / np.timedelta64(1, "s") if array.size else array.astype(np.float64)
        return array / np.timedelta64(1, "s")
    return array


def _warn_if_not_seconds(arrival_s: np.ndarray, what: str = "arrival_s",
                         fix: str = "from_arrays takes seconds: divide by 1e3, 1e6 or 1e9, or pass datetime64 values",
                         stacklevel: int = 3) -> None:
    """Epoch timestamps in ms, us or ns passed as seconds would replay a trace 1e3 to 1e9 times too slowly."""
    if arrival_s.size and arrival_s.max() > EPOCH_LIMIT_S:
        warnings.warn(f"{what}: values up to {arrival_s.max():.3g} s, beyond {EPOCH_LIMIT_S:g} s (3,170 years): "
                      f"timestamps in milliseconds, microseconds or nanoseconds? {fix}", TraceUnitWarning,
                      stacklevel=stacklevel)


def _fingerprint(source: str, *arrays: np.ndarray) -> str:
    digest = hashlib.blake2b(source.encode(), digest_size=8)
    for array in arrays:
        digest.update(np.ascontiguousarray(array).view(np.uint8))
    return digest.hexdigest()


def _block_tokens(value) -> int:
    return checks.integer(value, "prefix_block_tokens", low=1, high=_INT32_MAX,
                          hint="the prompt tokens one hash covers, e.g. 512 for Mooncake's traces")


def _check_prefix_hashes(hashes: PrefixHashes, block_tokens: int, prompt_tokens: np.ndarray) -> None:
    checks.instance(hashes, "prefix_hashes", PrefixHashes,
                    expected="a PrefixHashes (build the trace with Trace.from_arrays(..., prefix_hashes=...))")
    if len(hashes) != prompt_tokens.size:
        raise ValueError(f"prefix_hashes: must have one list per request, {prompt_tokens.size:,} in all, got "
                         f"{len(hashes):,}")
    block_tokens = _block_tokens(block_tokens)
    blocks = -(-prompt_tokens.astype(np.int64) // int(block_tokens))
    over = hashes.counts > blocks
    if over.any():
        i = int(np.argmax(over))
        raise ValueError(f"prefix_hashes[{i}] lists {int(hashes.counts[i])} blocks but its prompt of "
                         f"{int(prompt_tokens[i])} tokens has only {int(blocks[i])} blocks of {block_tokens} tokens; "
                         "a request hashes at most ceil(prompt_tokens / prefix_block_tokens) blocks")


def _make_trace(arrival_s, prompt_tokens, output_tokens, *, like: TraceMeta | None = None,
                prefix_hashes: PrefixHashes | None = None, prefix_block_tokens: int | None = None, **meta) -> Trace:
    """A trace from already valid arrays; ``meta`` fields default to those of ``like``."""
    source = meta.get("source", like.source if like else "custom")
    extra = () if prefix_hashes is None else (prefix_hashes.offsets, prefix_hashes.ids,
                                               np.array([prefix_block_tokens], np.int64))
    meta["fingerprint"] = _fingerprint(source, arrival_s, prompt_tokens, output_tokens, *extra)
    trace_meta = replace(like, **meta) if like else TraceMeta(**meta)
    return Trace(arrival_s, prompt_tokens, output_tokens, trace_meta, prefix_hashes,
                 int(prefix_block_tokens) if prefix_hashes is not None else None)


# ---------------------------------------------------------------- loading

@dataclass(frozen=True)
class _Rows:
    """All parsed rows of a file (or the synthetic generator), before any option is applied."""

    timestamp_s: np.ndarray  # float64, file order
    request_tokens: np.ndarray  # int32
    response_tokens: np.ndarray  # int32
    model: np.ndarray | None = None  # int8 codes into model_names
    log_type: np.ndarray | None = None
    model_names: tuple[str, ...] = ()
    log_type_names: tuple[str, ...] = ()
    prefix_hashes: PrefixHashes | None = None  # per row, in file order (traces with prefix structure)
    prefix_block_tokens: int | None = None

    def to_npz(self) -> dict[str, np.ndarray]:
        arrays = {"timestamp_s": self.timestamp_s, "request_tokens": self.request_tokens,
                  "response_tokens": self.response_tokens}
        if self.model is not None:
            arrays.update(model=self.model, log_type=self.log_type, model_names=np.array(self.model_names),
                          log_type_names=np.array(self.log_type_names))
        if self.prefix_hashes is not None:
            arrays.update(hash_offsets=self.prefix_hashes.offsets, hash_ids=self.prefix_hashes.ids,
                          hash_block_tokens=np.array([self.prefix_block_tokens], np.int64))
        return arrays

    @classmethod
    def from_npz(cls, arrays: dict[str, np.ndarray]) -> _Rows:
        names = {k: tuple(str(v) for v in arrays[k]) for k in ("model_names", "log_type_names") if k in arrays}
        hashes = {}
        if "hash_offsets" in arrays:
            hashes = {"prefix_hashes": PrefixHashes(arrays["hash_offsets"].astype(np.int64),
                                                    arrays["hash_ids"].astype(np.int64)),
                      "prefix_block_tokens": int(arrays["hash_block_tokens"][0])}
        return cls(arrays["timestamp_s"].astype(np.float64), arrays["request_tokens"], arrays["response_tokens"],
                   arrays.get("model"), arrays.get("log_type"), **names, **hashes)


_traces: OrderedDict[tuple, Trace] = OrderedDict()
_rows: OrderedDict[str, _Rows] = OrderedDict()


def clear_memory_cache() -> None:
    """Forget every trace and parsed file held in this process (the disk cache stays)."""
    _traces.clear()
    _rows.clear()


def _recall(cache: OrderedDict, key):
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    return None


def _remember(cache: OrderedDict, key, value, limit: int):
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > limit:
        cache.popitem(last=False)
    return value


def load_trace(path: str | os.PathLike | None = None, *, num_requests: int | None = None,
               rps_scaling: float = DEFAULT_RPS_SCALING, use_real_timestamps: bool = False, drop_failed: bool = True,
               models: str | Iterable[str] | None = None, log_types: str | Iterable[str] | None = None,
               seed: int = 0) -> Trace:
    """Load a trace: a dataset name (``"azure_conv"``, ``"azure_code"``, ``"mooncake_conv"``,
    ``"mooncake_synthetic"``, ``"burstgpt"``, ``"synthetic"``: see ``workbench.traces.datasets``), a CSV file
    (BurstGPT, Azure raw, Vidur or minimal layout, see ``data/README.md``; ``.csv.gz`` too), a Mooncake
    JSON-lines file (``.jsonl``: arrivals in ms, token counts and the prompt's block hashes, which become
    ``trace.prefix_hashes``), or (``path=None`` or ``"synthetic"``) the synthetic BurstGPT-like
    trace generated with ``seed`` (ignored for files).

    Options, applied in this order: ``drop_failed`` drops rows with 0 response
    tokens; ``models`` / ``log_types`` keep only those labels; rows are sorted
    stably by timestamp; ``num_requests`` keeps the first N (more than available:
    ``TraceSizeWarning`` and the whole trace); arrivals become
    ``(t - t0) / rps_scaling``, or ``t - t0`` with ``use_real_timestamps``.  The default ``rps_scaling``
    (:data:`DEFAULT_RPS_SCALING`, 10) is the suite's; the seed study's is ``rps_scaling=200``
    (:data:`SEED_RPS_SCALING`).
    Counts of dropped rows are in ``trace.meta.rows_dropped``.
    """
    num_requests = checks.integer(num_requests, "num_requests", low=1, none=True)
    options = {"num_requests": num_requests,
               "rps_scaling": checks.number(rps_scaling, "rps_scaling", low=0, low_open=True),
               "use_real_timestamps": checks.boolean(use_real_timestamps, "use_real_timestamps"),
               "drop_failed": checks.boolean(drop_failed, "drop_failed"),
               "models": checks.names(models, "models", none=True, unique=False),
               "log_types": checks.names(log_types, "log_types", none=True, unique=False)}
    seed = checks.integer(seed, "seed", low=0)
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a dataset name ({', '.join(datasets.names())}) or a file path, "
                        f"got {path!r} ({type(path).__name__})")
    named = None
    if datasets.is_name(path):
        named = datasets.get(path)
        path = named.file
    if path is None:
        generator = {"name": "workbench.traces.synthetic", "version": synthetic.GENERATOR_VERSION,
                     "num_rows": synthetic.NUM_ROWS, "seed": int(seed)}
        key = ("synthetic", *generator.values(), *options.values())
        if (hit := _recall(_traces, key)) is not None:
            return hit
        rows, periods = _synthetic_rows_for(int(seed), options)
        if periods > 1:
            generator["periods"] = periods
        trace = _select(rows, options, source="synthetic", is_synthetic=True, generator=generator)
        return _remember(_traces, key, trace, _MAX_CACHED_TRACES)

    file = Path(path).expanduser()
    if file.is_dir():
        raise IsADirectoryError(f"path: {file} is a folder, not a trace file (a CSV; dataset names: "
                                f"{', '.join(datasets.names())})")
    if not file.is_file():
        close = datasets.closest(path)
        raise FileNotFoundError(
            (f"path: {path!r} is neither a file nor a dataset name; did you mean the dataset {close!r}? " if close
             else "") +
            f"trace file not found (or not a file): {file}. The BurstGPT CSVs cannot be downloaded by the "
            f"workbench; place them by hand, e.g. under {paths.DATA_DIR}/ (see data/README.md), or use load_trace() "
            f"for the synthetic BurstGPT-like trace. Dataset names: {', '.join(datasets.names())}.")
    file = file.resolve()
    # keyed by the file's whole content (as the on-disk cache is): a file edited in place at the same size,
    # with its modification time restored, is a new trace, never a stale one
    digest = _content_digest(file)
    key = ("file", str(file), digest, *options.values())
    if (hit := _recall(_traces, key)) is not None:
        return hit
    named = named or datasets.for_file(file)
    rows = _file_rows(file, digest)
    _warn_if_not_seconds(rows.timestamp_s, f"{file}: timestamps", "a trace file holds seconds: convert the column",
                         stacklevel=3)
    trace = _select(rows, options, source=file.name, is_synthetic=False, generator=None,
                    dataset=named.name if named else None, origin=named.origin if named else None)
    return _remember(_traces, key, trace, _MAX_CACHED_TRACES)


def _label_mask(codes: np.ndarray | None, names: tuple[str, ...], wanted: tuple[str, ...], known: tuple[str, ...],
                what: str, source: str, argument: str) -> np.ndarray:
    if codes is None:
        raise ValueError(f"{source} has no {what} column (a minimal schema: only arrival times and token counts), "
                         f"so a {what} filter cannot be applied")
    allowed = tuple(dict.fromkeys(known + names))
    unknown = [v for v in wanted if v not in allowed]
    if unknown:
        raise ValueError(f"{argument}: unknown {what} value(s) {unknown}; allowed values: "
                         f"{', '.join(map(repr, allowed))}")
    wanted_codes = [names.index(v) for v in wanted if v in names]
    return np.isin(codes, wanted_codes)


def _keep_mask(rows: _Rows, options: dict, source: str) -> tuple[np.ndarray, dict[str, int]]:
    """The rows the filters keep (``drop_failed``, ``models``, ``log_types``), and the counts each dropped."""
    keep = np.ones(rows.timestamp_s.size, dtype=bool)
    dropped: dict[str, int] = {}

    def drop(reason: str, mask: np.ndarray) -> None:
        dropped[reason] = int(np.count_nonzero(keep & ~mask))
        np.logical_and(keep, mask, out=keep)

    if options["drop_failed"]:
        drop(FAILED, rows.response_tokens > 0)
    if options["models"] is not None:
        drop("model filter", _label_mask(rows.model, rows.model_names, options["models"], KNOWN_MODELS,
                                         "Model", source, "models"))
    if options["log_types"] is not None:
        drop("log type filter", _label_mask(rows.log_type, rows.log_type_names, options["log_types"],
                                            KNOWN_LOG_TYPES, "Log Type", source, "log_types"))
    return keep, dropped


def _select(rows: _Rows, options: dict, *, source: str, is_synthetic: bool, generator: dict | None,
            dataset: str | None = None, origin: str | None = None) -> Trace:
    keep, dropped = _keep_mask(rows, options, source)
    index = np.flatnonzero(keep)
    if index.size == 0:
        raise ValueError(f"{source}: no requests left after the filters (rows dropped: {dropped})")
    index = index[np.argsort(rows.timestamp_s[index], kind="stable")]
    wanted = options["num_requests"]
    if wanted is not None:
        if wanted > index.size:
            warnings.warn(f"{source}: num_requests={wanted:,} but only {index.size:,} requests remain after "
                          "filtering; using all of them", TraceSizeWarning, stacklevel=3)
        else:
            dropped["num_requests cut"] = index.size - wanted
            index = index[:wanted]
    arrival_s = rows.timestamp_s[index]
    arrival_s = arrival_s - arrival_s[0]
    if not options["use_real_timestamps"]:
        unscaled = arrival_s
        with np.errstate(over="ignore", under="ignore"):
            arrival_s = arrival_s / options["rps_scaling"]
        _check_scaled_arrivals(arrival_s, unscaled, f"{source}: rps_scaling={options['rps_scaling']:g}",
                               "use a larger rps_scaling (the timestamps are divided by it)")
    hashes = rows.prefix_hashes.take(index) if rows.prefix_hashes is not None else None
    return _make_trace(arrival_s, rows.request_tokens[index], rows.response_tokens[index], source=source,
                       synthetic=is_synthetic, rows_read=rows.timestamp_s.size, rows_dropped=dropped,
                       options=dict(options), generator=generator, dataset=dataset, origin=origin,
                       prefix_hashes=hashes, prefix_block_tokens=rows.prefix_block_tokens)


# ---------------------------------------------------------------- caches

def _content_digest(file: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(file, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _file_rows(file: Path, digest: str) -> _Rows:
    if (hit := _recall(_rows, digest)) is not None:
        return hit
    cached = paths.cache_dir() / f"parsed-p{PARSER_VERSION}-{digest}.npz"
    arrays = _read_npz(cached)
    if arrays is not None:
        _said_once("loaded %s from cache %s", file.name, cached.name)
        rows = _Rows.from_npz(arrays)
    else:
        rows = _parse_jsonl(file) if _is_jsonl(file) else _parse_csv(file)
        _write_npz_atomic(cached, rows.to_npz())
    return _remember(_rows, digest, rows, _MAX_CACHED_ROWS)


def _synthetic_rows_for(seed: int, options: dict) -> tuple[_Rows, int]:
    """The synthetic rows ``options`` need: one 61-day period (BurstGPT_1's size), or as many more as it takes
    to leave ``num_requests`` requests after the filters (each period generated and cached on its own)."""
    rows = _synthetic_rows(seed)
    wanted = options["num_requests"]
    if wanted is None:
        return rows, 1
    per_period = int(np.count_nonzero(_keep_mask(rows, options, "synthetic")[0]))
    if per_period == 0 or per_period >= wanted:
        return rows, 1   # (no row passes the filters: _select says so)
    periods = -(-wanted // per_period)
    while True:
        rows = _concatenate_rows([_synthetic_rows(seed, k) for k in range(periods)])
        if np.count_nonzero(_keep_mask(rows, options, "synthetic")[0]) >= wanted:
            return rows, periods
        periods += 1


def _concatenate_rows(parts: list[_Rows]) -> _Rows:
    first = parts[0]
    join = lambda name: np.concatenate([getattr(p, name) for p in parts])  # noqa: E731
    return _Rows(join("timestamp_s"), join("request_tokens"), join("response_tokens"), join("model"),
                 join("log_type"), first.model_names, first.log_type_names)


def _synthetic_rows(seed: int, period: int = 0) -> _Rows:
    name = f"synthetic-g{synthetic.GENERATOR_VERSION}-n{synthetic.NUM_ROWS}-seed{seed}"
    name += f"-period{period}" if period else ""   # period 0 keeps the name it always had
    if (hit := _recall(_rows, name)) is not None:
        return hit
    cached = paths.cache_dir() / f"{name}.npz"
    arrays = _read_npz(cached)
    if arrays is None:
        arrays = synthetic.synthetic_rows(synthetic.NUM_ROWS, seed=seed, period=period)
        arrays.update(model_names=np.array(synthetic.MODEL_NAMES), log_type_names=np.array(synthetic.LOG_TYPE_NAMES))
        _write_npz_atomic(cached, arrays)
    else:
        _said_once("loaded synthetic rows (seed %d, period %d) from cache %s", seed, period, cached.name)
    return _remember(_rows, name, _Rows.from_npz(arrays), _MAX_CACHED_ROWS)


_SAID: set[str] = set()


def _said_once(message: str, *args) -> None:
    """Log a cache load once per process (a sweep reloads the rows for every test: the log would repeat it)."""
    text = message % args
    logger.log(logging.DEBUG if text in _SAID else logging.INFO, text)
    _SAID.add(text)


def _read_npz(path: Path) -> dict[str, np.ndarray] | None:
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        logger.warning("ignoring unreadable cache file %s (%s)", path, exc)
        return None


def _write_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


# ---------------------------------------------------------------- parsing

_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGIC = b"PK\x03\x04"
_UTF8_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class _Text:
    """A trace file's bytes (decompressed), from its header line on, and where that line is in the file."""

    file: Path
    data: bytes  # from the header line to the end
    header_line: int  # 1-based line number of the header in the file

    def line(self, index: int) -> int:
        """1-based file line of data row ``index`` (0-based, the row after the header is 0)."""
        return self.header_line + 1 + index

    def buffer(self) -> io.BytesIO:
        return io.BytesIO(self.data)


CSV, JSONL = "CSV", "JSON-lines"


def _read_text(file: Path, kind: str = CSV) -> _Text:
    """The file's bytes (gzip decompressed), checked to be UTF-8, leading blank lines skipped (``kind``: the
    format, for the messages)."""
    with open(file, "rb") as f:
        magic = f.read(4)
    if magic.startswith(_GZIP_MAGIC):
        try:
            with gzip.open(file, "rb") as f:
                raw = f.read()
        except (OSError, EOFError, zlib.error) as exc:
            raise TraceFormatError(f"{file}: a gzip file that cannot be decompressed ({exc}); "
                                   f"check the download, or decompress it with gunzip and load the {kind}") from None
    elif magic == _ZIP_MAGIC:
        raise TraceFormatError(f"{file}: a zip archive, not a {kind}; unzip it and load the {kind} inside")
    else:
        raw = file.read_bytes()
    if raw.startswith(_UTF8_BOM):
        raw = raw[len(_UTF8_BOM):]
    _check_utf8(file, raw, kind)
    start, blank = 0, 0
    while True:
        end = raw.find(b"\n", start)
        line = raw[start:] if end < 0 else raw[start:end]
        if line.strip():
            break
        if end < 0:
            what = "empty file" if not raw else f"empty file (only whitespace, {len(raw)} bytes)"
            expected = (f"a header line such as {','.join(SCHEMAS[0].columns)}" if kind == CSV else
                        f"one JSON object per line with keys {', '.join(MOONCAKE_KEYS)}")
            raise TraceFormatError(f"{file}: {what}, expected {expected}")
        start, blank = end + 1, blank + 1
    if blank:
        logger.info("%s: skipping %d blank line(s) before the header", file, blank)
    return _Text(file, _without_trailing_blank_lines(raw[start:]), blank + 1)


def _without_trailing_blank_lines(data: bytes) -> bytes:
    """``data`` without the blank or whitespace-only lines at its end (they are not rows)."""
    end = len(data)
    while end:
        line_start = data.rfind(b"\n", 0, end - 1) + 1
        if data[line_start:end].strip():
            break
        end = line_start
    return data[:end]


def _check_utf8(file: Path, raw: bytes, kind: str = CSV) -> None:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        at = exc.start
        line = raw.count(b"\n", 0, at) + 1
        where = f"line {line}"
        if line > 1 and kind == CSV:  # name the column from the header (which decoded: it comes first)
            header = raw[: raw.find(b"\n")].decode("utf-8").split(",")
            field_index = raw.count(b",", raw.rfind(b"\n", 0, at) + 1, at)
            where += f", column {header[field_index].strip()!r}" if field_index < len(header) else ""
        raise TraceFormatError(
            f"{file}: {where}: byte 0x{raw[at]:02x} is not UTF-8 text (a file saved in another encoding, e.g. "
            f"Latin-1 or UTF-16, or a binary file); re-save it as UTF-8 {kind}") from None


def _schema_for(text: _Text) -> _Schema:
    end = text.data.find(b"\n")
    first = text.data[: end if end >= 0 else len(text.data)].decode("utf-8")
    header = tuple(name.strip() for name in next(csv.reader([first.strip()]), []))  # "quoted" names too
    for schema in SCHEMAS:
        if header == schema.columns:
            return schema
    accepted = "\n".join(f"  {s.name}: {','.join(s.columns)}" for s in SCHEMAS)
    where = f" (line {text.header_line})" if text.header_line > 1 else ""
    raise TraceFormatError(f"{text.file}: unrecognised header{where}; found columns {list(header)}. "
                           f"Accepted headers (exact, in this order):\n{accepted}")


def _parse_csv(file: Path) -> _Rows:
    started = time.perf_counter()
    text = _read_text(file)
    schema = _schema_for(text)
    numeric = [schema.request, schema.response] + ([] if schema.wall_clock else [schema.timestamp])
    labels = [c for c in (schema.model, schema.log_type) if c]
    strings = labels + ([schema.timestamp] if schema.wall_clock else [])
    read = dict(header=0, names=list(schema.columns), usecols=numeric + strings, engine="c",
                encoding="utf-8", skip_blank_lines=False)
    _check_field_counts(text, schema)
    dtypes = {**{c: np.float64 for c in numeric}, **{c: "category" for c in labels}}
    if schema.wall_clock:
        dtypes[schema.timestamp] = str
    try:
        frame = pd.read_csv(text.buffer(), dtype=dtypes, **read)
    except pd.errors.ParserError as exc:
        raise TraceFormatError(f"{file}: malformed CSV: {exc}") from None
    except ValueError as exc:  # a non-numeric cell; find it with a slower string pass
        raise _locate_non_numeric(text, numeric, read) or TraceFormatError(f"{file}: {exc}") from None
    frame = _strip_trailing_blank_lines(frame)
    if frame.empty:
        raise TraceFormatError(f"{file}: header but no data rows")
    for column in (c for c in schema.columns if c in numeric + strings):
        _check_column(text, column, frame[column], integral=column in (schema.request, schema.response),
                      what="a date and time" if column in strings and column not in labels else "a label")
    if schema.wall_clock:
        timestamp_s = _wall_clock_seconds(text, schema.timestamp, frame[schema.timestamp])
    else:
        timestamp_s = frame[schema.timestamp].to_numpy()
    codes, names = {}, {}
    for column in labels:
        codes[column], names[column] = _trimmed_labels(text, column, frame[column])
    rows = _Rows(timestamp_s, frame[schema.request].to_numpy().astype(np.int32),
                 frame[schema.response].to_numpy().astype(np.int32),
                 codes.get(schema.model), codes.get(schema.log_type),
                 names.get(schema.model, ()), names.get(schema.log_type, ()))
    logger.info("parsed %s (%s): %d rows in %.2f s", file.name, schema.name, len(frame),
                time.perf_counter() - started)
    return rows


MOONCAKE_KEYS = ("timestamp", "input_length", "output_length", "hash_ids")
MOONCAKE_BLOCK_TOKENS = 512  # tokens hashed per entry of hash_ids (Mooncake's FAST'25 traces)


def _is_jsonl(file: Path) -> bool:
    name = file.name.lower()
    return name.endswith(".jsonl") or name.endswith(".jsonl.gz")


def _parse_jsonl(file: Path) -> _Rows:
    """A Mooncake trace (kvcache-ai/Mooncake ``FAST25-release/traces``): one JSON object per line,
    ``{"timestamp": ms, "input_length": tokens, "output_length": tokens, "hash_ids": [...]}``, ``hash_ids`` the
    hashes of the prompt's consecutive 512-token blocks.  Every bad value is named by file, line and key."""
    import json

    started = time.perf_counter()
    text = _read_text(file, kind=JSONL)
    lines = text.data.decode("utf-8").split("\n")   # not splitlines: JSON text may hold other line breaks
    if not lines[-1].strip():
        lines.pop()   # the last line's newline (blank lines after it are gone already)
    n = len(lines)
    columns = {key: np.empty(n, dtype=object) for key in MOONCAKE_KEYS}
    for i, line in enumerate(lines):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TraceFormatError(f"{file}: line {text.line(i - 1)}: not a JSON object ({exc.msg}); expected one "
                                   f"Mooncake request per line with keys {', '.join(MOONCAKE_KEYS)}") from None
        missing = [k for k in MOONCAKE_KEYS if not isinstance(row, dict) or k not in row]
        if missing:
            raise TraceFormatError(f"{file}: line {text.line(i - 1)}: missing key(s) {missing}; a Mooncake request "
                                   f"line has {', '.join(MOONCAKE_KEYS)}")
        for key in MOONCAKE_KEYS:
            columns[key][i] = row[key]

    def at(key: str):
        return lambda i: f"{file}: line {text.line(i - 1)}, key {key!r}"

    try:
        timestamp_ms = checks.array(columns["timestamp"], "timestamp", low=0, where=at("timestamp"), what="ms")
        request, response = (checks.array(columns[key], key, integral=True, low=0, high=_INT32_MAX,
                                          high_why="tokens (the simulator counts in int32)", where=at(key),
                                          what="tokens") for key in ("input_length", "output_length"))
        hashes = PrefixHashes.from_lists(columns["hash_ids"], "hash_ids", where=at("hash_ids"))
    except ValueError as exc:   # InvalidType too: a ValueError
        raise TraceFormatError(str(exc)) from None
    over = hashes.counts > -(-request.astype(np.int64) // MOONCAKE_BLOCK_TOKENS)
    if over.any():
        i = int(np.argmax(over))
        raise TraceFormatError(f"{file}: line {text.line(i - 1)}: {int(hashes.counts[i])} hash_ids for a prompt of "
                               f"{int(request[i])} tokens (at most ceil(input_length / {MOONCAKE_BLOCK_TOKENS}))")
    rows = _Rows(timestamp_ms / 1000.0, request.astype(np.int32), response.astype(np.int32),
                 prefix_hashes=hashes, prefix_block_tokens=MOONCAKE_BLOCK_TOKENS)
    logger.info("parsed %s (Mooncake JSON lines): %d rows in %.2f s", file.name, n, time.perf_counter() - started)
    return rows


def _check_field_counts(text: _Text, schema: _Schema) -> None:
    """Refuse a row with more fields than the header: ``usecols`` would silently drop them, and an unquoted
    thousands separator (``0,1,234,56``) would shift the values into the wrong columns."""
    expected = len(schema.columns)
    if b'"' in text.data:  # quoted fields may hold commas: count fields properly (slow, rare)
        reader = csv.reader(io.StringIO(text.data.decode("utf-8")))
        for record in reader:
            if len(record) > expected:
                _raise_extra_fields(text, schema, text.header_line - 1 + reader.line_num, len(record))
        return
    buffer = np.frombuffer(text.data, dtype=np.uint8)
    is_newline = buffer == ord("\n")
    lines = int(np.count_nonzero(is_newline)) + (not text.data.endswith(b"\n"))
    if np.count_nonzero(buffer == ord(",")) <= (expected - 1) * lines:
        return  # no line is wider, or a short line makes up for it: the short one fails the parse below
    newlines = np.flatnonzero(is_newline)
    commas_per_line = np.bincount(np.searchsorted(newlines, np.flatnonzero(buffer == ord(","))),
                                  minlength=newlines.size + 1)
    over = np.flatnonzero(commas_per_line > expected - 1)
    if over.size:
        first = int(over[0])
        _raise_extra_fields(text, schema, text.header_line + first, int(commas_per_line[first]) + 1)


def _raise_extra_fields(text: _Text, schema: _Schema, line: int, fields: int) -> None:
    raise TraceFormatError(
        f"{text.file}: malformed CSV: line {line} has {fields} fields but the header has {len(schema.columns)} "
        f"({','.join(schema.columns)}); extra field(s) after column {schema.columns[-1]!r}. A number written "
        "with a thousands separator (1,234) splits into two fields: remove the separator or quote the value")


def _strip_trailing_blank_lines(frame: pd.DataFrame) -> pd.DataFrame:
    filled = np.flatnonzero(frame.notna().any(axis=1).to_numpy())
    return frame.iloc[: filled[-1] + 1] if filled.size else frame.iloc[:0]


def _check_column(text: _Text, column: str, series: pd.Series, *, integral: bool, what: str = "a label") -> None:
    missing = series.isna().to_numpy()
    if missing.any():
        i = int(np.argmax(missing))
        raise TraceFormatError(f"{text.file}: line {text.line(i)}, column {column!r}: empty or NaN value, expected "
                               + ("a number" if series.dtype == np.float64 else what))
    if series.dtype != np.float64:
        return
    values = series.to_numpy()
    checks = [(~np.isfinite(values), "a finite number"), (values < 0, "a value >= 0")]
    if integral:
        checks += [(values != np.floor(values), "a whole number of tokens"),
                   (values > _INT32_MAX, f"at most {_INT32_MAX:,} tokens (the simulator counts tokens in int32)")]
    for bad, expected in checks:
        if bad.any():
            i = int(np.argmax(bad))
            raise TraceFormatError(f"{text.file}: line {text.line(i)}, column {column!r}: found {values[i]:g}, "
                                   f"expected {expected}")


def _trimmed_labels(text: _Text, column: str, series: pd.Series) -> tuple[np.ndarray, tuple[str, ...]]:
    """Codes into the labels with surrounding whitespace removed (so " ChatGPT" is "ChatGPT")."""
    trimmed = [str(v).strip() for v in series.cat.categories]
    names = tuple(dict.fromkeys(trimmed))
    remap = np.array([names.index(v) for v in trimmed], dtype=np.int16)
    codes = remap[series.cat.codes.to_numpy()]
    if "" in names:
        i = int(np.argmax(codes == names.index("")))
        raise TraceFormatError(f"{text.file}: line {text.line(i)}, column {column!r}: blank label, expected a "
                               "value such as " + " or ".join(map(repr, [n for n in names if n][:2] or ["..."])))
    return codes.astype(np.int8 if len(names) <= 127 else np.int16), names


def _wall_clock_seconds(text: _Text, column: str, series: pd.Series) -> np.ndarray:
    """Seconds from the earliest of the wall-clock timestamps (dates and times; naive ones taken as UTC)."""
    stamps = pd.to_datetime(series.str.strip(), format="ISO8601", utc=True, errors="coerce")
    bad = stamps.isna().to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        raise TraceFormatError(f"{text.file}: line {text.line(i)}, column {column!r}: found {series.iloc[i]!r}, "
                               "expected a date and time such as 2023-11-16 18:15:46.6805900")
    ns = stamps.to_numpy(dtype="datetime64[ns]").view(np.int64)
    return (ns - ns.min()) / 1e9


def _locate_non_numeric(text: _Text, numeric: list[str], read: dict) -> TraceFormatError | None:
    frame = pd.read_csv(text.buffer(), dtype=str, keep_default_na=False, **{**read, "usecols": numeric})
    first = None
    for column in numeric:
        cells = frame[column].str.strip()
        bad = ((pd.to_numeric(cells, errors="coerce").isna() & (cells != "")) | ((cells == "") & (frame[column] != ""))
               ).to_numpy()
        if bad.any() and (first is None or np.argmax(bad) < first[0]):
            first = (int(np.argmax(bad)), column, frame[column].iloc[int(np.argmax(bad))])
    if first is None:
        return None
    i, column, value = first
    found = f"{value.strip()!r}" if value.strip() else "only whitespace"
    return TraceFormatError(f"{text.file}: line {text.line(i)}, column {column!r}: found {found}, expected a number")
