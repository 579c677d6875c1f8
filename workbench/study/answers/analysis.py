"""What the three steps found: ``all_results.csv`` and ``analysis.json``.

Rules (also written into ``analysis.json`` under ``"rules"``):

* best GPU count (step 2): the smallest GPU count whose goodput is within
  :data:`GOODPUT_TOLERANCE` (1%) of the best goodput.  The seed project took
  the raw maximum, which on a saturating trace picks the largest pool for a
  gain in the noise.
* scaling efficiency (step 2): throughput per GPU relative to the smallest
  pool (1 GPU): ``(thr(n) / n) / (thr(1) / 1)``.
* best K (step 3): the K with the lowest SLA violation rate; ties go to the
  higher goodput, then the smaller K.
* best configuration of step 1: at the largest request volume, the
  configuration with the lowest SLA violation rate (ties: higher goodput,
  then fewer GPUs); of step 2 and step 3, the row of the best GPU count and
  of the best K.
* breaking point (step 1): per configuration, the smallest request volume at
  which its SLA violation rate exceeds :data:`BREAKING_SLA_VIOLATION` (5%);
  ``null`` if it never does.

Several schedulers (``schedulers``): step 1's rules compare them all; step 2's
and step 3's answers (best GPU count, best K, capacity per GPU) are about the
primary scheduler, :data:`PRIMARY_SCHEDULER` when it ran, else the first
scheduler of the rows (``primary_scheduler`` says which); every scheduler's
capacity is listed under ``capacity_rps``.

Replications: the rules read the mean over the seeds of each test
(:func:`summarize`: ``<metric>`` = mean, ``<metric>_ci95_low`` / ``_ci95_high`` = its
95% interval, Student t cut to the quantity's range, ``replications``), also written to
``<step>_summary.csv``.

Capacity (the tests that searched it; see :mod:`workbench.study.runs.capacity`): the
largest arrival rate at which the SLA target holds, ``null`` when no load
reaches it (``unreachable`` gives the reason).

* capacity per GPU and capacity scaling efficiency (step 2):
  ``capacity(n) / n`` and ``capacity(n) / ((n / n0) * capacity(n0))``,
  n0 = the smallest GPU count (1).
* best GPU count by capacity per GPU (step 2): the highest capacity per GPU;
  counts within :data:`CAPACITY_TOLERANCE` (1%) of it go to the fewest GPUs.
* best K by capacity (step 3): the highest capacity; K values within 1% of it
  go to the smallest K.
* monotone in GPUs (step 2): more GPUs never give less capacity on the same
  trace, scheduler and K.  Every fall is listed (an unreachable target counts
  as capacity 0), with whether it is within the search's resolution.

``all_results.csv`` holds the latest run of each step (each notebook's last
cell replaces its step's rows); ``analysis.json`` is recomputed from it.  Both
are written atomically under the results folder's lock.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.sim.config import SimConfig
from workbench.study.present.text import natural_key
from workbench.study.store.replications import HIGH, LOW, summarize_replications
from workbench.study.store.checkpoints import canonical_columns, read_rows
from workbench.study.store.files import atomic_write_text, results_lock, write_csv_atomic

log = logging.getLogger(__name__)

PRIMARY_SCHEDULER = "multi_bin_dynamic"
ALL_RESULTS = "all_results.csv"
ANALYSIS = "analysis.json"
GOODPUT_TOLERANCE = 0.01
CAPACITY_TOLERANCE = 0.01
KNEE_TOLERANCE = 0.05
BREAKING_SLA_VIOLATION = 0.05
STEP_ORDER = ("step1_request_scaling", "step2_gpu_scaling", "step3_kbins_sensitivity")
RULES = {
    "best_gpu_count": f"smallest GPU count whose goodput_rps is within {GOODPUT_TOLERANCE:.0%} of the best "
                      "goodput_rps of step 2 (the seed took the raw maximum)",
    "scaling_efficiency": "(throughput_rps(n) / n) / (throughput_rps(n0) / n0), n0 = smallest GPU count (1)",
    "best_k": "K with the lowest sla_violation_rate in step 3; ties: higher goodput_rps, then smaller K",
    "best_config_step1": "at the largest request volume, the configuration that meets the SLA at the replayed "
                         f"load (sla_violation_rate <= {BREAKING_SLA_VIOLATION:.0%}) with the highest goodput_rps; if "
                         "none does, the one with the highest capacity_rps (the load it sustains within the SLA); "
                         "without capacities, the lowest sla_violation_rate",
    "breaking_point": f"per configuration, the smallest request volume whose sla_violation_rate exceeds "
                      f"{BREAKING_SLA_VIOLATION:.0%} (null if none)",
    "capacity": "largest arrival rate (the trace replayed faster or slower) at which at least capacity_target of "
                "the requests finish within d_sla_s; null when no load reaches it (see capacity_search.unreachable)",
    "capacity_scaling_efficiency": "capacity_rps(n) / ((n / n0) * capacity_rps(n0)), n0 = the smallest GPU count "
                                   "with a capacity (1 unless no load meets the target there)",
    "best_gpu_count_by_capacity_per_gpu": f"highest capacity_rps / num_gpus in step 2; counts within "
                                          f"{CAPACITY_TOLERANCE:.0%} of it: the fewest GPUs",
    "capacity_per_gpu_knee": f"the fewest GPUs whose capacity per GPU is within {KNEE_TOLERANCE:.0%} of the highest "
                             "(where more GPUs stop paying per GPU)",
    "by_scheduler": "every answer of steps 2 and 3 also per scheduler (..._by_scheduler), by the same rule",
    "best_k_by_capacity": f"highest capacity_rps in step 3; K values within {CAPACITY_TOLERANCE:.0%} of it: "
                          "the smallest K",
    "meets_sla": f"a replayed configuration meets the SLA when its sla_violation_rate is at most "
                 f"{BREAKING_SLA_VIOLATION:.0%}; a capacity-based best meets it when its capacity_rps is not null",
    "at_edge": "a best GPU count or best K equal to the largest value tested (the optimum may lie beyond); "
               "1 GPU and K = 1 are the smallest possible values, not an edge. A best GPU count by capacity per GPU "
               "at the largest count is a valid answer when capacity per GPU never falls with more GPUs and gains "
               f"at most {KNEE_TOLERANCE:.0%} on the last step: the larger the pool the better, with diminishing "
               "returns, and capacity_per_gpu_knee says where they flatten",
    "valid": "a best meets the SLA and is not at the edge of the range tested; validity.<best>.sentence says why not",
    "gpu_count": "step 3: where its GPU count came from (given, step 2's best GPU count, or the default), the "
                 "step-2 row it used, and whether it still is step 2's best GPU count",
    "capacity_monotone_in_gpus": "step 2: capacity never falls as the GPU count grows (same trace, scheduler "
                                 "and K); every fall is listed, an unreachable target counting as capacity 0",
}
CONFIG_KEYS = ("label", "test_id", "scheduler", "num_gpus", "k_bins", "num_requests", "d_sla_s",
               "throughput_rps", "goodput_rps", "sla_violation_rate", "latency_p99_s", "gpu_utilization_mean",
               "capacity_rps")


# Columns that say what a test is (not what it measured): never averaged over replications.
IDENTITY_COLUMNS = frozenset({f.name for f in dataclasses.fields(SimConfig)} | {
    "test_id", "base_test_id", "replication", "replications", "step", "label", "dataset", "num_requests",
    "rps_scaling", "use_real_timestamps", "trace_seed", "trace_label", "trace_fingerprint", "synthetic",
    "simulator_version", "finished_at", "capacity_search", "capacity_criterion", "capacity_target",
    "capacity_resolution", "capacity_error", "capacity_bounded", "capacity_monotone", "latency_profile",
    "gpu_count_source", "step2_test_id"})


def _is_identity(column: str) -> bool:
    return (column in IDENTITY_COLUMNS or column.startswith("step_")
            or column in ("latency_base_s", "latency_per_token_s", "latency_batch_penalty"))


def metric_columns(rows: pd.DataFrame) -> list[str]:
    """The numeric result columns of ``rows`` (what replications average)."""
    return [c for c in rows.columns if not _is_identity(c) and not c.endswith((LOW, HIGH))
            and pd.api.types.is_numeric_dtype(rows[c]) and not pd.api.types.is_bool_dtype(rows[c])]


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per test (its replications averaged): every metric's mean and its 95% interval
    ``<metric>_ci95_low`` / ``_ci95_high`` (:mod:`workbench.study.store.replications`; NaN with one replication), ``replications``, and ``test_id`` = the id of replication 0.

    Rows already summarized (with a ``replications`` column) are returned as they are.
    """
    if rows.empty or "replications" in rows.columns or "test_id" not in rows.columns:
        return rows  # already summarized, or hand-made rows without test ids (one row per test)
    rows = rows.copy()
    if "base_test_id" not in rows:
        rows["base_test_id"] = rows["test_id"]
    rows["base_test_id"] = rows["base_test_id"].fillna(rows["test_id"])
    by = ["step", "base_test_id"] if "step" in rows else ["base_test_id"]
    metrics = metric_columns(rows)
    firsts = rows.groupby(by, sort=False, dropna=False)[[c for c in ("seed", "trace_seed") if c in rows]].min()
    out = summarize_replications(rows, by=by, metrics=metrics)
    out["test_id"] = out["base_test_id"]
    for column in firsts.columns:  # the plan's own seed (that of replication 0)
        out[column] = firsts[column].to_numpy()
    out = out.drop(columns=[c for c in ("replication",) if c in out])
    order = [c for c in rows.columns if c in out.columns and c != "replication"]
    rest = [c for c in out.columns if c not in order]
    return out[order + rest]


def primary_scheduler(rows: pd.DataFrame) -> str | None:
    """The scheduler step 2's and step 3's answers are about (see the module docstring)."""
    if rows.empty or "scheduler" not in rows:
        return None
    names = list(dict.fromkeys(rows["scheduler"].astype(str)))
    return PRIMARY_SCHEDULER if PRIMARY_SCHEDULER in names else names[0]


def primary_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows of :func:`primary_scheduler`."""
    name = primary_scheduler(rows)
    return rows if name is None else rows[rows["scheduler"].astype(str) == name].reset_index(drop=True)


def _json_safe(value):
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _config(row: pd.Series | None) -> dict | None:
    if row is None:
        return None
    return {k: _json_safe(row[k]) for k in CONFIG_KEYS if k in row.index}


def _pick(rows: pd.DataFrame, by: list[str], ascending: list[bool]) -> pd.Series | None:
    rows = rows.dropna(subset=[by[0]])
    if rows.empty:
        return None
    return rows.sort_values(by, ascending=ascending, kind="stable").iloc[0]


def best_gpu_count(rows: pd.DataFrame, tolerance: float = GOODPUT_TOLERANCE) -> int | None:
    """Smallest ``num_gpus`` whose goodput is within ``tolerance`` of the best goodput."""
    rows = rows.dropna(subset=["goodput_rps"])
    if rows.empty:
        return None
    best = rows["goodput_rps"].max()
    eligible = rows[rows["goodput_rps"] >= (1.0 - tolerance) * best]
    return int(eligible["num_gpus"].min())


def scaling_efficiency(rows: pd.DataFrame) -> dict[int, float]:
    """GPU count -> throughput per GPU relative to the smallest pool."""
    rows = rows.dropna(subset=["throughput_rps"]).sort_values("num_gpus")
    if rows.empty:
        return {}
    base = rows.iloc[0]
    per_gpu = base["throughput_rps"] / base["num_gpus"]
    return {int(r.num_gpus): (float(r.throughput_rps / r.num_gpus / per_gpu) if per_gpu > 0 else float("nan"))
            for r in rows.itertuples()}


def best_k_row(rows: pd.DataFrame) -> pd.Series | None:
    return _pick(rows, ["sla_violation_rate", "goodput_rps", "k_bins"], [True, False, True])


def breaking_points(rows: pd.DataFrame, threshold: float = BREAKING_SLA_VIOLATION) -> dict[str, dict]:
    """Per configuration label: the first request volume whose SLA violation rate exceeds ``threshold``."""
    out = {}
    for label, group in rows.sort_values("num_requests").groupby("label", sort=False):
        over = group[group["sla_violation_rate"] > threshold]
        first = over.iloc[0] if not over.empty else None
        out[str(label)] = {
            "num_requests": int(first["num_requests"]) if first is not None else None,
            "sla_violation_rate": float(first["sla_violation_rate"]) if first is not None else None,
            "largest_volume_tested": int(group["num_requests"].max()),
        }
    return out


# --------------------------------------------------------------------------- capacity

CAPACITY_TABLE_COLUMNS = ("label", "scheduler", "num_gpus", "k_bins", "num_requests", "throughput_rps", "capacity_rps",
                          "capacity_rps_ci95_low", "capacity_rps_ci95_high", "replications",
                          "capacity_per_gpu", "capacity_efficiency", "capacity_scaling", "capacity_attainment",
                          "capacity_probes", "capacity_monotone", "capacity_error")


def capacity_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows whose test searched its capacity (found or not)."""
    if rows.empty or "capacity_criterion" not in rows:
        return rows.iloc[0:0]
    return rows[rows["capacity_criterion"].notna()]


def _capacity_or_zero(rows: pd.DataFrame) -> pd.Series:
    return rows["capacity_rps"].astype(float).fillna(0.0)


def capacity_per_gpu(rows: pd.DataFrame) -> dict[int, float]:
    """GPU count -> capacity per GPU (NaN where no load meets the target)."""
    rows = capacity_rows(rows)
    rows = rows.sort_values("num_gpus") if not rows.empty else rows
    return {int(g): float(c) / int(g) for g, c in zip(rows["num_gpus"], rows["capacity_rps"])} if not rows.empty \
        else {}


def capacity_scaling_efficiency(rows: pd.DataFrame) -> dict[int, float]:
    """GPU count -> capacity relative to ideal linear scaling from the smallest pool: cap(n) / ((n/n0) cap(n0))."""
    rows = capacity_rows(rows)
    if rows.empty:
        return {}
    rows = rows.sort_values("num_gpus")
    found = rows[pd.to_numeric(rows["capacity_rps"], errors="coerce") > 0]
    if found.empty:
        return {int(g): math.nan for g in rows["num_gpus"]}
    base = found.iloc[0]   # the smallest pool with a capacity
    per_gpu = float(base["capacity_rps"]) / int(base["num_gpus"])
    return {int(g): float(c) / int(g) / per_gpu for g, c in zip(rows["num_gpus"], rows["capacity_rps"])}


def best_gpu_count_by_capacity_per_gpu(rows: pd.DataFrame, tolerance: float = CAPACITY_TOLERANCE) -> int | None:
    """The GPU count with the highest capacity per GPU; counts within ``tolerance`` of it go to the fewest GPUs."""
    per_gpu = pd.Series(capacity_per_gpu(rows), dtype=float).dropna()
    if per_gpu.empty:
        return None
    return int(per_gpu[per_gpu >= (1.0 - tolerance) * per_gpu.max()].index.min())


def best_k_by_capacity(rows: pd.DataFrame, tolerance: float = CAPACITY_TOLERANCE) -> int | None:
    """The K with the highest capacity; K values within ``tolerance`` of it go to the smallest K."""
    rows = capacity_rows(rows)
    rows = rows.dropna(subset=["capacity_rps"]) if not rows.empty else rows
    if rows.empty:
        return None
    eligible = rows[rows["capacity_rps"] >= (1.0 - tolerance) * rows["capacity_rps"].max()]
    return int(eligible["k_bins"].min())


def capacity_monotone_exceptions(rows: pd.DataFrame) -> list[dict]:
    """Every place where more GPUs gave less capacity (same trace, scheduler, K and SLA).

    An unreachable target counts as capacity 0, so a configuration that
    reaches it on n GPUs but not on more is listed too.  ``within_resolution``
    says whether the fall is no larger than the search's resolution, i.e. may
    be the bisection's uncertainty rather than a real loss.
    """
    rows = capacity_rows(rows)
    found: list[dict] = []
    if rows.empty:
        return found
    keys = [k for k in ("trace_fingerprint", "scheduler", "k_bins", "d_sla_s", "capacity_target") if k in rows]
    for _, group in rows.groupby(keys, sort=False, dropna=False) if keys else [(None, rows)]:
        group = group.sort_values("num_gpus")
        caps = _capacity_or_zero(group).to_numpy()
        for i in range(1, len(group)):
            if caps[i] < caps[i - 1]:
                before, after = group.iloc[i - 1], group.iloc[i]
                drop = 1.0 - caps[i] / caps[i - 1]
                resolution = float(after.get("capacity_resolution", math.nan))
                found.append({"label_from": str(before["label"]), "label_to": str(after["label"]),
                              "num_gpus_from": int(before["num_gpus"]), "num_gpus_to": int(after["num_gpus"]),
                              "capacity_rps_from": float(caps[i - 1]), "capacity_rps_to": float(caps[i]),
                              "relative_drop": drop, "within_resolution": bool(drop <= resolution)})
    return found


def capacity_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The tests that searched their capacity: replayed throughput next to capacity, per GPU, and why not found.

    ``capacity_efficiency`` (capacity relative to ideal linear scaling from the
    smallest pool) is there when the rows span several GPU counts of one
    scheduler and K (step 2).
    """
    rows = capacity_rows(summarize(rows))
    if rows.empty:
        return pd.DataFrame(columns=[c for c in CAPACITY_TABLE_COLUMNS if c != "capacity_efficiency"])
    out = rows.copy()  # a selection of a wide frame: copy once rather than add columns to a fragmented one
    out["capacity_per_gpu"] = rows["capacity_rps"] / rows["num_gpus"]
    keys = [k for k in ("scheduler", "k_bins") if k in rows]
    groups = rows.groupby(keys, sort=False) if keys else [(None, rows)]
    efficiency = pd.Series(math.nan, index=rows.index)
    for _, group in groups:
        if group["num_gpus"].nunique() > 1 and not group["num_gpus"].duplicated().any():
            by_gpus = capacity_scaling_efficiency(group)
            efficiency[group.index] = [by_gpus[int(g)] for g in group["num_gpus"]]
    if efficiency.notna().any():
        out["capacity_efficiency"] = efficiency
    return out[[c for c in CAPACITY_TABLE_COLUMNS if c in out.columns]].reset_index(drop=True)


def _capacity_search(rows: pd.DataFrame) -> dict | None:
    """How the step's capacities were searched, which targets no load reaches, which still held at the
    highest load tried (``unbounded``: the capacity is a lower bound) and which searches saw attainment
    rise again with load."""
    rows = capacity_rows(rows)
    if rows.empty:
        return None
    first = rows.iloc[0]
    unreachable = rows[rows["capacity_rps"].isna()]
    def false_in(column: str) -> list[str]:  # bool columns read back from a CSV with NaNs hold objects
        if column not in rows:
            return []
        return [str(v) for v in rows.loc[rows[column].astype(str).str.lower() == "false", "label"]]

    return {"tests": len(rows), "criterion": ", ".join(dict.fromkeys(rows["capacity_criterion"].astype(str))),
            "target": first["capacity_target"],
            "resolution": first.get("capacity_resolution"),
            "attainable_share": float(rows["capacity_attainable"].min()),
            "unreachable": {str(r["label"]): str(r.get("capacity_error", "")) for _, r in unreachable.iterrows()},
            "unbounded": false_in("capacity_bounded"), "not_monotone_in_load": false_in("capacity_monotone")}


def _capacities(rows: pd.DataFrame) -> dict[str, float | None]:
    rows = capacity_rows(rows)
    return {str(label): float(cap) for label, cap in zip(rows["label"], rows["capacity_rps"])} if not rows.empty else {}


def sla_of_row(row) -> str:
    """The SLA a result row was judged on, in words: TTFT/TPOT limits on a step-time profile, E2E on the grid."""
    profile = str(row.get("latency_profile", ""))
    if profile in ("seed-grid", "grid", ""):
        return f"E2E <= {float(row.get('d_sla_s', math.nan)):g} s"
    return f"TTFT <= {float(row['ttft_sla_s']):g} s, TPOT <= {float(row['tpot_sla_s']) * 1e3:g} ms"


def _capacity_records(rows: pd.DataFrame) -> list[dict]:
    """One record per configuration that searched its capacity: what index.html's capacity table lists."""
    out = []
    for _, r in capacity_rows(rows).iterrows():
        cap = r.get("capacity_rps")
        record = {"label": str(r["label"]), "scheduler": str(r.get("scheduler", "")),
                  "num_gpus": _json_safe(r.get("num_gpus")), "k_bins": _json_safe(r.get("k_bins")),
                  "capacity_rps": _json_safe(cap), "latency_profile": str(r.get("latency_profile", "")),
                  "sla": sla_of_row(r), "target": _json_safe(r.get("capacity_target"))}
        if f"capacity_rps{LOW}" in r:
            record["capacity_rps_ci95"] = [_json_safe(r[f"capacity_rps{LOW}"]), _json_safe(r[f"capacity_rps{HIGH}"])]
        out.append(record)
    return out


def _capacity_intervals(rows: pd.DataFrame) -> dict[str, list]:
    """label -> [low, high]: 95% interval of capacity_rps over the replications (nulls with one)."""
    rows = capacity_rows(rows)
    if f"capacity_rps{LOW}" not in rows:
        return {}
    return {str(label): [float(low), float(high)] for label, low, high in
            zip(rows["label"], rows[f"capacity_rps{LOW}"], rows[f"capacity_rps{HIGH}"])}


def _trace_info(rows: pd.DataFrame) -> dict:
    return {"labels": sorted(map(str, rows["trace_label"].dropna().unique()), key=natural_key)
            if "trace_label" in rows else [],
            "synthetic": bool(rows["synthetic"].astype(bool).any()) if "synthetic" in rows else False}


def best_config_step1(rows: pd.DataFrame) -> pd.Series | None:
    """Step 1's best configuration (see ``RULES["best_config_step1"]``)."""
    largest = rows[rows["num_requests"] == rows["num_requests"].max()]
    meeting = largest[largest["sla_violation_rate"] <= BREAKING_SLA_VIOLATION]
    if not meeting.empty:
        return _pick(meeting, ["goodput_rps", "num_gpus"], [False, True])
    searched = capacity_rows(largest)
    if not searched.empty and searched["capacity_rps"].notna().any():
        return _pick(searched, ["capacity_rps", "num_gpus"], [False, True])
    return _pick(largest, ["sla_violation_rate", "goodput_rps", "num_gpus"], [True, False, True])


def analyze_step1(rows: pd.DataFrame) -> dict:
    best = best_config_step1(rows)
    return {"tests": len(rows), "request_volumes": sorted(int(v) for v in rows["num_requests"].unique()),
            "best_config": _config(best), "breaking_points": breaking_points(rows),
            "capacity_rps": _capacities(rows), "capacity_search": _capacity_search(rows), "trace": _trace_info(rows),
            **_schedulers_info(rows)}


def _schedulers_info(rows: pd.DataFrame) -> dict:
    return {"schedulers": list(dict.fromkeys(rows["scheduler"].astype(str))) if "scheduler" in rows else [],
            "primary_scheduler": primary_scheduler(rows),
            "replications": int(rows["replications"].max()) if "replications" in rows else 1,
            "capacity_rps_ci95": _capacity_intervals(rows), "capacity_table": _capacity_records(rows)}


def capacity_per_gpu_knee(rows: pd.DataFrame, tolerance: float = KNEE_TOLERANCE) -> int | None:
    """The fewest GPUs whose capacity per GPU is within ``tolerance`` of the highest (one scheduler's rows)."""
    return best_gpu_count_by_capacity_per_gpu(rows, tolerance=tolerance)


def per_gpu_grows(rows: pd.DataFrame, resolution: float = 0.01) -> bool | None:
    """Whether capacity per GPU never falls (beyond the search's resolution) as the GPU count grows."""
    per_gpu = pd.Series(capacity_per_gpu(rows), dtype=float).dropna().sort_index()
    if len(per_gpu) < 2:
        return None
    return bool((per_gpu.diff().dropna() >= -resolution * per_gpu.shift().dropna()).all())


def _by_scheduler(rows: pd.DataFrame, rule) -> dict[str, object]:
    return {str(name): _json_safe(rule(group)) for name, group in rows.groupby("scheduler", sort=False)} \
        if "scheduler" in rows else {}


def analyze_step2(rows: pd.DataFrame) -> dict:
    everyone, rows = rows, primary_rows(rows)
    n = best_gpu_count(rows)
    best = rows[rows["num_gpus"] == n].iloc[0] if n is not None else None
    sla_ok = rows[rows["sla_violation_rate"] <= BREAKING_SLA_VIOLATION]
    by_capacity = best_gpu_count_by_capacity_per_gpu(rows)
    searched = capacity_rows(rows)
    exceptions = capacity_monotone_exceptions(rows)
    return {"tests": len(rows), "gpu_counts": sorted(int(g) for g in rows["num_gpus"].unique()),
            "best_gpu_count": n, "best_config": _config(best), "scaling_efficiency": scaling_efficiency(rows),
            "min_gpus_sla_within_5pct": int(sla_ok["num_gpus"].min()) if not sla_ok.empty else None,
            "capacity_rps": _capacities(everyone), "capacity_per_gpu": capacity_per_gpu(rows),
            "capacity_scaling_efficiency": capacity_scaling_efficiency(rows),
            "best_gpu_count_by_capacity_per_gpu": by_capacity,
            "best_config_by_capacity_per_gpu": _config(searched[searched["num_gpus"] == by_capacity].iloc[0])
            if by_capacity is not None else None,
            "capacity_monotone_in_gpus": (not exceptions) if not searched.empty else None,
            "capacity_monotone_exceptions": exceptions, "capacity_search": _capacity_search(everyone),
            "capacity_per_gpu_knee": capacity_per_gpu_knee(rows) if not searched.empty else None,
            "capacity_per_gpu_grows": per_gpu_grows(rows) if not searched.empty else None,
            "best_gpu_count_by_scheduler": _by_scheduler(everyone, best_gpu_count),
            "best_gpu_count_by_capacity_per_gpu_by_scheduler": _by_scheduler(
                capacity_rows(everyone), best_gpu_count_by_capacity_per_gpu),
            "capacity_per_gpu_knee_by_scheduler": _by_scheduler(capacity_rows(everyone), capacity_per_gpu_knee),
            "trace": _trace_info(rows), **_schedulers_info(everyone)}


def analyze_step3(rows: pd.DataFrame) -> dict:
    everyone, rows = rows, primary_rows(rows)
    best = best_k_row(rows)
    by_capacity = best_k_by_capacity(rows)
    searched = capacity_rows(rows)
    return {"tests": len(rows), "num_gpus": sorted(int(g) for g in rows["num_gpus"].unique()),
            "k_values": sorted(int(k) for k in rows["k_bins"].unique()),
            "best_k": int(best["k_bins"]) if best is not None else None, "best_config": _config(best),
            "k_bins_effective": {int(k): int(e) for k, e in zip(rows["k_bins"], rows["k_bins_effective"])},
            "capacity_rps": _capacities(everyone), "best_k_by_capacity": by_capacity,
            "best_config_by_capacity": _config(searched[searched["k_bins"] == by_capacity].iloc[0])
            if by_capacity is not None else None,
            "capacity_search": _capacity_search(everyone),
            "best_k_by_capacity_by_scheduler": {
                name: v for name, v in _by_scheduler(capacity_rows(everyone), best_k_by_capacity).items()
                if everyone.loc[everyone["scheduler"].astype(str) == name, "k_bins"].nunique() > 1},
            "trace": _trace_info(rows), **_schedulers_info(everyone)}


ANALYZERS = dict(zip(STEP_ORDER, (analyze_step1, analyze_step2, analyze_step3)))
STEP_VALIDITY = dict(zip(STEP_ORDER, (("best_config_step1",), ("best_gpu_count", "best_gpu_count_by_capacity_per_gpu"),
                                      ("best_k", "best_k_by_capacity"))))


# --------------------------------------------------------------------------- validity of the "best" answers

def _meets(rate) -> bool | None:
    return None if rate is None or (isinstance(rate, float) and math.isnan(rate)) else bool(
        rate <= BREAKING_SLA_VIOLATION)


def _validity(what: str, value, *, sla_violation_rate=None, capacity_rps=..., tested=(), unit: str = "",
              any_meets: bool | None = None, edge_applies: bool = True) -> dict:
    """Whether one "best" answer can be trusted, with a sentence saying why not."""
    if value is None:
        return {"value": None, "meets_sla": None, "at_edge": None, "valid": False,
                "sentence": f"No {what}: no results to pick it from."}
    name = f"{what[0].upper()}{what[1:]}, {value}{unit},"
    if capacity_rps is not ...:
        meets = capacity_rps is not None
        miss = f"{name} has no load that meets the capacity target"
    else:
        meets = _meets(sla_violation_rate)
        miss = (f"{name} misses the SLA target: {sla_violation_rate:.1%} of its requests violate it "
                f"(target: at most {BREAKING_SLA_VIOLATION:.0%})" if meets is False else "")
    at_edge = bool(edge_applies and len(tested) > 1 and value == max(tested))
    sentences = []
    if meets is False:
        sentences.append(miss + ("; no configuration tested meets the SLA" if any_meets is False else "") + ".")
    if at_edge:
        sentences.append(("It is also" if sentences else f"{name} is") + " the largest value tested: the optimum "
                         "may lie beyond.")
    return {"value": _json_safe(value), "meets_sla": meets, "at_edge": at_edge,
            "valid": bool(meets is not False and not at_edge),
            "sentence": " ".join(sentences) if sentences else (
                f"{name} {'reaches the capacity target' if capacity_rps is not ... else 'meets the SLA'} and lies "
                "inside the range tested.")}


def _any_meets(rows: pd.DataFrame) -> bool | None:
    rates = rows["sla_violation_rate"].dropna() if "sla_violation_rate" in rows else pd.Series(dtype=float)
    return None if rates.empty else bool((rates <= BREAKING_SLA_VIOLATION).any())


def validity(out: dict, all_rows: pd.DataFrame) -> dict:
    """Per "best" answer of ``out`` (the analysis): value, meets_sla, at_edge, valid and a sentence."""
    def rows_of(step):
        return all_rows[all_rows["step"] == step] if not all_rows.empty else all_rows

    found = {}
    s1, s2, s3 = (out.get(step) for step in STEP_ORDER)
    if s1:
        best = s1.get("best_config") or {}
        largest = rows_of(STEP_ORDER[0])
        largest = largest[largest["num_requests"] == largest["num_requests"].max()]
        if _any_meets(largest) is False and best.get("capacity_rps") is not None:
            # no configuration of step 1 (1-4 GPUs) keeps up with the whole trace: the answer is the one that
            # sustains the most load within the SLA, which says by how much the pool falls short
            volume = int(largest["num_requests"].max())
            offered = float(pd.to_numeric(largest["offered_rps"], errors="coerce").max()) \
                if "offered_rps" in largest else math.nan
            cap = best["capacity_rps"]
            target = float(pd.to_numeric(largest.get("capacity_target"), errors="coerce").max()) \
                if "capacity_target" in largest else math.nan
            share = f"{target:.0%} of the requests" if math.isfinite(target) else "the target share"
            short = (f" ({cap / offered:.0%} of the replayed rate: step 2 finds the pool it needs)"
                     if math.isfinite(offered) and 0 < cap < offered else "")
            found["best_config_step1"] = {
                "value": best.get("label"), "meets_sla": True, "at_edge": False, "valid": True,
                "sentence": (f"At {volume:,} requests no configuration of step 1 keeps its SLA violations at the "
                             f"replayed load ({offered:.3g} req/s) within {BREAKING_SLA_VIOLATION:.0%}. The one "
                             f"that sustains the most load with {share} within the SLA is {best.get('label')}: "
                             f"{cap:.3g} req/s{short}.")}
        else:
            found["best_config_step1"] = _validity("the best configuration of step 1", best.get("label"),
                                                   sla_violation_rate=best.get("sla_violation_rate"),
                                                   any_meets=_any_meets(largest), edge_applies=False)
    if s2:
        best = s2.get("best_config") or {}
        found["best_gpu_count"] = _validity("the best GPU count", s2.get("best_gpu_count"), unit=" GPUs",
                                            sla_violation_rate=best.get("sla_violation_rate"),
                                            tested=s2["gpu_counts"], any_meets=_any_meets(rows_of(STEP_ORDER[1])))
        if s2.get("capacity_search"):
            by_cap = s2.get("best_gpu_count_by_capacity_per_gpu")
            check = _validity(
                "the best GPU count by capacity per GPU", by_cap, unit=" GPUs", tested=s2["gpu_counts"],
                capacity_rps=(s2.get("best_config_by_capacity_per_gpu") or {}).get("capacity_rps"))
            if check["at_edge"] and check["meets_sla"] and s2.get("capacity_per_gpu_grows") \
                    and _last_gain(s2) <= KNEE_TOLERANCE:
                check.update(valid=True, sentence=_growing_per_gpu_sentence(s2))
            found["best_gpu_count_by_capacity_per_gpu"] = check
    if s3:
        best = s3.get("best_config") or {}
        found["best_k"] = _validity("the best K", s3.get("best_k"), sla_violation_rate=best.get("sla_violation_rate"),
                                    tested=s3["k_values"], any_meets=_any_meets(rows_of(STEP_ORDER[2])))
        if s3.get("capacity_search"):
            found["best_k_by_capacity"] = _validity(
                "the best K by capacity", s3.get("best_k_by_capacity"), tested=s3["k_values"],
                capacity_rps=(s3.get("best_config_by_capacity") or {}).get("capacity_rps"))
    return found


def _last_gain(s2: dict) -> float:
    """Relative gain of capacity per GPU from the second largest GPU count tested to the largest."""
    per_gpu = {int(g): v for g, v in (s2.get("capacity_per_gpu") or {}).items() if v is not None}
    counts = sorted(per_gpu)
    if len(counts) < 2 or not per_gpu[counts[-2]]:
        return math.inf
    return per_gpu[counts[-1]] / per_gpu[counts[-2]] - 1


def _growing_per_gpu_sentence(s2: dict) -> str:
    """Why a best capacity per GPU at the largest pool tested is an answer, not a missed optimum."""
    per_gpu = {int(g): v for g, v in (s2.get("capacity_per_gpu") or {}).items() if v is not None}
    counts = sorted(per_gpu)
    last, before = counts[-1], counts[-2]
    gain = per_gpu[last] / per_gpu[before] - 1 if per_gpu[before] else math.nan
    knee = s2.get("capacity_per_gpu_knee")
    return (f"Capacity per GPU grows with every GPU count tested (a larger pool absorbs the trace's bursts better, "
            f"so its GPUs run busier at the same SLA), by {gain:+.1%} from {before} to {last} GPUs: the largest pool "
            f"tested, {last} GPUs, is best, with diminishing returns"
            + (f"; from {knee} GPUs on it is within {KNEE_TOLERANCE:.0%} of that." if knee is not None else "."))


def step3_gpu_count(step3_rows: pd.DataFrame, step2_rows: pd.DataFrame) -> dict:
    """Where step 3's GPU count came from, the step-2 row it used, and whether it is step 2's best count now."""
    gpus = sorted(int(g) for g in step3_rows["num_gpus"].unique())
    def first(column):
        if column not in step3_rows:
            return None
        values = step3_rows[column].dropna()
        return str(values.iloc[0]) if not values.empty else None

    source, used = first("gpu_count_source"), first("step2_test_id")
    best_now = best_gpu_count(step2_rows) if not step2_rows.empty else None
    now_id = (str(step2_rows.loc[step2_rows["num_gpus"] == best_now, "test_id"].iloc[0])
              if best_now is not None else None)
    matches = None if best_now is None else (gpus == [best_now])
    where = {"given": "given explicitly (best_gpu_count)", "step2_best_gpu_count": "step 2's best GPU count",
             "default": "the default (no step 2 results when step 3 ran)"}.get(source, "not recorded")
    sentence = f"Step 3 ran at {', '.join(map(str, gpus))} GPUs ({where})."
    if matches is False:
        sentence += (f" Step 2's best GPU count in these results is {best_now}: step 3's K sweep is not at it "
                     "(rerun step 3 without best_gpu_count to use it).")
    elif matches:
        sentence += " That is step 2's best GPU count in these results."
    return {"num_gpus": gpus[0] if len(gpus) == 1 else gpus, "source": source, "step2_test_id": used,
            "step2_best_gpu_count": best_now, "step2_best_test_id": now_id, "matches_step2_best": matches,
            "sentence": sentence}


def analyze(all_rows: pd.DataFrame) -> dict:
    """The analysis of every step present in ``all_rows`` (the contents of ``all_results.csv``)."""
    # the per-bin columns (bin{j}_*, a few hundred at K = 32) answer nothing here: leave them out of the work
    all_rows = summarize(all_rows[[c for c in all_rows.columns if not re.match(r"bin\d+_", c)]])
    out: dict = {"generated_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                 "rules": RULES, "trace": _trace_info(all_rows) if not all_rows.empty else {}}
    for step, analyzer in ANALYZERS.items():
        rows = all_rows[all_rows["step"] == step] if not all_rows.empty else all_rows
        out[step] = analyzer(rows.reset_index(drop=True)) if not rows.empty else None
    out["best_gpu_count"] = (out["step2_gpu_scaling"] or {}).get("best_gpu_count")
    out["best_k"] = (out["step3_kbins_sensitivity"] or {}).get("best_k")
    out["best_gpu_count_by_capacity_per_gpu"] = (out["step2_gpu_scaling"] or {}).get(
        "best_gpu_count_by_capacity_per_gpu")
    out["best_k_by_capacity"] = (out["step3_kbins_sensitivity"] or {}).get("best_k_by_capacity")
    if out["step3_kbins_sensitivity"]:
        step2_rows = all_rows[all_rows["step"] == STEP_ORDER[1]]
        out["step3_kbins_sensitivity"]["gpu_count"] = step3_gpu_count(
            all_rows[all_rows["step"] == STEP_ORDER[2]], primary_rows(step2_rows))
    out = _json_safe(out)
    out["validity"] = _json_safe(validity(out, all_rows))
    out["warnings"] = [v["sentence"] for v in out["validity"].values() if not v["valid"]]
    if out["step3_kbins_sensitivity"] and out["step3_kbins_sensitivity"]["gpu_count"]["matches_step2_best"] is False:
        out["warnings"].append(out["step3_kbins_sensitivity"]["gpu_count"]["sentence"])
    return out


def _step_rank(step) -> int:
    return STEP_ORDER.index(step) if step in STEP_ORDER else len(STEP_ORDER)


def update_outputs(results_dir: str | Path, step: str, rows: pd.DataFrame) -> dict:
    """Replace ``step``'s rows in ``all_results.csv`` by ``rows`` and rewrite ``analysis.json``."""
    results_dir = Path(results_dir)
    with results_lock(results_dir):
        old = read_rows(results_dir / ALL_RESULTS, key=("step", "test_id"))
        if not old.empty:
            old = old[old["step"] != step]
        frames = [f for f in (old, rows.assign(step=step) if not rows.empty else rows) if not f.empty]
        merged = pd.concat(frames, ignore_index=True, sort=False) if frames else pd.DataFrame()
        if not merged.empty:
            rank = merged["step"].map(_step_rank)
            merged = merged.iloc[np.argsort(rank.to_numpy(), kind="stable")]
            merged = canonical_columns(merged).reset_index(drop=True)
            write_csv_atomic(results_dir / ALL_RESULTS, merged)
        if not rows.empty:
            write_csv_atomic(results_dir / summary_name(step), canonical_columns(summarize(rows.assign(step=step))))
        result = analyze(merged)
        atomic_write_text(results_dir / ANALYSIS, json.dumps(result, indent=2, allow_nan=False) + "\n")
    log.info("wrote %s and %s in %s", ALL_RESULTS, ANALYSIS, results_dir)
    return result


def summary_name(step: str) -> str:
    """``<step>_summary.csv``: one row per test, its replications' mean and 95% interval per metric."""
    return f"{step}_summary.csv"


def read_analysis(results_dir: str | Path) -> dict | None:
    path = Path(results_dir) / ANALYSIS
    return json.loads(path.read_text()) if path.is_file() else None


def step2_best_row_from_results(results_dir: str | Path) -> pd.Series | None:
    """Step 2's row at its best GPU count, from ``all_results.csv`` in ``results_dir`` (None without step 2 rows)."""
    rows = read_rows(Path(results_dir) / ALL_RESULTS, key=("step", "test_id"))
    if rows.empty:
        return None
    rows = primary_rows(summarize(rows[rows["step"] == "step2_gpu_scaling"]))
    n = best_gpu_count(rows)
    return None if n is None else rows[rows["num_gpus"] == n].iloc[0]


def best_gpu_count_from_results(results_dir: str | Path) -> int | None:
    """Step 2's best GPU count from ``all_results.csv`` in ``results_dir`` (None without step 2 rows)."""
    row = step2_best_row_from_results(results_dir)
    return None if row is None else int(row["num_gpus"])


def _fmt(value, pattern: str = "{:.3g}") -> str:
    return "n/a" if value is None else pattern.format(value)


def _capacity_lines(part: dict, step: str) -> list[str]:
    search = part.get("capacity_search")
    if not search:
        return []
    caps = ", ".join(f"{label}: {_fmt(v, '{:.3g} req/s')}" if v is not None else f"{label}: unreachable"
                     for label, v in part["capacity_rps"].items())
    lines = [f"Capacity ({search['criterion']} >= {search['target']:g}): {caps}."]
    if step == "step2_gpu_scaling":
        eff = ", ".join(f"{g}: {_fmt(e, '{:.2f}')}" for g, e in part["capacity_scaling_efficiency"].items())
        lines.append(f"Capacity scaling efficiency (capacity / ideal linear scaling from 1 GPU): {eff}.")
        lines.append(f"Best GPU count by capacity per GPU: **{part['best_gpu_count_by_capacity_per_gpu']}** "
                     f"(highest capacity per GPU; within {CAPACITY_TOLERANCE:.0%}: fewer GPUs).")
        if part["capacity_monotone_in_gpus"]:
            lines.append("Capacity is monotone in the GPU count: more GPUs never gave less capacity.")
        elif part["capacity_monotone_in_gpus"] is False:
            falls = "; ".join(f"{e['num_gpus_from']} -> {e['num_gpus_to']} GPUs: {e['capacity_rps_from']:.3g} -> "
                              f"{e['capacity_rps_to']:.3g} req/s ({e['relative_drop']:.1%}"
                              + (", within the search resolution)" if e["within_resolution"] else ")")
                              for e in part["capacity_monotone_exceptions"])
            lines.append(f"**Capacity is not monotone in the GPU count**: {falls}.")
    elif step == "step3_kbins_sensitivity":
        best = part.get("best_config_by_capacity") or {}
        lines.append(f"Best K by capacity: **{part['best_k_by_capacity']}**"
                     + (f" ({best['capacity_rps']:.3g} req/s)" if best.get("capacity_rps") is not None else "")
                     + f" (highest capacity; within {CAPACITY_TOLERANCE:.0%}: smaller K).")
    return lines


def _without_subject(reason: str) -> str:
    """A capacity error without its leading "<scheduler> on N GPUs: " (the list names the configuration)."""
    return re.sub(r"^[\w.-]+ on \d+ GPUs?: ", "", reason)


def capacity_markdown(rows: pd.DataFrame) -> str:
    """What the capacity search looked for, the floor no load goes below, and why a target was out of reach
    (markdown)."""
    rows = summarize(rows)
    search = _capacity_search(rows)
    if search is None:
        return "No capacity search in these results (`capacity_search=False`)."
    searched = capacity_rows(rows)
    targets = []
    for criterion, group in searched.groupby("capacity_criterion", sort=False):
        first = group.iloc[0]
        if criterion == "attainment":
            text = (f"at least {first['capacity_target']:.0%} of the requests finish within "
                    f"d_sla = {first['d_sla_s']:g} s")
        elif criterion == "slo":
            text = (f"at least {first['capacity_target']:.0%} of the requests meet both TTFT <= "
                    f"{first['ttft_sla_s']:g} s and TPOT <= {first['tpot_sla_s'] * 1e3:g} ms (DistServe's SLO "
                    "attainment)")
        else:
            text = f"p99 latency of completed requests <= {first['capacity_target']:g} s and nothing rejected"
        names = ", ".join(dict.fromkeys(group["scheduler"].astype(str))) if "scheduler" in group else ""
        targets.append(f"{text} ({names})" if searched["capacity_criterion"].nunique() > 1 else text)
    from workbench.study.present.text import floor_sentence

    lines = [f"Capacity target: {'; '.join(targets)} (search resolution {search['resolution']:.0%}). "
             + floor_sentence(1.0 - search["attainable_share"])]
    if search["unreachable"]:
        lines.append(f"No load reaches the target for {len(search['unreachable'])} of the "
                     f"{search['tests']} configurations searched:")
        lines.append("\n".join(f"- **{label}**: {_without_subject(reason)}"
                               for label, reason in search["unreachable"].items()))
    if search["unbounded"]:
        lines.append("The target still held at the highest load the search tries (its upper scaling bound), so "
                     "the capacity is a lower bound for: " + ", ".join(search["unbounded"]) + ".")
    if search["not_monotone_in_load"]:
        lines.append("Attainment was not monotone in load during the search of: "
                     + ", ".join(search["not_monotone_in_load"]) + " (the capacity is the bracket it ended in).")
    return "\n\n".join(lines)


def step_markdown(result: dict, step: str) -> str:
    """A short markdown summary of one step's analysis (for the end of its notebook)."""
    part = result.get(step)
    if not part:
        return f"No results for {step}."
    best = part.get("best_config") or {}
    lines = []
    synthetic = part.get("trace", {}).get("synthetic")
    trace = ", ".join(part.get("trace", {}).get("labels", [])) or "?"
    lines.append(f"Trace: {trace}" + (" (**synthetic**)" if synthetic and "synthetic" not in trace else ""))
    if best:
        lines.append(f"Best configuration: **{best.get('label')}** at {best.get('num_requests'):,} requests: "
                     f"goodput {_fmt(best.get('goodput_rps'))} req/s, SLA violation "
                     f"{_fmt(best.get('sla_violation_rate'), '{:.1%}')}, p99 latency "
                     f"{_fmt(best.get('latency_p99_s'))} s.")
    if step == "step1_request_scaling":
        for label, bp in part["breaking_points"].items():
            where = (f"breaks at {bp['num_requests']:,} requests (SLA violation {bp['sla_violation_rate']:.1%})"
                     if bp["num_requests"] else f"stays within 5% up to {bp['largest_volume_tested']:,} requests")
            lines.append(f"- {label}: {where}")
    elif step == "step2_gpu_scaling":
        lines.append(f"Best GPU count: **{part['best_gpu_count']}**, the smallest count whose goodput is within "
                     f"{GOODPUT_TOLERANCE:.0%} of the best.")
        eff = ", ".join(f"{g}: {_fmt(e, '{:.2f}')}" for g, e in part["scaling_efficiency"].items())
        lines.append(f"Scaling efficiency by GPU count: {eff}.")
    elif step == "step3_kbins_sensitivity":
        lines.append(f"Best K: **{part['best_k']}**, the K with the lowest SLA violation rate.")
    lines.extend(_capacity_lines(part, step))
    if step == "step3_kbins_sensitivity" and part.get("gpu_count"):
        lines.append(part["gpu_count"]["sentence"])
    checks = {k: v for k, v in (result.get("validity") or {}).items() if k in STEP_VALIDITY[step]}
    for check in checks.values():
        lines.append(("**Valid.** " if check["valid"] else "**Not a valid best.** ") + check["sentence"])
    bullets = [line for line in lines if line.startswith("- ")]
    paragraphs = [line for line in lines if not line.startswith("- ")]
    return "\n\n".join(paragraphs + (["\n".join(bullets)] if bullets else []))


# --------------------------------------------------------------------------- commentary computed from the rows

def _pct(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1%}"


def _num(x, unit: str = "") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3g}{unit}"


def _direction(before: float, after: float, tolerance: float = 0.01) -> str:
    if not (math.isfinite(before) and math.isfinite(after)):
        return "changes"
    if after < before * (1 - tolerance) - 1e-12:
        return "falls"
    if after > before * (1 + tolerance) + 1e-12:
        return "rises"
    return "stays flat"


def _commentary_step1(rows: pd.DataFrame) -> list[str]:
    lines = []
    volumes = sorted(rows["num_requests"].unique())
    low, high = volumes[0], volumes[-1]
    if "offered_rps" in rows and rows["offered_rps"].notna().any():
        offered = rows.drop_duplicates("num_requests").set_index("num_requests")["offered_rps"].astype(float)
        rates = ", ".join(f"{offered[v]:.3g}" for v in volumes)
        lines.append(f"Each volume is the first N requests of the trace, so each covers another stretch of it and "
                     f"arrives at its own rate: {rates} req/s for {', '.join(f'{int(v):,}' for v in volumes)} "
                     "requests (the dashed black line in the throughput and goodput panels). Where a pool keeps up, "
                     "its throughput and goodput follow that rate up and down; where it does not, its goodput "
                     "falls as the backlog grows: so a line can fall and rise again from one volume to the next "
                     "without any change in the scheduler.")
    for label, group in rows.groupby("label", sort=False):
        a = group[group["num_requests"] == low].iloc[0]
        b = group[group["num_requests"] == high].iloc[0]
        lines.append(f"- **{label}**: from {low:,} to {high:,} requests, goodput {_num(a.goodput_rps)} -> "
                     f"{_num(b.goodput_rps)} req/s, SLA violation {_pct(a.sla_violation_rate)} -> "
                     f"{_pct(b.sla_violation_rate)}, p99 latency {_num(a.latency_p99_s)} -> {_num(b.latency_p99_s)} s.")
    top = rows[rows["num_requests"] == high]
    mbd = top[top["scheduler"] == PRIMARY_SCHEDULER].sort_values("num_gpus")
    if len(mbd) > 1:
        rates = mbd["sla_violation_rate"].to_numpy(dtype=float)
        trend = ("each added GPU lowers" if np.all(np.diff(rates) < 0) else
                 "added GPUs do not always lower")
        lines.append(f"At {high:,} requests {trend} {PRIMARY_SCHEDULER}'s violation rate: " + ", ".join(
            f"{_pct(r.sla_violation_rate)} on {int(r.num_gpus)}" for r in mbd.itertuples()) + " GPU(s).")
    return lines


def _commentary_step2(rows: pd.DataFrame) -> list[str]:
    rows = rows.sort_values("num_gpus")
    offered = float(rows["offered_rps"].max()) if "offered_rps" in rows and rows["offered_rps"].notna().any() \
        else math.nan
    lines = [f"The replayed load is {_num(offered)} req/s. Per scheduler (the star in the goodput panel marks its "
             "best GPU count: the fewest GPUs within 1% of its best goodput):"] if math.isfinite(offered) else []
    for name, group in rows.groupby("scheduler", sort=False):
        first, last = group.iloc[0], group.iloc[-1]
        n0, n1 = int(first.num_gpus), int(last.num_gpus)
        text = (f"- **{name}**: from {n0} to {n1} GPUs throughput goes from {_num(first.throughput_rps)} to "
                f"{_num(last.throughput_rps)} req/s ({last.throughput_rps / first.throughput_rps:.3g}x for "
                f"{n1 / n0:g}x the GPUs)")
        if math.isfinite(offered):
            kept = group[group["throughput_rps"] >= 0.99 * offered]
            text += (f"; from {int(kept['num_gpus'].min())} GPUs the pool keeps up with the offered rate"
                     if not kept.empty else "; no pool tested keeps up with the offered rate")
        ok = group[group["sla_violation_rate"] <= BREAKING_SLA_VIOLATION]
        text += (f"; the smallest pool within {BREAKING_SLA_VIOLATION:.0%} SLA violations: "
                 + (f"{int(ok['num_gpus'].min())} GPUs" if not ok.empty else f"none up to {n1} GPUs"))
        if "goodput_rps" in group:
            text += f"; best GPU count {best_gpu_count(group)}"
        caps = capacity_rows(group).dropna(subset=["capacity_rps"]) if "capacity_rps" in group else group.iloc[0:0]
        if len(caps) > 1:
            c0, c1 = caps.iloc[0], caps.iloc[-1]
            ratio, ideal = c1.capacity_rps / c0.capacity_rps, c1.num_gpus / c0.num_gpus
            kind = ("faster than" if ratio > ideal * 1.01 else "slower than" if ratio < ideal * 0.99
                    else "in step with")
            knee = capacity_per_gpu_knee(group)
            text += (f"; capacity grows {kind} the pool, {_num(c0.capacity_rps)} req/s on {int(c0.num_gpus)} "
                     f"GPU(s) to {_num(c1.capacity_rps)} on {int(c1.num_gpus)} ({ratio:.3g}x for {ideal:g}x the "
                     f"GPUs)" + (f", capacity per GPU within {KNEE_TOLERANCE:.0%} of its best from {knee} GPUs on"
                                 if knee is not None else ""))
        lines.append(text + ".")
    return lines


def _commentary_step3(rows: pd.DataFrame) -> list[str]:
    rows = rows.sort_values("k_bins")
    lines = []
    for name, group in rows.groupby("scheduler", sort=False):
        if group["k_bins"].nunique() < 2:
            continue
        first, last = group.iloc[0], group.iloc[-1]
        rates = group["sla_violation_rate"].to_numpy(dtype=float)
        spread = (np.nanmax(rates) - np.nanmin(rates)) * 100
        text = (f"At the replayed load, across K = {int(first.k_bins)}..{int(last.k_bins)} {name}'s SLA "
                f"violation rate spans {_pct(np.nanmin(rates))}..{_pct(np.nanmax(rates))} ({spread:.1f} points) "
                f"and p99 latency goes from {_num(first.latency_p99_s)} s (K = {int(first.k_bins)}) to "
                f"{_num(last.latency_p99_s)} s (K = {int(last.k_bins)})")
        if len(group) > 2:
            step = abs(rates[-1] - rates[-2])
            text += (f"; from K = {int(group.iloc[-2].k_bins)} to {int(last.k_bins)} it moves by {step * 100:.1f} "
                     "points: " + ("the curve has flattened" if step < 0.005
                                   else "it is still moving at the largest K tested"))
        lines.append(text + (". Every K keeps up with this load, so the replay barely tells them apart; capacity "
                             "does." if spread < 1.0 else "."))
        caps = capacity_rows(group)
        if not caps.empty and "capacity_rps" in caps:
            found = caps.dropna(subset=["capacity_rps"])
            if found.empty:
                lines.append(f"No K of {name} reaches the capacity target at any load.")
                continue
            best = found.loc[found["capacity_rps"].idxmax()]
            chosen = best_k_by_capacity(group)
            tie = "" if chosen == int(best.k_bins) else (
                f"; K = {chosen} is within {CAPACITY_TOLERANCE:.0%} of it, so the best K by capacity is {chosen}")
            low = found.loc[found["capacity_rps"].idxmin()]
            lines.append(f"{name}'s capacity is highest at K = {int(best.k_bins)} ({_num(best.capacity_rps)} req/s){tie}"
                         f" and lowest at K = {int(low.k_bins)} ({_num(low.capacity_rps)} req/s): "
                         + ("more bins than that cost capacity (requests of different bins that arrive together wait "
                            "for each other's batches, which TTFT punishes)."
                            if int(best.k_bins) < int(found["k_bins"].max()) else "it still rises at the largest K."))
    flat = rows.groupby("scheduler", sort=False)["k_bins"].transform("nunique") == 1
    for r in rows[flat].itertuples():
        cap = getattr(r, "capacity_rps", math.nan)
        lines.append(f"{r.scheduler} (no bins) serves as a reference"
                     + (f": capacity {_num(cap)} req/s." if isinstance(cap, float) and math.isfinite(cap) else "."))
    return lines


COMMENTARIES = dict(zip(STEP_ORDER, (_commentary_step1, _commentary_step2, _commentary_step3)))


def commentary(rows: pd.DataFrame, step: str) -> str:
    """What this run's rows show, in sentences computed from them (markdown): no fixed claims."""
    if rows.empty:
        return f"No results for {step}."
    rows = summarize(rows)
    if "scheduler" not in rows:
        rows = rows.assign(scheduler="all rows")
    return _markdown_blocks(COMMENTARIES[step](rows.reset_index(drop=True)))


def _markdown_blocks(lines: list[str]) -> str:
    """Lines in order, consecutive "- " bullets as one list, paragraphs apart."""
    blocks: list[str] = []
    for line in lines:
        if line.startswith("- ") and blocks and blocks[-1].startswith("- "):
            blocks[-1] += "\n" + line
        else:
            blocks.append(line)
    return "\n\n".join(blocks)
