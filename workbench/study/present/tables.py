"""Tables as the notebooks show them: the columns that apply, named with their units, sensible precision.

The result rows carry every metric of both engines (TTFT and TPOT exist only on a step-time profile, a 95%
interval only with replications); a table for reading keeps the columns that have a value somewhere, names
each with its unit, prints three significant digits (shares as percentages, TPOT in milliseconds, times of a
few milliseconds as such rather than "0.0 s"), an interval as "low to high", and a missing capacity as
"unreachable".  The CSVs keep every column at full precision: these are views.
"""

from __future__ import annotations

import math

import pandas as pd

from workbench.study.store.replications import HIGH, LOW


def significant(value, digits: int = 3) -> str:
    """``value`` with ``digits`` significant digits, thousands separated; "" for a missing value."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    value = float(value)
    if value == 0:
        return "0"
    if abs(value) >= 10 ** digits:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def seconds(value) -> str:
    """A duration: "12 s", "2.3 s", "0.42 s", "3.1 ms", never "0.0 s"."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    value = float(value)
    if value < 0.01:
        return f"{value * 1e3:.2g} ms"
    return f"{value:.2g} s" if value < 10 else f"{value:.0f} s"


def percent(value, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f"{float(value):.{digits}%}"


def _ms(value) -> str:
    return "" if value is None or (isinstance(value, float) and not math.isfinite(value)) else significant(value * 1e3)


def _signed_percent(value) -> str:
    """A relative error: "+2.9%", "-6.2%"."""
    return "" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{float(value):+.1%}"


def _points(value) -> str:
    """A difference of two percentages, in percentage points: "+1.3"."""
    return "" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{float(value):+.1f}"


def _yes(value) -> str:
    return "yes" if bool(value) else "no"


def _whole(value) -> str:
    return "" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{int(value):,}"


# column -> (heading with its unit, how a value is written)
DISPLAY = {
    "label": ("configuration", str),
    "scheduler": ("scheduler", str),
    "num_requests": ("requests", _whole),
    "num_gpus": ("GPUs", _whole),
    "k_bins": ("K", _whole),
    "offered_rps": ("offered (req/s)", significant),
    "throughput_rps": ("throughput (req/s)", significant),
    "goodput_rps": ("goodput (req/s)", significant),
    "sla_violation_rate": ("SLA violations", percent),
    "latency_p99_s": ("p99 latency (s)", significant),
    "ttft_p99_s": ("p99 TTFT (s)", significant),
    "tpot_p99_s": ("p99 TPOT (ms)", _ms),
    "gpu_utilization_mean": ("GPUs busy", lambda v: percent(v, 0)),
    "capacity_rps": ("capacity (req/s)", significant),
    "capacity_per_gpu": ("capacity per GPU (req/s)", significant),
    "capacity_efficiency": ("capacity / proportional scaling", lambda v: significant(v, 2)),
    "capacity_headroom": ("headroom over the replayed rate", lambda v: f"{v:+.0%}"),
    "capacity_attainment": ("met the SLA at capacity", percent),
    "capacity_probes": ("simulations", _whole),
    "replications": ("seeds", _whole),
    "wall_s": ("time", seconds),
    "reused_from": ("reused from", str),
    "capacity_error": ("why no load meets the target", str),
    # prefix caching (notebooks/prefix_caching)
    "kv_blocks": ("KV blocks per replica", _whole),
    "kv_tokens": ("KV cache per replica (tokens)", _whole),
    "requests_preempted": ("requests preempted", _whole),
    "prefill_work_ratio": ("prefill tokens computed (x prompt tokens)", lambda v: f"{float(v):.2f}"),
    "router": ("router", str),
    "prefix_caching": ("prefix caching", lambda v: "on" if v else "off"),
    "prefix_hit_rate": ("prefix hit rate", percent),
    "ttft_mean_s": ("mean TTFT (s)", significant),
    "tpot_mean_s": ("mean TPOT (ms)", _ms),
    "slo_attainment": ("met the SLA", percent),
    "completed": ("completed", _whole),
    "rejected": ("rejected", _whole),
    "preemptions_total": ("preemptions", _whole),
    # disaggregated serving (notebooks/disaggregation, notebooks/fidelity_disagg)
    "rank": ("rank", _whole),
    "kind": ("kind", str),
    "placement": ("placement", str),
    "gpus": ("GPUs", _whole),
    "goodput_per_gpu": ("goodput per GPU (req/s)", significant),
    "estimate_rps": ("estimate (req/s)", significant),
    "status": ("status", str),
    "trace": ("trace", str),
    "slo_scale": ("SLO scale", significant),
    "ttft_scale": ("TTFT scale", significant),
    "tpot_scale": ("TPOT scale", significant),
    "ttft_s": ("TTFT limit (s)", significant),
    "tpot_s": ("TPOT limit (ms)", _ms),
    "deployment": ("deployment", str),
    "measured_goodput_per_gpu": ("measured goodput per GPU (req/s, a lower bound)", significant),
    "simulated_goodput_per_gpu": ("simulated goodput per GPU (req/s)", significant),
    "run": ("run", str),
    "model": ("step times", str),
    "requests": ("requests", _whole),
    "rate_rps": ("rate (req/s)", significant),
    "overloaded": ("overloaded", _yes),
    "ttft_diverged": ("TTFT diverged", _yes),
    "measured mean TTFT s": ("measured mean TTFT (s)", significant),
    "measured mean TPOT s": ("measured mean TPOT (ms)", _ms),
    "measured mean E2E s": ("measured mean E2E (s)", significant),
    "measured attainment": ("measured met the SLO", percent),
    "ttft error": ("mean TTFT error", _signed_percent),
    "tpot error": ("mean TPOT error", _signed_percent),
    "e2e error": ("mean E2E error", _signed_percent),
    "e2e_rel_error": ("mean E2E error", _signed_percent),
    "measured_attainment": ("measured met the SLO", percent),
    "simulated_attainment": ("simulated met the SLO", percent),
    "attainment_points": ("attainment gap (points)", _points),
    "met": ("targets met", _yes),
    "prior_weight": ("prior weight", significant),
}


def _ordered(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows in the order every table and figure lists them: schedulers in the palette's order, then volume,
    GPUs and K."""
    from workbench.study.present.palette import order

    if "scheduler" not in rows or rows.empty:
        return rows.reset_index(drop=True)
    rank = rows["scheduler"].map({name: i for i, name in enumerate(order(rows["scheduler"]))})
    keys = [k for k in ("num_requests", "num_gpus", "k_bins") if k in rows]
    position = pd.DataFrame({"_rank": rank.to_numpy(), **{k: rows[k].to_numpy() for k in keys}})
    index = position.sort_values(["_rank", *keys], kind="stable").index
    return rows.iloc[index].reset_index(drop=True)


def display_table(rows: pd.DataFrame, columns) -> pd.DataFrame:
    """``rows`` as text: the ``columns`` that have a value in some row, each with its unit and precision, a 95%
    interval ("low to high") after every metric that has one; seeds only when there are several."""
    rows = _ordered(rows)
    out = {}
    for column in columns:
        if column not in rows or rows[column].isna().all() or (rows[column].astype(str) == "").all():
            continue
        if column == "replications" and pd.to_numeric(rows[column], errors="coerce").max() <= 1:
            continue
        heading, write = DISPLAY.get(column, (column, str))
        values = rows[column]
        if column == "capacity_rps":   # NaN: no load meets the target, where the test searched (else no search)
            searched = (rows["capacity_criterion"].notna() if "capacity_criterion" in rows
                        else pd.Series(True, index=rows.index))
            out[heading] = [write(v) if pd.notna(v) else ("unreachable" if s else "")
                            for v, s in zip(values, searched)]
        else:
            out[heading] = [write(v) if pd.notna(v) else "" for v in values]
        low, high = f"{column}{LOW}", f"{column}{HIGH}"
        if low in rows and rows[low].notna().any():
            out[f"{heading.split(' (')[0]} 95% interval"] = [
                f"{write(a)} to {write(b)}" if pd.notna(a) and pd.notna(b) else ""
                for a, b in zip(rows[low], rows[high])]
    return pd.DataFrame(out, index=range(len(rows)))


__all__ = ["DISPLAY", "display_table", "percent", "seconds", "significant"]
