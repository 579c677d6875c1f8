"""What step 2's answers cost: capacity per dollar beside capacity per GPU, and the GPU count in dollars per hour.

Step 2 sizes a pool of one hardware model, its step-time profile; the profile was measured (or is a roofline)
on one GPU type, whose hourly price the GPU catalogue (``data/hardware/gpus.yaml``) lists.  A "GPU" of step 2 is
one replica of the profile, ``tp`` GPUs of that type, so a pool of ``n`` costs ``n x tp x price`` per hour and
serves ``capacity_rps x 3600`` requests an hour at its capacity.  The fleet planner
(:func:`workbench.plan_fleet`) answers the same question across GPU types.
"""

from __future__ import annotations

import math

import pandas as pd

from workbench.hardware.catalog import GPU, UnknownName, get_gpu

# the GPU type (catalogue key) and TP degree each registered measured profile was measured on
# (workbench.sim.profiles.PROFILES; tests/test_fleet.py checks every registered profile is here)
PROFILE_GPUS: dict[str, tuple[str, int]] = {
    "opt-13b-a100": ("a100-80gb", 1), "opt-13b-a100-tp2": ("a100-80gb", 2), "opt-66b-a100-tp4": ("a100-80gb", 4),
    "llama-3.1-8b-a100": ("a100-80gb", 1), "llama-3.1-8b-h100": ("h100-sxm", 1),
    "llama-3.3-70b-h100-tp4": ("h100-sxm", 4), "qwen3-14b-h100": ("h100-sxm", 1),
    "opt-13b-a100-distserve": ("a100-80gb", 1),
}


def profile_gpu(profile: str) -> tuple[GPU, int] | None:
    """``(GPU, tp)`` a replica of step-time profile ``profile`` runs on: a registered profile's (its name, or its
    name with a `` tpN`` suffix for another degree), a roofline ``<model>@<gpu>[/tpN]``'s; None for one on no
    catalogued GPU (the seed study's formula grid, a model built by hand)."""
    if not isinstance(profile, str) or not profile:
        return None
    name, _, suffix = profile.partition(" tp")
    if name in PROFILE_GPUS:
        gpu, tp = PROFILE_GPUS[name]
        return get_gpu(gpu), int(suffix) if suffix.isdigit() else tp
    if "@" in profile:
        gpu, _, tail = profile.partition("@")[2].partition("/")
        try:
            return get_gpu(gpu.strip()), int(tail[2:]) if tail.lower().startswith("tp") and tail[2:].isdigit() else 1
        except UnknownName:
            return None
    return None


def _profile(rows: pd.DataFrame) -> str | None:
    profiles = rows["latency_profile"].dropna().unique() if "latency_profile" in rows else []
    return str(profiles[0]) if len(profiles) == 1 else None


def add_requests_per_dollar(table: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """``table`` (a capacity table: ``capacity_rps`` and ``num_gpus``) with ``requests_per_dollar`` after
    ``capacity_per_gpu``: requests served per dollar at capacity on the profile's GPU type (NaN when the step's
    rows have no one catalogued GPU)."""
    found = profile_gpu(_profile(rows))
    if table.empty or "capacity_rps" not in table:
        return table
    value = (table["capacity_rps"] * 3600.0 / (table["num_gpus"] * found[1] * found[0].price_per_hour)
             if found and found[0].price_per_hour else math.nan)
    at = list(table.columns).index("capacity_per_gpu") + 1 if "capacity_per_gpu" in table else len(table.columns)
    out = table.copy()
    out.insert(at, "requests_per_dollar", value)
    return out


def gpu_count_cost(found: dict, rows: pd.DataFrame) -> str:
    """The step-2 answers in dollars: what the GPUs needed (and the count with the most capacity per GPU)
    costs per hour on the profile's GPU type, and where capacity per dollar peaks.  ``found``: the analysis
    (``analysis.json``'s dict); ``rows``: the step's rows."""
    profile = _profile(rows)
    gpu = profile_gpu(profile)
    if gpu is None or not gpu[0].price_per_hour:
        return (f"Cost: the step's profile ({profile or 'several'}) runs on no catalogued GPU with a price, so its "
                "GPU counts are not priced; `wb.plan_fleet` compares GPU types by cost.")
    g, tp = gpu
    per_replica = tp * g.price_per_hour
    s2 = found.get("step2_gpu_scaling") or {}
    parts = []
    for key, what, verb in (("gpus_needed", "the GPUs needed", "cost"),
                            ("best_gpu_count_by_capacity_per_gpu", "the count with the most capacity per GPU", "costs")):
        n = s2.get(key)
        if n is not None:
            parts.append(f"{what}, {n}, {verb} ${n * per_replica:,.2f}/h")
    per_gpu = {int(k): float(v) for k, v in (s2.get("capacity_per_gpu") or {}).items()
               if isinstance(v, (int, float)) and math.isfinite(v) and v > 0}
    unit = f"{tp} x {g.key}" if tp > 1 else g.key
    text = (f"Cost on the profile's GPU ({profile}: {g.name} at ${g.price_per_hour:,.2f} per GPU-hour, the "
            f"catalogue's list price; one 'GPU' here is {unit}): " + ("; ".join(parts) if parts else
                                                                      "no GPU count answered") + ".")
    if per_gpu:
        # one GPU type: capacity per dollar is capacity per GPU over the price, highest at the same count
        best = max(per_gpu, key=per_gpu.get)
        text += (f" Capacity per dollar is highest at {best} GPUs: {per_gpu[best] * 3600 / per_replica:,.0f} "
                 "requests per dollar at capacity.")
    return text


__all__ = ["PROFILE_GPUS", "add_requests_per_dollar", "gpu_count_cost", "profile_gpu"]
