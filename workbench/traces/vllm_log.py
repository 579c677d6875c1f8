"""vLLM's own per-request timestamps (``requests.jsonl``) and engine arguments (``meta.json``), as a serving log.

The format is the one LLMServingSim's benchmark runner writes from vLLM v1's per-request metrics
(casys-kaist/LLMServingSim, ``bench/core/recorder.py::write_requests`` and
``bench/core/runner.py::_record_from_metrics``, which copies ``RequestOutput.metrics``, vLLM's
``RequestStateStats``): one JSON object per line,

``{"request_id": str, "input_toks": int, "output_toks": int, "arrival_time": epoch s, "queued_ts": s,
"scheduled_ts": s, "first_token_ts": s, "last_token_ts": s}``,

the ``*_ts`` on the engine's monotonic clock.  ``queued_ts`` is when the engine core queued the request
(its ``QUEUED`` event: tokenised, in the scheduler's waiting queue), so a request arrives at ``queued_ts``
(relative to the first), its TTFT is ``first_token_ts - queued_ts``, its E2E ``last_token_ts - queued_ts``
and its TPOT ``(last - first) / (output_toks - 1)`` (the runner pins every output length: ``min_tokens =
max_tokens``, ``ignore_eos``).  The runner writes ``null`` times for a request whose metrics never came
back: such a request never finished and is refused, with its line.

``meta.json`` beside it (the runner's ``recorder.py::write_meta``) gives the engine: ``vllm_version``,
``engine_kwargs`` (``max_num_seqs``, ``max_num_batched_tokens``, ``max_model_len``, TP and DP sizes) and,
when the runner could read them, ``kv_cache`` (``num_gpu_blocks``, ``block_size``,
``enable_prefix_caching``) and ``resolved_config`` (vLLM's resolved ``VllmConfig``).  From them
:func:`config_from_meta` builds the run's :class:`~workbench.sim.config.SimConfig`: vLLM >= 0.8 is the v1
engine (chunked prefill; ``SimConfig.chunked_prefill=True``), and v1 keeps one of ``num_gpu_blocks`` as its
null block, so ``kv_blocks = num_gpu_blocks - 1`` (rule 7 of :mod:`workbench.sim.continuous_engine`).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from workbench import checks
from workbench.traces.trace import TraceFormatError

log = logging.getLogger(__name__)

FIELDS = ("input_toks", "output_toks", "queued_ts", "first_token_ts", "last_token_ts")
META_FILE = "meta.json"
V1_FROM = (0, 8)     # vLLM's v1 engine is the default from 0.8


def _line_value(record: dict, key: str, path: Path, line: int, request) -> float:
    value = record.get(key)
    where = f"{path}: line {line} (request {request!r})"
    if value is None:
        if key in ("first_token_ts", "last_token_ts", "queued_ts"):
            raise TraceFormatError(
                f"{where}: {key} is {'missing' if key not in record else 'null'}: the request never finished (the "
                "benchmark writes null times for a request whose metrics never came back: aborted, timed out, or "
                "still running when the log was written). A run's log must hold finished requests only: rerun, or "
                "if the request was aborted by the client, its work still loaded the server, so removing its line "
                "would make the simulated load lighter than the measured one")
        raise TraceFormatError(f"{where}: no {key} (a vLLM request log line has {', '.join(FIELDS)})")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TraceFormatError(f"{where}: {key} = {value!r}, expected a finite number")
    return float(value)


def read_requests(path: Path) -> pd.DataFrame:
    """The log as a serving-log frame (request_id, arrival_s, prompt_tokens, output_tokens, ttft_s, tpot_s,
    e2e_s), in file order; bad lines are refused with the file, line and request."""
    text = checks.read_text(path, what="vLLM request log")
    rows = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise TraceFormatError(f"{path}: line {number}: not JSON ({exc.msg}); a vLLM request log has one JSON "
                                   "object per line") from None
        if not isinstance(record, dict):
            raise TraceFormatError(f"{path}: line {number}: a JSON {type(record).__name__}, expected an object with "
                                   f"{', '.join(FIELDS)}")
        request = record.get("request_id", f"line {number}")
        values = {key: _line_value(record, key, path, number, request) for key in FIELDS}
        queued, first, last = values["queued_ts"], values["first_token_ts"], values["last_token_ts"]
        where = f"{path}: line {number} (request {request!r})"
        if first < queued:
            raise TraceFormatError(f"{where}: first_token_ts {first:.6f} is before queued_ts {queued:.6f}; the "
                                   "times contradict each other (both must be the engine's monotonic clock)")
        if last < first:
            raise TraceFormatError(f"{where}: last_token_ts {last:.6f} is before first_token_ts {first:.6f}; the "
                                   "times contradict each other")
        output = values["output_toks"]
        if output == 1 and last != first:
            raise TraceFormatError(f"{where}: one output token, but last_token_ts - first_token_ts = "
                                   f"{last - first:.6f} s (a one-token answer's first token is its last)")
        rows.append({"request_id": number - 1, "request_name": str(request), "queued_ts": queued,
                     "prompt_tokens": values["input_toks"], "output_tokens": output,
                     "ttft_s": first - queued, "e2e_s": last - queued,
                     "tpot_s": (last - first) / (output - 1) if output > 1 else np.nan})
    if not rows:
        raise TraceFormatError(f"{path}: no requests")
    frame = pd.DataFrame(rows)
    queued = frame.pop("queued_ts")
    frame.insert(1, "arrival_s", queued - queued.min())
    return frame


def read_meta(path: Path) -> dict | None:
    """``meta.json`` beside a request log, or None when there is none."""
    meta_file = path.parent / META_FILE
    if not meta_file.is_file():
        return None
    try:
        meta = json.loads(checks.read_text(meta_file, what="vLLM run meta file"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{meta_file}: invalid JSON ({exc}); fix the file or remove it") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{meta_file}: must be a JSON object (vllm_version, engine_kwargs, kv_cache)")
    return meta


def _version(text) -> tuple[int, int] | None:
    try:
        major, minor = str(text).split(".")[:2]
        return int(major), int(minor)
    except (ValueError, TypeError):
        return None


def _first(*values):
    return next((v for v in values if v is not None), None)


def config_from_meta(meta: dict, where: str):
    """(SimConfig or None, max_model_len or None, what was missing) from a run's ``meta.json`` (module docstring).

    None when the file cannot say: an engine older than v1 (its rules differ by version: pass the config), or
    no ``num_gpu_blocks`` (vLLM settles the KV cache at boot; the runner records it in ``kv_cache``)."""
    from workbench.sim.config import SimConfig

    kwargs = meta.get("engine_kwargs") or {}
    resolved = meta.get("resolved_config") or {}
    scheduler = resolved.get("scheduler_config") or {}
    cache_resolved = resolved.get("cache_config") or {}
    model = resolved.get("model_config") or {}
    cache = meta.get("kv_cache") or {}
    max_model_len = _first(kwargs.get("max_model_len"), model.get("max_model_len"))
    if max_model_len is not None:
        max_model_len = checks.integer(max_model_len, f"{where}: engine_kwargs.max_model_len", low=1)
    version = _version(meta.get("vllm_version"))
    if version is None or version < V1_FROM:
        return None, max_model_len, (f"vllm_version {meta.get('vllm_version')!r} is not the v1 engine (>= 0.8) the "
                                     "continuous engine's chunked-prefill rules follow")
    data_parallel = _first(kwargs.get("data_parallel_size"), 1)
    if data_parallel != 1:
        return None, max_model_len, f"data_parallel_size {data_parallel}: {data_parallel} engines, not one server"
    blocks = _first(cache.get("num_gpu_blocks"), cache_resolved.get("num_gpu_blocks"))
    if blocks is None:
        return None, max_model_len, "no kv_cache.num_gpu_blocks (the KV cache vLLM allocated at boot)"
    fields = {
        "scheduler": "continuous_fcfs", "num_gpus": 1, "chunked_prefill": True,
        "max_num_seqs": _first(kwargs.get("max_num_seqs"), scheduler.get("max_num_seqs"), 256),
        "max_num_batched_tokens": _first(kwargs.get("max_num_batched_tokens"),
                                         scheduler.get("max_num_batched_tokens"), 2048),
        "block_size": _first(cache.get("block_size"), cache_resolved.get("block_size"), 16),
        "kv_blocks": checks.integer(blocks, f"{where}: kv_cache.num_gpu_blocks", low=2) - 1,
        # v1 turns prefix caching on by default
        "prefix_caching": bool(_first(cache.get("enable_prefix_caching"),
                                      cache_resolved.get("enable_prefix_caching"), True)),
    }
    try:
        return SimConfig(**fields), max_model_len, ""
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: the engine arguments make no valid SimConfig: {exc}") from None


__all__ = ["META_FILE", "config_from_meta", "read_meta", "read_requests"]
