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

import json
import logging
import os
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd

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


def _read_setup(file: Path, run: str | None = None):
    """The setup dict and the SimConfig of ``run``: the shared ``sim_config``, updated by the entry of
    ``placements`` whose code the run's name contains between dashes (``distserve-c21d12-600-6`` -> ``c21d12``),
    then by ``runs.<run>.sim_config`` (several deployments measured in one folder; a new run of a known
    placement needs no entry of its own)."""
    from workbench.sim.config import SimConfig

    try:
        setup = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{file}: invalid JSON ({exc}); fix the setup file or remove it") from None
    if not isinstance(setup, dict) or not isinstance(setup.get("sim_config"), dict):
        raise ValueError(f"{file}: a setup file needs a 'sim_config' object with SimConfig fields")
    fields_ = dict(setup["sim_config"])
    where = "sim_config"
    updates = []
    if run is not None:
        parts = run.split("-")
        for code, entry in (setup.get("placements") or {}).items():
            if code in parts:
                updates.append((f"placements.{code}.sim_config", (entry or {}).get("sim_config")))
        updates.append((f"runs.{run}.sim_config", ((setup.get("runs") or {}).get(run) or {}).get("sim_config")))
    for label, own in updates:
        if own is None:
            continue
        if not isinstance(own, dict):
            raise ValueError(f"{file}: {label} must be an object of SimConfig fields, got {own!r}")
        fields_.update(own)
        where = f"{where} updated by {label}"
    known = {f.name for f in fields(SimConfig)}
    unknown = sorted(set(fields_) - known)
    if unknown:
        raise ValueError(f"{file}: {where} has fields SimConfig does not know: {', '.join(unknown)} "
                         f"(SimConfig fields: {', '.join(sorted(known))})")
    try:
        config = SimConfig(**fields_)
    except ValueError as exc:
        raise ValueError(f"{file}: {where} is not a valid SimConfig: {exc}") from None
    return setup, config


def load_serving_log(path: str | os.PathLike, *, setup: str | os.PathLike | None = None) -> ServingLog:
    """Read a measured serving run (see the module docstring).

    ``setup`` overrides the setup file's location (default: ``setup.json`` in the CSV's folder; without one
    ``config`` is None).  Bad files raise :class:`TraceFormatError` naming the file, row and column.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such serving log (a CSV with columns {', '.join(COLUMNS)})")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise TraceFormatError(f"{path}: not a readable CSV ({exc})") from None
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise TraceFormatError(f"{path}: missing column(s) {', '.join(missing)}; a serving log has "
                               f"{', '.join(COLUMNS)} (got {', '.join(map(str, frame.columns))})")
    if frame.empty:
        raise TraceFormatError(f"{path}: no requests")
    integral = ("request_id", "prompt_tokens", "output_tokens")
    for column in COLUMNS:
        values = pd.to_numeric(frame[column], errors="coerce")
        low = 1 if column in ("prompt_tokens", "output_tokens") else 0
        # tpot_s is undefined for a one-token answer: NaN is allowed there
        bad = values.isna() & ~((column == "tpot_s") & (frame["output_tokens"] == 1))
        bad |= values < low
        if column in integral:
            bad |= values.notna() & (values != np.round(values))
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise TraceFormatError(f"{path}: line {row + 2}, column {column}: bad value {frame[column].iloc[row]!r} "
                                   f"(expected a {'whole ' if column in integral else ''}number >= {low})")
        frame[column] = values
    late = frame["e2e_s"] < frame["ttft_s"]
    if late.any():
        row = int(np.flatnonzero(late.to_numpy())[0])
        raise TraceFormatError(f"{path}: line {row + 2}: e2e_s < ttft_s; are the columns swapped?")
    if frame["request_id"].duplicated().any():
        raise TraceFormatError(f"{path}: duplicate request_id {frame['request_id'][frame['request_id'].duplicated()].iloc[0]}")
    order = np.argsort(frame["arrival_s"].to_numpy(), kind="stable")   # the order Trace.from_arrays uses
    frame = frame.iloc[order].reset_index(drop=True)
    trace = Trace.from_arrays(frame["arrival_s"], frame["prompt_tokens"], frame["output_tokens"],
                              source=f"measured run {path.stem}")
    measured = frame[["request_id", *MEASURED]].astype({"request_id": np.int64})
    setup_file = Path(setup) if setup is not None else path.parent / SETUP_FILE
    setup_dict, config = (None, None)
    if setup_file.is_file():
        setup_dict, config = _read_setup(setup_file, path.stem)
    elif setup is not None:
        raise FileNotFoundError(f"{setup_file}: no such setup file")
    else:
        log.info("%s: no %s beside it; config is None", path, SETUP_FILE)
    return ServingLog(path.stem, path, trace, measured, config, setup_dict)


__all__ = ["COLUMNS", "ServingLog", "load_serving_log"]
