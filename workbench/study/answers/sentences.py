"""What the steps found, in sentences computed from the rows and the analysis beside them (markdown).

* :func:`step_markdown`: a step's answers (from ``analysis.json``'s part for the step);
* :func:`capacity_markdown`: what the capacity search looked for, the floor no load goes below, and why a
  target was out of reach;
* :func:`commentary`: what the rows show, scheduler by scheduler (no fixed claims: every number and every
  direction is read from the rows; a difference is called only beyond what one seed or the search can tell);
* :func:`offered_rates_sentence`: step 1's volumes and the rate each arrives at (what its figure draws).
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from workbench.study.answers import analysis, targets
from workbench.study.answers.analysis import (KNEE_TOLERANCE, PRIMARY_SCHEDULER, STEP_ORDER, STEP_VALIDITY,
                                              capacity_rows, summarize)
from workbench.study.present.text import floor_sentence


def _fmt(value, pattern: str = "{:.3g}") -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else pattern.format(value)


def _pct(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1%}"


def _num(x, unit: str = "") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3g}{unit}"


def _gpus(n) -> str:
    return f"{int(n)} GPU{'s' if int(n) != 1 else ''}"


# --------------------------------------------------------------------------- a step's answers


def _capacity_lines(part: dict, step: str) -> list[str]:
    search = part.get("capacity_search")
    if not search:
        return []
    caps = ", ".join(f"{label}: {_fmt(v, '{:.3g} req/s')}" if v is not None else f"{label}: unreachable"
                     for label, v in part["capacity_rps"].items())
    what = (f"p99 latency within {search['target']:g} s" if "p99" in str(search.get("criterion"))
            else f"{search['target']:.0%} of requests meet the SLA")
    lines = [f"Capacity (the largest rate at which {what}): {caps}."]
    if step == "step2_gpu_scaling":
        base = part.get("capacity_scaling_base_gpus")
        eff = ", ".join(f"{g}: {_fmt(e, '{:.2f}')}" for g, e in part["capacity_scaling_efficiency"].items()
                        if e is not None and math.isfinite(e))
        if base is not None and eff:
            lines.append(f"Capacity against proportional scaling from {_gpus(base)} (the smallest pool of "
                         f"{part.get('primary_scheduler')} with a capacity; above 1, capacity per GPU grew with the "
                         f"pool): {eff}.")
        n = part.get("best_gpu_count_by_capacity_per_gpu")
        if n is not None:
            tied = [g for g in part.get("best_gpu_count_by_capacity_per_gpu_tied", []) if g != n]
            lines.append(f"Most capacity per GPU (a second answer): on **{_gpus(n)}**"
                         + (f", tied within {targets.resolution_text(part.get('replications', 1))} with "
                            f"{', '.join(map(str, tied))} GPUs (the fewest is given)" if tied else "") + ".")
        if part["capacity_monotone_in_gpus"]:
            lines.append("Capacity is monotone in the GPU count: more GPUs never gave less capacity.")
        elif part["capacity_monotone_in_gpus"] is False:
            falls = "; ".join(f"{e['num_gpus_from']} -> {e['num_gpus_to']} GPUs: {e['capacity_rps_from']:.3g} -> "
                              f"{e['capacity_rps_to']:.3g} req/s ({e['relative_drop']:.1%}"
                              + (", within the search resolution)" if e["within_resolution"] else ")")
                              for e in part["capacity_monotone_exceptions"])
            lines.append(f"**Capacity is not monotone in the GPU count**: {falls}.")
    return lines


def step_markdown(result: dict, step: str) -> str:
    """A short markdown summary of one step's analysis (for the end of its notebook)."""
    part = result.get(step)
    if not part:
        return f"No results for {step}."
    lines = []
    synthetic = part.get("trace", {}).get("synthetic")
    # one label per trace, without its size (step 1 replays several sizes of the same trace)
    labels = dict.fromkeys(re.sub(r",?\s*[\d,]+ req\)$", ")", str(x)).replace(" ()", "")
                           for x in part.get("trace", {}).get("labels", []))
    trace = ", ".join(labels) or "?"
    lines.append(f"Trace: {trace}" + (" (**synthetic**)" if synthetic and "synthetic" not in trace else ""))
    target = part.get("sla_target", targets.DEFAULT_TARGET)
    sla = result.get("sla", "the SLA")
    lines.append(f"The target every answer is judged on: at least **{target:.0%}** of requests within {sla}.")
    if step == "step1_request_scaling":
        for label, bp in part["breaking_points"].items():
            where = (f"misses the target from {bp['num_requests']:,} requests on (SLA violation "
                     f"{bp['sla_violation_rate']:.1%})" if bp["num_requests"] else
                     f"meets the target at every volume up to {bp['largest_volume_tested']:,} requests")
            lines.append(f"- {label}: {where}")
    elif step == "step2_gpu_scaling":
        lines.append(f"GPUs needed: **{_fmt(part['gpus_needed'], '{}')}**. "
                     + analysis.gpus_needed_sentence(part))
    elif step == "step3_kbins_sensitivity":
        lines.append(f"Best K: **{_fmt(part['best_k'], '{}')}**" + (
            " (the highest capacity; K values tied with it within the search's resolution: the smallest)."
            if part.get("best_k_basis") == "capacity" else
            " (no capacity search: the K values that meet the target at the replayed load, the smallest)."))
    lines.extend(_capacity_lines(part, step))
    if step == "step3_kbins_sensitivity" and part.get("gpu_count"):
        lines.append(part["gpu_count"]["sentence"])
    checks = {k: v for k, v in (result.get("validity") or {}).items() if k in STEP_VALIDITY[step]}
    for check in checks.values():
        lines.append(("**Valid.** " if check["valid"] else "**Not a valid answer.** ") + check["sentence"])
    bullets = [line for line in lines if line.startswith("- ")]
    paragraphs = [line for line in lines if not line.startswith("- ")]
    return "\n\n".join(paragraphs + (["\n".join(bullets)] if bullets else []))


def _without_subject(reason: str) -> str:
    """A capacity error without its leading "<scheduler> on N GPUs: " (the list names the configuration)."""
    return re.sub(r"^[\w.-]+ on \d+ GPUs?: ", "", reason)


def capacity_markdown(rows: pd.DataFrame) -> str:
    """What the capacity search looked for, the floor no load goes below, and why a target was out of reach
    (markdown)."""
    rows = summarize(rows)
    search = analysis._capacity_search(rows)
    if search is None:
        return "No capacity search in these results (`capacity_search=False`)."
    searched = capacity_rows(rows)
    found = []
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
        found.append(f"{text} ({names})" if searched["capacity_criterion"].nunique() > 1 else text)
    lines = [f"Capacity target: {'; '.join(found)} (search resolution {search['resolution']:.0%}). "
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


# --------------------------------------------------------------------------- commentary computed from the rows


def change_text(before: float, after: float, *, unit: str = "points", scale: float = 100.0,
                bounds_before: tuple[float, float] | None = None,
                bounds_after: tuple[float, float] | None = None) -> str:
    """How a value changed, said from the numbers: "rises by 0.2 points", "falls by 2.0 points", "does not
    change".  A change is called a change whatever its size; whether it is more than noise is said only when
    ``bounds_*`` (95% intervals over seeds) are given: then overlapping intervals are "within the seeds' 95%
    intervals"."""
    if not (math.isfinite(before) and math.isfinite(after)):
        return "cannot be compared (a value is missing)"
    delta = (after - before) * scale
    if delta == 0:
        return "does not change"
    text = f"{'rises' if delta > 0 else 'falls'} by {abs(delta):.1f} {unit}" if abs(delta) >= 0.05 else (
        f"{'rises' if delta > 0 else 'falls'} by less than 0.1 {unit}")
    if bounds_before is not None and bounds_after is not None and all(
            math.isfinite(v) for v in (*bounds_before, *bounds_after)):
        overlap = not (bounds_after[0] > bounds_before[1] or bounds_before[0] > bounds_after[1])
        text += " (within the seeds' 95% intervals)" if overlap else " (beyond the seeds' 95% intervals)"
    return text


def offered_rates_sentence(rows: pd.DataFrame) -> str:
    """Step 1: the rate each request volume arrives at, from the rows (the figure's dashed black line), and why a
    line can fall and rise again."""
    rows = summarize(rows)
    if rows.empty or "offered_rps" not in rows or rows["offered_rps"].isna().all():
        return ""
    volumes = sorted(rows["num_requests"].unique())
    offered = rows.drop_duplicates("num_requests").set_index("num_requests")["offered_rps"].astype(float)
    rates = ", ".join(f"{offered[v]:.3g}" for v in volumes)
    return (f"Each volume is the first N requests of the trace, so each covers another stretch of it and arrives at "
            f"its own rate: {rates} req/s for {', '.join(f'{int(v):,}' for v in volumes)} requests (the dashed "
            "black line in the throughput and goodput panels). Where a pool keeps up, its throughput and goodput "
            "follow that rate up and down; where it does not, its goodput falls as the backlog grows: so a line "
            "can fall and rise again from one volume to the next without any change in the scheduler.")


def _commentary_step1(rows: pd.DataFrame) -> list[str]:
    lines = []
    volumes = sorted(rows["num_requests"].unique())
    low, high = volumes[0], volumes[-1]
    rates = offered_rates_sentence(rows)
    if rates:
        lines.append(rates)
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
    offered = analysis.replayed_rate(rows)
    lines = []
    if math.isfinite(offered):
        lines.append(f"The replayed load is {_num(offered)} req/s; the target, {analysis.target_text(rows)}. "
                     "Per scheduler (the star in the capacity figure marks the GPUs it needs: the fewest whose "
                     "capacity covers the replayed load):")
    for name, group in rows.groupby("scheduler", sort=False):
        first, last = group.iloc[0], group.iloc[-1]
        n0, n1 = int(first.num_gpus), int(last.num_gpus)
        text = f"- **{name}**"
        answer = analysis.gpus_needed_answer(group)
        if answer is not None:
            part = {"gpus_needed_detail": answer, "sla_target": analysis.sla_target(group)}
            text += ": " + analysis.gpus_needed_sentence(part, name).removeprefix(f"{name} ").rstrip(".")
        caps = analysis._found(group).sort_values("num_gpus")
        if len(caps) > 1:
            c0, c1 = caps.iloc[0], caps.iloc[-1]
            ratio, ideal = c1.capacity_rps / c0.capacity_rps, c1.num_gpus / c0.num_gpus
            kind = ("faster than" if ratio > ideal * 1.01 else "slower than" if ratio < ideal / 1.01
                    else "in step with")
            knee = analysis.capacity_per_gpu_knee(group)
            text += (f"; capacity grows {kind} the pool, {_num(c0.capacity_rps)} req/s on {_gpus(c0.num_gpus)} "
                     f"to {_num(c1.capacity_rps)} on {int(c1.num_gpus)} ({ratio:.3g}x for {ideal:g}x the GPUs)"
                     + (f", capacity per GPU within {KNEE_TOLERANCE:.0%} of its most from {knee} GPUs on"
                        if knee is not None else ""))
        elif "throughput_rps" in group and math.isfinite(offered):
            text += (f"; replayed throughput {_num(first.throughput_rps)} req/s on {_gpus(n0)}, "
                     f"{_num(last.throughput_rps)} on {n1} (at most the offered {_num(offered)})")
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
            before = group.iloc[-2]
            bounds = [(float(r.get("sla_violation_rate_ci95_low", math.nan)),
                       float(r.get("sla_violation_rate_ci95_high", math.nan))) for r in (before, last)]
            reps = int(last.get("replications", 1)) if pd.notna(last.get("replications", 1)) else 1
            text += (f"; from K = {int(before.k_bins)} to {int(last.k_bins)} the violation rate "
                     + change_text(float(before.sla_violation_rate), float(last.sla_violation_rate),
                                   bounds_before=bounds[0], bounds_after=bounds[1])
                     + ("" if reps > 1 else " (one seed: no noise estimate, so this does not say whether more "
                                            "bins would keep changing it)"))
        lines.append(text + (". Every K keeps up with this load, so the replay barely tells them apart; capacity "
                             "does." if spread < 1.0 else "."))
        searched = capacity_rows(group)
        if not searched.empty:
            found = analysis._found(group)
            if found.empty:
                lines.append(f"No K of {name} reaches the capacity target at any load.")
                continue
            tied = analysis.k_tied_for_capacity(group)
            best = found.loc[found["capacity_rps"].astype(float).idxmax()]
            low = found.loc[found["capacity_rps"].astype(float).idxmin()]
            reps = int(best.get("replications", 1)) if pd.notna(best.get("replications", 1)) else 1
            tie = (f" K = {', '.join(map(str, tied[:-1]))} and {tied[-1]} are tied for the most capacity within "
                   f"{targets.resolution_text(reps)}, so the best K is the smallest, {tied[0]}."
                   if len(tied) > 1 else "")
            more = ("more bins than that cost capacity."
                    if int(best.k_bins) < int(found["k_bins"].max()) else "it is highest at the largest K tested.")
            lines.append(f"{name}'s capacity is highest at K = {int(best.k_bins)} ({_num(best.capacity_rps)} req/s) "
                         f"and lowest at K = {int(low.k_bins)} ({_num(low.capacity_rps)} req/s): {more}{tie}")
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


__all__ = ["capacity_markdown", "change_text", "commentary", "offered_rates_sentence", "step_markdown"]
