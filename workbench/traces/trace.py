"""Request traces: the immutable ``Trace`` and ``load_trace`` (BurstGPT files, minimal CSVs, synthetic default).

``load_trace`` parses a file once per machine (an on-disk cache of the parsed
rows, keyed by a hash of the file's bytes), then applies its options to the
cached rows; identical calls in one process return the same ``Trace`` object.
"""

from __future__ import annotations

import hashlib
import logging
import math
import numbers
import os
import tempfile
import time
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from workbench import paths
from workbench.traces import synthetic

logger = logging.getLogger(__name__)

PARSER_VERSION = 1  # bump whenever parsing changes (invalidates the on-disk cache)
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


@dataclass(frozen=True)
class _Schema:
    name: str
    columns: tuple[str, ...]
    timestamp: str
    request: str
    response: str
    model: str | None = None
    log_type: str | None = None


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


@dataclass(frozen=True, eq=False)
class Trace:
    """Requests sorted by arrival: ``arrival_s`` (float64, from 0), ``prompt_tokens``, ``output_tokens`` (int32).

    The arrays are read-only; build one with ``Trace.from_arrays`` or ``load_trace``.
    """

    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    meta: TraceMeta

    def __post_init__(self) -> None:
        n = self.arrival_s.shape
        if self.arrival_s.dtype != np.float64 or self.arrival_s.ndim != 1:
            raise ValueError("arrival_s must be a 1-D float64 array")
        for name in ("prompt_tokens", "output_tokens"):
            array = getattr(self, name)
            if array.dtype != np.int32 or array.shape != n:
                raise ValueError(f"{name} must be an int32 array of the same length as arrival_s")
        if n[0] and (self.arrival_s[0] != 0.0 or np.any(np.diff(self.arrival_s) < 0)):
            raise ValueError("arrival_s must be sorted and start at 0.0 (use Trace.from_arrays)")
        for array in (self.arrival_s, self.prompt_tokens, self.output_tokens):
            array.flags.writeable = False

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
        """Human label for plots and CSVs; says "synthetic" for synthetic traces."""
        size = f"{len(self):,} req"
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

    @classmethod
    def from_arrays(cls, arrival_s, prompt_tokens, output_tokens, *, source: str = "custom",
                    synthetic: bool = False) -> Trace:
        """Validate, sort by arrival (stable) and shift so the first arrival is 0."""
        arrays = {}
        for name, values in (("arrival_s", arrival_s), ("prompt_tokens", prompt_tokens),
                             ("output_tokens", output_tokens)):
            try:
                array = np.asarray(values, dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{name} must be numeric: {exc}") from None
            if array.ndim != 1:
                raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
            _check_values(array, name, integral=name != "arrival_s")
            arrays[name] = array
        lengths = {name: a.size for name, a in arrays.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"arrays must have equal lengths, got {lengths}")
        order = np.argsort(arrays["arrival_s"], kind="stable")
        arrival = arrays["arrival_s"][order]
        if arrival.size:
            arrival -= arrival[0]
        return _make_trace(arrival, arrays["prompt_tokens"][order].astype(np.int32),
                           arrays["output_tokens"][order].astype(np.int32), source=source,
                           synthetic=synthetic, rows_read=arrival.size)

    def head(self, n: int) -> Trace:
        """The first ``n`` requests (the trace itself if it has no more than ``n``)."""
        n = _positive_int(n, "n")
        if n >= len(self):
            return self
        dropped = dict(self.meta.rows_dropped)
        dropped["head cut"] = dropped.get("head cut", 0) + len(self) - n
        return _make_trace(self.arrival_s[:n], self.prompt_tokens[:n], self.output_tokens[:n],
                           like=self.meta, rows_dropped=dropped, options={**self.meta.options, "head": n})

    def time_scaled(self, factor: float) -> Trace:
        """Arrivals divided by ``factor`` (> 1 compresses time, i.e. more load)."""
        factor = _positive_float(factor, "factor")
        scale = self.meta.options.get("time_scale", 1.0) * factor
        return _make_trace(self.arrival_s / factor, self.prompt_tokens, self.output_tokens,
                           like=self.meta, options={**self.meta.options, "time_scale": scale})

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"arrival_s": self.arrival_s, "prompt_tokens": self.prompt_tokens,
                             "output_tokens": self.output_tokens})


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _positive_float(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _check_values(array: np.ndarray, name: str, *, integral: bool) -> None:
    problems = [(~np.isfinite(array), "is not finite"), (array < 0, "is negative")]
    if integral:
        problems.append(((array != np.floor(array)) | (array > _INT32_MAX), "is not a whole number of tokens"))
    for bad, what in problems:
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"{name}[{i}] = {array[i]:g} {what}")


def _fingerprint(source: str, *arrays: np.ndarray) -> str:
    digest = hashlib.blake2b(source.encode(), digest_size=8)
    for array in arrays:
        digest.update(np.ascontiguousarray(array).view(np.uint8))
    return digest.hexdigest()


def _make_trace(arrival_s, prompt_tokens, output_tokens, *, like: TraceMeta | None = None, **meta) -> Trace:
    """A trace from already valid arrays; ``meta`` fields default to those of ``like``."""
    source = meta.get("source", like.source if like else "custom")
    meta["fingerprint"] = _fingerprint(source, arrival_s, prompt_tokens, output_tokens)
    trace_meta = replace(like, **meta) if like else TraceMeta(**meta)
    return Trace(arrival_s, prompt_tokens, output_tokens, trace_meta)


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

    def to_npz(self) -> dict[str, np.ndarray]:
        arrays = {"timestamp_s": self.timestamp_s, "request_tokens": self.request_tokens,
                  "response_tokens": self.response_tokens}
        if self.model is not None:
            arrays.update(model=self.model, log_type=self.log_type, model_names=np.array(self.model_names),
                          log_type_names=np.array(self.log_type_names))
        return arrays

    @classmethod
    def from_npz(cls, arrays: dict[str, np.ndarray]) -> _Rows:
        names = {k: tuple(str(v) for v in arrays[k]) for k in ("model_names", "log_type_names") if k in arrays}
        return cls(arrays["timestamp_s"].astype(np.float64), arrays["request_tokens"], arrays["response_tokens"],
                   arrays.get("model"), arrays.get("log_type"), **names)


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
               rps_scaling: float = 200.0, use_real_timestamps: bool = False, drop_failed: bool = True,
               models: str | Iterable[str] | None = None, log_types: str | Iterable[str] | None = None,
               seed: int = 0) -> Trace:
    """Load a BurstGPT CSV, a minimal ``arrival_s,prompt_tokens,output_tokens`` CSV, or (``path=None``) the
    synthetic BurstGPT-like trace generated with ``seed`` (ignored for files).

    Options, applied in this order: ``drop_failed`` drops rows with 0 response
    tokens; ``models`` / ``log_types`` keep only those labels; rows are sorted
    stably by timestamp; ``num_requests`` keeps the first N (more than available:
    ``TraceSizeWarning`` and the whole trace); arrivals become
    ``(t - t0) / rps_scaling``, or ``t - t0`` with ``use_real_timestamps``.
    Counts of dropped rows are in ``trace.meta.rows_dropped``.
    """
    if num_requests is not None:
        num_requests = _positive_int(num_requests, "num_requests")
    options = {"num_requests": num_requests, "rps_scaling": _positive_float(rps_scaling, "rps_scaling"),
               "use_real_timestamps": bool(use_real_timestamps), "drop_failed": bool(drop_failed),
               "models": _as_names(models, "models"), "log_types": _as_names(log_types, "log_types")}

    if path is None:
        generator = {"name": "workbench.traces.synthetic", "version": synthetic.GENERATOR_VERSION,
                     "num_rows": synthetic.NUM_ROWS, "seed": int(seed)}
        key = ("synthetic", *generator.values(), *options.values())
        if (hit := _recall(_traces, key)) is not None:
            return hit
        rows = _synthetic_rows(int(seed))
        trace = _select(rows, options, source="synthetic", is_synthetic=True, generator=generator)
        return _remember(_traces, key, trace, _MAX_CACHED_TRACES)

    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(
            f"trace file not found (or not a file): {file}. The BurstGPT CSVs cannot be downloaded by the "
            f"workbench; place them by hand, e.g. under {paths.DATA_DIR}/ (see data/README.md), or use load_trace() "
            "for the synthetic BurstGPT-like trace.")
    file = file.resolve()
    stat = file.stat()
    key = ("file", str(file), stat.st_size, stat.st_mtime_ns, _quick_digest(file, stat.st_size), *options.values())
    if (hit := _recall(_traces, key)) is not None:
        return hit
    trace = _select(_file_rows(file), options, source=file.name, is_synthetic=False, generator=None)
    return _remember(_traces, key, trace, _MAX_CACHED_TRACES)


def _as_names(values: str | Iterable[str] | None, name: str) -> tuple[str, ...] | None:
    if values is None:
        return None
    names = (values,) if isinstance(values, str) else tuple(values)
    if not names or not all(isinstance(v, str) for v in names):
        raise ValueError(f"{name} must be a string or a non-empty iterable of strings, got {values!r}")
    return names


def _label_mask(codes: np.ndarray | None, names: tuple[str, ...], wanted: tuple[str, ...], known: tuple[str, ...],
                what: str, source: str) -> np.ndarray:
    if codes is None:
        raise ValueError(f"{source} has no {what} column (minimal schema), so a {what} filter cannot be applied")
    allowed = tuple(dict.fromkeys(known + names))
    unknown = [v for v in wanted if v not in allowed]
    if unknown:
        raise ValueError(f"unknown {what} value(s) {unknown}; allowed values: {', '.join(map(repr, allowed))}")
    wanted_codes = [names.index(v) for v in wanted if v in names]
    return np.isin(codes, wanted_codes)


def _select(rows: _Rows, options: dict, *, source: str, is_synthetic: bool, generator: dict | None) -> Trace:
    keep = np.ones(rows.timestamp_s.size, dtype=bool)
    dropped: dict[str, int] = {}

    def drop(reason: str, mask: np.ndarray) -> None:
        dropped[reason] = int(np.count_nonzero(keep & ~mask))
        np.logical_and(keep, mask, out=keep)

    if options["drop_failed"]:
        drop(FAILED, rows.response_tokens > 0)
    if options["models"] is not None:
        drop("model filter", _label_mask(rows.model, rows.model_names, options["models"], KNOWN_MODELS,
                                         "Model", source))
    if options["log_types"] is not None:
        drop("log type filter", _label_mask(rows.log_type, rows.log_type_names, options["log_types"],
                                            KNOWN_LOG_TYPES, "Log Type", source))
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
        arrival_s /= options["rps_scaling"]
    return _make_trace(arrival_s, rows.request_tokens[index], rows.response_tokens[index], source=source,
                       synthetic=is_synthetic, rows_read=rows.timestamp_s.size, rows_dropped=dropped,
                       options=dict(options), generator=generator)


# ---------------------------------------------------------------- caches

def _quick_digest(file: Path, size: int, block: int = 1 << 16) -> str:
    """Hash of the first and last 64 KiB: the whole content of small files, cheap for big ones."""
    digest = hashlib.blake2b(digest_size=8)
    with open(file, "rb") as f:
        digest.update(f.read(block))
        if size > block:
            f.seek(max(block, size - block))
            digest.update(f.read())
    return digest.hexdigest()


def _content_digest(file: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(file, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _file_rows(file: Path) -> _Rows:
    digest = _content_digest(file)
    if (hit := _recall(_rows, digest)) is not None:
        return hit
    cached = paths.cache_dir() / f"parsed-p{PARSER_VERSION}-{digest}.npz"
    arrays = _read_npz(cached)
    if arrays is not None:
        logger.info("loaded %s from cache %s", file.name, cached.name)
        rows = _Rows.from_npz(arrays)
    else:
        rows = _parse_csv(file)
        _write_npz_atomic(cached, rows.to_npz())
    return _remember(_rows, digest, rows, _MAX_CACHED_ROWS)


def _synthetic_rows(seed: int) -> _Rows:
    name = f"synthetic-g{synthetic.GENERATOR_VERSION}-n{synthetic.NUM_ROWS}-seed{seed}"
    if (hit := _recall(_rows, name)) is not None:
        return hit
    cached = paths.cache_dir() / f"{name}.npz"
    arrays = _read_npz(cached)
    if arrays is None:
        arrays = synthetic.synthetic_rows(synthetic.NUM_ROWS, seed=seed)
        arrays.update(model_names=np.array(synthetic.MODEL_NAMES), log_type_names=np.array(synthetic.LOG_TYPE_NAMES))
        _write_npz_atomic(cached, arrays)
    else:
        logger.info("loaded synthetic rows (seed %d) from cache %s", seed, cached.name)
    return _remember(_rows, name, _Rows.from_npz(arrays), _MAX_CACHED_ROWS)


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

def _read_header(file: Path) -> tuple[str, ...]:
    with open(file, encoding="utf-8-sig", errors="replace", newline="") as f:
        first = f.readline()
    if not first.strip():
        raise TraceFormatError(f"{file}: empty file, expected a header line "
                               f"such as {','.join(SCHEMAS[0].columns)}")
    return tuple(name.strip() for name in first.strip().split(","))


def _schema_for(file: Path, header: tuple[str, ...]) -> _Schema:
    for schema in SCHEMAS:
        if header == schema.columns:
            return schema
    accepted = "\n".join(f"  {s.name}: {','.join(s.columns)}" for s in SCHEMAS)
    raise TraceFormatError(f"{file}: unrecognised header; found columns {list(header)}. "
                           f"Accepted headers (exact, in this order):\n{accepted}")


def _parse_csv(file: Path) -> _Rows:
    started = time.perf_counter()
    schema = _schema_for(file, _read_header(file))
    numeric = [schema.timestamp, schema.request, schema.response]
    labels = [c for c in (schema.model, schema.log_type) if c]
    read = dict(header=0, names=list(schema.columns), usecols=numeric + labels, engine="c",
                encoding="utf-8-sig", skip_blank_lines=False)
    try:
        frame = pd.read_csv(file, dtype={**{c: np.float64 for c in numeric}, **{c: "category" for c in labels}},
                            **read)
    except pd.errors.ParserError as exc:
        raise TraceFormatError(f"{file}: malformed CSV: {exc}") from None
    except ValueError as exc:  # a non-numeric cell; find it with a slower string pass
        raise _locate_non_numeric(file, numeric, read) or TraceFormatError(f"{file}: {exc}") from None
    frame = _strip_trailing_blank_lines(frame)
    if frame.empty:
        raise TraceFormatError(f"{file}: header but no data rows")
    _check_field_counts(file, len(schema.columns), len(frame), read)
    values = {c: frame[c].to_numpy() for c in numeric}
    for column in numeric + labels:
        _check_column(file, column, frame[column], integral=column in (schema.request, schema.response))
    codes = {c: frame[c].cat.codes.to_numpy() for c in labels}
    names = {c: tuple(str(v) for v in frame[c].cat.categories) for c in labels}
    rows = _Rows(values[schema.timestamp], values[schema.request].astype(np.int32),
                 values[schema.response].astype(np.int32),
                 codes.get(schema.model), codes.get(schema.log_type),
                 names.get(schema.model, ()), names.get(schema.log_type, ()))
    logger.info("parsed %s (%s): %d rows in %.2f s", file.name, schema.name, len(frame),
                time.perf_counter() - started)
    return rows


def _check_field_counts(file: Path, num_columns: int, num_rows: int, read: dict) -> None:
    """Refuse rows with extra fields, which ``usecols`` would silently ignore."""
    commas = 0
    with open(file, "rb") as f:
        while chunk := f.read(1 << 24):
            commas += chunk.count(b",")
    if commas > (num_columns - 1) * (num_rows + 1):  # or quoted commas: the full parse below tells
        try:
            pd.read_csv(file, dtype=str, **{**read, "usecols": None})
        except pd.errors.ParserError as exc:
            raise TraceFormatError(f"{file}: malformed CSV: {exc}") from None


def _strip_trailing_blank_lines(frame: pd.DataFrame) -> pd.DataFrame:
    filled = np.flatnonzero(frame.notna().any(axis=1).to_numpy())
    return frame.iloc[: filled[-1] + 1] if filled.size else frame.iloc[:0]


def _line(index: int) -> int:
    return index + 2  # 1-based file line: the header is line 1


def _check_column(file: Path, column: str, series: pd.Series, *, integral: bool) -> None:
    missing = series.isna().to_numpy()
    if missing.any():
        i = int(np.argmax(missing))
        raise TraceFormatError(f"{file}: line {_line(i)}, column {column!r}: empty or NaN value, expected "
                               + ("a number" if series.dtype == np.float64 else "a label"))
    if series.dtype != np.float64:
        return
    values = series.to_numpy()
    checks = [(~np.isfinite(values), "a finite number"), (values < 0, "a value >= 0")]
    if integral:
        checks.append(((values != np.floor(values)) | (values > _INT32_MAX), "a whole number of tokens"))
    for bad, expected in checks:
        if bad.any():
            i = int(np.argmax(bad))
            raise TraceFormatError(f"{file}: line {_line(i)}, column {column!r}: found {values[i]:g}, "
                                   f"expected {expected}")


def _locate_non_numeric(file: Path, numeric: list[str], read: dict) -> TraceFormatError | None:
    frame = pd.read_csv(file, dtype=str, keep_default_na=False, **{**read, "usecols": numeric})
    first = None
    for column in numeric:
        text = frame[column].str.strip()
        bad = (pd.to_numeric(text, errors="coerce").isna() & (text != "")).to_numpy()
        if bad.any() and (first is None or np.argmax(bad) < first[0]):
            first = (int(np.argmax(bad)), column, text.iloc[int(np.argmax(bad))])
    if first is None:
        return None
    i, column, value = first
    return TraceFormatError(f"{file}: line {_line(i)}, column {column!r}: found {value!r}, expected a number")
