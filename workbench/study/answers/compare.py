"""Which scheduler keeps the SLA: load-latency curves, capacity per GPU, a ranking and where each breaks.

Pure functions over result rows (one row per test, or per test averaged over
replications with ``<metric>_ci95_low`` / ``_ci95_high`` beside each metric).  The rows
a comparison needs:

* load-latency rows: ``scheduler``, ``offered_rps`` (the arrival rate replayed),
  ``attainment`` (share of the offered requests that met the SLA; rejected
  ones did not), latency percentiles (``latency_p50_s``, ``latency_p99_s``,
  and ``ttft_*`` / ``tpot_*`` where the engine reports them);
* capacity rows: ``scheduler``, ``num_gpus``, ``capacity_rps`` (NaN where no
  load met the target, with the reason in ``capacity_error``).

A scheduler *breaks* at the offered rate where its attainment falls below the
target: :func:`break_point` reports the last rate tested that met it, the
first that did not and, between them, the linearly interpolated crossing.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


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


def capacity_ranking(capacity_rows: pd.DataFrame) -> pd.DataFrame:
    """Schedulers ranked by their best capacity per GPU over the GPU counts tested.

    Exact ties share a rank (1, 1, 3).  ``capacity_per_gpu_ci95_low`` / ``_high``
    is the 95% interval of that capacity over the seeds, divided by the GPU
    count (NaN with one replication).  ``distinguishable_from_next`` is False
    when this scheduler's interval overlaps the next one's: their order is
    then not established by the replications run.  ``at_largest_gpus`` is True
    when the best per-GPU capacity is on the largest GPU count tested (the
    optimum may lie beyond; ``note`` says so).  Schedulers that met the target
    at no GPU count come last, with ``capacity_per_gpu`` NaN and the reason.
    """
    records = []
    largest = int(capacity_rows["num_gpus"].max()) if not capacity_rows.empty else 0
    for name, group in capacity_rows.groupby("scheduler", sort=False):
        group = group.assign(per_gpu=group["capacity_rps"] / group["num_gpus"])
        found = group[np.isfinite(group["per_gpu"])]
        if found.empty:
            reason = next((str(r) for r in group.get("capacity_error", pd.Series(dtype=object)).dropna()), "")
            records.append({"scheduler": name, "capacity_per_gpu": math.nan, "capacity_per_gpu_ci95_low": math.nan,
                            "capacity_per_gpu_ci95_high": math.nan, "at_num_gpus": None, "capacity_rps": math.nan,
                            "at_largest_gpus": False, "note": reason or "no capacity found"})
            continue
        best = found.loc[found["per_gpu"].idxmax()]
        gpus = int(best["num_gpus"])
        edge = gpus == largest and group["num_gpus"].nunique() > 1
        records.append({"scheduler": name, "capacity_per_gpu": float(best["per_gpu"]),
                        "capacity_per_gpu_ci95_low": _bound(best, "capacity_rps", "low") / gpus,
                        "capacity_per_gpu_ci95_high": _bound(best, "capacity_rps", "high") / gpus,
                        "at_num_gpus": gpus, "capacity_rps": float(best["capacity_rps"]), "at_largest_gpus": edge,
                        "note": (f"best on the largest GPU count tested ({gpus}): capacity per GPU may grow beyond"
                                 if edge else "")})
    table = pd.DataFrame(records)
    if table.empty:
        return table
    table = table.sort_values("capacity_per_gpu", ascending=False, na_position="last", kind="stable")
    table = table.reset_index(drop=True)
    ranks = table["capacity_per_gpu"].rank(method="min", ascending=False)
    table.insert(0, "rank", ranks.fillna(ranks.max() + 1 if ranks.notna().any() else 1).astype(int))
    lower, upper = table["capacity_per_gpu_ci95_low"], table["capacity_per_gpu_ci95_high"]
    has_ci = lower.notna() & upper.notna()
    distinct = []
    for i in range(len(table)):
        if i + 1 >= len(table):
            distinct.append(None)            # the last: nothing below it
        elif not np.isfinite(table.loc[i + 1, "capacity_per_gpu"]):
            distinct.append(bool(np.isfinite(table.loc[i, "capacity_per_gpu"])))
        elif table.loc[i, "capacity_per_gpu"] == table.loc[i + 1, "capacity_per_gpu"]:
            distinct.append(False)           # an exact tie
        elif not (has_ci[i] and has_ci[i + 1]):
            distinct.append(None)            # one replication: no interval, order not tested
        else:
            distinct.append(bool(lower[i] > upper[i + 1]))
    table["distinguishable_from_next"] = distinct
    return table


def _rate(value: float) -> str:
    return f"{value:.3g} req/s"


def break_sentences(breaks: pd.DataFrame, ranking: pd.DataFrame, *, sla_text: str) -> dict[str, str]:
    """One sentence per scheduler: where it breaks under load and what it sustains per GPU."""
    per_gpu = {r.scheduler: r for r in ranking.itertuples()} if not ranking.empty else {}
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
            text = (f"{r.scheduler} keeps {target} up to {_rate(r.last_ok_rps)} and breaks by "
                    f"{_rate(r.first_bad_rps)} (crossing near {_rate(r.crossing_rps)})")
            if "not monotone" in r.status:
                text += "; its attainment recovers at a higher load (batches that wait to fill)"
        else:
            text = f"{r.scheduler}: no load-latency data"
        cap = per_gpu.get(r.scheduler)
        if cap is not None and np.isfinite(cap.capacity_per_gpu):
            ci = (f" (95% interval {cap.capacity_per_gpu_ci95_low:.3g}-{cap.capacity_per_gpu_ci95_high:.3g})"
                  if np.isfinite(cap.capacity_per_gpu_ci95_low) else "")
            text += (f"; its best capacity is {cap.capacity_per_gpu:.3g} req/s per GPU{ci} "
                     f"(on {int(cap.at_num_gpus)} GPU{'s' if int(cap.at_num_gpus) != 1 else ''}"
                     f"{', the largest count tested' if cap.at_largest_gpus else ''})")
        elif cap is not None:
            text += f"; no GPU count tested reaches the target ({cap.note})"
        out[r.scheduler] = text + "."
    return out


__all__ = ["break_point", "break_points", "break_sentences", "capacity_ranking"]
