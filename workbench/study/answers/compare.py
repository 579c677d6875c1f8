"""Which scheduler keeps the SLA: load-latency curves, a ranking by what the trace needs, and where each breaks.

Pure functions over result rows (one row per test, or per test averaged over
replications with ``<metric>_ci95_low`` / ``_ci95_high`` beside each metric).  The rows
a comparison needs:

* load-latency rows: ``scheduler``, ``offered_rps`` (the arrival rate replayed),
  ``attainment`` (share of the offered requests that met the SLA; rejected
  ones did not), latency percentiles (``latency_p50_s``, ``latency_p99_s``,
  and ``ttft_*`` / ``tpot_*`` where the engine reports them);
* capacity rows: ``scheduler``, ``num_gpus``, ``capacity_rps`` (NaN where no
  load met the target, with the reason in ``capacity_error``) and
  ``offered_rps`` (the rate the whole trace is replayed at: what a pool must
  cover).

A scheduler *breaks* at the offered rate where its attainment falls below the
target: :func:`break_point` reports the last rate tested that met it, the
first that did not and, between them, the linearly interpolated crossing.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from workbench.study.answers import targets


def _bound(row, column: str, side: str) -> float:
    value = row.get(f"{column}_ci95_{side}", math.nan) if hasattr(row, "get") else math.nan
    return float(value) if value is not None and not pd.isna(value) else math.nan


def break_point(curve: pd.DataFrame, target: float) -> dict:
    """Where one scheduler's attainment first falls below ``target`` as the offered rate rises."""
    curve = curve.sort_values("offered_rps")
    rates = curve["offered_rps"].to_numpy(float)
    attained = curve["attainment"].to_numpy(float)
    ok = attained >= target
    out = {"target": target, "max_rate_tested": float(rates.max()) if rates.size else math.nan,
           "last_ok_rps": math.nan, "first_bad_rps": math.nan, "crossing_rps": math.nan,
           "status": "no data"}
    if not rates.size:
        return out
    if not ok[0]:
        out.update(first_bad_rps=float(rates[0]), status="below target at the lightest load tested")
        return out
    bad = np.flatnonzero(~ok)
    if not bad.size:
        out.update(last_ok_rps=float(rates[-1]), status="meets the target at every load tested")
        return out
    i = int(bad[0])
    r0, r1, a0, a1 = rates[i - 1], rates[i], attained[i - 1], attained[i]
    crossing = r0 + (a0 - target) / (a0 - a1) * (r1 - r0) if a0 != a1 else r0
    out.update(last_ok_rps=float(r0), first_bad_rps=float(r1), crossing_rps=float(crossing),
               status="breaks" if ok[i:].sum() == 0 else "breaks (recovers at a higher load: not monotone)")
    return out


def break_points(curves: pd.DataFrame, target: float) -> pd.DataFrame:
    """:func:`break_point` for every scheduler (one row each)."""
    rows = [{"scheduler": name, **break_point(group, target)}
            for name, group in curves.groupby("scheduler", sort=False)]
    return pd.DataFrame(rows)


def _per_gpu_bounds(row) -> tuple[float, float]:
    return targets.row_bounds(row, scale=float(row["num_gpus"]))


def _needed(group: pd.DataFrame) -> pd.Series | None:
    """One scheduler's capacity row at the fewest GPUs whose capacity covers the replayed rate (None: none does)."""
    cap = pd.to_numeric(group["capacity_rps"], errors="coerce")
    ok = group[(cap >= pd.to_numeric(group["offered_rps"], errors="coerce")).fillna(False).astype(bool)]
    return ok.sort_values("num_gpus").iloc[0] if not ok.empty else None


def _at(group: pd.DataFrame, gpus: int) -> pd.Series | None:
    at = group[group["num_gpus"] == gpus]
    return at.iloc[0] if not at.empty else None


def _better(a: dict, b: dict) -> bool:
    """Whether scheduler ``a`` serves the trace better than ``b`` beyond the search's resolution and the seeds'
    intervals: it needs fewer GPUs and, on those, sustains more than ``b`` does there; or it needs as many and
    sustains more per GPU on them.  Neither covering the load: more capacity per GPU on the largest count."""
    n = a["gpus_needed"]
    if n is None and b["gpus_needed"] is not None:
        return False
    if n is not None and b["gpus_needed"] is not None and n > b["gpus_needed"]:
        return False
    gpus = n if n is not None else a["at_num_gpus"]
    mine, theirs = _at(a["rows"], gpus), _at(b["rows"], gpus)
    if mine is None or not np.isfinite(float(mine["capacity_rps"])):
        return False
    if theirs is None or not np.isfinite(float(theirs["capacity_rps"])):
        return True                       # no load meets the target for b there
    return targets.above(_per_gpu_bounds(mine), _per_gpu_bounds(theirs))


def capacity_ranking(capacity_rows: pd.DataFrame) -> pd.DataFrame:
    """Schedulers ranked by what the trace needs of them: the fewest GPUs (of the counts compared) whose capacity
    covers the replayed rate (``offered_rps`` of each capacity row), then, at that count, the highest capacity
    per GPU: the answer step 2 gives per scheduler, on the same tests.

    Columns: ``gpus_needed`` (None: no count compared covers the load),
    ``at_num_gpus`` (where the capacity per GPU is read: ``gpus_needed``, else
    the largest count compared), ``capacity_rps``, ``capacity_per_gpu`` and its
    95% interval over the seeds (NaN with one replication), ``headroom``
    (capacity / replayed rate - 1); the second answer, ``most_capacity_per_gpu``
    over every count compared and ``most_capacity_per_gpu_at`` (with
    ``at_largest_gpus`` when that is the largest count compared: it may grow
    beyond).  ``distinguishable_from_next`` says whether this scheduler is
    better than the next one beyond the capacity search's resolution (two
    capacities one grid step of 1% apart are tied) and, with replications,
    their 95% intervals; a scheduler not distinguishable from the one above
    shares its rank (1, 1, 3).  Schedulers that met the target at no GPU
    count come last, with ``capacity_per_gpu`` NaN and the reason.
    """
    if capacity_rows.empty:
        return pd.DataFrame()
    largest = int(capacity_rows["num_gpus"].max())
    if "offered_rps" not in capacity_rows:
        capacity_rows = capacity_rows.assign(offered_rps=math.nan)
    entries = []
    for name, group in capacity_rows.groupby("scheduler", sort=False):
        group = group.sort_values("num_gpus").assign(per_gpu=group["capacity_rps"] / group["num_gpus"])
        found = group[np.isfinite(group["per_gpu"].astype(float))]
        needed = _needed(group)
        at = needed if needed is not None else _at(group, largest)
        offered = float(pd.to_numeric(group["offered_rps"], errors="coerce").max())
        entry = {"scheduler": name, "rows": group, "gpus_needed": None if needed is None else int(needed["num_gpus"]),
                 "at_num_gpus": int(at["num_gpus"]) if at is not None else largest}
        cap = float(at["capacity_rps"]) if at is not None else math.nan
        gpus = entry["at_num_gpus"]
        low, high = (_bound(at, "capacity_rps", "low"), _bound(at, "capacity_rps", "high")) if at is not None \
            else (math.nan, math.nan)
        most = found.loc[found["per_gpu"].astype(float).idxmax()] if not found.empty else None
        entry.update(capacity_rps=cap, capacity_per_gpu=cap / gpus, capacity_per_gpu_ci95_low=low / gpus,
                     capacity_per_gpu_ci95_high=high / gpus,
                     headroom=cap / offered - 1 if np.isfinite(cap) and offered > 0 else math.nan,
                     most_capacity_per_gpu=float(most["per_gpu"]) if most is not None else math.nan,
                     most_capacity_per_gpu_at=int(most["num_gpus"]) if most is not None else None,
                     at_largest_gpus=bool(most is not None and int(most["num_gpus"]) == largest
                                          and group["num_gpus"].nunique() > 1))
        if found.empty:   # the reason at the largest count compared, where the capacity per GPU is read
            errors = group.sort_values("num_gpus", ascending=False).get("capacity_error", pd.Series(dtype=object))
            reason = next((str(r) for r in errors.dropna()), "")
            entry["note"] = reason.rstrip(".") or "no capacity found"
        elif needed is None:
            entry["note"] = (f"no GPU count compared (up to {largest}) sustains the replayed "
                             f"{offered:.3g} req/s at the target")
        else:
            entry["note"] = f"needs {entry['gpus_needed']} GPUs ({entry['headroom']:+.0%} headroom)"
        entries.append(entry)
    order = sorted(range(len(entries)), key=lambda i: (
        entries[i]["gpus_needed"] is None, entries[i]["gpus_needed"] or 0,
        not np.isfinite(entries[i]["capacity_per_gpu"]),
        -entries[i]["capacity_per_gpu"] if np.isfinite(entries[i]["capacity_per_gpu"]) else 0.0))
    entries = [entries[i] for i in order]
    distinct, ranks = [], []
    for i, entry in enumerate(entries):
        distinct.append(_better(entry, entries[i + 1]) if i + 1 < len(entries) else None)
        ranks.append(1 if i == 0 else (ranks[-1] if not distinct[i - 1] else i + 1))
    for i, entry in enumerate(entries):
        # the neighbours whose order against this one is not established (a rank shared along a chain of ties
        # does not make its ends tied with each other)
        tied = ([entries[i - 1]["scheduler"]] if i > 0 and distinct[i - 1] is False else []) + \
               ([entries[i + 1]["scheduler"]] if distinct[i] is False else [])
        if tied and np.isfinite(entry["capacity_per_gpu"]):
            entry["note"] += ("; tied within the search's resolution"
                              + (" and the seeds' 95% intervals" if np.isfinite(entry["capacity_per_gpu_ci95_low"])
                                 else " (one seed: no noise estimate)") + f" with {', '.join(tied)}")
        if entry["at_largest_gpus"]:
            entry["note"] += (f"; most capacity per GPU on the largest count compared ({largest}): it may grow "
                              "beyond")
    columns = ["scheduler", "gpus_needed", "at_num_gpus", "capacity_rps", "capacity_per_gpu",
               "capacity_per_gpu_ci95_low", "capacity_per_gpu_ci95_high", "headroom", "most_capacity_per_gpu",
               "most_capacity_per_gpu_at", "at_largest_gpus", "note"]
    table = pd.DataFrame([{c: e[c] for c in columns} for e in entries], columns=columns)
    table.insert(0, "rank", ranks)
    table.insert(table.columns.get_loc("headroom") + 1, "distinguishable_from_next", distinct)
    for column in ("gpus_needed", "most_capacity_per_gpu_at"):
        table[column] = table[column].astype("Int64")
    return table


def _rate(value: float) -> str:
    return f"{value:.3g} req/s"


def break_sentences(breaks: pd.DataFrame, ranking: pd.DataFrame, *, sla_text: str, curve_gpus: int | None = None,
                    curve_requests: int | None = None, num_requests: int | None = None,
                    capacities: pd.DataFrame | None = None) -> dict[str, str]:
    """One sentence per scheduler: where it breaks on the load-latency curves (on ``curve_gpus`` GPUs, replaying
    the first ``curve_requests`` requests) and what the whole trace (``num_requests``) needs of it; its capacity on
    ``curve_gpus`` GPUs over the whole trace is said beside the curve's break when ``capacities`` has it."""
    per_gpu = {r.scheduler: r for r in ranking.itertuples()} if not ranking.empty else {}
    where = ""
    if curve_gpus is not None:
        where = f"On {curve_gpus} GPU{'s' if curve_gpus != 1 else ''}"
        where += f", replaying the first {curve_requests:,} requests faster or slower, " if curve_requests else ", "
    whole = f"all {num_requests:,} requests" if num_requests else "the whole trace"
    out = {}
    for r in breaks.itertuples():
        target = f"{r.target:.0%} of requests within {sla_text}"
        if r.status == "meets the target at every load tested":
            text = (f"{r.scheduler} keeps {target} at every load tested, up to {_rate(r.max_rate_tested)}: "
                    "its breaking point lies beyond the range tested")
        elif r.status.startswith("below target"):
            text = (f"{r.scheduler} misses {target} already at the lightest load tested "
                    f"({_rate(r.first_bad_rps)})")
        elif r.status.startswith("breaks"):
            text = (f"{r.scheduler} keeps {target} up to {_rate(r.last_ok_rps)} and misses it at "
                    f"{_rate(r.first_bad_rps)} (crossing near {_rate(r.crossing_rps)})")
            if "not monotone" in r.status:
                text += "; its attainment recovers at a higher load (batches that wait to fill)"
        else:
            text = f"{r.scheduler}: no load-latency data"
        text = where + text
        if capacities is not None and curve_gpus is not None and not capacities.empty:
            at = capacities[(capacities["scheduler"] == r.scheduler) & (capacities["num_gpus"] == curve_gpus)]
            if not at.empty and np.isfinite(float(at["capacity_rps"].iloc[0])):
                text += (f"; over {whole}, whose mix and bursts differ, the same {curve_gpus} GPUs sustain "
                         f"{_rate(float(at['capacity_rps'].iloc[0]))}")
        cap = per_gpu.get(r.scheduler)
        if cap is not None and pd.notna(cap.gpus_needed):
            ci = (f", 95% interval {cap.capacity_per_gpu_ci95_low:.3g}-{cap.capacity_per_gpu_ci95_high:.3g} per GPU"
                  if np.isfinite(cap.capacity_per_gpu_ci95_low) else "")
            text += (f"; {whole} need {int(cap.gpus_needed)} GPU{'s' if int(cap.gpus_needed) != 1 else ''} of it, "
                     f"which sustain {_rate(cap.capacity_rps)} ({cap.headroom:+.0%} headroom, "
                     f"{cap.capacity_per_gpu:.3g} req/s per GPU{ci})")
        elif cap is not None:
            text += f"; {cap.note}"
        out[r.scheduler] = text + "."
    return out


__all__ = ["break_point", "break_points", "break_sentences", "capacity_ranking"]
