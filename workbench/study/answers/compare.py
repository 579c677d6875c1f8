"""Which scheduler keeps the SLA: load-latency curves, capacity per GPU, a ranking and where each breaks.

Pure functions over result rows (one row per test, or per test averaged over
replications with ``<metric>_ci95`` half-widths beside each metric).  The rows
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
import os

import numpy as np
import pandas as pd


def _ci(row, column: str) -> float:
    value = row.get(f"{column}_ci95", math.nan) if hasattr(row, "get") else math.nan
    return float(value) if value is not None else math.nan


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

    ``capacity_per_gpu_ci95`` is the capacity's half-width over the GPU count
    (NaN with one replication).  ``distinguishable_from_next`` is False when
    this scheduler's interval overlaps the next one's: their order is then not
    established by the replications run.  Schedulers that met the target at no
    GPU count come last, with ``capacity_per_gpu`` NaN and the reason.
    """
    records = []
    for name, group in capacity_rows.groupby("scheduler", sort=False):
        group = group.assign(per_gpu=group["capacity_rps"] / group["num_gpus"])
        found = group[np.isfinite(group["per_gpu"])]
        if found.empty:
            reason = next((str(r) for r in group.get("capacity_error", pd.Series(dtype=object)).dropna()), "")
            records.append({"scheduler": name, "capacity_per_gpu": math.nan, "capacity_per_gpu_ci95": math.nan,
                            "at_num_gpus": None, "capacity_rps": math.nan, "note": reason or "no capacity found"})
            continue
        best = found.loc[found["per_gpu"].idxmax()]
        half = _ci(best, "capacity_rps") / best["num_gpus"]
        records.append({"scheduler": name, "capacity_per_gpu": float(best["per_gpu"]),
                        "capacity_per_gpu_ci95": half, "at_num_gpus": int(best["num_gpus"]),
                        "capacity_rps": float(best["capacity_rps"]), "note": ""})
    table = pd.DataFrame(records)
    if table.empty:
        return table
    table = table.sort_values("capacity_per_gpu", ascending=False, na_position="last").reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    lower = table["capacity_per_gpu"] - table["capacity_per_gpu_ci95"].fillna(0.0)
    upper = table["capacity_per_gpu"] + table["capacity_per_gpu_ci95"].fillna(0.0)
    has_ci = table["capacity_per_gpu_ci95"].notna()
    distinct = []
    for i in range(len(table)):
        if i + 1 >= len(table):
            distinct.append(None)            # the last: nothing below it
        elif not np.isfinite(table.loc[i + 1, "capacity_per_gpu"]):
            distinct.append(bool(np.isfinite(table.loc[i, "capacity_per_gpu"])))
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
            ci = f" +- {cap.capacity_per_gpu_ci95:.2g}" if np.isfinite(cap.capacity_per_gpu_ci95) else ""
            text += (f"; its best capacity is {cap.capacity_per_gpu:.3g}{ci} req/s per GPU "
                     f"(on {int(cap.at_num_gpus)} GPU{'s' if int(cap.at_num_gpus) != 1 else ''})")
        elif cap is not None:
            text += f"; no GPU count tested reaches the target ({cap.note})"
        out[r.scheduler] = text + "."
    return out


# ============================================================================ running a comparison

import dataclasses  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field, fields  # noqa: E402
from pathlib import Path  # noqa: E402

log = logging.getLogger(__name__)

NOTEBOOK = "compare_schedulers"
CHECKPOINT = f"{NOTEBOOK}.csv"
# what a comparison writes into its folder (checked before any case runs: none may be a folder)
OUTPUTS = (CHECKPOINT, f"{NOTEBOOK}_capacity.csv", f"{NOTEBOOK}_curves.csv", f"{NOTEBOOK}_ranking.csv")
CASE_VERSION = 1


def all_schedulers() -> tuple[str, ...]:
    from workbench.sim.schedulers import SCHEDULERS

    # a disaggregated deployment splits GPUs into pools: it is compared by wb.best_placement
    # (notebooks/disaggregation.ipynb), not at one GPU count beside the single-pool schedulers
    return tuple(sorted(name for name, cls in SCHEDULERS.items() if cls.engine != "disaggregated"))


@dataclass(frozen=True)
class CompareParams:
    """What a scheduler comparison depends on (the compare notebook's ``parameters`` cell)."""

    dataset: str | None = None          # None / "synthetic": the synthetic BurstGPT-like trace; or a dataset name
    num_requests: int = 20_000
    schedulers: tuple[str, ...] = field(default_factory=all_schedulers)
    latency: str = "opt-13b-a100"        # a step-time profile every scheduler is timed by
    gpu_counts: tuple[int, ...] = (1, 2, 4, 8)
    curve_gpus: int = 4                  # GPUs of the load-latency curves
    load_points: int = 8                 # offered rates per curve, light to past saturation
    ttft_sla_s: float = 1.0
    tpot_sla_s: float = 0.05
    d_sla_s: float = 1.0                 # the static SLA controller's budget (service time of a batch)
    attainment: float = 0.9              # share of requests that must meet both limits
    k_bins: int = 4
    replications: int = 1
    seed: int = 42
    results_dir: str | None = None

    def __post_init__(self):
        from workbench.sim import profiles
        from workbench.sim.schedulers import SCHEDULERS

        from workbench import checks

        # a comma-separated string is accepted too (papermill -p schedulers continuous_fcfs,static_fifo)
        object.__setattr__(self, "schedulers", checks.names(self.schedulers, "schedulers", allowed=sorted(SCHEDULERS)))
        pooled = [name for name in self.schedulers if name not in all_schedulers()]
        if pooled:
            raise ValueError(f"schedulers: {', '.join(pooled)} splits the GPUs into prefill and decode pools, so it "
                             "has no single GPU count to be compared at; rank its placements with wb.best_placement "
                             f"(notebooks/disaggregation.ipynb), or choose among {', '.join(all_schedulers())}")
        checks.choice(self.latency, "latency", profiles.profile_names(), hint="a step-time profile name")
        object.__setattr__(self, "gpu_counts", tuple(sorted(set(checks.integers(
            self.gpu_counts, "gpu_counts", low=1, high=100_000, unique=False)))))
        for name, low in (("num_requests", 2), ("curve_gpus", 1), ("load_points", 2), ("k_bins", 1),
                          ("replications", 1), ("seed", 0)):
            object.__setattr__(self, name, checks.integer(getattr(self, name), name, low=low))
        for name in ("ttft_sla_s", "tpot_sla_s", "d_sla_s"):
            object.__setattr__(self, name, checks.number(getattr(self, name), name, low=0, low_open=True, unit="s"))
        object.__setattr__(self, "attainment", checks.number(self.attainment, "attainment", low=0, low_open=True,
                                                             high=1, what="a share in (0, 1]"))
        if self.dataset is not None:
            checks.instance(self.dataset, "dataset", (str, os.PathLike),
                            expected="None, 'synthetic', a dataset name or a CSV path")
        if self.dataset == "synthetic":
            object.__setattr__(self, "dataset", None)
        if self.results_dir is not None:
            checks.path(self.results_dir, "results_dir", expected="a folder path, or None for the default folder")
        self.config("continuous_fcfs", 1)   # validates the SLA fields

    @classmethod
    def from_namespace(cls, namespace: dict) -> "CompareParams":
        return cls(**{f.name: namespace[f.name] for f in fields(cls) if f.name in namespace})

    def identity(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "results_dir"}

    def results_path(self) -> Path:
        from workbench.study.runs import folders
        from workbench.study.runs.sweep import resolve_results_dir

        if self.results_dir is not None:
            return resolve_results_dir(self.results_dir)
        defaults = {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
                    for f in fields(self)}
        return resolve_results_dir(f"results/{NOTEBOOK}/{folders.folder_name(self.identity(), defaults)}")

    def claim_results_dir(self) -> Path:
        from workbench.study.runs import folders

        folder = self.results_path()
        folders.claim(folder, self.identity(), outputs=OUTPUTS)
        return folder

    def step_model(self):
        from workbench.sim import profiles

        return profiles.get_profile(self.latency)

    def config(self, scheduler: str, num_gpus: int, seed: int | None = None):
        from workbench.sim.config import SimConfig

        return SimConfig(scheduler=scheduler, num_gpus=num_gpus, k_bins=self.k_bins, d_sla_s=self.d_sla_s,
                         ttft_sla_s=self.ttft_sla_s, tpot_sla_s=self.tpot_sla_s,
                         seed=self.seed if seed is None else seed, **deployment_fields(self.latency))

    def trace(self, seed: int):
        from workbench.traces.trace import load_trace

        if self.dataset is None:
            return load_trace(num_requests=self.num_requests, seed=seed)
        return load_trace(self.dataset, num_requests=self.num_requests)

    def seeds(self) -> list[int]:
        from workbench.study.runs.replications import replication_seeds

        return replication_seeds(self.seed, self.replications)


def deployment_fields(profile: str) -> dict:
    """The SimConfig memory fields of the hardware a step-time profile was measured on."""
    from workbench.sim import profiles

    if hasattr(profiles, "profile_config_fields"):
        return profiles.profile_config_fields(profile)
    if profile.startswith("opt-13b-a100"):
        return {"model": "opt-13b", "gpu_mem_gb": 80.0, "gpu_memory_utilization": 0.95}
    raise ValueError(f"no memory configuration is known for profile {profile!r}")


def _case_id(kind: str, params: CompareParams, **key) -> str:
    payload = {"version": CASE_VERSION, "kind": kind, "params": params.identity(), **key}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _summary_row(summary: dict) -> dict:
    keep = ("offered_rps", "throughput_rps", "goodput_rps", "slo_attainment", "sla_violation_rate",
            "latency_p50_s", "latency_p99_s", "ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "tpot_p99_s",
            "gpu_utilization_mean", "rejected", "preemptions_total")
    row = {k: summary.get(k, math.nan) for k in keep}
    row["attainment"] = summary["slo_attainment"] if "slo_attainment" in summary \
        else 1.0 - summary["sla_violation_rate"]
    row["criterion"] = "ttft+tpot" if "slo_attainment" in summary else "e2e"
    return row


def _run_case(case: dict, params: CompareParams, step) -> dict:
    from workbench.sim.simulate import simulate
    from workbench.study.runs.capacity import CapacityError, capacity

    t0 = time.perf_counter()
    trace = params.trace(case["seed"])
    cfg = params.config(case["scheduler"], case["num_gpus"], case["seed"])
    row = dict(case)
    if case["kind"] == "capacity":
        try:
            found = capacity(trace, cfg, latency=step, criterion="slo", attainment=params.attainment,
                             resolution=0.02)
            row.update(capacity_rps=found.capacity_rps, capacity_bounded=found.bounded,
                       capacity_monotone=found.monotone, capacity_error=None)
        except (CapacityError, ValueError) as exc:
            row.update(capacity_rps=math.nan, capacity_bounded=None, capacity_monotone=None,
                       capacity_error=str(exc))
    else:
        try:
            res = simulate(trace.time_scaled(case["scaling"]), cfg, latency=step)
            row.update(_summary_row(res.summary), error=None)
        except ValueError as exc:       # e.g. a scheduler that cannot run on this latency model: say so
            row.update(attainment=math.nan, error=str(exc))
    row.update(trace_label=trace.label, synthetic=bool(trace.is_synthetic), wall_s=time.perf_counter() - t0)
    return row


def _run_cases(cases: list[dict], params: CompareParams, folder: Path, step, progress: bool) -> pd.DataFrame:
    from workbench.study.runs.sweep import merge_rows, read_rows, results_lock

    path = folder / CHECKPOINT
    done = set(read_rows(path)["test_id"]) if path.exists() else set()
    todo = [c for c in cases if c["test_id"] not in done]
    for i, case in enumerate(todo, 1):
        row = _run_case(case, params, step)
        with results_lock(folder):
            merge_rows(path, [row])    # one row at a time: a crash loses at most the running case
        if progress:
            what = f"x{case['scaling']:.3g} load" if case["kind"] == "load" else "capacity"
            log.info("%s [%d/%d] %s on %d GPU(s), %s, seed %d: %.1f s", NOTEBOOK, i, len(todo),
                     case["scheduler"], case["num_gpus"], what, case["seed"], row["wall_s"])
    rows = read_rows(path)
    return rows[rows["test_id"].isin({c["test_id"] for c in cases})]


@dataclass
class Comparison:
    """Everything the compare notebook shows."""

    params: CompareParams
    results_dir: Path
    capacities: pd.DataFrame          # per scheduler and GPU count (mean over seeds, _ci95)
    curves: pd.DataFrame              # per scheduler and load point (mean over seeds, _ci95)
    ranking: pd.DataFrame
    breaks: pd.DataFrame
    sentences: dict[str, str]
    base_rate_rps: float
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def sla_text(self) -> str:
        p = self.params
        return f"TTFT <= {p.ttft_sla_s:g} s and TPOT <= {p.tpot_sla_s * 1e3:g} ms"


def _aggregate(rows: pd.DataFrame, by: list[str], metrics: list[str]) -> pd.DataFrame:
    from workbench.study.runs.replications import summarize_replications

    return summarize_replications(rows.drop(columns=["test_id", "wall_s"], errors="ignore"), by=by,
                                  metrics=metrics)


def run_comparison(params: CompareParams | None = None, *, progress: bool = True) -> Comparison:
    """Capacity of every scheduler at every GPU count, then load-latency curves on ``curve_gpus`` GPUs.

    The curves' offered rates are spaced geometrically from 1/16 of the
    lowest capacity found on ``curve_gpus`` GPUs to twice the highest, so
    every curve runs from light load to past its scheduler's saturation.
    Each (case, seed) is checkpointed in ``compare_schedulers.csv``.
    """
    params = params or CompareParams()
    folder = params.claim_results_dir()
    step = params.step_model()
    seeds = params.seeds()
    base_rate = params.trace(seeds[0]).mean_rate_rps

    cap_cases = [{"kind": "capacity", "scheduler": s, "num_gpus": g, "scaling": math.nan, "seed": seed}
                 for s in params.schedulers for g in params.gpu_counts for seed in seeds]
    for case in cap_cases:
        case["test_id"] = _case_id("capacity", params, scheduler=case["scheduler"], num_gpus=case["num_gpus"],
                                   seed=case["seed"])
    cap_rows = _run_cases(cap_cases, params, folder, step, progress)
    capacities = _aggregate(cap_rows, ["scheduler", "num_gpus"], ["capacity_rps"])

    at_curve = cap_rows[(cap_rows["num_gpus"] == params.curve_gpus) & np.isfinite(cap_rows["capacity_rps"])]
    if at_curve.empty:
        at_curve = cap_rows[np.isfinite(cap_rows["capacity_rps"])]
    if at_curve.empty:
        low, high = base_rate / 16, base_rate * 2
    else:
        low, high = at_curve["capacity_rps"].min() / 16, at_curve["capacity_rps"].max() * 2
    rates = np.geomspace(low, high, params.load_points)
    load_cases = [{"kind": "load", "scheduler": s, "num_gpus": params.curve_gpus, "scaling": float(r / base_rate),
                   "seed": seed} for s in params.schedulers for r in rates for seed in seeds]
    for case in load_cases:
        case["test_id"] = _case_id("load", params, scheduler=case["scheduler"], scaling=round(case["scaling"], 12),
                                   seed=case["seed"])
    load_rows = _run_cases(load_cases, params, folder, step, progress)
    metrics = ["offered_rps", "attainment", "throughput_rps", "goodput_rps", "latency_p50_s", "latency_p99_s",
               "ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "tpot_p99_s", "gpu_utilization_mean"]
    failed = load_rows[load_rows["error"].notna()] if "error" in load_rows else load_rows.iloc[:0]
    errors = {str(r.scheduler): str(r.error) for r in failed.itertuples()}
    ok_rows = load_rows[~load_rows["scheduler"].isin(errors)]
    curves = (_aggregate(ok_rows, ["scheduler", "scaling"], metrics).sort_values(["scheduler", "offered_rps"])
              if not ok_rows.empty else pd.DataFrame(columns=["scheduler", "scaling", *metrics]))

    ranking = capacity_ranking(capacities)
    breaks = break_points(curves, params.attainment)
    sla_text = f"TTFT <= {params.ttft_sla_s:g} s and TPOT <= {params.tpot_sla_s * 1e3:g} ms"
    sentences = break_sentences(breaks, ranking, sla_text=sla_text)
    for name, reason in errors.items():
        sentences[name] = f"{name} could not be simulated with the {params.latency} profile: {reason}."
    from workbench.study.runs.sweep import write_csv_atomic

    write_csv_atomic(folder / f"{NOTEBOOK}_capacity.csv", capacities)
    write_csv_atomic(folder / f"{NOTEBOOK}_curves.csv", curves)
    write_csv_atomic(folder / f"{NOTEBOOK}_ranking.csv", ranking)
    return Comparison(params, folder, capacities, curves.reset_index(drop=True), ranking, breaks, sentences,
                      base_rate, errors)
