"""What the three steps found: ``all_results.csv`` and ``analysis.json``.

One target everywhere: a configuration *meets the SLA target* when at least
the target share (``capacity_target``, 90% by default) of its requests meet
the SLA (TTFT and TPOT limits on a step-time profile, DistServe's SLO
attainment; end-to-end latency within ``d_sla_s`` on the seed grid), counted
(:mod:`workbench.study.answers.targets`: integer counts of violating requests
against the allowed count, never rounded floats).  Its *capacity* is the
largest arrival rate at which it still does (the trace replayed faster or
slower; see :mod:`workbench.study.runs.capacity`).

Rules (also written into ``analysis.json`` under ``"rules"``, with this run's SLA):

* GPUs needed (step 2): per scheduler, the smallest GPU count whose capacity
  covers the replayed rate (``capacity_rps >= offered_rps``), with the headroom
  it leaves (``capacity_rps / offered_rps - 1``) and the largest count tested
  that falls short: the answer to "how many GPUs does this trace need".
* most capacity per GPU (step 2, a second answer under its own name): the GPU
  count with the highest capacity per GPU; counts tied with it within the
  search's resolution (and the 95% intervals, with replications) go to the
  fewest GPUs.
* best K (step 3, at the GPUs the trace needs): the K with the highest
  capacity; K values tied with it within resolution go to the smallest K.
  Without a capacity search, the K values that meet the target are tied
  unless replications separate their violation rates.
* best configuration of step 1: at the largest request volume, of the
  configurations that meet the target at the replayed load, the fewest GPUs,
  then the highest capacity; when none meets it, the one with the highest
  capacity is named as the closest and is not valid.
* breaking point (step 1): per configuration, the smallest request volume at
  which it misses the target.
* capacity relative to proportional scaling (step 2):
  ``capacity(n) / ((n / n0) * capacity(n0))``, n0 = the smallest GPU count
  with a capacity: above 1, capacity per GPU grew with the pool.
* monotone in GPUs (step 2): more GPUs never give less capacity on the same
  trace, scheduler and K.  Every fall is listed (an unreachable target counts
  as capacity 0), with whether it is within the search's resolution.

A difference between two capacities is called only beyond the search's
resolution (the grid ``x 1.01^k``) and, with replications, the 95% intervals
over the seeds; one seed gives no noise estimate, and the answers say which
values are tied.

Several schedulers (``schedulers``): step 1's rules compare them all; step 2's
and step 3's headline answers are about the primary scheduler,
:data:`PRIMARY_SCHEDULER` when it ran, else the first scheduler of the rows
(``primary_scheduler`` says which); every scheduler's answers are listed
``..._by_scheduler``.

Replications: the rules read the mean over the seeds of each test
(:func:`summarize`: ``<metric>`` = mean, ``<metric>_ci95_low`` / ``_ci95_high`` = its
95% interval, Student t cut to the quantity's range, ``replications``), also written to
``<step>_summary.csv``.

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
from workbench.study.answers import targets
from workbench.study.store.replications import HIGH, LOW, summarize_replications
from workbench.study.store.checkpoints import canonical_columns, read_rows
from workbench.study.store.files import atomic_write_text, results_lock, write_csv_atomic

log = logging.getLogger(__name__)

PRIMARY_SCHEDULER = "multi_bin_dynamic"
ALL_RESULTS = "all_results.csv"
ANALYSIS = "analysis.json"
KNEE_TOLERANCE = 0.05
STEP_ORDER = ("step1_request_scaling", "step2_gpu_scaling", "step3_kbins_sensitivity")


def rules(sla: str = "the SLA", target: float = targets.DEFAULT_TARGET) -> dict[str, str]:
    """The rules of every answer, in words, for a run judged on ``sla`` with ``target`` (``analysis.json``'s
    ``"rules"``)."""
    meets = f"at least {target:.0%} of the requests meet {sla} (violating requests counted against the allowed count)"
    tie = ("values tied within the capacity search's resolution (its grid x 1.01^k: the true crossing lies up "
           "to one step above each) and, with replications, their 95% intervals over the seeds")
    return {
        "sla_target": f"a configuration meets the SLA target when {meets}",
        "capacity": f"the largest arrival rate (the trace replayed faster or slower) at which {meets}; null when no "
                    "load reaches it (see capacity_search.unreachable)",
        "gpus_needed": "step 2: the smallest GPU count whose capacity_rps covers the replayed rate (offered_rps); "
                       "headroom = capacity_rps / offered_rps - 1; null when no count tested covers it",
        "best_gpu_count_by_capacity_per_gpu": f"step 2, a second answer: the GPU count with the highest capacity_rps "
                                              f"/ num_gpus; {tie} go to the fewest GPUs",
        "capacity_per_gpu_knee": f"the fewest GPUs whose capacity per GPU is within {KNEE_TOLERANCE:.0%} of the "
                                 "highest (where more GPUs stop paying per GPU)",
        "capacity_scaling_efficiency": "capacity_rps(n) / ((n / n0) * capacity_rps(n0)), n0 = the smallest GPU count "
                                       "with a capacity (capacity_scaling_base_gpus): capacity against proportional "
                                       "scaling from there; above 1, capacity per GPU grew with the pool",
        "best_k": f"step 3, at the GPUs the trace needs: the K with the highest capacity_rps; {tie} go to the "
                  "smallest K (best_k_tied lists them); without a capacity search, the K values that meet the "
                  "target, tied unless replications separate their violation rates",
        "best_config_step1": "at the largest request volume, of the configurations that meet the SLA target at the "
                             "replayed load, the fewest GPUs, then the highest capacity_rps; if none meets it, the one "
                             "with the highest capacity_rps is named as the closest (not valid)",
        "breaking_point": "step 1, per configuration: the smallest request volume at which it misses the SLA target "
                          "(null if none)",
        "meets_sla": f"an answer meets the SLA target when {meets} at the replayed load (a GPU count: when its "
                     "capacity covers the replayed rate)",
        "at_edge": "a best GPU count or best K equal to the largest value tested (the optimum may lie beyond); "
                   "1 GPU and K = 1 are the smallest possible values, not an edge. Most capacity per GPU at the "
                   "largest count is a valid answer when capacity per GPU never falls with more GPUs and gains at "
                   f"most {KNEE_TOLERANCE:.0%} on the last step (diminishing returns). GPUs needed is never at the "
                   "edge: the count below it falls short",
        "valid": "an answer meets the SLA target and is not at the edge of the range tested; "
                 "validity.<answer>.sentence says why not",
        "by_scheduler": "every answer of steps 2 and 3 also per scheduler (..._by_scheduler), by the same rule",
        "gpu_count": "step 3: where its GPU count came from (given, step 2's GPUs needed, or the default), the "
                     "step-2 row it used, and whether it still is step 2's answer",
        "capacity_monotone_in_gpus": "step 2: capacity never falls as the GPU count grows (same trace, scheduler "
                                     "and K); every fall is listed, an unreachable target counting as capacity 0",
    }


CONFIG_KEYS = ("label", "test_id", "scheduler", "num_gpus", "k_bins", "num_requests", "offered_rps",
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


# --------------------------------------------------------------------------- the SLA target, counted

def sla_target(rows: pd.DataFrame) -> float:
    """The share of requests that must meet the SLA in ``rows`` (their capacity search's target; 90% without)."""
    return targets.row_target(rows)


def sla_of_row(row) -> str:
    """The SLA a result row was judged on, in words: TTFT/TPOT limits on a step-time profile, E2E on the grid."""
    profile = str(row.get("latency_profile", ""))
    if profile in ("seed-grid", "grid", "", "nan"):
        return f"E2E <= {float(row.get('d_sla_s', math.nan)):g} s"
    return f"TTFT <= {float(row['ttft_sla_s']):g} s, TPOT <= {float(row['tpot_sla_s']) * 1e3:g} ms"


def target_text(rows: pd.DataFrame) -> str:
    """e.g. "90% of requests within TTFT <= 1 s, TPOT <= 50 ms": the target of ``rows`` in words."""
    sla = sla_of_row(rows.iloc[0]) if not rows.empty else "the SLA"
    return f"{sla_target(rows):.0%} of requests within {sla}"


def meets_target(rows: pd.DataFrame) -> pd.Series:
    """Per row: whether at least the target share of its requests met the SLA at the replayed load (counts)."""
    return targets.meets_column(rows, sla_target(rows)) if not rows.empty else pd.Series(dtype=bool)


def replayed_rate(rows: pd.DataFrame) -> float:
    """The arrival rate the rows replayed (``offered_rps``; NaN when not recorded)."""
    if "offered_rps" not in rows:
        return math.nan
    values = pd.to_numeric(rows["offered_rps"], errors="coerce").dropna()
    return float(values.max()) if not values.empty else math.nan


def breaking_points(rows: pd.DataFrame) -> dict[str, dict]:
    """Per configuration label: the first request volume at which it misses the SLA target (counted)."""
    out = {}
    meets = meets_target(rows)
    for label, group in rows.sort_values("num_requests").groupby("label", sort=False):
        over = group[~meets[group.index]]
        first = over.iloc[0] if not over.empty else None
        out[str(label)] = {
            "num_requests": int(first["num_requests"]) if first is not None else None,
            "sla_violation_rate": float(first["sla_violation_rate"]) if first is not None else None,
            "largest_volume_tested": int(group["num_requests"].max()),
        }
    return out


# --------------------------------------------------------------------------- capacity

CAPACITY_TABLE_COLUMNS = ("label", "scheduler", "num_gpus", "k_bins", "num_requests", "offered_rps", "throughput_rps",
                          "capacity_rps", "capacity_rps_ci95_low", "capacity_rps_ci95_high", "replications",
                          "capacity_per_gpu", "capacity_efficiency", "capacity_headroom", "capacity_scaling",
                          "capacity_attainment", "capacity_probes", "capacity_monotone", "capacity_error")


def capacity_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows whose test searched its capacity (found or not)."""
    if rows.empty or "capacity_criterion" not in rows:
        return rows.iloc[0:0]
    return rows[rows["capacity_criterion"].notna()]


def _capacity_or_zero(rows: pd.DataFrame) -> pd.Series:
    return rows["capacity_rps"].astype(float).fillna(0.0)


def _found(rows: pd.DataFrame) -> pd.DataFrame:
    """The capacity rows with a capacity (a load met the target)."""
    rows = capacity_rows(rows)
    if rows.empty:
        return rows
    return rows[pd.to_numeric(rows["capacity_rps"], errors="coerce").notna()]


def covers(rows: pd.DataFrame) -> pd.Series:
    """Per capacity row: whether its capacity covers the rate it replayed (``capacity_rps >= offered_rps``)."""
    cap = pd.to_numeric(rows["capacity_rps"], errors="coerce")
    offered = pd.to_numeric(rows["offered_rps"], errors="coerce") if "offered_rps" in rows else cap * math.nan
    return (cap >= offered).fillna(False).astype(bool)


def gpus_needed(rows: pd.DataFrame) -> int | None:
    """The smallest GPU count whose capacity covers the replayed rate (one scheduler's rows; None: none does)."""
    rows = capacity_rows(rows)
    if rows.empty:
        return None
    ok = rows[covers(rows)]
    return int(ok["num_gpus"].min()) if not ok.empty else None


def gpus_needed_record(rows: pd.DataFrame) -> dict | None:
    """:func:`gpus_needed` with what it rests on: the capacity there, the replayed rate, the headroom, and the
    largest GPU count tested below it (which falls short) with its capacity.  None without capacity rows."""
    rows = capacity_rows(rows)
    if rows.empty:
        return None
    rows = rows.sort_values("num_gpus")
    n = gpus_needed(rows)
    offered = replayed_rate(rows)
    record = {"num_gpus": n, "offered_rps": offered, "capacity_rps": None, "headroom": None,
              "largest_tested": int(rows["num_gpus"].max()), "short": None}
    if n is not None:
        at = rows[rows["num_gpus"] == n].iloc[0]
        record.update(capacity_rps=float(at["capacity_rps"]), headroom=float(at["capacity_rps"]) / offered - 1)
    below = rows[rows["num_gpus"] < n] if n is not None else rows
    if not below.empty:
        last = below.iloc[-1]
        cap = float(last["capacity_rps"]) if pd.notna(last["capacity_rps"]) else None
        record["short"] = {"num_gpus": int(last["num_gpus"]), "capacity_rps": cap,
                           "shortfall": None if cap is None else 1 - cap / offered}
    return record


def capacity_per_gpu(rows: pd.DataFrame) -> dict[int, float]:
    """GPU count -> capacity per GPU (NaN where no load meets the target)."""
    rows = capacity_rows(rows)
    rows = rows.sort_values("num_gpus") if not rows.empty else rows
    return {int(g): float(c) / int(g) for g, c in zip(rows["num_gpus"], rows["capacity_rps"])} if not rows.empty \
        else {}


def capacity_scaling_base(rows: pd.DataFrame) -> int | None:
    """The smallest GPU count with a capacity: what proportional scaling starts from."""
    found = _found(rows)
    found = found[pd.to_numeric(found["capacity_rps"], errors="coerce") > 0] if not found.empty else found
    return int(found["num_gpus"].min()) if not found.empty else None


def capacity_scaling_efficiency(rows: pd.DataFrame) -> dict[int, float]:
    """GPU count -> capacity against proportional scaling from the smallest pool with a capacity (n0):
    ``cap(n) / ((n / n0) cap(n0))``; above 1, capacity per GPU grew with the pool."""
    rows = capacity_rows(rows)
    if rows.empty:
        return {}
    rows = rows.sort_values("num_gpus")
    n0 = capacity_scaling_base(rows)
    if n0 is None:
        return {int(g): math.nan for g in rows["num_gpus"]}
    base = rows[rows["num_gpus"] == n0].iloc[0]
    per_gpu = float(base["capacity_rps"]) / n0
    return {int(g): float(c) / int(g) / per_gpu for g, c in zip(rows["num_gpus"], rows["capacity_rps"])}


def gpu_counts_tied_for_capacity_per_gpu(rows: pd.DataFrame) -> list[int]:
    """The GPU counts whose capacity per GPU is tied with the highest (within resolution and noise)."""
    return sorted(int(g) for g in _tied(_found(rows), "num_gpus", per_gpu=True))


def best_gpu_count_by_capacity_per_gpu(rows: pd.DataFrame) -> int | None:
    """The GPU count with the highest capacity per GPU; counts tied with it within the search's resolution (and
    the 95% intervals, with replications) go to the fewest GPUs."""
    tied = gpu_counts_tied_for_capacity_per_gpu(rows)
    return tied[0] if tied else None


def k_tied_for_capacity(rows: pd.DataFrame) -> list[int]:
    """The K values whose capacity is tied with the highest (within resolution and noise)."""
    return sorted(int(k) for k in _tied(_found(rows), "k_bins"))


def best_k_by_capacity(rows: pd.DataFrame) -> int | None:
    """The K with the highest capacity; K values tied with it within resolution go to the smallest K."""
    tied = k_tied_for_capacity(rows)
    return tied[0] if tied else None


def capacity_monotone_exceptions(rows: pd.DataFrame) -> list[dict]:
    """Every place where more GPUs gave less capacity (same trace, scheduler, K and SLA).

    An unreachable target counts as capacity 0, so a configuration that
    reaches it on n GPUs but not on more is listed too.  ``within_resolution``
    says whether the fall is within the search's resolution (and the seeds'
    intervals), i.e. may be the search's uncertainty rather than a real loss.
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
                real = caps[i] == 0 or targets.above(targets.row_bounds(before), targets.row_bounds(after))
                found.append({"label_from": str(before["label"]), "label_to": str(after["label"]),
                              "num_gpus_from": int(before["num_gpus"]), "num_gpus_to": int(after["num_gpus"]),
                              "capacity_rps_from": float(caps[i - 1]), "capacity_rps_to": float(caps[i]),
                              "relative_drop": 1.0 - caps[i] / caps[i - 1], "within_resolution": not real})
    return found


def capacity_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The tests that searched their capacity: the replayed rate next to capacity, the headroom it leaves, per
    GPU, and why not found.

    ``capacity_efficiency`` (capacity against proportional scaling from the
    smallest pool with a capacity) is there when the rows span several GPU
    counts of one scheduler and K (step 2).
    """
    rows = capacity_rows(summarize(rows))
    if rows.empty:
        return pd.DataFrame(columns=[c for c in CAPACITY_TABLE_COLUMNS if c != "capacity_efficiency"])
    out = rows.copy()  # a selection of a wide frame: copy once rather than add columns to a fragmented one
    out["capacity_per_gpu"] = rows["capacity_rps"] / rows["num_gpus"]
    if "offered_rps" in rows:
        out["capacity_headroom"] = rows["capacity_rps"] / rows["offered_rps"] - 1
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
    return {"labels": sorted(map(str, rows["trace_label"].dropna().unique())) if "trace_label" in rows else [],
            "synthetic": bool(rows["synthetic"].astype(bool).any()) if "synthetic" in rows else False}


def _tied(found: pd.DataFrame, key: str, per_gpu: bool = False) -> list:
    """The values of ``key`` in ``found`` (capacity rows with a capacity) whose capacity, per GPU with
    ``per_gpu``, is tied with the highest within the search's resolution and the seeds' intervals
    (:func:`workbench.study.answers.targets.tied_with_best`), in the order of ``found``."""
    values, value_bounds = {}, {}
    for _, r in found.iterrows():
        scale = float(r["num_gpus"]) if per_gpu else 1.0
        k = r[key].item() if isinstance(r[key], np.generic) else r[key]
        values[k] = float(r["capacity_rps"]) / scale
        value_bounds[k] = targets.row_bounds(r, scale=scale)
    return targets.tied_with_best(values, value_bounds)


def best_config_step1(rows: pd.DataFrame) -> dict:
    """Step 1's best configuration (see ``rules()["best_config_step1"]``): ``{"row", "meets_target", "tied"}``
    (``tied``: the labels tied with it within the search's resolution; ``row`` None without rows)."""
    largest = rows[rows["num_requests"] == rows["num_requests"].max()]
    meeting = largest[meets_target(largest)]
    pool = meeting[meeting["num_gpus"] == meeting["num_gpus"].min()] if not meeting.empty else largest
    found = _found(pool)
    if not found.empty:
        found = found.sort_values(["capacity_rps", "num_gpus"], ascending=[False, True], kind="stable")
        tied = _tied(found, "label")
        best = found[found["label"] == tied[0]].iloc[0]
    elif not meeting.empty:   # no capacities: one seed cannot order the replays that all meet the target
        best, tied = pool.iloc[0], [str(v) for v in pool["label"]]
    else:
        best = _pick(largest, ["sla_violation_rate", "num_gpus"], [True, True])
        tied = [str(best["label"])] if best is not None else []
    return {"row": best, "meets_target": not meeting.empty if best is not None else None,
            "tied": [str(v) for v in tied]}


def analyze_step1(rows: pd.DataFrame) -> dict:
    best = best_config_step1(rows)
    largest = rows[rows["num_requests"] == rows["num_requests"].max()]
    return {"tests": len(rows), "request_volumes": sorted(int(v) for v in rows["num_requests"].unique()),
            "gpu_counts": sorted(int(g) for g in rows["num_gpus"].unique()), "sla_target": sla_target(rows), "offered_rps": replayed_rate(largest),
            "best_config": _config(best["row"]), "best_config_meets_target": best["meets_target"],
            "best_config_tied": best["tied"], "breaking_points": breaking_points(rows),
            "capacity_rps": _capacities(rows), "capacity_search": _capacity_search(rows), "trace": _trace_info(rows),
            **_schedulers_info(rows)}


def _schedulers_info(rows: pd.DataFrame) -> dict:
    return {"schedulers": list(dict.fromkeys(rows["scheduler"].astype(str))) if "scheduler" in rows else [],
            "primary_scheduler": primary_scheduler(rows),
            "replications": int(rows["replications"].max()) if "replications" in rows else 1,
            "capacity_rps_ci95": _capacity_intervals(rows), "capacity_table": _capacity_records(rows)}


def capacity_per_gpu_knee(rows: pd.DataFrame, tolerance: float = KNEE_TOLERANCE) -> int | None:
    """The fewest GPUs whose capacity per GPU is within ``tolerance`` of the highest (one scheduler's rows)."""
    per_gpu = pd.Series(capacity_per_gpu(rows), dtype=float).dropna()
    if per_gpu.empty:
        return None
    return int(per_gpu[per_gpu >= (1.0 - tolerance) * per_gpu.max()].index.min())


def per_gpu_grows(rows: pd.DataFrame) -> bool | None:
    """Whether capacity per GPU never falls (beyond the search's resolution) as the GPU count grows."""
    found = _found(rows).sort_values("num_gpus")
    if len(found) < 2:
        return None
    pairs = zip(found.iloc[:-1].iterrows(), found.iloc[1:].iterrows())
    return not any(targets.above(targets.row_bounds(a, scale=float(a["num_gpus"])),
                                 targets.row_bounds(b, scale=float(b["num_gpus"]))) for (_, a), (_, b) in pairs)


def _by_scheduler(rows: pd.DataFrame, rule) -> dict[str, object]:
    return {str(name): _json_safe(rule(group)) for name, group in rows.groupby("scheduler", sort=False)} \
        if "scheduler" in rows else {}


def gpus_needed_answer(rows: pd.DataFrame) -> dict | None:
    """Step 2's answer for one scheduler's rows: :func:`gpus_needed_record` from its capacities, or, without a
    capacity search, the smallest pool whose replay meets the target (``basis`` says which)."""
    record = gpus_needed_record(rows)
    if record is not None:
        return {**record, "basis": "capacity"}
    if rows.empty:
        return None
    rows = rows.sort_values("num_gpus")
    ok = rows[meets_target(rows)]
    return {"num_gpus": int(ok["num_gpus"].min()) if not ok.empty else None, "offered_rps": replayed_rate(rows),
            "capacity_rps": None, "headroom": None, "largest_tested": int(rows["num_gpus"].max()), "short": None,
            "basis": "replay"}


def analyze_step2(rows: pd.DataFrame) -> dict:
    everyone, rows = rows, primary_rows(rows)
    needed = gpus_needed_answer(rows)
    n = needed["num_gpus"] if needed else None
    at = rows[rows["num_gpus"] == n] if n is not None else rows.iloc[0:0]
    by_capacity = best_gpu_count_by_capacity_per_gpu(rows)
    searched = capacity_rows(rows)
    exceptions = capacity_monotone_exceptions(rows)
    return {"tests": len(rows), "gpu_counts": sorted(int(g) for g in rows["num_gpus"].unique()),
            "sla_target": sla_target(rows), "offered_rps": replayed_rate(rows),
            "gpus_needed": n, "gpus_needed_detail": needed, "best_config": _config(at.iloc[0]) if not at.empty else None,
            "capacity_rps": _capacities(everyone), "capacity_per_gpu": capacity_per_gpu(rows),
            "capacity_scaling_efficiency": capacity_scaling_efficiency(rows),
            "capacity_scaling_base_gpus": capacity_scaling_base(rows),
            "best_gpu_count_by_capacity_per_gpu": by_capacity,
            "best_gpu_count_by_capacity_per_gpu_tied": gpu_counts_tied_for_capacity_per_gpu(rows),
            "best_config_by_capacity_per_gpu": _config(searched[searched["num_gpus"] == by_capacity].iloc[0])
            if by_capacity is not None else None,
            "capacity_monotone_in_gpus": (not exceptions) if not searched.empty else None,
            "capacity_monotone_exceptions": exceptions, "capacity_search": _capacity_search(everyone),
            "capacity_per_gpu_knee": capacity_per_gpu_knee(rows) if not searched.empty else None,
            "capacity_per_gpu_grows": per_gpu_grows(rows) if not searched.empty else None,
            "gpus_needed_by_scheduler": _by_scheduler(everyone, lambda g: (gpus_needed_answer(g) or {}).get("num_gpus")),
            "headroom_by_scheduler": _by_scheduler(everyone, lambda g: (gpus_needed_answer(g) or {}).get("headroom")),
            "best_gpu_count_by_capacity_per_gpu_by_scheduler": _by_scheduler(
                capacity_rows(everyone), best_gpu_count_by_capacity_per_gpu),
            "capacity_per_gpu_knee_by_scheduler": _by_scheduler(capacity_rows(everyone), capacity_per_gpu_knee),
            "trace": _trace_info(rows), **_schedulers_info(everyone)}


def best_k_answer(rows: pd.DataFrame) -> dict:
    """Step 3's best K for one scheduler's rows: ``{"best_k", "tied", "basis"}`` (see ``rules()["best_k"]``)."""
    found = _found(rows)
    if not capacity_rows(rows).empty:
        tied = sorted(int(k) for k in _tied(found, "k_bins"))
        return {"best_k": tied[0] if tied else None, "tied": tied, "basis": "capacity"}
    ok = rows[meets_target(rows)] if not rows.empty else rows
    if ok.empty:
        return {"best_k": None, "tied": [], "basis": "replay"}
    values = {int(r["k_bins"]): -float(r["sla_violation_rate"]) for _, r in ok.iterrows()}
    value_bounds = {int(r["k_bins"]): (-_get(r, f"sla_violation_rate{HIGH}"), -_get(r, f"sla_violation_rate{LOW}"))
                    for _, r in ok.iterrows()}
    if any(math.isnan(b) for pair in value_bounds.values() for b in pair):   # one seed: no noise estimate
        tied = sorted(values)
    else:
        tied = sorted(targets.tied_with_best(values, value_bounds))
    return {"best_k": tied[0], "tied": tied, "basis": "replay"}


def _get(row, column: str) -> float:
    value = row.get(column) if hasattr(row, "get") else None
    return math.nan if value is None or pd.isna(value) else float(value)


def analyze_step3(rows: pd.DataFrame) -> dict:
    everyone, rows = rows, primary_rows(rows)
    answer = best_k_answer(rows)
    k = answer["best_k"]
    at = rows[rows["k_bins"] == k] if k is not None else rows.iloc[0:0]
    binning = [name for name, group in everyone.groupby("scheduler", sort=False) if group["k_bins"].nunique() > 1] \
        if "scheduler" in everyone else []
    return {"tests": len(rows), "num_gpus": sorted(int(g) for g in rows["num_gpus"].unique()),
            "k_values": sorted(int(k) for k in rows["k_bins"].unique()), "sla_target": sla_target(rows),
            "best_k": k, "best_k_tied": answer["tied"], "best_k_basis": answer["basis"],
            "best_config": _config(at.iloc[0]) if not at.empty else None,
            "k_bins_effective": {int(k): int(e) for k, e in zip(rows["k_bins"], rows["k_bins_effective"])},
            "capacity_rps": _capacities(everyone), "capacity_search": _capacity_search(everyone),
            "best_k_by_scheduler": {str(name): best_k_answer(everyone[everyone["scheduler"] == name])["best_k"]
                                    for name in binning},
            "trace": _trace_info(rows), **_schedulers_info(everyone)}


ANALYZERS = dict(zip(STEP_ORDER, (analyze_step1, analyze_step2, analyze_step3)))
STEP_VALIDITY = dict(zip(STEP_ORDER, (("best_config_step1",), ("gpus_needed", "best_gpu_count_by_capacity_per_gpu"),
                                      ("best_k",))))


# --------------------------------------------------------------------------- validity of the answers

def _gpus(n: int) -> str:
    return f"{n} GPU{'s' if n != 1 else ''}"


def _tied_text(tied: list, chosen, what: str, unit: str, replications: int) -> str:
    """"64 and 100 GPUs are tied for the most capacity per GPU within the search's resolution (one seed: no noise
    estimate); the fewest, 64, is the answer" ("" when nothing is tied with the answer)."""
    if len([v for v in tied if v != chosen]) == 0:
        return ""
    values = ", ".join(map(str, tied[:-1])) + f" and {tied[-1]}"
    return (f"{unit.format(values)} are tied for {what} within {targets.resolution_text(replications)}; "
            f"the {'fewest' if 'GPU' in unit else 'smallest'}, {unit.format(chosen)}, is the answer")


def gpus_needed_sentence(part: dict, name: str | None = None) -> str:
    """The answer to "how many GPUs does this trace need", in one sentence, from step 2's analysis ``part`` (or
    one scheduler's :func:`gpus_needed_answer` record under ``"gpus_needed_detail"``)."""
    detail = part.get("gpus_needed_detail") or {}
    name = name or part.get("primary_scheduler") or "the scheduler"
    n, offered = detail.get("num_gpus"), detail.get("offered_rps")
    target = part.get("sla_target", targets.DEFAULT_TARGET)
    rate = f"the replayed {offered:.3g} req/s" if offered is not None and math.isfinite(offered) else "the replayed load"
    if detail.get("basis") == "replay":
        if n is None:
            return (f"No GPU count tested (up to {detail.get('largest_tested')}) serves {rate} with {target:.0%} "
                    f"of requests within the SLA for {name}.")
        return (f"{name} needs {_gpus(n)}: the fewest tested whose replay of {rate} keeps {target:.0%} of requests "
                "within the SLA (no capacity search: the headroom is not known).")
    short = detail.get("short")
    if n is None:
        largest = detail.get("largest_tested")
        text = (f"No GPU count tested sustains {rate} with {target:.0%} of requests within the SLA for {name}: "
                f"the trace needs more than {largest} GPUs")
        if short and short.get("capacity_rps") is not None:
            text += (f" ({largest} sustain {short['capacity_rps']:.3g} req/s, {short['shortfall']:.0%} short)")
        return text + "."
    text = (f"{name} needs {_gpus(n)}: the fewest tested whose capacity at the target ({target:.0%} of requests "
            f"within the SLA), {detail['capacity_rps']:.3g} req/s, covers {rate}, a headroom of "
            f"{_headroom(detail['headroom'])}")
    if short is not None:
        if short.get("capacity_rps") is None:
            text += f"; {_gpus(short['num_gpus'])} reach the target at no load"
        else:
            text += (f"; {_gpus(short['num_gpus'])} sustain {short['capacity_rps']:.3g} req/s "
                     f"({short['shortfall']:.0%} short)")
        if short["num_gpus"] + 1 < n:
            text += f", so the exact minimum lies between {short['num_gpus'] + 1} and {n} (not tested)"
    return text + "."


def _headroom(share: float) -> str:
    """A headroom as a percentage: "21%", "0.4%", "0% (the replay at the trace's own rate just meets the target)"."""
    if share == 0:
        return "0% (the replay at the trace's own rate meets the target, one 1% step faster does not)"
    return f"{share:.0%}" if share >= 0.01 else f"{share:.1%}"


def _answer(value, *, meets: bool | None, at_edge: bool, sentence: str) -> dict:
    return {"value": _json_safe(value), "meets_sla": meets, "at_edge": at_edge,
            "valid": bool(value is not None and meets is not False and not at_edge), "sentence": sentence}


def _none(what: str, why: str = "no results to pick it from") -> dict:
    return _answer(None, meets=None, at_edge=False, sentence=f"No {what}: {why}.")


def _step1_validity(s1: dict) -> dict:
    best = s1.get("best_config") or {}
    label = best.get("label")
    if label is None:
        return _none("best configuration of step 1")
    volume, offered = max(s1["request_volumes"]), s1.get("offered_rps")
    target = s1.get("sla_target", targets.DEFAULT_TARGET)
    rate = f"the replayed load ({offered:.3g} req/s)" if offered is not None else "the replayed load"
    reps = s1.get("replications", 1)
    others = [t for t in s1.get("best_config_tied", []) if t != label]
    tie = f" (tied within {targets.resolution_text(reps)} with {', '.join(others)})" if others else ""
    if s1.get("best_config_meets_target"):
        return _answer(label, meets=True, at_edge=False, sentence=(
            f"At {volume:,} requests {label} keeps {target:.0%} of requests within the SLA at {rate} on the fewest "
            f"GPUs of step 1's configurations{tie}."))
    cap = best.get("capacity_rps")
    gpus = sorted({int(g) for g in s1.get("gpu_counts", [])}) or None
    pools = f" ({', '.join(map(str, gpus))} GPUs)" if gpus else ""
    text = (f"At {volume:,} requests no configuration of step 1{pools} keeps {target:.0%} of requests within the "
            f"SLA at {rate}")
    if cap is not None:
        share = f", {cap / offered:.0%} of the replayed rate" if offered else ""
        text += (f"; the closest, {label}, sustains {cap:.3g} req/s at that target{share}{tie}: step 2 finds the "
                 "pool the trace needs")
    else:
        text += f"; the closest, {label}, has {best.get('sla_violation_rate', math.nan):.1%} of its requests miss it"
    return _answer(label, meets=False, at_edge=False, sentence=text + ".")


def _step2_validity(s2: dict) -> dict:
    found = {}
    detail = s2.get("gpus_needed_detail")
    if detail is None:
        found["gpus_needed"] = _none("GPU count needed")
    else:
        n = detail.get("num_gpus")
        found["gpus_needed"] = _answer(n, meets=n is not None, at_edge=n is None,
                                       sentence=gpus_needed_sentence(s2))
    if s2.get("capacity_search"):
        n = s2.get("best_gpu_count_by_capacity_per_gpu")
        if n is None:
            found["best_gpu_count_by_capacity_per_gpu"] = _none("GPU count with the most capacity per GPU",
                                                                "no GPU count tested reaches the target at any load")
        else:
            best = s2.get("best_config_by_capacity_per_gpu") or {}
            tested = s2["gpu_counts"]
            tie = _tied_text(s2.get("best_gpu_count_by_capacity_per_gpu_tied", []), n, "the most capacity per GPU",
                             "{} GPUs", s2.get("replications", 1))
            at_edge = len(tested) > 1 and n == max(tested)
            per_gpu = best["capacity_rps"] / n
            head = (f"{tie} ({per_gpu:.3g} req/s per GPU)" if tie else
                    f"The most capacity per GPU, {per_gpu:.3g} req/s, is on {_gpus(n)}")
            if not at_edge:
                sentence = f"{head}, inside the range tested."
            elif s2.get("capacity_per_gpu_grows") and _last_gain(s2) <= KNEE_TOLERANCE:
                at_edge, sentence = False, _growing_per_gpu_sentence(s2) + (f". {tie[0].upper()}{tie[1:]}." if tie
                                                                             else ".")
            else:
                sentence = f"{head}, the largest count tested: the optimum may lie beyond."
            found["best_gpu_count_by_capacity_per_gpu"] = _answer(n, meets=True, at_edge=at_edge, sentence=sentence)
    return found


def _step3_validity(s3: dict) -> dict:
    k = s3.get("best_k")
    gpus = ", ".join(map(str, s3.get("num_gpus", [])))
    if k is None:
        why = ("no K reaches the target at any load" if s3.get("best_k_basis") == "capacity"
               else "no K meets the SLA target at the replayed load")
        return {"best_k": _none(f"best K on {gpus} GPUs", why)}
    tested = s3["k_values"]
    at_edge = len(tested) > 1 and k == max(tested) and k != min(tested)
    reps = s3.get("replications", 1)
    if s3.get("best_k_basis") == "capacity":
        cap = (s3.get("best_config") or {}).get("capacity_rps")
        tie = _tied_text(s3.get("best_k_tied", []), k, "the most capacity", "K = {}", reps)
        sentence = (f"On {gpus} GPUs {tie} ({cap:.3g} req/s)" if tie else
                    f"On {gpus} GPUs K = {k} gives the most capacity, {cap:.3g} req/s")
    else:
        tied = s3.get("best_k_tied", [])
        sentence = (f"On {gpus} GPUs K = {k} meets the SLA target at the replayed load"
                    + (f"; so do K = {', '.join(str(v) for v in tied if v != k)}, and "
                       + ("one seed gives no noise estimate to tell their violation rates apart" if reps <= 1
                          else f"their 95% intervals over {reps} seeds overlap") + ": the smallest is the answer"
                       if len(tied) > 1 else ""))
    sentence += (". It is the largest K tested: the optimum may lie beyond." if at_edge else ", inside the range tested.")
    return {"best_k": _answer(k, meets=True, at_edge=at_edge, sentence=sentence)}


def validity(out: dict) -> dict:
    """Per answer of ``out`` (the analysis): value, meets_sla, at_edge, valid and a sentence."""
    s1, s2, s3 = (out.get(step) for step in STEP_ORDER)
    found = {}
    if s1:
        found["best_config_step1"] = _step1_validity(s1)
    if s2:
        found.update(_step2_validity(s2))
    if s3:
        found.update(_step3_validity(s3))
    return found


def _last_gain(s2: dict) -> float:
    """Relative gain of capacity per GPU from the second largest GPU count tested to the largest."""
    per_gpu = {int(g): v for g, v in (s2.get("capacity_per_gpu") or {}).items() if v is not None}
    counts = sorted(per_gpu)
    if len(counts) < 2 or not per_gpu[counts[-2]]:
        return math.inf
    return per_gpu[counts[-1]] / per_gpu[counts[-2]] - 1


def _growing_per_gpu_sentence(s2: dict) -> str:
    """Why the most capacity per GPU at the largest pool tested is an answer, not a missed optimum."""
    per_gpu = {int(g): v for g, v in (s2.get("capacity_per_gpu") or {}).items() if v is not None}
    counts = sorted(per_gpu)
    last, before = counts[-1], counts[-2]
    gain = per_gpu[last] / per_gpu[before] - 1 if per_gpu[before] else math.nan
    knee = s2.get("capacity_per_gpu_knee")
    return (f"Capacity per GPU never falls as the pool grows (a larger pool absorbs the trace's bursts better: "
            f"statistical multiplexing) and gains {gain:+.1%} from {before} to {last} GPUs: the largest "
            f"pool tested, {last} GPUs, has the most, with diminishing returns"
            + (f"; from {knee} GPUs on it is within {KNEE_TOLERANCE:.0%} of that" if knee is not None else ""))


def step3_gpu_count(step3_rows: pd.DataFrame, step2_rows: pd.DataFrame) -> dict:
    """Where step 3's GPU count came from, the step-2 row it used, and whether it is what step 2 says now: the GPUs
    the trace needs (or, when no count step 2 tested covers the load, its largest)."""
    gpus = sorted(int(g) for g in step3_rows["num_gpus"].unique())
    def first(column):
        if column not in step3_rows:
            return None
        values = step3_rows[column].dropna()
        return str(values.iloc[0]) if not values.empty else None

    source, used = first("gpu_count_source"), first("step2_test_id")
    needed = (gpus_needed_answer(step2_rows) or {}).get("num_gpus") if not step2_rows.empty else None
    now = needed if needed is not None or step2_rows.empty else int(step2_rows["num_gpus"].max())
    now_id = (str(step2_rows.loc[step2_rows["num_gpus"] == now, "test_id"].iloc[0])
              if now is not None and "test_id" in step2_rows else None)
    matches = None if now is None else (gpus == [now])
    where = {"given": "given explicitly (best_gpu_count)", "step2_gpus_needed": "the GPUs step 2 found the trace needs",
             "step2_largest": "step 2's largest count: none it tested covers the replayed load",
             "default": "the default (no step 2 results when step 3 ran)"}.get(source, "not recorded")
    sentence = f"Step 3 ran at {', '.join(map(str, gpus))} GPUs ({where})."
    what = (f"step 2 finds the trace needs {now} GPUs" if needed is not None else
            f"no count step 2 tested covers the replayed load (its largest: {now} GPUs)")
    if matches is False:
        sentence += (f" In these results {what}: step 3's K sweep is not at that pool (rerun step 3 without "
                     "best_gpu_count to use it).")
    elif matches:
        sentence += (" It is still step 2's answer in these results." if needed is not None else
                     f" In these results {what}.")
    return {"num_gpus": gpus[0] if len(gpus) == 1 else gpus, "source": source, "step2_test_id": used,
            "step2_gpus_needed": needed, "step2_test_id_now": now_id, "matches_step2": matches,
            "sentence": sentence}


def analyze(all_rows: pd.DataFrame) -> dict:
    """The analysis of every step present in ``all_rows`` (the contents of ``all_results.csv``)."""
    # the per-bin columns (bin{j}_*, a few hundred at K = 32) answer nothing here: leave them out of the work
    all_rows = summarize(all_rows[[c for c in all_rows.columns if not re.match(r"bin\d+_", c)]])
    sla = sla_of_row(all_rows.iloc[0]) if not all_rows.empty else "the SLA"
    out: dict = {"generated_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                 "rules": rules(sla, sla_target(all_rows)), "sla": sla, "sla_target": sla_target(all_rows),
                 "trace": _trace_info(all_rows) if not all_rows.empty else {}}
    for step, analyzer in ANALYZERS.items():
        rows = all_rows[all_rows["step"] == step] if not all_rows.empty else all_rows
        out[step] = analyzer(rows.reset_index(drop=True)) if not rows.empty else None
    s2, s3 = out["step2_gpu_scaling"] or {}, out["step3_kbins_sensitivity"] or {}
    out["gpus_needed"] = s2.get("gpus_needed")
    out["best_gpu_count_by_capacity_per_gpu"] = s2.get("best_gpu_count_by_capacity_per_gpu")
    out["best_k"] = s3.get("best_k")
    if s3:
        step2_rows = all_rows[all_rows["step"] == STEP_ORDER[1]]
        s3["gpu_count"] = step3_gpu_count(all_rows[all_rows["step"] == STEP_ORDER[2]], primary_rows(step2_rows))
    out = _json_safe(out)
    out["validity"] = _json_safe(validity(out))
    out["warnings"] = [v["sentence"] for v in out["validity"].values() if not v["valid"]]
    if out["step3_kbins_sensitivity"] and out["step3_kbins_sensitivity"]["gpu_count"]["matches_step2"] is False:
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


def step2_row_for_step3(results_dir: str | Path) -> tuple[pd.Series, bool] | None:
    """Step 2's row (primary scheduler) at the GPUs the trace needs, from ``all_results.csv`` in ``results_dir``,
    and True; when no count tested covers the replayed load, the row of the largest count tested, and False.
    None without step 2 rows."""
    rows = read_rows(Path(results_dir) / ALL_RESULTS, key=("step", "test_id"))
    if rows.empty or "step" not in rows:
        return None
    rows = primary_rows(summarize(rows[rows["step"] == "step2_gpu_scaling"]))
    if rows.empty:
        return None
    n = (gpus_needed_answer(rows) or {}).get("num_gpus")
    if n is None:
        return rows.sort_values("num_gpus").iloc[-1], False
    return rows[rows["num_gpus"] == n].iloc[0], True


def gpus_needed_from_results(results_dir: str | Path) -> int | None:
    """The GPUs step 2 found the trace needs, from ``all_results.csv`` in ``results_dir`` (None without step 2
    rows, or when no count tested covers the load)."""
    found = step2_row_for_step3(results_dir)
    return int(found[0]["num_gpus"]) if found is not None and found[1] else None
