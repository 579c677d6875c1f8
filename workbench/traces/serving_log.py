"""Measured serving runs: what a real server was sent (a :class:`Trace`) and what it measured, per request.

A serving log is a CSV with the columns :data:`COLUMNS` (one row per request,
times in seconds, ``arrival_s`` from the first request).  A ``setup.json`` beside
it describes the server; its ``sim_config`` object becomes the run's
:class:`~workbench.sim.config.SimConfig` (see
``data/groundtruth/distserve_opt13b_a100_vllm/setup.json``), updated by
``placements.<code>.sim_config`` for a run whose name holds that code between
dashes and by ``runs.<file stem>.sim_config``, when a folder holds runs of
several deployments (``data/groundtruth/distserve_opt13b_a100_disagg/setup.json``).
"""

from __future__ import annotations

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
    path: Path
    trace: Trace
    measured: pd.DataFrame
    config: object | None
    setup: dict | None

    @property
    def profile(self) -> str | None:
        """The registered step-time profile the setup file names (e.g. ``opt-13b-a100``), or None."""
        return (self.setup or {}).get("profile")

    @property
    def rate_rps(self) -> float:
        return self.trace.mean_rate_rps

    def __repr__(self) -> str:
        return f"ServingLog({self.name!r}, {len(self.trace)} requests, config={'yes' if self.config else 'none'})"


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


def _numeric_columns(path: Path, frame: pd.DataFrame) -> pd.DataFrame:
    """Every column of :data:`COLUMNS` as numbers, checked in file order; a bad cell is a TraceFormatError
    naming the file, line and column."""
    integral = ("request_id", "prompt_tokens", "output_tokens")
    for column in COLUMNS:
        values = frame[column].to_numpy()
        low = 1 if column in ("prompt_tokens", "output_tokens") else 0
        if column == "tpot_s":  # undefined for a one-token answer: NaN (or an empty cell) is allowed there
            one_token = (frame["output_tokens"] == 1).to_numpy()
            values = np.where(one_token & pd.isna(frame[column]).to_numpy(), 0.0, values)
        tokens = column in ("prompt_tokens", "output_tokens")
        try:
            frame[column] = checks.array(
                values, column, integral=column in integral, low=low, high=_INT32_MAX if tokens else None,
                high_why="tokens (the simulator counts in int32)" if tokens else "",
                where=lambda i, c=column: f"{path}: line {i + 2}, column {c}",
                what="a count" if column in integral else "seconds")
        except ValueError as exc:
            raise TraceFormatError(f"{exc} (expected a {'whole ' if column in integral else ''}finite number "
                                   f">= {low})") from None
        if column in integral:
            frame[column] = frame[column].astype(np.int64)
        if column == "tpot_s":
            frame.loc[one_token, column] = np.nan
    return frame


def _check_times(path: Path, frame: pd.DataFrame) -> None:
    late = frame["e2e_s"] < frame["ttft_s"]
    if late.any():
        row = int(np.flatnonzero(late.to_numpy())[0])
        raise TraceFormatError(f"{path}: line {row + 2}: e2e_s < ttft_s; are the columns swapped?")
    out = frame["output_tokens"].to_numpy()
    many = out > 1
    derived = np.where(many, (frame["e2e_s"] - frame["ttft_s"]).to_numpy() / np.maximum(out - 1, 1), np.nan)
    tpot = frame["tpot_s"].to_numpy()
    rel, abs_s = TPOT_TOLERANCE
    off = many & (np.abs(tpot - derived) > rel * derived + abs_s)
    if off.any():
        row = int(np.flatnonzero(off)[0])
        raise TraceFormatError(
            f"{path}: line {row + 2}: tpot_s = {tpot[row]:g} s, but (e2e_s - ttft_s) / (output_tokens - 1) = "
            f"({frame['e2e_s'].iloc[row]:g} - {frame['ttft_s'].iloc[row]:g}) / {out[row] - 1} = {derived[row]:.6g} s "
            f"(allowed: within {rel:.0%} + {abs_s * 1e3:g} ms); a TPOT of another definition or unit (ms?) would "
            "mislead every comparison: fix the column")
    # the three columns agree: all in seconds, or all in milliseconds (which only their size can tell)
    if np.isfinite(tpot).any() and np.nanmedian(tpot) > MAX_PLAUSIBLE_TPOT_S:
        raise TraceFormatError(
            f"{path}: column tpot_s: the median request took {np.nanmedian(tpot):g} s per output token, more than "
            f"{MAX_PLAUSIBLE_TPOT_S:g} s (a decode step takes milliseconds): are ttft_s, tpot_s and e2e_s in "
            "milliseconds? The log holds seconds: divide the three columns by 1000")


def load_serving_log(path: str | os.PathLike, *, setup: str | os.PathLike | None = None) -> ServingLog:
    """Read a measured serving run (see the module docstring).

    ``setup`` overrides the setup file's location (default: ``setup.json`` in the CSV's folder; without one
    ``config`` is None, and ``simulate``/``capacity`` refuse ``config=None``: pass the setup yourself).  Bad
    files raise :class:`TraceFormatError` naming the file, line and column: every value must be a finite
    number in range, ``e2e_s >= ttft_s``, and ``tpot_s`` must agree with
    ``(e2e_s - ttft_s) / (output_tokens - 1)`` (within :data:`TPOT_TOLERANCE`).
    """
    path = Path(checks.path(path, "path", expected="a serving log's path"))
    if path.is_dir():
        raise IsADirectoryError(f"{path}: a folder, not a serving log (a CSV with columns {', '.join(COLUMNS)})")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such serving log (a CSV with columns {', '.join(COLUMNS)})")
    try:
        text = checks.read_text(path, what="serving log")
    except ValueError as exc:
        raise TraceFormatError(str(exc)) from None
    try:
        checks.csv_fields(text, path)
    except ValueError as exc:
        raise TraceFormatError(str(exc)) from None
    try:
        frame = pd.read_csv(io.StringIO(text))
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise TraceFormatError(f"{path}: not a readable CSV ({exc})") from None
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise TraceFormatError(f"{path}: missing column(s) {', '.join(missing)}; a serving log has "
                               f"{', '.join(COLUMNS)} (got {', '.join(map(str, frame.columns))})")
    if frame.empty:
        raise TraceFormatError(f"{path}: no requests")
    frame = _numeric_columns(path, frame)
    _check_times(path, frame)
    if frame["request_id"].duplicated().any():
        raise TraceFormatError(f"{path}: duplicate request_id {frame['request_id'][frame['request_id'].duplicated()].iloc[0]}")
    order = np.argsort(frame["arrival_s"].to_numpy(), kind="stable")   # the order Trace.from_arrays uses
    frame = frame.iloc[order].reset_index(drop=True)
    trace = Trace.from_arrays(frame["arrival_s"], frame["prompt_tokens"], frame["output_tokens"],
                              source=f"measured run {path.stem}")
    measured = frame[["request_id", *MEASURED]].astype({"request_id": np.int64})
    setup_file = Path(checks.path(setup, "setup", expected="a path to a setup file")) \
        if setup is not None else path.parent / SETUP_FILE
    setup_dict, config = (None, None)
    if setup_file.exists():
        setup_dict, config = _read_setup(setup_file, path.stem)
    elif setup is not None:
        raise FileNotFoundError(f"{setup_file}: no such setup file")
    else:
        log.warning("%s: no %s beside it, so run.config is None: pass a SimConfig of the serving setup to "
                    "simulate/calibrate (cfg=...)", path, SETUP_FILE)
    return ServingLog(path.stem, path, trace, measured, config, setup_dict)


__all__ = ["COLUMNS", "ServingLog", "load_serving_log"]
