"""Measured serving runs: what a real server was sent (a :class:`Trace`) and what it measured, per request.

``load_serving_log(source, config=...)`` reads a run from

* a CSV with the columns :data:`COLUMNS` (one row per request, times in seconds, ``arrival_s`` from the
  first request), or a pandas DataFrame with the same columns;
* a vLLM per-request log (``requests.jsonl`` with queued / first-token / last-token timestamps, and the
  engine's ``meta.json`` beside it: :mod:`workbench.traces.vllm_log`).

Requests that share a prompt are marked by a ``prompt_id`` column (equal ids: the same whole prompt, so
the same ``prompt_tokens``) or a ``prefix_group`` column (equal groups: the same first ``prefix_tokens``
tokens, a column of its own, or without it the group's shortest prompt), so prefix caching
(``SimConfig.prefix_caching``) sees them: :func:`shared_prefix_hashes` turns them into the trace's
``prefix_hashes``.  An empty cell is a prompt shared with no one.

The server's setup is, in this order: ``config=`` given in code; a ``setup.json`` beside the file, whose
``sim_config`` object becomes the run's :class:`~workbench.sim.config.SimConfig` (see
``data/groundtruth/distserve_opt13b_a100_vllm/setup.json``), updated by ``placements.<code>.sim_config``
for a run whose name holds that code between dashes and by ``runs.<name>.sim_config``, when a folder holds
runs of several deployments (``data/groundtruth/distserve_opt13b_a100_disagg/setup.json``); for a vLLM log,
its ``meta.json``.  A setup that contradicts the run (a request it served that the setup could not serve:
more KV blocks than ``kv_blocks``, a prompt over ``max_num_batched_tokens`` without chunked prefill, a
prompt longer than ``max_model_len``) is refused, naming the request: simulating it would reject what the
server served.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd

from workbench import checks
from workbench.traces.trace import Trace, TraceFormatError

log = logging.getLogger(__name__)

COLUMNS = ("request_id", "arrival_s", "prompt_tokens", "output_tokens", "ttft_s", "tpot_s", "e2e_s")
MEASURED = ("ttft_s", "tpot_s", "e2e_s")
SETUP_FILE = "setup.json"


@dataclass(frozen=True, eq=False)
class ServingLog:
    """One measured run: ``trace`` (what arrived), ``measured`` (ttft_s, tpot_s, e2e_s per request, in trace
    order), ``config`` (the SimConfig of the setup file beside the CSV, or None), ``name`` (the file's stem)."""

    name: str
    path: Path | None
    trace: Trace
    measured: pd.DataFrame
    config: object | None
    setup: dict | None
    # which requests' measured times are data (None: all); the others are simulated (they loaded the server)
    # but held out: compare_to_measured and calibrate look only at the scored ones (see split)
    scored: np.ndarray | None = None
    max_model_len: int | None = None   # the server's max_model_len, when known (checked against the prompts)

    @property
    def scored_mask(self) -> np.ndarray:
        """Bool per request of the trace: its measured times count (all of them unless the run was split)."""
        if self.scored is None:
            return np.ones(len(self.trace), dtype=bool)
        return np.asarray(self.scored, dtype=bool)

    def split(self, n: int) -> tuple["ServingLog", "ServingLog"]:
        """The same run scored on its first ``n`` requests (by arrival), and on the rest: calibrate on one and
        predict the other.  Both keep every request (the server was loaded by all of them); only which measured
        times count differs."""
        n = checks.integer(n, "n", low=1, high=len(self.trace) - 1,
                           hint=f"the run has {len(self.trace)} requests: split it inside them")
        first = np.arange(len(self.trace)) < n
        mask = self.scored_mask
        return (dataclasses.replace(self, name=f"{self.name}[:{n}]", scored=first & mask),
                dataclasses.replace(self, name=f"{self.name}[{n}:]", scored=~first & mask))

    @property
    def profile(self) -> str | None:
        """The registered step-time profile the setup file names (e.g. ``opt-13b-a100``), or None."""
        return (self.setup or {}).get("profile")

    @property
    def rate_rps(self) -> float:
        return self.trace.mean_rate_rps

    def __repr__(self) -> str:
        scored = "" if self.scored is None else f", {int(self.scored_mask.sum())} scored"
        return (f"ServingLog({self.name!r}, {len(self.trace)} requests{scored}, "
                f"config={'yes' if self.config else 'none'})")


def _setup_object(parent: dict, key: str, file: Path, prefix: str = "") -> dict:
    """``parent[key]``: an object (a dict) or absent/null (then empty); anything else names the file and key."""
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{file}: {prefix}{key} must be an object (of SimConfig fields or of named entries), "
                         f"got {value!r}")
    return value


def _read_setup(file: Path, run: str | None = None):
    """The setup dict and the SimConfig of ``run``: the shared ``sim_config``, updated by the entry of
    ``placements`` whose code the run's name contains between dashes (``distserve-c21d12-600-6`` -> ``c21d12``),
    then by ``runs.<run>.sim_config`` (several deployments measured in one folder; a new run of a known
    placement needs no entry of its own)."""
    from workbench.sim.config import SimConfig

    if file.is_dir():
        raise IsADirectoryError(f"{file}: a folder, not a setup file (a JSON file with a 'sim_config' object)")
    try:
        setup = json.loads(checks.read_text(file, what="setup file"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{file}: invalid JSON ({exc}); fix the setup file or remove it") from None
    if not isinstance(setup, dict) or not isinstance(setup.get("sim_config"), dict):
        raise ValueError(f"{file}: a setup file needs a 'sim_config' object with SimConfig fields")
    if setup.get("profile") is not None:   # ServingLog.profile: the step-time profile the run was measured with
        from workbench.sim.profiles import profile_names

        try:
            checks.choice(setup["profile"], "profile", profile_names())
        except ValueError as exc:
            raise type(exc)(f"{file}: {exc}") from None
    fields_ = dict(setup["sim_config"])
    where = "sim_config"
    updates = []
    if run is not None:
        parts = run.split("-")
        placements = _setup_object(setup, "placements", file)
        codes = [code for code in placements if code in parts]
        if len(codes) > 1:
            raise ValueError(f"{file}: the run {run!r} matches the placements {', '.join(codes)} (codes between "
                             "dashes of its name); rename the run so that its name holds one placement code")
        for code in codes:
            updates.append((f"placements.{code}.sim_config",
                            _setup_object(_setup_object(placements, code, file, "placements."), "sim_config", file,
                                          f"placements.{code}.")))
        runs = _setup_object(setup, "runs", file)
        updates.append((f"runs.{run}.sim_config",
                        _setup_object(_setup_object(runs, run, file, "runs."), "sim_config", file, f"runs.{run}.")))
    for label, own in updates:
        if own:
            fields_.update(own)
            where = f"{where} updated by {label}"
    known = {f.name for f in fields(SimConfig)}
    unknown = sorted(set(fields_) - known)
    if unknown:
        raise ValueError(f"{file}: {where} has fields SimConfig does not know: {', '.join(unknown)} "
                         f"(SimConfig fields: {', '.join(sorted(known))})")
    try:
        config = SimConfig(**fields_)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{file}: {where} is not a valid SimConfig: {exc}") from None
    return setup, config


# TPOT is (E2E - TTFT) / (output - 1) (vLLM's benchmark_serving definition); a log's rounding of the three
# times is allowed for, a different definition or unit is not
TPOT_TOLERANCE = (0.02, 1e-3)  # relative, absolute seconds
_INT32_MAX = 2**31 - 1
# a median TPOT above this is a log in milliseconds: a decode step of a real server takes milliseconds, and even
# an overloaded one that preempts requests does not spend a second per token on the median request
MAX_PLAUSIBLE_TPOT_S = 1.0


def _numeric_columns(frame: pd.DataFrame, at) -> pd.DataFrame:
    """Every column of :data:`COLUMNS` as numbers, checked in row order; a bad cell is a TraceFormatError
    naming the row (``at(i)``: the file and line, or the DataFrame row) and column."""
    integral = ("request_id", "prompt_tokens", "output_tokens")
    for column in COLUMNS:
        values = frame[column].to_numpy()
        low = 1 if column in ("prompt_tokens", "output_tokens") else 0
        if column == "tpot_s":  # undefined for a one-token answer: NaN (or an empty cell) is allowed there
            one_token = (pd.to_numeric(frame["output_tokens"], errors="coerce") == 1).to_numpy()
            values = np.where(one_token & pd.isna(frame[column]).to_numpy(), 0.0, values)
        tokens = column in ("prompt_tokens", "output_tokens")
        try:
            frame[column] = checks.array(
                values, column, integral=column in integral, low=low, high=_INT32_MAX if tokens else None,
                high_why="tokens (the simulator counts in int32)" if tokens else "",
                where=lambda i, c=column: f"{at(i)}, column {c}",
                what="a count" if column in integral else "seconds")
        except ValueError as exc:
            raise TraceFormatError(f"{exc} (expected a {'whole ' if column in integral else ''}finite number "
                                   f">= {low})") from None
        if column in integral:
            frame[column] = frame[column].astype(np.int64)
        if column == "tpot_s":
            frame.loc[one_token, column] = np.nan
    return frame


def _check_times(frame: pd.DataFrame, at, label: str) -> None:
    """TTFT <= E2E, TPOT = (E2E - TTFT) / (output - 1) within TPOT_TOLERANCE, and seconds (not milliseconds)."""
    late = frame["e2e_s"] < frame["ttft_s"]
    if late.any():
        row = int(np.flatnonzero(late.to_numpy())[0])
        raise TraceFormatError(f"{at(row)}: e2e_s < ttft_s ({frame['e2e_s'].iloc[row]:g} < "
                               f"{frame['ttft_s'].iloc[row]:g}): the first token cannot come after the last; are "
                               "the columns swapped?")
    out = frame["output_tokens"].to_numpy()
    many = out > 1
    derived = np.where(many, (frame["e2e_s"] - frame["ttft_s"]).to_numpy() / np.maximum(out - 1, 1), np.nan)
    tpot = frame["tpot_s"].to_numpy()
    rel, abs_s = TPOT_TOLERANCE
    off = many & (np.abs(tpot - derived) > rel * derived + abs_s)
    if off.any():
        row = int(np.flatnonzero(off)[0])
        raise TraceFormatError(
            f"{at(row)}: tpot_s = {tpot[row]:g} s, but (e2e_s - ttft_s) / (output_tokens - 1) = "
            f"({frame['e2e_s'].iloc[row]:g} - {frame['ttft_s'].iloc[row]:g}) / {out[row] - 1} = {derived[row]:.6g} s "
            f"(allowed: within {rel:.0%} + {abs_s * 1e3:g} ms); a TPOT of another definition or unit (ms?) would "
            "mislead every comparison: fix the column")
    # the three columns agree: all in seconds, or all in milliseconds (which only their size can tell)
    if np.isfinite(tpot).any() and np.nanmedian(tpot) > MAX_PLAUSIBLE_TPOT_S:
        raise TraceFormatError(
            f"{label}: column tpot_s: the median request took {np.nanmedian(tpot):g} s per output token, more than "
            f"{MAX_PLAUSIBLE_TPOT_S:g} s (a decode step takes milliseconds): are ttft_s, tpot_s and e2e_s in "
            "milliseconds? The log holds seconds: divide the three columns by 1000")


# ------------------------------------------------------------------ requests that share a prompt

SHARED_COLUMNS = ("prompt_id", "prefix_group")
PREFIX_TOKENS = "prefix_tokens"


def _group_codes(values: pd.Series, column: str, at) -> np.ndarray:
    """One integer per distinct value of a prompt_id / prefix_group column (-1: an empty cell, shared with no one),
    through :func:`workbench.checks.labels` (one kind of label: all numbers or all text)."""
    try:
        return checks.labels(values.to_list(), column, where=at)
    except ValueError as exc:
        raise TraceFormatError(str(exc)) from None


def _label(value):
    return value.item() if isinstance(value, np.generic) else value


def shared_prefix_hashes(codes: np.ndarray, shared_tokens: np.ndarray, block_tokens: int):
    """Per request the hashes of its shared prompt blocks: the ``floor(shared / block_tokens)`` full blocks of its
    group's shared tokens, each hash the group's code (a :class:`~workbench.traces.trace.PrefixHashes`).

    The prefix tree keys a node by its parent and its hash (:mod:`workbench.sim.prefix_tree`), so the chain
    ``(g, g, ..., g)`` is one path per group: two groups never share a block, two requests of one group share
    their first ``floor(min(shared) / block_tokens)`` blocks.  Only full blocks are listed: vLLM caches full
    blocks only (``kv_cache_utils.py::hash_block_tokens``), the partial block at the end of a shared prompt and
    everything after it are the request's own.  Requests of a group that no other request shares are given no
    hash (nothing to share), which keeps the tree to the prompts that repeat."""
    from workbench.traces.trace import PrefixHashes

    codes = np.asarray(codes, dtype=np.int64)
    counts = np.bincount(codes[codes >= 0]) if (codes >= 0).any() else np.zeros(0, np.int64)
    repeated = (codes >= 0) & (counts[np.maximum(codes, 0)] > 1 if counts.size else False)
    blocks = np.where(repeated, np.asarray(shared_tokens, dtype=np.int64) // block_tokens, 0)
    offsets = np.zeros(codes.size + 1, np.int64)
    np.cumsum(blocks, out=offsets[1:])
    ids = np.repeat(codes, blocks).astype(np.int64)
    return PrefixHashes(offsets, ids)


def _prefix_structure(frame: pd.DataFrame, at, block_tokens: int):
    """The trace's prefix hashes from a prompt_id or prefix_group column (None when the log has neither)."""
    given = [c for c in SHARED_COLUMNS if c in frame.columns]
    if not given:
        if PREFIX_TOKENS in frame.columns:
            raise TraceFormatError(f"{PREFIX_TOKENS}: a column without prefix_group; {PREFIX_TOKENS} says how many "
                                   "tokens a prefix_group's requests share: add the prefix_group column")
        return None
    if len(given) > 1:
        raise TraceFormatError("prompt_id, prefix_group: give one of the two columns (prompt_id: requests with equal "
                               "ids send the same whole prompt; prefix_group: requests of one group share the "
                               "beginning of their prompts)")
    column = given[0]
    codes = _group_codes(frame[column], column, at)
    prompt = frame["prompt_tokens"].to_numpy(dtype=np.int64)
    grouped = codes >= 0
    if column == "prompt_id":
        if PREFIX_TOKENS in frame.columns:
            raise TraceFormatError(f"{PREFIX_TOKENS}: goes with prefix_group, not prompt_id (a prompt_id shares the "
                                   "whole prompt)")
        low = np.full(codes.max() + 1, np.iinfo(np.int64).max) if grouped.any() else np.zeros(0, np.int64)
        high = np.full(codes.max() + 1, -1) if grouped.any() else np.zeros(0, np.int64)
        np.minimum.at(low, codes[grouped], prompt[grouped])
        np.maximum.at(high, codes[grouped], prompt[grouped])
        bad = np.flatnonzero(grouped & (low[np.maximum(codes, 0)] != high[np.maximum(codes, 0)]))
        if bad.size:
            row = int(bad[0])
            other = int(np.flatnonzero(grouped & (codes == codes[row]) & (prompt != prompt[row]))[0])
            raise TraceFormatError(
                f"prompt_id: {at(row)} and {at(other)} have the same prompt_id {_label(frame[column].iloc[row])!r} but "
                f"{prompt[row]} and {prompt[other]} prompt tokens; a prompt_id names one prompt (the same tokens). "
                "For prompts that share only their beginning use a prefix_group column (with prefix_tokens)")
        shared = prompt
    else:
        if PREFIX_TOKENS in frame.columns:
            tokens = frame[PREFIX_TOKENS]
            values = np.where(grouped & pd.isna(tokens).to_numpy(), 0, tokens.to_numpy())
            shared = checks.array(np.where(grouped, values, 0), PREFIX_TOKENS, integral=True, low=0, high=_INT32_MAX,
                                  where=lambda i: f"{at(i)}, column {PREFIX_TOKENS}", what="tokens")
            over = np.flatnonzero(shared > prompt)
            if over.size:
                row = int(over[0])
                raise TraceFormatError(f"{at(row)}: {PREFIX_TOKENS} = {int(shared[row])} is more than the prompt's "
                                       f"{prompt[row]} tokens; a shared prefix is part of the prompt")
            low = np.full(codes.max() + 1, np.iinfo(np.int64).max)
            high = np.full(codes.max() + 1, -1)
            np.minimum.at(low, codes[grouped], shared[grouped])
            np.maximum.at(high, codes[grouped], shared[grouped])
            bad = np.flatnonzero(grouped & (low[np.maximum(codes, 0)] != high[np.maximum(codes, 0)]))
            if bad.size:
                row = int(bad[0])
                label = _label(frame[column].iloc[row])
                raise TraceFormatError(f"{PREFIX_TOKENS}: the requests of prefix_group {label!r} "
                                       f"give different prefix lengths (e.g. {int(shared[row])} at {at(row)}); a "
                                       "group's requests share one prefix: give them one prefix_tokens")
        else:   # the group's shortest prompt: every request of the group has at least that much in common
            low = np.full(codes.max() + 1, np.iinfo(np.int64).max) if grouped.any() else np.zeros(0, np.int64)
            np.minimum.at(low, codes[grouped], prompt[grouped])
            shared = np.where(grouped, low[np.maximum(codes, 0)] if low.size else 0, 0)
    return shared_prefix_hashes(codes, shared, block_tokens)


# ------------------------------------------------------------------ the setup against the run

def check_config(run: "ServingLog", config, name: str = "config") -> None:
    """Refuse a setup that could not have served the run: a request the server served that ``config`` rejects
    up front (rule 2 of :mod:`workbench.sim.continuous_engine`) or a prompt longer than the run's
    ``max_model_len``; the error names the request and the field to fix."""
    from workbench.sim.metrics import STATUS_COMPLETED, STATUS_REJECTED_BUDGET
    from workbench.sim.schedulers import SCHEDULERS
    from workbench.sim.simulate import continuous_acceptance

    trace = run.trace
    prompt = np.asarray(trace.prompt_tokens, dtype=np.int64)
    output = np.asarray(trace.output_tokens, dtype=np.int64)
    request_id = run.measured["request_id"].to_numpy()
    if run.max_model_len is not None:
        longest = int(np.argmax(prompt))
        if prompt[longest] > run.max_model_len:
            raise ValueError(
                f"max_model_len: {run.name}: request {request_id[longest]} has a prompt of {prompt[longest]} tokens, "
                f"longer than max_model_len = {run.max_model_len}, which vLLM refuses; yet the server answered it: "
                "the run was served with a larger max_model_len (fix max_model_len)")
        # vLLM stops a request once prompt + output reaches max_model_len (v1 sched/utils.py::check_stop)
        grown = np.flatnonzero(prompt + output > np.maximum(run.max_model_len, prompt + 1))
        if grown.size:
            k = int(grown[0])
            raise ValueError(
                f"max_model_len: {run.name}: request {request_id[k]} has {prompt[k]} prompt + {output[k]} output "
                f"tokens, more than max_model_len = {run.max_model_len} (vLLM stops a request at max_model_len "
                "tokens, v1 sched/utils.py::check_stop): the run was served with a larger max_model_len (fix "
                "max_model_len)")
    if config is None or SCHEDULERS[config.scheduler].engine != "continuous":
        return
    status = continuous_acceptance(trace, config)
    refused = np.flatnonzero(status != STATUS_COMPLETED)
    if not refused.size:
        return
    k = int(refused[0])
    if status[k] == STATUS_REJECTED_BUDGET:
        why = (f"without chunked prefill a prompt must fit max_num_batched_tokens = {config.max_num_batched_tokens} "
               f"(vLLM v0.2's prompt limit); fix max_num_batched_tokens, or set chunked_prefill=True if the server "
               "was vLLM v1")
    else:
        need = (prompt[k] + max(output[k], 1) - 1 + config.block_size - 1) // config.block_size
        why = (f"it needs {need} KV blocks of {config.block_size} tokens, more than kv_blocks = "
               f"{config.kv_blocks_effective} (without chunked prefill also the watermark's "
               f"{config.kv_watermark_blocks}); fix kv_blocks (vLLM v1: the num_gpu_blocks it logged at start-up, "
               "minus its null block) or block_size")
    raise ValueError(f"{name}: contradicts the run {run.name}: request {request_id[k]} ({prompt[k]} prompt + "
                     f"{output[k]} output tokens) was served, but this setup would reject it: {why}. "
                     f"{refused.size} of {len(trace)} requests are refused so")


# ------------------------------------------------------------------ reading a run

def _default_name(path: Path) -> str:
    """A run's name: its file's stem, or for vLLM's ``requests.jsonl`` the folders above it
    (``RTX4090/Llama-3.1-8B/vllm/requests.jsonl`` -> ``RTX4090-Llama-3.1-8B``)."""
    if path.stem != "requests":
        return path.stem
    parents = [p.name for p in path.parents if p.name and p.name != "vllm"][:2]
    return "-".join(reversed(parents)) or path.stem


def _frame_of(source, name):
    """(frame, label, at, path, name, meta) of a DataFrame, a CSV file or a vLLM request log."""
    from workbench.traces import vllm_log

    if isinstance(source, pd.DataFrame):
        label = f"DataFrame {name!r}" if name else "DataFrame"
        return (source.reset_index(drop=True).copy(), label, lambda i: f"{label}: row {i}", None,
                name or "run", None)
    path = Path(checks.path(source, "source", expected="a serving log's path (a .csv, or vLLM's requests.jsonl) or "
                                                     "a pandas DataFrame"))
    if path.is_dir():
        raise IsADirectoryError(f"{path}: a folder, not a serving log (a CSV with columns {', '.join(COLUMNS)}, or "
                                "vLLM's requests.jsonl)")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such serving log (a CSV with columns {', '.join(COLUMNS)}, or vLLM's "
                                "requests.jsonl)")
    name = name or _default_name(path)
    if path.suffix in (".jsonl", ".ndjson"):
        frame = vllm_log.read_requests(path)
        return frame, str(path), lambda i: f"{path}: line {i + 1}", path, name, vllm_log.read_meta(path)
    try:
        text = checks.read_text(path, what="serving log")
        checks.csv_fields(text, path)
    except ValueError as exc:
        raise TraceFormatError(str(exc)) from None
    try:
        frame = pd.read_csv(io.StringIO(text))
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise TraceFormatError(f"{path}: not a readable CSV ({exc})") from None
    return frame, str(path), lambda i: f"{path}: line {i + 2}", path, name, None


def load_serving_log(source, *, config=None, setup: str | os.PathLike | None = None, name: str | None = None,
                     max_model_len: int | None = None) -> ServingLog:
    """Read a measured serving run (see the module docstring): ``source`` a CSV path, vLLM's ``requests.jsonl``
    or a DataFrame.

    ``config``: the serving setup as a SimConfig (default: the ``setup`` file, else ``setup.json`` beside the
    file, else a vLLM log's ``meta.json``; None when there is none, and ``simulate``/``calibrate`` then need
    ``cfg=``).  ``name``: the run's name (default: the file's stem).  ``max_model_len``: the server's, checked
    against the prompts (default: the ``meta.json``'s, else unchecked).  Bad input raises
    :class:`TraceFormatError` naming the file and line (or DataFrame row) and column: every value a finite
    number in range, ``e2e_s >= ttft_s``, ``tpot_s`` equal to ``(e2e_s - ttft_s) / (output_tokens - 1)``
    (within :data:`TPOT_TOLERANCE`), one kind of ``prompt_id``; a setup that contradicts the run raises
    ValueError naming the request and the field.
    """
    from workbench.sim.config import SimConfig

    if name is not None:
        name = checks.instance(name, "name", str, expected="a text label for the run")
    if config is not None:
        checks.instance(config, "config", SimConfig, expected="a SimConfig of the serving setup, or None")
        if setup is not None:
            raise ValueError("config, setup: give the serving setup one way (config=SimConfig(...) in code, or "
                             "setup= a setup.json), not both")
    if max_model_len is not None:
        max_model_len = checks.integer(max_model_len, "max_model_len", low=1, hint="the server's max_model_len")
    frame, label, at, path, name, meta = _frame_of(source, name)
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise TraceFormatError(f"{label}: missing column(s) {', '.join(missing)}; a serving log has "
                               f"{', '.join(COLUMNS)} (got {', '.join(map(str, frame.columns))})")
    if frame.empty:
        raise TraceFormatError(f"{label}: no requests")
    frame = _numeric_columns(frame, at)
    _check_times(frame, at, label)
    duplicated = frame["request_id"].duplicated()
    if duplicated.any():
        row = int(np.flatnonzero(duplicated.to_numpy())[0])
        raise TraceFormatError(f"{at(row)}: duplicate request_id {frame['request_id'].iloc[row]}")
    setup_dict, from_file = None, None
    setup_file = Path(checks.path(setup, "setup", expected="a path to a setup file")) if setup is not None \
        else (path.parent / SETUP_FILE if path is not None else None)
    if config is None and setup_file is not None and setup_file.exists():
        setup_dict, from_file = _read_setup(setup_file, name)
    elif setup is not None:
        raise FileNotFoundError(f"{setup_file}: no such setup file")
    if meta is not None:
        from workbench.traces.vllm_log import META_FILE, config_from_meta

        meta_config, meta_len, lacking = config_from_meta(meta, str(path.parent / META_FILE))
        max_model_len = max_model_len if max_model_len is not None else meta_len
        if config is None and from_file is None:
            from_file = meta_config
            if meta_config is None:
                log.warning("%s: the run's %s gives no setup (%s): pass config=SimConfig(...)", path, META_FILE,
                            lacking)
    config = config if config is not None else from_file
    block_tokens = config.block_size if config is not None else 16
    hashes = _prefix_structure(frame, at, block_tokens)
    order = np.argsort(frame["arrival_s"].to_numpy(), kind="stable")   # the order Trace.from_arrays uses
    frame = frame.iloc[order].reset_index(drop=True)
    if hashes is not None:
        hashes = hashes.take(order)
    trace = Trace.from_arrays(frame["arrival_s"], frame["prompt_tokens"], frame["output_tokens"],
                              source=f"measured run {name}", prefix_hashes=hashes,
                              prefix_block_tokens=block_tokens if hashes is not None else None)
    measured = frame[["request_id", *MEASURED]].astype({"request_id": np.int64})
    if config is None and path is not None and meta is None:
        log.warning("%s: no %s beside it, so run.config is None: pass config=SimConfig(...) (the serving setup) "
                    "to load_serving_log, or cfg= to simulate/calibrate", path, SETUP_FILE)
    run = ServingLog(name, path, trace, measured, config, setup_dict, None, max_model_len)
    check_config(run, config)
    return run


__all__ = ["COLUMNS", "ServingLog", "check_config", "load_serving_log", "shared_prefix_hashes"]
